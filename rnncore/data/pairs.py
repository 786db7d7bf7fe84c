"""Sequence pairs for sequence-to-sequence models: tokenised pairs and their batches.

Shape letters: ``N`` pairs, ``B`` pairs in a batch, ``S`` source steps, ``T`` target steps.
Batches are time-major, as the engine wants them.

The vocabularies (:func:`pair_tokenizer`) are word level (punctuation marks split off as
words of their own) and have four special symbols, with
the same ids on both sides::

    <pad> = 0   padding of src and tgt_in
    <unk> = 1   a word the vocabulary does not have (min_freq / max_size leave words out)
    <s>   = 2   the decoder's first input, tgt_in[0]
    </s>  = 3   the decoder's last target, after the target words in tgt_out

A pair ``(source, target)`` with source words ``x_1..x_m`` and target words ``y_1..y_n``
becomes one column of a :class:`PairBatch`::

    src      x_1 .. x_m                 then <pad>   (S, B), src_lengths[b] = m >= 1
    tgt_in   <s> y_1 .. y_n             then <pad>   (T, B)
    tgt_out  y_1 .. y_n </s>            then -100    (T, B), tgt_lengths[b] = n + 1

so ``tgt_out[t]`` is the word the decoder must produce after reading ``tgt_in[t]`` (teacher
forcing), and -100 is the cross-entropy's ``ignore_index``.

:class:`PairBatcher` follows torchtext's BucketIterator (the pool strategy): each epoch the
pairs are shuffled by a Generator seeded from ``(seed, epoch)``, cut into pools of
``pool_size`` batches, sorted by length inside each pool (so a batch holds pairs of similar
lengths and little padding), cut into batches, and the batches shuffled. It does not reuse
:class:`rnncore.data.BucketIterator`, whose buckets are fixed length ranges over the whole
data and whose batches are (padded, lengths, labels) tuples; it shares its resume format.
"""
import itertools
from collections import Counter
from typing import NamedTuple

import numpy as np

from .._checks import bounded_repr, check_int
from .batching import _EpochCursor
from . import _fast
from .tokenizers import WordTokenizer, _Tokenizer
from .vocab import BOS, EOS_SENTENCE, PAD, UNK, Vocabulary

IGNORE_INDEX = -100


class PairBatch(NamedTuple):
    """One batch of B sequence pairs; every array int64 and time-major.

    - ``src`` (S, B): source ids, padded with the source's ``<pad>`` id;
    - ``src_lengths`` (B,): source lengths, in [1, S];
    - ``tgt_in`` (T, B): ``<s>`` then the target ids, padded with the target's ``<pad>`` id;
    - ``tgt_out`` (T, B): the target ids then ``</s>``, padded with -100 (ignore_index);
    - ``tgt_lengths`` (B,): the non-ignored positions of each column of tgt_out (target words + 1).
    """
    src: np.ndarray
    src_lengths: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray
    tgt_lengths: np.ndarray


def _check_sentences(sentences, fn):
    if isinstance(sentences, str) or not hasattr(sentences, "__iter__"):
        raise TypeError(f"{fn}: sentences must be a list of str, got {type(sentences).__name__}")
    out = list(sentences)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"{fn}: sentences[{i}] must be a str, got {type(s).__name__} {bounded_repr(s)}")
    return out


def pair_tokenizer(sentences, *, min_freq=1, max_size=None, lower=False, punct=True):
    """A word tokenizer for one side of a seq2seq corpus, fitted on `sentences`.

    Words are whitespace-separated (as :class:`WordTokenizer`; newlines are whitespace),
    and with `punct` (the default) each punctuation mark is a word of its own ("earth." is
    "earth" "."; decoding glues it back: BLEU's 13a tokenisation splits it the same way);
    the vocabulary is ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3, then the words seen at
    least `min_freq` times by descending count (ties by the words), at most `max_size` ids
    in all (torchtext's ``min_freq``/``max_size``, OpenNMT-py's ``words_min_frequency``/
    ``vocab_size``). Returns a :class:`WordTokenizer` (eos=False, pad=True; ``to_dict()``
    saves it); its ``vocab`` has ``pad_id``, ``unk_id``, ``bos_id``, ``eos_id``.
    """
    fn = "rnncore.data.pair_tokenizer"
    sentences = _check_sentences(sentences, fn)
    tok, _ = _fit(sentences, fn, min_freq=min_freq, max_size=max_size, lower=lower, punct=punct)
    return tok


