"""Attention benchmarks: rnncore.nn.Attention (csrc/ops/attention.cpp) against the same
formulas in PyTorch (OpenNMT-py's GlobalAttention, batch-first as OpenNMT runs it), on a
seq2seq-sized batch: T target steps, B sequences, S source positions, H = Hq = Hm = A = Ho.

pytest-benchmark (timings only, nothing asserted about speed; each result checked once):

    PYTHONPATH=. python -m pytest bench/bench_attention.py --benchmark-only

Ratio table (same process, medians of repetitions; one thread each unless --threads):

    PYTHONPATH=. python bench/bench_attention.py [--quick] [--threads N]

"batched" is all T queries in one call (attention after the decoder RNN), forward then
backward; "steps" is T one-step forward calls on precomputed keys (what a decoder or the
input-feeding loop does at every step; for torch a Python loop of the same calls).
"""
import argparse
import statistics
import time

import numpy as np
import pytest

from rnncore import _core, nn

KINDS = ("dot", "general", "additive")
T, B, S, H = 25, 32, 25, 256


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((T, B, H)).astype(np.float32)
    m = rng.standard_normal((S, B, H)).astype(np.float32)
    lengths = rng.integers(1, S + 1, B)
    return q, m, lengths


def rnncore_runs(kind, threads):
    att = nn.Attention(H, H, kind, dtype=np.float32, seed=0, threads=threads)
    q, m, lengths = _inputs()
    g = np.ones((T, B, H), np.float32)

    def batched():
        att.forward(q, m, lengths)
        att.backward(g)

    w = att.weights_for_core()
    keys = _core.attention_keys(m, w, threads)

    def steps():
        for t in range(T):
            _core.attention_forward(q[t:t + 1], m, w, keys, lengths, threads)

    return att, batched, steps


def torch_runs(kind, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lin_in = torch.nn.Linear(H, H, bias=False)
    lq, lc, v = torch.nn.Linear(H, H), torch.nn.Linear(H, H, bias=False), torch.nn.Linear(H, 1, bias=False)
    lo = torch.nn.Linear(2 * H, H, bias=kind == "additive")
    q, m, lengths = _inputs()
    qt = torch.tensor(q).transpose(0, 1).contiguous().requires_grad_()
    mt = torch.tensor(m).transpose(0, 1).contiguous().requires_grad_()
    mask = torch.arange(S)[None, None, :] >= torch.tensor(lengths)[:, None, None]

    def fwd(query, uh=None):
        if kind == "dot":
            align = torch.bmm(query, mt.transpose(1, 2))
        elif kind == "general":
            align = torch.bmm(lin_in(query), mt.transpose(1, 2))
        else:
            uh = lc(mt) if uh is None else uh
            align = v(torch.tanh(lq(query)[:, :, None] + uh[:, None])).squeeze(-1)
        a = torch.softmax(align.masked_fill(mask, -float("inf")), -1)
        return torch.tanh(lo(torch.cat([torch.bmm(a, mt), query], 2))), a

    def batched():
        h, _ = fwd(qt)
        h.backward(torch.ones_like(h))

    def steps():
        with torch.no_grad():
            uh = lc(mt) if kind == "additive" else None
            for t in range(T):
                fwd(qt[:, t:t + 1], uh)

    return batched, steps


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["batched", "steps"])
def test_rnncore_attention(benchmark, kind, mode):
    att, batched, steps = rnncore_runs(kind, 1)
    q, m, lengths = _inputs()
    h, alpha = att.forward(q, m, lengths)
    assert np.all(np.isfinite(h)) and np.allclose(alpha.sum(-1), 1, atol=1e-5)
    benchmark(batched if mode == "batched" else steps)


def _median_ms(f, reps):
    f()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    reps = 5 if args.quick else 30
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    print(f"T={T} B={B} S={S} H={H} float32, threads={args.threads}, median of {reps} (ms)")
    print(f"{'kind':9s} {'mode':8s} {'rnncore':>9s} {'torch':>9s} {'ratio':>6s}")
    for kind in KINDS:
        _, rb, rs = rnncore_runs(kind, args.threads)
        tb, ts = torch_runs(kind, args.threads) if have_torch else (None, None)
        for mode, r, t in (("batched", rb, tb), ("steps", rs, ts)):
            ours = _median_ms(r, reps)
            theirs = _median_ms(t, reps) if t is not None else float("nan")
            print(f"{kind:9s} {mode:8s} {ours:9.3f} {theirs:9.3f} {theirs / ours:6.2f}")


if __name__ == "__main__":
    main()
