"""Checkpoints (rnncore.save / rnncore.load) and PyTorch state-dict interop."""
import json
import os
import struct

import numpy as np
import pytest

import rnncore
from rnncore import CheckpointError, from_torch, load, optim, save, to_torch
from rnncore import io as rio
from rnncore.nn import GRU, LSTM, RNN, Module, Parameter


class Toy(Module):
    """A model without config(): its shapes come from the constructor only."""

    def __init__(self, shapes):
        super().__init__()
        for name, shape in shapes.items():
            setattr(self, name, Parameter(np.zeros(shape)))


def trained(model, optimizer, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in model.parameters():
            p.grad[...] = rng.standard_normal(p.shape)
        optimizer.step()
    return model, optimizer


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture
def ckpt_path(tmp_path):
    return str(tmp_path / "model.safetensors")


# -- round trips -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact_with_optimizer_state(ckpt_path, dtype):
    model = LSTM(3, 5, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    opt = optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    trained(model, opt)
    # values a text format would not keep: NaN payloads, inf, -0.0, denormals
    w = model.weight_hh_l0.data.reshape(-1)
    w[:4] = [np.nan, np.inf, -0.0, np.finfo(dtype).tiny / 4]
    save(ckpt_path, model, opt, extra={"epoch": 7, "val_loss": 1.2345678901234567, "history": [1, 2.5]})

    model2 = LSTM(3, 5, num_layers=2, bidirectional=True, dtype=dtype, seed=2)
    opt2 = optim.Adam(model2.parameters(), lr=0.5)
    ckpt = load(ckpt_path, model2, opt2)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), model2.named_parameters()):
        assert n1 == n2 and same_bits(p1.data, p2.data), n1
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["param_groups"] == json.loads(json.dumps(sd2["param_groups"]))
    for k in sd1["state"]:
        for name, v in sd1["state"][k].items():
            assert same_bits(v, sd2["state"][k][name]) if isinstance(v, np.ndarray) else v == sd2["state"][k][name]
    assert ckpt.extra == {"epoch": 7, "val_loss": 1.2345678901234567, "history": [1, 2.5]}
    assert ckpt.kind == "LSTM" and ckpt.config["hidden_size"] == 5 and ckpt.optimizer_type == "Adam"
    assert os.listdir(os.path.dirname(ckpt_path)) == ["model.safetensors"]


def test_resumed_training_equals_uninterrupted(ckpt_path):
    def grads(model, t):
        for k, p in enumerate(model.parameters()):
            p.grad[...] = np.sin(p.data * (t + 1) + k)

    model = GRU(2, 3, dtype=np.float64, seed=3)
    opt = optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9, centered=True)
    sched = optim.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    losses = [3.0, 2.0, 2.5, 2.6, 1.0, 1.1, 1.2, 0.5]
    for t in range(4):
        grads(model, t)
        opt.step()
        sched.step(losses[t])
    save(ckpt_path, model, opt, extra={"scheduler": sched.state_dict(), "epoch": 4})
    for t in range(4, 8):
        grads(model, t)
        opt.step()
        sched.step(losses[t])
    resumed = GRU(2, 3, dtype=np.float64, seed=99)
    opt2 = optim.RMSprop(resumed.parameters())
    sched2 = optim.ReduceLROnPlateau(opt2)
    ckpt = load(ckpt_path, resumed, opt2)
    sched2.load_state_dict(ckpt.extra["scheduler"])
    for t in range(ckpt.extra["epoch"], 8):
        grads(resumed, t)
        opt2.step()
        sched2.step(losses[t])
    assert sched2.get_last_lr() == sched.get_last_lr() and sched.get_last_lr()[0] < 0.01
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert same_bits(p.data, q.data)


