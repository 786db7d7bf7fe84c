"""Parity, sum and comparison of bit strings: gated RNNs against a vanilla tanh RNN, and why.

The lectures' experiment. A SequenceClassifier (input_size=1: one bit per step) reads a bit
string and answers at the end only:
  parity   the XOR of all bits (2 classes; chance 50%)
  sum      how many bits are 1 (T + 1 classes)
  compare  is the sum of the first half larger than that of the second (2 classes; ties: no)
Training strings have random lengths 1..T (ragged batches with lengths), so short strings
give a signal from the start; the test strings all have length T (50 by default). A small
LSTM/GRU learns parity to ~100% while a tanh RNN of the same size stays near chance.

Why: the gradient-flow figure (rnncore.diagnostics) plots ||dL/dh_t|| against the distance
back from the loss, measured by the engine during BPTT, for the three cells at initialisation
after 10% of the steps and after training; and, for an exploding tanh RNN (W_hh = 3 x a random orthogonal matrix),
the profile before and after global-norm clipping (clipping multiplies every gradient by the
same factor: it bounds the step, it does not change the shape of the profile).

It also builds the lecture's hand-set parity RNN (ReLU, two hidden units, no training:
u1 = relu(x_t + p_{t-1}), u2 = relu(x_t + p_{t-1} - 1), p_t = u1 - 2 u2) in rnncore.nn.RNN
and checks that it is exact on every bit string up to 12 bits and on random length-T ones.

    python examples/parity.py [--task parity|sum|compare|all] [--length 50] [--hidden 16]
                              [--steps 6000] [--figure examples/figures/parity_gradient_flow.png] [--quick]
"""
import argparse
import os
import sys
import time

import numpy as np

from rnncore import diagnostics, nn, optim

CELLS = {"RNN (tanh)": "rnn_tanh", "LSTM": "lstm", "GRU": "gru"}
TASKS = ("parity", "sum", "compare")
HERE = os.path.dirname(os.path.abspath(__file__))


def num_classes(task, T):
    return T + 1 if task == "sum" else 2


def labels_of(task, bits, lengths):
    """bits (T, B) in {0, 1} (zero past each length), lengths (B,) -> labels (B,)."""
    if task == "parity":
        return bits.sum(0) % 2
    if task == "sum":
        return bits.sum(0)
    t = np.arange(bits.shape[0])[:, None]
    first = ((t < lengths[None, :] // 2) * bits).sum(0)
    return (first > bits.sum(0) - first).astype(np.int64)


def make_batch(rng, task, n, T, ragged):
    """x (T, n, 1) float32, labels (n,), lengths (n,): random bits, lengths 1..T if ragged else T."""
    lengths = rng.integers(1, T + 1, size=n) if ragged else np.full(n, T)
    bits = rng.integers(0, 2, size=(T, n))
    bits[np.arange(T)[:, None] >= lengths[None, :]] = 0
    return bits[:, :, None].astype(np.float32), labels_of(task, bits, lengths), lengths


def make_model(cell, task, args, seed=0):
    return nn.SequenceClassifier(input_size=1, hidden_size=args.hidden, num_classes=num_classes(task, args.length),
                                 cell=cell, seed=seed, threads=args.threads)


def train(model, task, args, seed=0, probe_at=None, probe=None):
    """Adam with global-norm clipping on ragged batches; probe(model) runs before step probe_at."""
    rng = np.random.default_rng(seed)
    opt = optim.Adam(model.parameters(), lr=args.lr, threads=args.threads)
    model.train()
    for step in range(args.steps):
        if step == probe_at:
            probe(model)
            model.train()
        x, y, lengths = make_batch(rng, task, args.batch, args.length, ragged=True)
        model.loss(x, y, lengths=lengths)
        opt.zero_grad()
        model.backward()
        optim.clip_grad_norm_(model.parameters(), args.clip, threads=args.threads)
        opt.step()
    return model


def accuracy(model, task, T, n=2000, seed=1):
    x, y, _ = make_batch(np.random.default_rng(seed), task, n, T, ragged=False)
    model.eval()
    return float((model.forward(x).argmax(-1) == y).mean())


def gradient_profile(model, task, T, n=256, seed=2):
    """Mean ||dL/dh_t|| against the distance back from the loss, on n full-length strings."""
    x, y, _ = make_batch(np.random.default_rng(seed), task, n, T, ragged=False)
    diagnostics.record_grad_norms(model)
    model.eval()
    model.loss(x, y)
    model.zero_grad()
    model.backward()
    norms = diagnostics.grad_norms(model)["rnn"][-1]  # (T, B), the last layer
    diagnostics.record_grad_norms(model, False)
    return diagnostics.distance_profile(norms)


def exploding_profiles(T, hidden, max_norm=1.0, gain=3.0, seed=3, threads=1):
    """A tanh RNN with W_hh = gain x a random orthogonal matrix (spectral radius `gain`, the
    chaotic regime): its profile, and the same after clip_grad_norm_(max_norm)."""
    model = nn.SequenceClassifier(input_size=1, hidden_size=hidden, num_classes=2, cell="rnn_tanh", seed=seed,
                                  threads=threads)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(hidden, hidden)))
    model.rnn.weight_hh_l0.data[...] = gain * q
    x, y, _ = make_batch(np.random.default_rng(seed), "parity", 256, T, ragged=False)
    diagnostics.record_grad_norms(model)
    model.loss(x, y)
    model.zero_grad()
    model.backward()
    k, v = diagnostics.distance_profile(model.rnn.grad_norms[0])
    total = optim.clip_grad_norm_(model.parameters(), max_norm, threads=threads)
    scale = min(1.0, max_norm / (total + 1e-6))
    return k, v, v * scale, total


