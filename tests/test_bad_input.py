"""Bad input is reported, never crashes: the right exception type, and a message that names
the argument and says what was expected and what came.

Python layers and cells (rnncore.nn) and the low-level rnncore._core.recurrent_forward /
recurrent_backward, which must raise TypeError/ValueError for anything the layers would
never pass it.
"""
import re

import numpy as np
import pytest

import rnncore
from helpers import KINDS, make_cell, make_layer
from rnncore import _core

T, B, I, H = 5, 3, 4, 7
f32 = np.float32


def shape(*dims):
    """A regex matching a shape as the messages print it, e.g. (4, 3, 7) or (3,)."""
    inner = ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "")
    return re.escape(f"({inner})")


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def net(kind):
    """2 layers, bidirectional: L*D = 4."""
    return make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=0, threads=1)


def hx_for(kind, h0, c0=None):
    if kind == "lstm":
        return (h0, np.zeros((4, B, H), f32) if c0 is None else c0)
    return h0


X = np.zeros((T, B, I), f32)
STATE = np.zeros((4, B, H), f32)


# -- forward: x ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [(I,), (1, 1, T, I)])
def test_x_wrong_rank(net, bad):
    with pytest.raises(ValueError, match=r"\bx must have rank 3 \(T, B, I\) or rank 2 \(T, I\).*got shape "
                                         + shape(*bad)):
        net.forward(np.zeros(bad, f32))


def test_x_scalar_reports_its_own_shape(net):
    with pytest.raises(ValueError, match=r"\bx must have rank 3 \(T, B, I\).*got shape \(\)"):
        net.forward(np.zeros((), f32))


def test_x_scalar_is_rejected(net):
    with pytest.raises(ValueError, match=r"\bx must have rank 3"):
        net.forward(np.zeros((), f32))


def test_cell_rejects_scalar_x(kind):
    cell = make_cell(kind, 1, H, seed=0)
    with pytest.raises(ValueError, match=r"\bx must have rank 2 \(B, I\) or rank 1 \(I,\) unbatched, got shape \(\)"):
        cell.forward(np.float32(2.0))


def test_x_wrong_rank_batch_first_names_layout(kind):
    layer = make_layer(kind, I, H, batch_first=True, seed=0)
    with pytest.raises(ValueError, match=r"\bx must have rank 3 \(B, T, I\).*got shape \(4,\)"):
        layer.forward(np.zeros(4, f32))


@pytest.mark.parametrize("bad", [(T, B, I + 2), (T, I - 1)])
def test_x_wrong_feature_size(net, bad):
    with pytest.raises(ValueError, match=rf"\bx must have input_size = {I} features.*got shape " + shape(*bad)):
        net.forward(np.zeros(bad, f32))


@pytest.mark.parametrize("bad", [
    np.array([[["a"] * I] * B] * T),                # strings
    np.empty((T, B, I), dtype=object),              # objects
    np.zeros((T, B, I), dtype=complex),             # complex
    np.zeros((T, B, I), dtype=bool),                # booleans
    "not an array",
], ids=["str", "object", "complex", "bool", "python-str"])
def test_x_non_numeric(net, bad):
    with pytest.raises(TypeError, match=r"\bx must be a real numeric array.*got dtype"):
        net.forward(bad)


def test_x_ragged_nested_list(net):
    with pytest.raises(TypeError, match=r"\bx must be a real numeric array, got list"):
        net.forward([[1.0, 2.0], [3.0]])


def test_integer_x_is_accepted_and_converted(net):
    out, _ = net.forward(np.ones((T, B, I), dtype=np.int64))
    assert out.dtype == np.float32


# -- forward: h0 / c0 ---------------------------------------------------------------------------


def test_h0_batch_mismatch(net, kind):
    with pytest.raises(ValueError, match=r"\bh0 must have shape \(L\*D, B, H\) " + shape(4, B, H) + ", got "
                                         + shape(4, B - 1, H)):
        net.forward(X, hx_for(kind, np.zeros((4, B - 1, H), f32)))


