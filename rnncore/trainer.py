"""Training loop: clipping, evaluation, early stopping, checkpoints with exact resume, progress and
a metrics log, for any task (rnncore.tasks): language-model streams with truncated BPTT and carried
state (the default), sequence pairs (Seq2SeqTask), labelled sequences (ClassificationTask).

    trainer = Trainer(model, rnncore.optim.Adam(model.parameters(), lr=2e-3), clip_grad_norm=5.0,
                      batch_size=32, seq_len=100, tokenizer=tok, checkpoint_dir="run")
    trainer.fit(train_ids, valid_ids, epochs=10, max_minutes=30)
    trainer.evaluate(test_ids)        # {'loss': nats/token, 'ppl': ..., 'bpc': ... (char models)}
    rnncore.trainer.evaluate(model, test_ids, batch_size=10, seq_len=35)   # the same, without a Trainer

    Trainer(s2s, opt, clip_grad_norm=5.0, task=Seq2SeqTask(metric="bleu", bleu=fn), checkpoint_dir="run")
        .fit(PairBatcher(train_pairs, 32, seed=0), PairBatcher(valid_pairs, 64, shuffle=False), epochs=10)

A task owns batching (its position goes into checkpoints), the loss and backward of one batch and
evaluation (a dict of metrics, the task's ``metric`` deciding the best checkpoint, patience and
what ``best_val_<metric>`` in fit()'s result holds); the Trainer does the rest, the same for every
task. Without ``task=`` a language-model task is built from batch_size/seq_len/eval_batch_size;
what follows describes it (other tasks: see rnncore.tasks).

Shape letters: T seq_len, B batch_size, L layers, H hidden size, V vocabulary.

The training ids are cut into B streams and walked in (T, B) windows (rnncore.data.StreamBatcher).
The hidden state returned by one window's forward is passed, as plain arrays, into the next
(so gradients stop at the window edge: truncated BPTT) and reset to zeros at each epoch's
start. Each step: zero the gradients, loss + backward, clip the global gradient norm,
optimizer step, then the scheduler if it steps per iteration.

Schedulers: ``scheduler_interval='epoch'`` (default) steps an epoch-indexed scheduler
(ZarembaLR, StepLR, ...) at each epoch's end; ``'step'`` after every optimizer step.
ReduceLROnPlateau always steps on the validation loss after each scheduled evaluation.

Evaluation runs on the validation ids at each epoch's end and, with ``eval_every=N``, every N
steps: eval mode (no dropout), state carried across windows, ``eval_batch_size`` streams.
It reports nats/token (``loss``), perplexity and, for character models, bits per character
(the free function :func:`evaluate` does the same for any model and ids).
``patience=K`` stops training after K evaluations without improvement.

Samples (with a tokenizer and ``sample_every=N``): every N steps and once more when fit() ends,
each headed ``---- sample at step N ----``.

Checkpoints (``checkpoint_dir``): ``last.safetensors`` every ``checkpoint_every`` steps, at
each epoch's end and when training stops; ``best.safetensors`` whenever the validation loss
improves. Each holds the model, the optimizer, the tokenizer, the scheduler and the trainer's
state: epoch, step, the batcher position, the bit-generator state of every numpy Generator in
the model (dropout), the best score and the carried hidden state (as tensors
``arrays.hidden.h``/``arrays.hidden.c``). ``Trainer.load_checkpoint(path)`` then ``fit(...)``
with the same data continues the run exactly: with a fixed thread count the resumed run's
losses equal the uninterrupted run's, step for step.

Progress: a tqdm bar (tokens/s, loss, perplexity) when the output is a terminal, otherwise a
plain line every ``log_every`` steps. ``metrics.jsonl`` (in checkpoint_dir, or
``metrics_path``) gets one JSON object per log point and per evaluation: event ('train',
'valid', 'final'), step, epoch, lr, train_loss/train_ppl or val_loss/val_ppl/val_bpc,
tokens_per_s, time (wall seconds since the run began, across resumes).
"""
import io
import json
import math
import os
import sys
import time

import numpy as np

from . import diagnostics as _diagnostics
from . import optim as _optim
from ._checks import bounded_repr, check_int, check_real
from .data import StreamBatcher, tokenizer_from_dict
from .tasks import LanguageModelTask, Task
from .tasks import _batch_layout
from .io import CheckpointError
from .io import load as _load
from .io import save as _save

__all__ = ["Trainer", "evaluate", "generator_states", "load_generator_states", "model_config"]

_FORMAT = 1
_EVAL_FORMATS = {"loss": ".4f", "ppl": ".2f", "bpc": ".3f", "accuracy": ".4f", "bleu": ".2f"}
LN2 = math.log(2.0)


# -- random generators in a model ----------------------------------------------------------------

def generator_states(model):
    """name -> bit_generator.state (JSON-serialisable) of every numpy Generator in the model
    (Module.named_generators)."""
    return {name: g.bit_generator.state for name, g in model.named_generators()}


