"""rnncore.tasks: the Trainer driven by a task (LM streams, sequence pairs, labelled sequences).

The language-model task must be today's Trainer exactly (compared, bit for bit, with a hand-written
truncated-BPTT loop); the seq2seq task is tried on a small stand-in for rnncore.data's pair batcher
and a small encoder-decoder built from real rnncore layers (the spec's interface), the
classification task on SequenceClassifier. One thread: runs are bit-for-bit reproducible.
"""
import io
import json
import math
from typing import NamedTuple

import numpy as np
import pytest

import rnncore
from rnncore import nn, optim
from rnncore.data import BucketIterator, CharTokenizer, StreamBatcher
from rnncore.tasks import ClassificationTask, LanguageModelTask, Seq2SeqTask, Task
from rnncore.trainer import Trainer

TEXT = "the quick brown fox jumps over the lazy dog.\nsphinx of black quartz, judge my vow.\n" * 12
PAD, BOS, EOS = 0, 1, 2


@pytest.fixture(autouse=True)
def _one_thread():
    rnncore.set_num_threads(1)


def _params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _quiet(**kw):
    kw.setdefault("stream", io.StringIO())
    kw.setdefault("progress", False)
    return kw


# -- language models: today's behaviour, bit for bit ---------------------------------------------

def _lm(tok, cell="lstm", seed=3):
    return nn.LanguageModel(tok.vocab_size, 12, 24, num_layers=2, cell=cell, dropout=0.2, seed=seed)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lm_trainer_equals_a_hand_written_truncated_bptt_loop(cell):
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    batcher = StreamBatcher(ids, 4, 9)
    steps = batcher.num_windows + 5  # into the second epoch: the state is reset there

    model = _lm(tok, cell)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = optim.StepLR(opt, step_size=1, gamma=0.7)
    losses, state = [], None
    for step in range(steps):
        k = step % batcher.num_windows
        if k == 0:
            state = None
            if step:
                sched.step()
        x, y = batcher.window(k)
        opt.zero_grad()
        loss, state = model.loss(x, y, state)
        model.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss))
    expected = _params(model)

    for task in (None, LanguageModelTask(4, 9)):
        model = _lm(tok, cell)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        kw = {"batch_size": 4, "seq_len": 9} if task is None else {"task": task}
        trainer = Trainer(model, opt, optim.StepLR(opt, step_size=1, gamma=0.7), clip_grad_norm=1.0, log_every=1,
                          metrics_path=None, **kw, **_quiet())
        assert isinstance(trainer.task, LanguageModelTask) and trainer.task.batch_size == 4
        result = trainer.fit(ids, None, epochs=3, max_steps=steps)
        assert result["steps"] == steps
        _same_params(_params(model), expected)

    # train_step(x, y) is the same step, its loss the hand loop's, bit for bit
    model = _lm(tok, cell)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e-2), clip_grad_norm=1.0, batch_size=4, seq_len=9,
                      **_quiet())
    got = [trainer.train_step(*batcher.window(k)) for k in range(6)]
    assert got == losses[:6]


def test_lm_checkpoint_layout_is_unchanged(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    model = _lm(tok)
    trainer = Trainer(model, optim.Adam(model.parameters()), batch_size=4, seq_len=9, tokenizer=tok,
                      checkpoint_dir=tmp_path, **_quiet())
    trainer.fit(ids, None, max_steps=3)
    ckpt = rnncore.load(tmp_path / "last.safetensors")
    assert set(ckpt.arrays) == {"hidden.h", "hidden.c"}
    state = ckpt.extra["trainer"]
    assert (state["batch_size"], state["seq_len"], state["position"], state["hidden"]) == (4, 9, 3, "lstm")
    assert ckpt.extra["batcher"]["position"] == 3 and ckpt.extra["task"] == {"name": "lm", "state": {"hidden": "lstm"}}


# -- sequence pairs ---------------------------------------------------------------------------------

class PairBatch(NamedTuple):  # the shape of rnncore.data.PairBatch (spec): int64, time-major
    src: np.ndarray
    src_lengths: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray
    tgt_lengths: np.ndarray


def make_pair_batch(pairs):
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) + 1
    B = len(pairs)
    src = np.full((S, B), PAD, np.int64)
    tgt_in = np.full((T, B), PAD, np.int64)
    tgt_out = np.full((T, B), -100, np.int64)
    for b, (s, t) in enumerate(pairs):
        src[: len(s), b] = s
        tgt_in[: len(t) + 1, b] = [BOS] + list(t)
        tgt_out[: len(t) + 1, b] = list(t) + [EOS]
    return PairBatch(src, np.array([len(s) for s, _ in pairs], np.int64), tgt_in, tgt_out,
                     np.array([len(t) + 1 for _, t in pairs], np.int64))


