"""Trainer: learning, exact resume from checkpoints, evaluation, early stopping, logs.

Tiny models on a short text, one thread (so runs are bit-for-bit reproducible).
"""
import io
import json
import math

import numpy as np
import pytest

import rnncore
from rnncore import optim
from rnncore.data import CharTokenizer
from rnncore.nn import LanguageModel
from rnncore.trainer import Trainer, generator_states, load_generator_states

TEXT = "the quick brown fox jumps over the lazy dog.\nsphinx of black quartz, judge my vow.\n" * 12


@pytest.fixture(autouse=True)
def _one_thread():
    rnncore.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus():
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    return tok, ids[:-150], ids[-150:]


def _trainer(tok, out=None, cell="lstm", dropout=0.2, schedule="step", **kw):
    model = LanguageModel(tok.vocab_size, 12, 24, num_layers=2, cell=cell, dropout=dropout, seed=3)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = {"step": lambda: optim.StepLR(opt, step_size=1, gamma=0.7),
             "plateau": lambda: optim.ReduceLROnPlateau(opt, factor=0.5, patience=0),
             "none": lambda: None}[schedule]()
    kw.setdefault("log_every", 1)
    return Trainer(model, opt, sched, clip_grad_norm=1.0, batch_size=4, seq_len=9, tokenizer=tok,
                   checkpoint_dir=out, stream=io.StringIO(), progress=False, **kw)


def _train_losses(path):
    return {r["step"]: r["train_loss"] for r in map(json.loads, open(path)) if r["event"] == "train"}


def test_tiny_lm_overfits_short_text():
    text = "hello world, hello rnn.\n" * 8
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    model = LanguageModel(tok.vocab_size, 16, 48, seed=0)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=2e-2), clip_grad_norm=5.0, batch_size=2,
                      seq_len=24, tokenizer=tok, stream=io.StringIO(), progress=False)
    result = trainer.fit(ids, ids, epochs=60)
    assert result["stop"] == "epochs"
    assert result["val_loss"] < 0.05, result
    assert result["val_bpc"] == pytest.approx(result["val_loss"] / math.log(2))
    # greedy decoding reproduces the text it memorised
    sample = trainer.sample(length=23, prime="hello world", temperature=0)
    assert sample.startswith("hello world, hello rnn.\nhello")


@pytest.mark.parametrize("cell,stop_at,schedule", [("lstm", 13, "step"), ("gru", 13, "plateau"),
                                                   ("lstm", 24, "step"), ("gru", 30, "step")])
