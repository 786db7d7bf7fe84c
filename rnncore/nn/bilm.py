"""ELMo-style bidirectional language model (Peters et al. 2018): BiLM, ScalarMix, ELMoClassifier.

Shape letters: T time steps, B batch, V vocabulary, E embedding_dim, H hidden_size, R the
width of each LSTM layer's output (proj_size P if set, else H; R == E is required so that the
token layer and the LSTM layers can be mixed), L num_layers, N = L + 1 representations.

A BiLM is two stacked LSTM language models over one shared token embedding and one shared
softmax, as in ELMo: the forward LM reads left to right and predicts the next token, the
backward LM reads right to left and predicts the previous one. Each stack is L single-layer
LSTMs; layer k > 0 adds its input to its output (the residual connection between layers).

Ragged batches: ``lengths`` (B,) gives each sequence's valid steps. The backward LM reads each
sequence reversed *within its own length*: the ids are permuted once, time-major, by the index
``rev[t, b] = lengths[b] - 1 - t`` for t < lengths[b] (and t itself in the padding), a
permutation that is its own inverse; the backward stack then runs as an ordinary forward LSTM
on the reversed ids, and its outputs are permuted back by the same index for embed(). There is
no Python loop over time: one gather on the (T, B) ids, one per layer on the outputs.

The loss is the sum of the two directions' mean cross-entropies over the predicted positions
(t < lengths - 1 in each direction's reading order); the shared softmax runs only on those
rows, never on the padding. Wrap sentences in <s> ... </s> to let the forward LM predict </s>
and the backward LM <s> (ELMo's convention; examples/elmo.py does).

embed() gives ELMo's contextual vectors: representation 0 is the token embedding duplicated
[x_t ; x_t] (2E), representation k >= 1 is [forward h_k,t ; backward h_k,t] (2R, the backward
state aligned to the same token t), and the learned ScalarMix ``gamma * sum_k softmax(w)_k *
rep_k`` combines them; embed_backward() trains the mix and, unless mix_only, the BiLM too.
"""
import numpy as np

from .._checks import (as_index_array, as_lengths, as_real_array, bounded_repr, check_int, check_num_layers,
                       check_probability, check_real, expect_shape, no_forward, private_copy, resolve_dtype,
                       shape_str)
from .._threads import exclusive
from .adaptive import AdaptiveLogSoftmaxWithLoss
from .layers import Embedding, Linear
from .loss import cross_entropy
from .models import SequenceClassifier
from .module import Module, Parameter
from .rnn import LSTM, layer_dropout_mask
from .seq2seq import _spawn

__all__ = ["BiLM", "ScalarMix", "ELMoClassifier"]


def reverse_index(lengths, T):
    """(T, B) int64: rev[t, b] = lengths[b] - 1 - t for t < lengths[b], else t (its own inverse)."""
    t = np.arange(T, dtype=np.int64)[:, None]
    lens = np.asarray(lengths, np.int64)[None, :]
    return np.where(t < lens, lens - 1 - t, t)


def _gather_time(a, rev):
    """a (T, B, ...) permuted along time per sequence: out[t, b] = a[rev[t, b], b]."""
    idx = rev.reshape(rev.shape + (1,) * (a.ndim - 2))
    return np.take_along_axis(a, idx, axis=0)


