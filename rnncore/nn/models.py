"""Models built from explicit forward/backward pairs: LanguageModel, SequenceClassifier,
SequenceTagger, ConditionedGenerator, SequenceRegressor.

Shape letters: T time steps, B batch, V vocabulary, E embedding_dim, H hidden_size,
L num_layers, D = 2 if bidirectional else 1, C classes, F feature size.

Every model is time-major inside ((T, B, ...)); with batch_first=True the inputs and outputs
are (B, T, ...) and the conversion happens once at the edge, on the narrowest arrays (token
ids, hidden states), never on (T, B, V) logits. Each model has forward(...) and backward(...)
(backward adds into every parameter's .grad) and a loss(...) convenience that runs forward,
the fused cross-entropy, and remembers the gradient for a following backward(). Parameters,
state_dict, train()/eval() and zero_grad() come from Module. There is no Python loop over
time anywhere here.

Randomness: ``seed`` seeds one numpy SeedSequence from which each submodule's initialisation
and the model's dropout Generator are spawned; no global RNG is used. dtype None means float32.

Threads: a model runs one call at a time. forward, loss or backward called while another
thread is inside one of them on the same model raises RuntimeError ("... is already running
in another thread; use one model per thread or a lock"), never computes with the other
call's saved state. (Generation, rnncore.sampling, only reads the weights and may run from
several threads at once.)
"""
import numpy as np

from .._checks import (as_index_array, as_lengths, as_real_array, bounded_repr, cell_name, check_int,
                       check_num_layers, check_probability, check_seed, expect_shape, no_forward, resolve_dtype,
                       shape_str)
from .._threads import exclusive
from .adaptive import AdaptiveLogSoftmaxWithLoss
from .layers import Dropout, Embedding, Linear
from .loss import cross_entropy, mse_loss, token_loss
from .module import Module
from .rnn import GRU, LSTM, RNN

_CELLS = ("lstm", "gru", "rnn", "rnn_tanh", "rnn_relu")
_POOLINGS = ("last", "mean", "max")


def _make_rnn(cell, input_size, hidden_size, num_layers, dropout, bidirectional, dtype, seed, threads, proj_size=0):
    """The model's recurrent layer; `cell` is one of _CELLS, already normalised by cell_name()."""
    # Dropout between stacked layers only (with one layer the model's own dropout layers act).
    kwargs = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional,
                  dtype=dtype, seed=seed, threads=threads)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, proj_size=proj_size, **kwargs)
    if cell == "gru":
        return GRU(input_size, hidden_size, **kwargs)
    return RNN(input_size, hidden_size, nonlinearity="relu" if cell == "rnn_relu" else "tanh", **kwargs)


def _time_major(a, batch_first):
    """(B, T, ...) -> (T, B, ...) contiguous when batch_first; unchanged otherwise."""
    return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if batch_first else a


