"""Calls as plain data: array recipes (A), odd objects (Junk) and calls (Call).

A generated call must cross a process boundary and print as a reproducer, so it never holds
an array: it holds recipes that build one (dtype, shape, fill, memory layout, seed) in the
worker. ``repr`` of a recipe is the code that builds the same array, so ``Call.code()`` is a
line that reproduces the call (see repro.py for the names it uses).

Layouts: C (contiguous), F (Fortran order), strided (every other element of the last axis),
rowpad (contiguous rows, a row stride longer than the row),
reversed (negative stride on axis 0), transposed, readonly, broadcast (stride 0, read-only;
the only way to make a huge shape without allocating it), unaligned (data one byte off its
natural alignment), guarded (contiguous, with canaries on both sides that a kernel writing
out of bounds overwrites: the worker checks them after every call).
"""
import math

import numpy as np

FLOAT_FILLS = ("normal", "zeros", "ones", "uniform", "nan", "inf", "ninf", "mixed", "huge", "tiny", "negzero")
INT_FILLS = ("range", "extreme", "zeros")
LAYOUTS = ("C", "F", "strided", "rowpad", "reversed", "transposed", "readonly", "broadcast", "unaligned", "guarded")
GUARD = 16  # canary elements on each side of a guarded array
MAX_ELEMENTS = 1 << 24  # a recipe with more elements is built as a broadcast view, whatever its layout

# Guarded arrays built since the last reset: (buffer, n, canary bytes) for the worker to check.
_guards = []


def reset_guards():
    del _guards[:]


def check_guards():
    """Names of the guarded arrays whose canaries changed (written out of bounds)."""
    bad = []
    for buf, n, canary, label in _guards:
        raw = buf.view(np.uint8)
        item = buf.itemsize
        head, tail = raw[:GUARD * item], raw[(GUARD + n) * item:]
        if head.tobytes() != canary[:GUARD * item] or tail.tobytes() != canary[GUARD * item:]:
            bad.append(label)
    return bad


