"""rnncore.torch: torch.nn.LSTM/GRU/RNN (and cells) as drop-ins running rnncore's kernels.

Parity is against torch's own modules in float32 on random configurations (every output and
every gradient within atol 1e-5 + rtol 1e-5 * |ref|), gradcheck in float64 on tiny shapes, a
real torch training loop, patch(), torch.compile, and torch's kinds of errors for bad input.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnncore  # noqa: E402
import rnncore.torch as rt  # noqa: E402
from rnncore import _core  # noqa: E402
from rnncore.torch import _function  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
TOL = dict(atol=1e-5, rtol=1e-5)


def pair(kind, *args, **kwargs):
    """(torch module, rnncore.torch module) with the same weights (torch's initialisation)."""
    if kind == "lstm":
        theirs, ours = torch.nn.LSTM(*args, **kwargs), rt.LSTM(*args, **kwargs)
    elif kind == "gru":
        theirs, ours = torch.nn.GRU(*args, **kwargs), rt.GRU(*args, **kwargs)
    else:
        nl = kind[len("rnn_"):]
        theirs, ours = torch.nn.RNN(*args, nonlinearity=nl, **kwargs), rt.RNN(*args, nonlinearity=nl, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]


def run(module, kind, x, h0, c0, packing, lengths, batch_first, seeds):
    """Forward, a random weighted sum of every output, backward. Returns (outputs, gradients)."""
    x, h0, c0 = leaves(x, h0, c0)
    hx = None if h0 is None else ((h0, c0) if kind == "lstm" else h0)
    inp = x
    if packing:
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=packing == "sorted")
    out, state = module(inp, hx)
    if packing:
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    states = list(state) if kind == "lstm" else [state]
    g = torch.Generator().manual_seed(seeds)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [out] + states)
    loss.backward()
    grads = {"x": x.grad}
    if h0 is not None:
        grads["h0"] = h0.grad
        if c0 is not None:
            grads["c0"] = c0.grad
    grads.update({n: p.grad for n, p in module.named_parameters()})
    return [out] + states, grads


def assert_same(ours, theirs, what):
    for i, (a, b) in enumerate(zip(ours[0], theirs[0])):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{what}: output {i}: {m}")
    assert ours[1].keys() == theirs[1].keys()
    # Not vacuous: the input's gradient is nonzero (a weight's may be exactly 0, e.g. W_hh at T = 1
    # from a zero state; then ours must be exactly 0 too, which atol allows to 1e-5).
    assert theirs[1]["x"].abs().max() > 0, f"{what}: zero reference input gradient"
    for name in theirs[1]:
        a, b = ours[1][name], theirs[1][name]
        assert a is not None and b is not None, (what, name)
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{what}: gradient of {name}: {m}")


