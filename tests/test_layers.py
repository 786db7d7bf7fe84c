"""Embedding, Linear, Dropout, LayerNorm and the fused cross-entropy: float64 gradient checks,
bad input, determinism across threads, and parity with PyTorch when it is installed."""
import numpy as np
import pytest

import rnncore
from rnncore import NoForwardError
from rnncore import nn
from gradcheck import numeric_grad
from helpers import assert_close

V, E, H, T, B = 11, 5, 7, 5, 3
F64 = np.float64


# ---------------------------------------------------------------------------------------------
# Module: registration, as in PyTorch


def test_register_parameter_and_none():
    m = nn.Module()
    w = nn.Parameter(np.ones(3))
    m.register_parameter("w", w)
    m.register_parameter("b", None)
    assert m.w is w and m.b is None
    assert [n for n, _ in m.named_parameters()] == ["w"] and list(m.state_dict()) == ["w"]
    m.b = nn.Parameter(np.zeros(2))  # a declared name takes a Parameter later
    assert [n for n, _ in m.named_parameters()] == ["w", "b"]
    m.b = None
    assert m.b is None and [n for n, _ in m.named_parameters()] == ["w"]
    with pytest.raises(TypeError, match=r"cannot assign ndarray to parameter 'w'"):
        m.w = np.zeros(3)
    with pytest.raises(TypeError, match=r"'x' must be a Parameter or None, got ndarray"):
        m.register_parameter("x", np.zeros(3))
    with pytest.raises(KeyError, match="without '.'"):
        m.register_parameter("a.b", None)
    m.plain = 3
    with pytest.raises(KeyError, match="attribute 'plain' already exists"):
        m.register_parameter("plain", None)


def test_register_module_and_none():
    parent = nn.Module()
    parent.register_module("child", nn.Linear(2, 3, seed=0))
    parent.register_module("absent", None)
    assert parent.absent is None
    assert [n for n, _ in parent.named_modules()] == ["", "child"]
    assert list(parent.state_dict()) == ["child.weight", "child.bias"]
    assert "absent" not in repr(parent)
    parent.child = None
    assert parent.child is None and parent.parameters() == []
    with pytest.raises(TypeError, match=r"cannot assign int as child module 'child'"):
        parent.child = 3
    with pytest.raises(TypeError, match=r"'y' must be a Module or None, got str"):
        parent.register_module("y", "linear")
    parent.to(np.float64).train(False)  # None entries are skipped everywhere


def test_layers_without_optional_parameters_declare_them_none():
    lin = nn.Linear(3, 2, bias=False)
    assert lin.bias is None and list(lin.state_dict()) == ["weight"]
    ln = nn.LayerNorm(4, elementwise_affine=False)
    assert ln.weight is None and ln.bias is None and ln.parameters() == []
    clf = nn.SequenceClassifier(input_size=3, hidden_size=4, num_classes=2)
    assert clf.embedding is None and not any(n.startswith("embedding") for n in clf.state_dict())
    gen = nn.ConditionedGenerator(9, 4, 5, 3, cell="gru", condition="input")
    assert gen.init_h is None and gen.init_c is None and gen.feature_proj is not None


def test_cells_share_rnncellbase():
    for cls, cell in ((nn.RNNCell, "rnn_tanh"), (nn.GRUCell, "gru"), (nn.LSTMCell, "lstm")):
        c = cls(3, 4, seed=0)
        assert isinstance(c, nn.RNNCellBase) and c.cell == cell
    with pytest.raises(TypeError, match="grad_c is the gradient of an LSTM's cell state"):
        g = nn.GRUCell(3, 4, seed=0)
        g.forward(np.zeros((2, 3), np.float32))
        g.backward(np.zeros((2, 4)), np.zeros((2, 4)))


