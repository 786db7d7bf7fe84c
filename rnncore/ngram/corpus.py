"""Input to the n-gram models -> token streams of internal ids.

A corpus is sentences; each becomes ``<s> w_1 .. w_L </s>`` (KenLM's and SRILM's
convention): ``<s>`` is context only, never predicted; ``</s>`` is predicted like a word.
Accepted forms (the same for fitting and for scoring):

* a ``str``: one sentence per line, words split on whitespace. A final newline ends the
  last sentence (it does not start an empty one); an empty line is an empty sentence
  (``<s> </s>``), as in KenLM. The literal words ``<s>`` and ``</s>`` are reserved
  (KenLM refuses them too); ``<unk>`` is the unknown word (Penn Treebank writes it).
* an iterable of sentences, each a ``str`` (one line) or a sequence of word strings.
* integer ids: a 1-D array (or list of ints) in the id space of a vocabulary, sentences
  separated by its end-of-sentence id (``<eos>`` of :class:`rnncore.data.Vocabulary`, as
  :class:`rnncore.data.WordTokenizer` encodes each newline; or ``</s>``); the ids after the
  last separator form one more sentence. A model fit on ids takes ids in the same space.

Internal ids: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, then the words.
"""
import numbers

import numpy as np

from .._checks import bounded_repr
from . import _kn

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = (UNK, BOS, EOS)
MAX_VOCAB = 2**31 - 1
# The longest n-gram a model may have (KenLM's own limit is a compile-time one, 6 by default).
# Loading a file costs O(order**2) in tables, and an order of thousands carries nothing a corpus
# could fill: KneserNeyLM(order=) and load_arpa refuse more up front.
MAX_ORDER = 255


def is_ids(corpus):
    """Whether `corpus` is integer ids (an integer array, or a non-empty list/tuple of ints)."""
    if isinstance(corpus, np.ndarray):
        return corpus.dtype.kind in "iub" or corpus.dtype == object and corpus.size and \
            isinstance(corpus.flat[0], numbers.Integral)
    if isinstance(corpus, (list, tuple)) and corpus:
        first = corpus[0]
        return isinstance(first, numbers.Integral) and not isinstance(first, bool)
    return False


def corpus_text(corpus, fn):
    """A str corpus, or an iterable of sentences (str or word sequences) -> one text, a line per sentence."""
    if isinstance(corpus, str):
        return corpus
    if isinstance(corpus, (bytes, bytearray)):
        raise TypeError(f"{fn}: the corpus must be text (str), not {type(corpus).__name__}; decode it first")
    try:
        items = iter(corpus)
    except TypeError:
        raise TypeError(f"{fn}: the corpus must be a str, an iterable of sentences (str or lists of words) "
                        f"or a 1-D array of ids, got {type(corpus).__name__}") from None
    lines = []
    for i, sentence in enumerate(items):
        if isinstance(sentence, str):
            if "\n" in sentence:
                raise ValueError(f"{fn}: sentence {i} contains a newline; give one sentence per item "
                                 "(or the whole text as one str, a sentence per line)")
            lines.append(sentence)
            continue
        try:
            words = list(sentence)
        except TypeError:
            raise TypeError(f"{fn}: sentence {i} must be a str or a sequence of words (str), "
                            f"got {type(sentence).__name__}") from None
        for j, w in enumerate(words):
            if not isinstance(w, str):
                raise TypeError(f"{fn}: word {j} of sentence {i} must be a str, got {type(w).__name__}: "
                                f"{bounded_repr(w)}")
            if not w or len(w.split()) != 1 or w.strip() != w:
                raise ValueError(f"{fn}: word {j} of sentence {i} must be a non-empty string without "
                                 f"whitespace, got {bounded_repr(w)}")
        lines.append(" ".join(words))
    return "".join(line + "\n" for line in lines)


def split_text(text, fn):
    """Text -> (words with ``</s>`` after each sentence, number of sentences)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()                      # the final newline ends the last sentence
    words = f" {EOS} ".join(lines).split()
    if lines:
        words.append(EOS)
    if BOS in text or EOS in text:       # cheap test first; the exact one only when it may matter
        if words.count(EOS) != len(lines) or BOS in words:
            for i, line in enumerate(lines):
                for w in (BOS, EOS):
                    if w in line.split():
                        raise ValueError(f"{fn}: line {i + 1} of the corpus contains the reserved word {w!r} "
                                         "(sentence boundaries are implied by the lines, as in KenLM)")
    return words, len(lines)


def fit_vocabulary(words):
    """Symbols in internal id order: the specials, then the corpus's words in order of first use."""
    symbols = list(SPECIALS)
    symbols += [w for w in dict.fromkeys(words) if w not in SPECIALS]
    return symbols