def test_c0_batch_mismatch():
    net = make_layer("lstm", I, H, num_layers=2, bidirectional=True, seed=0)
    with pytest.raises(ValueError, match=r"\bc0 must have shape \(L\*D, B, H\) " + shape(4, B, H) + ", got "
                                         + shape(4, B + 1, H)):
        net.forward(X, (STATE, np.zeros((4, B + 1, H), f32)))


@pytest.mark.parametrize("layers", [2, 1, 8])
def test_h0_wrong_layer_count(net, kind, layers):
    with pytest.raises(ValueError, match=r"\bh0 must have shape \(L\*D, B, H\) " + shape(4, B, H) + ", got "
                                         + shape(layers, B, H)):
        net.forward(X, hx_for(kind, np.zeros((layers, B, H), f32)))


def test_h0_wrong_hidden_size(net, kind):
    with pytest.raises(ValueError, match=r"\bh0 must have shape .*" + shape(4, B, H) + ", got " + shape(4, B, H + 1)):
        net.forward(X, hx_for(kind, np.zeros((4, B, H + 1), f32)))


def test_h0_for_unbatched_input(net, kind):
    with pytest.raises(ValueError, match=r"\bh0 must have shape \(L\*D, H\) for unbatched input " + shape(4, H)
                                         + ", got " + shape(4, 1, H)):
        net.forward(np.zeros((T, I), f32), hx_for(kind, np.zeros((4, 1, H), f32), np.zeros((4, H), f32)))


def test_h0_non_numeric(net, kind):
    with pytest.raises(TypeError, match=r"\bh0 must be a real numeric array.*got dtype <U"):
        net.forward(X, hx_for(kind, np.full((4, B, H), "a")))


@pytest.mark.parametrize("bad", [STATE, (STATE,), (STATE, STATE, STATE)], ids=["array", "1-tuple", "3-tuple"])
def test_lstm_hx_must_be_a_pair(bad):
    net = make_layer("lstm", I, H, num_layers=2, bidirectional=True, seed=0)
    with pytest.raises(TypeError, match=r"\bhx must be a tuple \(h0, c0\) for an LSTM, got (ndarray|tuple)"):
        net.forward(X, bad)


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh"])
def test_non_lstm_hx_must_be_an_array(kind):
    net = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=0)
    with pytest.raises(TypeError, match=r"\bhx must be an array \(L\*D, B, H\).*got a tuple"):
        net.forward(X, (STATE, STATE))


# -- forward: lengths ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[1, 2], [1, 2, 3, 4], [[1, 2, 3]]], ids=["short", "long", "2-D"])
def test_lengths_wrong_size(net, bad):
    got = np.asarray(bad).shape
    with pytest.raises(ValueError, match=r"\blengths must have shape \(B,\) = " + shape(B) + ", got " + shape(*got)):
        net.forward(X, lengths=bad)


@pytest.mark.parametrize("bad,idx,val", [([1, -1, 2], 1, -1), ([T + 1, 2, 2], 0, T + 1), ([0, 5, 100], 2, 100)])
def test_lengths_out_of_range(net, bad, idx, val):
    with pytest.raises(ValueError, match=re.escape(f"lengths must be in [0, T] = [0, {T}], got lengths[{idx}] = {val}")):
        net.forward(X, lengths=bad)


@pytest.mark.parametrize("bad", [[1.5, 2.0, 3.0], ["a", "b", "c"], [np.nan, 1.0, 1.0]], ids=["fraction", "str", "nan"])
def test_lengths_not_integers(net, bad):
    with pytest.raises(TypeError, match=r"\blengths must hold integers, got dtype"):
        net.forward(X, lengths=bad)


def test_lengths_integral_floats_are_accepted(net):
    a, _ = net.forward(X + 1, lengths=[1.0, 5.0, 0.0])
    b, _ = net.forward(X + 1, lengths=[1, 5, 0])
    np.testing.assert_array_equal(a, b)


# -- backward -----------------------------------------------------------------------------------


