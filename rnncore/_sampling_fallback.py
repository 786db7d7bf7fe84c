"""TODO: replace with rnncore.sampling -- a stand-in until the C++ decoding loop's Python front lands.

The trainer and the command line call :func:`sampler` below, which returns the planned
``rnncore.sampling`` module when it exists and this fallback otherwise. The fallback has the
planned signatures but is slow and simple: it runs ``model.forward`` one token at a time in
eval mode (a Python loop over time, acceptable only for short samples) and supports
temperature (0 = greedy), top-k, top-p, repetition penalty and stop tokens.

    generate(model, prime, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
             repetition_penalty=1.0, stop_tokens=None, threads=None) -> ids (n,) or (B, n)
    stream(...) -> yields token ids (ints for a (n,) prime, (B,) arrays for a (B, n) prime)

Only the new tokens are returned (not the prime). Nothing here touches the model's own
random generators, so sampling during training does not change the training run.
"""
import importlib.util

import numpy as np


def sampler():
    """The module providing generate()/stream(): rnncore.sampling if present, else this fallback."""
    # TODO: replace with rnncore.sampling (drop this module once it is merged).
    if importlib.util.find_spec("rnncore.sampling") is not None:
        from . import sampling

        return sampling
    import sys

    return sys.modules[__name__]


def _prime_ids(prime, fn):
    ids = np.asarray(prime)
    if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2) or ids.shape[-1] < 1:
        raise ValueError(f"{fn}: prime must be token ids of shape (n,) or (B, n) with n >= 1, "
                         f"got dtype {ids.dtype} and shape {ids.shape}")
    return ids.astype(np.int64)


def _pick(logits, rng, temperature, top_k, top_p, penalty, seen):
    """logits (B, V) -> next ids (B,)."""
    logits = logits.astype(np.float64)
    if penalty != 1.0:
        for b, ids in enumerate(seen):
            idx = np.fromiter(ids, np.int64)
            row = logits[b, idx]
            logits[b, idx] = np.where(row > 0, row / penalty, row * penalty)
    if temperature <= 0:
        return logits.argmax(axis=1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = np.sort(logits, axis=1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=1)
        sorted_p = np.take_along_axis(p, order, axis=1)
        keep = np.cumsum(sorted_p, axis=1) - sorted_p < top_p
        mask = np.zeros_like(p, dtype=bool)
        np.put_along_axis(mask, order, keep, axis=1)
        p = np.where(mask, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    u = rng.random(p.shape[0])
    return np.minimum((np.cumsum(p, axis=1) < u[:, None]).sum(axis=1), p.shape[1] - 1)


def stream(model, prime, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
           repetition_penalty=1.0, stop_tokens=None, threads=None):
    fn = "sampling.stream"
    ids = _prime_ids(prime, fn)
    single = ids.ndim == 1
    ids = ids[None] if single else ids  # (B, n)
    rng = np.random.default_rng(seed)
    stops = set() if stop_tokens is None else {int(t) for t in np.atleast_1d(stop_tokens)}
    seen = [set(row.tolist()) for row in ids]
    was_training = model.training
    model.eval()
    try:
        def step(tokens, state):  # tokens (t, B) time-major unless the model is batch_first
            x = tokens.T if model.batch_first else tokens
            logits, state = model.forward(np.ascontiguousarray(x), state)
            last = logits[:, -1] if model.batch_first else logits[-1]
            return last, state

        last, state = step(ids.T, None)
        done = np.zeros(ids.shape[0], dtype=bool)
        for _ in range(int(max_new_tokens)):
            nxt = _pick(last, rng, temperature, top_k, top_p, repetition_penalty, seen)
            for b, t in enumerate(nxt.tolist()):
                seen[b].add(t)
            yield int(nxt[0]) if single else nxt.copy()
            done |= np.isin(nxt, list(stops))
            if done.all():
                return
            last, state = step(nxt[None, :], state)
    finally:
        model.train(was_training)


def generate(model, prime, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
             repetition_penalty=1.0, stop_tokens=None, threads=None):
    out = list(stream(model, prime, max_new_tokens, temperature, top_k, top_p, seed, repetition_penalty,
                      stop_tokens, threads))
    single = np.asarray(prime).ndim == 1
    if single:
        return np.array(out, dtype=np.int64)
    B = np.asarray(prime).shape[0]
    return np.stack(out, axis=1).astype(np.int64) if out else np.zeros((B, 0), np.int64)
