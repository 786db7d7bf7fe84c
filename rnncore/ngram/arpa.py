"""ARPA backoff language model files: write and read (the line loops are Cython, _kn.pyx).

The format (as SRILM and KenLM's lmplz write it)::

    \\data\\
    ngram 1=10001
    ngram 2=...

    \\1-grams:
    -1.234567	the	-0.456789       log10 p, the words, log10 backoff (orders < N)
    ...

    \\2-grams:
    ...

    \\end\\

Written: the header, then every order's n-grams in the model's internal order, numbers with
9 significant digits (a stored 0 written ``0``), ``<s>`` with log10 probability 0 and its
backoff (lmplz's convention: <s> is never predicted), UTF-8 words.

Read, checking everything before building anything (each problem a ValueError naming the
file, the line and what was wrong): the ``\\data\\`` header and its counts, each section's
header, exactly as many entries as the header says, numbers (finite, probabilities <= 0),
words known to the unigrams, no n-gram twice, the context (prefix) of every n-gram present,
``<s>`` and ``</s>`` present, ``\\end\\``. Text before ``\\data\\`` is ignored (comments). A
file without ``<unk>`` gets one with log10 probability -100, as KenLM's loader does.
"""
import os
import re
import tempfile

import numpy as np

from . import _kn
from .corpus import BOS, BOS_ID, EOS, MAX_ORDER, UNK, UNK_ID

MISSING_UNK_LOG10 = -100.0        # what KenLM substitutes for a missing <unk>

_NGRAM = re.compile(rb"ngram\s+(\S+?)\s*=\s*(\S+)")


