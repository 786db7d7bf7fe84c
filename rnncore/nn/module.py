"""Parameters and the Module base class: PyTorch's bookkeeping without autograd.

A Module owns Parameters (``.data`` and an accumulated ``.grad``) and child Modules, found
by attribute assignment or declared with register_parameter() / register_module() (which also
take None: a name with nothing behind it, like a Linear's bias=False), as in PyTorch. Models
chain explicit forward/backward pairs; a backward *adds* into each parameter's ``.grad`` and
``zero_grad()`` clears them.
"""
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from .._checks import bounded_repr, check_bf16_dtype, resolve_dtype, resolve_precision, shape_str


def _skeleton_placeholder(data):
    from .init import building_skeleton

    return building_skeleton() and isinstance(data, np.ndarray) and not data.flags.writeable


class Parameter:
    """A trainable array and its gradient (same shape and dtype, accumulated by backward)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        if _skeleton_placeholder(data):  # init.skeleton(): shapes only, no memory
            self.data = self.grad = data
            return
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


def _loadable(value, name, p, fn):
    """A state-dict entry as an array of parameter p's dtype and shape (a new array or a view
    that p.data[...] = ... can copy without failing); TypeError/ValueError naming the entry."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        try:
            value = value.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            value = value.float().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{fn}: {name} must be a real numeric array, got {type(value).__name__} ({exc})") from None
    if array.dtype.kind not in "biuf":
        what = {"c": "complex (its imaginary part would be lost)", "O": "object (not numbers)"}.get(
            array.dtype.kind, "not real numbers")
        raise TypeError(f"{fn}: {name} must be a real numeric array, got dtype {array.dtype}: {what}")
    if array.shape != p.data.shape:
        raise ValueError(f"{fn}: {name} must have shape {shape_str(p.data.shape)}, got {shape_str(array.shape)}")
    # Quantized weights (int8 values, bf16 bits in uint16) and float weights do not convert into
    # each other by a cast: refuse instead of installing garbage.
    if p.data.dtype.kind in "iu" and array.dtype != p.data.dtype:
        raise TypeError(f"{fn}: {name} holds {p.data.dtype} (quantized) weights; got dtype {array.dtype}, which "
                        "would be cast, not quantized (use rnncore.quantize on the float model)")
    if p.data.dtype.kind == "f" and array.dtype in (np.int8, np.uint16):
        raise TypeError(f"{fn}: {name} is a float parameter; got dtype {array.dtype}, which looks like quantized "
                        "weights (int8 values or bf16 bits) and would be cast, not dequantized")
    return array.astype(p.data.dtype, copy=False)