class ScalarMix(Module):
    """ELMo's scalar mix of N representations: out = gamma * sum_j s_j * h_j, s = softmax(weight).

    Args: num_representations N (e.g. L + 1 for an L-layer BiLM with its token layer);
    keywords initial_gamma (default 1.0), dtype.
    Parameters ``weight`` (N,), zeros at first (equal s_j = 1/N), and ``gamma`` (1,).

    forward(layers (N, ...)) -> (...); backward(grad_output (...)) -> grad_layers (N, ...),
    adding into weight.grad and gamma.grad. mixing_weights() -> s as float64 (N,).
    """

    def __init__(self, num_representations, *, initial_gamma=1.0, dtype=np.float32):
        super().__init__()
        fn = "ScalarMix"
        self.num_representations = check_int(num_representations, "num_representations", fn)
        self.initial_gamma = check_real(initial_gamma, "initial_gamma", fn, finite=True)
        self.dtype = resolve_dtype(dtype, fn)
        self.weight = Parameter(np.zeros(self.num_representations, self.dtype))
        self.gamma = Parameter(np.full(1, self.initial_gamma, self.dtype))
        self._layers = None

    def config(self):
        return dict(num_representations=self.num_representations, initial_gamma=self.initial_gamma,
                    dtype=self.dtype.name)

    def _dtype_changed(self):
        self._layers = None

    def mixing_weights(self):
        """s = softmax(weight), float64 (N,)."""
        w = self.weight.data.astype(np.float64)
        e = np.exp(w - w.max())
        return e / e.sum()

    @exclusive
    def forward(self, layers):
        fn = "ScalarMix.forward"
        h = as_real_array(layers, "layers", fn, self.dtype)
        N = self.num_representations
        if h.ndim < 1 or h.shape[0] != N:
            raise ValueError(f"{fn}: layers must have shape (N, ...) with N = {N} representations, "
                             f"got {shape_str(h.shape)}")
        return self._mix(private_copy(h, layers), fn)  # saved for backward: the caller may reuse its buffer

    def _mix(self, h, fn):
        """forward() on layers (N, ...) of the right dtype that the caller will not change (BiLM.embed)."""
        if not np.all(np.isfinite(self.weight.data)) or not np.all(np.isfinite(self.gamma.data)):
            raise FloatingPointError(f"{fn}: weight or gamma holds NaN or infinity")
        s = self.mixing_weights()
        # out = gamma * sum_j s_j h_j
        coef = (float(self.gamma.data[0]) * s).astype(self.dtype)
        out = np.tensordot(coef, h, axes=(0, 0)).astype(self.dtype, copy=False)
        self._layers = h
        return out

    @exclusive
    def backward(self, grad_output):
        fn = "ScalarMix.backward"
        h = self._layers
        if h is None:
            raise no_forward(fn)
        g = as_real_array(grad_output, "grad_output", fn, self.dtype)
        expect_shape(g, h.shape[1:], "grad_output", fn, "like the output")
        self._layers = None
        N = self.num_representations
        s = self.mixing_weights()
        gamma = float(self.gamma.data[0])
        # dots_j = sum(grad * h_j), in float64
        dots = h.reshape(N, -1).astype(np.float64) @ g.reshape(-1).astype(np.float64)
        # out = gamma * sum_j s_j h_j: dgamma = sum_j s_j dots_j; ds_j = gamma dots_j
        self.gamma.grad[0] += s @ dots
        ds = gamma * dots
        # s = softmax(w): dw = s * (ds - s . ds)
        self.weight.grad += (s * (ds - s @ ds)).astype(self.dtype)
        # dh_j = gamma s_j grad
        return (gamma * s).astype(self.dtype)[(slice(None),) + (None,) * g.ndim] * g[None]

    def extra_repr(self):
        return f"{self.num_representations}"


