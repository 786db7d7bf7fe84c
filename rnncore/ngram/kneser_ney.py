"""Interpolated Kneser–Ney n-gram language models (modified, Chen & Goodman; or plain).

Legend: N the order; V the vocabulary size counting ``<s>``; a k-gram is ``h w`` with
context h (k-1 words). Counting and querying are Cython (rnncore/ngram/_kn.pyx: sorted
arrays of packed int64 keys, a prefix trie); the per-order arithmetic here is numpy over
whole orders, never a Python loop per n-gram or token.

The estimate is KenLM's ``lmplz`` (and SRILM's ``-kndiscount -interpolate``), step by step:

* Counts. Every sentence is ``<s> w_1 .. w_L </s>``. Order-N n-grams keep their raw counts,
  and so does any n-gram that starts with ``<s>`` (nothing can precede it). Every other
  lower-order n-gram gets its continuation count a(g) = N1+(. g), the number of distinct
  words seen before it. ``a(<s>) = 0``: ``<s>`` is never predicted.
* Discounts, per order k, from the count-of-counts n_j = #{k-grams with a = j} (Chen &
  Goodman eq. 26): Y = n1 / (n1 + 2 n2); modified: D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2,
  D3+ = 3 - 4Y n4/n3; plain: one D = Y. When n1..n3 leave them undefined or out of range
  (tiny corpora) fitting fails as lmplz does, unless ``discount_fallback`` gives values
  (``True``: lmplz's --discount_fallback, D1=0.5 D2=1 D3+=1.5; plain KN uses the first).
* Interpolation: p(w | h) = (a(hw) - D(a(hw))) / sum_x a(hx) + gamma(h) p(w | h'),
  gamma(h) = sum_x D(a(hx)) / sum_x a(hx), h' = h without its first word; a context never
  seen (or never followed by anything) passes everything down: p(w | h) = p(w | h').
* The bottom: the unigram distribution interpolates with the uniform over the vocabulary
  (V - 1 words: all but ``<s>``, with ``<unk>`` and ``</s>``): p(w) = (a(w) - D)/sum a +
  gamma / (V - 1). This is lmplz's default (``--interpolate_unigrams``, its
  ``MergeRight``/``Interpolate`` steps): ``<unk>`` is treated as a word seen zero times, so
  an unknown word gets p(<unk>) = gamma/(V-1) -- not SRILM's choice, which gives <unk> all
  the leftover mass. When the corpus itself writes ``<unk>`` (Penn Treebank), lmplz refuses
  it (or drops it with --skip_symbols); here it is counted like any word, and the same
  formula gives it (a(<unk>) - D)/sum a + gamma/(V-1).

The model is written out the way lmplz writes it: the interpolated probability of every
stored n-gram, and gamma(h) as the backoff weight of each context h, so a backoff query
(p(w|h) = prob(hw) if stored, else backoff(h) * p(w|h')) gives exactly the interpolated
probabilities. Queries here work the same way on the same tables, so this class, an ARPA
file it wrote, and KenLM's query of that file agree.
"""
import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from .._checks import bounded_repr
from . import _kn
from . import corpus as _corpus
from .corpus import BOS_ID, EOS_ID, MAX_ORDER, UNK_ID

KENLM_FALLBACK = (0.5, 1.0, 1.5)   # lmplz --discount_fallback defaults


@dataclass(frozen=True)
class Evaluation:
    """What KenLM's ``query`` reports for a corpus.

    log10prob: total log10 probability of the predicted tokens (every word and each
    sentence's ``</s>``; ``<s>`` is context only). tokens: their number. oov: tokens that
    are ``<unk>`` (unknown words and literal ``<unk>``), counted as KenLM counts them;
    oov_log10prob: their share of log10prob.
    """
    log10prob: float
    tokens: int
    sentences: int
    oov: int
    oov_log10prob: float

    @property
    def perplexity(self):
        """10 ** (-log10prob / tokens), every token included (KenLM's 'including OOVs';
        Mikolov's PTB convention, where <unk> is an ordinary word)."""
        return 10.0 ** (-self.log10prob / self.tokens) if self.tokens else float("nan")

    @property
    def perplexity_excluding_oov(self):
        n = self.tokens - self.oov
        return 10.0 ** (-(self.log10prob - self.oov_log10prob) / n) if n else float("nan")


