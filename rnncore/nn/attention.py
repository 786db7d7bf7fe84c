"""Global attention (Luong et al. 2015; Bahdanau et al. 2015) over an encoder's memory bank,
masked to each source's own length: OpenNMT-py's GlobalAttention, as an explicit
forward/backward pair over the fused C++ kernels (csrc/ops/attention.{h,cpp}).

Shape letters: Tq queries per sequence (target steps), B batch, S source positions, Hq query
width, Hm memory width, A additive units, Ho output (attentional state) width.
"""
import numpy as np

from .. import _core
from .._checks import (as_real_array, bounded_repr, check_int, check_parameters, check_seed, expect_shape,
                       no_forward, private_copy, resolve_dtype, shape_str)
from .._threads import exclusive, resolve_threads
from .layers import Linear
from .module import Module

KINDS = ("dot", "general", "additive")
ALIASES = {"dot": "dot", "general": "general", "additive": "additive", "mlp": "additive", "concat": "additive",
           "bahdanau": "additive"}


def _attn_type(value, fn):
    if not isinstance(value, str):
        raise TypeError(f"{fn}: attn_type must be a str, got {type(value).__name__} {bounded_repr(value)}")
    kind = ALIASES.get(value.lower())
    if kind is None:
        raise ValueError(f"{fn}: attn_type must be one of 'dot', 'general', 'additive' (or its aliases 'mlp', "
                         f"'concat', 'bahdanau'), got {bounded_repr(value)}")
    return kind


def memory_lengths_array(value, batch, steps, fn, name="memory_lengths"):
    """memory_lengths as int64 (B,), each in [1, S]; None gives every row all S positions."""
    if value is None:
        return np.full(batch, steps, np.int64)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: {name} must be a 1-D array of integers, got {type(value).__name__}") from None
    if array.dtype.kind not in "iu" and array.size == 0 and isinstance(value, (list, tuple)):
        array = np.zeros(array.shape, np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must hold integers, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"{fn}: {name} must have shape (B,) = ({batch},), got {shape_str(array.shape)}")
    if batch:
        bad = np.flatnonzero((array < 1) | (array > steps))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{fn}: {name} must be in [1, S] = [1, {steps}], got {name}[{i}] = {int(array[i])}")
    return np.ascontiguousarray(array, dtype=np.int64)


