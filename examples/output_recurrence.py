"""Output recurrence and teacher forcing: the exposure bias of Goodfellow et al.'s figure 10.4 network.

The lectures' point. An OutputRecurrentRNN (rnncore.nn: h_t = tanh(W_ih x_t + W_oh y_{t-1} + b),
y_t = W_ho h_t + c, the only recurrence from the output back to the hidden layer) is trained
with teacher forcing: y_{t-1} is the true previous value, so training is a set of independent
one-step problems (batched GEMMs, no backpropagation through time). At test time there is no
truth to feed: the model runs free on its own outputs, whose small errors it never saw in
training and which compound. Next to it, a hidden-to-hidden tanh RNN of the same width
(SequenceRegressor(cell='rnn'): rnncore.nn.RNN + Linear, trained by BPTT) reads the same inputs;
it never reads its outputs, so it has one mode, the same in training and at test time.

The task: a forced Van der Pol oscillator (mu = 1), x'' = mu (1 - x^2) x' - x + u(t), sampled
every 0.1 s for T = 80 steps. The model sees the forcing u_t at every step and the initial state
(x, x') only at t = 0 (a partial input: the state must be carried by the model), and predicts the
state (x, x')/2 at every step; training targets carry Gaussian noise (sd 0.05). Each sequence has
its own initial state in [-2, 2]^2 and forcing A sin(w t + phi), A in [0, 1], w in [0.5, 2].
The RMSE is against the noise-free state, on the training sequences and on new test ones.

    python examples/output_recurrence.py [--seeds 3] [--hidden 32] [--steps 1500] [--rnn-steps 4000]
                                         [--figure examples/figures/output_recurrence.png] [--quick]
"""
import argparse
import os
import sys
import time

import numpy as np

from rnncore import nn, optim

HERE = os.path.dirname(os.path.abspath(__file__))


def van_der_pol(n, T, rng, noise=0.05, dt=0.1, mu=1.0, substeps=4):
    """n forced Van der Pol sequences: x (T, n, 3) = [u_t, initial state / 2 at t = 0 (else 0)],
    noisy targets y (T, n, 2) and the noise-free state / 2 (T, n, 2), by RK4 with dt / substeps."""
    s = rng.uniform(-2, 2, (n, 2))
    amp, freq, phase = rng.uniform(0, 1, n), rng.uniform(0.5, 2.0, n), rng.uniform(0, 2 * np.pi, n)
    u = amp * np.sin(freq * (np.arange(T) * dt)[:, None] + phase)  # (T, n)
    x = np.zeros((T, n, 3))
    x[:, :, 0] = u
    x[0, :, 1:] = s / 2

    def deriv(s, f):
        return np.stack([s[:, 1], mu * (1 - s[:, 0] ** 2) * s[:, 1] - s[:, 0] + f], axis=1)

    clean = np.empty((T, n, 2))
    h = dt / substeps
    for t in range(T):  # data generation, not the model: the ODE solver steps in time
        for _ in range(substeps):
            k1 = deriv(s, u[t])
            k2 = deriv(s + h / 2 * k1, u[t])
            k3 = deriv(s + h / 2 * k2, u[t])
            k4 = deriv(s + h * k3, u[t])
            s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        clean[t] = s / 2
    y = clean + noise * rng.standard_normal(clean.shape)
    return x.astype(np.float32), y.astype(np.float32), clean


def rmse(pred, truth, axis=None):
    return np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2, axis=axis))


def fit(model, data, steps, lr, args, seed):
    """Adam with clipping on random minibatches of the training sequences, model.loss(x, y)."""
    x, y, _ = data
    rng = np.random.default_rng(seed)
    opt = optim.Adam(model.parameters(), lr=lr, threads=args.threads)
    model.train()
    for _ in range(steps):
        idx = rng.integers(0, x.shape[1], args.batch)
        model.loss(x[:, idx], y[:, idx])
        opt.zero_grad()
        model.backward()
        optim.clip_grad_norm_(model.parameters(), args.clip, threads=args.threads)
        opt.step()
    model.eval()
    return model


