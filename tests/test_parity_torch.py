"""rnncore against torch.nn.RNN/LSTM/GRU: outputs, final states, every gradient.

Weights are drawn once (float32 values), loaded into both libraries through state_dict, and
the loss L = sum(dy * output) + sum(dh * h_n) (+ sum(dc * c_n)) is differentiated by both.
Ragged batches go through torch's pack_padded_sequence(enforce_sorted=False) (lengths >= 1)
and pad_packed_sequence; dy is random everywhere, padding included, so both libraries must
ignore dy past each length.

torch runs in float64 (on the same float32-valued weights and inputs), the tightest reference;
rnncore runs in float32 (|diff| <= 1e-5 + 1e-5 |ref| for outputs, states and gradients alike)
and in float64 (1e-10 + 1e-10 |ref|).
"""
import numpy as np
import pytest

from helpers import KINDS, assert_close, backward, forward, make_layer, random_params

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

T, B, I, H = 6, 5, 4, 7
LENGTHS = np.array([4, 6, 1, 3, 6])
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def torch_module(kind, L, bidirectional, batch_first):
    kw = dict(num_layers=L, bidirectional=bidirectional, batch_first=batch_first)
    if kind == "lstm":
        return torch.nn.LSTM(I, H, **kw)
    if kind == "gru":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=kind[4:], **kw)


def torch_run(kind, module, x, h0, c0, lengths, dy, dh, dc, batch_first):
    """Forward + backward in torch float64; returns outputs, states and gradients as numpy."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h0t = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    c0t = torch.tensor(c0, dtype=torch.float64, requires_grad=True) if kind == "lstm" else None
    hx = (h0t, c0t) if kind == "lstm" else h0t
    if lengths is None:
        out, state = module(xt, hx)
    else:
        packed = pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False)
        out, state = module(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    h_n, c_n = state if kind == "lstm" else (state, None)
    total = (out * torch.from_numpy(np.float64(dy))).sum() + (h_n * torch.from_numpy(np.float64(dh))).sum()
    if kind == "lstm":
        total = total + (c_n * torch.from_numpy(np.float64(dc))).sum()
    total.backward()
    res = {"output": out.detach().numpy(), "h_n": h_n.detach().numpy(), "dx": xt.grad.numpy(),
           "dh0": h0t.grad.numpy()}
    if kind == "lstm":
        res.update(c_n=c_n.detach().numpy(), dc0=c0t.grad.numpy())
    res.update({"grad " + n: p.grad.numpy() for n, p in module.named_parameters()})
    return res


CASES = [
    # (num_layers, bidirectional, ragged, batch_first)
    (1, False, False, False),
    (1, True, True, False),
    (2, True, True, False),
    (3, False, True, False),
    (3, True, False, False),
    (2, False, True, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("L,bidir,ragged,batch_first", CASES,
                         ids=[f"L{c[0]}-{'bi' if c[1] else 'uni'}-{'ragged' if c[2] else 'full'}"
                              + ("-batch_first" if c[3] else "") for c in CASES])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch(kind, L, bidir, ragged, batch_first, dtype):
    rng = np.random.default_rng(100 + L)
    D = 2 if bidir else 1
    ours = random_params(make_layer(kind, I, H, num_layers=L, bidirectional=bidir, batch_first=batch_first, seed=1,
                                    threads=1), rng, 0.5)
    if dtype is np.float64:
        ours.double()
    theirs = torch_module(kind, L, bidir, batch_first).double()
    theirs.load_state_dict({n: torch.from_numpy(np.float64(v)) for n, v in ours.state_dict().items()})

    shape = (B, T) if batch_first else (T, B)
    x = rng.standard_normal((*shape, I)).astype(np.float32)
    h0 = (rng.standard_normal((L * D, B, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((L * D, B, H)) * 0.5).astype(np.float32) if kind == "lstm" else None
    lengths = LENGTHS if ragged else None
    dy = rng.standard_normal((*shape, D * H)).astype(np.float32)
    dh = rng.standard_normal((L * D, B, H)).astype(np.float32)
    dc = rng.standard_normal((L * D, B, H)).astype(np.float32) if kind == "lstm" else None

    want = torch_run(kind, theirs, x, h0, c0, lengths, dy, dh, dc, batch_first)

    cast = (lambda a: a) if dtype is np.float32 else (lambda a: None if a is None else np.float64(a))
    ours.zero_grad()
    out, h_n, c_n = forward(ours, cast(x), cast(h0), cast(c0), lengths)
    dx, dh0, dc0 = backward(ours, cast(dy), cast(dh), cast(dc))
    got = {"output": out, "h_n": h_n, "dx": dx, "dh0": dh0}
    if kind == "lstm":
        got.update(c_n=c_n, dc0=dc0)
    got.update({"grad " + n: p.grad for n, p in ours.named_parameters()})

    assert set(got) == set(want)
    tol = TOL[dtype]
    for name, ref in want.items():
        assert got[name].dtype == dtype, name
        assert_close(got[name], ref, atol=tol, rtol=tol, what=name)
    assert np.abs(want["grad weight_hh_l0"]).max() > 1e-2  # not vacuous


@pytest.mark.parametrize("kind", KINDS)
def test_matches_torch_float32_default_init_unbatched(kind):
    """torch in float32 too, rnncore's default initialisation, unbatched (T, I) input."""
    rng = np.random.default_rng(7)
    ours = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=5)
    theirs = torch_module(kind, 2, True, False)
    theirs.load_state_dict({n: torch.from_numpy(v) for n, v in ours.state_dict().items()})
    x = rng.standard_normal((T, I)).astype(np.float32)
    out, h_n, c_n = forward(ours, x)
    with torch.no_grad():
        out_t, state = theirs(torch.from_numpy(x))
    h_t, c_t = state if kind == "lstm" else (state, None)
    assert out.shape == tuple(out_t.shape) and h_n.shape == tuple(h_t.shape)
    assert_close(out, out_t.numpy(), atol=1e-5, rtol=1e-5, what="output")
    assert_close(h_n, h_t.numpy(), atol=1e-5, rtol=1e-5, what="h_n")
    if kind == "lstm":
        assert_close(c_n, c_t.numpy(), atol=1e-5, rtol=1e-5, what="c_n")


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_names_and_shapes_match_torch(kind):
    ours = make_layer(kind, I, H, num_layers=3, bidirectional=True, seed=0)
    theirs = torch_module(kind, 3, True, False)
    a = {n: v.shape for n, v in ours.state_dict().items()}
    b = {n: tuple(v.shape) for n, v in theirs.state_dict().items()}
    assert list(a) == list(b)
    assert a == b
    # and loading torch tensors straight into rnncore works
    ours.load_state_dict(theirs.state_dict())
    for n, v in theirs.state_dict().items():
        np.testing.assert_array_equal(getattr(ours, n).data, v.numpy())


