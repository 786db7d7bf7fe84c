"""Input checks and the one explicit conversion at the Python edge.

Every public entry point converts its arrays here exactly once (to the module's dtype,
C-contiguous) and reports bad input as TypeError/ValueError naming the argument, what was
expected and what came. The compiled core then accepts nothing but exact arrays.
"""
import math
import numbers
import os
import reprlib

import numpy as np


class NoForwardError(ValueError, RuntimeError):
    """backward() was called with no forward to differentiate."""


def no_forward(fn, call="forward()", rule="each forward can be differentiated once"):
    """The NoForwardError of `fn`: what to call first, and the rule that was broken."""
    return NoForwardError(f"{fn}: no forward to differentiate: call {call} first ({rule})")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


def bounded_repr(value):
    """repr(value) for an error message, bounded in length and depth: a 3000-deep nested list
    (or a huge one) must not turn a TypeError into a RecursionError or a megabyte of text."""
    try:
        return _REPR.repr(value)
    except Exception:  # a __repr__ that fails (or recurses) is no reason to lose the real error
        return f"<{type(value).__name__} object>"


def shape_str(shape):
    shape = tuple(shape)
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def as_real_array(value, name, fn, dtype):
    """`value` as a C-contiguous array of `dtype`; TypeError unless it holds real numbers."""
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous and value.flags.aligned:
        return value  # already what the kernels take: the per-call fast path (no np.require)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{fn}: {name} must be a real numeric array, got {type(value).__name__} ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{fn}: {name} must be a real numeric array (float or int), got dtype {array.dtype}")
    # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it (1,)); "A" copies a view
    # at an address misaligned for its dtype, which the kernels refuse.
    return np.require(array, dtype=dtype, requirements="CA")


def _fresh_from(source):
    """True when np.asarray(source) necessarily builds a new array: Python lists, tuples and
    scalars hold no buffer an array could share."""
    return isinstance(source, (list, tuple, numbers.Number))


def private_copy(array, source):
    """`array`, copied if it may share memory with the caller's `source`, whatever `source` is.

    A layer that saves its input for backward must not see the caller change it in between.
    `array` is what the layer made of `source` (converted, reshaped, transposed); it is copied
    when it may still be a view of memory the caller owns: a numpy array, or anything numpy
    converts without copying (a memoryview or other buffer, a torch tensor, an object whose
    __array__ returns its own storage). A copy the conversion already made is not copied again.
    """
    if _fresh_from(source) or array.size == 0:
        return array
    if isinstance(source, np.ndarray):
        shared = np.may_share_memory(array, source)
    else:
        try:  # the zero-copy view numpy takes of a buffer, tensor or __array__ object
            shared = np.may_share_memory(array, np.asarray(source))
        except Exception:  # cannot tell: be safe
            shared = True
    return array.copy() if shared else array