def test_backward_before_forward(net):
    with pytest.raises(rnncore.NoForwardError, match=r"backward: no forward to differentiate"):
        net.backward(np.zeros((T, B, 2 * H), f32))


def test_no_forward_error_is_value_and_runtime_error():
    assert issubclass(rnncore.NoForwardError, ValueError)
    assert issubclass(rnncore.NoForwardError, RuntimeError)


def test_backward_twice_after_one_forward(net):
    net.forward(X)
    net.backward(np.ones((T, B, 2 * H), f32))
    with pytest.raises(rnncore.NoForwardError, match=r"each forward can be differentiated once"):
        net.backward(np.ones((T, B, 2 * H), f32))


@pytest.mark.parametrize("layout", ["time_major", "batch_first", "unbatched"])
def test_grad_output_wrong_shape(kind, layout):
    net = make_layer(kind, I, H, num_layers=2, bidirectional=True, batch_first=layout == "batch_first", seed=0)
    if layout == "unbatched":
        net.forward(np.zeros((T, I), f32))
        want, expected_text = (T, 2 * H), r"\(T, D\*H\) like output "
    elif layout == "batch_first":
        net.forward(np.zeros((B, T, I), f32))
        want, expected_text = (B, T, 2 * H), r"\(B, T, D\*H\) like output "
    else:
        net.forward(X)
        want, expected_text = (T, B, 2 * H), r"\(T, B, D\*H\) like output "
    bad = want[:-1] + (H,)
    with pytest.raises(ValueError, match=r"\bgrad_output must have shape " + expected_text + shape(*want) + ", got "
                                         + shape(*bad)):
        net.backward(np.zeros(bad, f32))
    # A rejected backward does not consume the forward.
    dx = net.backward(np.zeros(want, f32))
    assert dx.shape[-1] == I


def test_grad_output_non_numeric(net):
    net.forward(X)
    with pytest.raises(TypeError, match=r"\bgrad_output must be a real numeric array"):
        net.backward(np.full((T, B, 2 * H), "x"))


def test_grad_h_n_wrong_shape(net, kind):
    net.forward(X)
    bad = np.zeros((4, B, H - 1), f32)
    g = (bad, None) if kind == "lstm" else bad
    with pytest.raises(ValueError, match=r"\bgrad_h_n must have shape \(L\*D, B, H\) " + shape(4, B, H) + ", got "
                                         + shape(4, B, H - 1)):
        net.backward(None, g)


def test_grad_c_n_wrong_shape():
    net = make_layer("lstm", I, H, num_layers=2, bidirectional=True, seed=0)
    net.forward(X)
    with pytest.raises(ValueError, match=r"\bgrad_c_n must have shape .*" + shape(4, B, H) + ", got " + shape(2, B, H)):
        net.backward(None, (None, np.zeros((2, B, H), f32)))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_grad_h_n_wrong_type_names_grad_h_n(kind):
    net = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=0)
    net.forward(X)
    bad = STATE if kind == "lstm" else (STATE,)  # LSTM wants a pair, GRU an array
    with pytest.raises(TypeError, match=r"\bgrad_h_n\b"):
        net.backward(None, bad)


def test_grad_h_n_wrong_type_is_a_type_error(kind):
    """A grad_h_n of the wrong kind is a TypeError."""
    net = make_layer(kind, I, H, num_layers=2, bidirectional=True, seed=0)
    net.forward(X)
    with pytest.raises(TypeError):
        net.backward(None, STATE if kind == "lstm" else (STATE,))


# -- constructors -------------------------------------------------------------------------------


@pytest.mark.parametrize("arg,args", [("input_size", (0, H)), ("hidden_size", (I, 0)), ("hidden_size", (I, -3)),
                                      ("num_layers", (I, H, 0))])
def test_constructor_non_positive_sizes(kind, arg, args):
    with pytest.raises(ValueError, match=rf"\b{arg} must be positive, got -?\d"):
        make_layer(kind, *args)


