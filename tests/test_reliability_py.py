"""Reliability of the Python layer (issue 11): inputs the caller changes after forward, the
default dtype, all-or-nothing load_state_dict, integer ignore_index, one call at a time on
every layer and model, one-line messages naming the argument (CLI, seeds, optimizer pairs,
unsupported checkpoint dtypes, empty lists), a checkpoint whose config lies about its sizes,
and the temporary files and bytes of a save.

Each test failed before its fix. Command-line cases and anything measuring memory run in a
subprocess.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import rnncore
from rnncore import _core, nn, optim, sampling
from rnncore import io as rio
from rnncore._checks import NoForwardError
from rnncore.io import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY = "is already running in another thread; use one model per thread or a lock"


def run_python(code, *args, env=None, timeout=120):
    """python -c code args... with this checkout first on the path: (returncode, stdout, stderr)."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    for name in ("RNNCORE_DEBUG", "RNNCORE_MAX_STEPS"):
        full_env.pop(name, None)
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r})\n" + textwrap.dedent(code)]
                       + [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


CLI = "from rnncore.cli import main; sys.exit(main(sys.argv[1:]))"


def assert_one_line_error(rc, err, *fragments):
    assert rc not in (0, None), err
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnncore"), err[-3000:]
    for f in fragments:
        assert f in lines[0], err


# -- 1. the saved input is the layer's own, whatever the caller passed -------------------------------

def _torch():
    return pytest.importorskip("torch")


def _sources(kind, array):
    """(what the layer is given, a function that changes it in place) for an array's values."""
    if kind == "ndarray":
        a = array.copy()
        return a, lambda: a.__imul__(5)
    if kind == "memoryview":
        buf = bytearray(array.tobytes())
        view = memoryview(buf).cast(array.dtype.char, array.shape)

        def change():
            flat = np.frombuffer(buf, array.dtype)
            flat[...] = flat * 5
        return view, change
    if kind == "torch":
        torch = _torch()
        t = torch.from_numpy(array.copy())
        return t, lambda: t.mul_(5)
    if kind == "__array__":
        class Holder:  # an object whose __array__ hands out its own storage
            def __init__(self, a):
                self.a = a

            def __array__(self, dtype=None, copy=None):
                return self.a
        h = Holder(array.copy())
        return h, lambda: h.a.__imul__(5)
    raise AssertionError(kind)


SOURCES = ["ndarray", "memoryview", "torch", "__array__"]


def test_linear_gradient_uses_the_values_at_forward_torch_tensor():
    torch = _torch()
    layer = nn.Linear(1, 1, bias=False)
    x = torch.tensor([[5.0]])
    layer(x)
    x.mul_(5)  # the caller reuses its tensor
    layer.backward(np.ones((1, 1), np.float32))
    assert layer.weight.grad[0, 0] == 5.0  # not 25.0


def _layer_pairs():
    """(name, factory, input array, gradient of the output) for every layer that saves its input."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    ids = rng.integers(0, 7, (5, 2))
    return [
        ("Linear", lambda: nn.Linear(3, 4, seed=1), x, lambda y: np.ones_like(y)),
        ("LayerNorm", lambda: nn.LayerNorm(3), x, lambda y: np.arange(y.size, dtype=np.float32).reshape(y.shape)),
        ("LSTM", lambda: nn.LSTM(3, 4, seed=1), x, lambda y: np.ones_like(y[0])),
        ("GRU batch_first", lambda: nn.GRU(3, 4, batch_first=True, seed=1), x, lambda y: np.ones_like(y[0])),
        ("LSTMCell", lambda: nn.LSTMCell(3, 4, seed=1), x[0], lambda y: np.ones_like(y[0])),
        ("Embedding", lambda: nn.Embedding(7, 3, seed=1), ids, lambda y: np.ones_like(y)),
    ]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", _layer_pairs(), ids=lambda c: c[0])
def test_changing_the_input_after_forward_does_not_change_the_gradients(case, source):
    name, make, array, grad_of = case
    reference, layer = make(), make()
    ref_out = reference(array.copy())
    reference.backward(grad_of(ref_out))
    given, change = _sources(source, array)
    out = layer(given)
    change()
    np.testing.assert_array_equal(np.asarray(out[0] if isinstance(out, tuple) else out),
                                  np.asarray(ref_out[0] if isinstance(ref_out, tuple) else ref_out))
    layer.backward(grad_of(out))
    for (pname, p), q in zip(layer.named_parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=f"{name} {pname} ({source} input)")


def test_no_copy_when_the_conversion_already_made_one():
    from rnncore._checks import as_real_array, private_copy

    torch = _torch()
    for source in (np.ones((4, 3)), torch.ones(4, 3, dtype=torch.float64), [[1.0, 2.0]]):
        converted = as_real_array(source, "x", "f", np.float32)  # float64 -> float32: already a new array
        assert private_copy(converted, source) is converted
    for source in (np.ones((4, 3), np.float32), torch.ones(4, 3), memoryview(np.ones(3, np.float32))):
        converted = as_real_array(source, "x", "f", np.float32)  # a view of the caller's memory
        mine = private_copy(converted, source)
        assert mine is not converted and not np.may_share_memory(mine, converted)


# -- 2. dtype=None is float32 ---------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: nn.Linear(2, 3, dtype=None), lambda: nn.Embedding(4, 2, dtype=None), lambda: nn.LayerNorm(3, dtype=None),
    lambda: nn.LSTM(2, 3, dtype=None), lambda: nn.GRUCell(2, 3, dtype=None),
    lambda: nn.LanguageModel(5, 4, 3, dtype=None), lambda: nn.SequenceClassifier(5, 4, 3, 2, dtype=None),
    lambda: nn.SequenceTagger(input_size=3, hidden_size=4, num_classes=2, dtype=None),
    lambda: nn.ConditionedGenerator(5, 4, 3, 2, dtype=None),
], ids=["Linear", "Embedding", "LayerNorm", "LSTM", "GRUCell", "LanguageModel", "SequenceClassifier",
        "SequenceTagger", "ConditionedGenerator"])
def test_dtype_none_means_float32(make):
    m = make()
    assert {p.dtype for p in m.parameters()} == {np.dtype(np.float32)}
    assert m.dtype == np.float32


def test_to_none_means_float32():
    m = nn.LSTM(2, 3, dtype=np.float64).to(None)
    assert {p.dtype for p in m.parameters()} == {np.dtype(np.float32)}


# -- 3. load_state_dict: all or nothing, real numbers only, clear messages ------------------------------

def test_load_state_dict_changes_nothing_when_a_later_entry_is_bad():
    m = nn.LSTM(3, 4, seed=0)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    sd = {k: v + 1 for k, v in m.state_dict().items()}
    sd["bias_hh_l0"] = np.array(["a"] * 16)  # the last entry cannot be converted
    with pytest.raises(TypeError, match="bias_hh_l0"):
        m.load_state_dict(sd)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("bad, what", [(np.array([None] * 16), "object"), (np.ones(16, np.complex128), "complex")])
def test_object_and_complex_entries_are_refused_by_name(bad, what):
    import warnings

    m = nn.LSTM(3, 4, seed=0)
    before = m.bias_ih_l0.data.copy()
    sd = m.state_dict()
    sd["bias_ih_l0"] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not merely a ComplexWarning
        with pytest.raises(TypeError, match=rf"load_state_dict: bias_ih_l0 must be a real numeric array.*{what}"):
            m.load_state_dict(sd)
    np.testing.assert_array_equal(m.bias_ih_l0.data, before)


def test_load_state_dict_of_a_list_says_what_it_wants():
    message = r"^load_state_dict: state_dict must be a mapping of names to arrays, got list$"
    with pytest.raises(TypeError, match=message):
        nn.Linear(2, 2).load_state_dict([1, 2])


@pytest.mark.parametrize("make, attr, name", [(lambda: nn.LSTM(3, 4), "weight_hh_l0", "weight_hh_l0"),
                                              (lambda: nn.LSTMCell(3, 4), "weight_hh", "weight_hh")])
def test_a_wrongly_shaped_weight_hh_is_reported_with_its_real_shape(make, attr, name):
    m = make()
    getattr(m, attr).data = np.zeros((16, 5), np.float32)  # H = 4: must be (16, 4)
    x = np.zeros((2, 1, 3) if isinstance(m, nn.LSTM) else (1, 3), np.float32)
    with pytest.raises(ValueError, match=rf"{name} must have shape \(G\*H, H\) = \(16, 4\), got \(16, 5\)"):
        m(x)


# -- 4. ignore_index must be an integer ------------------------------------------------------------

def test_non_integer_ignore_index_is_a_type_error():
    logits, targets = np.zeros((3, 4)), np.array([2, 2, 1])
    with pytest.raises(TypeError, match="ignore_index"):
        nn.cross_entropy(logits, targets, ignore_index=2.7)
    with pytest.raises(TypeError, match="ignore_index"):
        nn.CrossEntropyLoss(ignore_index=2.7)
    lm = nn.LanguageModel(5, 4, 3)
    with pytest.raises(TypeError, match="ignore_index"):
        lm.loss(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64), ignore_index=np.float64(2.0))


# -- 5. one call at a time on every layer and model --------------------------------------------------

class _Gate:
    """Wraps a callable so that its first call blocks until released (the others pass through)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0
        self.inside, self.go = threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            self.inside.set()
            assert self.go.wait(30)
        return self.fn(*args, **kwargs)


def _tokens(T=4, B=2, V=6):
    return np.random.default_rng(0).integers(0, V, (T, B))


def _guard_cases():
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    feats = np.ones((2, 3), np.float32)
    return [
        ("Linear", lambda: nn.Linear(3, 4), "linear_forward", lambda m: m(x), lambda m: m(x)),
        ("Embedding", lambda: nn.Embedding(6, 3), "embedding_forward", lambda m: m(_tokens()), lambda m: m(_tokens())),
        ("LayerNorm", lambda: nn.LayerNorm(3), "layernorm_forward", lambda m: m(x), lambda m: m(x)),
        ("CrossEntropyLoss", lambda: nn.CrossEntropyLoss(), "cross_entropy",
         lambda m: m(x, np.zeros((4, 2), np.int64)), lambda m: m.backward()),
        ("LanguageModel", lambda: nn.LanguageModel(6, 3, 4), "linear_forward",
         lambda m: m(_tokens()), lambda m: m.backward(np.ones((4, 2, 6), np.float32))),
        ("SequenceClassifier", lambda: nn.SequenceClassifier(input_size=3, hidden_size=4, num_classes=2),
         "linear_forward", lambda m: m(x), lambda m: m.backward(np.ones((2, 2), np.float32))),
        ("SequenceTagger", lambda: nn.SequenceTagger(6, 3, 4, 2), "linear_forward",
         lambda m: m.loss(_tokens(), np.zeros((4, 2), np.int64)), lambda m: m(_tokens())),
        ("ConditionedGenerator", lambda: nn.ConditionedGenerator(6, 3, 4, 3), "linear_forward",
         lambda m: m(feats, _tokens()), lambda m: m.backward(np.ones((4, 2, 6), np.float32))),
    ]


@pytest.mark.parametrize("case", _guard_cases(), ids=lambda c: c[0])
def test_a_call_overlapping_another_on_the_same_object_is_refused(case, monkeypatch):
    name, make, kernel, first, second = case
    m = make()
    gate = _Gate(getattr(_core, kernel))
    monkeypatch.setattr(_core, kernel, gate)
    errors = []

    def run_first():
        try:
            first(m)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=run_first)
    t.start()
    try:
        assert gate.inside.wait(30)
        with pytest.raises(RuntimeError, match=rf"^{name}\.\w+: this {name} {re.escape(BUSY)}$"):
            second(m)
    finally:
        gate.go.set()
        t.join()
    assert not errors, errors
    monkeypatch.undo()
    first(m)  # the object is usable again: the guard was released


