"""Training tasks for rnncore.Trainer: what a task owns (batching, the loss and backward of one
batch, evaluation) so that every task gets the Trainer's progress bar, evaluation, early
stopping, checkpoints and exact resume.

    Trainer(lm, opt, batch_size=32, seq_len=35)                      # LanguageModelTask, implicit
    Trainer(s2s, opt, clip_grad_norm=5.0, task=Seq2SeqTask(metric="bleu", bleu=valid_bleu))
        .fit(train_pairs, valid_pairs, epochs=10)                    # batchers of PairBatch
    Trainer(clf, opt, task=ClassificationTask(batch_size=32, seed=0, metric="accuracy"))
        .fit((train_ids, train_labels), (valid_ids, valid_labels), epochs=12)

The protocol (a subclass of :class:`Task` overrides what it needs):

- ``name``: stored in checkpoints; a checkpoint resumes only into a task of the same name.
- ``metric`` and ``mode`` ('min' or 'max'): the evaluation metric that decides the best
  checkpoint, ReduceLROnPlateau (which steps on 'loss' when there is one) and early stopping.
- ``attach(train) -> number of batches per epoch``: take the training data (the task's own
  kind of data or a batcher of it) and build the batching over it.
- ``batch(epoch, k)``: the k-th batch of epoch `epoch` (the Trainer walks k = 0, 1, ... and
  counts epochs; a batch must be a pure function of (epoch, k) and the data, which is what
  makes resume exact).
- ``batching_state(epoch, position)`` / ``load_batching_state(state)``: the batching's position
  as JSON (with the layout it belongs to, checked on load: a ValueError on other data).
- ``start_epoch()``: called before an epoch's first batch (an LM resets its carried state).
- ``train_batch(model, batch) -> (loss, count)``: the loss of one batch and its backward (the
  Trainer zeroes the gradients before, clips and steps the optimizer after); `count` is the
  number of tokens (or examples) the mean loss covers, for throughput and mean losses.
- ``evaluate(model, data, batch_size=None) -> dict`` of metrics, in eval mode, leaving the
  model's training mode and the training state alone; it has ``metric`` among its keys.
- ``state_dict()`` / ``load_state_dict(state)`` (JSON) and ``arrays()`` / ``load_arrays(arrays)``
  (tensors): any other training state that a checkpoint must hold (the LM's carried state).

Batching: every batcher of rnncore.data works (StreamBatcher: ``window(k)``; BucketIterator:
``batch_indices(epoch)`` and ``make_batch``; anything else with ``state_dict``/``load_state_dict``
and iteration from ``position`` as in rnncore.data, e.g. the pair batcher), and so does a plain
list of batches (the same batches every epoch). Batches are time-major, as rnncore.data makes them.
"""
import math

import numpy as np

from ._checks import bounded_repr, check_int
from .data import BucketIterator, StreamBatcher

__all__ = ["Task", "LanguageModelTask", "Seq2SeqTask", "ClassificationTask"]

_MIN_METRICS = ("loss", "ppl", "bpc", "nll")


def _safe_exp(x):
    return math.exp(x) if x < 700 else float("inf")


# -- batches from any batcher ---------------------------------------------------------------------