@pytest.mark.parametrize("args", [(4.0, H), (True, H), (I, "7")])
def test_constructor_non_integer_sizes(kind, args):
    with pytest.raises(TypeError, match=r"\b(input|hidden)_size must be an int, got (float|bool|str)"):
        make_layer(kind, *args)


@pytest.mark.parametrize("nl", ["sigmoid", "Tanh", None])
def test_bad_nonlinearity(nl):
    with pytest.raises(ValueError, match=r"\bnonlinearity must be 'tanh' or 'relu', got " + re.escape(repr(nl))):
        rnncore.nn.RNN(I, H, nonlinearity=nl)
    with pytest.raises(ValueError, match=r"\bnonlinearity must be 'tanh' or 'relu'"):
        rnncore.nn.RNNCell(I, H, nonlinearity=nl)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan")])
def test_dropout_out_of_range(kind, p):
    with pytest.raises(ValueError, match=r"\bdropout must be a number in \[0, 1\), got " + re.escape(repr(p))):
        make_layer(kind, I, H, num_layers=2, dropout=p)


@pytest.mark.parametrize("p", ["0.5", True, None])
def test_dropout_not_a_number(kind, p):
    with pytest.raises(TypeError, match=r"\bdropout must be a number in \[0, 1\), got \w+ " + re.escape(repr(p))):
        make_layer(kind, I, H, num_layers=2, dropout=p)


def test_dropout_with_one_layer_warns(kind):
    with pytest.warns(UserWarning, match=r"dropout=0.5 has no effect with num_layers=1"):
        make_layer(kind, I, H, dropout=0.5)


@pytest.mark.parametrize("dt", [np.int32, np.float16, "complex128"])
def test_bad_dtype(kind, dt):
    with pytest.raises(TypeError, match=r"\bdtype must be float32 or float64, got"):
        make_layer(kind, I, H, dtype=dt)
    with pytest.raises(TypeError, match=r"\bdtype must be float32 or float64, got"):
        make_cell(kind, I, H, dtype=dt)


def test_cell_constructor_errors(kind):
    with pytest.raises(ValueError, match=r"\bhidden_size must be positive, got 0"):
        make_cell(kind, I, 0)
    with pytest.raises(TypeError, match=r"\binput_size must be an int, got float"):
        make_cell(kind, 2.5, H)


# -- cells --------------------------------------------------------------------------------------


@pytest.fixture
def cell(kind):
    return make_cell(kind, I, H, seed=0, threads=1)


def state_arg(kind, h, c=None):
    if kind == "lstm":
        return (h, np.zeros_like(h) if c is None else c)
    return h


@pytest.mark.parametrize("bad", [(2, B, I)])
def test_cell_x_wrong_rank(cell, bad):
    with pytest.raises(ValueError, match=r"\bx must have rank 2 \(B, I\) or rank 1 \(I,\) unbatched, got shape "
                                         + shape(*bad)):
        cell.forward(np.zeros(bad, f32))


def test_cell_x_wrong_features(cell):
    with pytest.raises(ValueError, match=rf"\bx must have input_size = {I} features.*got shape " + shape(B, I + 1)):
        cell.forward(np.zeros((B, I + 1), f32))


def test_cell_x_non_numeric(cell):
    with pytest.raises(TypeError, match=r"\bx must be a real numeric array"):
        cell.forward(np.full((B, I), "a"))


def test_cell_state_batch_mismatch(cell, kind):
    name = "hx\\[0\\]" if kind == "lstm" else "hx"
    with pytest.raises(ValueError, match=rf"\b{name} must have shape \(B, H\) " + shape(B, H) + ", got "
                                         + shape(B + 1, H)):
        cell.forward(np.zeros((B, I), f32), state_arg(kind, np.zeros((B + 1, H), f32), np.zeros((B, H), f32)))


def test_cell_state_unbatched(cell, kind):
    name = "hx\\[0\\]" if kind == "lstm" else "hx"
    with pytest.raises(ValueError, match=rf"\b{name} must have shape \(H,\) for unbatched input " + shape(H)
                                         + ", got " + shape(1, H)):
        cell.forward(np.zeros(I, f32), state_arg(kind, np.zeros((1, H), f32), np.zeros(H, f32)))


