"""nn.OutputRecurrentRNN (Goodfellow et al. fig. 10.4): teacher-forced forward and free running
against a slow step-by-step numpy reference, float64 central differences of the teacher-forced
loss, the two modes agreeing when the targets are the model's own outputs, the checkpoint round
trip, and bad input (NaN, T = 0, shapes)."""
import numpy as np
import pytest

import rnncore
from rnncore import nn
from gradcheck import numeric_grad
from helpers import assert_close

T, B, I, H, O = 6, 3, 2, 5, 2


def params(m):
    return [p.data.astype(np.float64) for p in (m.weight_ih, m.weight_oh, m.bias_h, m.weight_ho, m.bias_o)]


def reference(m, x, y0, target=None):
    """The obvious loop: h_t = tanh(W x_t + U y_{t-1} + b), y_t = V h_t + c, where y_{t-1} is
    target[t-1] (teacher forcing) or the previous output (free running)."""
    W, U, b, V, c = params(m)
    prev, out = y0.astype(np.float64), []
    for t in range(x.shape[0]):
        h = np.tanh(x[t] @ W.T + prev @ U.T + b)
        y = h @ V.T + c
        out.append(y)
        prev = y if target is None else target[t]
    return np.array(out)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("steps", [1, 2, T])
def test_both_modes_match_the_step_by_step_reference(dtype, tol, steps):
    rng = np.random.default_rng(0)
    m = nn.OutputRecurrentRNN(I, H, O, dtype=dtype, seed=1)
    x = rng.standard_normal((steps, B, I)).astype(dtype)
    y0 = rng.standard_normal((B, O)).astype(dtype)
    target = rng.standard_normal((steps, B, O)).astype(dtype)
    free = m.free_run(x, y0)
    assert free.dtype == dtype and free.shape == (steps, B, O)
    assert_close(free, reference(m, x, y0), atol=tol, rtol=tol, what="free running")
    assert_close(m(x, target, y0), reference(m, x, y0, target), atol=tol, rtol=tol, what="teacher forced")
    assert_close(m.free_run(x), reference(m, x, np.zeros((B, O))), atol=tol, rtol=tol, what="y0 = 0")


def test_teacher_forcing_on_its_own_outputs_is_free_running():
    rng = np.random.default_rng(2)
    m = nn.OutputRecurrentRNN(I, H, O, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, I))
    free = m.free_run(x)
    np.testing.assert_allclose(m(x, free), free, rtol=1e-12, atol=1e-12)


def test_free_running_is_the_folded_tanh_rnn():
    """From step 1 on the network is a tanh RNN with W_hh = W_oh W_ho, b_hh = W_oh b_o: run that
    through the engine's recurrent kernel (nn.RNN's) from h_0 and compare."""
    from rnncore import _core
    rng = np.random.default_rng(8)
    m = nn.OutputRecurrentRNN(I, H, O, dtype=np.float64, seed=9)
    x, y0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, O))
    W, U, b, V, c = params(m)
    h0 = np.tanh(x[0] @ W.T + y0 @ U.T + b)
    w_hh, b_hh = m.folded_rnn_weights()
    out = np.zeros((T - 1, B, H))
    _core.recurrent_forward("rnn_tanh", np.ascontiguousarray(x[1:]), m.weight_ih.data, w_hh, m.bias_h.data, b_hh,
                            h0, None, None, False, out, 0, 1, None)
    folded = np.concatenate([h0[None], out]) @ V.T + c
    np.testing.assert_allclose(m.free_run(x, y0), folded, rtol=1e-12, atol=1e-12)


def test_core_free_run_refuses_bad_shapes():
    from rnncore import _core
    m = nn.OutputRecurrentRNN(I, H, O, seed=0)
    w = [m.weight_ih.data, m.weight_oh.data, m.bias_h.data, m.weight_ho.data, m.bias_o.data]
    x = np.zeros((T, B, I), np.float32)
    assert _core.output_recurrent_free_run(x, *w).shape == (T, B, O)
    assert _core.output_recurrent_free_run(np.zeros((0, B, I), np.float32), *w).shape == (0, B, O)
    with pytest.raises(ValueError, match="output_recurrent_free_run: x"):
        _core.output_recurrent_free_run(np.zeros((T, B, I + 1), np.float32), *w)
    with pytest.raises(ValueError, match="output_recurrent_free_run: w_ho"):
        _core.output_recurrent_free_run(x, w[0], w[1], w[2], np.zeros((O, H + 1), np.float32), w[4])
    with pytest.raises(ValueError, match="output_recurrent_free_run: y0"):
        _core.output_recurrent_free_run(x, *w, np.zeros((B + 1, O), np.float32))
    with pytest.raises((TypeError, ValueError), match="x"):
        _core.output_recurrent_free_run(x.astype(np.float64), *w)


