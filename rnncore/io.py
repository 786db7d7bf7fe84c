"""Checkpoints (one safetensors file, no pickle) and PyTorch state-dict interop.

    rnncore.save("model.safetensors", model, optimizer, extra={"epoch": 3})
    ckpt = rnncore.load("model.safetensors", model, optimizer)   # restores both in place
    ckpt = rnncore.load("model.safetensors")                      # just read it
    model = ckpt.build()                                          # rebuild an rnncore.nn model

File layout: a standard safetensors file, readable by any safetensors reader.
  tensors   ``model.<parameter name>``            the model's parameters, in its own dtype
            ``optimizer.<index>.<state name>``    the optimizer's per-parameter state arrays
            ``arrays.<name>``                     the caller's ``arrays`` (e.g. a carried hidden state)
  metadata  (str -> str; the JSON ones are JSON text)
            format          "rnncore.checkpoint"      format_version  "1"
            kind            the model's class name     config          JSON, see below
            model_tensors   JSON list of parameter names, in the model's order
            optimizer       JSON: {"type", "param_groups", "state": {index: {scalar state}}} or absent
            extra           JSON of the caller's ``extra`` (default {})
            checksums       JSON {tensor name: CRC-32 of its dtype, shape and bytes}
            metadata_crc32  CRC-32 of all the other metadata (sorted JSON), so a damaged header
                            is caught too

The config convention: a model that has a ``config()`` method returns a JSON-serialisable
dict of the constructor arguments that rebuild it (the recurrent layers and cells do; a
language model would include its vocabulary). save() records ``model.config()`` updated
with the caller's ``config`` (the caller's keys win); a model without ``config()`` gets the
caller's ``config`` alone (or {}). The class name is always recorded as ``kind``.

Saving is atomic: the bytes go to a temporary file in the same directory, which is flushed,
fsync'd and then renamed over ``path`` (os.replace), so an interrupted save leaves the
previous checkpoint intact and no temporary file behind. A save killed outright (SIGKILL, a
power cut) cannot remove its temporary file: ``.<name>.<host>.<pid>.<random>.tmp``; the next
save to the same path removes those of that path whose writer (same host, that pid) is gone.

The file is deterministic: the same model, optimizer and arguments give the same bytes (the
JSON header has sorted keys and no timestamp; tensors are laid out by alignment, then name).

Loading checks everything before changing anything: a bad file (truncated, corrupt, not
safetensors, failed checksum) raises CheckpointError (a ValueError) saying what is wrong; a
model of another kind or config, or whose tensors do not match (missing, unexpected or
mis-shaped names, all listed at once), raises CheckpointError too. Weights are copied into
the model's arrays, converted to the model's dtype (as PyTorch's load_state_dict does), so a
round trip at the same dtype is bit-exact. A plain safetensors file (no rnncore metadata,
e.g. written by safetensors.torch.save_file) loads as weights only: tensor names as they are,
no kind, config or optimizer.
"""
import json
import os
import re
import socket
import struct
import sys
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ._checks import shape_str

__all__ = ["save", "load", "Checkpoint", "CheckpointError", "from_torch", "to_torch"]

FORMAT = "rnncore.checkpoint"
FORMAT_VERSION = "1"
_MODEL = "model."
_OPTIM = "optimizer."
_ARRAYS = "arrays."
_OWN_KEYS = ("format_version", "model_tensors", "checksums", "metadata_crc32")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or does not match the model/optimizer given."""


# -- JSON ----------------------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.ndarray):
        raise TypeError("numpy arrays cannot go in a checkpoint's JSON metadata (config/extra/optimizer "
                        f"options); got an array of shape {value.shape}")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _dumps(value, what):
    try:
        return json.dumps(value, default=_json_default, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"rnncore.save: {what} must be JSON-serialisable: {exc}") from None
    except RecursionError:  # json recurses once per level of nesting
        raise TypeError(f"rnncore.save: {what} must be JSON-serialisable: it is nested too deeply "
                        f"(more than about {sys.getrecursionlimit()} levels)") from None


def _loads(text, what, path):
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint: its {what} metadata is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt checkpoint: its {what} metadata nests too deeply "
                              "(not something rnncore.save writes)") from None


# -- save ------------------------------------------------------------------------------------------

def _model_config(model, config):
    cfg = {}
    own = getattr(model, "config", None)
    if callable(own):
        cfg.update(own())
    if config is not None:
        if not isinstance(config, Mapping):
            raise TypeError(f"rnncore.save: config must be a dict, got {type(config).__name__}")
        cfg.update(config)
    return cfg


def _crc(array):
    """CRC-32 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    head = zlib.crc32(f"{array.dtype.str}{array.shape}".encode())
    return zlib.crc32(array.reshape(-1).view(np.uint8), head) & 0xFFFFFFFF  # (also when a dimension is 0)


