"""Optimizers, learning-rate schedulers and gradient clipping, with PyTorch's API and rules.

Optimizers (SGD, Adam, AdamW, RMSprop, Adagrad) keep PyTorch's constructor arguments,
defaults, ``param_groups`` and per-parameter ``state`` names, and follow its single-tensor
update rules operation for operation; the update of each parameter is one fused C++ call
(rnncore._core.*_step), so Python loops over parameters, never over elements.

    opt = rnncore.optim.Adam(model.parameters(), lr=1e-3)
    sched = rnncore.optim.StepLR(opt, step_size=10, gamma=0.5)
    for epoch in ...:
        for batch in ...:
            opt.zero_grad()
            ...forward / backward (adds into each Parameter's .grad)...
            rnncore.optim.clip_grad_norm_(model.parameters(), max_norm=5.0)
            opt.step()
        sched.step()

Differences from PyTorch, all deliberate:
  * ``zero_grad()`` zeroes gradients in place (rnncore's backward adds into ``.grad`` arrays);
    a parameter whose ``.grad`` is None is skipped by ``step()`` as in PyTorch.
  * ``state_dict()`` returns copies of the state arrays as numpy arrays and ``step`` as an
    int, so it is JSON/safetensors-serialisable (rnncore.save stores it).
  * every optimizer takes a keyword-only ``threads`` (None = rnncore's default).
  * scheduler ``state_dict()`` leaves out lambdas (functions cannot be serialised): a
    LambdaLR/MultiplicativeLR must be rebuilt with its functions before loading its state.
"""
import math
import numbers
import warnings
from collections import Counter

import numpy as np

from . import _core
from ._checks import bounded_repr, check_int, check_real, shape_str
from ._threads import resolve_threads
from .nn.module import Module, Parameter

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
    "LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ExponentialLR",
    "CosineAnnealingLR", "ReduceLROnPlateau", "ZarembaLR",
    "clip_grad_norm_", "clip_grad_value_",
]


# -- helpers -----------------------------------------------------------------------------------

def _number(value, name, fn):
    return check_real(value, name, fn)


def _pair(value, name, fn, letters):
    """A tuple argument of two numbers (Adam's betas): TypeError naming it unless it is one."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(value)
    if isinstance(value, (tuple, list)):
        got = f"a {type(value).__name__} of length {len(value)}"
    else:
        got = type(value).__name__
    raise TypeError(f"{fn}: {name} must be a pair of floats {letters}, got {got}")


def _grad_of(p, fn):
    """p.grad as an array of p's dtype and shape (converted once when it is not already)."""
    g = p.grad
    if not isinstance(g, np.ndarray) or g.dtype != p.data.dtype or not g.flags.c_contiguous:
        try:
            g = np.ascontiguousarray(g, dtype=p.data.dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{fn}: a parameter's grad must be a real array, got {type(p.grad).__name__} ({exc})")
    if g.shape != p.data.shape:
        raise ValueError(f"{fn}: a parameter's grad must have its shape {shape_str(p.data.shape)}, "
                         f"got {shape_str(g.shape)}")
    return g


def _state_array(state, key, p, fill=0.0):
    """The state array `key` of parameter p, created filled with `fill`, kept at p's dtype."""
    a = state.get(key)
    if a is None:
        a = np.full(p.data.shape, fill, dtype=p.data.dtype)
        state[key] = a
    elif a.dtype != p.data.dtype or not a.flags.c_contiguous or not a.flags.writeable:
        # the model changed dtype (Module.to) after the state was created
        a = np.array(a, dtype=p.data.dtype, order="C")
        state[key] = a
    return a


def _parameters_of(parameters, fn):
    if isinstance(parameters, Parameter):
        return [parameters]
    if isinstance(parameters, Module):
        return parameters.parameters()
    try:
        params = list(parameters)
    except TypeError:
        raise TypeError(f"{fn}: parameters must be a Parameter, a Module or an iterable of Parameters, "
                        f"got {type(parameters).__name__}") from None
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"{fn}: parameters must hold Parameters, got {type(p).__name__}")
    return params


# -- Optimizer base ----------------------------------------------------------------------------

