"""The input-feeding attentional decoder (csrc/recurrent/attn_decoder.*, rnncore.nn.InputFeedRNN):
a slow numpy loop (cells step by step, attention from its formulas) against the C++ forward,
float64 central differences against the C++ BPTT, masking, and bad input."""
import numpy as np
import pytest

import rnncore
from rnncore import _core
from gradcheck import numeric_grad
from helpers import assert_close, assert_gemm_splits, assert_same_bits, rel_err
from reference import GATES, cell_step

ATTN_KINDS = ("dot", "general", "additive")


# -- the slow reference --------------------------------------------------------------------------
def attention_ref(weights, q, mem, length):
    """One query q (Hq,) over mem (S, Hm) restricted to the first `length` positions, from
    ops/attention.h's formulas -> (attn_h (Ho,), alpha (S,))."""
    kind, w_in, w_q, b_q, w_k, v, w_out, b_out = weights
    if kind == "dot":
        score = mem @ q
    elif kind == "general":
        score = mem @ (w_in @ q)
    else:
        score = np.tanh(w_q @ q + (0.0 if b_q is None else b_q) + mem @ w_k.T) @ v.reshape(-1)
    alpha = np.zeros(mem.shape[0])
    e = np.exp(score[:length] - score[:length].max())
    alpha[:length] = e / e.sum()
    c = alpha @ mem
    attn_h = np.tanh(w_out @ np.concatenate([c, q]) + (0.0 if b_out is None else b_out))
    return attn_h, alpha


def decoder_ref(cell, x, memory, lengths, w_ih, w_hh, b_ih, b_hh, weights, h0=None, c0=None, feed0=None,
                masks=None):
    """Step by step, row by row: layer 0 reads [x_t ; feed_t], the top h_t queries the attention."""
    T, B, _ = x.shape
    S = memory.shape[0]
    L = len(w_hh)
    H = w_hh[0].shape[1]
    Ho = weights[6].shape[0]
    lengths = np.full(B, S) if lengths is None else lengths
    h = np.zeros((L, B, H)) if h0 is None else h0.astype(np.float64).copy()
    c = np.zeros((L, B, H)) if c0 is None else c0.astype(np.float64).copy()
    feed = np.zeros((B, Ho)) if feed0 is None else feed0.astype(np.float64).copy()
    attn_h = np.zeros((T, B, Ho))
    alpha = np.zeros((T, B, S))
    for t in range(T):
        for b in range(B):
            inp = np.concatenate([x[t, b], feed[b]])
            for l in range(L):
                hn, cn = cell_step(cell, inp, h[l, b], c[l, b] if cell == "lstm" else None, w_ih[l], w_hh[l],
                                   None if b_ih is None else b_ih[l], None if b_hh is None else b_hh[l])
                h[l, b] = hn
                if cn is not None:
                    c[l, b] = cn
                inp = hn if masks is None or l == L - 1 else hn * masks[l, t, b]
            attn_h[t, b], alpha[t, b] = attention_ref(weights, h[L - 1, b], memory[:, b], lengths[b])
        feed = attn_h[t].copy()
    return attn_h, alpha, h, (c if cell == "lstm" else None)


# -- problems ------------------------------------------------------------------------------------
def attention_weights(kind, rng, Hq, Hm, Ho, A=4, out_bias=True, dtype=np.float64):
    """The 8-tuple _core takes (bind_attention.h), random."""
    u = lambda *shape: rng.uniform(-0.8, 0.8, shape).astype(dtype)
    w_in = u(Hm, Hq) if kind == "general" else None
    w_q = u(A, Hq) if kind == "additive" else None
    b_q = u(A) if kind == "additive" else None
    w_k = u(A, Hm) if kind == "additive" else None
    v = u(1, A) if kind == "additive" else None
    return (kind, w_in, w_q, b_q, w_k, v, u(Ho, Hm + Hq), u(Ho) if out_bias else None)


