"""int8 and bf16 inference (issue 16): the quantizers and the u8 x s8 and bf16 products against
numpy written from the formulas in csrc/quant/int8.h and csrc/quant/bf16.h (bit for bit, on every
kernel the host can run), saturation cases, and rnncore.quantize's QuantizedLanguageModel:
against a numpy step loop of the same arithmetic, against the float model, generation, beam
search, evaluation, save/load, and the errors for models it cannot run."""
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncore
from rnncore import _core, nn, sampling

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# -- numpy references (the formulas of csrc/quant/int8.h) ------------------------------------------

def ref_rows_s8(w):
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def ref_u8(x):
    x = np.asarray(x, np.float32)
    lo = np.float32(min(0.0, x.min())) if x.size else np.float32(0)
    hi = np.float32(max(0.0, x.max())) if x.size else np.float32(0)
    scale = np.float32((hi - lo) / np.float32(255)) if hi > lo else np.float32(1)
    zp = np.float32(np.clip(np.round(-lo / scale), 0, 255))
    xq = np.clip(np.round(x / scale) + zp, 0, 255).astype(np.uint8)
    return xq, scale, int(zp)


def ref_gemv(q, scale, x):
    xq, sx, zp = ref_u8(x)
    acc = q.astype(np.int64) @ xq.astype(np.int64)
    rowsum = q.astype(np.int64).sum(axis=1)
    return (acc - zp * rowsum).astype(np.float32) * (np.float32(sx) * scale)


