# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# distutils: language = c++
"""Hot loops of rnncore.ngram: counting n-grams, querying a backoff model, ARPA text in and out.

Legend: N the model's order; V the vocabulary size (ids 0 <unk>, 1 <s>, 2 </s>, then the
words); P positions in a token stream; n_k the number of distinct k-grams (level k).

How n-grams are stored (a prefix trie in sorted arrays). Level 1 is dense: the unigram of
word w is node w, so n_1 = V. A k-gram g = (h, w) with k >= 2 is node j of level k, where
level k is sorted by the packed key ``parent * V + w`` (``parent`` = node id of its
(k-1)-word prefix h in level k-1). So the children of one context are contiguous and sorted
by word: ``first_child[k-1][h] .. first_child[k-1][h+1]`` is their range in level k
(a CSR offset array over the n_{k-1} nodes of level k-1), searched by bisection. The key
fits in an int64 whenever n_{k-1} * V < 2^63 (checked by the caller).

A token stream is sentences back to back, each ``<s> w_1 .. w_L </s>``; <s> appears only
there (first word of a sentence), so a k-gram never straddles two sentences: the window
ending at position p is valid when it does not reach back past the sentence's <s>.

These functions trust their callers (rnncore/ngram/*.py) for types, sizes and id ranges.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport free, malloc, strtod
from libc.string cimport memcpy
from libcpp.algorithm cimport sort
from libcpp.pair cimport pair
from libcpp.string cimport string
from libcpp.vector cimport vector

import numpy as np

cdef enum:
    UNK = 0
    BOS = 1
    EOS = 2


# ---- words -> ids --------------------------------------------------------------------------

def encode(list words, dict stoi, int32_t unk):
    """Words to ids through `stoi` (str -> int); a word not in it becomes `unk`. Returns (P,) int32."""
    cdef Py_ssize_t n = len(words), i
    out = np.empty(n, dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef PyObject *hit
    for i in range(n):
        hit = PyDict_GetItem(stoi, words[i])
        o[i] = unk if hit == NULL else <int32_t><object>hit
    return out


# ---- counting --------------------------------------------------------------------------------

def count_levels(const int32_t[::1] stream, int order, int64_t V):
    """The distinct k-grams of a token stream for k = 2..N, with their counts.

    stream: (P,) sentences ``<s> .. </s>`` back to back. Returns a list, entry k-2 for level
    k: ``(keys, counts, suffix)``, each (n_k,) int64 -- keys sorted (``parent * V + w``),
    raw counts, and the node id in level k-1 of each k-gram's (k-1)-word suffix.
    (Level 1 is the caller's: ``bincount(stream)``.)
    """
    cdef Py_ssize_t P = stream.shape[0], p, i, m, j
    prev_arr = np.asarray(stream).astype(np.int64)      # node of the (k-1)-gram ending at p (k-1 = 1: the word)
    cdef int64_t[::1] prev = prev_arr
    cdef int64_t[::1] cur, keys_v, counts_v, suffix_v
    cdef vector[pair[int64_t, int64_t]] grams            # (key, position)
    cdef int64_t key, last
    cdef int k
    levels = []
    for k in range(2, order + 1):
        cur_arr = np.full(P, -1, dtype=np.int64)
        cur = cur_arr
        with nogil:
            grams.clear()
            for p in range(1, P):
                # the k-gram ending at p: its prefix is the (k-1)-gram ending at p-1; none ends in <s>
                if stream[p] != BOS and prev[p - 1] >= 0:
                    grams.push_back(pair[int64_t, int64_t](prev[p - 1] * V + stream[p], p))
            sort(grams.begin(), grams.end())
            m = 0
            last = -1
            for i in range(<Py_ssize_t>grams.size()):
                if grams[i].first != last:
                    last = grams[i].first
                    m += 1
        keys_arr = np.empty(m, dtype=np.int64)
        counts_arr = np.zeros(m, dtype=np.int64)
        suffix_arr = np.empty(m, dtype=np.int64)
        keys_v = keys_arr
        counts_v = counts_arr
        suffix_v = suffix_arr
        with nogil:
            j = -1
            last = -1
            for i in range(<Py_ssize_t>grams.size()):
                key = grams[i].first
                p = grams[i].second
                if key != last:
                    last = key
                    j += 1
                    keys_v[j] = key
                    suffix_v[j] = prev[p]     # the (k-1)-gram ending at p, same for every occurrence
                counts_v[j] += 1
                cur[p] = j
        levels.append((keys_arr, counts_arr, suffix_arr))
        prev_arr = cur_arr
        prev = prev_arr
    return levels


# ---- querying --------------------------------------------------------------------------------

cdef class Trie:
    """A backoff model in the sorted-array trie described at the top of this file.

    Args (lists indexed by level k - 1, k = 1..N):
        words: level k's last words (n_k,) int32 (level 1: arange(V), unused);
        first_child: (n_k + 1,) int64 CSR offsets of level k+1 per level-k node (k < N);
        logp: (n_k,) float64 log10 probabilities; logbo: (n_k,) float64 log10 backoffs (k < N).
    The Trie keeps references to the arrays; they must not change while it lives.
    """
    cdef readonly int order
    cdef readonly int64_t V
    cdef list _keep
    cdef const int32_t **W
    cdef const int64_t **FC
    cdef const double **LP
    cdef const double **LB

    def __cinit__(self):
        self.W = NULL
        self.FC = NULL
        self.LP = NULL
        self.LB = NULL

    def __init__(self, int order, int64_t V, list words, list first_child, list logp, list logbo):
        cdef int k
        self.order = order
        self.V = V
        self._keep = []
        n = order + 1
        self.W = <const int32_t **>malloc(n * sizeof(int32_t *))
        self.FC = <const int64_t **>malloc(n * sizeof(int64_t *))
        self.LP = <const double **>malloc(n * sizeof(double *))
        self.LB = <const double **>malloc(n * sizeof(double *))
        if self.W == NULL or self.FC == NULL or self.LP == NULL or self.LB == NULL:
            raise MemoryError()
        for k in range(n):
            self.W[k] = NULL
            self.FC[k] = NULL
            self.LP[k] = NULL
            self.LB[k] = NULL
        for k in range(1, order + 1):
            self.W[k] = <const int32_t *>self._pointer(words[k - 1], np.int32)
            self.LP[k] = <const double *>self._pointer(logp[k - 1], np.float64)
            if k < order:
                self.FC[k] = <const int64_t *>self._pointer(first_child[k - 1], np.int64)
                self.LB[k] = <const double *>self._pointer(logbo[k - 1], np.float64)

    cdef const void *_pointer(self, array, dtype) except NULL:
        """The data of a C-contiguous array of `dtype`, kept alive by the Trie (a 1-element dummy when empty)."""
        a = np.ascontiguousarray(array, dtype=dtype)
        if a.size == 0:
            a = np.zeros(1, dtype=dtype)
        self._keep.append(a)
        cdef Py_ssize_t address = a.ctypes.data
        return <const void *>address

    def __dealloc__(self):
        free(self.W)
        free(self.FC)
        free(self.LP)
        free(self.LB)

    cdef inline int64_t child(self, int k, int64_t h, int32_t w) noexcept nogil:
        """Node of the k-gram (h, w) in level k (h a node of level k-1, k >= 2), or -1."""
        cdef int64_t lo = self.FC[k - 1][h], hi = self.FC[k - 1][h + 1], mid
        cdef const int32_t *words = self.W[k]
        while lo < hi:
            mid = (lo + hi) >> 1
            if words[mid] < w:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.FC[k - 1][h + 1] and words[lo] == w:
            return lo
        return -1

    cdef inline double step(self, int64_t *old, int64_t *new, int32_t w) noexcept nogil:
        """log10 p(w | context) and the next context.

        old[j], j = 1..N-1: node of the j-gram ending at the previous position (-1: none).
        new[j]: the same after w. The longest stored n-gram (h_m, w) gives the probability;
        each longer context h_j (j >= m) that is stored adds its backoff.
        """
        cdef int N = self.order, k, m = 1
        cdef int64_t node, best = w
        cdef double lp
        new[1] = w
        for k in range(2, N + 1):
            node = self.child(k, old[k - 1], w) if old[k - 1] >= 0 else -1
            if k < N:
                new[k] = node
            if node >= 0:
                m = k
                best = node
        lp = self.LP[m][best]
        for k in range(m, N):
            if old[k] >= 0:
                lp += self.LB[k][old[k]]
        return lp

    cdef inline void reset(self, int64_t *old, bint bos) noexcept nogil:
        cdef int k
        for k in range(1, self.order):
            old[k] = -1
        if bos and self.order > 1:
            old[1] = BOS

    cdef void walk(self, const int32_t[::1] ids, int64_t **old, int64_t **new, double *out) noexcept nogil:
        """Feed a token stream through the state *old (scratch *new), restarting at each <s>.

        Leaves the state after the last id in *old. With out, out[p] gets each position's
        log10 p (0.0 at each <s>, which is not predicted).
        """
        cdef Py_ssize_t p
        cdef int64_t *tmp
        cdef double lp
        self.reset(old[0], False)
        for p in range(ids.shape[0]):
            if ids[p] == BOS:
                self.reset(old[0], True)
                if out != NULL:
                    out[p] = 0.0
                continue
            lp = self.step(old[0], new[0], ids[p])
            if out != NULL:
                out[p] = lp
            tmp = old[0]
            old[0] = new[0]
            new[0] = tmp

    def score(self, const int32_t[::1] ids):
        """log10 p of every position of a token stream: (P,) float64, 0.0 at each <s>.

        ids: (P,) ids in [0, V). The context starts empty and restarts at each <s> (which
        is not predicted); any other id is scored given the words before it since then.
        """
        cdef Py_ssize_t P = ids.shape[0]
        cdef int N = self.order
        out = np.empty(P, dtype=np.float64)
        cdef double[::1] o = out
        cdef int64_t *state = <int64_t *>malloc(2 * (N + 1) * sizeof(int64_t))
        if state == NULL:
            raise MemoryError()
        cdef int64_t *old = state
        cdef int64_t *new = state + N + 1
        with nogil:
            self.walk(ids, &old, &new, &o[0] if P > 0 else NULL)
        free(state)
        return out

    def next_logprobs(self, const int32_t[::1] context):
        """log10 p(w | context) for every w in [0, V): (V,) float64 (the <s> entry is meaningless).

        context: ids as in score(); a leading <s> starts a sentence.
        """

        cdef int N = self.order
        cdef int32_t w
        out = np.empty(self.V, dtype=np.float64)
        cdef double[::1] o = out
        cdef int64_t *state = <int64_t *>malloc(2 * (N + 1) * sizeof(int64_t))
        if state == NULL:
            raise MemoryError()
        cdef int64_t *old = state
        cdef int64_t *new = state + N + 1
        with nogil:
            self.walk(context, &old, &new, NULL)
            for w in range(<int32_t>self.V):
                o[w] = self.step(old, new, w)
        free(state)
        return out

    cdef int64_t find_c(self, const int32_t *gram, int n) noexcept nogil:
        """Node id of the n-gram gram[0..n) (1 <= n <= N) in level n, or -1."""
        cdef int k
        cdef int64_t node = gram[0]
        for k in range(1, n):
            if node < 0:
                return -1
            node = self.child(k + 1, node, gram[k])
        return node

    def find(self, const int32_t[::1] gram):
        """Node id of an n-gram (1 <= len <= N) in its level, or -1."""
        if gram.shape[0] == 0 or gram.shape[0] > self.order:
            return -1
        return self.find_c(&gram[0], <int>gram.shape[0])


# ---- ARPA out ---------------------------------------------------------------------------------

cdef inline void append_number(string &buf, double x):
    cdef char tmp[40]
    cdef int n
    if x == 0.0:
        buf.push_back(b'0')
        return
    n = snprintf(tmp, 40, "%.9g", x)
    buf.append(tmp, n)


def write_level(f, int k, bint with_backoff, list words, list parents, const double[::1] logp,
                const double[::1] logbo, list symbols):
    """Write level k's lines ``logp<TAB>w_1 .. w_k[<TAB>logbo]`` to the binary file `f`.

    words, parents: lists over levels 1..k of (n,) int32 last words and int64 parent nodes
    (level 1's entries unused: a level-1 node is its word); symbols: V bytes objects, the
    words' UTF-8 spellings.
    """
    cdef Py_ssize_t n = logp.shape[0], j, node
    cdef int i
    cdef string buf
    cdef bytes s
    keep = [np.ascontiguousarray(words[i], dtype=np.int32) for i in range(k)] + \
           [np.ascontiguousarray(parents[i], dtype=np.int64) for i in range(k)]
    cdef int32_t *ws = <int32_t *>malloc((k + 1) * sizeof(int32_t))
    cdef const int32_t **W = <const int32_t **>malloc((k + 1) * sizeof(int32_t *))
    cdef const int64_t **PA = <const int64_t **>malloc((k + 1) * sizeof(int64_t *))
    cdef Py_ssize_t address
    try:
        if ws == NULL or W == NULL or PA == NULL:
            raise MemoryError()
        for i in range(1, k):                        # level i+1's arrays
            if keep[i].size == 0 or keep[k + i].size == 0:
                return                               # an empty level i+1 means level k is empty too
            address = keep[i].ctypes.data
            W[i] = <const int32_t *>address
            address = keep[k + i].ctypes.data
            PA[i] = <const int64_t *>address
        buf.reserve(1 << 21)
        for j in range(n):
            node = j
            for i in range(k - 1, 0, -1):            # node of level i+1 -> its word, then its parent in level i
                ws[i] = W[i][node]
                node = PA[i][node]
            ws[0] = <int32_t>node                    # a level-1 node is its word
            append_number(buf, logp[j])
            buf.push_back(b'\t')
            for i in range(k):
                if i:
                    buf.push_back(b' ')
                s = <bytes>symbols[ws[i]]
                buf.append(PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))
            if with_backoff:
                buf.push_back(b'\t')
                append_number(buf, logbo[j])
            buf.push_back(b'\n')
            if buf.size() > (1 << 20):
                f.write(PyBytes_FromStringAndSize(buf.data(), buf.size()))
                buf.clear()
        if buf.size():
            f.write(PyBytes_FromStringAndSize(buf.data(), buf.size()))
    finally:
        free(ws)
        free(W)
        free(PA)


# ---- ARPA in ----------------------------------------------------------------------------------

class ArpaSyntaxError(ValueError):
    """A malformed line; args: (message, line number)."""


cdef inline bint is_space(char c) noexcept nogil:
    return c == b' ' or c == b'\t' or c == b'\r' or c == b'\v' or c == b'\f'


cdef double parse_number(const char *start, const char *end, str what, Py_ssize_t line) except? -1e300:
    """The number spelled exactly by [start, end), finite; else ArpaSyntaxError."""
    cdef char *stop
    cdef double x
    cdef char tmp[64]
    cdef Py_ssize_t n = end - start
    if 0 < n < 64:
        memcpy(tmp, start, n)
        tmp[n] = 0
        x = strtod(tmp, &stop)
        if stop == tmp + n and isfinite(x):
            return x
    raise ArpaSyntaxError(f"bad {what} {start[:n].decode('utf-8', 'replace')!r}", line)


def parse_section(bytes data, Py_ssize_t pos, Py_ssize_t line, int k, Py_ssize_t expected, bint with_backoff,
                  dict vocab, Trie lower):
    """Parse the `expected` entry lines of section k starting at byte `pos` (line number `line`).

    Each line: ``logp  w_1 .. w_k  [logbo]`` separated by tabs or spaces (logbo only when
    `with_backoff`; missing means 0). vocab: bytes -> id; for k == 1 it is filled here
    (specials must already be in it; other words take the next ids), and the result's
    parents are the word ids. For k >= 2 every word must be in vocab and the (k-1)-word
    prefix must be a node of `lower` (the model's levels 1..k-1).
    Returns (parent (n,) int64, word (n,) int32, logp, logbo (n,) float64, pos, line) with
    pos/line just past the section's last entry line. Stops early (fewer entries) at a
    blank line, a line starting with a backslash, or the end of the data; the caller
    reports the count mismatch.
    """
    cdef const char *base = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef const char *p
    cdef const char *eol
    cdef const char *a
    cdef Py_ssize_t nf, i, count = 0, nxt
    cdef Py_ssize_t max_fields = k + 2
    cdef int32_t *gram = <int32_t *>malloc((k + 1) * sizeof(int32_t))
    cdef const char **fields = <const char **>malloc((max_fields + 1) * sizeof(char *))
    cdef const char **ends = <const char **>malloc((max_fields + 1) * sizeof(char *))
    if gram == NULL or fields == NULL or ends == NULL:
        free(gram)
        free(fields)
        free(ends)
        raise MemoryError()
    parent_arr = np.empty(expected, dtype=np.int64)
    word_arr = np.empty(expected, dtype=np.int32)
    logp_arr = np.empty(expected, dtype=np.float64)
    logbo_arr = np.zeros(expected, dtype=np.float64)
    cdef int64_t[::1] parent_v = parent_arr
    cdef int32_t[::1] word_v = word_arr
    cdef double[::1] logp_v = logp_arr
    cdef double[::1] logbo_v = logbo_arr
    cdef PyObject *hit
    cdef int64_t node
    cdef char specials_seen[3]
    specials_seen[0] = specials_seen[1] = specials_seen[2] = 0
    try:
        while count < expected and pos < size:
            p = base + pos
            eol = p
            while eol < base + size and eol[0] != b'\n':
                eol += 1
            nxt = (eol - base) + 1
            # split on whitespace
            nf = 0
            a = p
            while a < eol:
                while a < eol and is_space(a[0]):
                    a += 1
                if a >= eol:
                    break
                if nf == max_fields:
                    nf += 1
                    break
                fields[nf] = a
                while a < eol and not is_space(a[0]):
                    a += 1
                ends[nf] = a
                nf += 1
            if nf == 0 or fields[0][0] == b'\\':
                break                                  # blank line or next header: section ended early
            line += 1
            if nf != k + 1 and not (with_backoff and nf == k + 2):
                want = f"{k} word{'s' if k > 1 else ''}" + (" and an optional backoff" if with_backoff else "")
                raise ArpaSyntaxError(f"a {k}-gram line needs a log10 probability, then {want}; "
                                      f"got {nf - 1 if nf <= max_fields else 'more'} fields after the number", line)
            logp_v[count] = parse_number(fields[0], ends[0], "log10 probability", line)
            if logp_v[count] > 0:
                raise ArpaSyntaxError(f"log10 probability {logp_v[count]!r} is positive", line)
            if nf == k + 2:
                logbo_v[count] = parse_number(fields[k + 1], ends[k + 1], "log10 backoff", line)
            for i in range(k):
                w = PyBytes_FromStringAndSize(fields[i + 1], ends[i + 1] - fields[i + 1])
                hit = PyDict_GetItem(vocab, w)
                if k == 1:
                    if hit == NULL:
                        gram[0] = <int32_t>len(vocab)
                        vocab[w] = gram[0]
                    else:                               # a special (pre-filled) the first time, else a repeat
                        gram[0] = <int32_t><object>hit
                        if gram[0] >= 3 or specials_seen[gram[0]]:
                            raise ArpaSyntaxError(f"the unigram {w.decode('utf-8', 'replace')!r} appears twice", line)
                        specials_seen[gram[0]] = 1
                else:
                    if hit == NULL:
                        raise ArpaSyntaxError(f"the word {w.decode('utf-8', 'replace')!r} of this {k}-gram is not "
                                              "among the unigrams", line)
                    gram[i] = <int32_t><object>hit
            if k == 1:
                parent_v[count] = gram[0]
                word_v[count] = gram[0]
            else:
                node = lower.find_c(gram, k - 1)
                if node < 0:
                    words_txt = b" ".join([PyBytes_FromStringAndSize(fields[i + 1], ends[i + 1] - fields[i + 1])
                                           for i in range(k - 1)]).decode("utf-8", "replace")
                    raise ArpaSyntaxError(f"the {k}-gram's prefix {words_txt!r} is not among the {k - 1}-grams "
                                          "(an ARPA file lists the context of every n-gram)", line)
                parent_v[count] = node
                word_v[count] = gram[k - 1]
            count += 1
            pos = nxt
    finally:
        free(gram)
        free(fields)
        free(ends)
    return parent_arr[:count], word_arr[:count], logp_arr[:count], logbo_arr[:count], pos, line