class StandInPairBatcher:
    """A local stand-in for rnncore.data's pair batcher: PairBatches, reshuffled by (seed, epoch), with
    len(), epoch, position, state_dict()/load_state_dict() and iteration as in rnncore.data."""

    def __init__(self, pairs, batch_size, seed=0, shuffle=True):
        self.pairs, self.batch_size, self.seed, self.shuffle = pairs, batch_size, seed, shuffle
        self.epoch = self.position = 0

    def __len__(self):
        return -(-len(self.pairs) // self.batch_size)

    def _order(self):
        n = len(self.pairs)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self):
        if self.position >= len(self):
            self.position, self.epoch = 0, self.epoch + 1
        order = self._order()
        while self.position < len(self):
            k = self.position
            self.position = k + 1
            yield make_pair_batch([self.pairs[i] for i in order[k * self.batch_size: (k + 1) * self.batch_size]])
        self.position, self.epoch = 0, self.epoch + 1

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position, "num_pairs": len(self.pairs),
                "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state):
        if (state["num_pairs"], state["batch_size"], state["seed"]) != (len(self.pairs), self.batch_size, self.seed):
            raise ValueError(f"the state belongs to another layout: {state}")
        self.epoch, self.position = state["epoch"], state["position"]


class TinySeq2Seq(nn.Module):
    """GRU encoder -> GRU decoder started from the encoder's final state -> dropout -> Linear, built
    from rnncore layers (so the gradients are real), with the spec's Seq2Seq interface."""

    def __init__(self, V, E=12, H=24, seed=0, dropout=0.1):
        super().__init__()
        self.V = V
        self.src_embedding = nn.Embedding(V, E, seed=seed)
        self.tgt_embedding = nn.Embedding(V, E, seed=seed + 1)
        self.encoder = nn.GRU(E, H, seed=seed + 2)
        self.decoder = nn.GRU(E, H, seed=seed + 3)
        self.drop = nn.Dropout(dropout, seed=seed + 4)
        self.out = nn.Linear(H, V, seed=seed + 5)

    def config(self):
        return {"V": self.V}

    def forward(self, src, src_lengths, tgt_in):
        _, h = self.encoder(self.src_embedding(src), lengths=src_lengths)
        out, _ = self.decoder(self.tgt_embedding(tgt_in), h)
        return self.out(self.drop(out))

    def loss(self, src, src_lengths, tgt_in, tgt_out, ignore_index=-100, reduction="mean"):
        logits = self.forward(src, src_lengths, tgt_in)
        loss, self._dlogits = nn.cross_entropy(logits, tgt_out, ignore_index, reduction)
        return float(loss)

    def backward(self):
        dout = self.drop.backward(self.out.backward(self._dlogits))
        self.tgt_embedding.backward(self.decoder.backward(dout))
        self.src_embedding.backward(self.encoder.backward(None, self.decoder.grad_h0))


def reversal_pairs(n, V=9, seed=0, lo=2, hi=6):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        s = rng.integers(3, V, size=rng.integers(lo, hi + 1))
        pairs.append((s, s[::-1]))
    return pairs


def _s2s_trainer(tmp_path=None, seed=0, task=None, **kw):
    model = TinySeq2Seq(9, seed=seed)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(model, opt, optim.StepLR(opt, 1, 0.9), clip_grad_norm=5.0, task=task or Seq2SeqTask(),
                   checkpoint_dir=tmp_path, log_every=1, **_quiet(**kw))


def test_seq2seq_trainer_equals_a_hand_written_teacher_forced_loop():
    batches = [make_pair_batch(reversal_pairs(8, seed=k)) for k in range(5)]
    model = TinySeq2Seq(9)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for epoch in range(2):
        for b in batches:
            opt.zero_grad()
            losses.append(model.loss(b.src, b.src_lengths, b.tgt_in, b.tgt_out))
            model.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
    model2 = TinySeq2Seq(9)
    trainer = Trainer(model2, optim.Adam(model2.parameters(), lr=1e-2), clip_grad_norm=5.0, task=Seq2SeqTask(),
                      **_quiet())
    result = trainer.fit(batches, None, epochs=2)
    assert result["steps"] == 10 and result["epochs"] == 2
    assert trainer.tokens_seen == 2 * sum(int(b.tgt_lengths.sum()) for b in batches)
    _same_params(_params(model2), _params(model))