# -- the lecture's hand-set parity RNN --------------------------------------------------------------

def handset_parity_rnn(threads=1):
    """rnncore.nn.RNN(1, 2, relu) with the slide's weights; the parity is out @ READOUT."""
    rnn = nn.RNN(1, 2, nonlinearity="relu", threads=threads)
    rnn.weight_ih_l0.data[...] = [[1.0], [1.0]]
    rnn.weight_hh_l0.data[...] = [[1.0, -2.0], [1.0, -2.0]]
    rnn.bias_ih_l0.data[...] = [0.0, -1.0]
    rnn.bias_hh_l0.data[...] = 0.0
    return rnn


READOUT = np.array([1.0, -2.0], np.float32)  # p_t = u1 - 2 u2


def check_handset(max_bits=12, T=50, n_random=1000, seed=4):
    """Strings checked and errors: every string of 1..max_bits bits (running parity at every
    step, ragged lengths in one batch) and n_random random strings of length T."""
    rnn = handset_parity_rnn()
    n = max_bits
    codes = np.arange(2 ** n)
    bits = ((codes[None, :] >> np.arange(n)[:, None]) & 1)  # (n, 2^n): every n-bit string
    strings = [bits]
    lengths = [np.full(2 ** n, n)]
    for m in range(1, n):  # every shorter string too, as ragged rows (zero padded)
        b = bits[:, :2 ** m].copy()
        b[m:] = 0
        strings.append(b)
        lengths.append(np.full(2 ** m, m))
    rng = np.random.default_rng(seed)
    bits = np.concatenate(strings, 1)
    lengths = np.concatenate(lengths)
    checked, errors = 0, 0
    for b, lens in ((bits, lengths), (rng.integers(0, 2, size=(T, n_random)), np.full(n_random, T))):
        out, _ = rnn.forward(b[:, :, None].astype(np.float32), lengths=lens)
        p = out @ READOUT  # (T, B) running parity
        want = np.cumsum(b, 0) % 2
        valid = np.arange(b.shape[0])[:, None] < lens[None, :]
        errors += int(((p != want) & valid).sum())
        checked += b.shape[1]
    return checked, errors


# -- the experiment ---------------------------------------------------------------------------------

