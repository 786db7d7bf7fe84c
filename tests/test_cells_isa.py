"""Every kernel set of the activations and the fused cells this host can run, side by side.

_core.vmath(fn, x, kernel) and _core.cell_forward_test / cell_backward_test(..., kernel=) run one
instruction set's kernels in this process ('avx512', 'avx2'; 'generic' = the scalar activations /
the cells' portable loops), whatever RNNCORE_ISA chose. Each is compared with a float64 numpy
reference; AVX-512 with AVX2 bit for bit (the same operations, 16 lanes instead of 8). Sizes around
the vector widths reach the masked tails; a slice [lo, hi) of the units checks the hg stride.
Paths the CPU lacks are skipped.
"""
import numpy as np
import pytest

from rnncore import _core

SUPPORTED = _core.supported_isas()
KERNELS = ["generic", "avx2", "avx512"]
SIZES = [1, 7, 15, 16, 17, 33, 130]
CELLS = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def need(kernel):
    if kernel not in SUPPORTED:
        pytest.skip(f"this CPU has no {kernel} (supported: {SUPPORTED})")


def sig(v):
    return 1.0 / (1.0 + np.exp(-v))


# -- float64 references: cells/lstm.h, gru.h, rnn.h written out ------------------------------------

def ref_forward(cell, gates, hg, h_prev, c_prev, bias, b_hn, lo, hi):
    """Outputs on the units [lo, hi) (hg holds that slice only)."""
    G, H = CELLS[cell], h_prev.shape[1]
    n = hi - lo
    x = gates.reshape(-1, G, H)[:, :, lo:hi]
    hk = hg.reshape(-1, G, n)
    b = np.zeros((G, n)) if bias is None else bias.reshape(G, H)[:, lo:hi]
    out = {}
    if cell == "lstm":
        pre = x + hk + b
        i, f, g, o = sig(pre[:, 0]), sig(pre[:, 1]), np.tanh(pre[:, 2]), sig(pre[:, 3])
        c = f * c_prev[:, lo:hi] + i * g
        out.update(gates=np.stack([i, f, g, o], 1), c=c, h=o * np.tanh(c))
    elif cell == "gru":
        r = sig(x[:, 0] + hk[:, 0] + b[0])
        z = sig(x[:, 1] + hk[:, 1] + b[1])
        hn = hk[:, 2] + (0.0 if b_hn is None else b_hn[lo:hi])
        nv = np.tanh(x[:, 2] + b[2] + r * hn)
        out.update(gates=np.stack([r, z, nv], 1), hn=hn, h=nv + z * (h_prev[:, lo:hi] - nv))
    else:
        pre = x[:, 0] + hk[:, 0] + b[0]
        out.update(gates=x, h=np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0.0))
    return out


def ref_backward(cell, gates, h_prev, h, dh_carry, dy, c_prev, c, hn, dc, lo, hi):
    G, H = CELLS[cell], h_prev.shape[1]
    s = slice(lo, hi)
    g = gates.reshape(-1, G, H)[:, :, s]
    dh = dh_carry[:, s] + (0.0 if dy is None else dy[:, s])
    out = {}
    if cell == "lstm":
        i, f, gg, o = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
        tc = np.tanh(c[:, s])
        dct = dc[:, s] + dh * o * (1 - tc * tc)
        out.update(gates=np.stack([dct * gg * i * (1 - i), dct * c_prev[:, s] * f * (1 - f), dct * i * (1 - gg * gg),
                                   dh * tc * o * (1 - o)], 1), dc=dct * f)
    elif cell == "gru":
        r, z, nv = g[:, 0], g[:, 1], g[:, 2]
        dn = dh * (1 - z) * (1 - nv * nv)
        dz = dh * (h_prev[:, s] - nv) * z * (1 - z)
        dr = dn * hn[:, s] * r * (1 - r)
        out.update(gates=np.stack([dr, dz, dn], 1), hn=dn * r, dh_carry=dh * z)
    else:
        hv = h[:, s]
        out.update(gates=(dh * (1 - hv * hv) if cell == "rnn_tanh" else np.where(hv > 0, dh, 0.0))[:, None])
    return out