class _Batches:
    """Batch k of epoch e from a batcher (see the module doc), with its state for checkpoints."""

    def __init__(self, source, fn):
        self.source = source
        if isinstance(source, (list, tuple)):
            if not source:
                raise ValueError(f"{fn}: the list of training batches is empty")
            self.kind, self.num_batches = "list", len(source)
        elif hasattr(source, "window") and hasattr(source, "num_windows"):
            self.kind, self.num_batches = "windows", int(source.num_windows)
        elif hasattr(source, "batch_indices") and hasattr(source, "make_batch"):
            self.kind, self.num_batches = "indexed", len(source)
        elif all(hasattr(source, a) for a in ("state_dict", "load_state_dict", "__iter__", "__len__")):
            self.kind, self.num_batches = "iterator", len(source)
        else:
            raise TypeError(f"{fn}: the training data must be a list of batches or a batcher (rnncore.data: "
                            f"len(), state_dict()/load_state_dict() and iteration), got {type(source).__name__}")
        if self.num_batches < 1:
            raise ValueError(f"{fn}: the training batcher has no batches")
        self._indices = None   # (epoch, that epoch's batch index arrays) for "indexed"
        self._iter = None      # (the next (epoch, k), iterator) for "iterator"

    def batch(self, epoch, k):
        src = self.source
        if self.kind == "list":
            return src[k]
        if self.kind == "windows":
            return src.window(k)
        if self.kind == "indexed":
            if self._indices is None or self._indices[0] != epoch:
                self._indices = (epoch, src.batch_indices(epoch))
            return src.make_batch(self._indices[1][k])
        if self._iter is None or self._iter[0] != (epoch, k):
            state = dict(src.state_dict())
            state.update(epoch=epoch, position=k)
            src.load_state_dict(state)
            self._iter = [None, iter(src)]
        batch = next(self._iter[1])
        self._iter[0] = (epoch, k + 1)
        return batch

    def state(self, epoch, position):
        if self.kind == "list":
            state = {"num_batches": self.num_batches}
        else:
            state = dict(self.source.state_dict())
        state.update(epoch=epoch, position=position)
        return state

    def load_state(self, state):
        if self.kind == "list":
            if state.get("num_batches") != self.num_batches:
                raise ValueError(f"the run had {state.get('num_batches')} batches per epoch, this data has "
                                 f"{self.num_batches}")
        else:
            self.source.load_state_dict(state)
            self._iter = None


def _eval_batches(data):
    """The batches of one pass over `data` (a list or a batcher), leaving a batcher's state as it was."""
    if isinstance(data, (list, tuple)):
        return list(data)
    if hasattr(data, "batch_indices") and hasattr(data, "make_batch"):
        return [data.make_batch(i) for i in data.batch_indices()]
    state = data.state_dict() if hasattr(data, "state_dict") else None
    try:
        if state is not None:
            start = dict(state)
            start["position"] = 0
            data.load_state_dict(start)
        return list(iter(data))
    finally:
        if state is not None:
            data.load_state_dict(state)


def _eval_mode(model):
    was = model.training
    model.eval()
    return was


# -- the protocol -----------------------------------------------------------------------------------

