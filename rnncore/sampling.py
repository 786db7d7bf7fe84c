"""Text generation from a LanguageModel: greedy, temperature, top-k, top-p, repetition penalty,
beam search, and streaming. The whole autoregressive loop runs in C++ (rnncore._core.LMDecoder)
with the GIL released; Python only prepares the prime and reads the result.

A prime (prompt) of P >= 1 tokens is read through the sequence kernels first (all but its
last token, in one call); its last token is the first input of the decoding loop. Each of B
streams has its own generator, seeded from (seed, stream index): the same seed gives the same
text whatever the thread count.

Reliability: generate(), stream() and beam_search() may be called on one model from several
threads at once (each call has its own decoder and reads the prime without touching the
layers' saved state); the model's parameters must not change meanwhile. One Decoder object
runs one call at a time (another thread's call raises RuntimeError). A step whose logits
hold NaN or +inf (or are all -inf) raises FloatingPointError naming the stream and step, as
model.loss() does; Ctrl-C raises KeyboardInterrupt within a millisecond or so of work.
"""
import dataclasses
from typing import Any, List, NamedTuple, Optional

import numpy as np

from . import _core
from ._checks import as_index_array, as_real_array, cell_name, check_allocation, check_int, check_real, shape_str
from ._threads import resolve_threads

__all__ = ["generate", "stream", "beam_search", "Decoder", "DecoderParts", "seq2seq_decode"]


def _check_model(model, fn):
    if hasattr(model, "decoder_weights"):  # nn.QuantizedLanguageModel: checked when it was made
        return
    rnn = getattr(model, "rnn", None)
    needed = ("encoder", "decoder", "vocab_size")
    if rnn is None or any(not hasattr(model, a) for a in needed):
        raise TypeError(f"{fn}: model must be an rnncore.nn.LanguageModel (Embedding -> RNN -> Linear), "
                        f"got {type(model).__name__}")
    if rnn.bidirectional:
        raise ValueError(f"{fn}: a bidirectional model cannot generate left to right")
    if getattr(model, "adaptive_softmax", None) is not None:
        raise ValueError(f"{fn}: generation reads a Linear output layer; this model has an adaptive softmax")


def _check_tokenizer(model, tokenizer, fn):
    if tokenizer is None:
        return
    size = getattr(tokenizer, "vocab_size", None)
    if size is None:
        size = len(tokenizer)
    if size != model.vocab_size:
        raise ValueError(f"{fn}: the tokenizer has {size} symbols but the model's vocabulary has "
                         f"{model.vocab_size}: they were not made for each other")


def _prime_ids(model, prime, tokenizer, fn):
    """The prime as int64 (B, P) and whether it was a single stream."""
    if isinstance(prime, str):
        if tokenizer is None:
            raise TypeError(f"{fn}: a text prime needs tokenizer=...; otherwise pass token ids")
        prime = tokenizer.encode(prime)
    ids = as_index_array(prime, "prime", fn)
    if ids.ndim == 1 and ids.shape[0] == 0:
        raise ValueError(f"{fn}: prime must hold at least one token (generation starts from its last one), "
                         "got an empty prime")
    single = ids.ndim == 1
    if single:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"{fn}: prime must have shape (P,) or (B, P), got {shape_str(ids.shape)}")
    if ids.shape[1] < 1 or ids.shape[0] < 1:
        raise ValueError(f"{fn}: prime must hold at least one token per stream, got shape {shape_str(ids.shape)}")
    bad = (ids < 0) | (ids >= model.vocab_size)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        where = pos[1] if single else list(pos)
        raise ValueError(f"{fn}: prime token {int(ids[pos])} at position {where} is outside the vocabulary "
                         f"[0, {model.vocab_size})")
    return np.ascontiguousarray(ids), single