def forward_inputs(cell, B, H, lo, hi, rng, dtype=np.float32, bias=True, scale=2.0):
    G, n = CELLS[cell], hi - lo
    a = {"gates": rng.standard_normal((B, G * H)) * scale, "hg": rng.standard_normal((B, G * n)) * scale,
         "h_prev": rng.standard_normal((B, H)), "c_prev": rng.standard_normal((B, H)) if cell == "lstm" else None,
         "bias": rng.standard_normal(G * H) if bias else None,
         "b_hn": rng.standard_normal(H) if (bias and cell == "gru") else None}
    return {k: (None if v is None else v.astype(dtype)) for k, v in a.items()}


def backward_inputs(cell, B, H, rng, dtype=np.float32, with_dy=True):
    G = CELLS[cell]
    gates = rng.uniform(0.02, 0.98, (B, G * H))  # saved activations: sigmoids in (0, 1)
    if cell == "lstm":
        gates.reshape(B, G, H)[:, 2] = rng.uniform(-0.98, 0.98, (B, H))  # g = tanh
    if cell == "gru":
        gates.reshape(B, G, H)[:, 2] = rng.uniform(-0.98, 0.98, (B, H))  # n = tanh
    h = rng.uniform(-0.98, 0.98, (B, H)) if cell != "rnn_relu" else np.maximum(rng.standard_normal((B, H)), 0)
    a = {"gates": gates, "h_prev": rng.standard_normal((B, H)), "h": h, "dh_carry": rng.standard_normal((B, H)),
         "dy": rng.standard_normal((B, H)) if with_dy else None,
         "c_prev": rng.standard_normal((B, H)) if cell == "lstm" else None,
         "c": rng.standard_normal((B, H)) * 2 if cell == "lstm" else None,
         "hn": rng.standard_normal((B, H)) if cell == "gru" else None,
         "dc": rng.standard_normal((B, H)) if cell == "lstm" else None}
    return {k: (None if v is None else v.astype(dtype)) for k, v in a.items()}


def f64(a):
    return {k: (None if v is None else v.astype(np.float64)) for k, v in a.items()}


def close(got, ref, what, atol=2e-6, rtol=2e-5):
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref) - (atol + rtol * np.abs(ref))
    assert err.max(initial=-1) <= 0, f"{what}: max |err| {np.abs(got - ref).max():.3g}"


def sliced(arr, G, H, lo, hi):
    """The [lo, hi) columns of each gate block of (B, G*H)."""
    return arr.reshape(arr.shape[0], G, H)[:, :, lo:hi]


# -- activations -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fn,ref", [("exp", np.exp), ("sigmoid", sig), ("tanh", np.tanh)])
@pytest.mark.parametrize("n", SIZES)
def test_vmath_kernel_matches_float64_at_odd_sizes(kernel, fn, ref, n):
    need(kernel)
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 6).astype(np.float32)
    y = _core.vmath(fn, x, kernel)
    r = ref(x.astype(np.float64))
    assert y.dtype == np.float32 and y.shape == x.shape
    close(y, r, f"{kernel} {fn} n={n}", atol=2e-7, rtol=4e-7)


@pytest.mark.parametrize("fn", ["exp", "sigmoid", "tanh"])
def test_vmath_avx512_equals_avx2_bit_for_bit(fn):
    need("avx512")
    x = np.concatenate([np.linspace(-100, 100, 200_003), np.linspace(-1, 1, 100_001),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-40, -1e-40, 88.5, -87.5]]).astype(np.float32)
    a, b = _core.vmath(fn, x, "avx2"), _core.vmath(fn, x, "avx512")
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fn", ["exp", "sigmoid", "tanh"])
def test_vmath_special_values_on_every_kernel(kernel, fn):
    need(kernel)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e6, -1e6] * 3, np.float32)  # 21: a tail on each width
    y = _core.vmath(fn, x, kernel)
    assert np.isnan(y[0::7]).all()  # NaN in gives NaN out, in the body and in the tail
    ref = {"exp": [np.inf, 0.0, 1.0, 1.0, np.inf, 0.0], "sigmoid": [1.0, 0.0, 0.5, 0.5, 1.0, 0.0],
           "tanh": [1.0, -1.0, 0.0, 0.0, 1.0, -1.0]}[fn]
    for k in range(3):
        got = y[7 * k + 1: 7 * k + 7]
        if fn == "exp":  # clamped to [-87.3, 88]: saturates to finite extremes
            assert got[0] > 1e38 and got[1] < 1e-37 and got[2] == 1 and got[3] == 1 and got[4] > 1e38 and got[5] < 1e-37
        else:
            np.testing.assert_allclose(got, ref, atol=1e-37)


