"""OutputRecurrentRNN: the network of Goodfellow, Bengio & Courville's figure 10.4, whose only
recurrence is from the output back to the hidden layer, trained with teacher forcing.

Shape letters: T time steps, B batch, I input_size, H hidden_size, O output_size.

    h_t = tanh(W_ih x_t + W_oh y_{t-1} + b_h)        (the book's U x_t + W o_{t-1} + b)
    y_t = W_ho h_t + b_o                               (the book's V h_t + c)

Teacher forcing (training): y_{t-1} is the ground truth ``target[t-1]`` (``y0`` before the first
step), so no step waits for another: the whole sequence is three batched GEMMs over all T*B
positions forward, and backward is the same three transposed (no backpropagation through time:
the time steps are decoupled, which is what makes this network cheap to train).

Free running (test time): y_{t-1} is the model's own previous output, a true recurrence run in
C++ in one call (csrc/recurrent/output_recurrent.cpp: the input projection of all steps in one
GEMM, then two thin GEMMs a step through the O-wide output). Substituting
y_{t-1} = W_ho h_{t-1} + b_o shows it is a tanh RNN with W_hh = W_oh W_ho (rank <= O) and
b_hh = W_oh b_o from step 1 on (folded_rnn_weights; the tests run that RNN through the engine's
recurrent kernel and compare), which would cost H*H memory and work per step instead of 2*H*O. The gap between the two modes' errors is the exposure bias: training never
showed the model its own mistakes.
"""
import numpy as np

from .. import _core
from .._checks import as_real_array, check_int, check_seed, no_forward, private_copy, resolve_dtype, shape_str
from .._threads import exclusive, resolve_threads
from . import init
from .loss import mse_loss
from .module import Module, Parameter


def _finite(a, name, fn):
    if a.size and not np.isfinite(a).all():
        pos = [int(i) for i in np.argwhere(~np.isfinite(a))[0]]
        raise ValueError(f"{fn}: {name} holds {a[tuple(pos)]} at position {pos}: every value must be finite (a series "
                         "with NaN, a missing value? fill or drop it first)")
    return a