def test_layer_parameters_are_the_named_ones():
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0)
    w_ih, w_hh, b_ih, b_hh = lstm.layer_parameters(1, 1)
    assert w_ih is lstm.weight_ih_l1_reverse and b_hh is lstm.bias_hh_l1_reverse
    assert lstm.layer_parameters(0)[0] is lstm.weight_ih_l0
    assert nn.GRU(3, 4, bias=False).layer_parameters(0)[2:] == (None, None)
    with pytest.raises(ValueError, match=r"layer must be in \[0, 1\], got 2"):
        lstm.layer_parameters(2)
    with pytest.raises(ValueError, match=r"direction must be in \[0, 0\], got 1"):
        nn.LSTM(3, 4).layer_parameters(0, 1)


def test_named_generators_walk_the_tree():
    model = nn.LanguageModel(7, 4, 4, num_layers=2, dropout=0.1, seed=0)
    gens = dict(model.named_generators())
    assert {"rnn._rng", "drop_in.rng", "drop_out.rng"} == set(gens)
    assert gens["drop_in.rng"] is gens["drop_out.rng"] is model.drop_in.rng  # shared: listed under each name
    assert [n for n, _ in nn.Dropout(0.5).named_generators()] == ["rng"]


# ---------------------------------------------------------------------------------------------
# Embedding


def test_embedding_forward_gathers_rows_any_shape():
    emb = nn.Embedding(V, E, dtype=F64, seed=0)
    ids = np.array([[[1, 2], [10, 0]], [[3, 3], [4, 5]]])
    out = emb(ids)
    assert out.shape == (2, 2, 2, E) and out.dtype == F64
    np.testing.assert_array_equal(out, emb.weight.data[ids])
    assert emb(np.int32(7)).shape == (E,)  # a scalar id gives one row


def test_embedding_init_and_padding_row():
    emb = nn.Embedding(1000, 20, padding_idx=3, seed=1)
    assert emb.weight.dtype == np.float32
    assert np.all(emb.weight.data[3] == 0)
    w = np.delete(emb.weight.data, 3, axis=0)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1) as in PyTorch
    assert nn.Embedding(5, 2, padding_idx=-1).padding_idx == 4


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_gradient_repeated_ids(padding_idx):
    rng = np.random.default_rng(0)
    emb = nn.Embedding(V, E, padding_idx=padding_idx, dtype=F64, seed=0)
    ids = np.array([[2, 2, 5], [0, 2, 10], [5, 5, 5], [1, 2, 3]])  # repeats and the padding id
    r = rng.standard_normal(ids.shape + (E,))

    def f():
        return float(np.sum(emb(ids) * r))

    emb.zero_grad()
    emb(ids)
    emb.backward(r)
    expected = numeric_grad(f, emb.weight.data)
    if padding_idx is not None:
        expected[padding_idx] = 0  # PyTorch: the padding row receives no gradient
        assert np.all(emb.weight.grad[padding_idx] == 0)
    assert_close(emb.weight.grad, expected, atol=1e-7, rtol=1e-5, what="dW")
    # backward adds into the gradient
    emb(ids)
    emb.backward(r)
    assert_close(emb.weight.grad, 2 * expected, atol=1e-7, rtol=1e-5, what="accumulated dW")


@pytest.mark.parametrize("bad,pos", [(11, "[1, 2]"), (-1, "[1, 2]"), (10**12, "[1, 2]")])
def test_embedding_rejects_out_of_range_ids(bad, pos):
    emb = nn.Embedding(V, E)
    ids = np.array([[0, 1, 2], [3, 4, bad]])
    with pytest.raises(ValueError, match=rf"token id {bad} at position \{pos}.*out of range \[0, 11\)"):
        emb(ids)
    with pytest.raises(ValueError, match="out of range"):
        rnncore._core.embedding_backward(np.zeros((2, 3, E), np.float32), ids, emb.weight.grad)
    assert np.all(emb.weight.grad == 0)  # nothing was touched


def test_embedding_rejects_non_integer_ids():
    emb = nn.Embedding(V, E)
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([True, False]))
    with pytest.raises(TypeError, match="integer"):
        emb("abc")


def test_embedding_backward_errors():
    emb = nn.Embedding(V, E)
    with pytest.raises(NoForwardError):
        emb.backward(np.zeros((2, E)))
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"grad_output must have shape"):
        emb.backward(np.zeros((3, E)))


