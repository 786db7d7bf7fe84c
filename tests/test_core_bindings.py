"""The shared checks of the _core bindings (csrc/bindings/arrays.h): the float32/float64
dispatch, optional arrays, the cell-name parser, and the list kernels behind clipping."""
import re

import numpy as np
import pytest

from rnncore import _core

V, E, H = 7, 3, 5


def _lm_arrays(dtype, G=4, bias=True):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((V, E)).astype(dtype)
    b = (lambda: rng.standard_normal(G * H).astype(dtype)) if bias else (lambda: None)
    layers = [(rng.standard_normal((G * H, E)).astype(dtype), rng.standard_normal((G * H, H)).astype(dtype), b(), b())]
    w_out = rng.standard_normal((V, H)).astype(dtype)
    return emb, layers, w_out, (rng.standard_normal(V).astype(dtype) if bias else None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoder_cell_name_is_case_insensitive(dtype):
    emb, layers, w_out, b_out = _lm_arrays(dtype)
    logits = []
    for cell in ("lstm", "LSTM", "Lstm"):
        dec = _core.LMDecoder(cell, emb, layers, w_out, b_out, 2, 1)
        dec.set_next_tokens(np.array([1, 2], np.int64))
        out = dec.step_logits()
        assert out.dtype == dtype and out.shape == (2, V)
        logits.append(out)
    assert np.array_equal(logits[0], logits[1]) and np.array_equal(logits[0], logits[2])


def test_decoder_bad_cell_lists_the_valid_names():
    emb, layers, w_out, b_out = _lm_arrays(np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "LMDecoder: cell must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu', got 'Conv'")):
        _core.LMDecoder("Conv", emb, layers, w_out, b_out, 1, 1)


def test_decoder_optional_biases_are_none():
    emb, layers, w_out, _ = _lm_arrays(np.float64, G=3, bias=False)
    dec = _core.LMDecoder("gru", emb, layers, w_out, None, 1, 1)
    # No bias anywhere: the logits of a zero state fed token 0 are w_out @ GRU(emb[0], 0).
    x = emb[0]
    w_ih = layers[0][0]
    r, z, n = np.split(w_ih @ x, 3)
    r, z = 1 / (1 + np.exp(-r)), 1 / (1 + np.exp(-z))
    h = (1 - z) * np.tanh(n)
    np.testing.assert_allclose(dec.step_logits()[0], w_out @ h, rtol=1e-12, atol=1e-12)


def test_decoder_seed_and_mark_seen():
    emb, layers, w_out, b_out = _lm_arrays(np.float32)

    def run(seed, seen):
        dec = _core.LMDecoder("lstm", emb, layers, w_out, b_out, 3, 1)
        dec.seed(seed)
        if seen is not None:
            dec.mark_seen(seen)
        return dec.sample(20, temperature=1.0, repetition_penalty=5.0)[0]

    assert np.array_equal(run(3, None), run(3, None))
    assert not np.array_equal(run(3, None), run(4, None))
    seen = np.tile(np.arange(V, dtype=np.int64), (3, 1))
    assert not np.array_equal(run(3, None), run(3, seen))
    dec = _core.LMDecoder("lstm", emb, layers, w_out, b_out, 2, 1)
    msg = "LMDecoder.mark_seen: tokens[1, 2] = 7 is outside the vocabulary [0, 7)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        dec.mark_seen(np.array([[0, 1, 2], [3, 4, 7]], np.int64))


DISPATCHED = {  # function: a call whose dtype-deciding argument is `a`
    "linear_forward": lambda a: _core.linear_forward(np.zeros((2, 3)), a),
    "layernorm_forward": lambda a: _core.layernorm_forward(a),
    "embedding_forward": lambda a: _core.embedding_forward(a, np.zeros(2, np.int64)),
    "cross_entropy": lambda a: _core.cross_entropy(a, np.zeros(2, np.int64)),
    "gemm": lambda a: _core.gemm(a, a, np.zeros((2, 2))),
    "sgd_step": lambda a: _core.sgd_step(a, np.zeros((2, 2)), lr=0.1),
    "LMDecoder": lambda a: _core.LMDecoder("lstm", a, [], np.zeros((2, 2)), None, 1, 1),
}


@pytest.mark.parametrize("fn", sorted(DISPATCHED))
def test_dispatch_names_both_float_dtypes(fn):
    with pytest.raises(TypeError, match=rf"^{fn}: \w+ must have dtype float32 or float64, got int64$"):
        DISPATCHED[fn](np.zeros((2, 2), np.int64))
    if fn != "gemm":  # gemm's signature takes ndarrays only: pybind11 refuses a list itself
        with pytest.raises(TypeError, match=rf"^{fn}: \w+ must be a numpy array, got .*list"):
            DISPATCHED[fn]([[0.0, 0.0], [0.0, 0.0]])


def test_layernorm_optional_arrays():
    x = np.random.default_rng(1).standard_normal((4, 6))
    y, mean, rstd = _core.layernorm_forward(x, None, None)
    y2, _, _ = _core.layernorm_forward(x, np.ones(6), np.zeros(6))
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match=re.escape("layernorm_forward: bias must have shape (6,), got (5,)")):
        _core.layernorm_forward(x, None, np.zeros(5))
    dg = np.zeros(6)
    _core.layernorm_backward(np.ones_like(x), x, mean, rstd, None, dg, None)
    assert np.any(dg != 0)
    with pytest.raises(ValueError, match="layernorm_backward: dbias must be writeable"):
        ro = np.zeros(6)
        ro.flags.writeable = False
        _core.layernorm_backward(np.ones_like(x), x, mean, rstd, None, None, ro)


def test_scale_and_clamp_over_a_mixed_list():
    a = np.arange(-3, 3, dtype=np.float32)
    b = np.arange(-4, 4, dtype=np.float64).reshape(2, 4)
    a0, b0 = a.copy(), b.copy()
    _core.scale_([a, b], 0.5, 1)
    np.testing.assert_array_equal(a, a0 * np.float32(0.5))
    np.testing.assert_array_equal(b, b0 * 0.5)
    _core.clamp_([a, b], -1.0, 0.75, 1)
    np.testing.assert_array_equal(a, np.clip(a0 * np.float32(0.5), -1, 0.75))
    np.testing.assert_array_equal(b, np.clip(b0 * 0.5, -1, 0.75))
    with pytest.raises(TypeError, match=re.escape("scale_: arrays[1] must have dtype float32 or float64, got int64")):
        _core.scale_([a, np.zeros(2, np.int64)], 2.0, 1)
    with pytest.raises(ValueError, match=re.escape("clamp_: arrays[0] must be C-contiguous")):
        _core.clamp_([b[:, ::2]], 0.0, 1.0, 1)
    expected = float(np.sum(a.astype(np.float64) ** 2) + np.sum(b**2))
    assert _core.norm_power_sum([a, b], 2.0, 1) == pytest.approx(expected)
