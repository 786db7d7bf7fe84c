"""One recurrent layer (every direction) as a torch.autograd.Function over rnncore's kernels.

Shape letters: T time steps, B batch, I input features, H hidden size, D directions (1 or 2),
G gates (LSTM 4, GRU 3, RNN 1); R the width of h and of each direction's output: an LSTM's
proj_size P when it has projections, else H.

The C++ kernels read and write the tensors' own memory: a contiguous CPU float32/float64
tensor and the numpy array from ``tensor.detach().numpy()`` share it, so nothing is copied on
the way in or out. The callers (modules.py) make every argument contiguous once, explicitly,
before it gets here.

    forward:  x (T, B, I), h0 (D, B, R)/c0 (D, B, H) or None, per direction (w_ih (G*H, I),
              w_hh (G*H, R) [, b_ih, b_hh (G*H,)] [, w_hr (P, H)]) -> out (T, B, D*R) (direction d
              in columns [d*R, (d+1)*R)), h_n (D, B, R)[, c_n (D, B, H)]
    backward: the kernels' BPTT for every direction; direction 1 adds its dx to direction 0's.

What a forward saves for its backward lives in rnncore's workspaces (gates, states, packed
order), one per direction, kept in ``ctx`` and given back to the layer's LayerMemory after the
backward, so the next forward of the same shape reuses their memory. A backward consumes its
workspaces; a second backward through a graph kept with ``retain_graph=True`` (as
``torch.autograd.gradcheck`` does) first recomputes the forward from the saved tensors. A
second backward without ``retain_graph`` gets torch's own "Trying to backward through the
graph a second time" RuntimeError, since the saved tensors are freed.
"""
import sys
import threading

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .. import _core

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _references(arrays, i):
    """sys.getrefcount of arrays[i], always taken the same way (so the interpreter's own share is constant)."""
    return sys.getrefcount(arrays[i])


_UNUSED = _references([np.empty(1)], 0)  # the count of an array only a list holds


class LayerMemory:
    """Memory one layer (or cell) of one module keeps from call to call.

    Workspaces: the free ones (tuples of D) wait here between a backward and the next forward;
    at most `limit` are kept.

    Gradient buffers: the kernels add the weight gradients into zeroed buffers. A fresh
    torch.zeros_like every step writes zeros into cold, often newly mapped memory (about
    0.15 ms per MB here, most of the drop-in's overhead at small batches), so the buffers are
    reused instead: numpy arrays seen by torch through torch.from_numpy. A tensor's storage
    holds a reference to its array, so the array's reference count says exactly whether any
    tensor, view or storage still uses it (autograd usually keeps the buffer as param.grad
    until the next zero_grad()); only a free one is zeroed and handed out again. At most two
    per weight of a shape (one may stay param.grad: after a first backward stole it, a
    zero_grad(set_to_none=False) zeroes it in place and later backwards add into it; the other
    serves every later backward); past that, plain torch.zeros_like.
    """

    GRAD_BUFFERS = 2  # per weight of one shape and dtype

    def __init__(self, limit=2):
        self.limit = limit
        self.workspaces = []
        self.grads = {}
        self.lock = threading.Lock()

    def take(self, D):
        """D workspaces: free ones, or new ones."""
        with self.lock:
            if self.workspaces:
                return self.workspaces.pop()
        return tuple(_core.RecurrentWorkspace() for _ in range(D))

    def give_back(self, workspaces):
        with self.lock:
            if len(self.workspaces) < self.limit:
                self.workspaces.append(workspaces)

    def zeros(self, like, sharing=1):
        """A zeroed tensor shaped like `like` (C-contiguous, same dtype), for the kernels to add into;
        `sharing`: how many weights of this call have that shape and dtype."""
        key = (tuple(like.shape), like.dtype)
        with self.lock:
            arrays = self.grads.setdefault(key, [])
            for i in range(len(arrays)):
                if _references(arrays, i) == _UNUSED:  # no tensor, view or storage uses it
                    arrays[i].fill(0)
                    return torch.from_numpy(arrays[i])
            if len(arrays) < self.GRAD_BUFFERS * sharing:
                a = np.zeros(key[0], _NUMPY_DTYPES[like.dtype])
                arrays.append(a)
                return torch.from_numpy(a)
        return torch.zeros_like(like, memory_format=torch.contiguous_format)


class Plan:
    """The non-tensor arguments of one layer call.

    cell: 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu'; D directions; H hidden size; bias: whether
    each direction's weights include (b_ih, b_hh); lengths: int64 numpy (B,) or None; threads:
    the count for the kernels; memory: the layer's LayerMemory; P: an LSTM's proj_size (0: no
    projections), which makes the outputs and h P wide and adds a last weight w_hr (P, H) per
    direction, as in torch's _all_weights (see direction_weights).
    """

    __slots__ = ("cell", "D", "H", "bias", "lengths", "threads", "memory", "P")

    def __init__(self, cell, D, H, bias, lengths, threads, memory, P=0):
        self.cell, self.D, self.H, self.bias = cell, D, H, bool(bias)
        self.lengths, self.threads, self.memory = lengths, threads, memory
        self.P = int(P)

    @property
    def R(self):
        """The width of h and of each direction's output."""
        return self.P or self.H

    @property
    def per_direction(self):
        return (4 if self.bias else 2) + (1 if self.P else 0)

    def direction_weights(self, weights, d):
        """(w_ih, w_hh, b_ih, b_hh) of direction d; weights is the flat list, per direction
        (w_ih, w_hh[, b_ih, b_hh][, w_hr]) in torch's order; the biases None without bias."""
        k = self.per_direction
        w = weights[d * k:(d + 1) * k]
        return (w[0], w[1], w[2], w[3]) if self.bias else (w[0], w[1], None, None)

    def direction_projection(self, weights, d):
        """w_hr of direction d (the last of its weights), or None without projections."""
        return weights[(d + 1) * self.per_direction - 1] if self.P else None

    def take(self):
        return self.memory.take(self.D)

    def give_back(self, workspaces):
        self.memory.give_back(workspaces)


