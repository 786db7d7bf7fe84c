"""The float32 engine against the float64 numpy reference, and the engine against itself.

* forward of every cell kind, stacked, bidirectional, ragged, batch_first, unbatched vs
  tests/reference.py (|diff| <= 1e-5 + 1e-5 * |ref|);
* the lengths rule exactly: zero output past each length, h_n = state at each sequence's own
  last step, h0 passed through for length 0;
* the sequence kernel equals a loop of single-step cells (forward and gradients);
* 1 thread == 2 threads, bit for bit (forward and every gradient), on shapes whose time loop
  does split in two (checked through _core.recurrent_threads);
* float32 gradients agree with the float64 ones (which test_gradcheck.py validates);
* seeding: same seed -> same parameters and same dropout masks; the dropout mask is the one
  backward uses (finite differences with the generator state replayed); eval: no dropout;
* bookkeeping: gradients accumulate, state_dict round trip, workspace reuse across shapes.
"""
import numpy as np
import pytest

import rnncore
from helpers import (KINDS, assert_close, assert_recurrent_splits, assert_same_bits, backward, forward, loss,
                     make_cell, make_layer, params_of, random_params, rel_err)
from reference import rnn_forward

RTOL = ATOL = 1e-5
T, B, I, H = 6, 4, 5, 9


def random_inputs(rng, kind, L, D, T=T, B=B, I=I, H=H, h0=True):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h = rng.standard_normal((L * D, B, H)).astype(np.float32) * 0.5 if h0 else None
    c = rng.standard_normal((L * D, B, H)).astype(np.float32) * 0.5 if (h0 and kind == "lstm") else None
    return x, h, c


def reference_of(layer, x_tm, h0, c0, lengths, masks=None):
    return rnn_forward(layer.cell, x_tm, params_of(layer), layer.num_layers, layer.bidirectional,
                       None if h0 is None else np.float64(h0), None if c0 is None else np.float64(c0),
                       lengths, masks=masks)


def check_against_reference(layer, out, h_n, c_n, x_tm, h0, c0, lengths, masks=None, rtol=RTOL, atol=ATOL):
    out_r, hn_r, cn_r = reference_of(layer, x_tm, h0, c0, lengths, masks)
    assert_close(out, out_r, atol=atol, rtol=rtol, what="output")
    assert_close(h_n, hn_r, atol=atol, rtol=rtol, what="h_n")
    if layer.cell == "lstm":
        assert_close(c_n, cn_r, atol=atol, rtol=rtol, what="c_n")


