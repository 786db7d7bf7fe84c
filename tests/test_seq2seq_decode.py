"""Seq2seq decoding (rnncore.sampling.seq2seq_decode, _core.Seq2SeqDecoder) against a slow numpy
reference decoder that steps one source at a time: teacher-forced logits to 1e-12 in float64,
greedy, beam width 1 == greedy, exhaustive beam search == brute force on a tiny vocabulary,
n-best order and scores, seeded sampling, attention weights, padding independence, bad input."""
import itertools

import numpy as np
import pytest

from rnncore import sampling
from rnncore.nn import Attention
from rnncore.sampling import DecoderParts, seq2seq_decode

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


# -- the numpy reference ---------------------------------------------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_cell(cell, x, h, c, w_ih, w_hh, b_ih, b_hh):
    gi = w_ih @ x + (0 if b_ih is None else b_ih)
    gh = w_hh @ h + (0 if b_hh is None else b_hh)
    if cell == "lstm":
        i, f, g, o = np.split(gi + gh, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c
    if cell == "gru":
        xr, xz, xn = np.split(gi, 3)
        hr, hz, hn = np.split(gh, 3)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        return (1 - z) * n + z * h, None
    a = gi + gh
    return (np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0)), None


def ref_attend(weights, q, mem):
    """mem (len, Hm) of one source; returns (attn_h (Ho,), alpha (len,))."""
    kind, w_in, w_q, b_q, w_k, v, w_out, b_out = weights
    if kind == "dot":
        scores = mem @ q
    elif kind == "general":
        scores = mem @ (w_in @ q)
    else:
        t = np.tanh((w_q @ q + (0 if b_q is None else b_q))[None, :] + mem @ w_k.T)
        scores = t @ v.reshape(-1)
    e = np.exp(scores - scores.max())
    alpha = e / e.sum()
    ctx = alpha @ mem
    return np.tanh(w_out @ np.concatenate([ctx, q]) + (0 if b_out is None else b_out)), alpha


class RefDecoder:
    """One source, one step at a time: the obvious loop."""

    def __init__(self, parts, memory, length, h0, c0):
        self.p = parts
        self.weights = None if parts.attention is None else parts.attention.weights_for_core()
        self.mem = None if memory is None else memory[:length]
        L, H = parts.num_layers, parts.hidden_size
        self.h = [np.zeros(H) if h0 is None else h0[l].copy() for l in range(L)]
        self.c = [np.zeros(H) if c0 is None else c0[l].copy() for l in range(L)]
        Ho = 0 if self.weights is None else self.weights[6].shape[0]
        self.feed = np.zeros(Ho)

    def step(self, tok):
        p = self.p
        x = p.embedding[tok]
        if p.input_feed:
            x = np.concatenate([x, self.feed])
        for l in range(p.num_layers):
            self.h[l], self.c[l] = ref_cell(p.cell, x, self.h[l], self.c[l], p.w_ih[l], p.w_hh[l], p.b_ih[l],
                                            p.b_hh[l])
            x = self.h[l]
        alpha = None
        if self.weights is not None:
            x, alpha = ref_attend(self.weights, x, self.mem)
            self.feed = x
        logits = p.out_w @ x + (0 if p.out_b is None else p.out_b)
        return logits, alpha


def log_softmax(z):
    m = z.max()
    return z - m - np.log(np.exp(z - m).sum())


def ref_score(parts, memory, length, h0, c0, bos, tokens):
    """Sum of log-probabilities of `tokens` after bos (teacher forcing through the reference)."""
    dec = RefDecoder(parts, memory, length, h0, c0)
    total, prev = 0.0, bos
    for t in tokens:
        logits, _ = dec.step(prev)
        total += log_softmax(logits)[t]
        prev = t
    return total


def ref_greedy(parts, memory, length, h0, c0, bos, eos, max_len):
    dec = RefDecoder(parts, memory, length, h0, c0)
    out, score, prev, alphas = [], 0.0, bos, []
    for _ in range(max_len):
        logits, alpha = dec.step(prev)
        tok = int(np.argmax(logits))
        score += log_softmax(logits)[tok]
        out.append(tok)
        alphas.append(alpha)
        prev = tok
        if tok == eos:
            break
    return out, score, alphas


# -- models ------------------------------------------------------------------------------------

