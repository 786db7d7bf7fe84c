"""Generation: the C++ decoding loop against the model's own full-sequence forward."""
import itertools
import math

import numpy as np
import pytest

from rnncore import sampling
from rnncore.nn import LanguageModel

V, E, H = 13, 6, 9


def make_model(cell="lstm", layers=2, seed=0, dtype=np.float32, vocab=V, bias_scale=1.0):
    m = LanguageModel(vocab, E, H, num_layers=layers, cell=cell, seed=seed, dtype=dtype, threads=1)
    m.eval()
    # Sharper distributions than the default initialisation, so that argmax ties are absent.
    for _, p in m.named_parameters():
        p.data *= 3.0 * bias_scale
    return m


def full_logits(model, tokens):
    """Logits (len, V) of a single sequence from the ordinary forward."""
    logits, _ = model.forward(np.asarray(tokens, np.int64)[:, None])
    return logits[:, 0].astype(np.float64)


def softmax(z):
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_decoder_logits_equal_the_full_forward(cell):
    model = make_model(cell, layers=2, dtype=np.float64)
    tokens = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    dec = sampling.Decoder(model, 1, threads=1)
    dec.prime(tokens[None, :1])
    step = []
    for t in range(len(tokens)):
        dec.set_next_tokens(np.array([tokens[t]], np.int64))
        step.append(dec.step_logits()[0])
    np.testing.assert_allclose(np.array(step), full_logits(model, tokens), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_greedy_equals_argmax_of_the_teacher_forced_forward(cell):
    model = make_model(cell)
    prime = np.array([2, 7, 7, 1])
    out = sampling.generate(model, prime, 30, temperature=0, seed=0)
    assert out.shape == (30,)
    logits = full_logits(model, np.concatenate([prime, out[:-1]]))
    # The token after each prefix is the argmax of the forward's logits at that prefix's end.
    np.testing.assert_array_equal(out, logits[len(prime) - 1:].argmax(axis=1))


def test_batched_streams_equal_single_streams():
    model = make_model("lstm")
    primes = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    together = sampling.generate(model, primes, 20, temperature=0)
    for b in range(3):
        np.testing.assert_array_equal(together[b], sampling.generate(model, primes[b], 20, temperature=0))


def test_temperature_one_matches_the_softmax():
    # Many independent streams, one draw each: the counts follow the model's softmax.
    model = make_model("gru", layers=1, bias_scale=0.3)
    prime = np.array([5, 2])
    p = softmax(full_logits(model, prime)[-1])
    n = 40_000
    draws = sampling.generate(model, np.tile(prime, (n, 1)), 1, temperature=1.0, seed=123)[:, 0]
    counts = np.bincount(draws, minlength=V)
    expected = n * p
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    k = V - 1  # degrees of freedom; Wilson-Hilferty quantile for p = 1e-4 (z = 3.719)
    critical = k * (1 - 2 / (9 * k) + 3.719 * math.sqrt(2 / (9 * k))) ** 3
    assert chi2 < critical, (chi2, critical, counts, expected)


def test_temperature_sharpens_and_flattens():
    model = make_model("lstm", bias_scale=0.3)
    prime = np.array([1, 2])
    p = softmax(full_logits(model, prime)[-1])
    n = 20_000
    cold = sampling.generate(model, np.tile(prime, (n, 1)), 1, temperature=0.25, seed=1)[:, 0]
    hot = sampling.generate(model, np.tile(prime, (n, 1)), 1, temperature=4.0, seed=1)[:, 0]
    best = int(p.argmax())
    assert np.mean(cold == best) > p[best] > np.mean(hot == best)


def test_top_k_never_leaves_the_k_best():
    model = make_model("lstm", bias_scale=0.3)
    prime = np.array([3, 3, 4])
    logits = full_logits(model, prime)[-1]
    for k in (1, 3, 5):
        draws = sampling.generate(model, np.tile(prime, (3000, 1)), 1, top_k=k, seed=k)[:, 0]
        allowed = set(np.argsort(-logits, kind="stable")[:k].tolist())
        assert set(draws.tolist()) <= allowed
        if k > 1:
            assert len(set(draws.tolist())) > 1


def test_top_p_never_leaves_the_nucleus():
    model = make_model("gru", bias_scale=0.3)
    prime = np.array([6, 0])
    p = softmax(full_logits(model, prime)[-1])
    order = np.argsort(-p, kind="stable")
    for top_p in (0.3, 0.6, 0.9):
        cum = np.cumsum(p[order])
        size = int(np.searchsorted(cum, top_p - 1e-9) + 1)
        nucleus = set(order[:size].tolist())
        draws = sampling.generate(model, np.tile(prime, (3000, 1)), 1, top_p=top_p, seed=7)[:, 0]
        assert set(draws.tolist()) <= nucleus


def test_repetition_penalty_follows_the_ctrl_rule():
    # Greedy with a penalty: each token is the argmax of the forward's logits after the seen
    # tokens' scores were divided (positive) or multiplied (negative) by the penalty.
    model = make_model("lstm", bias_scale=0.5)
    prime = np.array([1, 2, 3])
    out = sampling.generate(model, prime, 20, temperature=0, repetition_penalty=1.8)
    logits = full_logits(model, np.concatenate([prime, out[:-1]]))[len(prime) - 1:]
    seen = set(prime.tolist())
    for row, token in zip(logits, out):
        z = row.copy()
        for t in seen:
            z[t] = z[t] / 1.8 if z[t] > 0 else z[t] * 1.8
        assert token == int(np.argmax(z))
        seen.add(int(token))
    assert len(set(out.tolist())) > len(set(sampling.generate(model, prime, 20, temperature=0).tolist()))


def test_same_seed_same_text_for_any_thread_count():
    model = make_model("lstm", layers=2)
    model_big = LanguageModel(40, 16, 48, num_layers=2, seed=1)  # wide enough for 2 threads to split
    for m in (model, model_big):
        a = sampling.generate(m, np.array([1, 2]), 50, seed=42, threads=1, top_p=0.9)
        b = sampling.generate(m, np.array([1, 2]), 50, seed=42, threads=2, top_p=0.9)
        c = sampling.generate(m, np.array([1, 2]), 50, seed=43, threads=2, top_p=0.9)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_stop_tokens_end_a_stream():
    model = make_model("lstm")
    free = sampling.generate(model, np.array([1]), 40, temperature=0)
    stop = int(free[5])
    first = int(np.argmax(free == stop))
    out = sampling.generate(model, np.array([1]), 40, temperature=0, stop_tokens=[stop])
    np.testing.assert_array_equal(out, free[:first + 1])
    both = sampling.generate(model, np.array([[1], [int(free[0])]]), 40, temperature=0, stop_tokens=[stop])
    assert both.shape[0] == 2 and both[0, first] == stop and np.all(both[0, first + 1:] == -1)


def test_stream_yields_the_same_tokens_as_generate():
    model = make_model("gru")
    want = sampling.generate(model, np.array([4, 4]), 25, seed=9, top_k=5)
    for chunk in (1, 7):
        got = list(sampling.stream(model, np.array([4, 4]), 25, seed=9, top_k=5, chunk=chunk))
        assert got == want.tolist()


def test_beam_width_one_equals_greedy():
    model = make_model("lstm")
    greedy = sampling.generate(model, np.array([2, 3]), 15, temperature=0)
    (tokens, score), = sampling.beam_search(model, np.array([2, 3]), beam_width=1, max_len=15)
    np.testing.assert_array_equal(tokens, greedy)
    logp = [np.log(softmax(row)) for row in full_logits(model, np.concatenate([[2, 3], greedy[:-1]]))[1:]]
    assert score == pytest.approx(sum(lp[t] for lp, t in zip(logp, greedy)), rel=1e-5)


def test_exhaustive_beam_finds_the_best_sequence():
    vocab, length = 3, 4
    model = LanguageModel(vocab, 4, 5, num_layers=1, seed=3, dtype=np.float64, threads=1)
    model.eval()
    for _, p in model.named_parameters():
        p.data *= 3
    prime = np.array([0])
    best, best_score = None, -np.inf
    for seq in itertools.product(range(vocab), repeat=length):
        logits = full_logits(model, np.concatenate([prime, seq[:-1]]))
        score = sum(np.log(softmax(row))[t] for row, t in zip(logits, seq))
        if score > best_score:
            best, best_score = seq, score
    hyps = sampling.beam_search(model, prime, beam_width=vocab ** length, max_len=length, n_best=3)
    np.testing.assert_array_equal(hyps[0][0], best)
    assert hyps[0][1] == pytest.approx(best_score, rel=1e-10)
    assert hyps[0][1] >= hyps[1][1] >= hyps[2][1]


def test_beam_search_stops_at_end_tokens_and_normalises_length():
    model = make_model("lstm")
    hyps = sampling.beam_search(model, np.array([1]), beam_width=4, max_len=12, n_best=4, stop_tokens=[0, 5],
                                alpha=0.7)
    assert 1 <= len(hyps) <= 4
    for tokens, score in hyps:
        assert len(tokens) <= 12 and score <= 0
        assert not np.isin(tokens[:-1], [0, 5]).any()


class _Tok:
    def __init__(self, n):
        self.vocab_size = n

    def encode(self, text):
        return np.array([ord(c) % self.vocab_size for c in text], np.int64)

    def decode(self, ids):
        return "".join(chr(97 + int(i)) for i in ids)


def test_text_in_text_out_with_a_tokenizer():
    model = make_model("lstm")
    text = sampling.generate(model, "abc", 10, temperature=0, tokenizer=_Tok(V))
    assert isinstance(text, str) and len(text) == 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(stop_tokens=[V]), "stop token"),
    (dict(seed=-3), "seed"),
])
def test_invalid_options_raise(kwargs, match):
    model = make_model("lstm")
    with pytest.raises(ValueError, match=match):
        sampling.generate(model, np.array([1, 2]), 5, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=2.5), r"top_k must be an int or None, got float 2.5"),
    (dict(seed=1.0), r"seed must be an int or None, got float 1.0"),
    (dict(temperature="hot"), r"temperature must be a finite number >= 0, got str 'hot'"),
    (dict(top_p=True), r"top_p must be a number in \(0, 1\], got bool True"),
])
def test_options_of_the_wrong_kind_are_type_errors(kwargs, match):
    model = make_model("lstm")
    with pytest.raises(TypeError, match=match):
        sampling.generate(model, np.array([1, 2]), 5, **kwargs)
    with pytest.raises(TypeError, match="max_new_tokens must be an int, got float 2.5"):
        sampling.generate(model, np.array([1, 2]), 2.5)


def test_bad_primes_and_mismatches_raise():
    model = make_model("lstm")
    with pytest.raises(ValueError, match=r"prime token 13 at position 1 is outside the vocabulary \[0, 13\)"):
        sampling.generate(model, np.array([1, 13]), 5)
    with pytest.raises(ValueError, match="prime token -1"):
        sampling.generate(model, np.array([[1, 2], [3, -1]]), 5)
    with pytest.raises(ValueError, match="at least one token"):
        sampling.generate(model, np.array([], np.int64), 5)
    with pytest.raises(TypeError, match="prime must be an integer array"):
        sampling.generate(model, np.array([1.5, 2.0]), 5)
    with pytest.raises(ValueError, match="tokenizer has 20 symbols but the model's vocabulary has 13"):
        sampling.generate(model, "abc", 5, tokenizer=_Tok(20))
    with pytest.raises(TypeError, match="needs tokenizer"):
        sampling.generate(model, "abc", 5)
    with pytest.raises(TypeError, match="LanguageModel"):
        sampling.generate(object(), np.array([1]), 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.generate(model, np.array([1]), -1)
    with pytest.raises(ValueError, match="n_best"):
        sampling.beam_search(model, np.array([1]), beam_width=2, max_len=3, n_best=3)