@pytest.mark.parametrize("kind", KINDS)
def test_cells_match_torch(kind):
    rng = np.random.default_rng(8)
    from helpers import make_cell

    ours = make_cell(kind, I, H, seed=3)
    if kind == "lstm":
        theirs = torch.nn.LSTMCell(I, H)
    elif kind == "gru":
        theirs = torch.nn.GRUCell(I, H)
    else:
        theirs = torch.nn.RNNCell(I, H, nonlinearity=kind[4:])
    theirs = theirs.double()
    theirs.load_state_dict({n: torch.from_numpy(np.float64(v)) for n, v in ours.state_dict().items()})
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    c = rng.standard_normal((B, H)).astype(np.float32)
    g = rng.standard_normal((B, H)).astype(np.float32)
    gc = rng.standard_normal((B, H)).astype(np.float32)
    xt, ht, ct = (torch.tensor(np.float64(a), requires_grad=True) for a in (x, h, c))
    ours.zero_grad()
    if kind == "lstm":
        h1, c1 = ours.forward(x, (h, c))
        dx = ours.backward(g, gc)
        dh, dc = ours.grad_hx
        h1t, c1t = theirs(xt, (ht, ct))
        ((h1t * torch.from_numpy(np.float64(g))).sum() + (c1t * torch.from_numpy(np.float64(gc))).sum()).backward()
        assert_close(c1, c1t.detach().numpy(), atol=1e-5, rtol=1e-5, what="c'")
        assert_close(dc, ct.grad.numpy(), atol=1e-5, rtol=1e-5, what="dc")
    else:
        h1 = ours.forward(x, h)
        dx = ours.backward(g)
        dh = ours.grad_hx
        h1t = theirs(xt, ht)
        (h1t * torch.from_numpy(np.float64(g))).sum().backward()
    assert_close(h1, h1t.detach().numpy(), atol=1e-5, rtol=1e-5, what="h'")
    assert_close(dx, xt.grad.numpy(), atol=1e-5, rtol=1e-5, what="dx")
    assert_close(dh, ht.grad.numpy(), atol=1e-5, rtol=1e-5, what="dh")
    for n, p in theirs.named_parameters():
        assert_close(getattr(ours, n).grad, p.grad.numpy(), atol=1e-5, rtol=1e-5, what=n)
