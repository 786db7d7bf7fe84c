"""Multi-step calls through the public API, and the cheap checks of results.

A scenario builds what it needs (a layer, a model, an optimizer, a file), runs it the way a
user would (forward, backward, step, save, load, generate, ...) and checks what is cheap to
check: output shapes, finite outputs for finite inputs, ids inside the vocabulary, round
trips. A failed check raises CheckFailed, which the worker reports as unexpected. Every
argument may be anything: the strategies build mostly valid arguments and then mutate some.

CHECKS maps the dotted name of a direct rnncore._core call to a check of its result.
"""
import itertools
import json
import math
import os
import struct
import tempfile

import numpy as np

import rnncore
from rnncore import _core, data, nn, optim, sampling

__all__ = [
    "CheckFailed", "rnn_layer", "rnn_cell", "embedding", "linear", "dropout", "layernorm", "loss_function",
    "loss_module", "language_model", "sequence_classifier", "sequence_tagger", "conditioned_generator",
    "optimizer", "optimizer_load_state", "scheduler", "clip_norm", "clip_value", "generate", "stream",
    "beam_search", "decoder", "save_load", "load_bytes", "load_state_dict", "from_torch", "char_tokenizer",
    "word_tokenizer", "vocabulary", "tokenizer_from_dict", "stream_batcher", "lm_batches", "pad_sequences",
    "bucket_iterator", "read_text", "with_threads", "core_recurrent", "core_decoder", "trainer_fit",
    "module_api", "crash_for_test", "hang_for_test", "write_past_for_test", "rnn_cell_base", "adaptive_softmax",
    "fixed_window_lm", "evaluate", "ngram", "load_arpa_bytes", "core_attention", "attention",
    "core_attn_decoder", "input_feed_rnn", "seq2seq_model",
    "pair_tokenizer", "pair_dataset", "pair_batcher", "split_pairs", "osis_text", "parallel_files", "read_tsv",
    "bible_pairs", "bleu", "token_accuracy", "perplexity",
    "rnn_stream", "core_recurrent_stream",
    "world_of_one",
    "bilm", "scalar_mix", "elmo_classifier",
]


class CheckFailed(Exception):
    """A call returned, but what it returned is wrong."""


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def _numeric(a):
    return isinstance(a, np.ndarray) and a.dtype.kind in "biufc"


MAX_DEPTH = 8  # lists nested deeper (Junk("deep_list")) are no numbers: not finite, not moderate


def finite(*values, depth=0):
    """True when every value is a finite number or a numeric array of finite numbers (None is fine)."""
    for v in values:
        if v is None:
            continue
        if isinstance(v, (tuple, list)):
            if depth >= MAX_DEPTH or not finite(*v, depth=depth + 1):
                return False
            continue
        if isinstance(v, (bool, int, float, np.number)):
            if not np.isfinite(v):
                return False
            continue
        if not _numeric(v):
            return False
        if v.dtype.kind in "fc" and v.size and not np.isfinite(v).all():
            return False
    return True


def moderate(*values, limit=1e3, depth=0):
    """finite(), and no magnitude above `limit` (so that a result cannot overflow)."""
    if not finite(*values, depth=depth):
        return False
    for v in values:
        if isinstance(v, (tuple, list)):
            if not moderate(*v, limit=limit, depth=depth + 1):
                return False
        elif isinstance(v, np.ndarray) and v.size and v.dtype.kind in "fc" and np.abs(v).max() > limit:
            return False
        elif isinstance(v, (float, int)) and not isinstance(v, bool) and abs(v) > limit:
            return False
    return True


def expect_shape(value, shape, what):
    expect(np.shape(value) == tuple(shape), f"{what} has shape {np.shape(value)}, expected {tuple(shape)}")


def expect_finite(value, what):
    expect(finite(value), f"{what} is not finite for finite inputs")


def _grad_like(grad, out):
    """The gradient to feed backward: 'ones' (and 'zeros') are made to match `out`."""
    if isinstance(grad, str) and grad in ("ones", "zeros"):
        if isinstance(out, tuple):
            return tuple(_grad_like(grad, o) for o in out)
        if out is None:
            return None
        return (np.ones_like if grad == "ones" else np.zeros_like)(out)
    return grad


# -- rnncore.nn -----------------------------------------------------------------------------------

_RNN_CLASSES = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
_CELL_CLASSES = {"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}


def _params_finite(module):
    return all(finite(p.data) for p in module.parameters())


def rnn_layer(cls, ctor, x, hx=None, lengths=None, grad="ones", grad_h_n=None, train=True, backward=True,
              record_grad_norms=False):
    """nn.RNN/LSTM/GRU(**ctor), forward(x, hx, lengths), then backward(grad, grad_h_n)
    (recording ||dL/dh_t|| when record_grad_norms)."""
    layer = _RNN_CLASSES[cls](**ctor)
    layer.record_grad_norms = bool(record_grad_norms)
    layer.train(train)
    out, h_n = layer(x, hx, lengths)
    xa = np.asarray(x)
    D = 2 if layer.bidirectional else 1
    H, LD, R = layer.hidden_size, layer.num_layers * D, layer.state_size  # R: proj_size or H
    if xa.ndim == 3:
        T, B = (xa.shape[1], xa.shape[0]) if layer.batch_first else xa.shape[:2]
        expect_shape(out, xa.shape[:2] + (D * R,), "output")
        state_shape, h_shape = (LD, B, H), (LD, B, R)
    else:
        expect_shape(out, (xa.shape[0], D * R), "output")
        state_shape, h_shape = (LD, H), (LD, R)
    states = h_n if isinstance(h_n, tuple) else (h_n,)
    for i, s in enumerate(states):
        expect_shape(s, h_shape if i == 0 else state_shape, "h_n" if i == 0 else "c_n")
    if moderate(xa, hx, limit=1e6):
        expect_finite(out, "output")
    if backward:
        dx = layer.backward(_grad_like(grad, out), _grad_like(grad_h_n, h_n))
        expect_shape(dx, xa.shape, "grad of x")
        if record_grad_norms:
            expect_shape(layer.grad_norms, (LD, T, B) if xa.ndim == 3 else (LD, xa.shape[0]), "grad_norms")
            expect(not (layer.grad_norms < 0).any(), "grad_norms has a negative norm")
    return out


def diagnostics(norms, lengths, reverse, cls, ctor, model):
    """rnncore.diagnostics over given norms and a small model (layer or classifier, or junk)."""
    from rnncore import diagnostics as dg
    k, v = dg.distance_profile(norms, lengths, reverse)
    expect(k.shape == v.shape and k.ndim == 1, "distance_profile: distance and mean differ in shape")
    if model == "layer":
        model = _RNN_CLASSES[cls](**ctor)
    elif model == "classifier":
        model = nn.SequenceClassifier(input_size=ctor["input_size"], hidden_size=ctor["hidden_size"], num_classes=2,
                                      cell=cls.lower(), seed=0)
    layers = dg.record_grad_norms(model)
    expect(len(layers) == 1, "record_grad_norms: one recurrent layer expected")
    expect(dg.grad_norms(model) == {}, "grad_norms before any backward")
    rows = dg.recurrent_spectra(model)
    expect(all(r["spectral_radius"] <= r["max_singular_value"] * (1 + 1e-6) + 1e-12 for r in rows),
           "spectral radius above the largest singular value")
    return rows


def _step_cell(cell, hx, xs):
    """Step `cell` over the inputs xs from state hx, checking each new state's shape: (last state, all states)."""
    h, outs = hx, []
    for x in xs:
        h = cell(x, h)
        outs.append(h)
        xa = np.asarray(x)
        for s in (h if isinstance(h, tuple) else (h,)):
            expect_shape(s, xa.shape[:-1] + (cell.hidden_size,), "new state")
    return h, outs


def rnn_cell(cls, ctor, xs, hx=None, grad="ones", train=True):
    """nn.RNNCell/LSTMCell/GRUCell(**ctor): forward over each x of xs, then backward newest first."""
    cell = _CELL_CLASSES[cls](**ctor)
    cell.train(train)
    h, outs = _step_cell(cell, hx, xs)
    if train:
        for out in reversed(outs):
            g = _grad_like(grad, out)
            if cls == "LSTMCell":
                g = g if isinstance(g, tuple) else (g, None)
                cell.backward(*g)
            else:
                cell.backward(g)
    return len(outs)


def embedding(ctor, ids, grad="ones"):
    layer = nn.Embedding(**ctor)
    out = layer(ids)
    ia = np.asarray(ids)
    expect_shape(out, ia.shape + (layer.embedding_dim,), "output")
    expect(np.array_equal(out, layer.weight.data[ia.astype(np.int64)], equal_nan=True), "rows differ from weight[ids]")
    layer.backward(_grad_like(grad, out))
    return out


def linear(ctor, x, grad="ones", need_input_grad=True):
    layer = nn.Linear(**ctor)
    y = layer(x)
    xa = np.asarray(x)
    expect_shape(y, xa.shape[:-1] + (layer.out_features,), "output")
    if moderate(xa):
        expect_finite(y, "output")
        ref = xa.astype(np.float64) @ layer.weight.data.T.astype(np.float64)
        if layer.bias is not None:
            ref = ref + layer.bias.data
        tol = 1e-3 * (1 + np.abs(xa).max(initial=0)) * layer.in_features
        expect(np.allclose(y, ref, rtol=1e-3, atol=tol), "Linear output differs from x @ W.T + b")
    dx = layer.backward(_grad_like(grad, y), need_input_grad)
    if need_input_grad:
        expect_shape(dx, xa.shape, "grad of x")
    return y


def dropout(ctor, x, grad="ones", train=True):
    layer = nn.Dropout(**ctor)
    layer.train(train)
    y = layer(x)
    expect_shape(y, np.shape(x), "output")
    layer.backward(_grad_like(grad, y))
    return y


def layernorm(ctor, x, grad="ones"):
    layer = nn.LayerNorm(**ctor)
    y = layer(x)
    expect_shape(y, np.shape(x), "output")
    layer.backward(_grad_like(grad, y))
    return y


def _loss_must_be_finite(*inputs):
    """A returned loss must be finite (a non-finite one raises FloatingPointError); while the overflow
    of a weighted sum is a known failure (known.py "loss_overflow"), only for moderate inputs."""
    from fuzz.known import is_known

    return not is_known("loss_overflow") or moderate(*[np.asarray(v) if isinstance(v, np.ndarray) else v
                                                       for v in inputs if _numeric(v)], limit=1e100)


def loss_function(logits, targets, kwargs=None, always_finite=False):
    """nn.cross_entropy(logits, targets, **kwargs); always_finite checks the loss whatever the inputs."""
    result = nn.cross_entropy(logits, targets, **(kwargs or {}))
    loss, dlogits = result[0], result[1]
    if always_finite or _loss_must_be_finite(logits, (kwargs or {}).get("mask")):
        expect(finite(loss), f"cross_entropy returned a non-finite loss {loss!r} instead of raising "
                             "FloatingPointError")
    if dlogits is not None:
        expect_shape(dlogits, np.shape(logits), "dlogits")
    return loss


def loss_module(ctor, logits, targets, mask=None, grad=1.0):
    m = nn.CrossEntropyLoss(**ctor)
    loss = m(logits, targets, mask)
    if _loss_must_be_finite(logits, mask):
        expect(finite(loss), f"CrossEntropyLoss returned a non-finite loss {loss!r}")
    d = m.backward(grad)
    expect_shape(d, np.shape(logits), "dlogits")
    return loss


def _fill_weights(model, weights):
    """Set a model's weights for a sampling or loss scenario: None/'init' leaves them; 'nan'
    and 'inf' fill every parameter; 'inf_bias' sets the decoder bias to +inf at one token;
    'zero' zeroes everything; 'big' multiplies by 1e30."""
    if weights in (None, "init"):
        return
    for name, p in model.named_parameters():
        if weights == "nan":
            p.data[...] = np.nan
        elif weights == "inf":
            p.data[...] = np.inf
        elif weights == "zero":
            p.data[...] = 0
        elif weights == "big":
            p.data *= p.data.dtype.type(1e30)
    if weights == "inf_bias" and getattr(model.decoder, "bias", None) is not None:
        model.decoder.bias.data[0] = np.inf


def language_model(ctor, tokens, targets, state=None, mask=None, loss_kwargs=None, train=True, weights=None,
                   backward=True):
    model = nn.LanguageModel(**ctor)
    model.train(train)
    _fill_weights(model, weights)
    loss, new_state = model.loss(tokens, targets, state, mask, **(loss_kwargs or {}))
    expect(finite(loss), f"LanguageModel.loss returned a non-finite loss {loss!r}")
    if backward:
        model.backward()
    return loss


def sequence_classifier(ctor, x, labels, lengths=None, reduction="mean", train=True):
    model = nn.SequenceClassifier(**ctor)
    model.train(train)
    loss = model.loss(x, labels, lengths, reduction)
    expect(finite(loss), f"SequenceClassifier.loss returned a non-finite loss {loss!r}")
    model.backward()
    return loss


def sequence_tagger(ctor, x, tags, lengths=None, ignore_index=-100, train=True):
    model = nn.SequenceTagger(**ctor)
    model.train(train)
    loss = model.loss(x, tags, lengths, ignore_index)
    expect(finite(loss), f"SequenceTagger.loss returned a non-finite loss {loss!r}")
    model.backward()
    return loss


def conditioned_generator(ctor, features, tokens, targets, state=None, train=True):
    model = nn.ConditionedGenerator(**ctor)
    model.train(train)
    loss, _ = model.loss(features, tokens, targets, state)
    expect(finite(loss), f"ConditionedGenerator.loss returned a non-finite loss {loss!r}")
    g = model.backward()
    expect_shape(g, np.shape(features), "grad of features")
    return loss


def module_api(kind, ctor, ops):
    """A model's Module API: ops is a list of (name, *args): 'to' dtype, 'zero_grad', 'train'
    mode, 'state_dict', 'repr', 'parameters'."""
    model = getattr(nn, kind)(**ctor)
    for op, *args in ops:
        if op == "to":
            model.to(*args)
        elif op == "zero_grad":
            model.zero_grad()
        elif op == "train":
            model.train(*args)
        elif op == "state_dict":
            model.load_state_dict(model.state_dict())
        elif op == "repr":
            repr(model)
        elif op == "parameters":
            list(model.named_parameters())
    return len(ops)


def rnn_cell_base(ctor, xs, hx=None, grad="ones", train=True, max_history=None, reset=False):
    """nn.RNNCellBase(**ctor) (the cell kind in ctor["cell"]): steps over xs, then backward newest
    first over what the history kept (max_history=k keeps the newest k; reset drops them all)."""
    cell = nn.RNNCellBase(**ctor)
    cell.train(train)
    if max_history is not None:
        cell.max_history = max_history
    h, outs = _step_cell(cell, hx, xs)
    kept = cell.history_length
    expect(kept == (0 if not train else min(len(outs), max_history or len(outs))),
           f"history_length {kept} after {len(outs)} steps (max_history={max_history}, train={bool(train)})")
    if reset:
        cell.reset_history()
        kept = 0
    for out in reversed(outs[len(outs) - kept:]):
        g = _grad_like(grad, out)
        if cell.cell == "lstm":
            cell.backward(*(g if isinstance(g, tuple) else (g, None)))
        else:
            cell.backward(g)
    return len(outs)


def adaptive_softmax(ctor, input, target, train=True, fused=True, grad_loss=1.0, grad_output=None, ops=()):
    """nn.AdaptiveLogSoftmaxWithLoss(**ctor): forward(input, target), backward, then ops
    ('log_prob', 'predict', with their input). Checks: shapes, log-probabilities <= 0, output =
    log_prob at the target, probabilities summing to 1."""
    m = nn.AdaptiveLogSoftmaxWithLoss(**ctor)
    m.train(train)
    m.fused = fused
    output, loss = m(input, target)
    xa = np.asarray(input)
    expect_shape(output, xa.shape[:-1], "output")
    if moderate(xa, limit=1e3) and _params_finite(m):
        expect_finite(output, "output")
        expect(finite(loss), f"loss {loss!r} is not finite for finite inputs")
        expect(bool(np.all(np.asarray(output) <= 1e-4)), "a log-probability above 0")
        lp = m.log_prob(input)
        ref = np.take_along_axis(lp.reshape(-1, m.n_classes), np.asarray(target).reshape(-1, 1).astype(np.int64),
                                 axis=1).reshape(np.shape(output))
        tol = 1e-3 if m.dtype == np.float32 else 1e-9
        expect(np.allclose(output, ref, rtol=tol, atol=tol), "forward's output differs from log_prob at the target")
        expect(np.allclose(np.exp(lp).sum(axis=-1), 1.0, rtol=tol, atol=tol), "log_prob does not sum to 1")
    dx = m.backward(grad_loss, grad_output)
    expect_shape(dx, xa.shape, "grad of input")
    for op, x in ops:
        if op == "log_prob":
            out = m.log_prob(x)
            expect_shape(out, np.shape(x)[:-1] + (m.n_classes,), "log_prob")
        else:
            out = m.predict(x)
            expect_shape(out, np.shape(x)[:-1], "predict")
            if np.size(out):
                expect(bool(np.all((out >= 0) & (out < m.n_classes))), "predict: a class outside [0, V)")
    return float(loss)


def fixed_window_lm(ctor, tokens, targets, state=None, mask=None, loss_kwargs=None, train=True, weights=None,
                    windows=1):
    """nn.FixedWindowLM(**ctor).loss over `windows` consecutive windows (the state carried), backward
    after each; the state must be the last K ids."""
    model = nn.FixedWindowLM(**ctor)
    model.train(train)
    _fill_weights(model, weights)
    loss = None
    for _ in range(windows):
        loss, new_state = model.loss(tokens, targets, state, mask, **(loss_kwargs or {}))
        expect(finite(loss), f"FixedWindowLM.loss returned a non-finite loss {loss!r}")
        ta = np.asarray(tokens)
        expect_shape(new_state, (model.context, ta.shape[1]), "new state")
        model.backward()
        state = new_state
    return loss


def evaluate(kind, ctor, ids, batch_size=32, seq_len=35, bits_per_char=False, threads=None, weights=None):
    """rnncore.evaluate(nn.<kind>(**ctor), ids, ...): finite loss and ppl = exp(loss)."""
    model = getattr(nn, kind)(**ctor)
    _fill_weights(model, weights)
    out = rnncore.evaluate(model, ids, batch_size, seq_len, bits_per_char=bits_per_char, threads=threads)
    expect(isinstance(out, dict) and "loss" in out and "ppl" in out, f"evaluate returned {out!r}")
    if weights in (None, "zero"):
        expect(finite(out["loss"]), f"evaluate: loss {out['loss']!r} is not finite for finite weights")
        if out["loss"] < 700:
            expect(math.isclose(out["ppl"], math.exp(out["loss"]), rel_tol=1e-9), "evaluate: ppl != exp(loss)")
    return out["loss"]


def ngram(ctor, corpus, ops=(), vocab=None, arpa=None):
    """ngram.KneserNeyLM(**ctor).fit(corpus[, vocab=...]), then ops (query method, *args); then
    save_arpa and ngram.load_arpa back (arpa: None keeps the file, or a byte mutation as save_load's):
    an unchanged file must score every query as the fitted model does."""
    from rnncore import ngram as ng

    lm = ng.KneserNeyLM(**ctor)
    lm.fit(corpus, **({} if vocab is None else {"vocab": vocab}))

    def ask(model):
        V = len(model.vocab)  # (a damaged file may hold other words)
        results = []
        for op, *args in ops:
            r = getattr(model, op)(*args)
            if op == "distribution":
                expect_shape(r, (V,), "distribution")
                # (a damaged file may hold other, still well-formed, probabilities: no checksum in ARPA)
                expect(model is not lm and arpa is not None or abs(float(np.sum(r)) - 1.0) < 1e-6,
                       f"distribution sums to {float(np.sum(r))!r}")
            elif op in ("logprob", "score"):
                expect(isinstance(r, float) and r <= 1e-9 and not math.isnan(r), f"{op} = {r!r}")
            elif op == "evaluate":
                r = (r.log10prob, r.tokens, r.oov)
            elif op == "token_logprobs":
                r = r[1]
            results.append(r)
        return results

    first = ask(lm)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lm.arpa")
        lm.save_arpa(path)
        if arpa is not None:
            with open(path, "rb") as f:
                raw = f.read()
            with open(path, "wb") as f:
                f.write(_mutate_bytes(raw, arpa))
        again = ng.load_arpa(path)
        second = ask(again)
    if arpa is None:
        for a, b in zip(first, second):
            # (the perplexity of an empty corpus is NaN in both)
            expect(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-4,
                               atol=1e-4, equal_nan=True), "a query differs after save_arpa/load_arpa")
    return len(first)