def test_load_without_model_and_build(ckpt_path):
    model = RNN(4, 3, num_layers=2, nonlinearity="relu", dtype=np.float64, seed=5)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trained(model, opt)
    save(ckpt_path, model, opt, config={"note": "run 12"})
    ckpt = load(ckpt_path)
    assert list(ckpt.state_dict) == list(model.state_dict())
    assert ckpt.config["nonlinearity"] == "relu" and ckpt.config["note"] == "run 12"
    assert ckpt.optimizer_state["param_groups"][0]["momentum"] == 0.9
    assert set(ckpt.optimizer_state["state"][0]) == {"momentum_buffer"}
    assert ckpt.extra == {}
    ckpt.config.pop("note")
    rebuilt = ckpt.build()
    assert isinstance(rebuilt, RNN) and rebuilt.config() == model.config()
    for p, q in zip(model.parameters(), rebuilt.parameters()):
        assert same_bits(p.data, q.data)


def test_model_without_config_uses_the_callers(ckpt_path):
    toy = Toy({"w": (2, 3), "b": (3,)})
    toy.w.data[...] = 1.5
    save(ckpt_path, toy, config={"shapes": {"w": [2, 3], "b": [3]}})
    ckpt = load(ckpt_path, Toy({"w": (2, 3), "b": (3,)}))
    assert ckpt.kind == "Toy" and ckpt.config == {"shapes": {"w": [2, 3], "b": [3]}}
    with pytest.raises(CheckpointError, match="not a model class in rnncore.nn"):
        ckpt.build()


def test_weights_are_converted_to_the_models_dtype(ckpt_path):
    model = LSTM(2, 3, dtype=np.float64, seed=0)
    save(ckpt_path, model)
    target = LSTM(2, 3, dtype=np.float32, seed=1)
    load(ckpt_path, target)
    assert target.weight_ih_l0.data.dtype == np.float32
    assert np.array_equal(target.weight_ih_l0.data, model.weight_ih_l0.data.astype(np.float32))


def test_plain_safetensors_file_loads_as_weights(ckpt_path):
    import safetensors.numpy

    model = GRU(3, 2, seed=0)
    safetensors.numpy.save_file({k: v for k, v in model.state_dict().items()}, ckpt_path)
    target = GRU(3, 2, seed=1)
    ckpt = load(ckpt_path, target)
    assert ckpt.kind is None and ckpt.optimizer_state is None
    assert np.array_equal(target.weight_hh_l0.data, model.weight_hh_l0.data)


def test_the_file_is_standard_safetensors(ckpt_path):
    from safetensors import safe_open

    model = LSTM(2, 3, seed=0)
    save(ckpt_path, model, optim.Adam(model.parameters()))
    with safe_open(ckpt_path, framework="np") as f:
        meta = f.metadata()
        assert meta["format"] == "rnncore.checkpoint" and meta["kind"] == "LSTM"
        assert "model.weight_ih_l0" in f.keys()
        assert np.array_equal(f.get_tensor("model.bias_hh_l0"), model.bias_hh_l0.data)


