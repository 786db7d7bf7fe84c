"""bfloat16 mixed precision (issue 16): the recurrent layers and Linear with precision='bf16'.

What bf16 means here (csrc/recurrent/recurrent.h, ForwardArgs::bf16): every operand of every
product -- the weights, x, h0, each new h (with a projection also m = o * tanh(c)) and, in
backward, the gradients that enter products -- is rounded to bfloat16; the products are summed
in float32; the cell state, the pointwise math, the biases, the master weights and the gradients
stay float32. Rounding passes gradients straight through.

float64 gradient checks are not meaningful for it, so the checks are:
  * the rounding itself, bit for bit, against a numpy formula (ties to even, NaN, inf, denormals);
  * the bf16 GEMM (quant/bf16_gemm.h) that runs the whole-sequence products, bit for bit
    against its definition in numpy (the sums in vdpbf16ps's order), on every kernel the host
    can run (.ci/run runs this file under each RNNCORE_ISA);
  * forward and backward against a slow float64 numpy reference written from the equations with
    the same rounding points, within a stated bound (test_layer_matches_reference), for LSTM (also
    with projections), GRU and RNN, ragged lengths, both directions, one and two threads; plain
    float32 falls outside it, so the test tells the two apart;
  * training: losses and master weights of a model trained in bf16 against float32.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import _core
from rnncore.nn import GRU, LSTM, RNN, LanguageModel, Linear

def np_round_bf16(a):
    """float32 -> bf16 (nearest even) -> float32, from the bits; NaN stays NaN, denormals -> signed 0."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    exp, man = u & 0x7F800000, u & 0x007FFFFF
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    quiet_nan = (u | 0x00400000) & 0xFFFF0000
    r = np.where(exp == 0, u & 0x80000000, np.where((exp == 0x7F800000) & (man != 0), quiet_nan, rounded))
    return r.astype(np.uint32).view(np.float32)


def rb(a):
    """The value a bf16 operand has, as float64."""
    return np_round_bf16(a).astype(np.float64)


def sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


# -- the rounding ---------------------------------------------------------------------------------

def test_round_bf16_bits():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000,
                        0x7F800001, 0xFF812345, 0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0x7F7F8000,
                        0xFF7F8000, 0x00800000, 0x3F807FFF], np.uint32)
    x = np.concatenate([bits, special]).view(np.float32)
    got = _core.round_bf16(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got.view(np.uint32), np_round_bf16(x).view(np.uint32))
    # ties go to even, the largest finite values round to infinity, NaN stays NaN
    assert got[-8].view(np.uint32) == 0x3F800000 and got[-7].view(np.uint32) == 0x3F820000
    assert got[-6].view(np.uint32) == 0x3F810000 and np.isinf(got[-5]) and np.isinf(got[-3])
    assert np.isnan(got[-10]) and np.isnan(got[-9])
    # the low 16 bits are always clear, and to_bf16 gives the same top halves
    assert not np.any(got.view(np.uint32) & 0xFFFF)
    np.testing.assert_array_equal((got.view(np.uint32) >> 16).astype(np.uint16), _core.to_bf16(x))


