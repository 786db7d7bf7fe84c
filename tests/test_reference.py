"""Validate the numpy reference (tests/reference.py) against PyTorch, float64.

The reference is what every other forward test trusts, so it is itself checked against an
independent implementation: torch.nn.RNN/LSTM/GRU, with pack_padded_sequence for ragged
lengths (torch needs lengths >= 1).
"""
import numpy as np
import pytest

from helpers import KINDS, assert_close
from reference import GATES, rnn_forward

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

RTOL = ATOL = 1e-12


def torch_module(kind, I, H, L, bias, bidirectional):
    if kind == "lstm":
        m = torch.nn.LSTM(I, H, L, bias=bias, bidirectional=bidirectional)
    elif kind == "gru":
        m = torch.nn.GRU(I, H, L, bias=bias, bidirectional=bidirectional)
    else:
        m = torch.nn.RNN(I, H, L, nonlinearity=kind[4:], bias=bias, bidirectional=bidirectional)
    return m.double()


def run_torch(m, kind, x, h0, c0, lengths):
    xt = torch.from_numpy(x)
    hx = None
    if h0 is not None:
        hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if kind == "lstm" else torch.from_numpy(h0)
    with torch.no_grad():
        if lengths is None:
            out, state = m(xt, hx)
        else:
            packed = pack_padded_sequence(xt, torch.from_numpy(np.asarray(lengths)), enforce_sorted=False)
            out, state = m(packed, hx)
            out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    if kind == "lstm":
        return out.numpy(), state[0].numpy(), state[1].numpy()
    return out.numpy(), state.numpy(), None


CASES = [
    # (kind, num_layers, bidirectional, bias, ragged, with_h0)
    *[(k, 1, False, True, False, False) for k in KINDS],
    *[(k, 1, False, True, True, True) for k in KINDS],
    *[(k, 1, True, True, True, True) for k in KINDS],
    *[(k, 2, True, False, True, True) for k in KINDS],
    *[(k, 3, False, True, False, True) for k in KINDS],
]


@pytest.mark.parametrize("kind,L,bidir,bias,ragged,with_h0", CASES)
def test_reference_matches_torch(kind, L, bidir, bias, ragged, with_h0):
    rng = np.random.default_rng(7)
    T, B, I, H = 5, 4, 3, 6
    D = 2 if bidir else 1
    m = torch_module(kind, I, H, L, bias, bidir)
    params = {}
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.6, 0.6, size=tuple(p.shape))))
            params[name] = p.detach().numpy().copy()
    if not bias:
        assert not any(n.startswith("bias") for n in params)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L * D, B, H)) * 0.5 if with_h0 else None
    c0 = rng.standard_normal((L * D, B, H)) * 0.5 if (with_h0 and kind == "lstm") else None
    lengths = np.array([3, 5, 1, 4]) if ragged else None

    out_t, hn_t, cn_t = run_torch(m, kind, x, h0, c0, lengths)
    out_r, hn_r, cn_r = rnn_forward(kind, x, params, L, bidir, h0, c0, lengths)

    assert out_r.shape == (T, B, D * H)
    assert_close(out_r, out_t, atol=ATOL, rtol=RTOL, what="output")
    assert_close(hn_r, hn_t, atol=ATOL, rtol=RTOL, what="h_n")
    if kind == "lstm":
        assert_close(cn_r, cn_t, atol=ATOL, rtol=RTOL, what="c_n")
    # The comparison is not vacuous: the outputs are far from zero where sequences run.
    assert np.abs(out_t).max() > 0.1


def test_reference_gate_counts():
    assert GATES == {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