def test_lstm_cell_c_wrong_shape():
    cell = make_cell("lstm", I, H, seed=0)
    with pytest.raises(ValueError, match=r"\bhx\[1\] must have shape \(B, H\) " + shape(B, H) + ", got " + shape(B, 2)):
        cell.forward(np.zeros((B, I), f32), (np.zeros((B, H), f32), np.zeros((B, 2), f32)))


@pytest.mark.parametrize("bad", [np.zeros((B, H), f32), (np.zeros((B, H), f32),)], ids=["array", "1-tuple"])
def test_lstm_cell_hx_must_be_a_pair(bad):
    cell = make_cell("lstm", I, H, seed=0)
    with pytest.raises(TypeError, match=r"\bhx must be a tuple \(h, c\) or None"):
        cell.forward(np.zeros((B, I), f32), bad)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru"])
def test_cell_state_error_names_hx(kind):
    cell = make_cell(kind, I, H, seed=0)
    with pytest.raises(ValueError, match=r"\bhx must have shape"):
        cell.forward(np.zeros((B, I), f32), hx=np.zeros((B + 1, H), f32))


def test_cell_backward_before_forward(cell, kind):
    g = np.zeros((B, H), f32)
    with pytest.raises(rnncore.NoForwardError, match=r"backward: no forward to differentiate"):
        cell.backward(g, g) if kind == "lstm" else cell.backward(g)


def test_cell_backward_in_eval_mode_has_nothing_to_differentiate(cell, kind):
    cell.eval()
    cell.forward(np.zeros((B, I), f32))
    with pytest.raises(rnncore.NoForwardError, match=r"in training mode"):
        cell.backward(np.zeros((B, H), f32))


def test_cell_backward_more_often_than_forward(cell):
    cell.forward(np.zeros((B, I), f32))
    cell.backward(np.zeros((B, H), f32))
    with pytest.raises(rnncore.NoForwardError):
        cell.backward(np.zeros((B, H), f32))


def test_cell_backward_wrong_grad_shape_keeps_the_step(cell, kind):
    cell.forward(np.zeros((B, I), f32))
    with pytest.raises(ValueError, match=r"\bgrad_h must have shape \(B, H\) " + shape(B, H) + ", got "
                                         + shape(B, H + 1)):
        cell.backward(np.zeros((B, H + 1), f32))
    if kind == "lstm":
        with pytest.raises(ValueError, match=r"\bgrad_c must have shape \(B, H\) " + shape(B, H) + ", got "
                                             + shape(1, H)):
            cell.backward(np.zeros((B, H), f32), np.zeros((1, H), f32))
    dx = cell.backward(np.zeros((B, H), f32))  # the saved step is still there
    assert dx.shape == (B, I)


# -- low level: rnncore._core -------------------------------------------------------------------


def lowlevel_args(kind="lstm", dtype=f32):
    G = {"lstm": 4, "gru": 3}.get(kind, 1)
    return dict(cell=kind, x=np.zeros((T, B, I), dtype), w_ih=np.zeros((G * H, I), dtype),
                w_hh=np.zeros((G * H, H), dtype), out=np.zeros((T, B, H), dtype))


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


