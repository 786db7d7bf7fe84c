"""`rnncore train-seq2seq` and `rnncore translate` end to end on a tiny TSV (seconds)."""
import json
import os

import numpy as np
import pytest

from rnncore.cli import main

WORDS = "a b c d e f g h".split()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2s")
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(80):
        src = [WORDS[i] for i in rng.integers(0, len(WORDS), size=rng.integers(2, 6))]
        lines.append(" ".join(src) + "\t" + " ".join(reversed(src)))
    tsv = root / "pairs.tsv"
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "run"
    args = [str(tsv), "--max-steps", "6", "--hidden", "16", "--embed", "8", "--out", str(out), "--no-progress",
            "--min-freq", "1", "--beam", "2", "--batch-size", "8", "--threads", "1", "--checkpoint-every", "3"]
    return root, out, args


def test_train_writes_checkpoints_and_results(run, capsys):
    root, out, args = run
    assert main(["train-seq2seq"] + args) == 0
    text = capsys.readouterr().out
    assert "BLEU greedy" in text and "attention general (input feeding)" in text
    results = json.loads((out / "results.json").read_text())
    for key in ("bleu_greedy", "bleu_beam2", "test_ppl", "test_accuracy", "train_tokens_per_s"):
        assert key in results
    assert os.path.exists(out / "last.safetensors")


def test_resume_continues_the_run(run, capsys):
    root, out, args = run
    more = [a if a != "6" else "9" for a in args]
    assert main(["train-seq2seq"] + more + ["--resume", str(out / "last.safetensors")]) == 0
    assert "9 steps" in capsys.readouterr().out


def test_translate_prints_one_line_per_sentence_and_a_heat_map(run, capsys, tmp_path):
    root, out, _ = run
    ckpt = str(out / "last.safetensors")
    png = tmp_path / "attn.png"
    assert main(["translate", ckpt, "a b c", "d e", "--beam", "3", "--max-len", "6", "--attention-png", str(png)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["translate", ckpt, "a b", "--n-best", "2", "--beam", "3", "--max-len", "5"]) == 0
    assert capsys.readouterr().out.startswith("# a b")


def test_translate_refuses_another_kind_of_checkpoint(tmp_path, capsys):
    import rnncore
    from rnncore.nn import LanguageModel

    path = tmp_path / "lm.safetensors"
    rnncore.save(str(path), LanguageModel(10, 4, 4))
    assert main(["translate", str(path), "a b"]) == 1
    assert "not a Seq2Seq" in capsys.readouterr().err


def test_bad_beam_width_is_a_usage_error(run, capsys):
    root, out, _ = run
    with pytest.raises(SystemExit):
        main(["translate", str(out / "last.safetensors"), "a", "--beam", "0"])
