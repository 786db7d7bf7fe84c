"""FixedWindowLM: Bengio et al. (2003)'s feed-forward neural language model.

Shape letters: T time steps, B batch, V vocabulary, K context (previous words read), E
embedding_dim, H hidden_size.

Each target position t reads the K ids x[t-K+1..t] (the input at t and the K-1 before it):
their embeddings are concatenated into a (K*E) vector -> tanh(Linear(K*E, H)) -> dropout ->
Linear(H, V), plus, with ``direct=True``, the paper's direct connections Linear(K*E, V, no bias)
from the concatenated embeddings to the output. There is no recurrence: the "state" passed from
one window to the next is the K ids before the window (K, B), so a stream read in consecutive
windows sees the same contexts as read in one piece. Without a state the positions before the
first token are a dedicated padding id V (row V of the (V+1, E) embedding matrix, trained
like the others).
"""
import numpy as np

from .._checks import (as_index_array, check_int, check_probability, check_seed, no_forward, resolve_dtype,
                       shape_str)
from .._threads import exclusive
from .layers import Dropout, Embedding, Linear
from .loss import token_loss
from .module import Module


class FixedWindowLM(Module):
    """Embeddings of the previous K words -> tanh hidden -> softmax over V (Bengio et al. 2003).

    Args: vocab_size V, embedding_dim E, hidden_size H, context K (words read per prediction),
    direct (direct connections from the embeddings to the output), dropout (on the hidden layer).
    Keywords: dtype, seed, threads.

    forward(tokens (T, B) ints, state=None) -> (logits (T, B, V), new_state (K, B) ints): state
    is the K ids before the window (None: the padding id V); new_state the window's last K.
    loss(tokens, targets, state=None, mask=None, ignore_index=-100, reduction='mean')
    -> (loss, new_state); then backward() with no arguments.
    backward(grad_logits=None, grad_state=None): grad_logits like the logits (None: the
    gradient remembered by loss()); grad_state is accepted and ignored (the state is ids).
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, context=4, direct=False, dropout=0.0, *,
                 dtype=np.float32, seed=None, threads=None):
        super().__init__()
        fn = "FixedWindowLM"
        self.vocab_size = check_int(vocab_size, "vocab_size", fn)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", fn)
        self.hidden_size = check_int(hidden_size, "hidden_size", fn)
        self.context = check_int(context, "context", fn)
        self.direct = bool(direct)
        self.dropout = check_probability(dropout, "dropout", fn)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seed = check_seed(seed, fn, objects=False)
        self.batch_first = False
        self.pad_id = self.vocab_size
        KE = self.context * self.embedding_dim
        seeds = np.random.SeedSequence(seed).spawn(4)
        self.encoder = Embedding(self.vocab_size + 1, self.embedding_dim, dtype=self.dtype, seed=seeds[0],
                                 threads=threads)
        self.hidden = Linear(KE, self.hidden_size, dtype=self.dtype, seed=seeds[1], threads=threads)
        self.decoder = Linear(self.hidden_size, self.vocab_size, dtype=self.dtype, seed=seeds[2], threads=threads)
        self.register_module("direct_proj", Linear(KE, self.vocab_size, bias=False, dtype=self.dtype, seed=seeds[3],
                                                   threads=threads) if self.direct else None)
        self.drop = Dropout(self.dropout, rng=np.random.default_rng(seeds[3]))
        self._ctx = None
        self._dlogits = None
        self.grad_state = None

    def config(self):
        """Constructor arguments that rebuild this model: ``type(self)(**model.config())``."""
        return dict(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                    context=self.context, direct=self.direct, dropout=self.dropout, dtype=self.dtype.name)

    def _dtype_changed(self):
        self._ctx = None

    def windows(self, tokens, state=None, fn="FixedWindowLM.forward"):
        """tokens (T, B), state (K, B) or None -> (context ids (T, B, K), new_state (K, B))."""
        ids = as_index_array(tokens, "tokens", fn)
        if ids.ndim != 2:
            raise ValueError(f"{fn}: tokens must have shape (T, B), got {shape_str(ids.shape)}")
        T, B = ids.shape
        K, V = self.context, self.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            bad = ids[(ids < 0) | (ids >= V)][0]
            raise ValueError(f"{fn}: tokens must be ids in [0, {V}), got {int(bad)}")
        if state is None:
            prev = np.full((K, B), self.pad_id, np.int64)
        else:
            prev = as_index_array(state, "state", fn)
            if prev.shape != (K, B):
                raise ValueError(f"{fn}: state must have shape (K, B) = ({K}, {B}) (the ids before the window), "
                                 f"got {shape_str(prev.shape)}")
            if prev.size and (prev.min() < 0 or prev.max() > V):
                raise ValueError(f"{fn}: state must hold ids in [0, {V}] ({V} = padding), got "
                                 f"{int(prev[(prev < 0) | (prev > V)][0])}")
        full = np.concatenate([prev.astype(np.int64), ids.astype(np.int64)], axis=0)  # (K+T, B)
        # the window of target t is full[t+1 .. t+K]: x[t-K+1..t], oldest first
        idx = np.lib.stride_tricks.sliding_window_view(full[1:], K, axis=0)  # (T, B, K)
        return np.ascontiguousarray(idx), np.ascontiguousarray(full[T:])

    @exclusive
    def forward(self, tokens, state=None):
        idx, new_state = self.windows(tokens, state)
        T, B, K = idx.shape
        x = self.encoder(idx).reshape(T, B, K * self.embedding_dim)  # (T, B, K*E)
        h = np.tanh(self.hidden(x))                                   # (T, B, H)
        logits = self.decoder(self.drop(h))
        if self.direct_proj is not None:
            logits += self.direct_proj(x)
        self._ctx = h
        return logits, new_state

    @exclusive
    def loss(self, tokens, targets, state=None, mask=None, ignore_index=-100, reduction="mean"):
        fn = "FixedWindowLM.loss"
        logits, new_state = self.forward(tokens, state)
        loss, self._dlogits = token_loss(logits, targets, mask, ignore_index, reduction, self.threads, fn)
        return loss, new_state

    @exclusive
    def backward(self, grad_logits=None, grad_state=None):
        fn = "FixedWindowLM.backward"
        if self._ctx is None:
            raise no_forward(fn)
        if grad_logits is None:
            if self._dlogits is None:
                raise no_forward(fn, "loss() (or pass grad_logits)", "each can be differentiated once")
            grad_logits = self._dlogits
        self._dlogits = None
        h, self._ctx = self._ctx, None
        # logits = decoder(drop(h)) [+ direct_proj(x)]
        dh = self.drop.backward(self.decoder.backward(grad_logits))
        # h = tanh(hidden(x))
        dx = self.hidden.backward(dh * (1 - h * h))
        if self.direct_proj is not None:
            dx += self.direct_proj.backward(grad_logits)
        T, B = dx.shape[:2]
        self.encoder.backward(dx.reshape(T, B, self.context, self.embedding_dim))
        self.grad_state = None

    def extra_repr(self):
        s = (f"vocab_size={self.vocab_size}, embedding_dim={self.embedding_dim}, hidden_size={self.hidden_size}, "
             f"context={self.context}")
        if self.direct:
            s += ", direct=True"
        return s