def _sampling_options(temperature, top_k, top_p, repetition_penalty, fn):
    temperature = check_real(temperature, "temperature", fn, at_least=0.0, finite=True)
    top_k = check_int(top_k, "top_k", fn, optional=True)
    top_p = check_real(top_p, "top_p", fn, above=0.0, at_most=1.0, optional=True)
    repetition_penalty = check_real(repetition_penalty, "repetition_penalty", fn, above=0.0, finite=True)
    return dict(temperature=temperature, top_k=top_k or 0, top_p=1.0 if top_p is None else top_p,
                repetition_penalty=repetition_penalty)


def _stop_list(model, stop_tokens, fn):
    if stop_tokens is None:
        return []
    stops = np.atleast_1d(as_index_array(stop_tokens, "stop_tokens", fn)).ravel()
    bad = (stops < 0) | (stops >= model.vocab_size)
    if bad.any():
        raise ValueError(f"{fn}: stop token {int(stops[bad][0])} is outside the vocabulary [0, {model.vocab_size})")
    return [int(t) for t in stops]


class Decoder:
    """A prepared decoding loop over a model's current weights (packed once).

    The model's parameters must not change while the decoder is used. Most code wants
    generate(), stream() or beam_search() instead. Every method checks its arguments as the
    rest of the API does (TypeError/ValueError naming the argument) before the loop in C++
    (rnncore._core.LMDecoder) runs.
    """

    def __init__(self, model, batch, threads=None, fn="Decoder"):
        _check_model(model, fn)
        batch = check_int(batch, "batch", fn)
        self.model = model
        threads = resolve_threads(threads if threads is not None else model.threads)
        if hasattr(model, "decoder_weights"):  # int8 weights (nn.QuantizedLanguageModel)
            self._dtype = np.float32
            self._core = _core.LMDecoder(*model.decoder_weights(), batch, threads)
            return
        rnn = model.rnn
        self._dtype = rnn.dtype
        layers = []
        for layer in range(rnn.num_layers):
            w_ih, w_hh, b_ih, b_hh = rnn.layer_parameters(layer)
            entry = (w_ih.data, w_hh.data, None if b_ih is None else b_ih.data, None if b_hh is None else b_hh.data)
            w_hr = rnn.layer_projection(layer) if rnn.cell == "lstm" else None
            layers.append(entry if w_hr is None else entry + (w_hr.data,))
        bias = model.decoder.bias
        self._core = _core.LMDecoder(rnn.cell, model.encoder.weight.data, layers, model.decoder.weight.data,
                                     None if bias is None else bias.data, batch, threads)

    @property
    def batch(self):
        return self._core.batch

    @property
    def vocab_size(self):
        return self._core.vocab_size

    @property
    def done(self):
        """(B,) bool: whether each stream has produced a stop token."""
        return self._core.done

    def _tokens(self, tokens, name, fn, per_stream):
        """tokens as int64 (B,) (per_stream False) or (B, P) (True), each in the vocabulary."""
        ids = as_index_array(tokens, name, fn)
        B = self.batch
        if ids.ndim != 1 + per_stream or ids.shape[0] != B:
            want = f"(B, P) = ({B}, P)" if per_stream else f"(B,) = ({B},)"
            raise ValueError(f"{fn}: {name} must have shape {want}, got {shape_str(ids.shape)}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            pos = [int(i) for i in np.argwhere(bad)[0]]
            raise ValueError(f"{fn}: {name} token {int(ids[tuple(pos)])} at position {pos} is outside the "
                             f"vocabulary [0, {self.vocab_size})")
        return np.ascontiguousarray(ids)

    def prime(self, ids):
        """Read a prime (B, P): all but the last token through the sequence kernels; the last
        token becomes every stream's next input."""
        ids = self._tokens(ids, "ids", "Decoder.prime", True)
        if ids.shape[1] < 1:
            raise ValueError(f"Decoder.prime: ids must hold at least one token per stream, got shape "
                             f"{shape_str(ids.shape)}")
        if ids.shape[1] > 1 and hasattr(self.model, "decoder_weights"):
            self._core.teacher_force(np.ascontiguousarray(ids[:, :-1]))  # int8: the loop's own products
        elif ids.shape[1] > 1:
            h, c = _read_prime(self.model, ids[:, :-1])
            self._core.set_state(h, c)
        self._core.set_next_tokens(np.ascontiguousarray(ids[:, -1]))
        self._core.mark_seen(ids)

    def seed(self, seed):
        """Seed every stream's generator (an int in [0, 2**64)): stream b draws from (seed, b) alone."""
        self._core.seed(check_int(seed, "seed", "Decoder.seed", minimum=0, maximum=2**64 - 1))

    def sample(self, n, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, stop_tokens=None):
        """Run up to n steps; returns (tokens (B, n) with -1 after a stream is done, steps run).
        top_k 0 (or None) keeps every token."""
        fn = "Decoder.sample"
        n = check_int(n, "n", fn, minimum=0)
        top_k = check_int(top_k, "top_k", fn, minimum=0, optional=True) or None
        opts = _sampling_options(temperature, top_k, top_p, repetition_penalty, fn)
        return self._core.sample(n, stop_tokens=_stop_list(self.model, stop_tokens, fn), **opts)

    def beam_search(self, max_len, alpha=0.0, n_best=1, stop_tokens=None):
        """Beam search (width = batch) from stream 0's state and next token; returns
        [(tokens, score, normalized score, finished), ...] best first."""
        fn = "Decoder.beam_search"
        max_len = check_int(max_len, "max_len", fn)
        alpha = check_real(alpha, "alpha", fn, at_least=0.0, finite=True)
        n_best = check_int(n_best, "n_best", fn)
        return self._core.beam_search(max_len, alpha, n_best, _stop_list(self.model, stop_tokens, fn))

    def step_logits(self):
        """Feed the next tokens and return the logits (B, V) without choosing (advances the state)."""
        return self._core.step_logits()

    def get_state(self):
        """The state (h, c or None), each (L, B, H), before the next input token is fed."""
        return self._core.get_state()

    def set_state(self, h, c=None):
        """Set the state: h (and, for an LSTM, c), each (L, B, H) in the model's dtype."""
        fn = "Decoder.set_state"
        dtype = self._dtype
        h = as_real_array(h, "h", fn, dtype)
        c = None if c is None else as_real_array(c, "c", fn, dtype)
        self._core.set_state(h, c)

    def set_next_tokens(self, tokens):
        """The next input token of each stream, (B,)."""
        self._core.set_next_tokens(self._tokens(tokens, "tokens", "Decoder.set_next_tokens", False))

    def mark_seen(self, tokens):
        """Mark tokens (B, P) as seen by each stream (for the repetition penalty)."""
        self._core.mark_seen(self._tokens(tokens, "tokens", "Decoder.mark_seen", True))


def _read_prime(model, ids):
    """The state (h (L, B, R), c (L, B, H) or None), after reading ids (B, P) in eval mode; R is
    the LSTM's proj_size with projections, else H.

    The same kernel calls as ``model.rnn(model.encoder(ids.T))`` in eval mode (so the same
    bits), but with workspaces of this call's own and without switching the model to eval:
    no layer's saved state is touched, so generation on one model from several threads is safe.
    """
    rnn, encoder = model.rnn, model.encoder
    x = _core.embedding_forward(encoder.weight.data, np.ascontiguousarray(ids.T), resolve_threads(encoder.threads))
    T, B, _ = x.shape
    L, H, threads = rnn.num_layers, rnn.hidden_size, resolve_threads(rnn.threads)
    R = getattr(rnn, "state_size", H)
    h = np.empty((L, B, R), rnn.dtype)
    c = np.empty((L, B, H), rnn.dtype) if rnn.cell == "lstm" else None
    layer_input = x
    for layer in range(L):
        w_ih, w_hh, b_ih, b_hh = rnn.layer_parameters(layer, 0)
        w_hr = rnn.layer_projection(layer, 0) if rnn.cell == "lstm" else None
        out = np.empty((T, B, R), rnn.dtype)
        h[layer], cn, _ = _core.recurrent_forward(
            rnn.cell, layer_input, w_ih.data, w_hh.data, None if b_ih is None else b_ih.data,
            None if b_hh is None else b_hh.data, None, None, None, False, out, 0, threads, None,
            *(() if w_hr is None else (w_hr.data,)))
        if c is not None:
            c[layer] = cn
        layer_input = out
    return h, c


def generate(model, prime, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
             repetition_penalty=1.0, stop_tokens=None, tokenizer=None, threads=None):
    """Generate up to `max_new_tokens` tokens after `prime`.

    prime: token ids (P,) for one stream or (B, P) for B independent streams, or a string
    when `tokenizer` is given. temperature 0 is greedy; top_k keeps the k most likely tokens;
    top_p keeps the smallest set of tokens whose probability reaches p; repetition_penalty > 1
    makes tokens already in the stream less likely. A stream ends after emitting one of
    `stop_tokens`. seed: same seed, same text (None draws one).

    Returns the new tokens: (n,) for a single stream (ending with the stop token, if one came),
    (B, n) for B streams with -1 after a stream ended; a string (list of strings) when a
    tokenizer is given.
    """
    fn = "generate"
    _check_model(model, fn)
    _check_tokenizer(model, tokenizer, fn)
    ids, single = _prime_ids(model, prime, tokenizer, fn)
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", fn, minimum=0)
    opts = _sampling_options(temperature, top_k, top_p, repetition_penalty, fn)
    stops = _stop_list(model, stop_tokens, fn)
    dec = Decoder(model, ids.shape[0], threads, fn)
    dec.prime(ids)
    dec.seed(_seed_value(seed, fn))
    out, steps = dec.sample(max_new_tokens, stop_tokens=stops, **opts)
    out = out[:, :steps]
    if single:
        out = out[0]
        out = out[out >= 0]
    if tokenizer is not None:
        if single:
            return tokenizer.decode(out)
        return [tokenizer.decode(row[row >= 0]) for row in out]
    return out


def stream(model, prime, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
           repetition_penalty=1.0, stop_tokens=None, tokenizer=None, threads=None, chunk=1):
    """Like generate() for one stream, but yields each token (or its text, with a tokenizer) as
    soon as it is produced. The loop runs in C++ `chunk` tokens at a time."""
    fn = "stream"
    _check_model(model, fn)
    _check_tokenizer(model, tokenizer, fn)
    ids, single = _prime_ids(model, prime, tokenizer, fn)
    if not single and ids.shape[0] != 1:
        raise ValueError(f"{fn}: stream() makes one stream; prime must have shape (P,), got {shape_str(ids.shape)}")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", fn, minimum=0)
    chunk = check_int(chunk, "chunk", fn)
    opts = _sampling_options(temperature, top_k, top_p, repetition_penalty, fn)
    stops = _stop_list(model, stop_tokens, fn)
    dec = Decoder(model, 1, threads, fn)
    dec.prime(ids)
    dec.seed(_seed_value(seed, fn))

    def tokens():
        left = max_new_tokens
        while left > 0:
            out, steps = dec.sample(min(chunk, left), stop_tokens=stops, **opts)
            for t in out[0, :steps]:
                if t < 0:
                    return
                yield int(t) if tokenizer is None else tokenizer.decode(np.array([t]))
            left -= steps
            if steps == 0 or dec.done[0]:
                return

    return tokens()


def beam_search(model, prime, beam_width, max_len, alpha=0.0, n_best=1, stop_tokens=None, tokenizer=None,
                threads=None):
    """Beam search after a prime (P,) (or a string with `tokenizer`).

    Keeps `beam_width` live hypotheses, ranks them by total log-probability / length**alpha,
    and stops when `n_best` hypotheses have ended with a stop token, or after `max_len` new
    tokens (unfinished hypotheses are then ranked too). Returns up to n_best
    (tokens, log_probability) pairs, best first (tokens as text with a tokenizer).
    """
    fn = "beam_search"
    _check_model(model, fn)
    _check_tokenizer(model, tokenizer, fn)
    ids, single = _prime_ids(model, prime, tokenizer, fn)
    if not single and ids.shape[0] != 1:
        raise ValueError(f"{fn}: prime must be one sequence (P,), got {shape_str(ids.shape)}")
    beam_width = check_int(beam_width, "beam_width", fn)
    max_len = check_int(max_len, "max_len", fn)
    n_best = check_int(n_best, "n_best", fn)
    if n_best > beam_width:
        raise ValueError(f"{fn}: n_best ({n_best}) cannot exceed beam_width ({beam_width})")
    alpha = check_real(alpha, "alpha", fn, at_least=0.0, finite=True)
    stops = _stop_list(model, stop_tokens, fn)
    dec = Decoder(model, beam_width, threads, fn)
    dec.prime(np.repeat(ids, beam_width, axis=0))
    hyps = dec.beam_search(max_len, alpha, n_best, stops)
    if tokenizer is not None:
        return [(tokenizer.decode(t), score) for t, score, _, _ in hyps]
    return [(t, score) for t, score, _, _ in hyps]


def _seed_value(seed, fn):
    if seed is None:
        return int(np.random.SeedSequence().entropy % (1 << 64))
    return check_int(seed, "seed", fn, minimum=0, optional=True, int64=False) % (1 << 64)


# -- seq2seq decoding ------------------------------------------------------------------------------

@dataclasses.dataclass
class DecoderParts:
    """What seq2seq_decode() needs from an attentional encoder-decoder's decoder side (the
    lead's rnncore.nn.Seq2Seq builds one; any arrays of these shapes work). Letters: V target
    vocabulary, E embedding width, H hidden size, L layers, G gates (lstm 4, gru 3, rnn 1),
    Hm memory width, Ho attentional-state width.

    cell: "lstm", "gru", "rnn_tanh" or "rnn_relu"; num_layers L; hidden_size H.
    input_feed: layer 0 reads [embedding ; previous attentional state] (OpenNMT-py's
        InputFeedRNNDecoder; needs attention); otherwise the embedding alone.
    embedding: (V, E) the target embedding.
    w_ih, w_hh, b_ih, b_hh: per-layer lists in PyTorch's layout: w_ih[0] (G*H, E + Ho) with input
        feeding (embedding columns first), else (G*H, E); w_ih[l > 0] (G*H, H); w_hh (G*H, H);
        biases (G*H,) or None.
    attention: an rnncore.nn.Attention (query_size H; its weights_for_core() is read) or None
        (no attention: the top h goes to the output layer). Without input feeding, attention
        comes after the decoder RNN: its attentional state feeds the output layer.
    out_w: (V, Ho) with attention, (V, H) without; out_b: (V,) or None.
    Arrays may be numpy arrays or rnncore Parameters (their .data is read). The dtype is the
    embedding's (float32 or float64); every other array is converted to it once per call.
    """
    cell: str
    num_layers: int
    hidden_size: int
    input_feed: bool
    embedding: Any
    w_ih: List[Any]
    w_hh: List[Any]
    b_ih: List[Any]
    b_hh: List[Any]
    attention: Any = None
    out_w: Any = None
    out_b: Any = None


class Hypothesis(NamedTuple):
    """One decoded target: tokens int64 (n,) (without bos; ending with eos when finished), score
    (sum of the model's log-probabilities of the tokens), normalized (score / n**length_penalty),
    finished (ended with eos rather than at max_len), attention (n, S_b) float array (the weights
    over the source's own S_b positions) with return_attention, else None."""
    tokens: np.ndarray
    score: float
    normalized: float
    finished: bool
    attention: Optional[np.ndarray]


_METHODS = ("greedy", "sample", "beam")


def _param_data(value):
    return value.data if (value is not None and not isinstance(value, np.ndarray) and hasattr(value, "data")) \
        else value


def _parts_array(value, name, fn, dtype, optional=False):
    value = _param_data(value)
    if value is None:
        if optional:
            return None
        raise TypeError(f"{fn}: parts.{name} must be an array, got None")
    return as_real_array(value, f"parts.{name}", fn, dtype)


def _decoder_core(parts, threads, fn):
    if not isinstance(parts, DecoderParts):
        raise TypeError(f"{fn}: parts must be an rnncore.sampling.DecoderParts, got {type(parts).__name__}")
    cell = cell_name(parts.cell, fn, name="parts.cell")
    L = check_int(parts.num_layers, "parts.num_layers", fn, maximum=1024)
    H = check_int(parts.hidden_size, "parts.hidden_size", fn)
    if not isinstance(parts.input_feed, (bool, np.bool_)):
        raise TypeError(f"{fn}: parts.input_feed must be a bool, got {type(parts.input_feed).__name__}")
    emb = _param_data(parts.embedding)
    if not isinstance(emb, np.ndarray) or emb.dtype not in (np.float32, np.float64):
        got = f"dtype {emb.dtype}" if isinstance(emb, np.ndarray) else type(emb).__name__
        raise TypeError(f"{fn}: parts.embedding must be a float32 or float64 array (V, E), got {got}")
    dtype = emb.dtype
    emb = np.ascontiguousarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"{fn}: parts.embedding must have shape (V, E), got {shape_str(emb.shape)}")
    lists = {}
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        value = getattr(parts, name)
        if not isinstance(value, (list, tuple)) or len(value) != L:
            got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
            raise ValueError(f"{fn}: parts.{name} must be a list of num_layers = {L} entries, got {got}")
        lists[name] = [_parts_array(v, f"{name}[{i}]", fn, dtype, optional=name.startswith("b_"))
                       for i, v in enumerate(value)]
    layers = [(lists["w_ih"][i], lists["w_hh"][i], lists["b_ih"][i], lists["b_hh"][i]) for i in range(L)]
    for i, (_, w_hh, _, _) in enumerate(layers):
        if w_hh.ndim != 2 or w_hh.shape[1] != H:
            raise ValueError(f"{fn}: parts.w_hh[{i}] must have shape (G*H, H) with H = parts.hidden_size = {H}, "
                             f"got {shape_str(w_hh.shape)}")
    attention = parts.attention
    weights = None
    if attention is not None:
        get = getattr(attention, "weights_for_core", None)
        if get is None:
            raise TypeError(f"{fn}: parts.attention must be an rnncore.nn.Attention or None, got "
                            f"{type(attention).__name__}")
        weights = tuple(w if (w is None or isinstance(w, str)) else as_real_array(w, "parts.attention", fn, dtype)
                        for w in get())
    elif parts.input_feed:
        raise ValueError(f"{fn}: parts.input_feed needs parts.attention (it feeds the attentional state back)")
    out_w = _parts_array(parts.out_w, "out_w", fn, dtype)
    out_b = _parts_array(parts.out_b, "out_b", fn, dtype, optional=True)
    return _core.Seq2SeqDecoder(cell, emb, layers, weights, bool(parts.input_feed), out_w, out_b,
                                resolve_threads(threads)), dtype


