"""Vocabulary: the map between symbols (characters or words) and integer ids.

Id order is deterministic: the special symbols first, in the order ``<pad>``, ``<unk>``,
``<s>`` (bos), ``<eos>`` (or ``</s>``) (those present), then the other symbols by descending count, ties broken by
the symbols themselves (code point order). So ``<pad>`` is id 0 whenever present, which
is the default ``pad_value`` of :func:`rnncore.data.pad_sequences`.
"""
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType

from .._checks import bounded_repr, check_int

UNK = "<unk>"
EOS = "<eos>"
PAD = "<pad>"
BOS = "<s>"          # sequence-to-sequence targets: <s> starts the decoder input ...
EOS_SENTENCE = "</s>"  # ... and </s> ends the target (OpenNMT-py, fairseq, torchtext's names)

_FORMAT = 1


class Vocabulary:
    """An immutable id <-> symbol map with optional special symbols.

    Args:
        symbols: all symbols in id order (symbol ``i`` has id ``i``), specials included.
        unk_token: the symbol unknown input maps to, or None (then unknown input is an error).
        eos_token: end-of-sequence symbol (a newline at word level), or None.
        pad_token: padding symbol, or None.
        bos_token: beginning-of-sequence symbol (``<s>``, a seq2seq decoder's first input), or None.

    ``len(vocab)`` is the number of ids ``V``; ``vocab[symbol]`` is its id (the ``<unk>`` id
    for an unknown symbol when there is one, else KeyError); ``vocab.symbols[i]`` is the
    symbol of id ``i``. Build one from data with :meth:`from_counts`.
    """

    def __init__(self, symbols, *, unk_token=None, eos_token=None, pad_token=None, bos_token=None):
        if isinstance(symbols, str):
            raise TypeError("Vocabulary: symbols must be a sequence of strings, got one str "
                            "(use list(text) for characters)")
        symbols = tuple(symbols)
        stoi = {}
        for i, s in enumerate(symbols):
            if not isinstance(s, str):
                raise TypeError(f"Vocabulary: symbols must be strings, got {type(s).__name__} at id {i}: "
                                f"{bounded_repr(s)}")
            if s == "":
                raise ValueError(f"Vocabulary: symbols must be non-empty strings, got '' at id {i}")
            if s in stoi:
                raise ValueError(f"Vocabulary: symbol {bounded_repr(s)} appears twice, at ids {stoi[s]} and {i}")
            stoi[s] = i
        specials = {}
        for role, token in (("pad_token", pad_token), ("unk_token", unk_token), ("bos_token", bos_token),
                            ("eos_token", eos_token)):
            if token is None:
                continue
            if token not in stoi:
                raise ValueError(f"Vocabulary: {role} {bounded_repr(token)} is not one of the symbols")
            if token in specials.values():
                raise ValueError(f"Vocabulary: {bounded_repr(token)} cannot serve as two special symbols")
            specials[role] = token
        self._symbols = symbols
        self._stoi = stoi
        self.unk_token = unk_token
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.bos_token = bos_token

    @classmethod
    def from_counts(cls, counts, *, min_count=1, max_size=None, unk_token=UNK, eos_token=None, pad_token=None,
                    bos_token=None):
        """The vocabulary of a text's symbol counts.

        Args:
            counts: a mapping symbol -> count, or an iterable of symbols to count.
            min_count: symbols seen fewer times are left out (they become ``<unk>``).
            max_size: at most this many ids, specials included; the rarest symbols go first.
            unk_token, eos_token, pad_token, bos_token: the special symbols (None: no such symbol).
                They are always in the vocabulary, whatever their counts.
        """
        if isinstance(counts, Mapping):
            counts = dict(counts)
        else:
            counts = Counter(counts)
        fn = "Vocabulary.from_counts"
        min_count = check_int(min_count, "min_count", fn)
        specials = [t for t in (pad_token, unk_token, bos_token, eos_token) if t is not None]
        # at least one id, and room for every special symbol
        max_size = check_int(max_size, "max_size", fn, minimum=max(len(specials), 1), optional=True)
        for s, c in counts.items():
            if not isinstance(s, str):
                raise TypeError(f"{fn}: symbols must be strings, got {type(s).__name__}: {bounded_repr(s)}")
            check_int(c, f"the count of {s!r}", fn, minimum=0)
        kept = [(s, c) for s, c in counts.items() if c >= min_count and s not in specials and s != ""]
        kept.sort(key=lambda sc: (-sc[1], sc[0]))
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(specials + [s for s, _ in kept], unk_token=unk_token, eos_token=eos_token, pad_token=pad_token,
                   bos_token=bos_token)

    # ---- lookups -------------------------------------------------------------------

    @property
    def symbols(self):
        """All symbols in id order (a tuple)."""
        return self._symbols

    @property
    def stoi(self):
        """symbol -> id (read-only view)."""
        return MappingProxyType(self._stoi)

    def _id(self, token):
        return None if token is None else self._stoi[token]

    @property
    def unk_id(self):
        return self._id(self.unk_token)

    @property
    def eos_id(self):
        return self._id(self.eos_token)

    @property
    def pad_id(self):
        return self._id(self.pad_token)

    @property
    def bos_id(self):
        return self._id(self.bos_token)

    @property
    def specials(self):
        """The special symbols present, in id order."""
        return tuple(t for t in (self.pad_token, self.unk_token, self.bos_token, self.eos_token) if t is not None)

    def __len__(self):
        return len(self._symbols)

    def __iter__(self):
        return iter(self._symbols)

    def __contains__(self, symbol):
        return symbol in self._stoi

    def __getitem__(self, symbol):
        i = self._stoi.get(symbol)
        if i is not None:
            return i
        if self.unk_token is not None:
            return self._stoi[self.unk_token]
        raise KeyError(f"{symbol!r} is not in the vocabulary (which has no {UNK} symbol)")

    def __eq__(self, other):
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash((self._symbols, self.unk_token, self.eos_token, self.pad_token, self.bos_token))

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in
                        (("unk_token", self.unk_token), ("eos_token", self.eos_token), ("pad_token", self.pad_token),
                         ("bos_token", self.bos_token))
                        if v is not None)
        return f"Vocabulary(size={len(self)}{extra})"

    # ---- serialisation -------------------------------------------------------------

    def to_dict(self):
        """A JSON-serialisable description; :meth:`from_dict` rebuilds an equal vocabulary.
        (``bos_token`` is written only when there is one, so older readers read the rest.)"""
        d = {
            "format": _FORMAT,
            "symbols": list(self._symbols),
            "unk_token": self.unk_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
        }
        if self.bos_token is not None:
            d["bos_token"] = self.bos_token
        return d

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, Mapping):
            raise TypeError(f"Vocabulary.from_dict: expected a dict, got {type(d).__name__}")
        if d.get("format") != _FORMAT:
            raise ValueError(f"Vocabulary.from_dict: unknown format {bounded_repr(d.get('format'))} (this version "
                             f"reads {_FORMAT})")
        missing = [k for k in ("symbols", "unk_token", "eos_token", "pad_token") if k not in d]
        if missing:
            raise ValueError(f"Vocabulary.from_dict: missing key(s) {', '.join(missing)}")
        if not isinstance(d["symbols"], (list, tuple)):
            raise TypeError(f"Vocabulary.from_dict: 'symbols' must be a list, got {type(d['symbols']).__name__}")
        return cls(d["symbols"], unk_token=d["unk_token"], eos_token=d["eos_token"], pad_token=d["pad_token"],
                   bos_token=d.get("bos_token"))