def _load_from_file(raw, name, load):
    """load(path) of a temporary file `name` holding the bytes raw."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(raw)
        return load(path)


def load_arpa_bytes(raw):
    """ngram.load_arpa of arbitrary bytes."""
    from rnncore import ngram as ng

    return _load_from_file(raw, "x.arpa", ng.load_arpa)


def movie_reviews(**kw):
    """rnncore.datasets.movie_reviews(**kw): three disjoint splits whose labels are 0/1."""
    from rnncore import datasets

    splits = datasets.movie_reviews(**kw)
    texts = [t for name in ("train", "valid", "test") for t in splits[name]["text"]]
    expect(len(set(texts)) == len(texts), "movie_reviews: a snippet is in two splits")
    for name, part in splits.items():
        expect(len(part["text"]) == len(part["label"]) == len(part["score"]), f"movie_reviews: {name} sizes differ")
        expect(set(np.unique(part["label"])) <= {0, 1}, f"movie_reviews: {name} labels outside {{0, 1}}")
    return len(texts)


# -- rnncore.optim --------------------------------------------------------------------------------

def _make_params(params, grads):
    if not isinstance(params, list):
        return params  # passed on as it is: the optimizer's `params` argument itself
    grads = grads if isinstance(grads, list) else [grads] * len(params)
    ps = []
    for i, data in enumerate(params):
        p = nn.Parameter(data)
        if i < len(grads):
            p.grad = grads[i]
        ps.append(p)
    return ps


def optimizer(name, ctor, params, grads, steps=2, reload=True):
    """optim.<name>([Parameter(p) with .grad = g], **ctor), `steps` steps, state_dict round trip."""
    ps = _make_params(params, grads)
    opt = getattr(optim, name)(ps, **ctor)
    ps = [p for g in opt.param_groups for p in g["params"]]
    before = [p.data.copy() for p in ps]
    for _ in range(steps):
        opt.step()
    simple = all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 10
                 for k, v in ctor.items() if k in ("lr", "momentum", "weight_decay", "alpha", "dampening"))
    # an eps that float32 rounds to 0 makes 0 / 0 on a zero gradient, as in PyTorch
    simple = simple and not (isinstance(ctor.get("eps"), (int, float)) and abs(ctor["eps"]) < 1e-30)
    if simple and finite(before, [p.grad for p in ps]) and all(p.grad is None or moderate(p.grad) for p in ps) \
            and moderate(before) and name != "RMSprop":
        for p in ps:
            expect_finite(p.data, f"{name} parameter after {steps} steps")
    if reload:
        sd = opt.state_dict()
        try:  # the options must be JSON data, as the caller gave them (a 3000-deep list is theirs)
            json.dumps({k: v for k, v in sd.items() if k != "state"}, default=lambda o: None)
        except RecursionError:
            pass
        opt2 = getattr(optim, name)(ps, **ctor)
        opt2.load_state_dict(sd)
        opt2.step()
    return steps


def optimizer_load_state(name, ctor, params, state):
    ps = _make_params(params, [np.zeros(np.shape(p)) if _numeric(p) else p for p in params]
                      if isinstance(params, list) else None)
    opt = getattr(optim, name)(ps, **ctor)
    opt.load_state_dict(state)
    opt.step()


# lr_lambda by name (a call must be plain data to cross to the worker)
LR_LAMBDAS = {"half": lambda epoch: 0.5 ** epoch, "one": lambda epoch: 1.0, "nan": lambda epoch: math.nan,
              "huge": lambda epoch: 1e308 * 10}


def scheduler(name, ctor, steps=3, metrics=(1.0, 0.5, 2.0), opt="SGD"):
    """optim.<opt>([p], lr=0.1) under optim.<name>(opt, **ctor) for `steps` epochs; a string lr_lambda
    names one of LR_LAMBDAS."""
    ctor = dict(ctor)
    if isinstance(ctor.get("lr_lambda"), str) and ctor["lr_lambda"] in LR_LAMBDAS:
        ctor["lr_lambda"] = LR_LAMBDAS[ctor["lr_lambda"]]
    p = nn.Parameter(np.zeros(3, np.float32))
    p.grad = np.ones(3, np.float32)
    o = getattr(optim, opt)([p], lr=0.1)
    s = getattr(optim, name)(o, **ctor)
    for k in range(steps):
        o.step()
        if name == "ReduceLROnPlateau":
            s.step(metrics[k % len(metrics)] if metrics else 0.0)
        else:
            s.step()
    lrs = s.get_last_lr()
    s.load_state_dict(s.state_dict())
    return lrs


def _grad_params(grads):
    """Parameters whose .grad are `grads` (a list); anything else is passed on as it is, as the
    `parameters` argument itself."""
    if not isinstance(grads, list):
        return grads
    return _make_params([np.zeros(np.shape(g), np.float32) if _numeric(g) else np.zeros(1, np.float32)
                         for g in grads], grads)


def clip_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False, threads=None):
    total = optim.clip_grad_norm_(_grad_params(grads), max_norm, norm_type, error_if_nonfinite, threads=threads)
    expect(isinstance(total, float), f"clip_grad_norm_ returned {type(total).__name__}, not a float")
    return total


def clip_value(grads, clip_value, threads=None):
    optim.clip_grad_value_(_grad_params(grads), clip_value, threads=threads)


# -- rnncore.sampling -----------------------------------------------------------------------------

def _lm(ctor, weights):
    model = nn.LanguageModel(**ctor)
    _fill_weights(model, weights)
    return model


def _expect_tokens(out, V, what):
    a = np.asarray(out)
    if a.size:
        expect(a.dtype.kind in "iu", f"{what}: tokens have dtype {a.dtype}")
        expect(((a >= -1) & (a < V)).all(), f"{what}: a token is outside [-1, {V})")


def generate(ctor, prime, max_new_tokens, weights=None, **kwargs):
    model = _lm(ctor, weights)
    out = sampling.generate(model, prime, max_new_tokens, **kwargs)
    if kwargs.get("tokenizer") is None:
        _expect_tokens(out, model.vocab_size, "generate")
        expect(np.shape(out)[-1] <= max_new_tokens if np.ndim(out) else True, "generate returned too many tokens")
    return out


def quantized_lm(ctor, precision, tokens, prime, max_new_tokens, weights=None, threads=None):
    """rnncore.quantize(LanguageModel(**ctor), precision): forward over tokens, then generate."""
    model = _lm(ctor, weights)
    q = rnncore.quantize(model, precision, threads=threads)
    logits, _ = q.forward(tokens)
    expect(np.shape(logits) == np.shape(tokens) + (model.vocab_size,), "QuantizedLanguageModel.forward: logits shape")
    if weights in (None, "init", "zero"):
        expect(finite(logits), "QuantizedLanguageModel.forward: non-finite logits for finite weights")
    out = sampling.generate(q, prime, max_new_tokens)
    _expect_tokens(out, model.vocab_size, "generate (quantized)")
    return out


def stream(ctor, prime, max_new_tokens, take=8, weights=None, **kwargs):
    model = _lm(ctor, weights)
    out = list(itertools.islice(sampling.stream(model, prime, max_new_tokens, **kwargs), take))
    if kwargs.get("tokenizer") is None:
        _expect_tokens(np.array(out, dtype=np.int64), model.vocab_size, "stream")
    return out


def beam_search(ctor, prime, beam_width, max_len, weights=None, **kwargs):
    model = _lm(ctor, weights)
    hyps = sampling.beam_search(model, prime, beam_width, max_len, **kwargs)
    expect(len(hyps) <= kwargs.get("n_best", 1), "beam_search returned more than n_best hypotheses")
    for tokens, score in hyps:
        _expect_tokens(tokens, model.vocab_size, "beam_search")
        expect(len(tokens) <= max_len, "beam_search returned a hypothesis longer than max_len")
        if weights in (None, "init", "zero"):
            expect(finite(score), f"beam_search score {score!r} is not finite for finite weights")
    return hyps


def decoder(ctor, batch, ops, weights=None, threads=None):
    """sampling.Decoder(model, batch): ops is a list of (method, *args) run in order."""
    model = _lm(ctor, weights)
    dec = sampling.Decoder(model, batch, threads)
    V = model.vocab_size
    for op, *args in ops:
        result = getattr(dec, op)(*args)
        if op == "sample":
            _expect_tokens(result[0], V, "Decoder.sample")
        elif op == "step_logits" and weights in (None, "init", "zero"):
            expect_finite(result, "step_logits")
    return len(ops)


# -- rnncore.io -----------------------------------------------------------------------------------

def _model(kind, ctor):
    return getattr(nn, kind)(**ctor)


def _mutate_bytes(raw, how):
    kind = how[0]
    if kind == "truncate":
        return raw[:max(0, min(len(raw), how[1]))]
    if kind == "flip":
        if not raw:
            return raw
        pos = how[1] % len(raw)
        return raw[:pos] + bytes([raw[pos] ^ (how[2] & 0xFF or 1)]) + raw[pos + 1:]
    if kind == "header":
        # replace the header with `how[1]` (JSON text), keep the data
        (n,) = struct.unpack("<Q", raw[:8])
        text = how[1].encode("utf-8")
        return struct.pack("<Q", len(text)) + text + raw[8 + n:]
    if kind == "length":
        return struct.pack("<Q", how[1] % (1 << 64)) + raw[8:]
    if kind == "nest":
        depth = how[1]
        text = ('{"__metadata__": {}, "x": ' + "[" * depth + "]" * depth + "}").encode()
        return struct.pack("<Q", len(text)) + text
    if kind == "metadata":
        # rewrite one metadata value (keeps the checksum wrong unless the value is unchanged)
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.setdefault("__metadata__", {})[how[1]] = how[2]
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + raw[8 + n:]
    raise ValueError(f"unknown mutation {how!r}")


def save_load(kind, ctor, with_optimizer=False, extra=None, arrays=None, config=None, mutate=None,
              into_model=True, build=False):
    """rnncore.save(model [, optimizer]) to a temporary file, optionally damage the bytes,
    then rnncore.load it back (into a fresh model of the same config, or not at all)."""
    model = _model(kind, ctor)
    opt = optim.Adam(model.parameters(), lr=1e-3) if with_optimizer else None
    if opt is not None:
        for p in model.parameters():
            p.grad[...] = 1
        opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        rnncore.save(path, model, opt, config=config, extra=extra, arrays=arrays)
        if mutate is not None:
            with open(path, "rb") as f:
                raw = f.read()
            with open(path, "wb") as f:
                f.write(_mutate_bytes(raw, mutate))
        other = _model(kind, ctor) if into_model else None
        other_opt = optim.Adam(other.parameters(), lr=1e-3) if (other is not None and with_optimizer) else None
        ckpt = rnncore.load(path, other, other_opt)
        if build:
            ckpt.build()
        if mutate is None and other is not None:
            for (name, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
                expect(np.array_equal(a.data, b.data, equal_nan=True), f"{name} differs after save/load")
        leftovers = [f for f in os.listdir(tmp) if f != "model.safetensors"]
        expect(not leftovers, f"save left files behind: {leftovers}")
    return True


def load_bytes(raw):
    return _load_from_file(raw, "x.safetensors", rnncore.load)


def load_state_dict(kind, ctor, entries, strict=True, base="full"):
    """model.load_state_dict(d): d is the model's own state_dict (base='full') or {} (base='empty'),
    updated with `entries`."""
    model = _model(kind, ctor)
    state = model.state_dict() if base == "full" else {}
    if isinstance(entries, dict):
        state.update(entries)
    else:
        state = entries
    model.load_state_dict(state, strict)


def from_torch(state, prefix=""):
    return rnncore.from_torch(state, prefix)


# -- rnncore.data ---------------------------------------------------------------------------------

def char_tokenizer(options, fit_text, text=None, ids=None, roundtrip=True):
    tok = data.CharTokenizer(**options).fit(fit_text)
    enc = tok.encode(fit_text if text is None else text)
    if ids is not None:
        tok.decode(ids)
    if roundtrip and text is None and not options.get("min_count", 1) > 1 and options.get("max_size") is None:
        expect(tok.decode(enc) == fit_text, "CharTokenizer: decode(encode(text)) != text")
    again = data.tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    expect(again == tok, "CharTokenizer: to_dict/from_dict round trip differs")
    return len(enc)


def word_tokenizer(options, fit_text, text=None, ids=None):
    tok = data.WordTokenizer(**options).fit(fit_text)
    enc = tok.encode(fit_text if text is None else text)
    tok.decode(enc)
    if ids is not None:
        tok.decode(ids)
    again = data.tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    expect(again == tok, "WordTokenizer: to_dict/from_dict round trip differs")
    return len(enc)


def vocabulary(symbols, kwargs, lookups=()):
    v = data.Vocabulary(symbols, **kwargs)
    for s in lookups:
        _ = s in v
        try:
            v[s]
        except KeyError:
            pass  # Vocabulary.__getitem__ of an unknown symbol without unk: a mapping's KeyError
    again = data.Vocabulary.from_dict(json.loads(json.dumps(v.to_dict())))
    expect(again == v, "Vocabulary: to_dict/from_dict round trip differs")
    return len(v)


def tokenizer_from_dict(d):
    return data.tokenizer_from_dict(d)


def stream_batcher(ids, batch_size, seq_len, drop_last=False, state=None, take=3):
    b = data.StreamBatcher(ids, batch_size, seq_len, drop_last=drop_last)
    if state is not None:
        b.load_state_dict(state)
    n = 0
    for x, y in itertools.islice(iter(b), take):
        expect(np.shape(x) == np.shape(y), "StreamBatcher: inputs and targets differ in shape")
        n += 1
    b.load_state_dict(b.state_dict())
    return n


def lm_batches(ids, batch_size, seq_len, start=0, drop_last=False, take=3):
    return sum(1 for _ in itertools.islice(data.lm_batches(ids, batch_size, seq_len, start=start,
                                                           drop_last=drop_last), take))


def pad_sequences(seqs, pad_value=0, time_major=True, dtype=None):
    padded, lengths = data.pad_sequences(seqs, pad_value, time_major, dtype)
    expect(len(lengths) == len(seqs), "pad_sequences: one length per sequence")
    return padded.shape


def bucket_iterator(seqs, labels=None, batch_size=2, kwargs=None, take=3):
    it = data.BucketIterator(seqs, labels, batch_size, **(kwargs or {}))
    n = 0
    for _ in itertools.islice(iter(it), take):
        n += 1
    it.load_state_dict(it.state_dict())
    return n


def read_text(raw, as_dir=False, name="a.txt"):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(raw)
        return len(data.read_text(tmp if as_dir else path))


# -- threads --------------------------------------------------------------------------------------

def with_threads(n, how="set", work="lstm", big=False):
    """Ask for `n` threads (how: 'set' = set_num_threads(n), 'ctor' = threads=n on the layer,
    'env' = OMP_NUM_THREADS=n) and then run one piece of work; `big` makes the work large
    enough to be spread over thousands of threads."""
    threads = None
    saved_env = os.environ.get("OMP_NUM_THREADS")
    try:
        if how == "set":
            rnncore.set_num_threads(n)
            got = rnncore.get_num_threads()
            expect(isinstance(got, int) and got >= 1, f"get_num_threads() = {got!r} after set_num_threads({n!r})")
        elif how == "env":
            os.environ["OMP_NUM_THREADS"] = str(n)
        else:
            threads = n
        rng = np.random.default_rng(0)
        if work == "lstm":
            B, H = (128, 512) if big else (3, 8)
            layer = nn.LSTM(4, H, threads=threads, seed=0)
            out, _ = layer(rng.standard_normal((2, B, 4)).astype(np.float32))
            layer.backward(np.ones_like(out))
            expect_finite(out, "LSTM output")
        elif work == "linear":
            N, F = (512, 512) if big else (4, 8)
            layer = nn.Linear(F, F, threads=threads, seed=0)
            y = layer(rng.standard_normal((N, F)).astype(np.float32))
            layer.backward(np.ones_like(y))
        elif work == "layernorm":
            N, F = (4096, 1024) if big else (4, 8)
            layer = nn.LayerNorm(F, threads=threads)
            y = layer(rng.standard_normal((N, F)).astype(np.float32))
            layer.backward(np.ones_like(y))
        elif work == "embedding":
            N = 1 << 22 if big else 16
            layer = nn.Embedding(50, 8, threads=threads, seed=0)
            out = layer(rng.integers(0, 50, N))
            layer.backward(np.ones_like(out))
        elif work == "optim":
            N = 1 << 24 if big else 16
            p = nn.Parameter(np.zeros(N, np.float32))
            p.grad = np.ones(N, np.float32)
            optim.Adam([p], lr=1e-3, threads=threads).step()
            optim.clip_grad_norm_([p], 1.0, threads=threads)
        elif work == "loss":
            N, V = (4096, 512) if big else (4, 5)
            nn.cross_entropy(rng.standard_normal((N, V)).astype(np.float32), rng.integers(0, V, N), threads=threads)
        elif work == "generate":
            H = 512 if big else 8
            model = nn.LanguageModel(20, 8, H, threads=threads, seed=0)
            sampling.generate(model, [1, 2], 4, seed=0, threads=threads)
            sampling.beam_search(model, [1, 2], 3 if not big else 64, 3, threads=threads)
        else:
            raise ValueError(f"with_threads: unknown work {work!r}")
    finally:
        rnncore.set_num_threads(None)
        if saved_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_env
    return True


# -- multi-step _core calls -----------------------------------------------------------------------

def core_recurrent(forward, backward=None, reuse=False):
    """_core.recurrent_forward(**forward); then, when `backward` is given,
    _core.recurrent_backward(workspace, **backward) on the workspace it returned (twice with reuse:
    the second must be refused)."""
    h_n, c_n, ws = _core.recurrent_forward(**forward)
    x = forward.get("x")
    w_hh = forward.get("w_hh")
    if isinstance(x, np.ndarray) and x.ndim == 3 and isinstance(w_hh, np.ndarray) and w_hh.ndim == 2:
        expect_shape(h_n, (x.shape[1], w_hh.shape[1]), "h_n")  # (B, P) with projections w_hr (P, H)
        if forward.get("cell", "").lower() != "rnn_relu" and moderate(x, forward.get("w_ih"), w_hh,
                                                                       forward.get("h0"), forward.get("c0"),
                                                                       forward.get("b_ih"), forward.get("b_hh"),
                                                                       forward.get("w_hr")):
            expect_finite(h_n, "h_n")
    if backward is not None:
        _core.recurrent_backward(ws, **backward)
        if reuse:
            _core.recurrent_backward(ws, **backward)
    return h_n


def core_attention(forward, backward=None, with_keys=False):
    """_core.attention_forward(**forward) (with the keys of _core.attention_keys first when
    with_keys), then, when `backward` is given, _core.attention_backward(**backward) with the
    forward's arguments and results."""
    fwd = dict(**forward)
    if with_keys:
        fwd["keys"] = _core.attention_keys(fwd.get("memory"), fwd.get("weights"), fwd.get("threads", 1))
    attn_h, alpha, context, saved = _core.attention_forward(**fwd)
    q, m, w = fwd.get("query"), fwd.get("memory"), fwd.get("weights")
    if isinstance(q, np.ndarray) and isinstance(m, np.ndarray) and q.ndim == 3 and m.ndim == 3:
        expect_shape(alpha, (q.shape[0], q.shape[1], m.shape[0]), "alpha")
        if isinstance(w, tuple) and moderate(q, m, *[a for a in w[1:] if isinstance(a, np.ndarray)]):
            expect_finite(attn_h, "attn_h")
            expect(bool(np.all(alpha >= 0)) and np.allclose(alpha.sum(-1), 1, atol=1e-4), "alpha rows do not sum to 1")
    if backward is not None:
        args = dict(query=q, memory=m, keys=fwd.get("keys"), memory_lengths=fwd.get("memory_lengths"), alpha=alpha,
                    context=context, attn_h=attn_h, saved=saved, weights=w)
        args.update(**backward)
        _core.attention_backward(**args)
    return attn_h


