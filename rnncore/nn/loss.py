"""Softmax + cross-entropy, fused in C++: the loss and its gradient in one call.

Shapes: logits (..., V) with V classes in the last dimension (for example (N, V) or time-major
(T, B, V)); targets (...) integer class indices (or ignore_index); mask (...) optional weights
per position (a 0/1 or boolean mask of valid steps). Note the class dimension is the *last*
one, not dimension 1 as in torch.nn.functional.cross_entropy for inputs of rank > 2.

Reduction (PyTorch's rules): 'mean' divides the sum of the counted losses by the number of
counted positions (the total mask weight), 'sum' adds them, 'none' returns the per-position
losses (0 where not counted). A position counts unless its target is ignore_index or its mask
is 0. When nothing counts, 'mean' returns 0.0 with a zero gradient (PyTorch returns NaN): an
all-padding batch then contributes nothing instead of poisoning a running average.

Errors: targets outside [0, V) (other than ignore_index, and other than at positions whose mask
is 0: padding needs no valid label) -> ValueError naming the position and value; targets whose shape is not logits.shape[:-1] -> ValueError; non-integer targets ->
TypeError; a NaN or infinite loss (NaN or inf in the logits of a counted position) ->
FloatingPointError naming the position.
"""
import numpy as np

from .. import _core
from .._checks import as_index_array, as_real_array, bounded_repr, check_int, check_real, no_forward, shape_str
from .._threads import exclusive, resolve_threads
from .module import Module

_REDUCTIONS = ("mean", "sum", "none")


def _prepare(logits, targets, mask, reduction, fn):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of 'mean', 'sum', 'none', got {bounded_repr(reduction)}")
    raw = np.asarray(logits)
    dtype = np.float32 if raw.dtype == np.float32 else np.float64
    logits = as_real_array(raw, "logits", fn, dtype)
    if logits.ndim < 1:
        raise ValueError(f"{fn}: logits must have shape (..., V), got a scalar")
    targets = as_index_array(targets, "targets", fn)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"{fn}: targets must have shape {shape_str(logits.shape[:-1])} (the logits' shape "
                         f"{shape_str(logits.shape)} without the class dimension), got {shape_str(targets.shape)}")
    if mask is not None:
        mask = np.asarray(mask)
        mask = as_real_array(mask.astype(dtype) if mask.dtype == bool else mask, "mask", fn, dtype)
        if mask.shape != targets.shape:
            raise ValueError(f"{fn}: mask must have the targets' shape {shape_str(targets.shape)}, "
                             f"got {shape_str(mask.shape)}")
    return logits, targets, mask


def token_loss(logits, targets, mask, ignore_index, reduction, threads, fn):
    """A sequence model's cross-entropy over its logits (..., V): (loss, dL/dlogits), with the
    shape errors phrased in terms of the model's tokens (for LanguageModel, FixedWindowLM, ...)."""
    targets = as_index_array(targets, "targets", fn)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"{fn}: targets must have the tokens' shape {shape_str(logits.shape[:-1])}, "
                         f"got {shape_str(targets.shape)}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != targets.shape:
            raise ValueError(f"{fn}: mask must have the tokens' shape {shape_str(targets.shape)}, "
                             f"got {shape_str(mask.shape)}")
    return cross_entropy(logits, targets, ignore_index, reduction, mask, threads=threads)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", mask=None, return_probs=False,
                  compute_grad=True, threads=None):
    """Cross-entropy of softmax(logits) against class-index targets, and its gradient.

    Returns ``(loss, dlogits)``, or ``(loss, dlogits, probs)`` with return_probs. ``loss`` is a
    float ('mean', 'sum') or an array shaped like targets ('none'); ``dlogits`` (..., V) is the
    gradient of ``loss`` (of each position's own loss for 'none'), or None when compute_grad is
    False; ``probs`` is the softmax. float32 logits stay float32, anything else is float64.
    See the module docstring for the reduction rules and errors.
    """
    fn = "cross_entropy"
    ignore_index = check_int(ignore_index, "ignore_index", fn, minimum=None)
    logits, targets, mask = _prepare(logits, targets, mask, reduction, fn)
    loss, dlogits, probs, _ = _core.cross_entropy(logits, targets, mask, ignore_index, reduction,
                                                  bool(compute_grad), bool(return_probs), resolve_threads(threads))
    return (loss, dlogits, probs) if return_probs else (loss, dlogits)


