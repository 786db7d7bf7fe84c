"""Float64 central-difference gradient checks of backward().

Loss L = sum(dy * output) + sum(dh_n * h_n) (+ sum(dc_n * c_n)) with fixed random dy, dh_n,
dc_n. Every element of every parameter, of x, h0 and c0 is perturbed by +-eps and
(L+ - L-) / (2 eps) is compared with what backward() returns / accumulates. The relative
error ||analytic - numeric|| / max(||analytic||, ||numeric||) must be < 1e-6 for *each*
tensor separately (stricter than for the concatenated gradient vector, which is also checked).

Odd sizes T=5, B=3, I=4, H=7 so that no dimension is a multiple of a SIMD width or of the
8-unit thread slices. The kernels run on one thread here (speed); tests/test_reference_parity.py
checks that 2 threads give the same gradients.
"""
import numpy as np
import pytest

from gradcheck import numeric_grad as shared_numeric_grad
from helpers import KINDS, backward, forward, loss, make_cell, make_layer, rel_err
from reference import rnn_forward

T, B, I, H = 5, 3, 4, 7
EPS = 1e-6
TOL = 1e-6
RAGGED = np.array([3, 0, 5])  # includes 0 and T, and is not sorted
RELU_MARGIN = 1e-4


def numeric_grad(f, arr, eps=EPS):
    """Central differences of the scalar f() w.r.t. every element of `arr` (modified in place, restored)."""
    return shared_numeric_grad(f, arr, eps)


def check_grads(analytic, numeric):
    """Per-tensor and whole-vector relative errors, with a readable failure message."""
    errors = {name: rel_err(analytic[name], numeric[name]) for name in analytic}
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"relative gradient error >= {TOL:g}: " + ", ".join(f"{k}: {v:.3e}" for k, v in bad.items())
    total = rel_err(np.concatenate([np.ravel(analytic[k]) for k in analytic]),
                    np.concatenate([np.ravel(numeric[k]) for k in analytic]))
    assert total < TOL, f"whole-gradient relative error {total:.3e}"
    # Not vacuous: every parameter receives a gradient.
    for name, g in analytic.items():
        if name.startswith(("weight", "bias")):
            assert np.linalg.norm(g) > 1e-3, f"{name}: gradient is (almost) zero, the check proves nothing"


def assert_no_relu_kink(kind, x_tm, params, num_layers, bidirectional, h0, lengths):
    """For relu, central differences are only valid away from the kink at 0."""
    if kind != "rnn_relu":
        return
    trace = []
    rnn_forward(kind, x_tm, params, num_layers, bidirectional, h0, None, lengths, trace=trace)
    pre = np.concatenate(trace)
    assert pre.size > 0
    assert np.abs(pre).min() > RELU_MARGIN, "a relu pre-activation sits at the kink: choose another seed"
    # ... and both sides of the kink are exercised.
    assert (pre > 0).any() and (pre < 0).any()


FEATURES = {
    # name: constructor kwargs, run options
    "plain": (dict(), dict()),
    "no_bias": (dict(bias=False), dict()),
    "state": (dict(), dict(h0=True, dh=True)),
    "ragged": (dict(), dict(h0=True, dh=True, lengths=RAGGED)),
    "stacked3": (dict(num_layers=3), dict(h0=True, dh=True, lengths=RAGGED)),
    "bidirectional": (dict(bidirectional=True), dict(h0=True, dh=True, lengths=RAGGED)),
    "stacked2_bidir_nobias": (dict(num_layers=2, bidirectional=True, bias=False), dict(h0=True, dh=True, lengths=RAGGED)),
    "batch_first": (dict(batch_first=True), dict(h0=True, dh=True, lengths=RAGGED)),
    "unbatched": (dict(), dict(h0=True, dh=True, unbatched=True)),
}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("kind", KINDS)
def test_layer_gradcheck(kind, feature):
    ctor, opts = FEATURES[feature]
    seed = 11
    rng = np.random.default_rng(seed)
    L = ctor.get("num_layers", 1)
    D = 2 if ctor.get("bidirectional") else 1
    layer = make_layer(kind, I, H, dtype=np.float64, seed=seed, threads=1,
                       **{k: v for k, v in ctor.items() if k != "num_layers"}, num_layers=L)
    unbatched = opts.get("unbatched", False)
    batch_first = ctor.get("batch_first", False)
    Bx = 1 if unbatched else B
    x_tm = rng.standard_normal((T, Bx, I))  # time-major copy for the reference
    if unbatched:
        x = x_tm[:, 0].copy()
    elif batch_first:
        x = np.ascontiguousarray(x_tm.transpose(1, 0, 2))
    else:
        x = x_tm.copy()
    state_shape = (L * D, H) if unbatched else (L * D, Bx, H)
    h0 = rng.standard_normal(state_shape) * 0.5 if opts.get("h0") else None
    c0 = rng.standard_normal(state_shape) * 0.5 if (opts.get("h0") and kind == "lstm") else None
    lengths = opts.get("lengths")
    out_shape = (T, D * H) if unbatched else ((Bx, T, D * H) if batch_first else (T, Bx, D * H))
    dy = rng.standard_normal(out_shape)
    dh = rng.standard_normal(state_shape) if opts.get("dh") else None
    dc = rng.standard_normal(state_shape) if (opts.get("dh") and kind == "lstm") else None

    h0_tm = None if h0 is None else (h0[:, None, :] if unbatched else h0)
    assert_no_relu_kink(kind, x_tm, {n: p.data for n, p in layer.named_parameters()}, L, D == 2, h0_tm, lengths)

    # Analytic.
    layer.zero_grad()
    out, h_n, c_n = forward(layer, x, h0, c0, lengths)
    assert out.shape == out_shape
    dx, dh0, dc0 = backward(layer, dy, dh, dc)
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}
    analytic["x"] = dx
    if h0 is not None:
        analytic["h0"] = dh0
    if c0 is not None:
        analytic["c0"] = dc0

    # Numeric.
    def f():
        return loss(*forward(layer, x, h0, c0, lengths), dy, dh, dc)

    numeric = {name: numeric_grad(f, p.data) for name, p in layer.named_parameters()}
    numeric["x"] = numeric_grad(f, x)
    if h0 is not None:
        numeric["h0"] = numeric_grad(f, h0)
    if c0 is not None:
        numeric["c0"] = numeric_grad(f, c0)
    check_grads(analytic, numeric)

    if lengths is not None:
        # x beyond each sequence's length does not influence anything: exactly zero gradient.
        dx_tm = dx.transpose(1, 0, 2) if batch_first else dx
        for b, n in enumerate(lengths):
            assert np.all(dx_tm[n:, b] == 0.0)


