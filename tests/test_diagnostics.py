"""rnncore.diagnostics and the engine's ||dL/dh_t|| (record_grad_norms on the recurrent layers).

The norms the BPTT sweep reports are checked against central differences, in float64, of a
slow numpy reference (tests/reference.py's cell_step) into which a perturbation delta_t is
added to each h_t: dL/d(delta_t) is the total gradient dL/dh_t."""
import numpy as np
import pytest

from rnncore import _core, diagnostics, nn
from helpers import assert_close, assert_recurrent_splits, assert_same_bits
from reference import GATES, cell_step

LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}


def make(kind, I, H, **kw):
    if kind.startswith("rnn_"):
        kw["nonlinearity"] = kind[4:]
    return LAYERS[kind](I, H, **kw)


def ref_loss(kind, x, params, L, D, H, P, lengths, deltas, dy, dhn):
    """L = sum(out * dy) + sum(h_n * dhn) of the stacked net, delta (L*D, T, B, R) added to every h_t."""
    T, B, _ = x.shape
    R = P or H
    inp = np.asarray(x, np.float64)
    loss = 0.0
    for layer in range(L):
        out = np.zeros((T, B, D * R))
        for d in range(D):
            k = layer * D + d
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = [params.get(n + sfx) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
            for b in range(B):
                h, c = np.zeros(R), (np.zeros(H) if kind == "lstm" else None)
                n = int(lengths[b])
                for t in (range(n - 1, -1, -1) if d else range(n)):
                    h, c = cell_step(kind, inp[t, b], h, c, w[0], w[1], w[2], w[3], None, w[4])
                    h = h + deltas[k, t, b]
                    out[t, b, d * R:(d + 1) * R] = h
                loss += float(h @ dhn[k, b])
        inp = out
    return loss + float(np.sum(inp * dy))


def fd_norms(kind, x, params, L, D, H, P, lengths, dy, dhn, eps=1e-6):
    T, B, _ = x.shape
    R = P or H
    deltas = np.zeros((L * D, T, B, R))
    grad = np.zeros_like(deltas)
    for idx in np.ndindex(*deltas.shape):
        deltas[idx] = eps
        up = ref_loss(kind, x, params, L, D, H, P, lengths, deltas, dy, dhn)
        deltas[idx] = -eps
        down = ref_loss(kind, x, params, L, D, H, P, lengths, deltas, dy, dhn)
        deltas[idx] = 0.0
        grad[idx] = (up - down) / (2 * eps)
    return np.linalg.norm(grad, axis=-1)  # (L*D, T, B)


@pytest.mark.parametrize("kind,P", [("lstm", 0), ("gru", 0), ("rnn_tanh", 0), ("lstm", 2)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_grad_norms_equal_finite_differences(kind, P, bidirectional):
    T, B, I, H, L = 5, 3, 2, 3, 2
    D = 2 if bidirectional else 1
    R = P or H
    rng = np.random.default_rng(11)
    kw = {"proj_size": P} if P else {}
    m = make(kind, I, H, num_layers=L, bidirectional=bidirectional, dtype=np.float64, seed=3, **kw)
    lengths = np.array([5, 2, 4])  # ragged, unsorted
    x = rng.normal(size=(T, B, I))
    dy = rng.normal(size=(T, B, D * R))
    dy[np.arange(T)[:, None] >= lengths[None, :]] = 0.0
    dhn = rng.normal(size=(L * D, B, R))
    out, hn = m.forward(x, lengths=lengths)
    m.record_grad_norms = True
    m.backward(dy, (dhn, None) if kind == "lstm" else dhn)
    got = m.grad_norms
    assert got.shape == (L * D, T, B) and got.dtype == np.float64
    params = {n: p.data for n, p in m.named_parameters()}
    ref = fd_norms(kind, x, params, L, D, H, P, lengths, dy, dhn)
    assert ref[:, :, 0].min() > 1e-3, "reference gradient near zero: the check would be vacuous"
    assert_close(got, ref, atol=1e-7, rtol=1e-6, what=f"{kind} P={P} D={D} ||dL/dh_t||")
    assert np.all(got[:, lengths[1]:, 1] == 0.0), "steps past a sequence's length must report 0"


def test_length_zero_sequence_and_unbatched():
    m = nn.GRU(2, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 2, 2))
    out, _ = m.forward(x, lengths=[0, 4])
    m.record_grad_norms = True
    m.backward(np.ones_like(out))
    assert np.all(m.grad_norms[0, :, 0] == 0.0) and np.all(m.grad_norms[0, :, 1] > 0)
    out, _ = m.forward(x[:, 1])  # unbatched (T, I)
    m.backward(np.ones_like(out))
    assert m.grad_norms.shape == (1, 4)


@pytest.mark.parametrize("kind,P", [("lstm", 0), ("gru", 0), ("rnn_tanh", 0), ("lstm", 24)])
def test_one_thread_equals_two(kind, P):
    T, B, I, H = 7, 32, 16, 64
    if not P:
        assert_recurrent_splits(kind, B, H, threads=2)
    elif not _core.openmp_enabled():
        pytest.skip("built without OpenMP")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    lengths = rng.integers(0, T + 1, size=B)
    dy = rng.normal(size=(T, B, P or H)).astype(np.float32)
    got = []
    for threads in (1, 2):
        m = make(kind, I, H, seed=1, threads=threads, **({"proj_size": P} if P else {}))
        m.record_grad_norms = True
        m.forward(x, lengths=lengths)
        m.backward(dy)
        got.append(m.grad_norms)
    assert _core.recurrent_threads(kind, B, H, 2, P) == 2
    assert_same_bits(got[1], got[0], f"{kind} P={P} grad norms on 2 threads")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_off_by_default_and_gradients_unchanged(kind):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 4, 3)).astype(np.float32)
    grads = []
    for record in (False, True):
        m = make(kind, 3, 9, seed=4, bidirectional=True)
        assert m.grad_norms is None and m.record_grad_norms is False
        m.record_grad_norms = record
        out, _ = m.forward(x, lengths=[6, 1, 3, 0])
        dx = m.backward(np.ones_like(out))
        grads.append([dx] + [p.grad.copy() for p in m.parameters()])
        assert (m.grad_norms is not None) == record
    for a, b in zip(*grads):
        assert_same_bits(b, a, "gradients with record_grad_norms")


