"""Forecasting the yearly sunspot numbers one year ahead: LSTM and GRU against the naive and AR baselines.

The lectures' many-to-many regression. The series (datasets.sunspots(): 1700-2008, from
statsmodels' bundled data) is split in time, never shuffled: train 1700-1929, valid 1930-1959,
test 1960-2008; it is standardised with the training years' mean and deviation. Every
model predicts next year's value from the years up to this one:
  naive    next year = this year
  AR(p)    a linear autoregression on the last p years with an intercept, fitted by least
           squares on the training years; p (1..20) chosen by the validation RMSE
  LSTM/GRU a SequenceRegressor(input_size=1, output_size=1): the series goes in one year per
           step and the output at step t is the forecast for t + 1 (fused MSE loss). Trained on
           random windows of the training years (Adam, clipping), the parameters kept at the
           best validation RMSE; at test time the model reads the whole series from 1700 and its
           outputs at the test years are scored, so it has the same history as the AR model.
The table gives the test RMSE in sunspot numbers (mean +- sd over seeds for the RNNs) and the
figure plots the test years' forecasts against the truth.

    python examples/forecast_sunspots.py [--seeds 5] [--hidden 32] [--steps 800] [--quick]
                                         [--figure examples/figures/forecast_sunspots.png]
"""
import argparse
import os
import sys
import time

import numpy as np

from rnncore import datasets, nn, optim

HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT = {"train": (1700, 1929), "valid": (1930, 1959), "test": (1960, 2008)}
CELLS = {"LSTM": "lstm", "GRU": "gru"}


def rmse(pred, truth):
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2)))


def split_index(years):
    """{'train'|'valid'|'test': boolean mask over years}, the fixed chronological split."""
    return {name: (years >= lo) & (years <= hi) for name, (lo, hi) in SPLIT.items()}


def naive_forecast(series):
    """pred[t] = series[t - 1] for t >= 1 (pred[0] is NaN: there is no history)."""
    return np.concatenate([[np.nan], series[:-1]])


def ar_design(series, p):
    """Rows [1, y[t-1], ..., y[t-p]] for t = p..N-1 -> (N - p, p + 1)."""
    N = len(series)
    cols = [np.ones(N - p)] + [series[p - k:N - k] for k in range(1, p + 1)]
    return np.stack(cols, axis=1)


def ar_forecast(series, p, train_mask):
    """Least-squares AR(p) fitted on the training targets; pred[t] for every t >= p (NaN before)."""
    X = ar_design(series, p)
    y = series[p:]
    fit = train_mask[p:]
    coef, *_ = np.linalg.lstsq(X[fit], y[fit], rcond=None)
    return np.concatenate([np.full(p, np.nan), X @ coef]), coef


def choose_ar(series, masks, max_p=20):
    """p with the smallest validation RMSE: (p, forecasts, {p: valid RMSE})."""
    scores = {}
    for p in range(1, max_p + 1):
        pred, _ = ar_forecast(series, p, masks["train"])
        scores[p] = rmse(pred[masks["valid"]], series[masks["valid"]])
    best = min(scores, key=scores.get)
    return best, ar_forecast(series, best, masks["train"])[0], scores


def rnn_forecast(model, z):
    """The model's forecast of z[t] for t = 1..N-1, reading z[0..N-2]: (N,) with pred[0] = NaN."""
    model.eval()
    out = model(z[:-1, None, None].astype(np.float32))
    model.train()
    return np.concatenate([[np.nan], out[:, 0, 0].astype(np.float64)])


def train_rnn(cell, z, masks, args, seed):
    """Adam on random windows of the training years; returns (model at best valid RMSE, its valid RMSE, steps)."""
    rng = np.random.default_rng(seed)
    model = nn.SequenceRegressor(1, args.hidden, 1, num_layers=args.layers, cell=cell, dropout=args.dropout,
                                 seed=seed, threads=args.threads)
    opt = optim.Adam(model.parameters(), lr=args.lr, threads=args.threads)
    n_train = int(masks["train"].sum())  # the training years are the first ones
    L = min(args.window, n_train - 1)
    valid = masks["valid"]
    best, best_state, best_step = np.inf, model.state_dict(), 0
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, n_train - L, size=args.batch)  # targets end at the last training year
        idx = starts[None, :] + np.arange(L)[:, None]  # (L, B)
        model.loss(z[idx][..., None].astype(np.float32), z[idx + 1][..., None].astype(np.float32))
        opt.zero_grad()
        model.backward()
        optim.clip_grad_norm_(model.parameters(), args.clip, threads=args.threads)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            score = rmse(rnn_forecast(model, z)[valid], z[valid])
            if score < best:
                best, best_state, best_step = score, {k: v.copy() for k, v in model.state_dict().items()}, step
    model.load_state_dict(best_state)
    return model, best, best_step