class _TokenDecoder(Module):
    """Embedding -> dropout -> stacked RNN -> dropout -> Linear over the vocabulary (shared
    by LanguageModel and ConditionedGenerator)."""

    def _build(self, fn, vocab_size, embedding_dim, hidden_size, num_layers, cell, dropout, tie_weights,
               batch_first, padding_idx, dtype, seed, threads, extra_seeds=0, adaptive_softmax=None, proj_size=0,
               adaptive_div_value=4.0, adaptive_head_bias=False):
        self.vocab_size = check_int(vocab_size, "vocab_size", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.proj_size = check_int(proj_size, "proj_size", fn, minimum=0)
        self.num_layers = check_num_layers(num_layers, fn)
        self.dropout = check_probability(dropout, "dropout", fn)
        self.cell = cell_name(cell, fn, _CELLS)
        self.tie_weights = bool(tie_weights)
        self.batch_first = bool(batch_first)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seed = check_seed(seed, fn, objects=False)
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"{fn}: proj_size (projections) is only for cell='lstm', got proj_size={self.proj_size} "
                             f"with cell={self.cell!r}")
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"{fn}: proj_size must be smaller than hidden_size (as in PyTorch), got "
                             f"proj_size={self.proj_size}, hidden_size={self.hidden_size}")
        R = self.proj_size or self.hidden_size  # the RNN's output width
        if self.tie_weights and R != self.embedding_dim:
            what = "proj_size" if self.proj_size else "hidden_size"
            raise ValueError(f"{fn}: tie_weights requires {what} == embedding_dim (the output projection "
                             f"reuses the (V, E) embedding matrix), got {what}={R}, "
                             f"embedding_dim={self.embedding_dim}")
        self.adaptive_softmax = None if adaptive_softmax is None else [int(c) for c in adaptive_softmax]
        if self.adaptive_softmax is not None and self.tie_weights:
            raise ValueError(f"{fn}: tie_weights and adaptive_softmax cannot be combined (the adaptive softmax has "
                             "no (V, E) output matrix to share)")
        seeds = np.random.SeedSequence(seed).spawn(4 + extra_seeds)
        self.encoder = Embedding(self.vocab_size, self.embedding_dim, padding_idx, dtype=self.dtype, seed=seeds[0],
                                 threads=threads)
        self.rnn = _make_rnn(self.cell, self.embedding_dim, self.hidden_size, self.num_layers, self.dropout, False,
                             self.dtype, seeds[1], threads, self.proj_size)
        if self.adaptive_softmax is None:
            self.decoder = Linear(R, self.vocab_size, dtype=self.dtype, seed=seeds[2], threads=threads)
        else:
            self.decoder = AdaptiveLogSoftmaxWithLoss(R, self.vocab_size, self.adaptive_softmax,
                                                      div_value=adaptive_div_value, head_bias=adaptive_head_bias,
                                                      dtype=self.dtype, seed=seeds[2],
                                                      threads=threads)
        self.adaptive_div_value = None if self.adaptive_softmax is None else self.decoder.div_value
        self.adaptive_head_bias = self.adaptive_softmax is not None and self.decoder.head_bias
        self._adaptive_rows = None
        if self.tie_weights:
            self.decoder.weight = self.encoder.weight  # one Parameter: both uses add into its .grad
        rng = np.random.default_rng(seeds[3])
        self.drop_in = Dropout(self.dropout, rng=rng)
        self.drop_out = Dropout(self.dropout, rng=rng)
        self._dlogits = None
        self.grad_state = None
        return seeds[4:]

    def config(self):
        """Constructor arguments that rebuild this model: ``type(self)(**model.config())``."""
        return dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, cell=self.cell, dropout=self.dropout, tie_weights=self.tie_weights,
                    batch_first=self.batch_first, padding_idx=self.encoder.padding_idx, dtype=self.dtype.name,
                    **({} if self.adaptive_softmax is None else {"adaptive_softmax": list(self.adaptive_softmax)}),
                    **({"proj_size": self.proj_size} if self.proj_size else {}),
                    **({} if self.adaptive_div_value in (None, 4.0)
                       else {"adaptive_div_value": self.adaptive_div_value}),
                    **({"adaptive_head_bias": True} if self.adaptive_head_bias else {}))

    def _tokens(self, tokens, fn):
        ids = as_index_array(tokens, "tokens", fn)
        if ids.ndim != 2:
            layout = "(B, T)" if self.batch_first else "(T, B)"
            raise ValueError(f"{fn}: tokens must have shape {layout}, got {shape_str(ids.shape)}")
        return ids

    def _embed(self, ids):
        """ids (T, B) or (B, T) -> embedded (T, B, E)."""
        return _time_major(self.encoder(ids), self.batch_first)

    def _embed_backward(self, dx):
        """dx (T, B, E) -> into encoder.weight.grad."""
        self.encoder.backward(_time_major(dx, self.batch_first))

    def _head(self, out):
        """RNN output (T, B, H) -> logits (T, B, V) or (B, T, V); with an adaptive softmax, the
        full log-probabilities (valid logits: their logsumexp is 0), with nothing kept for a backward."""
        if self.adaptive_softmax is not None:
            self._adaptive_rows = None
            return self.decoder.log_prob(_time_major(self.drop_out(out), self.batch_first))
        return self.decoder(_time_major(self.drop_out(out), self.batch_first))

    def _adaptive_loss(self, out, targets, mask, ignore_index, reduction, fn):
        """Adaptive-softmax loss of the RNN output (T, B, H) over the counted positions (target !=
        ignore_index and mask != 0); the rows' gradient is kept for backward()."""
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{fn}: reduction must be one of 'mean', 'sum', 'none', got {bounded_repr(reduction)}")
        T, B, H = out.shape
        lead = (B, T) if self.batch_first else (T, B)
        targets = as_index_array(targets, "targets", fn)
        if targets.shape != lead:
            raise ValueError(f"{fn}: targets must have the tokens' shape {shape_str(lead)}, "
                             f"got {shape_str(targets.shape)}")
        t = _time_major(targets, self.batch_first).reshape(-1)
        counts = t != ignore_index
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != lead:
                raise ValueError(f"{fn}: mask must have the tokens' shape {shape_str(lead)}, "
                                 f"got {shape_str(mask.shape)}")
            counts &= _time_major(mask, self.batch_first).reshape(-1) != 0
        rows = np.flatnonzero(counts)
        h = self.drop_out(out).reshape(T * B, H)
        output, loss = self.decoder(h[rows], t[rows])
        n = rows.size
        self._adaptive_rows = (rows, out.shape, reduction, n)
        self._dlogits = True  # the gradient is the decoder's, taken by backward()
        if reduction == "mean":
            return loss
        if reduction == "sum":
            return self.dtype.type(float(loss) * n)
        full = np.zeros(T * B, self.dtype)
        full[rows] = -output
        return _time_major(full.reshape(T, B), self.batch_first)

    def _adaptive_backward(self, fn):
        if self._adaptive_rows is None or self._dlogits is None:
            raise no_forward(fn, "loss()", "with an adaptive softmax the gradient comes from loss(); "
                             "grad_logits cannot be given")
        rows, shape, reduction, n = self._adaptive_rows
        self._adaptive_rows = self._dlogits = None
        if reduction == "none":
            raise ValueError(f"{fn}: with an adaptive softmax backward() follows loss(reduction='mean' or 'sum')")
        drows = self.decoder.backward(1.0 if reduction == "mean" else float(n))
        T, B, H = shape
        dh = np.zeros((T * B, H), self.dtype)
        dh[rows] = drows
        return self.drop_out.backward(dh.reshape(T, B, H))

    def _head_backward(self, dlogits):
        return self.drop_out.backward(_time_major(self.decoder.backward(dlogits), self.batch_first))

    def _grad_logits(self, grad_logits, fn):
        if grad_logits is None:
            if self._dlogits is None:
                raise no_forward(fn, "loss() (or pass grad_logits)", "each can be differentiated once")
            grad_logits, self._dlogits = self._dlogits, None
        else:
            self._dlogits = None
        return grad_logits

    def _loss(self, logits, targets, mask, ignore_index, reduction, fn):
        loss, self._dlogits = token_loss(logits, targets, mask, ignore_index, reduction, self.threads, fn)
        return loss