CONFIGS = {
    "single": dict(),
    "no_bias_no_h0": dict(bias=False, h0=False),
    "stacked3": dict(num_layers=3),
    "bidirectional": dict(bidirectional=True),
    "ragged": dict(lengths=[6, 2, 0, 4]),
    "stacked2_bidir_ragged": dict(num_layers=2, bidirectional=True, lengths=[3, 6, 1, 0]),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_reference(kind, config):
    cfg = dict(CONFIGS[config])
    lengths = cfg.pop("lengths", None)
    with_h0 = cfg.pop("h0", True)
    rng = np.random.default_rng(3)
    layer = random_params(make_layer(kind, I, H, seed=1, **cfg), rng)
    L, D = layer.num_layers, layer.num_directions
    x, h0, c0 = random_inputs(rng, kind, L, D, h0=with_h0)
    out, h_n, c_n = forward(layer, x, h0, c0, lengths)
    assert out.dtype == np.float32 and out.shape == (T, B, D * H)
    assert h_n.dtype == np.float32 and h_n.shape == (L * D, B, H)
    check_against_reference(layer, out, h_n, c_n, x, h0, c0, lengths)
    assert np.abs(out).max() > 0.1  # not vacuous


@pytest.mark.parametrize("H_", [1, 7, 8, 17, 33, 130])
@pytest.mark.parametrize("kind", KINDS)
def test_awkward_hidden_sizes_match_reference(kind, H_):
    # The fused per-step cell updates run eight units at a time with a masked tail: sizes off
    # the vector width and one unit, ragged and at batch 1 (where a step is a matrix-vector product).
    rng = np.random.default_rng(H_)
    for B_, lengths in ((3, [5, 2, 4]), (1, None)):
        layer = make_layer(kind, 5, H_, seed=H_, threads=1)  # PyTorch's init scale, +-1/sqrt(H)
        x, h0, c0 = random_inputs(rng, kind, 1, 1, T=5, B=B_, I=5, H=H_)
        out, h_n, c_n = forward(layer, x, h0, c0, lengths)
        check_against_reference(layer, out, h_n, c_n, x, h0, c0, lengths)


# Shapes whose time loop splits in two with threads=2 (each thread owns a multiple of eight
# units, so 17 and 33 units split unevenly); 130 units split even at batch 1.
SPLIT_SHAPES = [(17, 64), (33, 16), (130, 1), (130, 3)]


@pytest.mark.parametrize("H_,B_", SPLIT_SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_awkward_hidden_sizes_two_threads(kind, H_, B_):
    rng = np.random.default_rng(H_ + B_)
    layer = make_layer(kind, 5, H_, seed=H_)
    x, h0, c0 = random_inputs(rng, kind, 1, 1, T=5, B=B_, I=5, H=H_)
    lengths = None if B_ == 1 else rng.integers(0, 6, size=B_)
    runs = []
    for threads in (1, 2):
        layer.threads = threads
        runs.append(forward(layer, x, h0, c0, lengths))
    out, h_n, c_n = runs[1]
    check_against_reference(layer, out, h_n, c_n, x, h0, c0, lengths)
    for name, a, b in zip(("output", "h_n", "c_n"), runs[1], runs[0]):
        if a is not None:
            assert_same_bits(a, b, f"2 threads vs 1: {name}")
    assert_recurrent_splits(kind, B_, H_, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_first_matches_reference(kind):
    rng = np.random.default_rng(4)
    layer = random_params(make_layer(kind, I, H, num_layers=2, bidirectional=True, batch_first=True, seed=2), rng)
    x, h0, c0 = random_inputs(rng, kind, 2, 2)
    lengths = np.array([2, 6, 5, 1])
    out, h_n, c_n = forward(layer, np.ascontiguousarray(x.transpose(1, 0, 2)), h0, c0, lengths)
    assert out.shape == (B, T, 2 * H)
    assert h_n.shape == (4, B, H)  # states are never batch-first
    check_against_reference(layer, out.transpose(1, 0, 2), h_n, c_n, x, h0, c0, lengths)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_matches_reference(kind):
    rng = np.random.default_rng(5)
    layer = random_params(make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=3), rng)
    x, h0, c0 = random_inputs(rng, kind, 2, 2, B=1)
    out, h_n, c_n = forward(layer, x[:, 0], None if h0 is None else h0[:, 0], None if c0 is None else c0[:, 0])
    assert out.shape == (T, 2 * H) and h_n.shape == (4, H)
    check_against_reference(layer, out[:, None], h_n[:, None], None if c_n is None else c_n[:, None], x, h0, c0,
                            None)
    # Unbatched is exactly the batch of one.
    out_b, h_b, c_b = forward(layer, x, h0, c0)
    np.testing.assert_array_equal(out, out_b[:, 0])
    np.testing.assert_array_equal(h_n, h_b[:, 0])
    # ... and so are its gradients.
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dh = rng.standard_normal(h_n.shape).astype(np.float32)
    dc = rng.standard_normal(h_n.shape).astype(np.float32) if kind == "lstm" else None
    layer.zero_grad()
    forward(layer, x[:, 0], None if h0 is None else h0[:, 0], None if c0 is None else c0[:, 0])
    dx_u, dh0_u, dc0_u = backward(layer, dy, dh, dc)
    g_u = {n: p.grad.copy() for n, p in layer.named_parameters()}
    layer.zero_grad()
    forward(layer, x, h0, c0)
    dx_b, dh0_b, dc0_b = backward(layer, dy[:, None], dh[:, None], None if dc is None else dc[:, None])
    assert dx_u.shape == (T, I) and dh0_u.shape == (4, H)
    np.testing.assert_array_equal(dx_u, dx_b[:, 0])
    np.testing.assert_array_equal(dh0_u, dh0_b[:, 0])
    if kind == "lstm":
        np.testing.assert_array_equal(dc0_u, dc0_b[:, 0])
    for n, p in layer.named_parameters():
        np.testing.assert_array_equal(g_u[n], p.grad, err_msg=n)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_with_lengths(kind):
    rng = np.random.default_rng(22)
    layer = random_params(make_layer(kind, I, H, bidirectional=True, batch_first=True, seed=3), rng)
    x = rng.standard_normal((T, I)).astype(np.float32)  # unbatched input ignores batch_first, as in PyTorch
    out, h_n, c_n = forward(layer, x, lengths=3)
    assert out.shape == (T, 2 * H) and h_n.shape == (2, H)
    assert np.all(out[3:] == 0)
    check_against_reference(layer, out[:, None], h_n[:, None], None if c_n is None else c_n[:, None],
                            x[:, None], None, None, [3])
    cut, h_cut, _ = forward(layer, x[:3])
    assert_close(out[:3], cut, atol=1e-6, rtol=1e-6, what="output vs the cut sequence")
    assert_close(h_n, h_cut, atol=1e-6, rtol=1e-6, what="h_n vs the cut sequence")


# -- the lengths rule, exactly ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_rule_exact(kind):
    rng = np.random.default_rng(6)
    layer = random_params(make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=4), rng)
    x, h0, c0 = random_inputs(rng, kind, 2, 2)
    lengths = np.array([4, 0, 6, 1])
    out, h_n, c_n = forward(layer, x, h0, c0, lengths)
    for b, n in enumerate(lengths):
        assert np.all(out[n:, b] == 0.0), f"output past length {n} of sequence {b} is not zero"
        if n > 0 and kind != "rnn_relu":  # relu outputs legitimately contain zeros
            assert np.all(out[:n, b] != 0.0)
        for layer_idx in range(2):
            fwd, rev = 2 * layer_idx, 2 * layer_idx + 1
            if n == 0:
                # Nothing ran: the initial state comes straight back.
                np.testing.assert_array_equal(h_n[fwd, b], h0[fwd, b])
                np.testing.assert_array_equal(h_n[rev, b], h0[rev, b])
                if kind == "lstm":
                    np.testing.assert_array_equal(c_n[fwd, b], c0[fwd, b])
                    np.testing.assert_array_equal(c_n[rev, b], c0[rev, b])
            elif layer_idx == 1:
                # The top layer's output is its state: forward ends at t = n-1, reverse at t = 0.
                np.testing.assert_array_equal(h_n[fwd, b], out[n - 1, b, :H])
                np.testing.assert_array_equal(h_n[rev, b], out[0, b, H:])
    # Padding must not matter: the same sequences with garbage past their lengths.
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = 1e3
    out2, h2, c2 = forward(layer, x2, h0, c0, lengths)
    np.testing.assert_array_equal(out2, out)
    np.testing.assert_array_equal(h2, h_n)
    # Each sequence alone, cut to its own length, gives the same result as in the batch.
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        o1, h1, c1 = forward(layer, x[:n, b:b + 1], h0[:, b:b + 1], None if c0 is None else c0[:, b:b + 1])
        assert_close(o1[:, 0], out[:n, b], atol=1e-6, rtol=1e-6, what=f"sequence {b} alone: output")
        assert_close(h1[:, 0], h_n[:, b], atol=1e-6, rtol=1e-6, what=f"sequence {b} alone: h_n")
        if kind == "lstm":
            assert_close(c1[:, 0], c_n[:, b], atol=1e-6, rtol=1e-6, what=f"sequence {b} alone: c_n")


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_all_T_equals_no_lengths(kind):
    rng = np.random.default_rng(7)
    layer = random_params(make_layer(kind, I, H, bidirectional=True, seed=5), rng)
    x, h0, c0 = random_inputs(rng, kind, 1, 2)
    a = forward(layer, x, h0, c0, None)
    b = forward(layer, x, h0, c0, np.full(B, T))
    for u, v in zip(a, b):
        if u is not None:
            assert_close(u, v, atol=1e-6, rtol=1e-6)


# -- sequence kernel == loop of cells ---------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_equals_cell_loop(kind, bias):
    rng = np.random.default_rng(8)
    layer = random_params(make_layer(kind, I, H, bias=bias, seed=6), rng)
    cell = make_cell(kind, I, H, bias=bias, seed=99)
    cell.load_state_dict({n[:-3]: p.data for n, p in layer.named_parameters()})  # weight_ih_l0 -> weight_ih
    x, h0, c0 = random_inputs(rng, kind, 1, 1)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    dh = rng.standard_normal((1, B, H)).astype(np.float32)
    dc = rng.standard_normal((1, B, H)).astype(np.float32) if kind == "lstm" else None

    layer.zero_grad()
    out, h_n, c_n = forward(layer, x, h0, c0)
    dx, dh0, dc0 = backward(layer, dy, dh, dc)

    cell.zero_grad()
    h, c = h0[0], None if c0 is None else c0[0]
    hs = []
    for t in range(T):
        if kind == "lstm":
            h, c = cell.forward(x[t], (h, c))
        else:
            h = cell.forward(x[t], h)
        hs.append(h)
    assert_close(np.stack(hs), out, atol=1e-6, rtol=1e-6, what="outputs")
    assert_close(h, h_n[0], atol=1e-6, rtol=1e-6, what="h_n")
    if kind == "lstm":
        assert_close(c, c_n[0], atol=1e-6, rtol=1e-6, what="c_n")
    gh, gc = dy[T - 1] + dh[0], None if dc is None else dc[0]
    dxs = []
    for t in range(T - 1, -1, -1):
        if kind == "lstm":
            dxs.append(cell.backward(gh, gc))
            g_prev, gc = cell.grad_hx
        else:
            dxs.append(cell.backward(gh))
            g_prev = cell.grad_hx
        gh = g_prev + (dy[t - 1] if t > 0 else 0)
    assert_close(np.stack(dxs[::-1]), dx, atol=1e-5, rtol=1e-5, what="dx")
    assert_close(gh, dh0[0], atol=1e-5, rtol=1e-5, what="dh0")
    if kind == "lstm":
        assert_close(gc, dc0[0], atol=1e-5, rtol=1e-5, what="dc0")
    for n, p in layer.named_parameters():
        assert_close(getattr(cell, n[:-3]).grad, p.grad, atol=1e-5, rtol=1e-5, what=n)


# -- threads ----------------------------------------------------------------------------------


def run_fwd_bwd(layer, x, h0, c0, lengths, dy, dh, dc):
    layer.zero_grad()
    out, h_n, c_n = forward(layer, x, h0, c0, lengths)
    dx, dh0, dc0 = backward(layer, dy, dh, dc)
    res = {"output": out, "h_n": h_n, "dx": dx, "dh0": dh0}
    if c_n is not None:
        res["c_n"], res["dc0"] = c_n, dc0
    res.update({"grad " + n: p.grad.copy() for n, p in layer.named_parameters()})
    return res


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@pytest.mark.parametrize("kind", KINDS)
def test_one_thread_equals_two(kind, ragged):
    if not rnncore._core.openmp_enabled():
        pytest.skip("built without OpenMP: every thread count runs on one thread")
    Hb, Ib, Tb, Bb = 64, 10, 5, 6  # enough work per step for the time loop to split in two
    rng = np.random.default_rng(9)
    layer = make_layer(kind, Ib, Hb, num_layers=2, bidirectional=True, seed=7)
    x, h0, c0 = random_inputs(rng, kind, 2, 2, T=Tb, B=Bb, I=Ib, H=Hb)
    lengths = np.array([5, 1, 0, 3, 5, 2]) if ragged else None
    dy = rng.standard_normal((Tb, Bb, 2 * Hb)).astype(np.float32)
    dh = rng.standard_normal((4, Bb, Hb)).astype(np.float32)
    dc = rng.standard_normal((4, Bb, Hb)).astype(np.float32) if kind == "lstm" else None
    layer.threads = 1
    one = run_fwd_bwd(layer, x, h0, c0, lengths, dy, dh, dc)
    layer.threads = 2
    two = run_fwd_bwd(layer, x, h0, c0, lengths, dy, dh, dc)
    # The global default is the other way to ask for threads.
    layer.threads = None
    rnncore.set_num_threads(2)
    glob = run_fwd_bwd(layer, x, h0, c0, lengths, dy, dh, dc)
    for name in one:
        assert_same_bits(two[name], one[name], f"2 threads vs 1: {name}")
        assert_same_bits(glob[name], one[name], f"set_num_threads(2) vs 1: {name}")
    assert np.abs(one["grad weight_hh_l0"]).max() > 1e-2
    assert_recurrent_splits(kind, Bb, Hb, 2)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cells_one_thread_equals_two(kind):
    rng = np.random.default_rng(10)
    cell = make_cell(kind, 10, 48, seed=8)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    h = rng.standard_normal((6, 48)).astype(np.float32)
    hx = (h, h * 0.5) if kind == "lstm" else h
    res = []
    for threads in (1, 2):
        cell.threads = threads
        cell.zero_grad()
        y = cell.forward(x, hx)
        g = np.ones((6, 48), np.float32)
        dx = cell.backward(g, g) if kind == "lstm" else cell.backward(g)
        res.append((y[0] if kind == "lstm" else y, dx, cell.weight_hh.grad.copy()))
    for name, a, b in zip(("h'", "dx", "weight_hh.grad"), *res):
        assert_same_bits(b, a, f"2 threads vs 1: {name}")
    assert_recurrent_splits(kind, 6, 48, 2)


# -- float32 gradients vs float64 -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_float32_gradients_match_float64(kind):
    rng = np.random.default_rng(11)
    layer32 = random_params(make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=9), rng, 0.4)
    layer64 = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=0, dtype=np.float64)
    layer64.load_state_dict(layer32.state_dict())
    x, h0, c0 = random_inputs(rng, kind, 2, 2)
    check_float32_gradients(layer32, layer64, rng, x, h0, c0, np.array([6, 3, 0, 5]))


