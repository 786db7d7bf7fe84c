"""Inputs that fail the fuzz property on today's build, each with its issue.

Every key names one narrow test in test_fuzz_known.py (marked xfail(strict=True) while the key is
here) and, where the broad strategies could stumble on the same input, the region they leave out
while it is here. When a fix lands, its narrow test XPASSes (a strict xfail then fails the run):
delete the key here, and both the mark and the exclusion go.
"""
import os

import pytest

KNOWN = {
    "decoder_pybind": "new: sampling.Decoder's methods do not check their arguments: prime([[1, 2]]) raises "
                      "AttributeError, seed(-1), sample('x'), step_logits(1) give pybind11 'incompatible function "
                      "arguments' dumps (they go straight to _core)",
    "optim_state_scalar": "new: Optimizer.load_state_dict accepts a number where a state array belongs "
                          "(exp_avg=0.0, sum=0.0, ...); the next step() raises AttributeError",
    "num_layers_huge": "new: nn.LSTM/GRU/RNN(num_layers=2**31) (and the models' num_layers) build layer after "
                       "layer until memory runs out (9 s to fill the harness's 4 GiB; without a limit, the "
                       "machine's memory): nothing refuses an absurd count up front",
    "int64_args": "new: integers outside int64 pass the Python checks (sampling.generate's top_k and "
                  "max_new_tokens, beam_search's beam_width, the losses' ignore_index, an optimizer state's "
                  "step, ...) and come back as pybind11 dumps",
    "core_token_list": "new: _core.LMDecoder.sample/beam_search(stop_tokens=[x]) with x not an int64 (2**63, "
                       "'a', 1.5, None) raise RuntimeError 'Unable to cast Python instance...' (py::cast in "
                       "bind_generate.cpp token_list)",
    "loss_overflow": "new: cross_entropy whose positions are finite but whose weighted sum overflows (logits 1e300, "
                     "mask 1e300) returns loss = inf instead of raising FloatingPointError",
    "deep_list_arg": "new (minor): a deeply nested list where a scalar belongs raises RecursionError: dtype= "
                     "(numpy's np.dtype in resolve_dtype), BucketIterator(num_buckets=) (the {value!r} of "
                     "data/batching.py:17's own message)",
}


# Failures only the sanitizer build sees (tests/fuzz/sanitize.sh): known (xfail, excluded) there only.
SANITIZER_KNOWN = {
    "ubsan_memcpy_h0": "new (UBSan): csrc/recurrent/recurrent.cpp:25 copy_row passes a null source to memcpy "
                       "when H = 0 (_core.recurrent_forward with w_hh of shape (0, 0))",
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
SLOW = {"num_layers_huge"}

# RNNCORE_FUZZ_KNOWN=none makes the broad strategies include every known region, =slow every one
# but the SLOW ones (long_run.py's default); unset, they leave them all out. The xfail marks stay.
_MODE = os.environ.get("RNNCORE_FUZZ_KNOWN", "")
_EXCLUDED = {} if _MODE == "none" else {k: v for k, v in _active().items() if k in SLOW} if _MODE == "slow" \
    else _active()


def is_known(key):
    """True while the broad strategies must leave out (or tolerate) the inputs of `key`."""
    return key in _EXCLUDED
