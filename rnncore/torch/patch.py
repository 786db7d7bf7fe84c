"""patch / unpatch / patched: run the torch.nn.LSTM, GRU and RNN inside a model on rnncore's kernels.

patch swaps each such module's class in place (``module.__class__ = rnncore.torch.LSTM``, ...;
rnncore.torch.LSTM is a subclass of torch.nn.LSTM with no state of its own): the module object,
its Parameter objects (the same objects, so an optimizer built before keeps working), buffers,
hooks, training flag and every reference to it stay as they were. unpatch swaps the class back.
Only modules whose type is exactly torch.nn.LSTM, GRU or RNN are swapped: a subclass may
override forward, so it is left as it is.
"""
import contextlib

import torch

from .modules import GRU, LSTM, RNN, forget_workspaces

__all__ = ["patch", "unpatch", "patched"]

_TO_RNNCORE = {torch.nn.LSTM: LSTM, torch.nn.GRU: GRU, torch.nn.RNN: RNN}
_TO_TORCH = {ours: theirs for theirs, ours in _TO_RNNCORE.items()}


def _modules(model, fn):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    return list(model.named_modules(remove_duplicate=True))


def _swap_in(model, threads, fn):
    """Swap every plain torch.nn.LSTM/GRU/RNN of `model`; returns the swapped modules."""
    found = [(name, m) for name, m in _modules(model, fn) if type(m) in _TO_RNNCORE]
    for _, m in found:
        m.__class__ = _TO_RNNCORE[type(m)]
        if threads is not None:
            m.threads = threads
    return [m for _, m in found]


def _swap_out(modules):
    for m in modules:
        if type(m) in _TO_TORCH:
            m.__class__ = _TO_TORCH[type(m)]
            m.__dict__.pop("threads", None)
            forget_workspaces(m)


def patch(model, *, threads=None):
    """Run every torch.nn.LSTM, GRU and RNN inside `model` (or `model` itself) on rnncore's kernels.

    In place, keeping the same module and Parameter objects; returns `model`. threads: the
    kernels' thread count for the swapped modules (None: torch.get_num_threads() at each call).
    An LSTM with projections (proj_size) is swapped like any other.
    """
    _swap_in(model, threads, "patch")
    return model


def unpatch(model):
    """Make every rnncore.torch LSTM, GRU and RNN inside `model` a torch.nn one again; returns `model`."""
    _swap_out([m for _, m in _modules(model, "unpatch")])
    return model


@contextlib.contextmanager
def patched(model, *, threads=None):
    """``with patched(model): ...`` runs the block with `model` patched, then swaps back exactly
    the modules it swapped (even on an exception)."""
    swapped = _swap_in(model, threads, "patched")
    try:
        yield model
    finally:
        _swap_out(swapped)
