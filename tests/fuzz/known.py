"""Inputs that fail the fuzz property on today's build, each with its issue.

Every key names one narrow test in test_fuzz_known.py (marked xfail(strict=True) while the key is
here) and, where the broad strategies could stumble on the same input, the region they leave out
while it is here. When a fix lands, its narrow test XPASSes (a strict xfail then fails the run):
delete the key here, and both the mark and the exclusion go.
"""
import os

import pytest

KNOWN = {
    # (empty: every failure found so far is fixed; a new one goes here with its narrow test)
}


# Failures only the sanitizer build sees (tests/fuzz/sanitize.sh): known (xfail, excluded) there only.
SANITIZER_KNOWN = {
}


def under_asan():
    """True in a process with AddressSanitizer preloaded (tests/fuzz/sanitize.sh)."""
    return "libasan" in os.environ.get("LD_PRELOAD", "")


def _active():
    return dict(KNOWN, **SANITIZER_KNOWN) if under_asan() else KNOWN


# Without an address-space limit (none is possible under ASan) a worker asked for 100000 threads
# really starts them, and this machine has 32768 pids for everyone: such inputs are left out there.
MANY_THREADS_OK = not under_asan()


def known(key):
    """Decorator: pytest.mark.xfail(strict=True, reason=KNOWN[key]) while `key` is known to fail."""
    def mark(fn):
        active = _active()
        if key in active:
            return pytest.mark.xfail(strict=True, reason=active[key])(fn)
        return fn
    return mark


def many_threads(fn):
    """Skip a test that starts thousands of threads where no address-space limit contains them."""
    return pytest.mark.skipif(not MANY_THREADS_OK, reason="starts thousands of threads; no RLIMIT_AS under ASan")(fn)


# Known failures that cost a timeout (or many seconds) each time a broad strategy meets them.
SLOW = set()  # (num_layers_huge was one, until nn.LSTM refused an absurd num_layers up front)

# RNNCORE_FUZZ_KNOWN=none makes the broad strategies include every known region, =slow every one
# but the SLOW ones (long_run.py's default); unset, they leave them all out. The xfail marks stay.
_MODE = os.environ.get("RNNCORE_FUZZ_KNOWN", "")
_EXCLUDED = {} if _MODE == "none" else {k: v for k, v in _active().items() if k in SLOW} if _MODE == "slow" \
    else _active()


def is_known(key):
    """True while the broad strategies must leave out (or tolerate) the inputs of `key`."""
    return key in _EXCLUDED