def test_dropout_refuses_an_overlapping_call():
    d = nn.Dropout(0.5, seed=0)
    gate = _Gate(d.make_mask)
    d.make_mask = gate
    t = threading.Thread(target=lambda: d(np.ones((3, 3), np.float32)))
    t.start()
    try:
        assert gate.inside.wait(30)
        with pytest.raises(RuntimeError, match=rf"Dropout.backward: this Dropout {re.escape(BUSY)}"):
            d.backward(np.ones((3, 3), np.float32))
    finally:
        gate.go.set()
        t.join()
    d.backward(np.ones((3, 3), np.float32))


def test_a_model_calling_its_own_methods_is_not_refused():
    lm = nn.LanguageModel(6, 3, 4, seed=0)
    loss, _ = lm.loss(_tokens(), _tokens())  # loss() runs forward() on the same model
    lm.backward()
    loss2, _ = lm.loss(_tokens(), _tokens())
    assert loss == loss2 and "_rnncore_running" not in lm.__dict__


def test_two_threads_hammering_one_model_get_exact_results_or_the_busy_error():
    model = nn.SequenceClassifier(input_size=8, hidden_size=48, num_classes=3, num_layers=2, pooling="mean", seed=0,
                                  threads=1)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((30, 4, 8)).astype(np.float32) for _ in range(2)]
    gs = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2)]
    logits = [model(x) for x in xs]
    # the gradient of x for every (forward input, backward gradient) pair a thread may see: a
    # backward differentiates the model's last forward, whichever thread ran it
    grads = {}
    for i, x in enumerate(xs):
        for j, g in enumerate(gs):
            model(x)
            grads[i, j] = model.backward(g)
    wrong, busy, other, done = [], [], [], [0, 0]
    barrier = threading.Barrier(2)

    def hammer(j):
        pause = np.random.default_rng(j).random(150) * 2e-4  # jitter, so that the calls interleave
        barrier.wait()
        for k in range(150):
            time.sleep(pause[k])
            try:
                out = model(xs[j])
                if not np.array_equal(out, logits[j]):
                    wrong.append("forward")
                gx = model.backward(gs[j])
                if not any(np.array_equal(gx, grads[i, j]) for i in range(2)):
                    wrong.append("backward")
                done[j] += 1
            except NoForwardError as e:  # legitimate only from the model: the other thread's backward took its forward
                (busy if str(e).startswith("SequenceClassifier.backward: no forward") else other).append(str(e))
            except RuntimeError as e:
                (busy if BUSY in str(e) else other).append(str(e))

    threads = [threading.Thread(target=hammer, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # before the model had its own guard: "LSTM.backward: no forward to differentiate" and
    # "Dropout.backward: ..." (one call consumed another's saved state halfway through)
    assert not other, other[:3]
    assert not wrong, f"{len(wrong)} wrong results ({wrong[:5]}), {sum(done)} exact, {len(busy)} refused"
    assert sum(done) >= 10


# -- 6. one-line messages that name the argument ------------------------------------------------------

@pytest.mark.parametrize("make, fn", [
    (lambda: nn.Linear(2, 2, seed=-1), "Linear"), (lambda: nn.Embedding(3, 2, seed=-1), "Embedding"),
    (lambda: nn.Dropout(0.1, seed=-1), "Dropout"), (lambda: nn.LSTM(2, 2, seed=-1), "LSTM"),
    (lambda: nn.GRUCell(2, 2, seed=-1), "GRUCell"), (lambda: nn.LanguageModel(5, 4, 3, seed=-1), "LanguageModel"),
    (lambda: nn.SequenceClassifier(5, 4, 3, 2, seed=-1), "SequenceClassifier"),
    (lambda: nn.SequenceTagger(5, 4, 3, 2, seed=-1), "SequenceTagger"),
    (lambda: nn.ConditionedGenerator(5, 4, 3, 2, seed=-1), "ConditionedGenerator"),
    (lambda: sampling.generate(nn.LanguageModel(5, 4, 3), [1], 2, seed=-1), "generate"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_negative_seed_is_named(make, fn):
    with pytest.raises(ValueError, match=rf"^{fn}: seed must be .*non-negative.*, got -1$|^{fn}: seed must be >= 0"):
        make()


def test_trainer_sample_seed_is_named():
    from rnncore.data import CharTokenizer

    tok = CharTokenizer.from_text("abcde")
    lm = nn.LanguageModel(tok.vocab_size, 4, 3)
    tr = rnncore.Trainer(lm, optim.Adam(lm.parameters()), tokenizer=tok)
    with pytest.raises(ValueError, match="seed"):
        tr.sample(5, seed=-1)


@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
@pytest.mark.parametrize("betas, got", [(0.9, "float"), ((0.9, 0.99, 0.999), "a tuple of length 3"), ("ab", "str")])
def test_adam_betas_must_be_a_pair(cls, betas, got):
    name = cls.__name__
    with pytest.raises(TypeError, match=rf"^{name}: betas must be a pair of floats \(beta1, beta2\), got {got}$"):
        cls(nn.Linear(2, 2).parameters(), betas=betas)


def test_adam_betas_in_a_param_group_must_be_a_pair():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Adam: betas must be a pair of floats \(beta1, beta2\), got float"):
        optim.Adam([{"params": lin.parameters(), "betas": 0.5}])


def test_multisteplr_milestones_must_be_a_list():
    opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(TypeError, match="MultiStepLR: milestones must be a list of epoch numbers"):
        optim.MultiStepLR(opt, milestones=3)


def _write_safetensors(path, entries, data):
    header = json.dumps(entries).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize("dtype", ["BF16", "F8_E4M3"])
def test_an_unsupported_dtype_is_named_not_called_corrupt(tmp_path, dtype):
    path = tmp_path / "w.safetensors"
    end = 4 + 2 * (2 if dtype == "BF16" else 1)  # two elements
    _write_safetensors(path, {"ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "weight": {"dtype": dtype, "shape": [2], "data_offsets": [4, end]}}, b"\0" * end)
    with pytest.raises(CheckpointError) as info:
        rnncore.load(path)
    msg = str(info.value)
    assert f"'weight' has dtype {dtype}" in msg and "rnncore does not support" in msg and "F32" in msg
    assert "corrupt" not in msg and "truncated" not in msg


def test_empty_lengths_is_an_empty_list_of_ints():
    lstm = nn.LSTM(2, 3)
    out, _ = lstm(np.zeros((4, 0, 2), np.float32), lengths=[])
    assert out.shape == (4, 0, 3)
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(2,\), got \(0,\)"):
        lstm(np.zeros((4, 2, 2), np.float32), lengths=[])
    clf = nn.SequenceClassifier(input_size=2, hidden_size=3, num_classes=2)
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(2,\), got \(0,\)"):
        clf(np.zeros((4, 2, 2), np.float32), lengths=[])


def test_empty_stop_tokens_means_no_stop_tokens():
    lm = nn.LanguageModel(7, 4, 5, seed=0)
    np.testing.assert_array_equal(sampling.generate(lm, [1, 2], 6, seed=3, stop_tokens=[]),
                                  sampling.generate(lm, [1, 2], 6, seed=3))
    assert sampling.beam_search(lm, [1], 2, 4, stop_tokens=[])[0][1] == sampling.beam_search(lm, [1], 2, 4)[0][1]
    assert list(sampling.stream(lm, [1], 3, seed=1, stop_tokens=())) == list(sampling.stream(lm, [1], 3, seed=1))


@pytest.mark.parametrize("call", [lambda lm: sampling.generate(lm, [], 3), lambda lm: sampling.stream(lm, [], 3),
                                  lambda lm: sampling.beam_search(lm, [], 2, 3)])
def test_empty_prime_says_it_needs_a_token(call):
    with pytest.raises(ValueError, match="prime must hold at least one token"):
        call(nn.LanguageModel(7, 4, 5))


# -- the command line ---------------------------------------------------------------------------------

TEXT = "to be, or not to be, that is the question:\nwhether 'tis nobler in the mind to suffer\n" * 10


@pytest.fixture
def text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(TEXT)
    return p


def test_cli_refuses_a_hidden_size_that_cannot_fit_before_allocating(text, tmp_path):
    t0 = time.perf_counter()
    rc, _, err = run_python(CLI, "train", text, "--hidden", "100000", "--max-steps", "1", "--out", tmp_path / "r")
    assert_one_line_error(rc, err, "--hidden 100000", "parameters", "GB", "memory")
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("n", ["100000", "40000", str(2**31 - 1), str(2**63)])
def test_cli_threads_past_the_limit_is_one_line_not_a_crash(text, tmp_path, n):
    """`rnncore train --threads 100000` used to crash the process (SIGSEGV in libgomp)."""
    rc, _, err = run_python(CLI, "train", text, "--threads", n, "--hidden", "8", "--layers", "1",
                            "--max-steps", "1", "--out", tmp_path / "r")
    assert rc > 0, (rc, err[-2000:])  # an exit status, not a signal
    assert_one_line_error(rc, err, "threads", n)


def test_cli_init_too_large_is_a_usage_error(text, tmp_path):
    rc, _, err = run_python(CLI, "train", text, "--init", "1e308", "--hidden", "8", "--layers", "1",
                            "--max-steps", "1", "--out", tmp_path / "r")
    assert rc == 2 and "Traceback" not in err
    assert "argument --init: must be at most" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("extra", [None, {"trainer": {}, "tokenizer": {"type": "char"}},
                                   {"trainer": 3, "tokenizer": {"type": "char"}}])
def test_cli_resume_from_a_plain_save_file(text, tmp_path, extra):
    path = tmp_path / "plain.safetensors"
    rnncore.save(path, nn.LanguageModel(5, 4, 3), extra=extra)
    rc, _, err = run_python(CLI, "train", text, "--resume", path, "--max-steps", "1", "--out", tmp_path / "r")
    assert_one_line_error(rc, err, "not a checkpoint written by `rnncore train`")


def _nested_header_file(path, depth=100000):
    head = b"[" * depth + b"]" * depth
    path.write_bytes(struct.pack("<Q", len(head)) + head)


@pytest.mark.parametrize("command", ["sample", "train --resume", "eval"])
def test_cli_a_deeply_nested_header_is_one_line(tmp_path, text, command):
    path = tmp_path / "nest.safetensors"
    _nested_header_file(path)
    args = command.split() + [path]
    if "train" in command:
        args += [text, "--max-steps", "1", "--out", tmp_path / "r"]
    rc, _, err = run_python(CLI, *args)
    assert_one_line_error(rc, err, "nests too deeply")


def test_nested_header_and_nested_metadata_are_checkpoint_errors(tmp_path):
    path = tmp_path / "nest.safetensors"
    _nested_header_file(path)
    with pytest.raises(CheckpointError, match="nests too deeply"):
        rnncore.load(path)
    with pytest.raises(CheckpointError, match="nests too deeply"):
        rio._loads("[" * 100000 + "]" * 100000, "config", "x")


def test_cli_debug_still_shows_the_traceback(tmp_path):
    path = tmp_path / "nest.safetensors"
    _nested_header_file(path)
    rc, _, err = run_python(CLI, "sample", path, env={"RNNCORE_DEBUG": "1"})
    assert rc != 0 and "Traceback" in err and "CheckpointError" in err


# -- 7. a checkpoint whose config claims other sizes than its tensors ----------------------------------

def _lying_checkpoint(path, hidden_size):
    import safetensors.numpy

    rnncore.save(path, nn.LanguageModel(5, 4, 4, num_layers=2, seed=0))
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    config = json.loads(meta["config"])
    config["hidden_size"] = hidden_size
    meta["config"] = json.dumps(config)
    meta["metadata_crc32"] = rio._metadata_crc(meta)
    tensors = safetensors.numpy.load(data)
    with open(path, "wb") as f:
        f.write(safetensors.numpy.save(tensors, metadata=meta))


def test_a_config_that_lies_about_sizes_fails_fast_without_allocating(tmp_path):
    path = tmp_path / "lie.safetensors"
    _lying_checkpoint(path, 3000)  # a 2x3000 LSTM would take about 0.6 GB to build
    code = f"""
        import resource, time, rnncore
        from rnncore.io import CheckpointError
        rnncore.nn.LanguageModel(5, 4, 4)  # imports and first allocations done
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            rnncore.load({str(path)!r}).build()
        except CheckpointError as e:
            print("ERR", e)
        print("TIME", time.perf_counter() - t0)
        print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
    rc, out, err = run_python(code)
    assert rc == 0, err
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert "ERR" in lines, out
    assert float(lines["TIME"]) < 1.0, out
    assert int(lines["GROWTH_KB"]) < 50_000, out  # kilobytes: far below the 0.6 GB the claim would take
    msg = lines["ERR"]
    assert "rnn.weight_hh_l0 (checkpoint (16, 4), model (12000, 3000))" in msg and "lie.safetensors" in msg


def test_cli_sample_of_a_lying_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "lie.safetensors"
    _lying_checkpoint(path, 3000)
    rc, _, err = run_python(CLI, "sample", path)
    assert_one_line_error(rc, err)


def test_shapes_only_models_match_the_real_ones():
    from rnncore.nn.init import skeleton

    makers = [lambda: nn.LanguageModel(7, 4, 4, num_layers=2, tie_weights=True, padding_idx=0),
              lambda: nn.ConditionedGenerator(7, 4, 5, 3, condition="both", cell="gru"),
              lambda: nn.SequenceClassifier(7, 4, 5, 3, bidirectional=True, num_layers=2),
              lambda: nn.SequenceTagger(input_size=3, hidden_size=5, num_classes=2, cell="rnn_relu"),
              lambda: nn.LayerNorm((2, 3)), lambda: nn.LSTMCell(3, 4), lambda: nn.Embedding(5, 2, padding_idx=1)]
    for make in makers:
        real = make()
        with skeleton():
            shape = make()
        assert [(k, p.shape, p.dtype) for k, p in real.named_parameters()] == \
               [(k, p.shape, p.dtype) for k, p in shape.named_parameters()]
        assert all(p.data.strides == (0,) * p.data.ndim for p in shape.parameters())


# -- 8. temporary files of killed saves; deterministic bytes ----------------------------------------

def _host():
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")[:40] or "host"


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_next_save_removes_stale_temporaries_of_that_path_only(tmp_path):
    path = tmp_path / "model.safetensors"
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = f".model.safetensors.{_host()}.{dead}.abc123_x.tmp"
        keep = [f".model.safetensors.{_host()}.{sleeper.pid}.zzz999_y.tmp",  # its writer is alive
                f".model.safetensors.{_host()}.{os.getpid()}.qqq000_z.tmp",  # ours (another thread's save)
                f".model.safetensors.otherhost.{dead}.abc123_x.tmp",  # another machine's pid
                f".other.safetensors.{_host()}.{dead}.abc123_x.tmp",  # another path's
                ".model.safetensors.abc123_x.tmp",  # not our pattern
                "notes.txt"]
        for name in [stale] + keep:
            (tmp_path / name).write_bytes(b"x" * 100)
        rnncore.save(path, nn.GRU(2, 2))
        assert sorted(os.listdir(tmp_path)) == sorted(keep + ["model.safetensors"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    path = tmp_path / "model.safetensors"
    code = f"""
        import os, signal, numpy as np, rnncore
        from rnncore import io as rio
        def die(f, data):
            f.write(memoryview(data)[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        rio._write_bytes = die
        rnncore.save({str(path)!r}, rnncore.nn.LSTM(4, 8))
    """
    rc, _, _ = run_python(code)
    assert rc == -signal.SIGKILL
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".model.safetensors.") and left[0].endswith(".tmp")
    rnncore.save(path, nn.LSTM(4, 8))
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_saving_the_same_model_twice_writes_the_same_bytes(tmp_path):
    lm = nn.LanguageModel(9, 4, 6, num_layers=2, seed=0)
    opt = optim.Adam(lm.parameters())
    lm.loss(_tokens(V=9), _tokens(V=9))
    lm.backward()
    opt.step()
    extra = {"epoch": 3, "b": [1, 2], "a": {"y": 1, "x": 2}}
    arrays = {"hidden.h": np.ones((2, 2, 6), np.float32), "count": np.arange(3, dtype=np.int32)}
    rnncore.save(tmp_path / "a.safetensors", lm, opt, extra=extra, arrays=arrays)
    rnncore.save(tmp_path / "b.safetensors", lm, opt, extra=extra, arrays=arrays)
    a = (tmp_path / "a.safetensors").read_bytes()
    assert a == (tmp_path / "b.safetensors").read_bytes()
    # and from another process (the order of a hash map would differ there too)
    code = f"""
        import numpy as np, rnncore
        from rnncore import nn, optim
        lm = nn.LanguageModel(9, 4, 6, num_layers=2, seed=0)
        opt = optim.Adam(lm.parameters())
        t = np.random.default_rng(0).integers(0, 9, (4, 2))
        lm.loss(t, t); lm.backward(); opt.step()
        rnncore.save({str(tmp_path / "c.safetensors")!r}, lm, opt, extra={extra!r},
                     arrays={{"hidden.h": np.ones((2, 2, 6), np.float32), "count": np.arange(3, dtype=np.int32)}})
    """
    rc, _, err = run_python(code)
    assert rc == 0, err
    assert (tmp_path / "c.safetensors").read_bytes() == a
    # still a standard safetensors file, everything readable back
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), framework="np") as f:
        assert f.metadata()["kind"] == "LanguageModel"
        np.testing.assert_array_equal(f.get_tensor("arrays.count"), np.arange(3, dtype=np.int32))
    ckpt = rnncore.load(tmp_path / "a.safetensors", nn.LanguageModel(9, 4, 6, num_layers=2, seed=1),
                        optim.Adam(nn.LanguageModel(9, 4, 6, num_layers=2).parameters()))
    assert ckpt.extra == extra and ckpt.arrays["count"].dtype == np.int32
    (n,) = struct.unpack("<Q", a[:8])
    header = json.loads(a[8:8 + n])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(header["__metadata__"])
    assert not any("time" in k or "date" in k for k in header["__metadata__"])


def test_saved_arrays_round_trip_in_every_dtype_the_file_holds(tmp_path):
    path = tmp_path / "x.safetensors"
    arrays = {"big_endian": np.arange(3, dtype=">f8"), "flags": np.array([True, False]),
              "half": np.ones(2, np.float16), "empty": np.zeros((0, 3), np.int64), "small": np.arange(4, dtype=np.uint8)}
    rnncore.save(path, nn.Linear(2, 2), arrays=arrays)
    back = rnncore.load(path).arrays
    for name, a in arrays.items():
        assert back[name].shape == a.shape and back[name].dtype == a.dtype.newbyteorder("<"), name
        np.testing.assert_array_equal(back[name], a)


# -- found by the fuzz harness (tests/fuzz/known.py until fixed) ---------------------------------------
# The narrow fuzz tests (tests/fuzz/test_fuzz_known.py) check that no such call crashes or raises the
# wrong kind of exception; these check what the messages say.

def _lm(**kw):
    return nn.LanguageModel(5, 3, 4, seed=0, threads=1, **kw)


@pytest.mark.parametrize("call, exc, message", [
    (lambda d: d.seed(-1), ValueError, r"^Decoder.seed: seed must be in \[0, 18446744073709551615\], got -1$"),
    (lambda d: d.seed(2**64), ValueError, r"^Decoder.seed: seed must be in \[0, "),
    (lambda d: d.seed(1.5), TypeError, r"^Decoder.seed: seed must be an int"),
    (lambda d: d.sample("x"), TypeError, r"^Decoder.sample: n must be an int, got str 'x'$"),
    (lambda d: d.sample(2**63), ValueError, r"^Decoder.sample: n must be in \[0, 2\*\*63 - 1\] \(an int64\)"),
    (lambda d: d.sample(2, top_k=-1), ValueError, r"^Decoder.sample: top_k must be >= 0"),
    (lambda d: d.sample(2, stop_tokens=[9]), ValueError, r"^Decoder.sample: stop token 9 is outside"),
    (lambda d: d.beam_search(-1.5), TypeError, r"^Decoder.beam_search: max_len must be an int"),
    (lambda d: d.beam_search(3, alpha="x"), TypeError, r"^Decoder.beam_search: alpha must be"),
    (lambda d: d.step_logits(1), TypeError, r"step_logits\(\) takes 1 positional argument"),
    (lambda d: d.prime([[[1, 2]]]), ValueError, r"^Decoder.prime: ids must have shape \(B, P\) = \(2, P\), got "
                                                r"\(1, 1, 2\)$"),
    (lambda d: d.prime([[1, 2]]), ValueError, r"^Decoder.prime: ids must have shape \(B, P\) = \(2, P\), got \(1, 2\)$"),
    (lambda d: d.prime([[1, 7], [0, 0]]), ValueError, r"^Decoder.prime: ids token 7 at position \[0, 1\] is outside"),
    (lambda d: d.prime(np.zeros((2, 0), np.int64)), ValueError, r"^Decoder.prime: ids must hold at least one token"),
    (lambda d: d.set_next_tokens([1.5, 2]), TypeError, r"^Decoder.set_next_tokens: tokens must be an integer array"),
    (lambda d: d.mark_seen([1, 2]), ValueError, r"^Decoder.mark_seen: tokens must have shape \(B, P\)"),
    (lambda d: d.set_state("x"), TypeError, r"^Decoder.set_state: h must be a real numeric array"),
])
def test_decoder_methods_check_their_arguments(call, exc, message):
    dec = sampling.Decoder(_lm(), 2, threads=1)
    with pytest.raises(exc, match=message):
        call(dec)


def test_decoder_methods_still_decode():
    model = _lm()
    dec = sampling.Decoder(model, 2, threads=1)
    dec.prime([[1, 2], [3, 4]])
    dec.seed(2**64 - 1)
    toks, steps = dec.sample(3, top_k=0, stop_tokens=[0])
    assert toks.shape == (2, 3) and steps >= 1
    h, c = dec.get_state()
    dec.set_state(h.astype(np.float64), c)  # converted once to the model's dtype
    dec.set_next_tokens([1, 1])
    assert dec.step_logits().shape == (2, 5) and dec.vocab_size == 5 and dec.batch == 2 and dec.done.shape == (2,)
    assert len(dec.beam_search(3, n_best=2)) == 2


@pytest.mark.parametrize("call, name", [
    (lambda m: sampling.generate(m, [1, 2], 3, top_k=2**63), "top_k"),
    (lambda m: sampling.generate(m, [1, 2], 2**63), "max_new_tokens"),
    (lambda m: sampling.beam_search(m, [1, 2], 2**63, 3), "beam_width"),
    (lambda m: sampling.stream(m, [1], 3, chunk=2**64), "chunk"),
    (lambda m: nn.cross_entropy(np.zeros((3, 4)), np.zeros(3, np.int64), ignore_index=2**63), "ignore_index"),
    (lambda m: nn.cross_entropy(np.zeros((3, 4)), np.zeros(3, np.int64), ignore_index=-2**63 - 1), "ignore_index"),
    (lambda m: nn.CrossEntropyLoss(ignore_index=2**64), "ignore_index"),
    (lambda m: nn.Embedding(4, 3, padding_idx=2**63), "padding_idx"),
])
def test_integers_past_int64_are_refused_naming_them(call, name):
    with pytest.raises(ValueError, match=rf": {name} must be in \[.*\] \(an int64\), got -?\d+$"):
        call(_lm())


def test_seeds_past_int64_still_work():
    """Seeds stay Python ints for numpy: any size is fine (generate reduces them mod 2**64)."""
    m = _lm()
    a = sampling.generate(m, [1, 2], 4, seed=2**64 + 5)
    b = sampling.generate(m, [1, 2], 4, seed=5)
    np.testing.assert_array_equal(a, b)
    from rnncore.data import BucketIterator

    assert BucketIterator([[1, 2], [3]], None, 1, seed=2**70).seed == 2**70


@pytest.mark.parametrize("name, ctor, key", [("Adam", {}, "exp_avg"), ("Adam", {}, "exp_avg_sq"),
                                             ("AdamW", {"amsgrad": True}, "max_exp_avg_sq"),
                                             ("SGD", {"momentum": 0.9}, "momentum_buffer"),
                                             ("RMSprop", {}, "square_avg"), ("Adagrad", {}, "sum")])
def test_optimizer_state_holding_a_number_is_refused_by_name_and_changes_nothing(name, ctor, key):
    p = nn.Parameter(np.zeros(3, np.float32))
    p.grad = np.ones(3, np.float32)
    opt = getattr(optim, name)([p], lr=0.1, **ctor)
    opt.step()
    before = opt.state_dict()
    bad = opt.state_dict()
    bad["state"][0][key] = 0.0
    bad["param_groups"][0]["lr"] = 0.5
    with pytest.raises(TypeError, match=rf"^{name}.load_state_dict: state '{key}' of parameter 0 must be an array of "
                                        r"the parameter's shape \(3,\), got float 0.0$"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for k, v in before["state"][0].items():
        np.testing.assert_array_equal(after["state"][0][k], v)
    opt.step()  # still works


def test_optimizer_state_step_and_dtypes_are_checked():
    p = nn.Parameter(np.zeros(3, np.float32))
    p.grad = np.ones(3, np.float32)
    opt = optim.Adam([p])
    opt.step()
    sd = opt.state_dict()
    for step, exc, msg in [(2**63, ValueError, "an int64"), (-1, ValueError, ">= 0"), ("3", TypeError, "an int")]:
        sd["state"][0]["step"] = step
        with pytest.raises(exc, match=rf"^Adam.load_state_dict: state 'step' of parameter 0 must .*{msg}"):
            opt.load_state_dict(sd)
    sd["state"][0]["step"] = 4.0  # PyTorch keeps step as a float tensor
    sd["state"][0]["exp_avg"] = np.zeros(3, complex)
    with pytest.raises(TypeError, match=r"state 'exp_avg' of parameter 0 must hold real numbers, got dtype complex128"):
        opt.load_state_dict(sd)
    sd["state"][0]["exp_avg"] = np.zeros(3)
    opt.load_state_dict(sd)
    assert opt.state[p]["step"] == 4
    # PyTorch's SGD saves momentum_buffer=None before momentum is used: absent, not an error
    sgd = optim.SGD([p], lr=0.1, momentum=0.9)
    sgd.load_state_dict({"state": {0: {"momentum_buffer": None}}, "param_groups": [{"lr": 0.1, "params": [0]}]})
    sgd.step()


@pytest.mark.parametrize("make", [
    lambda n: nn.LSTM(4, 4, num_layers=n), lambda n: nn.GRU(4, 4, num_layers=n), lambda n: nn.RNN(4, 4, num_layers=n),
    lambda n: nn.LanguageModel(5, 4, 4, num_layers=n), lambda n: nn.SequenceClassifier(5, 4, 4, 2, num_layers=n),
    lambda n: nn.SequenceTagger(5, 4, 4, 2, num_layers=n), lambda n: nn.ConditionedGenerator(5, 4, 4, 3, num_layers=n),
])
@pytest.mark.parametrize("n", [2**31, 2**40, 1025])
def test_an_absurd_num_layers_is_refused_up_front(make, n):
    from rnncore._checks import MAX_LAYERS

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf": num_layers must be in \[1, {MAX_LAYERS}\] .*, got {n}$"):
        make(n)
    assert time.perf_counter() - t0 < 0.5
    assert make(2).num_layers == 2


def test_parameters_larger_than_the_machine_are_refused_before_allocating():
    from rnncore._checks import physical_memory

    if physical_memory() is None:
        pytest.skip("the OS does not report its physical memory")
    # 1024 layers of 4 * 65536 * (65536 + 65536) float32 weights: ~35 TB, refused at once
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match=r"^LSTM: the parameters \(num_layers=1024, hidden_size=65536, input_size=4\) "
                                          r"would take .* GiB, more than this machine's .* GiB of memory$"):
        nn.LSTM(4, 65536, num_layers=1024)
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_a_loss_whose_sum_overflows_raises(reduction):
    logits = np.zeros((4, 2))
    logits[:, 0] = 1.7e308  # target 1: each position's loss is 1.7e308, finite; their sum is not
    with pytest.raises(FloatingPointError, match=rf"^cross_entropy: the {reduction} of the losses overflows"):
        nn.cross_entropy(logits, np.ones(4, np.int64), reduction=reduction)


def test_a_weighted_loss_that_overflows_raises():
    logits = np.array([[1e300, 0.0]], np.float64)
    with pytest.raises(FloatingPointError, match=r"^cross_entropy: the weighted loss at position \[0\] overflows"):
        nn.cross_entropy(logits, np.ones(1, np.int64), mask=np.array([1e300]), reduction="none")
    with pytest.raises(FloatingPointError, match=r"^cross_entropy: the total weight of the mask overflows"):
        nn.cross_entropy(np.zeros((2, 2)), np.ones(2, np.int64), mask=np.array([1.7e308, 1.7e308]))
    # float32: w * loss past float32's range
    with pytest.raises(FloatingPointError, match=r"overflows"):
        nn.cross_entropy(np.array([[1e30, 0.0]], np.float32), np.ones(1, np.int64),
                         mask=np.array([1e30], np.float32), reduction="sum")


def _deep(depth=3000):
    deep = []
    for _ in range(depth):
        deep = [deep]
    return deep


@pytest.mark.parametrize("call, name", [
    (lambda d: nn.LSTM(2, 3, dtype=d), "dtype"), (lambda d: nn.Linear(2, 3, dtype=d), "dtype"),
    (lambda d: nn.LanguageModel(5, 3, 4, dtype=d), "dtype"),
    (lambda d: rnncore.data.BucketIterator([[1, 2], [3]], None, 2, num_buckets=d), "num_buckets"),
    (lambda d: nn.Linear(d, 3), "in_features"), (lambda d: nn.RNN(2, 3, nonlinearity=d), "nonlinearity"),
    (lambda d: nn.cross_entropy(np.zeros((1, 2)), [0], reduction=d), "reduction"),
    (lambda d: optim.SGD([nn.Parameter(np.zeros(2))], lr=d), "lr"),
    (lambda d: rnncore.data.pad_sequences([[1, 2]], dtype=d), "dtype"),
])
def test_a_deeply_nested_list_for_a_scalar_is_named_not_a_recursion_error(call, name):
    with pytest.raises((TypeError, ValueError), match=name) as info:
        call(_deep())
    assert len(str(info.value)) < 300 and "[[[[...]]]]" in str(info.value)


@pytest.mark.parametrize("what", ["extra", "config"])
def test_save_of_deeply_nested_metadata_is_a_type_error(tmp_path, what):
    """found by the fuzz harness once deep lists reached every argument: json.dumps's RecursionError"""
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match=rf"^rnncore.save: {what} must be JSON-serialisable: it is nested too deeply"):
        rnncore.save(path, nn.Linear(2, 2), **{what: {"a": _deep()}})
    assert not os.listdir(tmp_path)  # nothing written, no temporary left


def test_an_absurd_ngram_order_is_refused_up_front(tmp_path):
    """found by the ngram fuzz target: KneserNeyLM(order=40000) fit in a second or two, but loading
    its ARPA file took minutes (O(order**2) tables); orders past MAX_ORDER are refused now."""
    from rnncore import ngram
    from rnncore.ngram.corpus import MAX_ORDER

    for order in (MAX_ORDER + 1, 40000, 2**63):
        with pytest.raises(ValueError, match=rf"^KneserNeyLM: order must be in \[1, {MAX_ORDER}\], got {order}$"):
            ngram.KneserNeyLM(order=order)
    path = tmp_path / "deep.arpa"
    path.write_text("\\data\\\n" + "".join(f"ngram {k}=1\n" for k in range(1, 4001)))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"line {MAX_ORDER + 2}: the \\data\\ header lists orders past {MAX_ORDER}"):
        ngram.load_arpa(path)
    assert time.perf_counter() - t0 < 1
    # the longest order allowed still round-trips quickly
    text = "a b c\nb c a\n"
    lm = ngram.KneserNeyLM(order=MAX_ORDER, discount_fallback=True).fit(text)
    lm.save_arpa(tmp_path / "max.arpa")
    t0 = time.perf_counter()
    again = ngram.load_arpa(tmp_path / "max.arpa")
    assert time.perf_counter() - t0 < 10
    assert again.perplexity(text) == pytest.approx(lm.perplexity(text), rel=1e-6)


def test_an_adaptive_softmax_too_large_for_the_machine_is_refused_before_allocating():
    """found by the nn_adaptive_softmax fuzz target: div_value=6e-5 made 4.5e9-unit projections, and
    numpy's MemoryError came only after the first clusters were built."""
    from rnncore._checks import physical_memory

    if physical_memory() is None:
        pytest.skip("the OS does not report its physical memory")
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match=r"^AdaptiveLogSoftmaxWithLoss: the parameters \(in_features=17, "
                                          r"div_value=6.10352e-05, projections \[278528, 4563402752, .*\]\) would take"):
        nn.AdaptiveLogSoftmaxWithLoss(17, 4, [1, 2, 3], div_value=6.103515625e-05)
    assert time.perf_counter() - t0 < 0.5
    # div_value**2 underflowing to 0 was a ZeroDivisionError
    for div in (2.7788869962042456e-171, 1e-320):
        with pytest.raises(ValueError, match=r"^AdaptiveLogSoftmaxWithLoss: cluster \d's projection .* overflows; "
                                             r"use a larger div_value$"):
            nn.AdaptiveLogSoftmaxWithLoss(4, 10, [6, 9], div_value=div)
    m = nn.AdaptiveLogSoftmaxWithLoss(17, 4, [1, 2, 3], div_value=0.5)  # below 1 is allowed, as in PyTorch
    assert [m.tail[i][0].weight.shape[0] for i in range(3)] == [34, 68, 136]
