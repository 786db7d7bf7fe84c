# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Hot loops of rnncore.data: text <-> token ids for long texts.

Legend: N symbols in the text (characters or words), V symbols in the vocabulary.

These functions trust their callers (rnncore/data/tokenizers.py) for types and check
only what they must to stay in bounds. They report a bad position instead of raising,
so the caller can write the error message: each returns ``(result, bad)`` with
``bad == -1`` on success, else the index of the first symbol or id it could not map.
The obvious Python versions they replace are the reference in tests/test_data.py.
"""
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_4BYTE_KIND, PyUnicode_FromKindAndData
from libc.stdint cimport int32_t, int64_t, uint32_t

import numpy as np


def char_encode(str text, const int32_t[::1] table, int64_t unk_id):
    """Characters to ids through a table over the code points.

    text: N characters; table: (C,) id of code point c, or -1 when c is not in the
    vocabulary (code points >= C are not in it either); unk_id: id for an unknown
    character, or -1 to stop there. Returns (ids (N,) int64, bad).
    """
    cdef Py_ssize_t n = len(text)
    cdef Py_ssize_t size = table.shape[0]
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef Py_ssize_t i = 0
    cdef Py_UCS4 c
    cdef int64_t v
    for c in text:
        v = table[c] if <Py_ssize_t>c < size else -1
        if v < 0:
            if unk_id < 0:
                return out, i
            v = unk_id
        o[i] = v
        i += 1
    return out, -1


def char_decode(const int64_t[::1] ids, const int32_t[::1] codepoints, list symbols, int64_t pad_id):
    """Ids to text, one symbol per id, `pad_id` ids dropped (-1: none).

    ids: (N,); codepoints: (V,) the code point of a one-character symbol, or -1 for a
    longer one (the specials), written out from `symbols` (V strings) instead.
    Returns (text, bad) where bad is the first id outside [0, V).
    """
    cdef Py_ssize_t n = ids.shape[0]
    cdef Py_ssize_t V = codepoints.shape[0]
    cdef Py_ssize_t i, k = 0
    cdef int64_t t
    cdef int32_t cp
    cdef uint32_t *buf
    # Fast path: every id is a one-character symbol; fill a UCS4 buffer and let
    # CPython pick the compact representation.
    for i in range(n):
        t = ids[i]
        if t < 0 or t >= V:
            return None, i
        if codepoints[t] < 0 and t != pad_id:
            break
    else:
        buf = <uint32_t *>PyMem_Malloc((n if n > 0 else 1) * sizeof(uint32_t))
        if buf == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                t = ids[i]
                if t != pad_id:
                    buf[k] = <uint32_t>codepoints[t]
                    k += 1
            return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, k), -1
        finally:
            PyMem_Free(buf)
    # Slow path: some multi-character symbol (an <unk> in the ids); join pieces.
    pieces = []
    for i in range(n):
        t = ids[i]
        if t < 0 or t >= V:
            return None, i
        if t != pad_id:
            pieces.append(symbols[t])
    return "".join(pieces), -1


def word_encode(list words, dict stoi, int64_t unk_id):
    """Words to ids through `stoi` (symbol -> int id).

    words: N strings; unk_id: id for an unknown word, or -1 to stop there.
    Returns (ids (N,) int64, bad).
    """
    cdef Py_ssize_t n = len(words)
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef Py_ssize_t i
    cdef PyObject *hit
    for i in range(n):
        hit = PyDict_GetItem(stoi, words[i])
        if hit == NULL:
            if unk_id < 0:
                return out, i
            o[i] = unk_id
        else:
            o[i] = <int64_t>(<object>hit)
    return out, -1


def word_decode(const int64_t[::1] ids, list symbols, int64_t eos_id, int64_t pad_id):
    """Ids to text: words joined by one space, `eos_id` as a newline, `pad_id` dropped.

    ids: (N,); symbols: V strings; eos_id/pad_id: -1 when the vocabulary has none.
    Returns (text, bad) where bad is the first id outside [0, V).
    """
    cdef Py_ssize_t n = ids.shape[0]
    cdef Py_ssize_t V = len(symbols)
    cdef Py_ssize_t i
    cdef int64_t t
    cdef bint line_start = True
    pieces = []
    for i in range(n):
        t = ids[i]
        if t < 0 or t >= V:
            return None, i
        if t == pad_id:
            continue
        if t == eos_id:
            pieces.append("\n")
            line_start = True
            continue
        if not line_start:
            pieces.append(" ")
        pieces.append(symbols[t])
        line_start = False
    return "".join(pieces), -1