FORWARD_BAD = {
    # name: (overrides, exception, message regex)
    "x float64, w float32": (dict(x=np.zeros((T, B, I))), TypeError, r"\bw_hh must have dtype float64, got float32"),
    "x int64": (dict(x=np.zeros((T, B, I), np.int64)), TypeError, r"\bx must have dtype float32 or float64, got int64"),
    "w_ih float64": (dict(w_ih=np.zeros((4 * H, I))), TypeError, r"\bw_ih must have dtype float32, got float64"),
    "out float64": (dict(out=np.zeros((T, B, H))), TypeError, r"\bout must have dtype float32, got float64"),
    "w_ih list": (dict(w_ih=[[0.0] * I] * (4 * H)), TypeError, r"\bw_ih must be a numpy array, got .*list"),
    "x list": (dict(x=[[[0.0] * I] * B] * T), TypeError, r"incompatible function arguments"),
    "out missing": (dict(out=None), TypeError, r"\bout must be a numpy array, got .*NoneType"),
    "x non-contiguous": (dict(x=np.zeros((T, B, 2 * I), f32)[:, :, ::2]), ValueError, r"\bx must be C-contiguous"),
    "w_ih fortran": (dict(w_ih=np.asfortranarray(np.zeros((4 * H, I), f32))), ValueError,
                     r"\bw_ih must be C-contiguous"),
    "out non-contiguous": (dict(out=np.zeros((T, B, 2 * H), f32)[:, :, ::2]), ValueError,
                           r"\bout must be C-contiguous"),
    "out read-only": (dict(out=read_only(np.zeros((T, B, H), f32))), ValueError, r"\bout must be writeable"),
    "out too narrow": (dict(out=np.zeros((T, B, H - 1), f32)), ValueError,
                       re.escape(f"out columns [out_col, out_col + H) = [0, {H}) must lie within out's last "
                                 f"dimension {H - 1}")),
    "out_col too far": (dict(out_col=1), ValueError, re.escape(f"[out_col, out_col + H) = [1, {H + 1})")),
    "out_col negative": (dict(out_col=-1), ValueError, re.escape(f"[out_col, out_col + H) = [-1, {H - 1})")),
    # out_col + H overflows int64: the check must not wrap around and pass.
    "out_col near 2**63": (dict(out_col=2**63 - 1), ValueError,
                           re.escape(f"[out_col, out_col + H) = [{2**63 - 1}, {2**63 - 1} + {H})")),
    "out_col 2**62": (dict(out_col=2**62), ValueError, re.escape(f"= [{2**62}, {2**62 + H})")),
    "out wrong batch": (dict(out=np.zeros((T, B + 1, H), f32)), ValueError,
                        r"\bout must have shape " + shape(T, B, "*").replace("\\*", "\\*")),
    "x rank 2": (dict(x=np.zeros((B, I), f32)), ValueError, r"\bx must have shape \(\*, \*, \*\), got " + shape(B, I)),
    "bad cell": (dict(cell="conv"), ValueError, r"\bcell must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu', got 'conv'"),
    "cell vs w_hh": (dict(cell="gru"), ValueError, r"\bw_hh must have shape \(G\*H, H\) = " + shape(3 * H, H)
                     + " for a gru cell, got " + shape(4 * H, H)),
    "w_ih wrong": (dict(w_ih=np.zeros((4 * H, I + 1), f32)), ValueError, r"\bw_ih must have shape "
                   + shape(4 * H, I) + ", got " + shape(4 * H, I + 1)),
    "b_ih wrong": (dict(b_ih=np.zeros(4 * H + 1, f32)), ValueError, r"\bb_ih must have shape " + shape(4 * H)
                   + ", got " + shape(4 * H + 1)),
    "h0 wrong": (dict(h0=np.zeros((B, H + 1), f32)), ValueError, r"\bh0 must have shape " + shape(B, H) + ", got "
                 + shape(B, H + 1)),
    "c0 float64": (dict(c0=np.zeros((B, H))), TypeError, r"\bc0 must have dtype float32, got float64"),
    "lengths int32": (dict(lengths=np.array([1, 2, 3], np.int32)), TypeError,
                      r"\blengths must have dtype int64, got int32"),
    "lengths short": (dict(lengths=np.array([1, 2])), ValueError, r"\blengths must have shape " + shape(B)
                      + ", got " + shape(2)),
    "lengths > T": (dict(lengths=np.array([1, 2, T + 4])), ValueError,
                    re.escape(f"lengths[2] must be in [0, T] = [0, {T}], got {T + 4}")),
    "lengths < 0": (dict(lengths=np.array([1, -2, 3])), ValueError,
                    re.escape(f"lengths[1] must be in [0, T] = [0, {T}], got -2")),
    "threads 0": (dict(threads=0), ValueError, r"\bthreads must be >= 1 \(resolved in Python\), got 0"),
}