# -- atomic save -------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_previous_checkpoint(ckpt_path, monkeypatch, failure):
    model = LSTM(3, 4, dtype=np.float64, seed=0)
    opt = optim.Adam(model.parameters())
    save(ckpt_path, model, opt, extra={"version": 1})
    old = {k: v.copy() for k, v in model.state_dict().items()}
    trained(model, opt)

    def half_then_fail(f, data):
        f.write(memoryview(data)[: len(data) // 2])
        raise failure

    monkeypatch.setattr(rio, "_write_bytes", half_then_fail)
    with pytest.raises(type(failure)):
        save(ckpt_path, model, opt, extra={"version": 2})
    monkeypatch.undo()
    assert os.listdir(os.path.dirname(ckpt_path)) == ["model.safetensors"]  # no temporary file left
    target = LSTM(3, 4, dtype=np.float64, seed=1)
    ckpt = load(ckpt_path, target, optim.Adam(target.parameters()))
    assert ckpt.extra == {"version": 1}
    for name, value in target.state_dict().items():
        assert same_bits(value, old[name])


def test_failed_fsync_or_rename_leaves_no_temporary(ckpt_path, monkeypatch):
    model = GRU(2, 2, seed=0)
    save(ckpt_path, model)
    before = open(ckpt_path, "rb").read()

    def broken(*args):
        raise OSError("rename failed")

    monkeypatch.setattr(rio.os, "replace", broken)
    with pytest.raises(OSError, match="rename failed"):
        save(ckpt_path, GRU(2, 2, seed=1))
    monkeypatch.undo()
    assert os.listdir(os.path.dirname(ckpt_path)) == ["model.safetensors"]
    assert open(ckpt_path, "rb").read() == before


def test_save_refuses_what_it_cannot_store(ckpt_path):
    model = GRU(2, 2)
    with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
        save(ckpt_path, model, extra={"array": np.zeros(3)})
    with pytest.raises(TypeError, match="rnncore Module"):
        save(ckpt_path, {"w": np.zeros(2)})
    assert not os.path.exists(ckpt_path)


# -- bad files ---------------------------------------------------------------------------------------

@pytest.fixture
def good_bytes(ckpt_path):
    model = LSTM(3, 4, seed=0)
    save(ckpt_path, model, optim.SGD(model.parameters(), momentum=0.9))
    return open(ckpt_path, "rb").read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("cut", [0, 5, 8, 40, "header", "data", -1])
def test_truncated_files_raise_clearly(ckpt_path, good_bytes, cut):
    n = struct.unpack("<Q", good_bytes[:8])[0]
    end = {"header": 8 + n // 2, "data": 8 + n + (len(good_bytes) - 8 - n) // 2}.get(cut, cut)
    _write(ckpt_path, good_bytes[:end])
    with pytest.raises(CheckpointError, match="truncated|corrupt|not a checkpoint"):
        load(ckpt_path, LSTM(3, 4))


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b[:-9] + bytes([b[-9] ^ 0x40]) + b[-8:], "fails its checksum"),
    (lambda b: b"\xff" * 8 + b[8:], "corrupt or truncated"),
    (lambda b: b[:8] + b"not json" + b[16:], "unreadable header"),
    (lambda b: b"hello, world! this is not a checkpoint at all", "corrupt|truncated"),
    (lambda b: b.replace(b'"format_version":"1"', b'"format_version":"9"'), "format version"),
])
def test_corrupt_files_raise_clearly(ckpt_path, good_bytes, mutate, match):
    _write(ckpt_path, mutate(good_bytes))
    model = LSTM(3, 4, seed=5)
    before = model.weight_ih_l0.data.copy()
    with pytest.raises(CheckpointError, match=match):
        load(ckpt_path, model)
    assert np.array_equal(model.weight_ih_l0.data, before)


def test_every_single_byte_flip_is_caught(ckpt_path):
    """Damage anywhere (header, metadata, tensor data) raises CheckpointError; never a crash or a
    silently different checkpoint."""
    model = Toy({"w": (2, 3), "b": (3,)})
    model.w.data[...] = np.arange(6).reshape(2, 3)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trained(model, opt, steps=1)
    save(ckpt_path, model, opt, extra={"epoch": 7})
    good = open(ckpt_path, "rb").read()
    reference = load(ckpt_path)
    for i in range(len(good)):
        damaged = bytearray(good)
        damaged[i] ^= 0x04
        _write(ckpt_path, bytes(damaged))
        try:
            ckpt = load(ckpt_path)
        except CheckpointError:
            continue
        # the only harmless flips are those that leave the content the same (e.g. JSON whitespace)
        assert ckpt.extra == reference.extra and ckpt.config == reference.config, i
        assert all(same_bits(ckpt.state_dict[k], reference.state_dict[k]) for k in reference.state_dict), i


