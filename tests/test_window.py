"""FixedWindowLM (Bengio et al. 2003): contexts, float64 gradient check of the whole loss,
window-to-window state, training with the Trainer, checkpoints, the CLI."""
import io

import numpy as np
import pytest

import rnncore
from rnncore import optim
from rnncore.data import CharTokenizer
from rnncore.nn import FixedWindowLM
from rnncore.trainer import Trainer

from gradcheck import numeric_grad


@pytest.fixture(autouse=True)
def _one_thread():
    rnncore.set_num_threads(1)


def test_contexts_are_the_previous_k_ids_padded_at_the_start():
    m = FixedWindowLM(10, 3, 5, context=3, seed=0)
    ids = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    idx, state = m.windows(ids)
    assert idx.shape == (4, 2, 3)
    assert idx[0, 0].tolist() == [10, 10, 1] and idx[2, 0].tolist() == [1, 3, 5]
    assert idx[3, 1].tolist() == [4, 6, 8]
    assert state.tolist() == [[3, 4], [5, 6], [7, 8]]


def test_consecutive_windows_equal_one_window():
    m = FixedWindowLM(12, 4, 6, context=3, direct=True, seed=1)
    ids = np.random.default_rng(0).integers(0, 12, (9, 2))
    whole, s_whole = m.forward(ids)
    a, s = m.forward(ids[:2])
    b, s = m.forward(ids[2:], s)
    np.testing.assert_allclose(np.concatenate([a, b]), whole, rtol=1e-6, atol=1e-6)
    assert (s == s_whole).all()


@pytest.mark.parametrize("direct", [False, True])
def test_gradcheck_whole_loss(direct):
    V, K, T, B = 7, 3, 5, 2
    m = FixedWindowLM(V, 3, 4, context=K, direct=direct, dtype=np.float64, seed=2, threads=1)
    rng = np.random.default_rng(3)
    for p in m.parameters():
        p.data[...] = rng.standard_normal(p.data.shape) * 0.5
    x = rng.integers(0, V, (T, B))
    y = rng.integers(0, V, (T, B))
    state = rng.integers(0, V + 1, (K, B))
    m.zero_grad()
    m.loss(x, y, state)
    m.backward()
    for name, p in m.named_parameters():
        num = numeric_grad(lambda: float(m.loss(x, y, state)[0]), p.data)
        np.testing.assert_allclose(p.grad, num, rtol=1e-6, atol=1e-8, err_msg=name)
    names = {n for n, _ in m.named_parameters()}
    assert ("direct_proj.weight" in names) == direct and "encoder.weight" in names


def test_bad_input_is_a_clear_error():
    m = FixedWindowLM(5, 2, 3, context=2, seed=0)
    with pytest.raises(ValueError, match="tokens must be ids in"):
        m.forward(np.array([[0], [5]]))
    with pytest.raises(ValueError, match=r"state must have shape \(K, B\) = \(2, 1\)"):
        m.forward(np.array([[0]]), np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError, match="tokens must have shape"):
        m.forward(np.array([0, 1]))
    with pytest.raises(ValueError, match="context"):
        FixedWindowLM(5, 2, 3, context=0)
    with pytest.raises(RuntimeError):
        FixedWindowLM(5, 2, 3).backward()


def test_trains_with_the_trainer_and_checkpoint_round_trips(tmp_path):
    text = "the cat sat on the mat. the dog sat on the log.\n" * 10
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    m = FixedWindowLM(tok.vocab_size, 8, 32, context=4, direct=True, seed=0)
    trainer = Trainer(m, optim.Adam(m.parameters(), lr=1e-2), clip_grad_norm=5.0, batch_size=4, seq_len=16,
                      tokenizer=tok, stream=io.StringIO(), progress=False, checkpoint_dir=tmp_path)
    before = trainer.evaluate(ids)["loss"]
    result = trainer.fit(ids, ids, epochs=15)
    assert result["val_loss"] < 0.5 * before, (before, result)
    assert result["val_loss"] < 1.0
    ckpt = rnncore.load(str(tmp_path / "last.safetensors"))
    assert ckpt.kind == "FixedWindowLM"
    m2 = ckpt.build()
    assert m2.config() == m.config()
    x = ids[:20].reshape(10, 2)
    np.testing.assert_array_equal(m2.forward(x)[0], m.forward(x)[0])
    assert rnncore.evaluate(m2, ids)["loss"] == pytest.approx(rnncore.evaluate(m, ids)["loss"], rel=1e-6)