@pytest.mark.parametrize("case", list(FORWARD_BAD))
def test_lowlevel_forward_rejects(case):
    overrides, exc, msg = FORWARD_BAD[case]
    args = lowlevel_args()
    args.update(overrides)
    with pytest.raises(exc, match=msg):
        _core.recurrent_forward(**args)


def test_lowlevel_c0_only_for_lstm():
    args = lowlevel_args("rnn_tanh")
    with pytest.raises(ValueError, match=r"\bc0 is only for lstm cells, got one for rnn_tanh"):
        _core.recurrent_forward(**args, c0=np.zeros((B, H), f32))


def test_lowlevel_forward_ok_baseline():
    """The baseline arguments of the cases above are valid (so each case fails for its own reason)."""
    h_n, c_n, ws = _core.recurrent_forward(**lowlevel_args())
    assert h_n.shape == (B, H) and c_n.shape == (B, H)
    assert ws.ready and ws.dtype == "float32" and ws.cell == "lstm"


@pytest.fixture
def ready_workspace():
    a = lowlevel_args()
    _, _, ws = _core.recurrent_forward(**a)
    grads = dict(w_ih=a["w_ih"], w_hh=a["w_hh"], dw_ih=np.zeros_like(a["w_ih"]), dw_hh=np.zeros_like(a["w_hh"]),
                 dx=np.zeros_like(a["x"]))
    return ws, grads


BACKWARD_BAD = {
    "dw_ih float64": (dict(dw_ih=np.zeros((4 * H, I))), TypeError, r"\bdw_ih must have dtype float32, got float64"),
    "dw_hh read-only": (dict(dw_hh=read_only(np.zeros((4 * H, H), f32))), ValueError, r"\bdw_hh must be writeable"),
    "dx wrong": (dict(dx=np.zeros((T, B, I + 1), f32)), ValueError, r"\bdx must have shape " + shape(T, B, I)
                 + ", got " + shape(T, B, I + 1)),
    "dx non-contiguous": (dict(dx=np.zeros((T, B, 2 * I), f32)[:, :, ::2]), ValueError, r"\bdx must be C-contiguous"),
    "dy too narrow": (dict(dy=np.zeros((T, B, H - 1), f32)), ValueError,
                      re.escape(f"dy columns [dy_col, dy_col + H) = [0, {H}) must lie within dy's last dimension "
                                f"{H - 1}")),
    "dy_col near 2**63": (dict(dy=np.zeros((T, B, H), f32), dy_col=2**63 - 1), ValueError,
                          re.escape(f"[dy_col, dy_col + H) = [{2**63 - 1}, {2**63 - 1} + {H})")),
    "dy_col too far": (dict(dy=np.zeros((T, B, H), f32), dy_col=2), ValueError,
                       re.escape(f"[dy_col, dy_col + H) = [2, {H + 2})")),
    "dy float64": (dict(dy=np.zeros((T, B, H))), TypeError, r"\bdy must have dtype float32, got float64"),
    "dh_n wrong": (dict(dh_n=np.zeros((B + 1, H), f32)), ValueError, r"\bdh_n must have shape " + shape(B, H)),
    "w_hh wrong": (dict(w_hh=np.zeros((4 * H, H + 1), f32)), ValueError, r"\bw_hh must have shape "
                   + shape(4 * H, H)),
    "db_ih wrong": (dict(db_ih=np.zeros(3, f32)), ValueError, r"\bdb_ih must have shape " + shape(4 * H)),
    "threads negative": (dict(threads=-1), ValueError, r"\bthreads must be >= 1 \(resolved in Python\), got -1"),
}


@pytest.mark.parametrize("case", list(BACKWARD_BAD))
def test_lowlevel_backward_rejects(ready_workspace, case):
    ws, args = ready_workspace
    overrides, exc, msg = BACKWARD_BAD[case]
    args = dict(args, dy=None)
    args.update(overrides)
    with pytest.raises(exc, match=msg):
        _core.recurrent_backward(ws, **args)
    # A rejected call leaves the forward to differentiate.
    assert ws.ready
    _core.recurrent_backward(ws, None, **ready_workspace[1])
    assert not ws.ready


