"""Global attention (csrc/ops/attention.cpp, rnncore.nn.Attention): a slow numpy reference for
each kind, float64 finite-difference gradients of the query, the memory and every parameter,
masking (exact zeros past each source's length), one-step queries equal to the batched call,
float32 against float64, parity with a torch re-implementation of OpenNMT-py's
GlobalAttention, and bad input."""
import numpy as np
import pytest

from rnncore import _core, diagnostics, nn
from gradcheck import numeric_grad
from helpers import assert_close, assert_same_bits, rel_err

KINDS = ("dot", "general", "additive")


# -- the slow, obvious reference ---------------------------------------------------------------------

def reference(weights, query, memory, lengths):
    """attn_h (Tq, B, Ho), alpha (Tq, B, S), one (t, b) at a time, in float64."""
    kind, w_in, w_q, b_q, w_k, v, w_out, b_out = weights
    Tq, B, _ = query.shape
    S = memory.shape[0]
    attn_h = np.zeros((Tq, B, w_out.shape[0]))
    alpha = np.zeros((Tq, B, S))
    for t in range(Tq):
        for b in range(B):
            L = int(lengths[b])
            q, m = query[t, b].astype(np.float64), memory[:L, b].astype(np.float64)
            if kind == "dot":
                score = m @ q
            elif kind == "general":
                score = m @ (w_in @ q)
            else:
                pre = w_q @ q + (0.0 if b_q is None else b_q) + m @ w_k.T
                score = np.tanh(pre) @ np.reshape(v, -1)
            e = np.exp(score - score.max())
            alpha[t, b, :L] = e / e.sum()
            c = alpha[t, b, :L] @ m
            z = w_out @ np.concatenate([c, q]) + (0.0 if b_out is None else b_out)
            attn_h[t, b] = np.tanh(z)
    return attn_h, alpha


