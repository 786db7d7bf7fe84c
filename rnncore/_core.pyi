"""Type stub of rnncore._core, the pybind11 extension (csrc/bindings/).

Written to match the extension: every public name, with the parameter names, order,
keyword-only markers and defaults of pybind11's own signatures (tests/test_stub.py checks
both ways, so a function added to the bindings without a stub entry fails the tests).
The types say what the bindings accept: arrays are float32/float64 numpy arrays unless a
docstring says otherwise (ids and lengths are int64), C-contiguous, checked at the boundary.

Shape letters: T time steps, B batch, I input size, H hidden size, G gates (1, 3 or 4),
V vocabulary, E embedding size, N rows, C / O / I columns.
"""
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[Any]
_Floats = npt.NDArray[np.floating[Any]]
_Ids = npt.NDArray[np.int64]

# -- recurrent layers (bind_recurrent.cpp) -------------------------------------------------


class RecurrentWorkspace:
    """What a recurrent forward saved for its backward (opaque)."""

    def __init__(self) -> None: ...
    @property
    def ready(self) -> bool:
        """True after a forward whose backward has not run yet."""
    @property
    def dtype(self) -> str:
        """'float32' or 'float64'."""
    @property
    def cell(self) -> str:
        """The cell kind of the last forward: 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru'."""
    @property
    def proj_size(self) -> int:
        """P of the last forward with projections (w_hr), else 0."""
    def trim(self) -> None:
        """Free what only the calls themselves use (each thread's packed copy of w_hh, scratch),
        keeping what backward needs; for callers that hold many workspaces at once (single-step
        cells). The next call allocates them again."""


def recurrent_forward(cell: str, x: _Floats, w_ih: _Floats, w_hh: _Floats, b_ih: Optional[_Floats] = None,
                      b_hh: Optional[_Floats] = None, h0: Optional[_Floats] = None, c0: Optional[_Floats] = None,
                      lengths: Optional[_Ids] = None, reverse: bool = False, out: Optional[_Floats] = None,
                      out_col: int = 0, threads: int = 1, workspace: Optional[RecurrentWorkspace] = None,
                      w_hr: Optional[_Floats] = None,
                      bf16: bool = False) -> tuple[_Floats, Optional[_Floats], RecurrentWorkspace]:
    """One recurrent layer, one direction, over a whole sequence.

    x (T, B, I); w_ih (G*H, I); w_hh (G*H, H); b_ih, b_hh (G*H,) or None; h0, c0 (B, H) or None;
    lengths int64 (B,) in [0, T] or None; out (T, B, *) receives the outputs in columns
    [out_col, out_col + H), zero past each length. A reverse layer runs each sequence backwards
    within its own length. Returns (h_n, c_n or None, workspace).

    LSTM with projections (PyTorch's proj_size): w_hr (P, H), 0 < P < H; then w_hh is (G*H, P),
    h0 and h_n are (B, P), the outputs fill columns [out_col, out_col + P); c0, c_n stay (B, H).

    bf16=True (float32 only): bfloat16 mixed precision: every product's operands rounded to bf16,
    float32 sums and cell state; the outputs and h_n come out bf16-valued; backward rounds the
    gradients that enter products.
    """


# In the extension dy_col, dh_n, dc_n, db_ih and db_hh have defaults (0 and None) although dx, a
# required argument, follows them, which Python's own syntax cannot say: here they have none.
def recurrent_backward(workspace: RecurrentWorkspace, dy: Optional[_Floats], dy_col: int, dh_n: Optional[_Floats],
                       dc_n: Optional[_Floats], w_ih: _Floats, w_hh: _Floats, dw_ih: _Floats, dw_hh: _Floats,
                       db_ih: Optional[_Floats], db_hh: Optional[_Floats], dx: _Floats, accumulate_dx: bool = False,
                       threads: int = 1, w_hr: Optional[_Floats] = None, dw_hr: Optional[_Floats] = None,
                       grad_norms: Optional[_Floats] = None) -> tuple[_Floats, Optional[_Floats]]:
    """Backpropagation through time for the last forward run on `workspace`.

    dy (T, B, *) gradient of the outputs, read from columns [dy_col, dy_col + H), or None;
    dh_n, dc_n (B, H) or None. Adds into dw_ih, dw_hh, db_ih, db_hh; writes dx (T, B, I), or adds
    to it when accumulate_dx. Returns (dh0, dc0 or None).

    After a forward with projections (w_hr (P, H)): w_hr and dw_hr (P, H) are required (dw_hr is
    added to), w_hh and dw_hh are (G*H, P), dy is read from P columns, dh_n and dh0 are (B, P).

    grad_norms: float64 (T, B) or None; overwritten with ||dL/dh_t|| of each sequence from the
    sweep itself (dy_t plus the carry from t+1; the P-wide h with projections), 0 where t >= length.
    """