class Task:
    """Base class of the Trainer's tasks (the module doc gives the protocol).

    metric: the evaluation metric for the best checkpoint and early stopping; mode: 'min' or
    'max' (default: 'min' for loss/ppl/bpc/nll, 'max' for anything else, e.g. accuracy, bleu).
    """

    name = "task"
    unit = "tok"         # what train_batch's count counts ("tok" tokens, "ex" examples): progress lines
    report_ppl = True    # progress lines show exp(mean loss)
    metrics = ("loss",)  # the metrics evaluate() can return

    def __init__(self, metric="loss", mode=None):
        fn = type(self).__name__
        if not isinstance(metric, str) or metric not in self.metrics:
            raise ValueError(f"{fn}: metric must be one of {list(self.metrics)}, got {bounded_repr(metric)}")
        if mode is None:
            mode = "min" if metric in _MIN_METRICS else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"{fn}: mode must be 'min' or 'max', got {bounded_repr(mode)}")
        self.metric, self.mode = metric, mode
        self.trainer = None
        self._batches = None

    # what the Trainer calls
    def bind(self, trainer):
        """Called once by the Trainer that runs this task."""
        self.trainer = trainer

    def check_model(self, model):
        """Raise TypeError when `model` lacks what this task calls."""
        missing = [a for a in ("loss", "backward", "forward", "parameters") if not hasattr(model, a)]
        if missing:
            raise TypeError(f"Trainer: {type(self).__name__} needs a model with {'/'.join(missing)}, got "
                            f"{type(model).__name__}")

    def make_batcher(self, train):
        """The batcher (or list of batches) over the training data; default: `train` itself."""
        return train

    def attach(self, train):
        self._batches = _Batches(self.make_batcher(train), f"{type(self).__name__}.attach")
        return self._batches.num_batches

    @property
    def batcher(self):
        return None if self._batches is None else self._batches.source

    @property
    def num_batches(self):
        return None if self._batches is None else self._batches.num_batches

    def batch(self, epoch, k):
        return self._batches.batch(epoch, k)

    def batching_state(self, epoch, position):
        return None if self._batches is None else self._batches.state(epoch, position)

    def load_batching_state(self, state):
        self._batches.load_state(state)

    def start_epoch(self):
        pass

    # data-parallel training (rnncore.distributed): each rank trains on its columns of the batch
    def batch_width(self, batch):
        """B, the number of columns (sequences / streams) of a time-major batch: the second axis of
        its first 2-D array (a tuple/list/NamedTuple of arrays, as rnncore.data makes them)."""
        for a in batch:
            if isinstance(a, np.ndarray) and a.ndim == 2:
                return a.shape[1]
        for a in batch:
            if isinstance(a, np.ndarray) and a.ndim == 1:
                return a.shape[0]
        raise TypeError(f"{type(self).__name__}: data-parallel training needs batches of time-major arrays, got "
                        f"{type(batch).__name__}")

    def local_batch(self, batch, lo, hi):
        """Columns [lo, hi) of a time-major batch: 2-D arrays (T, B) -> (T, hi-lo), 1-D (B,) ->
        (hi-lo,), other fields as they are; the same kind of tuple."""
        def cut(a):
            if isinstance(a, np.ndarray) and a.ndim == 2:
                return np.ascontiguousarray(a[:, lo:hi])
            if isinstance(a, np.ndarray) and a.ndim == 1:
                return np.ascontiguousarray(a[lo:hi])
            return a
        fields = [cut(a) for a in batch]
        if hasattr(batch, "_fields"):  # a NamedTuple (PairBatch)
            return type(batch)(*fields)
        return type(batch)(fields) if isinstance(batch, (tuple, list)) else fields

    def train_batch(self, model, batch):
        raise NotImplementedError

    def evaluate(self, model, data, batch_size=None):
        raise NotImplementedError

    def better(self, value, best):
        """Is `value` better than `best` (None: nothing yet)?"""
        if value != value:  # NaN is never better
            return False
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def arrays(self):
        return {}

    def load_arrays(self, arrays):
        pass

    def __repr__(self):
        return f"{type(self).__name__}(metric={self.metric!r}, mode={self.mode!r})"


# -- language models ------------------------------------------------------------------------------

def _batch_layout(model, x, y):
    """(T, B) windows as the model takes them: (B, T) for a batch_first model."""
    if getattr(model, "batch_first", False):
        return np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
    return x, y