def test_core_bad_grad_norms():
    m = nn.LSTM(2, 3, seed=0)
    x = np.zeros((4, 2, 2), np.float32)
    for bad, exc, words in [(np.zeros((4, 3)), ValueError, "grad_norms"), (np.zeros((4, 2), np.float32), TypeError,
                                                                         "float64"),
                            (np.zeros((2, 4)).T, ValueError, "grad_norms")]:
        out, _, ws = _core.recurrent_forward("lstm", x, *(p.data for p in m.layer_parameters(0)), out=np.empty(
            (4, 2, 3), np.float32))
        w_ih, w_hh, _, _ = m.layer_parameters(0)
        with pytest.raises(exc, match=words):
            _core.recurrent_backward(ws, np.ones((4, 2, 3), np.float32), 0, None, None, w_ih.data, w_hh.data,
                                     w_ih.grad, w_hh.grad, None, None, np.empty((4, 2, 2), np.float32),
                                     grad_norms=bad)


def test_distance_profile():
    norms = np.array([[1.0, 9.0], [2.0, 8.0], [3.0, 0.0]])  # (T=3, B=2), sequence 1 has length 2
    k, v = diagnostics.distance_profile(norms, lengths=[3, 2])
    assert list(k) == [0, 1, 2]
    assert_close(v, [(3 + 8) / 2, (2 + 9) / 2, 1.0], atol=0, rtol=1e-15)
    k, v = diagnostics.distance_profile(norms, lengths=[3, 2], reverse=True)
    assert_close(v, [(1 + 9) / 2, (2 + 8) / 2, 3.0], atol=0, rtol=1e-15)
    k, v = diagnostics.distance_profile(norms[:, 0])
    assert_close(v, [3, 2, 1], atol=0, rtol=0)


def test_distance_profile_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        diagnostics.distance_profile(np.ones((3, 2)), lengths=[4, 1])
    with pytest.raises(ValueError, match="shape"):
        diagnostics.distance_profile(np.ones((3, 2, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        diagnostics.distance_profile(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="length 0"):
        diagnostics.distance_profile(np.ones((3, 2)), lengths=[0, 0])
    with pytest.raises(TypeError, match="Module"):
        diagnostics.record_grad_norms(object())
    with pytest.raises(ValueError, match="no recurrent layer"):
        diagnostics.record_grad_norms(nn.Linear(2, 3))


def test_record_on_a_model_and_spectra():
    model = nn.SequenceClassifier(input_size=1, hidden_size=5, num_classes=2, cell="gru", num_layers=2, seed=0)
    layers = diagnostics.record_grad_norms(model)
    assert len(layers) == 1
    x = np.random.default_rng(0).normal(size=(7, 3, 1)).astype(np.float32)
    model.loss(x, np.array([0, 1, 1]))
    model.backward()
    norms = diagnostics.grad_norms(model)
    (path, g), = norms.items()
    assert g.shape == (2, 7, 3) and np.all(g > 0)
    diagnostics.record_grad_norms(model, False)
    assert diagnostics.grad_norms(model) == {}

    rows = diagnostics.recurrent_spectra(model)
    assert [r["gate"] for r in rows] == list("rzn") * 2
    w = model.rnn.layer_parameters(1)[1].data.astype(np.float64)[10:15]  # layer 1, gate n
    assert_close(rows[5]["spectral_radius"], np.abs(np.linalg.eigvals(w)).max(), atol=0, rtol=1e-12)
    assert_close(rows[5]["max_singular_value"], np.linalg.svd(w, compute_uv=False)[0], atol=0, rtol=1e-12)
    lstmp = nn.LSTM(2, 4, proj_size=2, seed=0)
    rows = diagnostics.recurrent_spectra(lstmp)
    w_hh, w_hr = lstmp.weight_hh_l0.data.astype(np.float64), lstmp.weight_hr_l0.data.astype(np.float64)
    assert_close(rows[1]["max_singular_value"], np.linalg.norm(w_hh[4:8] @ w_hr, 2), atol=0, rtol=1e-12)


def test_plot_profiles(tmp_path):
    pytest.importorskip("matplotlib")
    path = diagnostics.plot_profiles({"a": (np.arange(3), np.array([1.0, 0.5, 0.25]))}, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000 and path == tmp_path / "g.png"
    with pytest.raises(ValueError, match="empty"):
        diagnostics.plot_profiles({}, tmp_path / "h.png")