def _fit(sentences, fn, *, min_freq, max_size, lower, punct):
    """(the fitted tokenizer, each sentence's words): every sentence is split once."""
    min_freq = check_int(min_freq, "min_freq", fn)
    max_size = check_int(max_size, "max_size", fn, minimum=4, optional=True)
    opts = dict(unk=True, eos=False, pad=True, lower=bool(lower), punct=bool(punct), min_count=min_freq,
                max_size=max_size)
    split = WordTokenizer(**opts).split
    words = [split(s) for s in sentences]
    counts = Counter(itertools.chain.from_iterable(words))
    vocab = Vocabulary.from_counts(counts, min_count=min_freq, max_size=max_size, unk_token=UNK, pad_token=PAD,
                                   bos_token=BOS, eos_token=EOS_SENTENCE)
    return WordTokenizer(**opts, vocab=vocab), words


def _encode_all(tok, sentences, words=None):
    """All sentences in one pass: (flat ids (sum L,) int64, offsets (N+1,) int64). `words`: the
    sentences already split by `tok` (else they are split here)."""
    if not isinstance(tok, WordTokenizer):  # a character tokenizer: one call per sentence
        parts = [tok.encode(s) for s in sentences]
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        flat = np.concatenate(parts + [np.zeros(0, np.int64)])
    else:
        if words is None:
            words = [tok.split(s) for s in sentences]
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        flat_words = list(itertools.chain.from_iterable(words))
        unk = tok.vocab.unk_id
        flat, bad = _fast.word_encode(flat_words, dict(tok.vocab.stoi), -1 if unk is None else unk)
        if bad >= 0:
            where = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
            raise ValueError(f"PairDataset: word {flat_words[bad]!r} of pairs[{where}] is not in the vocabulary, "
                             "which has no <unk>")
    offsets = np.zeros(len(sentences) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return flat, offsets


def _gather(flat, offsets, idx):
    """The ids of sentences `idx`, concatenated, and their lengths, without a loop over them."""
    starts, lens = offsets[idx], offsets[idx + 1] - offsets[idx]
    ends = np.cumsum(lens)
    pos = np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) + np.repeat(starts - (ends - lens), lens)
    return flat[pos], lens