class LanguageModelTask(Task):
    """Language-model streams with truncated BPTT (what Trainer(lm, opt, batch_size=, seq_len=) builds).

    The training ids (N,) (or a StreamBatcher) are cut into `batch_size` streams read in
    (seq_len, B) windows; the state returned by a window's ``model.loss(x, y, state)`` is carried
    into the next as plain arrays (gradients stop at the window edge) and reset at each epoch's
    start. Evaluation: :func:`rnncore.trainer.evaluate` over ids with eval_batch_size streams:
    'loss' (nats/token), 'ppl' and, with bits_per_char, 'bpc' (None: when the Trainer's tokenizer
    is a character tokenizer).
    """

    name = "lm"
    metrics = ("loss", "ppl", "bpc")

    def __init__(self, batch_size=32, seq_len=35, eval_batch_size=None, *, bits_per_char=None, metric="loss",
                 mode=None):
        super().__init__(metric, mode)
        fn = "LanguageModelTask"
        self.batch_size = check_int(batch_size, "batch_size", fn)
        self.seq_len = check_int(seq_len, "seq_len", fn)
        self.eval_batch_size = check_int(eval_batch_size, "eval_batch_size", fn, optional=True)
        self.bits_per_char = None if bits_per_char is None else bool(bits_per_char)
        self.hidden = None  # carried state: h (L, B, H) or (h, c)

    def make_batcher(self, train):
        return train if isinstance(train, StreamBatcher) else StreamBatcher(train, self.batch_size, self.seq_len)

    def start_epoch(self):
        self.hidden = None  # each epoch starts from a zero state

    def train_batch(self, model, batch):
        inputs, targets = batch
        x, y = _batch_layout(model, inputs, targets)
        loss, state = model.loss(x, y, self.hidden)
        model.backward()
        self.hidden = state  # plain arrays: the next window's gradient stops here
        return float(loss), y.size

    @property
    def is_char(self):
        if self.bits_per_char is not None:
            return self.bits_per_char
        return self.trainer is not None and self.trainer.is_char_model

    def evaluate(self, model, data, batch_size=None):
        from .trainer import evaluate

        return evaluate(model, data, batch_size or self.eval_batch_size or self.batch_size, self.seq_len,
                        bits_per_char=self.is_char or self.metric == "bpc")

    def state_dict(self):
        hidden = self.hidden
        return {"hidden": None if hidden is None else ("lstm" if isinstance(hidden, tuple) else "h")}

    def _world(self):
        world = getattr(self.trainer, "world", None)
        return world if world is not None and world.size > 1 else None

    def local_batch(self, batch, lo, hi):
        self._width = self.batch_width(batch)  # the global B: the carried state's columns are shards of it
        return super().local_batch(batch, lo, hi)

    def arrays(self):
        hidden = self.hidden
        world = self._world()
        if world is not None and hidden is not None:  # every rank's streams, gathered on rank 0
            parts = hidden if isinstance(hidden, tuple) else (hidden,)
            width = getattr(self, "_width", None) or self.batch_size
            parts = tuple(world.gather_columns(np.ascontiguousarray(h), width, "the gather of the carried state")
                          for h in parts)
            hidden = None if parts[0] is None else (parts if isinstance(hidden, tuple) else parts[0])
        if isinstance(hidden, tuple):
            return {"hidden.h": np.ascontiguousarray(hidden[0]), "hidden.c": np.ascontiguousarray(hidden[1])}
        if hidden is not None:
            return {"hidden.h": np.ascontiguousarray(hidden)}
        return {}

    def load_state_dict(self, state):
        self._kind = state.get("hidden")

    def load_arrays(self, arrays):
        kind = getattr(self, "_kind", None)
        world = self._world()

        def mine(a):  # a distributed run: this rank's streams of the saved (L, B, H) state
            if world is None:
                return a.copy()
            self._width = a.shape[1]
            lo, hi = world.shard(a.shape[1])
            return np.ascontiguousarray(a[:, lo:hi])
        if kind == "lstm":
            self.hidden = (mine(arrays["hidden.h"]), mine(arrays["hidden.c"]))
        elif kind == "h":
            self.hidden = mine(arrays["hidden.h"])
        else:
            self.hidden = None

    def __repr__(self):
        return (f"LanguageModelTask(batch_size={self.batch_size}, seq_len={self.seq_len}, "
                f"eval_batch_size={self.eval_batch_size}, metric={self.metric!r})")


# -- sequence pairs --------------------------------------------------------------------------------

def _pair_fields(batch, fn):
    try:
        return batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out
    except AttributeError:
        raise TypeError(f"{fn}: a batch must be a PairBatch (src, src_lengths, tgt_in, tgt_out, tgt_lengths), "
                        f"got {type(batch).__name__}") from None