def problem(cell, kind, L=2, T=4, B=3, E=3, H=5, S=6, Ho=4, lengths=(6, 2, 4), states=True, bias=True,
            dtype=np.float64, seed=0, masks=False):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    u = lambda *shape: rng.uniform(-0.7, 0.7, shape).astype(dtype)
    Hm = H if kind == "dot" else H + 2
    p = dict(cell=cell, x=u(T, B, E), memory=u(S, B, Hm),
             lengths=None if lengths is None else np.array(lengths, np.int64),
             w_ih=[u(G * H, E + Ho if l == 0 else H) for l in range(L)], w_hh=[u(G * H, H) for _ in range(L)],
             b_ih=[u(G * H) for _ in range(L)] if bias else None, b_hh=[u(G * H) for _ in range(L)] if bias else None,
             weights=attention_weights(kind, rng, H, Hm, Ho, dtype=dtype))
    p["h0"] = u(L, B, H) if states else None
    p["c0"] = u(L, B, H) if states and cell == "lstm" else None
    p["feed0"] = u(B, Ho) if states else None
    p["masks"] = None
    if masks and L > 1:
        p["masks"] = ((rng.random((L - 1, T, B, H)) < 0.7) / 0.7).astype(dtype)
    return p


def core_forward(p, threads=1, workspace=None):
    return _core.attn_decoder_forward(p["cell"], p["x"], p["memory"], p["lengths"], p["w_ih"], p["w_hh"], p["b_ih"],
                                      p["b_hh"], p["weights"], p["h0"], p["c0"], p["feed0"], p["masks"], threads,
                                      workspace)


def weight_grads(weights):
    return tuple(None if a is None else np.zeros_like(a) for a in weights[1:])


# -- forward against the reference ---------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("kind", ATTN_KINDS)
@pytest.mark.parametrize("L", [1, 2])
def test_forward_matches_reference(cell, kind, L):
    p = problem(cell, kind, L=L, masks=True)
    attn_h, alpha, h_n, c_n, ws = core_forward(p)
    r_attn, r_alpha, r_h, r_c = decoder_ref(p["cell"], p["x"], p["memory"], p["lengths"], p["w_ih"], p["w_hh"],
                                            p["b_ih"], p["b_hh"], p["weights"], p["h0"], p["c0"], p["feed0"],
                                            p["masks"])
    assert ws.ready and ws.dtype == "float64" and ws.cell == cell
    assert_close(attn_h, r_attn, atol=1e-12, rtol=1e-12, what="attn_h")
    assert_close(alpha, r_alpha, atol=1e-12, rtol=1e-12, what="alpha")
    assert_close(h_n, r_h, atol=1e-12, rtol=1e-12, what="h_n")
    if cell == "lstm":
        assert_close(c_n, r_c, atol=1e-12, rtol=1e-12, what="c_n")
    else:
        assert c_n is None
    # masking: weights past each source's length are exactly 0
    for b, n in enumerate(p["lengths"]):
        assert np.all(alpha[:, b, n:] == 0.0)
    assert np.allclose(alpha.sum(-1), 1.0)


def test_forward_defaults_and_no_bias():
    p = problem("gru", "general", states=False, bias=False, lengths=None)
    attn_h, alpha, h_n, _, _ = core_forward(p)
    r_attn, r_alpha, r_h, _ = decoder_ref(p["cell"], p["x"], p["memory"], None, p["w_ih"], p["w_hh"], None, None,
                                          p["weights"])
    assert_close(attn_h, r_attn, atol=1e-12, rtol=1e-12, what="attn_h")
    assert_close(h_n, r_h, atol=1e-12, rtol=1e-12, what="h_n")


def test_float32_close_to_float64():
    p64 = problem("lstm", "additive")
    p32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v)
           for k, v in p64.items()}
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        p32[k] = [a.astype(np.float32) for a in p64[k]]
    p32["weights"] = tuple(a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in p64["weights"])
    out32 = core_forward(p32)
    out64 = core_forward(p64)
    assert out32[0].dtype == np.float32 and out32[4].dtype == "float32"
    assert_close(out32[0], out64[0], atol=1e-5, rtol=1e-4, what="attn_h float32")


