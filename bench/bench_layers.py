"""Layer benchmarks (pytest-benchmark): RNN/LSTM/GRU forward and training steps, a char-LM
training step and generation, on the shapes of bench/compare.py.

    python -m pytest bench/bench_layers.py --benchmark-only            # timings
    python -m pytest bench/bench_layers.py --benchmark-disable          # smoke test (CI)

Each case checks its result once and asserts nothing about time; for rnncore against PyTorch
in the same run, use bench/compare.py.
"""
import numpy as np
import pytest

from rnncore import optim, sampling
from rnncore.nn import GRU, LSTM, RNN, LanguageModel

LAYERS = {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN}
SHAPES = {  # (T, B, I, H, layers), as in bench/compare.py
    "a": (100, 64, 512, 512, 1),
    "b": (100, 16, 256, 256, 1),
    "c": (100, 1, 256, 256, 1),
    "d": (50, 32, 128, 1024, 2),
}


def make(cell, shape):
    T, B, I, H, L = SHAPES[shape]
    rng = np.random.default_rng(0)
    layer = LAYERS[cell](I, H, num_layers=L, seed=0)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    return layer, x, dy


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", list(LAYERS))
def test_forward(benchmark, cell, shape):
    layer, x, _ = make(cell, shape)
    layer.eval()
    out, _ = benchmark(layer, x)
    assert out.shape == x.shape[:2] + (layer.hidden_size,) and np.isfinite(out).all()


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", list(LAYERS))
def test_train_step(benchmark, cell, shape):
    layer, x, dy = make(cell, shape)

    def step():
        layer.zero_grad()
        layer(x)
        return layer.backward(dy)

    dx = benchmark(step)
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert np.abs(layer.weight_hh_l0.grad).max() > 0


@pytest.mark.parametrize("ragged", [False, True], ids=["padded", "lengths~U[10,100]"])
def test_variable_lengths(benchmark, ragged):
    layer, x, dy = make("lstm", "a")
    T, B = x.shape[:2]
    lengths = np.random.default_rng(0).integers(10, T + 1, size=B) if ragged else None  # padded: every step runs

    def step():
        out, _ = layer(x, lengths=lengths)
        return out, layer.backward(dy)

    out, dx = benchmark(step)
    # Each sequence's outputs and input gradients are zero past its length and nonzero within it.
    live = np.arange(T)[:, None] < (np.full(B, T) if lengths is None else lengths)[None, :]  # (T, B)
    for name, a in (("output", out), ("dx", dx)):
        assert a.shape[:2] == (T, B) and np.isfinite(a).all(), name
        assert np.all(a[~live] == 0), f"{name}: nonzero past a sequence's length"
        assert np.all(np.abs(a).max(axis=2)[live] > 0), f"{name}: a step within a sequence's length is all zero"
    assert np.abs(layer.weight_hh_l0.grad).max() > 0


def charlm():
    return LanguageModel(65, 128, 512, num_layers=2, seed=0)


def test_charlm_train_step(benchmark):
    model = charlm()
    opt = optim.Adam(model.parameters(), lr=2e-3)
    tokens = np.random.default_rng(0).integers(0, 65, size=(129, 32))

    def step():
        loss, _ = model.loss(tokens[:-1], tokens[1:])
        model.zero_grad()
        model.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return loss

    loss = benchmark(step)
    assert np.isfinite(loss)


@pytest.mark.parametrize("streams", [1, 64])
def test_charlm_generate(benchmark, streams):
    model = charlm().eval()
    prime = np.zeros((streams, 1), np.int64)
    out = benchmark(sampling.generate, model, prime, 200, temperature=1.0, seed=1)
    assert out.shape == (streams, 200) and out.min() >= 0 and out.max() < 65
