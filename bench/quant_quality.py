"""How much int8 and bf16 inference change a trained language model's perplexity (issue 16).

    python bench/quant_quality.py run/last.safetensors shakespeare valid
    python bench/quant_quality.py ptb-run/last.safetensors ptb test --batch-size 10

Evaluates the checkpoint's float model and rnncore.quantize(model, "int8") and (..., "bf16") with
rnncore.evaluate on the same split and windows (the run's batch size and window unless given),
and prints each loss, perplexity and the relative change against float32.
"""
import argparse
import time

import rnncore
from rnncore import cli


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a language-model checkpoint written by rnncore train")
    ap.add_argument("corpus", help="shakespeare, ptb, or a text file or folder")
    ap.add_argument("split", choices=("train", "valid", "test"))
    ap.add_argument("--batch-size", type=int, default=None, help="streams (default: the run's)")
    ap.add_argument("--seq-len", type=int, default=None, help="window (default: the run's)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        rnncore.set_num_threads(args.threads)
    ckpt, model, tok = cli._load_lm(args.checkpoint)
    _, state = cli._run_info(ckpt)
    text, what = cli._checkpoint_text(argparse.Namespace(data=args.corpus, split=args.split), {})
    ids = cli._encode(tok, text, "evaluation")
    B = args.batch_size or state.get("batch_size", 32)
    T = args.seq_len or state.get("seq_len", 35)
    print(f"{args.checkpoint}: {what}, {ids.size:,} tokens, windows of {B} x {T}")
    base = None
    for precision in ("fp32", "int8", "bf16"):
        m = model if precision == "fp32" else rnncore.quantize(model, precision)
        t0 = time.perf_counter()
        ev = rnncore.evaluate(m, ids, batch_size=B, seq_len=T)
        base = base or ev["ppl"]
        print(f"  {precision}: loss {ev['loss']:.5f} nats/token, perplexity {ev['ppl']:.4f} "
              f"({100 * (ev['ppl'] / base - 1):+.3f}% against fp32; {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