def test_round_bf16_out_and_bad_input():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    want = np_round_bf16(x)
    out = np.empty_like(x)
    assert _core.round_bf16(x, out) is out
    np.testing.assert_array_equal(out, want)
    y = x.copy()
    _core.round_bf16(y, y)  # in place
    np.testing.assert_array_equal(y, want)
    with pytest.raises(TypeError, match="round_bf16: x"):
        _core.round_bf16(x.astype(np.float64))
    with pytest.raises(ValueError, match="round_bf16: out must have x's shape"):
        _core.round_bf16(x, np.empty((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="round_bf16: out"):
        _core.round_bf16(x, np.empty((2, 3, 4), np.float32)[:, :, ::-1])
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _core.round_bf16(x, ro)


# -- the layer against references -----------------------------------------------------------------

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def ref_layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, dy, dhn, dcn, w_hr=None):
    """One layer and direction in bf16 mixed precision, forward and backward, float64 but for the
    roundings, one sequence and one step at a time. Returns (y, hn, cn, grads)."""
    T, B, _ = x.shape
    G = GATES[cell]
    H = w_hh.shape[0] // G
    R = H if w_hr is None else w_hr.shape[0]
    Wi, Wh = rb(w_ih), rb(w_hh)
    Wr = None if w_hr is None else rb(w_hr)
    bi, bh = b_ih.astype(np.float64), b_hh.astype(np.float64)
    xr = rb(x)
    y = np.zeros((T, B, R))
    hn_out, cn_out = np.zeros((B, R)), np.zeros((B, H))
    g = {k: np.zeros_like(v, np.float64) for k, v in
         dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, x=x).items()}
    g["w_hr"] = None if w_hr is None else np.zeros(w_hr.shape)
    dh0, dc0 = np.zeros((B, R)), np.zeros((B, H))
    for b in range(B):
        steps = list(range(lengths[b]))
        if reverse:
            steps.reverse()
        h = rb(h0[b])
        c = None if c0 is None else c0[b].astype(np.float64)
        saved = []
        for t in steps:
            a = Wi @ xr[t, b] + bi
            s = {"h_prev": h, "c_prev": c}
            if cell == "lstm":
                a = a + Wh @ h + bh
                i, f, gg, o = sig(a[:H]), sig(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), sig(a[3 * H:])
                c = f * c + i * gg
                m = o * np.tanh(c)
                if Wr is None:
                    h = rb(m)
                else:
                    s["m"] = rb(m)
                    h = rb(Wr @ s["m"])
                s.update(i=i, f=f, g=gg, o=o, c=c)
            elif cell == "gru":
                hh = Wh @ h + bh
                r, z = sig(a[:H] + hh[:H]), sig(a[H:2 * H] + hh[H:2 * H])
                n = np.tanh(a[2 * H:] + r * hh[2 * H:])
                s.update(r=r, z=z, n=n, hn=hh[2 * H:])
                h = rb((1 - z) * n + z * h)
            else:
                pre = a + Wh @ h + bh
                h = rb(np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0))
                s["h"] = h
            y[t, b] = h
            saved.append((t, s))
        hn_out[b] = h
        if c is not None:
            cn_out[b] = c
        # backward, the visited steps in reverse
        dh = dhn[b].astype(np.float64)
        dc = None if c0 is None else dcn[b].astype(np.float64)
        for t, s in reversed(saved):
            dht = dh + dy[t, b]
            hp = s["h_prev"]
            if cell == "lstm":
                if Wr is not None:
                    dhp = rb(dht)
                    g["w_hr"] += np.outer(dhp, s["m"])
                    dm = Wr.T @ dhp
                else:
                    dm = dht
                tc = np.tanh(s["c"])
                i, f, gg, o = s["i"], s["f"], s["g"], s["o"]
                dct = dc + dm * o * (1 - tc * tc)
                dA = rb(np.concatenate([dct * gg * i * (1 - i), dct * s["c_prev"] * f * (1 - f),
                                        dct * i * (1 - gg * gg), dm * tc * o * (1 - o)]))
                dc = dct * f
                g["w_hh"] += np.outer(dA, hp)
                g["b_hh"] += dA
                dh = Wh.T @ dA
                dAx = dA
            elif cell == "gru":
                r, z, n = s["r"], s["z"], s["n"]
                dan = dht * (1 - z) * (1 - n * n)
                dAx = rb(np.concatenate([dan * s["hn"] * r * (1 - r), dht * (hp - n) * z * (1 - z), dan]))
                dHn = rb(dan * r)
                dAh = np.concatenate([dAx[:2 * H], dHn])
                g["w_hh"] += np.outer(dAh, hp)
                g["b_hh"] += dAh
                dh = dht * z + Wh.T @ dAh
            else:
                hv = s["h"]
                dAx = rb(dht * ((1 - hv * hv) if cell == "rnn_tanh" else (hv > 0)))
                g["w_hh"] += np.outer(dAx, hp)
                g["b_hh"] += dAx
                dh = Wh.T @ dAx
            g["w_ih"] += np.outer(dAx, xr[t, b])
            g["b_ih"] += dAx
            g["x"][t, b] = Wi.T @ dAx
        dh0[b] = dh
        if dc is not None:
            dc0[b] = dc
    g["h0"], g["c0"] = dh0, dc0
    return y, hn_out, cn_out, g