def ref_to_bf16(x):
    """float32 -> bf16 bits, nearest even; NaN stays quiet; denormals become signed zeros."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    exp, man = u & 0x7F800000, u & 0x7FFFFF
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    r = np.where(exp == 0, (u >> 16) & 0x8000, r)
    r = np.where((exp == 0x7F800000) & (man != 0), ((u >> 16) | 0x40) & 0xFFFF, r)
    return r.astype(np.uint16)


def from_bf16(b):
    return (np.asarray(b).astype(np.uint32) << 16).view(np.float32)


def ref_bf16_gemv(w, x):
    """bf16.h's order: pairs of k; even pairs in one float32 sum, odd pairs in another; within a
    pair the odd k first."""
    N, K = w.shape
    xb, wf = from_bf16(ref_to_bf16(x)), from_bf16(w)
    if K % 2:
        xb, wf = np.append(xb, np.float32(0)), np.concatenate([wf, np.zeros((N, 1), np.float32)], 1)
    s = [np.zeros(N, np.float32), np.zeros(N, np.float32)]
    for g in range(xb.size // 2):
        a = s[g % 2] + xb[2 * g + 1] * wf[:, 2 * g + 1]
        s[g % 2] = a + xb[2 * g] * wf[:, 2 * g]
    return s[0] + s[1]


SHAPES = [(1, 1), (5, 3), (16, 4), (17, 5), (33, 77), (48, 129), (2048, 64), (65, 513)]


# -- the kernels, on this process's path -------------------------------------------------------------

@pytest.mark.parametrize("N,K", SHAPES)
def test_quantizers_and_product_equal_the_numpy_formulas_bit_for_bit(N, K):
    rng = np.random.default_rng(N * 1000 + K)
    w = (rng.standard_normal((N, K)) * rng.uniform(0.01, 3, (N, 1))).astype(np.float32)
    x = (rng.standard_normal(K) * 2).astype(np.float32)
    q, s = _core.quantize_rows_s8(w)
    qr, sr = ref_rows_s8(w)
    np.testing.assert_array_equal(q, qr)
    np.testing.assert_array_equal(s, sr)
    xq, sx, zp = _core.quantize_u8(x)
    xr, sxr, zpr = ref_u8(x)
    np.testing.assert_array_equal(xq, xr)
    assert (np.float32(sx), zp) == (sxr, zpr)
    np.testing.assert_array_equal(_core.int8_gemv_acc(q, xq), (q.astype(np.int64) @ xq.astype(np.int64)))
    y = _core.int8_gemv(q, s, x)
    np.testing.assert_array_equal(y, ref_gemv(q, s, x))
    # and it is a product: within the quantization error of the float one
    exact = w.astype(np.float64) @ x.astype(np.float64)
    assert np.abs(y - exact).max() <= 0.05 * np.abs(w).max() * np.abs(x).max() * np.sqrt(K) + 1e-6


@pytest.mark.parametrize("N,K", SHAPES)
def test_bf16_rounding_and_product_equal_the_numpy_formulas_bit_for_bit(N, K):
    rng = np.random.default_rng(N * 31 + K)
    w = (rng.standard_normal((N, K)) * rng.uniform(0.01, 3, (N, 1))).astype(np.float32)
    x = (rng.standard_normal(K) * 2).astype(np.float32)
    wb = _core.to_bf16(w)
    np.testing.assert_array_equal(wb, ref_to_bf16(w))
    y = _core.bf16_gemv(wb, x)
    np.testing.assert_array_equal(y, ref_bf16_gemv(wb, x))
    exact = w.astype(np.float64) @ x.astype(np.float64)
    assert np.abs(y - exact).max() <= 2 ** -7 * np.abs(w).max() * np.abs(x).max() * np.sqrt(K) + 1e-6


def test_bf16_rounding_edge_cases():
    x = np.array([1.0, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-40, -1e-40, np.inf, -np.inf, np.nan, 3.4e38],
                 np.float32)
    b = _core.to_bf16(x)
    np.testing.assert_array_equal(b, ref_to_bf16(x))
    back = from_bf16(b)
    assert back[0] == 1.0 and back[1] == -2.5
    assert back[2] == 1.0 and back[3] == 1 + 2 ** -6   # ties to even: down, then up
    assert back[4] == 0 and back[5] == 0 and np.signbit(back[5])
    assert np.isposinf(back[6]) and np.isneginf(back[7]) and np.isnan(back[8])
    assert np.isposinf(back[9])  # rounds past bf16's largest finite value


def test_int32_sums_do_not_saturate():
    # vpmaddubsw would saturate 255 * 127 + 255 * 127 = 64770 to 32767; every kernel must not
    xq = np.full(200, 255, np.uint8)
    for v in (127, -127):
        q = np.full((19, 200), v, np.int8)
        np.testing.assert_array_equal(_core.int8_gemv_acc(q, xq), np.full(19, v * 255 * 200))
    rng = np.random.default_rng(0)
    q = rng.choice(np.array([-127, 127], np.int8), (40, 333))
    xq = rng.choice(np.array([0, 255], np.uint8), 333)
    np.testing.assert_array_equal(_core.int8_gemv_acc(q, xq), q.astype(np.int64) @ xq.astype(np.int64))


def test_activation_quantization_edge_cases():
    # all zero: scale 1, zero point 0; all positive: zero point 0; all negative: zero point 255
    xq, s, zp = _core.quantize_u8(np.zeros(7, np.float32))
    assert (s, zp) == (1.0, 0) and not xq.any()
    xq, s, zp = _core.quantize_u8(np.array([0.5, 1.0, 2.0], np.float32))
    assert zp == 0 and xq[-1] == 255
    xq, s, zp = _core.quantize_u8(np.array([-0.5, -1.0, -2.0], np.float32))
    assert zp == 255 and xq[-1] == 0
    # ties round to even, as numpy and ONNX do
    x = np.array([0.0, 2.5, 3.5, 255.0], np.float32)  # scale 1: 2.5 -> 2, 3.5 -> 4
    xq, s, zp = _core.quantize_u8(x)
    assert s == 1.0 and list(xq) == [0, 2, 4, 255]
    # a non-finite input makes every output NaN (the decoder's finite check then fires)
    q, sc = _core.quantize_rows_s8(np.ones((3, 4), np.float32))
    y = _core.int8_gemv(q, sc, np.array([1, np.nan, 0, 0], np.float32))
    assert np.isnan(y).all()
    with pytest.raises(ValueError, match="row 1 holds NaN"):
        _core.quantize_rows_s8(np.array([[1, 2], [np.inf, 0]], np.float32))
    zero_rows, zs = _core.quantize_rows_s8(np.zeros((2, 3), np.float32))
    assert not zero_rows.any() and (zs == 1).all()


def test_kernel_argument_errors():
    q, s = _core.quantize_rows_s8(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="q must have dtype int8"):
        _core.int8_gemv(q.astype(np.int16), s, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        _core.int8_gemv(q, s[:2], np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"q must have shape \(\*, 5\)"):
        _core.int8_gemv(q, s, np.ones(5, np.float32))
    with pytest.raises(TypeError, match="w must have dtype float32"):
        _core.quantize_rows_s8(np.ones((2, 2)))


# -- every kernel the host can run, in child processes (the ISA is fixed once per process) --------

_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {tests!r})
from rnncore import _core
from test_quant import SHAPES, ref_bf16_gemv, ref_gemv
print(_core.int8_kernel())
for N, K in SHAPES:
    rng = np.random.default_rng(N * 7 + K)
    w = rng.standard_normal((N, K)).astype(np.float32)
    x = rng.standard_normal(K).astype(np.float32)
    q, s = _core.quantize_rows_s8(w)
    assert (_core.int8_gemv(q, s, x) == ref_gemv(q, s, x)).all(), (N, K)
    xq = rng.integers(0, 256, K).astype(np.uint8)
    assert (_core.int8_gemv_acc(q, xq) == q.astype(np.int64) @ xq.astype(np.int64)).all(), (N, K)
    wb = _core.to_bf16(w)
    assert (_core.bf16_gemv(wb, x) == ref_bf16_gemv(wb, x)).all(), (N, K)
q = np.full((16, 300), 127, np.int8)
assert (_core.int8_gemv_acc(q, np.full(300, 255, np.uint8)) == 127 * 255 * 300).all()
print(_core.bf16_kernel())
"""