class Attention(Module):
    """Global attention of queries over a memory bank, masked to each source's length.

    For a query q = query[t, b] and the memory rows m_s = memory[s, b], s < memory_lengths[b]:

    - ``"dot"``:      score_s = q . m_s                                  (Hq == Hm)
    - ``"general"``:  score_s = q . (W_in^T m_s)                         linear_in.weight (Hm, Hq)
    - ``"additive"`` (aliases ``"mlp"``, ``"concat"``, ``"bahdanau"``):
      score_s = v . tanh(W_q q + b_q + W_k m_s)     linear_query.{weight (A, Hq), bias (A)},
                                                     linear_context.weight (A, Hm), v.weight (1, A)
    - alpha = softmax of the scores over s < memory_lengths[b], exactly 0 past it;
      context c = sum_s alpha_s m_s; attn_h = tanh(W_out [c ; q] + b_out), with
      linear_out.weight (Ho, Hm + Hq) and linear_out.bias (Ho) when output_bias.

    Args: query_size Hq; memory_size Hm (default Hq; must equal Hq for dot); attn_type;
    attention_size A (additive only, default Hq); output_size Ho (default Hq); output_bias
    (default True for additive, False otherwise, as OpenNMT-py). Keyword-only: dtype, seed
    (initialisation: every weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.nn.Linear), threads.

    The parameters live in child Linear modules named as OpenNMT-py's GlobalAttention, so the
    state_dict keys are ``linear_in.weight``, ``linear_query.weight``, ``linear_query.bias``,
    ``linear_context.weight``, ``v.weight``, ``linear_out.weight``, ``linear_out.bias``.

    forward(query (Tq, B, Hq) or (B, Hq), memory (S, B, Hm), memory_lengths (B,) in [1, S] or
    None) -> (attn_h (Tq, B, Ho) or (B, Ho), alpha (Tq, B, S) or (B, S)).
    backward(grad_attn_h, grad_alpha=None) -> (grad_query, grad_memory (S, B, Hm)), adding into
    every parameter's .grad; grad_memory is exactly 0 past each length.
    """

    def __init__(self, query_size, memory_size=None, attn_type="general", attention_size=None, output_size=None,
                 output_bias=None, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "Attention"
        self.query_size = check_int(query_size, "query_size", fn)
        self.memory_size = check_int(memory_size, "memory_size", fn, optional=True) or self.query_size
        self.attn_type = _attn_type(attn_type, fn)
        if self.attn_type == "dot" and self.memory_size != self.query_size:
            raise ValueError(f"{fn}: dot attention needs memory_size == query_size, got memory_size = "
                             f"{self.memory_size}, query_size = {self.query_size} (use 'general' or 'additive')")
        if attention_size is not None and self.attn_type != "additive":
            raise ValueError(f"{fn}: attention_size is for additive attention only, got attention_size = "
                             f"{bounded_repr(attention_size)} with attn_type = '{self.attn_type}'")
        self.attention_size = (check_int(attention_size, "attention_size", fn, optional=True) or self.query_size
                               if self.attn_type == "additive" else None)
        self.output_size = check_int(output_size, "output_size", fn, optional=True) or self.query_size
        if output_bias is None:
            output_bias = self.attn_type == "additive"
        if not isinstance(output_bias, (bool, np.bool_)):
            raise TypeError(f"{fn}: output_bias must be a bool or None, got {type(output_bias).__name__}")
        self.output_bias = bool(output_bias)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        rng = np.random.default_rng(check_seed(seed, fn))
        seeds = [int(s) for s in rng.integers(0, 2**62, size=4)]
        Hq, Hm, Ho, A = self.query_size, self.memory_size, self.output_size, self.attention_size
        kw = dict(dtype=self.dtype, threads=threads)
        if self.attn_type == "general":
            self.linear_in = Linear(Hq, Hm, bias=False, seed=seeds[0], **kw)
        elif self.attn_type == "additive":
            self.linear_context = Linear(Hm, A, bias=False, seed=seeds[0], **kw)
            self.linear_query = Linear(Hq, A, bias=True, seed=seeds[1], **kw)
            self.v = Linear(A, 1, bias=False, seed=seeds[2], **kw)
        self.linear_out = Linear(Hm + Hq, Ho, bias=self.output_bias, seed=seeds[3], **kw)
        self._saved = None

    def config(self):
        return dict(query_size=self.query_size, memory_size=self.memory_size, attn_type=self.attn_type,
                    attention_size=self.attention_size, output_size=self.output_size, output_bias=self.output_bias,
                    dtype=self.dtype.name)

    def _dtype_changed(self):
        self._saved = None

    def _check_parameters(self, fn):
        Hq, Hm, Ho, A = self.query_size, self.memory_size, self.output_size, self.attention_size
        expected = [("linear_out.weight", self.linear_out.weight, (Ho, Hm + Hq), "(Ho, Hm + Hq)"),
                    ("linear_out.bias", self.linear_out.bias, (Ho,), "(Ho,)")]
        if self.attn_type == "general":
            expected.append(("linear_in.weight", self.linear_in.weight, (Hm, Hq), "(Hm, Hq)"))
        elif self.attn_type == "additive":
            expected += [("linear_query.weight", self.linear_query.weight, (A, Hq), "(A, Hq)"),
                         ("linear_query.bias", self.linear_query.bias, (A,), "(A,)"),
                         ("linear_context.weight", self.linear_context.weight, (A, Hm), "(A, Hm)"),
                         ("v.weight", self.v.weight, (1, A), "(1, A)")]
        check_parameters(fn, self.dtype, True, expected)

    def weights_for_core(self):
        """The attention weights as every _core function that runs attention takes them (the
        attention kernels, the input-feeding decoder loop, seq2seq generation; parsed by
        csrc/bindings/bind_attention.h): the tuple ``(kind, w_in, w_q, b_q, w_k, v, w_out, b_out)``,
        kind one of 'dot', 'general', 'additive', each array the parameter's own ``.data``
        (no copy; None where the kind has no such weight)."""
        def data(module, attr):
            p = getattr(module, attr) if module is not None else None
            return None if p is None else p.data
        m = self._modules
        return (self.attn_type, data(m.get("linear_in"), "weight"), data(m.get("linear_query"), "weight"),
                data(m.get("linear_query"), "bias"), data(m.get("linear_context"), "weight"),
                data(m.get("v"), "weight"), self.linear_out.weight.data, data(self.linear_out, "bias"))

    def grads_for_core(self):
        """The parameters' gradients in the order _core takes them (added into):
        ``(dw_in, dw_q, db_q, dw_k, dv, dw_out, db_out)``, None where the kind has no such weight."""
        def grad(module, attr):
            p = getattr(module, attr) if module is not None else None
            return None if p is None else p.grad
        m = self._modules
        return (grad(m.get("linear_in"), "weight"), grad(m.get("linear_query"), "weight"),
                grad(m.get("linear_query"), "bias"), grad(m.get("linear_context"), "weight"),
                grad(m.get("v"), "weight"), self.linear_out.weight.grad, grad(self.linear_out, "bias"))

    @exclusive
    def forward(self, query, memory, memory_lengths=None):
        fn = "Attention.forward"
        self._check_parameters(fn)
        Hq, Hm = self.query_size, self.memory_size
        q_in, m_in = query, memory
        query = as_real_array(query, "query", fn, self.dtype)
        memory = as_real_array(memory, "memory", fn, self.dtype)
        if memory.ndim != 3 or memory.shape[2] != Hm:
            raise ValueError(f"{fn}: memory must have shape (S, B, Hm) = (S, B, {Hm}), got {shape_str(memory.shape)}")
        S, B = memory.shape[0], memory.shape[1]
        if S < 1:
            raise ValueError(f"{fn}: memory must have S >= 1 source positions, got {shape_str(memory.shape)}")
        if query.ndim not in (2, 3):
            raise ValueError(f"{fn}: query must have shape (Tq, B, Hq) or (B, Hq) (one step) with Hq = {Hq}, "
                             f"got {shape_str(query.shape)}")
        step = query.ndim == 2
        if query.shape[-1] != Hq or query.shape[-2] != B:
            want = f"(B, Hq) = ({B}, {Hq})" if step else f"(Tq, B, Hq) = (Tq, {B}, {Hq})"
            raise ValueError(f"{fn}: query must have shape {want} (B from memory (S, B, Hm)), "
                             f"got {shape_str(query.shape)}")
        lengths = memory_lengths_array(memory_lengths, B, S, fn)
        q3 = query[None] if step else query
        threads = resolve_threads(self.threads)
        weights = self.weights_for_core()
        keys = _core.attention_keys(memory, weights, threads)
        attn_h, alpha, context, saved = _core.attention_forward(q3, memory, weights, keys, lengths, threads)
        q_saved = private_copy(q3, q_in)
        m_saved = private_copy(memory, m_in)
        if keys is memory:
            keys = m_saved
        self._saved = (q_saved, m_saved, keys, lengths, alpha, context, attn_h, saved, step)
        if step:
            return attn_h[0].copy(), alpha[0].copy()
        return attn_h.copy(), alpha.copy()

    @exclusive
    def backward(self, grad_attn_h, grad_alpha=None):
        fn = "Attention.backward"
        if self._saved is None:
            raise no_forward(fn)
        self._check_parameters(fn)
        q, memory, keys, lengths, alpha, context, attn_h, saved, step = self._saved
        Tq, B, S = alpha.shape
        lead = (B,) if step else (Tq, B)
        letters = "(B, " if step else "(Tq, B, "
        dh = as_real_array(grad_attn_h, "grad_attn_h", fn, self.dtype)
        expect_shape(dh, lead + (self.output_size,), "grad_attn_h", fn, letters + "Ho) like attn_h")
        da = None
        if grad_alpha is not None:
            da = as_real_array(grad_alpha, "grad_alpha", fn, self.dtype)
            expect_shape(da, lead + (S,), "grad_alpha", fn, letters + "S) like alpha")
            if step:
                da = da[None]
        if step:
            dh = dh[None]
        self._saved = None
        dq, dm = _core.attention_backward(dh, da, q, memory, keys, lengths, alpha, context, attn_h, saved,
                                          self.weights_for_core(), self.grads_for_core(), True, True,
                                          resolve_threads(self.threads))
        return (dq[0] if step else dq), dm

    def extra_repr(self):
        parts = [f"query_size={self.query_size}"]
        if self.memory_size != self.query_size:
            parts.append(f"memory_size={self.memory_size}")
        parts.append(f"attn_type='{self.attn_type}'")
        if self.attn_type == "additive" and self.attention_size != self.query_size:
            parts.append(f"attention_size={self.attention_size}")
        if self.output_size != self.query_size:
            parts.append(f"output_size={self.output_size}")
        if self.output_bias != (self.attn_type == "additive"):
            parts.append(f"output_bias={self.output_bias}")
        return ", ".join(parts)
