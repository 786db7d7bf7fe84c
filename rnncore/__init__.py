"""rnncore: fast recurrent neural networks (RNN, LSTM, GRU) on the CPU.

The hot path is C++ (rnncore._core): fused cell kernels, backpropagation through time,
OpenMP threads. This package is the thin Python layer over it.
"""
from . import data, nn
from ._checks import NoForwardError
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["nn", "data", "set_num_threads", "get_num_threads", "NoForwardError", "__version__"]
