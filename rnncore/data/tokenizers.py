"""Character and word tokenizers: text -> int64 ids -> text.

The loops over long texts run in Cython (rnncore/data/_fast.pyx): characters go through a
table indexed by code point, words through a dict. Both tokenizers are built the same way::

    tok = CharTokenizer.from_text(text)            # or CharTokenizer(...).fit(text)
    ids = tok.encode(text)                          # (N,) int64
    tok.decode(ids) == text
    CharTokenizer.from_dict(tok.to_dict())          # JSON-serialisable, saved with a model

Word level follows Mikolov's PTB language-model setup: the text is split on whitespace
and every newline becomes ``<eos>``; decoding joins words with one space and writes
``<eos>`` as a newline, so ``decode(encode(text))`` is the text with each line's
whitespace normalised.
"""
import re
from collections import Counter

import numpy as np

from .._checks import bounded_repr, check_int
from .vocab import EOS, PAD, UNK, Vocabulary

try:
    from . import _fast
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "rnncore.data._fast (the Cython text loops) is not built; build it with\n"
        "  python setup.py build_ext --inplace   (or pip install -e .)"
    ) from exc

_FORMAT = 1

# punct=True: every character that is neither a word character, whitespace, an apostrophe nor a
# hyphen is a token of its own ("earth." -> "earth ."); decoding glues it back.
_PUNCT_TOKENS = re.compile(r"<unk>|<eos>|[\w'\-]+|[^\w\s'\-]")  # (literal <unk>/<eos> stay symbols)
_GLUE_LEFT = re.compile(r" ([.,;:!?%)\]}\u00bb])")   # no space before a closing mark
_GLUE_RIGHT = re.compile(r"([(\[{\u00ab\u00bf\u00a1]) ")  # none after an opening one (and Spanish ¿ ¡)


def _check_text(text, fn):
    if not isinstance(text, str):
        raise TypeError(f"{fn}: text must be a str, got {type(text).__name__}")
    return text