# -- gradients ------------------------------------------------------------------------------------
def run_backward(p, seed=1, with_alpha=True, threads=1):
    """Loss = <Ra, attn_h> + <Ral, alpha> + <Rh, h_n> (+ <Rc, c_n>); returns (loss(), grads)."""
    rng = np.random.default_rng(seed)
    attn_h, alpha, h_n, c_n, ws = core_forward(p, threads)
    Ra = rng.standard_normal(attn_h.shape)
    Ral = rng.standard_normal(alpha.shape) if with_alpha else None
    Rh = rng.standard_normal(h_n.shape)
    Rc = rng.standard_normal(c_n.shape) if c_n is not None else None

    def loss():
        a, al, h, c, _ = core_forward(p)
        v = np.sum(a * Ra) + np.sum(h * Rh)
        if Ral is not None:
            v += np.sum(al * Ral)
        if Rc is not None:
            v += np.sum(c * Rc)
        return v

    dw_ih = [np.zeros_like(w) for w in p["w_ih"]]
    dw_hh = [np.zeros_like(w) for w in p["w_hh"]]
    db_ih = None if p["b_ih"] is None else [np.zeros_like(b) for b in p["b_ih"]]
    db_hh = None if p["b_hh"] is None else [np.zeros_like(b) for b in p["b_hh"]]
    dattn = weight_grads(p["weights"])
    dx, dmem, dh0, dc0, dfeed0 = _core.attn_decoder_backward(ws, Ra, p["w_ih"], p["w_hh"], p["weights"], dw_ih,
                                                             dw_hh, db_ih, db_hh, dattn, Rh, Rc, Ral, threads)
    assert not ws.ready
    grads = dict(x=dx, memory=dmem, h0=dh0, c0=dc0, feed0=dfeed0)
    for l in range(len(dw_ih)):
        grads[f"w_ih{l}"] = dw_ih[l]
        grads[f"w_hh{l}"] = dw_hh[l]
        if db_ih is not None:
            grads[f"b_ih{l}"] = db_ih[l]
            grads[f"b_hh{l}"] = db_hh[l]
    for i, g in enumerate(dattn):
        if g is not None:
            grads[f"attn{i + 1}"] = g
    return loss, grads


def arrays_of(p):
    out = {k: p[k] for k in ("x", "memory", "h0", "c0", "feed0") if p[k] is not None}
    for l in range(len(p["w_ih"])):
        out[f"w_ih{l}"] = p["w_ih"][l]
        out[f"w_hh{l}"] = p["w_hh"][l]
        if p["b_ih"] is not None:
            out[f"b_ih{l}"] = p["b_ih"][l]
            out[f"b_hh{l}"] = p["b_hh"][l]
    for i, a in enumerate(p["weights"][1:]):
        if a is not None:
            out[f"attn{i + 1}"] = a
    return out


@pytest.mark.parametrize("cell,kind,L", [("lstm", "general", 2), ("gru", "additive", 2), ("rnn_tanh", "dot", 2),
                                         ("lstm", "dot", 1), ("gru", "general", 1), ("rnn_tanh", "additive", 1),
                                         ("lstm", "additive", 2)])
def test_gradients_finite_differences(cell, kind, L):
    p = problem(cell, kind, L=L, T=4, B=3, H=3, E=2, S=5, Ho=4, lengths=(5, 2, 3), masks=True)
    loss, grads = run_backward(p)
    for name, array in arrays_of(p).items():
        num = numeric_grad(loss, array)
        got = grads[name]
        assert np.linalg.norm(num) > 1e-6, f"{name}: numeric gradient is ~0, the check would be vacuous"
        err = rel_err(got, num)
        assert err < 1e-7, f"{cell}/{kind}/L={L}: gradient of {name}: relative error {err:.2e}"


def test_grad_memory_zero_past_lengths():
    for kind in ATTN_KINDS:
        p = problem("lstm", kind, lengths=(6, 1, 3))
        _, grads = run_backward(p)
        dmem = grads["memory"]
        for b, n in enumerate(p["lengths"]):
            assert np.all(dmem[n:, b] == 0.0), kind
            assert np.any(dmem[:n, b] != 0.0), kind


def test_relu_gradients():
    # rnn_relu: kinks are measure-zero; a fixed seed keeps the pre-activations away from 0
    p = problem("rnn_relu", "general", L=2, H=3, E=2, S=4, lengths=(4, 2, 3), seed=3)
    loss, grads = run_backward(p, with_alpha=False)
    for name in ("w_ih0", "w_hh1", "memory", "feed0", "attn1"):
        array = arrays_of(p)[name]
        assert rel_err(grads[name], numeric_grad(loss, array)) < 1e-6, name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_threads_agree(cell):
    # B = 24, G*H >= 384, H = 96: the per-step products run on 2 threads (checked)
    p = problem(cell, "additive", L=2, T=5, B=24, E=32, H=128, S=7, Ho=96, lengths=tuple(range(1, 8)) * 3 + (7,) * 3)
    assert_gemm_splits(24, GATES[cell] * 128, 128)
    one = core_forward(p, threads=1)
    two = core_forward(p, threads=2)
    for a, b, what in zip(one[:3], two[:3], ("attn_h", "alpha", "h_n")):
        assert_same_bits(b, a, what=f"{what}, threads=2 vs 1")
    _, g1 = run_backward(p, threads=1)
    _, g2 = run_backward(p, threads=2)
    for k in g1:
        if g1[k] is not None:
            assert_same_bits(g2[k], g1[k], what=f"grad {k} threads=2 vs 1")


