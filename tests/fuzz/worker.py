"""The worker side of the pool: runs calls one by one and says how each ended.

A call ends in one of:
  ok          it returned (and the cheap checks of its result passed)
  raised      it raised an exception the contract allows: TypeError, ValueError (so also
              CheckpointError, NoForwardError), IndexError, OverflowError, FloatingPointError;
              MemoryError only when the call asks for a huge size; plus what the call's own
              ``allow`` lists (e.g. KeyError for Module.load_state_dict)
  unexpected  anything else: another exception (RuntimeError, SystemError, RecursionError,
              KeyError...), a pybind11 "incompatible function arguments" dump from a public
              entry point, an empty message, a failed result check, a canary overwritten
              (out-of-bounds write), or a sanitizer report on stderr
The parent sees the other two endings itself: crash (the worker died) and hang (timeout).
"""
import os
import sys
import time
import traceback
import warnings

import numpy as np

import rnncore
from fuzz import scenarios
from fuzz.specs import check_guards, materialize, reset_guards

ALLOWED = (TypeError, ValueError, IndexError, OverflowError, FloatingPointError)
PYBIND_DUMP = ("incompatible function arguments", "incompatible constructor arguments")
SANITIZER_MARKS = ("runtime error:", "AddressSanitizer", "UndefinedBehaviorSanitizer", "LeakSanitizer")


def resolve(path):
    """The function a call's dotted path names (rnncore.* or fuzz.scenarios.*)."""
    module, _, rest = path.partition(".")
    if module == "rnncore":
        obj = rnncore
    elif module == "fuzz" and rest.startswith("scenarios."):
        obj, rest = scenarios, rest[len("scenarios."):]
    else:
        raise ValueError(f"fuzz: a call must name rnncore.* or fuzz.scenarios.*, got {path!r}")
    for part in rest.split("."):
        obj = getattr(obj, part)
    return obj


def _first_line(text, limit=400):
    text = str(text)
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit] + (" ..." if len(line) > limit or "\n" in text.strip() else "")


def classify(exc, call):
    """'raised' when the contract allows `exc` for this call, else 'unexpected' with a reason."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, scenarios.CheckFailed):
        return "unexpected", "result check failed"
    if isinstance(exc, MemoryError):
        # (rnncore's own up-front refusal, _checks.check_allocation, proves the request huge: a size
        # the harness cannot see as one, such as a div_value of 1e-5, may make it so)
        if call.huge or "MemoryError" in call.allow or "more than this machine's" in str(exc):
            return "raised", None
        return "unexpected", "MemoryError for a call that asks for nothing huge"
    if names & set(call.allow) or isinstance(exc, ALLOWED):
        message = str(exc)
        if call.public and isinstance(exc, TypeError) and any(m in message for m in PYBIND_DUMP):
            return "unexpected", "pybind11 argument dump from a public entry point (the Python layer should check)"
        if call.public and not message.strip():
            return "unexpected", f"{type(exc).__name__} with an empty message"
        return "raised", None
    return "unexpected", f"{type(exc).__name__} is not an exception the contract allows"


def execute(call, log_fd=2):
    """Run one call; returns a dict: status, exc, message, detail, seconds."""
    reset_guards()
    start_err = os.fstat(log_fd).st_size
    out = {"status": "ok", "exc": None, "message": "", "detail": "", "seconds": 0.0}
    try:
        fn = resolve(call.fn)
        args = materialize(call.args, "args")
        kwargs = {k: materialize(v, k) for k, v in call.kwargs.items()}
    except Exception as exc:  # a harness bug: say so loudly
        out.update(status="unexpected", exc=type(exc).__name__, message="fuzz harness: cannot build the call: "
                   + _first_line(exc), detail=traceback.format_exc(limit=6))
        return out
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                result = fn(*args, **kwargs)
                check = scenarios.CHECKS.get(call.fn)
                if check is not None:
                    check(result, call, args, kwargs)
    except BaseException as exc:  # noqa: B902 - KeyboardInterrupt and SystemExit are findings too
        status, reason = classify(exc, call)
        out.update(status=status, exc=type(exc).__name__, message=_first_line(exc))
        if status == "unexpected":
            out["detail"] = reason + "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__,
                                                                               limit=-8))
    finally:
        out["seconds"] = time.perf_counter() - t0
        result = args = kwargs = None
    bad = check_guards()
    if bad:
        out.update(status="unexpected", exc=out["exc"] or "-", message=f"out-of-bounds write: the canaries "
                   f"around {', '.join(bad)} changed", detail="")
    rnncore.set_num_threads(None)
    reset_guards()
    end_err = os.fstat(log_fd).st_size
    if end_err > start_err:
        text = os.pread(log_fd, min(end_err - start_err, 8000), start_err).decode("utf-8", "replace") \
            if hasattr(os, "pread") and log_fd != 2 else ""
        if any(m in text for m in SANITIZER_MARKS):
            out.update(status="unexpected", message="sanitizer report: " + _first_line(text), detail=text)
    return out


def serve(conn, log_path, rlimit_as):
    """The worker's loop: receive a Call, send back its outcome, until None arrives."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    read_fd = os.open(log_path, os.O_RDONLY)
    if rlimit_as:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    conn.send("ready")
    while True:
        try:
            call = conn.recv()
        except EOFError:
            return
        if call is None:
            return
        conn.send(execute(call, read_fd))
