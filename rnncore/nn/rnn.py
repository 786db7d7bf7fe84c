"""Recurrent layers with PyTorch's constructor, parameters and shapes: RNN, LSTM, GRU.

Shape letters: T time steps, B batch, I input_size, H hidden_size, L num_layers,
D = 2 if bidirectional else 1; R = proj_size P for an LSTM with projections, else H (the
width of h and of the outputs).

Each layer is one C++ call per (layer, direction) over the whole sequence; the Python code
here only loops over layers and directions, never over time. Stacking feeds a layer's
(T, B, D*H) output (after inter-layer dropout in training mode) to the next; a reverse
direction runs each sequence backwards within its own length.
"""
import numpy as np

from .. import _core
from .._checks import (CELL_GATES, as_lengths, as_real_array, bounded_repr, cell_name, check_allocation,
                       check_bf16_dtype, check_int, check_num_layers, check_parameters, check_probability, check_seed,
                       expect_shape, no_forward, private_copy, resolve_dtype, resolve_precision, shape_str)
from .._threads import acquire, release, resolve_threads
from . import init
from .module import Module, Parameter


def warn_layer_dropout(name, dropout, num_layers, stacklevel=3):
    """PyTorch's warning: dropout acts only between stacked layers, so with one layer it does nothing."""
    if dropout > 0 and num_layers == 1:
        import warnings

        warnings.warn(f"{name}: dropout={dropout} has no effect with num_layers=1 (it acts between layers)",
                      stacklevel=stacklevel)


def layer_dropout_mask(rng, shape, dropout, dtype):
    """An inverted-dropout keep-mask between stacked layers: 0 or 1/(1-dropout), drawn from `rng`."""
    keep = 1.0 - dropout
    return (rng.random(shape) < keep).astype(dtype) / dtype.type(keep)