def write_arpa(path, order, symbols, words, parents, logp, logbo):
    """Write the per-level tables of a model (see kneser_ney.py) as an ARPA file at `path`, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    encoded = [s.encode("utf-8") for s in symbols]
    fd, tmp = tempfile.mkstemp(prefix=".arpa-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\\data\\\n")
            for k in range(order):
                f.write(b"ngram %d=%d\n" % (k + 1, len(logp[k])))
            for k in range(order):
                f.write(b"\n\\%d-grams:\n" % (k + 1))
                with_backoff = k + 1 < order
                _kn.write_level(f, k + 1, with_backoff, words[:k + 1], parents[:k + 1], logp[k],
                                logbo[k] if with_backoff else logp[k], encoded)
            f.write(b"\n\\end\\\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _lines(data, pos, line):
    """Yield (start, end, next, line number) of the lines of `data` from byte `pos`."""
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        nxt = size if end < 0 else end + 1
        end = size if end < 0 else end
        line += 1
        yield pos, end, nxt, line
        pos = nxt


def read_arpa(path):
    """Parse an ARPA file -> (order, symbols, words, parents, logp, logbo) per-level tables."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"load_arpa: cannot read {path!r}: {exc}") from None
    where = f"load_arpa: {path}"

    def fail(message, line=None):
        return ValueError(f"{where}" + (f", line {line}" if line is not None else "") + f": {message}")

    # \data\ and the counts
    pos, line = 0, 0
    for start, end, nxt, n in _lines(data, 0, 0):
        pos, line = nxt, n
        if data[start:end].strip() == b"\\data\\":
            break
    else:
        raise fail("not an ARPA file: no \\data\\ line")
    counts = []
    for start, end, nxt, n in _lines(data, pos, line):
        text = data[start:end].strip()
        pos, line = nxt, n
        if not text:
            if counts:
                break
            continue
        m = _NGRAM.fullmatch(text)
        if m is None:
            if text.startswith(b"\\"):
                pos, line = start, n - 1     # a section header right after the counts
                break
            raise fail(f"expected 'ngram K=COUNT' in the \\data\\ header, got {text[:80]!r}", n)
        try:
            k, c = int(m.group(1)), int(m.group(2))
        except ValueError:
            raise fail(f"bad number in the \\data\\ header line {text[:80]!r}", n) from None
        if k != len(counts) + 1:
            raise fail(f"the \\data\\ header must list orders 1, 2, ... in turn; expected order {len(counts) + 1}, "
                       f"got {k}", n)
        if c < 0 or (k == 1 and c < 1):
            raise fail(f"bad count {c} for order {k} in the \\data\\ header", n)
        if k > MAX_ORDER:
            raise fail(f"the \\data\\ header lists orders past {MAX_ORDER}, the longest n-grams rnncore reads", n)
        counts.append(c)
    if not counts:
        raise fail("the \\data\\ header lists no 'ngram K=COUNT' lines (truncated?)")
    order = len(counts)

    vocab = {UNK.encode(): UNK_ID, BOS.encode(): BOS_ID, EOS.encode(): 2}
    words, parents, logp, logbo, first_child = [], [], [], [], []
    lower = None
    for k in range(1, order + 1):
        # the section header
        header = None
        for start, end, nxt, n in _lines(data, pos, line):
            pos, line = nxt, n
            text = data[start:end].strip()
            if text:
                header = text
                break
        want = b"\\%d-grams:" % k
        if header is None:
            raise fail(f"truncated: the file ends before the {want.decode()} section")
        if header != want and k > 1 and not header.startswith(b"\\"):
            raise fail(f"more {k - 1}-grams than the \\data\\ header's {counts[k - 2]} (inconsistent)", line)
        if header != want:
            raise fail(f"expected the section header {want.decode()}, got {header[:80].decode('utf-8', 'replace')!r}",
                       line)
        with_backoff = k < order
        try:
            parent, word, lp, bo, pos, line = _kn.parse_section(data, pos, line, k, counts[k - 1], with_backoff,
                                                                vocab, lower)
        except _kn.ArpaSyntaxError as exc:
            message, n = exc.args
            raise fail(message, n) from None
        if len(lp) != counts[k - 1]:
            ended = "the file ends" if pos >= len(data) else "the section ends"
            raise fail(f"{ended} after {len(lp)} {k}-grams, but the \\data\\ header says {counts[k - 1]} "
                       "(truncated or inconsistent)", line + 1)
        if k == 1:
            V = len(vocab)
            present = np.zeros(V, dtype=bool)
            present[word] = True
            for special in (BOS, EOS):
                if not present[vocab[special.encode()]]:
                    raise fail(f"the unigrams have no {special}; an ARPA model needs it")
            lp1 = np.full(V, MISSING_UNK_LOG10)
            bo1 = np.zeros(V)
            lp1[word] = lp
            bo1[word] = bo
            words.append(np.arange(V, dtype=np.int32))
            parents.append(np.arange(V, dtype=np.int64))
            logp.append(lp1)
            logbo.append(bo1)
        else:
            keys = parent * V + word
            idx = np.argsort(keys, kind="stable")
            keys = keys[idx]
            dup = np.flatnonzero(keys[1:] == keys[:-1])
            if dup.size:
                symbols = _symbols(vocab)
                gram = _gram_words(int(idx[dup[0]]), parent, word, parents, words, symbols)
                raise fail(f"the {k}-gram {' '.join(gram)!r} appears twice in the \\{k}-grams: section")
            parent, word = parent[idx], word[idx]
            words.append(word)
            parents.append(parent)
            logp.append(lp[idx])
            logbo.append(bo[idx])
            first_child.append(np.searchsorted(parent, np.arange(len(logp[k - 2]) + 1)).astype(np.int64))
        if k < order:
            lower = _kn.Trie(k, V, words, first_child, logp, logbo)
    # \end\
    for start, end, nxt, n in _lines(data, pos, line):
        text = data[start:end].strip()
        if not text:
            continue
        if text == b"\\end\\":
            break
        if text.startswith(b"\\"):
            got = text[:80].decode("utf-8", "replace")
            raise fail(f"expected \\end\\ after the \\{order}-grams: section, got {got!r}", n)
        raise fail(f"more {order}-grams than the \\data\\ header's {counts[-1]} (inconsistent)", n)
    else:
        raise fail("truncated: no \\end\\ line")
    return order, _symbols(vocab), words, parents, logp, logbo


def _symbols(vocab):
    symbols = [None] * len(vocab)
    for word, i in vocab.items():
        try:
            symbols[i] = word.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"load_arpa: the word {word!r} is not UTF-8") from None
    return symbols


def _gram_words(i, parent, word, parents, words, symbols):
    """The words of entry i of a level being read (parent/word arrays), for error messages."""
    out = [symbols[int(word[i])]]
    node = int(parent[i])
    for k in range(len(parents) - 1, 0, -1):
        out.append(symbols[int(words[k][node])])
        node = int(parents[k][node])
    out.append(symbols[node])
    return out[::-1]