def test_threads_and_a_larger_batch():
    rng = np.random.default_rng(4)
    m = nn.OutputRecurrentRNN(3, 64, 2, seed=5, threads=1)
    x = rng.standard_normal((40, 96, 3)).astype(np.float32)
    one = m.free_run(x)
    m.threads = 2
    two = m.free_run(x)
    np.testing.assert_array_equal(one, two)
    assert_close(one, reference(m, x, np.zeros((96, 2))), atol=1e-4, rtol=1e-4, what="free running")


def test_teacher_forced_gradients():
    rng = np.random.default_rng(6)
    m = nn.OutputRecurrentRNN(I, H, O, dtype=np.float64, seed=7)
    x, target, y0 = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O)), rng.standard_normal((B, O))

    def f():
        return float(m.loss(x, target, y0))

    m.zero_grad()
    f()
    dx = m.backward()
    for name, p in m.named_parameters():
        num = numeric_grad(f, p.data)
        assert np.abs(num).max() > 1e-6, name
        assert_close(p.grad, num, atol=1e-8, rtol=1e-6, what=name)
    assert_close(dx, numeric_grad(f, x), atol=1e-8, rtol=1e-6, what="x")
    # backward with an explicit gradient of the predictions: the gradient of sum(g * pred)
    g = rng.standard_normal((T, B, O))
    m.zero_grad()
    m(x, target, y0)
    m.backward(g)
    num = numeric_grad(lambda: float(np.sum(g * m(x, target, y0))), m.weight_oh.data)
    assert_close(m.weight_oh.grad, num, atol=1e-8, rtol=1e-6, what="weight_oh (grad_output)")


def test_checkpoint_round_trip(tmp_path):
    m = nn.OutputRecurrentRNN(3, 4, 2, seed=0, dtype=np.float64)
    rnncore.save(tmp_path / "m.safetensors", m)
    rebuilt = rnncore.load(tmp_path / "m.safetensors").build()
    assert type(rebuilt) is nn.OutputRecurrentRNN and rebuilt.config() == m.config()
    x = np.ones((3, 1, 3))
    np.testing.assert_array_equal(rebuilt.free_run(x), m.free_run(x))
    assert [n for n, _ in m.named_parameters()] == ["weight_ih", "weight_oh", "bias_h", "weight_ho", "bias_o"]


def test_bad_input():
    m = nn.OutputRecurrentRNN(I, H, O, seed=0)
    x, target = np.zeros((T, B, I)), np.zeros((T, B, O))
    with pytest.raises(ValueError, match=r"no time steps \(T = 0"):
        m.free_run(np.zeros((0, B, I)))
    with pytest.raises(ValueError, match=r"no time steps \(T = 0"):
        m.loss(np.zeros((0, B, I)), np.zeros((0, B, O)))
    bad = target.copy()
    bad[2, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"target holds nan at position \[2, 0, 1\]"):
        m.loss(x, bad)
    xb = x.copy()
    xb[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"x holds inf at position \[1, 2, 0\]"):
        m.free_run(xb)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, I\) with I = 2, got \(6, 3\)"):
        m.free_run(np.zeros((T, B)))
    with pytest.raises(ValueError, match=r"target must have shape \(T, B, O\) = \(6, 3, 2\), got \(6, 3, 1\)"):
        m.loss(x, np.zeros((T, B, 1)))
    with pytest.raises(ValueError, match=r"y0 must have shape \(B, O\) = \(3, 2\)"):
        m.free_run(x, np.zeros((B, 3)))
    with pytest.raises(rnncore.NoForwardError):
        m.backward()
    m(x, target)
    with pytest.raises(rnncore.NoForwardError):
        m.backward()  # forward without loss: pass grad_output
    with pytest.raises(ValueError, match="grad_output must have the predictions' shape"):
        m.backward(np.zeros((T, B)))


def test_free_run_does_not_copy_its_input(monkeypatch):
    """free_run saves nothing for a backward, so a float32 C-contiguous x goes to C++ as it is
    (no private copy); the teacher-forced forward, which saves x, still copies it."""
    from rnncore.nn import output_recurrent as mod
    calls = []
    real = mod.private_copy
    monkeypatch.setattr(mod, "private_copy", lambda a, src: calls.append(a.shape) or real(a, src))
    m = nn.OutputRecurrentRNN(I, H, O, seed=0)
    x = np.ones((T, B, I), np.float32)
    m.free_run(x)
    assert calls == []
    m(x, np.ones((T, B, O), np.float32))
    assert calls == [(T, B, I)]