def make(kind, Hq=3, Hm=4, A=5, Ho=2, output_bias=None, dtype=np.float64, seed=0, scale=0.7):
    if kind == "dot":
        Hm = Hq
    att = nn.Attention(Hq, Hm, kind, attention_size=A if kind == "additive" else None, output_size=Ho,
                       output_bias=output_bias, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for _, p in att.named_parameters():  # wider than the default init, so the softmax is not flat
        p.data[...] = rng.uniform(-scale, scale, size=p.shape)
    return att


def inputs(att, Tq=4, B=3, S=5, seed=1, lengths=(5, 2, 1)):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((Tq, B, att.query_size))
    m = rng.standard_normal((S, B, att.memory_size))
    return q.astype(att.dtype), m.astype(att.dtype), np.array(lengths[:B], np.int64)


# -- forward -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("output_bias", [False, True])
@pytest.mark.parametrize("Tq", [1, 4])
def test_forward_equals_reference(kind, output_bias, Tq):
    att = make(kind, output_bias=output_bias)
    q, m, lengths = inputs(att, Tq=Tq)
    attn_h, alpha = att.forward(q, m, lengths)
    ref_h, ref_a = reference(att.weights_for_core(), q, m, lengths)
    assert_close(attn_h, ref_h, atol=1e-13, rtol=1e-12, what="attn_h")
    assert_close(alpha, ref_a, atol=1e-14, rtol=1e-12, what="alpha")


def test_state_dict_names_are_opennmt():
    assert list(make("general", output_bias=False).state_dict()) == ["linear_in.weight", "linear_out.weight"]
    assert list(make("dot", output_bias=True).state_dict()) == ["linear_out.weight", "linear_out.bias"]
    shapes = {k: v.shape for k, v in make("additive", Hq=3, Hm=4, A=5, Ho=2).state_dict().items()}
    assert shapes == {"linear_context.weight": (5, 4), "linear_query.weight": (5, 3), "linear_query.bias": (5,),
                      "v.weight": (1, 5), "linear_out.weight": (2, 7), "linear_out.bias": (2,)}


def test_defaults():
    a = nn.Attention(6)
    assert (a.memory_size, a.attn_type, a.output_size, a.output_bias, a.dtype) == (6, "general", 6, False,
                                                                                 np.float32)
    for alias in ("mlp", "concat", "bahdanau", "Additive"):
        b = nn.Attention(6, 4, alias)
        assert b.attn_type == "additive" and b.attention_size == 6 and b.output_bias
    assert nn.Attention(6, attn_type="dot").output_bias is False


def test_lengths_none_is_every_position():
    att = make("general")
    q, m, _ = inputs(att)
    h1, a1 = att.forward(q, m)
    h2, a2 = att.forward(q, m, np.full(3, m.shape[0]))
    assert_same_bits(h1, h2, "attn_h")
    assert_same_bits(a1, a2, "alpha")


# -- gradients ---------------------------------------------------------------------------------------

def _loss_and_grads(att, q, m, lengths, g_h, g_a):
    def loss():
        h, a = att.forward(q, m, lengths)
        return float(np.sum(h * g_h) + np.sum(a * g_a))
    return loss


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("output_bias", [False, True])
@pytest.mark.parametrize("Tq", [1, 3])
def test_gradcheck(kind, output_bias, Tq):
    att = make(kind, output_bias=output_bias)
    q, m, lengths = inputs(att, Tq=Tq, lengths=(5, 2, 3))
    rng = np.random.default_rng(7)
    h, a = att.forward(q, m, lengths)
    g_h = rng.standard_normal(h.shape)
    g_a = rng.standard_normal(a.shape)
    att.zero_grad()
    dq, dm = att.backward(g_h, g_a)
    loss = _loss_and_grads(att, q, m, lengths, g_h, g_a)
    checks = [("query", dq, numeric_grad(loss, q)), ("memory", dm, numeric_grad(loss, m))]
    analytic = {name: p.grad.copy() for name, p in att.named_parameters()}
    for name, p in att.named_parameters():
        checks.append((name, analytic[name], numeric_grad(loss, p.data)))
    n_params = {"dot": 1, "general": 2, "additive": 5}[kind] + output_bias  # + linear_out.bias
    assert len(checks) == 2 + n_params
    for name, got, num in checks:
        assert np.abs(num).max() > 1e-3, f"{kind} {name}: numeric gradient ~0, the check would pass vacuously"
        assert rel_err(got, num) < 1e-7, f"{kind} {name}: relative error {rel_err(got, num):.2e}"


def test_gradcheck_additive_without_query_bias_core():
    """The C++ path with b_q None (OpenNMT always has it; the kernels allow its absence)."""
    att = make("additive", output_bias=True)
    q, m, lengths = inputs(att, Tq=2)
    w = list(att.weights_for_core())
    w[3] = None
    w = tuple(w)
    rng = np.random.default_rng(3)

    def run():
        return _core.attention_forward(q, m, w, None, lengths)

    h, a, c, saved = run()
    g_h = rng.standard_normal(h.shape)
    grads = tuple(None if x is None else np.zeros_like(x) for x in w[1:])
    dq, dm = _core.attention_backward(g_h, None, q, m, None, lengths, a, c, h, saved, w, grads)
    ref_h, _ = reference(w, q, m, lengths)
    assert_close(h, ref_h, atol=1e-13, rtol=1e-12, what="attn_h")

    def loss():
        return float(np.sum(run()[0] * g_h))
    for name, got, arr in [("query", dq, q), ("memory", dm, m)] + [
            (f"weights[{i + 1}]", grads[i], w[i + 1]) for i in range(7) if w[i + 1] is not None]:
        num = numeric_grad(loss, arr)
        assert np.abs(num).max() > 1e-3, name
        assert rel_err(got, num) < 1e-7, f"{name}: relative error {rel_err(got, num):.2e}"


def test_backward_adds_into_parameter_grads():
    att = make("additive", output_bias=True)
    q, m, lengths = inputs(att)
    g = np.ones((q.shape[0], q.shape[1], att.output_size))
    att.zero_grad()
    att.forward(q, m, lengths)
    att.backward(g)
    once = {k: p.grad.copy() for k, p in att.named_parameters()}
    att.forward(q, m, lengths)
    att.backward(g)
    for k, p in att.named_parameters():
        assert_close(p.grad, 2 * once[k], atol=1e-14, rtol=1e-13, what=k)


# -- masking -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("Tq", [1, 4])
def test_masking_exact_zeros(kind, Tq):
    att = make(kind, output_bias=True)
    q, m, lengths = inputs(att, Tq=Tq, S=6, lengths=(6, 1, 3))
    h, a = att.forward(q, m, lengths)
    for b, L in enumerate(lengths):
        assert np.all(a[:, b, L:] == 0.0), f"alpha past length {L} of row {b} is not exactly 0"
        assert np.all(a[:, b, :L] > 0.0)
    assert_close(a.sum(-1), np.ones(a.shape[:2]), atol=1e-14, rtol=0, what="alpha sums")
    # grad_alpha everywhere (past the lengths too): those entries have no effect
    dq, dm = att.backward(np.ones_like(h), np.ones_like(a))
    for b, L in enumerate(lengths):
        assert np.all(dm[L:, b] == 0.0), f"grad_memory past length {L} of row {b} is not exactly 0"
        assert np.any(dm[:L, b] != 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_values_change_nothing(kind):
    """Whatever sits past each length (here: other random values) leaves every output and
    gradient bit-identical."""
    att = make(kind, output_bias=True)
    q, m, lengths = inputs(att, Tq=3, S=6, lengths=(6, 1, 3))
    m2 = m.copy()
    for b, L in enumerate(lengths):
        m2[L:, b] = 100.0 * np.random.default_rng(b).standard_normal(m2[L:, b].shape)
    results = []
    for mem in (m, m2):
        att.zero_grad()
        h, a = att.forward(q, mem, lengths)
        dq, dm = att.backward(np.ones_like(h), np.ones_like(a))
        results.append([h, a, dq, dm] + [p.grad.copy() for p in att.parameters()])
    for x, y in zip(*results):
        assert_same_bits(x, y)


# -- single steps, dtypes, threads ---------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_single_step_equals_batched(kind):
    att = make(kind, output_bias=True)
    q, m, lengths = inputs(att, Tq=5)
    rng = np.random.default_rng(5)
    g_h = rng.standard_normal((5, 3, att.output_size))
    att.zero_grad()
    h, a = att.forward(q, m, lengths)
    dq, dm = att.backward(g_h)
    batched = {k: p.grad.copy() for k, p in att.named_parameters()}
    att.zero_grad()
    dm_steps = np.zeros_like(dm)
    for t in range(5):
        ht, at = att.forward(q[t], m, lengths)
        assert ht.shape == (3, att.output_size) and at.shape == (3, m.shape[0])
        assert_close(ht, h[t], atol=1e-14, rtol=1e-13, what=f"attn_h[{t}]")
        assert_close(at, a[t], atol=1e-15, rtol=1e-13, what=f"alpha[{t}]")
        dqt, dmt = att.backward(g_h[t])
        assert_close(dqt, dq[t], atol=1e-14, rtol=1e-12, what=f"grad_query[{t}]")
        dm_steps += dmt
    assert_close(dm_steps, dm, atol=1e-13, rtol=1e-12, what="grad_memory")
    for k, p in att.named_parameters():
        assert_close(p.grad, batched[k], atol=1e-13, rtol=1e-12, what=k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("Tq", [1, 6])
def test_float32_matches_float64(kind, Tq):
    a64 = make(kind, Hq=16, Hm=24, A=12, Ho=20, output_bias=True, scale=0.3)
    a32 = make(kind, Hq=16, Hm=24, A=12, Ho=20, output_bias=True, scale=0.3, dtype=np.float32)
    a32.load_state_dict(a64.state_dict())
    rng = np.random.default_rng(2)
    B, S = 9, 17
    q = rng.standard_normal((Tq, B, 16))
    m = rng.standard_normal((S, B, a64.memory_size))
    lengths = rng.integers(1, S + 1, B)
    g = rng.standard_normal((Tq, B, 20))
    outs = []
    for att in (a64, a32):
        att.zero_grad()
        h, a = att.forward(q.astype(att.dtype), m.astype(att.dtype), lengths)
        assert h.dtype == att.dtype and a.dtype == att.dtype
        dq, dm = att.backward(g.astype(att.dtype))
        outs.append([h, a, dq, dm] + [p.grad for p in att.parameters()])
    for i, (x64, x32) in enumerate(zip(*outs)):
        assert x32.dtype == np.float32
        if i < 2:
            assert_close(x32, x64, atol=2e-6, rtol=1e-5, what=f"output {i}")
        else:
            assert rel_err(x32, x64) < 1e-5, f"gradient {i}: relative error {rel_err(x32, x64):.2e}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("Tq", [1, 8])
def test_threads_bit_identical(kind, Tq):
    """Rows are split between threads, each row's sums in a fixed order: any thread count
    gives the same bits (shapes big enough for the per-row loop to split)."""
    res = []
    for threads in (1, 2, 3):
        att = make(kind, Hq=32, Hm=32, A=32, Ho=32, output_bias=True, dtype=np.float32, scale=0.2)
        att.threads = threads
        q, m, lengths = inputs(att, Tq=Tq, B=64, S=40, lengths=tuple(np.arange(64) % 40 + 1))
        h, a = att.forward(q, m, lengths)
        dq, dm = att.backward(np.ones_like(h))
        res.append([h, a, dq, dm] + [p.grad.copy() for p in att.parameters()])
    for other in res[1:]:
        for x, y in zip(res[0], other):
            assert_same_bits(y, x)


# -- parity with OpenNMT-py's GlobalAttention formulas (in torch) -------------------------------

def torch_global_attention(torch, sd, kind, q, m, lengths, output_bias):
    """OpenNMT-py GlobalAttention (score / softmax / context / linear_out), time-major in and
    out, with tanh on attn_h for every kind as csrc/ops/attention.h specifies (OpenNMT-py
    leaves it out for 'mlp')."""
    t = {k: torch.tensor(v, requires_grad=True) for k, v in sd.items()}
    query = torch.tensor(q, requires_grad=True)
    source = query.transpose(0, 1)                                  # (B, Tq, Hq)
    memory_bank = torch.tensor(m, requires_grad=True)
    mb = memory_bank.transpose(0, 1)                                # (B, S, Hm)
    if kind == "dot":
        align = torch.bmm(source, mb.transpose(1, 2))
    elif kind == "general":
        h_t = source @ t["linear_in.weight"].T
        align = torch.bmm(h_t, mb.transpose(1, 2))
    else:
        wq = source @ t["linear_query.weight"].T + t["linear_query.bias"]  # (B, Tq, A)
        uh = mb @ t["linear_context.weight"].T                             # (B, S, A)
        align = (torch.tanh(wq[:, :, None, :] + uh[:, None, :, :]) @ t["v.weight"].T)[..., 0]
    S = m.shape[0]
    mask = torch.arange(S)[None, None, :] >= torch.tensor(lengths)[:, None, None]
    align = align.masked_fill(mask, -float("inf"))
    align_vectors = torch.softmax(align, -1)
    c = torch.bmm(align_vectors, mb)
    concat_c = torch.cat([c, source], 2)
    attn_h = concat_c @ t["linear_out.weight"].T
    if output_bias:
        attn_h = attn_h + t["linear_out.bias"]
    attn_h = torch.tanh(attn_h)
    return attn_h.transpose(0, 1), align_vectors.transpose(0, 1), t, query, memory_bank


@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_torch_opennmt(kind):
    torch = pytest.importorskip("torch")
    output_bias = kind == "additive"
    att = make(kind, Hq=6, Hm=7, A=5, Ho=6, output_bias=output_bias)
    q, m, lengths = inputs(att, Tq=4, B=3, S=5, lengths=(5, 2, 4))
    rng = np.random.default_rng(11)
    g_h = rng.standard_normal((4, 3, 6))
    att.zero_grad()
    h, a = att.forward(q, m, lengths)
    dq, dm = att.backward(g_h)
    th, ta, tp, query, memory_bank = torch_global_attention(torch, att.state_dict(), kind, q, m, lengths,
                                                             output_bias)
    (th * torch.tensor(g_h)).sum().backward()
    assert_close(h, th.detach().numpy(), atol=1e-13, rtol=1e-12, what="attn_h")
    assert_close(a, ta.detach().numpy(), atol=1e-14, rtol=1e-12, what="alpha")
    assert_close(dq, query.grad.numpy(), atol=1e-13, rtol=1e-11, what="grad_query")
    assert_close(dm, memory_bank.grad.numpy(), atol=1e-13, rtol=1e-11, what="grad_memory")
    for name, p in att.named_parameters():
        assert_close(p.grad, tp[name].grad.numpy(), atol=1e-13, rtol=1e-11, what=name)


# -- bad input ---------------------------------------------------------------------------------------

def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="memory_size == query_size"):
        nn.Attention(4, 5, "dot")
    with pytest.raises(ValueError, match="attn_type"):
        nn.Attention(4, attn_type="cosine")
    with pytest.raises(TypeError, match="attn_type"):
        nn.Attention(4, attn_type=3)
    with pytest.raises(ValueError, match="attention_size"):
        nn.Attention(4, attn_type="general", attention_size=3)
    with pytest.raises(ValueError, match="query_size"):
        nn.Attention(0)
    with pytest.raises(TypeError, match="output_bias"):
        nn.Attention(4, output_bias="yes")
    with pytest.raises(TypeError, match="dtype"):
        nn.Attention(4, dtype=np.int32)


def test_bad_forward_arguments():
    att = make("general", Hq=3, Hm=4)
    q, m, lengths = inputs(att)
    with pytest.raises(ValueError, match=r"memory_lengths must be in \[1, S\] = \[1, 5\], got memory_lengths\[1\] = 0"):
        att.forward(q, m, [5, 0, 1])
    with pytest.raises(ValueError, match=r"memory_lengths\[2\] = 6"):
        att.forward(q, m, [5, 1, 6])
    with pytest.raises(ValueError, match=r"memory_lengths must have shape \(B,\) = \(3,\)"):
        att.forward(q, m, [5, 1])
    with pytest.raises(TypeError, match="memory_lengths must hold integers"):
        att.forward(q, m, [5.0, 1.5, 2.0])
    with pytest.raises(ValueError, match=r"query must have shape \(Tq, B, Hq\) or \(B, Hq\)"):
        att.forward(q[None], m, lengths)
    with pytest.raises(ValueError, match=r"query must have shape \(Tq, B, Hq\) = \(Tq, 3, 3\)"):
        att.forward(q[:, :2], m, lengths)
    with pytest.raises(ValueError, match=r"query must have shape \(B, Hq\) = \(3, 3\)"):
        att.forward(q[0, :, :2], m, lengths)
    with pytest.raises(ValueError, match=r"memory must have shape \(S, B, Hm\) = \(S, B, 4\)"):
        att.forward(q, m[..., :3], lengths)
    with pytest.raises(ValueError, match="S >= 1"):
        att.forward(q, m[:0], lengths)
    with pytest.raises(TypeError, match="query must be a real numeric array"):
        att.forward(q.astype(complex), m, lengths)


def test_bad_backward_arguments():
    att = make("additive")
    q, m, lengths = inputs(att)
    with pytest.raises(ValueError, match="no forward"):
        att.backward(np.ones((4, 3, 2)))
    att.forward(q, m, lengths)
    with pytest.raises(ValueError, match=r"grad_attn_h must have shape \(Tq, B, Ho\) like attn_h \(4, 3, 2\)"):
        att.backward(np.ones((4, 3, 3)))
    with pytest.raises(ValueError, match=r"grad_alpha must have shape \(Tq, B, S\) like alpha \(4, 3, 5\)"):
        att.backward(np.ones((4, 3, 2)), np.ones((4, 3, 4)))
    att.forward(q[0], m, lengths)
    with pytest.raises(ValueError, match=r"grad_attn_h must have shape \(B, Ho\)"):
        att.backward(np.ones((4, 3, 2)))


def test_core_bad_weights():
    q = np.zeros((2, 3, 4))
    m = np.zeros((5, 3, 4))
    w_out = np.zeros((2, 8))
    with pytest.raises(TypeError, match="weights must be a tuple of 8"):
        _core.attention_forward(q, m, "dot")
    with pytest.raises(ValueError, match="weights must have 8 entries, got 2"):
        _core.attention_forward(q, m, ("dot", w_out))
    with pytest.raises(ValueError, match="attention kind must be one of"):
        _core.attention_forward(q, m, ("cosine", None, None, None, None, None, w_out, None))
    with pytest.raises(ValueError, match=r"weights\[1\] must be None for dot attention"):
        _core.attention_forward(q, m, ("dot", np.zeros((4, 4)), None, None, None, None, w_out, None))
    with pytest.raises(ValueError, match=r"weights\[6\] \(w_out\) must have shape \(Ho, Hm \+ Hq\) = \(2, 9\)"):
        _core.attention_forward(q, np.zeros((5, 3, 5)), ("general", np.zeros((5, 4)), None, None, None, None,
                                                         w_out, None))
    with pytest.raises(TypeError, match=r"weights\[6\] \(w_out\) must have dtype float64"):
        _core.attention_forward(q, m, ("dot", None, None, None, None, None, w_out.astype(np.float32), None))
    with pytest.raises(ValueError, match=r"query must have shape \(\*, 3, 4\)"):
        _core.attention_forward(q[:, :2], m, ("dot", None, None, None, None, None, w_out, None))
    with pytest.raises(ValueError, match=r"memory_lengths\[0\] = 0 is outside \[1, S\] = \[1, 5\]"):
        _core.attention_forward(q, m, ("dot", None, None, None, None, None, w_out, None), None,
                                np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.attention_forward(np.asfortranarray(q), m, ("dot", None, None, None, None, None, w_out, None))


def test_core_bad_backward():
    att = make("general", output_bias=True)
    q, m, lengths = inputs(att)
    w = att.weights_for_core()
    h, a, c, saved = _core.attention_forward(q, m, w, None, lengths)
    g = np.ones_like(h)
    a_bad = a.copy()
    a_bad[0, 1, 4] = 0.5
    with pytest.raises(ValueError, match=r"alpha\[0, 1, 4\] is not 0 past memory_lengths\[1\] = 2"):
        _core.attention_backward(g, None, q, m, None, lengths, a_bad, c, h, saved, w)
    with pytest.raises(ValueError, match=r"grads\[1\] \(dw_q\) must be None"):
        _core.attention_backward(g, None, q, m, None, lengths, a, c, h, saved, w,
                                 (None, np.zeros((3, 3)), None, None, None, None, None))
    with pytest.raises(ValueError, match=r"grads\[5\] \(dw_out\) must have shape \(2, 7\)"):
        _core.attention_backward(g, None, q, m, None, lengths, a, c, h, saved, w,
                                 (None, None, None, None, None, np.zeros((2, 6)), None))
    with pytest.raises(ValueError, match="saved must be None"):
        _core.attention_backward(g, None, q, m, None, lengths, a, c, h, np.zeros(1), w)
    wa = make("additive").weights_for_core()
    qa, ma, _ = inputs(make("additive"))
    ha, aa, ca, sa = _core.attention_forward(qa, ma, wa, None, lengths)
    with pytest.raises(ValueError, match="saved must be the"):
        _core.attention_backward(np.ones_like(ha), None, qa, ma, None, lengths, aa, ca, ha, None, wa)


def test_core_keys_and_dot_identity():
    att = make("general")
    q, m, lengths = inputs(att)
    w = att.weights_for_core()
    keys = _core.attention_keys(m, w)
    assert keys.shape == (5, 3, 3)
    assert_close(keys, m @ w[1], atol=1e-14, rtol=1e-13, what="general keys")
    a = make("additive").weights_for_core()
    assert_close(_core.attention_keys(m, a), m @ a[4].T, atol=1e-14, rtol=1e-13, what="additive keys")
    d = make("dot", Hq=4).weights_for_core()
    assert _core.attention_keys(m, d) is m
    # keys given equal keys computed inside
    r1 = _core.attention_forward(q, m, w, keys, lengths)
    r2 = _core.attention_forward(q, m, w, None, lengths)
    for x, y in zip(r1[:3], r2[:3]):
        assert_same_bits(x, y)


# -- the heat-map ------------------------------------------------------------------------------------

def test_plot_attention_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    att = make("general")
    q, m, lengths = inputs(att, Tq=4, lengths=(5, 3, 2))
    _, alpha = att.forward(q, m, lengths)
    path = tmp_path / "attn.png"
    out = diagnostics.plot_attention(alpha[:, 1, :3], ["el", "gato", "</s>"], "the cat sat </s>", path,
                                     title="pair 1")
    assert out == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
    diagnostics.plot_attention(alpha[:, 0], None, None, tmp_path / "plain.png")
    assert (tmp_path / "plain.png").stat().st_size > 1000


def test_plot_attention_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"alpha must have shape \(T, S\)"):
        diagnostics.plot_attention(np.ones(3), None, None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="source_tokens must have 3 tokens"):
        diagnostics.plot_attention(np.ones((2, 3)), ["a", "b"], None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="target_tokens must have 2 tokens"):
        diagnostics.plot_attention(np.ones((2, 3)), None, "a b c", tmp_path / "x.png")
    with pytest.raises(ValueError, match="give path"):
        diagnostics.plot_attention(np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        diagnostics.plot_attention(np.full((2, 3), np.nan), None, None, tmp_path / "x.png")
