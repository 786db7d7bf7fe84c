"""LSTM with projections (PyTorch's proj_size, LSTMP) in the kernels: _core.recurrent_forward /
recurrent_backward with w_hr.

    i, f, g, o from W_ih x + W_hh h (W_hh (4H, P)); c' = f c + i g; h' = W_hr (o tanh(c')) (P wide)

* float64 central differences of the kernel: every weight (w_ih, w_hh, b_ih, b_hh, w_hr), x,
  h0 and c0, forward and reverse, ragged lengths including 0;
* float32 and float64 forward against the slow numpy reference (tests/reference.py);
* 1 thread == 2 threads bit for bit on shapes whose time loop does split in two;
* a workspace moves between projected and plain forwards;
* bad input: a clear ValueError naming the argument.

Odd sizes (H=7, P=3, B=3, T=5): no dimension is a multiple of a SIMD width or of the 8-unit slices.
"""
import numpy as np
import pytest

from rnncore import _core
from gradcheck import numeric_grad
from helpers import assert_close, assert_same_bits, rel_err
from reference import layer_forward

T, B, I, H, P = 5, 3, 4, 7, 3
RAGGED = np.array([3, 0, 5], np.int64)
TOL = 1e-6


def make_weights(rng, I, H, P, dtype, bias=True):
    s = 1 / np.sqrt(H)
    w = {"w_ih": rng.uniform(-s, s, (4 * H, I)), "w_hh": rng.uniform(-s, s, (4 * H, P)),
         "w_hr": rng.uniform(-s, s, (P, H))}
    if bias:
        w["b_ih"] = rng.uniform(-s, s, 4 * H)
        w["b_hh"] = rng.uniform(-s, s, 4 * H)
    return {k: v.astype(dtype) for k, v in w.items()}


def run_forward(w, x, h0, c0, lengths, reverse, threads=1, workspace=None):
    T_, B_, _ = x.shape
    Pw = w["w_hr"].shape[0]
    out = np.zeros((T_, B_, Pw), x.dtype)
    hn, cn, ws = _core.recurrent_forward("lstm", x, w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"), h0, c0,
                                         lengths, reverse, out, 0, threads, workspace, w_hr=w["w_hr"])
    return out, hn, cn, ws


