"""rnncore.torch.LSTM, GRU, RNN and their cells: the torch.nn modules, run by rnncore's kernels.

Shape letters: T time steps, B batch, I input_size, H hidden_size, L num_layers,
D = 2 if bidirectional else 1.

Each class subclasses its torch.nn counterpart (rnncore.torch.LSTM is a torch.nn.LSTM), so the
constructor, the parameters (weight_ih_l0, ... as nn.Parameters), state_dict, load_state_dict,
.to(dtype), hooks, repr and the input checks are torch's own; only forward differs. It runs one
autograd Function per layer (both directions, _function.py) with the same inputs and outputs as
torch's: (T, B, I) or (B, T, I) with batch_first or (T, I) unbatched, or a PackedSequence;
hx = (h_0, c_0) for an LSTM, h_0 otherwise, (L*D, B, H) or (L*D, H); output (.., D*H);
h_n (and c_n) like h_0. An LSTM with projections (proj_size P) has h_0, h_n and the outputs P
wide instead of H (c_0, c_n stay H wide), as torch.nn.LSTM.

A PackedSequence goes to the kernels as a time-major batch in its sorted order plus the lengths:
the kernels skip every step past a sequence's end (no padded step is computed); h_0 and h_n
are reordered with sorted_indices / unsorted_indices as torch does. Dropout between layers
(training mode, dropout > 0) is torch.nn.functional.dropout on the same tensor torch's own
layer drops (the (T, B, D*H) output, or the packed data), so it draws from torch's generator
and torch.manual_seed reproduces the masks (and gives torch.nn.LSTM's masks).

Threads: the kernels run on ``module.threads`` threads, by default (None)
torch.get_num_threads(), resolved at every forward (never rnncore's own default, which
follows OMP_NUM_THREADS). The count is passed to every kernel call explicitly. Keep torch's
and rnncore's counts within the free cores: the kernels' threads meet at a barrier every time
step, so threads that must wait for a core (torch's pool still spinning after its last op,
a second OpenMP runtime in the process, other processes) make short steps up to ~100x slower.
"""
import functools
import sys
import weakref

import torch
from torch.nn.utils.rnn import PackedSequence

from .._threads import resolve_threads
from ._function import LayerMemory, Plan, recurrent_layer

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]

_MODE_CELL = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_FLOATS = (torch.float32, torch.float64)

# module -> {layer: LayerMemory}; outside the modules so that copy.deepcopy and pickle never
# meet the (unpicklable) workspaces, and a module that is patched has one too.
_memory = weakref.WeakKeyDictionary()


def _layer_memory(module, layer, limit=2):
    layers = _memory.get(module)
    if layers is None:
        layers = _memory[module] = {}
    mem = layers.get(layer)
    if mem is None:
        mem = layers[layer] = LayerMemory(limit)
    return mem


def forget_workspaces(module):
    """Drop the workspaces and gradient buffers kept for `module` (freed with their last reference)."""
    _memory.pop(module, None)


def hidden_from_compile(fn):
    """`fn`, run outside torch.compile's graphs (a graph break; torch._dynamo.disable).

    Importing torch._dynamo takes seconds, so it is never imported here: the disabled wrapper
    is made on the first call after something else (torch.compile) has imported it.
    """
    disabled = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not disabled:
            dynamo = sys.modules.get("torch._dynamo")
            if dynamo is None:
                return fn(*args, **kwargs)
            disabled.append(dynamo.disable(fn))
        return disabled[0](*args, **kwargs)

    return call


def resolve_module_threads(module):
    threads = getattr(module, "threads", None)
    if threads is None:
        return torch.get_num_threads()
    return resolve_threads(threads, f"{type(module).__name__}.threads")


def check_cpu(fn, **tensors):
    """A clear error for a tensor rnncore cannot read: not on the CPU, or not dense."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise RuntimeError(f"{fn}: rnncore.torch runs on the CPU only, but {name} is on {t.device}; move the "
                               f"module and its inputs to the CPU (.cpu()), or use the torch.nn module on {t.device}")
        if t.layout != torch.strided:
            raise RuntimeError(f"{fn}: {name} must be a dense (strided) tensor, got layout {t.layout}")


def check_weight_dtype(fn, weight):
    if weight.dtype not in _FLOATS:
        raise RuntimeError(f"{fn}: rnncore.torch runs float32 and float64 only, but the weights are {weight.dtype}; "
                           f"convert the module with .float() or .double()")


def autocast_input(t, weight):
    """Under torch.autocast, an input of another dtype (e.g. a bfloat16 activation) in the
    weights' dtype: the layer runs, and answers, in float32/float64. Else `t` unchanged."""
    if t is not None and t.dtype != weight.dtype and torch.is_floating_point(t) and torch._C._is_any_autocast_enabled():
        return t.to(weight.dtype)
    return t


def dense(t):
    """`t` as a contiguous tensor whose memory numpy can share (a copy only when it must)."""
    if t is None:
        return None
    if t.is_neg() or t.is_conj():
        t = t.resolve_neg().resolve_conj()
    return t.contiguous()


# ----------------------------------------------------------------------------------------------
# Sequence layers
# ----------------------------------------------------------------------------------------------
class _DropInRNN:
    """forward for torch.nn.RNNBase subclasses (mixed in before the torch class)."""

    def __init__(self, *args, threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = threads

    def _split_hx(self, hx, fn):
        """(h_0, c_0) of an LSTM, (h_0, None) otherwise, checked to be tensors."""
        if hx is None:
            return None, None
        if self.mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{fn}: hx must be a tuple (h_0, c_0) for an LSTM, got {type(hx).__name__}")
            return hx[0], hx[1]
        if not isinstance(hx, torch.Tensor):
            raise TypeError(f"{fn}: hx must be a Tensor (h_0) for {type(self).__name__}, got {type(hx).__name__}")
        return hx, None

    def forward(self, input, hx=None):
        """forward(input, hx=None) -> (output, h_n), an LSTM's (output, (h_n, c_n)), as torch.nn's."""
        name = type(self).__name__
        fn = f"{name}.forward"
        cell = _MODE_CELL[self.mode]
        lstm = cell == "lstm"
        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        named = {n: getattr(self, n) for names in self._all_weights for n in names}
        weights = [[named[n] for n in names] for names in self._all_weights]  # per layer and direction
        packed = isinstance(input, PackedSequence)
        h0, c0 = self._split_hx(hx, fn)
        check_cpu(fn, input=input.data if packed else input, h_0=h0, c_0=c0)
        check_cpu(fn, **named)
        check_weight_dtype(fn, weights[0][0])

        # -- the input as (T, B, I), time-major; checks and messages as torch.nn's --------------
        rows = lengths = None
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self.check_input(data, batch_sizes)
            if h0 is not None:
                h0, c0 = self._permuted(h0, c0, sorted_indices)
                self._check_states(data, h0, c0, batch_sizes)
            T, B = batch_sizes.numel(), int(batch_sizes[0])
            if int(batch_sizes[-1]) == B:  # every sequence is T long: the packed data is the (T, B, I) batch
                x = data.reshape(T, B, data.size(1))
            else:
                valid = torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, B); row-major = packed order
                lengths = valid.sum(0).numpy()  # int64 (B,), non-increasing
                rows = valid.reshape(-1).nonzero().squeeze(1)  # (N,) row of each packed row in (T*B)
                # One copy into the padded layout (zeros past each length, which the kernels never read).
                x = data.new_zeros((T * B, data.size(1))).index_copy_(0, rows, data).view(T, B, data.size(1))
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            x = input if batched else input.unsqueeze(batch_dim)
            if h0 is not None:
                want = 3 if batched else 2
                got = [t.dim() for t in (h0, c0) if t is not None]
                if any(g != want for g in got):
                    kind = "batched 3-D" if batched else "unbatched 2-D"
                    states = "hx and cx" if lstm else "hx"
                    dims = ", ".join(f"{g}-D" for g in got)
                    raise RuntimeError(f"For {kind} input, {states} should also be {want}-D but got "
                                       f"{'(' + dims + ') tensors' if lstm else dims + ' tensor'}")
                if not batched:
                    h0 = h0.unsqueeze(1)
                    c0 = None if c0 is None else c0.unsqueeze(1)
                self._check_states(x, h0, c0, None)
            else:
                self.check_input(x, None)
            if self.batch_first:
                x = x.transpose(0, 1)
            T = x.size(0)
        if T == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        x, h0, c0 = (dense(autocast_input(t, weights[0][0])) for t in (x, h0, c0))
        threads = resolve_module_threads(self)

        # -- the layers: one autograd Function per layer, both directions ------------------------
        h_n, c_n = [], []
        for layer in range(L):
            ws = [dense(w) for group in weights[layer * D:(layer + 1) * D] for w in group]
            plan = Plan(cell, D, H, self.bias, lengths, threads, _layer_memory(self, layer), self.proj_size)
            sl = slice(layer * D, (layer + 1) * D)
            out, hn, cn = recurrent_layer(plan, x, None if h0 is None else h0[sl], None if c0 is None else c0[sl], ws)
            h_n.append(hn)
            c_n.append(cn)
            if self.training and self.dropout > 0 and layer < L - 1:
                out = self._dropout(out, rows)
            x = out
        h_n = h_n[0] if L == 1 else torch.cat(h_n)
        c_n = None if not lstm else (c_n[0] if L == 1 else torch.cat(c_n))

        # -- outputs in the caller's layout --------------------------------------------------------
        if packed:
            out = x.reshape(-1, x.size(2)) if rows is None else x.reshape(-1, x.size(2)).index_select(0, rows)
            h_n, c_n = self._permuted(h_n, c_n, unsorted_indices)
            output = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
        else:
            output = x.transpose(0, 1) if self.batch_first else x
            if not batched:
                output = output.squeeze(batch_dim)
                h_n = h_n.squeeze(1)
                c_n = None if c_n is None else c_n.squeeze(1)
        return output, ((h_n, c_n) if lstm else h_n)

    forward = hidden_from_compile(forward)

    def _permuted(self, h, c, permutation):
        if permutation is None:
            return h, c
        return h.index_select(1, permutation), None if c is None else c.index_select(1, permutation)

    def _check_states(self, x, h0, c0, batch_sizes):
        if self.mode == "LSTM":
            if c0 is None:
                raise TypeError(f"{type(self).__name__}.forward: hx must be a tuple (h_0, c_0) for an LSTM")
            self.check_forward_args(x, (h0, c0), batch_sizes)
        else:
            self.check_forward_args(x, h0, batch_sizes)
        for name, t in (("hx[0]" if c0 is not None else "hx", h0), ("hx[1]", c0)):
            if t is not None and t.dtype != x.dtype:
                raise RuntimeError(f"{type(self).__name__}.forward: {name} must have the input's dtype {x.dtype}, "
                                   f"got {t.dtype}")

    def _dropout(self, out, rows):
        """torch's dropout on the tensor torch.nn's layer drops: (T, B, D*H), or the packed data."""
        if rows is None:
            return torch.nn.functional.dropout(out, self.dropout, True)
        flat = out.view(-1, out.size(2))
        kept = torch.nn.functional.dropout(flat.index_select(0, rows), self.dropout, True)
        return torch.zeros_like(flat).index_copy_(0, rows, kept).view(out.shape)