class A:
    """Recipe of a numpy array; ``A(...).build()`` makes it (deterministically, from ``seed``)."""

    __slots__ = ("dtype", "shape", "fill", "layout", "seed", "lo", "hi")
    _defaults = (("fill", None), ("layout", "C"), ("seed", 0), ("lo", None), ("hi", None))

    def __init__(self, dtype="float32", shape=(), fill=None, layout="C", seed=0, lo=None, hi=None):
        self.dtype = str(dtype)
        self.shape = tuple(int(d) for d in shape)
        self.fill = fill
        self.layout = layout
        self.seed = int(seed)
        self.lo = lo
        self.hi = hi

    def replace(self, **changes):
        values = {k: getattr(self, k) for k in self.__slots__}
        values.update(changes)
        return A(**values)

    @property
    def size(self):
        return math.prod(self.shape)

    def max_dim(self):
        return max(self.shape, default=0)

    def __repr__(self):
        parts = [repr(self.dtype), repr(self.shape)]
        for name, default in self._defaults:
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        return "A(" + ", ".join(parts) + ")"

    def __eq__(self, other):
        return isinstance(other, A) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash(repr(self))

    # -- building ---------------------------------------------------------------------------
    def _values(self, n, dtype):
        rng = np.random.default_rng(self.seed)
        kind = dtype.kind
        fill = self.fill
        if kind == "O":
            return np.array([float(v) for v in rng.standard_normal(n)], dtype=object)
        if kind in "US":
            letters = np.array(list("ab\u00e9\u4e2d\n "), dtype=dtype)
            return letters[rng.integers(0, len(letters), n)]
        if kind == "b":
            return rng.integers(0, 2, n).astype(bool)
        if kind in "iu":
            info = np.iinfo(dtype)
            if fill == "extreme":
                choices = np.array([info.min, info.max, 0, -1 if kind == "i" else 1], dtype=dtype)
                return choices[rng.integers(0, len(choices), n)]
            if fill == "zeros":
                return np.zeros(n, dtype)
            lo = 0 if self.lo is None else int(self.lo)
            hi = 10 if self.hi is None else int(self.hi)
            lo = min(max(lo, int(info.min)), int(info.max))
            hi = min(max(hi, int(info.min)), int(info.max))
            if hi <= lo:
                return np.full(n, lo, dtype)
            return rng.integers(lo, hi, n, dtype=np.int64 if kind == "i" else np.uint64, endpoint=False).astype(dtype)
        # float and complex
        real = np.float64
        if fill in (None, "normal"):
            v = rng.standard_normal(n)
        elif fill == "zeros":
            v = np.zeros(n)
        elif fill == "ones":
            v = np.ones(n)
        elif fill == "negzero":
            v = np.full(n, -0.0)
        elif fill in ("uniform", "range"):
            lo = -1.0 if self.lo is None else float(self.lo)
            hi = 1.0 if self.hi is None else float(self.hi)
            v = rng.uniform(lo, hi, n) if hi > lo and math.isfinite(hi - lo) else np.full(n, lo)
        elif fill == "nan":
            v = np.full(n, np.nan)
        elif fill == "inf":
            v = np.full(n, np.inf)
        elif fill == "ninf":
            v = np.full(n, -np.inf)
        elif fill == "mixed":
            v = rng.standard_normal(n)
            k = rng.integers(0, 4, n)
            v[k == 1] = np.nan
            v[k == 2] = np.inf
            v[k == 3] = -np.inf
        elif fill in ("huge", "extreme"):
            big = float(np.finfo(dtype if kind == "f" else np.float64).max) / 2
            v = rng.choice([-big, big], n)
        elif fill == "tiny":
            tiny = float(np.finfo(dtype if kind == "f" else np.float64).smallest_subnormal)
            v = rng.integers(-3, 4, n) * tiny
        else:
            raise ValueError(f"A: unknown fill {fill!r}")
        if kind == "c":
            v = v + 1j * rng.standard_normal(n)
        with np.errstate(all="ignore"):
            return v.astype(real).astype(dtype)

    def build(self, label="array"):
        dtype = np.dtype(self.dtype)
        shape = self.shape
        layout = self.layout
        while math.prod(shape) * dtype.itemsize >= 1 << 62:  # past what numpy can describe: halve the largest
            i = shape.index(max(shape))
            shape = shape[:i] + (shape[i] // 2,) + shape[i + 1:]
        n = math.prod(shape)
        if layout == "broadcast" or n > MAX_ELEMENTS:  # a huge shape can only be a view
            one = self._values(1, dtype).reshape(())
            return np.broadcast_to(one, shape)
        if layout == "strided" and shape:
            big = shape[:-1] + (2 * shape[-1],)
            return self._values(math.prod(big), dtype).reshape(big)[..., ::2]
        if layout == "rowpad" and shape:
            big = shape[:-1] + (shape[-1] + 3,)
            return self._values(math.prod(big), dtype).reshape(big)[..., :shape[-1]]
        if layout == "transposed" and len(shape) >= 2:
            return self._values(n, dtype).reshape(shape[::-1]).T
        if layout == "unaligned" and dtype.itemsize > 1 and dtype.kind != "O":
            raw = np.zeros(n * dtype.itemsize + 1, np.uint8)
            a = raw[1:].view(dtype).reshape(shape)
            a[...] = self._values(n, dtype).reshape(shape)
            return a
        if layout == "guarded" and dtype.kind != "O":
            buf = np.empty(n + 2 * GUARD, dtype)
            canary = np.frombuffer(np.random.default_rng(self.seed ^ 0x5A5A).bytes(buf.nbytes), np.uint8)
            buf.view(np.uint8)[...] = canary
            a = buf[GUARD:GUARD + n]
            a[...] = self._values(n, dtype)
            _guards.append((buf, n, canary.tobytes()[:GUARD * dtype.itemsize] +
                            canary.tobytes()[(GUARD + n) * dtype.itemsize:], label))
            return a.reshape(shape)
        a = self._values(n, dtype).reshape(shape)
        if layout == "F":
            a = np.asfortranarray(a)
        elif layout == "reversed" and shape:
            a = self._values(n, dtype).reshape(shape)[::-1]
        elif layout == "readonly":
            a.setflags(write=False)
        return a


class Junk:
    """An object of a kind no entry point wants: built in the worker, printed as code."""

    KINDS = ("object", "str", "bytes", "list", "nested", "dict", "memoryview", "generator", "set", "slice",
             "deep_list", "complex", "ellipsis", "workspace")

    __slots__ = ("kind",)

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return f"Junk({self.kind!r})"

    def __eq__(self, other):
        return isinstance(other, Junk) and other.kind == self.kind

    def __hash__(self):
        return hash(self.kind)

    def build(self):
        k = self.kind
        if k == "object":
            return object()
        if k == "str":
            return "lstm"
        if k == "bytes":
            return b"\x00\x01"
        if k == "list":
            return [1.0, 2.0, 3.0]
        if k == "nested":
            return [[1, 2], [3]]
        if k == "dict":
            return {"a": 1}
        if k == "memoryview":
            return memoryview(np.arange(6, dtype=np.float32))
        if k == "generator":
            return (i for i in range(3))
        if k == "set":
            return {1, 2}
        if k == "slice":
            return slice(1, 2)
        if k == "deep_list":
            deep = []
            for _ in range(3000):
                deep = [deep]
            return deep
        if k == "complex":
            return 1 + 2j
        if k == "ellipsis":
            return Ellipsis
        if k == "workspace":
            from rnncore import _core

            return _core.RecurrentWorkspace()
        raise ValueError(f"Junk: unknown kind {k!r}")


def materialize(value, label="arg"):
    """`value` with every recipe (A, Junk) replaced by what it builds (lists, tuples and dicts
    are walked; everything else is passed through)."""
    if isinstance(value, A):
        return value.build(label)
    if isinstance(value, Junk):
        return value.build()
    if isinstance(value, tuple):
        return tuple(materialize(v, f"{label}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [materialize(v, f"{label}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: materialize(v, f"{label}[{k!r}]") for k, v in value.items()}
    return value


def walk(value):
    """Every leaf of a value (recipes included), through lists, tuples and dicts."""
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from walk(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    else:
        yield value


# A call may be refused with MemoryError when it holds an array dimension >= HUGE_DIM or an
# integer >= HUGE_INT (a size: 1000 hidden units make a 4000 x 1000 LSTM weight, and two such
# sizes multiply); a call with nothing of the kind must never run out of memory.
HUGE_DIM = 1 << 16
HUGE_INT = 1000


def is_huge(value):
    for leaf in walk(value):
        if isinstance(leaf, A) and leaf.max_dim() >= HUGE_DIM:
            return True
        is_int = isinstance(leaf, (int, np.integer)) and not isinstance(leaf, (bool, np.bool_))
        if is_int and abs(int(leaf)) >= HUGE_INT:
            return True
        if isinstance(leaf, float) and math.isfinite(leaf) and abs(leaf) >= HUGE_INT:
            return True
    return False


def code_repr(value):
    """repr() that is also code for what a call may hold (numpy scalar types print as np.<name>)."""
    if isinstance(value, type):
        if value.__module__ == "numpy":
            return f"np.{value.__name__}"
        return value.__name__
    if isinstance(value, dict):
        return "{" + ", ".join(f"{code_repr(k)}: {code_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(code_repr(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(code_repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _short(fn):
    for prefix, short in (("rnncore._core.", "_core."), ("fuzz.scenarios.", "")):
        if fn.startswith(prefix):
            return short + fn[len(prefix):]
    return fn


class Call:
    """One call: a function (a dotted path into rnncore, or a scenario of fuzz.scenarios), its
    arguments (recipes allowed anywhere inside them), and what outcomes are acceptable.

    public: part of the public API (a pybind11 "incompatible function arguments" dump is then
    a failure: the Python layer should have said what was wrong).
    allow: extra exception class names this entry point documents (e.g. KeyError).
    """

    __slots__ = ("fn", "args", "kwargs", "public", "allow", "tag")

    def __init__(self, fn, args=(), kwargs=None, public=True, allow=(), tag=None):
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.public = bool(public)
        self.allow = tuple(allow)
        self.tag = tag

    @property
    def huge(self):
        return is_huge(self.args) or is_huge(self.kwargs)

    def code(self):
        parts = [code_repr(a) for a in self.args] + [f"{k}={code_repr(v)}" for k, v in self.kwargs.items()]
        return f"{_short(self.fn)}({', '.join(parts)})"

    def __repr__(self):
        return f"Call[{self.code()}]"