def random_configs(kind, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield dict(T=int(rng.integers(1, 9)), B=int(rng.integers(1, 6)), I=int(rng.integers(1, 12)),
                   H=int(rng.integers(1, 14)), L=int(rng.integers(1, 4)), bidirectional=bool(rng.integers(2)),
                   batch_first=bool(rng.integers(2)), bias=bool(rng.integers(2)), h0=bool(rng.integers(2)),
                   packing=[None, "sorted", "unsorted"][int(rng.integers(3))], seed=int(rng.integers(1 << 30)))


def inputs_for(kind, c, dtype=torch.float32):
    g = torch.Generator().manual_seed(c["seed"])
    T, B, I, H, LD = c["T"], c["B"], c["I"], c["H"], c["L"] * (2 if c["bidirectional"] else 1)
    x = torch.randn((B, T, I) if c["batch_first"] else (T, B, I), generator=g, dtype=dtype)
    h0 = torch.randn(LD, B, H, generator=g, dtype=dtype) if c["h0"] else None
    c0 = torch.randn(LD, B, H, generator=g, dtype=dtype) if c["h0"] and kind == "lstm" else None
    lengths = None
    if c["packing"]:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[int(torch.randint(0, B, (1,), generator=g))] = T  # the longest reaches T (total_length)
        if c["packing"] == "sorted":
            lengths = lengths.sort(descending=True).values
    return x, h0, c0, lengths


# ----------------------------------------------------------------------------------------------
# Parity with torch.nn on random shapes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_parity_random_configurations(kind):
    for c in random_configs(kind, 10, KINDS.index(kind)):
        torch.manual_seed(c["seed"])
        theirs, ours = pair(kind, c["I"], c["H"], num_layers=c["L"], bias=c["bias"], batch_first=c["batch_first"],
                            bidirectional=c["bidirectional"])
        x, h0, c0, lengths = inputs_for(kind, c)
        args = (kind, x, h0, c0, c["packing"], lengths, c["batch_first"], c["seed"])
        assert_same(run(ours, *args), run(theirs, *args), f"{kind} {c}")


@pytest.mark.parametrize("kind", KINDS)
def test_parity_larger_shapes_and_every_option(kind):
    # Sizes past the kernels' SIMD widths and block sizes; bidirectional, 3 layers, ragged, unsorted.
    c = dict(T=23, B=9, I=37, H=45, L=3, bidirectional=True, batch_first=True, bias=True, h0=True,
             packing="unsorted", seed=7)
    torch.manual_seed(0)
    theirs, ours = pair(kind, c["I"], c["H"], num_layers=3, batch_first=True, bidirectional=True)
    x, h0, c0, lengths = inputs_for(kind, c)
    for packing in ("unsorted", None):
        args = (kind, x, h0, c0, packing, lengths, True, 3)
        for m in (ours, theirs):
            m.zero_grad()
        assert_same(run(ours, *args), run(theirs, *args), f"{kind} packing={packing}")


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input(kind):
    torch.manual_seed(1)
    theirs, ours = pair(kind, 4, 5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 4)
    h0 = torch.randn(4, 5)
    hx = (h0, torch.randn(4, 5)) if kind == "lstm" else h0
    (o1, s1), (o2, s2) = ours(x, hx), theirs(x, hx)
    assert o1.shape == o2.shape == (6, 10)
    torch.testing.assert_close(o1, o2, **TOL)
    for a, b in zip(s1 if kind == "lstm" else [s1], s2 if kind == "lstm" else [s2]):
        assert a.shape == (4, 5)
        torch.testing.assert_close(a, b, **TOL)


def test_non_contiguous_input_and_state():
    torch.manual_seed(2)
    theirs, ours = pair("lstm", 5, 4, num_layers=2)
    base = torch.randn(5, 7, 3)
    x = base.permute(1, 2, 0)  # (7, 3, 5), not contiguous
    h = torch.randn(3, 2, 4).transpose(0, 1)  # (2, 3, 4), not contiguous
    c = torch.randn(2, 3, 4)
    (o1, (h1, c1)), (o2, (h2, c2)) = ours(x, (h, c)), theirs(x, (h, c))
    for a, b in ((o1, o2), (h1, h2), (c1, c2)):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("packing,batch_first", [(None, False), (None, True), ("unsorted", False)])
def test_dropout_draws_torchs_masks(kind, packing, batch_first):
    # The same generator state gives the same masks as torch.nn's own layer.
    c = dict(T=7, B=4, I=5, H=6, L=3, bidirectional=True, batch_first=batch_first, bias=True, h0=False,
             packing=packing, seed=11)
    torch.manual_seed(3)
    theirs, ours = pair(kind, 5, 6, num_layers=3, bidirectional=True, dropout=0.4, batch_first=batch_first)
    x, h0, c0, lengths = inputs_for(kind, c)
    args = (kind, x, h0, c0, packing, lengths, batch_first, 5)
    torch.manual_seed(123)
    mine = run(ours, *args)
    torch.manual_seed(123)
    ref = run(theirs, *args)
    assert_same(mine, ref, f"{kind} dropout")
    torch.manual_seed(123)
    again = run(ours, *args)[0][0]
    assert torch.equal(again, mine[0][0])  # torch.manual_seed reproduces the masks
    torch.manual_seed(124)
    assert not torch.equal(run(ours, *args)[0][0], mine[0][0])
    ours.eval()  # no dropout in eval mode
    theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], **TOL)