def user_vocabulary(vocab, fn):
    """A vocabulary for id input -> (user symbols, table user id -> internal id (-1: not allowed), model symbols).

    vocab: an :class:`rnncore.data.Vocabulary`, a tokenizer with ``.vocab`` (WordTokenizer),
    or a sequence of symbol strings (its ``</s>`` or ``<eos>`` ends sentences, ``<unk>`` is
    the unknown word). ``<pad>`` and ``<s>`` ids may not appear in the data.
    """
    if hasattr(vocab, "vocab") and hasattr(vocab.vocab, "symbols"):
        vocab = vocab.vocab
    if hasattr(vocab, "symbols") and hasattr(vocab, "eos_token"):
        symbols = list(vocab.symbols)
        eos, unk, pad = vocab.eos_token, vocab.unk_token, vocab.pad_token
        if eos is None:
            raise ValueError(f"{fn}: the vocabulary has no end-of-sentence token (eos_token is None); "
                             "ids need one to separate sentences")
    else:
        if isinstance(vocab, str) or vocab is None:
            raise TypeError(f"{fn}: vocab must be an rnncore.data.Vocabulary, a WordTokenizer or a sequence of "
                            f"symbol strings, got {type(vocab).__name__}")
        symbols = list(vocab)
        for i, s in enumerate(symbols):
            if not isinstance(s, str):
                raise TypeError(f"{fn}: vocab symbols must be strings, got {type(s).__name__} at id {i}")
        eos = EOS if EOS in symbols else "<eos>" if "<eos>" in symbols else None
        if eos is None:
            raise ValueError(f"{fn}: the vocabulary has neither '</s>' nor '<eos>'; ids need an "
                             "end-of-sentence id to separate sentences")
        unk = UNK if UNK in symbols else None
        pad = None
    if not symbols:
        raise ValueError(f"{fn}: the vocabulary is empty")
    if len(symbols) + 3 > MAX_VOCAB:
        raise ValueError(f"{fn}: the vocabulary has {len(symbols)} symbols; at most {MAX_VOCAB - 3} are supported")
    table = np.full(len(symbols), -1, dtype=np.int32)
    model = list(SPECIALS)
    seen = {}
    for i, s in enumerate(symbols):
        if not isinstance(s, str) or not s or len(s.split()) != 1 or s.strip() != s:
            raise ValueError(f"{fn}: vocabulary symbol {i} ({s!r}) must be a non-empty string without whitespace "
                             "(an ARPA file could not hold it)")
        if s in seen:
            raise ValueError(f"{fn}: vocabulary symbol {s!r} appears twice, at ids {seen[s]} and {i}")
        seen[s] = i
        if s == eos:
            table[i] = EOS_ID
        elif s == unk:
            table[i] = UNK_ID
        elif s == pad or s == BOS:
            continue                     # stays -1: not allowed in the data
        elif s in SPECIALS:
            role = "end-of-sentence" if s == EOS else "unknown-word"
            raise ValueError(f"{fn}: vocabulary symbol {s!r} (id {i}) is reserved for the {role} token, but the "
                             f"vocabulary's own {role} token is {(eos if s == EOS else unk)!r}")
        else:
            table[i] = len(model)
            model.append(s)
    return symbols, table, model


def check_ids(corpus, size, fn):
    """Integer ids as a C-contiguous (P,) int64 array, each in [0, size); else ValueError naming the first bad one."""
    array = np.asarray(corpus)
    if array.dtype == object:
        try:
            array = array.astype(np.int64)
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"{fn}: ids must be integers") from None
    if array.dtype.kind == "b":
        raise TypeError(f"{fn}: ids must be integers, got dtype bool")
    if array.ndim != 1:
        raise ValueError(f"{fn}: ids must be 1-D (sentences separated by the end-of-sentence id), "
                         f"got shape {array.shape}")
    bad = np.flatnonzero((array < 0) | (array >= size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{fn}: ids must be in [0, {size}) (the model's vocabulary), got ids[{i}] = {array[i]}")
    return np.ascontiguousarray(array, dtype=np.int64)


def stream_of_ids(ids, fn, symbols):
    """Internal ids of sentences (``</s>`` ending each; a missing final one added) -> the stream
    ``<s> .. </s>`` per sentence, (P,) int32. `ids` must hold no ``<s>``."""
    ids = np.asarray(ids, dtype=np.int32)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int32)   # no sentences
    bos = np.flatnonzero(ids == BOS_ID)
    if bos.size:
        raise ValueError(f"{fn}: position {int(bos[0])} holds {symbols[BOS_ID]!r}, which only starts sentences "
                         "and is never predicted; sentences are separated by the end-of-sentence id")
    if ids.size and ids[-1] != EOS_ID:
        ids = np.append(ids, np.int32(EOS_ID))
    ends = np.flatnonzero(ids == EOS_ID)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    return np.ascontiguousarray(np.insert(ids, starts, np.int32(BOS_ID)), dtype=np.int32)


def encode_words(words, stoi):
    """Words -> (P,) int32 internal ids; unknown words -> <unk> (Cython loop)."""
    return _kn.encode(words, stoi, UNK_ID)