class Seq2SeqTask(Task):
    """Sequence pairs for an encoder-decoder (rnncore.nn.Seq2Seq or anything with its interface),
    trained with teacher forcing.

    Training data: a pair batcher (rnncore.data) or a list of PairBatch-like batches (fields
    src (S, B), src_lengths (B,), tgt_in (T, B), tgt_out (T, B) padded with ignore_index,
    tgt_lengths (B,)). A step: ``model.loss(src, src_lengths, tgt_in, tgt_out,
    ignore_index=ignore_index, reduction="mean", **loss_kwargs)`` then ``model.backward()``;
    the count is the batch's non-ignored target tokens.

    Evaluation over a pair batcher or list of batches: 'loss' (nats per target token), 'ppl',
    'accuracy' (argmax = target, over the non-ignored tokens) from ``model.evaluate_batch(batch)
    -> (NLL sum, tokens, correct)`` when the model has it, else from ``model.forward(src,
    src_lengths, tgt_in) -> logits (T, B, V)``; and 'bleu' = ``bleu(model)`` when a callback is
    given (e.g. decode the valid sources, score them with sacrebleu), called in eval mode.

    metric: 'loss', 'ppl', 'accuracy' or 'bleu' (needs the callback) for the best checkpoint and
    early stopping. loss_kwargs: more keywords for model.loss (e.g. a scheduled-sampling rate).
    src_tokenizer, tgt_tokenizer: saved in checkpoints (``extra['task']['state']`` holds their
    ``to_dict()`` as 'src_tokenizer' / 'tgt_tokenizer'), restored on resume into a task without them.
    """

    name = "seq2seq"
    metrics = ("loss", "ppl", "accuracy", "bleu")

    def __init__(self, metric="loss", mode=None, *, bleu=None, ignore_index=-100, loss_kwargs=None,
                 src_tokenizer=None, tgt_tokenizer=None):
        super().__init__(metric, mode)
        fn = "Seq2SeqTask"
        for name, tok in (("src_tokenizer", src_tokenizer), ("tgt_tokenizer", tgt_tokenizer)):
            if tok is not None and not hasattr(tok, "to_dict"):
                raise TypeError(f"{fn}: {name} must be an rnncore tokenizer (with to_dict()), got {type(tok).__name__}")
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        if bleu is not None and not callable(bleu):
            raise TypeError(f"{fn}: bleu must be a function model -> BLEU score, got {type(bleu).__name__}")
        if metric == "bleu" and bleu is None:
            raise ValueError(f"{fn}: metric='bleu' needs the bleu callback (bleu=lambda model: ...)")
        self.bleu = bleu
        self.ignore_index = check_int(ignore_index, "ignore_index", fn, minimum=None)
        if loss_kwargs is not None and not isinstance(loss_kwargs, dict):
            raise TypeError(f"{fn}: loss_kwargs must be a dict or None, got {type(loss_kwargs).__name__}")
        self.loss_kwargs = dict(loss_kwargs or {})

    def train_batch(self, model, batch):
        src, src_lengths, tgt_in, tgt_out = _pair_fields(batch, "Seq2SeqTask.train_batch")
        loss = model.loss(src, src_lengths, tgt_in, tgt_out, ignore_index=self.ignore_index, reduction="mean",
                          **self.loss_kwargs)
        model.backward()
        count = int(np.count_nonzero(np.asarray(tgt_out) != self.ignore_index))
        if count == 0:
            raise ValueError(f"Seq2SeqTask.train_batch: the batch has no target tokens (every tgt_out is "
                             f"ignore_index={self.ignore_index})")
        return float(loss), count

    def state_dict(self):
        return {name: None if tok is None else tok.to_dict()
                for name, tok in (("src_tokenizer", self.src_tokenizer), ("tgt_tokenizer", self.tgt_tokenizer))}

    def load_state_dict(self, state):
        from .data import tokenizer_from_dict

        for name in ("src_tokenizer", "tgt_tokenizer"):
            if state.get(name) is not None and getattr(self, name) is None:
                setattr(self, name, tokenizer_from_dict(state[name]))

    def _batch_counts(self, model, batch):
        """(NLL sum, tokens, correct) of one batch."""
        from .nn import cross_entropy

        if hasattr(model, "evaluate_batch"):
            nll, n, right = model.evaluate_batch(batch)
            return float(nll), int(n), int(right)
        src, src_lengths, tgt_in, tgt_out = _pair_fields(batch, "Seq2SeqTask.evaluate")
        logits = model.forward(src, src_lengths, tgt_in)
        tgt_out = np.asarray(tgt_out)
        nll, _ = cross_entropy(logits, tgt_out, self.ignore_index, reduction="sum", compute_grad=False,
                               threads=getattr(model, "threads", None))
        keep = tgt_out != self.ignore_index
        right = int(np.count_nonzero((np.argmax(logits, axis=-1) == tgt_out) & keep))
        return float(nll), int(np.count_nonzero(keep)), right

    def evaluate(self, model, data, batch_size=None):
        was = _eval_mode(model)
        try:
            total, count, right = 0.0, 0, 0
            for batch in _eval_batches(data):
                nll, n, r = self._batch_counts(model, batch)
                total, count, right = total + nll, count + n, right + r
            if count == 0:
                raise ValueError("Seq2SeqTask.evaluate: the evaluation data has no target tokens")
            loss = total / count
            out = {"loss": loss, "ppl": _safe_exp(loss), "accuracy": right / count}
            if self.bleu is not None:
                out["bleu"] = float(self.bleu(model))
        finally:
            model.train(was)
        return out