def check_float32_gradients(layer32, layer64, rng, x, h0, c0, lengths):
    """Forward + backward of the same random output/state gradients in float32 and float64."""
    T_, B_, H_, LD = x.shape[0], x.shape[1], layer32.hidden_size, h0.shape[0]
    dy = rng.standard_normal((T_, B_, layer32.num_directions * H_)).astype(np.float32)
    dh = rng.standard_normal((LD, B_, H_)).astype(np.float32)
    dc = rng.standard_normal((LD, B_, H_)).astype(np.float32) if layer32.cell == "lstm" else None
    r32 = run_fwd_bwd(layer32, x, h0, c0, lengths, dy, dh, dc)
    r64 = run_fwd_bwd(layer64, x.astype(np.float64), np.float64(h0), None if c0 is None else np.float64(c0),
                      lengths, dy, dh, dc)
    for name in r64:
        assert r32[name].dtype == np.float32 and r64[name].dtype == np.float64, name
        assert_close(r32[name], r64[name], atol=ATOL, rtol=RTOL, what=name)


@pytest.mark.parametrize("H_,B_,threads", [(7, 1, 1), (17, 3, 1), (17, 64, 2), (130, 1, 2)])
@pytest.mark.parametrize("kind", KINDS)
def test_float32_gradients_match_float64_awkward_sizes(kind, H_, B_, threads):
    # The fused backward steps: vector tails, and two threads' uneven unit slices, also at batch 1.
    rng = np.random.default_rng(H_)
    layer32 = make_layer(kind, 5, H_, seed=H_, threads=threads)
    layer64 = make_layer(kind, 5, H_, seed=0, dtype=np.float64, threads=threads)
    layer64.load_state_dict(layer32.state_dict())
    x, h0, c0 = random_inputs(rng, kind, 1, 1, T=5, B=B_, I=5, H=H_)
    check_float32_gradients(layer32, layer64, rng, x, h0, c0, None)
    if threads > 1:
        assert_recurrent_splits(kind, B_, H_, threads)