def test_vmath_kernel_argument_is_checked():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="kernel"):
        _core.vmath("tanh", x, "sse9")
    with pytest.raises(TypeError, match="kernel"):
        _core.vmath("tanh", x, 3)
    for k in KERNELS:
        if k not in SUPPORTED:
            with pytest.raises(ValueError, match="needs a CPU"):
                _core.vmath("tanh", x, k)


# -- cells -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("H", SIZES)
def test_cell_forward_matches_float64(kernel, cell, H):
    need(kernel)
    rng = np.random.default_rng(H)
    B, G = 3, CELLS[cell]
    lo, hi = (1, H) if H > 2 else (0, H)  # a slice: hg's stride (hi - lo) differs from gates' (H)
    a = forward_inputs(cell, B, H, lo, hi, rng, bias=H % 2 == 1)
    out = _core.cell_forward_test(cell, **a, kernel=kernel, units=(lo, hi))
    ref = ref_forward(cell, **f64(a), lo=lo, hi=hi)
    close(sliced(out["gates"], G, H, lo, hi), ref["gates"], f"{kernel} {cell} gates")
    close(out["h"][:, lo:hi], ref["h"], f"{kernel} {cell} h")
    if "c" in ref:
        close(out["c"][:, lo:hi], ref["c"], f"{kernel} {cell} c")
    if "hn" in ref:
        close(out["hn"][:, lo:hi], ref["hn"], f"{kernel} {cell} hn")
    # nothing outside the slice is touched
    outside = np.ones(H, bool)
    outside[lo:hi] = False
    assert (out["h"][:, outside] == 0).all()
    np.testing.assert_array_equal(out["gates"].reshape(B, G, H)[:, :, outside],
                                  a["gates"].reshape(B, G, H)[:, :, outside])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("H", SIZES)
def test_cell_backward_matches_float64(kernel, cell, H):
    need(kernel)
    rng = np.random.default_rng(100 + H)
    B, G = 3, CELLS[cell]
    lo, hi = (1, H) if H > 2 else (0, H)
    a = backward_inputs(cell, B, H, rng, with_dy=H % 2 == 0)
    out = _core.cell_backward_test(cell, **a, kernel=kernel, units=(lo, hi))
    ref = ref_backward(cell, **f64(a), lo=lo, hi=hi)
    close(sliced(out["gates"], G, H, lo, hi), ref["gates"], f"{kernel} {cell} dgates")
    for key in ("dc", "hn", "dh_carry"):
        if key in ref:
            close(out[key][:, lo:hi], ref[key], f"{kernel} {cell} {key}")
    np.testing.assert_array_equal(out["dh_carry"][:, :lo], a["dh_carry"][:, :lo])


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("H", SIZES)
def test_cell_avx512_equals_avx2_bit_for_bit(cell, H):
    need("avx512")
    rng = np.random.default_rng(7 * H)
    a = forward_inputs(cell, 4, H, 0, H, rng)
    f2, f5 = (_core.cell_forward_test(cell, **a, kernel=k) for k in ("avx2", "avx512"))
    b = backward_inputs(cell, 4, H, rng)
    b2, b5 = (_core.cell_backward_test(cell, **b, kernel=k) for k in ("avx2", "avx512"))
    for got, want in ((f5, f2), (b5, b2)):
        for key in want:
            if key != "seconds":
                assert np.array_equal(got[key].view(np.uint32), want[key].view(np.uint32)), (cell, H, key)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_special_values(kernel, cell):
    """Large |x| saturates like the activations; NaN in a pre-activation propagates (relu maps it
    to 0, as its portable loop h > 0 ? h : 0 does), in the vector body and in the tail (H = 19)."""
    need(kernel)
    H, G = 19, CELLS[cell]
    rng = np.random.default_rng(5)
    a = forward_inputs(cell, 1, H, 0, H, rng, bias=False)
    g = a["gates"].reshape(1, G, H)
    g[:, :, 0], g[:, :, 17] = 1e30, -1e30
    g[:, :, 1], g[:, :, 18] = np.inf, -np.inf
    g[:, :, 2] = g[:, :, 16] = np.nan
    a["hg"][:] = 0
    out = _core.cell_forward_test(cell, **a, kernel=kernel)
    h = out["h"][0]
    if cell == "rnn_relu":
        assert h[0] == 1e30 and h[1] == np.inf and h[17] == 0 and h[18] == 0 and h[2] == 0 and h[16] == 0
    else:
        assert np.isnan(h[[2, 16]]).all()
        assert np.isfinite(h[[0, 1, 17, 18]]).all()
        if cell == "lstm":  # h = o * tanh(c)
            assert (np.abs(h[[0, 1, 17, 18]]) <= 1).all()
    if cell == "rnn_tanh":
        np.testing.assert_array_equal(h[[0, 1, 17, 18]], [1, 1, -1, -1])