def make_parts(cell="lstm", attn="general", input_feed=True, V=7, E=5, H=6, L=2, Hm=None, Ho=4, A=3,
               dtype=np.float64, seed=0, bias=True, scale=0.8):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    attention = None
    if attn is not None:
        Hm = H if (attn == "dot" or Hm is None) else Hm
        attention = Attention(H, Hm, attn_type=attn, attention_size=A if attn == "additive" else None, output_size=Ho,
                              dtype=dtype, seed=seed)
        for w in attention.weights_for_core()[1:]:
            if w is not None:  # larger weights than the default init: peaky, varied attention
                w[...] = rng.normal(0, scale, w.shape)
    else:
        input_feed = False
    F = Ho if input_feed else 0
    O = Ho if attn is not None else H

    def r(*shape):
        return rng.normal(0, scale, shape).astype(dtype)

    return DecoderParts(
        cell=cell, num_layers=L, hidden_size=H, input_feed=input_feed, embedding=r(V, E),
        w_ih=[r(G * H, (E + F) if l == 0 else H) for l in range(L)], w_hh=[r(G * H, H) for _ in range(L)],
        b_ih=[r(G * H) if bias else None for _ in range(L)], b_hh=[r(G * H) if bias else None for _ in range(L)],
        attention=attention, out_w=r(V, O) * 2, out_b=r(V) if bias else None)


def make_sources(parts, S=5, B=3, lengths=(5, 2, 4), seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    Hm = parts.hidden_size if parts.attention is None else parts.attention.memory_size
    memory = rng.normal(0, 1, (S, B, Hm)).astype(dtype)
    lengths = np.array(lengths[:B], dtype=np.int64)
    for b in range(B):
        memory[lengths[b]:, b] = 1e3  # padding: must never be read
    L, H = parts.num_layers, parts.hidden_size
    h0 = rng.normal(0, 0.5, (L, B, H)).astype(dtype)
    c0 = rng.normal(0, 0.5, (L, B, H)).astype(dtype) if parts.cell == "lstm" else None
    return memory, lengths, h0, c0


def state_of(h0, c0):
    return h0 if c0 is None else (h0, c0)


CONFIGS = [("lstm", "general", True), ("lstm", "dot", False), ("gru", "additive", True), ("gru", "general", False),
           ("rnn_tanh", "additive", False), ("rnn_relu", "dot", True), ("lstm", None, False), ("gru", None, False)]


def ids(config):
    return "-".join(str(c) for c in config)


# -- parity -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=ids)
def test_forced_logits_equal_reference(config):
    cell, attn, feed = config
    parts = make_parts(cell, attn, feed, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    if attn is None:
        lengths = None
    rng = np.random.default_rng(3)
    T, B = 6, memory.shape[1]
    tokens = rng.integers(0, 7, (T, B)).astype(np.int64)
    core, _ = sampling._decoder_core(parts, 2, "test")
    logits, alpha = core.forced(memory, lengths, h0, c0, tokens, True)
    assert logits.shape == (T, B, 7)
    for b in range(B):
        n = memory.shape[0] if lengths is None else lengths[b]
        ref = RefDecoder(parts, memory[:, b], n, h0[:, b], None if c0 is None else c0[:, b])
        for t in range(T):
            want, want_alpha = ref.step(tokens[t, b])
            np.testing.assert_allclose(logits[t, b], want, rtol=0, atol=1e-12)
            if attn is not None:
                np.testing.assert_allclose(alpha[t, b, :n], want_alpha, rtol=0, atol=1e-12)
                assert np.all(alpha[t, b, n:] == 0)
    if attn is None:
        assert alpha is None


@pytest.mark.parametrize("config", CONFIGS, ids=ids)
def test_greedy_equals_reference(config):
    cell, attn, feed = config
    parts = make_parts(cell, attn, feed, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    if attn is None:
        memory, lengths = None, None
    eos, max_len = 2, 8
    out = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), bos=0, eos=eos, max_len=max_len,
                         return_attention=True, threads=2)
    assert len(out) == 3
    for b, hyps in enumerate(out):
        assert len(hyps) == 1
        mem = None if memory is None else memory[:, b]
        n = 5 if lengths is None else lengths[b]
        toks, score, alphas = ref_greedy(parts, mem, n, h0[:, b], None if c0 is None else c0[:, b], 0, eos, max_len)
        hyp = hyps[0]
        assert hyp.tokens.tolist() == toks
        assert hyp.finished == (toks[-1] == eos)
        assert abs(hyp.score - score) < 1e-10
        assert hyp.normalized == hyp.score
        if attn is None:
            assert hyp.attention is None
        else:
            assert hyp.attention.shape == (len(toks), n)
            np.testing.assert_allclose(hyp.attention, np.array(alphas), atol=1e-12)


def test_greedy_stops_at_eos_or_max_len_per_source():
    parts = make_parts("lstm", "general", True, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    first = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), bos=0, eos=0, max_len=1)
    for hyps in first:  # one token each, whatever it is
        assert len(hyps[0].tokens) == 1
    limits = np.array([1, 3, 5])
    out = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), bos=0, eos=6, max_len=limits)
    full = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), bos=0, eos=6, max_len=5)
    for b in range(3):
        toks = out[b][0].tokens.tolist()
        assert len(toks) <= limits[b]
        assert toks == full[b][0].tokens.tolist()[:len(toks)]
        assert out[b][0].finished == (toks[-1] == 6)