def _check_order(order):
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        raise TypeError(f"KneserNeyLM: order must be an int >= 1, got {type(order).__name__}: {bounded_repr(order)}")
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"KneserNeyLM: order must be in [1, {MAX_ORDER}], got {order}")
    return int(order)


def _check_fallback(fallback, fn):
    if fallback is False or fallback is None:
        return None
    if fallback is True:
        return KENLM_FALLBACK
    try:
        values = tuple(float(x) for x in fallback)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: discount_fallback must be False, True or (D1, D2, D3+), got "
                        f"{bounded_repr(fallback)}") from None
    if len(values) != 3 or not all(math.isfinite(x) and 0 < x <= j for j, x in enumerate(values, 1)):
        raise ValueError(f"{fn}: discount_fallback must be (D1, D2, D3+) with 0 < Dj <= j, got "
                         f"{bounded_repr(fallback)}")
    return values


def _check_discounts(discounts, order, modified):
    """Fixed discounts -> a list of N (D1, D2, D3+) tuples, or None."""
    if discounts is None:
        return None
    fn = "KneserNeyLM"
    try:
        entries = list(discounts)
    except TypeError:
        raise TypeError(f"{fn}: discounts must be a list with one entry per order, got {type(discounts).__name__}") \
            from None
    if len(entries) != order:
        raise ValueError(f"{fn}: discounts must have one entry per order 1..{order}, got {len(entries)}")
    out = []
    for k, entry in enumerate(entries, 1):
        values = entry if isinstance(entry, (list, tuple)) else (entry,)
        try:
            values = tuple(float(x) for x in values)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: discounts[{k - 1}] must hold numbers, got {bounded_repr(entry)}") from None
        if modified:
            ok = len(values) == 3 and all(math.isfinite(x) and 0 <= x <= j for j, x in enumerate(values, 1))
            if not ok:
                raise ValueError(f"{fn}: discounts[{k - 1}] (order {k}) must be (D1, D2, D3+) with 0 <= Dj <= j, "
                                 f"got {bounded_repr(entry)}")
        else:
            if len(values) != 1 or not (math.isfinite(values[0]) and 0 < values[0] <= 1):
                raise ValueError(f"{fn}: discounts[{k - 1}] (order {k}) must be one D in (0, 1] for plain "
                                 f"Kneser-Ney, got {bounded_repr(entry)}")
            values = values * 3
        out.append(values)
    return out


def estimate_discounts(n, modified, order_k, fallback):
    """The discounts of one order from its count-of-counts n = (n1, n2, n3, n4).

    Returns (D1, D2, D3+) (plain KN: the same D three times). Raises ValueError like lmplz
    when they are undefined or out of range, unless `fallback` is given.
    """
    n1, n2, n3, n4 = (int(x) for x in n)
    problem = None
    if modified:
        for j, nj in ((1, n1), (2, n2), (3, n3)):
            if nj == 0:
                problem = (f"no {order_k}-gram has (adjusted) count {j}, so the modified Kneser-Ney discount "
                           f"D{j if j < 3 else '3+'} cannot be estimated")
                break
        if problem is None:
            y = n1 / (n1 + 2 * n2)
            d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
            for j, dj in enumerate(d, 1):
                if not 0 <= dj <= j:
                    problem = f"the {order_k}-gram discount D{j if j < 3 else '3+'} = {dj:.6g} is outside [0, {j}]"
                    break
    else:
        if n1 == 0:
            problem = f"no {order_k}-gram has (adjusted) count 1, so the Kneser-Ney discount cannot be estimated"
        else:
            y = n1 / (n1 + 2 * n2)
            d = (y, y, y)
    if problem is None:
        return d
    if fallback is None:
        raise ValueError(f"KneserNeyLM.fit: {problem} (count-of-counts n1..n4 = {n1}, {n2}, {n3}, {n4}); "
                         "the corpus is too small or artificial for this order. Pass discount_fallback=True "
                         "(lmplz's fallback D1=0.5, D2=1, D3+=1.5) or your own (D1, D2, D3+), or lower the order")
    return tuple(fallback) if modified else (fallback[0],) * 3


