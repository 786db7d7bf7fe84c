"""AdaptiveLogSoftmaxWithLoss (Grave et al. 2017), with torch.nn.AdaptiveLogSoftmaxWithLoss's
semantics, arguments and state_dict names.

Shape letters: N rows, I in_features, V n_classes, S the shortlist (cutoffs[0]), C clusters
(len(cutoffs)), S + C the head's outputs; cluster i covers the classes [cutoffs[i],
cutoffs[i+1]) (the last one ends at V) through Linear(I, h_i) -> Linear(h_i, o_i), both without
bias, h_i = I // div_value**(i+1).

The head scores the S frequent classes and one entry per cluster; a class in cluster i has
log p = log p_head(S + i) + log p_cluster_i(class). forward(input, target) computes each row's
head and, for the rows whose targets fall in a cluster, only that cluster: the full (N, V)
softmax is never formed. log_prob(input) gives the full (N, V) log-probabilities.

Extension over PyTorch: cutoffs=[] makes the head the whole vocabulary (a plain softmax).
"""
import math

import numpy as np

from .. import _core
from .._checks import (as_index_array, as_real_array, bounded_repr, check_allocation, check_int, check_real,
                       check_seed, no_forward, resolve_dtype, shape_str)
from . import init
from .layers import Linear
from .loss import cross_entropy
from .module import Module
from .._threads import exclusive, resolve_threads


class _Sequential(Module):
    """Children named '0', '1', ... (the state_dict names of torch.nn.Sequential/ModuleList)."""

    def __init__(self, modules):
        super().__init__()
        for i, m in enumerate(modules):
            self.register_module(str(i), m)

    def __getitem__(self, i):
        return self._modules[str(i)]

    def __len__(self):
        return len(self._modules)


def _check_cutoffs(cutoffs, n_classes, fn):
    try:
        cut = list(cutoffs)
    except TypeError:
        raise TypeError(f"{fn}: cutoffs must be a sequence of ints, got {type(cutoffs).__name__}") from None
    for c in cut:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"{fn}: cutoffs must be ints, got {bounded_repr(c)}")
    cut = [int(c) for c in cut]
    if cut != sorted(cut) or len(set(cut)) != len(cut) or (cut and (cut[0] < 1 or cut[-1] > n_classes - 1)):
        raise ValueError(f"{fn}: cutoffs should be a sequence of unique, positive integers sorted in an increasing "
                         f"order, where each value is between 1 and n_classes-1 = {n_classes - 1}, got {cut}")
    return cut


