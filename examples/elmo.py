"""ELMo-style bidirectional LM: pretrain on the review text, then use it as features for sentiment.

The lectures' "bonus". An rnncore.nn.BiLM (a forward and a backward 2-layer LSTM language
model over one shared word embedding and one shared softmax, a residual connection between the
layers) is pretrained on the *training split's* snippets of rnncore.datasets.movie_reviews()
(each wrapped in <s> ... </s>; the valid and test snippets are never seen: no test leakage),
and its perplexity measured on the validation snippets. Its contextual vectors (ELMo: a learned
softmax-weighted mix of the token layer and both LSTM layers, times gamma) are then the input of
an ELMoClassifier (dropout -> BiLSTM -> max pooling -> Linear), trained on the same fixed split
as examples/sentiment.py with rnncore.Trainer and a ClassificationTask (Adam, clipping, early
stopping on valid accuracy, the best epoch tested). Four classifiers, same seeds and data order:

  pretrained, frozen     the biLM's weights fixed; only the scalar mix and the head learn
  random, frozen         the same architecture around a randomly initialised biLM
  pretrained, fine-tuned the gradient goes on into the biLM
  random, fine-tuned     the same from a random biLM (a plain deep BiLSTM classifier)

next to the bag-of-words logistic regression of examples/sentiment.py. A figure shows the test
accuracies (mean and sd over seeds) and the scalar-mix weights each classifier learned.

    python examples/elmo.py [--lm-epochs 4] [--epochs 6] [--seeds 2] [--embed 64] [--threads 1]
                            [--save-bilm PATH | --bilm PATH] [--figure examples/figures/elmo.png] [--quick]
"""
import argparse
import importlib.util
import io
import os
import sys
import tempfile
import time

import numpy as np

import rnncore
from rnncore import datasets, nn, optim
from rnncore.data import BucketIterator, WordTokenizer
from rnncore.tasks import ClassificationTask

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = (("pretrained", False), ("random", False), ("pretrained", True), ("random", True))


