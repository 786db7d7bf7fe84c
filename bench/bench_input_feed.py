"""Input-feeding attentional decoder: rnncore.nn.InputFeedRNN (the whole loop in C++, one call for
forward and one for BPTT) against the same decoder in PyTorch (OpenNMT-py's InputFeedRNNDecoder
formulas: LSTMCell on [x_t ; feed], GlobalAttention, a Python loop over time, autograd), each in
its own process, forward then backward on one batch.

    PYTHONPATH=. python bench/bench_input_feed.py [--threads N] [--repeat R] [--attn general]

Sizes (the issue's verse task): T = 25 target steps, B = 32, E = 256, H = Hm = Ho = 256,
S = 25 source positions with ragged lengths, one LSTM layer, float32. Medians of R repetitions
after 3 warm-up runs; nothing is asserted about speed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

T, B, E, H, S = 25, 32, 256, 256, 25


def _inputs():
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, E)).astype(np.float32)
    mem = rng.standard_normal((S, B, H)).astype(np.float32)
    lens = rng.integers(1, S + 1, B)
    lens[0] = S
    return x, mem, lens


def run_rnncore(threads, repeat, kind):
    import numpy as np
    from rnncore.nn import Attention, InputFeedRNN
    att = Attention(H, H, kind, dtype=np.float32, seed=0, threads=threads)
    m = InputFeedRNN("lstm", E, H, att, dtype=np.float32, seed=1, threads=threads)
    x, mem, lens = _inputs()
    g = np.ones((T, B, H), np.float32)
    fw, bw = [], []
    for i in range(repeat + 3):
        t0 = time.perf_counter()
        m.forward(x, mem, lens)
        t1 = time.perf_counter()
        m.backward(g)
        t2 = time.perf_counter()
        if i >= 3:
            fw.append(t1 - t0)
            bw.append(t2 - t1)
    return fw, bw


def run_torch(threads, repeat, kind):
    import torch
    torch.set_num_threads(threads)
    x, mem, lens = (torch.from_numpy(a) for a in _inputs())
    mem.requires_grad_(True)
    cell = torch.nn.LSTMCell(E + H, H)
    lin_in = torch.nn.Linear(H, H, bias=False)
    lin_q, lin_c, v = torch.nn.Linear(H, H), torch.nn.Linear(H, H, bias=False), torch.nn.Linear(H, 1, bias=False)
    lin_out = torch.nn.Linear(2 * H, H, bias=kind == "additive")
    mask = torch.arange(S)[None, :] < lens[:, None]  # (B, S)

    def forward():
        h = c = feed = torch.zeros(B, H)
        mb = mem.transpose(0, 1)  # (B, S, H), as GlobalAttention takes it
        keys = lin_c(mb) if kind == "additive" else None
        outs = []
        for t in range(T):
            h, c = cell(torch.cat([x[t], feed], 1), (h, c))
            if kind == "additive":
                score = v(torch.tanh(lin_q(h)[:, None, :] + keys)).squeeze(2)
            else:
                q = lin_in(h) if kind == "general" else h
                score = torch.bmm(mb, q.unsqueeze(2)).squeeze(2)
            a = torch.softmax(score.masked_fill(~mask, float("-inf")), 1)
            ctx = torch.bmm(a.unsqueeze(1), mb).squeeze(1)
            feed = torch.tanh(lin_out(torch.cat([ctx, h], 1)))
            outs.append(feed)
        return torch.stack(outs)

    fw, bw = [], []
    for i in range(repeat + 3):
        t0 = time.perf_counter()
        out = forward()
        t1 = time.perf_counter()
        out.backward(torch.ones_like(out))
        t2 = time.perf_counter()
        if i >= 3:
            fw.append(t1 - t0)
            bw.append(t2 - t1)
    return fw, bw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--attn", default="general", choices=("dot", "general", "additive"))
    ap.add_argument("--worker", choices=("rnncore", "torch"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        fw, bw = (run_rnncore if a.worker == "rnncore" else run_torch)(a.threads, a.repeat, a.attn)
        print(json.dumps({"fw": fw, "bw": bw}))
        return
    res = {}
    for who in ("rnncore", "torch"):
        out = subprocess.run([sys.executable, __file__, "--worker", who, "--threads", str(a.threads), "--repeat",
                              str(a.repeat), "--attn", a.attn], check=True, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
        res[who] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"input feeding, LSTM, {a.attn} attention, T={T} B={B} E={E} H={H} S={S}, float32, threads={a.threads}")
    med = {w: {k: statistics.median(v) * 1e3 for k, v in r.items()} for w, r in res.items()}
    for w in ("rnncore", "torch"):
        m = med[w]
        print(f"  {w:8s} forward {m['fw']:8.2f} ms  backward {m['bw']:8.2f} ms  total {m['fw'] + m['bw']:8.2f} ms")
    tot = {w: med[w]["fw"] + med[w]["bw"] for w in med}
    print(f"  speed-up (torch / rnncore): forward {med['torch']['fw'] / med['rnncore']['fw']:.2f}x, "
          f"forward+backward {tot['torch'] / tot['rnncore']:.2f}x")


if __name__ == "__main__":
    main()
