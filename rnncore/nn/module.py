"""Parameters and the Module base class: PyTorch's bookkeeping without autograd.

A Module owns Parameters (``.data`` and an accumulated ``.grad``) and child Modules, found
by attribute assignment as in PyTorch. Models chain explicit forward/backward pairs; a
backward *adds* into each parameter's ``.grad`` and ``zero_grad()`` clears them.
"""
from collections import OrderedDict

import numpy as np

from .._checks import resolve_dtype, shape_str


class Parameter:
    """A trainable array and its gradient (same shape and dtype, accumulated by backward)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = np.ascontiguousarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={shape_str(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and model."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(f"{type(self).__name__}.__init__ must call Module.__init__ before assigning {name}")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        else:
            if name in params:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} (use .data)")
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- parameters -------------------------------------------------------------------------
    def named_parameters(self, prefix="", remove_duplicate=True):
        """(name, Parameter) pairs. A Parameter shared by several modules (tied weights) is
        listed once, under its first name, unless remove_duplicate is False (as in PyTorch)."""
        seen = set()
        for name, p in self._all_parameters(prefix):
            if remove_duplicate:
                if id(p) in seen:
                    continue
                seen.add(id(p))
            yield name, p

    def _all_parameters(self, prefix):
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m._all_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix=""):
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            yield from m.named_modules(prefix + name + ".")

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode=True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    # -- dtype ------------------------------------------------------------------------------
    def to(self, dtype):
        """Convert every parameter (and its gradient) to float32 or float64, in place."""
        dt = resolve_dtype(dtype)
        for _, m in self.named_modules():
            for p in m._parameters.values():
                p.data = np.ascontiguousarray(p.data, dtype=dt)
                p.grad = np.ascontiguousarray(p.grad, dtype=dt)
            if "dtype" in m.__dict__:
                object.__setattr__(m, "dtype", dt)
            m._dtype_changed()
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    def _dtype_changed(self):
        """Hook for modules holding dtype-specific state (workspaces)."""

    # -- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Name -> a copy of each parameter array, in PyTorch's naming and order (a tied
        parameter appears under each of its names, as in PyTorch)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters(remove_duplicate=False))

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters; with strict, names must match exactly.

        Raises KeyError listing missing and unexpected names, ValueError for a shape mismatch.
        Nothing is modified unless every check passes.
        """
        own = OrderedDict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected " + ", ".join(unexpected))
            raise KeyError(f"load_state_dict: {type(self).__name__} state dict mismatch: " + "; ".join(parts))
        staged = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.shape != p.data.shape:
                raise ValueError(
                    f"load_state_dict: {name} must have shape {shape_str(p.data.shape)}, got {shape_str(value.shape)}"
                )
            staged.append((p, value))
        for p, value in staged:
            p.data[...] = value
        return self

    # -- printing ---------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): {m!r}".replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
