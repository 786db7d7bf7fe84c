"""The language-model ladder on Penn Treebank: n-gram counts, Bengio's fixed-window LM, RNN LMs, one table.

    python examples/ptb_ladder.py                                  # every rung, one after the other
    python examples/ptb_ladder.py --quick                          # CI-sized: ~40k training tokens per neural rung
    python examples/ptb_ladder.py --rungs lstm --results ladder.json --max-minutes 30
    python examples/ptb_ladder.py --results ladder.json --rungs none   # print the table stored so far

Rungs (Mikolov's split, 10k words, <eos> per line; published test perplexities from Mikolov's
thesis, table 4.1, and Zaremba et al. 2014):

    kn3, kn5        interpolated modified Kneser-Ney (rnncore.ngram), and KenLM's query of our ARPA
                    file when the kenlm module is importable (pip install kenlm)
    window          Bengio et al. 2003's fixed-window LM (rnncore.nn.FixedWindowLM)
    rnn             a vanilla (tanh) RNN LM
    lstm            Zaremba et al.'s "small" 2x200 LSTM, full softmax
    lstm-adaptive   the same LSTM with an adaptive softmax (cutoffs 2000, 6000, div_value 4, a head bias)

Each neural rung is a `rnncore train ptb ...` argument list (printed under the table): the script
parses it with the CLI's own parser and builds the model, optimizer and Trainer with the CLI's
builders, so a rung's row is what that command would train. The two LSTM rungs run the same
shortened Zaremba schedule (3 epochs at lr 20, 10, 5 on the mean loss, i.e. the paper's 1
halved after each epoch; the paper: 13 epochs, halving after the 4th: one epoch takes ~3 minutes
on a quiet 2-core machine and 10-12 on a loaded one), so their
perplexities compare at equal epochs.

Columns: test and valid perplexity (full splits; --quick: the first --eval-tokens of each),
parameters (n-grams for the count models), training wall time (estimation for the count models;
for the neural ones the Trainer's elapsed time, which includes its validation passes), tokens/s
(training tokens over the time of the training steps alone; estimation for the count models; for
KenLM its query speed on the test split), and the published figure.

--results FILE stores each finished rung's row (a JSON object keyed by rung), so rungs can run as
separate commands and the table is assembled from all of them.
"""
import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time

import numpy as np

import rnncore
from rnncore import cli, datasets

RUNGS = ("kn3", "kn5", "window", "rnn", "lstm", "lstm-adaptive")

PUBLISHED = {  # test perplexity on the same split
    "kn3": ("148.3", "Mikolov 2012, table 4.1"),
    "kn5": ("141.2", "Mikolov 2012, table 4.1"),
    "kn5-kenlm": ("141.2", "Mikolov 2012, table 4.1"),
    "window": ("140.2", "Mikolov 2012, table 4.1 (feed-forward NN LM)"),
    "rnn": ("124.7", "Mikolov 2012, table 4.1 (RNNLM)"),
    "lstm": ("~115", "Zaremba et al. 2014, small, 13 epochs"),
    "lstm-adaptive": ("~115", "Zaremba small (full softmax)"),
}

LABELS = {
    "kn3": "KN3 (modified Kneser-Ney)",
    "kn5": "KN5 (modified Kneser-Ney)",
    "kn5-kenlm": "KN5, KenLM query of our ARPA",
    "window": "fixed-window NN LM (Bengio)",
    "rnn": "vanilla RNN LM (tanh)",
    "lstm": "LSTM Zaremba-small, full softmax",
    "lstm-adaptive": "LSTM Zaremba-small, adaptive softmax",
}

_ZAREMBA_SMALL = ["--layers", "2", "--hidden", "200", "--init", "0.1", "--optimizer", "sgd", "--lr", "20",
                  "--clip", "0.25", "--schedule", "zaremba", "--decay-after", "1", "--lr-decay", "0.5",
                  "--batch-size", "20", "--seq-len", "20", "--epochs", "3"]