class RNNBase(Module):
    """Shared implementation of RNN, LSTM and GRU (see their docstrings)."""

    _has_bf16_path = True

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, *, proj_size=0, dtype=np.float32, seed=None, threads=None, precision=None):
        super().__init__()
        name = type(self).__name__
        cell = cell_name(cell, name)
        input_size = check_int(input_size, "input_size", name)
        hidden_size = check_int(hidden_size, "hidden_size", name)
        num_layers = check_num_layers(num_layers, name)
        proj_size = check_int(proj_size, "proj_size", name, minimum=0)
        if proj_size and cell != "lstm":
            raise ValueError(f"{name}: proj_size (projections) is only for LSTM, got proj_size={proj_size} "
                             f"for a {cell} layer")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size must be smaller than hidden_size (as in PyTorch), got "
                             f"proj_size={proj_size}, hidden_size={hidden_size}")
        dropout = check_probability(dropout, "dropout", name)
        warn_layer_dropout(name, dropout, num_layers, stacklevel=4)
        self.cell = cell
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = int(proj_size)
        self.dtype = resolve_dtype(dtype, name)
        self.precision = resolve_precision(precision, name)
        if self.precision == "bf16":
            check_bf16_dtype(self.dtype, name)
        self.threads = threads
        self._rng = np.random.default_rng(check_seed(seed, name))  # initialisation, then dropout masks
        H, D, R = self.hidden_size, self.num_directions, self.state_size
        if not init.building_skeleton():  # each parameter and its gradient, before any is allocated
            G, L, I, P = CELL_GATES[cell], self.num_layers, self.input_size, self.proj_size
            bias = 2 * G * H if self.bias else 0
            count = D * (G * H * (I + R) + P * H + bias + (L - 1) * (G * H * (D * R + R) + P * H + bias))
            check_allocation(2 * count * self.dtype.itemsize, f"the parameters (num_layers={L}, hidden_size={H}, "
                             f"input_size={I})", name)
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else D * R
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                for name, array in init.recurrent_parameters(self._rng, CELL_GATES[cell], in_size, H, self.bias,
                                                             self.dtype, self.proj_size):
                    self.register_parameter(name + sfx, Parameter(array))
        self._workspaces = [None] * (self.num_layers * D)
        self._ctx = None
        self.grad_h0 = None
        # Gradient-flow diagnostics (rnncore.diagnostics): when True, backward also fills
        # grad_norms with ||dL/dh_t|| from the engine's own BPTT sweep.
        self.record_grad_norms = False
        self.grad_norms = None

    # -- helpers ----------------------------------------------------------------------------
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def state_size(self):
        """R: the width of h and of each direction's output (proj_size if set, else hidden_size)."""
        return self.proj_size or self.hidden_size

    def layer_projection(self, layer, direction=0):
        """The weight_hr Parameter (P, H) of one layer and direction, or None without projections."""
        fn = f"{type(self).__name__}.layer_projection"
        layer = check_int(layer, "layer", fn, minimum=0, maximum=self.num_layers - 1)
        direction = check_int(direction, "direction", fn, minimum=0, maximum=self.num_directions - 1)
        if not self.proj_size:
            return None
        return self._parameters["weight_hr" + f"_l{layer}" + ("_reverse" if direction else "")]

    def layer_parameters(self, layer, direction=0):
        """The Parameters of one layer and direction (0 forward, 1 reverse):
        (weight_ih, weight_hh, bias_ih, bias_hh), the biases None when bias=False."""
        fn = f"{type(self).__name__}.layer_parameters"
        layer = check_int(layer, "layer", fn, minimum=0, maximum=self.num_layers - 1)
        direction = check_int(direction, "direction", fn, minimum=0, maximum=self.num_directions - 1)
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        p = self._parameters
        return (p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx), p.get("bias_hh" + sfx))

    def _layer_weights(self, layer, direction):
        """(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) of a valid layer and direction, the
        absent ones None: the per-call lookup of forward (no argument checks)."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        p = self._parameters
        return (p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx), p.get("bias_hh" + sfx),
                p.get("weight_hr" + sfx) if self.proj_size else None)

    def _dtype_changed(self):
        self._workspaces = [None] * (self.num_layers * self.num_directions)
        self._ctx = None

    def _parameter_specs(self):
        """(name, shape, letters) of every parameter this layer's sizes make, computed once."""
        specs = self.__dict__.get("_specs")
        if specs is None:
            G, H, D, P = CELL_GATES[self.cell], self.hidden_size, self.num_directions, self.proj_size
            R, r = self.state_size, "P" if P else "H"
            specs = []
            for layer in range(self.num_layers):
                in_size, letters = (self.input_size, "(G*H, I)") if layer == 0 else (D * R, f"(G*H, D*{r})")
                for direction in range(D):
                    sfx = f"_l{layer}" + ("_reverse" if direction else "")
                    specs += [("weight_ih" + sfx, (G * H, in_size), letters),
                              ("weight_hh" + sfx, (G * H, R), f"(G*H, {r})"),
                              ("bias_ih" + sfx, (G * H,), "(G*H,)"), ("bias_hh" + sfx, (G * H,), "(G*H,)")]
                    if P:
                        specs.append(("weight_hr" + sfx, (P, H), "(P, H)"))
            self.__dict__["_specs"] = specs = tuple(specs)
        return specs

    def _check_parameters(self, fn, grads=False):
        """Every parameter as this layer's sizes make it (a weight replaced through ``.data`` by one
        of another shape is reported by its name and the shape it must have; the kernels could
        only guess H from the wrong array)."""
        params, dtype = self._parameters, self.dtype
        for name, shape, letters in self._parameter_specs():
            p = params.get(name)
            if p is None:
                continue
            data, grad = p.data, p.grad
            if not (type(data) is np.ndarray and data.shape == shape and data.dtype == dtype
                    and (not grads or (type(grad) is np.ndarray and grad.shape == shape))):
                check_parameters(fn, dtype, grads, [(name, p, shape, letters)])  # raises, saying what is wrong

    def _state_arg(self, value, name, fn, batched, B, projected=False):
        """h0 / c0 as (L*D, B, H), or None; projected: an LSTM's h, (L*D, B, P) with projections."""
        if value is None:
            return None
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        h = "H"
        if projected and self.proj_size:
            H, h = self.proj_size, "P"
        a = as_real_array(value, name, fn, self.dtype)
        if batched:
            expect_shape(a, (LD, B, H), name, fn, f"(L*D, B, {h})")
        else:
            expect_shape(a, (LD, H), name, fn, f"(L*D, {h}) for unbatched input")
            a = a[:, None, :]
        return a

    def _split_hx(self, hx, fn, name="hx", parts="(h0, c0)"):
        if self.cell == "lstm":
            if hx is None:
                return None, None
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{fn}: {name} must be a tuple {parts} for an LSTM, got {type(hx).__name__}")
            return hx[0], hx[1]
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{fn}: {name} must be an array (L*D, B, H) for {type(self).__name__}, "
                            f"got a {type(hx).__name__}")
        return hx, None

    # -- forward / backward -----------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None):
        fn = f"{type(self).__name__}.forward"
        busy = acquire(self, fn)  # one call at a time: the workspaces and _ctx are per layer
        try:
            return self._forward(x, hx, lengths, fn)
        finally:
            release(busy)

    def _forward(self, x, hx, lengths, fn):
        x_in = x
        x = as_real_array(x, "x", fn, self.dtype)
        if x.ndim not in (2, 3):
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"{fn}: x must have rank 3 {layout} or rank 2 (T, I) for unbatched input, "
                             f"got shape {shape_str(x.shape)}")
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        x = private_copy(x, x_in)  # saved for backward: the caller may reuse its buffer
        T, B, I = x.shape
        if I != self.input_size:
            raise ValueError(f"{fn}: x must have input_size = {self.input_size} features in its last dimension, "
                             f"got shape {shape_str(np.shape(x_in))}")
        h0, c0 = self._split_hx(hx, fn)
        h0 = self._state_arg(h0, "h0", fn, batched, B, projected=True)
        c0 = self._state_arg(c0, "c0", fn, batched, B)
        if lengths is not None:
            if not batched:
                lengths = np.atleast_1d(np.asarray(lengths))
            lengths = as_lengths(lengths, B, T, fn)
        threads = resolve_threads(self.threads)
        self._check_parameters(fn)
        bf16 = self.precision == "bf16"
        if bf16:
            check_bf16_dtype(self.dtype, fn)

        L, D, H, R = self.num_layers, self.num_directions, self.hidden_size, self.state_size
        h_n = np.empty((L * D, B, R), self.dtype)
        c_n = np.empty((L * D, B, H), self.dtype) if self.cell == "lstm" else None
        layer_input = x
        saved = []
        for layer in range(L):
            out = np.empty((T, B, D * R), self.dtype)
            for d in range(D):
                k = layer * D + d
                w_ih, w_hh, b_ih, b_hh, w_hr = self._layer_weights(layer, d)
                hn, cn, self._workspaces[k] = _core.recurrent_forward(
                    self.cell, layer_input, w_ih.data, w_hh.data,
                    None if b_ih is None else b_ih.data, None if b_hh is None else b_hh.data,
                    None if h0 is None else h0[k], None if c0 is None else c0[k],
                    lengths, bool(d), out, d * R, threads, self._workspaces[k],
                    w_hr=None if w_hr is None else w_hr.data, bf16=bf16)
                h_n[k] = hn
                if c_n is not None:
                    c_n[k] = cn
            mask = None
            if self.training and self.dropout > 0 and layer < L - 1:
                mask = layer_dropout_mask(self._rng, out.shape, self.dropout, self.dtype)
            saved.append(mask)
            layer_input = out if mask is None else out * mask
        self._ctx = {"saved": saved, "batched": batched, "shape": (T, B), "has_h0": h0 is not None,
                     "has_c0": c0 is not None}

        output = layer_input
        if not batched:
            output, h_n = output[:, 0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif self.batch_first:
            output = np.ascontiguousarray(output.transpose(1, 0, 2))
        return output, ((h_n, c_n) if self.cell == "lstm" else h_n)

    def backward(self, grad_output, grad_h_n=None):
        """Backpropagate through the last forward. Adds into every parameter's ``.grad``.

        grad_output: gradient of ``output`` (same shape), or None for zeros.
        grad_h_n: gradient of ``h_n`` (LSTM: a tuple ``(dh_n, dc_n)``, either may be None), or None.
        Returns the gradient of ``x`` (same shape as ``x``) and sets ``self.grad_h0`` to the
        gradient of the initial state (LSTM: a tuple ``(dh0, dc0)``), shaped like ``h_n``.

        With ``self.record_grad_norms = True`` it also sets ``self.grad_norms``, float64
        (L*D, T, B) (unbatched: (L*D, T); time-major even with batch_first): the Euclidean norm
        of dL/dh_t of each layer, direction, step and sequence, h_t being that layer's
        R-wide state at time t (its output there) and dL/dh_t its total gradient (from the
        output at t and from step t+1); 0 where t >= the sequence's length. The engine sums
        the squares during the BPTT sweep it runs anyway (no extra pass); off (the default)
        it costs nothing and ``grad_norms`` is None.
        """
        fn = f"{type(self).__name__}.backward"
        busy = acquire(self, fn)
        try:
            return self._backward(grad_output, grad_h_n, fn)
        finally:
            release(busy)

    def _backward(self, grad_output, grad_h_n, fn):
        ctx = self._ctx
        if ctx is None:
            raise no_forward(fn)
        T, B = ctx["shape"]
        batched = ctx["batched"]
        L, D, H, R = self.num_layers, self.num_directions, self.hidden_size, self.state_size
        r = "P" if self.proj_size else "H"
        if grad_output is not None:
            dy = as_real_array(grad_output, "grad_output", fn, self.dtype)
            if not batched:
                expect_shape(dy, (T, D * R), "grad_output", fn, f"(T, D*{r}) like output")
                dy = dy[:, None, :]
            elif self.batch_first:
                expect_shape(dy, (B, T, D * R), "grad_output", fn, f"(B, T, D*{r}) like output")
                dy = np.ascontiguousarray(dy.transpose(1, 0, 2))
            else:
                expect_shape(dy, (T, B, D * R), "grad_output", fn, f"(T, B, D*{r}) like output")
        else:
            dy = None
        dh_n, dc_n = self._split_hx(grad_h_n, fn, "grad_h_n", "(dh_n, dc_n)")
        dh_n = self._state_arg(dh_n, "grad_h_n", fn, batched, B, projected=True)
        dc_n = self._state_arg(dc_n, "grad_c_n", fn, batched, B)

        threads = resolve_threads(self.threads)
        self._check_parameters(fn, grads=True)
        self._ctx = None
        dh0 = np.empty((L * D, B, R), self.dtype)
        dc0 = np.empty((L * D, B, H), self.dtype) if self.cell == "lstm" else None
        norms = np.zeros((L * D, T, B)) if self.record_grad_norms else None
        self.grad_norms = None
        grad = dy
        for layer in reversed(range(L)):
            in_size = self.input_size if layer == 0 else D * R
            dx = np.empty((T, B, in_size), self.dtype)
            for d in range(D):
                k = layer * D + d
                w_ih, w_hh, b_ih, b_hh = self.layer_parameters(layer, d)
                w_hr = self.layer_projection(layer, d)
                g_h0, g_c0 = _core.recurrent_backward(
                    self._workspaces[k], grad, d * R, None if dh_n is None else dh_n[k],
                    None if dc_n is None else dc_n[k], w_ih.data, w_hh.data, w_ih.grad, w_hh.grad,
                    None if b_ih is None else b_ih.grad, None if b_hh is None else b_hh.grad,
                    dx, d > 0, threads, w_hr=None if w_hr is None else w_hr.data,
                    dw_hr=None if w_hr is None else w_hr.grad, grad_norms=None if norms is None else norms[k])
                dh0[k] = g_h0
                if dc0 is not None:
                    dc0[k] = g_c0
            if layer > 0:
                mask = ctx["saved"][layer - 1]
                grad = dx if mask is None else dx * mask
            else:
                grad = dx
        if not batched:
            grad, dh0 = grad[:, 0], dh0[:, 0]
            dc0 = None if dc0 is None else dc0[:, 0]
        elif self.batch_first:
            grad = np.ascontiguousarray(grad.transpose(1, 0, 2))
        self.grad_h0 = (dh0, dc0) if self.cell == "lstm" else dh0
        if norms is not None:
            self.grad_norms = norms if batched else norms[:, :, 0]
        return grad

    def stream(self, batch_size=1, capacity=1, threads=None):
        """A Stream over this layer (rnncore.nn.stream): fed chunk by chunk, state carried, weights
        packed once; bit-identical to one forward over the concatenated chunks (in bf16 too, for a
        layer with precision='bf16')."""
        from .stream import Stream

        return Stream(self, batch_size=batch_size, capacity=capacity, threads=threads)

    def config(self):
        """Constructor arguments that rebuild this layer: ``type(self)(**layer.config())``."""
        cfg = dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                   bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
                   bidirectional=self.bidirectional, dtype=self.dtype.name)
        if self.proj_size:
            cfg["proj_size"] = self.proj_size
        if self.precision != "fp32":
            cfg["precision"] = self.precision
        if type(self) is RNNBase:
            return dict(cell=self.cell, **cfg)
        if self.cell.startswith("rnn_"):
            cfg["nonlinearity"] = self.cell[len("rnn_"):]
        return cfg

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.cell == "rnn_relu":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        if self.precision != "fp32":
            s += f", precision='{self.precision}'"
        return s


