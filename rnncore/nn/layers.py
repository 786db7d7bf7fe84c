"""Non-recurrent layers with PyTorch's constructors and parameters: Embedding, Linear,
Dropout, LayerNorm. Each is an explicit forward/backward pair over the C++ kernels in
csrc/ops/; backward *adds* into the parameters' ``.grad`` and returns the input gradient.

Every layer keeps what its last forward needs for backward (the ids, the input, the mask,
the saved statistics); a forward followed by one backward is the contract, as for RNN/LSTM/GRU.
Extra keyword arguments common to all: dtype (float32 or float64; None means float32), seed
(initialisation), threads (None: rnncore.get_num_threads()).

The input a forward saves is the layer's own copy whatever it came as (a numpy array, a
memoryview or other buffer, a torch tensor): changing it after forward does not change the
gradients. A layer runs one call at a time: a forward or backward called while another
thread is inside one on the same layer raises RuntimeError, as for RNN/LSTM/GRU.
"""
import numpy as np

from .. import _core
from .._checks import (as_index_array, as_real_array, bounded_repr, check_bf16_dtype, check_int, check_probability,
                       check_real, check_seed, expect_shape, no_forward, private_copy, resolve_dtype,
                       resolve_precision, shape_str)
from .._threads import exclusive, resolve_threads
from . import init
from .module import Module, Parameter


