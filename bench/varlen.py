"""Variable lengths against padding, as one ratio measured back to back.

    python bench/varlen.py                 # rnncore and PyTorch, 2 threads
    python bench/varlen.py --threads 1 --pairs 15

The issue's target: an LSTM training step (T = 100, B = 64, I = H = 512) on lengths uniform in
[10, 100] costs at most (padded time x mean length / 100) + 10%. compare.py times the padded
and the ragged workloads minutes apart, and this machine drifts by more than 10% in that time,
so here each engine's worker alternates padded and ragged steps in pairs and the ratio of each
pair is taken; the median over the pairs is quoted. PyTorch runs its usual path for ragged
batches (pack_padded_sequence, then pad_packed_sequence).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

T, B, I, H = 100, 64, 512, 512


def lengths():
    import numpy as np

    return np.random.default_rng(0).integers(10, T + 1, size=B).astype(np.int64)  # as compare.py


def rnncore_steps(threads):
    import numpy as np

    from rnncore import nn

    layer = nn.LSTM(I, H, seed=0, threads=threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    lens = lengths()

    def step(ragged):
        layer(x, lengths=lens if ragged else None)
        layer.backward(dy)

    return step


def torch_steps(threads):
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I, generator=g, requires_grad=True)
    dy = torch.randn(T, B, H, generator=g)
    lens = torch.from_numpy(lengths())

    def step(ragged):
        layer.zero_grad(set_to_none=False)
        if ragged:
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, enforce_sorted=False)
            out, _ = layer(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
        else:
            out, _ = layer(x)
        out.backward(dy)

    return step


def worker(engine, threads, pairs):
    step = {"rnncore": rnncore_steps, "torch": torch_steps}[engine](threads)
    step(False)
    step(True)
    ratios, padded = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        step(False)
        t1 = time.perf_counter()
        step(True)
        t2 = time.perf_counter()
        padded.append(t1 - t0)
        ratios.append((t2 - t1) / (t1 - t0))
    print(json.dumps({"ratio": statistics.median(ratios), "padded_ms": 1e3 * statistics.median(padded),
                      "min": min(ratios), "max": max(ratios)}))


def main():
    ap = argparse.ArgumentParser(description="ragged / padded time of an LSTM training step, back to back")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=9, help="padded/ragged pairs per engine (the median is quoted)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.pairs)
        return
    mean = float(lengths().mean())
    limit = mean / T * 1.1
    print(f"LSTM T={T} B={B} I=H={H} training step, lengths U[10, {T}] (mean {mean:.2f}), {args.threads} thread(s)")
    print(f"target: ragged / padded <= {mean / T:.3f} + 10% = {limit:.3f}")
    engines = ["rnncore"]
    try:
        import torch  # noqa: F401

        engines.append("torch")
    except ImportError:
        pass
    for engine in engines:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", engine, "--threads",
                              str(args.threads), "--pairs", str(args.pairs)], capture_output=True, text=True,
                             check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        verdict = "" if engine != "rnncore" else ("  (met)" if r["ratio"] <= limit else "  (MISSED)")
        print(f"{engine:>8}: padded {r['padded_ms']:.1f} ms, ragged / padded = {r['ratio']:.3f} "
              f"(pairs: {r['min']:.3f}..{r['max']:.3f}){verdict}")


if __name__ == "__main__":
    main()