def run(args, log=print):
    tasks = TASKS if args.task == "all" else (args.task,)
    results = {"accuracy": {}, "time": {}, "by_length": {}}
    profiles_init, profiles_early, profiles_trained = {}, {}, {}
    for task in tasks:
        for label, cell in CELLS.items():
            t0 = time.perf_counter()
            model = make_model(cell, task, args)
            if task == "parity":
                profiles_init[label] = gradient_profile(model, task, args.length)
            early = max(1, args.steps // 10)

            def probe(m, label=label, task=task):
                profiles_early[label] = gradient_profile(m, task, args.length)

            train(model, task, args, probe_at=early if task == "parity" else None, probe=probe)
            acc = accuracy(model, task, args.length)
            by_len = {n: accuracy(model, task, n, n=500) for n in sorted({2, 5, 10, 20, args.length}) if n <= args.length}
            if task == "parity":
                profiles_trained[label] = gradient_profile(model, task, args.length)
            dt = time.perf_counter() - t0
            results["accuracy"][(task, label)] = acc
            results["time"][(task, label)] = dt
            results["by_length"][(task, label)] = by_len
            chance = 1.0 / num_classes(task, args.length) if task != "compare" else None
            log(f"{task:8s} T={args.length} {label:10s} H={args.hidden}: test accuracy {acc:6.1%}"
                f"{'' if chance is None else f'  (chance {chance:.1%})'}   {args.steps} steps, {dt:.1f} s;  by length: "
                + " ".join(f"{n}:{a:.0%}" for n, a in by_len.items()))
    if profiles_init:
        for label in CELLS:
            r = [p[label][1][-1] / p[label][1][0] for p in (profiles_init, profiles_early, profiles_trained)]
            results[("decay", label)] = tuple(r)
            log(f"gradient flow {label:10s}: ||dL/dh_1|| / ||dL/dh_T|| = {r[0]:.2e} at init, {r[1]:.2e} after "
                f"{max(1, args.steps // 10)} steps, {r[2]:.2e} trained")
    k, raw, clipped, total = exploding_profiles(args.length, args.hidden, threads=args.threads)
    results["exploding"] = (raw[-1] / raw[0], total)
    log(f"exploding tanh RNN (W_hh = 3 x orthogonal): ||dL/dh_1|| / ||dL/dh_T|| = {raw[-1] / raw[0]:.2e}, "
        f"global gradient norm {total:.3g}, clipped to {args.clip}")
    checked, errors = check_handset(T=args.length)
    results["handset"] = (checked, errors)
    log(f"hand-set parity RNN (ReLU, 2 units): {checked} strings, {errors} wrong steps")
    if args.figure and profiles_init:
        results["figure"] = write_figure(args.figure, (profiles_init, profiles_early, profiles_trained),
                                         (k, raw, clipped), args, log)
    return results


def write_figure(path, stages, exploding, args, log):
    try:
        import matplotlib
    except ImportError:
        log("figure skipped: matplotlib is not installed (pip install 'rnncore[plot]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.0), dpi=72)
    titles = (f"parity T={args.length}, H={args.hidden}: at init", f"after {max(1, args.steps // 10)} steps",
              f"after {args.steps} steps")
    for ax, profiles, title in zip(axes, stages, titles):
        diagnostics.plot_profiles(profiles, ax=ax, title=title)
    k, raw, clipped = exploding
    diagnostics.plot_profiles({"before clipping": (k, raw), f"after clip_grad_norm_({args.clip})": (k, clipped)},
                              ax=axes[3], normalize=False, title="exploding: tanh RNN, W_hh = 3 x orthogonal")
    axes[3].set_ylabel("||dL/dh_t||")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"figure: {path}")
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=TASKS + ("all",), default="parity")
    ap.add_argument("--length", type=int, default=50, help="T: test strings' length (training: 1..T)")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max_norm")
    ap.add_argument("--threads", type=int, default=1, help="1: these models are too small for a second thread")
    ap.add_argument("--figure", default=os.path.join(HERE, "figures", "parity_gradient_flow.png"),
                    help="PNG to write ('' for none)")
    ap.add_argument("--quick", action="store_true", help="a short run for the tests (fewer steps, no figure)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.figure = min(args.steps, 1000), ""
    if args.length < 1 or args.hidden < 1 or args.steps < 1 or args.batch < 1:
        ap.error("--length, --hidden, --steps and --batch must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    results = run(args)
    print(f"threads: {args.threads}, total {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