def test_seq2seq_evaluation_metrics_match_numpy():
    model = TinySeq2Seq(9, seed=5)
    valid = StandInPairBatcher(reversal_pairs(30, seed=7), 8, shuffle=False)
    task = Seq2SeqTask()
    ev = task.evaluate(model, valid)
    assert valid.state_dict()["position"] == 0 and valid.epoch == 0  # the batcher is left as it was
    nll = right = n = 0
    model.eval()
    for b in iter(StandInPairBatcher(valid.pairs, 8, shuffle=False)):
        logits = model.forward(b.src, b.src_lengths, b.tgt_in).astype(np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        keep = b.tgt_out != -100
        t = np.where(keep, b.tgt_out, 0)
        nll -= np.take_along_axis(logp, t[..., None], -1)[..., 0][keep].sum()
        right += int(((logits.argmax(-1) == b.tgt_out) & keep).sum())
        n += int(keep.sum())
    assert n == sum(len(t) + 1 for _, t in valid.pairs)
    assert ev["loss"] == pytest.approx(nll / n, rel=1e-5) and ev["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert ev["accuracy"] == right / n and set(ev) == {"loss", "ppl", "accuracy"}
    # a model with evaluate_batch: its counts are used
    model.evaluate_batch = lambda batch: (2.0 * len(batch.src_lengths), len(batch.src_lengths), 1)
    ev = task.evaluate(model, valid)
    assert ev["loss"] == 2.0 and ev["accuracy"] == pytest.approx(4 / 30)


def test_seq2seq_learns_to_reverse_and_bleu_callback_is_reported():
    train = StandInPairBatcher(reversal_pairs(256, seed=1), 16, seed=3)
    valid = StandInPairBatcher(reversal_pairs(64, seed=2), 32, shuffle=False)
    calls = []
    task = Seq2SeqTask(metric="accuracy", bleu=lambda model: calls.append(model.training) or 12.5)
    trainer = _s2s_trainer(task=task)
    result = trainer.fit(train, valid, epochs=25)
    assert result["val_accuracy"] > 0.8, result  # teacher-forced reversal of length <= 6 on 6 symbols
    assert result["val_bleu"] == 12.5 and calls and not any(calls)  # called in eval mode
    assert result["best_val_accuracy"] == max(r for r in [result["val_accuracy"], result["best_val_accuracy"]])
    out = trainer.stream.getvalue()
    assert "accuracy" in out and "bleu 12.50" in out and "tok/s" in out


@pytest.mark.parametrize("stop_at", [3, 9, 16])  # mid-epoch, the end of an epoch (8 batches), the second epoch
def test_seq2seq_resume_is_exact(tmp_path, stop_at):
    pairs, vpairs = reversal_pairs(60, seed=1), reversal_pairs(20, seed=2)
    full = _s2s_trainer(tmp_path / "full", eval_every=4, patience=10)
    full.fit(StandInPairBatcher(pairs, 8, seed=4), StandInPairBatcher(vpairs, 10), epochs=3)

    first = _s2s_trainer(tmp_path / "cut", eval_every=4, patience=10)
    first.fit(StandInPairBatcher(pairs, 8, seed=4), StandInPairBatcher(vpairs, 10), epochs=3, max_steps=stop_at)
    ckpt = rnncore.load(tmp_path / "cut" / "last.safetensors")
    assert ckpt.extra["task"]["name"] == "seq2seq" and ckpt.extra["batcher"]["position"] == stop_at % 8
    resumed = _s2s_trainer(tmp_path / "cut", seed=99, eval_every=4, patience=10)  # other initial weights
    resumed.load_checkpoint(tmp_path / "cut" / "last.safetensors")
    result = resumed.fit(StandInPairBatcher(pairs, 8, seed=4), StandInPairBatcher(vpairs, 10), epochs=3)
    assert result["steps"] == full.step == 24
    _same_params(_params(resumed.model), _params(full.model))
    assert resumed.best_score == full.best_score and resumed.best_epoch == full.best_epoch

    def train_losses(path):
        return [(r["step"], r["train_loss"]) for r in map(json.loads, open(path)) if r["event"] == "train"]
    assert train_losses(tmp_path / "cut" / "metrics.jsonl") == train_losses(tmp_path / "full" / "metrics.jsonl")


def test_seq2seq_checkpoints_hold_the_tokenizers(tmp_path):
    from rnncore.data import WordTokenizer

    src_tok, tgt_tok = WordTokenizer.from_text("a b c"), WordTokenizer.from_text("x y z w")
    trainer = _s2s_trainer(tmp_path, task=Seq2SeqTask(src_tokenizer=src_tok, tgt_tokenizer=tgt_tok))
    trainer.fit([make_pair_batch(reversal_pairs(4))], None, max_steps=1)
    state = rnncore.load(tmp_path / "last.safetensors").extra["task"]["state"]
    assert state["src_tokenizer"] == src_tok.to_dict() and state["tgt_tokenizer"] == tgt_tok.to_dict()
    resumed = _s2s_trainer(tmp_path)
    resumed.load_checkpoint(tmp_path / "last.safetensors")
    assert resumed.task.tgt_tokenizer.vocab == tgt_tok.vocab and resumed.task.src_tokenizer.vocab == src_tok.vocab
    with pytest.raises(TypeError, match="src_tokenizer must be an rnncore tokenizer"):
        Seq2SeqTask(src_tokenizer="abc")


def test_early_stopping_on_a_metric_to_maximise(tmp_path):
    scores = iter([1.0, 3.0, 2.0, 2.5, 9.0])
    task = Seq2SeqTask(metric="bleu", bleu=lambda model: next(scores))
    assert task.mode == "max"
    trainer = _s2s_trainer(tmp_path, task=task, patience=2)
    batches = [make_pair_batch(reversal_pairs(4, seed=k)) for k in range(3)]
    result = trainer.fit(batches, batches[:1], epochs=10)
    assert result["stop"] == "early_stopping" and result["epochs"] == 4
    assert result["best_val_bleu"] == 3.0 and result["best_epoch"] == 2
    best = rnncore.load(tmp_path / "best.safetensors").extra["trainer"]
    assert best["metric"] == "bleu" and best["best_score"] == 3.0 and best["step"] == 6
    rec = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["val_bleu"] for r in rec if r["event"] == "valid"] == [1.0, 3.0, 2.0, 2.5]


# -- labelled sequences -----------------------------------------------------------------------------

def labelled(n, seed):
    """Label 1 when token 1 occurs in the sequence."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        s = rng.integers(2, 8, size=rng.integers(3, 11))
        if i % 2:
            s[rng.integers(0, len(s))] = 1
        seqs.append(s)
        labels.append(i % 2)
    return seqs, np.array(labels, np.int64)


def _clf(seed=0, bidirectional=False, pooling="max"):
    return nn.SequenceClassifier(vocab_size=8, embedding_dim=8, hidden_size=16, num_classes=2,
                                 bidirectional=bidirectional, pooling=pooling, dropout=0.1, padding_idx=0, seed=seed)


def test_classification_equals_a_hand_written_loop_and_learns():
    train, valid = labelled(200, 0), labelled(100, 1)
    model = _clf()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    it = BucketIterator(*train, 16, shuffle=True, seed=5, pad_value=0)
    for epoch in range(3):
        for x, lengths, y in it:
            opt.zero_grad()
            model.loss(x, y, lengths=lengths)
            model.backward()
            optim.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
    model2 = _clf()
    trainer = Trainer(model2, optim.Adam(model2.parameters(), lr=1e-2), clip_grad_norm=5.0,
                      task=ClassificationTask(16, seed=5), **_quiet())
    result = trainer.fit(train, valid, epochs=3)
    _same_params(_params(model2), _params(model))
    model.eval()
    right = sum(int((model.forward(x, lengths=lengths).argmax(-1) == y).sum())
                for x, lengths, y in BucketIterator(*valid, 256, shuffle=False, pad_value=0))
    assert result["val_accuracy"] == right / 100 and result["val_accuracy"] > 0.85, result
    assert trainer.tokens_seen == 600 and "ex/s" in trainer.stream.getvalue()
    assert "ppl" not in trainer.stream.getvalue()


def test_classification_resume_is_exact_mid_epoch(tmp_path):
    train, valid = labelled(120, 0), labelled(40, 1)

    def make(seed=0):
        m = _clf(seed, bidirectional=True, pooling="mean")
        return Trainer(m, optim.Adam(m.parameters(), lr=1e-2), clip_grad_norm=5.0, checkpoint_dir=tmp_path,
                       task=ClassificationTask(16, seed=2), **_quiet())
    full = make()
    full.fit(train, valid, epochs=2)
    make().fit(train, valid, epochs=2, max_steps=5)
    resumed = make(seed=7)
    resumed.load_checkpoint(tmp_path / "last.safetensors")
    assert resumed.position == 5 and resumed.task.name == "classification"
    resumed.fit(train, valid, epochs=2)
    _same_params(_params(resumed.model), _params(full.model))
    with pytest.raises(ValueError, match="other data"):
        again = make()
        again.load_checkpoint(tmp_path / "last.safetensors")
        again.fit((train[0][:100], train[1][:100]), valid, epochs=3)


# -- bad input --------------------------------------------------------------------------------------

def test_bad_tasks_and_arguments(tmp_path):
    model = TinySeq2Seq(9)
    opt = optim.Adam(model.parameters())
    with pytest.raises(TypeError, match="task must be an rnncore.tasks.Task"):
        Trainer(model, opt, task="seq2seq")
    with pytest.raises(ValueError, match="give batch_size/seq_len/eval_batch_size to the task"):
        Trainer(model, opt, task=Seq2SeqTask(), batch_size=4)
    with pytest.raises(ValueError, match="sample_every needs a language-model task"):
        Trainer(model, opt, task=Seq2SeqTask(), sample_every=3)
    with pytest.raises(ValueError, match="metric must be one of"):
        Seq2SeqTask(metric="bpc")
    with pytest.raises(ValueError, match="needs the bleu callback"):
        Seq2SeqTask(metric="bleu")
    with pytest.raises(TypeError, match="bleu must be a function"):
        Seq2SeqTask(bleu=3)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        ClassificationTask(mode="up")
    with pytest.raises(ValueError, match="batch_size"):
        ClassificationTask(batch_size=0)
    with pytest.raises(TypeError, match="needs a model with loss"):
        Trainer(nn.Linear(2, 2), optim.Adam(nn.Linear(2, 2).parameters()), task=ClassificationTask())
    trainer = Trainer(model, opt, task=Seq2SeqTask(), **_quiet())
    with pytest.raises(TypeError, match="a list of batches or a batcher"):
        trainer.fit(object())
    with pytest.raises(ValueError, match="empty"):
        trainer.fit([])
    with pytest.raises(TypeError, match="must be a PairBatch"):
        trainer.fit([(1, 2)])
    with pytest.raises(ValueError, match="Trainer.sample: needs a language-model task"):
        trainer.sample()
    with pytest.raises(AttributeError, match="only a language-model task"):
        trainer.hidden = np.zeros(3)
    assert trainer.hidden is None
    with pytest.raises(TypeError, match="BucketIterator with labels or a pair"):
        Trainer(_clf(), optim.Adam(_clf().parameters()), task=ClassificationTask(), **_quiet()).fit([1, 2, 3])
    # a checkpoint of one task does not resume into another
    trainer = _s2s_trainer(tmp_path)
    trainer.fit([make_pair_batch(reversal_pairs(4))], None, max_steps=1)
    tok = CharTokenizer.from_text(TEXT)
    lm = _lm(tok)
    with pytest.raises(rnncore.CheckpointError, match="task 'seq2seq'"):
        Trainer(lm, optim.Adam(lm.parameters()), batch_size=4, seq_len=9).load_checkpoint(tmp_path / "last.safetensors")
    with pytest.raises(rnncore.CheckpointError, match="task 'seq2seq'"):
        other = _clf()
        Trainer(other, optim.Adam(other.parameters()), task=ClassificationTask()).load_checkpoint(
            tmp_path / "last.safetensors")


def test_a_task_of_ones_own():
    """The protocol is open: a subclass that only defines train_batch and evaluate gets the loop."""
    class Regression(Task):
        name = "regression"
        unit = "ex"
        report_ppl = False

        def train_batch(self, model, batch):
            x, y = batch
            pred = model(x)
            model.backward(pred - y)
            return float(0.5 * np.mean(np.sum((pred - y) ** 2, -1))), len(x)

        def evaluate(self, model, data, batch_size=None):
            x, y = data
            return {"loss": float(0.5 * np.mean(np.sum((model(x) - y) ** 2, -1)))}

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    model = nn.Linear(3, 1, seed=0)
    model.loss = model.forward  # what Task.check_model looks for
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.02), task=Regression(),
                      **_quiet())
    result = trainer.fit([(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)], (x, y), epochs=30)
    assert result["val_loss"] < 1e-3 and result["best_val_loss"] <= result["val_loss"]
