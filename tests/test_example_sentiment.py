"""examples/sentiment.py --quick on the movie-review snippets (skipped when they are not installed),
and the loader's split and bad input."""
import importlib.util
import os

import numpy as np
import pytest

from rnncore import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example():
    spec = importlib.util.spec_from_file_location("sentiment_example",
                                                  os.path.join(HERE, "..", "examples", "sentiment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sentiment = load_example()


def installed():
    try:
        datasets.movie_review_snippets()
        return True
    except datasets.MissingCorpusError:
        return False


needs_reviews = pytest.mark.skipif(not installed(), reason="corpus: rnncore datasets install (movie-review snippets)")


@needs_reviews
def test_split_is_fixed_and_disjoint():
    texts, scores = datasets.movie_review_snippets()
    assert len(texts) == datasets.SENTIMENT_ROWS == 10605 and scores.min() >= -4 and scores.max() <= 4
    a, b = datasets.movie_reviews(), datasets.movie_reviews()
    sizes = {name: len(s["text"]) for name, s in a.items()}
    assert sizes == {"train": 8056, "valid": 1007, "test": 1007}  # 10,070 distinct with |score| >= 0.5
    for name in a:
        assert a[name]["text"] == b[name]["text"] and np.array_equal(a[name]["label"], b[name]["label"])
        s = a[name]
        assert s["label"].dtype == np.int64 and np.array_equal(s["label"], (s["score"] > 0).astype(np.int64))
        assert np.all(np.abs(s["score"]) >= 0.5) and 0.45 < s["label"].mean() < 0.55
    seen = [set(a[name]["text"]) for name in a]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    other = datasets.movie_reviews(seed=1)
    assert other["test"]["text"] != a["test"]["text"]
    strict = datasets.movie_reviews(threshold=2.0)
    assert sum(len(s["text"]) for s in strict.values()) == len({t for t, v in zip(texts, scores) if abs(v) >= 2.0})


@needs_reviews
def test_quick_run_learns_sentiment():
    args = sentiment.parse_args(["--quick"])
    assert args.seeds == 1 and args.epochs <= 4
    lines = []
    results = sentiment.run(args, log=lines.append)
    acc, chance = results["accuracy"], results["chance"]
    assert chance < 0.55 and results["sizes"]["test"] == 500
    for direction in ("uni", "bi"):
        for pooling in sentiment.POOLINGS:
            assert acc[(direction, pooling)] > chance + 0.1, lines  # well above the majority class (~52%)
    assert max(acc[("bi", p)] for p in sentiment.POOLINGS) >= 0.7, lines
    if importlib.util.find_spec("sklearn") is not None:
        assert acc[("bow", "logreg")] > 0.68, lines
    else:
        assert any("scikit-learn not installed" in line for line in lines)


def test_words():
    assert sentiment.words("The Rock's ''Conan'', isn\u2019t it?") == "the rock's ' ' conan ' ' , isn't it ?"


# ---- bad input and a missing corpus (no data needed) ------------------------------------------

def test_missing_snippets_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNCORE_DATA", str(tmp_path))
    assert datasets.data_dir() == str(tmp_path)
    with pytest.raises(datasets.MissingCorpusError, match="not installed") as e:
        datasets.movie_reviews()
    assert "rnncore datasets install" in str(e.value) and str(tmp_path) in str(e.value)
    (tmp_path / datasets.SENTIMENT_FILE).write_bytes(b"1\t2.0\tgood\r\n2\t-1.0\tbad")
    with pytest.raises(datasets.MissingCorpusError, match="sha256"):
        datasets.movie_reviews()


@pytest.mark.parametrize("kwargs,match", [
    ({"threshold": 0}, "threshold"), ({"threshold": 5}, "threshold"), ({"threshold": float("nan")}, "threshold"),
    ({"threshold": "1"}, "threshold"), ({"valid_fraction": 0}, "valid_fraction"), ({"test_fraction": 1.0}, "test_fraction"),
    ({"valid_fraction": 0.5, "test_fraction": 0.5}, "valid_fraction \\+ test_fraction must be < 1"),
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
])
def test_loader_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        datasets.movie_reviews(**kwargs)


def test_example_bad_arguments():
    for bad in (["--epochs", "0"], ["--seeds", "0"], ["--hidden", "-1"], ["--lr", "0"], ["--dropout", "1"],
                ["--seed", "-2"]):
        with pytest.raises(SystemExit):
            sentiment.parse_args(bad)


def test_bag_of_words_without_scikit_learn(monkeypatch):
    for name in ("sklearn", "sklearn.feature_extraction.text", "sklearn.linear_model"):
        monkeypatch.setitem(__import__("sys").modules, name, None)  # import raises ImportError
    splits = {name: {"text": ["good film", "bad film"], "label": np.array([1, 0])} for name in ("train", "valid", "test")}
    assert sentiment.bag_of_words(splits) is None