class BiLM(Module):
    """ELMo-style bidirectional LSTM language model (see the module docstring).

    Args: vocab_size V, embedding_dim E, hidden_size H, num_layers L (>= 1, ELMo has 2),
    dropout (on every LSTM layer's input and on the top outputs before the softmax, training
    mode only), residual (layer k > 0 adds its input to its output; default True),
    tie_weights (the softmax reuses the (V, E) embedding matrix), batch_first, padding_idx,
    adaptive_softmax (cutoffs, e.g. [2000, 6000]: the shared output layer is an
    AdaptiveLogSoftmaxWithLoss(R, V, cutoffs, div_value=adaptive_div_value) instead of Linear(R, V),
    for ids sorted by descending frequency as rnncore's tokenizers make them; not with tie_weights).
    Keywords: proj_size (LSTM with projections, R = P; R must equal E), dtype, seed, threads.
    Submodules: encoder (Embedding), forward_l{k} / backward_l{k} (LSTM, one layer each),
    decoder (Linear(R, V) or the adaptive softmax, shared by both directions), mix (ScalarMix(L + 1) used by embed()).

    loss(tokens (T, B) ids, lengths=None) -> the sum of the forward and backward LMs' mean
    cross-entropy (nats per predicted token); then backward(). lengths (B,) in [1, T] (None: all T).
    direction_losses(tokens, lengths=None) -> (forward mean, backward mean, number of predicted
    positions per direction), for evaluation; nothing kept for a backward.
    representations(tokens, lengths=None) -> (N, T, B, 2R) (or (N, B, T, 2R) with batch_first)
    with zeros past each length; embed(tokens, lengths=None) -> their ScalarMix (T, B, 2R)
    ((B, T, 2R) with batch_first); embed_backward(grad, mix_only=False) after either.
    ``tokens`` may also be a list of 1-D id sequences (ragged; then lengths must be None): they
    are padded with padding_idx (or 0) and the outputs are batch-major (B, T, ...) whatever
    batch_first says.
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_layers=2, dropout=0.0, residual=True,
                 tie_weights=False, batch_first=False, padding_idx=None, adaptive_softmax=None, adaptive_div_value=4.0,
                 *, proj_size=0, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "BiLM"
        self.vocab_size = check_int(vocab_size, "vocab_size", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.num_layers = check_num_layers(num_layers, fn)
        self.proj_size = check_int(proj_size, "proj_size", fn, minimum=0)
        self.dropout = check_probability(dropout, "dropout", fn)
        self.residual = bool(residual)
        self.tie_weights = bool(tie_weights)
        self.batch_first = bool(batch_first)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"{fn}: proj_size must be smaller than hidden_size, got proj_size={self.proj_size}, "
                             f"hidden_size={self.hidden_size}")
        R = self.proj_size or self.hidden_size
        if R != self.embedding_dim:
            what = "proj_size" if self.proj_size else "hidden_size"
            raise ValueError(f"{fn}: {what} must equal embedding_dim (the token layer and the LSTM layers are "
                             f"mixed by embed(), so all must be R = E wide), got {what}={R}, "
                             f"embedding_dim={self.embedding_dim}")
        seeds = _spawn(seed, fn, 3 + 2 * self.num_layers)
        self.encoder = Embedding(self.vocab_size, self.embedding_dim, padding_idx, dtype=self.dtype, seed=seeds[0],
                                 threads=threads)
        for k in range(self.num_layers):
            for d, name in enumerate(("forward", "backward")):
                lstm = LSTM(self.embedding_dim, self.hidden_size, proj_size=self.proj_size, dtype=self.dtype,
                            seed=seeds[3 + 2 * k + d], threads=threads)
                self.register_module(f"{name}_l{k}", lstm)
        self.adaptive_softmax = None if adaptive_softmax is None else [int(c) for c in adaptive_softmax]
        if self.adaptive_softmax is None:
            self.decoder = Linear(R, self.vocab_size, dtype=self.dtype, seed=seeds[1], threads=threads)
            self.adaptive_div_value = None
        else:
            if self.tie_weights:
                raise ValueError(f"{fn}: tie_weights and adaptive_softmax cannot be combined (the adaptive softmax "
                                 "has no (V, E) output matrix to share)")
            self.decoder = AdaptiveLogSoftmaxWithLoss(R, self.vocab_size, self.adaptive_softmax,
                                                      div_value=adaptive_div_value, dtype=self.dtype, seed=seeds[1],
                                                      threads=threads)
            self.adaptive_div_value = self.decoder.div_value
        if self.tie_weights:
            self.decoder.weight = self.encoder.weight  # one Parameter: both uses add into its .grad
        self.mix = ScalarMix(self.num_layers + 1, dtype=self.dtype)
        self._rng = np.random.default_rng(seeds[2])  # dropout masks
        self._ctx = None

    @property
    def output_size(self):
        """The width of embed()'s vectors: 2R."""
        return 2 * (self.proj_size or self.hidden_size)

    def config(self):
        """Constructor arguments that rebuild this model: ``BiLM(**model.config())``."""
        cfg = dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                   num_layers=self.num_layers, dropout=self.dropout, residual=self.residual,
                   tie_weights=self.tie_weights, batch_first=self.batch_first,
                   padding_idx=self.encoder.padding_idx, dtype=self.dtype.name)
        if self.proj_size:
            cfg["proj_size"] = self.proj_size
        if self.adaptive_softmax is not None:
            cfg.update(adaptive_softmax=list(self.adaptive_softmax), adaptive_div_value=self.adaptive_div_value)
        return cfg

    def _dtype_changed(self):
        self._ctx = None

    def _layer(self, direction, k):
        return self._modules[f"{('forward', 'backward')[direction]}_l{k}"]

    # -- input ------------------------------------------------------------------------------
    def _inputs(self, tokens, lengths, fn):
        """tokens, lengths -> (ids (T, B) int64 time-major, lengths (B,) int64, batch-major output?)."""
        if isinstance(tokens, (list, tuple)) and (not tokens or not np.isscalar(tokens[0])):
            if lengths is not None:
                raise ValueError(f"{fn}: with a list of sequences the lengths come from the sequences; "
                                 f"lengths must be None, got {bounded_repr(lengths)}")
            seqs = [as_index_array(s, f"tokens[{i}]", fn) for i, s in enumerate(tokens)]
            for i, s in enumerate(seqs):
                if s.ndim != 1:
                    raise ValueError(f"{fn}: tokens[{i}] must be a 1-D sequence of ids, got shape {shape_str(s.shape)}")
            if not seqs:
                raise ValueError(f"{fn}: tokens is an empty list of sequences")
            lens = np.array([len(s) for s in seqs], np.int64)
            pad = 0 if self.encoder.padding_idx is None else self.encoder.padding_idx
            ids = np.full((int(lens.max()), len(seqs)), pad, np.int64)
            for i, s in enumerate(seqs):
                ids[:len(s), i] = s
            batch_major = True
        else:
            ids = as_index_array(tokens, "tokens", fn)
            if ids.ndim != 2:
                layout = "(B, T)" if self.batch_first else "(T, B)"
                raise ValueError(f"{fn}: tokens must have shape {layout} (or be a list of id sequences), "
                                 f"got {shape_str(ids.shape)}")
            if self.batch_first:
                ids = np.ascontiguousarray(ids.T)
            batch_major = self.batch_first
            T, B = ids.shape
            lens = np.full(B, T, np.int64) if lengths is None else as_lengths(lengths, B, T, fn)
        T, B = ids.shape
        if B == 0 or T == 0:
            raise ValueError(f"{fn}: tokens must hold at least one sequence of at least one token, got "
                             f"{B} sequences of {T} steps")
        if lens.min() < 1:
            bad = int(np.flatnonzero(lens < 1)[0])
            raise ValueError(f"{fn}: every sequence needs at least one token (lengths must be in [1, T]), got "
                             f"length 0 for sequence {bad}")
        V = self.vocab_size
        valid = np.arange(T)[:, None] < lens[None, :]
        bad = valid & ((ids < 0) | (ids >= V))
        if bad.any():
            t, b = map(int, np.argwhere(bad)[0])
            raise ValueError(f"{fn}: tokens must be ids in [0, {V}), got {int(ids[t, b])} at step {t} of "
                             f"sequence {b}")
        ids = np.where(valid, ids, 0 if self.encoder.padding_idx is None else self.encoder.padding_idx)
        return np.ascontiguousarray(ids), lens, batch_major

    # -- the two stacks ---------------------------------------------------------------------
    def _mask(self, shape):
        if self.training and self.dropout > 0:
            return layer_dropout_mask(self._rng, shape, self.dropout, self.dtype)
        return None

    def _run(self, ids, lens, top_dropout):
        """Embeddings and both stacks. Returns the context for _stacks_backward and the layer
        outputs outs[d][k] (T, B, R), the backward stack's in reversed order."""
        T, B = ids.shape
        rev = reverse_index(lens, T)
        both = np.concatenate([ids, np.take_along_axis(ids, rev, axis=0)], axis=1)  # (T, 2B)
        x = self.encoder(both)  # (T, 2B, E)
        valid = (np.arange(T)[:, None] < lens[None, :]).astype(self.dtype)[:, :, None]  # (T, B, 1)
        outs, masks = [[], []], [[], []]
        for d in range(2):
            h = x[:, d * B:(d + 1) * B]
            for k in range(self.num_layers):
                m = self._mask(h.shape)
                o, _ = self._layer(d, k)(h if m is None else h * m, lengths=lens)
                if k > 0 and self.residual:
                    o = o + h  # both are zero past each length
                masks[d].append(m)
                outs[d].append(o)
                h = o
        top_mask = self._mask((T, 2 * B, self.proj_size or self.hidden_size)) if top_dropout else None
        ctx = {"T": T, "B": B, "rev": rev, "lens": lens, "valid": valid, "x": x, "masks": masks,
               "top_mask": top_mask}
        return ctx, outs

    def _stacks_backward(self, ctx, douts, dtok=None):
        """douts[d][k] (T, B, R) or None: gradients of each layer's output (the backward stack's in
        reversed order), the top layers' included; dtok (T, B, E) or None: a gradient of the
        forward half's embeddings from elsewhere (the token layer of embed()). Into every LSTM
        and the embedding."""
        B = ctx["B"]
        dx = np.zeros(ctx["x"].shape, self.dtype)
        for d in range(2):
            g = None  # gradient of the current layer's output
            for k in reversed(range(self.num_layers)):
                extra = douts[d][k]
                g = extra if g is None else (g if extra is None else g + extra)
                if g is None:
                    continue
                m = ctx["masks"][d][k]
                dinp = self._layer(d, k).backward(g)
                if m is not None:
                    dinp = dinp * m
                if k > 0 and self.residual:
                    dinp = dinp + g  # o = lstm(h) + h
                g = dinp
            if g is not None:
                dx[:, d * B:(d + 1) * B] = g
        if dtok is not None:
            dx[:, :B] += dtok
        self.encoder.backward(dx)

    # -- language-model loss ----------------------------------------------------------------
    def _targets(self, ctx, ids):
        """Rows of the predicted positions in the (T, 2B) layout and their targets."""
        T, B, lens, rev = ctx["T"], ctx["B"], ctx["lens"], ctx["rev"]
        both = np.concatenate([ids, np.take_along_axis(ids, rev, axis=0)], axis=1)  # (T, 2B)
        lens2 = np.concatenate([lens, lens])
        t = np.arange(T)[:, None]
        pred = t < (lens2[None, :] - 1)  # position t predicts t + 1 in its own reading order
        rows = np.flatnonzero(pred.reshape(-1))
        nxt = np.concatenate([both[1:], np.zeros((1, 2 * B), np.int64)], axis=0)
        return rows, nxt.reshape(-1)[rows]

    def _tops(self, ctx, outs):
        """(T, 2B, R): both stacks' top outputs side by side, after the top dropout."""
        top = np.concatenate([outs[0][-1], outs[1][-1]], axis=1)
        return top if ctx["top_mask"] is None else top * ctx["top_mask"]

    @exclusive
    def loss(self, tokens, lengths=None):
        fn = "BiLM.loss"
        ids, lens, _ = self._inputs(tokens, lengths, fn)
        self._ctx = None
        ctx, outs = self._run(ids, lens, top_dropout=True)
        rows, targets = self._targets(ctx, ids)
        T, B = ids.shape
        R = self.proj_size or self.hidden_size
        top = self._tops(ctx, outs).reshape(T * 2 * B, R)
        n = len(rows) // 2
        if self.adaptive_softmax is not None:
            # mean_f + mean_b = 2 * (mean over all 2n rows): backward passes grad_loss = 2
            mean = self.decoder(top[rows], targets)[1] if n else 0.0
            ctx.update(kind="loss", rows=rows, dlogits=None)
            self._ctx = ctx
            return self.dtype.type(2 * float(mean))
        logits = self.decoder(top[rows])
        # both directions predict the same number of positions n, so mean_f + mean_b is the sum
        # over all 2n rows of each row's loss / n (the weight of a row is 1/n)
        weights = np.full(len(rows), 1.0 / max(n, 1), self.dtype)
        loss, dlogits = cross_entropy(logits, targets, reduction="sum", mask=weights, threads=self.threads)
        ctx.update(kind="loss", rows=rows, dlogits=dlogits)
        self._ctx = ctx
        return self.dtype.type(loss)

    @exclusive
    def direction_losses(self, tokens, lengths=None):
        """(forward LM mean nats, backward LM mean nats, n predicted positions per direction), in eval
        mode whatever the training mode; nothing kept for a backward."""
        fn = "BiLM.direction_losses"
        ids, lens, _ = self._inputs(tokens, lengths, fn)
        was = self.training
        self.train(False)
        try:
            ctx, outs = self._run(ids, lens, top_dropout=False)
        finally:
            self.train(was)
        self._ctx = None
        rows, targets = self._targets(ctx, ids)
        T, B = ids.shape
        R = self.proj_size or self.hidden_size
        top = self._tops(ctx, outs).reshape(T * 2 * B, R)[rows]
        if self.adaptive_softmax is not None:
            losses = -self.decoder.target_log_prob(top, targets) if len(rows) else np.zeros(0)
        else:
            logits = self.decoder(top)
            self.decoder._x = None
            losses, _ = cross_entropy(logits, targets, reduction="none", compute_grad=False, threads=self.threads)
        n = len(rows) // 2
        fwd = (rows % (2 * B)) < B  # rows are (t, column) of (T, 2B); the columns >= B are the backward LM's
        return (float(losses[fwd].sum()) / max(n, 1), float(losses[~fwd].sum()) / max(n, 1), n)

    @exclusive
    def backward(self):
        """Backpropagate the last loss(): adds into every parameter's .grad."""
        fn = "BiLM.backward"
        ctx = self._ctx
        if ctx is None or ctx.get("kind") != "loss":
            raise no_forward(fn, "loss()", "each loss can be differentiated once")
        self._ctx = None
        T, B = ctx["T"], ctx["B"]
        R = self.proj_size or self.hidden_size
        if self.adaptive_softmax is not None:
            drows = self.decoder.backward(2.0) if len(ctx["rows"]) else np.zeros((0, R), self.dtype)
        else:
            drows = self.decoder.backward(ctx["dlogits"])
        dtop = np.zeros((T * 2 * B, R), self.dtype)
        dtop[ctx["rows"]] = drows
        dtop = dtop.reshape(T, 2 * B, R)
        if ctx["top_mask"] is not None:
            dtop *= ctx["top_mask"]
        douts = [[None] * self.num_layers for _ in range(2)]
        douts[0][-1], douts[1][-1] = dtop[:, :B], dtop[:, B:]
        self._stacks_backward(ctx, douts)

    # -- contextual embeddings --------------------------------------------------------------
    def _representations(self, tokens, lengths, fn):
        ids, lens, batch_major = self._inputs(tokens, lengths, fn)
        self._ctx = None
        ctx, outs = self._run(ids, lens, top_dropout=False)
        T, B = ids.shape
        E = self.embedding_dim
        reps = np.empty((self.num_layers + 1, T, B, 2 * E), self.dtype)
        tok = ctx["x"][:, :B] * ctx["valid"]
        reps[0, :, :, :E] = tok
        reps[0, :, :, E:] = tok
        for k in range(self.num_layers):
            reps[k + 1, :, :, :E] = outs[0][k]
            reps[k + 1, :, :, E:] = _gather_time(outs[1][k], ctx["rev"])  # back to the tokens' order
        ctx.update(kind="embed", batch_major=batch_major, mixed=False)
        self._ctx = ctx
        return reps, batch_major

    @exclusive
    def representations(self, tokens, lengths=None):
        reps, batch_major = self._representations(tokens, lengths, "BiLM.representations")
        return np.ascontiguousarray(reps.transpose(0, 2, 1, 3)) if batch_major else reps

    @exclusive
    def embed(self, tokens, lengths=None):
        reps, batch_major = self._representations(tokens, lengths, "BiLM.embed")
        out = self.mix._mix(reps, "BiLM.embed")
        self._ctx["mixed"] = True
        return np.ascontiguousarray(out.transpose(1, 0, 2)) if batch_major else out

    @exclusive
    def embed_backward(self, grad_output, mix_only=False):
        """Backpropagate the last embed() (grad_output like its output) or representations()
        (grad_output (N, ...) like its output): into the mix and, unless mix_only, the BiLM.
        Returns None (ids have no gradient)."""
        fn = "BiLM.embed_backward"
        ctx = self._ctx
        if ctx is None or ctx.get("kind") != "embed":
            raise no_forward(fn, "embed() or representations()", "each can be differentiated once")
        T, B, E = ctx["T"], ctx["B"], self.embedding_dim
        N = self.num_layers + 1
        g = as_real_array(grad_output, "grad_output", fn, self.dtype)
        lead = (B, T) if ctx["batch_major"] else (T, B)
        if ctx["mixed"]:
            expect_shape(g, lead + (2 * E,), "grad_output", fn, "like embed()'s output")
        else:
            expect_shape(g, (N,) + lead + (2 * E,), "grad_output", fn, "like representations()' output")
        self._ctx = None
        if ctx["batch_major"]:
            g = np.ascontiguousarray(np.swapaxes(g, -3, -2))
        dreps = self.mix.backward(g) if ctx["mixed"] else g
        if mix_only:
            return None
        douts = [[dreps[k + 1, :, :, :E] for k in range(self.num_layers)],
                 [_gather_time(dreps[k + 1, :, :, E:], ctx["rev"]) for k in range(self.num_layers)]]
        # the token layer [x ; x] (zero past each length) also reads the forward half of the embeddings
        dtok = (dreps[0, :, :, :E] + dreps[0, :, :, E:]) * ctx["valid"]
        self._stacks_backward(ctx, douts, dtok)
        return None

    def extra_repr(self):
        s = (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}, hidden_size={self.hidden_size}, "
             f"num_layers={self.num_layers}")
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if not self.residual:
            s += ", residual=False"
        if self.tie_weights:
            s += ", tie_weights=True"
        if self.adaptive_softmax is not None:
            s += f", adaptive_softmax={self.adaptive_softmax}"
        return s