def as_numpy(t):
    """The numpy view of a contiguous CPU tensor (shares its memory), or None."""
    return None if t is None else t.detach().numpy()


def run_forward(plan, x, h0, c0, weights, workspaces):
    """The kernels' forward for every direction; returns (out, h_n, c_n or None)."""
    T, B, _ = x.shape
    D, H, R = plan.D, plan.H, plan.R
    lstm = plan.cell == "lstm"
    xn, h0n, c0n = as_numpy(x), as_numpy(h0), as_numpy(c0)
    out = torch.empty((T, B, D * R), dtype=x.dtype)
    h_n = torch.empty((D, B, R), dtype=x.dtype)
    c_n = torch.empty((D, B, H), dtype=x.dtype) if lstm else None
    outn, hnn, cnn = out.numpy(), h_n.numpy(), None if c_n is None else c_n.numpy()
    for d in range(D):
        w_ih, w_hh, b_ih, b_hh = (as_numpy(t) for t in plan.direction_weights(weights, d))
        hn, cn, _ = _core.recurrent_forward(
            plan.cell, xn, w_ih, w_hh, b_ih, b_hh, None if h0n is None else h0n[d], None if c0n is None else c0n[d],
            plan.lengths, d == 1, outn, d * R, plan.threads, workspaces[d],
            as_numpy(plan.direction_projection(weights, d)))  # w_hr
        hnn[d] = hn
        if lstm:
            cnn[d] = cn
    return out, h_n, c_n


class RecurrentLayer(torch.autograd.Function):
    """apply(plan, x, h0, c0, *weights) -> (out, h_n, c_n) for an LSTM, else (out, h_n)."""

    @staticmethod
    def forward(ctx, plan, x, h0, c0, *weights):
        workspaces = plan.take()
        out, h_n, c_n = run_forward(plan, x, h0, c0, weights, workspaces)
        ctx.plan, ctx.workspaces = plan, workspaces
        ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None
        ctx.save_for_backward(x, h0, c0, *weights)  # torch's version check guards in-place edits
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros to read
        return (out, h_n, c_n) if plan.cell == "lstm" else (out, h_n)

    @staticmethod
    @once_differentiable  # the kernels' BPTT is not itself differentiable: a double backward raises
    def backward(ctx, grad_out, grad_h_n, grad_c_n=None):
        saved = ctx.saved_tensors  # raises torch's RuntimeError on a second backward without retain_graph
        x, h0, c0 = saved[:3]
        weights = saved[3:]
        plan = ctx.plan
        workspaces, ctx.workspaces = ctx.workspaces, None
        if workspaces is None:  # a backward through a retained graph already ran: recompute the forward
            workspaces = plan.take()
            run_forward(plan, x, h0, c0, weights, workspaces)
        D, H, R = plan.D, plan.H, plan.R
        needs = ctx.needs_input_grad  # (plan, x, h0, c0, *weights)
        dy = None if grad_out is None else as_numpy(grad_out.contiguous())
        dhn = None if grad_h_n is None else as_numpy(grad_h_n.contiguous())
        dcn = None if grad_c_n is None else as_numpy(grad_c_n.contiguous())
        # The kernel always writes dx (its binding has no "skip dx"); when x needs no gradient
        # it is computed into this buffer and dropped.
        dx = torch.empty_like(x)
        dxn = dx.numpy()
        shapes = [(tuple(w.shape), w.dtype) for w in weights]
        grads = [plan.memory.zeros(w, shapes.count(k)) for w, k in zip(weights, shapes)]  # the kernels add into these
        B = x.shape[1]
        dh0 = torch.empty((D, B, R), dtype=x.dtype) if ctx.has_h0 else None
        dc0 = torch.empty((D, B, H), dtype=x.dtype) if ctx.has_c0 else None
        for d in range(D):
            w_ih, w_hh, _, _ = plan.direction_weights(weights, d)
            dw_ih, dw_hh, db_ih, db_hh = (as_numpy(g) for g in plan.direction_weights(grads, d))
            gh0, gc0 = _core.recurrent_backward(
                workspaces[d], dy, d * R, None if dhn is None else dhn[d], None if dcn is None else dcn[d],
                as_numpy(w_ih), as_numpy(w_hh), dw_ih, dw_hh, db_ih, db_hh, dxn, d == 1, plan.threads,
                as_numpy(plan.direction_projection(weights, d)), as_numpy(plan.direction_projection(grads, d)))
            if dh0 is not None:
                dh0.numpy()[d] = gh0
            if dc0 is not None:
                dc0.numpy()[d] = gc0
        plan.give_back(workspaces)
        weight_grads = [g if need else None for g, need in zip(grads, needs[4:])]
        return (None, dx if needs[1] else None, dh0 if needs[2] else None, dc0 if needs[3] else None,
                *weight_grads)


def recurrent_layer(plan, x, h0, c0, weights):
    """One layer through autograd when a gradient may be needed, straight through the kernels otherwise.

    Returns (out, h_n, c_n or None).
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, h0, c0, *weights)):
        res = RecurrentLayer.apply(plan, x, h0, c0, *weights)
        return res if plan.cell == "lstm" else (res[0], res[1], None)
    workspaces = plan.take()
    try:
        return run_forward(plan, x, h0, c0, weights, workspaces)
    finally:
        plan.give_back(workspaces)