def attention(ctor, query, memory, memory_lengths=None, grad="ones", grad_alpha=None):
    layer = nn.Attention(**ctor)
    attn_h, alpha = layer(query, memory, memory_lengths)
    qa, ma = np.asarray(query), np.asarray(memory)
    lead = qa.shape[:-1]
    expect_shape(attn_h, lead + (layer.output_size,), "attn_h")
    expect_shape(alpha, lead + (ma.shape[0],), "alpha")
    if moderate(qa, ma):
        expect_finite(attn_h, "attn_h")
    dq, dm = layer.backward(_grad_like(grad, attn_h), grad_alpha)
    expect_shape(dq, qa.shape, "grad of query")
    expect_shape(dm, ma.shape, "grad of memory")
    return attn_h


def core_decoder(ctor, ops):
    """_core.LMDecoder(**ctor), then ops: a list of (method, *args) run in order."""
    dec = _core.LMDecoder(**ctor)
    V = dec.vocab_size
    for op, *args in ops:
        attr = getattr(dec, op)
        result = attr(*args) if callable(attr) else attr
        if op == "sample":
            _expect_tokens(result[0], V, "LMDecoder.sample")
        elif op == "beam_search":
            for tokens, *_ in result:
                _expect_tokens(tokens, V, "LMDecoder.beam_search")
    return len(ops)


