"""rnncore.torch: rnncore's kernels behind PyTorch's own recurrent modules.

    import rnncore.torch as rt
    rnn = rt.LSTM(256, 512, num_layers=2, batch_first=True)   # a torch.nn.LSTM in every respect
    out, (h_n, c_n) = rnn(x)                                   # forward and BPTT run in rnncore
    rt.patch(model)                                            # or: every torch.nn.LSTM/GRU/RNN in a model
    with rt.patched(model): ...                                # ... for one block only

LSTM, GRU, RNN, LSTMCell, GRUCell and RNNCell subclass their torch.nn counterparts: the same
constructor, parameter names and layout, state_dict, inputs and outputs (batch_first, hx,
bidirectional, stacking, inter-layer dropout from torch's generator, PackedSequence), float32
and float64, CPU only. Autograd runs rnncore's backpropagation through time on the tensors'
own memory (no copies of contiguous tensors). LSTM projections (proj_size) included.

This subpackage imports torch; ``import rnncore`` never does.
"""
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .patch import patch, patched, unpatch

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "patch", "unpatch", "patched"]