def test_embedding_backward_deterministic_across_threads():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 50, size=(400, 40))
    g = rng.standard_normal(ids.shape + (64,)).astype(np.float32)
    grads = []
    for threads in (1, 2):
        dw = np.zeros((50, 64), np.float32)
        rnncore._core.embedding_backward(g, ids, dw, -1, threads)
        grads.append(dw)
    np.testing.assert_array_equal(grads[0], grads[1])
    ref = np.zeros((50, 64))
    np.add.at(ref, ids.reshape(-1), g.reshape(-1, 64).astype(F64))
    np.testing.assert_allclose(grads[0], ref, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Linear


def test_linear_init_bounds():
    lin = nn.Linear(400, 30, seed=0)
    k = 1 / np.sqrt(400)
    assert lin.weight.shape == (30, 400) and lin.bias.shape == (30,)
    for p in (lin.weight.data, lin.bias.data):
        assert p.min() >= -k and p.max() <= k
    assert lin.weight.data.max() > 0.9 * k and lin.weight.data.min() < -0.9 * k
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_3d_input(bias):
    rng = np.random.default_rng(1)
    lin = nn.Linear(E, H, bias=bias, dtype=F64, seed=2)
    x = rng.standard_normal((T, B, E))
    r = rng.standard_normal((T, B, H))

    def f():
        return float(np.sum(lin(x) * r))

    y = lin(x)
    assert y.shape == (T, B, H)
    assert_close(y, x @ lin.weight.data.T + (lin.bias.data if bias else 0), atol=1e-12, rtol=1e-5, what="y")
    lin.zero_grad()
    lin(x)
    dx = lin.backward(r)
    assert_close(dx, numeric_grad(f, x), atol=1e-7, rtol=1e-5, what="dx")
    assert_close(lin.weight.grad, numeric_grad(f, lin.weight.data), atol=1e-7, rtol=1e-5, what="dW")
    if bias:
        assert_close(lin.bias.grad, numeric_grad(f, lin.bias.data), atol=1e-7, rtol=1e-5, what="db")
    # accumulates
    g0 = lin.weight.grad.copy()
    lin(x)
    lin.backward(r, need_input_grad=False)
    assert_close(lin.weight.grad, 2 * g0, atol=1e-12, rtol=1e-5, what="accumulated dW")


def test_linear_float32_and_bad_input():
    lin = nn.Linear(4, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 4))
    y = lin(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x @ lin.weight.data.T.astype(F64) + lin.bias.data, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"in_features\) = \(\.\.\., 4\)"):
        lin(np.zeros((2, 5)))
    with pytest.raises(TypeError):
        lin(np.array(["a", "b"]))
    lin(x)
    with pytest.raises(ValueError, match="grad_output"):
        lin.backward(np.zeros((6, 4)))


# ---------------------------------------------------------------------------------------------
# Dropout