class Module:
    """Base class of every layer and model."""

    _has_bf16_path = False  # True on layers with a `precision` attribute ('fp32' / 'bf16'): set_precision

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        # As in PyTorch: a Parameter or a Module assigned to an attribute is registered under its
        # name; None may replace a registered one (a layer without bias has bias = None).
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError(f"{type(self).__name__}.__init__ must call Module.__init__ before assigning {name}")
        if isinstance(value, (Parameter, Module)):
            params.pop(name, None)
            self._modules.pop(name, None)
            self.__dict__.pop(name, None)
            if isinstance(value, Parameter):
                self.register_parameter(name, value)
            else:
                self.register_module(name, value)
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} "
                                "(a Parameter or None expected; use .data to change its values)")
            self.register_parameter(name, None)
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} "
                                "(a Module or None expected)")
            self.register_module(name, None)
        else:
            object.__setattr__(self, name, value)

    def _check_new_name(self, name, fn, registry):
        if not isinstance(name, str):
            raise TypeError(f"{fn}: name must be a str, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{fn}: name must be a non-empty string without '.', got {bounded_repr(name)}")
        if name in self.__dict__ and name not in registry:
            raise KeyError(f"{fn}: attribute {bounded_repr(name)} already exists")

    def register_parameter(self, name, param):
        """Add ``param`` (a Parameter, or None) to the module under ``name``, as in PyTorch.

        The parameter becomes the attribute ``name`` and an entry of parameters() and
        state_dict(). None declares the name with no parameter (a layer built with bias=False
        has ``bias`` None); parameters() and state_dict() leave it out.
        """
        fn = f"{type(self).__name__}.register_parameter"
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{fn}: call Module.__init__ first")
        self._check_new_name(name, fn, self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{fn}: {bounded_repr(name)} must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_module(self, name, module):
        """Add a child ``module`` (a Module, or None) under ``name``, as in PyTorch.

        The child becomes the attribute ``name``; its parameters appear as ``name.<its names>``.
        None declares the name with no module (a model without an embedding has ``embedding``
        None); named_modules() and parameters() leave it out.
        """
        fn = f"{type(self).__name__}.register_module"
        if "_modules" not in self.__dict__:
            raise AttributeError(f"{fn}: call Module.__init__ first")
        self._check_new_name(name, fn, self._modules)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{fn}: {bounded_repr(name)} must be a Module or None, got {type(module).__name__}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

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
            if p is not None:
                yield prefix + name, p
        for name, m in self._modules.items():
            if m is not None:
                yield from m._all_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix=""):
        """(name, Module) for this module ('' or `prefix`) and every descendant, depth first."""
        yield prefix.rstrip("."), self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(prefix + name + ".")

    # -- random generators ------------------------------------------------------------------
    def named_generators(self, prefix=""):
        """(name, numpy Generator) for every random generator this module or a descendant holds
        (initialisation, dropout masks), e.g. ('rnn._rng', ...), ('drop_in.rng', ...): the name is
        the module's path and the attribute. A Generator shared by several modules appears
        under each name. Checkpoints save their states so a resumed run draws the same masks."""
        for path, m in self.named_modules(prefix):
            for attr, value in m._own_generators():
                yield (f"{path}.{attr}" if path else attr), value

    def _own_generators(self):
        return [(attr, v) for attr, v in sorted(vars(self).items()) if isinstance(v, np.random.Generator)]

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
                if p is None:
                    continue
                p.data = np.ascontiguousarray(p.data, dtype=dt)
                p.grad = np.ascontiguousarray(p.grad, dtype=dt)
            if "dtype" in m.__dict__:
                object.__setattr__(m, "dtype", dt)
            m._dtype_changed()
        return self

    def set_precision(self, precision):
        """The compute precision of every layer in this module that has a bfloat16 path:
        'bf16' (bfloat16 mixed precision, as PyTorch's autocast: the operands of every product
        rounded to bf16, float32 sums, float32 master weights, gradients and optimizer state)
        or 'fp32' (the default). The layers with a bf16 path are the recurrent layers (RNN,
        LSTM, GRU: cell state and pointwise math stay float32) and Linear; every other
        operation (embeddings, dropout, softmax and the losses, the adaptive softmax, layer
        norm, attention) runs in float32, as autocast keeps them. Returns self."""
        fn = f"{type(self).__name__}.set_precision"
        p = resolve_precision(precision, fn)
        layers = [m for _, m in self.named_modules() if m._has_bf16_path]
        if p == "bf16":
            for m in layers:
                check_bf16_dtype(m.dtype, fn)
        for m in layers:
            object.__setattr__(m, "precision", p)
        return self

    @property
    def compute_precision(self):
        """'bf16' when every layer with a bf16 path runs in bf16, 'fp32' when none does (or there
        are none), 'mixed' otherwise."""
        ps = {m.precision for _, m in self.named_modules() if m._has_bf16_path}
        return ps.pop() if len(ps) == 1 else ("fp32" if not ps else "mixed")

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

        ``state_dict`` maps names to numpy arrays, torch tensors or anything numpy converts to a
        real array. Raises TypeError for something that is not such a mapping and for an entry
        that does not hold real numbers (object, complex, string arrays: named by key), KeyError
        listing missing and unexpected names, ValueError for a shape mismatch. Every entry is
        checked and converted first; nothing is modified unless every check passes.
        """
        fn = "load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{fn}: state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        own = OrderedDict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [str(k) for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected " + ", ".join(unexpected))
            raise KeyError(f"{fn}: {type(self).__name__} state dict mismatch: " + "; ".join(parts))
        staged = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            staged.append((p, _loadable(state_dict[name], name, p, fn)))
        for p, value in staged:  # every entry is checked and converted: copying cannot fail now
            p.data[...] = value
        return self

    # -- printing ---------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): {m!r}".replace("\n", "\n  ") for name, m in self._modules.items() if m is not None]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