class OutputRecurrentRNN(Module):
    """Output-to-hidden recurrence only (Goodfellow et al., figure 10.4); see the module docstring.

    Args: input_size I, hidden_size H, output_size O. Keywords: dtype (float32), seed, threads.
    Parameters: ``weight_ih`` (H, I), ``weight_oh`` (H, O) (previous output -> hidden),
    ``bias_h`` (H,), ``weight_ho`` (O, H), ``bias_o`` (O,); each U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    with fan_in the width it reads (H for the hidden-layer weights, as PyTorch's RNN).

    forward(x (T, B, I), target (T, B, O), y0=None) -> predictions (T, B, O), teacher-forced:
    step t reads target[t-1] (y0 (B, O), default zeros, at t = 0).
    loss(x, target, y0=None, reduction='mean') -> the MSE of the teacher-forced predictions;
    backward(grad_output=None) -> grad_x (T, B, I) (adds into every parameter's .grad; no
    gradient flows into the targets).
    free_run(x, y0=None) -> predictions (T, B, O), each step fed the previous prediction.
    """

    def __init__(self, input_size, hidden_size, output_size=1, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "OutputRecurrentRNN"
        self.input_size = check_int(input_size, "input_size", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.output_size = check_int(output_size, "output_size", fn)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        rng = np.random.default_rng(check_seed(seed, fn))
        I, H, O = self.input_size, self.hidden_size, self.output_size
        self.weight_ih = Parameter(init.fan_in_uniform(rng, (H, I), H, self.dtype))
        self.weight_oh = Parameter(init.fan_in_uniform(rng, (H, O), H, self.dtype))
        self.bias_h = Parameter(init.fan_in_uniform(rng, (H,), H, self.dtype))
        self.weight_ho = Parameter(init.fan_in_uniform(rng, (O, H), H, self.dtype))
        self.bias_o = Parameter(init.fan_in_uniform(rng, (O,), H, self.dtype))
        self._ctx = None
        self._dout = None

    def config(self):
        """Constructor arguments that rebuild this model: ``type(self)(**model.config())``."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, output_size=self.output_size,
                    dtype=self.dtype.name)

    def _dtype_changed(self):
        self._ctx = self._dout = None

    # -- input checks ------------------------------------------------------------------------

    def _inputs(self, x, fn, saved=True):
        x_in = x
        x = as_real_array(x, "x", fn, self.dtype)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{fn}: x must have shape (T, B, I) with I = {self.input_size}, got {shape_str(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{fn}: x has no time steps (T = 0, shape {shape_str(x.shape)}): there is nothing to "
                             "predict")
        _finite(x, "x", fn)
        return private_copy(x, x_in) if saved else x  # free_run keeps nothing: no copy

    def _y0(self, y0, B, fn):
        if y0 is None:
            return np.zeros((B, self.output_size), self.dtype)
        y0 = as_real_array(y0, "y0", fn, self.dtype)
        if y0.shape != (B, self.output_size):
            raise ValueError(f"{fn}: y0 must have shape (B, O) = ({B}, {self.output_size}), got {shape_str(y0.shape)}")
        return _finite(y0, "y0", fn)

    # -- teacher forcing: forward and backward ----------------------------------------------

    @exclusive
    def forward(self, x, target, y0=None):
        fn = "OutputRecurrentRNN.forward"
        x = self._inputs(x, fn)
        T, B, _ = x.shape
        target = as_real_array(target, "target", fn, self.dtype)
        if target.shape != (T, B, self.output_size):
            raise ValueError(f"{fn}: target must have shape (T, B, O) = ({T}, {B}, {self.output_size}), "
                             f"got {shape_str(target.shape)}")
        _finite(target, "target", fn)
        I, H, O = self.input_size, self.hidden_size, self.output_size
        threads = resolve_threads(self.threads)
        # y_prev[t] = target[t-1], y_prev[0] = y0: the ground truth, so every step is independent
        y_prev = np.concatenate([self._y0(y0, B, fn)[None], target[:-1]], axis=0).reshape(T * B, O)
        x2 = x.reshape(T * B, I)
        # h = tanh(x W_ih^T + y_prev W_oh^T + b_h)
        a = _core.linear_forward(x2, self.weight_ih.data, self.bias_h.data, threads)
        a += _core.linear_forward(y_prev, self.weight_oh.data, None, threads)
        h = np.tanh(a, out=a)
        # y = h W_ho^T + b_o
        y = _core.linear_forward(h, self.weight_ho.data, self.bias_o.data, threads)
        self._ctx = (x2, y_prev, h, (T, B))
        self._dout = None
        return y.reshape(T, B, O)

    @exclusive
    def loss(self, x, target, y0=None, reduction="mean"):
        pred = self.forward(x, target, y0)
        loss, self._dout = mse_loss(pred, target, reduction, threads=self.threads)
        return loss

    @exclusive
    def backward(self, grad_output=None):
        fn = "OutputRecurrentRNN.backward"
        if self._ctx is None:
            raise no_forward(fn)
        if grad_output is None:
            if self._dout is None:
                raise no_forward(fn, "loss() (or pass grad_output)", "each can be differentiated once")
            grad_output = self._dout
        x2, y_prev, h, (T, B) = self._ctx
        dy = as_real_array(grad_output, "grad_output", fn, self.dtype)
        if dy.shape != (T, B, self.output_size):
            raise ValueError(f"{fn}: grad_output must have the predictions' shape (T, B, O) = "
                             f"({T}, {B}, {self.output_size}), got {shape_str(dy.shape)}")
        self._ctx = self._dout = None
        threads = resolve_threads(self.threads)
        # y = h W_ho^T + b_o
        dh = _core.linear_backward(dy.reshape(T * B, self.output_size), h, self.weight_ho.data,
                                   self.weight_ho.grad, self.bias_o.grad, True, threads)
        # h = tanh(a): da = dh * (1 - h^2)
        da = dh * (1 - h * h)
        # a = x W_ih^T + y_prev W_oh^T + b_h
        _core.linear_backward(da, y_prev, self.weight_oh.data, self.weight_oh.grad, None, False, threads)
        dx = _core.linear_backward(da, x2, self.weight_ih.data, self.weight_ih.grad, self.bias_h.grad, True,
                                   threads)
        return dx.reshape(T, B, self.input_size)

    # -- free running -------------------------------------------------------------------------

    def folded_rnn_weights(self):
        """(w_hh (H, H), b_hh (H,)) of the tanh RNN the free-running network is, from step 1 on:
        W_oh W_ho and W_oh b_o (the identity the tests check free_run against; H*H memory)."""
        w_oh = self.weight_oh.data.astype(np.float64)
        w_hh = (w_oh @ self.weight_ho.data.astype(np.float64)).astype(self.dtype)
        b_hh = (w_oh @ self.bias_o.data.astype(np.float64)).astype(self.dtype)
        return np.ascontiguousarray(w_hh), np.ascontiguousarray(b_hh)

    def free_run(self, x, y0=None):
        """Predictions (T, B, O) when each step reads the model's own previous output (y0 (B, O),
        default zeros, before the first): one C++ call (_core.output_recurrent_free_run), no Python
        loop over time. Saves nothing (no backward)."""
        fn = "OutputRecurrentRNN.free_run"
        x = self._inputs(x, fn, saved=False)
        y0 = None if y0 is None else self._y0(y0, x.shape[1], fn)
        return _core.output_recurrent_free_run(x, self.weight_ih.data, self.weight_oh.data, self.bias_h.data,
                                               self.weight_ho.data, self.bias_o.data, y0,
                                               resolve_threads(self.threads))

    def extra_repr(self):
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, output_size={self.output_size}"