def _check_ids(ids, vocab_size, fn):
    """ids as a C-contiguous 1-D int64 array; checked for range later, in the loop."""
    try:
        array = np.asarray(ids)
    except (ValueError, TypeError):
        raise TypeError(f"{fn}: ids must be a 1-D array of integers, got {type(ids).__name__}") from None
    if array.ndim != 1:
        raise ValueError(f"{fn}: ids must be 1-D, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{fn}: ids must hold integers, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.max() >= vocab_size:
        bad = int(np.flatnonzero(array >= vocab_size)[0])
        raise ValueError(f"{fn}: ids must be in [0, V) = [0, {vocab_size}), got ids[{bad}] = {int(array[bad])}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _where(text, pos):
    """'position P (line L, column C)' of character P of text, both 1-based for humans."""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"position {pos} (line {line}, column {col})"


class _Tokenizer:
    """What both tokenizers share: options, fitting, the vocabulary, serialisation."""

    kind = None  # "char" or "word"

    def __init__(self, vocab=None, **options):
        if vocab is not None and not isinstance(vocab, Vocabulary):
            raise TypeError(f"{type(self).__name__}: vocab must be a Vocabulary, got {type(vocab).__name__}")
        self._options = options
        self._vocab = None
        if vocab is not None:
            self._set_vocab(vocab)

    # -- fitting -------------------------------------------------------------------------

    def _specials(self):
        o = self._options
        return {"unk_token": UNK if o["unk"] else None,
                "eos_token": EOS if o.get("eos") else None,
                "pad_token": PAD if o["pad"] else None}

    def fit(self, text):
        """Build the vocabulary from `text`; returns self."""
        name = f"{type(self).__name__}.fit"
        _check_text(text, name)
        counts = self._count(text)
        vocab = Vocabulary.from_counts(counts, min_count=self._options["min_count"],
                                       max_size=self._options["max_size"], **self._specials())
        if vocab.unk_token is None:
            dropped = [s for s in counts if s not in vocab]
            if dropped:
                dropped.sort(key=lambda s: (-counts[s], s))
                raise ValueError(
                    f"{name}: min_count/max_size leave out {len(dropped)} symbol(s) seen in the text "
                    f"(e.g. {dropped[0]!r}) but the vocabulary has no {UNK} for them: pass unk=True")
        if self.kind == "char" and not any(len(s) == 1 for s in vocab.symbols):
            raise ValueError(f"{name}: the text gives no characters to the vocabulary")
        self._set_vocab(vocab)
        return self

    @classmethod
    def from_text(cls, text, **options):
        """``cls(**options).fit(text)``."""
        return cls(**options).fit(text)

    def _set_vocab(self, vocab):
        self._vocab = vocab
        self._prepare()

    @property
    def vocab(self):
        if self._vocab is None:
            raise RuntimeError(f"{type(self).__name__}: no vocabulary yet; call fit(text) first "
                               f"(or {type(self).__name__}.from_text(text))")
        return self._vocab

    @property
    def vocab_size(self):
        """V, the number of ids."""
        return len(self.vocab)

    def __len__(self):
        return self.vocab_size

    def _ids_error(self, fn, ids, bad):
        raise ValueError(f"{fn}: ids must be in [0, V) = [0, {self.vocab_size}), got ids[{bad}] = {int(ids[bad])}")

    # -- serialisation -------------------------------------------------------------------

    def to_dict(self):
        """JSON-serialisable: the kind, the options and the vocabulary."""
        return {"type": self.kind, "format": _FORMAT, "options": dict(self._options), "vocab": self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, d):
        name = f"{cls.__name__}.from_dict"
        if not isinstance(d, dict):
            raise TypeError(f"{name}: expected a dict, got {type(d).__name__}")
        if d.get("type") != cls.kind:
            raise ValueError(f"{name}: this is a {bounded_repr(d.get('type'))} tokenizer, not {bounded_repr(cls.kind)} "
                             "(rnncore.data.tokenizer_from_dict picks the class)")
        if d.get("format") != _FORMAT:
            raise ValueError(f"{name}: unknown format {bounded_repr(d.get('format'))} (this version reads {_FORMAT})")
        if "vocab" not in d or not isinstance(d.get("options"), dict):
            raise ValueError(f"{name}: missing 'vocab' or 'options'")
        return cls(vocab=Vocabulary.from_dict(d["vocab"]), **d["options"])

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._options == other._options and self._vocab == other._vocab

    __hash__ = None

    def __repr__(self):
        size = "unfitted" if self._vocab is None else f"vocab_size={len(self._vocab)}"
        opts = "".join(f", {k}={v!r}" for k, v in self._options.items() if v != self._defaults[k])
        return f"{type(self).__name__}({size}{opts})"


class CharTokenizer(_Tokenizer):
    """One id per character.

    Args:
        min_count: characters seen fewer times than this in the fitted text are left out.
        max_size: at most this many ids (specials included); the rarest characters go first.
        unk: add ``<unk>`` for characters not in the vocabulary. Without it (the default, as
            in char-rnn) encoding an unknown character raises ValueError naming it and where.
        pad: add ``<pad>`` (id 0) for padded batches; decode() drops it.
        vocab: a ready :class:`Vocabulary` instead of fitting one.
    """

    kind = "char"
    _defaults = {"min_count": 1, "max_size": None, "unk": False, "pad": False}

    def __init__(self, *, min_count=1, max_size=None, unk=False, pad=False, vocab=None):
        fn = "CharTokenizer"
        super().__init__(vocab, min_count=check_int(min_count, "min_count", fn),
                         max_size=check_int(max_size, "max_size", fn, optional=True), unk=bool(unk), pad=bool(pad))

    def _count(self, text):
        return Counter(text)

    def _prepare(self):
        vocab = self._vocab
        if vocab.eos_token is not None:
            raise ValueError("CharTokenizer: a character vocabulary has no <eos> (a newline is a character)")
        singles = [(s, i) for i, s in enumerate(vocab.symbols) if len(s) == 1]
        size = max((ord(s) for s, _ in singles), default=-1) + 1
        table = np.full(size, -1, dtype=np.int32)
        codepoints = np.full(len(vocab), -1, dtype=np.int32)
        for s, i in singles:
            table[ord(s)] = i
            codepoints[i] = ord(s)
        self._table, self._codepoints = table, codepoints
        self._symbol_list = list(vocab.symbols)

    def encode(self, text):
        """text (N characters) -> ids (N,) int64."""
        _check_text(text, "CharTokenizer.encode")
        vocab = self.vocab
        unk = vocab.unk_id
        ids, bad = _fast.char_encode(text, self._table, -1 if unk is None else unk)
        if bad >= 0:
            raise ValueError(f"CharTokenizer.encode: character {text[bad]!r} (U+{ord(text[bad]):04X}) at "
                             f"{_where(text, bad)} is not in the vocabulary, which has no {UNK}; "
                             "fit on a text that has it, or build the tokenizer with unk=True")
        return ids

    def decode(self, ids):
        """ids (N,) -> text; ``<pad>`` ids are dropped, ``<unk>`` is written as '<unk>'."""
        arr = _check_ids(ids, self.vocab_size, "CharTokenizer.decode")
        pad = self._vocab.pad_id
        text, bad = _fast.char_decode(arr, self._codepoints, self._symbol_list, -1 if pad is None else pad)
        if bad >= 0:
            self._ids_error("CharTokenizer.decode", arr, bad)
        return text


class WordTokenizer(_Tokenizer):
    """One id per whitespace-separated word; each newline is ``<eos>`` (Mikolov's PTB setup).

    Args:
        min_count: words seen fewer times than this in the fitted text become ``<unk>``.
        max_size: at most this many ids (specials included); the rarest words go first.
        unk: add ``<unk>`` (default True); unknown words map to it. Without it an unknown
            word raises ValueError naming it and its index.
        eos: add ``<eos>`` and encode every newline as it (default True). Without it
            newlines are plain whitespace.
        pad: add ``<pad>`` (id 0) for padded batches; decode() drops it.
        lower: lower-case the text before splitting.
        punct: split punctuation off the words (each mark is a word: "earth." is "earth" ".";
            apostrophes and hyphens stay inside words); decode() glues the marks back
            ("earth.", "(so)", "¿Quién?").
        vocab: a ready :class:`Vocabulary` instead of fitting one.

    Literal ``<unk>``/``<eos>`` in the text are those symbols (PTB writes ``<unk>``).
    """

    kind = "word"
    _defaults = {"min_count": 1, "max_size": None, "unk": True, "eos": True, "pad": False, "lower": False,
                 "punct": False}

    def __init__(self, *, min_count=1, max_size=None, unk=True, eos=True, pad=False, lower=False, punct=False,
                 vocab=None):
        fn = "WordTokenizer"
        options = dict(min_count=check_int(min_count, "min_count", fn),
                       max_size=check_int(max_size, "max_size", fn, optional=True),
                       unk=bool(unk), eos=bool(eos), pad=bool(pad), lower=bool(lower))
        if punct:  # (only when set, so the dicts of older tokenizers stay what they were)
            options["punct"] = True
        super().__init__(vocab, **options)

    def split(self, text):
        """The list of word symbols `text` encodes to (newlines as ``<eos>`` when eos=True)."""
        _check_text(text, "WordTokenizer.split")
        if self._options["lower"]:
            text = text.lower()
        if self._options["eos"]:
            text = text.replace("\n", f" {EOS} ")
        if self._options.get("punct"):
            return _PUNCT_TOKENS.findall(text)
        return text.split()

    def _count(self, text):
        return Counter(self.split(text))

    def _prepare(self):
        vocab = self._vocab
        if self._options["eos"] and vocab.eos_token != EOS:
            raise ValueError(f"WordTokenizer: eos=True needs a vocabulary whose eos_token is {EOS!r}, "
                             f"got {vocab.eos_token!r}")
        self._stoi = dict(vocab.stoi)
        self._symbol_list = list(vocab.symbols)

    def encode(self, text):
        """text -> ids (N,) int64, N words (and newlines, as ``<eos>``)."""
        words = self.split(_check_text(text, "WordTokenizer.encode"))
        unk = self.vocab.unk_id
        ids, bad = _fast.word_encode(words, self._stoi, -1 if unk is None else unk)
        if bad >= 0:
            raise ValueError(f"WordTokenizer.encode: word {words[bad]!r} (word {bad} of the text) is not in "
                             f"the vocabulary, which has no {UNK}; build the tokenizer with unk=True")
        return ids

    def decode(self, ids):
        """ids (N,) -> text: words joined by a space, ``<eos>`` as a newline, ``<pad>`` dropped."""
        arr = _check_ids(ids, self.vocab_size, "WordTokenizer.decode")
        vocab = self.vocab
        eos, pad = vocab.eos_id, vocab.pad_id
        text, bad = _fast.word_decode(arr, self._symbol_list, -1 if eos is None else eos,
                                      -1 if pad is None else pad)
        if bad >= 0:
            self._ids_error("WordTokenizer.decode", arr, bad)
        if self._options.get("punct"):
            text = _GLUE_RIGHT.sub(r"\1", _GLUE_LEFT.sub(r"\1", text))
        return text


def tokenizer_from_dict(d):
    """Rebuild a CharTokenizer or WordTokenizer from its ``to_dict()``."""
    kinds = {CharTokenizer.kind: CharTokenizer, WordTokenizer.kind: WordTokenizer}
    if not isinstance(d, dict) or d.get("type") not in kinds:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"tokenizer_from_dict: expected a dict with type 'char' or 'word', got {bounded_repr(got)}")
    return kinds[d["type"]].from_dict(d)