# -- rnncore.Trainer ------------------------------------------------------------------------------

def trainer_fit(model_ctor, trainer_kwargs, train_ids, valid_ids=None, fit_kwargs=None, lr=1e-3):
    model = nn.LanguageModel(**model_ctor)
    opt = optim.Adam(model.parameters(), lr=lr)
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = dict(trainer_kwargs)
        if kwargs.pop("checkpoints", False):
            kwargs["checkpoint_dir"] = tmp
        kwargs.setdefault("progress", False)
        kwargs.setdefault("stream", open(os.devnull, "w"))
        try:
            trainer = rnncore.Trainer(model, opt, **kwargs)
            result = trainer.fit(train_ids, valid_ids, **(fit_kwargs or {"max_steps": 2}))
        finally:
            kwargs["stream"].close()
    expect(isinstance(result, dict), "Trainer.fit did not return a dict")
    return result.get("steps")


# -- rnncore.tasks (the Trainer with a task) --------------------------------------------------------

class _TinySeq2Seq(nn.Module):
    """A small encoder-decoder with the seq2seq spec's interface, from rnncore layers."""

    def __init__(self, V, E=4, H=4):
        super().__init__()
        self.src_embedding, self.tgt_embedding = nn.Embedding(V, E, seed=0), nn.Embedding(V, E, seed=1)
        self.encoder, self.decoder = nn.GRU(E, H, seed=2), nn.GRU(E, H, seed=3)
        self.out = nn.Linear(H, V, seed=4)

    def forward(self, src, src_lengths, tgt_in):
        _, h = self.encoder(self.src_embedding(src), lengths=src_lengths)
        return self.out(self.decoder(self.tgt_embedding(tgt_in), h)[0])

    def loss(self, src, src_lengths, tgt_in, tgt_out, ignore_index=-100, reduction="mean"):
        loss, self._dlogits = nn.cross_entropy(self.forward(src, src_lengths, tgt_in), tgt_out, ignore_index,
                                               reduction)
        return loss

    def backward(self):
        self.tgt_embedding.backward(self.decoder.backward(self.out.backward(self._dlogits)))
        self.src_embedding.backward(self.encoder.backward(None, self.decoder.grad_h0))


def task_fit(kind, V, task_kwargs, trainer_kwargs=None, fit_kwargs=None, train=None, valid=None, src=None,
             src_lengths=None, tgt_in=None, tgt_out=None, batches=1, padded=None, lengths=None, labels=None):
    """A Trainer driven by a LanguageModelTask, Seq2SeqTask or ClassificationTask, fitted a few steps
    (with checkpoints: then resumed from the last one), and the task's evaluation."""
    from collections import namedtuple

    from rnncore import tasks

    kw = dict(task_kwargs)
    if kind == "lm":
        model = nn.LanguageModel(V, 4, 4, seed=0)
        task = tasks.LanguageModelTask(**kw)
    elif kind == "seq2seq":
        model = _TinySeq2Seq(V)
        if kw.pop("with_bleu", False):
            kw["bleu"] = lambda m: 1.0
        task = tasks.Seq2SeqTask(**kw)
        pair = namedtuple("PairBatch", "src src_lengths tgt_in tgt_out tgt_lengths")
        batch = pair(src, src_lengths, tgt_in, tgt_out, None)
        train, valid = [batch] * min(batches, 3), [batch]  # (a huge count is not the API's concern)
    else:
        model = nn.SequenceClassifier(vocab_size=V, embedding_dim=4, hidden_size=4, num_classes=2, pooling="max",
                                      seed=0)
        task = tasks.ClassificationTask(**kw)
        seqs = [padded[i, :n] for i, n in enumerate(lengths)]  # lengths in range: the builder draws them so
        train = valid = (seqs, labels)
    tkw = dict(trainer_kwargs or {})
    with tempfile.TemporaryDirectory() as tmp:
        if tkw.pop("checkpoints", False):
            tkw["checkpoint_dir"] = tmp
        trainer = rnncore.Trainer(model, optim.Adam(model.parameters(), lr=1e-3), task=task, progress=False,
                                  stream=open(os.devnull, "w"), **tkw)
        try:
            result = trainer.fit(train, valid, **(fit_kwargs or {"max_steps": 2}))
            ev = trainer.evaluate(valid)
            if trainer.checkpoint_dir:
                trainer.load_checkpoint(os.path.join(tmp, "last.safetensors"))
                expect(trainer.step == result["steps"], "a resumed Trainer is not at the saved step")
        finally:
            trainer.stream.close()
    expect(isinstance(result, dict) and isinstance(ev, dict) and task.metric in ev,
           "Trainer.fit/evaluate with a task did not return dicts holding the task's metric")
    return result.get("steps")