# -- single-step cells driven over time in Python --------------------------------------------


def run_cell_sequence(cell, xs, h0, c0):
    """Forward t = 0..T-1; returns the list of h_t and the final c (LSTM) or None."""
    h, c = h0, c0
    hs = []
    for t in range(xs.shape[0]):
        if cell.cell == "lstm":
            h, c = cell.forward(xs[t], (h, c))
        else:
            h = cell.forward(xs[t], h)
        hs.append(h)
    return hs, c


def cell_loss(cell, xs, h0, c0, dy, dhT, dcT):
    hs, c = run_cell_sequence(cell, xs, h0, c0)
    total = sum(float(np.sum(dy[t] * hs[t])) for t in range(len(hs)))
    total += float(np.sum(dhT * hs[-1]))
    if c is not None:
        total += float(np.sum(dcT * c))
    return total


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_bptt_gradcheck(kind, bias, unbatched):
    seed = 5
    rng = np.random.default_rng(seed)
    cell = make_cell(kind, I, H, bias=bias, dtype=np.float64, seed=seed, threads=1)
    lead = () if unbatched else (B,)
    xs = rng.standard_normal((T, *lead, I))
    h0 = rng.standard_normal((*lead, H)) * 0.5
    c0 = rng.standard_normal((*lead, H)) * 0.5 if kind == "lstm" else None
    dy = rng.standard_normal((T, *lead, H))
    dhT = rng.standard_normal((*lead, H))
    dcT = rng.standard_normal((*lead, H)) if kind == "lstm" else None

    if kind == "rnn_relu":
        params = {n + "_l0": p.data for n, p in cell.named_parameters()}
        x_tm = xs.reshape(T, -1, I)
        assert_no_relu_kink(kind, x_tm, params, 1, False, h0.reshape(1, -1, H), None)

    # Analytic: forward t = 0..T-1 (each step pushed on the cell's stack), backward T-1..0.
    cell.train()
    cell.zero_grad()
    run_cell_sequence(cell, xs, h0, c0)
    gh = dy[T - 1] + dhT
    gc = dcT
    dxs = np.empty_like(xs)
    for t in range(T - 1, -1, -1):
        if kind == "lstm":
            dxs[t] = cell.backward(gh, gc)
            gh_prev, gc = cell.grad_hx
        else:
            dxs[t] = cell.backward(gh)
            gh_prev = cell.grad_hx
        assert gh_prev.shape == h0.shape
        gh = gh_prev + (dy[t - 1] if t > 0 else 0.0)
    analytic = {name: p.grad.copy() for name, p in cell.named_parameters()}
    analytic["x"] = dxs
    analytic["h0"] = gh
    if kind == "lstm":
        analytic["c0"] = gc
    # Every forward was consumed: one more backward has nothing to differentiate.
    import rnncore

    with pytest.raises(rnncore.NoForwardError):
        cell.backward(gh)

    # Numeric, in eval mode (nothing is pushed on the stack).
    cell.eval()

    def f():
        return cell_loss(cell, xs, h0, c0, dy, dhT, dcT)

    numeric = {name: numeric_grad(f, p.data) for name, p in cell.named_parameters()}
    numeric["x"] = numeric_grad(f, xs)
    numeric["h0"] = numeric_grad(f, h0)
    if kind == "lstm":
        numeric["c0"] = numeric_grad(f, c0)
    assert len(cell._stack) == 0  # every saved step was popped
    check_grads(analytic, numeric)