def engine_layer(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, dy, dhn, dcn, w_hr=None, threads=1,
                 bf16=True):
    T, B, I = x.shape
    G = GATES[cell]
    H = w_hh.shape[0] // G
    R = H if w_hr is None else w_hr.shape[0]
    out = np.empty((T, B, R), np.float32)
    hn, cn, ws = _core.recurrent_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, reverse, out, 0, threads,
                                         None, w_hr=w_hr, bf16=bf16)
    g = {k: np.zeros_like(v) for k, v in dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh).items()}
    g["w_hr"] = None if w_hr is None else np.zeros_like(w_hr)
    g["x"] = np.empty_like(x)
    g["h0"], g["c0"] = _core.recurrent_backward(ws, dy, 0, dhn, dcn, w_ih, w_hh, g["w_ih"], g["w_hh"], g["b_ih"],
                                                g["b_hh"], g["x"], False, threads, w_hr=w_hr, dw_hr=g["w_hr"])
    return out, hn, cn, g


def make_case(cell, T, B, I, H, P, seed, ragged):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    R = P or H
    f = lambda *s, scale=1.0: (rng.standard_normal(s) * scale).astype(np.float32)  # noqa: E731
    k = 1 / np.sqrt(H)
    case = dict(x=f(T, B, I), w_ih=f(G * H, I, scale=2 * k), w_hh=f(G * H, R, scale=2 * k), b_ih=f(G * H, scale=k),
                b_hh=f(G * H, scale=k), h0=f(B, R, scale=0.5), c0=f(B, H, scale=0.5) if cell == "lstm" else None,
                lengths=(rng.integers(0, T + 1, B) if ragged else np.full(B, T)).astype(np.int64),
                dy=f(T, B, R), dhn=f(B, R), dcn=f(B, H) if cell == "lstm" else None,
                w_hr=f(P, H, scale=k) if P else None)
    if ragged:
        case["lengths"][0] = T
        for b in range(B):
            case["dy"][case["lengths"][b]:, b] = 0  # the output there is zero; so is its gradient
    return case


CASES = [("lstm", 0), ("lstm", 12), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)]
SEEDS = 5