_SHAPES_DOC = """
    Shapes (T time steps, B batch, I input_size, H hidden_size, L num_layers, D = 2 if
    bidirectional else 1):
      x:       (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched
      h0 / c0: (L*D, B, H), or (L*D, H) unbatched (never batch-first, as in PyTorch); zeros if omitted
      lengths: (B,) integers in [0, T]; steps at and after a sequence's length leave its state
               unchanged and give zero output
      output:  like x with the last dimension D*H; h_n / c_n like h0, each sequence's state
               after its own last step

    Parameters, as in PyTorch: weight_ih_l{k}[_reverse] (G*H, I or D*H), weight_hh_l{k}[_reverse]
    (G*H, H), bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] (G*H,), all U(-1/sqrt(H), 1/sqrt(H)).

    Extra keyword arguments: dtype (float32 or float64; None means float32), precision ('fp32', the
    default, or 'bf16': bfloat16 mixed precision as under PyTorch's autocast -- the operands of every
    product (weights, inputs, each h) rounded to bf16, float32 sums, float32 cell state and master
    weights; the outputs and h_n come out bf16-valued float32; see set_precision), seed (initialisation and dropout
    masks), threads (None: rnncore.get_num_threads(); at most rnncore's thread limit,
    max(256, 4 x processors)).

    Threads: a layer runs one call at a time. A forward or backward called while another
    thread is inside one on the same layer raises RuntimeError ("... is already running in
    another thread; use one model per thread or a lock"); it never computes with the other
    call's buffers. backward differentiates the layer's last forward, whichever thread ran it.
"""