def load_generator_states(model, states):
    """Restore the states from :func:`generator_states`; the model must hold the same generators."""
    gens = dict(model.named_generators())
    if set(gens) != set(states):
        raise ValueError(f"the checkpoint's random generators {sorted(states)} do not match the model's "
                         f"{sorted(gens)}")
    for name, g in gens.items():
        g.bit_generator.state = states[name]


def model_config(model):
    """Constructor arguments a checkpoint of `model` needs beyond those rnncore.save records from
    ``model.config()`` itself: none ({}), since every rnncore.nn model has config()."""
    return {}


# -- evaluation ----------------------------------------------------------------------------------

def evaluate(model, ids, batch_size=32, seq_len=35, *, bits_per_char=False, threads=None):
    """Mean loss of a language model over the token ids `ids` (N,), in nats per token.

    The ids are cut into `batch_size` streams (fewer when the text is short: each stream needs
    2 tokens) and read in (seq_len, B) windows in eval mode (no dropout), the hidden state
    carried from window to window. Only ``model.forward(tokens, state)`` is used (nothing is left
    for a backward; a model with an adaptive softmax: ``model.target_log_prob(tokens, targets,
    state)``, which computes only the clusters the targets fall in), and the model's training mode
    is restored afterwards.

    Returns {'loss', 'ppl'} and, with bits_per_char (a character model), 'bpc' = loss / ln 2.
    threads: for the loss kernel (None: the model's own ``threads``).
    """
    from .nn import cross_entropy

    fn = "evaluate"
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] < 2:
        raise ValueError(f"{fn}: need at least 2 token ids (an input and a target), got shape {ids.shape}")
    B = check_int(batch_size, "batch_size", fn)
    T = check_int(seq_len, "seq_len", fn)
    batcher = StreamBatcher(ids, max(1, min(B, ids.shape[0] // 2)), T)
    threads = getattr(model, "threads", None) if threads is None else threads
    # an adaptive softmax: its forward() forms every cluster's log-probabilities; the targets' alone are cheaper
    targets_only = getattr(model, "adaptive_softmax", None) is not None and hasattr(model, "target_log_prob")
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    try:
        for k in range(batcher.num_windows):
            x, y = _batch_layout(model, *batcher.window(k))
            if targets_only:
                # the head and the clusters the targets fall in, not forward()'s (T, B, V) log-probabilities
                lp, state = model.target_log_prob(x, y, state)
                total -= float(np.sum(lp, dtype=np.float64))
                count += y.size
                continue
            logits, state = model.forward(x, state)
            # The gradient is computed and dropped: the kernel's loss-only path takes its exps from
            # libm instead of the vectorised exp, and its sums would differ from the training
            # loss's in the last bits.
            loss, _ = cross_entropy(logits, y, reduction="sum", threads=threads)
            total += float(loss)
            count += y.size
    finally:
        model.train(was_training)
    loss = total / count
    out = {"loss": loss, "ppl": _safe_exp(loss)}
    if bits_per_char:
        out["bpc"] = loss / LN2
    return out


# -- progress ------------------------------------------------------------------------------------

def _fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt_rate(x):
    return f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def _safe_exp(x):
    return math.exp(x) if x < 700 else float("inf")


class _Discard(io.TextIOBase):
    """A text stream that drops what is written: a non-root rank's output. It holds no file
    descriptor (an os.devnull file opened per Trainer stayed open until the Trainer was collected)."""

    def writable(self):
        return True

    def write(self, text):
        return len(text)


class _Progress:
    """A tqdm bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, enabled, total, initial, stream):
        self.stream = stream
        self.bar = None
        if enabled is None:
            enabled = hasattr(stream, "isatty") and stream.isatty()
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is a dependency, but a bar is not worth failing over
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=stream,
                                leave=True)

    def write(self, text):
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, n, postfix):
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(postfix, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _Throughput:
    """Target tokens, their summed loss and the time of the training steps since the last log line
    (tokens/s counts training steps only, not evaluation, samples or checkpoints)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.tokens, self.loss_sum, self.seconds, self.steps = 0, 0.0, 0.0, 0

    def add(self, loss, tokens, seconds):
        self.tokens += tokens
        self.loss_sum += loss * tokens
        self.seconds += seconds
        self.steps += 1

    @property
    def mean_loss(self):
        return self.loss_sum / self.tokens if self.tokens else math.nan  # (a task's batches may count nothing)

    @property
    def rate(self):
        return self.tokens / max(self.seconds, 1e-9)


# -- the trainer ---------------------------------------------------------------------------------

class Trainer:
    """Train a language model (LanguageModel or anything with its loss/backward/forward API).

    Args:
        model: the model; its forward(tokens, state) -> (logits, state), loss(tokens, targets,
            state) -> (loss, state) and backward() are used.
        optimizer: an rnncore.optim optimizer over the model's parameters.
        scheduler: optional LR scheduler (see the module doc for when it steps).
        clip_grad_norm: clip the global gradient norm to this value (None: no clipping).
    Keywords:
        task: an rnncore.tasks.Task (LanguageModelTask, Seq2SeqTask, ClassificationTask or one's
            own); None: LanguageModelTask(batch_size, seq_len, eval_batch_size) for a language model.
        batch_size, seq_len: B streams and the BPTT window T of training (default 32 and 35; only
            without a task).
        eval_batch_size: streams for evaluation (default batch_size; fewer if the text is short).
        scheduler_interval: 'epoch' or 'step'.
        eval_every: also evaluate every this many steps (None: only at epoch ends).
        patience: stop after this many evaluations without a better validation score (the task's
            metric: the loss for a language model).
        checkpoint_dir: where last.safetensors / best.safetensors / metrics.jsonl go (None: no files).
        checkpoint_every: also write last.safetensors every this many steps.
        metrics_path: the JSON-lines metrics log (default checkpoint_dir/metrics.jsonl; None and
            no checkpoint_dir: no log).
        tokenizer: saved in checkpoints (to_dict()); a char tokenizer turns on bits per
            character and training-time samples.
        config: constructor arguments recorded in checkpoints over the model's own config()
            (default: none).
        log_every: steps between log lines / metrics records.
        grad_flow_every: every this many steps, also record the gradient flow of that step
            (rnncore.diagnostics): a metrics record {"event": "grad_flow", "step", "layers":
            {path: {"grad_norm": mean ||dL/dh_t|| of the last layer's forward direction against
            the distance back from the window's end (a list, distance 0 first), "spectral_radius",
            "max_singular_value": {parameter: per gate block}}}} (None: never; the norms come
            from the BPTT sweep the step runs anyway).
        progress: True (tqdm bar), False (plain lines) or None (a bar when the stream is a terminal).
        sample_every: print a generated sample every this many steps (needs a tokenizer);
            sample_length, sample_prime (text), sample_temperature shape it.
        sample_at_end: also print one when fit() ends, unless the last step just printed one
            (default: when sample_every is set), so even a run shorter than sample_every shows one.
        threads: threads for gradient clipping (None: rnncore's default).
        precision: 'bf16' trains (and evaluates) in bfloat16 mixed precision -- model.set_precision('bf16'):
            the recurrent layers' and Linear layers' products take bf16-rounded operands with float32
            sums, while the master weights, gradients and optimizer state stay float32 (PyTorch's
            autocast with float32 master weights); 'fp32' sets float32; None (default) leaves the
            model's own setting. Checkpoints hold the float32 weights either way.
        stream: where progress goes (default sys.stdout).
        info: any JSON-serialisable value kept in checkpoints as ``extra['info']`` (e.g. how the
            run was started).
        distributed: data-parallel training over MPI (rnncore.distributed): a World from
            rnncore.distributed.init(), or True (init() it here; needs mpi4py); None/False: this
            process alone. With more than one rank the batch size is the global one, each rank
            trains on its slice of every batch, and only rank 0 prints, logs and writes files.
    """

    def __init__(self, model, optimizer, scheduler=None, clip_grad_norm=None, *, task=None, batch_size=None,
                 seq_len=None, eval_batch_size=None, scheduler_interval="epoch", eval_every=None, patience=None,
                 checkpoint_dir=None, checkpoint_every=None, metrics_path=None, tokenizer=None, config=None,
                 log_every=100, progress=None, sample_every=None, sample_length=200, sample_prime=None,
                 sample_temperature=0.8, sample_at_end=None, threads=None, stream=None, info=None,
                 grad_flow_every=None, distributed=None, precision=None):
        fn = "Trainer"
        if task is None:
            if not all(hasattr(model, a) for a in ("loss", "backward", "forward", "parameters")):
                raise TypeError(f"{fn}: model must be a language model with forward/loss/backward, "
                                f"got {type(model).__name__}")
            # checked here so that the errors name the Trainer's arguments
            task = LanguageModelTask(check_int(32 if batch_size is None else batch_size, "batch_size", fn),
                                     check_int(35 if seq_len is None else seq_len, "seq_len", fn),
                                     check_int(eval_batch_size, "eval_batch_size", fn, optional=True))
        elif not isinstance(task, Task):
            raise TypeError(f"{fn}: task must be an rnncore.tasks.Task (LanguageModelTask, Seq2SeqTask, "
                            f"ClassificationTask, ...), got {type(task).__name__}")
        elif batch_size is not None or seq_len is not None or eval_batch_size is not None:
            raise ValueError(f"{fn}: with a task, give batch_size/seq_len/eval_batch_size to the task "
                             f"({type(task).__name__}), not to the Trainer")
        else:
            task.check_model(model)
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"{fn}: optimizer must be an rnncore.optim optimizer, got {type(optimizer).__name__}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"{fn}: scheduler_interval must be 'epoch' or 'step', got "
                             f"{bounded_repr(scheduler_interval)}")
        if precision is not None:
            if not callable(getattr(model, "set_precision", None)):
                raise TypeError(f"{fn}: precision needs a model with set_precision() (an rnncore.nn Module), "
                                f"got {type(model).__name__}")
            model.set_precision(precision)  # ValueError/TypeError name the precision or the dtype
        self.precision = getattr(model, "compute_precision", "fp32")
        self.model = model
        self.task = task
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.clip_grad_norm = check_real(clip_grad_norm, "clip_grad_norm", fn, above=0.0, optional=True)
        # the LM task's shape (None for other tasks)
        self.batch_size = getattr(task, "batch_size", None)
        self.seq_len = getattr(task, "seq_len", None)
        self.eval_batch_size = getattr(task, "eval_batch_size", None)
        self.scheduler_interval = scheduler_interval
        self.eval_every = check_int(eval_every, "eval_every", fn, optional=True)
        self.patience = check_int(patience, "patience", fn, optional=True)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", fn, optional=True)
        log_every = check_int(log_every, "log_every", fn)
        self.grad_flow_every = check_int(grad_flow_every, "grad_flow_every", fn, optional=True)
        sample_every = check_int(sample_every, "sample_every", fn, optional=True)
        sample_length = check_int(sample_length, "sample_length", fn)
        if sample_every is not None and not isinstance(task, LanguageModelTask):
            raise ValueError(f"{fn}: sample_every needs a language-model task, this one is {type(task).__name__}")
        if metrics_path is None and checkpoint_dir is not None:
            metrics_path = os.path.join(checkpoint_dir, "metrics.jsonl")
        self.metrics_path = metrics_path
        self.tokenizer = tokenizer
        self.config = {} if config is None else dict(config)
        self.log_every = log_every
        self.progress = progress
        self.sample_every, self.sample_length = sample_every, sample_length
        self.sample_prime = sample_prime
        self.sample_temperature = check_real(sample_temperature, "sample_temperature", fn, at_least=0.0, finite=True)
        self.sample_at_end = bool(sample_every) if sample_at_end is None else bool(sample_at_end)
        self.threads = threads
        self.stream = sys.stdout if stream is None else stream
        self.info = info
        # training state (all of it goes into checkpoints)
        self.epoch = 0          # epochs completed
        self.position = 0       # next window of the current epoch
        self.step = 0           # optimizer steps taken
        self.best_loss = math.inf   # the validation loss of the best evaluation (by the task's metric)
        self.best_score = None      # the best value of the task's metric (None: no evaluation yet)
        self.best_epoch = None      # the epoch (1-based) of that evaluation
        self.bad_evals = 0
        self.last_eval_step = -1
        self.elapsed = 0.0      # wall seconds of training, across resumes
        self.tokens_seen = 0
        self.stopped_early = False
        self._batcher_state = None  # from a checkpoint, checked against the data in fit()
        self._batcher = None
        self._progress = None
        self._clock = None       # (perf_counter at the start of fit(), elapsed then)
        self._last_eval = None   # the result of the evaluation at step last_eval_step
        self._sampled_at = None  # the step of the last printed sample
        self.world = self._resolve_world(distributed)
        self._synced = False     # parameters, optimizer and state broadcast from rank 0 yet?
        self._rank_rngs = None   # every rank's generator states, from a distributed checkpoint
        self._agreed_elapsed = 0.0  # a distributed run: the ranks' mean time into fit(), from the last allreduce
        if self.world is not None and not self.world.is_root:  # only rank 0 speaks
            self.stream = _Discard()  # no file: nothing to close
            self.progress = False
            self.metrics_path = None
        task.bind(self)

    @staticmethod
    def _resolve_world(distributed):
        if distributed is None or distributed is False:
            return None
        from . import distributed as _dist

        if distributed is True:
            world = _dist.init(require=True)
        elif isinstance(distributed, _dist.World):
            world = distributed
        else:
            raise TypeError(f"Trainer: distributed must be None, a bool or an rnncore.distributed.World, got "
                            f"{type(distributed).__name__}")
        return world if world.size > 1 else None

    # -- the loop ---------------------------------------------------------------------------
    @property
    def is_char_model(self):
        return getattr(self.tokenizer, "kind", None) == "char"

    @property
    def hidden(self):
        """The carried state of a language-model task (None for other tasks)."""
        return getattr(self.task, "hidden", None)

    @hidden.setter
    def hidden(self, value):
        if not isinstance(self.task, LanguageModelTask):
            raise AttributeError(f"Trainer.hidden: only a language-model task carries a state, not "
                                 f"{type(self.task).__name__}")
        self.task.hidden = value

    def train_step(self, inputs, targets=None):
        """One optimizer step on a batch; returns its mean loss. A language model: (T, B) inputs
        and targets, one truncated-BPTT step carrying the state; other tasks: train_step(batch)."""
        return self._train_batch(inputs if targets is None else (inputs, targets))[0]

    def _train_batch(self, batch):
        """Zero the gradients, the task's loss and backward, clip, step: (mean loss, count)."""
        model = self.model
        self.optimizer.zero_grad()
        flow = self.grad_flow_every is not None and (self.step + 1) % self.grad_flow_every == 0
        if flow:
            _diagnostics.record_grad_norms(model)
        world = self.world
        if world is None:
            loss, count = self.task.train_batch(model, batch)
        else:  # this rank's columns, then the gradients averaged over the ranks (weighted by count)
            width = self.task.batch_width(batch)
            if width < world.size and isinstance(self.task, LanguageModelTask):  # the same on every rank
                # a rank without streams carries no state, and the checkpoints' gather of it would not match
                raise ValueError(f"Trainer: a distributed language model needs at least one stream per rank: "
                                 f"the batch has {width} stream(s) for {world.size} ranks; use batch_size >= "
                                 f"{world.size} (and text long enough for that many streams)")
            lo, hi = world.shard(width)
            loss, count = (0.0, 0) if hi == lo else self.task.train_batch(model, self.task.local_batch(batch, lo, hi))
            clock = time.perf_counter() - self._clock[0] if self._clock is not None else 0.0
            loss, count, self._agreed_elapsed = world.allreduce_gradients(model.parameters(), loss, count, clock,
                                                                          step=self.step + 1)
        if flow:
            self._record_grad_flow(model)
        if self.clip_grad_norm is not None:
            _optim.clip_grad_norm_(model.parameters(), self.clip_grad_norm, threads=self.threads)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step" \
                and not isinstance(self.scheduler, _optim.ReduceLROnPlateau):
            self.scheduler.step()
        return float(loss), count

    def fit(self, train, valid=None, *, epochs=1, max_steps=None, max_minutes=None):
        """Train until `epochs` epochs are done (counting those of a resumed run), `max_steps`
        optimizer steps in total, `max_minutes` of this call, or early stopping.

        train, valid: the task's data (a language model: (N,) token ids or a StreamBatcher for
        train, ids or None for valid; see rnncore.tasks for the others).
        Returns a dict: steps, epochs, stop (the reason), best_val_loss, best_val_<metric> (the
        task's metric), best_epoch, elapsed, and the final evaluation (val_loss/val_ppl/val_bpc,
        val_accuracy, ...) when there is validation data.
        """
        if self.world is None:
            return self._fit(train, valid, epochs, max_steps, max_minutes)
        with self.world.abort_on_error():  # an exception on any rank ends the job (MPI_Abort)
            return self._fit(train, valid, epochs, max_steps, max_minutes)

    def _fit(self, train, valid, epochs, max_steps, max_minutes):
        n = self._attach_batcher(train)
        if self.world is not None and not self._synced:
            self._sync_ranks()
        total = epochs * n if max_steps is None else min(epochs * n, max_steps)
        self._progress = _Progress(self.progress, total, min(self.step, total), self.stream)
        start = time.perf_counter()
        self._clock = (start, self.elapsed)
        deadline = None if max_minutes is None else start + 60.0 * float(max_minutes)
        window = _Throughput()
        try:
            stop = self._train_epochs(n, valid, epochs, max_steps, deadline, window)
            if window.steps:
                self._log_train(window.mean_loss, window.rate)
        finally:
            self._progress.close()
            self._progress = None
        return self._finish(stop, valid)

    def _sync_ranks(self):
        """Rank 0's parameters, optimizer state, scheduler and trainer counters on every rank; each
        rank's own dropout generators (the checkpoint's when it has this world size's, else rank
        0's jumped by the rank)."""
        world = self.world
        world.broadcast_parameters(self.model.parameters())
        world.broadcast_optimizer(self.optimizer)
        keys = ("epoch", "position", "step", "best_loss", "best_score", "best_epoch", "bad_evals", "last_eval_step",
                "elapsed", "tokens_seen")
        shared = world.broadcast_object({"counters": {k: getattr(self, k) for k in keys},
                                         "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                                         "rng": generator_states(self.model), "rng_ranks": self._rank_rngs},
                                        "the broadcast of the trainer state")
        for k, v in shared["counters"].items():
            setattr(self, k, v)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(shared["scheduler"])
        ranks = shared["rng_ranks"]
        if isinstance(ranks, list) and len(ranks) == world.size:
            load_generator_states(self.model, ranks[world.rank])
        else:
            load_generator_states(self.model, world.rank_generator_states(shared["rng"]))
        self._synced = True

    def _attach_batcher(self, train):
        """The task's batching over `train`, moved to the resumed checkpoint's position if there is
        one; returns the number of batches per epoch."""
        n = self.task.attach(train)
        self._batcher = self.task.batcher
        if self._batcher_state is not None:
            try:
                self.task.load_batching_state(self._batcher_state)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"Trainer.fit: the resumed checkpoint was trained on other data or batch shape: "
                                 f"{exc}") from None
            self._batcher_state = None
        self.position = min(self.position, n)
        return n

    def _train_epochs(self, n, valid, epochs, max_steps, deadline, window):
        """Epochs until one of the limits or early stopping; returns why training stopped."""
        stop = "max_steps" if max_steps is not None and self.step >= max_steps else None
        while stop is None and self.epoch < epochs:
            if self.position == 0:
                self.task.start_epoch()  # an LM: each epoch starts from a zero state
            stop = self._train_windows(n, valid, max_steps, deadline, window)
            if self.position >= n and self._end_epoch(valid):
                stop = stop or "early_stopping"
        return stop or "epochs"

    def _train_windows(self, n, valid, max_steps, deadline, window):
        """The current epoch's remaining batches, up to a limit: returns the reason for stopping, or
        None at the epoch's end."""
        while self.position < n:
            self._timed_step(window)
            stop = "early_stopping" if self._every_so_often(valid, window) else None
            if max_steps is not None and self.step >= max_steps:
                stop = stop or "max_steps"
            # distributed: the ranks' mean clock from the step's allreduce, the same on every rank
            now = time.perf_counter() if self.world is None else self._clock[0] + self._agreed_elapsed
            if deadline is not None and now >= deadline:
                stop = stop or "max_minutes"
            if stop:
                return stop
        return None

    def _timed_step(self, window):
        """A training step on the next batch, and its bookkeeping: counters, throughput, progress bar."""
        batch = self.task.batch(self.epoch, self.position)
        t0 = time.perf_counter()
        loss, count = self._train_batch(batch)
        window.add(loss, count, time.perf_counter() - t0)
        if not math.isfinite(loss):
            raise FloatingPointError(f"Trainer.fit: the training loss became {loss} at step {self.step + 1}; "
                                     "lower the learning rate or clip the gradients (clip_grad_norm)")
        self.position += 1
        self.step += 1
        self.tokens_seen += count
        start, elapsed0 = self._clock
        self.elapsed = elapsed0 + (time.perf_counter() - start)
        ppl = f" ppl={_safe_exp(loss):.2f}" if self.task.report_ppl else ""
        self._progress.update(1, f"loss={loss:.3f}{ppl} {self.task.unit}/s={_fmt_rate(window.rate)}")

    def _every_so_often(self, valid, window):
        """After a step, what runs every so many steps: the log line, an evaluation, a sample, a
        checkpoint. True when early stopping says stop."""
        if self.step % self.log_every == 0:
            self._log_train(window.mean_loss, window.rate)
            window.reset()
        stop = False
        if valid is not None and self.eval_every and self.step % self.eval_every == 0:
            stop = self._scheduled_eval(valid)
        if self.sample_every and self.step % self.sample_every == 0:
            self.print_sample()
        if self.checkpoint_dir and self.checkpoint_every and self.step % self.checkpoint_every == 0:
            self.save_checkpoint(self._path("last"))
        return stop

    def _finish(self, stop, valid):
        """After the last step: the final evaluation, a last sample, the last checkpoint; fit()'s result."""
        self.stopped_early = stop == "early_stopping"
        result = {"steps": self.step, "epochs": self.epoch, "stop": stop, "best_val_loss": self.best_loss,
                  "best_val_" + self.task.metric: math.nan if self.best_score is None else self.best_score,
                  "best_epoch": self.best_epoch, "elapsed": self.elapsed}
        if self.task.metric == "loss":
            result["best_val_loss"] = self.best_loss
        if valid is not None:
            if self.last_eval_step == self.step and self._last_eval is not None:
                ev = self._last_eval
            else:  # a report only: it does not count for patience, plateau or the best checkpoint
                ev = self._agreed_evaluation(valid)
                self._log_eval(ev, "final")
            result.update({"val_" + k: v for k, v in ev.items()})
        if self.sample_at_end and self.tokenizer is not None and self._sampled_at != self.step:
            self.print_sample()
        if self.checkpoint_dir:
            self.save_checkpoint(self._path("last"))
        return result

    def _end_epoch(self, valid):
        """Evaluation, epoch scheduler, next epoch. True when early stopping says stop."""
        stop = False
        if valid is not None and self.last_eval_step != self.step:
            stop = self._scheduled_eval(valid)
        self.epoch += 1
        self.position = 0
        self.task.start_epoch()
        if self.scheduler is not None and self.scheduler_interval == "epoch" \
                and not isinstance(self.scheduler, _optim.ReduceLROnPlateau):
            self.scheduler.step()
        if self.checkpoint_dir:
            self.save_checkpoint(self._path("last"))
        return stop

    def _scheduled_eval(self, valid):
        """Evaluate, log, keep the best checkpoint, step a plateau scheduler. True: stop (patience)."""
        ev = self._agreed_evaluation(valid)
        self.last_eval_step = self.step
        self._last_eval = ev
        if self.task.metric not in ev:
            raise ValueError(f"Trainer.fit: the task's evaluation gave {sorted(ev)}, not its metric "
                             f"{self.task.metric!r}")
        score = ev[self.task.metric]
        improved = self.task.better(score, self.best_score)
        if improved:
            self.best_score = score
            self.best_loss = ev.get("loss", math.nan)
            self.best_epoch = self.epoch + 1
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        self._log_eval(ev, "valid", best=improved)
        if isinstance(self.scheduler, _optim.ReduceLROnPlateau):
            self.scheduler.step(ev["loss"] if "loss" in ev else score)
        if improved and self.checkpoint_dir:
            self.save_checkpoint(self._path("best"))
        return self.patience is not None and self.bad_evals >= self.patience

    # -- evaluation -------------------------------------------------------------------------
    def _agreed_evaluation(self, valid):
        """The evaluation fit() acts on. Distributed: every rank evaluates (so none waits in the
        broadcast for the whole evaluation), then all take rank 0's result. The ranks' own results
        can differ in the last bits (another CPU, ISA or thread count on a mixed set of hosts), and
        the best checkpoint, patience and a plateau scheduler must decide the same on every rank."""
        ev = self.evaluate(valid)
        if self.world is not None:
            ev = self.world.broadcast_object(ev, f"the broadcast of the evaluation at step {self.step}")
        return ev

    def evaluate(self, data, batch_size=None):
        """The task's evaluation of `data` (a dict of metrics). A language model: the mean loss over
        the ids `data` (nats/token) in eval mode with the state carried across windows
        (:func:`evaluate` with this trainer's seq_len and eval_batch_size or batch_size): {'loss',
        'ppl'} and 'bpc' (bits per character) for a character model.
        The training state (carried hidden state, generators) is left untouched.
        """
        return self.task.evaluate(self.model, data, batch_size)

    # -- samples ----------------------------------------------------------------------------
    def sample(self, length=None, prime=None, temperature=None, seed=None):
        """Text generated by the model from `prime` (needs a tokenizer); training state untouched."""
        from . import sampling

        if not isinstance(self.task, LanguageModelTask):
            raise ValueError(f"Trainer.sample: needs a language-model task, this one is {type(self.task).__name__}")
        if self.tokenizer is None:
            raise ValueError("Trainer.sample: needs the tokenizer (Trainer(..., tokenizer=tok))")
        prime = self.sample_prime if prime is None else prime
        ids = self._prime_ids(prime)
        out = sampling.generate(self.model, ids, length or self.sample_length,
                                 temperature=self.sample_temperature if temperature is None else temperature,
                                 seed=self.step if seed is None else seed, threads=self.threads)
        return self.tokenizer.decode(ids) + self.tokenizer.decode(np.asarray(out).reshape(-1))

    def _prime_ids(self, prime):
        tok = self.tokenizer
        if prime:
            return tok.encode(prime)
        vocab = tok.vocab
        for candidate in ("\n", "<eos>"):
            if candidate in vocab:
                return np.array([vocab[candidate]], np.int64)
        return np.zeros(1, np.int64)

    def print_sample(self):
        """Write a sample, headed ``---- sample at step N ----`` (nothing without a tokenizer)."""
        if self.tokenizer is None or not isinstance(self.task, LanguageModelTask):
            return
        self._sampled_at = self.step
        if self.world is not None and not self.world.is_root:
            return  # only rank 0 prints
        text = self.sample()
        self._write(f"---- sample at step {self.step} ----\n{text}\n" + "-" * 30)

    # -- logging ----------------------------------------------------------------------------
    def _write(self, text):
        if self._progress is not None:
            self._progress.write(text)
        else:
            print(text, file=self.stream, flush=True)

    def _lr(self):
        return float(self.optimizer.param_groups[0]["lr"])

    def _record(self, record):
        if self.metrics_path is None:
            return
        directory = os.path.dirname(os.path.abspath(self.metrics_path))
        os.makedirs(directory, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _record_grad_flow(self, model):
        """The grad_flow metrics record of the step just differentiated (see grad_flow_every)."""
        layers = {}
        spectra = _diagnostics.recurrent_spectra(model)
        for path, layer in _diagnostics.recurrent_layers(model):
            if layer.grad_norms is None:
                continue
            _, mean = _diagnostics.distance_profile(layer.grad_norms[(layer.num_layers - 1) * layer.num_directions])
            entry = {"grad_norm": mean.tolist(), "spectral_radius": {}, "max_singular_value": {}}
            for r in spectra:
                if r["layer"] == path:
                    entry["spectral_radius"].setdefault(r["parameter"], []).append(r["spectral_radius"])
                    entry["max_singular_value"].setdefault(r["parameter"], []).append(r["max_singular_value"])
            layers[path] = entry
        _diagnostics.record_grad_norms(model, False)
        self._record({"event": "grad_flow", "step": self.step + 1, "layers": layers})

    def _log_train(self, mean_loss, rate):
        ppl = self.task.report_ppl
        rec = {"event": "train", "step": self.step, "epoch": self.epoch + 1, "lr": self._lr(), "train_loss": mean_loss}
        if ppl:
            rec["train_ppl"] = _safe_exp(mean_loss)
        rec.update(tokens_per_s=rate, time=self.elapsed)
        if self.is_char_model and isinstance(self.task, LanguageModelTask):
            rec["train_bpc"] = mean_loss / LN2
        self._record(rec)
        if self._progress is None or self._progress.bar is None:
            ppl = f"ppl {_safe_exp(mean_loss):.2f} | " if ppl else ""
            self._write(f"step {self.step:>7} | epoch {self.epoch + 1} | lr {self._lr():.3g} | loss {mean_loss:.4f} | "
                        f"{ppl}{_fmt_rate(rate)} {self.task.unit}/s | {_fmt_time(self.elapsed)}")

    def _log_eval(self, ev, event, best=False):
        rec = {"event": event, "step": self.step, "epoch": self.epoch + 1, "lr": self._lr()}
        rec.update({"val_" + k: v for k, v in ev.items()})
        rec["time"] = self.elapsed
        self._record(rec)
        mark = " (best)" if best else ""
        shown = " | ".join(f"{k} {v:{_EVAL_FORMATS.get(k, '.4f')}}" for k, v in ev.items()
                           if isinstance(v, (int, float)))
        self._write(f"{event} | step {self.step} | epoch {self.epoch + 1} | {shown}{mark}")

    # -- checkpoints ------------------------------------------------------------------------
    def _path(self, name):
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        return os.path.join(self.checkpoint_dir, f"{name}.safetensors")

    def state_dict(self):
        """The trainer's own state (JSON-serialisable; the hidden state goes in as tensors)."""
        hidden = self.hidden
        finite = (lambda v: v if v is not None and math.isfinite(v) else None)
        return {"format": _FORMAT, "epoch": self.epoch, "position": self.position, "step": self.step,
                "best_loss": finite(self.best_loss), "metric": self.task.metric, "best_score": finite(self.best_score),
                "best_epoch": self.best_epoch,
                "bad_evals": self.bad_evals, "last_eval_step": self.last_eval_step, "elapsed": self.elapsed,
                "tokens_seen": self.tokens_seen, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "hidden": None if hidden is None else ("lstm" if isinstance(hidden, tuple) else "h")}

    def save_checkpoint(self, path):
        """Model, optimizer, tokenizer, scheduler and trainer state in one safetensors file (atomic)."""
        arrays = dict(self.task.arrays())  # an LM: the carried state, hidden.h (and hidden.c)
        batcher = self.task.batching_state(self.epoch, self.position)
        extra = {"info": self.info, "trainer": self.state_dict(), "batcher": batcher,
                 "task": {"name": self.task.name, "state": self.task.state_dict()}, "rng": generator_states(self.model),
                 "tokenizer": None if self.tokenizer is None else self.tokenizer.to_dict(),
                 "scheduler": None if self.scheduler is None else
                 {"type": type(self.scheduler).__name__, "state": self.scheduler.state_dict()}}
        if self.world is not None:  # every rank's generators; rank 0 alone writes
            extra["rng_ranks"] = self.world.gather_objects(extra["rng"], "the gather of the generator states")
            if not self.world.is_root:
                return
        _save(path, self.model, self.optimizer, config=self.config, extra=extra, arrays=arrays)

    def load_checkpoint(self, path):
        """Restore model, optimizer, scheduler, generators and trainer state from `path`; a
        following fit() with the same data continues exactly where the saved run was."""
        ckpt = _load(path)
        extra = ckpt.extra if isinstance(ckpt.extra, dict) else {}
        state = extra.get("trainer")
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise CheckpointError(f"{path}: not a Trainer checkpoint (no trainer state); it can be loaded with "
                                  "rnncore.load(path, model) but not resumed")
        task = extra.get("task") if isinstance(extra.get("task"), dict) else {"name": "lm", "state": None}
        if task.get("name") != self.task.name:
            raise CheckpointError(f"{path}: the run trained task {bounded_repr(task.get('name'))}, this trainer's task "
                                  f"is {self.task.name!r} ({type(self.task).__name__})")
        if (state.get("batch_size"), state.get("seq_len")) != (self.batch_size, self.seq_len):
            raise CheckpointError(f"{path}: the run used batch_size={state['batch_size']}, "
                                  f"seq_len={state['seq_len']}; this trainer has batch_size={self.batch_size}, "
                                  f"seq_len={self.seq_len}")
        sched = extra.get("scheduler")
        if (sched is None) != (self.scheduler is None) or \
                (sched is not None and sched.get("type") != type(self.scheduler).__name__):
            raise CheckpointError(f"{path}: the run used scheduler {sched and sched.get('type')}, this trainer has "
                                  f"{type(self.scheduler).__name__ if self.scheduler is not None else None}")
        _load(path, self.model, self.optimizer)  # checks everything before changing anything
        if sched is not None:
            self.scheduler.load_state_dict(sched["state"])
        load_generator_states(self.model, extra.get("rng", {}))
        if extra.get("tokenizer") is not None and self.tokenizer is None:
            self.tokenizer = tokenizer_from_dict(extra["tokenizer"])
        task_state = task.get("state")
        if task_state is None:  # a checkpoint from before tasks: an LM's carried-state kind is in the trainer state
            task_state = {"hidden": state.get("hidden")}
        self.task.load_state_dict(task_state)
        self.task.load_arrays(ckpt.arrays)
        self.epoch, self.position, self.step = state["epoch"], state["position"], state["step"]
        self.best_loss = math.inf if state["best_loss"] is None else state["best_loss"]
        if state.get("metric", "loss") == self.task.metric:
            self.best_score = state.get("best_score", state["best_loss"])
        else:  # another metric: its best starts afresh
            self.best_score = None
        self.best_epoch = state.get("best_epoch")
        self.bad_evals, self.last_eval_step = state["bad_evals"], state["last_eval_step"]
        self.elapsed, self.tokens_seen = state["elapsed"], state["tokens_seen"]
        self._batcher_state = extra.get("batcher")  # checked against the data by fit()
        self._rank_rngs = extra.get("rng_ranks")
        self._synced = False
        return ckpt