_RNN_DOC = """

    rnncore.torch: this module is a {base} whose forward runs rnncore's C++ kernels (forward and
    backpropagation through time, one autograd Function per layer): same constructor, parameters,
    state_dict, inputs and outputs (batch_first, hx, bidirectional, stacking, dropout between
    layers from torch's generator, PackedSequence in and out), float32 and float64, CPU only.
    Under torch.autocast an input of another dtype runs (and comes out) in the weights' dtype.

    Extra keyword argument ``threads`` (also an attribute): the kernels' thread count, passed
    to every kernel call; None (the default) means torch.get_num_threads() at each forward.
    Keep torch's and rnncore's thread counts within the free cores: oversubscribed cores (two
    OpenMP pools, or other processes) slow short steps down by up to ~100x.
    """


class LSTM(_DropInRNN, torch.nn.LSTM):
    __doc__ = "Long short-term memory (gates i, f, g, o) on rnncore's kernels." + _RNN_DOC.format(
        base="torch.nn.LSTM") + """
    proj_size P > 0 (projections, h_t = W_hr (o_t * tanh(c_t))) runs in the kernels too: output
    (.., D*P), h_n (L*D, B, P), c_n (L*D, B, H), weight_hr_l{k}[_reverse] (P, H), as torch.nn.LSTM's.
    """


class GRU(_DropInRNN, torch.nn.GRU):
    __doc__ = "Gated recurrent unit (gates r, z, n) on rnncore's kernels." + _RNN_DOC.format(base="torch.nn.GRU")


class RNN(_DropInRNN, torch.nn.RNN):
    __doc__ = "Elman RNN (tanh or relu) on rnncore's kernels." + _RNN_DOC.format(base="torch.nn.RNN")


