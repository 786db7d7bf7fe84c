"""Batches: language-model streams for truncated BPTT, and padded batches of sequences.

Shape letters: ``N`` tokens in a corpus, ``B`` batch size, ``T`` time steps, ``n`` steps
per stream (``n = N // B``). Batches are time-major, ``(T, B)``, as the engine wants them.

Everything here is deterministic: shuffling draws from a ``numpy.random.Generator`` seeded
from ``(seed, epoch)``, never from the global RNG, so any epoch can be replayed, and both
iterators carry a ``state_dict()`` to resume exactly where a run stopped.
"""
import numpy as np

from .._checks import as_dtype, bounded_repr, check_int

_FORMAT = 1


def _token_ids(ids, fn):
    try:
        array = np.asarray(ids)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: ids must be a 1-D array of token ids, got {type(ids).__name__}") from None
    if array.ndim != 1:
        raise ValueError(f"{fn}: ids must be 1-D (N,), got shape {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{fn}: ids must hold integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        bad = int(np.flatnonzero(array < 0)[0])
        raise ValueError(f"{fn}: ids must be >= 0, got ids[{bad}] = {int(array[bad])}")
    return array


def _check_state(state, expected, fn):
    if not isinstance(state, dict):
        raise TypeError(f"{fn}: expected a dict from state_dict(), got {type(state).__name__}")
    if state.get("format") != _FORMAT:
        raise ValueError(f"{fn}: unknown state format {bounded_repr(state.get('format'))} (this version reads "
                         f"{_FORMAT})")
    for key, want in expected.items():
        if key not in state:
            raise ValueError(f"{fn}: state has no {key!r}")
        if state[key] != want:
            raise ValueError(f"{fn}: the state was saved for {key}={bounded_repr(state[key])}, this iterator has "
                             f"{key}={bounded_repr(want)}")
    for key in ("epoch", "position"):
        v = state.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{fn}: state {key!r} must be an integer >= 0, got {bounded_repr(v)}")


class _EpochCursor:
    """Iteration by (epoch, position) with exact resume, shared by the batchers: a subclass sets
    ``epoch``, ``position`` and ``_unit`` (what an epoch counts, for messages) and gives
    ``__len__`` (items per epoch), ``_epoch_items()`` (a function k -> item k of the current
    epoch) and ``_layout()`` (the options a saved state must match)."""

    def __iter__(self):
        if self.position >= len(self):  # stopped right after the last item
            self.position = 0
            self.epoch += 1
        item = self._epoch_items()
        while self.position < len(self):
            k = self.position
            self.position = k + 1
            yield item(k)
        self.position = 0
        self.epoch += 1

    def state_dict(self):
        """Where iteration stands (JSON-serialisable), with the layout it belongs to."""
        return {"format": _FORMAT, "epoch": self.epoch, "position": self.position, **self._layout()}

    def load_state_dict(self, state):
        """Resume at a saved position; the batcher must have the same data and options."""
        fn = f"{type(self).__name__}.load_state_dict"
        _check_state(state, self._layout(), fn)
        if state["position"] > len(self):
            raise ValueError(f"{fn}: position {state['position']} is past the {len(self)} {self._unit} of an epoch")
        self.epoch, self.position = state["epoch"], state["position"]


class StreamBatcher(_EpochCursor):
    """Truncated-BPTT windows over ``B`` parallel streams of one token sequence.

    The corpus ``ids`` (N,) is cut into ``B`` contiguous streams of ``n = N // B`` tokens
    (the last ``N - n*B`` tokens are dropped) and laid out time-major, as in char-rnn and
    Zaremba et al.: ``data = ids[:n*B].reshape(B, n).T``, shape (n, B); column ``b`` is
    stream ``b``. Window ``k`` starts at step ``s = k*T`` and yields

        inputs  = data[s : s+t]        (t, B)
        targets = data[s+1 : s+1+t]    (t, B), the next token of each input

    with ``t = T`` except for the last window, which may be shorter (``drop_last=True``
    leaves it out). So over an epoch every stream position but the last is an input once,
    in order, and every position but the first is a target once. Consecutive windows
    continue each stream, so a model may carry its hidden state from one to the next.

    Iterating yields the windows left in the current epoch, starting at ``position``;
    when the epoch is exhausted ``epoch`` goes up by one and ``position`` back to 0.
    ``position`` is the index of the next window to yield: save ``state_dict()`` after a
    window has been used and :meth:`load_state_dict` resumes with the one after it.

    Args:
        ids: (N,) token ids, N >= 2*B.
        batch_size: B, the number of streams.
        seq_len: T, the BPTT window length.
        drop_last: leave out the last window when it is shorter than T.

    Windows are read-only views of one C-contiguous (n, B) int64 array.
    """

    def __init__(self, ids, batch_size, seq_len, *, drop_last=False):
        fn = "StreamBatcher"
        ids = _token_ids(ids, fn)
        self.batch_size = B = check_int(batch_size, "batch_size", fn)
        self.seq_len = T = check_int(seq_len, "seq_len", fn)
        self.drop_last = bool(drop_last)
        N = ids.shape[0]
        n = N // B
        if n < 2:
            raise ValueError(f"{fn}: {N} tokens are too few for batch_size={B}: each of the B streams needs at "
                             f"least 2 tokens (an input and its target), so N >= {2 * B}")
        data = np.ascontiguousarray(ids[: n * B].reshape(B, n).T, dtype=np.int64)
        data.flags.writeable = False
        self.data = data
        self.num_tokens = N
        steps = n - 1  # input positions per stream
        self._num_windows = steps // T if self.drop_last else -(-steps // T)
        if self._num_windows == 0:
            raise ValueError(f"{fn}: with drop_last=True and streams of {n} tokens there is no full window of "
                             f"seq_len={T}; use a smaller seq_len or batch_size, or drop_last=False")
        self.epoch = 0
        self.position = 0

    @property
    def num_windows(self):
        """Windows per epoch."""
        return self._num_windows

    def __len__(self):
        return self._num_windows

    @property
    def stream_len(self):
        """n, the tokens in each stream."""
        return self.data.shape[0]

    @property
    def tokens_per_epoch(self):
        """Target tokens per epoch, B * (the time steps of all windows)."""
        steps = min(self._num_windows * self.seq_len, self.stream_len - 1)
        return steps * self.batch_size

    def window(self, k):
        """(inputs (t, B), targets (t, B)) of window k, 0 <= k < num_windows."""
        k = check_int(k, "k", "StreamBatcher.window", minimum=None)
        if not 0 <= k < self._num_windows:
            raise IndexError(f"StreamBatcher.window: k must be an integer in [0, {self._num_windows}), got "
                             f"{bounded_repr(k)}")
        s = k * self.seq_len
        t = min(self.seq_len, self.stream_len - 1 - s)
        return self.data[s: s + t], self.data[s + 1: s + 1 + t]

    _unit = "windows"

    def _epoch_items(self):
        return self.window

    def _layout(self):
        return {"num_tokens": self.num_tokens, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "drop_last": self.drop_last}

    def __repr__(self):
        return (f"StreamBatcher(num_tokens={self.num_tokens}, batch_size={self.batch_size}, "
                f"seq_len={self.seq_len}, num_windows={self._num_windows}, epoch={self.epoch}, "
                f"position={self.position})")


def lm_batches(ids, batch_size, seq_len, *, start=0, drop_last=False):
    """Yield the (inputs, targets) windows of one epoch of :class:`StreamBatcher`,
    from window index `start` on (to resume an interrupted epoch)."""
    batcher = StreamBatcher(ids, batch_size, seq_len, drop_last=drop_last)
    start = check_int(start, "start", "lm_batches", minimum=0, maximum=len(batcher))
    for k in range(start, len(batcher)):
        yield batcher.window(k)


def _as_sequence_list(sequences, fn, name="sequences"):
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        raise TypeError(f"{fn}: {name} must be a list of 1-D arrays (one per sequence), got one array of shape "
                        f"{sequences.shape}; use list(array) if its rows are the sequences")
    try:
        seqs = list(sequences)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a list of arrays, got {type(sequences).__name__}") from None
    if not seqs:
        raise ValueError(f"{fn}: {name} is empty")
    out = []
    feat = None
    for i, s in enumerate(seqs):
        if isinstance(s, str):
            raise TypeError(f"{fn}: {name}[{i}] is a str; encode it to ids first")
        try:
            a = np.asarray(s)
        except (ValueError, TypeError):
            raise TypeError(f"{fn}: {name}[{i}] is not an array ({type(s).__name__})") from None
        if a.ndim == 0:
            raise ValueError(f"{fn}: {name}[{i}] must be a sequence (L,) or (L, F...), got a scalar")
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{fn}: {name}[{i}] must hold numbers, got dtype {a.dtype}")
        if feat is None:
            feat = a.shape[1:]
        elif a.shape[1:] != feat:
            raise ValueError(f"{fn}: every item of {name} must have the same feature shape; {name}[0] has "
                             f"{feat} after its length, {name}[{i}] has {a.shape[1:]}")
        out.append(a)
    return out, feat


def pad_sequences(sequences, pad_value=0, time_major=True, dtype=None):
    """Stack sequences of different lengths into one padded array.

    Args:
        sequences: B arrays, each (L_b,) or (L_b, F...) with the same trailing shape.
        pad_value: the value after each sequence's end.
        time_major: (T, B, F...) when True (the engine's layout), else (B, T, F...).
        dtype: of the result; default: the sequences' common dtype (integers as int64).

    Returns:
        (padded, lengths): padded (T, B, F...) with ``T = max L_b``, and lengths (B,) int64.
    """
    fn = "pad_sequences"
    seqs, feat = _as_sequence_list(sequences, fn)
    lengths = np.fromiter((a.shape[0] for a in seqs), dtype=np.int64, count=len(seqs))
    if dtype is None:
        dtype = np.result_type(*[a.dtype for a in seqs])
        if dtype.kind in "biu":
            dtype = np.dtype(np.int64)
    dtype = as_dtype(dtype, "dtype", "pad_sequences")
    B, T = len(seqs), int(lengths.max())
    out = np.full((B, T) + feat, pad_value, dtype=dtype)
    if T:
        mask = np.arange(T) < lengths[:, None]  # (B, T), row-major order = concatenation order
        out[mask] = np.concatenate(seqs, axis=0)
    if time_major:
        out = np.ascontiguousarray(np.swapaxes(out, 0, 1))
    return out, lengths


class BucketIterator:
    """Batches of similar-length sequences, padded, with their lengths (and labels).

    Sequences are grouped into buckets by length, either of width `bucket_width` (lengths
    ``[0, w)``, ``[w, 2w)``, ...) or into `num_buckets` buckets of about equal size cut at
    the length quantiles (default: 10 such buckets). Each epoch, every bucket is cut into
    batches of `batch_size` (the last one per bucket smaller unless `drop_last`), so every
    sequence appears exactly once per epoch. With `shuffle`, the order inside each bucket
    and the order of the batches are permuted by a Generator seeded from ``(seed, epoch)``:
    the same seed gives the same epochs, and any epoch can be replayed alone. Without it,
    batches come bucket by bucket (shortest first) in the sequences' order.

    Yields ``(padded, lengths, labels)``: padded (T, B) (or (T, B, F...)) as from
    :func:`pad_sequences`, lengths (B,) int64, and the batch's labels (an array, or None
    without labels; with ``pad_labels=True`` — target sequences for seq2seq — a
    ``(padded_labels, label_lengths)`` pair).

    Iteration, ``epoch``, ``position`` and ``state_dict()`` work as in :class:`StreamBatcher`.
    """

    def __init__(self, sequences, labels=None, batch_size=32, *, shuffle=True, seed=None, bucket_width=None,
                 num_buckets=None, drop_last=False, pad_value=0, time_major=True, pad_labels=False):
        fn = "BucketIterator"
        self.sequences, _ = _as_sequence_list(sequences, fn)
        N = len(self.sequences)
        self.lengths = np.fromiter((a.shape[0] for a in self.sequences), dtype=np.int64, count=N)
        self.pad_labels = bool(pad_labels)
        if labels is None:
            if self.pad_labels:
                raise ValueError(f"{fn}: pad_labels=True needs labels (the target sequences)")
            self.labels = None
        elif self.pad_labels:
            self.labels, _ = _as_sequence_list(labels, fn, "labels")
        else:
            self.labels = np.asarray(labels)
            if self.labels.ndim == 0:
                raise ValueError(f"{fn}: labels must have one entry per sequence, got a scalar")
        if self.labels is not None and len(self.labels) != N:
            raise ValueError(f"{fn}: {N} sequences but {len(self.labels)} labels")
        self.batch_size = check_int(batch_size, "batch_size", fn)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.pad_value = pad_value
        self.time_major = bool(time_major)
        if bucket_width is not None and num_buckets is not None:
            raise ValueError(f"{fn}: give bucket_width or num_buckets, not both")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)  # fresh entropy, kept so the run can be replayed
        self.seed = check_int(seed, "seed", fn, minimum=0, int64=False)
        if bucket_width is not None:
            w = check_int(bucket_width, "bucket_width", fn)
            keys = self.lengths // w
            self.bucket_spec = {"bucket_width": w}
        else:
            k = 10 if num_buckets is None else check_int(num_buckets, "num_buckets", fn)
            # Boundaries at the length quantiles; equal lengths always share a bucket.
            ranked = np.sort(self.lengths)
            at = np.ceil(np.linspace(0, 1, k + 1)[1:-1] * (N - 1)).astype(np.int64)
            edges = np.unique(ranked[at])
            keys = np.searchsorted(edges, self.lengths, side="right")
            self.bucket_spec = {"num_buckets": k}
        order = np.argsort(keys, kind="stable")
        cuts = np.flatnonzero(np.diff(keys[order])) + 1
        self.buckets = np.split(order, cuts)  # index arrays, shortest bucket first, each in input order
        per = [len(b) // self.batch_size if self.drop_last else -(-len(b) // self.batch_size) for b in self.buckets]
        self._num_batches = int(sum(per))
        if self._num_batches == 0:
            raise ValueError(f"{fn}: with drop_last=True no bucket holds a full batch of {self.batch_size}")
        self.epoch = 0
        self.position = 0

    def __len__(self):
        """Batches per epoch."""
        return self._num_batches

    @property
    def num_buckets(self):
        return len(self.buckets)

    def batch_indices(self, epoch=None):
        """The batches of `epoch` (default: the current one) as a list of index arrays."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, int(epoch)]) if self.shuffle else None
        batches = []
        for bucket in self.buckets:
            if rng is not None:
                bucket = rng.permutation(bucket)
            stop = len(bucket) - len(bucket) % self.batch_size if self.drop_last else len(bucket)
            batches.extend(bucket[i: min(i + self.batch_size, stop)] for i in range(0, stop, self.batch_size))
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def make_batch(self, indices):
        """(padded, lengths, labels) of the sequences at `indices`."""
        padded, lengths = pad_sequences([self.sequences[i] for i in indices], self.pad_value, self.time_major)
        if self.labels is None:
            labels = None
        elif self.pad_labels:
            labels = pad_sequences([self.labels[i] for i in indices], self.pad_value, self.time_major)
        else:
            labels = self.labels[indices]
        return padded, lengths, labels

    def __iter__(self):
        if self.position >= self._num_batches:
            self.position = 0
            self.epoch += 1
        batches = self.batch_indices()
        while self.position < self._num_batches:
            k = self.position
            self.position = k + 1
            yield self.make_batch(batches[k])
        self.position = 0
        self.epoch += 1

    def state_dict(self):
        return {"format": _FORMAT, "epoch": self.epoch, "position": self.position, **self._layout()}

    def load_state_dict(self, state):
        _check_state(state, self._layout(), "BucketIterator.load_state_dict")
        if state["position"] > self._num_batches:
            raise ValueError(f"BucketIterator.load_state_dict: position {state['position']} is past the "
                             f"{self._num_batches} batches of an epoch")
        self.epoch, self.position = state["epoch"], state["position"]

    def _layout(self):
        return {"num_sequences": len(self.sequences), "batch_size": self.batch_size, "shuffle": self.shuffle,
                "seed": self.seed, "drop_last": self.drop_last, **self.bucket_spec}

    def __repr__(self):
        spec = ", ".join(f"{k}={v}" for k, v in self.bucket_spec.items())
        return (f"BucketIterator(num_sequences={len(self.sequences)}, batch_size={self.batch_size}, {spec}, "
                f"shuffle={self.shuffle}, seed={self.seed}, num_batches={self._num_batches})")