def test_resume_continues_the_same_trajectory(tmp_path, corpus, cell, stop_at, schedule):
    """A run resumed from a step-N checkpoint gives the uninterrupted run's losses, step for step.
    stop_at=24 is the last window of the first epoch: the checkpoint is taken before the epoch's
    end (evaluation, scheduler, state reset), which then runs after the resume."""
    tok, train, valid = corpus
    full = _trainer(tok, tmp_path / "full", cell, schedule=schedule, eval_every=5)
    r_full = full.fit(train, valid, epochs=3)
    n = len(rnncore.data.StreamBatcher(train, 4, 9))
    assert n == 24 and r_full["steps"] == 3 * n

    first = _trainer(tok, tmp_path / "first", cell, schedule=schedule, eval_every=5)
    checkpoint = tmp_path / "first" / "last.safetensors"
    if stop_at % n == 0:
        end_epoch = first._end_epoch
        checkpoint = tmp_path / "edge.safetensors"

        def save_then_end(valid):
            if not checkpoint.exists():
                first.save_checkpoint(checkpoint)
            return end_epoch(valid)
        first._end_epoch = save_then_end
    first.fit(train, valid, epochs=3, max_steps=stop_at)
    resumed = _trainer(tok, tmp_path / "resumed", cell, schedule=schedule, eval_every=5)
    resumed.load_checkpoint(checkpoint)
    assert resumed.position == (n if stop_at % n == 0 else stop_at % n)
    assert resumed.step == stop_at and resumed.hidden is not None
    r_resumed = resumed.fit(train, valid, epochs=3)

    a, b = _train_losses(tmp_path / "full" / "metrics.jsonl"), _train_losses(tmp_path / "resumed" / "metrics.jsonl")
    assert sorted(b) == list(range(stop_at + 1, 3 * n + 1))
    assert [b[s] for s in sorted(b)] == [a[s] for s in sorted(b)]  # bit-exact with one thread
    assert r_resumed["val_loss"] == r_full["val_loss"]
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    for (name, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_generators_found_and_restored(corpus):
    tok, _, _ = corpus
    model = LanguageModel(tok.vocab_size, 8, 8, num_layers=2, dropout=0.5, seed=1)
    states = generator_states(model)
    assert {"rnn._rng", "drop_in.rng", "drop_out.rng"} <= set(states)
    json.dumps(states)  # JSON-serialisable
    before = model.rnn._rng.random(3)
    load_generator_states(model, states)
    np.testing.assert_array_equal(model.rnn._rng.random(3), before)
    with pytest.raises(ValueError, match="random generators"):
        load_generator_states(model, {"other": states["rnn._rng"]})


def test_checkpoint_holds_state_arrays_and_tokenizer(tmp_path, corpus):
    tok, train, valid = corpus
    trainer = _trainer(tok, tmp_path, checkpoint_every=7)
    trainer.fit(train, None, epochs=1, max_steps=7)
    ckpt = rnncore.load(tmp_path / "last.safetensors")
    h, c = trainer.hidden
    np.testing.assert_array_equal(ckpt.arrays["hidden.h"], h)
    np.testing.assert_array_equal(ckpt.arrays["hidden.c"], c)
    assert ckpt.extra["trainer"]["step"] == 7 and ckpt.extra["batcher"]["position"] == 7
    assert rnncore.data.tokenizer_from_dict(ckpt.extra["tokenizer"]) == tok
    model = ckpt.build()  # a LanguageModel from the recorded config
    for (name, p), (_, q) in zip(model.named_parameters(), trainer.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_save_arrays_round_trip_and_checks(tmp_path):
    model = rnncore.nn.Linear(3, 2, seed=0)
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b.c": np.array([1, 2], np.int64)}
    rnncore.save(tmp_path / "m.safetensors", model, arrays=arrays)
    ckpt = rnncore.load(tmp_path / "m.safetensors", model)
    assert list(ckpt.arrays) == ["a", "b.c"]
    for k, v in arrays.items():
        np.testing.assert_array_equal(ckpt.arrays[k], v)
        assert ckpt.arrays[k].dtype == v.dtype
    assert rnncore.load(tmp_path / "m.safetensors").state_dict.keys() == model.state_dict().keys()
    with pytest.raises(TypeError, match="arrays"):
        rnncore.save(tmp_path / "x.safetensors", model, arrays={"a": [1, 2]})
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-3] ^= 0xFF  # the last bytes belong to a tensor: its checksum must catch it
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(rnncore.CheckpointError, match="checksum"):
        rnncore.load(tmp_path / "bad.safetensors")


def test_resume_rejects_other_data_or_shape(tmp_path, corpus):
    tok, train, valid = corpus
    _trainer(tok, tmp_path).fit(train, None, epochs=1, max_steps=3)
    other = _trainer(tok)
    other.load_checkpoint(tmp_path / "last.safetensors")
    with pytest.raises(ValueError, match="other data"):
        other.fit(train[:-20], None, epochs=1)
    model = LanguageModel(tok.vocab_size, 12, 24, num_layers=2, seed=3)
    wrong = Trainer(model, optim.Adam(model.parameters()), batch_size=5, seq_len=9)
    with pytest.raises(rnncore.CheckpointError, match="batch_size=4"):
        wrong.load_checkpoint(tmp_path / "last.safetensors")


def test_evaluate_leaves_training_state_alone(corpus):
    tok, train, valid = corpus
    trainer = _trainer(tok)
    trainer.fit(train, None, epochs=1, max_steps=4)
    hidden = tuple(a.copy() for a in trainer.hidden)
    rng = generator_states(trainer.model)
    ev = trainer.evaluate(valid)
    ev2 = trainer.evaluate(valid, batch_size=1)
    assert set(ev) == {"loss", "ppl", "bpc"} and ev["ppl"] == pytest.approx(math.exp(ev["loss"]))
    assert ev2["loss"] != ev["loss"]  # other streams, same text: close but not equal
    assert abs(ev2["loss"] - ev["loss"]) < 0.5
    assert trainer.model.training
    assert generator_states(trainer.model) == rng
    for a, b in zip(trainer.hidden, hidden):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_and_best_checkpoint(tmp_path, corpus):
    tok, train, valid = corpus
    trainer = _trainer(tok, tmp_path, schedule="none", eval_every=1, patience=2)
    trainer.optimizer.param_groups[0]["lr"] = 5.0  # diverges: validation stops improving at once
    result = trainer.fit(train, valid, epochs=5)
    assert result["stop"] == "early_stopping" and trainer.stopped_early
    assert result["steps"] < 10
    best = rnncore.load(tmp_path / "best.safetensors")
    assert best.extra["trainer"]["best_loss"] == pytest.approx(result["best_val_loss"])
    events = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"train", "valid"} <= {e["event"] for e in events}
    for e in events:
        assert {"step", "epoch", "lr", "time"} <= set(e)


def test_plain_log_lines_and_samples_when_not_a_tty(corpus):
    tok, train, valid = corpus
    trainer = _trainer(tok, log_every=5, sample_every=10, sample_length=20)
    trainer.fit(train, valid, epochs=1, max_steps=10)
    out = trainer.stream.getvalue()
    assert "step       5 | epoch 1 |" in out and "tok/s" in out
    assert "---- sample at step 10 ----" in out
    assert "final | step 10" in out and "bpc" in out