def run_backward(ws, w, dy, dhn, dcn, x_shape, threads=1):
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dx = np.empty(x_shape, w["w_ih"].dtype)
    dh0, dc0 = _core.recurrent_backward(ws, dy, 0, dhn, dcn, w["w_ih"], w["w_hh"], g["w_ih"], g["w_hh"],
                                        g.get("b_ih"), g.get("b_hh"), dx, False, threads, w_hr=w["w_hr"],
                                        dw_hr=g["w_hr"])
    return g, dx, dh0, dc0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, RAGGED], ids=["full", "ragged"])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_gradcheck_float64(reverse, lengths, bias):
    rng = np.random.default_rng(7)
    w = make_weights(rng, I, H, P, np.float64, bias)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, P)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5
    dy = rng.standard_normal((T, B, P))
    dhn = rng.standard_normal((B, P))
    dcn = rng.standard_normal((B, H))

    def f():
        out, hn, cn, _ = run_forward(w, x, h0, c0, lengths, reverse)
        return float(np.sum(dy * out) + np.sum(dhn * hn) + np.sum(dcn * cn))

    _, _, _, ws = run_forward(w, x, h0, c0, lengths, reverse)
    assert ws.proj_size == P
    g, dx, dh0, dc0 = run_backward(ws, w, dy, dhn, dcn, x.shape)
    analytic = dict(g, x=dx, h0=dh0, c0=dc0)
    numeric = {k: numeric_grad(f, w[k]) for k in w}
    numeric.update(x=numeric_grad(f, x), h0=numeric_grad(f, h0), c0=numeric_grad(f, c0))
    errors = {k: rel_err(analytic[k], numeric[k]) for k in analytic}
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"relative gradient error >= {TOL:g}: {bad}"
    for k in w:  # not vacuous
        assert np.linalg.norm(g[k]) > 1e-3, f"{k}: gradient (almost) zero"


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, np.array([6, 2, 0, 5], np.int64)], ids=["full", "ragged"])
def test_kernel_forward_matches_numpy_reference(dtype, tol, reverse, lengths):
    rng = np.random.default_rng(3)
    T_, B_, I_, H_, P_ = 6, 4, 5, 19, 6
    w = make_weights(rng, I_, H_, P_, dtype)
    x = rng.standard_normal((T_, B_, I_)).astype(dtype)
    h0 = (rng.standard_normal((B_, P_)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((B_, H_)) * 0.5).astype(dtype)
    out, hn, cn, _ = run_forward(w, x, h0, c0, lengths, reverse)
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    ref_out, ref_h, ref_c = layer_forward("lstm", x, w64["w_ih"], w64["w_hh"], w64["b_ih"], w64["b_hh"], h0, c0,
                                          lengths, reverse, w_hr=w64["w_hr"])
    assert out.shape == (T_, B_, P_) and hn.shape == (B_, P_) and cn.shape == (B_, H_)
    assert_close(out, ref_out, atol=tol, rtol=tol, what="output")
    assert_close(hn, ref_h, atol=tol, rtol=tol, what="h_n")
    assert_close(cn, ref_c, atol=tol, rtol=tol, what="c_n")


def test_kernel_out_columns_and_accumulate_dx():
    """A projected layer writes only its P columns of a wider out (bidirectional layout) and
    reads dy from the same columns."""
    rng = np.random.default_rng(5)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    out = np.full((T, B, 2 * P + 1), 7.0)
    _core.recurrent_forward("lstm", x, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], out=out, out_col=P + 1,
                            w_hr=w["w_hr"])
    ref, _, _ = run_forward(w, x, None, None, None, False)[:3]
    assert_same_bits(out[:, :, P + 1:], ref, "projected columns")
    assert np.all(out[:, :, :P + 1] == 7.0)


def test_one_thread_equals_two_bit_for_bit():
    if not _core.openmp_enabled():
        pytest.skip("built without OpenMP")
    rng = np.random.default_rng(9)
    T_, B_, I_, H_, P_ = 4, 24, 16, 200, 72
    assert _core.recurrent_threads("lstm", B_, H_, 2, proj_size=P_) == 2
    w = make_weights(rng, I_, H_, P_, np.float32)
    x = rng.standard_normal((T_, B_, I_)).astype(np.float32)
    lengths = rng.integers(0, T_ + 1, B_).astype(np.int64)
    dy = rng.standard_normal((T_, B_, P_)).astype(np.float32)
    dhn = rng.standard_normal((B_, P_)).astype(np.float32)
    results = []
    for threads in (1, 2):
        out, hn, cn, ws = run_forward(w, x, None, None, lengths, True, threads)
        g, dx, dh0, dc0 = run_backward(ws, w, dy, dhn, None, x.shape, threads)
        results.append((out, hn, cn, dx, dh0, dc0, g))
    a, b = results
    for name, u, v in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"), a[:6], b[:6]):
        assert_same_bits(v, u, name)
    for k in a[6]:
        assert_same_bits(b[6][k], a[6][k], k)


def test_workspace_moves_between_projected_and_plain():
    rng = np.random.default_rng(2)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    out, hn, cn, ws = run_forward(w, x, None, None, None, False)
    w_hh = rng.standard_normal((4 * H, H)) * 0.3
    plain = np.zeros((T, B, H))
    _core.recurrent_forward("lstm", x, w["w_ih"], w_hh, out=plain, workspace=ws)
    assert ws.proj_size == 0
    ref, _, _ = layer_forward("lstm", x, w["w_ih"], w_hh)
    assert_close(plain, ref, atol=1e-12, rtol=1e-12, what="plain after projected")
    with pytest.raises(ValueError, match="only for a forward with projections"):
        run_backward(ws, dict(w, w_hh=w_hh), np.ones((T, B, H)), None, None, x.shape)
    out2, _, _, ws = run_forward(w, x, None, None, None, False, workspace=ws)
    assert_same_bits(out2, out, "projected again")


