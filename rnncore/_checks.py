"""Input checks and the one explicit conversion at the Python edge.

Every public entry point converts its arrays here exactly once (to the module's dtype,
C-contiguous) and reports bad input as TypeError/ValueError naming the argument, what was
expected and what came. The compiled core then accepts nothing but exact arrays.
"""
import numpy as np


class NoForwardError(ValueError, RuntimeError):
    """backward() was called with no forward to differentiate."""


def shape_str(shape):
    shape = tuple(shape)
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def as_real_array(value, name, fn, dtype):
    """`value` as a C-contiguous array of `dtype`; TypeError unless it holds real numbers."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{fn}: {name} must be a real numeric array, got {type(value).__name__} ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {name} must be a real numeric array (float or int), got dtype {array.dtype}")
    # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it (1,)).
    return np.require(array, dtype=dtype, requirements="C")


def private_copy(array, source):
    """`array`, copied if it may share memory with the caller's `source`.

    A layer that saves its input for backward must not see the caller change it in between.
    """
    if isinstance(source, np.ndarray) and np.may_share_memory(array, source):
        return array.copy()
    return array


def as_lengths(value, batch, steps, fn):
    """Per-sequence lengths as int64 (B,), each in [0, T]."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: lengths must be a 1-D array of integers, got {type(value).__name__}") from None
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and array.size and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise TypeError(f"{fn}: lengths must hold integers, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"{fn}: lengths must have shape (B,) = ({batch},), got {shape_str(array.shape)}")
    if batch and (array.min() < 0 or array.max() > steps):
        bad = int(np.flatnonzero((array < 0) | (array > steps))[0])
        raise ValueError(f"{fn}: lengths must be in [0, T] = [0, {steps}], got lengths[{bad}] = {int(array[bad])}")
    return np.ascontiguousarray(array, dtype=np.int64)


def expect_shape(array, shape, name, fn, what=None):
    if tuple(array.shape) != tuple(shape):
        label = f" {what}" if what else ""
        raise ValueError(f"{fn}: {name} must have shape{label} {shape_str(shape)}, got {shape_str(array.shape)}")
    return array


def resolve_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_index_array(value, name, fn):
    """Integer ids (token ids, class targets) as a C-contiguous int64 array; TypeError unless integers."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: {name} must be an integer array, got {type(value).__name__}") from None
    if array.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must be an integer array, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        pos = np.unravel_index(int(np.argmax(array)), array.shape)
        raise ValueError(f"{fn}: {name} value {int(array[pos])} at position {list(pos)} does not fit in int64")
    return np.asarray(array, dtype=np.int64, order="C")  # (ascontiguousarray would make a 0-d array 1-d)


def check_int(value, name, fn, minimum=1):
    """`value` as an int >= minimum (TypeError for a non-integer, ValueError below the minimum)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_probability(value, name, fn, allow_one=False):
    """A dropout probability in [0, 1) (or [0, 1] with allow_one)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
    ok = ok and 0.0 <= value and (value <= 1.0 if allow_one else value < 1.0)
    if not ok:
        raise ValueError(f"{fn}: {name} must be a number in [0, {'1]' if allow_one else '1)'}, got {value!r}")
    return float(value)