def run(args, log=print):
    data = datasets.sunspots()
    years, series = data["year"], data["value"]
    masks = split_index(years)
    mean, sd = series[masks["train"]].mean(), series[masks["train"]].std()
    z = (series - mean) / sd
    test = masks["test"]
    truth = series[test]
    log(f"sunspots {years[0]}-{years[-1]} ({len(series)} years): train {SPLIT['train'][0]}-{SPLIT['train'][1]} "
        f"({int(masks['train'].sum())}), valid {SPLIT['valid'][0]}-{SPLIT['valid'][1]} ({int(masks['valid'].sum())}), "
        f"test {SPLIT['test'][0]}-{SPLIT['test'][1]} ({int(test.sum())}); normalised by the training mean "
        f"{mean:.1f} and sd {sd:.1f}")
    results, preds = {}, {}
    naive = naive_forecast(series)
    results["naive"] = [rmse(naive[test], truth)]
    preds["naive (last value)"] = naive[test]
    p, ar, scores = choose_ar(series, masks)
    results[f"AR({p})"] = [rmse(ar[test], truth)]
    preds[f"AR({p})"] = ar[test]
    log(f"AR order by validation RMSE: p = {p} (valid RMSE {scores[p]:.1f}; p = 1: {scores[1]:.1f}, "
        f"p = 2: {scores[2]:.1f})")
    for name, cell in CELLS.items():
        results[name], runs = [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            model, valid_rmse, step = train_rnn(cell, z, masks, args, seed)
            pred = rnn_forecast(model, z) * sd + mean
            score = rmse(pred[test], truth)
            results[name].append(score)
            runs.append(pred[test])
            log(f"  {name} seed {seed}: test RMSE {score:.1f} (valid {valid_rmse * sd:.1f} at step {step}; "
                f"{time.perf_counter() - t0:.1f} s)")
        preds[f"{name} (mean of {args.seeds} seeds)"] = np.mean(runs, axis=0)
    log(f"\none-step-ahead test RMSE, {SPLIT['test'][0]}-{SPLIT['test'][1]} (sunspot number; RNNs: mean +- sd over "
        f"{args.seeds} seeds, H = {args.hidden})")
    for name, scores_ in results.items():
        spread = f" +- {np.std(scores_):.1f}" if len(scores_) > 1 else ""
        log(f"  {name:<10} {np.mean(scores_):6.1f}{spread}")
    if args.figure:
        write_figure(args.figure, years[test], truth, preds, log)
    return {"rmse": {k: float(np.mean(v)) for k, v in results.items()}, "runs": results, "ar_order": p}


def write_figure(path, years, truth, preds, log):
    try:
        import matplotlib
    except ImportError:
        log("figure skipped: matplotlib is not installed (pip install 'rnncore[plot]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.0), dpi=72)
    ax.plot(years, truth, "k-", lw=2.2, label="truth")
    styles = ["--", "-.", "-", "-"]
    for (name, pred), style in zip(preds.items(), styles):
        ax.plot(years, pred, style, lw=1.3, label=f"{name}: RMSE {rmse(pred, truth):.1f}")
    ax.set_xlabel("year")
    ax.set_ylabel("yearly sunspot number")
    ax.set_title("one-year-ahead forecasts on the test years")
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    log(f"figure: {path}")
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="training runs per RNN cell")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--window", type=int, default=40, help="length of the training windows (years)")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max_norm")
    ap.add_argument("--eval-every", type=int, default=20, help="steps between validation RMSEs (model selection)")
    ap.add_argument("--threads", type=int, default=1, help="1: these models are too small for a second thread")
    ap.add_argument("--figure", default=os.path.join(HERE, "figures", "forecast_sunspots.png"),
                    help="PNG to write ('' for none)")
    ap.add_argument("--quick", action="store_true", help="a short run for the tests (2 seeds, fewer steps, no figure)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.figure = min(args.seeds, 2), min(args.steps, 300), ""
    if min(args.seeds, args.hidden, args.layers, args.steps, args.batch, args.window, args.eval_every) < 1:
        ap.error("--seeds, --hidden, --layers, --steps, --batch, --window and --eval-every must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    results = run(args)
    print(f"threads: {args.threads}, total {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