def test_max_minutes_and_max_steps_stop(corpus):
    tok, train, valid = corpus
    trainer = _trainer(tok)
    assert trainer.fit(train, None, epochs=100, max_minutes=0.0005)["stop"] == "max_minutes"
    assert trainer.fit(train, None, epochs=100, max_steps=trainer.step + 2)["stop"] == "max_steps"


def test_bad_arguments(corpus):
    tok, train, valid = corpus
    model = LanguageModel(tok.vocab_size, 4, 4)
    with pytest.raises(TypeError, match="optimizer"):
        Trainer(model, object())
    with pytest.raises(ValueError, match="seq_len"):
        Trainer(model, optim.SGD(model.parameters(), lr=1), seq_len=0)
    with pytest.raises(ValueError, match="scheduler_interval"):
        Trainer(model, optim.SGD(model.parameters(), lr=1), scheduler_interval="hour")


def test_trainer_samples_come_from_rnncore_sampling(corpus):
    from rnncore import sampling

    tok, _, _ = corpus
    model = LanguageModel(tok.vocab_size, 8, 16, seed=2)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=1), tokenizer=tok)
    text = trainer.sample(length=6, prime="the ", temperature=0)
    want = sampling.generate(model, tok.encode("the "), 6, temperature=0)
    assert text == "the " + tok.decode(want)


def test_free_evaluate_equals_the_trainers_and_leaves_nothing_to_differentiate(corpus):
    from rnncore.trainer import evaluate

    tok, train, valid = corpus
    trainer = _trainer(tok, eval_batch_size=3)
    trainer.fit(train, None, epochs=1, max_steps=3)
    ev = evaluate(trainer.model, valid, batch_size=3, seq_len=9, bits_per_char=True)
    assert ev == trainer.evaluate(valid)
    assert set(evaluate(trainer.model, valid, 3, 9)) == {"loss", "ppl"}
    assert trainer.model.training
    with pytest.raises(rnncore.NoForwardError):
        trainer.model.backward()
    with pytest.raises(ValueError, match="evaluate: need at least 2 token ids"):
        evaluate(trainer.model, valid[:1])
    with pytest.raises(TypeError, match="evaluate: seq_len must be an int, got float"):
        evaluate(trainer.model, valid, seq_len=9.0)


@pytest.mark.parametrize("max_steps, sample_every", [(3, 100), (3, 3), (4, 3)])
def test_a_sample_at_the_end_of_every_run(corpus, max_steps, sample_every):
    tok, train, valid = corpus
    trainer = _trainer(tok, log_every=100, sample_every=sample_every, sample_length=10)
    trainer.fit(train, None, epochs=1, max_steps=max_steps)
    out = trainer.stream.getvalue()
    samples = [line for line in out.splitlines() if line.startswith("---- sample at step")]
    want = [s for s in range(1, max_steps + 1) if s % sample_every == 0 or s == max_steps]
    assert samples == [f"---- sample at step {s} ----" for s in want]
    quiet = _trainer(tok, sample_every=None)
    quiet.fit(train, None, epochs=1, max_steps=2)
    assert "sample" not in quiet.stream.getvalue()
    only_end = _trainer(tok, sample_at_end=True, sample_length=10)
    only_end.fit(train, None, epochs=1, max_steps=2)
    assert only_end.stream.getvalue().count("---- sample at step 2 ----") == 1


def test_grad_flow_every_records_the_profile_and_changes_nothing(tmp_path, corpus):
    tok, train, valid = corpus
    runs = {}
    for every in (None, 3):
        trainer = _trainer(tok, tmp_path / f"run{every}", grad_flow_every=every)
        trainer.fit(train, max_steps=7)
        runs[every] = [json.loads(line) for line in open(tmp_path / f"run{every}" / "metrics.jsonl")]
    flows = [r for r in runs[3] if r["event"] == "grad_flow"]
    assert [r["step"] for r in flows] == [3, 6]
    (path, entry), = flows[0]["layers"].items()
    assert path == "rnn" and len(entry["grad_norm"]) == 9 and all(v > 0 for v in entry["grad_norm"])
    assert list(entry["spectral_radius"]) == ["weight_hh_l0", "weight_hh_l1"]
    assert all(len(v) == 4 for v in entry["max_singular_value"].values())
    assert not any(r["event"] == "grad_flow" for r in runs[None])
    # recording changes no number of the training run
    same = lambda recs: [(r["step"], r["train_loss"]) for r in recs if r["event"] == "train"]
    assert same(runs[3]) == same(runs[None])
    with pytest.raises(ValueError, match="grad_flow_every"):
        _trainer(tok, grad_flow_every=0)