class LanguageModel(_TokenDecoder):
    """Embedding -> dropout -> stacked RNN/LSTM/GRU -> dropout -> Linear(H, V).

    Args: vocab_size V, embedding_dim E, hidden_size H, num_layers L, cell ('lstm', 'gru',
    'rnn' = 'rnn_tanh', 'rnn_relu'), dropout (on the embeddings, between stacked layers and on
    the RNN output, as in PyTorch's word_language_model), tie_weights (the output projection
    shares the (V, E) embedding matrix; requires H == E), batch_first, padding_idx,
    adaptive_softmax (cutoffs, e.g. [2000, 6000]: the output layer is an
    AdaptiveLogSoftmaxWithLoss(H, V, cutoffs) instead of Linear(H, V); loss() then computes only
    the head and the clusters the targets fall in, and forward() returns the full
    log-probabilities as logits), adaptive_div_value (its div_value: cluster i's projection has
    H // div_value**(i+1) features; default 4.0 as in PyTorch), adaptive_head_bias (its head_bias:
    a bias on the head's shortlist and cluster scores; default False as in PyTorch).
    Keywords: proj_size (cell='lstm' only: an LSTM with projections, 0 < P < H, PyTorch's
    proj_size; the head is then Linear(P, V) and h is (L, B, P)), dtype, seed, threads, precision
    ('bf16': bfloat16 mixed precision for the RNN and the Linear head, see Module.set_precision).

    forward(tokens (T, B) ints, state=None) -> (logits (T, B, V), new_state); with batch_first
    tokens (B, T) and logits (B, T, V). state / new_state: h (L, B, H), or (h, c) for an LSTM.
    Truncated BPTT: pass the returned state into the next window's forward; gradients stop
    there (backward gives the state's gradient in ``grad_state`` but sends it nowhere).

    loss(tokens, targets, state=None, mask=None, ignore_index=-100, reduction='mean')
    -> (loss, new_state); then backward() with no arguments.
    target_log_prob(tokens, targets, state=None) -> (log-probabilities of the targets, like
    tokens, new_state): for evaluation; nothing kept for a backward.
    backward(grad_logits=None, grad_state=None): grad_logits like the logits (None: the
    gradient remembered by loss()); grad_state: gradient of new_state, or None.
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers=1, cell="lstm", dropout=0.0,
                 tie_weights=False, batch_first=False, padding_idx=None, adaptive_softmax=None,
                 adaptive_div_value=4.0, adaptive_head_bias=False, *, proj_size=0, dtype=np.float32, seed=None,
                 threads=None, precision=None):
        super().__init__()
        self._build("LanguageModel", vocab_size, embedding_dim, hidden_size, num_layers, cell, dropout, tie_weights,
                    batch_first, padding_idx, dtype, seed, threads, adaptive_softmax=adaptive_softmax,
                    proj_size=proj_size, adaptive_div_value=adaptive_div_value,
                    adaptive_head_bias=adaptive_head_bias)
        if precision is not None:
            self.set_precision(precision)

    @exclusive
    def forward(self, tokens, state=None):
        fn = "LanguageModel.forward"
        ids = self._tokens(tokens, fn)
        x = self.drop_in(self._embed(ids))
        out, new_state = self.rnn(x, state)
        return self._head(out), new_state

    @exclusive
    def loss(self, tokens, targets, state=None, mask=None, ignore_index=-100, reduction="mean"):
        if self.adaptive_softmax is not None:
            ids = self._tokens(tokens, "LanguageModel.loss")
            out, new_state = self.rnn(self.drop_in(self._embed(ids)), state)
            return self._adaptive_loss(out, targets, mask, ignore_index, reduction, "LanguageModel.loss"), new_state
        logits, new_state = self.forward(tokens, state)
        loss = self._loss(logits, targets, mask, ignore_index, reduction, "LanguageModel.loss")
        return loss, new_state

    @exclusive
    def target_log_prob(self, tokens, targets, state=None):
        """The log-probability of each target (T, B) (or (B, T)) and new_state, as forward()'s
        log-softmax read at the targets, with nothing kept for a backward. With an adaptive
        softmax only the head and the clusters the targets fall in are computed, never the
        (T, B, V) log-probabilities (what evaluation needs)."""
        fn = "LanguageModel.target_log_prob"
        ids = self._tokens(tokens, fn)
        targets = as_index_array(targets, "targets", fn)
        if targets.shape != ids.shape:
            raise ValueError(f"{fn}: targets must have the tokens' shape {shape_str(ids.shape)}, "
                             f"got {shape_str(targets.shape)}")
        if self.adaptive_softmax is None:
            logits, new_state = self.forward(ids, state)
            losses, _ = cross_entropy(logits, targets, reduction="none", threads=self.threads)
            return -losses, new_state
        out, new_state = self.rnn(self.drop_in(self._embed(ids)), state)
        T, B, H = out.shape
        t = _time_major(targets, self.batch_first).reshape(-1)
        lp = self.decoder.target_log_prob(self.drop_out(out).reshape(T * B, H), t).reshape(T, B)
        return _time_major(lp, self.batch_first), new_state

    @exclusive
    def backward(self, grad_logits=None, grad_state=None):
        fn = "LanguageModel.backward"
        if self.adaptive_softmax is not None:
            if grad_logits is not None:
                raise ValueError(f"{fn}: with an adaptive softmax the gradient comes from loss(); grad_logits "
                                 "cannot be given")
            dout = self._adaptive_backward(fn)
        else:
            dlogits = self._grad_logits(grad_logits, fn)
            dout = self._head_backward(dlogits)
        dx = self.rnn.backward(dout, grad_state)
        self.grad_state = self.rnn.grad_h0
        self._embed_backward(self.drop_in.backward(dx))

    def extra_repr(self):
        s = f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}, hidden_size={self.hidden_size}"
        if self.tie_weights:
            s += ", tie_weights=True"
        if self.adaptive_softmax is not None:
            s += f", adaptive_softmax={self.adaptive_softmax}"
            if self.adaptive_div_value != 4.0:
                s += f", adaptive_div_value={self.adaptive_div_value:g}"
            if self.adaptive_head_bias:
                s += ", adaptive_head_bias=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class ConditionedGenerator(_TokenDecoder):
    """Vector-to-sequence (e.g. captioning): a LanguageModel conditioned on a feature vector.

    condition='init': h0 = Linear(F, L*H)(features) for every layer (an LSTM also gets
    c0 = Linear(F, L*H)(features)); 'input': Linear(F, E)(features) is added to every step's
    embedded token (so W_ih times it joins every step's input projection); 'both': both.

    forward(features (B, F), tokens (T, B), state=None) -> (logits (T, B, V), new_state); a
    given state replaces the initial state computed from the features (e.g. for the next
    window of a long sequence); 'input' conditioning applies regardless.
    loss(features, tokens, targets, state=None, mask=None, ignore_index=-100) -> (loss, new_state).
    backward(grad_logits=None, grad_state=None) -> grad_features (B, F), also kept in
    ``grad_features``; adds into the projections' gradients too.
    Keywords: proj_size (cell='lstm' only: an LSTM with projections, 0 < P < H, as in
    LanguageModel; init_h is then Linear(F, L*P), init_c stays Linear(F, L*H)), dtype, seed, threads.
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, feature_size, num_layers=1, cell="lstm",
                 condition="init", dropout=0.0, tie_weights=False, batch_first=False, padding_idx=None, *,
                 proj_size=0, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "ConditionedGenerator"
        if condition not in ("init", "input", "both"):
            raise ValueError(f"{fn}: condition must be 'init', 'input' or 'both', got {bounded_repr(condition)}")
        self.feature_size = check_int(feature_size, "feature_size", fn)
        self.condition = condition
        seeds = self._build(fn, vocab_size, embedding_dim, hidden_size, num_layers, cell, dropout, tie_weights,
                            batch_first, padding_idx, dtype, seed, threads, extra_seeds=3, proj_size=proj_size)
        LH = self.num_layers * self.hidden_size
        LR = self.num_layers * (self.proj_size or self.hidden_size)  # h is (L, B, P) with projections
        init, proj = condition in ("init", "both"), condition in ("input", "both")
        # the projections this conditioning uses; the others are declared None
        self.register_module("init_h", Linear(self.feature_size, LR, dtype=self.dtype, seed=seeds[0],
                                              threads=threads) if init else None)
        self.register_module("init_c", Linear(self.feature_size, LH, dtype=self.dtype, seed=seeds[1],
                                              threads=threads) if init and self.cell == "lstm" else None)
        self.register_module("feature_proj", Linear(self.feature_size, self.embedding_dim, dtype=self.dtype,
                                                    seed=seeds[2], threads=threads) if proj else None)
        self._used = None
        self.grad_features = None

    def config(self):
        cfg = super().config()
        cfg.update(feature_size=self.feature_size, condition=self.condition)
        return cfg

    def _initial_state(self, f):
        """features (B, F) -> h0 (L, B, R) from a Linear(F, L*R) (R = proj_size or H) and, for an
        LSTM, c0 (L, B, H) from a Linear(F, L*H)."""
        B, L, H = f.shape[0], self.num_layers, self.hidden_size
        R = self.proj_size or H
        h0 = np.ascontiguousarray(self.init_h(f).reshape(B, L, R).transpose(1, 0, 2))
        if self.cell != "lstm":
            return h0
        return h0, np.ascontiguousarray(self.init_c(f).reshape(B, L, H).transpose(1, 0, 2))

    @exclusive
    def forward(self, features, tokens, state=None):
        fn = "ConditionedGenerator.forward"
        ids = self._tokens(tokens, fn)
        B = ids.shape[0] if self.batch_first else ids.shape[1]
        f = as_real_array(features, "features", fn, self.dtype)
        expect_shape(f, (B, self.feature_size), "features", fn, "(B, F)")
        x = self._embed(ids)
        use_input = self.condition in ("input", "both")
        if use_input:
            x = x + self.feature_proj(f)[None]
        x = self.drop_in(x)
        use_init = state is None and self.condition in ("init", "both")
        if use_init:
            state = self._initial_state(f)
        self._used = (use_input, use_init)
        out, new_state = self.rnn(x, state)
        return self._head(out), new_state

    @exclusive
    def loss(self, features, tokens, targets, state=None, mask=None, ignore_index=-100, reduction="mean"):
        logits, new_state = self.forward(features, tokens, state)
        loss = self._loss(logits, targets, mask, ignore_index, reduction, "ConditionedGenerator.loss")
        return loss, new_state

    @exclusive
    def backward(self, grad_logits=None, grad_state=None):
        fn = "ConditionedGenerator.backward"
        if self._used is None:
            raise no_forward(fn)
        dlogits = self._grad_logits(grad_logits, fn)
        use_input, use_init = self._used
        self._used = None
        dout = self._head_backward(dlogits)
        dx = self.drop_in.backward(self.rnn.backward(dout, grad_state))
        self.grad_state = self.rnn.grad_h0
        self._embed_backward(dx)
        L, H = self.num_layers, self.hidden_size
        R = self.proj_size or H
        df = None
        if use_input:
            # forward: x[t] = embedding[t] + proj(f) for every t
            df = self.feature_proj.backward(dx.sum(axis=0))
        if use_init:
            dh0, dc0 = self.grad_state if self.cell == "lstm" else (self.grad_state, None)
            B = dh0.shape[1]
            g = self.init_h.backward(np.ascontiguousarray(dh0.transpose(1, 0, 2)).reshape(B, L * R))
            df = g if df is None else df + g
            if dc0 is not None:
                df += self.init_c.backward(np.ascontiguousarray(dc0.transpose(1, 0, 2)).reshape(B, L * H))
        self.grad_features = df
        return df

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}, hidden_size={self.hidden_size}, "
                f"feature_size={self.feature_size}, condition={self.condition!r}"
                + (f", proj_size={self.proj_size}" if self.proj_size else ""))