# -- checks of direct _core calls -----------------------------------------------------------------

CHECKS = {}


def check(name):
    def register(fn):
        CHECKS["rnncore._core." + name] = fn
        return fn
    return register


def _arg(call_args, call_kwargs, index, name, default=None):
    if name in call_kwargs:
        return call_kwargs[name]
    if len(call_args) > index:
        return call_args[index]
    return default


@check("embedding_forward")
def _check_embedding_forward(result, call, args, kwargs):
    weight, ids = _arg(args, kwargs, 0, "weight"), _arg(args, kwargs, 1, "ids")
    expect_shape(result, ids.shape + (weight.shape[1],), "embedding_forward output")
    expect(np.array_equal(result, weight[ids], equal_nan=True), "embedding_forward rows differ from weight[ids]")


@check("linear_forward")
def _check_linear_forward(result, call, args, kwargs):
    x, w, b = _arg(args, kwargs, 0, "x"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    expect_shape(result, (x.shape[0], w.shape[0]), "linear_forward output")
    if moderate(x, w, b):
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
        tol = 1e-3 * (1 + np.abs(x).max(initial=0)) * (1 + np.abs(w).max(initial=0)) * max(1, x.shape[1])
        expect(np.allclose(result, ref, rtol=1e-3, atol=tol), "linear_forward differs from x @ W.T + b")


@check("gemm")
def _check_gemm(result, call, args, kwargs):
    from fuzz.specs import materialize

    orig = materialize(call.args, "orig")
    okw = {k: materialize(v, k) for k, v in call.kwargs.items()}
    a, b, c0 = (_arg(orig, okw, i, n) for i, n in enumerate(("a", "b", "c")))
    c = _arg(args, kwargs, 2, "c")
    ta, tb = _arg(orig, okw, 3, "trans_a", False), _arg(orig, okw, 4, "trans_b", False)
    alpha, beta = _arg(orig, okw, 5, "alpha", 1.0), _arg(orig, okw, 6, "beta", 0.0)
    if not moderate(a, b, c0, float(alpha), float(beta)):
        return
    ref = alpha * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64))
    if beta != 0:
        ref = ref + beta * c0
    k = (a.shape[0] if ta else a.shape[1]) if a.ndim == 2 else 1
    tol = 1e-3 * (1 + abs(alpha) * max(1, k) + abs(beta))
    expect(np.allclose(c, ref, rtol=1e-3, atol=tol), "gemm result differs from alpha op(a) op(b) + beta c")


@check("cross_entropy")
def _check_cross_entropy(result, call, args, kwargs):
    loss, dlogits, probs, total = result
    if _loss_must_be_finite(_arg(args, kwargs, 0, "logits"), _arg(args, kwargs, 2, "mask")):
        expect(finite(loss), f"cross_entropy returned a non-finite loss {loss!r}")
    expect(finite(total), f"cross_entropy returned a non-finite total weight {total!r}")
    logits = _arg(args, kwargs, 0, "logits")
    if dlogits is not None:
        expect_shape(dlogits, logits.shape, "dlogits")


@check("adaptive_softmax")
def _check_adaptive_softmax(result, call, args, kwargs):
    output, dx = result
    x = _arg(args, kwargs, 0, "x")
    expect_shape(output, (x.shape[0],), "adaptive_softmax output")
    if kwargs.get("row_weights") is not None:
        expect_shape(dx, x.shape, "adaptive_softmax dx")
    weights = [_arg(args, kwargs, 2, "head_w"), _arg(args, kwargs, 3, "head_b")] + \
        list(_arg(args, kwargs, 4, "proj")) + list(_arg(args, kwargs, 5, "out"))
    if moderate(x, *[w for w in weights if isinstance(w, np.ndarray)], limit=1e3):
        expect_finite(output, "adaptive_softmax output")
        expect(bool(np.all(output <= 1e-4)), "adaptive_softmax: a log-probability above 0")


@check("recurrent_threads")
def _check_recurrent_threads(result, call, args, kwargs):
    threads = _arg(args, kwargs, 3, "threads")
    expect(isinstance(result, int) and 1 <= result <= max(1, threads), f"recurrent_threads = {result!r}")


@check("gemm_threads")
def _check_gemm_threads(result, call, args, kwargs):
    threads = _arg(args, kwargs, 3, "threads")
    expect(isinstance(result, int) and 1 <= result <= max(1, threads), f"gemm_threads = {result!r}")


@check("norm_power_sum")
def _check_norm_power_sum(result, call, args, kwargs):
    expect(isinstance(result, float) and (math.isnan(result) or result >= 0), f"norm_power_sum = {result!r}")


@check("vmath")
def _check_vmath(result, call, args, kwargs):
    fn, x = _arg(args, kwargs, 0, "fn"), np.asarray(_arg(args, kwargs, 1, "x"))
    expect_shape(result, x.shape, "vmath output")
    if x.size and finite(x.astype(np.float64)):
        lo, hi = {"exp": (0, np.inf), "sigmoid": (0, 1), "tanh": (-1, 1)}[fn]
        expect(((result >= lo) & (result <= hi)).all(), f"vmath {fn} out of its range")


@check("gemm_config")
def _check_gemm_config(result, call, args, kwargs):
    expect(set(result) == {"caches", "float32", "float64"}, f"gemm_config() keys {sorted(result)}")
    for dtype in ("float32", "float64"):
        b = result[dtype]
        expect(b["mc"] % b["mr"] == 0 and b["nc"] % b["nr"] == 0 and b["kc"] > 0, f"gemm_config() {dtype} {b}")


@check("cells_kernel")
def _check_cells_kernel(result, call, args, kwargs):
    expect(result in _core.supported_isas(), f"cells_kernel() = {result!r}")


@check("isa")
def _check_isa(result, call, args, kwargs):
    expect(result in _core.supported_isas(), f"isa() = {result!r}")


@check("max_threads")
def _check_max_threads(result, call, args, kwargs):
    expect(isinstance(result, int) and result >= 1, f"max_threads() = {result!r}")


# -- the harness's own checks (test_fuzz_known.py) ------------------------------------------------

def crash_for_test():
    """Die the way a kernel bug does. Under tests/fuzz/sanitize.sh, first leave a marker beside the
    sanitizer's reports (<log_path>-expected.<pid>), so that the script counts the report this
    provokes as the self-test's, not as a finding."""
    import re
    import signal

    m = re.search(r"(?:^|:)log_path=([^:]+)", os.environ.get("ASAN_OPTIONS", ""))
    if m:
        with open(f"{m.group(1)}-expected.{os.getpid()}", "w") as f:
            f.write("crash_for_test: the fuzz harness's self-test\n")
    os.kill(os.getpid(), signal.SIGSEGV)


def hang_for_test():
    import time

    time.sleep(120)


def write_past_for_test(a):
    """Write one element before a guarded array, as an off-by-one kernel would."""
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    base.reshape(-1)[0] = 12345


# -- the input-feeding attentional decoder (issue 12) ---------------------------------------------

def core_attn_decoder(forward, backward=None, reuse=False):
    """_core.attn_decoder_forward(**forward); then, when `backward` is given,
    _core.attn_decoder_backward(workspace, **backward) (twice with reuse: the second must be refused)."""
    attn_h, alpha, h_n, c_n, ws = _core.attn_decoder_forward(**forward)
    x, memory = forward.get("x"), forward.get("memory")
    if isinstance(x, np.ndarray) and isinstance(memory, np.ndarray):
        expect_shape(alpha, x.shape[:2] + memory.shape[:1], "alpha")
        expect(not bool((alpha < 0).any()), "alpha has a negative weight")
    if backward is not None:
        dx, dmemory, dh0, dc0, dfeed0 = _core.attn_decoder_backward(ws, **backward)
        if isinstance(x, np.ndarray):
            expect_shape(dx, x.shape, "grad of x")
        if isinstance(memory, np.ndarray):
            expect_shape(dmemory, memory.shape, "grad of memory")
        if reuse:
            _core.attn_decoder_backward(ws, **backward)
    return attn_h