class RNN(RNNBase):
    __doc__ = """Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act = tanh or relu (G = 1).

    forward(x, hx=None, lengths=None) -> (output, h_n); backward(grad_output, grad_h_n=None) -> grad_x.
    """ + _SHAPES_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {bounded_repr(nonlinearity)}")
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, **kwargs)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    __doc__ = """Long short-term memory, PyTorch's gates i, f, g, o (G = 4).

    forward(x, hx=None, lengths=None) -> (output, (h_n, c_n)), hx = (h0, c0);
    backward(grad_output, grad_h_n=None) -> grad_x, grad_h_n = (dh_n, dc_n).

    proj_size P > 0 (PyTorch's LSTM with projections, 0 < P < H): h_t = W_hr (o_t * tanh(c_t)),
    so h0, h_n and each direction's output are P wide (output (.., D*P), h0/h_n (L*D, B, P)),
    c0/c_n stay H wide, weight_hh_l{k} is (G*H, P), layer k > 0 reads D*P features, and each
    layer and direction has weight_hr_l{k}[_reverse] (P, H), U(-1/sqrt(H), 1/sqrt(H)).
    """ + _SHAPES_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, **kwargs):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size=proj_size, **kwargs)


class GRU(RNNBase):
    __doc__ = """Gated recurrent unit, PyTorch's gates r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) (G = 3).

    forward(x, hx=None, lengths=None) -> (output, h_n); backward(grad_output, grad_h_n=None) -> grad_x.
    """ + _SHAPES_DOC

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, **kwargs):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         **kwargs)
