"""Command line: n-gram language models.

    python -m rnncore.ngram ptb --order 5              # fit on PTB train, perplexity on valid/test
    python -m rnncore.ngram ptb --order 5 --kenlm      # ... and KenLM's query of the ARPA file
    python -m rnncore.ngram fit train.txt --order 3 -o kn3.arpa
    python -m rnncore.ngram eval kn3.arpa test.txt

Text files hold one sentence per line (whitespace-separated words).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from .kneser_ney import KneserNeyLM


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _describe(e):
    return (f"perplexity {e.perplexity:.2f}  (log10 p {e.log10prob:.2f}, {e.tokens:,} tokens incl. </s>, "
            f"{e.sentences:,} sentences, {e.oov:,} <unk>; excluding them {e.perplexity_excluding_oov:.2f})")


def _query_speed(lm, text, min_seconds=0.5):
    """Tokens/s of scoring `text` (already encoded; the Cython trie walk only), and of evaluate(text)."""
    stream, _ = lm.token_logprobs(text)
    tokens = int(stream.size - np.count_nonzero(stream == 1))
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        lm._trie.score(stream)
        reps += 1
    core = reps * tokens / (time.perf_counter() - start)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        lm.evaluate(text)
        reps += 1
    full = reps * tokens / (time.perf_counter() - start)
    return core, full


def _kenlm_check(path, lm, text, name):
    try:
        import kenlm
    except ImportError:
        print("  kenlm: not installed (pip install kenlm); no cross-check")
        return
    start = time.perf_counter()
    model = kenlm.Model(path)
    loaded = time.perf_counter() - start
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    theirs = np.array([model.score(line, bos=True, eos=True) for line in lines])
    ours = lm.sentence_logprobs(text)
    tokens = sum(len(line.split()) + 1 for line in lines)
    print(f"  KenLM query of {path} (loaded in {loaded:.1f} s): {name} perplexity "
          f"{10 ** (-theirs.sum() / tokens):.2f}, log10 p {theirs.sum():.2f}; max |ours - kenlm| per sentence "
          f"{np.abs(theirs - ours).max():.1e} over {len(lines):,} sentences")


def _fit_report(lm, train, label):
    start = time.perf_counter()
    lm.fit(train)
    seconds = time.perf_counter() - start
    counts = " ".join(f"{k}={n:,}" for k, n in enumerate(lm.ngram_counts, 1))
    print(f"{label}: estimated in {seconds:.2f} s; n-grams {counts}; vocabulary {len(lm.vocab) - 1:,} (+ <s>)")
    for k, d in enumerate(lm.discounts, 1):
        text = f"D1={d[0]:.4f} D2={d[1]:.4f} D3+={d[2]:.4f}" if lm.modified else f"D={d[0]:.4f}"
        print(f"  order {k}: {text}  (n1..n4 = {', '.join(map(str, lm.count_of_counts[k - 1]))})")
    return seconds


def cmd_ptb(args):
    from ..datasets import ptb
    splits = ptb()
    kind = "modified" if not args.plain else "plain"
    lm = KneserNeyLM(args.order, modified=not args.plain)
    _fit_report(lm, splits["train"], f"KN{args.order} ({kind} interpolated Kneser-Ney) on PTB train")
    for name in ("valid", "test"):
        print(f"  {name:5s} {_describe(lm.evaluate(splits[name]))}")
    core, full = _query_speed(lm, splits["test"])
    print(f"  query: {core / 1e6:.2f} M tokens/s (trie walk on encoded ids), {full / 1e6:.2f} M tokens/s "
          "(evaluate() from text)")
    if args.arpa or args.kenlm:
        with tempfile.TemporaryDirectory() as tmp:
            path = args.arpa or os.path.join(tmp, f"kn{args.order}.arpa")
            start = time.perf_counter()
            lm.save_arpa(path)
            print(f"  wrote {path} in {time.perf_counter() - start:.1f} s")
            if args.kenlm:
                _kenlm_check(path, lm, splits["test"], "test")
    return 0


def cmd_fit(args):
    lm = KneserNeyLM(args.order, modified=not args.plain, discount_fallback=args.discount_fallback)
    _fit_report(lm, _read(args.train), f"KN{args.order} on {args.train}")
    lm.save_arpa(args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_eval(args):
    lm = KneserNeyLM.load_arpa(args.model)
    for path in args.text:
        print(f"{path}: {_describe(lm.evaluate(_read(path)))}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m rnncore.ngram", description="Kneser-Ney n-gram language models")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ptb", help="fit on Penn Treebank train, report valid/test perplexity")
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--plain", action="store_true", help="plain interpolated KN (one discount per order)")
    p.add_argument("--arpa", help="also write the model to this ARPA file")
    p.add_argument("--kenlm", action="store_true",
                   help="cross-check: KenLM's query of the ARPA file (pip install kenlm)")
    p.set_defaults(run=cmd_ptb)
    p = sub.add_parser("fit", help="fit a text file (a sentence per line), write an ARPA file")
    p.add_argument("train")
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--plain", action="store_true")
    p.add_argument("--discount-fallback", action="store_true", help="lmplz's fallback discounts for tiny corpora")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_fit)
    p = sub.add_parser("eval", help="perplexity of text files under an ARPA model")
    p.add_argument("model")
    p.add_argument("text", nargs="+")
    p.set_defaults(run=cmd_eval)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, ImportError, OSError) as exc:
        print(f"python -m rnncore.ngram: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
