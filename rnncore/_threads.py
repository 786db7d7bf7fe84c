"""Thread count used by the kernels: resolved from an explicit value, never set at import.

``None`` means ``OMP_NUM_THREADS`` when it is set to a positive integer, else the number of
CPUs this process may run on. A negative count counts back from that maximum (-1 = all).
0 is an error, and so is a count above ``MAX_THREADS`` = max(256, 4 x processors), the
compiled core's limit (far more threads than processors only wait for each other, and
OpenMP itself fails in the tens of thousands), whether it comes from an argument, from
set_num_threads() or from OMP_NUM_THREADS.
"""
import functools
import numbers
import os
from threading import get_ident

from . import _core

MAX_THREADS = _core.thread_limit()

_default = None  # set only by set_num_threads(); None = resolve from the environment


def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _environment_default():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        if int(value) > MAX_THREADS:
            raise ValueError(f"OMP_NUM_THREADS={value} is above rnncore's thread limit {MAX_THREADS} "
                             "(max(256, 4 x processors)): set it lower, or pass threads= explicitly")
        return int(value)
    return _available_cpus()


def resolve_threads(threads=None, name="threads"):
    """Turn a user's thread request into a count >= 1 (see the module docstring)."""
    if threads is None:
        return _default if _default is not None else _environment_default()
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(threads).__name__}")
    threads = int(threads)
    if threads == 0:
        raise ValueError(f"{name} must be a positive count, a negative count back from the maximum, or None; got 0")
    if threads < 0:
        return max(1, _available_cpus() + 1 + threads)
    if threads > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS} (rnncore's thread limit, max(256, 4 x processors)), "
                         f"got {threads}")
    return threads


def set_num_threads(n):
    """Set the default number of threads the kernels use (None restores the environment default)."""
    global _default
    _default = None if n is None else resolve_threads(n, "set_num_threads: n")


def get_num_threads():
    """The number of threads the kernels use when a call does not say."""
    return resolve_threads(None)


_BUSY = "_rnncore_running"  # key in an object's __dict__ while one of its calls runs


def acquire(obj, fn):
    """Mark `obj` (a layer, a cell, a model) as running a call; returns the token for release().

    One call at a time on an object that keeps per-call state (its saved forward, its
    workspaces): a second thread arriving while the first is inside raises RuntimeError at
    once instead of mixing the two calls' buffers (which gave wrong numbers, not errors).
    Nothing ever waits: share a model between threads with your own lock, or use one model per
    thread. Use as ``busy = acquire(self, fn)`` then ``try: ... finally: release(busy)``.

    A call the same thread makes while inside another call on the same object (a model's
    loss() runs its forward()) is part of the outer call: it gets a token that releases
    nothing, so the mark stays until the outermost call ends.

    The mark is a key in the object's ``__dict__``, set with ``dict.setdefault`` (one atomic
    step under the GIL) and removed by release(), so the object stays picklable and copyable.
    """
    state = obj.__dict__
    me = get_ident()
    if state.get(_BUSY) == me:
        return None  # a nested call of the thread that holds the mark: part of the outer call
    if state.setdefault(_BUSY, me) != me:
        raise _busy(obj, fn)
    return state


def _busy(obj, fn):
    return RuntimeError(f"{fn}: this {type(obj).__name__} is already running in another thread; "
                        "use one model per thread or a lock")


def release(token):
    """End the call acquire() began (a nested call's None token releases nothing)."""
    if token is not None:
        token.pop(_BUSY, None)


def exclusive(method):
    """Decorate a method that reads or writes the object's per-call state (what a forward saves
    for its backward): the method runs under acquire()/release() on its object."""
    name = method.__name__

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        state = self.__dict__
        me = get_ident()
        if state.get(_BUSY) == me:  # nested: acquire()'s rules, inlined (this runs on every layer call)
            return method(self, *args, **kwargs)
        if state.setdefault(_BUSY, me) != me:
            raise _busy(self, f"{type(self).__name__}.{name}")
        try:
            return method(self, *args, **kwargs)
        finally:
            state.pop(_BUSY, None)

    return guarded
