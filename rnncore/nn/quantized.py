"""QuantizedLanguageModel: a LanguageModel with int8 or bf16 weights, for inference (issue 16).

``rnncore.quantize(model, "int8")`` makes one from a trained float LanguageModel (Embedding ->
unidirectional LSTM/GRU/RNN layers -> Linear), as ``torch.ao.quantization.quantize_dynamic``
does for PyTorch and ONNX Runtime's DynamicQuantizeLSTM for ONNX models:

- every weight matrix (each layer's W_ih, W_hh and, with projections, W_hr; the Linear head) is
  stored as symmetric int8 with one float32 scale per output row;
- at every step each product's input vector (the embedding, each layer's h) is quantized to u8
  with its own scale and zero point, multiplied in exact int32 (AVX-512-VNNI ``vpdpbusd`` where
  the CPU has it, widened AVX2 ``vpmaddwd`` otherwise), and scaled back to float32;
- the embedding, the biases, the cell arithmetic and the state stay float32.
The scheme and its kernels: csrc/quant/int8.h.

``rnncore.quantize(model, "bf16")`` stores the same matrices as bfloat16 (rounded to nearest
even; half the bytes of float32) and rounds each product's input to bf16, the sums in float32
(AVX-512-BF16 ``vdpbf16ps`` where the CPU has it, an exact emulation otherwise: csrc/quant/bf16.h).

It runs on the C++ decoding loop (rnncore._core.LMDecoder), so the same model serves
``sampling.generate``/``stream``/``beam_search`` (fed straight to them), ``forward`` (teacher
forcing, e.g. for ``rnncore.evaluate``'s perplexity) and ``target_log_prob``. It has no
backward: train the float model and quantize it again. ``rnncore.save``/``rnncore.load`` store
and restore it (the int8 weights and their scales as safetensors I8/F32 tensors).

Parameter names are the float model's, plus, for int8, a ``<name>_scale`` (rows,) float32 beside
every int8 matrix; bf16 matrices are uint16 arrays of the bf16 bits (numpy has no bfloat16).
"""
import numpy as np

from .. import _core
from .._checks import as_index_array, as_real_array, bounded_repr, cell_name, check_int, shape_str
from .._threads import exclusive, resolve_threads
from . import init
from .module import Module, Parameter

__all__ = ["QuantizedLanguageModel", "quantize"]

PRECISIONS = ("int8", "bf16")