def _metadata_crc(metadata):
    rest = {k: v for k, v in metadata.items() if k != "metadata_crc32"}
    return str(zlib.crc32(json.dumps(rest, sort_keys=True).encode()) & 0xFFFFFFFF)


def _optimizer_payload(optimizer, tensors):
    sd = optimizer.state_dict()
    scalars = {}
    for index, entries in sd["state"].items():
        kept = {}
        for name, value in entries.items():
            if isinstance(value, np.ndarray):
                if "." in str(name):
                    raise TypeError(f"rnncore.save: optimizer state name {name!r} must not contain '.'")
                tensors[f"{_OPTIM}{index}.{name}"] = np.ascontiguousarray(value)
            else:
                kept[name] = value
        scalars[str(index)] = kept
    return {"type": type(optimizer).__name__, "param_groups": sd["param_groups"], "state": scalars}


def _arrays_payload(arrays, tensors):
    if arrays is None:
        return
    if not isinstance(arrays, Mapping):
        raise TypeError(f"rnncore.save: arrays must be a dict name -> numpy array, got {type(arrays).__name__}")
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"rnncore.save: arrays names must be non-empty strings, got {name!r}")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"rnncore.save: arrays[{name!r}] must be a numpy array, got {type(value).__name__}")
        tensors[_ARRAYS + name] = np.ascontiguousarray(value)


# safetensors dtype names of the numpy dtypes rnncore reads and writes (what numpy can hold).
_DTYPES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "F16": "<f2", "U32": "<u4",
           "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8"}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _stored(value, name):
    """An array as the file holds it: C-contiguous, little-endian, a dtype safetensors has."""
    array = np.ascontiguousarray(value)
    code = _DTYPE_NAMES.get(array.dtype.newbyteorder("<"))
    if code is None:
        raise TypeError(f"rnncore.save: tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold")
    return np.ascontiguousarray(array, dtype=np.dtype(_DTYPES[code]))


def _safetensors_bytes(tensors, metadata):
    """A standard safetensors file, deterministically: header keys sorted, tensors laid out by
    item size (largest first, so every tensor is aligned) then by name, the header padded with
    spaces to a multiple of 8 bytes (as the safetensors library writes it)."""
    arrays = {name: _stored(value, name) for name, value in tensors.items()}
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    header = {"__metadata__": dict(metadata)}
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": _DTYPE_NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    out = bytearray(8 + len(text) + offset)
    out[:8] = struct.pack("<Q", len(text))
    out[8:8 + len(text)] = text
    body = np.frombuffer(out, np.uint8)[8 + len(text):]  # the tensor data, written in place
    at = 0
    for name in order:
        a = arrays[name]
        body[at:at + a.nbytes] = a.reshape(-1).view(np.uint8)
        at += a.nbytes
    return out