def input_feed_rnn(ctor, attn, x, memory, memory_lengths=None, hx=None, feed0=None, grad="ones", grad_h_n=None,
                   train=True, backward=True):
    """nn.InputFeedRNN(**ctor, attention=nn.Attention(**attn)), forward, then backward."""
    layer = nn.InputFeedRNN(attention=nn.Attention(**attn), **ctor)
    layer.train(train)
    attn_h, alpha, h_n = layer(x, memory, memory_lengths, hx, feed0)
    xa, ma = np.asarray(x), np.asarray(memory)
    expect_shape(attn_h, xa.shape[:2] + (layer.feed_size,), "attn_h")
    expect_shape(alpha, xa.shape[:2] + ma.shape[:1], "alpha")
    if memory_lengths is not None:
        lens = np.asarray(memory_lengths)
        for b, n in enumerate(lens):
            expect(bool(np.all(alpha[:, b, int(n):] == 0)), "alpha is not 0 past a memory length")
    if moderate(xa, ma, hx, feed0, limit=1e6):
        expect_finite(attn_h, "attn_h")
    if backward:
        dx, dmemory = layer.backward(_grad_like(grad, attn_h), _grad_like(grad_h_n, h_n))
        expect_shape(dx, xa.shape, "grad of x")
        expect_shape(dmemory, ma.shape, "grad of memory")
    return attn_h


def seq2seq_model(ctor, src, src_lengths, tgt_in, tgt_out, scheduled_sampling=0.0, train=True, method="greedy",
                  beam_width=1, max_len=3):
    """nn.Seq2Seq(**ctor): loss, backward, evaluate_batch, then decode every source."""
    model = nn.Seq2Seq(**ctor)
    model.train(train)
    model.scheduled_sampling = scheduled_sampling
    loss = model.loss(src, src_lengths, tgt_in, tgt_out)
    if moderate(loss, limit=1e6):
        expect(np.isfinite(loss), "Seq2Seq.loss is not finite")
    model.backward()
    nll, count, right = model.evaluate_batch(src, src_lengths, tgt_in, tgt_out)
    expect(0 <= right <= count == np.asarray(tgt_out).size, "Seq2Seq.evaluate_batch counts")
    s = np.asarray(src)
    lens = np.full(s.shape[1], s.shape[0]) if src_lengths is None else np.asarray(src_lengths)
    hyps = model.translate_ids([s[:n, b] for b, n in enumerate(lens)], bos=0, eos=1, method=method,
                               beam_width=beam_width, max_len=max_len, seed=0)
    expect(len(hyps) == s.shape[1] and all(1 <= len(h[0].tokens) <= max_len for h in hyps), "translate_ids lengths")
    return loss


# -- seq2seq data (rnncore.data pairs, rnncore.datasets parallel text, rnncore.metrics) -------------

def _check_pair_batch(b, ds=None):
    expect(isinstance(b, data.PairBatch), "PairBatch: not a PairBatch")
    S, B = b.src.shape
    T = b.tgt_in.shape[0]
    expect(b.tgt_in.shape == b.tgt_out.shape == (T, B), "PairBatch: tgt_in/tgt_out shapes")
    expect(b.src_lengths.shape == b.tgt_lengths.shape == (B,), "PairBatch: lengths shapes")
    expect(all(a.dtype == np.int64 for a in b), "PairBatch: not int64")
    expect(b.src_lengths.min() >= 1 and b.src_lengths.max() == S, "PairBatch: src_lengths outside [1, S]")
    expect(np.array_equal((b.tgt_out != -100).sum(axis=0), b.tgt_lengths), "PairBatch: tgt_lengths != non-ignored")
    if ds is not None:
        expect(np.all(b.tgt_in[0] == ds.bos_id), "PairBatch: tgt_in does not start with <s>")
        expect(np.all(b.tgt_out[b.tgt_lengths - 1, np.arange(B)] == ds.eos_id), "PairBatch: tgt_out does not end "
                                                                                "with </s>")


def pair_tokenizer(sentences, kwargs=None, text=""):
    tok = data.pair_tokenizer(sentences, **(kwargs or {}))
    v = tok.vocab
    expect((v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3), "pair_tokenizer: specials are not 0..3")
    ids = tok.encode(text)
    expect(ids.size == 0 or (ids.min() >= 0 and ids.max() < len(v)), "pair_tokenizer: ids outside the vocabulary")
    return len(v)


def pair_dataset(pairs, kwargs=None, indices=(0,), decode=None):
    ds = data.PairDataset(pairs, **(kwargs or {}))
    b = ds.make_batch(indices)
    _check_pair_batch(b, ds)
    ds.decode_target(b.tgt_out[:, 0])
    ds.decode_source(b.src[:, 0])
    if decode is not None:
        ds.decode_target(decode)
    return b.src.shape


def pair_batcher(pairs, batch_size=2, kwargs=None, take=3, state=None):
    ds = data.PairDataset(pairs)
    it = data.PairBatcher(ds, batch_size, **(kwargs or {}))
    if state is not None:
        it.load_state_dict(state)
    n = 0
    for b in itertools.islice(iter(it), take):
        _check_pair_batch(b, ds)
        n += 1
    it.load_state_dict(json.loads(json.dumps(it.state_dict())))
    return n


def split_pairs(pairs, valid_fraction=0.1, test_fraction=0.1, seed=0):
    from rnncore import datasets

    c = datasets.split_pairs(pairs, valid_fraction, test_fraction, seed)
    refs = c.refs["train"] + c.refs["valid"] + c.refs["test"]
    expect(sorted(refs) == list(range(len(c))), "split_pairs: a pair is missing or in two splits")
    return len(c)


def osis_text(markup):
    from rnncore import datasets

    text = datasets.osis_text(markup)
    expect(text == " ".join(text.split()), "osis_text: whitespace not collapsed")
    return len(text)


def _two_files(raws, names, fn):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for raw, name in zip(raws, names):
            paths.append(os.path.join(tmp, name))
            with open(paths[-1], "wb") as f:
                f.write(raw)
        return fn(*paths)


def parallel_files(src_raw, tgt_raw, skip_empty=True):
    from rnncore import datasets

    pairs = _two_files((src_raw, tgt_raw), ("a.src", "a.tgt"),
                       lambda s, t: datasets.parallel_files(s, t, skip_empty=skip_empty))
    expect(all(isinstance(a, str) and isinstance(b, str) for a, b in pairs), "parallel_files: not str pairs")
    return len(pairs)


def read_tsv(raw, skip_empty=True):
    from rnncore import datasets

    pairs = _two_files((raw,), ("a.tsv",), lambda p: datasets.read_tsv(p, skip_empty=skip_empty))
    expect(all("\t" not in a + b for a, b in pairs), "read_tsv: a tab inside a column")
    return len(pairs)


def bible_pairs(**kw):
    """rnncore.datasets.bible_pairs(**kw): three splits with one ref per pair."""
    from rnncore import datasets

    c = datasets.bible_pairs(**kw)
    for name in ("train", "valid", "test"):
        expect(len(c[name]) == len(c.refs[name]), f"bible_pairs: {name} refs and pairs differ in number")
    return len(c)


def bleu(hypotheses, references, kwargs=None):
    from rnncore import metrics

    score = metrics.bleu(hypotheses, references, **(kwargs or {}))
    expect(0.0 <= score <= 100.0 + 1e-9, f"bleu: {score} outside [0, 100]")
    return score


def token_accuracy(predictions, targets, ignore_index=-100):
    from rnncore import metrics

    acc = metrics.token_accuracy(predictions, targets, ignore_index)
    expect(0.0 <= acc <= 1.0, f"token_accuracy: {acc} outside [0, 1]")
    return acc


def perplexity(nll, num_tokens=None):
    from rnncore import metrics

    p = metrics.perplexity(nll, num_tokens)
    expect(p >= 1.0, f"perplexity: {p} < 1")
    return p


# -- seq2seq decoding (issue 12: gen) --------------------------------------------------------------

def _expect_hypotheses(out, V, batch, what):
    expect(isinstance(out, list) and len(out) == batch, f"{what}: not one list per source")
    for hyps in out:
        expect(len(hyps) >= 1, f"{what}: a source without a hypothesis")
        for h in hyps:
            _expect_tokens(h[0], V, what)
            expect(len(h[0]) >= 1 and (np.asarray(h[0]) >= 0).all(), f"{what}: an empty or negative token list")
            if h[4] is not None:
                expect_shape(h[4], (len(h[0]),) + np.asarray(h[4]).shape[1:], "attention")


def core_seq2seq_decoder(ctor, ops):
    """_core.Seq2SeqDecoder(**ctor), then ops: a list of ("decode" | "forced", kwargs)."""
    dec = _core.Seq2SeqDecoder(**ctor)
    V = dec.vocab_size
    for op, kwargs in ops:
        result = getattr(dec, op)(**kwargs)
        if op == "decode":
            memory, h0 = kwargs.get("memory"), kwargs.get("h0")
            batch = memory.shape[1] if isinstance(memory, np.ndarray) and memory.ndim == 3 else h0.shape[1]
            _expect_hypotheses(result, V, batch, "Seq2SeqDecoder.decode")
        else:
            tokens = np.asarray(kwargs.get("tokens"))
            expect_shape(result[0], tokens.shape + (V,), "forced logits")
    return len(ops)


def seq2seq_decode(parts, attention, memory, memory_lengths, state, threads=None, **kwargs):
    """sampling.seq2seq_decode over DecoderParts(**parts) with nn.Attention(**attention) (or None)."""
    p = sampling.DecoderParts(attention=None if attention is None else nn.Attention(**attention), **parts)
    out = sampling.seq2seq_decode(p, memory, memory_lengths, state, threads=threads, **kwargs)
    expect(isinstance(out, list), "seq2seq_decode: not a list")
    for hyps in out:
        for h in hyps:
            _expect_tokens(h.tokens, np.asarray(parts["embedding"]).shape[0], "seq2seq_decode")
    return len(out)


