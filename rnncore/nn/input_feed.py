"""Luong's input-feeding attentional decoder RNN (Luong et al. 2015, section 3.3; OpenNMT-py's
InputFeedRNNDecoder), the whole loop in C++: one call for the forward, one for BPTT.

Shape letters: T target steps, B batch, E input_size, H hidden_size, L num_layers, S source
positions, Hm memory width, Ho the attention's output size (its attentional state).
"""
import numpy as np

from .. import _core
from .._checks import (CELL_GATES, as_real_array, cell_name, check_allocation, check_int,
                       check_num_layers, check_parameters, check_probability, check_seed, expect_shape, no_forward,
                       private_copy, resolve_dtype, shape_str)
from .._threads import acquire, release, resolve_threads
from . import init
from .attention import Attention, memory_lengths_array
from .module import Module, Parameter
from .rnn import layer_dropout_mask, warn_layer_dropout


def _aligned(a):
    """`a`, copied when it is a view at an address misaligned for its dtype (the kernels refuse those)."""
    return a if a is None or a.flags.aligned else a.copy()


class InputFeedRNN(Module):
    """Stacked unidirectional RNN/LSTM/GRU whose first layer reads ``[x_t ; attn_h_{t-1}]`` and whose
    top layer's ``h_t`` queries ``attention`` over a memory bank; ``attn_h_t`` is the output at t
    and the next step's feed (Luong's input feeding).

    InputFeedRNN(cell, input_size, hidden_size, attention, num_layers=1, dropout=0.0, *, bias=True,
    dtype=np.float32, seed=None, threads=None)

    cell: 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu' (any case). attention: an
    ``rnncore.nn.Attention`` with ``query_size == hidden_size`` and this layer's dtype,
    registered as the child ``attn`` (its parameters are ``attn.linear_in.weight`` and so on).
    dropout: between stacked layers in training mode, as in PyTorch's RNNs.

    Parameters, PyTorch-named: ``weight_ih_l0`` (G*H, E + Ho) (the x columns first, then the
    feed, as OpenNMT-py concatenates them), ``weight_ih_l{k}`` (G*H, H) for k > 0,
    ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), all
    U(-1/sqrt(H), 1/sqrt(H)).

    forward(x (T, B, E), memory (S, B, Hm), memory_lengths=None, hx=None, feed0=None)
      -> (attn_h (T, B, Ho), alpha (T, B, S), h_n or (h_n, c_n) (L, B, H))
      memory_lengths: (B,) integers in [1, S] (None: all S); alpha is exactly 0 past each length.
      hx: h0 (L, B, H) (LSTM: (h0, c0)), zeros if None; feed0: (B, Ho), zeros if None.
    backward(grad_attn_h, grad_h_n=None) -> (grad_x, grad_memory); adds into every parameter's
      ``.grad`` (the attention's too); sets ``grad_h0`` (LSTM: (dh0, dc0)) and ``grad_feed0``.
      grad_memory is exactly 0 at positions past each memory length.
    """

    def __init__(self, cell, input_size, hidden_size, attention, num_layers=1, dropout=0.0, *, bias=True,
                 dtype=np.float32, seed=None, threads=None):
        super().__init__()
        name = type(self).__name__
        cell = cell_name(cell, name)
        input_size = check_int(input_size, "input_size", name)
        hidden_size = check_int(hidden_size, "hidden_size", name)
        num_layers = check_num_layers(num_layers, name)
        dropout = check_probability(dropout, "dropout", name)
        if not isinstance(attention, Attention):
            raise TypeError(f"{name}: attention must be an rnncore.nn.Attention, got {type(attention).__name__}")
        if attention.query_size != hidden_size:
            raise ValueError(f"{name}: the attention's query_size must equal hidden_size = {hidden_size} (the top "
                             f"layer's h is the query), got {attention.query_size}")
        self.dtype = resolve_dtype(dtype, name)
        if np.dtype(attention.dtype) != self.dtype:
            raise TypeError(f"{name}: attention must have this layer's dtype {self.dtype}, got "
                            f"{np.dtype(attention.dtype)} (use attention.to(dtype))")
        warn_layer_dropout(name, dropout, num_layers)
        self.cell = cell
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.threads = threads
        self._rng = np.random.default_rng(check_seed(seed, name))  # initialisation, then dropout masks
        self.attn = attention
        G, H, L, E, Ho = CELL_GATES[cell], self.hidden_size, self.num_layers, self.input_size, self.feed_size
        if not init.building_skeleton():
            nb = 2 * G * H if self.bias else 0
            count = G * H * (E + Ho + H) + nb + (L - 1) * (2 * G * H * H + nb)
            check_allocation(2 * count * self.dtype.itemsize, f"the parameters (num_layers={L}, "
                             f"hidden_size={H}, input_size={E})", name)
        for layer in range(L):
            in_size = E + Ho if layer == 0 else H
            for pname, array in init.recurrent_parameters(self._rng, G, in_size, H, self.bias, self.dtype):
                self.register_parameter(f"{pname}_l{layer}", Parameter(array))
        self._workspace = None
        self._ctx = None
        self.grad_h0 = None
        self.grad_feed0 = None

    @property
    def feed_size(self):
        """Ho: the width of the attentional state fed back (the attention's output size)."""
        return int(self.attn.output_size)

    def layer_parameters(self, layer):
        """(weight_ih, weight_hh, bias_ih, bias_hh) Parameters of one layer (biases None with bias=False)."""
        fn = f"{type(self).__name__}.layer_parameters"
        layer = check_int(layer, "layer", fn, minimum=0, maximum=self.num_layers - 1)
        p = self._parameters
        s = f"_l{layer}"
        return (p["weight_ih" + s], p["weight_hh" + s], p.get("bias_ih" + s), p.get("bias_hh" + s))

    def _dtype_changed(self):
        self._workspace = None
        self._ctx = None

    def _check_parameters(self, fn, grads=False):
        G, H, E, Ho = CELL_GATES[self.cell], self.hidden_size, self.input_size, self.feed_size
        expected = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_parameters(layer)
            s = f"_l{layer}"
            ih = (G * H, E + Ho) if layer == 0 else (G * H, H)
            expected += [("weight_ih" + s, w_ih, ih, "(G*H, E+Ho)" if layer == 0 else "(G*H, H)"),
                         ("weight_hh" + s, w_hh, (G * H, H), "(G*H, H)"),
                         ("bias_ih" + s, b_ih, (G * H,), "(G*H,)"), ("bias_hh" + s, b_hh, (G * H,), "(G*H,)")]
        check_parameters(fn, self.dtype, grads, expected)

    def _weights(self, grads):
        w_ih, w_hh, b_ih, b_hh = [], [], [], []
        for layer in range(self.num_layers):
            ps = self.layer_parameters(layer)
            vals = [None if p is None else (p.grad if grads else p.data) for p in ps]
            w_ih.append(vals[0])
            w_hh.append(vals[1])
            b_ih.append(vals[2])
            b_hh.append(vals[3])
        return w_ih, w_hh, (b_ih if self.bias else None), (b_hh if self.bias else None)

    def _states(self, hx, fn, B, names=("hx", "h0", "c0")):
        L, H = self.num_layers, self.hidden_size
        if self.cell == "lstm":
            if hx is None:
                return None, None
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{fn}: {names[0]} must be a tuple ({names[1]}, {names[2]}) for an LSTM, "
                                f"got {type(hx).__name__}")
            h, c = hx
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{fn}: {names[0]} must be an array (L, B, H) for a {self.cell} cell, "
                                f"got a {type(hx).__name__}")
            h, c = hx, None
        out = []
        for value, nm in ((h, names[1]), (c, names[2])):
            if value is None:
                out.append(None)
                continue
            a = as_real_array(value, nm, fn, self.dtype)
            out.append(expect_shape(a, (L, B, H), nm, fn, "(L, B, H)"))
        return tuple(out)

    # -- forward / backward -----------------------------------------------------------------
    def forward(self, x, memory, memory_lengths=None, hx=None, feed0=None):
        fn = f"{type(self).__name__}.forward"
        busy = acquire(self, fn)
        try:
            return self._forward(x, memory, memory_lengths, hx, feed0, fn)
        finally:
            release(busy)

    def _forward(self, x, memory, memory_lengths, hx, feed0, fn):
        x_in, memory_in = x, memory
        x = as_real_array(x, "x", fn, self.dtype)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{fn}: x must have shape (T, B, E) = (T, B, {self.input_size}) with T, B >= 1, "
                             f"got {shape_str(x.shape)}")
        T, B, _ = x.shape
        memory = as_real_array(memory, "memory", fn, self.dtype)
        Hm = int(self.attn.memory_size)
        if memory.ndim != 3 or memory.shape[1] != B or memory.shape[2] != Hm or memory.shape[0] < 1:
            raise ValueError(f"{fn}: memory must have shape (S, B, Hm) = (S, {B}, {Hm}) with S >= 1 (B from x), "
                             f"got {shape_str(memory.shape)}")
        S = memory.shape[0]
        lengths = None if memory_lengths is None else memory_lengths_array(memory_lengths, B, S, fn)
        h0, c0 = self._states(hx, fn, B)
        if feed0 is not None:
            feed0 = expect_shape(as_real_array(feed0, "feed0", fn, self.dtype), (B, self.feed_size), "feed0", fn,
                                 "(B, Ho)")
        # saved for backward (in place): the caller may reuse its buffers
        x = _aligned(private_copy(x, x_in))
        memory = _aligned(private_copy(memory, memory_in))
        h0, c0, feed0 = _aligned(h0), _aligned(c0), _aligned(feed0)
        threads = resolve_threads(self.threads)
        self._check_parameters(fn)
        self.attn._check_parameters(fn)
        L, H = self.num_layers, self.hidden_size
        masks = None
        if self.training and self.dropout > 0 and L > 1:
            masks = layer_dropout_mask(self._rng, (L - 1, T, B, H), self.dropout, self.dtype)
        w_ih, w_hh, b_ih, b_hh = self._weights(False)
        attn_h, alpha, h_n, c_n, self._workspace = _core.attn_decoder_forward(
            self.cell, x, memory, lengths, w_ih, w_hh, b_ih, b_hh, self.attn.weights_for_core(), h0, c0, feed0,
            masks, threads, self._workspace)
        self._ctx = {"shape": (T, B, S)}
        return attn_h, alpha, ((h_n, c_n) if self.cell == "lstm" else h_n)

    def backward(self, grad_attn_h, grad_h_n=None):
        """Backpropagate through the last forward (see the class docstring)."""
        fn = f"{type(self).__name__}.backward"
        busy = acquire(self, fn)
        try:
            return self._backward(grad_attn_h, grad_h_n, fn)
        finally:
            release(busy)

    def _backward(self, grad_attn_h, grad_h_n, fn):
        ctx = self._ctx
        if ctx is None:
            raise no_forward(fn)
        T, B, S = ctx["shape"]
        dy = None
        if grad_attn_h is not None:
            dy = expect_shape(as_real_array(grad_attn_h, "grad_attn_h", fn, self.dtype), (T, B, self.feed_size),
                              "grad_attn_h", fn, "(T, B, Ho) like attn_h")
        dh_n, dc_n = self._states(grad_h_n, fn, B, ("grad_h_n", "grad_h_n", "grad_c_n"))
        dy, dh_n, dc_n = _aligned(dy), _aligned(dh_n), _aligned(dc_n)
        threads = resolve_threads(self.threads)
        self._check_parameters(fn, grads=True)
        self.attn._check_parameters(fn)
        self._ctx = None
        w_ih, w_hh, _, _ = self._weights(False)
        dw_ih, dw_hh, db_ih, db_hh = self._weights(True)
        dx, dmemory, dh0, dc0, dfeed0 = _core.attn_decoder_backward(
            self._workspace, dy, w_ih, w_hh, self.attn.weights_for_core(), dw_ih, dw_hh, db_ih, db_hh,
            self.attn.grads_for_core(), dh_n, dc_n, None, threads)
        self.grad_h0 = (dh0, dc0) if self.cell == "lstm" else dh0
        self.grad_feed0 = dfeed0
        return dx, dmemory

    def config(self):
        """Constructor arguments besides the attention: ``InputFeedRNN(**cfg, attention=...)``."""
        return dict(cell=self.cell, input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, dropout=self.dropout, bias=self.bias, dtype=self.dtype.name)

    def extra_repr(self):
        s = f"{self.cell}, {self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if not self.bias:
            s += ", bias=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        return s