@pytest.mark.parametrize("cell", list(CELLS))
def test_float64_runs_the_portable_loops(cell):
    rng = np.random.default_rng(11)
    H, G = 9, CELLS[cell]
    a = forward_inputs(cell, 2, H, 0, H, rng, dtype=np.float64)
    out = _core.cell_forward_test(cell, **a)
    ref = ref_forward(cell, **a, lo=0, hi=H)
    np.testing.assert_allclose(out["h"], ref["h"], rtol=1e-13, atol=1e-14)
    b = backward_inputs(cell, 2, H, rng, dtype=np.float64)
    outb = _core.cell_backward_test(cell, **b, kernel="generic")
    refb = ref_backward(cell, **b, lo=0, hi=H)
    np.testing.assert_allclose(sliced(outb["gates"], G, H, 0, H), refb["gates"], rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="float32 kernel set"):
        _core.cell_forward_test(cell, **a, kernel="avx2")


def test_cells_kernel_is_the_isa():
    assert _core.cells_kernel() == _core.isa()
    assert _core.vmath_kernel() == _core.isa()


def test_cell_hooks_check_their_arguments():
    rng = np.random.default_rng(0)
    a = forward_inputs("lstm", 2, 5, 0, 5, rng)
    with pytest.raises(ValueError, match="cell must be"):
        _core.cell_forward_test("lstmx", **a)
    with pytest.raises(ValueError, match="kernel must be"):
        _core.cell_forward_test("lstm", **a, kernel="sse")
    with pytest.raises(ValueError, match="units must be"):
        _core.cell_forward_test("lstm", **a, units=(0, 6))
    with pytest.raises(ValueError, match="hg must have shape"):
        _core.cell_forward_test("lstm", **a, units=(1, 5))
    with pytest.raises(ValueError, match="c_prev must"):
        _core.cell_forward_test("lstm", **dict(a, c_prev=a["c_prev"][:1]))
    with pytest.raises(ValueError, match="c_prev must be None"):
        _core.cell_forward_test("gru", **dict(forward_inputs("gru", 2, 5, 0, 5, rng), c_prev=a["c_prev"]))
    with pytest.raises(TypeError, match="h_prev must have dtype float32"):
        _core.cell_forward_test("lstm", **dict(a, h_prev=a["h_prev"].astype(np.float64)))
    with pytest.raises(ValueError, match="repeat must be"):
        _core.cell_forward_test("lstm", **a, repeat=0)
    b = backward_inputs("rnn_relu", 2, 5, rng)
    with pytest.raises(ValueError, match="dc must be None"):
        _core.cell_backward_test("rnn_relu", **dict(b, dc=b["h"]))


def test_repeat_gives_the_same_result_and_a_time():
    rng = np.random.default_rng(2)
    b = backward_inputs("lstm", 4, 33, rng)
    once = _core.cell_backward_test("lstm", **b)
    many = _core.cell_backward_test("lstm", **b, repeat=5)  # inputs restored before each repetition
    for key in ("gates", "dc", "dh_carry"):
        np.testing.assert_array_equal(once[key], many[key])
    assert many["seconds"] > 0