class Embedding(Module):
    """A lookup table: ids (...) of any integer shape -> rows (..., E).

    Args: num_embeddings V, embedding_dim E, padding_idx (a row that stays zero-initialised and
    receives no gradient; negative counts from the end, as in PyTorch).
    Parameter ``weight`` (V, E), initialised N(0, 1) as in PyTorch.

    forward(ids) -> out (..., E). Ids outside [0, V) raise ValueError naming the id and its
    position before any memory is read; non-integer ids raise TypeError.
    backward(grad_output (..., E)) -> None (ids have no gradient); adds into weight.grad,
    repeated ids accumulate, the padding row gets nothing.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, *, dtype=np.float32, seed=None,
                 threads=None):
        super().__init__()
        fn = "Embedding"
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        if padding_idx is not None:
            padding_idx = check_int(padding_idx, "padding_idx", fn, minimum=-self.num_embeddings)
            if padding_idx >= self.num_embeddings:
                raise ValueError(f"{fn}: padding_idx must be in [-{self.num_embeddings}, {self.num_embeddings}), "
                                 f"got {padding_idx}")
            if padding_idx < 0:
                padding_idx += self.num_embeddings
        self.padding_idx = padding_idx
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        rng = np.random.default_rng(check_seed(seed, fn))
        weight = init.standard_normal(rng, (self.num_embeddings, self.embedding_dim), self.dtype)
        if padding_idx is not None and not init.building_skeleton():
            weight[padding_idx] = 0
        self.weight = Parameter(weight)
        self._ids = None

    def config(self):
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    padding_idx=self.padding_idx, dtype=self.dtype.name)

    def _dtype_changed(self):
        self._ids = None

    @exclusive
    def forward(self, ids):
        fn = "Embedding.forward"
        ids_in = ids
        ids = as_index_array(ids, "ids", fn)
        out = _core.embedding_forward(self.weight.data, ids, resolve_threads(self.threads))
        self._ids = private_copy(ids, ids_in)  # saved for backward: the caller may reuse its buffer
        return out

    @exclusive
    def backward(self, grad_output):
        fn = "Embedding.backward"
        ids = self._ids
        if ids is None:
            raise no_forward(fn)
        dout = as_real_array(grad_output, "grad_output", fn, self.weight.dtype)
        expect_shape(dout, ids.shape + (self.embedding_dim,), "grad_output", fn, "(..., E) like the output")
        self._ids = None
        _core.embedding_backward(dout, ids, self.weight.grad,
                                 -1 if self.padding_idx is None else self.padding_idx, resolve_threads(self.threads))
        return None

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s


class Linear(Module):
    """y = x W^T + b over the last dimension of x (..., in_features) -> (..., out_features).

    Parameters ``weight`` (O, I) and ``bias`` (O,), both U(-1/sqrt(I), 1/sqrt(I)) as in PyTorch.
    backward(grad_output (..., O)) -> grad_x (..., I); adds dW += dY^T X and db += sum dY.
    precision='bf16' (or set_precision('bf16')): bfloat16 mixed precision -- x, W and, in backward,
    dY rounded to bf16, float32 sums, float32 bias, master weight and gradients.
    """

    _has_bf16_path = True

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None, threads=None,
                 precision=None):
        super().__init__()
        fn = "Linear"
        self.in_features = check_int(in_features, "in_features", fn)
        self.out_features = check_int(out_features, "out_features", fn)
        self.dtype = resolve_dtype(dtype, fn)
        self.precision = resolve_precision(precision, fn)
        if self.precision == "bf16":
            check_bf16_dtype(self.dtype, fn)
        self.threads = threads
        rng = np.random.default_rng(check_seed(seed, fn))
        I, O = self.in_features, self.out_features
        self.weight = Parameter(init.fan_in_uniform(rng, (O, I), I, self.dtype))
        self.register_parameter("bias", Parameter(init.fan_in_uniform(rng, (O,), I, self.dtype)) if bias else None)
        self._x = None

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None,
                    dtype=self.dtype.name)

    def _dtype_changed(self):
        self._x = None

    @exclusive
    def forward(self, x):
        fn = "Linear.forward"
        x_in = x
        x = as_real_array(x, "x", fn, self.weight.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{fn}: x must have shape (..., in_features) = (..., {self.in_features}), "
                             f"got {shape_str(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        w = self.weight.data
        if self.precision == "bf16":
            check_bf16_dtype(self.weight.dtype, fn)
            # explicit casts (autocast's): a rounded copy of x, kept for backward, and of W
            x2 = _core.round_bf16(np.ascontiguousarray(x2))
            w = _core.round_bf16(w)
        else:
            x2 = private_copy(x2, x_in)  # saved for backward: the caller may reuse its buffer
        y = _core.linear_forward(x2, w, None if self.bias is None else self.bias.data, resolve_threads(self.threads))
        self._x = (x2, lead, w if self.precision == "bf16" else None)
        return y.reshape(lead + (self.out_features,))

    @exclusive
    def backward(self, grad_output, need_input_grad=True):
        fn = "Linear.backward"
        if self._x is None:
            raise no_forward(fn)
        x2, lead, w_bf16 = self._x
        dy = as_real_array(grad_output, "grad_output", fn, self.weight.dtype)
        expect_shape(dy, lead + (self.out_features,), "grad_output", fn, "(..., out_features) like the output")
        self._x = None
        dy = dy.reshape(-1, self.out_features)
        w = self.weight.data
        if w_bf16 is not None:  # bf16: the forward's rounded W, and dY rounded too
            w, dy = w_bf16, _core.round_bf16(np.ascontiguousarray(dy))
        dx = _core.linear_backward(dy, x2, w, self.weight.grad,
                                   None if self.bias is None else self.bias.grad, bool(need_input_grad),
                                   resolve_threads(self.threads))
        return None if dx is None else dx.reshape(lead + (self.in_features,))

    def extra_repr(self):
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        return s + (f", precision='{self.precision}'" if self.precision != "fp32" else "")


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the rest
    by 1/(1-p); the identity in eval mode (or when p == 0).

    Randomness comes only from the layer's own numpy Generator: pass ``rng`` (a Generator,
    e.g. one shared by a model's dropout layers) or ``seed``. The mask of the last forward is
    kept and reused by backward.
    """

    def __init__(self, p=0.5, *, seed=None, rng=None):
        super().__init__()
        self.p = check_probability(p, "p", "Dropout", allow_one=True)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"Dropout: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self.rng = rng if rng is not None else np.random.default_rng(check_seed(seed, "Dropout"))
        self._mask = None
        self._ready = False

    def config(self):
        return dict(p=self.p)

    def make_mask(self, shape, dtype):
        """A fresh scaled keep-mask (0 or 1/(1-p)) drawn from the layer's generator."""
        dtype = np.dtype(dtype)
        keep = 1.0 - self.p
        if keep <= 0.0:
            return np.zeros(shape, dtype)
        u = self.rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32)
        return (u < keep).astype(dtype) * dtype.type(1.0 / keep)

    @exclusive
    def forward(self, x):
        x = np.asarray(x)
        if not self.training or self.p == 0.0:
            self._mask, self._ready = None, True
            return x
        if x.dtype.kind != "f":
            raise TypeError(f"Dropout.forward: x must be a float array, got dtype {x.dtype}")
        self._mask = self.make_mask(x.shape, x.dtype)
        self._ready = True
        return x * self._mask

    @exclusive
    def backward(self, grad_output):
        fn = "Dropout.backward"
        if not self._ready:
            raise no_forward(fn)
        mask = self._mask
        self._mask, self._ready = None, False
        if mask is None:
            return grad_output
        g = np.asarray(grad_output)
        expect_shape(g, mask.shape, "grad_output", fn, "like the output")
        return g * mask

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dimensions, as torch.nn.LayerNorm:
    y = (x - mean) / sqrt(var + eps) * weight + bias (biased variance).

    Parameters (when elementwise_affine) ``weight`` = 1 and ``bias`` = 0, shaped normalized_shape.
    backward(grad_output) -> grad_x; adds into weight.grad and bias.grad.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *, dtype=np.float32,
                 threads=None):
        super().__init__()
        fn = "LayerNorm"
        if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, bool):
            normalized_shape = (normalized_shape,)
        try:
            normalized_shape = tuple(check_int(d, "normalized_shape", fn) for d in normalized_shape)
        except TypeError:
            raise TypeError(f"{fn}: normalized_shape must be an int or a tuple of ints, got "
                            f"{bounded_repr(normalized_shape)}")
        if not normalized_shape:
            raise ValueError(f"{fn}: normalized_shape must not be empty")
        self.normalized_shape = normalized_shape
        self.eps = check_real(eps, "eps", fn, at_least=0.0)
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        self.register_parameter("weight", Parameter(init.constant(normalized_shape, 1, self.dtype))
                                if self.elementwise_affine else None)
        self.register_parameter("bias", Parameter(init.constant(normalized_shape, 0, self.dtype))
                                if self.elementwise_affine and bias else None)
        self._ctx = None

    def config(self):
        return dict(normalized_shape=list(self.normalized_shape), eps=self.eps,
                    elementwise_affine=self.elementwise_affine, bias=self.bias is not None, dtype=self.dtype.name)

    def _dtype_changed(self):
        self._ctx = None

    @staticmethod
    def _flat(p, attr="data"):
        return None if p is None else getattr(p, attr).reshape(-1)

    @exclusive
    def forward(self, x):
        fn = "LayerNorm.forward"
        x_in = x
        x = as_real_array(x, "x", fn, self.dtype)
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            raise ValueError(f"{fn}: x must have shape (..., {', '.join(map(str, self.normalized_shape))}) ending in "
                             f"normalized_shape, got {shape_str(x.shape)}")
        C = int(np.prod(self.normalized_shape))
        x2 = x.reshape(-1, C)
        y, mean, rstd = _core.layernorm_forward(x2, self._flat(self.weight), self._flat(self.bias), self.eps,
                                                resolve_threads(self.threads))
        self._ctx = (private_copy(x2, x_in), mean, rstd, x.shape)  # the caller may reuse its buffer
        return y.reshape(x.shape)

    @exclusive
    def backward(self, grad_output):
        fn = "LayerNorm.backward"
        if self._ctx is None:
            raise no_forward(fn)
        x2, mean, rstd, shape = self._ctx
        dy = as_real_array(grad_output, "grad_output", fn, self.dtype)
        expect_shape(dy, shape, "grad_output", fn, "like the input")
        self._ctx = None
        dx = _core.layernorm_backward(dy.reshape(x2.shape), x2, mean, rstd, self._flat(self.weight),
                                      self._flat(self.weight, "grad"), self._flat(self.bias, "grad"),
                                      resolve_threads(self.threads))
        return dx.reshape(shape)

    def extra_repr(self):
        s = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.elementwise_affine and self.bias is None:
            s += ", bias=False"
        return s