def _serialise(model, optimizer, config, extra, arrays=None):
    if not hasattr(model, "named_parameters"):
        raise TypeError(f"rnncore.save: model must be an rnncore Module, got {type(model).__name__}")
    tensors = OrderedDict()
    names = []
    for name, p in model.named_parameters():
        tensors[_MODEL + name] = np.ascontiguousarray(p.data)
        names.append(name)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": type(model).__name__,
        "config": _dumps(_model_config(model, config), "config"),
        "model_tensors": json.dumps(names),
        "extra": _dumps({} if extra is None else extra, "extra"),
    }
    if optimizer is not None:
        if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "param_groups"):
            raise TypeError(f"rnncore.save: optimizer must be an rnncore Optimizer, got {type(optimizer).__name__}")
        metadata["optimizer"] = _dumps(_optimizer_payload(optimizer, tensors), "optimizer state")
    _arrays_payload(arrays, tensors)
    from . import __version__

    metadata["rnncore_version"] = __version__
    tensors = OrderedDict((k, _stored(v, k)) for k, v in tensors.items())  # checksummed as stored
    metadata["checksums"] = json.dumps({k: _crc(v) for k, v in tensors.items()}, sort_keys=True)
    metadata["metadata_crc32"] = _metadata_crc(metadata)
    return _safetensors_bytes(tensors, metadata)


def _write_bytes(f, data):
    """Write `data` to the open file `f` in pieces (a seam for tests that interrupt a save)."""
    view = memoryview(data)
    chunk = 1 << 24
    for start in range(0, len(view), chunk):
        f.write(view[start:start + chunk])