def test_batch_equals_sources_alone_and_padding_is_never_read():
    parts = make_parts("gru", "additive", True, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    kw = dict(bos=1, eos=2, max_len=6, method="beam", beam_width=3, n_best=2, length_penalty=0.5,
              return_attention=True)
    together = seq2seq_decode(parts, memory, lengths, h0, **kw)
    for b in range(3):
        n = lengths[b]
        alone = seq2seq_decode(parts, memory[:n, b:b + 1].copy(), lengths[b:b + 1], h0[:, b:b + 1].copy(), **kw)[0]
        assert len(alone) == len(together[b])
        for x, y in zip(alone, together[b]):
            assert x.tokens.tolist() == y.tokens.tolist()
            assert abs(x.score - y.score) < 1e-12
            np.testing.assert_allclose(x.attention, y.attention, atol=1e-14)


# -- beam search ----------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS[:4] + CONFIGS[6:7], ids=ids)
def test_beam_width_1_equals_greedy(config):
    cell, attn, feed = config
    parts = make_parts(cell, attn, feed, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    kw = dict(bos=0, eos=3, max_len=7, return_attention=True)
    greedy = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), **kw)
    beam = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), method="beam", beam_width=1, **kw)
    for g, b in zip(greedy, beam):
        assert len(b) == 1
        assert g[0].tokens.tolist() == b[0].tokens.tolist()
        assert g[0].finished == b[0].finished
        assert abs(g[0].score - b[0].score) < 1e-12
        if attn is not None:
            np.testing.assert_allclose(g[0].attention, b[0].attention, atol=1e-15)


def brute_force(parts, memory, length, h0, c0, bos, eos, V, max_len, alpha):
    """Every finished sequence (ending with eos, length <= max_len), best normalized first."""
    scored = []
    for n in range(1, max_len + 1):
        for body in itertools.product([v for v in range(V) if v != eos], repeat=n - 1):
            toks = list(body) + [eos]
            s = ref_score(parts, memory, length, h0, c0, bos, toks)
            scored.append((s / len(toks) ** alpha, s, toks))
    scored.sort(key=lambda x: -x[0])
    return scored


@pytest.mark.parametrize("alpha", [0.0, 0.8])
@pytest.mark.parametrize("cell,attn", [("lstm", "general"), ("gru", "additive"), ("rnn_tanh", None)])
def test_exhaustive_beam_finds_the_brute_force_best(cell, attn, alpha):
    V, max_len = 4, 3
    parts = make_parts(cell, attn, True, V=V, Hm=5, scale=1.2, seed=5)
    memory, lengths, h0, c0 = make_sources(parts, B=2, lengths=(3, 5))
    if attn is None:
        memory, lengths = None, None
    k = V ** max_len
    # alpha > 0: the stopping rule is exact only for alpha = 0, so collect every finished
    # hypothesis (n_best above their count) and compare the whole ranking.
    n_best = 1 if alpha == 0 else 100
    out = seq2seq_decode(parts, memory, lengths, state_of(h0, c0), bos=0, eos=1, max_len=max_len, method="beam",
                         beam_width=k, n_best=n_best, length_penalty=alpha)
    for b in range(2):
        mem = None if memory is None else memory[:, b]
        n = 5 if lengths is None else lengths[b]
        ref = brute_force(parts, mem, n, h0[:, b], None if c0 is None else c0[:, b], 0, 1, V, max_len, alpha)
        done = [h for h in out[b] if h.finished]  # with n_best > finished the live beams at max_len come too
        best = done[0]
        assert out[b][0].finished or alpha > 0
        assert best.tokens.tolist() == ref[0][2]
        assert abs(best.score - ref[0][1]) < 1e-10
        if alpha > 0:
            assert len(done) == len(ref)  # every finished sequence, none pruned
            assert [h.tokens.tolist() for h in done] == [r[2] for r in ref]
            assert len(out[b]) == len(ref) + (V - 1) ** max_len