def test_dropout_masks_scales_and_reuses_mask():
    d = nn.Dropout(0.25, seed=0)
    x = np.ones((200, 50))
    y = d(x)
    kept = y != 0
    assert np.allclose(y[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.02
    g = np.arange(x.size, dtype=F64).reshape(x.shape)
    np.testing.assert_array_equal(d.backward(g), g * (y / x))  # the same mask
    with pytest.raises(NoForwardError):
        d.backward(g)
    # seeded: same masks; eval: identity
    np.testing.assert_array_equal(nn.Dropout(0.25, seed=0)(x), y)
    d.eval()
    assert d(x) is not None and np.array_equal(d(x), x)
    np.testing.assert_array_equal(d.backward(g), g)
    assert np.all(nn.Dropout(1.0)(x) == 0)
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    with pytest.raises(TypeError):
        nn.Dropout(0.5, rng=np.random.RandomState(0))


def test_dropout_gradient_with_fixed_mask():
    rng = np.random.default_rng(0)
    gen = np.random.default_rng(5)
    d = nn.Dropout(0.4, rng=gen)
    x = rng.standard_normal((T, B, H))
    r = rng.standard_normal((T, B, H))
    state = gen.bit_generator.state

    def f():
        gen.bit_generator.state = state  # the same mask at every evaluation
        return float(np.sum(d(x) * r))

    f()
    dx = d.backward(r)
    assert_close(dx, numeric_grad(f, x), atol=1e-7, rtol=1e-5, what="dx")


# ---------------------------------------------------------------------------------------------
# LayerNorm


@pytest.mark.parametrize("shape,affine", [((H,), True), ((2, 3), True), ((H,), False)])
def test_layernorm_gradients(shape, affine):
    rng = np.random.default_rng(4)
    ln = nn.LayerNorm(shape, elementwise_affine=affine, dtype=F64)
    if affine:
        ln.weight.data[...] = rng.standard_normal(shape)
        ln.bias.data[...] = rng.standard_normal(shape)
    x = rng.standard_normal((T, B) + shape) * 3 + 1
    r = rng.standard_normal(x.shape)

    def f():
        return float(np.sum(ln(x) * r))

    y = ln(x)
    axes = tuple(range(2, 2 + len(shape)))
    ref = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-5)
    if affine:
        ref = ref * ln.weight.data + ln.bias.data
    assert_close(y, ref, atol=1e-12, rtol=1e-5, what="y")
    ln.zero_grad()
    ln(x)
    dx = ln.backward(r)
    assert_close(dx, numeric_grad(f, x), atol=1e-7, rtol=1e-5, what="dx")
    if affine:
        assert_close(ln.weight.grad, numeric_grad(f, ln.weight.data), atol=1e-7, rtol=1e-5, what="dgamma")
        assert_close(ln.bias.grad, numeric_grad(f, ln.bias.data), atol=1e-7, rtol=1e-5, what="dbeta")
    else:
        assert ln.parameters() == []


def test_layernorm_bad_input_and_threads():
    ln = nn.LayerNorm(8)
    with pytest.raises(ValueError, match="normalized_shape"):
        ln(np.zeros((3, 7)))
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    ln = nn.LayerNorm(64, threads=1)
    ln.weight.data[...] = 1.5
    y1 = ln(x)
    g1 = ln.backward(x)
    dw1 = ln.weight.grad.copy()
    ln.zero_grad()
    ln.threads = 2
    np.testing.assert_array_equal(ln(x), y1)
    np.testing.assert_array_equal(ln.backward(x), g1)
    np.testing.assert_array_equal(ln.weight.grad, dw1)


# ---------------------------------------------------------------------------------------------
# cross-entropy


def _ce_reference(logits, targets, ignore_index=-100, reduction="mean", mask=None):
    logits = np.asarray(logits, F64)
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    valid = targets != ignore_index
    w = valid.astype(F64) * (1.0 if mask is None else mask)
    t = np.where(valid, targets, 0)
    per = (lse - np.take_along_axis(logits, t[..., None], -1)[..., 0]) * w
    if reduction == "none":
        return per
    return per.sum() / (w.sum() if reduction == "mean" else 1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_cross_entropy_gradients(reduction, with_mask):
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((T, B, V)) * 3
    targets = rng.integers(0, V, (T, B))
    targets[1, 2] = targets[3, 0] = -100
    mask = (rng.random((T, B)) < 0.7) if with_mask else None
    r = rng.standard_normal((T, B)) if reduction == "none" else 1.0

    def f():
        loss, _ = nn.cross_entropy(logits, targets, reduction=reduction, mask=mask, compute_grad=False)
        return float(np.sum(loss * r))

    loss, d = nn.cross_entropy(logits, targets, reduction=reduction, mask=mask)
    assert_close(loss, _ce_reference(logits, targets, reduction=reduction, mask=mask), atol=1e-12, rtol=1e-5,
                 what="loss")
    if reduction == "none":
        d = d * r[..., None]
    assert_close(d, numeric_grad(f, logits), atol=1e-7, rtol=1e-5, what="dlogits")
    assert np.all(d[1, 2] == 0) and np.all(d[3, 0] == 0)


def test_cross_entropy_probs_stability_and_class():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5.0, -5.0, -5.0]])
    targets = np.array([1, 2])
    loss, d, p = nn.cross_entropy(logits, targets, return_probs=True)
    assert np.isfinite(loss) and abs(loss - (1000 + np.log(3)) / 2) < 1e-9
    assert_close(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-12, rtol=1e-5, what="probs")
    assert_close(d, (p - np.eye(3)[targets]) / 2, atol=1e-12, rtol=1e-5, what="dlogits")
    crit = nn.CrossEntropyLoss(reduction="sum")
    assert abs(crit(logits, targets) - 2 * loss) < 1e-9
    assert_close(crit.backward(0.5), 0.5 * (p - np.eye(3)[targets]), atol=1e-12, rtol=1e-5, what="scaled")
    with pytest.raises(NoForwardError):
        crit.backward()
    # float32 stays float32
    l32, d32 = nn.cross_entropy(logits.astype(np.float32), targets)
    assert d32.dtype == np.float32 and abs(l32 - loss) < 1e-3


