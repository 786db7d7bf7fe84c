"""Single-step recurrent layers for users who drive time themselves: RNNCell, LSTMCell, GRUCell,
and their shared base RNNCellBase.

Shapes: x (B, I) or (I,) unbatched; h, c (B, H) or (H,). Parameters as in PyTorch:
weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H,), U(-1/sqrt(H), 1/sqrt(H)).

A step is the sequence kernel with T = 1. In training mode every forward saves its context
on a stack and every backward pops the newest one, so running steps t = 0..T-1 and then
backward for t = T-1..0 is backpropagation through time. In eval mode nothing is saved.

History: a saved step keeps only what its backward reads (the gates and states of B rows,
about (G + 5) * B * H numbers, and the input), never a copy of the weights. It stays until
backward pops it: a long training-mode run without backward grows by that much per step.
``cell.reset_history()`` drops every saved step; ``cell.max_history = k`` keeps only the
newest k (older ones are dropped as new ones come, so backward can go back at most k steps;
None, the default, keeps all).

Threads: a cell runs one call at a time; a forward or backward called while another thread
is inside one on the same cell raises RuntimeError.
"""
from collections import deque

import numpy as np

from .. import _core
from .._checks import (CELL_GATES, as_real_array, bounded_repr, cell_name, check_int, check_parameters, check_seed,
                       expect_shape, no_forward, private_copy, resolve_dtype, shape_str)
from .._threads import acquire, release, resolve_threads
from . import init
from .module import Module, Parameter


