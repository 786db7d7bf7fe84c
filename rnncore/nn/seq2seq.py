"""Encoder-decoder with attention: Encoder, Decoder, Seq2Seq (OpenNMT-py's RNN seq2seq).

Shape letters: S source steps, T target steps, B batch, Vs / Vt source / target vocabulary,
E embedding_dim, He encoder hidden size per direction, D = 2 if the encoder is bidirectional
else 1, Hm = D*He the memory width, H the decoder's hidden size, Ho the attentional state's
width (H), Le / Ld encoder / decoder layers. Everything is time-major: src (S, B), tgt (T, B).

The pieces, each an explicit forward/backward pair over whole sequences (no Python loop over
time anywhere):
- Encoder: Embedding -> dropout -> stacked (bi)RNN/LSTM/GRU over the source lengths. Its
  output is the memory bank (S, B, Hm), zero past each source's length.
- The bridge: the decoder's initial state from the encoder's final one. "concat" joins the two
  directions of each layer (OpenNMT-py's default for a bidirectional encoder of He = H / 2 per
  direction), "linear" is one learned map per state from every encoder layer and direction to
  every decoder layer (tanh for h, linear for an LSTM's c), "zeros" starts from zeros; "auto"
  is "concat" when the shapes allow it and "linear" otherwise.
- Decoder: Embedding -> dropout -> the recurrence -> dropout -> Linear(Ho, Vt) (optionally tied
  to the target embedding). With attention there are two placements (Luong et al. 2015):
  input_feed=True runs InputFeedRNN, whose whole loop (the previous attentional state joining
  each step's input, forward and BPTT) is one C++ call; input_feed=False runs the stacked RNN
  over all target steps and then Attention over all of them at once. attention=None is the
  plain encoder-decoder of Sutskever et al. (the last hidden state alone carries the source).
Dropout is where OpenNMT-py puts it: on both embeddings, between stacked layers, and on the
decoder's output before the generator (with input feeding the fed state is the undropped one).

Training uses teacher forcing: tgt_in is <s> then the reference, tgt_out the reference then
</s>. ``scheduled_sampling = p`` (a model attribute, 0 by default) feeds the model's own
greedy prediction instead of the reference token with probability p at each target position,
drawn from the model's seeded generator. The predictions come from a first teacher-forced pass
over the same batch (the parallel form of scheduled sampling, Duckworth et al. 2019 / Mihaylova
& Martins 2019), so the whole batch still runs as one call per layer.
"""
import numpy as np

from .._checks import (as_index_array, as_lengths, bounded_repr, cell_name, check_int, check_num_layers,
                       check_probability, check_seed, expect_shape, no_forward, resolve_dtype, shape_str)
from .._threads import exclusive
from .attention import Attention
from .input_feed import InputFeedRNN
from .layers import Dropout, Embedding, Linear
from .loss import cross_entropy, token_loss
from .models import _CELLS, _make_rnn
from .module import Module

_BRIDGES = ("auto", "concat", "linear", "zeros")


