"""rnncore.nn: layers and models, each an explicit forward/backward pair."""
from .cell import GRUCell, LSTMCell, RNNCell
from .module import Module, Parameter
from .rnn import GRU, LSTM, RNN, RNNBase

__all__ = ["Module", "Parameter", "RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]
