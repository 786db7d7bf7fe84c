"""Shared helpers for the rnncore tests: tolerant comparisons, thread-split checks, layer
factories, loss plumbing."""
import numpy as np
import pytest

import rnncore
from rnncore import _core

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


def assert_close(actual, ref, *, atol, rtol, what="value"):
    """Elementwise |actual - ref| <= atol + rtol * |ref|, with the worst offender in the message.

    Both tolerances are keyword-only and required, so a call says which is which."""
    actual = np.asarray(actual, np.float64)
    ref = np.asarray(ref, np.float64)
    assert actual.shape == ref.shape, f"{what}: shape {actual.shape} != reference shape {ref.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values in the result"
    err = np.abs(actual - ref)
    tol = atol + rtol * np.abs(ref)
    bad = err > tol
    if np.any(bad):
        idx = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} elements differ beyond atol={atol:g} + rtol={rtol:g}*|ref|; "
            f"worst at {tuple(int(i) for i in idx)}: got {actual[idx]!r}, expected {ref[idx]!r} "
            f"(|diff| = {err[idx]:.3e}, tol = {tol[idx]:.3e})")


def assert_recurrent_splits(cell, B, H, threads=2):
    """The time loop of a `cell` layer of batch B and H hidden units runs on `threads` threads.

    A "1 thread == N threads" test calls this for its shape, so that it cannot pass because
    both runs used one thread (shapes below the kernel's cutoff never split)."""
    if not _core.openmp_enabled():
        pytest.skip("built without OpenMP: every thread count runs on one thread")
    used = _core.recurrent_threads(cell, B, H, threads)
    assert used == threads, f"{cell} B={B} H={H}: the time loop runs on {used} thread(s), not {threads}"


def assert_gemm_splits(M, N, K, threads=2):
    """The GEMM (M, N, K) runs on `threads` threads (see assert_recurrent_splits)."""
    if not _core.openmp_enabled():
        pytest.skip("built without OpenMP: every thread count runs on one thread")
    used = _core.gemm_threads(M, N, K, threads)
    assert used == threads, f"gemm M={M} N={N} K={K}: runs on {used} thread(s), not {threads}"


def assert_same_bits(actual, expected, what="value"):
    """Bit-for-bit equality (what is documented as exact), with the first difference in the message."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, \
        f"{what}: {actual.dtype} {actual.shape} != {expected.dtype} {expected.shape}"
    if not np.array_equal(actual, expected):
        diff = actual != expected
        idx = tuple(int(i) for i in np.argwhere(diff)[0])
        raise AssertionError(f"{what}: {int(diff.sum())} of {diff.size} elements differ (not bit-identical); "
                             f"first at {idx}: {actual[idx]!r} != {expected[idx]!r}")


def rel_err(a, b):
    """||a - b|| / max(||a||, ||b||) over whole vectors (0 when both are exactly zero)."""
    a = np.ravel(np.asarray(a, np.float64))
    b = np.ravel(np.asarray(b, np.float64))
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(a - b) / scale)


def make_layer(kind, input_size, hidden_size, num_layers=1, **kwargs):
    """rnncore.nn.RNN/LSTM/GRU for a kernel name ('rnn_tanh', 'rnn_relu', 'lstm', 'gru')."""
    if kind == "lstm":
        return rnncore.nn.LSTM(input_size, hidden_size, num_layers, **kwargs)
    if kind == "gru":
        return rnncore.nn.GRU(input_size, hidden_size, num_layers, **kwargs)
    return rnncore.nn.RNN(input_size, hidden_size, num_layers, nonlinearity=kind[4:], **kwargs)


def make_cell(kind, input_size, hidden_size, **kwargs):
    if kind == "lstm":
        return rnncore.nn.LSTMCell(input_size, hidden_size, **kwargs)
    if kind == "gru":
        return rnncore.nn.GRUCell(input_size, hidden_size, **kwargs)
    return rnncore.nn.RNNCell(input_size, hidden_size, nonlinearity=kind[4:], **kwargs)


def params_of(module):
    """name -> float64 copy of every parameter (PyTorch names)."""
    return {name: np.array(p.data, np.float64) for name, p in module.named_parameters()}


def forward(layer, x, h0=None, c0=None, lengths=None):
    """Run a layer and return (output, h_n, c_n or None) whatever its kind."""
    hx = (h0, c0) if layer.cell == "lstm" and (h0 is not None or c0 is not None) else h0
    out, state = layer.forward(x, hx, lengths=lengths)
    if layer.cell == "lstm":
        return out, state[0], state[1]
    return out, state, None


def backward(layer, dy, dh=None, dc=None):
    """Backward of L = sum(dy*out) + sum(dh*h_n) (+ sum(dc*c_n)); returns (dx, dh0, dc0 or None)."""
    if layer.cell == "lstm":
        g = None if dh is None and dc is None else (dh, dc)
        dx = layer.backward(dy, g)
        dh0, dc0 = layer.grad_h0
        return dx, dh0, dc0
    dx = layer.backward(dy, dh)
    return dx, layer.grad_h0, None


def loss(out, h_n, c_n, dy, dh, dc):
    """L = sum(dy * out) + sum(dh * h_n) (+ sum(dc * c_n)), in float64."""
    total = float(np.sum(np.asarray(dy, np.float64) * out))
    if dh is not None:
        total += float(np.sum(np.asarray(dh, np.float64) * h_n))
    if dc is not None and c_n is not None:
        total += float(np.sum(np.asarray(dc, np.float64) * c_n))
    return total


def random_params(module, rng, scale=0.5):
    """Overwrite every parameter with U(-scale, scale) (wider than the default init)."""
    for _, p in module.named_parameters():
        p.data[...] = rng.uniform(-scale, scale, size=p.shape)
    return module
