"""Evaluation of sequence models: BLEU (sacrebleu), token accuracy, perplexity.

- :func:`bleu`: corpus BLEU of detokenised hypotheses against references, computed by
  sacrebleu with its defaults (13a tokenisation, exponential smoothing, case-sensitive), so
  the number is the one ``sacrebleu`` prints and papers report. sacrebleu is an optional
  dependency: ``pip install sacrebleu`` (or ``pip install 'rnncore[eval]'``).
- :func:`token_accuracy`: the share of target positions (ignore_index left out) where the
  prediction is right; predictions are ids or logits.
- :func:`perplexity`: ``exp`` of the mean negative log-likelihood per token (nats).
"""
import math

import numpy as np

from ._checks import bounded_repr, check_int, check_real

__all__ = ["bleu", "token_accuracy", "perplexity"]

_INSTALL = "pip install sacrebleu"


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as exc:
        raise ImportError(f"rnncore.metrics.bleu needs sacrebleu, which is not installed; install it with\n"
                          f"    {_INSTALL}    (or: pip install 'rnncore[eval]')", name="sacrebleu") from exc
    return sacrebleu


def _strings(value, name, fn):
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError(f"{fn}: {name} must be a list of str, got {type(value).__name__}")
    out = list(value)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"{fn}: {name}[{i}] must be a str, got {type(s).__name__} {bounded_repr(s)}")
    return out


def bleu(hypotheses, references, *, tokenize="13a", lowercase=False):
    """Corpus BLEU (0..100) of `hypotheses` against `references`, by sacrebleu.

    Args:
        hypotheses: N system outputs, detokenised str (as a user would read them).
        references: N reference str (one reference each), or N lists of K str (K
            references for each hypothesis, the same K for all).
        tokenize: sacrebleu's tokeniser, default "13a" (its standard, mteval-v13a's).
        lowercase: case-insensitive BLEU.

    Returns:
        a float, ``sacrebleu.corpus_bleu(hypotheses, [refs...]).score``: 100.0 when every
        hypothesis equals its reference.

    Raises:
        ImportError: sacrebleu is not installed (the message says ``pip install sacrebleu``).
        TypeError / ValueError: not str, N differs, no hypotheses, K differs between
            hypotheses, or an unknown tokeniser.
    """
    fn = "rnncore.metrics.bleu"
    hyps = _strings(hypotheses, "hypotheses", fn)
    if isinstance(references, str) or not hasattr(references, "__iter__"):
        raise TypeError(f"{fn}: references must be a list of str (or of lists of str), got "
                        f"{type(references).__name__}")
    refs = list(references)
    if not hyps:
        raise ValueError(f"{fn}: hypotheses is empty")
    if len(refs) != len(hyps):
        raise ValueError(f"{fn}: {len(hyps)} hypotheses but {len(refs)} references (one entry per hypothesis)")
    if all(isinstance(r, str) for r in refs):
        streams = [refs]
    else:
        per = []
        for i, r in enumerate(refs):
            if isinstance(r, str):
                raise TypeError(f"{fn}: references mixes str and lists (references[{i}] is a str); give one str "
                                "per hypothesis, or a list of str for every hypothesis")
            per.append(_strings(r, f"references[{i}]", fn))
        k = len(per[0])
        if k == 0:
            raise ValueError(f"{fn}: references[0] is an empty list (each hypothesis needs a reference)")
        for i, r in enumerate(per):
            if len(r) != k:
                raise ValueError(f"{fn}: every hypothesis needs the same number of references; references[0] has "
                                 f"{k}, references[{i}] has {len(r)}")
        streams = [[r[j] for r in per] for j in range(k)]
    if not isinstance(tokenize, str):
        raise TypeError(f"{fn}: tokenize must be a str (e.g. '13a'), got {type(tokenize).__name__}")
    sacrebleu = _sacrebleu()
    from sacrebleu.metrics import BLEU

    choices = tuple(getattr(BLEU, "TOKENIZERS", ()))
    if choices and tokenize not in choices:
        raise ValueError(f"{fn}: tokenize must be one of {', '.join(choices)}, got {bounded_repr(tokenize)}")
    return float(sacrebleu.corpus_bleu(hyps, streams, tokenize=tokenize, lowercase=bool(lowercase)).score)


def _int_array(value, name, fn):
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be an array, got {type(value).__name__}") from None
    if a.dtype == object:
        raise TypeError(f"{fn}: {name} must be a numeric array, got dtype object")
    return a


def token_accuracy(predictions, targets, ignore_index=-100):
    """Share of target positions where the prediction is right (ignored positions left out).

    Args:
        predictions: predicted ids with the shape of `targets`, or logits / log-probs with
            one more trailing dimension V (their argmax is the prediction).
        targets: target ids (any shape, e.g. (T, B) tgt_out); positions equal to
            `ignore_index` are not counted.
        ignore_index: the padding label (-100, as tgt_out pads).

    Returns:
        a float in [0, 1].

    Raises:
        ValueError: shapes that do not match, or no position to count.
    """
    fn = "rnncore.metrics.token_accuracy"
    p = _int_array(predictions, "predictions", fn)
    t = _int_array(targets, "targets", fn)
    ignore_index = check_int(ignore_index, "ignore_index", fn, minimum=None)
    if t.size and t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: targets must hold integer ids, got dtype {t.dtype}")
    if p.shape == t.shape:
        if p.size and p.dtype.kind not in "iu":
            raise TypeError(f"{fn}: predictions with the shape of targets {t.shape} must be integer ids, got "
                            f"dtype {p.dtype} (logits need a trailing vocabulary dimension)")
    elif p.ndim == t.ndim + 1 and p.shape[:-1] == t.shape:
        if p.dtype.kind not in "iuf":
            raise TypeError(f"{fn}: logits must be real numbers, got dtype {p.dtype}")
        if p.shape[-1] == 0:
            raise ValueError(f"{fn}: logits have a vocabulary dimension of 0")
        p = p.argmax(axis=-1)
    else:
        raise ValueError(f"{fn}: predictions must have the shape of targets {t.shape} (ids) or {t.shape} + (V,) "
                         f"(logits), got {p.shape}")
    counted = t != ignore_index
    n = int(counted.sum())
    if n == 0:
        raise ValueError(f"{fn}: every target is ignore_index={ignore_index}: no token to count")
    return float(np.count_nonzero((p == t) & counted) / n)


def perplexity(nll, num_tokens=None):
    """Perplexity ``exp(nll / num_tokens)``: `nll` the summed negative log-likelihood (nats)
    over `num_tokens` tokens, or with ``num_tokens=None`` already the mean per token (a model's
    ``loss(..., reduction="mean")``). Returns a float (inf when it overflows).

    Raises:
        ValueError: nll negative or NaN, num_tokens < 1.
    """
    fn = "rnncore.metrics.perplexity"
    nll = check_real(nll, "nll", fn, at_least=0.0)
    if num_tokens is not None:
        num_tokens = check_int(num_tokens, "num_tokens", fn)
        nll = nll / num_tokens
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf
