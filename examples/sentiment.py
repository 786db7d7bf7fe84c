"""Sentiment of movie-review snippets: unidirectional vs bidirectional LSTM, last/mean/max pooling.

The lectures' many-to-one example. A word-level SequenceClassifier (embedding -> LSTM ->
pooling -> Linear) reads a Rotten Tomatoes snippet and says positive or negative. The data
is rnncore.datasets.movie_reviews(): 10,605 snippets with mean human scores in -4..4 (Hutto &
Gilbert 2014), label = sign of the score, |score| < 0.5 dropped (533), a fixed seeded split
8,058 / 1,007 / 1,007 (train / valid / test).

Six models, same seeds, same data order and the same budget (at most --epochs epochs, early
stopping on validation accuracy with --patience, the best epoch's weights are tested; the loop is
rnncore.Trainer with an rnncore.tasks.ClassificationTask):
{unidirectional, bidirectional} x pooling {last, mean, max}, each trained from --seeds seeds
(initialisation and batch order; test accuracy is their mean: one test split of 1,007
sentences has a standard error of about 1.2 points, as large as the differences measured). 'last' is each direction's final
state (for the reverse direction: after reading back to the first word). Next to them a
bag-of-words logistic regression (scikit-learn: word unigrams + bigrams, C chosen on the
validation split), the classic baseline these sentences are known for.

    python examples/sentiment.py [--epochs 12] [--seeds 3] [--hidden 64] [--embed 64] [--threads 1] [--quick]
"""
import argparse
import io
import os
import re
import sys
import tempfile
import time

import numpy as np

import rnncore
from rnncore import datasets, nn, optim
from rnncore.data import WordTokenizer
from rnncore.tasks import ClassificationTask

POOLINGS = ("last", "mean", "max")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")  # words (with 's n't 're ...), single punctuation


def words(text):
    """'The Rock is destined...' -> 'the rock is destined . . .' (lower case, punctuation split off)."""
    return " ".join(_WORD.findall(text.lower().replace("\u2019", "'")))


def encode(splits, min_count):
    """A WordTokenizer fitted on the training texts (<pad> = 0, rare words -> <unk>) and the id
    sequences of every split."""
    tok = WordTokenizer(min_count=min_count, eos=False, pad=True, unk=True)
    tok.fit("\n".join(words(t) for t in splits["train"]["text"]))
    ids = {name: [tok.encode(words(t)) for t in s["text"]] for name, s in splits.items()}
    return tok, ids


def data(ids, splits, name):
    """(id sequences, labels) of a split: what ClassificationTask batches."""
    return ids[name], splits[name]["label"]


def train_one(vocab_size, ids, splits, bidirectional, pooling, seed, args):
    """rnncore.Trainer with a ClassificationTask: Adam + global-norm clipping, length-bucketed batches
    shuffled by the seed, early stopping on valid accuracy (patience); the best epoch's checkpoint
    is tested."""
    model = nn.SequenceClassifier(vocab_size=vocab_size, embedding_dim=args.embed, hidden_size=args.hidden,
                                  num_classes=2, cell="lstm", bidirectional=bidirectional, pooling=pooling,
                                  dropout=args.dropout, padding_idx=0, seed=seed, threads=args.threads)
    opt = optim.Adam(model.parameters(), lr=args.lr, threads=args.threads)
    task = ClassificationTask(args.batch, seed=seed, pad_value=0, metric="accuracy")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = rnncore.Trainer(model, opt, clip_grad_norm=args.clip, task=task, patience=args.patience,
                                  checkpoint_dir=tmp, threads=args.threads, progress=False, stream=io.StringIO())
        result = trainer.fit(data(ids, splits, "train"), data(ids, splits, "valid"), epochs=args.epochs)
        rnncore.load(os.path.join(tmp, "best.safetensors"), model)  # the best epoch's weights
    test = task.evaluate(model, data(ids, splits, "test"))["accuracy"]
    return {"valid": result["best_val_accuracy"], "test": test, "epoch": result["best_epoch"],
            "epochs_run": result["epochs"]}


def bag_of_words(splits, Cs=(0.1, 0.3, 1.0, 3.0, 10.0)):
    """Logistic regression on word unigram + bigram indicators, C picked on valid; None
    without scikit-learn."""
    try:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    vec = CountVectorizer(ngram_range=(1, 2), min_df=1, binary=True, token_pattern=r"\S+",
                          preprocessor=words, lowercase=False)
    X = {name: (vec.fit_transform if name == "train" else vec.transform)(s["text"])
         for name, s in (("train", splits["train"]), ("valid", splits["valid"]), ("test", splits["test"]))}
    best = None
    for C in Cs:
        clf = LogisticRegression(C=C, solver="liblinear", max_iter=1000).fit(X["train"], splits["train"]["label"])
        valid = clf.score(X["valid"], splits["valid"]["label"])
        if best is None or valid > best[0]:
            best = (valid, C, clf)
    valid, C, clf = best
    return {"valid": valid, "test": clf.score(X["test"], splits["test"]["label"]), "C": C}