def test_malformed_metadata_is_refused(ckpt_path):
    import safetensors.numpy

    model = Toy({"w": (2,)})
    save(ckpt_path, model, optim.Adam(model.parameters()))
    ckpt = load(ckpt_path)
    tensors = {"model.w": np.zeros(2)}
    for key, value in [("checksums", "[1, 2]"), ("model_tensors", '{"a": 1}'), ("config", "[]"),
                       ("optimizer", '{"type": "Adam", "state": [], "param_groups": 3}'), ("extra", "{not json")]:
        meta = dict(ckpt.metadata, **{key: value})
        meta["checksums"] = meta["checksums"] if key == "checksums" else json.dumps({"model.w": rio._crc(tensors["model.w"])})
        meta.pop("metadata_crc32")
        meta["metadata_crc32"] = rio._metadata_crc(meta)
        safetensors.numpy.save_file(tensors, ckpt_path, metadata=meta)
        with pytest.raises(CheckpointError, match="corrupt"):
            load(ckpt_path, Toy({"w": (2,)}), optim.Adam(Toy({"w": (2,)}).parameters()))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nope.safetensors"))


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# -- mismatched models and optimizers -----------------------------------------------------------------

def test_missing_extra_and_misshaped_tensors_are_named(ckpt_path):
    save(ckpt_path, Toy({"a": (2, 3), "b": (3,), "c": (4,)}))
    with pytest.raises(CheckpointError) as info:
        load(ckpt_path, Toy({"a": (2, 3), "b": (5,), "d": (1,)}))
    msg = str(info.value)
    assert "missing from the checkpoint: d" in msg
    assert "unexpected in the checkpoint: c" in msg
    assert "mis-shaped: b (checkpoint (3,), model (5,))" in msg


@pytest.mark.parametrize("kind", ["missing", "extra", "shape"])
def test_each_tensor_mismatch_alone(ckpt_path, kind):
    save(ckpt_path, Toy({"a": (2,), "b": (3,)}))
    other = {"missing": {"a": (2,), "b": (3,), "z": (1,)}, "extra": {"a": (2,)}, "shape": {"a": (2,), "b": (4,)}}
    words = {"missing": "missing from the checkpoint: z", "extra": "unexpected in the checkpoint: b",
             "shape": "mis-shaped: b"}
    model = Toy(other[kind])
    with pytest.raises(CheckpointError, match=words[kind]):
        load(ckpt_path, model)
    assert all((p.data == 0).all() for p in model.parameters())


def test_wrong_kind_and_config(ckpt_path):
    save(ckpt_path, LSTM(3, 4, seed=0))
    with pytest.raises(CheckpointError, match="holds a LSTM model, got a GRU"):
        load(ckpt_path, GRU(3, 4))
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 4, model 5"):
        load(ckpt_path, LSTM(3, 5))
    with pytest.raises(CheckpointError, match="bidirectional"):
        load(ckpt_path, LSTM(3, 4, bidirectional=True))


def test_optimizer_mismatches(ckpt_path):
    model = LSTM(2, 3, seed=0)
    save(ckpt_path, model)
    target = LSTM(2, 3, seed=1)
    before = target.weight_ih_l0.data.copy()
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load(ckpt_path, target, optim.SGD(target.parameters()))
    opt = optim.Adam(model.parameters())
    trained(model, opt)
    save(ckpt_path, model, opt)
    with pytest.raises(CheckpointError, match="holds Adam state, got a SGD optimizer"):
        load(ckpt_path, target, optim.SGD(target.parameters()))
    with pytest.raises(CheckpointError, match="does not fit"):
        load(ckpt_path, target, optim.Adam(target.parameters()[:2]))
    assert np.array_equal(target.weight_ih_l0.data, before)  # nothing was loaded


# -- PyTorch interop ----------------------------------------------------------------------------------

@pytest.fixture
def torch1():
    """torch on one thread: torch's OpenMP runtime and rnncore's spin against each other when
    both run threads in one process (each call then waits out the other's spinning threads)."""
    torch = pytest.importorskip("torch")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(saved)


TORCH_CASES = [(kind, layers, bidir) for kind in ("RNN", "LSTM", "GRU") for layers in (1, 2, 3)
               for bidir in (False, True)]