def test_cross_entropy_all_ignored_is_zero():
    logits = np.random.default_rng(0).standard_normal((4, 3))
    loss, d = nn.cross_entropy(logits, np.full(4, -100))
    assert loss == 0.0 and np.all(d == 0)
    loss, d = nn.cross_entropy(logits, np.zeros(4, int), mask=np.zeros(4, bool))
    assert loss == 0.0 and np.all(d == 0)


def test_cross_entropy_bad_input():
    logits = np.zeros((T, B, V))
    targets = np.zeros((T, B), np.int64)
    bad = targets.copy()
    bad[2, 1] = V
    with pytest.raises(ValueError, match=r"target 11 at position \[2, 1\] is out of range \[0, 11\)"):
        nn.cross_entropy(logits, bad)
    bad[2, 1] = -3
    with pytest.raises(ValueError, match=r"target -3 at position \[2, 1\]"):
        nn.cross_entropy(logits, bad)
    with pytest.raises(ValueError, match=r"targets must have shape \(5, 3\)"):
        nn.cross_entropy(logits, targets.reshape(-1))
    with pytest.raises(ValueError, match=r"targets must have shape"):
        nn.cross_entropy(logits, np.zeros((T, B, V), np.int64))
    with pytest.raises(TypeError, match="integer"):
        nn.cross_entropy(logits, targets.astype(F64))
    with pytest.raises(ValueError, match="reduction"):
        nn.cross_entropy(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="mask"):
        nn.cross_entropy(logits, targets, mask=-np.ones((T, B)))
    with pytest.raises(ValueError, match="mask"):
        nn.cross_entropy(logits, targets, mask=np.ones(T))
    nan = logits.copy()
    nan[4, 2, 3] = np.nan
    with pytest.raises(FloatingPointError, match=r"not finite.*position \[4, 2\]"):
        nn.cross_entropy(nan, targets)
    inf = logits.copy()
    inf[0, 0, 0] = np.inf
    with pytest.raises(FloatingPointError, match=r"position \[0, 0\]"):
        nn.cross_entropy(inf, targets)
    # a NaN where the target is ignored does not matter
    t2 = targets.copy()
    t2[4, 2] = -100
    assert np.isfinite(nn.cross_entropy(nan, t2)[0])


def test_cross_entropy_threads_deterministic():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((512, 300)).astype(np.float32)
    targets = rng.integers(0, 300, 512)
    l1, d1 = nn.cross_entropy(logits, targets, threads=1)
    l2, d2 = nn.cross_entropy(logits, targets, threads=2)
    assert l1 == l2
    np.testing.assert_array_equal(d1, d2)


# ---------------------------------------------------------------------------------------------
# PyTorch parity