def _spawn(seed, fn, n):
    """n child SeedSequences of `seed` (an int, a sequence of ints, None, or a SeedSequence, which
    the parent model passes down)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed.spawn(n)
    return np.random.SeedSequence(check_seed(seed, fn, objects=False)).spawn(n)


def _src_lengths(lengths, B, S, fn):
    """Source lengths (B,) int64, each in [1, S] (None: every source is S long)."""
    if lengths is None:
        return np.full(B, S, np.int64)
    lengths = as_lengths(lengths, B, S, fn)
    if B and lengths.min() < 1:
        bad = int(np.flatnonzero(lengths < 1)[0])
        raise ValueError(f"{fn}: src_lengths must be in [1, S] = [1, {S}] (an empty source has nothing to "
                         f"attend to), got src_lengths[{bad}] = 0")
    return lengths


def _ids(value, name, fn, vocab_size):
    ids = as_index_array(value, name, fn)
    if ids.ndim != 2:
        raise ValueError(f"{fn}: {name} must have shape (steps, B) (time-major token ids), got {shape_str(ids.shape)}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = np.argwhere((ids < 0) | (ids >= vocab_size))[0]
        raise ValueError(f"{fn}: {name} ids must be in [0, {vocab_size}), got {name}[{bad[0]}, {bad[1]}] = "
                         f"{int(ids[tuple(bad)])}")
    return ids


class Encoder(Module):
    """Embedding -> dropout -> stacked RNN/LSTM/GRU (optionally bidirectional) over the source.

    forward(src (S, B) ids, src_lengths (B,) in [1, S] or None) -> (memory (S, B, D*He),
    final state: h_n (Le*D, B, He), or (h_n, c_n) for an LSTM). backward(grad_memory,
    grad_state=None) adds into the parameters' grads.
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers=1, cell="lstm", bidirectional=False,
                 dropout=0.0, padding_idx=None, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "Encoder"
        self.vocab_size = check_int(vocab_size, "vocab_size", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.num_layers = check_num_layers(num_layers, fn)
        self.cell = cell_name(cell, fn, _CELLS)
        self.bidirectional = bool(bidirectional)
        self.dropout = check_probability(dropout, "dropout", fn)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seeds = _spawn(seed, fn, 3)
        self.embedding = Embedding(self.vocab_size, self.embedding_dim, padding_idx, dtype=self.dtype, seed=seeds[0],
                                   threads=threads)
        self.drop = Dropout(self.dropout, rng=np.random.default_rng(seeds[2]))
        self.rnn = _make_rnn(self.cell, self.embedding_dim, self.hidden_size, self.num_layers, self.dropout,
                             self.bidirectional, self.dtype, seeds[1], threads)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def memory_size(self):
        return self.num_directions * self.hidden_size

    def config(self):
        return dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, cell=self.cell, bidirectional=self.bidirectional,
                    dropout=self.dropout, padding_idx=self.embedding.padding_idx, dtype=self.dtype.name)

    @exclusive
    def forward(self, src, src_lengths=None):
        fn = "Encoder.forward"
        ids = _ids(src, "src", fn, self.vocab_size)
        S, B = ids.shape
        if S == 0 or B == 0:
            raise ValueError(f"{fn}: src must have at least one step and one sequence, got shape {shape_str(ids.shape)}")
        lengths = _src_lengths(src_lengths, B, S, fn)
        x = self.drop(self.embedding(ids))
        return self.rnn(x, None, lengths)

    @exclusive
    def backward(self, grad_memory, grad_state=None):
        dx = self.rnn.backward(grad_memory, grad_state)
        self.embedding.backward(self.drop.backward(dx))

    def extra_repr(self):
        s = f"{self.vocab_size}, {self.embedding_dim}, {self.hidden_size}, cell={self.cell!r}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class Decoder(Module):
    """Target embedding -> dropout -> recurrence (+ attention) -> dropout -> Linear(Ho, Vt).

    attention: None, "dot", "general" or "additive" (Attention's attn_type); input_feed: with
    attention, Luong's input feeding (InputFeedRNN) instead of attention after the RNN.
    memory_size: the encoder's memory width Hm (attention only).

    forward(tgt_in (T, B) ids, memory (S, B, Hm), memory_lengths (B,), state) -> (logits
    (T, B, Vt), alpha (T, B, S) or None, new_state); state: h0 (Ld, B, H) (or (h0, c0)), or
    None for zeros. backward(grad_logits) -> (grad_memory or None, grad_state).
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers=1, cell="lstm", attention="general",
                 memory_size=None, input_feed=True, attention_size=None, dropout=0.0, tie_weights=False,
                 padding_idx=None, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "Decoder"
        self.vocab_size = check_int(vocab_size, "vocab_size", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.num_layers = check_num_layers(num_layers, fn)
        self.cell = cell_name(cell, fn, _CELLS)
        if attention in (None, "none"):
            attention = None
        elif not isinstance(attention, str):
            raise TypeError(f"{fn}: attention must be None or one of 'dot', 'general', 'additive', "
                            f"got {type(attention).__name__}")
        self.dropout = check_probability(dropout, "dropout", fn)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        self.input_feed = bool(input_feed) and attention is not None
        self.tie_weights = bool(tie_weights)
        H, E = self.hidden_size, self.embedding_dim
        seeds = _spawn(seed, fn, 5)
        self.embedding = Embedding(self.vocab_size, E, padding_idx, dtype=self.dtype, seed=seeds[0], threads=threads)
        rng = np.random.default_rng(seeds[4])
        self.drop_in = Dropout(self.dropout, rng=rng)
        self.drop_out = Dropout(self.dropout, rng=rng)
        attn = None
        if attention is not None:
            memory_size = H if memory_size is None else check_int(memory_size, "memory_size", fn)
            attn = Attention(H, memory_size, attention, attention_size, dtype=self.dtype, seed=seeds[2],
                             threads=threads)
            self.attention = attn.attn_type
            self.memory_size = memory_size
        else:
            self.attention = None
            self.memory_size = None if memory_size is None else check_int(memory_size, "memory_size", fn)
        if self.input_feed:
            cell = "rnn_tanh" if self.cell == "rnn" else self.cell
            self.rnn = InputFeedRNN(cell, E, H, attn, num_layers=self.num_layers,
                                    dropout=self.dropout if self.num_layers > 1 else 0.0, dtype=self.dtype,
                                    seed=seeds[1], threads=threads)
            self.attn = None  # it lives inside the recurrence, as rnn.attn
        else:
            self.rnn = _make_rnn(self.cell, E, H, self.num_layers, self.dropout, False, self.dtype, seeds[1], threads)
            self.attn = attn
        out_size = attn.output_size if attn is not None else H
        self.output_size = out_size
        if self.tie_weights and out_size != E:
            raise ValueError(f"{fn}: tie_weights requires the decoder's output width ({out_size}) == embedding_dim "
                             f"({E}) (the generator reuses the (V, E) embedding matrix)")
        self.generator = Linear(out_size, self.vocab_size, dtype=self.dtype, seed=seeds[3], threads=threads)
        if self.tie_weights:
            self.generator.weight = self.embedding.weight
        self._ctx = None

    @property
    def attention_module(self):
        """The Attention layer (inside the recurrence with input feeding), or None."""
        return self.rnn.attn if self.input_feed else self.attn

    def config(self):
        am = self.attention_module
        return dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, cell=self.cell, attention=self.attention,
                    memory_size=self.memory_size, input_feed=self.input_feed,
                    attention_size=None if am is None or self.attention != "additive" else am.attention_size,
                    dropout=self.dropout, tie_weights=self.tie_weights, padding_idx=self.embedding.padding_idx,
                    dtype=self.dtype.name)

    def _hidden(self, ids, memory, memory_lengths, state, fn):
        """The decoder's output before the generator: (out (T, B, Ho), alpha or None, new_state)."""
        x = self.drop_in(self.embedding(ids))
        if self.input_feed:
            out, alpha, new_state = self.rnn(x, memory, memory_lengths, state)
        else:
            h, new_state = self.rnn(x, state)
            if self.attn is not None:
                out, alpha = self.attn(h, memory, memory_lengths)
            else:
                out, alpha = h, None
        return out, alpha, new_state

    @exclusive
    def forward(self, tgt_in, memory=None, memory_lengths=None, state=None):
        fn = "Decoder.forward"
        ids = _ids(tgt_in, "tgt_in", fn, self.vocab_size)
        if self.attention is not None and memory is None:
            raise ValueError(f"{fn}: a decoder with attention needs the encoder's memory (S, B, Hm), got None")
        out, alpha, new_state = self._hidden(ids, memory, memory_lengths, state, fn)
        logits = self.generator(self.drop_out(out))
        self._ctx = True
        return logits, alpha, new_state

    @exclusive
    def backward(self, grad_logits):
        """-> (grad_memory (S, B, Hm) or None without attention, grad_state like the state)."""
        fn = "Decoder.backward"
        if self._ctx is None:
            raise no_forward(fn)
        self._ctx = None
        dout = self.drop_out.backward(self.generator.backward(grad_logits))
        dmemory = None
        if self.input_feed:
            dx, dmemory = self.rnn.backward(dout)
        else:
            dh = dout
            if self.attn is not None:
                dh, dmemory = self.attn.backward(dout)
            dx = self.rnn.backward(dh)
        self.embedding.backward(self.drop_in.backward(dx))
        return dmemory, self.rnn.grad_h0

    def extra_repr(self):
        s = f"{self.vocab_size}, {self.embedding_dim}, {self.hidden_size}, cell={self.cell!r}, " \
            f"attention={self.attention!r}"
        if self.attention is not None:
            s += f", input_feed={self.input_feed}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.tie_weights:
            s += ", tie_weights=True"
        return s