@pytest.mark.parametrize("kind,layers,bidirectional", TORCH_CASES,
                         ids=[f"{k}-L{n}-{'bi' if b else 'uni'}" for k, n, b in TORCH_CASES])
def test_torch_state_dict_loads_and_matches(torch1, kind, layers, bidirectional):
    torch = torch1
    torch.manual_seed(layers * 10 + bidirectional)
    extra = {"nonlinearity": "relu"} if kind == "RNN" and layers == 2 else {}
    theirs = getattr(torch.nn, kind)(4, 5, num_layers=layers, bidirectional=bidirectional, **extra).double()
    ours = getattr(rnncore.nn, kind)(4, 5, num_layers=layers, bidirectional=bidirectional, dtype=np.float64,
                                     threads=1, **extra)
    ours.load_state_dict(from_torch(theirs.state_dict()))
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    out, _ = ours(x)
    with torch.no_grad():
        tout, _ = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(out, tout.numpy(), rtol=1e-10, atol=1e-12)
    # and back: our weights into a fresh torch layer
    fresh = getattr(torch.nn, kind)(4, 5, num_layers=layers, bidirectional=bidirectional, **extra).double()
    fresh.load_state_dict(to_torch(ours.state_dict()))
    with torch.no_grad():
        np.testing.assert_allclose(fresh(torch.from_numpy(x))[0].numpy(), out, rtol=1e-10, atol=1e-12)


def test_from_torch_float32_module_and_prefix(torch1):
    torch = torch1

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 2)

    net = Net()
    sd = from_torch(net, prefix="rnn.")
    assert list(sd) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
    ours = rnncore.nn.LSTM(3, 4, batch_first=True, threads=1)
    ours.load_state_dict(sd)
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    with torch.no_grad():
        want = net.rnn(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(ours(x)[0], want, rtol=1e-5, atol=1e-6)
    sd["weight_ih_l0"][...] = 0  # a copy: torch's weights are untouched
    assert net.rnn.weight_ih_l0.abs().sum() > 0
    bf = from_torch({"w": torch.ones(2, dtype=torch.bfloat16)})
    assert bf["w"].dtype == np.float32


def test_from_torch_without_torch_accepts_arrays():
    sd = from_torch({"a": np.arange(3.0), "b": [[1, 2]]})
    assert np.array_equal(sd["a"], np.arange(3.0)) and sd["b"].shape == (1, 2)
    with pytest.raises(TypeError, match="state dict"):
        from_torch(42)


def _models_for_config_round_trip():
    from rnncore.nn import (ConditionedGenerator, Dropout, Embedding, LanguageModel, LayerNorm, Linear,
                            SequenceClassifier, SequenceTagger)
    return [
        LanguageModel(11, 6, 6, num_layers=2, cell="gru", tie_weights=True, padding_idx=0, seed=0),
        ConditionedGenerator(11, 5, 7, 3, cell="lstm", condition="both", seed=0),
        SequenceClassifier(11, 5, 7, 3, bidirectional=True, pooling="max", seed=0),
        SequenceClassifier(input_size=4, hidden_size=7, num_classes=3, cell="rnn_relu", seed=0),
        SequenceTagger(11, 5, 7, 4, num_layers=2, seed=0, dtype=np.float64),
        Embedding(9, 4, padding_idx=2, seed=0),
        Linear(4, 3, bias=False, seed=0),
        LayerNorm((3, 4), eps=1e-3),
        Dropout(0.3),
    ]


@pytest.mark.parametrize("model", _models_for_config_round_trip(), ids=lambda m: type(m).__name__)
def test_every_model_rebuilds_from_its_checkpoint(tmp_path, model):
    path = tmp_path / "m.safetensors"
    rnncore.save(path, model)
    ckpt = rnncore.load(path)
    rebuilt = ckpt.build()
    assert type(rebuilt) is type(model)
    assert rebuilt.config() == model.config()
    for (name, a), (name_b, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert name == name_b
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
