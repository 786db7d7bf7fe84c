"""Streaming inference: a recurrent layer fed one chunk (or one step) at a time, keeping its state.

Shape letters: T steps of a chunk, B batch_size, I input_size, H hidden_size, L num_layers,
R = proj_size P for an LSTM with projections, else H.

    stream = lstm.stream(batch_size=1, capacity=1)   # weights packed once, buffers sized once
    for frame in frames:                             # each (1, B, I) float32, C-contiguous
        y = stream.feed(frame)                       # (1, B, R); the state carries over

``feed`` over chunks x_1, x_2, ... gives, bit for bit, the output of one ``layer.forward`` over
their concatenation (any chunking, any thread count): the time loop is the layer's own and
the input projections round row by row as in the whole-sequence product. After the first
call nothing is allocated per call (``allocations`` counts the engine's buffer allocations;
``feed`` without ``out`` returns a view of the stream's own output buffer, the same array
object for chunks of the same length, which the next ``feed`` overwrites: copy what you keep,
or pass ``out``).

The stream packs the layer's weights when it is made: after the weights change (training,
``load_state_dict``) call ``load_weights()``. It runs in inference mode: no dropout between
layers. Unidirectional layers only (a reverse direction needs the whole sequence). A layer with
``precision="bf16"`` streams in bf16 (its weights packed once as bfloat16; with projections W_ih
only, W_hh and W_hr as float32 panels of bf16 values), bit for bit its own bf16 forward; ``set_precision`` afterwards does not change a stream already made.
"""
import numpy as np

from .. import _core
from .._checks import check_bf16_dtype, check_int
from .._threads import resolve_threads


class Stream:
    """A stacked unidirectional RNN/LSTM/GRU fed chunk by chunk; see the module docstring.

    Stream(layer, batch_size=1, capacity=1, threads=None): layer an RNN, LSTM or GRU
    (rnncore.nn.RNNBase, not bidirectional); capacity the most steps one chunk may have
    (``reserve`` raises it); threads as the layer's (None: the layer's setting).

    feed(x, out=None) -> (T, B, R): x (T, B, I) of the layer's dtype, C-contiguous, 1 <= T <= capacity.
    step(x) -> (B, R): one step, x (B, I).
    state: (h, c) for an LSTM, h otherwise; h (L, B, R), c (L, B, H) (copies); assignable.
    reset(): zero state. reserve(capacity). load_weights(): repack the layer's current weights.
    """

    __slots__ = ("layer", "_s", "_step_out", "_in_shape")

    def __init__(self, layer, batch_size=1, capacity=1, threads=None):
        from .rnn import RNNBase

        fn = "Stream"
        if not isinstance(layer, RNNBase):
            raise TypeError(f"{fn}: layer must be an rnncore.nn RNN, LSTM or GRU, got {type(layer).__name__}")
        if layer.bidirectional:
            raise ValueError(f"{fn}: layer is bidirectional; a stream runs forward in time only (the reverse "
                             "direction needs the whole sequence): stream a unidirectional layer")
        batch_size = check_int(batch_size, "batch_size", fn, minimum=1)
        capacity = check_int(capacity, "capacity", fn, minimum=1)
        threads = resolve_threads(layer.threads if threads is None else threads)
        self.layer = layer
        bf16 = layer.precision == "bf16"
        if bf16:
            check_bf16_dtype(layer.dtype, fn)
        self._s = _core.RecurrentStream(layer.cell, self._weights("Stream"), batch_size, capacity, threads,
                                        bf16=bf16)
        self._step_out = None
        self._in_shape = (batch_size, layer.input_size)

    def _weights(self, fn):
        layer = self.layer
        layer._check_parameters(fn)
        out = []
        for k in range(layer.num_layers):
            w_ih, w_hh, b_ih, b_hh = layer.layer_parameters(k)
            w_hr = layer.layer_projection(k)
            out.append((w_ih.data, w_hh.data, None if b_ih is None else b_ih.data,
                        None if b_hh is None else b_hh.data, None if w_hr is None else w_hr.data))
        return out

    def feed(self, x, out=None):
        """The network over one chunk x (T, B, I), from and into the carried state: (T, B, R)."""
        return self._s.feed(x, out)

    def step(self, x):
        """One step: x (B, I) -> (B, R) (a view of the stream's buffer, overwritten by the next call)."""
        if type(x) is not np.ndarray or x.shape != self._in_shape:
            if not isinstance(x, np.ndarray):
                raise TypeError(f"Stream.step: x must be a numpy array (B, I), got {type(x).__name__}")
            raise ValueError(f"Stream.step: x must have shape (B, I) = {self._in_shape}, got {x.shape}")
        y = self._s.feed(x[None])
        cached = self._step_out
        if cached is None or cached[0] is not y:  # the same (1, B, R) view comes back for every step
            self._step_out = cached = (y, y[0])
        return cached[1]

    __call__ = feed

    @property
    def state(self):
        h, c = self._s.get_state()
        return (h, c) if self.layer.cell == "lstm" else h

    @state.setter
    def state(self, value):
        if self.layer.cell == "lstm":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(f"Stream.state: an LSTM's state must be a tuple (h, c), got {type(value).__name__}")
            h, c = value
        else:
            h, c = value, None
        dtype = self.layer.dtype
        h = np.ascontiguousarray(h, dtype=dtype) if isinstance(h, np.ndarray) else h
        c = np.ascontiguousarray(c, dtype=dtype) if isinstance(c, np.ndarray) else c
        self._s.set_state(h, c)

    def reset(self):
        """Zero the state of every layer."""
        self._s.reset()

    def reserve(self, capacity):
        """Size the buffers for chunks of up to `capacity` steps (allocates now, never in feed)."""
        self._s.reserve(check_int(capacity, "capacity", "Stream.reserve", minimum=1))
        self._step_out = None

    def load_weights(self):
        """Repack the layer's current weights (after training or loading); the state is kept."""
        self._s.load_weights(self._weights("Stream.load_weights"))

    @property
    def allocations(self):
        """Buffer allocations the engine made inside feed() (0 once warm: chunks within capacity)."""
        return self._s.allocations

    @property
    def precision(self):
        """'bf16' or 'fp32': the layer's precision when the stream was made."""
        return "bf16" if self._s.bf16 else "fp32"

    @property
    def capacity(self):
        return self._s.capacity

    @property
    def batch_size(self):
        return self._s.batch_size

    @property
    def threads(self):
        """Threads the time loops run on (fewer than asked when a step is too small to share)."""
        return self._s.threads

    def __repr__(self):
        return (f"Stream({type(self.layer).__name__}({self.layer.extra_repr()}), batch_size={self.batch_size}, "
                f"capacity={self.capacity}, threads={self.threads}"
                + (", precision='bf16')" if self._s.bf16 else ")"))