class Optimizer:
    """Base class: parameter groups, per-parameter state, state_dict / load_state_dict.

    ``params`` is an iterable of Parameters, of ``(name, Parameter)`` pairs, or of dicts each
    with a ``"params"`` entry and per-group options overriding the defaults (PyTorch's
    per-parameter options).
    """

    _state_arrays = ()  # the names of the per-parameter state arrays (a subclass's)

    def __init__(self, params, defaults, *, threads=None):
        self.defaults = dict(defaults)
        self.threads = threads
        resolve_threads(threads)  # fail now on a bad value, not at the first step
        self.state = {}  # Parameter -> dict of its state
        self.param_groups = []
        if isinstance(params, (Parameter, Module)):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters or dicts, got "
                            f"{type(params).__name__} (use model.parameters())")
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{type(self).__name__}: params must be an ordered iterable, not a set "
                            "(the order of parameters must be the same between runs)")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"

    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with "params" and optional per-group options)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError(f"{name}: a param group must have a 'params' entry")
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: a param group's params must be ordered, not a set")
        else:
            params = list(params)
        names = []
        plain = []
        for p in params:
            if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
                names.append(p[0])
                p = p[1]
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: can only optimize rnncore Parameters, got {type(p).__name__}")
            plain.append(p)
        if names and len(names) != len(plain):
            raise ValueError(f"{name}: a param group must give names for all its parameters or for none")
        group["params"] = plain
        if names:
            group["param_names"] = names
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in plain}) != len(plain):
            raise ValueError(f"{name}: a param group holds the same parameter twice")
        if any(id(p) in seen for p in plain):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        self.param_groups.append(group)
        self._init_group_state(group)

    def _check_group(self, group):
        """Validate one group's options (subclasses); raise ValueError naming the bad one."""

    def _init_group_state(self, group):
        """Create state eagerly for a new group (Adagrad does; the others create it lazily)."""

    def zero_grad(self):
        """Set every parameter's gradient to zero, in place (None stays None)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() when one is given."""
        loss = closure() if closure is not None else None
        threads = resolve_threads(self.threads)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self._update(p, _grad_of(p, f"{type(self).__name__}.step"), group,
                             self.state.setdefault(p, {}), threads)
        return loss

    def _update(self, p, grad, group, state, threads):
        raise NotImplementedError

    # -- state --------------------------------------------------------------------------------
    def state_dict(self):
        """{"state": {index: {name: array or number}}, "param_groups": [options + "params": [index]]}.

        Parameters are numbered in order across groups, as in PyTorch. Arrays are copies.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def _staged_state(self, state_dict):
        """Check `state_dict` against this optimizer; return (groups, state) ready to install.

        Raises ValueError saying what does not match. Nothing is modified.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, dict) for g in saved_groups):
            raise ValueError(f"{name}.load_state_dict: param_groups must be a list of dicts")
        if not isinstance(state_dict["state"], dict) or \
                not all(isinstance(v, dict) for v in state_dict["state"].values()):
            raise ValueError(f"{name}.load_state_dict: state must map parameter indices to dicts")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state holds {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        by_index = {}
        groups = []
        for i, (own, saved) in enumerate(zip(self.param_groups, saved_groups)):
            ids = saved.get("params", [])
            if not isinstance(ids, (list, tuple)) or not all(isinstance(k, numbers.Integral) for k in ids):
                raise ValueError(f"{name}.load_state_dict: parameter group {i}'s params must be a list of indices")
            if len(ids) != len(own["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} holds {len(ids)} parameters in "
                                 f"the state, {len(own['params'])} in this optimizer")
            for k, p in zip(ids, own["params"]):
                by_index[int(k)] = p
            group = {k: v for k, v in saved.items() if k != "params"}
            if isinstance(group.get("betas"), list):
                group["betas"] = tuple(group["betas"])
            for key, default in self.defaults.items():
                group.setdefault(key, default)
            group["params"] = own["params"]
            if "param_names" in own and "param_names" not in group:
                group["param_names"] = own["param_names"]
            groups.append(group)
        for group in groups:
            self._check_group(group)
        state = {}
        for key, entries in state_dict["state"].items():
            try:
                k = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"{name}.load_state_dict: state keys must be parameter indices, got "
                                 f"{bounded_repr(key)}")
            if k not in by_index:
                raise ValueError(f"{name}.load_state_dict: state for parameter {k}, which no group holds")
            p = by_index[k]
            staged = {}
            for sname, value in entries.items():
                what = f"state {bounded_repr(sname)} of parameter {k}"
                if hasattr(value, "__array__") and np.ndim(value) == 0:
                    value = np.asarray(value).item()  # a 0-d array or tensor, e.g. PyTorch's step
                if sname == "step":
                    if isinstance(value, float) and value.is_integer():
                        value = int(value)  # PyTorch keeps step as a float tensor
                    staged[sname] = check_int(value, what, f"{name}.load_state_dict", minimum=0)
                elif isinstance(value, np.ndarray) or hasattr(value, "__array__") and not np.isscalar(value):
                    a = np.asarray(value)
                    if a.dtype.kind not in "fiu":
                        raise TypeError(f"{name}.load_state_dict: {what} must hold real numbers, got dtype {a.dtype}")
                    if a.shape != p.data.shape:
                        raise ValueError(f"{name}.load_state_dict: {what} has shape "
                                         f"{shape_str(a.shape)}, the parameter {shape_str(p.data.shape)}")
                    staged[sname] = np.array(a, dtype=p.data.dtype, order="C")
                elif sname in self._state_arrays:
                    if value is None:
                        continue  # PyTorch's SGD saves momentum_buffer=None before momentum is used: absent
                    raise TypeError(f"{name}.load_state_dict: {what} must be an array of the parameter's shape "
                                    f"{shape_str(p.data.shape)}, got {type(value).__name__} {bounded_repr(value)}")
                else:
                    staged[sname] = value
            state[p] = staged
        return groups, state

    def load_state_dict(self, state_dict):
        """Restore state and group options saved by state_dict() (all checks first, then install)."""
        groups, state = self._staged_state(state_dict)
        self._install_state(groups, state)

    def _install_state(self, groups, state):
        self.param_groups = groups
        self.state = state


# -- the optimizers ----------------------------------------------------------------------------

def _check_nonneg(group, key, label, cls):
    value = _number(group[key], key, cls)
    if not value >= 0.0:
        raise ValueError(f"{cls}: Invalid {label} value: {group[key]}")
    return value


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    _state_arrays = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, threads=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, threads=threads)

    def _check_group(self, group):
        cls = "SGD"
        if not _number(group["lr"], "lr", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid learning rate: {group['lr']}")
        _check_nonneg(group, "momentum", "momentum", cls)
        _check_nonneg(group, "weight_decay", "weight_decay", cls)
        _number(group["dampening"], "dampening", cls)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"{cls}: Nesterov momentum requires a momentum and zero dampening")

    def _update(self, p, grad, group, state, threads):
        momentum = float(group["momentum"])
        buf, first = None, False
        if momentum != 0.0:
            first = "momentum_buffer" not in state
            buf = _state_array(state, "momentum_buffer", p)
        _core.sgd_step(p.data, grad, buf, lr=float(group["lr"]), momentum=momentum,
                       dampening=float(group["dampening"]), weight_decay=float(group["weight_decay"]),
                       nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]), first=first,
                       threads=threads)