def rnn_stream(ctor, chunks, batch_size=1, capacity=1, threads=None, state=None, reserve=None, reload=False,
               step=False):
    """nn.<cell>(**ctor).stream(...): feed each chunk (and step), then check the outputs equal one
    forward over the concatenated chunks, bit for bit, when every chunk was accepted."""
    ctor = dict(ctor)  # the drawn arguments stay as drawn (a repeated call sees them again)
    # a mutated kind ("GRU", junk) picks by name where it can; a junk ctor is the layer's to refuse
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}.get(str(ctor.pop("kind", "lstm")).lower(), nn.LSTM)
    layer = cls(**ctor)
    layer.eval()
    s = layer.stream(batch_size=batch_size, capacity=capacity, threads=threads)
    if state is not None:
        s.state = state
    h0 = s.state
    if reserve is not None:
        s.reserve(reserve)
    if reload:
        s.load_weights()
    outs = []
    for x in chunks:
        outs.append(np.array(s.feed(x)))
    if step and chunks:
        x1 = np.ascontiguousarray(np.asarray(chunks[-1])[0])
        outs.append(np.array(s.step(x1))[None])
        chunks = list(chunks) + [x1[None]]
    if outs:
        y, _ = layer.forward(np.concatenate([np.asarray(c) for c in chunks]), h0)
        expect(np.array_equal(np.concatenate(outs), y, equal_nan=True), "stream outputs differ from forward")
    expect(s.allocations == 0 or reserve is not None, "stream allocated inside feed")
    return s.state


def core_recurrent_stream(cell, weights, batch_size, capacity, threads=1, xs=(), reserve=None, reset=False,
                          bf16=False):
    """_core.RecurrentStream: construct (float32 or bf16), feed each chunk (finite in, finite out), read and set
    the state."""
    s = _core.RecurrentStream(cell, weights, batch_size, capacity, threads, bf16=bf16)
    if reserve is not None:
        s.reserve(reserve)
    for x in xs:
        y = s.feed(x)
        expect_shape(y, np.shape(x)[:2] + (np.shape(weights[0][1])[1],), "stream output")
        if moderate(x, weights):
            expect_finite(y, "stream output")
    h, c = s.get_state()
    s.set_state(h, c)
    if reset:
        s.reset()
    return s.allocations
# -- rnncore.distributed without MPI (issue 18; the MPI paths: tests/test_distributed.py) --------------

def world_of_one(timeout=None, n=5, loss=1.5, count=3, clock=0.0):
    """init() outside an MPI launcher is a world of one: shards are everything, the allreduce the identity."""
    from rnncore import distributed

    expect(not distributed.in_mpi_environment(), "the fuzz worker looks like an MPI job")
    world = distributed.init(timeout=timeout)
    expect((world.rank, world.size, world.local_rank) == (0, 1, 0), f"init() outside MPI gave {world!r}")
    lo, hi = world.shard(n)
    expect((lo, hi) == (0, n), f"World.shard({n}) in a world of one gave {(lo, hi)}")
    out = world.allreduce_gradients([], loss, count, clock)
    expect(out[1] == count, f"allreduce_gradients in a world of one changed the count: {out}")
# -- issue 14: forecasting and output recurrence ---------------------------------------------------

def mse_function(input, target, kwargs=None):
    """nn.mse_loss(input, target, **kwargs): a returned loss is finite (overflow raises)."""
    loss, dinput = nn.mse_loss(input, target, **(kwargs or {}))
    expect(finite(loss), f"mse_loss returned a non-finite loss {loss!r} instead of raising")
    if dinput is not None:
        expect_shape(dinput, np.shape(loss) if np.ndim(loss) else np.shape(np.asarray(input)), "dinput")
        expect(finite(dinput), "mse_loss returned a non-finite gradient beside a finite loss instead of raising")
    return loss


def mse_module(ctor, input, target, mask=None, grad=1.0):
    m = nn.MSELoss(**ctor)
    loss = m(input, target, mask)
    expect(finite(loss), f"MSELoss returned a non-finite loss {loss!r}")
    d = m.backward(grad)
    expect_shape(d, np.shape(np.asarray(input)), "dinput")
    return loss


def sequence_regressor(ctor, x, target, lengths=None, reduction="mean", train=True):
    model = nn.SequenceRegressor(**ctor)
    model.train(train)
    loss = model.loss(x, target, lengths, reduction)
    expect(finite(loss), f"SequenceRegressor.loss returned a non-finite loss {loss!r}")
    dx = model.backward()
    expect_shape(dx, np.shape(np.asarray(x)), "grad_x")
    return loss


def output_recurrent(ctor, x, target, y0=None, reduction="mean"):
    """OutputRecurrentRNN: teacher-forced loss and backward, then free running from the same inputs."""
    model = nn.OutputRecurrentRNN(**ctor)
    loss = model.loss(x, target, y0, reduction)
    expect(finite(loss), f"OutputRecurrentRNN.loss returned a non-finite loss {loss!r}")
    dx = model.backward()
    expect_shape(dx, np.shape(np.asarray(x)), "grad_x")
    free = model.free_run(x, y0)
    expect_shape(free, np.shape(np.asarray(target)), "free_run")
    if moderate(*[np.asarray(v) for v in (x, y0) if isinstance(v, np.ndarray)], limit=1e30):
        expect(finite(free), "OutputRecurrentRNN.free_run returned non-finite values for moderate inputs")
    return loss


def series(text, values):
    """datasets.parse_series_csv(text) and datasets.check_series(values): finite 1-D results or ValueError."""
    from rnncore import datasets

    out = []
    for fn in (lambda: datasets.parse_series_csv(text)[1], lambda: datasets.check_series(values, "values", "fuzz")):
        try:
            v = fn()
        except ValueError:
            continue
        expect(v.ndim == 1 and v.size > 0 and np.isfinite(v).all(), "a series came back empty or non-finite")
        out.append(v.size)
    return out
# -- ELMo-style BiLM (issue 14) ---------------------------------------------------------------------

def bilm(ctor, tokens, lengths=None, train=True, weights=None, mix_only=False):
    """nn.BiLM(**ctor): loss + backward, direction_losses, embed + embed_backward, representations
    + embed_backward; shapes (T, B, 2R) / (N, T, B, 2R) (batch-major with batch_first or a list)."""
    model = nn.BiLM(**ctor)
    model.train(train)
    _fill_weights(model, weights)
    loss = model.loss(tokens, lengths)
    if weights in (None, "zero"):
        expect(finite(loss), f"BiLM.loss returned a non-finite loss {loss!r}")
    model.backward()
    f, b, n = model.direction_losses(tokens, lengths)
    expect(isinstance(n, int) and n >= 0, f"BiLM.direction_losses: count {n!r}")
    out = model.embed(tokens, lengths)
    N, R2 = model.num_layers + 1, model.output_size
    expect(out.ndim == 3 and out.shape[2] == R2, f"BiLM.embed: shape {out.shape}")
    if weights in (None, "zero"):
        expect(finite(out), "BiLM.embed: non-finite output for finite weights")
    model.embed_backward(np.ones_like(out), mix_only=mix_only)
    reps = model.representations(tokens, lengths)
    expect_shape(reps, (N,) + out.shape, "BiLM.representations")
    model.embed_backward(np.ones_like(reps))
    return float(loss)


def scalar_mix(ctor, layers, grad=None):
    """nn.ScalarMix(**ctor): forward (N, ...) -> (...), backward -> (N, ...)."""
    mix = nn.ScalarMix(**ctor)
    out = mix(layers)
    la = np.asarray(layers)
    expect_shape(out, la.shape[1:], "ScalarMix output")
    dl = mix.backward(np.ones_like(out) if grad is None else grad)
    expect_shape(dl, la.shape, "ScalarMix grad of layers")
    expect(finite(mix.mixing_weights()) and abs(float(mix.mixing_weights().sum()) - 1) < 1e-9,
           "ScalarMix.mixing_weights: not a softmax")
    return out.size


def elmo_classifier(ctor, x, labels, lengths=None, reduction="mean", train=True, from_bilm=False):
    """nn.ELMoClassifier(**ctor) (or from_bilm of a BiLM with the same sizes): loss + backward; a
    frozen BiLM receives no gradient."""
    if from_bilm:
        c = dict(ctor)
        keys = ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "padding_idx", "batch_first", "dtype")
        base = nn.BiLM(**{k: c.pop(k) for k in keys if k in c})
        model = nn.ELMoClassifier.from_bilm(base, c.pop("num_classes"), **c)
    else:
        model = nn.ELMoClassifier(**ctor)
    model.train(train)
    model.zero_grad()
    loss = model.loss(x, labels, lengths, reduction)
    expect(finite(loss), f"ELMoClassifier.loss returned a non-finite loss {loss!r}")
    model.backward()
    if not model.finetune:
        trainable = {id(p) for p in model.trainable_parameters()}
        for name, p in model.named_parameters():
            if id(p) not in trainable:
                expect(not np.any(p.grad), f"ELMoClassifier: frozen {name} got a gradient")
    return float(loss)