# -- GEMM (bind_gemm.cpp) ------------------------------------------------------------------


def gemm(a: _Floats, b: _Floats, c: _Floats, trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0,
         beta: float = 0.0, threads: int = 1) -> None:
    """c = alpha * op(a) @ op(b) + beta * c in place (float32 or float64, C-contiguous)."""


def gemm_kernel() -> str:
    """The GEMM microkernel set in use: 'avx512', 'avx2' or 'generic' (those of the process's isa())."""


def gemm_config() -> dict[str, Any]:
    """The GEMM's tiles and cache blocks per dtype ({'float32': {kernel, mr, nr, mc, kc, nc},
    'float64': ...}) and the per-core cache sizes they were derived from ({'caches': {l1d, l2, l3,
    source}}; source is 'env' for RNNCORE_CACHE_SIZES, 'sysconf', 'cpuid' or 'default')."""


def gemm_threads(M: int, N: int, K: int, threads: int) -> int:
    """Threads a GEMM C (M, N) += A (M, K) B (K, N) runs on when given `threads`."""


def gemm_packed_test(a: _Floats, b: _Floats, trans_b: bool, beta: float, c: _Floats, repeat: int = 1) -> None:
    """Test hook: c = a @ op(b) + beta * c through PackedB::pack + gemm_packed (views with any row
    stride); with repeat > 1 the product is formed repeat times from one packing (for benchmarks;
    use beta = 0)."""


def gemm_strided_test(a: _Floats, b: _Floats, c: _Floats, trans_a: bool = False, trans_b: bool = False,
                      alpha: float = 1.0, beta: float = 0.0, threads: int = 1) -> None:
    """Test hook: gemm on 2-D views with contiguous rows and any row stride (leading dimensions)."""


# -- instruction sets, threads and activations (bind_system.cpp) ---------------------------


def isa() -> str:
    """The instruction set every kernel of this process uses: 'generic', 'avx2' or 'avx512' (the
    best the CPU supports, or RNNCORE_ISA's choice clamped to it; fixed at first use)."""


def supported_isas() -> list[str]:
    """The instruction sets this CPU can run, lowest first (each can be forced with RNNCORE_ISA)."""


# -- int8 inference (csrc/quant/int8.h) -------------------------------------------------------------

def int8_kernel() -> str:
    """The int8 product kernel this process runs: vnni512, avx2 or generic (chosen by RNNCORE_ISA and the CPU)."""