def as_lengths(value, batch, steps, fn):
    """Per-sequence lengths as int64 (B,), each in [0, T]."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: lengths must be a 1-D array of integers, got {type(value).__name__}") from None
    if array.dtype.kind not in "iu" and array.size == 0 and isinstance(value, (list, tuple)):
        array = np.zeros(array.shape, np.int64)  # [] is an empty list of ints, not float64 values
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


def check_parameters(fn, dtype, grads, expected):
    """Raise ValueError unless each (name, Parameter or None, shape, letters) of `expected` holds
    an array of that shape and `dtype` (and, with grads, a gradient of that shape)."""
    for name, p, shape, letters in expected:
        if p is None:
            continue
        data = p.data
        if not isinstance(data, np.ndarray) or tuple(data.shape) != tuple(shape):
            got = shape_str(data.shape) if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"{fn}: parameter {name} must have shape {letters} = {shape_str(shape)}, got {got}")
        if data.dtype != dtype:
            raise TypeError(f"{fn}: parameter {name} must be {dtype} like the layer, got {data.dtype} "
                            "(use .to(dtype) to convert a whole model)")
        if grads and (not isinstance(p.grad, np.ndarray) or tuple(p.grad.shape) != tuple(shape)):
            got = shape_str(p.grad.shape) if isinstance(p.grad, np.ndarray) else type(p.grad).__name__
            raise ValueError(f"{fn}: the gradient of parameter {name} must have shape {shape_str(shape)}, got {got}")


def as_dtype(value, name, fn):
    """np.dtype(value), or TypeError naming `name` (numpy's own errors for, say, a deeply nested list
    are a RecursionError; structured dtypes, given as lists, tuples or dicts, are refused)."""
    try:
        if isinstance(value, (list, tuple, dict)):
            raise TypeError
        return np.dtype(value)
    except (TypeError, ValueError, RecursionError):
        raise TypeError(f"{fn}: {name} must be a numpy dtype (or its name), got {bounded_repr(value)}") from None


def resolve_dtype(dtype, fn=None):
    """float32 or float64 as a numpy dtype; None means float32 (PyTorch's default, not numpy's
    float64). TypeError naming dtype for anything else."""
    where = f"{fn}: " if fn else ""
    if dtype is None:
        return np.dtype(np.float32)
    try:
        if isinstance(dtype, (list, tuple, dict)):  # structured dtypes (and a deep list numpy would recurse into)
            raise TypeError
        dt = np.dtype(dtype)
    except (TypeError, ValueError, RecursionError):
        raise TypeError(f"{where}dtype must be float32 or float64, got {bounded_repr(dtype)} "
                        "(None means float32)") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{where}dtype must be float32 or float64, got {dt} (None means float32)")
    return dt


_PRECISION_ALIASES = {None: "fp32", "fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}


def resolve_precision(precision, fn):
    """'fp32' or 'bf16' (also 'float32', 'bfloat16'; None means 'fp32'): the compute precision of
    the layers with a bfloat16 mixed-precision path. ValueError naming precision otherwise."""
    key = precision.lower() if isinstance(precision, str) else precision
    try:
        return _PRECISION_ALIASES[key]
    except (KeyError, TypeError):
        raise ValueError(f"{fn}: precision must be 'fp32' or 'bf16' (also 'float32', 'bfloat16'), "
                         f"got {bounded_repr(precision)}") from None


def check_bf16_dtype(dtype, fn):
    """bf16 mixed precision keeps float32 master weights: TypeError for any other dtype."""
    if dtype != np.float32:
        raise TypeError(f"{fn}: precision='bf16' needs float32 parameters (the float32 master copy; "
                        f"bf16 is the compute), got {np.dtype(dtype).name}")


def as_index_array(value, name, fn):
    """Integer ids (token ids, class targets) as a C-contiguous int64 array; TypeError unless integers."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: {name} must be an integer array, got {type(value).__name__}") from None
    if array.dtype.kind not in "iu" and array.size == 0 and isinstance(value, (list, tuple)):
        array = np.zeros(array.shape, np.int64)  # [] is an empty list of ids, not float64 values
    if array.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must be an integer array, got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        pos = np.unravel_index(int(np.argmax(array)), array.shape)
        raise ValueError(f"{fn}: {name} value {int(array[pos])} at position {list(pos)} does not fit in int64")
    # (ascontiguousarray would make a 0-d array 1-d; "A" copies a misaligned view)
    return np.require(array, dtype=np.int64, requirements="CA")


# -- scalar arguments ----------------------------------------------------------------------------
#
# One rule for every scalar argument of the Python API: a value of the wrong kind (2.5 or True
# where an int is expected, a string where a number is) is a TypeError naming the argument; a
# value of the right kind outside its range (0 layers, dropout 1.5) is a ValueError naming it.
# Both messages say what was expected and what came.

def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def check_int(value, name, fn, minimum=1, maximum=None, *, optional=False, int64=True):
    """`value` as an int in [minimum, maximum]; None passes with optional.

    A bound left as None is int64's (every integer reaches the compiled core as an int64, so
    2**63 is refused here, naming the argument, rather than as a pybind11 dump later); an
    explicit bound past int64 (a uint64 seed) is honoured, and int64=False drops the bound for
    an int that stays in Python (a numpy seed of any size).
    TypeError unless an integer (bool is not one), ValueError outside the range.
    """
    if value is None and optional:
        return None
    if not _is_int(value):
        expected = "an int or None" if optional else "an int"
        raise TypeError(f"{fn}: {name} must be {expected}, got {type(value).__name__} {bounded_repr(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is not None:
            wanted = f"in [{minimum}, {maximum}]" if minimum is not None else f"<= {maximum}"
        else:
            wanted = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{fn}: {name} must be {wanted}, got {value}")
    lo = INT64_MIN if minimum is None else min(minimum, INT64_MIN)
    hi = INT64_MAX if maximum is None else max(maximum, INT64_MAX)
    if int64 and (value < lo or value > hi):
        low = "-2**63" if minimum is None or minimum <= INT64_MIN else str(minimum)
        high = "2**63 - 1" if maximum is None or maximum >= INT64_MAX else str(maximum)
        raise ValueError(f"{fn}: {name} must be in [{low}, {high}] (an int64), got {value}")
    return value


# A stack deeper than this is refused up front: the deepest recurrent stacks trained in practice
# have tens of layers, and building 2**31 of them (each a few Python objects, even when tiny)
# would run for minutes, then out of memory.
MAX_LAYERS = 1024


def check_num_layers(value, fn):
    """num_layers as an int in [1, MAX_LAYERS]; TypeError/ValueError naming it otherwise."""
    value = check_int(value, "num_layers", fn)
    if value > MAX_LAYERS:
        raise ValueError(f"{fn}: num_layers must be in [1, {MAX_LAYERS}] (rnncore refuses deeper stacks up front), "
                         f"got {value}")
    return value


def physical_memory():
    """The machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_allocation(nbytes, what, fn):
    """MemoryError, before anything is allocated, when `what` would take more than the machine's
    physical memory (rather than filling it array by array)."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise MemoryError(f"{fn}: {what} would take {nbytes / 2**30:.3g} GiB, more than this machine's "
                          f"{total / 2**30:.3g} GiB of memory")