# ----------------------------------------------------------------------------------------------
# Cells: one step, the sequence kernels with T = 1
# ----------------------------------------------------------------------------------------------
_CELL_POOL = 32  # a cell runs many steps before one backward: keep more free workspaces


class _DropInCell:
    """forward for torch.nn.RNNCellBase subclasses (mixed in before the torch class)."""

    _cell = None

    def __init__(self, *args, threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = threads

    def _cell_kind(self):
        if self._cell == "rnn":
            if self.nonlinearity not in ("tanh", "relu"):
                raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
            return "rnn_" + self.nonlinearity
        return self._cell

    def forward(self, input, hx=None):
        """forward(input, hx=None) -> h' (an LSTMCell: (h', c') with hx = (h, c)), as torch.nn's."""
        name = type(self).__name__
        fn = f"{name}.forward"
        cell = self._cell_kind()
        lstm = cell == "lstm"
        if lstm and hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"{fn}: hx must be a tuple (h, c) for an LSTMCell, got {type(hx).__name__}")
        states = list(hx) if lstm and hx is not None else ([] if hx is None else [hx])
        check_cpu(fn, input=input, **{f"hx[{i}]" if lstm else "hx": s for i, s in enumerate(states)})
        weights = [self.weight_ih, self.weight_hh] + ([self.bias_ih, self.bias_hh] if self.bias else [])
        check_cpu(fn, weight_ih=self.weight_ih, weight_hh=self.weight_hh,
                  **({"bias_ih": self.bias_ih, "bias_hh": self.bias_hh} if self.bias else {}))
        check_weight_dtype(fn, self.weight_ih)
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        for i, s in enumerate(states):
            if s.dim() not in (1, 2):
                what = f"hx[{i}]" if lstm else "hidden"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {s.dim()}D instead")
        batched = input.dim() == 2
        x = autocast_input(input if batched else input.unsqueeze(0), self.weight_ih)
        states = [autocast_input(s if batched else s.unsqueeze(0), self.weight_ih) for s in states]
        B, H = x.size(0), self.hidden_size
        if x.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"{name}: input dtype ({x.dtype}) does not match weight dtype ({self.weight_ih.dtype})")
        if x.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {self.input_size}")
        for i, s in enumerate(states):
            if s.dim() != 2 or s.size(0) != B:
                raise RuntimeError(f"Input batch size {B} doesn't match hidden{i} batch size "
                                   f"{s.size(0) if s.dim() == 2 else tuple(s.shape)}")
            if s.size(1) != H:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {s.size(1)}, expected {H}")
            if s.dtype != x.dtype:
                raise RuntimeError(f"{name}: hidden{i} dtype ({s.dtype}) does not match input dtype ({x.dtype})")
        h = c = None
        if states:
            h = dense(states[0]).unsqueeze(0)
            c = dense(states[1]).unsqueeze(0) if lstm else None
        plan = Plan(cell, 1, H, self.bias, None, resolve_module_threads(self), _layer_memory(self, 0, _CELL_POOL))
        _, hn, cn = recurrent_layer(plan, dense(x).unsqueeze(0), h, c, [dense(w) for w in weights])
        hn = hn[0] if batched else hn[0, 0]
        if not lstm:
            return hn
        return hn, (cn[0] if batched else cn[0, 0])

    forward = hidden_from_compile(forward)


_CELL_DOC = """

    rnncore.torch: this module is a {base} whose forward runs rnncore's kernels for one step
    (T = 1); same constructor, parameters, state_dict, inputs and outputs; float32 and float64,
    CPU only. Extra keyword argument ``threads`` as for rnncore.torch.LSTM.
    """


class LSTMCell(_DropInCell, torch.nn.LSTMCell):
    __doc__ = "One LSTM step on rnncore's kernels." + _CELL_DOC.format(base="torch.nn.LSTMCell")
    _cell = "lstm"


class GRUCell(_DropInCell, torch.nn.GRUCell):
    __doc__ = "One GRU step on rnncore's kernels." + _CELL_DOC.format(base="torch.nn.GRUCell")
    _cell = "gru"


class RNNCell(_DropInCell, torch.nn.RNNCell):
    __doc__ = "One Elman RNN step on rnncore's kernels." + _CELL_DOC.format(base="torch.nn.RNNCell")
    _cell = "rnn"