def test_double_converts_in_place():
    rng = np.random.default_rng(12)
    layer = random_params(make_layer("lstm", I, H, num_layers=2, seed=1), rng)
    x, h0, c0 = random_inputs(rng, "lstm", 2, 1)
    forward(layer, x, h0, c0)  # leaves float32 workspaces behind
    layer.double()
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in layer.parameters())
    out, h_n, c_n = forward(layer, x.astype(np.float64), h0, c0)
    assert out.dtype == np.float64
    check_against_reference(layer, out, h_n, c_n, x, h0, c0, None, rtol=1e-12, atol=1e-12)
    dx, _, _ = backward(layer, np.ones_like(out))
    assert dx.dtype == np.float64


# -- seeding and dropout ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_init(kind):
    a = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=42)
    b = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=42)
    c = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=43)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == list(sb)
    for n in sa:
        np.testing.assert_array_equal(sa[n], sb[n], err_msg=n)
    assert any(not np.array_equal(sa[n], sc[n]) for n in sa)
    # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H)) for every tensor.
    k = 1 / np.sqrt(H)
    for n, v in sa.items():
        assert np.abs(v).max() <= k and np.abs(v).max() > 0.5 * k, n
    ca, cb = make_cell(kind, I, H, seed=42), make_cell(kind, I, H, seed=42)
    for (n, p), (_, q) in zip(ca.named_parameters(), cb.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def dropout_masks(rng_state, shape, num_layers, p, dtype=np.float32):
    """The masks the layer draws (see RNNBase.forward): one per layer but the last, in order."""
    g = np.random.default_rng()
    g.bit_generator.state = rng_state
    keep = 1.0 - p
    return [(g.random(shape) < keep).astype(dtype) / dtype(keep) for _ in range(num_layers - 1)]


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_seeded_and_matches_manual_composition(kind):
    rng = np.random.default_rng(13)
    L, p = 3, 0.4
    a = make_layer(kind, I, H, num_layers=L, bidirectional=True, dropout=p, seed=21)
    b = make_layer(kind, I, H, num_layers=L, bidirectional=True, dropout=p, seed=21)
    c = make_layer(kind, I, H, num_layers=L, bidirectional=True, dropout=p, seed=22)
    c.load_state_dict(a.state_dict())  # same weights, different dropout stream
    x, h0, c0 = random_inputs(rng, kind, L, 2)
    lengths = np.array([6, 2, 5, 0])
    state = a._rng.bit_generator.state
    out_a, hn_a, cn_a = forward(a, x, h0, c0, lengths)
    out_b, hn_b, _ = forward(b, x, h0, c0, lengths)
    out_c, _, _ = forward(c, x, h0, c0, lengths)
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(hn_a, hn_b)
    assert not np.allclose(out_a, out_c), "a different seed must give different dropout masks"
    # The generator moves on: the next forward draws new masks.
    out_a2, _, _ = forward(a, x, h0, c0, lengths)
    assert not np.allclose(out_a, out_a2)
    # The masks, replayed from the generator state, applied to the reference composition.
    masks = dropout_masks(state, (T, B, 2 * H), L, p)
    dropped = np.mean(masks[0] == 0)
    assert 0.25 < dropped < 0.55  # about p of the units are dropped
    check_against_reference(a, out_a, hn_a, cn_a, x, h0, c0, lengths, masks=[np.float64(m) for m in masks])
    # ... and they do matter: without them the reference differs.
    out_nomask, _, _ = reference_of(a, x, h0, c0, lengths)
    assert np.abs(out_nomask - out_a).max() > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_no_dropout_in_eval_mode(kind):
    rng = np.random.default_rng(14)
    a = make_layer(kind, I, H, num_layers=3, dropout=0.5, seed=31)
    plain = make_layer(kind, I, H, num_layers=3, dropout=0.0, seed=31)  # same init stream
    x, h0, c0 = random_inputs(rng, kind, 3, 1)
    a.eval()
    assert not a.training
    state = a._rng.bit_generator.state
    out1, hn1, cn1 = forward(a, x, h0, c0)
    out2, hn2, _ = forward(a, x, h0, c0)
    assert a._rng.bit_generator.state == state, "eval mode must not draw dropout masks"
    np.testing.assert_array_equal(out1, out2)
    out_p, hn_p, _ = forward(plain, x, h0, c0)
    np.testing.assert_array_equal(out1, out_p)
    np.testing.assert_array_equal(hn1, hn_p)
    check_against_reference(a, out1, hn1, cn1, x, h0, c0, None)
    # Back in training mode the output changes.
    a.train()
    out3, _, _ = forward(a, x, h0, c0)
    assert not np.allclose(out3, out1)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_dropout_gradcheck_float64(kind):
    """backward reuses forward's mask: finite differences with the generator state replayed."""
    from test_gradcheck import check_grads, numeric_grad

    Tg, Bg, Ig, Hg = 4, 3, 3, 5
    rng = np.random.default_rng(15)
    layer = make_layer(kind, Ig, Hg, num_layers=3, bidirectional=True, dropout=0.5, dtype=np.float64, seed=41,
                       threads=1)
    x = rng.standard_normal((Tg, Bg, Ig))
    h0 = rng.standard_normal((6, Bg, Hg)) * 0.5
    c0 = rng.standard_normal((6, Bg, Hg)) * 0.5 if kind == "lstm" else None
    lengths = np.array([4, 0, 2])
    dy = rng.standard_normal((Tg, Bg, 2 * Hg))
    dh = rng.standard_normal((6, Bg, Hg))
    dc = rng.standard_normal((6, Bg, Hg)) if kind == "lstm" else None
    state = layer._rng.bit_generator.state

    layer.zero_grad()
    forward(layer, x, h0, c0, lengths)
    dx, dh0, dc0 = backward(layer, dy, dh, dc)
    analytic = {n: p.grad.copy() for n, p in layer.named_parameters()}
    analytic.update(x=dx, h0=dh0)
    if kind == "lstm":
        analytic["c0"] = dc0

    def f():
        layer._rng.bit_generator.state = state  # the same masks at every evaluation
        return loss(*forward(layer, x, h0, c0, lengths), dy, dh, dc)

    numeric = {n: numeric_grad(f, p.data) for n, p in layer.named_parameters()}
    numeric.update(x=numeric_grad(f, x), h0=numeric_grad(f, h0))
    if kind == "lstm":
        numeric["c0"] = numeric_grad(f, c0)
    check_grads(analytic, numeric)
    # Not vacuous: a different mask gives a different gradient.
    layer.zero_grad()
    forward(layer, x, h0, c0, lengths)  # generator has moved on: new masks
    backward(layer, dy, dh, dc)
    assert rel_err(layer.weight_ih_l0.grad, analytic["weight_ih_l0"]) > 1e-3


# -- bookkeeping ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_accumulate_until_zero_grad(kind):
    rng = np.random.default_rng(16)
    layer = make_layer(kind, I, H, bidirectional=True, seed=51)
    x, h0, c0 = random_inputs(rng, kind, 1, 2)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    forward(layer, x, h0, c0)
    backward(layer, dy)
    once = {n: p.grad.copy() for n, p in layer.named_parameters()}
    forward(layer, x, h0, c0)
    backward(layer, dy)
    for n, p in layer.named_parameters():
        assert_close(p.grad, 2 * once[n], atol=1e-6, rtol=1e-6, what=n)
    layer.zero_grad()
    assert all(np.all(p.grad == 0) for p in layer.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind):
    rng = np.random.default_rng(17)
    a = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=61)
    b = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=62)
    sd = a.state_dict()
    G = {"lstm": 4, "gru": 3}.get(kind, 1)
    assert list(sd) == [f"{w}_l{k}{s}" for k in range(2) for s in ("", "_reverse")
                        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert sd["weight_ih_l1"].shape == (G * H, 2 * H)
    b.load_state_dict(sd)
    x, h0, c0 = random_inputs(rng, kind, 2, 2)
    for u, v in zip(forward(a, x, h0, c0), forward(b, x, h0, c0)):
        if u is not None:
            np.testing.assert_array_equal(u, v)
    sd["weight_ih_l0"][...] = 0  # a copy: the layer is untouched
    assert np.any(a.weight_ih_l0.data != 0)


@pytest.mark.parametrize("kind", KINDS)
def test_workspace_reuse_across_shapes(kind):
    """Forward/backward on shapes that grow, shrink and change lengths: same as a fresh layer."""
    rng = np.random.default_rng(18)
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=71)
    shapes = [(7, 5, None), (3, 2, [3, 1]), (7, 5, [7, 0, 2, 5, 7]), (2, 6, None), (7, 5, None)]
    for Tn, Bn, lengths in shapes:
        x, h0, c0 = random_inputs(rng, kind, 2, 2, T=Tn, B=Bn)
        dy = rng.standard_normal((Tn, Bn, 2 * H)).astype(np.float32)
        dh = rng.standard_normal((4, Bn, H)).astype(np.float32)
        fresh = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=0)
        fresh.load_state_dict(layer.state_dict())
        got = run_fwd_bwd(layer, x, h0, c0, lengths, dy, dh, None)
        want = run_fwd_bwd(fresh, x, h0, c0, lengths, dy, dh, None)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{(Tn, Bn, lengths)}: {name}")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_empty_sequences(kind):
    """T = 0: no step runs, h_n = h0 and the gradient of h0 is the gradient of h_n."""
    rng = np.random.default_rng(19)
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=81)
    _, h0, c0 = random_inputs(rng, kind, 2, 2)
    x = np.zeros((0, B, I), np.float32)
    out, h_n, c_n = forward(layer, x, h0, c0)
    assert out.shape == (0, B, 2 * H)
    np.testing.assert_array_equal(h_n, h0)
    dh = rng.standard_normal(h_n.shape).astype(np.float32)
    dx, dh0, _ = backward(layer, np.zeros(out.shape, np.float32), dh, None)
    assert dx.shape == (0, B, I)
    np.testing.assert_array_equal(dh0, dh)
    assert all(np.all(p.grad == 0) for p in layer.parameters())