class KneserNeyLM:
    """An interpolated Kneser–Ney n-gram language model (see the module docstring).

    Args:
        order: N in [1, 255], the longest n-gram (5: a 5-gram model).
        modified: Chen & Goodman's three discounts per order (default), or one (plain KN).
        discount_fallback: discounts for an order whose count-of-counts cannot give them:
            False (default: fitting raises ValueError, as lmplz does), True (lmplz's
            --discount_fallback values 0.5, 1, 1.5) or your own (D1, D2, D3+).
        discounts: fixed discounts instead of estimates: one entry per order 1..N, each
            (D1, D2, D3+) with 0 <= Dj <= j (modified) or one D in (0, 1] (plain).

    Probabilities are log10 (as in ARPA files and KenLM). ``vocab`` lists the model's
    symbols: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, then the words. A model fit on ids takes ids
    in the vocabulary it was fit with; otherwise ids mean positions in ``vocab``.

    Example::

        lm = KneserNeyLM(order=5).fit(train_text)       # a sentence per line
        lm.perplexity(test_text)
        lm.evaluate(test_text)                           # log10prob, tokens, oov, perplexity
        lm.logprob(["the", "stock"], "market")           # log10 p(market | the stock)
        lm.save_arpa("kn5.arpa"); KneserNeyLM.load_arpa("kn5.arpa")
    """

    def __init__(self, order=5, *, modified=True, discount_fallback=False, discounts=None):
        self.order = _check_order(order)
        if not isinstance(modified, bool):
            raise TypeError(f"KneserNeyLM: modified must be a bool, got {type(modified).__name__}")
        self.modified = modified
        self._fallback = _check_fallback(discount_fallback, "KneserNeyLM")
        self.discount_fallback = discount_fallback
        self._fixed = _check_discounts(discounts, self.order, modified)
        self._trie = None
        self._symbols = None
        self._stoi = None
        self._table = None            # fit vocabulary id -> internal id, when fit on ids
        self._fit_symbols = None      # that vocabulary's symbols
        self.discounts = None         # per order k = 1..N: (D1, D2, D3+)
        self.count_of_counts = None   # per order: (n1, n2, n3, n4) of the adjusted counts

    def __repr__(self):
        args = [f"order={self.order}"]
        if not self.modified:
            args.append("modified=False")
        if self.discount_fallback not in (False, None):
            args.append(f"discount_fallback={self.discount_fallback!r}")
        state = "" if self._trie is not None else ", unfitted"
        size = f", V={len(self._symbols)}" if self._symbols is not None else ""
        return f"KneserNeyLM({', '.join(args)}{size}{state})"

    # ---- the vocabulary and inputs ---------------------------------------------------------

    @property
    def vocab(self):
        """The model's symbols in id order (0 <unk>, 1 <s>, 2 </s>, then the words)."""
        self._require("vocab")
        return tuple(self._symbols)

    @property
    def ngram_counts(self):
        """Number of stored n-grams of each order 1..N (the ARPA header's counts)."""
        self._require("ngram_counts")
        return [len(p) for p in self._logp]

    def _require(self, fn):
        if self._trie is None:
            raise RuntimeError(f"KneserNeyLM.{fn}: the model is not fitted; call fit() or load_arpa() first")

    def _stream(self, corpus, fn):
        """A corpus in any accepted form -> the internal stream ``<s> .. </s>`` per sentence, (P,) int32."""
        if _corpus.is_ids(corpus):
            if self._table is not None:
                ids = _corpus.check_ids(corpus, len(self._table), fn)
                mapped = self._table[ids]
                bad = np.flatnonzero(mapped < 0)
                if bad.size:
                    i = int(bad[0])
                    raise ValueError(f"{fn}: ids[{i}] = {ids[i]} is {self._fit_symbols[ids[i]]!r}, which cannot "
                                     "appear in a sentence (<s> only starts one; <pad> is not a word)")
            else:
                mapped = _corpus.check_ids(corpus, len(self._symbols), fn)
            return _corpus.stream_of_ids(mapped, fn, self._symbols)
        words, _ = _corpus.split_text(_corpus.corpus_text(corpus, fn), fn)
        return _corpus.stream_of_ids(_corpus.encode_words(words, self._stoi), fn, self._symbols)

    def _token_id(self, token, fn, what):
        if isinstance(token, str):
            return self._stoi.get(token, UNK_ID)
        if isinstance(token, numbers.Integral) and not isinstance(token, bool):
            size = len(self._table) if self._table is not None else len(self._symbols)
            if not 0 <= token < size:
                raise ValueError(f"{fn}: {what} id {token} is outside the vocabulary [0, {size})")
            return int(self._table[token]) if self._table is not None else int(token)
        raise TypeError(f"{fn}: {what} must be a word (str) or an id (int), got {type(token).__name__}: "
                        f"{bounded_repr(token)}")

    def _context_ids(self, context, fn):
        if isinstance(context, str):
            context = context.split()
        try:
            context = list(context)
        except TypeError:
            raise TypeError(f"{fn}: context must be a sequence of words or ids (or one str), "
                            f"got {type(context).__name__}") from None
        ids = [self._token_id(t, fn, f"context[{i}]") for i, t in enumerate(context)]
        for i, t in enumerate(ids):
            if t < 0:
                raise ValueError(f"{fn}: context[{i}] = {bounded_repr(context[i])} cannot appear in a sentence")
            if t == BOS_ID and i > 0:
                raise ValueError(f"{fn}: <s> may only be the first word of a context (it starts a sentence), "
                                 f"found at context[{i}]")
        return ids            # the trie keeps only what it needs (the last N-1 words)

    # ---- estimation ----------------------------------------------------------------------

    def fit(self, corpus, *, vocab=None):
        """Count and estimate the model from a corpus (any form rnncore.ngram.corpus accepts).

        vocab: for integer ids, their vocabulary (an rnncore Vocabulary, a WordTokenizer, or
        a sequence of symbols); its words never seen get only the uniform share. Returns self.
        """
        fn = "KneserNeyLM.fit"
        if _corpus.is_ids(corpus):
            if vocab is None:
                raise ValueError(f"{fn}: ids need their vocabulary: fit(ids, vocab=tokenizer.vocab)")
            fit_symbols, table, symbols = _corpus.user_vocabulary(vocab, fn)
            ids = _corpus.check_ids(corpus, len(fit_symbols), fn)
            mapped = table[ids]
            bad = np.flatnonzero(mapped < 0)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"{fn}: ids[{i}] = {ids[i]} is {fit_symbols[ids[i]]!r}, which cannot appear in a "
                                 "sentence (<s> only starts one; <pad> is not a word)")
            stream = _corpus.stream_of_ids(mapped, fn, symbols)
        else:
            if vocab is not None:
                raise ValueError(f"{fn}: vocab is only for integer ids; a text corpus defines its own vocabulary")
            words, _ = _corpus.split_text(_corpus.corpus_text(corpus, fn), fn)
            symbols = _corpus.fit_vocabulary(words)
            if len(symbols) > _corpus.MAX_VOCAB:
                raise ValueError(f"{fn}: {len(symbols)} word types; at most {_corpus.MAX_VOCAB} are supported")
            stoi = {s: i for i, s in enumerate(symbols)}
            stream = _corpus.stream_of_ids(_corpus.encode_words(words, stoi), fn, symbols)
            table = fit_symbols = None
        if stream.size == 0:
            raise ValueError(f"{fn}: the corpus is empty (no sentences)")
        if stream.size >= 2**31:
            raise ValueError(f"{fn}: {stream.size} tokens; at most 2**31 - 1 are supported")
        self._estimate(stream, symbols)
        self._table, self._fit_symbols = table, fit_symbols
        return self

    def _estimate(self, stream, symbols):
        N, V = self.order, len(symbols)
        # Counting (Cython): level 1 is dense (node = word), levels 2..N sorted by parent * V + w.
        words = [np.arange(V, dtype=np.int32)]
        parents = [np.arange(V, dtype=np.int64)]
        counts = [np.bincount(stream, minlength=V).astype(np.int64)]
        suffixes = [None]
        for keys, c, suffix in _kn.count_levels(stream, N, V):
            words.append((keys % V).astype(np.int32))
            parents.append(keys // V)
            counts.append(c)
            suffixes.append(suffix)
        # Adjusted counts: raw at order N and for n-grams starting with <s>; else continuation counts.
        starts_bos = [np.arange(V) == BOS_ID]
        for k in range(1, N):
            starts_bos.append(starts_bos[k - 1][parents[k]])
        adjusted = []
        for k in range(N):
            if k == N - 1:
                a = counts[k].copy()
            else:
                a = np.bincount(suffixes[k + 1], minlength=len(counts[k])).astype(np.int64)
                a[starts_bos[k]] = counts[k][starts_bos[k]]
            if k == 0:
                a[BOS_ID] = 0
            adjusted.append(a)
        # Discounts per order from the count-of-counts.
        count_of_counts = [tuple(int(np.count_nonzero(a == j)) for j in (1, 2, 3, 4)) for a in adjusted]
        if self._fixed is not None:
            discounts = list(self._fixed)
        else:
            discounts = [estimate_discounts(n, self.modified, k + 1, self._fallback)
                         for k, n in enumerate(count_of_counts)]
        # Interpolated probabilities, order by order; gamma of each context is its backoff.
        logp, logbo = [], []
        lower = None
        with np.errstate(divide="ignore"):
            for k in range(N):
                a = adjusted[k]
                d1, d2, d3 = discounts[k]
                disc = np.where(a >= 3, d3, np.where(a == 2, d2, np.where(a == 1, d1, 0.0)))
                if k == 0:
                    total = float(a.sum())
                    gamma0 = float(disc.sum()) / total
                    p = (a - disc) / total + gamma0 / (V - 1)
                    p[BOS_ID] = 1.0            # never predicted; log10 1 = 0 as lmplz writes it
                else:
                    parent = parents[k]
                    n_prev = len(adjusted[k - 1])
                    den = np.bincount(parent, weights=a, minlength=n_prev)
                    mass = np.bincount(parent, weights=disc, minlength=n_prev)
                    gamma = np.ones(n_prev)
                    ctx = den > 0
                    gamma[ctx] = mass[ctx] / den[ctx]
                    p = (a - disc) / den[parent] + gamma[parent] * lower[suffixes[k]]
                    logbo.append(np.log10(gamma))
                if k == 0 and not gamma0 > 0:
                    raise ValueError("KneserNeyLM.fit: the unigram discounts are all 0, which leaves no "
                                     "probability for unseen words; use discount_fallback")
                logp.append(np.minimum(np.log10(p), 0.0))
                lower = p
        self._install(symbols, words, parents, logp, logbo)
        self.count_of_counts, self.discounts = count_of_counts, discounts

    def _install(self, symbols, words, parents, logp, logbo):
        """Build the query tables (CSR offsets, the Cython trie) from per-level arrays."""
        N, V = self.order, len(symbols)
        first_child = []
        for k in range(1, N):
            first_child.append(np.searchsorted(parents[k], np.arange(len(logp[k - 1]) + 1)).astype(np.int64))
        self._symbols = list(symbols)
        self._stoi = {s: i for i, s in enumerate(self._symbols)}
        self._words, self._parents, self._logp, self._logbo = words, parents, logp, logbo
        self._first_child = first_child
        self._trie = _kn.Trie(N, V, words, first_child, logp, logbo)

    # ---- queries -------------------------------------------------------------------------

    def logprob(self, context, word):
        """log10 p(word | context).

        context: the preceding words (a sequence of str or ids, or one whitespace-separated
        str), oldest first; start it with ``<s>`` for the beginning of a sentence. Only its
        last N-1 words matter. word: a str or id; unknown words are ``<unk>``; ``</s>`` ends
        the sentence; ``<s>`` is never predicted (ValueError).
        """
        fn = "KneserNeyLM.logprob"
        self._require("logprob")
        w = self._token_id(word, fn, "word")
        if w == BOS_ID or w < 0:
            raise ValueError(f"{fn}: {word!r} is never predicted (<s> only starts a sentence)")
        ids = np.array(self._context_ids(context, fn) + [w], dtype=np.int32)
        return float(self._trie.score(ids)[-1])

    def distribution(self, context):
        """p(w | context) for every w in ``vocab``: (V,) float64 summing to 1 (0 for ``<s>``)."""
        fn = "KneserNeyLM.distribution"
        self._require("distribution")
        p = 10.0 ** self._trie.next_logprobs(np.array(self._context_ids(context, fn), dtype=np.int32))
        p[BOS_ID] = 0.0
        return p

    def score(self, sentence, bos=True, eos=True):
        """log10 probability of one sentence (KenLM's ``Model.score``).

        sentence: a str of whitespace-separated words (or a sequence of words/ids). bos:
        start from ``<s>`` (else from no context); eos: include p(</s> | sentence).
        """
        fn = "KneserNeyLM.score"
        self._require("score")
        if isinstance(sentence, str):
            sentence = sentence.split()
        ids = [self._token_id(t, fn, f"sentence[{i}]") for i, t in enumerate(sentence)]
        for i, t in enumerate(ids):
            if t == BOS_ID or t < 0:
                raise ValueError(f"{fn}: sentence[{i}] = {sentence[i]!r} cannot appear inside a sentence")
        ids = ([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else [])
        return float(self._trie.score(np.array(ids, dtype=np.int32)).sum())

    def token_logprobs(self, corpus):
        """(stream, log10 p per position) of a corpus: the internal ids ``<s> .. </s>`` per
        sentence and each one's log10 probability (0 at ``<s>``)."""
        self._require("token_logprobs")
        stream = self._stream(corpus, "KneserNeyLM.token_logprobs")
        return stream, self._trie.score(stream)

    def sentence_logprobs(self, corpus):
        """log10 probability of each sentence (with its ``</s>``): (S,) float64."""
        self._require("sentence_logprobs")
        stream = self._stream(corpus, "KneserNeyLM.sentence_logprobs")
        lp = self._trie.score(stream)
        return np.add.reduceat(lp, np.flatnonzero(stream == BOS_ID))

    def evaluate(self, corpus):
        """An :class:`Evaluation` of a corpus: total log10 probability, tokens, OOVs, perplexity."""
        self._require("evaluate")
        stream = self._stream(corpus, "KneserNeyLM.evaluate")
        lp = self._trie.score(stream)
        sentences = int(np.count_nonzero(stream == BOS_ID))
        oov = stream == UNK_ID
        return Evaluation(log10prob=float(lp.sum()), tokens=int(stream.size - sentences), sentences=sentences,
                          oov=int(np.count_nonzero(oov)), oov_log10prob=float(lp[oov].sum()))

    def perplexity(self, corpus):
        """10 ** (-log10 p(corpus) / tokens), every word and ``</s>`` counted (OOVs included)."""
        return self.evaluate(corpus).perplexity

    # ---- ARPA --------------------------------------------------------------------------------

    def save_arpa(self, path):
        """Write the model as an ARPA file (atomically: a temporary file, then a rename).

        KenLM's query reads it (and scores as this model does) for order >= 2; it refuses
        unigram-only models.
        """
        self._require("save_arpa")
        from .arpa import write_arpa
        write_arpa(os.fspath(path), self.order, self._symbols, self._words, self._parents, self._logp,
                   self._logbo)

    @classmethod
    def load_arpa(cls, path):
        """A model read from an ARPA file (queries only: no counts or discounts)."""
        from .arpa import read_arpa
        order, symbols, words, parents, logp, logbo = read_arpa(os.fspath(path))
        lm = cls(order)
        lm._install(symbols, words, parents, logp, logbo)
        return lm


def load_arpa(path):
    """:meth:`KneserNeyLM.load_arpa`."""
    return KneserNeyLM.load_arpa(path)