def run(args, log=print):
    rng = np.random.default_rng(args.data_seed)
    train = van_der_pol(args.train, args.length, rng, noise=args.noise)
    test = van_der_pol(args.test, args.length, rng, noise=args.noise)
    log(f"forced Van der Pol, T = {args.length}, {args.train} training / {args.test} test sequences, target noise "
        f"sd {args.noise}; H = {args.hidden}; RMSE against the noise-free state, mean over {args.seeds} seed(s)")
    rows = {k: {"train": [], "test": []} for k in ("tf", "free", "rnn")}
    curves = {k: [] for k in rows}
    example = {}
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        orn = fit(nn.OutputRecurrentRNN(3, args.hidden, 2, seed=seed, threads=args.threads), train, args.steps,
                  args.lr, args, seed)
        t1 = time.perf_counter()
        rnn = fit(nn.SequenceRegressor(3, args.hidden, 2, cell="rnn", seed=seed, threads=args.threads), train,
                  args.rnn_steps, args.rnn_lr, args, seed)
        t2 = time.perf_counter()
        for split, (x, y, clean) in (("train", train), ("test", test)):
            preds = {"tf": orn(x, y), "free": orn.free_run(x), "rnn": rnn(x)}
            for k, p in preds.items():
                rows[k][split].append(float(rmse(p, clean)))
                if split == "test":
                    curves[k].append(rmse(p, clean, axis=(1, 2)))
                    if seed == 0:
                        example[k] = p[:, 0]
        log(f"  seed {seed}: output-recurrent test RMSE teacher-forced {rows['tf']['test'][-1]:.3f}, free-running "
            f"{rows['free']['test'][-1]:.3f}; hidden-to-hidden RNN {rows['rnn']['test'][-1]:.3f} "
            f"(training {t1 - t0:.1f} s and {t2 - t1:.1f} s)")
    mean = {k: {s: float(np.mean(v[s])) for s in v} for k, v in rows.items()}
    log("\nmodel                        inputs at step t          train RMSE   test RMSE")
    labels = {"tf": ("output-recurrent (fig 10.4)", "x_t, true y_{t-1}"),
              "free": ("output-recurrent (fig 10.4)", "x_t, own y_{t-1}"),
              "rnn": ("hidden-to-hidden tanh RNN", "x_t (and h_{t-1})")}
    for k, (name, inputs) in labels.items():
        log(f"{name:<29}{inputs:<26}{mean[k]['train']:>10.3f}{mean[k]['test']:>12.3f}")
    gap = {s: mean["free"][s] - mean["tf"][s] for s in ("train", "test")}
    log(f"exposure bias (free - teacher-forced): train {gap['train']:+.3f}, test {gap['test']:+.3f} "
        f"(x{mean['free']['test'] / mean['tf']['test']:.1f} on test); the hidden-to-hidden RNN's train/test gap "
        f"{mean['rnn']['test'] - mean['rnn']['train']:+.3f}")
    if args.figure:
        write_figure(args.figure, {k: np.mean(v, axis=0) for k, v in curves.items()}, example, test[2][:, 0], args,
                     log)
    return {"rmse": mean, "gap": gap}


def write_figure(path, curves, example, truth, args, log):
    try:
        import matplotlib
    except ImportError:
        log("figure skipped: matplotlib is not installed (pip install 'rnncore[plot]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"tf": "output-recurrent, teacher-forced", "free": "output-recurrent, free-running",
             "rnn": "hidden-to-hidden RNN"}
    styles = {"tf": "C0--", "free": "C3-", "rnn": "C2-"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.0), dpi=72)
    t = np.arange(len(truth))
    for k, c in curves.items():
        axes[0].plot(t, c, styles[k], label=names[k])
    axes[0].set_xlabel("time step t")
    axes[0].set_ylabel("test RMSE at step t")
    axes[0].set_title("error against time: the free-running errors compound")
    axes[0].legend(fontsize=8)
    axes[1].plot(t, truth[:, 0], "k-", lw=2, label="true x / 2")
    for k, p in example.items():
        axes[1].plot(t, p[:, 0], styles[k], lw=1.2, label=names[k])
    axes[1].set_xlabel("time step t")
    axes[1].set_title("one test sequence (position)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"figure: {path}")
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--length", type=int, default=80, help="T: steps per sequence")
    ap.add_argument("--train", type=int, default=1024, help="training sequences")
    ap.add_argument("--test", type=int, default=256, help="test sequences")
    ap.add_argument("--noise", type=float, default=0.05, help="sd of the noise on the training targets")
    ap.add_argument("--steps", type=int, default=1500, help="training steps of the output-recurrent network")
    ap.add_argument("--rnn-steps", type=int, default=4000, help="training steps of the hidden-to-hidden RNN")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate, output-recurrent network")
    ap.add_argument("--rnn-lr", type=float, default=5e-3, help="Adam learning rate, hidden-to-hidden RNN")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max_norm")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1: these models are too small for a second thread")
    ap.add_argument("--figure", default=os.path.join(HERE, "figures", "output_recurrence.png"),
                    help="PNG to write ('' for none)")
    ap.add_argument("--quick", action="store_true", help="a short run for the tests (1 seed, fewer steps, no figure)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.rnn_steps, args.figure = 1, min(args.steps, 500), min(args.rnn_steps, 500), ""
        args.train, args.test, args.length = min(args.train, 256), min(args.test, 64), min(args.length, 60)
    if min(args.seeds, args.hidden, args.length, args.train, args.test, args.steps, args.rnn_steps, args.batch) < 1:
        ap.error("--seeds, --hidden, --length, --train, --test, --steps, --rnn-steps and --batch must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    results = run(args)
    print(f"threads: {args.threads}, total {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