def _fwd_kwargs(w, x, **over):
    kw = dict(cell="lstm", x=x, w_ih=w["w_ih"], w_hh=w["w_hh"], b_ih=w["b_ih"], b_hh=w["b_hh"],
              out=np.zeros((x.shape[0], x.shape[1], P)), w_hr=w["w_hr"])
    kw.update(over)
    return kw


@pytest.mark.parametrize("over, match", [
    (dict(cell="gru"), r"w_hr \(projections\) is only for lstm cells"),
    (dict(w_hr=np.zeros((H, H))), r"w_hr must have shape \(P, H\) with 0 < P < H"),
    (dict(w_hr=np.zeros((H + 1, H))), r"0 < P < H"),
    (dict(w_hr=np.zeros((0, H))), r"0 < P < H"),
    (dict(w_hh=np.zeros((4 * H, H))), r"w_hh must have shape \(G\*H, P\) = \(28, 3\)"),
    (dict(w_hr=np.zeros((P, H + 1))), r"w_hh must have shape \(G\*H, P\)"),
    (dict(h0=np.zeros((B, H))), r"h0 must have shape \(3, 3\)"),
    (dict(c0=np.zeros((B, P))), r"c0 must have shape \(3, 7\)"),
    (dict(out=np.zeros((T, B, P - 1))), r"out columns \[out_col, out_col \+ P\)"),
    (dict(w_hr=np.zeros((P, H), np.float32)), r"w_hr must have dtype float64"),
    (dict(w_hr=np.zeros((P, H, 1))), r"w_hr must have"),
])
def test_forward_bad_input(over, match):
    rng = np.random.default_rng(1)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    with pytest.raises(ValueError, match=match) if "dtype" not in match else pytest.raises((TypeError, ValueError),
                                                                                           match=match):
        _core.recurrent_forward(**_fwd_kwargs(w, x, **over))


def test_backward_bad_input():
    rng = np.random.default_rng(1)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dx = np.empty_like(x)

    def call(**over):
        kw = dict(workspace=ws, dy=np.ones((T, B, P)), dy_col=0, dh_n=None, dc_n=None, w_ih=w["w_ih"],
                  w_hh=w["w_hh"], dw_ih=g["w_ih"], dw_hh=g["w_hh"], db_ih=None, db_hh=None, dx=dx,
                  w_hr=w["w_hr"], dw_hr=g["w_hr"])
        kw.update(over)
        return _core.recurrent_backward(**kw)

    _, _, _, ws = run_forward(w, x, None, None, None, False)
    for over, match in [(dict(w_hr=None), "w_hr and dw_hr are required"),
                        (dict(dw_hr=None), "w_hr and dw_hr are required"),
                        (dict(dw_hr=np.zeros((P, H + 1))), r"dw_hr must have shape \(3, 7\)"),
                        (dict(w_hh=np.zeros((4 * H, H))), r"w_hh must have shape \(28, 3\)"),
                        (dict(dh_n=np.zeros((B, H))), r"dh_n must have shape \(3, 3\)"),
                        (dict(dy=np.ones((T, B, P - 1))), r"dy columns \[dy_col, dy_col \+ P\)")]:
        with pytest.raises(ValueError, match=match):
            call(**over)
        assert ws.ready  # a refused call leaves the forward to differentiate
    dh0, dc0 = call()
    assert dh0.shape == (B, P) and dc0.shape == (B, H)


def test_recurrent_threads_proj_size_checks():
    with pytest.raises(ValueError, match="proj_size"):
        _core.recurrent_threads("gru", 4, 16, 2, proj_size=4)
    with pytest.raises(ValueError, match="proj_size"):
        _core.recurrent_threads("lstm", 4, 16, 2, proj_size=16)
    with pytest.raises(ValueError, match="proj_size"):
        _core.recurrent_threads("lstm", 4, 16, 2, proj_size=-1)
    assert _core.recurrent_threads("lstm", 4, 16, 2, proj_size=8) >= 1