def test_workspace_reuse_and_backward_once():
    p = problem("gru", "dot")
    _, _, _, _, ws = core_forward(p)
    out2 = core_forward(p, workspace=ws)
    assert out2[4] is ws
    args = (p["w_ih"], p["w_hh"], p["weights"], [np.zeros_like(w) for w in p["w_ih"]],
            [np.zeros_like(w) for w in p["w_hh"]])
    _core.attn_decoder_backward(ws, None, *args)
    with pytest.raises(ValueError, match="no forward to differentiate"):
        _core.attn_decoder_backward(ws, None, *args)


# -- bad input (core) -----------------------------------------------------------------------------
def test_core_bad_input():
    p = problem("lstm", "general")
    fwd = lambda **kw: core_forward({**p, **kw})
    with pytest.raises(ValueError, match="cell must be one of"):
        fwd(cell="lstmx")
    with pytest.raises(ValueError, match=r"memory must have shape \(\*, 3, 7\)"):
        fwd(memory=np.zeros((6, 2, 7)))
    with pytest.raises(ValueError, match=r"memory_lengths\[1\] = 0 is outside \[1, S\]"):
        fwd(lengths=np.array([6, 0, 3], np.int64))
    with pytest.raises(ValueError, match=r"memory_lengths\[0\] = 7 is outside"):
        fwd(lengths=np.array([7, 1, 3], np.int64))
    with pytest.raises(ValueError, match=r"w_ih\[0\] must have shape \(20, 7\)"):
        fwd(w_ih=[np.zeros((20, 3)), p["w_ih"][1]])
    with pytest.raises(ValueError, match="w_ih must have one entry per layer"):
        fwd(w_ih=p["w_ih"][:1])
    with pytest.raises(TypeError, match="w_hh must be a list"):
        fwd(w_hh=p["w_hh"][0])
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3, 5\)"):
        fwd(h0=np.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match=r"feed0 must have shape \(3, 4\)"):
        fwd(feed0=np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"masks must have shape \(1, 4, 3, 5\)"):
        fwd(masks=np.zeros((2, 4, 3, 5)))
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        fwd(x=p["x"].astype(np.int32))
    with pytest.raises(TypeError, match="w_hh\\[0\\] must have dtype float64"):
        fwd(w_hh=[w.astype(np.float32) for w in p["w_hh"]])
    with pytest.raises(ValueError, match="x must have shape"):
        fwd(x=np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="c0 is only for lstm"):
        core_forward({**problem("gru", "general"), "c0": np.zeros((2, 3, 5))})
    with pytest.raises(ValueError, match="threads must be >= 1"):
        fwd_threads = core_forward(p, threads=0)  # noqa: F841
    pg = problem("lstm", "general", H=5)
    bad_q = attention_weights("general", np.random.default_rng(0), 4, 7, 4)  # Hq = 4 != H = 5
    with pytest.raises(ValueError, match="query size Hq = 4 must equal hidden_size H = 5"):
        core_forward({**pg, "weights": bad_q})
    _, _, _, _, ws = core_forward(p)
    with pytest.raises(ValueError, match="attention must be the forward's"):
        _core.attn_decoder_backward(ws, None, p["w_ih"], p["w_hh"],
                                    attention_weights("dot", np.random.default_rng(0), 5, 5, 4),
                                    [np.zeros_like(w) for w in p["w_ih"]], [np.zeros_like(w) for w in p["w_hh"]])
    with pytest.raises(ValueError, match=r"dw_hh\[1\] must be writeable"):
        ro = np.zeros_like(p["w_hh"][1])
        ro.flags.writeable = False
        _core.attn_decoder_backward(ws, None, p["w_ih"], p["w_hh"], p["weights"],
                                    [np.zeros_like(w) for w in p["w_ih"]], [np.zeros_like(p["w_hh"][0]), ro])
    with pytest.raises(ValueError, match=r"grad_attn_h must have shape \(4, 3, 4\)"):
        _core.attn_decoder_backward(ws, np.zeros((4, 3, 5)), p["w_ih"], p["w_hh"], p["weights"],
                                    [np.zeros_like(w) for w in p["w_ih"]], [np.zeros_like(w) for w in p["w_hh"]])
    assert ws.ready  # a refused backward leaves the forward to differentiate