def _sentiment_example():
    """examples/sentiment.py, for its tokenisation and its bag-of-words baseline."""
    spec = importlib.util.spec_from_file_location("sentiment_example", os.path.join(HERE, "sentiment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sentiment = _sentiment_example()


def label(variant):
    source, finetune = variant
    return f"{source}, {'fine-tuned' if finetune else 'frozen'}"


def encode(splits, min_count):
    """A WordTokenizer fitted on the training snippets, each wrapped in <s> ... </s> (<pad> = 0,
    rare words -> <unk>), and the id sequences of every split."""
    wrap = lambda t: f"<s> {sentiment.words(t)} </s>"  # noqa: E731
    tok = WordTokenizer(min_count=min_count, eos=False, pad=True, unk=True)
    tok.fit("\n".join(wrap(t) for t in splits["train"]["text"]))
    ids = {name: [np.array(tok.encode(wrap(t)), np.int64) for t in s["text"]] for name, s in splits.items()}
    return tok, ids


def perplexity(bilm, seqs, batch):
    """(forward ppl, backward ppl) of the sequences, each direction's exp(mean nats per predicted token)."""
    it = BucketIterator(seqs, None, batch, shuffle=False)
    nats, count = np.zeros(2), 0
    for x, lengths, _ in it:
        f, b, n = bilm.direction_losses(x, lengths)
        nats += np.array([f, b]) * n
        count += n
    return tuple(float(v) for v in np.exp(nats / count))


def pretrain(vocab_size, seqs, valid, args, log):
    """The BiLM trained on the training snippets: Adam, clipping, --lm-epochs epochs of
    length-bucketed shuffled batches; returns it and the per-epoch valid perplexities."""
    bilm = nn.BiLM(vocab_size, args.embed, args.embed, num_layers=2, dropout=args.lm_dropout, padding_idx=0,
                   seed=args.seed, threads=args.threads)
    opt = optim.Adam(bilm.parameters(), lr=args.lm_lr, threads=args.threads)
    it = BucketIterator(seqs, None, args.lm_batch, shuffle=True, seed=args.seed)
    history = []
    for epoch in range(args.lm_epochs):
        t0, total, steps = time.perf_counter(), 0.0, 0
        bilm.train()
        for x, lengths, _ in it:
            bilm.zero_grad()
            total += float(bilm.loss(x, lengths))
            bilm.backward()
            optim.clip_grad_norm_(bilm.parameters(), args.clip, threads=args.threads)
            opt.step()
            steps += 1
        bilm.eval()
        ppl = perplexity(bilm, valid, 256)
        history.append(ppl)
        log(f"biLM epoch {epoch + 1}: train loss {total / steps / 2:.3f} nats/token per direction, valid ppl "
            f"forward {ppl[0]:.1f} backward {ppl[1]:.1f}   {time.perf_counter() - t0:5.1f} s")
    return bilm, history


def train_classifier(bilm, ids, splits, finetune, seed, args):
    """An ELMoClassifier around a copy of `bilm`, rnncore.Trainer with a ClassificationTask: Adam
    over its trainable parameters, clipping, early stopping on valid accuracy; the best epoch is tested."""
    clf = nn.ELMoClassifier.from_bilm(bilm, 2, head_hidden=args.hidden, bidirectional=True, pooling="max",
                                      dropout=args.dropout, finetune=finetune, seed=seed, threads=args.threads)
    opt = optim.Adam(clf.trainable_parameters(), lr=args.lr, threads=args.threads)
    task = ClassificationTask(args.batch, seed=seed, pad_value=0, metric="accuracy")
    data = lambda name: (ids[name], splits[name]["label"])  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        trainer = rnncore.Trainer(clf, opt, clip_grad_norm=args.clip, task=task, patience=args.patience,
                                  checkpoint_dir=tmp, threads=args.threads, progress=False, stream=io.StringIO())
        result = trainer.fit(data("train"), data("valid"), epochs=args.epochs)
        rnncore.load(os.path.join(tmp, "best.safetensors"), clf)  # the best epoch's weights
    test = task.evaluate(clf, data("test"))["accuracy"]
    return {"valid": result["best_val_accuracy"], "test": test, "epoch": result["best_epoch"],
            "mix": clf.bilm.mix.mixing_weights(), "gamma": float(clf.bilm.mix.gamma.data[0])}


def run(args, log=print):
    t_start = time.perf_counter()
    splits = datasets.movie_reviews(seed=args.split_seed)
    if args.quick:  # a slice, for the tests: the first snippets of each split
        splits = {name: {k: v[:n] for k, v in s.items()}
                  for (name, s), n in zip(splits.items(), (args.quick_train, 400, 400))}
    tok, ids = encode(splits, args.min_count)
    n = {name: len(s["text"]) for name, s in splits.items()}
    chance = float(max(splits["test"]["label"].mean(), 1 - splits["test"]["label"].mean()))
    log(f"movie reviews: {n['train']} / {n['valid']} / {n['test']} (train / valid / test), vocabulary "
        f"{tok.vocab_size} (min_count {args.min_count}), {sum(map(len, ids['train']))} training tokens "
        f"with <s> </s>, test majority class {chance:.1%}")
    results = {"sizes": n, "chance": chance, "vocab_size": tok.vocab_size, "accuracy": {}, "runs": {}, "mix": {},
               "gamma": {}, "valid": {}}
    t0 = time.perf_counter()
    random_bilm = nn.BiLM(tok.vocab_size, args.embed, args.embed, num_layers=2, dropout=args.lm_dropout,
                          padding_idx=0, seed=args.seed + 1000, threads=args.threads)
    random_ppl = perplexity(random_bilm, ids["valid"], 256)
    if args.bilm:
        bilm = rnncore.load(args.bilm).build()
        if not isinstance(bilm, nn.BiLM) or bilm.vocab_size != tok.vocab_size:
            raise SystemExit(f"--bilm {args.bilm}: not a BiLM over this vocabulary of {tok.vocab_size}")
        bilm.eval()
        history = [perplexity(bilm, ids["valid"], 256)]
        log(f"biLM loaded from {args.bilm}")
    else:
        bilm, history = pretrain(tok.vocab_size, ids["train"], ids["valid"], args, log)
    if args.save_bilm:
        rnncore.save(args.save_bilm, bilm)
    results["ppl"] = {"pretrained": history[-1], "random": random_ppl, "history": history}
    results["time_lm"] = time.perf_counter() - t0
    log(f"biLM valid perplexity: pretrained forward {history[-1][0]:.1f} / backward {history[-1][1]:.1f}; random "
        f"init {random_ppl[0]:.0f} / {random_ppl[1]:.0f} (vocabulary {tok.vocab_size});  "
        f"{results['time_lm']:.0f} s")
    bilms = {"pretrained": bilm, "random": random_bilm}
    seeds = list(range(args.seed, args.seed + args.seeds))
    for variant in VARIANTS:
        t0 = time.perf_counter()
        runs = [train_classifier(bilms[variant[0]], ids, splits, variant[1], seed, args) for seed in seeds]
        test = np.array([r["test"] for r in runs])
        results["runs"][variant] = test
        results["accuracy"][variant] = float(test.mean())
        results["valid"][variant] = float(np.mean([r["valid"] for r in runs]))
        results["mix"][variant] = np.mean([r["mix"] for r in runs], axis=0)
        results["gamma"][variant] = float(np.mean([r["gamma"] for r in runs]))
        sd = f" ± {test.std(ddof=1):.1%}" if len(test) > 1 else ""
        if len(test) > 1:
            sd += f" (seeds: {' '.join(f'{a:.1%}' for a in test)})"
        log(f"ELMo features, biLM {label(variant):22s}: test {test.mean():6.1%}{sd}   valid "
            f"{results['valid'][variant]:6.1%}   mix s = {np.round(results['mix'][variant], 2).tolist()} gamma "
            f"{results['gamma'][variant]:.2f}   best epochs {[r['epoch'] for r in runs]}   "
            f"{time.perf_counter() - t0:5.1f} s")
    bow = sentiment.bag_of_words(splits, Cs=(1.0,) if args.quick else (0.1, 0.3, 1.0, 3.0, 10.0))
    if bow is None:
        log("bag-of-words logistic regression: scikit-learn not installed (pip install scikit-learn)")
    else:
        results["accuracy"][("bow", "logreg")] = bow["test"]
        log(f"bag-of-words logistic regression (1-2 grams, C={bow['C']}): test {bow['test']:6.1%}")
    results["table"] = table(results, seeds)
    for line in results["table"].splitlines():
        log(line)
    if args.figure:
        results["figure"] = write_figure(args.figure, results, log)
    results["time"] = time.perf_counter() - t_start
    return results


def table(results, seeds):
    """The results as a markdown table."""
    rows = ["| features for the BiLSTM classifier | test accuracy (mean ± sd over seeds) | valid |", "|---|---|---|"]
    for variant in VARIANTS:
        test = results["runs"][variant]
        sd = f" ± {100 * test.std(ddof=1):.1f}" if len(test) > 1 else ""
        rows.append(f"| ELMo, biLM {label(variant)} | {100 * test.mean():.1f}{sd} | "
                    f"{100 * results['valid'][variant]:.1f} |")
    if ("bow", "logreg") in results["accuracy"]:
        rows.append(f"| bag-of-words logistic regression | {100 * results['accuracy'][('bow', 'logreg')]:.1f} | — |")
    ppl = results["ppl"]
    rows.append(f"\nbiLM valid perplexity (forward / backward): pretrained {ppl['pretrained'][0]:.1f} / "
                f"{ppl['pretrained'][1]:.1f}, random init {ppl['random'][0]:.0f} / {ppl['random'][1]:.0f}; "
                f"seeds {seeds}")
    return "\n".join(rows)


def write_figure(path, results, log):
    try:
        import matplotlib
    except ImportError:
        log("figure skipped: matplotlib is not installed (pip install 'rnncore[plot]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [label(v) for v in VARIANTS]
    means = [100 * results["runs"][v].mean() for v in VARIANTS]
    sds = [100 * results["runs"][v].std(ddof=1) if len(results["runs"][v]) > 1 else 0 for v in VARIANTS]
    colors = ["tab:blue", "tab:gray", "tab:blue", "tab:gray"]
    ax1.bar(range(4), means, yerr=sds, color=colors, hatch=None, capsize=4)
    for i in (2, 3):
        ax1.patches[i].set_hatch("//")
    if ("bow", "logreg") in results["accuracy"]:
        ax1.axhline(100 * results["accuracy"][("bow", "logreg")], color="tab:red", ls="--", label="bag of words")
        ax1.legend(loc="lower right")
    ax1.set_xticks(range(4), [n.replace(", ", "\n") for n in names])
    lo = min(means) - 8
    ax1.set_ylim(max(lo, 45), min(max(means) + 5, 100))
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("sentiment from ELMo features (mean ± sd over seeds)")
    N = len(results["mix"][VARIANTS[0]])
    width = 0.2
    for i, v in enumerate(VARIANTS):
        ax2.bar(np.arange(N) + (i - 1.5) * width, results["mix"][v], width,
                label=f"{label(v)} (γ={results['gamma'][v]:.2f})", color=colors[i], hatch="//" if v[1] else None,
                edgecolor="black" if v[1] else "white")
    ax2.set_xticks(range(N), ["token layer"] + [f"LSTM layer {k}" for k in range(1, N)])
    ax2.axhline(1 / N, color="k", lw=0.5, ls=":")
    ax2.set_ylabel("softmax mixing weight s_j")
    ax2.set_title("learned scalar mix")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    log(f"figure: {path}")
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm-epochs", type=int, default=4, help="biLM pretraining epochs over the training snippets")
    ap.add_argument("--lm-lr", type=float, default=3e-3)
    ap.add_argument("--lm-batch", type=int, default=64)
    ap.add_argument("--lm-dropout", type=float, default=0.2, help="inside the biLM, during pretraining and fine-tuning")
    ap.add_argument("--embed", type=int, default=64, help="E = H: embedding and each LSTM layer's width")
    ap.add_argument("--epochs", type=int, default=6, help="at most this many epochs per classifier")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64, help="the classifier's BiLSTM, H per direction")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--dropout", type=float, default=0.3, 
                    help="the classifier's, on the ELMo vectors and before its output")
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=2, help="classifier seeds per variant (one pretrained biLM)")
    ap.add_argument("--save-bilm", default="", help="write the pretrained biLM here (rnncore.save)")
    ap.add_argument("--bilm", default="", help="a biLM saved by --save-bilm (same --split-seed, --min-count): "
                    "skip pretraining")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", default=os.path.join(HERE, "figures", "elmo.png"), help="'' for none")
    ap.add_argument("--quick", action="store_true", help="~15 s, for the tests: 2,500 training snippets, E = 32, "
                    "2 biLM epochs, 4 classifier epochs, one seed")
    args = ap.parse_args(argv)
    args.quick_train = 2500
    if args.quick:
        args.lm_epochs, args.epochs, args.seeds = min(args.lm_epochs, 2), min(args.epochs, 4), 1
        args.embed, args.hidden, args.lr, args.batch = min(args.embed, 32), min(args.hidden, 32), 5e-3, 32
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    for name in ("lm_epochs", "lm_batch", "embed", "epochs", "patience", "hidden", "batch", "min_count", "seeds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (args.lr > 0 and args.lm_lr > 0 and args.clip > 0 and 0 <= args.dropout < 1 and 0 <= args.lm_dropout < 1):
        ap.error("--lr, --lm-lr and --clip must be positive, --dropout and --lm-dropout in [0, 1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    results = run(args)
    print(f"threads: {args.threads}, total {results['time']:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