class CrossEntropyLoss(Module):
    """Class form of :func:`cross_entropy`: forward(logits, targets, mask=None) -> loss;
    backward(grad=1.0) -> dlogits (grad is the gradient of the loss: a scalar, or an array
    shaped like targets for reduction='none')."""

    def __init__(self, ignore_index=-100, reduction="mean", *, threads=None):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError("CrossEntropyLoss: reduction must be one of 'mean', 'sum', 'none', got "
                             f"{bounded_repr(reduction)}")
        self.ignore_index = check_int(ignore_index, "ignore_index", "CrossEntropyLoss", minimum=None)
        self.reduction = reduction
        self.threads = threads
        self._dlogits = None

    @exclusive
    def forward(self, logits, targets, mask=None):
        loss, self._dlogits = cross_entropy(logits, targets, self.ignore_index, self.reduction, mask,
                                            threads=self.threads)
        return loss

    @exclusive
    def backward(self, grad=1.0):
        fn = "CrossEntropyLoss.backward"
        d = self._dlogits
        if d is None:
            raise no_forward(fn)
        self._dlogits = None
        if self.reduction == "none":
            g = as_real_array(grad, "grad", fn, d.dtype)
            if g.ndim == 0:
                return d * g
            if g.shape != d.shape[:-1]:
                raise ValueError(f"{fn}: grad must be a scalar or have the targets' shape {shape_str(d.shape[:-1])}, "
                                 f"got {shape_str(g.shape)}")
            return d * g[..., None]
        if np.ndim(grad) != 0:
            raise ValueError(f"{fn}: grad must be a scalar for reduction={self.reduction!r}, "
                             f"got shape {shape_str(np.shape(grad))}")
        if grad == 1.0:
            return d
        d *= d.dtype.type(grad)
        return d

    def extra_repr(self):
        parts = []
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)


# ---- mean squared error (regression) ---------------------------------------------------------

def mse_loss(input, target, reduction="mean", mask=None, compute_grad=True, threads=None):
    """Mean squared error of `input` against `target`, and its gradient (fused in C++).

    Shapes: input and target (..., F), for example (N, F) or time-major (T, B, F); mask None,
    or weights >= 0 (a 0/1 or boolean mask of valid steps) shaped like input (one per element)
    or like input without its last dimension (one per position: (T, B) for (T, B, F)).
    Reduction (torch.nn.functional.mse_loss's): 'mean' divides the sum of w * (input - target)^2
    by the total weight of the elements (a position's weight counts F times; with no mask, the
    number of elements), 'sum' adds them, 'none' returns them, shaped like input. When the
    total weight is 0, 'mean' returns 0.0 with a zero gradient (PyTorch returns NaN).

    Returns ``(loss, dinput)``: ``dinput`` (..., F) is the gradient of ``loss`` (of each
    element's own loss for 'none'), or None when compute_grad is False. float32 input stays
    float32 (target and mask are converted to it), anything else is float64.

    Errors: NaN or infinite values in input or target (also at masked positions) -> ValueError
    naming the argument and position; mask weights that are negative, NaN or infinite ->
    ValueError naming the position (also when F = 0); target (or mask) of another shape -> ValueError;
    non-numeric arrays -> TypeError; squared errors that overflow -> FloatingPointError.
    """
    fn = "mse_loss"
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of 'mean', 'sum', 'none', got {bounded_repr(reduction)}")
    dtype = np.float32 if getattr(input, "dtype", None) == np.float32 else np.float64
    input = as_real_array(input, "input", fn, dtype)
    if input.ndim < 1:
        raise ValueError(f"{fn}: input must have shape (..., F), got a scalar")
    target = as_real_array(target, "target", fn, dtype)
    if target.shape != input.shape:
        raise ValueError(f"{fn}: target must have the input's shape {shape_str(input.shape)}, "
                         f"got {shape_str(target.shape)}")
    if mask is not None:
        mask = np.asarray(mask)
        mask = as_real_array(mask.astype(dtype) if mask.dtype == bool else mask, "mask", fn, dtype)
        if mask.shape != input.shape and (input.ndim < 2 or mask.shape != input.shape[:-1]):
            alt = f" or {shape_str(input.shape[:-1])} (one weight per position)" if input.ndim >= 2 else ""
            raise ValueError(f"{fn}: mask must have the input's shape {shape_str(input.shape)}{alt}, "
                             f"got {shape_str(mask.shape)}")
    loss, dinput, _ = _core.mse_loss(input, target, mask, reduction, bool(compute_grad), resolve_threads(threads))
    return loss, dinput


class MSELoss(Module):
    """Class form of :func:`mse_loss`: forward(input, target, mask=None) -> loss;
    backward(grad=1.0) -> dinput (grad is the gradient of the loss: a scalar, or an array
    shaped like input for reduction='none')."""

    def __init__(self, reduction="mean", *, threads=None):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"MSELoss: reduction must be one of 'mean', 'sum', 'none', got {bounded_repr(reduction)}")
        self.reduction = reduction
        self.threads = threads
        self._dinput = None

    @exclusive
    def forward(self, input, target, mask=None):
        loss, self._dinput = mse_loss(input, target, self.reduction, mask, threads=self.threads)
        return loss

    @exclusive
    def backward(self, grad=1.0):
        fn = "MSELoss.backward"
        d = self._dinput
        if d is None:
            raise no_forward(fn)
        self._dinput = None
        if self.reduction == "none":
            g = as_real_array(grad, "grad", fn, d.dtype)
            if g.ndim != 0 and g.shape != d.shape:
                raise ValueError(f"{fn}: grad must be a scalar or have the input's shape {shape_str(d.shape)}, "
                                 f"got {shape_str(g.shape)}")
            return d * g
        if np.ndim(grad) != 0:
            raise ValueError(f"{fn}: grad must be a scalar for reduction={self.reduction!r}, "
                             f"got shape {shape_str(np.shape(grad))}")
        grad = check_real(grad, "grad", fn, finite=True)
        if grad != 1.0:
            d *= d.dtype.type(grad)
        return d

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""