class RNNCellBase(Module):
    """One step of a recurrent cell (the base of RNNCell, LSTMCell and GRUCell, as torch.nn.RNNCellBase).

    RNNCellBase(cell, input_size, hidden_size, bias=True, *, dtype, seed, threads), with cell one
    of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu' in any case ('LSTM', as PyTorch writes its modes).

    forward(x, hx=None) -> h' (an LSTM: (h', c') with hx = (h, c));
    backward(grad_h, grad_c=None) -> grad_x, and sets ``grad_hx`` to dL/dh (an LSTM: (dL/dh, dL/dc));
    grad_c is for an LSTM only.
    """

    def __init__(self, cell, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        name = type(self).__name__
        self.cell = cell_name(cell, name)
        self.input_size = check_int(input_size, "input_size", name)
        self.hidden_size = check_int(hidden_size, "hidden_size", name)
        self.bias = bool(bias)
        self.dtype = resolve_dtype(dtype, name)
        self.threads = threads
        rng = np.random.default_rng(check_seed(seed, name))
        for pname, array in init.recurrent_parameters(rng, CELL_GATES[self.cell], self.input_size, self.hidden_size,
                                                      self.bias, self.dtype):
            self.register_parameter(pname, Parameter(array))
        self._stack = deque()  # the saved steps, newest last (a deque: max_history drops from the left)
        self.grad_hx = None

    def _dtype_changed(self):
        self._stack = deque()

    def _check_parameters(self, fn, grads=False):
        G, H = CELL_GATES[self.cell], self.hidden_size
        check_parameters(fn, self.dtype, grads, [
            ("weight_ih", self.weight_ih, (G * H, self.input_size), "(G*H, I)"),
            ("weight_hh", self.weight_hh, (G * H, H), "(G*H, H)"),
            ("bias_ih", self.bias_ih if self.bias else None, (G * H,), "(G*H,)"),
            ("bias_hh", self.bias_hh if self.bias else None, (G * H,), "(G*H,)")])

    @property
    def max_history(self):
        """At most this many training-mode steps are kept for backward (the oldest is dropped
        when a new one comes); None (the default) keeps every step until backward pops it."""
        return self.__dict__.get("_max_history")

    @max_history.setter
    def max_history(self, value):
        if value is not None:
            value = check_int(value, "max_history", f"{type(self).__name__}.max_history", minimum=1)
        self.__dict__["_max_history"] = value
        while value is not None and len(self._stack) > value:
            del self._stack[0]

    def reset_history(self):
        """Drop every saved step (a following backward raises NoForwardError until the next
        training-mode forward). Frees the memory a long run without backward accumulated."""
        busy = acquire(self, f"{type(self).__name__}.reset_history")
        try:
            self._stack.clear()
        finally:
            release(busy)

    @property
    def history_length(self):
        """The number of training-mode steps saved for backward."""
        return len(self._stack)

    def _state(self, value, name, fn, batched, B):
        if value is None:
            return None
        a = as_real_array(value, name, fn, self.dtype)
        if batched:
            expect_shape(a, (B, self.hidden_size), name, fn, "(B, H)")
        else:
            expect_shape(a, (self.hidden_size,), name, fn, "(H,) for unbatched input")
            a = a[None, :]
        return a

    # -- forward / backward -----------------------------------------------------------------
    def forward(self, x, hx=None):
        fn = f"{type(self).__name__}.forward"
        if self.cell != "lstm":
            return self._step(x, hx, None, fn)[0]
        if hx is None:
            h = c = None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h, c = hx
        else:
            raise TypeError(f"{fn}: hx must be a tuple (h, c) or None, got {type(hx).__name__}")
        return self._step(x, h, c, fn)

    def backward(self, grad_h, grad_c=None):
        fn = f"{type(self).__name__}.backward"
        if grad_c is not None and self.cell != "lstm":
            raise TypeError(f"{fn}: grad_c is the gradient of an LSTM's cell state; a {self.cell} cell has none")
        dx, dh, dc = self._back(grad_h, grad_c, fn)
        self.grad_hx = (dh, dc) if self.cell == "lstm" else dh
        return dx

    def _step(self, x, h, c, fn):
        busy = acquire(self, fn)  # one call at a time: the saved steps are per cell
        try:
            return self._step_now(x, h, c, fn)
        finally:
            release(busy)

    def _step_now(self, x, h, c, fn):
        x_in = x
        x = as_real_array(x, "x", fn, self.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"{fn}: x must have rank 2 (B, I) or rank 1 (I,) unbatched, got shape "
                             f"{shape_str(x.shape)}")
        batched = x.ndim == 2
        if not batched:
            x = x[None, :]
        x = private_copy(x, x_in)  # saved for backward: the caller may reuse its buffer
        B, I = x.shape
        if I != self.input_size:
            raise ValueError(f"{fn}: x must have input_size = {self.input_size} features in its last dimension, "
                             f"got shape {shape_str(np.shape(x_in))}")
        h = self._state(h, "hx" if self.cell != "lstm" else "hx[0]", fn, batched, B)
        c = self._state(c, "hx[1]", fn, batched, B)
        self._check_parameters(fn)
        out = np.empty((1, B, self.hidden_size), self.dtype)
        h_new, c_new, ws = _core.recurrent_forward(
            self.cell, x[None], self.weight_ih.data, self.weight_hh.data,
            self.bias_ih.data if self.bias else None, self.bias_hh.data if self.bias else None,
            h, c, None, False, out, 0, resolve_threads(self.threads), None)
        if self.training:
            ws.trim()  # keep what backward reads, not this step's packed copy of W_hh
            self._stack.append((ws, batched, B))
            limit = self.max_history
            if limit is not None and len(self._stack) > limit:
                del self._stack[0]
        if not batched:
            h_new = h_new[0]
            c_new = None if c_new is None else c_new[0]
        return h_new, c_new

    def _back(self, dh, dc, fn):
        busy = acquire(self, fn)
        try:
            return self._back_now(dh, dc, fn)
        finally:
            release(busy)

    def _back_now(self, dh, dc, fn):
        if not self._stack:
            raise no_forward(fn, "forward() (in training mode)",
                             "each forward is differentiated once, newest first")
        ws, batched, B = self._stack[-1]
        dh = self._state(dh, "grad_h", fn, batched, B)
        dc = self._state(dc, "grad_c", fn, batched, B)
        self._check_parameters(fn, grads=True)
        self._stack.pop()
        dx = np.empty((1, B, self.input_size), self.dtype)
        dh0, dc0 = _core.recurrent_backward(
            ws, None, 0, dh, dc, self.weight_ih.data, self.weight_hh.data, self.weight_ih.grad, self.weight_hh.grad,
            self.bias_ih.grad if self.bias else None, self.bias_hh.grad if self.bias else None, dx, False,
            resolve_threads(self.threads))
        dx = dx[0] if batched else dx[0, 0]
        if not batched:
            dh0 = dh0[0]
            dc0 = None if dc0 is None else dc0[0]
        return dx, dh0, dc0

    def config(self):
        """Constructor arguments that rebuild this cell: ``type(self)(**cell.config())``."""
        cfg = dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias, dtype=self.dtype.name)
        if type(self) is RNNCellBase:
            return dict(cell=self.cell, **cfg)
        if self.cell.startswith("rnn_"):
            cfg["nonlinearity"] = self.cell[len("rnn_"):]
        return cfg

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.cell == "rnn_relu":
            s += ", nonlinearity='relu'"
        return s


class RNNCell(RNNCellBase):
    """One Elman RNN step: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu.

    forward(x, hx=None) -> h'; backward(grad_h) -> grad_x, and sets ``grad_hx`` to dL/dh.
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {bounded_repr(nonlinearity)}")
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, bias, **kwargs)
        self.nonlinearity = nonlinearity


class GRUCell(RNNCellBase):
    """One GRU step (PyTorch's r, z, n gates).

    forward(x, hx=None) -> h'; backward(grad_h) -> grad_x, and sets ``grad_hx`` to dL/dh.
    """

    def __init__(self, input_size, hidden_size, bias=True, **kwargs):
        super().__init__("gru", input_size, hidden_size, bias, **kwargs)


class LSTMCell(RNNCellBase):
    """One LSTM step (PyTorch's i, f, g, o gates).

    forward(x, hx=None) -> (h', c') with hx = (h, c); backward(grad_h, grad_c=None) -> grad_x,
    and sets ``grad_hx`` to (dL/dh, dL/dc).
    """

    def __init__(self, input_size, hidden_size, bias=True, **kwargs):
        super().__init__("lstm", input_size, hidden_size, bias, **kwargs)
