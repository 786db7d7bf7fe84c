"""Seq2seq beam-search decoding speed (rnncore.sampling.seq2seq_decode), tokens per second.

    python bench/seq2seq_decode.py                   # beam 5, 2 threads
    python bench/seq2seq_decode.py --beam 1 --threads 1 --attn none

Shapes (issue 12's verse task scale): target vocabulary V = 8000, E = H = 256, a 2-layer LSTM
decoder with "general" attention and input feeding (OpenNMT-py's default), S = 25 source
positions, B = 32 sources per call, max_len 25. Random weights never favour eos, so every
source runs the full max_len steps: the figure is the steady per-step cost. Reported:
  output tokens/s   B * steps / time (one target token per source per step, as a translation counts)
  row-steps/s       B * beam * steps / time (every beam's step: embedding, cells, attention, head, ranking)
The median of --repeat timed calls after one warm-up call.
"""
import argparse
import statistics
import time

import numpy as np

from rnncore.nn import Attention
from rnncore.sampling import DecoderParts, seq2seq_decode


def build(V, E, H, L, attn, feed, seed=0):
    rng = np.random.default_rng(seed)
    Ho = H

    def r(*shape, scale=0.08):
        return rng.normal(0, scale, shape).astype(np.float32)

    attention = None if attn == "none" else Attention(H, H, attn_type=attn, output_size=Ho, dtype=np.float32, seed=1)
    feed = feed and attention is not None
    F = Ho if feed else 0
    return DecoderParts(cell="lstm", num_layers=L, hidden_size=H, input_feed=feed, embedding=r(V, E),
                        w_ih=[r(4 * H, E + F if l == 0 else H) for l in range(L)], w_hh=[r(4 * H, H) for _ in range(L)],
                        b_ih=[r(4 * H) for _ in range(L)], b_hh=[r(4 * H) for _ in range(L)], attention=attention,
                        out_w=r(V, Ho if attention is not None else H), out_b=r(V))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="general", choices=("dot", "general", "additive", "none"))
    ap.add_argument("--no-feed", action="store_true", help="attention after the RNN instead of input feeding")
    ap.add_argument("--V", type=int, default=8000)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--S", type=int, default=25)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    V, H, L, S, B = args.V, args.H, 2, args.S, args.B
    parts = build(V, H, H, L, args.attn, not args.no_feed)
    rng = np.random.default_rng(2)
    memory = rng.normal(0, 1, (S, B, H)).astype(np.float32)
    lengths = rng.integers(S // 2, S + 1, B).astype(np.int64)
    h0 = rng.normal(0, 0.1, (L, B, H)).astype(np.float32)
    c0 = np.zeros_like(h0)
    method = "beam" if args.beam > 1 else "greedy"
    kw = dict(bos=1, eos=2, max_len=args.max_len, method=method, beam_width=args.beam, threads=args.threads)
    out = seq2seq_decode(parts, memory, lengths, (h0, c0), **kw)  # warm-up (and the step count)
    steps = max(len(h[0].tokens) for h in out)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        seq2seq_decode(parts, memory, lengths, (h0, c0), **kw)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"seq2seq {method} beam={args.beam} attn={args.attn} feed={not args.no_feed} V={V} E=H={H} L={L} S={S} "
          f"B={B} steps={steps} threads={args.threads}: {t * 1e3:.1f} ms/call (median of {args.repeat}), "
          f"{B * steps / t:,.0f} output tokens/s, {B * args.beam * steps / t:,.0f} row-steps/s")


if __name__ == "__main__":
    main()