def _file_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _host_tag():
    """This machine's name as it goes into temporary file names (letters, digits, '-', '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")[:40] or "host"


def _temp_prefix(base):
    return f".{base}.{_host_tag()}.{os.getpid()}."


def _process_gone(pid):
    """True when no process `pid` exists on this machine (POSIX; elsewhere: never sure, False)."""
    if os.name != "posix" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        return False
    return False


def remove_stale_temporaries(path):
    """Remove the temporary files an earlier save to `path` left when it was killed (SIGKILL,
    a crash): only names of atomic_write's own pattern for this path (``.<name>.<host>.<pid>.
    <random>.tmp``), written on this host by a process that no longer exists. Returns the
    names removed. Other files, other paths' temporaries and live writers' are left alone."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(r"\." + re.escape(os.path.basename(path)) + r"\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]{1,10})"
                         r"\.[A-Za-z0-9_]+\.tmp")
    host = _host_tag()
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or m.group("host") != host or not _process_gone(int(m.group("pid"))):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def atomic_write(path, data):
    """Write bytes to `path` atomically: temporary file in the same directory, fsync, os.replace.
    Stale temporaries of earlier, killed saves to `path` are removed first."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(os.path.basename(path)), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_bytes(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def save(path, model, optimizer=None, config=None, extra=None, arrays=None):
    """Save a model (and optionally its optimizer's state) to one safetensors file, atomically.

    config: dict of constructor arguments, merged over ``model.config()`` (see the module doc).
    extra: any JSON-serialisable value (epoch, step, metrics, scheduler.state_dict(), ...).
    arrays: dict name -> numpy array of other arrays to keep (a trainer's carried hidden
    state, say); stored as tensors ``arrays.<name>``, read back as ``Checkpoint.arrays``.
    """
    atomic_write(path, _serialise(model, optimizer, config, extra, arrays))


# -- load ------------------------------------------------------------------------------------------

class Checkpoint:
    """What a checkpoint file holds.

    state_dict       OrderedDict parameter name -> numpy array (the model's order)
    kind             the model's class name (None for a plain safetensors file)
    config           dict (see the module doc); {} when none was recorded
    optimizer_state  the optimizer's state_dict() (arrays included), or None
    optimizer_type   its class name, or None
    extra            what save() was given as ``extra`` ({} by default)
    arrays           OrderedDict name -> array of what save() was given as ``arrays`` ({} by default)
    metadata         the raw str -> str metadata of the file
    """

    def __init__(self, state_dict, kind, config, optimizer_state, optimizer_type, extra, metadata, arrays=None,
                 path=None):
        self.path = path
        self.state_dict = state_dict
        self.kind = kind
        self.config = config
        self.optimizer_state = optimizer_state
        self.optimizer_type = optimizer_type
        self.extra = extra
        self.metadata = metadata
        self.arrays = OrderedDict() if arrays is None else arrays

    def __repr__(self):
        opt = f", optimizer={self.optimizer_type}" if self.optimizer_type else ""
        return f"Checkpoint(kind={self.kind!r}, tensors={len(self.state_dict)}{opt})"

    def build(self):
        """A new model of the recorded kind from rnncore.nn, built from the config, weights loaded.

        Classes are looked up in rnncore.nn only (a file never names code to import) and built as
        ``cls(**config)``. The config is first checked against the tensors' shapes on a model
        built as shapes only (rnncore.nn.init.skeleton(): no memory, no random draws), so a file
        whose config claims sizes its tensors do not have raises CheckpointError naming the
        tensor and both shapes instead of allocating the claimed model.
        """
        from . import nn
        from .nn.init import skeleton

        cls = getattr(nn, self.kind, None) if self.kind else None
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            raise CheckpointError(f"Checkpoint.build: {self.kind!r} is not a model class in rnncore.nn; construct "
                                  "the model yourself and pass it to rnncore.load(path, model)")
        where = self.path or "<checkpoint>"
        with skeleton():
            shapes_only = cls(**self.config)
        _check_model(self, shapes_only, where)  # names and shapes, before any memory is taken
        model = cls(**self.config)
        _check_model(self, model, where)
        _install_model(self, model)
        return model


def _parse_header(data, path, size=None):
    """The safetensors JSON header from `data`, the first bytes of a file of `size` bytes (at least
    its header; default: all of it), checked enough to say clearly what is wrong.
    Returns (header dict, header length n)."""
    size = len(data) if size is None else size
    if size < 8:
        raise CheckpointError(f"{path}: not a checkpoint: {size} bytes is shorter than a safetensors header "
                              "(truncated or empty file)")
    (n,) = struct.unpack("<Q", data[:8])
    if n == 0 or 8 + n > size or 8 + n > len(data):
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: its header claims {n} bytes, the file has "
                              f"{size - 8} after the length")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint or not a safetensors file: unreadable header ({exc})") \
            from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt checkpoint or not a safetensors file: its header nests too deeply "
                              "(a safetensors header is one level of tensor entries)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint: the safetensors header is not a JSON object")
    return header, n


def _check_dtypes(header, path):
    """Every tensor entry of the header in a dtype rnncore reads (numpy has no bfloat16 or 8-bit
    floats): a clear CheckpointError naming the tensor, before any data is read."""
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue  # a malformed entry is reported by the safetensors reader
        dtype = entry.get("dtype")
        if isinstance(dtype, str) and dtype not in _DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {dtype}, which rnncore does not support (it reads F32 and F64 "
                "weights, and F16, integer and BOOL arrays); convert the file's tensors to float32 first")


def _read(path):
    import safetensors.numpy

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if 0 < n <= size - 8:
                head += f.read(n)
        header, n = _parse_header(head, path, size)
        _check_dtypes(header, path)  # before any tensor data is read
        f.seek(0)
        data = f.read()
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint: __metadata__ is not a JSON object")
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError (and others) for bad data
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: {exc}") from None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"{path}: corrupt checkpoint: its metadata must map strings to strings")
    # An rnncore checkpoint says so in several keys; damage to one of them must not make it
    # pass for a plain safetensors file.
    ours = metadata.get("format") == FORMAT or any(k in metadata for k in _OWN_KEYS)
    if ours:
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{path}: corrupt checkpoint: rnncore metadata without its format tag")
        version = metadata.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {version!r}; this rnncore reads "
                                  f"{FORMAT_VERSION!r}")
        if metadata.get("metadata_crc32") != _metadata_crc(metadata):
            raise CheckpointError(f"{path}: corrupt checkpoint: its metadata fails its checksum")
        checksums = _expect(_loads(metadata.get("checksums", "{}"), "checksums", path), dict, "checksums", path)
        missing = sorted(set(checksums) - set(tensors))
        if missing:
            raise CheckpointError(f"{path}: corrupt checkpoint: tensors listed in its metadata are absent: "
                                  + ", ".join(missing))
        for name, array in tensors.items():
            if name in checksums and _crc(array) != checksums[name]:
                raise CheckpointError(f"{path}: corrupt checkpoint: tensor {name!r} fails its checksum")
    return metadata, tensors, ours


def _expect(value, kind, what, path):
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: corrupt checkpoint: its {what} metadata should be a "
                              f"{kind.__name__}, got {type(value).__name__}")
    return value


def _checkpoint_from(metadata, tensors, ours, path):
    if not ours:
        return Checkpoint(OrderedDict(sorted(tensors.items())), None, {}, None, None, {}, metadata, path=path)
    names = _expect(_loads(metadata.get("model_tensors", "[]"), "model_tensors", path), list, "model_tensors", path)
    if not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: corrupt checkpoint: model_tensors must list tensor names")
    state = OrderedDict()
    for name in names:
        key = _MODEL + name
        if key not in tensors:
            raise CheckpointError(f"{path}: corrupt checkpoint: model tensor {name!r} is listed but absent")
        state[name] = tensors[key]
    for key in sorted(tensors):
        if key.startswith(_MODEL) and key[len(_MODEL):] not in state:
            state[key[len(_MODEL):]] = tensors[key]
    config = _expect(_loads(metadata.get("config", "{}"), "config", path), dict, "config", path)
    extra = _loads(metadata.get("extra", "{}"), "extra", path)
    opt_state, opt_type = None, None
    if "optimizer" in metadata:
        payload = _expect(_loads(metadata["optimizer"], "optimizer", path), dict, "optimizer", path)
        opt_type = payload.get("type")
        scalars = payload.get("state")
        groups = payload.get("param_groups")
        if not (isinstance(opt_type, str) and isinstance(scalars, dict) and isinstance(groups, list)
                and all(isinstance(g, dict) for g in groups) and all(isinstance(v, dict) for v in scalars.values())):
            raise CheckpointError(f"{path}: corrupt checkpoint: optimizer metadata lacks a valid type, state or "
                                  "param_groups")
        state_arrays = {}
        for key, array in tensors.items():
            if key.startswith(_OPTIM):
                index, _, sname = key[len(_OPTIM):].partition(".")
                state_arrays.setdefault(index, {})[sname] = array
        opt = {}
        for index in sorted(set(scalars) | set(state_arrays), key=lambda s: (len(s), s)):
            if not index.isdigit():
                raise CheckpointError(f"{path}: corrupt checkpoint: optimizer state index {index!r}")
            entry = dict(scalars.get(index, {}))
            entry.update(state_arrays.get(index, {}))
            opt[int(index)] = entry
        opt_state = {"state": opt, "param_groups": groups}
    arrays = OrderedDict((key[len(_ARRAYS):], tensors[key]) for key in sorted(tensors) if key.startswith(_ARRAYS))
    return Checkpoint(state, metadata.get("kind"), config, opt_state, opt_type, extra, metadata, arrays, path)


def _check_model(ckpt, model, path):
    """Raise CheckpointError unless `model` is of the checkpoint's kind, config and tensor shapes."""
    if not hasattr(model, "named_parameters"):
        raise TypeError(f"rnncore.load: model must be an rnncore Module, got {type(model).__name__}")
    kind = type(model).__name__
    if ckpt.kind is not None and ckpt.kind != kind:
        raise CheckpointError(f"{path}: the checkpoint holds a {ckpt.kind} model, got a {kind}")
    own_config = getattr(model, "config", None)
    if ckpt.kind is not None and callable(own_config):
        mine = json.loads(_dumps(own_config(), "model.config()"))  # compare in JSON terms (tuples -> lists)
        # dtype is not structural: weights are converted to the model's dtype
        differ = [k for k in mine if k != "dtype" and k in ckpt.config and ckpt.config[k] != mine[k]]
        if differ:
            detail = ", ".join(f"{k}: checkpoint {ckpt.config[k]!r}, model {mine[k]!r}" for k in differ)
            raise CheckpointError(f"{path}: the checkpoint's {kind} has another configuration ({detail})")
    own = OrderedDict(model.named_parameters())
    missing = [k for k in own if k not in ckpt.state_dict]
    unexpected = [k for k in ckpt.state_dict if k not in own]
    misshaped = [f"{k} (checkpoint {shape_str(ckpt.state_dict[k].shape)}, model {shape_str(p.data.shape)})"
                 for k, p in own.items() if k in ckpt.state_dict and ckpt.state_dict[k].shape != p.data.shape]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append("missing from the checkpoint: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected in the checkpoint: " + ", ".join(unexpected))
        if misshaped:
            parts.append("mis-shaped: " + ", ".join(misshaped))
        raise CheckpointError(f"{path}: the checkpoint's tensors do not match the {kind}: " + "; ".join(parts))


def _install_model(ckpt, model):
    for name, p in model.named_parameters():
        p.data[...] = ckpt.state_dict[name]


def load(path, model=None, optimizer=None):
    """Read a checkpoint; restore `model` and `optimizer` in place when given; return a Checkpoint.

    Every check (file integrity, kind, config, tensor names and shapes, optimizer type and
    state) runs before anything is modified, so a failed load leaves model and optimizer as
    they were. Raises CheckpointError (a ValueError) with the reason; FileNotFoundError for a
    missing file.
    """
    path = os.fspath(path)
    metadata, tensors, ours = _read(path)
    ckpt = _checkpoint_from(metadata, tensors, ours, path)
    if model is not None:
        _check_model(ckpt, model, path)  # after this, installing the weights cannot fail
    if optimizer is not None:
        if ckpt.optimizer_state is None:
            raise CheckpointError(f"{path}: the checkpoint holds no optimizer state")
        if ckpt.optimizer_type != type(optimizer).__name__:
            raise CheckpointError(f"{path}: the checkpoint holds {ckpt.optimizer_type} state, got a "
                                  f"{type(optimizer).__name__} optimizer")
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)  # checks everything before changing anything
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: the checkpoint's optimizer state does not fit: {exc}") from None
    if model is not None:
        _install_model(ckpt, model)
    return ckpt


# -- PyTorch interop ---------------------------------------------------------------------------

def _to_numpy(value, name):
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu()
        try:
            return np.array(value.numpy(), copy=True)
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return np.array(value.float().numpy(), copy=True)
    try:
        return np.array(value, copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"from_torch: {name} is neither a tensor nor an array ({exc})") from None


def from_torch(state_dict, prefix=""):
    """A PyTorch state dict (or an nn.Module) as an OrderedDict of numpy arrays (copies).

    Works without importing torch (tensors are duck-typed). With ``prefix``, only the entries
    whose names start with it are kept, with the prefix removed (e.g. ``prefix="rnn."`` picks
    a submodule's weights). PyTorch's recurrent layers use rnncore's names and layouts, so
    ``rnncore.nn.LSTM(...).load_state_dict(from_torch(torch_lstm.state_dict()))`` just works.
    """
    if not isinstance(state_dict, Mapping) and callable(getattr(state_dict, "state_dict", None)):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"from_torch: expected a state dict (mapping name -> tensor), got {type(state_dict).__name__}")
    out = OrderedDict()
    for name, value in state_dict.items():
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix):]
        out[name] = _to_numpy(value, name)
    return out


def to_torch(state_dict):
    """An rnncore state dict (or Module) as an OrderedDict of torch tensors (copies); imports torch."""
    import torch

    if not isinstance(state_dict, Mapping) and callable(getattr(state_dict, "state_dict", None)):
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"to_torch: expected a state dict (mapping name -> array), got {type(state_dict).__name__}")
    return OrderedDict((name, torch.from_numpy(np.array(value, copy=True))) for name, value in state_dict.items())