def check_seed(seed, fn, name="seed", objects=True):
    """A seed as numpy's Generators take it: None (fresh entropy), a non-negative int, a
    sequence of them, or (with objects) a SeedSequence, BitGenerator or Generator. Errors name
    the argument (numpy's own say "expected non-negative integer" and nothing else)."""
    if seed is None:
        return seed
    if isinstance(seed, (np.random.SeedSequence, np.random.BitGenerator, np.random.Generator)):
        if objects:
            return seed
        raise TypeError(f"{fn}: {name} must be a non-negative int, a sequence of them or None, "
                        f"got {type(seed).__name__}")
    if isinstance(seed, bool) or (isinstance(seed, numbers.Number) and not _is_int(seed)):
        raise TypeError(f"{fn}: {name} must be a non-negative int or None, got {type(seed).__name__} "
                        f"{bounded_repr(seed)}")
    if _is_int(seed):
        if seed < 0:
            raise ValueError(f"{fn}: {name} must be a non-negative int or None, got {int(seed)}")
        return int(seed)
    try:
        np.random.SeedSequence(seed)
    except (TypeError, ValueError) as exc:
        raise (ValueError if isinstance(exc, ValueError) else TypeError)(
            f"{fn}: {name} must be a non-negative int, a sequence of them, a SeedSequence or None, "
            f"got {type(seed).__name__} ({exc})") from None
    return seed


def _interval(at_least, above, at_most, below):
    lo = f"[{at_least:g}" if at_least is not None else (f"({above:g}" if above is not None else None)
    hi = f"{at_most:g}]" if at_most is not None else (f"{below:g})" if below is not None else None)
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    if hi:
        return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
    return ""


def check_real(value, name, fn, *, at_least=None, above=None, at_most=None, below=None, finite=False,
               optional=False):
    """`value` as a float in the range the bounds give (at_least <= v, above < v, v <= at_most,
    v < below); finite refuses inf; None passes with optional.

    TypeError unless a real number (bool is not one), ValueError outside the range (NaN always is).
    """
    if value is None and optional:
        return None
    interval = _interval(at_least, above, at_most, below)
    wanted = ("a finite number" if finite else "a number" if interval else "a real number") + \
        (" " + interval if interval else "")
    if not _is_real(value):
        raise TypeError(f"{fn}: {name} must be {wanted}, got {type(value).__name__} {bounded_repr(value)}")
    v = float(value)
    ok = not math.isnan(v) and not (finite and math.isinf(v))
    ok = ok and (at_least is None or v >= at_least) and (above is None or v > above)
    ok = ok and (at_most is None or v <= at_most) and (below is None or v < below)
    if not ok:
        raise ValueError(f"{fn}: {name} must be {wanted}, got {bounded_repr(value)}")
    return v


def check_probability(value, name, fn, allow_one=False):
    """A probability (dropout, ...) in [0, 1), or [0, 1] with allow_one."""
    if allow_one:
        return check_real(value, name, fn, at_least=0.0, at_most=1.0)
    return check_real(value, name, fn, at_least=0.0, below=1.0)


# -- cell names ----------------------------------------------------------------------------------

# The recurrent cells the engine runs, under the canonical names rnncore._core takes, with the
# number G of gate blocks in their weights.
CELL_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
CELLS = tuple(CELL_GATES)


def cell_name(value, fn, allowed=CELLS, name="cell"):
    """A cell name in its canonical lower case, whatever case it came in ('LSTM', 'Gru' and
    'RNN_TANH' are what PyTorch and Keras users type); ValueError listing `allowed` otherwise."""
    canonical = value.lower() if isinstance(value, str) else None
    if canonical not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, allowed))} (in any case), "
                         f"got {bounded_repr(value)}")
    return canonical
