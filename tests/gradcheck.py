"""Central-difference gradient checks in float64, shared by the layer and model tests."""
import numpy as np


def numeric_grad(f, array, eps=1e-6, index=None):
    """d f() / d array by central differences, perturbing `array` in place (restored after).

    index: optional iterable of flat positions to check (default: all)."""
    flat = array.reshape(-1)
    assert np.shares_memory(flat, array)
    positions = range(flat.size) if index is None else index
    grad = np.zeros(flat.size)
    for i in positions:
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        grad[i] = (fp - fm) / (2 * eps)
    return grad.reshape(array.shape)