def test_lowlevel_backward_workspace_states(ready_workspace):
    ws, args = ready_workspace
    with pytest.raises(TypeError, match=r"\bworkspace must be a RecurrentWorkspace, got None"):
        _core.recurrent_backward(None, None, **args)
    with pytest.raises(TypeError, match=r"incompatible function arguments"):
        _core.recurrent_backward("workspace", None, **args)
    with pytest.raises(ValueError, match=r"\bworkspace holds no forward to differentiate"):
        _core.recurrent_backward(_core.RecurrentWorkspace(), None, **args)
    _core.recurrent_backward(ws, None, **args)
    with pytest.raises(ValueError, match=r"\bworkspace holds no forward to differentiate"):
        _core.recurrent_backward(ws, None, **args)


def test_lowlevel_dc_n_only_for_lstm():
    a = lowlevel_args("gru")
    _, _, ws = _core.recurrent_forward(**a)
    with pytest.raises(ValueError, match=r"\bdc_n is only for lstm cells, got one for gru"):
        _core.recurrent_backward(ws, None, dc_n=np.zeros((B, H), f32), w_ih=a["w_ih"], w_hh=a["w_hh"],
                                 dw_ih=np.zeros_like(a["w_ih"]), dw_hh=np.zeros_like(a["w_hh"]),
                                 dx=np.zeros_like(a["x"]))


def test_lowlevel_failed_forward_leaves_no_forward(ready_workspace):
    """A forward that fails inside the kernel (length out of range) must not leave a stale, ready workspace."""
    ws, args = ready_workspace
    bad = lowlevel_args()
    with pytest.raises(ValueError, match=r"lengths\[0\]"):
        _core.recurrent_forward(**bad, lengths=np.array([T + 1, 1, 1]), workspace=ws)
    assert not ws.ready
    with pytest.raises(ValueError, match=r"no forward to differentiate"):
        _core.recurrent_backward(ws, None, **args)


def test_lowlevel_float64_workspace_rejects_float32_gradients():
    a = lowlevel_args(dtype=np.float64)
    _, _, ws = _core.recurrent_forward(**a)
    assert ws.dtype == "float64"
    with pytest.raises(TypeError, match=r"\bdw_ih must have dtype float64 \(the forward's\), got float32"):
        _core.recurrent_backward(ws, None, w_ih=a["w_ih"], w_hh=a["w_hh"], dw_ih=np.zeros(a["w_ih"].shape, f32),
                                 dw_hh=np.zeros_like(a["w_hh"]), dx=np.zeros_like(a["x"]))


# -- load_state_dict ----------------------------------------------------------------------------


def test_load_state_dict_missing_and_unexpected(net):
    sd = net.state_dict()
    sd.pop("weight_hh_l1_reverse")
    sd["weight_hh_l9"] = np.zeros(3)
    with pytest.raises(KeyError, match=r"missing weight_hh_l1_reverse; unexpected weight_hh_l9"):
        net.load_state_dict(sd)


def test_load_state_dict_wrong_shape_changes_nothing(net):
    sd = net.state_dict()
    before = {n: v.copy() for n, v in sd.items()}
    for name in sd:
        sd[name] = sd[name] + 1  # valid new values...
    G = net.weight_hh_l0.shape[0]
    sd["weight_hh_l1"] = np.zeros((G, H + 1))  # ...and one bad one (not the first)
    with pytest.raises(ValueError, match=r"\bweight_hh_l1 must have shape " + shape(G, H) + ", got " + shape(G, H + 1)):
        net.load_state_dict(sd)
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=f"{name} was modified by a failed load")


def test_load_state_dict_non_strict_loads_what_is_there(net):
    sd = {"weight_ih_l0": np.ones(net.weight_ih_l0.shape)}
    net.load_state_dict(sd, strict=False)
    assert np.all(net.weight_ih_l0.data == 1)
