"""nn.SequenceRegressor (many-to-many regression): float64 central differences of its full MSE
loss against every parameter and the input, the loss over valid steps only, the checkpoint
round trip, and bad input (NaN, T = 0, shapes)."""
import numpy as np
import pytest

import rnncore
from rnncore import nn
from gradcheck import numeric_grad
from helpers import assert_close

T, B, I, H, O = 5, 3, 2, 4, 2
LENGTHS = np.array([5, 2, 0])


@pytest.fixture(autouse=True)
def _one_thread():
    rnncore.set_num_threads(1)
    yield
    rnncore.set_num_threads(None)


@pytest.mark.parametrize("cell,bidir,batch_first,lengths", [("lstm", False, False, None), ("gru", True, True, LENGTHS),
                                                            ("rnn", False, False, LENGTHS)])
def test_gradients_of_the_full_model(cell, bidir, batch_first, lengths):
    rng = np.random.default_rng(0)
    model = nn.SequenceRegressor(I, H, O, num_layers=2, cell=cell, bidirectional=bidir, batch_first=batch_first,
                                 dtype=np.float64, seed=1)
    shape = (B, T) if batch_first else (T, B)
    x, y = rng.standard_normal(shape + (I,)), rng.standard_normal(shape + (O,))

    def f():
        return float(model.loss(x, y, lengths))

    model.zero_grad()
    f()
    dx = model.backward()
    for name, p in model.named_parameters():
        num = numeric_grad(f, p.data)
        assert np.abs(num).max() > 1e-6, name
        assert_close(p.grad, num, atol=1e-7, rtol=1e-5, what=name)
    assert_close(dx, numeric_grad(f, x), atol=1e-7, rtol=1e-5, what="x")


def test_loss_is_the_mean_over_valid_steps():
    rng = np.random.default_rng(2)
    model = nn.SequenceRegressor(I, H, O, dtype=np.float64, seed=3)
    x, y = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, O))
    pred = model(x, LENGTHS)
    valid = np.arange(T)[:, None] < LENGTHS[None, :]
    assert abs(model.loss(x, y, LENGTHS) - np.mean((pred[valid] - y[valid]) ** 2)) < 1e-12
    assert model(x).shape == (T, B, O) and model(x).dtype == np.float64


def test_checkpoint_round_trip(tmp_path):
    model = nn.SequenceRegressor(3, 5, 2, num_layers=2, cell="gru", bidirectional=True, seed=0)
    rnncore.save(tmp_path / "m.safetensors", model)
    rebuilt = rnncore.load(tmp_path / "m.safetensors").build()
    assert type(rebuilt) is nn.SequenceRegressor and rebuilt.config() == model.config()
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt(x), model(x))
    assert "output_size=2" in repr(model)


def test_bad_input():
    model = nn.SequenceRegressor(I, H, O, seed=0)
    x = np.zeros((T, B, I))
    bad = x.copy()
    bad[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"x holds nan at position \[3, 1, 0\].*finite"):
        model(bad)
    with pytest.raises(ValueError, match=r"target holds nan"):
        model.loss(x, np.where(np.isnan(bad[..., :O]), np.nan, 0.0))
    with pytest.raises(ValueError, match=r"no time steps \(T = 0"):
        model(np.zeros((0, B, I)))
    with pytest.raises(ValueError, match=r"target must have shape \(T, B, O\) \(5, 3, 2\)"):
        model.loss(x, np.zeros((T, B)))
    with pytest.raises(ValueError, match=r"x must be features of shape \(T, B, I\) with I = 2"):
        model(np.zeros((T, B, 3)))
    with pytest.raises(rnncore.NoForwardError):
        nn.SequenceRegressor(I, H, O, seed=0).backward()