# -- rnncore.nn.InputFeedRNN ----------------------------------------------------------------------
def make_module(cell="lstm", kind="general", L=2, E=3, H=4, Hm=5, Ho=3, dropout=0.0, dtype=np.float64, seed=0):
    attn = rnncore.nn.Attention(H, H if kind == "dot" else Hm, kind, output_size=Ho, dtype=dtype, seed=seed)
    return rnncore.nn.InputFeedRNN(cell, E, H, attn, num_layers=L, dropout=dropout, dtype=dtype, seed=seed + 1)


def module_weights(m):
    w = [m.layer_parameters(l) for l in range(m.num_layers)]
    return ([p[0].data for p in w], [p[1].data for p in w], [p[2].data for p in w], [p[3].data for p in w])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
@pytest.mark.parametrize("kind", ATTN_KINDS)
def test_module_matches_reference(cell, kind):
    m = make_module(cell, kind)
    names = [n for n, _ in m.named_parameters()]
    assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert m.weight_ih_l0.shape == (CELL_G[cell] * 4, 3 + 3) and m.weight_ih_l1.shape == (CELL_G[cell] * 4, 4)
    assert all(n.startswith("attn.") for n in names[8:]) and names[8:]
    rng = np.random.default_rng(5)
    T, B, S = 5, 3, 4
    x, mem = rng.standard_normal((T, B, 3)), rng.standard_normal((S, B, m.attn.memory_size))
    lengths = [4, 1, 2]
    h0 = rng.standard_normal((2, B, 4))
    hx = (h0, rng.standard_normal((2, B, 4))) if cell == "lstm" else h0
    feed0 = rng.standard_normal((B, 3))
    attn_h, alpha, state = m.forward(x, mem, lengths, hx, feed0)
    w_ih, w_hh, b_ih, b_hh = module_weights(m)
    r = decoder_ref(cell, x, mem, np.array(lengths), w_ih, w_hh, b_ih, b_hh, m.attn.weights_for_core(), h0,
                    hx[1] if cell == "lstm" else None, feed0)
    assert_close(attn_h, r[0], atol=1e-12, rtol=1e-12, what="attn_h")
    assert_close(alpha, r[1], atol=1e-12, rtol=1e-12, what="alpha")
    assert_close(state[0] if cell == "lstm" else state, r[2], atol=1e-12, rtol=1e-12, what="h_n")


CELL_G = GATES


def test_module_gradients():
    m = make_module("lstm", "additive", L=2)
    rng = np.random.default_rng(2)
    T, B, S = 4, 2, 5
    x, mem = rng.standard_normal((T, B, 3)), rng.standard_normal((S, B, 5))
    h0, c0, feed0 = rng.standard_normal((2, B, 4)), rng.standard_normal((2, B, 4)), rng.standard_normal((B, 3))
    lengths = np.array([5, 3])
    Ra, Rh = rng.standard_normal((T, B, 3)), rng.standard_normal((2, B, 4))

    def loss():
        a, _, (h, _) = m.forward(x, mem, lengths, (h0, c0), feed0)
        return np.sum(a * Ra) + np.sum(h * Rh)

    loss()
    m.zero_grad()
    dx, dmem = m.backward(Ra, (Rh, None))
    dh0, dc0 = m.grad_h0
    dfeed0 = m.grad_feed0
    checks = {"x": (x, dx), "memory": (mem, dmem), "h0": (h0, dh0), "c0": (c0, dc0), "feed0": (feed0, dfeed0)}
    for name, p in m.named_parameters():
        checks[name] = (p.data, p.grad.copy())
    for name, (array, got) in checks.items():
        num = numeric_grad(loss, array)
        assert np.linalg.norm(num) > 1e-6, name
        assert rel_err(got, num) < 1e-7, f"gradient of {name}: relative error {rel_err(got, num):.2e}"
    assert np.all(dmem[3:, 1] == 0.0)