class QuantizedLanguageModel(Module):
    """An int8 or bf16 LanguageModel for inference: ``rnncore.quantize(model, "int8" or "bf16")``.

    Args: vocab_size V, embedding_dim E, hidden_size H, num_layers L, cell (lstm, gru,
    rnn_tanh, rnn_relu), bias (each layer has b_ih and b_hh), decoder_bias (the head has one),
    batch_first. Keywords: proj_size (an LSTM with projections, 0 < P < H), precision ('int8', 'bf16'),
    threads. The constructor makes zero weights of those shapes (for rnncore.load); quantize()
    fills them from a float model.

    forward(tokens (T, B) ints, state=None) -> (logits (T, B, V) float32, new_state): state is
    h (L, B, R) or (h, c) for an LSTM (c (L, B, H)), R = P with projections, else H.
    target_log_prob(tokens, targets, state=None) -> (log-probabilities (T, B) float64, new_state).
    With batch_first, tokens are (B, T) and logits (B, T, V).
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers=1, cell="lstm", bias=True,
                 decoder_bias=True, batch_first=False, *, proj_size=0, precision="int8", threads=None):
        super().__init__()
        object.__setattr__(self, "training", False)  # inference only: always in eval mode
        fn = "QuantizedLanguageModel"
        self.vocab_size = check_int(vocab_size, "vocab_size", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.num_layers = check_int(num_layers, "num_layers", fn)
        self.cell = cell_name(cell, fn)
        self.proj_size = check_int(proj_size, "proj_size", fn, minimum=0)
        if self.proj_size and (self.cell != "lstm" or self.proj_size >= self.hidden_size):
            raise ValueError(f"{fn}: proj_size needs cell='lstm' and 0 < proj_size < hidden_size "
                             f"({self.hidden_size}), got proj_size={self.proj_size} with cell={self.cell!r}")
        _check_precision(precision, fn)
        self.precision = precision
        self.bias = bool(bias)
        self.decoder_bias = bool(decoder_bias)
        self.batch_first = bool(batch_first)
        self.threads = threads
        self.dtype = np.dtype(np.float32)
        self.adaptive_softmax = None
        V, E, H, P = self.vocab_size, self.embedding_dim, self.hidden_size, self.proj_size
        R = P or H
        G = {"lstm": 4, "gru": 3}.get(self.cell, 1)
        self.state_size = R

        def put(name, shape, dtype, value=0):
            # flat, under the float model's dotted names (its state-dict names); not attributes
            self._parameters[name] = Parameter(init.constant(shape, value, dtype))

        def matrix(name, rows, cols):
            if precision == "bf16":  # bf16 bits (numpy has no bfloat16)
                put(name, (rows, cols), np.uint16)
            else:
                put(name, (rows, cols), np.int8)
                put(name + "_scale", (rows,), np.float32, 1)

        put("encoder.weight", (V, E), np.float32)
        for layer in range(self.num_layers):
            matrix(f"rnn.weight_ih_l{layer}", G * H, E if layer == 0 else R)
            matrix(f"rnn.weight_hh_l{layer}", G * H, R)
            if self.bias:
                for b in ("ih", "hh"):
                    put(f"rnn.bias_{b}_l{layer}", (G * H,), np.float32)
            if P:
                matrix(f"rnn.weight_hr_l{layer}", P, H)
        matrix("decoder.weight", V, R)
        if self.decoder_bias:
            put("decoder.bias", (V,), np.float32)

    def _p(self, name):
        return self._parameters[name].data

    def config(self):
        """Constructor arguments that rebuild this model: ``type(self)(**model.config())``."""
        return dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, cell=self.cell, bias=self.bias, decoder_bias=self.decoder_bias,
                    batch_first=self.batch_first, proj_size=self.proj_size, precision=self.precision)

    def extra_repr(self):
        s = (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}, hidden_size={self.hidden_size}, "
             f"num_layers={self.num_layers}, cell={self.cell!r}, precision={self.precision!r}")
        return s + (f", proj_size={self.proj_size}" if self.proj_size else "")

    @property
    def weight_bytes(self):
        """Bytes of every weight the decoding loop reads per token (int8 matrices and their scales, or bf16 ones;
        the biases; not the embedding, of which it reads one row)."""
        return int(sum(p.data.nbytes for n, p in self._parameters.items() if n != "encoder.weight"))

    # -- what it cannot do ----------------------------------------------------------------------

    def train(self, mode=True):
        if mode:
            raise RuntimeError("QuantizedLanguageModel is for inference only (no backward): train the float "
                               "LanguageModel and quantize it again")
        return super().train(False)

    def to(self, dtype):
        raise TypeError(f"QuantizedLanguageModel: its weights are {self.precision}; .to(dtype) does not apply "
                        "(quantize the float model instead)")

    def backward(self, *args, **kwargs):
        raise RuntimeError("QuantizedLanguageModel has no backward: train the float LanguageModel and quantize it "
                           "again")

    def loss(self, *args, **kwargs):
        raise RuntimeError("QuantizedLanguageModel is for inference: use target_log_prob() or rnncore.evaluate()")

    # -- the decoding loop ------------------------------------------------------------------------

    def decoder_weights(self):
        """(cell, embedding, layers, w_out, b_out) as rnncore._core.LMDecoder takes them, each
        int8 matrix as a (q, scale) pair."""
        def weight(name):  # int8: (q, scale); bf16: the uint16 bits
            return self._p(name) if self.precision == "bf16" else (self._p(name), self._p(name + "_scale"))

        layers = []
        for layer in range(self.num_layers):
            entry = [weight(f"rnn.weight_{w}_l{layer}") for w in ("ih", "hh")]
            entry += [self._p(f"rnn.bias_{b}_l{layer}") if self.bias else None for b in ("ih", "hh")]
            if self.proj_size:
                entry.append(weight(f"rnn.weight_hr_l{layer}"))
            layers.append(tuple(entry))
        w_out = weight("decoder.weight")
        b_out = self._p("decoder.bias") if self.decoder_bias else None
        return self.cell, self._p("encoder.weight"), layers, w_out, b_out

    def _decoder(self, B):
        # A decoder per call: it packs the current weights (about a millisecond for millions of
        # them), so weights changed in place (load_state_dict, rnncore.load) are always the ones run.
        cell, emb, layers, w_out, b_out = self.decoder_weights()
        return _core.LMDecoder(cell, emb, layers, w_out, b_out, B, resolve_threads(self.threads))

    def _state(self, state, B, fn):
        L, H, R = self.num_layers, self.hidden_size, self.state_size
        if state is None:
            h = np.zeros((L, B, R), np.float32)
            return h, (np.zeros((L, B, H), np.float32) if self.cell == "lstm" else None)
        if self.cell == "lstm":
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{fn}: an LSTM's state is a pair (h, c), got {type(state).__name__}")
            h, c = state
            h = as_real_array(h, "h", fn, np.float32)
            c = as_real_array(c, "c", fn, np.float32)
            if c.shape != (L, B, H):
                raise ValueError(f"{fn}: c must have shape (L, B, H) = ({L}, {B}, {H}), got {shape_str(c.shape)}")
        else:
            h, c = as_real_array(state, "state", fn, np.float32), None
        if h.shape != (L, B, R):
            raise ValueError(f"{fn}: h must have shape (L, B, {'P' if self.proj_size else 'H'}) = ({L}, {B}, {R}), "
                             f"got {shape_str(h.shape)}")
        return np.ascontiguousarray(h), None if c is None else np.ascontiguousarray(c)

    def _tokens(self, tokens, name, fn):
        ids = as_index_array(tokens, name, fn)
        if ids.ndim != 2:
            raise ValueError(f"{fn}: {name} must have shape {'(B, T)' if self.batch_first else '(T, B)'}, got "
                             f"{shape_str(ids.shape)}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(f"{fn}: {name} must be ids in [0, {self.vocab_size}), got {int(ids[bad][0])}")
        return np.ascontiguousarray(ids if self.batch_first else ids.T, dtype=np.int64)  # (B, T)

    def _run(self, tokens, targets, state, logits, fn):
        ids = self._tokens(tokens, "tokens", fn)
        B = ids.shape[0]
        if B < 1:
            raise ValueError(f"{fn}: tokens must hold at least one stream (B >= 1), got shape {shape_str(ids.shape)}")
        tgt = None
        if targets is not None:
            tgt = self._tokens(targets, "targets", fn)
            if tgt.shape != ids.shape:
                raise ValueError(f"{fn}: targets must have the tokens' shape, got {shape_str(tgt.shape)}")
        h, c = self._state(state, B, fn)
        dec = self._decoder(B)
        dec.set_state(h, c)
        lp, out, _ = dec.teacher_force(ids, tgt, logits, by_layer=True)  # each layer's input products batched
        h, c = dec.get_state()
        return lp, out, (h, c) if self.cell == "lstm" else h

    @exclusive
    def forward(self, tokens, state=None):
        _, logits, new_state = self._run(tokens, None, state, True, "QuantizedLanguageModel.forward")
        if self.batch_first:
            logits = np.ascontiguousarray(logits.transpose(1, 0, 2))
        return logits, new_state

    @exclusive
    def target_log_prob(self, tokens, targets, state=None):
        """The log-probability (float64) of each target, shaped like tokens, and new_state."""
        lp, _, new_state = self._run(tokens, targets, state, False, "QuantizedLanguageModel.target_log_prob")
        return (lp if self.batch_first else np.ascontiguousarray(lp.T)), new_state

    # -- from a float model ----------------------------------------------------------------------

    @classmethod
    def from_model(cls, model, precision="int8", threads=None):
        fn = "rnncore.quantize"
        _check_quantizable(model, fn)
        rnn = model.rnn
        q = cls(model.vocab_size, model.encoder.weight.data.shape[1], rnn.hidden_size, rnn.num_layers, rnn.cell,
                bias=rnn.layer_parameters(0)[2] is not None, decoder_bias=model.decoder.bias is not None,
                batch_first=getattr(model, "batch_first", False), proj_size=getattr(rnn, "proj_size", 0) or 0,
                precision=precision, threads=model.threads if threads is None else threads)

        def put(name, w):
            w = np.ascontiguousarray(w, np.float32)
            if precision == "bf16":
                q._p(name)[...] = _core.to_bf16(w)
                return
            qw, scale = _core.quantize_rows_s8(w)
            q._p(name)[...] = qw
            q._p(name + "_scale")[...] = scale

        q._p("encoder.weight")[...] = model.encoder.weight.data
        for layer in range(rnn.num_layers):
            w_ih, w_hh, b_ih, b_hh = rnn.layer_parameters(layer)
            put(f"rnn.weight_ih_l{layer}", w_ih.data)
            put(f"rnn.weight_hh_l{layer}", w_hh.data)
            if q.bias:
                q._p(f"rnn.bias_ih_l{layer}")[...] = b_ih.data
                q._p(f"rnn.bias_hh_l{layer}")[...] = b_hh.data
            if q.proj_size:
                put(f"rnn.weight_hr_l{layer}", rnn.layer_projection(layer).data)
        put("decoder.weight", model.decoder.weight.data)
        if q.decoder_bias:
            q._p("decoder.bias")[...] = model.decoder.bias.data
        return q.eval()


def _check_quantizable(model, fn):
    """TypeError/ValueError saying which part of `model` int8 inference cannot run, and why."""
    from .models import LanguageModel

    if isinstance(model, QuantizedLanguageModel):
        raise TypeError(f"{fn}: the model is already quantized ({model.precision})")
    if not isinstance(model, LanguageModel):
        raise TypeError(f"{fn}: int8/bf16 inference runs rnncore.nn.LanguageModel (Embedding -> LSTM/GRU/RNN "
                        f"layers -> Linear) on the C++ decoding loop; {type(model).__name__} is not one (its layers run the "
                        "float training kernels, which have no int8/bf16 path)")
    rnn = model.rnn
    if rnn.bidirectional:
        raise ValueError(f"{fn}: model.rnn is bidirectional; the int8/bf16 loop runs left to right only")
    if model.adaptive_softmax is not None:
        raise ValueError(f"{fn}: model.decoder is an adaptive softmax; the int8/bf16 loop needs a Linear "
                         "head (its clusters have no reduced-precision kernel)")
    if np.dtype(rnn.dtype) != np.float32:
        raise TypeError(f"{fn}: the model is {np.dtype(rnn.dtype).name}; quantize a float32 model "
                        "(model.float() first)")
    for name, p in model.named_parameters():
        if not np.all(np.isfinite(p.data)):
            raise ValueError(f"{fn}: parameter {name} holds NaN or infinite values")


def quantize(model, precision="int8", threads=None):
    """A quantized copy of a trained float32 LanguageModel for inference: ``precision='int8'``
    stores every weight matrix as int8 with per-row scales, ``'bf16'`` as bfloat16 (see
    QuantizedLanguageModel). The float model is not changed. A model that cannot be quantized raises TypeError/ValueError
    naming the part and the reason."""
    _check_precision(precision, "rnncore.quantize")
    return QuantizedLanguageModel.from_model(model, precision, threads)


def _check_precision(precision, fn):
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{fn}: precision must be one of {', '.join(PRECISIONS)}, got {bounded_repr(precision)}")