def case_errors(cell, P, reverse, ragged, threads, seed, bf16=True):
    """The largest relative distance, over y, h_n, c_n and every gradient, between the engine
    (bf16, or plain float32 with bf16=False) and the bf16 reference, for one random case."""
    T, B, I, H = 7, 5, 13, 40
    c = make_case(cell, T, B, I, H, P, seed=seed, ragged=ragged)
    args = [c[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0", "lengths")] + [reverse] + \
           [c[k] for k in ("dy", "dhn", "dcn")]
    y, hn, cn, g = engine_layer(cell, *args, w_hr=c["w_hr"], threads=threads, bf16=bf16)
    ry, rhn, rcn, rg = ref_layer(cell, *args, w_hr=c["w_hr"])
    if bf16:  # the outputs and h_n are bf16 values (zero low halves)
        assert not np.any(y.view(np.uint32) & 0xFFFF) and not np.any(hn.view(np.uint32) & 0xFFFF)
    errs = {"y": rel(y, ry), "h_n": rel(hn, rhn)}
    if cell == "lstm":
        errs["c_n"] = rel(cn, rcn)
    for k, v in g.items():
        if v is not None:
            errs["d" + k] = rel(v, rg[k])
    return max(errs.values())


@pytest.mark.parametrize("cell,P", CASES)
@pytest.mark.parametrize("reverse,ragged", [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_matches_reference(cell, P, reverse, ragged, threads):
    """The stated bound. The engine sums in float32, the reference in float64, so a value that
    lands within float32 rounding of a bf16 tie now and then rounds the other way (one bf16 step,
    2**-8 relative) and the difference spreads through later roundings. So: in the typical case
    (the median of SEEDS random cases) every output and gradient agrees to 2e-5 relative (float32
    summation); in every case to 1e-2. Plain float32 is never within 1e-3 of the reference: the
    test sees the rounding points."""
    base = 100 * (CASES.index((cell, P)) * 8 + 4 * reverse + 2 * ragged + threads)
    errs = sorted(case_errors(cell, P, reverse, ragged, threads, base + s) for s in range(SEEDS))
    assert errs[SEEDS // 2] <= 2e-5, errs
    assert errs[-1] <= 1e-2, errs
    fp32 = [case_errors(cell, P, reverse, ragged, threads, base + s, bf16=False) for s in range(2)]
    assert min(fp32) > 1e-3, fp32


def ref_gemm_bf16(a, b, trans_a, trans_b, c=None):
    """gemm_bf16's definition, slowly: operands rounded to bf16, then for each pair of k the odd
    product and then the even one added in float32 (the products are exact in float32)."""
    A = np_round_bf16(a.T if trans_a else a)
    B = np_round_bf16(b.T if trans_b else b)
    M, K = A.shape
    acc = np.zeros((M, B.shape[1]), np.float32) if c is None else c.copy()
    if K % 2:
        A, B = np.pad(A, ((0, 0), (0, 1))), np.pad(B, ((0, 1), (0, 0)))
    for p in range(A.shape[1] // 2):
        acc = acc + np.outer(A[:, 2 * p + 1], B[2 * p + 1]).astype(np.float32)
        acc = acc + np.outer(A[:, 2 * p], B[2 * p]).astype(np.float32)
    return acc


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 33, 5), (17, 65, 513), (130, 40, 1030), (9, 31, 2), (3, 2, 0)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_bf16_bits(M, N, K, trans_a, trans_b):
    """Bit for bit against the definition, on tails of every tile dimension (8 rows, 32 columns,
    odd K, K across the 512-wide cache block), with beta 0 and 1, on one and two threads."""
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    c0 = rng.standard_normal((M, N)).astype(np.float32)
    want, want1 = ref_gemm_bf16(a, b, trans_a, trans_b), ref_gemm_bf16(a, b, trans_a, trans_b, c0)
    for threads in (1, 2):
        got = _core.gemm_bf16(a, b, trans_a, trans_b, threads=threads)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        c = c0.copy()
        assert _core.gemm_bf16(a, b, trans_a, trans_b, c=c, beta=1, threads=threads) is c
        np.testing.assert_array_equal(c.view(np.uint32), want1.view(np.uint32))


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 7, 8, 9])
@pytest.mark.parametrize("N,K", [(1, 1), (31, 6), (160, 65), (257, 256), (100, 514)])
@pytest.mark.parametrize("trans_b", [False, True])
def test_per_step_gemm_bf16_bits(M, N, K, trans_b):
    """The recurrent layers' per-step product (op(b) packed once, the small-batch kernels below 8
    rows: groups of column panels, a lone last panel, column tails) gives the definition's bits."""
    rng = np.random.default_rng(M * 7919 + N * 31 + K)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    c0 = rng.standard_normal((M, N)).astype(np.float32)
    got = _core.gemm_bf16(a, b, False, trans_b, per_step=True)
    np.testing.assert_array_equal(got.view(np.uint32), ref_gemm_bf16(a, b, False, trans_b).view(np.uint32))
    c = c0.copy()
    _core.gemm_bf16(a, b, False, trans_b, c=c, beta=1, per_step=True)
    np.testing.assert_array_equal(c.view(np.uint32), ref_gemm_bf16(a, b, False, trans_b, c0).view(np.uint32))


_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {tests!r})
from rnncore import _core
from test_bf16_train import ref_gemm_bf16
rng = np.random.default_rng(11)
for M, N, K in [(9, 33, 7), (20, 70, 515)]:
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
            got = _core.gemm_bf16(a, b, ta, tb, threads=2)
            assert (got.view(np.uint32) == ref_gemm_bf16(a, b, ta, tb).view(np.uint32)).all(), (M, N, K, ta, tb)
for M in range(1, 10):  # the per-step product's small-batch kernels
    for N, K in [(33, 5), (200, 70)]:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        got = _core.gemm_bf16(a, b, per_step=True)
        assert (got.view(np.uint32) == ref_gemm_bf16(a, b, False, False).view(np.uint32)).all(), (M, N, K)
print(_core.gemm_bf16_kernel())
"""


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_every_bf16_gemm_kernel_the_host_runs(isa):
    """Each kernel the host can run (forced through RNNCORE_ISA in a child process) gives the
    definition's bits; avx512 runs vdpbf16ps where the CPU has AVX-512-BF16."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    env = dict(os.environ, RNNCORE_ISA=isa, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _CHILD.format(tests=here)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=root)
    assert r.returncode == 0, r.stderr
    kernel = r.stdout.split()[-1]
    want = {"generic": "generic", "avx2": "avx2"}.get(isa)
    assert kernel == want if want else kernel in ("avx512bf16", "avx2")
    if isa == "avx512" and _core.bf16_kernel() == "avx512bf16":
        assert kernel == "avx512bf16"


def test_gemm_bf16_kernel_and_bad_input():
    assert _core.gemm_bf16_kernel() in ("avx512bf16", "avx2", "generic")
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="gemm_bf16: op\\(a\\) is \\(3, 4\\) so op\\(b\\) must have 4 rows"):
        _core.gemm_bf16(a, np.ones((5, 4), np.float32))
    with pytest.raises(ValueError, match="beta must be 0 or 1"):
        _core.gemm_bf16(a, b, c=np.zeros((3, 5), np.float32), beta=0.5)
    with pytest.raises(ValueError, match="beta=1 needs c"):
        _core.gemm_bf16(a, b, beta=1)
    with pytest.raises(ValueError, match="gemm_bf16: c"):
        _core.gemm_bf16(a, b, c=np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="gemm_bf16: a"):
        _core.gemm_bf16(a.astype(np.float64), b)
    with pytest.raises(ValueError, match="per_step=True .* trans_a must be False"):
        _core.gemm_bf16(a.T.copy(), b, trans_a=True, per_step=True)


def test_engine_and_layer_refuse_float64():
    c = make_case("lstm", 3, 2, 4, 8, 0, seed=1, ragged=False)
    d = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v) for k, v in c.items()}
    with pytest.raises(TypeError, match="bf16=True needs float32"):
        _core.recurrent_forward("lstm", d["x"], d["w_ih"], d["w_hh"], out=np.empty((3, 2, 8)), bf16=True)
    with pytest.raises(TypeError, match="float64"):  # (streams run bf16: tests/test_stream.py)
        LSTM(4, 8, precision="bf16", dtype=np.float64)


