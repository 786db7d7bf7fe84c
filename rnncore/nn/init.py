"""Parameter initialisers: PyTorch's default for each layer, drawn from a numpy Generator the
caller passes in (never a global RNG), returned as new arrays of the layer's dtype.

Shape letters: G gates (1, 3 or 4), H hidden_size, I input size.

skeleton(): within it, a model is built without memory or random draws: every initialiser
returns a read-only zero-stride placeholder of the right shape and dtype, and Parameter keeps
it as it is. rnncore.io checks a checkpoint's config against its tensors' shapes this way
before building the real model, and the CLI counts a model's parameters before allocating it.
"""
import contextlib
import contextvars
import math

import numpy as np

_SKELETON = contextvars.ContextVar("rnncore_nn_skeleton", default=False)


@contextlib.contextmanager
def skeleton():
    """Build modules as shapes only (see the module docstring); such a module cannot run."""
    token = _SKELETON.set(True)
    try:
        yield
    finally:
        _SKELETON.reset(token)


def building_skeleton():
    """True inside skeleton()."""
    return _SKELETON.get()


def _placeholder(shape, dtype):
    return np.broadcast_to(np.zeros((), dtype), tuple(shape))


def constant(shape, value, dtype):
    """An array of `shape` filled with `value` (LayerNorm's weight 1 and bias 0)."""
    if building_skeleton():
        return _placeholder(shape, dtype)
    return np.full(shape, value, dtype)


def uniform(rng, shape, bound, dtype):
    """U(-bound, bound), drawn in float64 and then converted (so float32 and float64 layers built
    with one seed start from the same values, up to rounding)."""
    if building_skeleton():
        return _placeholder(shape, dtype)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def fan_in_uniform(rng, shape, fan_in, dtype):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's weight and bias."""
    return uniform(rng, shape, 1.0 / math.sqrt(fan_in), dtype)


def standard_normal(rng, shape, dtype):
    """N(0, 1): torch.nn.Embedding's weight."""
    if building_skeleton():
        return _placeholder(shape, dtype)
    return rng.standard_normal(shape).astype(dtype)


def recurrent_uniform(rng, shape, hidden_size, dtype):
    """U(-1/sqrt(H), 1/sqrt(H)): every tensor of PyTorch's recurrent layers and cells."""
    return uniform(rng, shape, 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0, dtype)


def recurrent_parameters(rng, gates, input_size, hidden_size, bias, dtype, proj_size=0):
    """The tensors of one layer and direction of an RNN (or of one cell), in PyTorch's layout and
    draw order: [("weight_ih", (G*H, I)), ("weight_hh", (G*H, H))] and, with bias,
    [("bias_ih", (G*H,)), ("bias_hh", (G*H,))], each recurrent_uniform. An LSTM with
    projections (proj_size P > 0) has weight_hh (G*H, P) and a last ("weight_hr", (P, H))."""
    G, H, P = int(gates), int(hidden_size), int(proj_size)
    shapes = [("weight_ih", (G * H, int(input_size))), ("weight_hh", (G * H, P if P else H))]
    if bias:
        shapes += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
    if P:
        shapes.append(("weight_hr", (P, H)))
    return [(name, recurrent_uniform(rng, shape, H, np.dtype(dtype))) for name, shape in shapes]