class _SequenceEncoder(Module):
    """Token ids (via an Embedding) or float features -> dropout -> stacked, optionally
    bidirectional RNN, with per-sequence lengths (shared by SequenceClassifier and SequenceTagger)."""

    def _build(self, fn, vocab_size, embedding_dim, input_size, hidden_size, num_classes, num_layers, cell,
               bidirectional, dropout, batch_first, padding_idx, dtype, seed, threads):
        if (vocab_size is None) == (input_size is None):
            raise ValueError(f"{fn}: give exactly one of vocab_size (token ids in, with embedding_dim) or "
                             f"input_size (float features in), got vocab_size={bounded_repr(vocab_size)}, "
                             f"input_size={bounded_repr(input_size)}")
        if hidden_size is None or num_classes is None:
            raise TypeError(f"{fn}: hidden_size and num_classes are required")
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.num_classes = check_int(num_classes, "num_classes", fn)
        self.num_layers = check_num_layers(num_layers, fn)
        self.dropout = check_probability(dropout, "dropout", fn)
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.cell = cell_name(cell, fn, _CELLS)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seeds = np.random.SeedSequence(check_seed(seed, fn, objects=False)).spawn(4)
        if vocab_size is not None:
            self.vocab_size = check_int(vocab_size, "vocab_size", fn)
            if embedding_dim is None:
                raise TypeError(f"{fn}: embedding_dim is required with vocab_size")
            self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
            self.input_size = None
            self.register_module("embedding", Embedding(self.vocab_size, self.embedding_dim, padding_idx,
                                                        dtype=self.dtype, seed=seeds[0], threads=threads))
            rnn_in = self.embedding_dim
        else:
            self.vocab_size = self.embedding_dim = None
            self.input_size = check_int(input_size, "input_size", fn)
            self.register_module("embedding", None)  # float features go straight into the RNN
            rnn_in = self.input_size
        self.rnn = _make_rnn(self.cell, rnn_in, self.hidden_size, self.num_layers, self.dropout, self.bidirectional,
                             self.dtype, seeds[1], threads)
        D = 2 if self.bidirectional else 1
        self.fc = Linear(D * self.hidden_size, self.num_classes, dtype=self.dtype, seed=seeds[2], threads=threads)
        rng = np.random.default_rng(seeds[3])
        self.drop_in = Dropout(self.dropout, rng=rng)
        self.drop_out = Dropout(self.dropout, rng=rng)
        self._ctx = None
        self._dlogits = None

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _take_grad_logits(self, grad_logits, fn):
        """The logits' gradient: the given one, or the one the last loss() left (used once)."""
        if self._ctx is None:
            raise no_forward(fn)
        if grad_logits is None:
            if self._dlogits is None:
                raise no_forward(fn, "loss() (or pass grad_logits)", "each can be differentiated once")
            grad_logits = self._dlogits
        self._dlogits = None
        return grad_logits

    def config(self):
        """Constructor arguments that rebuild this model: ``type(self)(**model.config())``."""
        cfg = dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, input_size=self.input_size,
                   hidden_size=self.hidden_size, num_classes=self.num_classes, num_layers=self.num_layers,
                   cell=self.cell, bidirectional=self.bidirectional, dropout=self.dropout,
                   batch_first=self.batch_first, dtype=self.dtype.name,
                   padding_idx=None if self.embedding is None else self.embedding.padding_idx)
        if hasattr(self, "pooling"):
            cfg["pooling"] = self.pooling
        return cfg

    def _encode(self, x, lengths, fn):
        """x -> (out (T, B, D*H), h_n (L*D, B, H), lengths (B,) int64 or None)."""
        if self.embedding is not None:
            ids = as_index_array(x, "x", fn)
            if ids.ndim != 2:
                layout = "(B, T)" if self.batch_first else "(T, B)"
                raise ValueError(f"{fn}: x must be token ids of shape {layout}, got {shape_str(ids.shape)}")
            x = _time_major(self.embedding(ids), self.batch_first)
        else:
            x = as_real_array(x, "x", fn, self.dtype)
            if x.ndim != 3 or x.shape[2] != self.input_size:
                layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
                raise ValueError(f"{fn}: x must be features of shape {layout} with I = {self.input_size}, "
                                 f"got {shape_str(x.shape)}")
            x = _time_major(x, self.batch_first)
        T, B = x.shape[:2]
        if lengths is not None:
            lengths = as_lengths(lengths, B, T, fn)
        out, h_n = self.rnn(self.drop_in(x), lengths=lengths)
        if self.cell == "lstm":
            h_n = h_n[0]
        return out, h_n, lengths

    def _encode_backward(self, dout, dh_n):
        """dout (T, B, D*H) or None; dh_n (L*D, B, H) or None -> into every encoder gradient."""
        grad_h_n = (dh_n, None) if self.cell == "lstm" and dh_n is not None else dh_n
        dx = self.drop_in.backward(self.rnn.backward(dout, grad_h_n))
        if self.embedding is not None:
            self.embedding.backward(_time_major(dx, self.batch_first))
            return None
        return _time_major(dx, self.batch_first)

    # A head at every step (SequenceTagger, SequenceRegressor): dropout -> fc over the encoder's output.
    def _step_head(self, out, lengths):
        self._ctx = (out.shape, lengths)
        return self.fc(_time_major(self.drop_out(out), self.batch_first))

    def _valid_steps(self):
        """The mask of steps t < length, (T, B) ((B, T) with batch_first); None without lengths."""
        (T, _, _), lens = self._ctx
        if lens is None:
            return None
        mask = np.arange(T)[:, None] < lens[None, :]
        return mask.T if self.batch_first else mask

    def _step_head_backward(self, grad, fn):
        grad = self._take_grad_logits(grad, fn)
        self._ctx = None
        dout = self.drop_out.backward(_time_major(self.fc.backward(grad), self.batch_first))
        return self._encode_backward(dout, None)