# -- the Python layers ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kw", [(LSTM, {}), (LSTM, dict(proj_size=6, num_layers=2)), (GRU, dict(bidirectional=True)),
                                    (RNN, dict(num_layers=2, bidirectional=True))])
def test_layer_precision_option(cls, kw):
    rng = np.random.default_rng(3)
    a = cls(9, 16, seed=4, **kw)
    b = cls(9, 16, seed=4, precision="bf16", **kw)
    assert b.precision == "bf16" and "precision='bf16'" in repr(b) and b.config()["precision"] == "bf16"
    x = rng.standard_normal((8, 3, 9)).astype(np.float32)
    lengths = np.array([8, 5, 2])
    ya, _ = a(x, lengths=lengths)
    yb, _ = b(x, lengths=lengths)
    assert not np.any(yb.view(np.uint32) & 0xFFFF)
    dy = rng.standard_normal(ya.shape).astype(np.float32)
    da, db = a.backward(dy), b.backward(dy)
    # bf16 is within its own precision of float32, and not equal to it
    assert 1e-4 < rel(yb, ya) < 2e-2 and 1e-4 < rel(db, da) < 5e-2  # relu: a few units change side
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert q.data.dtype == np.float32 and q.grad.dtype == np.float32
        assert 1e-5 < rel(q.grad, p.grad) < 5e-2, name
    # the same layer set back to fp32 is float32 again, bit for bit
    b.set_precision("fp32")
    yb32, _ = b(x, lengths=lengths)
    np.testing.assert_array_equal(yb32, ya)