def run(args, log=print):
    splits = datasets.movie_reviews(seed=args.split_seed)
    if args.quick:  # a slice, for the tests: the first snippets of each split
        splits = {name: {k: v[:n] for k, v in s.items()}
                  for (name, s), n in zip(splits.items(), (args.quick_train, 500, 500))}
    tok, ids = encode(splits, args.min_count)
    n = {name: len(s["text"]) for name, s in splits.items()}
    chance = float(max(splits["test"]["label"].mean(), 1 - splits["test"]["label"].mean()))
    log(f"movie reviews: {n['train']} / {n['valid']} / {n['test']} (train / valid / test), vocabulary "
        f"{tok.vocab_size} (min_count {args.min_count}), test majority class {chance:.1%}")
    results = {"accuracy": {}, "valid": {}, "runs": {}, "time": {}, "chance": chance, "sizes": n}
    seeds = list(range(args.seed, args.seed + args.seeds))
    for bidirectional in (False, True):
        for pooling in POOLINGS:
            key = ("bi" if bidirectional else "uni", pooling)
            t0 = time.perf_counter()
            runs = [train_one(tok.vocab_size, ids, splits, bidirectional, pooling, seed, args) for seed in seeds]
            dt = time.perf_counter() - t0
            test = np.array([r["test"] for r in runs])
            results["accuracy"][key], results["valid"][key] = float(test.mean()), float(np.mean([r["valid"] for r in runs]))
            results["runs"][key], results["time"][key] = test, dt
            log(f"LSTM {key[0] + 'directional':15s} pooling {pooling:4s}: test {test.mean():6.1%}"
                + (f" (seeds: {' '.join(f'{a:.1%}' for a in test)})" if len(seeds) > 1 else "")
                + f"   valid {results['valid'][key]:6.1%}   best epochs {[r['epoch'] for r in runs]}   {dt:5.1f} s")
    t0 = time.perf_counter()
    bow = bag_of_words(splits, Cs=(1.0,) if args.quick else (0.1, 0.3, 1.0, 3.0, 10.0))
    if bow is None:
        log("bag-of-words logistic regression: scikit-learn not installed (pip install scikit-learn)")
    else:
        results["accuracy"][("bow", "logreg")] = bow["test"]
        log(f"bag-of-words logistic regression (1-2 grams, C={bow['C']}): test {bow['test']:6.1%}   valid "
            f"{bow['valid']:6.1%}   {time.perf_counter() - t0:5.1f} s")
    acc = results["accuracy"]
    uni = {p: acc[("uni", p)] for p in POOLINGS}
    bi = {p: acc[("bi", p)] for p in POOLINGS}
    log("bidirectional - unidirectional (test, mean over seeds): " + ", ".join(f"{p} {100 * (bi[p] - uni[p]):+.1f} pt"
                                                               for p in POOLINGS))
    return results


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12, help="at most this many epochs per model")
    ap.add_argument("--patience", type=int, default=2, help="stop after this many epochs without a better valid accuracy")
    ap.add_argument("--hidden", type=int, default=64, help="H per direction")
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--clip", type=float, default=5.0, help="clip_grad_norm_ max_norm")
    ap.add_argument("--dropout", type=float, default=0.3, help="before the output layer")
    ap.add_argument("--min-count", type=int, default=2, help="rarer training words become <unk>")
    ap.add_argument("--seed", type=int, default=0, help="first seed of initialisation and batch order")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per model (the same seeds for every model); "
                    "accuracies are their mean")
    ap.add_argument("--split-seed", type=int, default=0, help="datasets.movie_reviews(seed=...)")
    ap.add_argument("--threads", type=int, default=1, help="1: these models are too small for a second thread")
    ap.add_argument("--quick", action="store_true", help="~10 s, for the tests: a slice of the data, 4 epochs at lr 5e-3, one seed, H = E = 32")
    args = ap.parse_args(argv)
    args.quick_train = 4000
    if args.quick:
        args.epochs, args.seeds, args.lr = min(args.epochs, 4), 1, 5e-3
        args.hidden, args.embed = min(args.hidden, 32), min(args.embed, 32)
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    for name in ("epochs", "patience", "seeds", "hidden", "embed", "batch", "min_count"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (args.lr > 0 and args.clip > 0 and 0 <= args.dropout < 1):
        ap.error("--lr and --clip must be positive and --dropout in [0, 1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    results = run(args)
    print(f"threads: {args.threads}, total {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
