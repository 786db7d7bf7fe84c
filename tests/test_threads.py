"""rnncore.set_num_threads / get_num_threads and the per-layer `threads` override.

None -> OMP_NUM_THREADS when it is a positive integer, else the CPUs this process may use;
a negative count counts back from that maximum (-1 = all, never below 1); 0 -> ValueError;
non-integers -> TypeError. The environment is read when asked, not at import.
"""
import os

import numpy as np
import pytest

import rnncore
from helpers import assert_recurrent_splits, assert_same_bits, backward, forward, make_cell, make_layer


def cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@pytest.fixture(autouse=True)
def default_threads(monkeypatch):
    """No OMP_NUM_THREADS unless a test sets one; the default is restored after each test."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rnncore.set_num_threads(None)
    yield
    rnncore.set_num_threads(None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert rnncore.get_num_threads() == cpus()


def test_default_is_cpu_count():
    assert rnncore.get_num_threads() == cpus()
    assert rnncore.get_num_threads() >= 1


@pytest.mark.parametrize("value,expected", [("3", 3), ("1", 1), ("5,2", 5), (" 4 ", 4)])
def test_default_follows_omp_num_threads(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert rnncore.get_num_threads() == expected


@pytest.mark.parametrize("value", ["", "0", "-2", "abc", "2.5"])
def test_unusable_omp_num_threads_falls_back_to_cpus(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert rnncore.get_num_threads() == cpus()


def test_environment_is_read_when_asked(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert rnncore.get_num_threads() == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert rnncore.get_num_threads() == 2


@pytest.mark.parametrize("n", [1, 2, 3, 17])
def test_set_positive(monkeypatch, n):
    monkeypatch.setenv("OMP_NUM_THREADS", "9")
    rnncore.set_num_threads(n)
    assert rnncore.get_num_threads() == n  # an explicit setting beats the environment
    rnncore.set_num_threads(None)
    assert rnncore.get_num_threads() == 9  # None restores the environment default


def test_set_numpy_integer():
    rnncore.set_num_threads(np.int64(2))
    assert rnncore.get_num_threads() == 2
    assert type(rnncore.get_num_threads()) is int


def test_negative_counts_back_from_the_maximum(monkeypatch):
    n = cpus()
    rnncore.set_num_threads(-1)
    assert rnncore.get_num_threads() == n
    rnncore.set_num_threads(-2)
    assert rnncore.get_num_threads() == max(1, n - 1)
    rnncore.set_num_threads(-(n + 50))
    assert rnncore.get_num_threads() == 1  # never below one
    # The maximum is the CPUs available, not OMP_NUM_THREADS.
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    rnncore.set_num_threads(-1)
    assert rnncore.get_num_threads() == n


def test_zero_is_an_error_and_changes_nothing():
    rnncore.set_num_threads(2)
    with pytest.raises(ValueError, match=r"set_num_threads: n must be a positive count.*got 0"):
        rnncore.set_num_threads(0)
    assert rnncore.get_num_threads() == 2


@pytest.mark.parametrize("bad", [1.5, "2", True, [2]])
def test_non_integer_is_a_type_error(bad):
    rnncore.set_num_threads(3)
    with pytest.raises(TypeError, match=r"set_num_threads: n must be an int or None, got"):
        rnncore.set_num_threads(bad)
    assert rnncore.get_num_threads() == 3


def test_layer_threads_validated_at_call():
    layer = make_layer("gru", 3, 8, seed=0)
    x = np.zeros((4, 2, 3), np.float32)
    layer.threads = 0
    with pytest.raises(ValueError, match=r"\bthreads must be a positive count.*got 0"):
        layer.forward(x)
    layer.threads = 1.5
    with pytest.raises(TypeError, match=r"\bthreads must be an int or None, got float"):
        layer.forward(x)
    layer.threads = -1  # all CPUs
    out, _ = layer.forward(x)
    assert out.shape == (4, 2, 8)


def test_cell_threads_validated_at_call():
    cell = make_cell("lstm", 3, 8, seed=0, threads=0)
    with pytest.raises(ValueError, match=r"\bthreads must be a positive count"):
        cell.forward(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_any_thread_count_gives_the_same_result(kind):
    """Bit for bit: uneven splits and more threads than unit slices (48 units = 6 slices of 8) or than CPUs."""
    rng = np.random.default_rng(0)
    T, B, I, H = 4, 8, 6, 48  # enough work per step for 5 threads
    layer = make_layer(kind, I, H, bidirectional=True, seed=1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, 2 * H)).astype(np.float32)
    lengths = np.array([4, 1, 3, 0, 4, 2, 4, 3])
    results = {}
    for label, layer_threads, default in [("1", 1, None), ("3", 3, None), ("5", 5, None), ("7", 7, None),
                                          ("-1", -1, None), ("global 3", None, 3)]:
        rnncore.set_num_threads(default)
        layer.threads = layer_threads
        layer.zero_grad()
        out, h_n, _ = forward(layer, x, lengths=lengths)
        dx, _, _ = backward(layer, dy)
        results[label] = (out, h_n, dx, layer.weight_hh_l0.grad.copy(), layer.bias_ih_l0_reverse.grad.copy())
    names = ("output", "h_n", "dx", "weight_hh_l0.grad", "bias_ih_l0_reverse.grad")
    for label, res in results.items():
        for name, a, b in zip(names, res, results["1"]):
            assert_same_bits(a, b, f"threads={label}: {name}")
    for threads in (3, 5):  # 6 slices over 3 and over 5 threads
        assert_recurrent_splits(kind, B, H, threads)
    assert 1 < rnncore._core.recurrent_threads(kind, B, H, 7) < 7  # 7 asked, fewer run: at most one per slice


class _RecordingCore:
    """Stands in for rnncore._core inside a module and records the threads each kernel call gets."""

    def __init__(self, core):
        self.core, self.seen = core, []

    def recurrent_forward(self, *args, **kwargs):
        self.seen.append(("forward", args[12]))
        return self.core.recurrent_forward(*args, **kwargs)

    def recurrent_backward(self, *args, **kwargs):
        self.seen.append(("backward", args[13]))
        return self.core.recurrent_backward(*args, **kwargs)


@pytest.mark.parametrize("module", ["rnn", "cell"])
def test_threads_passed_to_the_kernels(monkeypatch, module):
    import importlib

    mod = importlib.import_module(f"rnncore.nn.{module}")
    rec = _RecordingCore(mod._core)
    monkeypatch.setattr(mod, "_core", rec)
    if module == "rnn":
        layer = make_layer("lstm", 3, 8, num_layers=2, bidirectional=True, seed=0)
        x, g = np.zeros((2, 1, 3), np.float32), np.zeros((2, 1, 16), np.float32)
    else:
        layer = make_cell("lstm", 3, 8, seed=0)
        x, g = np.zeros((1, 3), np.float32), np.zeros((1, 8), np.float32)

    def run():
        rec.seen.clear()
        layer.forward(x)
        layer.backward(g)
        return sorted(set(t for _, t in rec.seen)), len(rec.seen)

    assert run() == ([cpus()], 8 if module == "rnn" else 2)  # every call, default = CPUs
    rnncore.set_num_threads(3)
    assert run()[0] == [3]  # threads=None follows the global setting
    layer.threads = 2
    assert run()[0] == [2]  # an explicit per-layer value overrides it
    layer.threads = -1
    assert run()[0] == [cpus()]
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    layer.threads = None
    rnncore.set_num_threads(None)
    assert run()[0] == [5]