class PairDataset:
    """Sentence pairs as token ids, with the tokenizers that made them; builds :class:`PairBatch` es.

    Args:
        pairs: ``(source, target)`` str pairs (e.g. ``rnncore.datasets.bible_pairs().train``).
        src_tokenizer, tgt_tokenizer: tokenizers (their vocabularies need ``<pad>``; the
            target's also ``<s>`` and ``</s>``, as from :func:`pair_tokenizer`). None: fit
            :func:`pair_tokenizer` on these pairs' sources / targets (do this on the training
            pairs, then :meth:`with_pairs` for the validation and test pairs).
        min_freq, max_size, lower, punct: for the fitted tokenizers (:func:`pair_tokenizer`).

    Every source must have at least one word (ValueError naming the pair otherwise); a target
    may be empty (its tgt_out is just ``</s>``).

    Attributes: ``src_tokenizer``, ``tgt_tokenizer``, ``pairs``, ``src_lengths`` and
    ``tgt_lengths`` (N,) int64 tokens per side (without ``<s>``/``</s>``), and the special ids
    ``pad_id``, ``unk_id``, ``bos_id``, ``eos_id`` (of the target vocabulary; with
    :func:`pair_tokenizer` both sides have the same: 0, 1, 2, 3) and ``src_pad_id``, ``src_unk_id``.
    """

    def __init__(self, pairs, src_tokenizer=None, tgt_tokenizer=None, *, min_freq=1, max_size=None, lower=False,
                 punct=True):
        fn = "PairDataset"
        if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
            raise TypeError(f"{fn}: pairs must be a list of (source, target) str pairs, got {type(pairs).__name__}")
        pairs = list(pairs)
        for i, p in enumerate(pairs):
            if not isinstance(p, (tuple, list)) or len(p) != 2 or not all(isinstance(s, str) for s in p):
                raise TypeError(f"{fn}: pairs[{i}] must be a (source, target) pair of str, got {bounded_repr(p)}")
        if not pairs:
            raise ValueError(f"{fn}: pairs is empty")
        self.pairs = [(p[0], p[1]) for p in pairs]
        sources, targets = [p[0] for p in self.pairs], [p[1] for p in self.pairs]
        src_words = tgt_words = None
        if src_tokenizer is None:
            src_tokenizer, src_words = _fit(sources, fn, min_freq=min_freq, max_size=max_size, lower=lower,
                                            punct=punct)
        if tgt_tokenizer is None:
            tgt_tokenizer, tgt_words = _fit(targets, fn, min_freq=min_freq, max_size=max_size, lower=lower,
                                            punct=punct)
        for name, tok, needs in (("src_tokenizer", src_tokenizer, ("pad",)),
                                 ("tgt_tokenizer", tgt_tokenizer, ("pad", "bos", "eos"))):
            if not isinstance(tok, _Tokenizer):
                raise TypeError(f"{fn}: {name} must be an rnncore.data tokenizer (e.g. from pair_tokenizer), got "
                                f"{type(tok).__name__}")
            missing = [k for k in needs if getattr(tok.vocab, f"{k}_id") is None]
            if missing:
                names = {"pad": "<pad>", "bos": "<s> (bos)", "eos": "</s> (eos)"}
                raise ValueError(f"{fn}: the vocabulary of {name} has no {', '.join(names[k] for k in missing)} "
                                 f"symbol; build it with rnncore.data.pair_tokenizer")
        if isinstance(tgt_tokenizer, WordTokenizer) and tgt_tokenizer._options.get("eos"):
            raise ValueError(f"{fn}: tgt_tokenizer encodes newlines as <eos> (eos=True); a seq2seq target ends "
                             "with </s>: use rnncore.data.pair_tokenizer")
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self._src, self._src_off = _encode_all(src_tokenizer, sources, src_words)
        self._tgt, self._tgt_off = _encode_all(tgt_tokenizer, targets, tgt_words)
        self.src_lengths = np.diff(self._src_off)
        self.tgt_lengths = np.diff(self._tgt_off)
        empty = np.flatnonzero(self.src_lengths == 0)
        if empty.size:
            i = int(empty[0])
            raise ValueError(f"{fn}: pairs[{i}] has an empty source {bounded_repr(self.pairs[i][0])} "
                             f"({empty.size} such pair(s)); every source needs at least one word "
                             "(rnncore.datasets.parallel_files and read_tsv skip them with skip_empty=True)")

    def with_pairs(self, pairs):
        """Other pairs (validation, test) with this dataset's tokenizers."""
        return PairDataset(pairs, self.src_tokenizer, self.tgt_tokenizer)

    # -- special ids ---------------------------------------------------------------------------

    @property
    def pad_id(self):
        return self.tgt_tokenizer.vocab.pad_id

    @property
    def unk_id(self):
        return self.tgt_tokenizer.vocab.unk_id

    @property
    def bos_id(self):
        return self.tgt_tokenizer.vocab.bos_id

    @property
    def eos_id(self):
        return self.tgt_tokenizer.vocab.eos_id

    @property
    def src_pad_id(self):
        return self.src_tokenizer.vocab.pad_id

    @property
    def src_unk_id(self):
        return self.src_tokenizer.vocab.unk_id

    @property
    def src_vocab_size(self):
        return self.src_tokenizer.vocab_size

    @property
    def tgt_vocab_size(self):
        return self.tgt_tokenizer.vocab_size

    def __len__(self):
        return len(self.pairs)

    def __repr__(self):
        return (f"PairDataset(pairs={len(self)}, src_vocab_size={self.src_vocab_size}, "
                f"tgt_vocab_size={self.tgt_vocab_size})")

    # -- ids -----------------------------------------------------------------------------------

    def source_ids(self, i):
        """Source ids of pair i, (m,) int64."""
        i = self._index(i, "source_ids")
        return self._src[self._src_off[i]: self._src_off[i + 1]].copy()

    def target_ids(self, i):
        """Target ids of pair i without <s> and </s>, (n,) int64."""
        i = self._index(i, "target_ids")
        return self._tgt[self._tgt_off[i]: self._tgt_off[i + 1]].copy()

    def _index(self, i, name):
        i = check_int(i, "i", f"PairDataset.{name}", minimum=None)
        if not -len(self) <= i < len(self):
            raise IndexError(f"PairDataset.{name}: i must be in [0, {len(self)}), got {i}")
        return i % len(self)

    def make_batch(self, indices):
        """The :class:`PairBatch` of the pairs at `indices` (B,), in that order (columns)."""
        fn = "PairDataset.make_batch"
        try:
            idx = np.asarray(indices)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: indices must be a 1-D array of pair indices, got {type(indices).__name__}") from None
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"{fn}: indices must be a non-empty 1-D array, got shape {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{fn}: indices must hold integers, got dtype {idx.dtype}")
        if idx.min() < 0 or idx.max() >= len(self):
            bad = int(np.flatnonzero((idx < 0) | (idx >= len(self)))[0])
            raise IndexError(f"{fn}: indices must be in [0, {len(self)}), got indices[{bad}] = {int(idx[bad])}")
        idx = idx.astype(np.int64, copy=False)
        B = idx.shape[0]
        src_ids, sl = _gather(self._src, self._src_off, idx)
        tgt_ids, tl = _gather(self._tgt, self._tgt_off, idx)
        S, T = int(sl.max()), int(tl.max()) + 1
        src = np.full((B, S), self.src_pad_id, np.int64)
        src[np.arange(S) < sl[:, None]] = src_ids
        steps = np.arange(T)
        words = steps < tl[:, None]                     # (B, T): the target words' positions in tgt_out
        tgt_in = np.full((B, T), self.pad_id, np.int64)
        tgt_in[:, 0] = self.bos_id
        tgt_in[:, 1:][words[:, :-1]] = tgt_ids         # shifted right by one behind <s>
        tgt_out = np.full((B, T), IGNORE_INDEX, np.int64)
        tgt_out[words] = tgt_ids
        tgt_out[np.arange(B), tl] = self.eos_id
        return PairBatch(np.ascontiguousarray(src.T), sl, np.ascontiguousarray(tgt_in.T),
                         np.ascontiguousarray(tgt_out.T), tl + 1)

    def batches(self, batch_size=32, **kwargs):
        """``PairBatcher(self, batch_size, **kwargs)``."""
        return PairBatcher(self, batch_size, **kwargs)

    # -- text ----------------------------------------------------------------------------------

    def decode_source(self, ids):
        """Source ids (L,) -> text (``<pad>`` dropped)."""
        return self.src_tokenizer.decode(self._strip(ids, "decode_source", self.src_tokenizer.vocab, cut=False))

    def decode_target(self, ids):
        """Target ids (L,) -> text: up to the first ``</s>``, ``<s>``, ``<pad>`` and -100 dropped
        (a column of tgt_in, tgt_out or a decoder's output)."""
        return self.tgt_tokenizer.decode(self._strip(ids, "decode_target", self.tgt_tokenizer.vocab, cut=True))

    @staticmethod
    def _strip(ids, name, vocab, cut):
        fn = f"PairDataset.{name}"
        try:
            a = np.asarray(ids)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: ids must be a 1-D array of integers, got {type(ids).__name__}") from None
        if a.ndim != 1:
            raise ValueError(f"{fn}: ids must be 1-D, got shape {a.shape}")
        if a.size == 0:
            return np.zeros(0, np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{fn}: ids must hold integers, got dtype {a.dtype}")
        a = a.astype(np.int64)
        if cut and vocab.eos_id is not None:
            end = np.flatnonzero(a == vocab.eos_id)
            if end.size:
                a = a[: end[0]]
        drop = [x for x in (vocab.pad_id, vocab.bos_id, vocab.eos_id) if x is not None]
        keep = (a != IGNORE_INDEX) & ~np.isin(a, drop)
        return a[keep]


class PairBatcher(_EpochCursor):
    """Batches of B pairs of similar lengths, shuffled per epoch, resumable.

    Each epoch (``rng = numpy.random.default_rng([seed, epoch])``):

    1. the kept pairs (both sides within the limits) are permuted by rng (in order without
       `shuffle`);
    2. cut into pools of ``pool_size * batch_size`` pairs; each pool is sorted by source
       length, then target length (stable), and cut into batches of `batch_size` (the pool's
       last one smaller unless `drop_last`);
    3. the batches are permuted by rng (in order without `shuffle`).

    So every kept pair is in one batch per epoch, any epoch can be rebuilt alone, and with
    ``pool_size=None`` the sort runs over all pairs (least padding, least randomness).

    Args:
        dataset: a :class:`PairDataset`.
        batch_size: B.
        shuffle, seed: as above; seed None draws fresh entropy (kept in ``seed``).
        pool_size: batches per sorting pool (torchtext: 100), or None (one pool).
        max_src_len, max_tgt_len: pairs with more source / target tokens are left out
            (None: no limit); ``num_dropped`` counts them.
        drop_last: leave out batches smaller than B.

    Iterating yields the :class:`PairBatch` es left in the current epoch from ``position``;
    ``epoch``, ``position``, ``state_dict()`` and ``load_state_dict()`` work as in
    :class:`rnncore.data.StreamBatcher`: after a batch was used, ``state_dict()`` resumes at
    the next one, bit for bit. ``batch_indices(epoch)`` gives an epoch's pair indices.
    """

    def __init__(self, dataset, batch_size=32, *, shuffle=True, seed=None, pool_size=100, max_src_len=None,
                 max_tgt_len=None, drop_last=False):
        fn = "PairBatcher"
        if not isinstance(dataset, PairDataset):
            raise TypeError(f"{fn}: dataset must be a PairDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = B = check_int(batch_size, "batch_size", fn)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.pool_size = check_int(pool_size, "pool_size", fn, optional=True)
        self.max_src_len = check_int(max_src_len, "max_src_len", fn, optional=True)
        self.max_tgt_len = check_int(max_tgt_len, "max_tgt_len", fn, minimum=0, optional=True)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        self.seed = check_int(seed, "seed", fn, minimum=0, int64=False)
        keep = np.ones(len(dataset), bool)
        if self.max_src_len is not None:
            keep &= dataset.src_lengths <= self.max_src_len
        if self.max_tgt_len is not None:
            keep &= dataset.tgt_lengths <= self.max_tgt_len
        self.kept = np.flatnonzero(keep)
        self.num_dropped = len(dataset) - len(self.kept)
        if not len(self.kept):
            raise ValueError(f"{fn}: max_src_len={self.max_src_len} and max_tgt_len={self.max_tgt_len} leave none of "
                             f"the {len(dataset)} pairs")
        pool = len(self.kept) if self.pool_size is None else self.pool_size * B
        sizes = [min(pool, len(self.kept) - s) for s in range(0, len(self.kept), pool)]
        self._num_batches = int(sum(n // B if self.drop_last else -(-n // B) for n in sizes))
        if self._num_batches == 0:
            raise ValueError(f"{fn}: with drop_last=True there is no full batch of {B} in the {len(self.kept)} pairs")
        self.epoch = 0
        self.position = 0

    def __len__(self):
        """Batches per epoch."""
        return self._num_batches

    @property
    def num_pairs(self):
        """Pairs per epoch (within the length limits)."""
        return len(self.kept)

    def batch_indices(self, epoch=None):
        """The batches of `epoch` (default: the current one): a list of index arrays into the dataset."""
        epoch = self.epoch if epoch is None else check_int(epoch, "epoch", "PairBatcher.batch_indices", minimum=0)
        rng = np.random.default_rng([self.seed, int(epoch)]) if self.shuffle else None
        order = self.kept if rng is None else rng.permutation(self.kept)
        B = self.batch_size
        pool = len(order) if self.pool_size is None else self.pool_size * B
        sl, tl = self.dataset.src_lengths, self.dataset.tgt_lengths
        batches = []
        for s in range(0, len(order), pool):
            chunk = order[s: s + pool]
            chunk = chunk[np.lexsort((tl[chunk], sl[chunk]))]  # by source length, then target length
            stop = len(chunk) - len(chunk) % B if self.drop_last else len(chunk)
            batches.extend(chunk[i: min(i + B, stop)] for i in range(0, stop, B))
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    _unit = "batches"

    def _epoch_items(self):
        batches = self.batch_indices()
        return lambda k: self.dataset.make_batch(batches[k])

    def _layout(self):
        return {"num_pairs": len(self.dataset), "kept_pairs": len(self.kept), "batch_size": self.batch_size,
                "shuffle": self.shuffle, "seed": self.seed, "pool_size": self.pool_size,
                "max_src_len": self.max_src_len, "max_tgt_len": self.max_tgt_len, "drop_last": self.drop_last}

    def __repr__(self):
        return (f"PairBatcher(pairs={len(self.kept)}, batch_size={self.batch_size}, pool_size={self.pool_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, num_batches={self._num_batches})")