class SequenceClassifier(_SequenceEncoder):
    """Many-to-one: a sequence -> class logits (B, C).

    Input: token ids (T, B) with vocab_size and embedding_dim, or float features (T, B, I)
    with input_size ((B, T[, I]) with batch_first). Stacked, optionally bidirectional RNN;
    ``lengths`` (B,) marks each sequence's valid steps. Pooling of the RNN output:
      'last': each direction's final state (h_n of the last layer): the forward direction at
              the sequence's last valid step, the reverse direction after t = 0;
      'mean': mean over the valid steps; 'max': elementwise max over the valid steps
      (a sequence of length 0 pools to zeros).
    Then dropout -> Linear(D*H, C).

    forward(x, lengths=None) -> logits (B, C); backward(grad_logits=None) -> grad_x for float
    features (None for token ids); loss(x, labels (B,), lengths=None, reduction='mean') -> loss.
    """

    def __init__(self, vocab_size=None, embedding_dim=None, hidden_size=None, num_classes=None, num_layers=1,
                 cell="lstm", bidirectional=False, pooling="last", dropout=0.0, batch_first=False, padding_idx=None,
                 *, input_size=None, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "SequenceClassifier"
        if pooling not in _POOLINGS:
            raise ValueError(f"{fn}: pooling must be one of 'last', 'mean', 'max', got {bounded_repr(pooling)}")
        self.pooling = pooling
        self._build(fn, vocab_size, embedding_dim, input_size, hidden_size, num_classes, num_layers, cell,
                    bidirectional, dropout, batch_first, padding_idx, dtype, seed, threads)

    def _pool(self, out, h_n, lengths):
        T, B, DH = out.shape
        D = self.num_directions
        if self.pooling == "last":
            return np.ascontiguousarray(h_n[-D:].transpose(1, 0, 2)).reshape(B, DH), None
        lens = np.full(B, T, np.int64) if lengths is None else lengths
        if self.pooling == "mean":
            # outputs past a sequence's length are zero, so the sum over all T is the sum over its steps
            return out.sum(axis=0) / np.maximum(lens, 1)[:, None].astype(self.dtype), lens
        valid = np.arange(T)[:, None] < lens[None, :]  # (T, B)
        idx = np.where(valid[:, :, None], out, -np.inf).argmax(axis=0)  # (B, D*H)
        pooled = np.take_along_axis(out, idx[None], axis=0)[0]
        pooled[lens == 0] = 0
        return pooled, (lens, idx)

    def _pool_backward(self, dpooled, saved, shape):
        T, B, DH = shape
        D, H = self.num_directions, self.hidden_size
        if self.pooling == "last":
            dh_n = np.zeros((self.num_layers * D, B, H), self.dtype)
            dh_n[-D:] = dpooled.reshape(B, D, H).transpose(1, 0, 2)
            return None, dh_n
        if self.pooling == "mean":
            lens = saved
            valid = (np.arange(T)[:, None] < lens[None, :]).astype(self.dtype)
            return valid[:, :, None] * (dpooled / np.maximum(lens, 1)[:, None].astype(self.dtype))[None], None
        lens, idx = saved
        dout = np.zeros(shape, self.dtype)
        np.put_along_axis(dout, idx[None], np.where((lens > 0)[:, None], dpooled, 0)[None].astype(self.dtype),
                          axis=0)
        return dout, None

    @exclusive
    def forward(self, x, lengths=None):
        fn = "SequenceClassifier.forward"
        out, h_n, lengths = self._encode(x, lengths, fn)
        pooled, saved = self._pool(out, h_n, lengths)
        self._ctx = (saved, out.shape)
        return self.fc(self.drop_out(pooled))

    @exclusive
    def loss(self, x, labels, lengths=None, reduction="mean"):
        fn = "SequenceClassifier.loss"
        logits = self.forward(x, lengths)
        labels = as_index_array(labels, "labels", fn)
        expect_shape(labels, logits.shape[:1], "labels", fn, "(B,)")
        loss, self._dlogits = cross_entropy(logits, labels, reduction=reduction, threads=self.threads)
        return loss

    @exclusive
    def backward(self, grad_logits=None):
        fn = "SequenceClassifier.backward"
        grad_logits = self._take_grad_logits(grad_logits, fn)
        saved, shape = self._ctx
        self._ctx = None
        dpooled = self.drop_out.backward(self.fc.backward(grad_logits))
        dout, dh_n = self._pool_backward(dpooled, saved, shape)
        return self._encode_backward(dout, dh_n)

    def extra_repr(self):
        src = (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}" if self.embedding is not None
               else f"input_size={self.input_size}")
        return (f"{src}, hidden_size={self.hidden_size}, num_classes={self.num_classes}, "
                f"pooling={self.pooling!r}")