def test_n_best_sorted_and_scores_are_the_model_log_probabilities():
    parts = make_parts("lstm", "dot", True)
    memory, lengths, h0, c0 = make_sources(parts)
    for alpha in (0.0, 1.0):
        out = seq2seq_decode(parts, memory, lengths, (h0, c0), bos=0, eos=4, max_len=6, method="beam",
                             beam_width=4, n_best=3, length_penalty=alpha)
        for b, hyps in enumerate(out):
            assert 1 <= len(hyps) <= 3
            norms = [h.normalized for h in hyps]
            assert norms == sorted(norms, reverse=True)
            assert len({tuple(h.tokens.tolist()) for h in hyps}) == len(hyps)
            for h in hyps:
                want = ref_score(parts, memory[:, b], lengths[b], h0[:, b], c0[:, b], 0, h.tokens.tolist())
                assert abs(h.score - want) < 1e-10
                assert abs(h.normalized - h.score / len(h.tokens) ** alpha) < 1e-12
                assert h.finished == (h.tokens[-1] == 4)
                assert 4 not in h.tokens[:-1].tolist()


def test_beam_is_no_worse_than_greedy_and_threads_agree():
    parts = make_parts("lstm", "general", True, V=11, Hm=5, seed=7)
    memory, lengths, h0, c0 = make_sources(parts, seed=8)
    kw = dict(bos=0, eos=1, max_len=6)
    greedy = seq2seq_decode(parts, memory, lengths, (h0, c0), **kw)
    beams = [seq2seq_decode(parts, memory, lengths, (h0, c0), method="beam", beam_width=5, n_best=2, threads=t,
                            return_attention=True, **kw) for t in (1, 2, 3)]
    for b in range(3):
        if greedy[b][0].finished:
            assert beams[0][b][0].score >= greedy[b][0].score - 1e-12
        for other in beams[1:]:
            assert [h.tokens.tolist() for h in other[b]] == [h.tokens.tolist() for h in beams[0][b]]
            assert [h.score for h in other[b]] == [h.score for h in beams[0][b]]