EXPECTED_KERNEL = {"generic": "generic", "avx2": "avx2"}


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_every_int8_and_bf16_kernel_the_host_runs_equals_the_reference(isa):
    env = dict(os.environ, RNNCORE_ISA=isa, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _CHILD.format(tests=HERE)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    kernel, bf16 = r.stdout.split()[:2]
    assert kernel == EXPECTED_KERNEL.get(isa, kernel) and bf16 == EXPECTED_KERNEL.get(isa, bf16)
    if isa == "avx512":
        assert kernel in ("vnni512", "avx2")  # VNNI when the CPU has it, else the widening AVX2 kernel
        assert bf16 in ("avx512bf16", "avx2")  # vdpbf16ps when the CPU has AVX-512-BF16, else the emulation


# -- the quantized language model -------------------------------------------------------------------

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def ref_quantized_logits(q, tokens):
    """A numpy step loop of QuantizedLanguageModel's arithmetic (float64 cells): tokens (T, B)."""
    p = {k: v for k, v in q.state_dict().items()}
    T, B = tokens.shape
    L, H, R = q.num_layers, q.hidden_size, q.state_size
    h = np.zeros((L, B, R), np.float32)
    c = np.zeros((L, B, H), np.float32)

    def prod(name, x):
        if q.precision == "bf16":
            return ref_bf16_gemv(p[name], np.asarray(x, np.float32)).astype(np.float64)
        return ref_gemv(p[name], p[name + "_scale"], x).astype(np.float64)

    out = np.zeros((T, B, q.vocab_size))
    for t in range(T):
        for b in range(B):
            x = p["encoder.weight"][tokens[t, b]]
            for layer in range(L):
                gx = prod(f"rnn.weight_ih_l{layer}", x) + p[f"rnn.bias_ih_l{layer}"]
                gh = prod(f"rnn.weight_hh_l{layer}", h[layer, b]) + p[f"rnn.bias_hh_l{layer}"]
                if q.cell == "lstm":
                    i, f, g, o = np.split(gx + gh, 4)
                    c_new = _sigmoid(f) * c[layer, b] + _sigmoid(i) * np.tanh(g)
                    m = _sigmoid(o) * np.tanh(c_new)
                    c[layer, b] = c_new
                    hn = prod(f"rnn.weight_hr_l{layer}", m.astype(np.float32)) if q.proj_size else m
                elif q.cell == "gru":
                    xr, xz, xn = np.split(gx, 3)
                    hr, hz, hn_ = np.split(gh, 3)
                    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
                    n = np.tanh(xn + r * hn_)
                    hn = (1 - z) * n + z * h[layer, b]
                else:
                    hn = np.tanh(gx + gh) if q.cell == "rnn_tanh" else np.maximum(gx + gh, 0)
                h[layer, b] = hn
                x = h[layer, b]
            out[t, b] = prod("decoder.weight", x) + p["decoder.bias"]
    return out


CASES = [("lstm", 2, 0), ("gru", 2, 0), ("rnn_tanh", 1, 0), ("rnn_relu", 2, 0), ("lstm", 2, 8)]


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("cell,layers,proj", CASES)
def test_quantized_model_equals_a_numpy_step_loop_of_its_arithmetic(cell, layers, proj, precision):
    m = nn.LanguageModel(37, 12, 24, num_layers=layers, cell=cell, proj_size=proj, seed=3)
    q = rnncore.quantize(m, precision)
    tokens = np.random.default_rng(1).integers(0, 37, (9, 3))
    logits, _ = q.forward(tokens)
    ref = ref_quantized_logits(q, tokens)
    # the int8 products are exact; only the cells' float32 activations differ from numpy's float64
    np.testing.assert_allclose(logits, ref, rtol=0, atol=2e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize("cell,layers,proj", CASES)
def test_quantized_model_stays_close_to_the_float_model(cell, layers, proj, precision):
    m = nn.LanguageModel(41, 16, 32, num_layers=layers, cell=cell, proj_size=proj, seed=5).eval()
    q = rnncore.quantize(m, precision)
    tokens = np.random.default_rng(2).integers(0, 41, (12, 2))
    lf, (sf) = m.forward(tokens)
    lq, sq = q.forward(tokens)
    assert np.abs(lq - lf).max() <= 0.03 * np.abs(lf).max()
    # the state continues the same way in both: windows chain like one long read
    l2, _ = q.forward(tokens, sq)
    whole, _ = q.forward(np.concatenate([tokens, tokens]))
    np.testing.assert_array_equal(l2, whole[12:])


@pytest.mark.parametrize("precision", ["int8", "bf16", "fp32"])
@pytest.mark.parametrize("cell,layers,proj", CASES)
@pytest.mark.parametrize("n", [150, 67, 1])
def test_layer_by_layer_scoring_equals_the_step_loop(cell, layers, proj, precision, n):
    # teacher_force(by_layer=True) batches each layer's input products over chunks of 64 steps;
    # every row is still its own product, so int8 and bf16 give the step loop's bits exactly
    # (float32: the packed GEMM's rounding may differ with the row count)
    m = nn.LanguageModel(29, 10, 24, num_layers=layers, cell=cell, proj_size=proj, seed=4).eval()
    if precision == "fp32":
        make = lambda: sampling.Decoder(m, 3, threads=2)._core  # noqa: E731
    else:
        q = rnncore.quantize(m, precision)
        make = lambda: _core.LMDecoder(*q.decoder_weights(), 3, 2)  # noqa: E731
    rng = np.random.default_rng(5)
    tokens, targets = rng.integers(0, 29, (3, n)), rng.integers(0, 29, (3, n))
    step, layer = make(), make()
    h0 = rng.standard_normal(step.get_state()[0].shape).astype(np.float32)
    c0 = rng.standard_normal(h0.shape[:2] + (24,)).astype(np.float32) if cell == "lstm" else None
    for d in (step, layer):
        d.set_state(h0, c0)
    a, b = step.teacher_force(tokens, targets, True), layer.teacher_force(tokens, targets, True, by_layer=True)
    assert a[2] == b[2] == n
    states = list(zip(step.get_state(), layer.get_state()))
    if precision == "fp32":
        np.testing.assert_allclose(b[1], a[1], atol=1e-5)
        np.testing.assert_allclose(b[0], a[0], atol=1e-5)
        for x, y in states:
            if x is not None:
                np.testing.assert_allclose(y, x, atol=1e-5)
    else:
        np.testing.assert_array_equal(b[1], a[1])
        np.testing.assert_array_equal(b[0], a[0])
        for x, y in states:
            if x is not None:
                np.testing.assert_array_equal(y, x)
    # logprob only (the chunk's logits in a scratch buffer) gives the same numbers
    again = make()
    again.set_state(h0, c0)
    lp, logits, _ = again.teacher_force(tokens, targets, False, by_layer=True)
    assert logits is None
    np.testing.assert_array_equal(lp, b[0])
    # both leave the last token fed as the next input: the next step's logits agree
    if precision != "fp32":
        np.testing.assert_array_equal(step.step_logits(), layer.step_logits())


def test_layer_by_layer_scoring_reports_non_finite_logits():
    q = rnncore.quantize(nn.LanguageModel(9, 4, 8, seed=0))
    sd = q.state_dict()
    sd["decoder.bias"][3] = np.inf  # quantize() refuses such a model; load_state_dict does not look
    q.load_state_dict(sd)
    d = _core.LMDecoder(*q.decoder_weights(), 1, 1)
    with pytest.raises(FloatingPointError, match="stream 0 at step 0"):
        d.teacher_force(np.array([[1, 2, 3]]), np.array([[1, 2, 3]]), False, by_layer=True)


def test_quantized_target_log_prob_and_evaluate():
    m = nn.LanguageModel(30, 8, 16, num_layers=2, seed=0).eval()
    q = rnncore.quantize(m)
    ids = np.random.default_rng(4).integers(0, 30, 400)
    x, y = ids[:-1].reshape(1, -1).T[:50], ids[1:].reshape(1, -1).T[:50]
    lp, _ = q.target_log_prob(x, y)
    logits, _ = q.forward(x)
    ls = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    ls -= np.log(np.exp(ls).sum(-1, keepdims=True))
    np.testing.assert_allclose(lp, np.take_along_axis(ls, y[..., None], -1)[..., 0], atol=1e-6)
    ev_q = rnncore.evaluate(q, ids, batch_size=4, seq_len=10)
    ev_f = rnncore.evaluate(m, ids, batch_size=4, seq_len=10)
    assert abs(ev_q["ppl"] / ev_f["ppl"] - 1) < 0.01


def test_quantized_batch_first():
    m = nn.LanguageModel(20, 8, 16, batch_first=True, seed=1).eval()
    q = rnncore.quantize(m)
    tokens = np.random.default_rng(0).integers(0, 20, (3, 7))
    lq, _ = q.forward(tokens)
    lf, _ = m.forward(tokens)
    assert lq.shape == lf.shape == (3, 7, 20)
    assert np.abs(lq - lf).max() < 0.03 * np.abs(lf).max()


def test_generation_beam_search_and_stream_run_on_int8_weights():
    m = nn.LanguageModel(25, 8, 32, num_layers=2, seed=7).eval()
    q = rnncore.quantize(m)
    a = sampling.generate(q, [1, 2, 3], 30, seed=11)
    b = sampling.generate(q, [1, 2, 3], 30, seed=11)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (30,) and ((a >= 0) & (a < 25)).all()
    assert list(sampling.stream(q, [1, 2, 3], 30, seed=11, chunk=7)) == list(a)
    # greedy from the prime equals argmax of the teacher-forced logits, step by step
    greedy = sampling.generate(q, [4, 5], 6, temperature=0)
    seq = [4, 5] + list(greedy)
    logits, _ = q.forward(np.array(seq[:-1])[:, None])
    np.testing.assert_array_equal(logits[1:, 0].argmax(-1), greedy)
    hyps = sampling.beam_search(q, [1, 2], 4, 8, n_best=2)
    assert len(hyps) == 2 and hyps[0][1] >= hyps[1][1]
    # several streams, with their own generators
    many = sampling.generate(q, np.array([[1, 2], [3, 4]]), 10, seed=3)
    assert many.shape == (2, 10)


def test_bf16_model_saves_loads_and_halves_the_bytes(tmp_path):
    m = nn.LanguageModel(25, 8, 32, num_layers=2, seed=7)
    q = rnncore.quantize(m, "bf16")
    assert q.state_dict()["rnn.weight_ih_l0"].dtype == np.uint16 and "rnn.weight_ih_l0_scale" not in q.state_dict()
    rnncore.save(tmp_path / "b.safetensors", q)
    back = rnncore.load(tmp_path / "b.safetensors").build()
    assert back.precision == "bf16"
    np.testing.assert_array_equal(sampling.generate(back, [1, 2], 20, seed=1), sampling.generate(q, [1, 2], 20, seed=1))
    float_matrices = sum(p.data.nbytes for n, p in m.named_parameters() if p.data.ndim == 2 and n != "encoder.weight")
    assert 2 * sum(p.data.nbytes for _, p in q.named_parameters() if p.data.dtype == np.uint16) == float_matrices


def test_quantized_model_saves_and_loads_and_generates(tmp_path):
    m = nn.LanguageModel(25, 8, 32, num_layers=2, cell="gru", seed=7)
    q = rnncore.quantize(m)
    path = tmp_path / "q.safetensors"
    rnncore.save(path, q)
    back = rnncore.load(path).build()
    assert isinstance(back, nn.QuantizedLanguageModel)
    for (na, pa), (nb, pb) in zip(q.named_parameters(), back.named_parameters()):
        assert na == nb and pa.dtype == pb.dtype
        np.testing.assert_array_equal(pa.data, pb.data)
    assert back.state_dict()["rnn.weight_hh_l0"].dtype == np.int8
    np.testing.assert_array_equal(sampling.generate(back, [1, 2], 20, seed=1), sampling.generate(q, [1, 2], 20, seed=1))
    # int8 matrices: a quarter of the float ones' bytes (plus one float32 scale per row)
    float_matrices = sum(p.data.nbytes for n, p in m.named_parameters() if p.data.ndim == 2 and n != "encoder.weight")
    int8_matrices = sum(p.data.nbytes for _, p in q.named_parameters() if p.data.dtype == np.int8)
    assert 4 * int8_matrices == float_matrices
    assert q.weight_bytes < 0.33 * sum(p.data.nbytes for n, p in m.named_parameters() if n != "encoder.weight")


def test_a_quantized_model_built_from_its_config_evaluates_and_refuses_cast_weights(tmp_path):
    m = nn.LanguageModel(30, 8, 16, seed=2).eval()
    for precision in ("int8", "bf16"):
        q = rnncore.quantize(m, precision)
        fresh = nn.QuantizedLanguageModel(**q.config())
        assert fresh.training is False  # inference only, from the start
        fresh.load_state_dict(q.state_dict())
        ids = np.random.default_rng(0).integers(0, 30, 200)
        assert rnncore.evaluate(fresh, ids, batch_size=2, seq_len=10) == rnncore.evaluate(q, ids, batch_size=2,
                                                                                          seq_len=10)
        # float weights under the same names would be cast into int8 values / bf16 bits: refused
        with pytest.raises(TypeError, match="would be cast, not quantized"):
            fresh.load_state_dict(m.state_dict(), strict=False)
        with pytest.raises(TypeError, match="looks like quantized weights"):
            nn.LanguageModel(30, 8, 16).load_state_dict(
                {k: v for k, v in q.state_dict().items() if not k.endswith("_scale")}, strict=False)
    with pytest.raises(ValueError, match="more than the int32 sums hold"):
        _core.int8_gemv_acc(np.zeros((1, 65794), np.int8), np.zeros(65794, np.uint8))


def test_what_cannot_be_quantized_says_which_and_why():
    with pytest.raises(TypeError, match="SequenceClassifier is not one"):
        rnncore.quantize(nn.SequenceClassifier(10, 4, 8, 2))
    with pytest.raises(ValueError, match="adaptive softmax"):
        rnncore.quantize(nn.LanguageModel(100, 8, 16, adaptive_softmax=[20, 50]))
    with pytest.raises(TypeError, match="float64"):
        rnncore.quantize(nn.LanguageModel(10, 4, 8, dtype=np.float64))
    with pytest.raises(ValueError, match="precision must be one of int8, bf16"):
        rnncore.quantize(nn.LanguageModel(10, 4, 8), "int4")
    m = nn.LanguageModel(10, 4, 8)
    m.rnn.weight_hh_l0.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="rnn.weight_hh_l0 holds NaN"):
        rnncore.quantize(m)
    q = rnncore.quantize(nn.LanguageModel(10, 4, 8))
    with pytest.raises(TypeError, match="already quantized"):
        rnncore.quantize(q)
    with pytest.raises(RuntimeError, match="inference only"):
        q.train()
    with pytest.raises(RuntimeError, match="no backward"):
        q.backward()
    with pytest.raises(ValueError, match=r"tokens must be ids in \[0, 10\)"):
        q.forward(np.array([[10]]))
    with pytest.raises(ValueError, match=r"h must have shape \(L, B, H\) = \(1, 1, 8\)"):
        q.forward(np.array([[1]]), (np.zeros((1, 2, 8), np.float32), np.zeros((1, 1, 8), np.float32)))


def test_decoder_refuses_mixed_float_and_int8_weights():
    m = nn.LanguageModel(10, 4, 8)
    q = rnncore.quantize(m)
    cell, emb, layers, w_out, b_out = q.decoder_weights()
    mixed = [(m.rnn.weight_ih_l0.data,) + layers[0][1:]]
    with pytest.raises(TypeError, match=r"layers\[0\].w_ih must be an int8 weight \(q, scale\) like w_out"):
        _core.LMDecoder(cell, emb, mixed, w_out, b_out, 1, 1)
    with pytest.raises(TypeError, match="int8 weights decode in float32"):
        _core.LMDecoder(cell, emb.astype(np.float64), layers, w_out, b_out, 1, 1)
    b = rnncore.quantize(m, "bf16")
    _, _, b_layers, b_out_w, _ = b.decoder_weights()
    with pytest.raises(TypeError, match=r"w_ih must be an int8 weight \(q, scale\) like w_out, got bf16"):
        _core.LMDecoder(cell, emb, [(b_layers[0][0],) + layers[0][1:]], w_out, b_out, 1, 1)