class Bridge(Module):
    """The decoder's initial state from the encoder's final one (see the module docstring).

    forward(enc_state) -> dec_state; backward(grad_dec_state) -> grad_enc_state. States are h
    (layers*directions, B, size) or (h, c) for an LSTM.
    """

    def __init__(self, kind, cell, enc_layers, enc_directions, enc_hidden, dec_layers, dec_hidden, *,
                 dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "Bridge"
        if kind not in _BRIDGES:
            raise ValueError(f"{fn}: bridge must be one of {', '.join(map(repr, _BRIDGES))}, got {bounded_repr(kind)}")
        fits = enc_layers == dec_layers and enc_directions * enc_hidden == dec_hidden
        if kind == "auto":
            kind = "concat" if fits else "linear"
        if kind == "concat" and not fits:
            raise ValueError(f"{fn}: bridge='concat' needs as many encoder as decoder layers and D*He == H, got "
                             f"{enc_layers} encoder layers of {enc_directions}x{enc_hidden} and {dec_layers} "
                             f"decoder layers of {dec_hidden} (use bridge='linear')")
        self.kind, self.lstm = kind, cell == "lstm"
        self.sizes = (enc_layers, enc_directions, enc_hidden, dec_layers, dec_hidden)
        self.dtype = resolve_dtype(dtype, fn)
        self.h = self.c = None
        if kind == "linear":
            seeds = _spawn(seed, fn, 2)
            n_in, n_out = enc_layers * enc_directions * enc_hidden, dec_layers * dec_hidden
            self.h = Linear(n_in, n_out, dtype=self.dtype, seed=seeds[0], threads=threads)
            if self.lstm:
                self.c = Linear(n_in, n_out, dtype=self.dtype, seed=seeds[1], threads=threads)
        self._ctx = None

    def _map(self, a, layer, which):
        Le, D, He, Ld, Hd = self.sizes
        B = a.shape[1]
        if self.kind == "concat":  # (Le*D, B, He) -> (Le, D, B, He) -> (Le, B, D*He)
            return np.ascontiguousarray(a.reshape(Le, D, B, He).transpose(0, 2, 1, 3).reshape(Le, B, D * He))
        flat = np.ascontiguousarray(a.transpose(1, 0, 2).reshape(B, Le * D * He))
        y = layer(flat)
        if which == "h":
            y = np.tanh(y)
            self._ctx[which] = y
        return np.ascontiguousarray(y.reshape(B, Ld, Hd).transpose(1, 0, 2))

    def _unmap(self, g, layer, which):
        Le, D, He, Ld, Hd = self.sizes
        B = g.shape[1]
        if self.kind == "concat":
            return np.ascontiguousarray(g.reshape(Le, B, D, He).transpose(0, 2, 1, 3).reshape(Le * D, B, He))
        gy = np.ascontiguousarray(g.transpose(1, 0, 2).reshape(B, Ld * Hd))
        if which == "h":
            y = self._ctx["h"]
            gy = gy * (1 - y * y)
        gx = layer.backward(gy)
        return np.ascontiguousarray(gx.reshape(B, Le * D, He).transpose(1, 0, 2))

    @exclusive
    def forward(self, enc_state):
        h, c = enc_state if self.lstm else (enc_state, None)
        Le, D, He, Ld, Hd = self.sizes
        B = h.shape[1]
        self._ctx = {"B": B}
        if self.kind == "zeros":
            return None
        hd = self._map(h, self.h, "h")
        if not self.lstm:
            return hd
        return hd, self._map(c, self.c, "c")

    @exclusive
    def backward(self, grad_state):
        fn = "Bridge.backward"
        if self._ctx is None:
            raise no_forward(fn)
        B = self._ctx["B"]
        Le, D, He, Ld, Hd = self.sizes
        if self.kind == "zeros" or grad_state is None:
            self._ctx = None
            z = np.zeros((Le * D, B, He), self.dtype)
            return (z, z.copy()) if self.lstm else z
        gh, gc = grad_state if self.lstm else (grad_state, None)
        out_h = self._unmap(gh, self.h, "h")
        out = (out_h, self._unmap(gc, self.c, "c")) if self.lstm else out_h
        self._ctx = None
        return out

    def extra_repr(self):
        return repr(self.kind)


class Seq2Seq(Module):
    """Encoder-decoder with attention (see the module docstring).

    Args: src_vocab_size, tgt_vocab_size, embedding_dim E (both sides), hidden_size H (the
    decoder's; the encoder's per direction is encoder_hidden_size, default H // 2 when
    bidirectional as in OpenNMT-py, else H), num_layers (both; encoder_layers / decoder_layers
    override), cell ('lstm', 'gru', 'rnn', 'rnn_relu'), bidirectional (the encoder),
    attention (None, 'dot', 'general', 'additive'), input_feed (Luong's, with attention),
    attention_size (additive units), bridge ('auto', 'concat', 'linear', 'zeros'), dropout,
    tie_weights (generator shares the target embedding; needs H == E), src_padding_idx /
    tgt_padding_idx; keywords dtype, seed, threads.

    forward(src (S, B), src_lengths (B,), tgt_in (T, B)) -> (logits (T, B, Vt), alpha (T, B, S)
    or None). loss(src, src_lengths, tgt_in, tgt_out, ignore_index=-100, reduction='mean') ->
    loss, then backward(). evaluate_batch(src, src_lengths, tgt_in, tgt_out) -> (sum of token
    NLL, tokens counted, tokens predicted right by argmax), nothing kept for a backward.
    encode(src, src_lengths) -> (memory, decoder initial state); generation is in
    rnncore.sampling.seq2seq_decode and translate().
    """

    def __init__(self, src_vocab_size, tgt_vocab_size, embedding_dim=256, hidden_size=256, num_layers=1, cell="lstm",
                 bidirectional=True, attention="general", input_feed=True, attention_size=None, bridge="auto",
                 dropout=0.0, tie_weights=False, src_padding_idx=None, tgt_padding_idx=None, encoder_hidden_size=None,
                 encoder_layers=None, decoder_layers=None, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "Seq2Seq"
        hidden_size = check_int(hidden_size, "hidden_size", fn)
        D = 2 if bidirectional else 1
        if encoder_hidden_size is None:
            if hidden_size % D:
                raise ValueError(f"{fn}: a bidirectional encoder gets hidden_size // 2 units per direction; "
                                 f"hidden_size must then be even, got {hidden_size} (or pass encoder_hidden_size)")
            encoder_hidden_size = hidden_size // D
        encoder_hidden_size = check_int(encoder_hidden_size, "encoder_hidden_size", fn)
        encoder_layers = check_num_layers(num_layers if encoder_layers is None else encoder_layers, fn)
        decoder_layers = check_num_layers(num_layers if decoder_layers is None else decoder_layers, fn)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seeds = _spawn(seed, fn, 4)
        self.encoder = Encoder(src_vocab_size, embedding_dim, encoder_hidden_size, encoder_layers, cell, bidirectional,
                               dropout, src_padding_idx, dtype=self.dtype, seed=seeds[0], threads=threads)
        self.decoder = Decoder(tgt_vocab_size, embedding_dim, hidden_size, decoder_layers, cell, attention,
                               self.encoder.memory_size, input_feed, attention_size, dropout, tie_weights,
                               tgt_padding_idx, dtype=self.dtype, seed=seeds[1], threads=threads)
        self.bridge = Bridge(bridge, self.encoder.cell, encoder_layers, D, encoder_hidden_size, decoder_layers,
                             hidden_size, dtype=self.dtype, seed=seeds[2], threads=threads)
        self.bridge_kind = bridge
        self.scheduled_sampling = 0.0
        self._rng = np.random.default_rng(seeds[3])  # scheduled sampling's draws
        self._ctx = None
        self._dlogits = None

    # -- configuration ----------------------------------------------------------------------
    @property
    def src_vocab_size(self):
        return self.encoder.vocab_size

    @property
    def tgt_vocab_size(self):
        return self.decoder.vocab_size

    def config(self):
        """Constructor arguments that rebuild this model: ``Seq2Seq(**model.config())``."""
        e, d = self.encoder, self.decoder
        return dict(src_vocab_size=e.vocab_size, tgt_vocab_size=d.vocab_size, embedding_dim=e.embedding_dim,
                    hidden_size=d.hidden_size, cell=e.cell, bidirectional=e.bidirectional, attention=d.attention,
                    input_feed=d.input_feed, attention_size=d.config()["attention_size"], bridge=self.bridge_kind,
                    dropout=e.dropout, tie_weights=d.tie_weights, src_padding_idx=e.embedding.padding_idx,
                    tgt_padding_idx=d.embedding.padding_idx, encoder_hidden_size=e.hidden_size,
                    encoder_layers=e.num_layers, decoder_layers=d.num_layers, dtype=self.dtype.name)

    # -- forward / backward -----------------------------------------------------------------
    def _check_batch(self, src, src_lengths, tgt_in, tgt_out, fn):
        src = _ids(src, "src", fn, self.src_vocab_size)
        tgt_in = _ids(tgt_in, "tgt_in", fn, self.tgt_vocab_size)
        if src.shape[1] != tgt_in.shape[1]:
            raise ValueError(f"{fn}: src and tgt_in must hold the same number of sequences (B), got src "
                             f"{shape_str(src.shape)} and tgt_in {shape_str(tgt_in.shape)}")
        if src.shape[0] == 0:
            raise ValueError(f"{fn}: src must have at least one step, got shape {shape_str(src.shape)}")
        if tgt_in.shape[0] == 0:
            raise ValueError(f"{fn}: tgt_in must have at least one step, got shape {shape_str(tgt_in.shape)}")
        lengths = _src_lengths(src_lengths, src.shape[1], src.shape[0], fn)
        if tgt_out is not None:
            tgt_out = as_index_array(tgt_out, "tgt_out", fn)
            if tgt_out.shape != tgt_in.shape:
                raise ValueError(f"{fn}: tgt_out must have tgt_in's shape {shape_str(tgt_in.shape)}, "
                                 f"got {shape_str(tgt_out.shape)}")
        return src, lengths, tgt_in, tgt_out

    def _encode(self, src, lengths):
        memory, enc_state = self.encoder(src, lengths)
        return memory, self.bridge(enc_state)

    @exclusive
    def encode(self, src, src_lengths=None):
        """-> (memory (S, B, Hm), the decoder's initial state (None for bridge 'zeros')), nothing kept
        for a backward beyond the last call's."""
        fn = "Seq2Seq.encode"
        src = _ids(src, "src", fn, self.src_vocab_size)
        if src.shape[0] == 0 or src.shape[1] == 0:
            raise ValueError(f"{fn}: src must have at least one step and one sequence, got shape "
                             f"{shape_str(src.shape)}")
        lengths = _src_lengths(src_lengths, src.shape[1], src.shape[0], fn)
        return self._encode(src, lengths)

    def _run(self, src, lengths, tgt_in):
        memory, state = self._encode(src, lengths)
        logits, alpha, _ = self.decoder(tgt_in, memory if self.decoder.attention else None, lengths, state)
        self._ctx = True
        return logits, alpha

    @exclusive
    def forward(self, src, src_lengths, tgt_in):
        fn = "Seq2Seq.forward"
        src, lengths, tgt_in, _ = self._check_batch(src, src_lengths, tgt_in, None, fn)
        return self._run(src, lengths, tgt_in)

    def _scheduled_inputs(self, src, lengths, tgt_in, tgt_out, ignore_index):
        """tgt_in with each position t >= 1 replaced, with probability scheduled_sampling, by the
        model's greedy prediction for t - 1 from a teacher-forced pass (padding left alone)."""
        p = check_probability(self.scheduled_sampling, "scheduled_sampling", "Seq2Seq.loss", allow_one=True)
        if p == 0.0 or not self.training or tgt_in.shape[0] < 2:
            return tgt_in
        logits, _ = self._run(src, lengths, tgt_in)
        pred = logits.argmax(axis=-1)  # (T, B): the prediction for position t + 1's input
        swap = self._rng.random(tgt_in.shape) < p
        swap[0] = False
        if tgt_out is not None:
            swap[1:] &= tgt_out[:-1] != ignore_index  # only where the previous target is real
        mixed = tgt_in.copy()
        mixed[1:][swap[1:]] = pred[:-1][swap[1:]]
        return mixed

    @exclusive
    def loss(self, src, src_lengths, tgt_in, tgt_out, ignore_index=-100, reduction="mean"):
        fn = "Seq2Seq.loss"
        src, lengths, tgt_in, tgt_out = self._check_batch(src, src_lengths, tgt_in, tgt_out, fn)
        tgt_in = self._scheduled_inputs(src, lengths, tgt_in, tgt_out, ignore_index)
        logits, _ = self._run(src, lengths, tgt_in)
        loss, self._dlogits = token_loss(logits, tgt_out, None, ignore_index, reduction, self.threads, fn)
        return loss

    @exclusive
    def backward(self, grad_logits=None):
        fn = "Seq2Seq.backward"
        if self._ctx is None:
            raise no_forward(fn)
        if grad_logits is None:
            if self._dlogits is None:
                raise no_forward(fn, "loss() (or pass grad_logits)", "each can be differentiated once")
            grad_logits = self._dlogits
        self._dlogits = self._ctx = None
        dmemory, dstate = self.decoder.backward(grad_logits)
        denc_state = self.bridge.backward(dstate)
        if dmemory is None:
            S_B_Hm = self.encoder.rnn._ctx["shape"] + (self.encoder.memory_size,)
            dmemory = np.zeros(S_B_Hm, self.dtype)
        self.encoder.backward(dmemory, denc_state)

    @exclusive
    def evaluate_batch(self, batch, src_lengths=None, tgt_in=None, tgt_out=None, ignore_index=-100):
        """-> (sum of the token NLL, tokens counted, tokens whose argmax is the target), nothing kept
        for a backward. ``batch``: a PairBatch (rnncore.data), or src with the other three arrays."""
        fn = "Seq2Seq.evaluate_batch"
        src = batch
        if tgt_in is None and all(hasattr(batch, f) for f in ("src", "src_lengths", "tgt_in", "tgt_out")):
            src, src_lengths, tgt_in, tgt_out = batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out
        if tgt_in is None or tgt_out is None:
            raise TypeError(f"{fn}: give a PairBatch, or src, src_lengths, tgt_in and tgt_out")
        src, lengths, tgt_in, tgt_out = self._check_batch(src, src_lengths, tgt_in, tgt_out, fn)
        logits, _ = self._run(src, lengths, tgt_in)
        self._ctx = None
        counted = tgt_out != ignore_index
        losses, _ = cross_entropy(logits, tgt_out, ignore_index=ignore_index, reduction="none", compute_grad=False,
                                  threads=self.threads)
        correct = int(((logits.argmax(axis=-1) == tgt_out) & counted).sum())
        return float(np.sum(losses, dtype=np.float64)), int(counted.sum()), correct

    # -- generation -------------------------------------------------------------------------
    def decoder_parts(self):
        """The decoder's weights as rnncore.sampling.DecoderParts (what seq2seq_decode reads)."""
        from ..sampling import DecoderParts

        d = self.decoder
        layers = [d.rnn.layer_parameters(k) if d.input_feed else d.rnn.layer_parameters(k, 0)
                  for k in range(d.num_layers)]
        data = [[None if p is None else p.data for p in group] for group in zip(*layers)]
        cell = "rnn_tanh" if d.cell == "rnn" else d.cell
        return DecoderParts(cell=cell, num_layers=d.num_layers, hidden_size=d.hidden_size, input_feed=d.input_feed,
                            embedding=d.embedding.weight.data, w_ih=data[0], w_hh=data[1], b_ih=data[2],
                            b_hh=data[3], attention=d.attention_module, out_w=d.generator.weight.data,
                            out_b=None if d.generator.bias is None else d.generator.bias.data)

    def translate_ids(self, sources, *, bos, eos, method="beam", beam_width=5, n_best=1, length_penalty=1.0,
                      max_len=None, batch_size=64, return_attention=False, temperature=1.0, top_k=0, top_p=1.0,
                      seed=None):
        """Decode source id sequences (a list of 1-D int arrays, each at least one id): a list, per
        source, of up to n_best rnncore.sampling.Hypothesis, best first. max_len: the most target
        tokens per source (default 2 * its length + 10). Batches of batch_size sources, each one
        encoder call and one C++ decoding loop (rnncore.sampling.seq2seq_decode; see it for the
        methods). The model is put in eval mode for the call and restored after."""
        from ..sampling import seq2seq_decode

        fn = "Seq2Seq.translate_ids"
        if isinstance(sources, np.ndarray) and sources.ndim == 1 and sources.dtype.kind in "iu":
            raise TypeError(f"{fn}: sources must be a list of id sequences (one per source), got one 1-D array; "
                            "wrap it in a list")
        sources = [_ids(np.asarray(s).reshape(-1, 1), f"sources[{i}]", fn, self.src_vocab_size)[:, 0]
                   if np.size(s) else None for i, s in enumerate(sources)]
        for i, s in enumerate(sources):
            if s is None:
                raise ValueError(f"{fn}: sources[{i}] is empty; every source needs at least one token")
        batch_size = check_int(batch_size, "batch_size", fn)
        pad = self.encoder.embedding.padding_idx or 0
        was = self.training
        self.eval()
        out = []
        try:
            for start in range(0, len(sources), batch_size):
                chunk = sources[start:start + batch_size]
                lengths = np.array([len(s) for s in chunk], np.int64)
                src = np.full((int(lengths.max()), len(chunk)), pad, np.int64)
                for b, s in enumerate(chunk):
                    src[:len(s), b] = s
                limit = 2 * lengths + 10 if max_len is None else max_len
                memory, state = self.encode(src, lengths)
                self.encoder.rnn._ctx = None
                attend = self.decoder.attention is not None
                out += seq2seq_decode(self.decoder_parts(), memory if attend else None, lengths if attend else None,
                                      state, bos=bos, eos=eos, max_len=limit, method=method, beam_width=beam_width,
                                      n_best=n_best, length_penalty=length_penalty, temperature=temperature,
                                      top_k=top_k, top_p=top_p, seed=seed, return_attention=return_attention,
                                      threads=self.threads)
        finally:
            self.train(was)
        return out

    def translate(self, sentences, src_tokenizer=None, tgt_tokenizer=None, *, n_best=1, return_attention=False,
                  **kwargs):
        """Translate text: a str or a list of str -> the best translation of each (a str, or a list
        of n_best str when n_best > 1). The tokenizers default to the model's ``src_tokenizer`` /
        ``tgt_tokenizer`` attributes (set by rnncore's CLI and checkpoints; rnncore.data's
        pair_tokenizer makes them); ``<s>`` / ``</s>`` come from the target vocabulary.
        return_attention=True returns, per sentence, (translation, alpha (n, S) over the source
        tokens, the source tokens, the target tokens) for the best hypothesis (the heat-map's
        input: rnncore.diagnostics.plot_attention). Other keywords go to translate_ids (method,
        beam_width, length_penalty, max_len, batch_size, temperature, top_k, top_p, seed)."""
        fn = "Seq2Seq.translate"
        src_tok = src_tokenizer if src_tokenizer is not None else getattr(self, "src_tokenizer", None)
        tgt_tok = tgt_tokenizer if tgt_tokenizer is not None else getattr(self, "tgt_tokenizer", None)
        if src_tok is None or tgt_tok is None:
            raise ValueError(f"{fn}: needs the source and target tokenizers (pass src_tokenizer and tgt_tokenizer, "
                             "or set model.src_tokenizer / model.tgt_tokenizer)")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{fn}: sentences must be a str or a list of str, got {type(t).__name__} at [{i}]")
        vocab = tgt_tok.vocab
        if vocab.bos_id is None or vocab.eos_id is None:
            raise ValueError(f"{fn}: the target vocabulary needs <s> and </s> (use rnncore.data.pair_tokenizer)")
        ids = []
        for i, t in enumerate(texts):
            a = np.asarray(src_tok.encode(t), np.int64)
            if a.size == 0:
                raise ValueError(f"{fn}: sentences[{i}] has no tokens ({bounded_repr(t)}); nothing to translate")
            ids.append(a)
        hyps = self.translate_ids(ids, bos=vocab.bos_id, eos=vocab.eos_id, n_best=n_best,
                                  return_attention=return_attention, **kwargs)
        eos = vocab.eos_id

        def text(h):
            toks = h.tokens[:-1] if len(h.tokens) and h.tokens[-1] == eos else h.tokens
            return tgt_tok.decode(toks)

        result = []
        for src_ids, hs in zip(ids, hyps):
            if return_attention:
                best = hs[0]
                result.append((text(best), best.attention, [src_tok.vocab.symbols[int(i)] for i in src_ids],
                               [vocab.symbols[int(i)] for i in best.tokens]))
            elif n_best == 1:
                result.append(text(hs[0]))
            else:
                result.append([text(h) for h in hs])
        return result[0] if single else result

    def extra_repr(self):
        return f"bridge={self.bridge.kind!r}"