# `rnncore train ptb` arguments of each neural rung (the ladder adds --seed, --max-minutes, --threads).
TRAIN_ARGS = {
    "window": ["--model", "window", "--context", "5", "--embed", "128", "--hidden", "400", "--dropout", "0.4",
               "--optimizer", "adam", "--lr", "2e-3", "--schedule", "zaremba", "--decay-after", "2", "--lr-decay",
               "0.6", "--batch-size", "32", "--seq-len", "35", "--epochs", "30", "--max-minutes", "15"],
    "rnn": ["--cell", "rnn_tanh", "--layers", "1", "--hidden", "512", "--embed", "256", "--init", "0.1",
            "--dropout", "0.4", "--adaptive-softmax", "2000,6000", "--adaptive-head-bias", "--optimizer", "adam",
            "--lr", "1e-3", "--clip", "0.25", "--schedule", "plateau", "--lr-decay", "0.5", "--batch-size", "32",
            "--seq-len", "35", "--epochs", "40", "--max-minutes", "50"],
    "lstm": _ZAREMBA_SMALL,
    # the head bias (off in PyTorch) narrows the gap to the full softmax at equal epochs; a wider shortlist and
    # tail (3000, div 2) narrow it more but cost the speed (bench/RESULTS.md, 2026-12-02)
    "lstm-adaptive": _ZAREMBA_SMALL + ["--adaptive-softmax", "2000,6000", "--adaptive-head-bias"],
}

QUICK_TOKENS = 40_000    # training tokens per neural rung with --quick
QUICK_EVAL_TOKENS = 10_000
EVAL_BATCH = 10          # streams for validation and test (Zaremba's)


def _arg(argv, name):
    """The value of `name` in an argument list (the last one given), or None."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    return values[-1] if values else None


def _set(argv, name, value):
    """argv with `name value` replacing any earlier `name`."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == name and i + 1 < len(argv):
            skip = True
            continue
        out.append(a)
    return out + [name, str(value)]


# -- count models ---------------------------------------------------------------------------------

def _kenlm_rows(lm, splits, base):
    """KenLM's query of lm's ARPA file: its row, or a row saying why there is none."""
    try:
        import kenlm
    except ImportError:
        return dict(base, rung="kn5-kenlm", note="kenlm not installed (pip install kenlm)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kn5.arpa")
        lm.save_arpa(path)
        start = time.perf_counter()
        model = kenlm.Model(path)
        loaded = time.perf_counter() - start
    ppl, rate = {}, None
    for split in ("valid", "test"):
        lines = splits[split].split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        start = time.perf_counter()
        total = sum(model.score(line, bos=True, eos=True) for line in lines)
        seconds = time.perf_counter() - start
        tokens = sum(len(line.split()) + 1 for line in lines)  # the words and </s>
        ppl[split] = 10.0 ** (-total / tokens)
        if split == "test":
            rate = tokens / seconds
    return dict(base, rung="kn5-kenlm", test_ppl=ppl["test"], valid_ppl=ppl["valid"], train_seconds=loaded,
                tokens_per_s=rate, note="KenLM"
                + " query; time = loading the ARPA file, tokens/s = its query of test")


def run_ngram(rung, splits, args):
    from rnncore.ngram import KneserNeyLM

    order = int(rung[2:])
    lm = KneserNeyLM(order)
    start = time.perf_counter()
    lm.fit(splits["train"])
    seconds = time.perf_counter() - start
    train_tokens = sum(len(line.split()) + 1 for line in splits["train"].split("\n") if line)
    ev = {split: lm.evaluate(splits[split]) for split in ("valid", "test")}
    row = dict(rung=rung, test_ppl=ev["test"].perplexity, valid_ppl=ev["valid"].perplexity,
               params=int(sum(lm.ngram_counts)), params_kind="n-grams", train_seconds=seconds,
               tokens_per_s=train_tokens / seconds, command=f"python -m rnncore.ngram ptb --order {order}")
    rows = [row]
    if order == 5:
        rows.append(_kenlm_rows(lm, splits, {k: row[k] for k in ("params", "params_kind", "command")}))
    return rows


# -- neural models --------------------------------------------------------------------------------