class SequenceTagger(_SequenceEncoder):
    """Many-to-many: a label per step, logits (T, B, C) ((B, T, C) with batch_first).

    Same inputs and encoder as SequenceClassifier; the RNN output at every step goes through
    dropout -> Linear(D*H, C). loss(x, tags, lengths=None, ignore_index=-100) averages the
    cross-entropy over the valid steps only (t < length and tag != ignore_index).
    forward(x, lengths=None) -> logits; backward(grad_logits=None) -> grad_x (None for ids).
    """

    def __init__(self, vocab_size=None, embedding_dim=None, hidden_size=None, num_classes=None, num_layers=1,
                 cell="lstm", bidirectional=False, dropout=0.0, batch_first=False, padding_idx=None, *,
                 input_size=None, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        self._build("SequenceTagger", vocab_size, embedding_dim, input_size, hidden_size, num_classes, num_layers,
                    cell, bidirectional, dropout, batch_first, padding_idx, dtype, seed, threads)

    @exclusive
    def forward(self, x, lengths=None):
        fn = "SequenceTagger.forward"
        out, _, lengths = self._encode(x, lengths, fn)
        return self._step_head(out, lengths)

    @exclusive
    def loss(self, x, tags, lengths=None, ignore_index=-100, reduction="mean"):
        fn = "SequenceTagger.loss"
        logits = self.forward(x, lengths)
        tags = as_index_array(tags, "tags", fn)
        expect_shape(tags, logits.shape[:2], "tags", fn, "(B, T)" if self.batch_first else "(T, B)")
        mask = self._valid_steps()
        loss, self._dlogits = cross_entropy(logits, tags, ignore_index, reduction, mask, threads=self.threads)
        return loss

    @exclusive
    def backward(self, grad_logits=None):
        return self._step_head_backward(grad_logits, "SequenceTagger.backward")


class SequenceRegressor(_SequenceEncoder):
    """Many-to-many regression: a real-valued vector per step, predictions (T, B, O) ((B, T, O)
    with batch_first), trained with the mean squared error (forecasting: ``target[t]`` is the
    series at t + 1).

    Float features in, x (T, B, I) ((B, T, I) with batch_first); the encoder of
    SequenceTagger (stacked, optionally bidirectional RNN/LSTM/GRU; lengths (B,) mark each
    sequence's valid steps), then dropout -> Linear(D*H, O) at every step.
    forward(x, lengths=None) -> predictions; backward(grad_output=None) -> grad_x;
    loss(x, target, lengths=None, reduction='mean') -> the MSE over the valid steps only
    (t < length), averaged over their elements (the fused rnncore.nn.mse_loss). A NaN in x or
    target raises ValueError.
    """

    def __init__(self, input_size, hidden_size, output_size=1, num_layers=1, cell="lstm", bidirectional=False,
                 dropout=0.0, batch_first=False, *, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "SequenceRegressor"
        if input_size is None:
            raise TypeError(f"{fn}: input_size is required")
        self._build(fn, None, None, input_size, hidden_size, output_size, num_layers, cell, bidirectional,
                    dropout, batch_first, None, dtype, seed, threads)
        self.output_size = self.num_classes

    def config(self):
        """Constructor arguments that rebuild this model: ``type(self)(**model.config())``."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, output_size=self.output_size,
                    num_layers=self.num_layers, cell=self.cell, bidirectional=self.bidirectional,
                    dropout=self.dropout, batch_first=self.batch_first, dtype=self.dtype.name)

    @exclusive
    def forward(self, x, lengths=None):
        fn = "SequenceRegressor.forward"
        x = as_real_array(x, "x", fn, self.dtype)
        if x.ndim == 3 and x.shape[int(self.batch_first)] == 0:
            raise ValueError(f"{fn}: x has no time steps (T = 0, shape {shape_str(x.shape)}): there is nothing to "
                             "predict")
        if x.size and not np.isfinite(x).all():
            pos = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise ValueError(f"{fn}: x holds {x[pos]} at position {list(pos)}: every value must be finite (a series "
                             "with NaN, a missing value? fill or drop it first)")
        out, _, lengths = self._encode(x, lengths, fn)
        return self._step_head(out, lengths)

    @exclusive
    def loss(self, x, target, lengths=None, reduction="mean"):
        fn = "SequenceRegressor.loss"
        pred = self.forward(x, lengths)
        target = as_real_array(target, "target", fn, self.dtype)
        layout = "(B, T, O)" if self.batch_first else "(T, B, O)"
        expect_shape(target, pred.shape, "target", fn, layout)
        mask = self._valid_steps()
        loss, self._dlogits = mse_loss(pred, target, reduction, mask, threads=self.threads)
        return loss

    @exclusive
    def backward(self, grad_output=None):
        return self._step_head_backward(grad_output, "SequenceRegressor.backward")

    def extra_repr(self):
        s = f"input_size={self.input_size}, hidden_size={self.hidden_size}, output_size={self.output_size}"
        return s + (f", cell={self.cell!r}" if self.cell != "lstm" else "")
