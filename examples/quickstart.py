"""Quick start: train an LSTM on the classic "adding problem" with rnncore's layers.

Each input step carries (a random number, a marker); the target is the sum of the two
numbers whose marker is 1. A model that predicts the mean scores a mean squared error of
about 0.167; an LSTM that learns to remember the marked numbers goes far below it.

    python examples/quickstart.py [--steps 800] [--seq-len 20] [--threads 2]
"""
import argparse
import time

import numpy as np

import rnncore
from rnncore.nn import LSTM, Parameter


def adding_batch(rng, T, B):
    x = np.zeros((T, B, 2), np.float32)
    x[:, :, 0] = rng.random((T, B))
    first = rng.integers(0, T // 2, size=B)
    second = rng.integers(T // 2, T, size=B)
    x[first, np.arange(B), 1] = 1.0
    x[second, np.arange(B), 1] = 1.0
    y = x[first, np.arange(B), 0] + x[second, np.arange(B), 0]
    return x, y.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seq-len", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads is not None:
        rnncore.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    lstm = LSTM(2, args.hidden, seed=0)
    readout_w = Parameter(np.zeros(args.hidden, np.float32))  # linear readout of the last hidden state
    readout_b = Parameter(np.zeros(1, np.float32))
    w, b = readout_w.data, readout_b.data
    params = lstm.parameters() + [readout_w, readout_b]
    moments = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in params]
    start, seen = time.perf_counter(), 0
    for step in range(1, args.steps + 1):
        x, y = adding_batch(rng, args.seq_len, args.batch)
        out, (h_n, c_n) = lstm(x)
        pred = h_n[0] @ w + b
        err = pred - y
        loss = float(np.mean(err ** 2))
        dpred = 2 * err / len(y)
        dh_n = np.zeros_like(h_n)
        dh_n[0] = np.outer(dpred, w)
        lstm.zero_grad()
        lstm.backward(None, (dh_n, None))
        readout_w.grad[...] = h_n[0].T @ dpred
        readout_b.grad[...] = dpred.sum()
        # Adam (rnncore.optim has the fused C++ version).
        for p, (m, v) in zip(params, moments):
            m += 0.1 * (p.grad - m)
            v += 0.001 * (p.grad * p.grad - v)
            m_hat = m / (1 - 0.9 ** step)
            v_hat = v / (1 - 0.999 ** step)
            p.data -= args.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        seen += args.seq_len * args.batch
        if step % 50 == 0 or step == 1:
            rate = seen / (time.perf_counter() - start)
            print(f"step {step:4d}  mse {loss:.4f}  (predicting the mean: 0.167)  {rate:,.0f} steps*seqs/s")
    print(f"threads: {rnncore.get_num_threads()}, total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
