"""rnncore: fast recurrent neural networks (RNN, LSTM, GRU) on the CPU.

The hot path is C++ (rnncore._core): fused cell kernels, backpropagation through time,
OpenMP threads. This package is the thin Python layer over it.
"""
from . import data, nn, optim, sampling
from ._checks import NoForwardError
from ._threads import get_num_threads, set_num_threads
from .io import CheckpointError, from_torch, load, save, to_torch
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "nn", "optim", "data", "sampling", "Trainer", "set_num_threads", "get_num_threads", "NoForwardError",
    "save", "load", "CheckpointError", "from_torch", "to_torch", "__version__",
]