class ELMoClassifier(Module):
    """Many-to-one classification over ELMo features: BiLM -> its ScalarMix (the task's own layer
    weights and gamma) -> SequenceClassifier(input_size=2R): dropout on the ELMo vectors, an
    LSTM (bidirectional by default), pooling, dropout, Linear(D*head_hidden, C).

    Args: the BiLM's vocab_size, embedding_dim, hidden_size, num_layers, and num_classes C,
    head_hidden, bidirectional, pooling ('last', 'mean', 'max'), dropout (the head's),
    finetune (False: the BiLM is frozen, run in eval mode and given no gradient, so only the
    mix and the head learn; True: the gradient goes on into the BiLM, which then trains with
    its own bilm_dropout), bilm_dropout, residual, padding_idx, batch_first; keywords
    proj_size, dtype, seed, threads.

    forward(x (T, B) ids, lengths=None) -> logits (B, C); loss(x, labels (B,), lengths=None,
    reduction='mean') -> loss; backward(grad_logits=None). lengths in [1, T]. Works with
    rnncore.Trainer and tasks.ClassificationTask. trainable_parameters(): what an optimizer
    should update (the mix and the head, and the BiLM when finetune). from_bilm(bilm, C, ...)
    builds one around a pretrained BiLM's weights.
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, num_classes, num_layers=2, head_hidden=64,
                 bidirectional=True, pooling="max", dropout=0.5, finetune=False, bilm_dropout=0.0, residual=True,
                 padding_idx=None, batch_first=False, *, proj_size=0, dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "ELMoClassifier"
        self.finetune = bool(finetune)
        self.batch_first = bool(batch_first)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seeds = _spawn(seed, fn, 2)
        self.bilm = BiLM(vocab_size, embedding_dim, hidden_size, num_layers, dropout=bilm_dropout, residual=residual,
                         batch_first=batch_first, padding_idx=padding_idx, proj_size=proj_size, dtype=self.dtype,
                         seed=seeds[0], threads=threads)
        self.head = SequenceClassifier(input_size=self.bilm.output_size, hidden_size=head_hidden,
                                       num_classes=num_classes, bidirectional=bidirectional, pooling=pooling,
                                       dropout=dropout, batch_first=batch_first, dtype=self.dtype,
                                       seed=int(seeds[1].generate_state(1)[0]),
                                       threads=threads)
        self.num_classes = self.head.num_classes

    @classmethod
    def from_bilm(cls, bilm, num_classes, **kwargs):
        """An ELMoClassifier around a copy of `bilm`'s weights (its sizes, residual, padding_idx,
        batch_first, proj_size and dtype); kwargs: the head's and finetune/bilm_dropout/seed/threads."""
        if not isinstance(bilm, BiLM):
            raise TypeError(f"ELMoClassifier.from_bilm: bilm must be a BiLM, got {type(bilm).__name__}")
        cfg = bilm.config()  # (tie_weights is not copied: the classifier never uses the softmax)
        for k in ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "residual", "padding_idx",
                  "batch_first", "proj_size", "dtype"):
            if k in cfg:
                kwargs.setdefault(k, cfg[k])
        kwargs.setdefault("bilm_dropout", cfg["dropout"])
        model = cls(num_classes=num_classes, **kwargs)
        state = bilm.state_dict()
        model.bilm.load_state_dict(state, strict=False)
        return model

    def config(self):
        """Constructor arguments that rebuild this model: ``ELMoClassifier(**model.config())``."""
        b, h = self.bilm, self.head
        cfg = dict(vocab_size=b.vocab_size, embedding_dim=b.embedding_dim, hidden_size=b.hidden_size,
                   num_classes=h.num_classes, num_layers=b.num_layers, head_hidden=h.hidden_size,
                   bidirectional=h.bidirectional, pooling=h.pooling, dropout=h.dropout, finetune=self.finetune,
                   bilm_dropout=b.dropout, residual=b.residual, padding_idx=b.encoder.padding_idx,
                   batch_first=self.batch_first, dtype=self.dtype.name)
        if b.proj_size:
            cfg["proj_size"] = b.proj_size
        return cfg

    def trainable_parameters(self):
        """The parameters training changes: the mix and the head (and the BiLM with finetune)."""
        if self.finetune:
            return self.parameters()
        return self.bilm.mix.parameters() + self.head.parameters()

    def _features(self, x, lengths, fn):
        """The ELMo vectors of x (T, B, 2R) (B, T, 2R with batch_first); the BiLM checks x and lengths."""
        if isinstance(x, (list, tuple)):
            raise TypeError(f"{fn}: x must be an array of padded ids {'(B, T)' if self.batch_first else '(T, B)'} "
                            f"with lengths, got a {type(x).__name__}")
        if self.finetune:
            return self.bilm.embed(x, lengths)
        was = self.bilm.training
        self.bilm.train(False)  # frozen: no dropout inside the BiLM
        try:
            # (the mix is trained whatever the mode: its parameters have no dropout)
            return self.bilm.embed(x, lengths)
        finally:
            self.bilm.train(was)

    @exclusive
    def forward(self, x, lengths=None):
        feats = self._features(x, lengths, "ELMoClassifier.forward")
        return self.head.forward(feats, lengths)

    @exclusive
    def loss(self, x, labels, lengths=None, reduction="mean"):
        feats = self._features(x, lengths, "ELMoClassifier.loss")
        return self.head.loss(feats, labels, lengths, reduction)

    @exclusive
    def backward(self, grad_logits=None):
        dfeats = self.head.backward(grad_logits)
        self.bilm.embed_backward(dfeats, mix_only=not self.finetune)

    def extra_repr(self):
        return f"num_classes={self.num_classes}, finetune={self.finetune}"