@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh"])
def test_input_changed_after_forward_does_not_change_gradients(kind):
    rng = np.random.default_rng(20)
    layer = make_layer(kind, I, H, seed=91)
    x, _, _ = random_inputs(rng, kind, 1, 1, h0=False)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    forward(layer, x)
    backward(layer, dy)
    want = layer.weight_ih_l0.grad.copy()
    layer.zero_grad()
    forward(layer, x)
    x[...] = 0.0  # the caller reuses its buffer
    backward(layer, dy)
    assert_close(layer.weight_ih_l0.grad, want, atol=1e-6, rtol=1e-6, what="weight_ih_l0.grad")


def test_cell_input_buffer_reuse_does_not_change_gradients():
    rng = np.random.default_rng(21)
    cell = make_cell("gru", I, H, seed=92)
    xs = rng.standard_normal((T, B, I)).astype(np.float32)
    g = rng.standard_normal((B, H)).astype(np.float32)

    def run(reuse_buffer):
        cell.zero_grad()
        buf = np.empty((B, I), np.float32)
        h = None
        for t in range(T):
            if reuse_buffer:
                buf[...] = xs[t]
                h = cell.forward(buf, h)
            else:
                h = cell.forward(xs[t].copy(), h)
        for _ in range(T):
            cell.backward(g)
        return cell.weight_ih.grad.copy()

    assert_close(run(True), run(False), atol=1e-6, rtol=1e-6, what="weight_ih.grad")
