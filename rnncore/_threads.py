"""Thread count used by the kernels: resolved from an explicit value, never set at import.

``None`` means ``OMP_NUM_THREADS`` when it is set to a positive integer, else the number of
CPUs this process may run on. A negative count counts back from that maximum (-1 = all).
0 is an error.
"""
import numbers
import os

_default = None  # set only by set_num_threads(); None = resolve from the environment


def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _environment_default():
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
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
    return threads


def set_num_threads(n):
    """Set the default number of threads the kernels use (None restores the environment default)."""
    global _default
    _default = None if n is None else resolve_threads(n, "set_num_threads: n")


def get_num_threads():
    """The number of threads the kernels use when a call does not say."""
    return resolve_threads(None)