def test_module_dropout_and_eval():
    m = make_module("gru", "dot", L=3, dropout=0.5)
    rng = np.random.default_rng(0)
    x, mem = rng.standard_normal((4, 2, 3)), rng.standard_normal((3, 2, 4))
    m.eval()
    a_eval, _, _ = m.forward(x, mem)
    m.train()
    a1, _, _ = m.forward(x, mem)
    a2, _, _ = m.forward(x, mem)
    assert not np.allclose(a1, a_eval) and not np.allclose(a1, a2)  # fresh masks each call
    dx, dmem = m.backward(np.ones_like(a2))
    assert dx.shape == x.shape and dmem.shape == mem.shape and np.all(np.isfinite(dx))
    m.eval()
    a_eval2, _, _ = m.forward(x, mem)
    np.testing.assert_array_equal(a_eval2, a_eval)


def test_module_float32_and_state_dict():
    m = make_module("lstm", "general", dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    mem = np.random.default_rng(1).standard_normal((4, 2, 5))  # converted once at the edge
    a, alpha, (h, c) = m.forward(x, mem)
    assert a.dtype == np.float32 and alpha.dtype == np.float32 and h.shape == (2, 2, 4)
    m64 = make_module("lstm", "general", dtype=np.float64, seed=9)
    m64.load_state_dict(m.state_dict())
    a64, _, _ = m64.forward(x, mem)
    assert_close(a, a64, atol=1e-5, rtol=1e-4, what="float32 vs float64")
    assert "attn.linear_in.weight" in m.state_dict()
    assert repr(m).startswith("InputFeedRNN(lstm, 3, 4, num_layers=2")


def test_module_bad_input():
    m = make_module("lstm", "general")
    x, mem = np.zeros((3, 2, 3)), np.zeros((4, 2, 5))
    with pytest.raises(TypeError, match="attention must be an rnncore.nn.Attention"):
        rnncore.nn.InputFeedRNN("lstm", 3, 4, object())
    with pytest.raises(ValueError, match="query_size must equal hidden_size = 5"):
        rnncore.nn.InputFeedRNN("lstm", 3, 5, rnncore.nn.Attention(4, 5))
    with pytest.raises(TypeError, match="attention must have this layer's dtype"):
        rnncore.nn.InputFeedRNN("lstm", 3, 4, rnncore.nn.Attention(4, 5), dtype=np.float64)
    with pytest.raises(ValueError, match="cell must be one of"):
        rnncore.nn.InputFeedRNN("elman", 3, 4, rnncore.nn.Attention(4, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, E\) = \(T, B, 3\)"):
        m.forward(np.zeros((3, 2, 4)), mem)
    with pytest.raises(ValueError, match=r"memory must have shape \(S, B, Hm\) = \(S, 2, 5\)"):
        m.forward(x, np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match=r"memory_lengths must be in \[1, S\] = \[1, 4\], got memory_lengths\[1\] = 0"):
        m.forward(x, mem, [4, 0])
    with pytest.raises(ValueError, match=r"memory_lengths must have shape \(B,\) = \(2,\)"):
        m.forward(x, mem, [4, 1, 1])
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h0, c0\)"):
        m.forward(x, mem, hx=np.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(L, B, H\) \(2, 2, 4\)"):
        m.forward(x, mem, hx=(np.zeros((1, 2, 4)), np.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match=r"feed0 must have shape \(B, Ho\) \(2, 3\)"):
        m.forward(x, mem, feed0=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no forward to differentiate"):
        m.backward(np.zeros((3, 2, 3)))
    a, _, _ = m.forward(x, mem)
    with pytest.raises(ValueError, match=r"grad_attn_h must have shape \(T, B, Ho\) like attn_h \(3, 2, 3\)"):
        m.backward(np.zeros((3, 2, 4)))
    m.backward(np.zeros_like(a))  # the refused call left the forward in place
    m.weight_hh_l1.data = np.zeros((16, 5))
    with pytest.raises(ValueError, match=r"parameter weight_hh_l1 must have shape \(G\*H, H\) = \(16, 4\)"):
        m.forward(x, mem)


@pytest.mark.parametrize("kind", ATTN_KINDS)
def test_torch_parity(kind):
    """The same decoder in PyTorch (OpenNMT-py's InputFeedRNNDecoder formulas: LSTMCell on
    [x_t ; feed], GlobalAttention), float64, weights copied: outputs and gradients agree."""
    torch = pytest.importorskip("torch")
    m = make_module("lstm", kind, L=1, E=3, H=4, Hm=4 if kind == "dot" else 5, Ho=3)
    rng = np.random.default_rng(4)
    T, B, S = 5, 3, 4
    x, mem = rng.standard_normal((T, B, 3)), rng.standard_normal((S, B, m.attn.memory_size))
    lengths = np.array([4, 2, 3])
    g = rng.standard_normal((T, B, 3))
    attn_h, alpha, _ = m.forward(x, mem, lengths)
    dx, dmem = m.backward(g)

    p = {n: torch.tensor(a.data, requires_grad=True) for n, a in m.named_parameters()}
    tx, tmem = torch.tensor(x, requires_grad=True), torch.tensor(mem, requires_grad=True)
    mb = tmem.transpose(0, 1)
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    h = c = torch.zeros(B, 4, dtype=torch.float64)
    feed = torch.zeros(B, 3, dtype=torch.float64)
    outs, alphas = [], []
    for t in range(T):
        gates = (torch.cat([tx[t], feed], 1) @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T
                 + p["bias_hh_l0"])
        i, f, gg, o = gates.chunk(4, 1)  # PyTorch's LSTM gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        if kind == "dot":
            score = torch.bmm(mb, h[:, :, None])[:, :, 0]
        elif kind == "general":
            score = torch.bmm(mb, (h @ p["attn.linear_in.weight"].T)[:, :, None])[:, :, 0]
        else:
            wq = h @ p["attn.linear_query.weight"].T + p["attn.linear_query.bias"]
            uk = mb @ p["attn.linear_context.weight"].T
            score = (torch.tanh(wq[:, None, :] + uk) @ p["attn.v.weight"].T)[:, :, 0]
        a = torch.softmax(score.masked_fill(~mask, float("-inf")), 1)
        ctx = torch.bmm(a[:, None, :], mb)[:, 0]
        out = torch.cat([ctx, h], 1) @ p["attn.linear_out.weight"].T
        if "attn.linear_out.bias" in p:
            out = out + p["attn.linear_out.bias"]
        feed = torch.tanh(out)
        outs.append(feed)
        alphas.append(a)
    t_attn = torch.stack(outs)
    (t_attn * torch.tensor(g)).sum().backward()
    assert_close(attn_h, t_attn.detach().numpy(), atol=1e-12, rtol=1e-10, what="attn_h vs torch")
    assert_close(alpha, torch.stack(alphas).detach().numpy(), atol=1e-12, rtol=1e-10, what="alpha vs torch")
    assert_close(dx, tx.grad.numpy(), atol=1e-12, rtol=1e-10, what="grad x vs torch")
    assert_close(dmem, tmem.grad.numpy(), atol=1e-12, rtol=1e-10, what="grad memory vs torch")
    for n, q in m.named_parameters():
        assert_close(q.grad, p[n].grad.numpy(), atol=1e-12, rtol=1e-10, what=f"grad {n} vs torch")


def unaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    v = raw[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    assert not v.flags.aligned
    return v


def test_misaligned_arrays():
    p = problem("lstm", "additive")
    with pytest.raises(ValueError, match="memory must be aligned to its dtype"):
        core_forward({**p, "memory": unaligned(p["memory"])})
    with pytest.raises(ValueError, match="must be aligned to its dtype"):
        core_forward({**p, "w_hh": [p["w_hh"][0], unaligned(p["w_hh"][1])]})
    w = list(p["weights"])
    w[4] = unaligned(w[4])
    with pytest.raises(ValueError, match="must be aligned to its dtype"):  # named by the attention parser
        core_forward({**p, "weights": tuple(w)})
    # the layer copies a misaligned input once, at the edge
    m = make_module("gru", "general")
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    mem = np.random.default_rng(1).standard_normal((4, 2, 5))
    a_ref, _, _ = m.forward(x, mem)
    a_un, _, _ = m.forward(unaligned(x), unaligned(mem))
    np.testing.assert_array_equal(a_un, a_ref)
    dx, dmem = m.backward(unaligned(np.ones_like(a_un)))
    assert dx.shape == x.shape
