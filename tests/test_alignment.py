"""Arrays at an address misaligned for their dtype (numpy views one byte off): every _core
entry point refuses them naming the argument (a scalar access there would be undefined
behaviour); the Python layers copy them once at the edge and compute the same result."""
import numpy as np
import pytest

import rnncore
from rnncore import _core, nn


def unaligned(a):
    a = np.asarray(a)
    buf = np.empty(a.nbytes + 1, np.uint8)
    v = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    v[...] = a
    assert not v.flags.aligned
    return v


def test_core_refuses_misaligned_arrays_naming_them():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="x must be aligned to its dtype"):
        _core.linear_forward(unaligned(x), w, None, 1)
    with pytest.raises(ValueError, match="must be aligned to its dtype"):
        _core.linear_forward(x, unaligned(w), None, 1)
    ids = np.array([[0, 1], [2, 0]], np.int64)
    with pytest.raises(ValueError, match="must be aligned to its dtype"):
        _core.embedding_forward(unaligned(w), ids, 1)
    with pytest.raises(ValueError, match="must be aligned to its dtype"):
        _core.embedding_forward(w, unaligned(ids), 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_copy_misaligned_inputs_and_give_the_same_result(dtype):
    rng = np.random.default_rng(1)
    lstm = nn.LSTM(3, 4, num_layers=2, dtype=dtype, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(dtype)
    ref, _ = lstm(x)
    got, _ = lstm(unaligned(x))
    np.testing.assert_array_equal(got, ref)
    lin = nn.Linear(3, 2, dtype=dtype, seed=0)
    np.testing.assert_array_equal(lin(unaligned(x)), lin(x))
    emb = nn.Embedding(7, 3, dtype=dtype, seed=0)
    ids = np.array([[1, 2], [3, 6]], np.int64)
    np.testing.assert_array_equal(emb(unaligned(ids)), emb(ids))
    logits = rng.standard_normal((4, 5)).astype(dtype)
    t = np.array([0, 1, 4, 2], np.int64)
    assert rnncore.nn.cross_entropy(unaligned(logits), unaligned(t))[0] == rnncore.nn.cross_entropy(logits, t)[0]