def rung_argv(rung, args):
    """The `rnncore train ptb` argument list of a neural rung under this run's options."""
    argv = list(TRAIN_ARGS[rung]) + ["--seed", str(args.seed), "--eval-batch-size", str(EVAL_BATCH)]
    if args.max_minutes is not None:
        argv = _set(argv, "--max-minutes", args.max_minutes)
    if args.quick or args.max_steps is not None:
        steps = args.max_steps
        if steps is None:
            window = int(_arg(argv, "--batch-size")) * int(_arg(argv, "--seq-len"))
            steps = max(1, math.ceil(QUICK_TOKENS / window))
        argv = _set(argv, "--max-steps", steps)
    if args.threads is not None:
        argv = _set(argv, "--threads", args.threads)
    return argv


def run_neural(rung, splits, args, out_dir):
    argv = rung_argv(rung, args)
    # the CLI's parser and builders: the same model, optimizer and Trainer as `rnncore train ptb ARGV`
    targs = cli.build_parser().parse_args(["train", "ptb", *argv, "--out", out_dir, "--no-progress",
                                           "--log-every", str(args.log_every), "--checkpoint-every", "1000000"])
    cli._run_limits(targs)
    name, level, tok, train_ids, valid_ids = cli._training_data(targs, None)
    model, opt, lr = cli._model_and_optimizer(targs, None, tok, level)
    trainer = cli._make_trainer(targs, model, opt, tok, level)
    cli._print_plan(targs, trainer, name, level, tok, train_ids, valid_ids, lr)
    test_ids = tok.encode(splits["test"])
    if args.eval_tokens is not None:
        valid_ids, test_ids = valid_ids[:args.eval_tokens + 1], test_ids[:args.eval_tokens + 1]
    step_seconds = [0.0]
    train_batch = trainer._train_batch  # what fit() calls for every step

    def timed_batch(batch):  # the training steps' own time, without the validation passes
        t0 = time.perf_counter()
        out = train_batch(batch)
        step_seconds[0] += time.perf_counter() - t0
        return out

    trainer._train_batch = timed_batch
    start = time.perf_counter()
    result = trainer.fit(train_ids, valid_ids, epochs=targs.epochs, max_steps=targs.max_steps,
                         max_minutes=targs.max_minutes)
    test = trainer.evaluate(test_ids)
    wall = time.perf_counter() - start
    params = sum(p.data.size for p in model.parameters())
    epochs = result["epochs"] + trainer.position / trainer._batcher.num_windows
    return [dict(rung=rung, test_ppl=test["ppl"], valid_ppl=result["val_ppl"], params=int(params),
                 params_kind="weights", train_seconds=trainer.elapsed, wall_seconds=wall,
                 tokens_per_s=trainer.tokens_seen / step_seconds[0] if step_seconds[0] > 0 else None,
                 steps=result["steps"],
                 epochs=round(epochs, 2), stop=result["stop"], threads=rnncore.get_num_threads(),
                 command="rnncore train ptb " + " ".join(shlex.quote(a) for a in argv))]


# -- the table -------------------------------------------------------------------------------------

def _load(path):
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    if not isinstance(rows, dict):
        raise SystemExit(f"{path}: expected a JSON object of rows keyed by rung (written by this script)")
    return rows


