"""rnncore.metrics: BLEU (sacrebleu's own numbers), token accuracy, perplexity."""
import math
import sys

import numpy as np
import pytest

from rnncore import metrics

sacrebleu = pytest.importorskip("sacrebleu", reason="pip install sacrebleu")

HYPS = ["The cat sat on the mat.", "It is raining, isn't it?", "A dog barks loudly at night"]
REFS = ["The cat sat on a mat.", "It rains, doesn't it?", "The dog barks loudly at night."]


def test_bleu_is_sacrebleus_corpus_bleu():
    assert metrics.bleu(HYPS, REFS) == sacrebleu.corpus_bleu(HYPS, [REFS]).score
    expected = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a").score
    assert metrics.bleu(HYPS, REFS) == expected and 0 < expected < 100
    # by hand: the same number from sacrebleu's BLEU object, tokenize 13a
    from sacrebleu.metrics import BLEU
    assert metrics.bleu(HYPS, REFS) == BLEU(tokenize="13a").corpus_score(HYPS, [REFS]).score
    # two references per hypothesis = two reference streams
    second = ["A cat sat on the mat.", "It is raining, is it not?", "A dog barks at night."]
    assert metrics.bleu(HYPS, [[a, b] for a, b in zip(REFS, second)]) == \
        sacrebleu.corpus_bleu(HYPS, [REFS, second]).score
    assert metrics.bleu([h.upper() for h in HYPS], REFS, lowercase=True) == \
        sacrebleu.corpus_bleu([h.upper() for h in HYPS], [REFS], lowercase=True).score
    assert metrics.bleu(HYPS, REFS, tokenize="none") == sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none").score


def test_bleu_of_identical_text_is_100_and_of_nothing_in_common_0():
    assert metrics.bleu(REFS, REFS) == pytest.approx(100.0, abs=1e-9)
    assert metrics.bleu(["x y z w"] * 3, REFS) == 0.0
    # 13a tokenisation: "mat ." and "mat." are the same tokens
    assert metrics.bleu(["The cat sat on a mat ."], ["The cat sat on a mat."]) == pytest.approx(100.0, abs=1e-9)


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        metrics.bleu(HYPS, REFS[:2])
    with pytest.raises(ValueError, match="hypotheses is empty"):
        metrics.bleu([], [])
    with pytest.raises(TypeError, match=r"hypotheses\[1\] must be a str"):
        metrics.bleu(["a", 1], ["a", "b"])
    with pytest.raises(TypeError, match="hypotheses must be a list of str"):
        metrics.bleu("a b", ["a b"])
    with pytest.raises(TypeError, match="mixes str and lists"):
        metrics.bleu(["a", "b"], [["a"], "b"])
    with pytest.raises(ValueError, match="same number of references"):
        metrics.bleu(["a", "b"], [["a"], ["b", "c"]])
    with pytest.raises(ValueError, match="tokenize must be one of"):
        metrics.bleu(["a"], ["a"], tokenize="13b")


def test_bleu_without_sacrebleu_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(ImportError, match="pip install sacrebleu"):
        metrics.bleu(["a"], ["a"])


def test_token_accuracy():
    targets = np.array([[1, 2], [3, -100], [-100, -100]])
    preds = np.array([[1, 0], [3, 7], [5, 5]])
    assert metrics.token_accuracy(preds, targets) == 2 / 3
    logits = np.zeros((3, 2, 8))
    logits[np.arange(3)[:, None], np.arange(2)[None, :], preds] = 1.0
    assert metrics.token_accuracy(logits, targets) == 2 / 3
    assert metrics.token_accuracy(logits.astype(np.float32), targets) == 2 / 3
    assert metrics.token_accuracy([[5, 2]], [[0, 2]], ignore_index=0) == 1.0
    with pytest.raises(ValueError, match="no token to count"):
        metrics.token_accuracy([[-100]], [[-100]])
    with pytest.raises(ValueError, match=r"shape of targets \(3, 2\)"):
        metrics.token_accuracy(preds[:2], targets)
    with pytest.raises(TypeError, match="must be integer ids"):
        metrics.token_accuracy(preds.astype(float), targets)
    with pytest.raises(TypeError, match="targets must hold integer ids"):
        metrics.token_accuracy(preds, targets.astype(float))


def test_perplexity():
    assert metrics.perplexity(0.0) == 1.0
    assert metrics.perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert metrics.perplexity(10 * math.log(7.0), 10) == pytest.approx(7.0)
    assert metrics.perplexity(1e6) == math.inf
    for bad, err in ((-1.0, ValueError), (math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(err, match="nll must be"):
            metrics.perplexity(bad)
    with pytest.raises(ValueError, match="num_tokens must be positive"):
        metrics.perplexity(1.0, 0)