def _decode_state(state, L, B, H, lstm, dtype, fn):
    """(h0, c0) from state: None, h0 (L, B, H), or (h0, c0) for an lstm."""
    if state is None:
        return None, None
    if isinstance(state, (tuple, list)):
        if len(state) != 2:
            raise ValueError(f"{fn}: state must be h0, (h0, c0) or None, got a sequence of {len(state)}")
        h0, c0 = state
        if not lstm and c0 is not None:
            raise ValueError(f"{fn}: state holds a c0 but the decoder cell is not an lstm")
    else:
        h0, c0 = state, None
    want = (L, B, H)
    out = []
    for name, v in (("h0", h0), ("c0", c0)):
        if v is None:
            out.append(None)
            continue
        v = as_real_array(v, f"state ({name})", fn, dtype)
        if v.shape != want:
            raise ValueError(f"{fn}: state's {name} must have shape (L, B, H) = {shape_str(want)}, "
                             f"got {shape_str(v.shape)}")
        out.append(v)
    return tuple(out)


def seq2seq_decode(parts, memory, memory_lengths, state, *, bos, eos, max_len, method="greedy", beam_width=5,
                   n_best=1, length_penalty=0.0, temperature=1.0, top_k=0, top_p=1.0, seed=None,
                   return_attention=False, threads=None):
    """Decode a batch of B sources with an encoder-decoder's decoder, the whole loop in C++
    (rnncore._core.Seq2SeqDecoder, GIL released, Ctrl-C raises KeyboardInterrupt).

    parts: a DecoderParts. memory: (S, B, Hm) the encoder's outputs (None allowed without
    attention; then state gives B). memory_lengths: (B,) ints in [1, S] or None (all S); attention
    never looks past a source's length. state: the decoder's initial state, h0 (L, B, H), or
    (h0, c0) for an lstm, or None (zeros); the first attentional state fed back is zeros.
    bos, eos: token ids in [0, V). max_len: an int >= 1 or (B,) ints >= 1, the most tokens
    generated per source (eos included).

    method: "greedy" (argmax), "sample" (temperature, top_k (0 keeps all), top_p; n_best
    independent samples per source, each row seeded from (seed, row) alone: the same seed gives
    the same samples whatever the thread count), or "beam": beam search of beam_width per source;
    of every step's top 2 * beam_width candidates those ending with eos are kept as finished
    hypotheses; a source stops when it has n_best finished and its best candidate of the step
    ended, or after max_len tokens (its live beams are then returned, unfinished, when fewer
    than n_best finished). Hypotheses rank by score / len**length_penalty.

    Returns a list of B lists, each of up to n_best Hypothesis (tokens, score, normalized,
    finished, attention) best first (exactly one per source for greedy; n_best for sample).
    """
    fn = "seq2seq_decode"
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"{fn}: method must be one of 'greedy', 'sample', 'beam', got {method!r}")
    beam_width = check_int(beam_width, "beam_width", fn)
    n_best = check_int(n_best, "n_best", fn)
    if method == "greedy" and n_best != 1:
        raise ValueError(f"{fn}: n_best > 1 needs method 'beam' or 'sample' (greedy gives one hypothesis per "
                         f"source), got n_best = {n_best}")
    length_penalty = check_real(length_penalty, "length_penalty", fn, at_least=0.0, finite=True)
    temperature = check_real(temperature, "temperature", fn, at_least=0.0, finite=True)
    top_k = check_int(top_k, "top_k", fn, minimum=0, optional=True) or 0
    top_p = check_real(top_p, "top_p", fn, above=0.0, at_most=1.0, optional=True)
    top_p = 1.0 if top_p is None else top_p
    if not isinstance(return_attention, (bool, np.bool_)):
        raise TypeError(f"{fn}: return_attention must be a bool, got {type(return_attention).__name__}")
    seed = _seed_value(seed, fn) if method == "sample" else 0
    core, dtype = _decoder_core(parts, threads, fn)
    V = core.vocab_size
    bos = check_int(bos, "bos", fn, minimum=0)
    eos = check_int(eos, "eos", fn, minimum=0)
    for name, tok in (("bos", bos), ("eos", eos)):
        if tok >= V:
            raise ValueError(f"{fn}: {name} = {tok} is outside the target vocabulary [0, {V})")
    if memory is not None:
        memory = as_real_array(memory, "memory", fn, dtype)
        if memory.ndim != 3:
            raise ValueError(f"{fn}: memory must have shape (S, B, Hm), got {shape_str(memory.shape)}")
        if core.has_attention and memory.shape[2] != core.memory_size:
            raise ValueError(f"{fn}: memory must have shape (S, B, Hm) with Hm = {core.memory_size} (the "
                             f"attention's memory size), got {shape_str(memory.shape)}")
        S, B = memory.shape[0], memory.shape[1]
        if S < 1 or B < 1:
            raise ValueError(f"{fn}: memory must hold at least one source and one position, got shape "
                             f"{shape_str(memory.shape)}")
    elif core.has_attention:
        raise TypeError(f"{fn}: memory must be an array (S, B, Hm) for a decoder with attention, got None")
    else:
        S = 0
        h = state[0] if isinstance(state, (tuple, list)) and state else state
        if h is None:
            raise ValueError(f"{fn}: without memory, state (h0 (L, B, H)) must be given: it sets the batch size")
        h = np.asarray(_param_data(h))
        if h.ndim != 3:
            raise ValueError(f"{fn}: state's h0 must have shape (L, B, H), got {shape_str(h.shape)}")
        B = h.shape[1]
        if B < 1:
            raise ValueError(f"{fn}: the batch must hold at least one source, got B = 0")
    lengths = None
    if memory_lengths is not None:
        if memory is None:
            raise ValueError(f"{fn}: memory_lengths needs memory (they are the lengths of its sources)")
        lengths = as_index_array(memory_lengths, "memory_lengths", fn)
        if lengths.shape != (B,):
            raise ValueError(f"{fn}: memory_lengths must have shape (B,) = ({B},), got {shape_str(lengths.shape)}")
        bad = (lengths < 1) | (lengths > S)
        if bad.any():
            b = int(np.argmax(bad))
            raise ValueError(f"{fn}: memory_lengths[{b}] = {int(lengths[b])} is outside [1, S] = [1, {S}]")
    h0, c0 = _decode_state(state, core.num_layers, B, core.hidden_size, parts.cell.lower() == "lstm", dtype, fn)
    if isinstance(max_len, (list, tuple, np.ndarray)):
        ml = as_index_array(max_len, "max_len", fn)
        if ml.shape != (B,):
            raise ValueError(f"{fn}: max_len must be an int or have shape (B,) = ({B},), got {shape_str(ml.shape)}")
        if (ml < 1).any():
            b = int(np.argmax(ml < 1))
            raise ValueError(f"{fn}: max_len must be >= 1 for every source, got {int(ml[b])} for source {b}")
        max_len = ml
    else:
        max_len = check_int(max_len, "max_len", fn, maximum=2**40)
    rows = B * (beam_width if method == "beam" else n_best if method == "sample" else 1)
    G = {"lstm": 4, "gru": 3}.get(parts.cell.lower(), 1)
    H, L, E = core.hidden_size, core.num_layers, parts.embedding.shape[1]
    per_row = 4 * L * H + G * H * 3 + 2 * (E + H + core.memory_size) + 2 * V + 2 * S
    check_allocation(rows * per_row * np.dtype(dtype).itemsize, f"decoding {rows} rows (sources x beams)", fn)
    out = core.decode(memory, lengths, h0, c0, bos, eos, max_len, method, beam_width, n_best, length_penalty,
                      temperature, top_k, top_p, seed, bool(return_attention))
    result = []
    for b, hyps in enumerate(out):
        Sb = S if lengths is None else int(lengths[b])
        result.append([Hypothesis(t, float(s), float(z), bool(f), None if a is None else a[:, :Sb].copy())
                       for t, s, z, f, a in hyps])
    return result