# -- labelled sequences -------------------------------------------------------------------------------

class ClassificationTask(Task):
    """Labelled sequences for rnncore.nn.SequenceClassifier (or anything with ``loss(x, labels,
    lengths=)``, ``forward(x, lengths=) -> logits (B, C)``, ``backward()``).

    Data: a BucketIterator with labels (batches (padded ids (T, B), lengths (B,), labels (B,)))
    or a pair (sequences, labels), batched here with ``BucketIterator(sequences, labels,
    batch_size, shuffle=True, seed=seed, pad_value=pad_value)`` (evaluation: eval_batch_size,
    no shuffling). The count of a step is its number of examples. For a batch_first model the
    (T, B) ids are transposed. Evaluation: 'loss' (mean cross-entropy) and 'accuracy'.
    """

    name = "classification"
    unit = "ex"
    report_ppl = False
    metrics = ("loss", "accuracy")

    def __init__(self, batch_size=32, *, seed=0, shuffle=True, pad_value=0, eval_batch_size=256, metric="accuracy",
                 mode=None, bucket_width=None, num_buckets=None):
        super().__init__(metric, mode)
        fn = "ClassificationTask"
        self.batch_size = check_int(batch_size, "batch_size", fn)
        self.eval_batch_size = check_int(eval_batch_size, "eval_batch_size", fn)
        self.seed = check_int(seed, "seed", fn, minimum=0, int64=False)
        self.shuffle = bool(shuffle)
        self.pad_value = pad_value
        self.bucket_width, self.num_buckets = bucket_width, num_buckets

    def _iterator(self, data, batch_size, shuffle, fn):
        if isinstance(data, BucketIterator):
            if data.labels is None or data.pad_labels:
                raise ValueError(f"{fn}: the BucketIterator must have one label per sequence")
            return data
        if not isinstance(data, tuple) or len(data) != 2:
            raise TypeError(f"{fn}: the data must be a BucketIterator with labels or a pair (sequences, labels), "
                            f"got {type(data).__name__}")
        return BucketIterator(data[0], data[1], batch_size, shuffle=shuffle, seed=self.seed,
                              pad_value=self.pad_value, bucket_width=self.bucket_width, num_buckets=self.num_buckets)

    def make_batcher(self, train):
        return self._iterator(train, self.batch_size, self.shuffle, "ClassificationTask.attach")

    @staticmethod
    def _layout(model, x):
        return np.ascontiguousarray(np.swapaxes(x, 0, 1)) if getattr(model, "batch_first", False) else x

    def train_batch(self, model, batch):
        x, lengths, labels = batch
        loss = model.loss(self._layout(model, x), labels, lengths=lengths)
        model.backward()
        return float(loss), len(labels)

    def evaluate(self, model, data, batch_size=None):
        from .nn import cross_entropy

        it = self._iterator(data, batch_size or self.eval_batch_size, False, "ClassificationTask.evaluate")
        was = _eval_mode(model)
        try:
            total, right, n = 0.0, 0, 0
            for x, lengths, labels in _eval_batches(it):
                logits = model.forward(self._layout(model, x), lengths=lengths)
                loss, _ = cross_entropy(logits, labels, reduction="sum", compute_grad=False,
                                        threads=getattr(model, "threads", None))
                total += float(loss)
                right += int(np.count_nonzero(np.argmax(logits, axis=-1) == labels))
                n += len(labels)
        finally:
            model.train(was)
        if n == 0:
            raise ValueError("ClassificationTask.evaluate: the evaluation data has no examples")
        return {"loss": total / n, "accuracy": right / n}