def test_float32_agrees_with_float64():
    p64 = make_parts("gru", "general", True, Hm=5, seed=2)
    p32 = make_parts("gru", "general", True, Hm=5, seed=2, dtype=np.float32)
    memory, lengths, h0, _ = make_sources(p64)
    core64, _ = sampling._decoder_core(p64, 1, "t")
    core32, _ = sampling._decoder_core(p32, 1, "t")
    tokens = np.random.default_rng(0).integers(0, 7, (5, 3)).astype(np.int64)
    l64, a64 = core64.forced(memory, lengths, h0, None, tokens, True)
    l32, a32 = core32.forced(memory.astype(np.float32), lengths, h0.astype(np.float32), None, tokens, True)
    assert l32.dtype == np.float32
    np.testing.assert_allclose(l32, l64, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(a32, a64, atol=2e-5)
    out = seq2seq_decode(p32, memory, lengths, h0, bos=0, eos=1, max_len=4, method="beam", beam_width=3)
    assert len(out) == 3 and all(len(h) == 1 for h in out)


# -- sampling ----------------------------------------------------------------------------------------

def test_sampling_is_seeded_and_scores_are_log_probabilities():
    parts = make_parts("lstm", "additive", False, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    kw = dict(bos=0, eos=2, max_len=8, method="sample", n_best=4, temperature=1.3, top_p=0.9)
    a = seq2seq_decode(parts, memory, lengths, (h0, c0), seed=11, threads=1, **kw)
    b = seq2seq_decode(parts, memory, lengths, (h0, c0), seed=11, threads=3, **kw)
    c = seq2seq_decode(parts, memory, lengths, (h0, c0), seed=12, **kw)
    toks = lambda out: [[h.tokens.tolist() for h in hyps] for hyps in out]  # noqa: E731
    assert toks(a) == toks(b)
    assert toks(a) != toks(c)
    for s, hyps in enumerate(a):
        assert len(hyps) == 4
        assert [h.normalized for h in hyps] == sorted((h.normalized for h in hyps), reverse=True)
        for h in hyps:
            want = ref_score(parts, memory[:, s], lengths[s], h0[:, s], c0[:, s], 0, h.tokens.tolist())
            assert abs(h.score - want) < 1e-10
    # top_k = 1 is greedy
    g = seq2seq_decode(parts, memory, lengths, (h0, c0), bos=0, eos=2, max_len=8)
    s1 = seq2seq_decode(parts, memory, lengths, (h0, c0), bos=0, eos=2, max_len=8, method="sample", top_k=1, seed=3)
    assert toks(g) == toks(s1)


# -- attention weights -------------------------------------------------------------------------------

def test_attention_weights_sum_to_one_and_are_zero_past_the_length():
    parts = make_parts("lstm", "general", True, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    core, _ = sampling._decoder_core(parts, 2, "t")
    out = core.decode(memory, lengths, h0, c0, 0, 3, 6, "beam", 3, 3, 0.0, 1.0, 0, 1.0, None, True)
    for b, hyps in enumerate(out):
        for tokens, score, normalized, finished, att in hyps:
            assert att.shape == (len(tokens), memory.shape[0])
            np.testing.assert_allclose(att.sum(axis=1), 1.0, atol=1e-12)
            assert np.all(att[:, lengths[b]:] == 0)
            assert np.all(att >= 0)
    front = seq2seq_decode(parts, memory, lengths, (h0, c0), bos=0, eos=3, max_len=6, method="beam", beam_width=3,
                           n_best=3, return_attention=True)
    for b, hyps in enumerate(front):
        for h, raw in zip(hyps, out[b]):
            assert h.attention.shape == (len(h.tokens), lengths[b])
            np.testing.assert_array_equal(h.attention, raw[4][:, :lengths[b]])
    # the attention of a returned hypothesis is what teacher forcing its tokens gives
    for b in range(3):
        toks = front[b][0].tokens
        forced = np.concatenate([[0], toks[:-1]]).astype(np.int64)[:, None]
        _, alpha = core.forced(memory[:, b:b + 1].copy(), lengths[b:b + 1], h0[:, b:b + 1].copy(),
                               c0[:, b:b + 1].copy(), forced, True)
        np.testing.assert_allclose(front[b][0].attention, alpha[:, 0, :lengths[b]], atol=1e-12)


# -- bad input -------------------------------------------------------------------------------------

def test_bad_input_is_a_clear_error():
    parts = make_parts("lstm", "general", True, Hm=5)
    memory, lengths, h0, c0 = make_sources(parts)
    st = (h0, c0)

    def call(**kw):
        args = dict(parts=parts, memory=memory, memory_lengths=lengths, state=st)
        args.update({k: kw.pop(k) for k in list(kw) if k in args})
        opts = dict(bos=0, eos=1, max_len=5)
        opts.update(kw)
        return seq2seq_decode(args["parts"], args["memory"], args["memory_lengths"], args["state"], **opts)

    with pytest.raises(ValueError, match="beam_width"):
        call(method="beam", beam_width=0)
    with pytest.raises(MemoryError, match="decoding 30000000000000 rows"):
        call(method="beam", beam_width=10**13)
    with pytest.raises(ValueError, match="bos = 7 is outside"):
        call(bos=7)
    with pytest.raises(ValueError, match="eos"):
        call(eos=-1)
    with pytest.raises(ValueError, match=r"memory_lengths\[1\] = 0 is outside \[1, S\]"):
        call(memory_lengths=np.array([5, 0, 4]))
    with pytest.raises(ValueError, match=r"memory_lengths\[0\] = 6 is outside"):
        call(memory_lengths=[6, 1, 1])
    with pytest.raises(ValueError, match="memory_lengths must have shape"):
        call(memory_lengths=[1, 1])
    with pytest.raises(ValueError, match="max_len"):
        call(max_len=0)
    with pytest.raises(ValueError, match="max_len"):
        call(max_len=[1, 0, 2])
    with pytest.raises(ValueError, match="n_best"):
        call(n_best=2)
    with pytest.raises(ValueError, match="n_best"):
        call(method="beam", n_best=0)
    with pytest.raises(ValueError, match="method"):
        call(method="viterbi")
    with pytest.raises(ValueError, match="memory must have shape"):
        call(memory=memory[:, :, :4].copy())
    with pytest.raises(ValueError, match="h0 must have shape"):
        call(state=(h0[:, :2], c0))
    with pytest.raises(ValueError, match="length_penalty"):
        call(length_penalty=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        call(method="sample", top_p=0.0)
    with pytest.raises(TypeError, match="parts must be"):
        call(parts="model")
    with pytest.raises(TypeError, match="memory must be an array"):
        call(memory=None)
    no_attn = make_parts("lstm", None)
    no_attn.input_feed = True
    with pytest.raises(ValueError, match="input_feed needs parts.attention"):
        seq2seq_decode(no_attn, None, None, (h0, c0), bos=0, eos=1, max_len=3)
    core, _ = sampling._decoder_core(parts, 1, "t")
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        core.decode(memory, lengths, h0, c0, 0, 1, 3, "beam", 0, 1, 0.0, 1.0, 0, 1.0, None, False)
    with pytest.raises(ValueError, match=r"tokens\[0, 1\] = 9 is outside the vocabulary"):
        core.forced(memory, lengths, h0, c0, np.array([[0, 9, 0]], dtype=np.int64))
    with pytest.raises(ValueError, match=r"memory_lengths\[2\] = 9 is outside \[1, S\]"):
        core.decode(memory, np.array([1, 1, 9]), h0, c0, 0, 1, 3)
    with pytest.raises(TypeError, match="memory must have dtype float64"):
        core.decode(memory.astype(np.float32), lengths, h0, c0, 0, 1, 3)
    bad = make_parts("lstm", "general", True, Hm=5)
    bad.w_ih[0] = bad.w_ih[0][:, :5].copy()  # forgot the input-feeding columns
    with pytest.raises(ValueError, match=r"layers\[0\].w_ih must have shape \(24, 9\)"):
        seq2seq_decode(bad, memory, lengths, (h0, c0), bos=0, eos=1, max_len=3)


def test_non_finite_logits_raise_floating_point_error():
    parts = make_parts("gru", "dot", False)
    memory, lengths, h0, _ = make_sources(parts)
    memory[0, 1] = np.nan
    with pytest.raises(FloatingPointError, match="source 1 at step 0"):
        seq2seq_decode(parts, memory, lengths, h0, bos=0, eos=1, max_len=4, method="beam", beam_width=2)


LONG_DECODE = """
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import numpy as np
from test_seq2seq_decode import make_parts, make_sources
from rnncore.sampling import seq2seq_decode
parts = make_parts("lstm", "general", True, Hm=5)
parts.out_b[1] = -np.inf  # eos is never chosen: only Ctrl-C ends the loop
memory, lengths, h0, c0 = make_sources(parts)
print("ready", flush=True)
seq2seq_decode(parts, memory, lengths, (h0, c0), bos=0, eos=1, max_len=10**9, method={method!r}, beam_width=2,
               threads=1)
print("finished", flush=True)
"""


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_ctrl_c_interrupts_decoding(method):
    import os
    import signal
    import subprocess
    import sys
    import time

    here = os.path.dirname(os.path.abspath(__file__))
    code = LONG_DECODE.format(root=os.path.dirname(here), tests=here, method=method)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        sent = time.time()
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{method} decoding was still running 10 s after SIGINT")
        latency = time.time() - sent
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert latency < 5, latency
    assert "finished" not in out
    assert p.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_sources_that_finish_early_leave_the_others_unchanged(method):
    # Finished sources give their rows up (the products run over the live ones only): sources
    # ending at different steps, in any order, decode as they do alone.
    parts = make_parts("lstm", "additive", True, Hm=5, V=9, seed=4)
    memory, lengths, h0, c0 = make_sources(parts, S=6, B=5, lengths=(6, 2, 5, 1, 3), seed=6)
    limits = np.array([2, 6, 1, 4, 6])
    kw = dict(bos=0, eos=3, method=method, beam_width=3, n_best=1 if method == "greedy" else 2,
              return_attention=True, threads=2)
    together = seq2seq_decode(parts, memory, lengths, (h0, c0), max_len=limits, **kw)
    for b in range(5):
        n = lengths[b]
        alone = seq2seq_decode(parts, memory[:n, b:b + 1].copy(), lengths[b:b + 1], (h0[:, b:b + 1].copy(),
                               c0[:, b:b + 1].copy()), max_len=int(limits[b]), **kw)[0]
        assert [h.tokens.tolist() for h in alone] == [h.tokens.tolist() for h in together[b]]
        for x, y in zip(alone, together[b]):
            assert abs(x.score - y.score) < 1e-12
            np.testing.assert_allclose(x.attention, y.attention, atol=1e-14)
            assert len(x.tokens) <= limits[b]