# ----------------------------------------------------------------------------------------------
# gradcheck (float64, tiny odd shapes)
# ----------------------------------------------------------------------------------------------
def functional(module, kind, packing, lengths):
    names = [n for n, _ in module.named_parameters()]

    def f(x, h0, c0, *params):
        hx = (h0, c0) if kind == "lstm" else h0
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packing else x
        out, state = torch.func.functional_call(module, dict(zip(names, params)), (inp, hx))
        if packing:
            out = out.data
        return (out,) + (tuple(state) if kind == "lstm" else (state,))

    return f


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("packing", [False, True])
def test_gradcheck_float64(kind, packing):
    torch.manual_seed(4)
    _, m = pair(kind, 3, 3, num_layers=2, bidirectional=True)
    m = m.double()
    T, B = 5, 2
    x = torch.randn(T, B, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, B, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, B, 3, dtype=torch.float64, requires_grad=kind == "lstm")
    lengths = torch.tensor([3, 5]) if packing else None
    params = [p.detach().clone().requires_grad_(True) for p in m.parameters()]
    f = functional(m, kind, packing, lengths)
    if kind != "lstm":
        g = lambda x, h0, *p: f(x, h0, None, *p)  # noqa: E731
        assert torch.autograd.gradcheck(g, (x, h0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
    else:
        assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("cls,kind", [(rt.LSTMCell, "lstm"), (rt.GRUCell, "gru"), (rt.RNNCell, "rnn")])
def test_gradcheck_cells_float64(cls, kind):
    torch.manual_seed(5)
    cell = cls(3, 5).double()
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in cell.parameters()]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)

    def f(x, h, c, *p):
        hx = (h, c) if kind == "lstm" else h
        return torch.func.functional_call(cell, dict(zip(names, p)), (x, hx))

    assert torch.autograd.gradcheck(f if kind == "lstm" else (lambda x, h, *p: f(x, h, None, *p)),
                                    (x, h, c, *params) if kind == "lstm" else (x, h, *params), eps=1e-6,
                                    atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch_over_a_loop(kind, batched):
    torch.manual_seed(6)
    if kind == "lstm":
        theirs, ours = torch.nn.LSTMCell(4, 6), rt.LSTMCell(4, 6)
    elif kind == "gru":
        theirs, ours = torch.nn.GRUCell(4, 6, bias=False), rt.GRUCell(4, 6, bias=False)
    else:
        nl = kind[4:]
        theirs, ours = torch.nn.RNNCell(4, 6, nonlinearity=nl), rt.RNNCell(4, 6, nonlinearity=nl)
    ours.load_state_dict(theirs.state_dict())
    xs = torch.randn(5, 3, 4) if batched else torch.randn(5, 4)
    results = []
    for m in (ours, theirs):
        x = xs.clone().requires_grad_(True)
        hx, total = None, 0
        for t in range(5):
            hx = m(x[t], hx)
            h = hx[0] if kind == "lstm" else hx
            total = total + (h * (t + 1)).sum() + ((hx[1] ** 2).sum() if kind == "lstm" else 0)
        total.backward()
        results.append([hx[0] if kind == "lstm" else hx, x.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)


# ----------------------------------------------------------------------------------------------
# Autograd behaviour: saved memory, backward once, needs_input_grad, in-place edits
# ----------------------------------------------------------------------------------------------
def test_kernels_read_the_tensors_memory(monkeypatch):
    seen = []
    real = _core.recurrent_forward

    def spy(cell, x, w_ih, w_hh, *rest):
        seen.append((x.__array_interface__["data"][0], w_ih.__array_interface__["data"][0]))
        return real(cell, x, w_ih, w_hh, *rest)

    monkeypatch.setattr(_core, "recurrent_forward", spy)
    m = rt.GRU(4, 3)
    x = torch.randn(5, 2, 4, requires_grad=True)
    m(x)[0].sum().backward()
    assert seen == [(x.data_ptr(), m.weight_ih_l0.data_ptr())]


def test_second_backward_is_torchs_error_and_retain_graph_recomputes():
    torch.manual_seed(7)
    m = rt.LSTM(3, 4, bidirectional=True)
    x = torch.randn(6, 2, 3, requires_grad=True)
    out, _ = m(x)
    loss = out.pow(2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()
    out, _ = m(x)
    loss = out.pow(2).sum()
    first = torch.autograd.grad(loss, [x, m.weight_hh_l0_reverse], retain_graph=True)
    second = torch.autograd.grad(loss, [x, m.weight_hh_l0_reverse])  # recomputes the forward
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_one_module_twice_in_one_graph():
    # Two forwards in flight at once (each keeps its own workspaces), then one backward.
    torch.manual_seed(15)
    theirs, ours = pair("lstm", 3, 4, num_layers=2, bidirectional=True)
    xs = [torch.randn(5, 2, 3), torch.randn(7, 2, 3)]
    for m in (theirs, ours):
        a, (h, _) = m(xs[0])
        b, _ = m(xs[1], (h, torch.zeros_like(h)))
        (a.square().sum() + b.sum()).backward()
    for (n, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=n)


def test_double_backward_is_refused():
    m = rt.GRU(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out = m(x)[0]
    v = torch.randn(out.shape, requires_grad=True)
    (gx,) = torch.autograd.grad(out, x, v, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate twice"):
        gx.sum().backward()


def test_input_without_grad_and_frozen_weights():
    torch.manual_seed(8)
    theirs, ours = pair("gru", 3, 4, num_layers=2)
    for m in (theirs, ours):
        m.weight_hh_l0.requires_grad_(False)
    x = torch.randn(5, 2, 3)  # needs no gradient
    for m in (theirs, ours):
        m(x)[0].sum().backward()
    assert ours.weight_hh_l0.grad is None
    for (n, a), b in zip(ours.named_parameters(), theirs.parameters()):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, **TOL, msg=n)


def test_no_grad_and_inference_mode_build_no_graph():
    m = rt.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    ref = m(x)[0].detach()
    with torch.no_grad():
        out, (h, c) = m(x)
    assert out.grad_fn is None and not out.requires_grad
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    with torch.inference_mode():
        torch.testing.assert_close(m(x)[0], ref, atol=0, rtol=0)


def test_in_place_edit_of_a_saved_input_is_torchs_error():
    m = rt.RNN(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    y = x * 1.0
    out, _ = m(y)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_workspaces_are_reused():
    m = rt.LSTM(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3, requires_grad=True)
    m(x)[0].sum().backward()
    memory = rt.modules._memory[m]
    kept = [tuple(map(id, memory[layer].workspaces[0])) for layer in (0, 1)]
    out = m(x)[0]
    assert all(not memory[layer].workspaces for layer in (0, 1))  # taken by the forward in flight
    out.sum().backward()
    assert [tuple(map(id, memory[layer].workspaces[0])) for layer in (0, 1)] == kept


def test_gradient_buffers_are_reused_after_zero_grad():
    m = rt.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    ptrs = []
    for _ in range(3):
        m.zero_grad()
        m(x)[0].sum().backward()
        ptrs.append(m.weight_ih_l0.grad.data_ptr())
    assert ptrs[1] == ptrs[2]  # the same memory, zeroed again: no fresh allocation per step


@pytest.mark.parametrize("set_to_none", [True, False])
def test_no_fresh_gradient_buffers_when_weights_share_a_shape(set_to_none, monkeypatch):
    """I == H: w_ih and w_hh (and the two biases) have one shape. After a first backward left
    its buffers as param.grad, zero_grad(set_to_none=False) keeps them there; the later
    backwards must still find free reused buffers, not fall back to torch.zeros_like."""
    torch.manual_seed(18)
    m = rt.LSTM(6, 6)
    x = torch.randn(4, 2, 6)
    calls = []
    real = torch.zeros_like
    monkeypatch.setattr(torch, "zeros_like", lambda *a, **k: calls.append(1) or real(*a, **k))
    for step in range(4):
        m.zero_grad(set_to_none=set_to_none)
        m(x)[0].sum().backward()
    assert calls == []


@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradient_buffers_are_reused_only_when_free(set_to_none):
    torch.manual_seed(17)
    theirs, ours = pair("gru", 3, 4, bidirectional=True)
    kept = []
    for step in range(4):
        x = torch.randn(5, 2, 3)
        for m in (theirs, ours):
            m.zero_grad(set_to_none=set_to_none)
            m(x)[0].square().sum().backward()
        for (n, p), q in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p.grad, q.grad, **TOL, msg=f"step {step}: {n}")
        kept.append((ours.weight_hh_l0.grad, ours.weight_hh_l0.grad.clone()))  # the caller keeps a gradient
    for held, value in kept:
        if set_to_none:  # each step's own buffer, never handed out again while held
            assert torch.equal(held, value)
    ptrs = {held.data_ptr() for held, _ in kept}
    assert len(ptrs) == (4 if set_to_none else 1)


def test_threads_argument_and_attribute():
    torch.manual_seed(9)
    a = rt.GRU(16, 64, threads=1)
    b = copy.deepcopy(a)
    b.threads = 2
    x = torch.randn(20, 8, 16)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=0, rtol=0)  # the kernels give the same bits
    b.threads = 0
    with pytest.raises(ValueError, match="threads"):
        b(x)
    b.threads = "2"
    with pytest.raises(TypeError, match="threads"):
        b(x)


# ----------------------------------------------------------------------------------------------
# Modules as torch.nn's: state_dict, dtype, repr, deepcopy
# ----------------------------------------------------------------------------------------------
def test_state_dict_round_trip_and_dtype():
    torch.manual_seed(10)
    theirs = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True, bias=False)
    ours = rt.LSTM(5, 6, num_layers=2, bidirectional=True, bias=False)
    assert isinstance(ours, torch.nn.LSTM)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(isinstance(p, torch.nn.Parameter) for p in ours.parameters())
    ours.load_state_dict(theirs.state_dict())
    back = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True, bias=False)
    back.load_state_dict(ours.state_dict())
    for a, b in zip(back.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    ours.to(torch.float64)
    theirs.to(torch.float64)
    out, (h, c) = ours(x)
    assert out.dtype == h.dtype == c.dtype == torch.float64
    torch.testing.assert_close(out, theirs(x)[0], atol=1e-12, rtol=1e-12)
    assert repr(ours) == repr(theirs)
    clone = copy.deepcopy(ours)
    torch.testing.assert_close(clone(x)[0], out, atol=0, rtol=0)


def test_autocast_runs_in_the_weights_dtype():
    torch.manual_seed(16)
    lin, ours, cell = torch.nn.Linear(4, 4), rt.GRU(4, 3), rt.LSTMCell(4, 3)
    x = torch.randn(5, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
        assert y.dtype == torch.bfloat16
        out, h = ours(y)
        h1, c1 = cell(y[0])
    assert out.dtype == h.dtype == h1.dtype == torch.float32
    torch.testing.assert_close(out, ours(y.float())[0], atol=0, rtol=0)
    torch.testing.assert_close(h1, cell(y[0].float())[0], atol=0, rtol=0)


def test_patch_swaps_an_lstm_with_projections():
    """Projections were refused until issue 17's kernels; now patch swaps them like the others
    (their parity is tested in tests/test_lstmp.py)."""
    lstmp = torch.nn.LSTM(4, 8, proj_size=3)
    model = torch.nn.Sequential(torch.nn.GRU(4, 4), lstmp)
    rt.patch(model)
    assert type(model[0]) is rt.GRU and type(model[1]) is rt.LSTM
    x = torch.randn(5, 2, 4)
    out, (h, c) = model[1](x)
    assert out.shape == (5, 2, 3) and h.shape == (1, 2, 3) and c.shape == (1, 2, 8)


# ----------------------------------------------------------------------------------------------
# patch / unpatch / patched
# ----------------------------------------------------------------------------------------------
class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.encoder = torch.nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.inner = torch.nn.ModuleList([torch.nn.GRU(12, 5), torch.nn.RNN(5, 5, nonlinearity="relu")])
        self.head = torch.nn.Linear(5, 3)

    def forward(self, ids):
        h, _ = self.encoder(self.embed(ids))
        h, _ = self.inner[0](h.transpose(0, 1))
        h, _ = self.inner[1](h)
        return self.head(h)


def test_patch_keeps_modules_and_parameters():
    torch.manual_seed(12)
    model = Tagger()
    ids = torch.randint(0, 20, (3, 7))
    ref = model(ids)
    params = {n: p for n, p in model.named_parameters()}
    encoder = model.encoder
    assert rt.patch(model, threads=1) is model
    assert type(model.encoder) is rt.LSTM and model.encoder is encoder and encoder.threads == 1
    assert type(model.inner[0]) is rt.GRU and type(model.inner[1]) is rt.RNN
    assert all(params[n] is p for n, p in model.named_parameters())
    torch.testing.assert_close(model(ids), ref, **TOL)
    rt.unpatch(model)
    assert type(model.encoder) is torch.nn.LSTM and "threads" not in model.encoder.__dict__
    assert type(model.inner[0]) is torch.nn.GRU and type(model.inner[1]) is torch.nn.RNN
    assert torch.equal(model(ids), ref)


def test_patched_context_restores_even_on_error():
    model = Tagger()
    with pytest.raises(KeyError):
        with rt.patched(model) as m:
            assert m is model and type(model.encoder) is rt.LSTM
            raise KeyError("boom")
    assert type(model.encoder) is torch.nn.LSTM
    own = rt.LSTM(3, 3)  # built as an rnncore module: patched() leaves it as it found it
    holder = torch.nn.Sequential(own, torch.nn.LSTM(3, 3))
    with rt.patched(holder):
        assert type(holder[1]) is rt.LSTM
    assert type(holder[0]) is rt.LSTM and type(holder[1]) is torch.nn.LSTM


def test_patch_leaves_subclasses_alone():
    class MyLSTM(torch.nn.LSTM):
        pass

    model = torch.nn.Sequential(MyLSTM(3, 3))
    rt.patch(model)
    assert type(model[0]) is MyLSTM
    with pytest.raises(TypeError, match="torch.nn.Module"):
        rt.patch("model")


# ----------------------------------------------------------------------------------------------
# A real torch training loop, twice: torch.nn.LSTM and the patched copy
# ----------------------------------------------------------------------------------------------
class CharLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(30, 16)
        self.rnn = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(32, 30)

    def forward(self, ids, state=None):
        h, state = self.rnn(self.embed(ids), state)
        return self.head(h), state


def train(model, steps=20):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 30, (8, 13), generator=g)
    losses, state = [], None
    for _ in range(steps):
        logits, state = model(data[:, :-1], state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 30), data[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        state = tuple(s.detach() for s in state)  # truncated BPTT: the state carries over
        losses.append(loss.item())
    return losses


def test_training_loop_matches_torch():
    torch.manual_seed(13)
    theirs = CharLM()
    ours = rt.patch(copy.deepcopy(theirs))
    assert type(ours.rnn) is rt.LSTM
    a, b = train(theirs), train(ours)
    assert a[-1] < a[0] - 0.2  # it learns
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# torch.compile
# ----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own import
@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_torch_compile_graph_break_gives_the_eager_result(backend):
    dynamo = pytest.importorskip("torch._dynamo")
    if not dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported in this environment")
    if backend == "inductor":
        try:  # inductor needs a working C++ compiler; our layer never enters its graphs
            torch.compile(lambda t: t * 2)(torch.ones(2))
        except Exception as exc:  # an environment without one
            pytest.skip(f"torch.compile's inductor backend is unavailable here: {type(exc).__name__}")
    torch.manual_seed(14)
    model = rt.patch(CharLM())
    ids = torch.randint(0, 30, (4, 9))
    ref_logits, _ = model(ids)
    ref_logits.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    for _ in range(2):  # the second call runs the cached graphs
        logits, _ = compiled(ids)
        torch.testing.assert_close(logits, ref_logits, **TOL)
        logits.sum().backward()
        for p, g in zip(model.parameters(), ref_grads):
            torch.testing.assert_close(p.grad, g, **TOL)
        model.zero_grad()


# ----------------------------------------------------------------------------------------------
# Bad input: torch's kinds of errors, never a crash
# ----------------------------------------------------------------------------------------------
def same_error(ours, theirs, call, match=None):
    """`call(module)` raises the same exception type for both (and the same message unless `match`)."""
    with pytest.raises(Exception) as ref:
        call(theirs)
    with pytest.raises(type(ref.value), match=match) as mine:
        call(ours)
    if match is None:
        assert str(mine.value) == str(ref.value)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_bad_input_gets_torchs_errors(kind):
    theirs, ours = pair(kind, 4, 3, num_layers=2)
    x = torch.randn(5, 2, 4)
    state = lambda *s: (torch.zeros(*s), torch.zeros(*s)) if kind == "lstm" else torch.zeros(*s)  # noqa: E731
    same_error(ours, theirs, lambda m: m(x.double()))  # dtype: ValueError
    same_error(ours, theirs, lambda m: m(torch.randn(5, 2, 6)))  # input size: RuntimeError
    same_error(ours, theirs, lambda m: m(x, state(2, 3, 3)))  # hidden batch: RuntimeError
    same_error(ours, theirs, lambda m: m(x, state(3, 2, 3)))  # hidden layers: RuntimeError
    same_error(ours, theirs, lambda m: m(x, state(2, 3)))  # 2-D state for 3-D input
    same_error(ours, theirs, lambda m: m(torch.zeros(0, 2, 4)))  # T = 0
    same_error(ours, theirs, lambda m: m(torch.randn(2, 3, 4, 5)), match="2D or 3D")
    same_error(ours, theirs, lambda m: m(torch.randint(0, 3, (5, 2, 4))))  # integer input
    with pytest.raises(TypeError, match="torch.Tensor"):
        ours(np.zeros((5, 2, 4), np.float32))
    ours.half()
    with pytest.raises(RuntimeError, match="float32 and float64 only"):
        ours(x.half())


def test_meta_and_other_devices_get_cpu_only():
    m = rt.LSTM(4, 3)
    with pytest.raises(RuntimeError, match="runs on the CPU only.*meta"):
        m(torch.randn(5, 2, 4, device="meta"))
    meta = rt.GRU(4, 3, device="meta")
    with pytest.raises(RuntimeError, match="runs on the CPU only"):
        meta(torch.randn(5, 2, 4))
    cell = rt.LSTMCell(4, 3)
    with pytest.raises(RuntimeError, match="runs on the CPU only"):
        cell(torch.randn(2, 4), (torch.zeros(2, 3, device="meta"), torch.zeros(2, 3)))
    with pytest.raises(RuntimeError, match="dense"):
        m(torch.randn(5, 2, 4).to_sparse())


def test_cell_bad_input_gets_torchs_errors():
    theirs, ours = torch.nn.LSTMCell(4, 3), rt.LSTMCell(4, 3)
    same_error(ours, theirs, lambda m: m(torch.randn(2, 5)))
    same_error(ours, theirs, lambda m: m(torch.randn(2, 4), (torch.zeros(2, 2), torch.zeros(2, 3))))
    same_error(ours, theirs, lambda m: m(torch.randn(2, 4), (torch.zeros(3, 3), torch.zeros(3, 3))))
    same_error(ours, theirs, lambda m: m(torch.randn(2, 3, 4)))
    same_error(ours, theirs, lambda m: m(torch.randn(2, 4).double()), match="dtype")
    g_theirs, g_ours = torch.nn.GRUCell(4, 3), rt.GRUCell(4, 3)
    same_error(g_ours, g_theirs, lambda m: m(torch.randn(2, 4), torch.zeros(2, 3, 1)))


# ----------------------------------------------------------------------------------------------
# rnncore itself never imports torch
# ----------------------------------------------------------------------------------------------
def test_import_rnncore_does_not_import_torch():
    code = ("import sys, rnncore, rnncore.nn, rnncore.io, rnncore.trainer, rnncore.sampling; "
            "assert rnncore.__file__.startswith(sys.argv[1]), rnncore.__file__; "
            "assert 'torch' not in sys.modules, 'import rnncore imported torch'; "
            "import rnncore.torch; assert 'torch' in sys.modules; "
            "assert 'torch._dynamo' not in sys.modules, 'rnncore.torch imported torch._dynamo'; print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "rnncore")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert rnncore.__file__.startswith(os.path.join(ROOT, "rnncore"))