class AdaptiveLogSoftmaxWithLoss(Module):
    """Adaptive softmax over n_classes V for inputs of in_features I.

    AdaptiveLogSoftmaxWithLoss(in_features, n_classes, cutoffs, div_value=4.0, head_bias=False,
    *, dtype, seed, threads). Parameters: ``head.weight`` (S + C, I) [``head.bias``],
    ``tail.{i}.0.weight`` (h_i, I), ``tail.{i}.1.weight`` (o_i, h_i), as in PyTorch.

    forward(input (N, I) or (I,), target (N,) or ()) -> (output, loss): output the log-probability
    of each row's target (N,), loss = -output.mean().
    backward(grad_loss=1.0, grad_output=None) -> grad_input like input; adds into every
    parameter's .grad (the gradient of grad_loss * loss + sum(grad_output * output)).
    target_log_prob(input, target) -> forward()'s output alone (no loss, nothing kept for a backward).
    log_prob(input (..., I)) -> (..., V) log-probabilities; predict(input) -> (N,) the most likely class.
    """

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False, *, dtype=np.float32,
                 seed=None, threads=None):
        super().__init__()
        fn = "AdaptiveLogSoftmaxWithLoss"
        self.in_features = check_int(in_features, "in_features", fn)
        self.n_classes = check_int(n_classes, "n_classes", fn, minimum=2)
        cut = _check_cutoffs(cutoffs, self.n_classes, fn)
        self.div_value = check_real(div_value, "div_value", fn, above=0.0, finite=True)
        self.head_bias = bool(head_bias)
        self.dtype = resolve_dtype(dtype, fn)
        self.threads = threads
        seed = check_seed(seed, fn)
        self.cutoffs = cut + [self.n_classes]
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        seeds = root.spawn(1 + 2 * self.n_clusters)
        self.head = Linear(self.in_features, self.head_size, bias=self.head_bias, dtype=self.dtype, seed=seeds[0],
                           threads=threads)
        sizes = []
        for i in range(self.n_clusters):
            try:
                scale = self.div_value ** (i + 1)
            except OverflowError:  # (a float's ** raises past 1e308)
                scale = math.inf
            if scale == 0 or not math.isfinite(self.in_features / scale):
                raise ValueError(f"{fn}: cluster {i}'s projection in_features // div_value**{i + 1} = "
                                 f"{self.in_features} // {scale:g} overflows; use a larger div_value")
            hsz = int(self.in_features // scale)
            if hsz < 1:
                raise ValueError(f"{fn}: cluster {i}'s projection in_features // div_value**{i + 1} = "
                                 f"{self.in_features} // {scale:g} is 0; use a smaller div_value "
                                 "or fewer cutoffs")
            sizes.append((hsz, self.cutoffs[i + 1] - self.cutoffs[i]))
        # (a div_value below 1 makes each projection larger than the last: refuse what cannot fit
        # before building anything; each parameter has a gradient of its size)
        count = self.head_size * (self.in_features + self.head_bias) + sum(h * (self.in_features + o) for h, o in sizes)
        if not init.building_skeleton():
            check_allocation(2 * count * self.dtype.itemsize, f"the parameters (in_features={self.in_features}, "
                             f"div_value={self.div_value:g}, projections {[h for h, _ in sizes]})", fn)
        clusters = []
        for i, (hsz, osz) in enumerate(sizes):
            clusters.append(_Sequential([
                Linear(self.in_features, hsz, bias=False, dtype=self.dtype, seed=seeds[1 + 2 * i], threads=threads),
                Linear(hsz, osz, bias=False, dtype=self.dtype, seed=seeds[2 + 2 * i], threads=threads)]))
        self.tail = _Sequential(clusters)
        self._ctx = None
        # the fused C++ kernel (_core.adaptive_softmax); False: the reference composed of the
        # Linear and cross-entropy kernels, kept to test the fused one against
        self.fused = True

    def config(self):
        """Constructor arguments that rebuild this module."""
        return dict(in_features=self.in_features, n_classes=self.n_classes, cutoffs=self.cutoffs[:-1],
                    div_value=self.div_value, head_bias=self.head_bias, dtype=self.dtype.name)

    def _dtype_changed(self):
        self._ctx = None

    def _input(self, input, fn, any_lead=False):
        x = as_real_array(input, "input", fn, self.dtype)
        if (x.ndim < 1 if any_lead else x.ndim not in (1, 2)) or x.shape[-1] != self.in_features:
            raise ValueError(f"{fn}: input must have shape (N, in_features) or (in_features,) with in_features = "
                             f"{self.in_features}, got {shape_str(x.shape)}")
        return x

    def _input_target(self, input, target, fn):
        x = self._input(input, fn)
        t = as_index_array(target, "target", fn)
        if t.shape != x.shape[:-1]:
            raise ValueError(f"{fn}: target must have shape {shape_str(x.shape[:-1])} (input's without "
                             f"in_features), got {shape_str(t.shape)}")
        x2 = x.reshape(-1, self.in_features)
        t = t.reshape(-1).astype(np.int64, copy=False)
        if t.size and (t.min() < 0 or t.max() > self.n_classes - 1):
            raise ValueError(f"{fn}: target values should be in [0, {self.n_classes - 1}], but values in range "
                             f"[{int(t.min())}, {int(t.max())}] were found")
        return x, x2, t

    @exclusive
    def forward(self, input, target):
        fn = "AdaptiveLogSoftmaxWithLoss.forward"
        x, x2, t = self._input_target(input, target, fn)
        unbatched = x.ndim == 1
        N = x2.shape[0]
        if self.fused:
            return self._fused_forward(x, x2, t, unbatched)
        S = self.shortlist_size
        head_t = np.minimum(t, S)  # a shortlist class is its own head entry; a cluster's is S + i
        rows = []
        for i in range(self.n_clusters):
            lo, hi = self.cutoffs[i], self.cutoffs[i + 1]
            idx = np.flatnonzero((t >= lo) & (t < hi))
            head_t[idx] = S + i
            rows.append(idx)
        head_losses, dhead = cross_entropy(self.head(x2), head_t, reduction="none", threads=self.threads)
        losses = head_losses.astype(self.dtype, copy=True)
        saved = []
        for i, idx in enumerate(rows):
            if idx.size == 0:
                saved.append(None)
                continue
            proj, out = self.tail[i][0], self.tail[i][1]
            logits = out(proj(x2[idx]))
            cl, dcl = cross_entropy(logits, t[idx] - self.cutoffs[i], reduction="none", threads=self.threads)
            losses[idx] += cl
            saved.append(dcl)
        self._ctx = (dhead, rows, saved, x.shape)
        output = -losses
        loss = self.dtype.type(losses.mean()) if N else self.dtype.type(0.0)
        return (output[0] if unbatched else output), loss

    @exclusive
    def backward(self, grad_loss=1.0, grad_output=None):
        fn = "AdaptiveLogSoftmaxWithLoss.backward"
        if self._ctx is None:
            raise no_forward(fn)
        if isinstance(self._ctx[0], str):  # ("fused", ...)
            return self._fused_backward(grad_loss, grad_output, fn)
        dhead, rows, saved, shape = self._ctx
        N = dhead.shape[0]
        g = check_real(grad_loss, "grad_loss", fn, finite=True)
        # total = g * mean(losses) - sum(grad_output * output), losses = -output: row n's weight
        w = np.full(N, g / max(N, 1), self.dtype)
        if grad_output is not None:
            go = as_real_array(grad_output, "grad_output", fn, self.dtype)
            expect = shape[:-1]
            if go.shape != expect:
                raise ValueError(f"{fn}: grad_output must have the output's shape {shape_str(expect)}, "
                                 f"got {shape_str(go.shape)}")
            w = w - go.reshape(-1)
        self._ctx = None
        # losses[n] = head_loss[n] + cluster_loss[n]: each row's gradient scaled by its weight
        dx = self.head.backward(dhead * w[:, None])
        for i, (idx, dcl) in enumerate(zip(rows, saved)):
            if dcl is None:
                continue
            proj, out = self.tail[i][0], self.tail[i][1]
            dx[idx] += proj.backward(out.backward(dcl * w[idx, None]))
        return dx.reshape(shape)

    def _kernel(self, x2, t, w=None, into=None):
        """(output, dx or None); with row weights w, the weight gradients are added into `into`
        (the Parameters' .grad when None), given as {Parameter: array}."""
        tail = [self.tail[i] for i in range(self.n_clusters)]
        grads = {}
        if w is not None:
            g = (lambda p: p.grad) if into is None else (lambda p: into[id(p)])
            grads = dict(dhead_w=g(self.head.weight), dhead_b=None if self.head.bias is None else g(self.head.bias),
                         dproj=[g(c[0].weight) for c in tail], dout=[g(c[1].weight) for c in tail])
        return _core.adaptive_softmax(x2, t, self.head.weight.data, None if self.head.bias is None else
                                      self.head.bias.data, [c[0].weight.data for c in tail],
                                      [c[1].weight.data for c in tail], self.cutoffs, w, threads=resolve_threads(
                                          self.threads), **grads)

    def _fused_forward(self, x, x2, t, unbatched):
        x2 = np.ascontiguousarray(x2)
        N = t.shape[0]
        saved = None
        if self.training:
            # One pass for forward and backward: the gradient of the mean loss goes into private
            # buffers, scaled and added into .grad by a backward(grad_loss) without grad_output.
            into = {id(p): np.zeros_like(p.data) for p in self.parameters()}
            output, dx = self._kernel(x2, t, np.full(N, 1.0 / max(N, 1), self.dtype), into)
            saved = (dx, into)
        else:
            output, _ = self._kernel(x2, t)
        self._ctx = ("fused", x2.copy(), t.copy(), x.shape, saved)
        loss = self.dtype.type(-output.mean()) if N else self.dtype.type(0.0)
        return (output[0] if unbatched else output), loss

    def _fused_backward(self, grad_loss, grad_output, fn):
        _, x2, t, shape, saved = self._ctx
        N = t.shape[0]
        g = check_real(grad_loss, "grad_loss", fn, finite=True)
        if saved is not None and grad_output is None:
            self._ctx = None
            dx, into = saved
            for p in self.parameters():
                p.grad += self.dtype.type(g) * into[id(p)]
            return (dx * self.dtype.type(g)).reshape(shape)
        w = np.full(N, g / max(N, 1), self.dtype)
        if grad_output is not None:
            go = as_real_array(grad_output, "grad_output", fn, self.dtype)
            if go.shape != shape[:-1]:
                raise ValueError(f"{fn}: grad_output must have the output's shape {shape_str(shape[:-1])}, "
                                 f"got {shape_str(go.shape)}")
            w = w - go.reshape(-1)
        self._ctx = None
        # the kernel recomputes the forward and adds the gradient of sum_n w[n] * -output[n]
        _, dx = self._kernel(x2, t, w)
        return dx.reshape(shape)

    @exclusive
    def target_log_prob(self, input, target):
        """input (N, I) or (I,), target (N,) or () -> the log-probability of each row's target, as
        forward()'s output, from the head and only the clusters the targets fall in (never the
        (N, V) log-probabilities); nothing is kept for a backward, no gradient is computed."""
        fn = "AdaptiveLogSoftmaxWithLoss.target_log_prob"
        x, x2, t = self._input_target(input, target, fn)
        output, _ = self._kernel(np.ascontiguousarray(x2), t)
        return output[0] if x.ndim == 1 else output

    @exclusive
    def log_prob(self, input):
        fn = "AdaptiveLogSoftmaxWithLoss.log_prob"
        x = self._input(input, fn, any_lead=True)
        x2 = x.reshape(-1, self.in_features)
        S = self.shortlist_size
        out = np.empty((x2.shape[0], self.n_classes), self.dtype)
        head_lp = _log_softmax(_linear(self.head, x2))
        out[:, :S] = head_lp[:, :S]
        for i in range(self.n_clusters):
            proj, o = self.tail[i][0], self.tail[i][1]
            lp = _log_softmax(_linear(o, _linear(proj, x2)))
            out[:, self.cutoffs[i]:self.cutoffs[i + 1]] = lp + head_lp[:, S + i:S + i + 1]
        return out.reshape(x.shape[:-1] + (self.n_classes,))

    @exclusive
    def predict(self, input):
        fn = "AdaptiveLogSoftmaxWithLoss.predict"
        self._input(input, fn)
        return np.argmax(self.log_prob(input), axis=-1)

    def extra_repr(self):
        s = f"in_features={self.in_features}, n_classes={self.n_classes}, cutoffs={self.cutoffs[:-1]}"
        if self.div_value != 4.0:
            s += f", div_value={self.div_value:g}"
        if self.head_bias:
            s += ", head_bias=True"
        return s


def _linear(layer, x):
    """layer's product without saving anything for a backward (log_prob and predict)."""
    y = x @ layer.weight.data.T
    if layer.bias is not None:
        y += layer.bias.data
    return y


def _log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))
