"""examples/elmo.py --quick on the movie-review snippets (skipped when they are not installed)."""
import importlib.util
import os

import numpy as np
import pytest

import rnncore
from rnncore import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example():
    spec = importlib.util.spec_from_file_location("elmo_example", os.path.join(HERE, "..", "examples", "elmo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


elmo = load_example()


def installed():
    try:
        datasets.movie_review_snippets()
        return True
    except datasets.MissingCorpusError:
        return False


@pytest.mark.skipif(not installed(), reason="corpus: rnncore datasets install (movie-review snippets)")
def test_quick_run_pretrains_and_classifies(tmp_path):
    figure = str(tmp_path / "elmo.png")
    saved = str(tmp_path / "bilm.safetensors")
    args = elmo.parse_args(["--quick", "--figure", figure, "--save-bilm", saved])
    assert args.seeds == 1 and args.lm_epochs <= 2
    lines = []
    results = elmo.run(args, log=lines.append)
    V = results["vocab_size"]
    ppl, random_ppl = results["ppl"]["pretrained"], results["ppl"]["random"]
    # a random biLM is about uniform over the vocabulary; two epochs on 2,500 snippets get far below
    assert all(0.5 * V < p < 2 * V for p in random_ppl), lines
    assert all(p < 0.1 * r for p, r in zip(ppl, random_ppl)), lines
    assert results["ppl"]["history"][-1][0] < results["ppl"]["history"][0][0], lines  # it is still learning
    acc = results["accuracy"]
    for variant in elmo.VARIANTS:
        assert 0.0 <= acc[variant] <= 1.0
        mix = results["mix"][variant]
        assert mix.shape == (3,) and abs(mix.sum() - 1) < 1e-9 and not np.allclose(mix, 1 / 3), lines  # learned
    # fine-tuning trains the whole network: above the majority class even in this short run
    assert max(acc[v] for v in elmo.VARIANTS if v[1]) > results["chance"] + 0.03, lines
    if importlib.util.find_spec("sklearn") is not None:
        assert acc[("bow", "logreg")] > 0.65, lines
    table = results["table"]
    assert table.count("| ELMo, biLM") == 4 and "perplexity" in table
    # the saved biLM is the pretrained one (what --bilm loads instead of pretraining)
    splits = datasets.movie_reviews()
    splits = {name: {k: v[:n] for k, v in s.items()} for (name, s), n in zip(splits.items(), (args.quick_train, 400, 400))}
    _, ids = elmo.encode(splits, args.min_count)
    again = elmo.perplexity(rnncore.load(saved).build().eval(), ids["valid"], 256)
    assert again == pytest.approx(ppl, rel=1e-5)
    if importlib.util.find_spec("matplotlib") is not None:
        assert results["figure"] == figure and os.path.getsize(figure) > 10000


def test_example_bad_arguments():
    for bad in (["--epochs", "0"], ["--lm-epochs", "0"], ["--seeds", "0"], ["--embed", "-1"], ["--lr", "0"],
                ["--dropout", "1"], ["--lm-dropout", "-0.1"], ["--seed", "-2"]):
        with pytest.raises(SystemExit):
            elmo.parse_args(bad)