class Adam(Optimizer):
    """Adam (Kingma & Ba), optionally AMSGrad, as torch.optim.Adam.

    ``weight_decay`` adds ``weight_decay * param`` to the gradient (L2), unless
    ``decoupled_weight_decay`` (then it is AdamW).
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, threads=None):
        betas = _pair(betas, "betas", type(self).__name__, "(beta1, beta2)")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, threads=threads)

    def _check_group(self, group):
        cls = type(self).__name__
        if not _number(group["lr"], "lr", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid learning rate: {group['lr']}")
        if not _number(group["eps"], "eps", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid epsilon value: {group['eps']}")
        betas = _pair(group["betas"], "betas", cls, "(beta1, beta2)")
        for i, b in enumerate(betas):
            if not 0.0 <= _number(b, f"betas[{i}]", cls) < 1.0:
                raise ValueError(f"{cls}: Invalid beta parameter at index {i}: {b}")
        group["betas"] = tuple(betas)
        _check_nonneg(group, "weight_decay", "weight_decay", cls)

    def _update(self, p, grad, group, state, threads):
        amsgrad = bool(group["amsgrad"])
        step = int(state.get("step", 0)) + 1
        m = _state_array(state, "exp_avg", p)
        v = _state_array(state, "exp_avg_sq", p)
        vmax = _state_array(state, "max_exp_avg_sq", p) if amsgrad else None
        beta1, beta2 = group["betas"]
        _core.adam_step(p.data, grad, m, v, vmax, step=step, lr=float(group["lr"]), beta1=float(beta1),
                        beta2=float(beta2), eps=float(group["eps"]), weight_decay=float(group["weight_decay"]),
                        decoupled=bool(group["decoupled_weight_decay"]), amsgrad=amsgrad,
                        maximize=bool(group["maximize"]), threads=threads)
        state["step"] = step


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

    Each step first shrinks the parameter by ``1 - lr * weight_decay``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, threads=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, threads=threads)

    def _check_group(self, group):
        group["decoupled_weight_decay"] = True  # as PyTorch: always, even for loaded state
        super()._check_group(group)


class RMSprop(Optimizer):
    """RMSprop (Hinton), optionally centered and with momentum, as torch.optim.RMSprop."""

    _state_arrays = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *,
                 maximize=False, threads=None):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults, threads=threads)

    def _check_group(self, group):
        cls = "RMSprop"
        if not _number(group["lr"], "lr", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid learning rate: {group['lr']}")
        if not _number(group["eps"], "eps", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid epsilon value: {group['eps']}")
        _check_nonneg(group, "momentum", "momentum", cls)
        _check_nonneg(group, "weight_decay", "weight_decay", cls)
        _check_nonneg(group, "alpha", "alpha", cls)

    def _update(self, p, grad, group, state, threads):
        momentum, centered = float(group["momentum"]), bool(group["centered"])
        step = int(state.get("step", 0)) + 1
        sq = _state_array(state, "square_avg", p)
        buf = _state_array(state, "momentum_buffer", p) if momentum > 0 else None
        ga = _state_array(state, "grad_avg", p) if centered else None
        _core.rmsprop_step(p.data, grad, sq, ga, buf, lr=float(group["lr"]), alpha=float(group["alpha"]),
                           eps=float(group["eps"]), weight_decay=float(group["weight_decay"]), momentum=momentum,
                           centered=centered, maximize=bool(group["maximize"]), threads=threads)
        state["step"] = step


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), as torch.optim.Adagrad; the accumulator starts at
    ``initial_accumulator_value`` and the step size decays as ``lr / (1 + (t - 1) * lr_decay)``."""

    _state_arrays = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, *,
                 maximize=False, threads=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults, threads=threads)

    def _check_group(self, group):
        cls = "Adagrad"
        if not _number(group["lr"], "lr", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid learning rate: {group['lr']}")
        _check_nonneg(group, "lr_decay", "lr_decay", cls)
        _check_nonneg(group, "weight_decay", "weight_decay", cls)
        _check_nonneg(group, "initial_accumulator_value", "initial_accumulator_value", cls)
        if not _number(group["eps"], "eps", cls) >= 0.0:
            raise ValueError(f"{cls}: Invalid epsilon value: {group['eps']}")

    def _init_group_state(self, group):
        # PyTorch creates Adagrad's state with the optimizer (the accumulator has a set start).
        for p in group["params"]:
            state = self.state.setdefault(p, {})
            state.setdefault("step", 0)
            _state_array(state, "sum", p, float(group["initial_accumulator_value"]))

    def _update(self, p, grad, group, state, threads):
        step = int(state.get("step", 0)) + 1
        acc = _state_array(state, "sum", p, float(group["initial_accumulator_value"]))
        _core.adagrad_step(p.data, grad, acc, step=step, lr=float(group["lr"]), lr_decay=float(group["lr_decay"]),
                           weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
                           maximize=bool(group["maximize"]), threads=threads)
        state["step"] = step


# -- learning-rate schedulers ------------------------------------------------------------------

class LRScheduler:
    """Base class of the epoch-indexed schedulers (PyTorch's semantics).

    Constructing a scheduler records each group's ``initial_lr`` and performs the initial
    step (``last_epoch`` becomes 0). Call ``step()`` after ``optimizer.step()``, once per
    epoch (or per iteration, if the schedule is in iterations). ``get_last_lr()`` returns the
    learning rates the last step set.
    """

    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not an Optimizer")
        last_epoch = check_int(last_epoch, "last_epoch", type(self).__name__, minimum=None)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming a "
                                   "scheduler with last_epoch >= 0 (load the optimizer's state first)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The learning rates for the current ``last_epoch`` (called by step())."""
        raise NotImplementedError

    def get_last_lr(self):
        return list(self._last_lr)

    def _current_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch=None):
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            warnings.warn("passing an epoch to scheduler.step() is deprecated (as in PyTorch); call step() "
                          "once per epoch instead", UserWarning, stacklevel=2)
            self.last_epoch = int(epoch)
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = self._current_lrs()

    _unsaved = ("optimizer",)

    def state_dict(self):
        """Every attribute except the optimizer (and functions): numbers and lists, JSON-serialisable."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if k not in self._unsaved}

    def load_state_dict(self, state_dict):
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in self._unsaved})


def _lambdas(optimizer, fn, name):
    groups = len(optimizer.param_groups)
    if isinstance(fn, (list, tuple)):
        if len(fn) != groups:
            raise ValueError(f"{name}: expected {groups} lr_lambdas, got {len(fn)}")
        fns = list(fn)
    else:
        fns = [fn] * groups
    for f in fns:
        if not callable(f):
            raise TypeError(f"{name}: lr_lambda must be callable, got {type(f).__name__}")
    return fns


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(epoch), one function or one per group."""

    _unsaved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _lambdas(optimizer, lr_lambda, "LambdaLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(LRScheduler):
    """lr *= lr_lambda(epoch) at each step after the first."""

    _unsaved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _lambdas(optimizer, lr_lambda, "MultiplicativeLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [group["lr"] * f(self.last_epoch) for f, group in zip(self.lr_lambdas, self.optimizer.param_groups)]


class StepLR(LRScheduler):
    """lr *= gamma every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = check_int(step_size, "step_size", "StepLR")
        self.gamma = _number(gamma, "gamma", "StepLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr *= gamma at each epoch listed in ``milestones``."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"MultiStepLR: milestones must be a list of epoch numbers (ints), "
                            f"got {type(milestones).__name__}")
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = _number(gamma, "gamma", "MultiStepLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        hits = Counter(self.milestones)[self.last_epoch]
        if hits == 0:
            return self._current_lrs()
        return [group["lr"] * self.gamma ** hits for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        passed = sum(1 for m in self.milestones if m <= self.last_epoch)
        return [base * self.gamma ** passed for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr *= gamma every epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _number(gamma, "gamma", "ExponentialLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from initial_lr to eta_min over T_max epochs (SGDR without restarts).

    Uses PyTorch's recursive form, so the sequence equals torch's and composes with other
    schedulers changing the same learning rate.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = check_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = _number(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and e > 0:
            return [lo + (base - lo) * (1 + math.cos(e * math.pi / T)) / 2 for base in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [g["lr"] + (base - lo) * (1 - math.cos(math.pi / T)) / 2 for base, g in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (g["lr"] - lo) + lo
                for g in groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class ZarembaLR(LRScheduler):
    """Hold the learning rate for ``constant_epochs`` epochs, then multiply it by ``factor`` every epoch.

    The schedule of Zaremba, Sutskever & Vinyals (2014) for the Penn Treebank LSTMs:
    lr(epoch) = initial_lr * factor ** max(epoch + 1 - constant_epochs, 0), with epochs
    counted from 0 and ``step()`` called at the end of each epoch. Their settings:
    small (lr 1, constant_epochs 4, factor 0.5), medium (1, 6, 1/1.2), large (1, 14, 1/1.15).
    Equals LambdaLR(opt, lambda e: factor ** max(e + 1 - constant_epochs, 0)), but its
    state_dict is complete (no function to rebuild).
    """

    def __init__(self, optimizer, constant_epochs, factor=0.5, last_epoch=-1):
        self.constant_epochs = check_int(constant_epochs, "constant_epochs", "ZarembaLR", minimum=0)
        self.factor = check_real(factor, "factor", "ZarembaLR", above=0.0, at_most=1.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        k = max(self.last_epoch + 1 - self.constant_epochs, 0)
        return [base * self.factor ** k for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when a metric has stopped improving for
    ``patience`` epochs (PyTorch's semantics and arguments); ``step(metric)`` once per epoch."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: {type(optimizer).__name__} is not an Optimizer")
        if not _number(factor, "factor", "ReduceLROnPlateau") < 1.0:
            raise ValueError("ReduceLROnPlateau: factor should be < 1.0")
        self.optimizer = optimizer
        self.factor = float(factor)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"ReduceLROnPlateau: expected {len(optimizer.param_groups)} min_lrs, "
                                 f"got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = [float(v) for v in min_lr]
        else:
            self.default_min_lr = float(min_lr)
            self.min_lrs = [float(min_lr)] * len(optimizer.param_groups)
        self.patience = check_int(patience, "patience", "ReduceLROnPlateau", minimum=0)
        self.cooldown = check_int(cooldown, "cooldown", "ReduceLROnPlateau", minimum=0)
        self.eps = float(eps)
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self._init_is_better(mode, threshold, threshold_mode)
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {bounded_repr(mode)}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError("ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got "
                             f"{bounded_repr(threshold_mode)}")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def step(self, metrics, epoch=None):
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"ReduceLROnPlateau: the optimizer has {len(groups)} param groups, "
                                   f"min_lr was given for {len(self.min_lrs)}")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, group in enumerate(groups):
            old = float(group["lr"])
            new = max(old * self.factor, self.min_lrs[i])
            if old - new > self.eps:
                group["lr"] = new

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "optimizer"})
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)


# -- gradient clipping -------------------------------------------------------------------------

def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, *, threads=None):
    """Scale the gradients so that their global norm is at most ``max_norm``; return that norm.

    The norm is taken over all gradients together, as if concatenated into one vector
    (accumulated in double in C++). As in PyTorch, every gradient is multiplied by
    ``min(max_norm / (total_norm + 1e-6), 1)``. ``norm_type`` is a positive number or inf.
    With ``error_if_nonfinite`` a NaN/inf total raises RuntimeError (gradients unchanged);
    otherwise a non-finite total turns the gradients to NaN, as PyTorch does.
    Returns the total norm (before clipping) as a Python float; 0.0 when there are no gradients.
    """
    fn = "clip_grad_norm_"
    params = _parameters_of(parameters, fn)
    max_norm = _number(max_norm, "max_norm", fn)
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        norm_type = math.inf
    norm_type = _number(norm_type, "norm_type", fn)
    if not norm_type > 0:
        raise ValueError(f"{fn}: norm_type must be a positive number or inf, got {norm_type}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    threads = resolve_threads(threads)
    power_sum = _core.norm_power_sum(grads, norm_type, threads)
    total = power_sum if math.isinf(norm_type) else power_sum ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"{fn}: the total norm of order {norm_type} of the gradients is non-finite ({total}), "
                           "so it cannot be clipped; pass error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    coef = coef if coef < 1.0 or math.isnan(coef) else 1.0
    if coef != 1.0:
        _core.scale_(grads, coef, threads)
    return float(total)


def clip_grad_value_(parameters, clip_value, *, threads=None):
    """Clamp every gradient element to [-clip_value, clip_value], in place (NaN stays NaN)."""
    fn = "clip_grad_value_"
    params = _parameters_of(parameters, fn)
    clip_value = _number(clip_value, "clip_value", fn)
    if not clip_value >= 0:
        raise ValueError(f"{fn}: clip_value must be >= 0, got {clip_value}")
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        _core.clamp_(grads, -clip_value, clip_value, resolve_threads(threads))