def test_linear_bf16():
    rng = np.random.default_rng(0)
    lin = Linear(37, 21, seed=1, precision="bf16")
    x = rng.standard_normal((4, 5, 37)).astype(np.float32)
    y = lin(x)
    W, b = lin.weight.data, lin.bias.data
    want = rb(x) @ rb(W).T + b
    assert rel(y, want) < 1e-6
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = lin.backward(dy)
    assert rel(dx, rb(dy) @ rb(W)) < 1e-6
    X, D = rb(x).reshape(-1, 37), rb(dy).reshape(-1, 21)
    assert rel(lin.weight.grad, D.T @ X) < 1e-6
    assert rel(lin.bias.grad, D.sum(0)) < 1e-6
    # the caller may change x after forward: backward uses the forward's rounded copy
    lin.zero_grad()
    y = lin(x)
    x[...] = 0
    lin.backward(dy)
    assert rel(lin.weight.grad, D.T @ X) < 1e-6


def test_set_precision_and_errors():
    m = LanguageModel(30, 8, 16, 2, seed=0)
    assert m.compute_precision == "fp32"
    assert m.set_precision("bfloat16") is m
    assert m.compute_precision == "bf16" and m.rnn.precision == "bf16" and m.decoder.precision == "bf16"
    assert m.encoder.__dict__.get("precision") is None  # embeddings stay float32
    m.decoder.set_precision("fp32")
    assert m.compute_precision == "mixed"
    with pytest.raises(ValueError, match="set_precision: precision must be 'fp32' or 'bf16'"):
        m.set_precision("fp16")
    with pytest.raises(ValueError, match="LSTM: precision must be"):
        LSTM(3, 4, precision=16)
    with pytest.raises(TypeError, match="precision='bf16' needs float32 parameters.*float64"):
        LSTM(3, 4, dtype=np.float64, precision="bf16")
    with pytest.raises(TypeError, match="needs float32 parameters"):
        LanguageModel(30, 8, 16, dtype=np.float64).set_precision("bf16")
    layer = LSTM(3, 4, precision="bf16").to(np.float64)  # converted after the fact: forward says so
    with pytest.raises(TypeError, match="LSTM.forward: precision='bf16' needs float32"):
        layer(np.zeros((2, 1, 3)))


def _train(precision, steps=20):
    rng = np.random.default_rng(7)
    model = LanguageModel(40, 16, 32, 2, dropout=0.1, seed=3, precision=precision)
    opt = rnncore.optim.Adam(model.parameters(), lr=3e-3)
    data = rng.integers(0, 40, (steps, 21, 8))
    losses, state = [], None
    for t in range(steps):
        model.zero_grad()
        loss, state = model.loss(data[t, :-1], data[t, 1:], state)
        model.backward()
        opt.step()
        losses.append(float(loss))
    return model, np.array(losses)


def test_bf16_training_tracks_float32():
    m32, l32 = _train("fp32")
    m16, l16 = _train("bf16")
    assert np.all(np.abs(l16 - l32) / l32 < 1e-2), np.abs(l16 - l32) / l32
    assert not np.array_equal(l16, l32)
    # the master weights are float32 and keep their low bits: the updates are not rounded away
    w = m16.rnn.weight_hh_l0.data
    assert w.dtype == np.float32 and np.count_nonzero(w.view(np.uint32) & 0xFFFF) > 0.9 * w.size


def test_trainer_precision(tmp_path):
    from rnncore.trainer import Trainer

    model = LanguageModel(20, 8, 16, seed=0)
    opt = rnncore.optim.Adam(model.parameters())
    tr = Trainer(model, opt, batch_size=2, seq_len=5, precision="bf16", progress=False, log_every=1,
                 stream=open(tmp_path / "log.txt", "w"))
    assert tr.precision == "bf16" and model.rnn.precision == "bf16"
    ids = np.random.default_rng(0).integers(0, 20, 400)
    result = tr.fit(ids[:300], ids[300:], epochs=1, max_steps=3)
    assert tr.step == 3 and np.isfinite(result["val_loss"])
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        Trainer(model, opt, precision="int8")
    with pytest.raises(TypeError, match="precision needs a model with set_precision"):
        class Fake:
            def loss(self):
                pass

            backward = forward = parameters = loss

        Trainer(Fake(), opt, precision="bf16")