def quantize_rows_s8(w: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-row int8 quantization of w float32 (N, K): (q int8 (N, K), scale float32 (N,))."""


def quantize_u8(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.uint8], float, int]:
    """Dynamic u8 quantization of x float32 (K,) (ONNX's DynamicQuantizeLinear): (xq, scale, zero_point)."""


def int8_gemv_acc(q: npt.NDArray[np.int8], xq: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    """The exact int32 sums q int8 (N, K) @ xq uint8 (K,) of this process's kernel."""


def int8_gemv(q: npt.NDArray[np.int8], scale: npt.NDArray[np.float32], x: npt.NDArray[np.float32]
              ) -> npt.NDArray[np.float32]:
    """y (N,) = the int8 product of (q, scale) with x float32 (K,), x quantized dynamically to u8."""


def bf16_kernel() -> str:
    """The bf16 product kernel this process runs: avx512bf16, avx2 or generic (chosen by RNNCORE_ISA and the CPU)."""


def to_bf16(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """float32 -> bf16 bits (uint16), rounded to nearest even; denormals become signed zeros."""


def gemm_bf16_kernel() -> str:
    """The bf16 GEMM kernel this process runs: avx512bf16 (vdpbf16ps), avx2 or generic."""


def gemm_bf16(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], trans_a: bool = False, trans_b: bool = False,
              c: Optional[npt.NDArray[np.float32]] = None, beta: float = 0.0,
              threads: Optional[int] = 1, per_step: bool = False) -> npt.NDArray[np.float32]:
    """c (M, N) = op(a) @ op(b) (+ c when beta=1), operands rounded to bf16, float32 sums in vdpbf16ps's order;
    per_step=True: the recurrent layers' per-step product (one thread), the same bits."""


def round_bf16(x: npt.NDArray[np.float32],
               out: Optional[npt.NDArray[np.float32]] = None) -> npt.NDArray[np.float32]:
    """x float32 rounded to bfloat16 (nearest even) and widened back to float32 (out may be x)."""


def bf16_gemv(w: npt.NDArray[np.uint16], x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """y (N,) = w (bf16 bits (N, K)) @ x float32 (K,), x rounded to bf16, float32 sums in bf16.h's order."""


def thread_limit() -> int:
    """The largest thread count any call accepts: max(256, 4 x processors); larger counts raise
    ValueError."""


def max_threads() -> int:
    """Processors OpenMP can use (1 without OpenMP)."""


def openmp_enabled() -> bool:
    """True when the extension was built with OpenMP."""


def recurrent_threads(cell: str, B: int, H: int, threads: int, proj_size: int = 0) -> int:
    """Threads the time loop of a layer of this cell, batch B and hidden size H (and proj_size,
    an LSTM's projection, 0 for none) runs on when given `threads`."""


def vmath(fn: str, x: npt.ArrayLike, kernel: str | None = None) -> npt.NDArray[np.float32]:
    """Apply a vectorised float32 activation (for tests of its accuracy) with the process's kernel,
    or with `kernel` ('generic', 'avx2', 'avx512': any this CPU supports; ValueError otherwise)."""


def vmath_kernel() -> str:
    """The float32 activation kernel chosen for this process: 'avx512', 'avx2' or 'generic' (those of isa())."""


# -- layers and losses (bind_ops.cpp) ------------------------------------------------------


def embedding_forward(weight: _Floats, ids: _Ids, threads: int = 1) -> _Floats:
    """Embedding gather: weight (V, E) float32/float64; ids int64, any shape (...), each in [0, V).
    Returns out (..., E). Raises ValueError naming the first out-of-range id and its position
    before reading the table."""


def embedding_backward(dout: _Floats, ids: _Ids, dweight: _Floats, padding_idx: int = -1, threads: int = 1) -> None:
    """Embedding scatter-add: dweight (V, E) += dout (..., E) rows at ids (...); the row padding_idx
    (-1: none) receives nothing. Deterministic for any thread count."""


def linear_forward(x: _Floats, weight: _Floats, bias: Optional[_Floats] = None, threads: int = 1) -> _Floats:
    """y (N, O) = x (N, I) weight (O, I)^T + bias (O,) (bias may be None)."""


def linear_backward(dy: _Floats, x: _Floats, weight: _Floats, dweight: _Floats, dbias: Optional[_Floats] = None,
                    need_dx: bool = True, threads: int = 1) -> Optional[_Floats]:
    """Backward of linear_forward: dweight (O, I) += dy^T x; dbias (O,) += column sums of dy (if
    not None). Returns dx (N, I) = dy weight, or None when need_dx is False."""


def layernorm_forward(x: _Floats, weight: Optional[_Floats] = None, bias: Optional[_Floats] = None,
                      eps: float = 1e-05, threads: int = 1) -> tuple[_Floats, _Floats, _Floats]:
    """Layer norm over the last dimension: x (N, C); weight, bias (C,) or None.
    Returns (y (N, C), mean (N,), rstd (N,)); mean and rstd are what backward needs."""


def layernorm_backward(dy: _Floats, x: _Floats, mean: _Floats, rstd: _Floats, weight: Optional[_Floats] = None,
                       dweight: Optional[_Floats] = None, dbias: Optional[_Floats] = None,
                       threads: int = 1) -> _Floats:
    """Backward of layernorm_forward: returns dx (N, C); adds into dweight, dbias (C,) when given."""


def adaptive_softmax(x: _Floats, targets: _Ids, head_w: _Floats, head_b: Optional[_Floats], proj: list, out: list,
                     cutoffs: list[int], row_weights: Optional[_Floats] = None, dhead_w: Optional[_Floats] = None,
                     dhead_b: Optional[_Floats] = None, dproj: Optional[list] = None, dout: Optional[list] = None,
                     threads: int = 1) -> tuple[_Floats, Optional[_Floats]]:
    """Fused adaptive softmax: returns (output (N,), dx (N, I) or None).

    x (N, I) float32/float64; targets (N,) int64 in [0, V); head_w (S + C, I), head_b (S + C,)
    or None; proj[i] (h_i, I), out[i] (o_i, h_i); cutoffs [S, ..., V] (C + 1 values). output[n]
    is log p(targets[n] | x[n]). With row_weights (N,), the gradient of
    sum_n row_weights[n] * -output[n] is returned as dx and added into dhead_w, dhead_b,
    dproj[i], dout[i].
    """


def cross_entropy(logits: _Floats, targets: _Ids, mask: Optional[_Floats] = None, ignore_index: int = -100,
                  reduction: str = 'mean', compute_grad: bool = True, return_probs: bool = False, threads: int = 1
                  ) -> tuple[Union[float, _Floats], Optional[_Floats], Optional[_Floats], float]:
    """Fused softmax + cross-entropy over the last dimension.

    logits (..., V) float32/float64; targets int64 (...) class indices or ignore_index; mask (...)
    per-position weights >= 0 (same dtype as logits) or None. reduction 'mean' (divides by the
    total weight of the counted positions; 0 when none counts), 'sum' or 'none'.
    Returns (loss, dlogits or None, probs or None, total_weight): loss is a float (an array (...)
    for 'none'); dlogits (..., V) is the gradient of the loss. Raises ValueError for a target out
    of range or a bad mask value, FloatingPointError when the loss is NaN or infinite.
    """


# -- optimizers (bind_optim.cpp) -----------------------------------------------------------


def sgd_step(param: _Floats, grad: _Floats, momentum_buffer: Optional[_Floats] = None, *, lr: float,
             momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
             maximize: bool = False, first: bool = False, threads: int = 1) -> None:
    """One SGD update of `param` in place (PyTorch's rule).

    param, grad, momentum_buffer: same shape and dtype (float32/float64), C-contiguous; the buffer
    is required exactly when momentum != 0 and is overwritten with the gradient when `first`.
    """


def adam_step(param: _Floats, grad: _Floats, exp_avg: _Floats, exp_avg_sq: _Floats,
              max_exp_avg_sq: Optional[_Floats] = None, *, step: int, lr: float, beta1: float, beta2: float,
              eps: float, weight_decay: float = 0.0, decoupled: bool = False, amsgrad: bool = False,
              maximize: bool = False, threads: int = 1) -> None:
    """One Adam (decoupled=False) or AdamW (decoupled=True) update of `param` in place.

    step counts this update (>= 1). max_exp_avg_sq is required exactly when amsgrad.
    """


def rmsprop_step(param: _Floats, grad: _Floats, square_avg: _Floats, grad_avg: Optional[_Floats] = None,
                 momentum_buffer: Optional[_Floats] = None, *, lr: float, alpha: float, eps: float,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, maximize: bool = False,
                 threads: int = 1) -> None:
    """One RMSprop update of `param` in place. grad_avg is required exactly when centered,
    momentum_buffer exactly when momentum > 0."""


def adagrad_step(param: _Floats, grad: _Floats, sum: _Floats, *, step: int, lr: float, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False, threads: int = 1) -> None:
    """One Adagrad update of `param` in place; step counts this update (>= 1)."""


def norm_power_sum(arrays: list[_Floats], norm_type: float = 2.0, threads: int = 1) -> float:
    """sum |x|^p over every element of every array (max |x| when p is inf), in double.

    Arrays are combined in list order, each summed in a fixed order (thread-count independent).
    """


def scale_(arrays: list[_Floats], scale: float, threads: int = 1) -> None:
    """Multiply every array in place by `scale`."""


def clamp_(arrays: list[_Floats], lo: float, hi: float, threads: int = 1) -> None:
    """Clamp every array in place to [lo, hi] (NaN stays NaN)."""


# -- generation (bind_generate.cpp) --------------------------------------------------------


class LMDecoder:
    """Decoding loop of an Embedding -> RNN layers -> Linear language model.

    LMDecoder(cell, embedding (V, E), layers [(w_ih, w_hh, b_ih|None, b_hh|None), ...], w_out (V, H),
    b_out (V,)|None, batch, threads). The arrays must stay unchanged while it lives; their packed
    copies are made once here.

    An lstm with projections (PyTorch's proj_size P): each layer is (w_ih, w_hh, b_ih, b_hh, w_hr)
    with w_hr (P, H), 0 < P < H, the same P for every layer; then w_hh is (G*H, P), a layer after
    the first reads P features, w_out is (V, P), and the state h is (L, B, P) (c stays (L, B, H)).
    """

    def __init__(self, cell: str, embedding: _Floats,
                 layers: list[tuple[_Floats, ...]], w_out: _Floats,
                 b_out: Optional[_Floats], batch: int, threads: int) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def batch(self) -> int: ...
    @property
    def done(self) -> npt.NDArray[np.bool_]:
        """(B,): whether each stream has produced a stop token."""
    def get_state(self) -> tuple[_Floats, Optional[_Floats]]:
        """The state (h, c or None), each (L, B, H), before the next input token is fed."""
    def set_state(self, h: _Floats, c: Optional[_Floats] = None) -> None: ...
    def set_next_tokens(self, tokens: _Ids) -> None:
        """The next input token of each stream, int64 (B,)."""
    def mark_seen(self, tokens: _Ids) -> None:
        """Mark tokens (B, P) as seen by each stream (for the repetition penalty)."""
    def seed(self, seed: int) -> None:
        """Seed every stream's generator: stream b draws from (seed, b) alone."""
    def sample(self, n: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, stop_tokens: Optional[_Ids] = None) -> tuple[_Ids, int]:
        """Run up to n steps; returns (tokens (B, n) with -1 after a stream is done, steps run)."""
    def step_logits(self) -> _Floats:
        """Feed the next tokens and return the logits (B, V) without choosing (advances the state)."""
    def teacher_force(self, tokens: _Ids, targets: Optional[_Ids] = None, return_logits: bool = False,
                      by_layer: bool = False) -> tuple[Optional[npt.NDArray[np.float64]], Optional[_Floats], int]:
        """Teacher forcing: feed tokens (B, n) one step at a time from the current state. Returns (logprob,
        logits, steps): logprob (B, n) float64, log p(targets[b, s]) after step s, when targets (B, n) are
        given; logits (n, B, V) when return_logits; with neither, the output layer is skipped (reading a
        prime). The next input tokens are left as the last ones fed. by_layer: the same values computed
        layer by layer over chunks of steps (each layer's input products for a chunk at once); a non-finite
        logit then still raises, but after all n steps."""
    def beam_search(self, max_len: int, alpha: float = 0.0, n_best: int = 1, stop_tokens: Optional[_Ids] = None
                    ) -> list[tuple[_Ids, float, float, bool]]:
        """Beam search (width = batch) from stream 0's state and next token; returns
        [(tokens, score, normalized score, finished), ...] best first."""


# -- attention (bind_attention.cpp) ----------------------------------------------------------
#
# Letters: Tq queries per sequence, S source positions, Hq query width, Hm memory width,
# A additive units, Ho output width, K key width (dot Hm, general Hq, additive A).
# weights = (kind, w_in, w_q, b_q, w_k, v, w_out, b_out): kind 'dot' | 'general' | 'additive'
# (or 'mlp', 'concat', 'bahdanau'); w_in (Hm, Hq) general; w_q (A, Hq), b_q (A,) or None,
# w_k (A, Hm), v (1, A) or (A,) additive; w_out (Ho, Hm + Hq); b_out (Ho,) or None; None where
# a kind has no such weight (rnncore.nn.Attention.weights_for_core builds it).
_AttentionWeights = tuple[str, Optional[_Floats], Optional[_Floats], Optional[_Floats], Optional[_Floats],
                          Optional[_Floats], _Floats, Optional[_Floats]]


def attention_keys(memory: _Floats, weights: _AttentionWeights, threads: int = 1) -> _Floats:
    """Attention keys of a memory bank: memory (S, B, Hm) -> keys (S, B, K): general W_in^T m
    (K = Hq), additive W_k m (K = A); dot returns memory itself."""


def attention_forward(query: _Floats, memory: _Floats, weights: _AttentionWeights, keys: Optional[_Floats] = None,
                      memory_lengths: Optional[_Ids] = None,
                      threads: int = 1) -> tuple[_Floats, _Floats, _Floats, Optional[_Floats]]:
    """Masked global attention: query (Tq, B, Hq), memory (S, B, Hm), keys from attention_keys
    (None: computed here), memory_lengths (B,) int64 in [1, S] (None: all S).
    Returns (attn_h (Tq, B, Ho), alpha (Tq, B, S) exactly 0 past each length, context
    (Tq, B, Hm), saved): saved is the (Tq, B, S, A) tanh for additive attention, else None."""


def attention_backward(grad_attn_h: _Floats, grad_alpha: Optional[_Floats], query: _Floats, memory: _Floats,
                       keys: Optional[_Floats], memory_lengths: Optional[_Ids], alpha: _Floats, context: _Floats,
                       attn_h: _Floats, saved: Optional[_Floats], weights: _AttentionWeights,
                       grads: Optional[tuple] = None, need_dquery: bool = True, need_dmemory: bool = True,
                       threads: int = 1) -> tuple[Optional[_Floats], Optional[_Floats]]:
    """Backward of attention_forward and attention_keys: grad_attn_h (Tq, B, Ho), grad_alpha
    (Tq, B, S) or None, the rest what attention_forward was given and returned. grads =
    (dw_in, dw_q, db_q, dw_k, dv, dw_out, db_out), each None or shaped like its weight, added
    into. Returns (grad_query (Tq, B, Hq) or None, grad_memory (S, B, Hm) or None), grad_memory
    exactly 0 past each length."""


# -- seq2seq decoding (bind_seq2seq.cpp) -----------------------------------------------------------
#
# A hypothesis: (tokens int64 (n,), score, normalized, finished, attention (n, S) or None).
_Seq2SeqHypothesis = tuple[_Ids, float, float, bool, Optional[_Floats]]


class Seq2SeqDecoder:
    """Decoding loop of an attentional encoder-decoder's decoder.

    Seq2SeqDecoder(cell, embedding (V, E), layers [(w_ih, w_hh, b_ih|None, b_hh|None), ...],
    attention (None or a weights tuple), input_feed, w_out (V, O), b_out (V,)|None, threads).
    layers[0].w_ih is (G*H, E + Ho) with input feeding ([x ; attn_h_prev], x columns first),
    else (G*H, E); later layers (G*H, H). attention: rnncore.nn.Attention.weights_for_core()'s
    tuple with Hq = H; O = Ho with attention, else H. The arrays must stay unchanged while it lives.
    """

    def __init__(self, cell: str, embedding: _Floats, layers: list[tuple[_Floats, ...]],
                 attention: Optional[_AttentionWeights], input_feed: bool, w_out: _Floats,
                 b_out: Optional[_Floats], threads: int) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def num_layers(self) -> int: ...
    @property
    def memory_size(self) -> int: ...
    @property
    def has_attention(self) -> bool: ...
    @property
    def input_feed(self) -> bool: ...
    def decode(self, memory: Optional[_Floats], memory_lengths: Optional[_Ids], h0: Optional[_Floats],
               c0: Optional[_Floats], bos: int, eos: int, max_len: Union[int, _Ids], method: str = "greedy",
               beam_width: int = 5, n_best: int = 1, length_penalty: float = 0.0, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None,
               return_attention: bool = False) -> list[list[_Seq2SeqHypothesis]]:
        """Decode every source: memory (S, B, Hm) (None without attention: then h0 gives B),
        memory_lengths (B,) int64 in [1, S] or None, h0/c0 (L, B, H) or None (zeros), max_len an
        int >= 1 or (B,) int64. Returns, per source, its hypotheses best first."""
    def forced(self, memory: Optional[_Floats], memory_lengths: Optional[_Ids], h0: Optional[_Floats],
               c0: Optional[_Floats], tokens: _Ids,
               return_attention: bool = False) -> tuple[_Floats, Optional[_Floats]]:
        """Teacher forcing: feed tokens (T, B) int64 step by step; returns (logits (T, B, V),
        alpha (T, B, S) or None)."""


# -- the input-feeding attentional decoder (bind_input_feed.cpp) ----------------------------
# S source positions, Hm memory width, Ho attentional-state width, L layers.


class AttnDecoderWorkspace:
    """What an input-feeding decoder forward saved for its backward (opaque)."""

    def __init__(self) -> None: ...
    @property
    def ready(self) -> bool:
        """True after a forward whose backward has not run yet."""
    @property
    def dtype(self) -> str:
        """'float32' or 'float64'."""
    @property
    def cell(self) -> str:
        """The cell kind of the last forward: 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru'."""


def attn_decoder_forward(cell: str, x: _Floats, memory: _Floats, memory_lengths: Optional[_Ids],
                         w_ih: list[_Floats], w_hh: list[_Floats], b_ih: Optional[list[Optional[_Floats]]],
                         b_hh: Optional[list[Optional[_Floats]]], attention: tuple[Any, ...],
                         h0: Optional[_Floats] = None, c0: Optional[_Floats] = None, feed0: Optional[_Floats] = None,
                         masks: Optional[_Floats] = None, threads: int = 1,
                         workspace: Optional[AttnDecoderWorkspace] = None
                         ) -> tuple[_Floats, _Floats, _Floats, Optional[_Floats], AttnDecoderWorkspace]:
    """Luong's input-feeding attentional decoder over a whole target sequence, in one call.

    x (T, B, E); memory (S, B, Hm); memory_lengths int64 (B,) in [1, S] or None (all S);
    w_ih, w_hh: lists of L arrays, w_ih[0] (G*H, E + Ho) (x columns first, then the feed),
    w_ih[l > 0] (G*H, H), w_hh[l] (G*H, H); b_ih, b_hh: lists of L arrays (G*H,) or None entries,
    or None; attention: the tuple of rnncore.nn.Attention.weights_for_core() (its query size is H);
    h0, c0 (L, B, H) or None (zeros; c0 lstm only); feed0 (B, Ho) or None (zeros); masks
    (L-1, T, B, H) inter-layer dropout multipliers or None. Returns (attn_h (T, B, Ho),
    alpha (T, B, S), h_n (L, B, H), c_n or None, workspace).
    """


def attn_decoder_backward(workspace: AttnDecoderWorkspace, grad_attn_h: Optional[_Floats], w_ih: list[_Floats],
                          w_hh: list[_Floats], attention: tuple[Any, ...], dw_ih: list[_Floats],
                          dw_hh: list[_Floats], db_ih: Optional[list[Optional[_Floats]]] = None,
                          db_hh: Optional[list[Optional[_Floats]]] = None,
                          attention_grads: Optional[tuple[Optional[_Floats], ...]] = None,
                          grad_h_n: Optional[_Floats] = None, grad_c_n: Optional[_Floats] = None,
                          grad_alpha: Optional[_Floats] = None, threads: int = 1
                          ) -> tuple[_Floats, _Floats, _Floats, Optional[_Floats], _Floats]:
    """Backpropagation through time for the last attn_decoder_forward run on `workspace`.

    Adds into dw_ih, dw_hh, db_ih, db_hh and the attention gradients (the 7-tuple of
    Attention.grads_for_core()). Returns (dx (T, B, E), dmemory (S, B, Hm), dh0 (L, B, H),
    dc0 or None, dfeed0 (B, Ho)); dmemory is exactly 0 at positions s >= memory_lengths[b].
    """


# -- streaming (bind_stream.cpp) ------------------------------------------------------------


class RecurrentStream:
    """A stacked unidirectional recurrent network fed chunk by chunk, keeping its state.

    weights: one (w_ih, w_hh, b_ih, b_hh, w_hr) tuple per layer (PyTorch layout; biases and w_hr
    may be None), packed once. feed(x (T, B, I), out=None) -> (T, B, R), 1 <= T <= capacity;
    without `out` a view of the stream's own buffer, overwritten by the next feed.
    Bit-identical to a whole-sequence forward over the concatenated chunks; bf16=True (float32
    weights): bfloat16 mixed precision, bit for bit the layer's forward with bf16=True.
    """

    def __init__(self, cell: str, weights: list[tuple[Any, ...]], batch_size: int, capacity: int,
                 threads: int = 1, bf16: bool = False) -> None: ...
    @property
    def bf16(self) -> bool: ...
    def feed(self, x: _Floats, out: Optional[_Floats] = None) -> _Floats: ...
    def load_weights(self, weights: list[tuple[Any, ...]]) -> None: ...
    def reserve(self, capacity: int) -> None: ...
    def reset(self) -> None: ...
    def get_state(self) -> tuple[_Floats, Optional[_Floats]]: ...
    def set_state(self, h: _Floats, c: Optional[_Floats] = None) -> None: ...
    @property
    def allocations(self) -> int:
        """Buffer allocations feed() has made over the stream's life (0 while chunks fit)."""
    @property
    def capacity(self) -> int: ...
    @property
    def threads(self) -> int:
        """Threads the time loops run on."""
    @property
    def num_layers(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def cell(self) -> str: ...
# -- mean squared error (bind_ops.cpp; issue 14, forecasting) ------------------------------


def mse_loss(input: _Floats, target: _Floats, mask: Optional[_Floats] = None, reduction: str = 'mean',
             compute_grad: bool = True, threads: int = 1) -> tuple[Union[float, _Floats], Optional[_Floats], float]:
    """Fused mean squared error: the loss and its gradient with respect to input in one sweep.

    input, target (..., F) float32/float64, the same shape and dtype; mask None, or weights >= 0
    (same dtype) shaped like input (one per element) or like input without its last dimension
    (one per position, e.g. (T, B) for (T, B, F)). reduction 'mean' (divides by the total weight
    over all elements; 0 when it is 0), 'sum' or 'none'.
    Returns (loss, dinput or None, total_weight): loss is a float (an array (..., F) for 'none').
    Raises ValueError for NaN or infinite values in input or target, or a bad mask value, and
    FloatingPointError when the squared errors overflow.
    """


def output_recurrent_free_run(x: _Floats, w_ih: _Floats, w_oh: _Floats, b_h: Optional[_Floats], w_ho: _Floats,
                              b_o: Optional[_Floats] = None, y0: Optional[_Floats] = None,
                              threads: int = 1) -> _Floats:
    """The output-recurrent network (Goodfellow et al. fig. 10.4) run free on its own outputs.

    h_t = tanh(w_ih x_t + w_oh y_{t-1} + b_h), y_t = w_ho h_t + b_o, y_{-1} = y0 (None: zeros).
    x (T, B, I); w_ih (H, I); w_oh (H, O); b_h (H,) or None; w_ho (O, H); b_o (O,) or None;
    y0 (B, O) or None. Returns y (T, B, O). One input GEMM over all steps, then two thin GEMMs a step.
    """
# -- one cell step on a chosen kernel set (bind_cells.cpp) ---------------------------------


def cells_kernel() -> str:
    """The fused float32 cell kernels of this process: 'avx512', 'avx2' or 'generic' (the cells'
    portable loops), those of isa()."""


def cell_forward_test(cell: str, gates: _Floats, hg: _Floats, h_prev: _Floats, c_prev: _Floats | None = None,
                      bias: _Floats | None = None, b_hn: _Floats | None = None, kernel: str | None = None,
                      units: tuple[int, int] | None = None, repeat: int = 1) -> dict[str, Any]:
    """Test hook: one forward step of `cell` on every row, on the kernel set `kernel` (None: the
    process's; 'generic': the portable loops, whose activations are the process's; 'avx2', 'avx512':
    the fused float32 kernels, any this CPU supports). gates (B, G*H) x-projections, hg (B, G*n) the
    slice's W_hh h_prev for units = (lo, hi) (default (0, H), n = hi - lo), h_prev (B, H), c_prev
    (B, H) lstm only, bias (G*H) fused biases, b_hn (H) gru only. Returns {'gates', 'h', and 'c'
    (lstm) or 'hn' (gru), 'seconds'}: new arrays (the inputs are not written; units outside the
    slice keep their input / zero); with repeat > 1 the step runs repeat times from the same inputs
    and 'seconds' is the median time of one step over all rows (for benchmarks)."""


def cell_backward_test(cell: str, gates: _Floats, h_prev: _Floats, h: _Floats, dh_carry: _Floats,
                       dy: _Floats | None = None, c_prev: _Floats | None = None, c: _Floats | None = None,
                       hn: _Floats | None = None, dc: _Floats | None = None, kernel: str | None = None,
                       units: tuple[int, int] | None = None, repeat: int = 1) -> dict[str, Any]:
    """Test hook: one backward step of `cell` on every row (kernel, units, repeat as
    cell_forward_test). gates (B, G*H) saved activations, h_prev, h, dh_carry, dy (B, H); lstm:
    c_prev, c, dc (B, H); gru: hn (B, H) the saved W_hn h + b_hn. Returns {'gates' (pre-activation
    gradients), 'dh_carry', 'dc' (lstm), 'hn' (gru: dn * r), 'seconds'}."""