def _save(path, new_rows):
    """Add new_rows to the file's rows: read again under a lock, so that rungs run as parallel
    commands into the same file all keep their rows."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = _load(path)
        rows.update(new_rows)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    return rows


def _fmt_params(n, kind):
    text = f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"
    return text + (" n-grams" if kind == "n-grams" else "")


def _fmt_seconds(s):
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min"


def _fmt_rate(r):
    if r is None:
        return "-"
    return f"{r / 1e6:.2f}M" if r >= 1e6 else f"{r / 1e3:.1f}k"


def table(rows):
    """The ladder as a markdown table, in rung order."""
    lines = ["| rung | test ppl | valid ppl | parameters | training time | tokens/s | published test ppl |",
             "|---|---:|---:|---:|---:|---:|---|"]
    order = ["kn3", "kn5", "kn5-kenlm", "window", "rnn", "lstm", "lstm-adaptive"]
    for key in order + sorted(set(rows) - set(order)):
        if key not in rows:
            continue
        r = rows[key]
        pub, src = PUBLISHED.get(key, ("", ""))
        label = LABELS.get(key, key)
        if "test_ppl" not in r:
            lines.append(f"| {label} | {r.get('note', 'not run')} | | | | | {pub} ({src}) |")
            continue
        time_note = _fmt_seconds(r["train_seconds"])
        if "epochs" in r:
            time_note += f", {r['epochs']:g} ep"
        lines.append(f"| {label} | **{r['test_ppl']:.2f}** | {r['valid_ppl']:.2f} | "
                     f"{_fmt_params(r['params'], r.get('params_kind'))} | {time_note} | "
                     f"{_fmt_rate(r['tokens_per_s'])} | {pub} ({src}) |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--rungs", default=",".join(RUNGS),
                    help=f"comma-separated rungs to run, of {','.join(RUNGS)} ('none': only print the table)")
    ap.add_argument("--quick", action="store_true",
                    help=f"CI-sized: ~{QUICK_TOKENS // 1000}k training tokens per neural rung, the first "
                         f"{QUICK_EVAL_TOKENS} tokens of valid and test")
    ap.add_argument("--results", metavar="FILE.json", help="store each finished rung's row here (and read the "
                    "rows stored before, for the table)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="training time limit per neural rung (default: the rung's own: window 15, rnn 50, "
                         "lstm none)")
    ap.add_argument("--max-steps", type=int, default=None, help="training steps per neural rung (overrides --quick's)")
    ap.add_argument("--eval-tokens", type=int, default=None, help="evaluate on the first N valid/test tokens only")
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: OMP_NUM_THREADS or all CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="keep each neural rung's checkpoints and metrics.jsonl in DIR/<rung> (default: none kept)")
    ap.add_argument("--log-every", type=int, default=200, help="training steps between log lines")
    args = ap.parse_args(argv)
    rungs = [] if args.rungs == "none" else [r.strip() for r in args.rungs.split(",") if r.strip()]
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        ap.error(f"--rungs: unknown rung(s) {', '.join(unknown)}; expected some of {','.join(RUNGS)}")
    if args.quick and args.eval_tokens is None:
        args.eval_tokens = QUICK_EVAL_TOKENS
    if args.threads is not None:
        rnncore.set_num_threads(args.threads)
    rows = _load(args.results)
    if rungs:
        try:
            splits = datasets.ptb()
        except datasets.MissingCorpusError as exc:
            sys.exit(str(exc))
    for rung in rungs:
        print(f"==== {rung} ====", flush=True)
        load_start = os.getloadavg()[0]
        if rung.startswith("kn"):
            new = run_ngram(rung, splits, args)
        elif args.out:
            new = run_neural(rung, splits, args, os.path.join(args.out, rung))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                new = run_neural(rung, splits, args, tmp)
        for row in new:
            row.update(quick=bool(args.quick), eval_tokens=args.eval_tokens, seed=args.seed,
                       date=time.strftime("%Y-%m-%d %H:%M"),
                       load=f"{load_start:.1f}-{os.getloadavg()[0]:.1f}")  # 1-minute load averages, start-end
            rows[row["rung"]] = row
            if "test_ppl" in row:
                print(f"{row['rung']}: test perplexity {row['test_ppl']:.2f}, valid {row['valid_ppl']:.2f}, "
                      f"{_fmt_seconds(row['train_seconds'])}, {_fmt_rate(row['tokens_per_s'])} tokens/s", flush=True)
            else:
                print(f"{row['rung']}: {row.get('note')}", flush=True)
        if args.results:
            rows = _save(args.results, {row["rung"]: row for row in new})
    print()
    print(table(rows))
    commands = [(k, rows[k]["command"]) for k in RUNGS if k in rows and rows[k].get("command")]
    if commands:
        print()
        for key, command in commands:
            print(f"{key}: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