def test_layers_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)

    emb = nn.Embedding(V, E, padding_idx=4, dtype=F64, seed=0)
    temb = torch.nn.Embedding(V, E, padding_idx=4).double()
    with torch.no_grad():
        temb.weight.copy_(torch.from_numpy(emb.weight.data))
    ids = rng.integers(0, V, (T, B))
    ids[0, 0] = 4
    g = rng.standard_normal((T, B, E))
    out = temb(torch.from_numpy(ids))
    out.backward(torch.from_numpy(g))
    assert_close(emb(ids), out.detach().numpy(), atol=0, rtol=0, what="embedding")
    emb.backward(g)
    assert_close(emb.weight.grad, temb.weight.grad.numpy(), atol=1e-12, rtol=1e-5, what="embedding grad")

    lin = nn.Linear(E, H, dtype=F64, seed=1)
    tlin = torch.nn.Linear(E, H).double()
    tlin.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x = torch.from_numpy(rng.standard_normal((T, B, E))).requires_grad_()
    g = rng.standard_normal((T, B, H))
    y = tlin(x)
    y.backward(torch.from_numpy(g))
    assert_close(lin(x.detach().numpy()), y.detach().numpy(), atol=1e-12, rtol=1e-5, what="linear")
    assert_close(lin.backward(g), x.grad.numpy(), atol=1e-12, rtol=1e-5, what="linear dx")
    assert_close(lin.weight.grad, tlin.weight.grad.numpy(), atol=1e-12, rtol=1e-5, what="linear dW")
    assert_close(lin.bias.grad, tlin.bias.grad.numpy(), atol=1e-12, rtol=1e-5, what="linear db")

    ln = nn.LayerNorm((2, 3), dtype=F64)
    ln.weight.data[...] = rng.standard_normal((2, 3))
    ln.bias.data[...] = rng.standard_normal((2, 3))
    tln = torch.nn.LayerNorm((2, 3)).double()
    tln.load_state_dict({k: torch.from_numpy(v) for k, v in ln.state_dict().items()})
    x = torch.from_numpy(rng.standard_normal((4, 2, 3))).requires_grad_()
    g = rng.standard_normal((4, 2, 3))
    y = tln(x)
    y.backward(torch.from_numpy(g))
    assert_close(ln(x.detach().numpy()), y.detach().numpy(), atol=1e-12, rtol=1e-5, what="layernorm")
    assert_close(ln.backward(g), x.grad.numpy(), atol=1e-12, rtol=1e-5, what="layernorm dx")
    assert_close(ln.weight.grad, tln.weight.grad.numpy(), atol=1e-12, rtol=1e-5, what="layernorm dgamma")
    assert_close(ln.bias.grad, tln.bias.grad.numpy(), atol=1e-12, rtol=1e-5, what="layernorm dbeta")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_pytorch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((17, V)) * 4
    targets = rng.integers(0, V, 17)
    targets[[2, 9]] = 3  # ignore_index other than the default
    x = torch.from_numpy(logits).requires_grad_()
    ref = torch.nn.functional.cross_entropy(x, torch.from_numpy(targets), ignore_index=3, reduction=reduction)
    g = rng.standard_normal(17) if reduction == "none" else 1.0
    ref.backward(torch.from_numpy(np.asarray(g)) if reduction == "none" else None)
    crit = nn.CrossEntropyLoss(ignore_index=3, reduction=reduction)
    loss = crit(logits, targets)
    assert_close(loss, ref.detach().numpy(), atol=1e-12, rtol=1e-5, what="loss")
    assert_close(crit.backward(g), x.grad.numpy(), atol=1e-12, rtol=1e-5, what="dlogits")


def test_inputs_changed_after_forward_do_not_change_gradients():
    """Layers save a private copy of what backward needs: callers may reuse their buffers."""
    from rnncore.nn import Embedding, LayerNorm, Linear

    rng = np.random.default_rng(3)
    for make, make_input in [
        (lambda: Linear(4, 3, seed=0), lambda: rng.standard_normal((5, 4)).astype(np.float32)),
        (lambda: LayerNorm(4), lambda: rng.standard_normal((5, 4)).astype(np.float32)),
        (lambda: Embedding(7, 3, seed=0), lambda: rng.integers(0, 7, size=(5,))),
    ]:
        layer, x = make(), make_input()
        out = layer.forward(x)
        dout = np.ones_like(out)
        layer.backward(dout)
        want = [p.grad.copy() for p in layer.parameters()]
        layer.zero_grad()
        layer.forward(x)
        x[...] = 0
        layer.backward(dout)
        for p, w in zip(layer.parameters(), want):
            np.testing.assert_array_equal(p.grad, w)
