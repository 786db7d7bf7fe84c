"""LSTM with projections (PyTorch's proj_size, LSTMP) in the kernels: _core.recurrent_forward /
recurrent_backward with w_hr.

    i, f, g, o from W_ih x + W_hh h (W_hh (4H, P)); c' = f c + i g; h' = W_hr (o tanh(c')) (P wide)

* float64 central differences of the kernel: every weight (w_ih, w_hh, b_ih, b_hh, w_hr), x,
  h0 and c0, forward and reverse, ragged lengths including 0;
* float32 and float64 forward against the slow numpy reference (tests/reference.py);
* 1 thread == 2 threads bit for bit on shapes whose time loop does split in two;
* a workspace moves between projected and plain forwards;
* bad input: a clear ValueError naming the argument.

Odd sizes (H=7, P=3, B=3, T=5): no dimension is a multiple of a SIMD width or of the 8-unit slices.
"""
import numpy as np
import pytest

from rnncore import _core
from gradcheck import numeric_grad
from helpers import assert_close, assert_same_bits, rel_err
from reference import layer_forward

T, B, I, H, P = 5, 3, 4, 7, 3
RAGGED = np.array([3, 0, 5], np.int64)
TOL = 1e-6


def make_weights(rng, I, H, P, dtype, bias=True):
    s = 1 / np.sqrt(H)
    w = {"w_ih": rng.uniform(-s, s, (4 * H, I)), "w_hh": rng.uniform(-s, s, (4 * H, P)),
         "w_hr": rng.uniform(-s, s, (P, H))}
    if bias:
        w["b_ih"] = rng.uniform(-s, s, 4 * H)
        w["b_hh"] = rng.uniform(-s, s, 4 * H)
    return {k: v.astype(dtype) for k, v in w.items()}


def run_forward(w, x, h0, c0, lengths, reverse, threads=1, workspace=None):
    T_, B_, _ = x.shape
    Pw = w["w_hr"].shape[0]
    out = np.zeros((T_, B_, Pw), x.dtype)
    hn, cn, ws = _core.recurrent_forward("lstm", x, w["w_ih"], w["w_hh"], w.get("b_ih"), w.get("b_hh"), h0, c0,
                                         lengths, reverse, out, 0, threads, workspace, w_hr=w["w_hr"])
    return out, hn, cn, ws


def run_backward(ws, w, dy, dhn, dcn, x_shape, threads=1):
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dx = np.empty(x_shape, w["w_ih"].dtype)
    dh0, dc0 = _core.recurrent_backward(ws, dy, 0, dhn, dcn, w["w_ih"], w["w_hh"], g["w_ih"], g["w_hh"],
                                        g.get("b_ih"), g.get("b_hh"), dx, False, threads, w_hr=w["w_hr"],
                                        dw_hr=g["w_hr"])
    return g, dx, dh0, dc0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, RAGGED], ids=["full", "ragged"])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_gradcheck_float64(reverse, lengths, bias):
    rng = np.random.default_rng(7)
    w = make_weights(rng, I, H, P, np.float64, bias)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, P)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5
    dy = rng.standard_normal((T, B, P))
    dhn = rng.standard_normal((B, P))
    dcn = rng.standard_normal((B, H))

    def f():
        out, hn, cn, _ = run_forward(w, x, h0, c0, lengths, reverse)
        return float(np.sum(dy * out) + np.sum(dhn * hn) + np.sum(dcn * cn))

    _, _, _, ws = run_forward(w, x, h0, c0, lengths, reverse)
    assert ws.proj_size == P
    g, dx, dh0, dc0 = run_backward(ws, w, dy, dhn, dcn, x.shape)
    analytic = dict(g, x=dx, h0=dh0, c0=dc0)
    numeric = {k: numeric_grad(f, w[k]) for k in w}
    numeric.update(x=numeric_grad(f, x), h0=numeric_grad(f, h0), c0=numeric_grad(f, c0))
    errors = {k: rel_err(analytic[k], numeric[k]) for k in analytic}
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"relative gradient error >= {TOL:g}: {bad}"
    for k in w:  # not vacuous
        assert np.linalg.norm(g[k]) > 1e-3, f"{k}: gradient (almost) zero"


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, np.array([6, 2, 0, 5], np.int64)], ids=["full", "ragged"])
def test_kernel_forward_matches_numpy_reference(dtype, tol, reverse, lengths):
    rng = np.random.default_rng(3)
    T_, B_, I_, H_, P_ = 6, 4, 5, 19, 6
    w = make_weights(rng, I_, H_, P_, dtype)
    x = rng.standard_normal((T_, B_, I_)).astype(dtype)
    h0 = (rng.standard_normal((B_, P_)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((B_, H_)) * 0.5).astype(dtype)
    out, hn, cn, _ = run_forward(w, x, h0, c0, lengths, reverse)
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    ref_out, ref_h, ref_c = layer_forward("lstm", x, w64["w_ih"], w64["w_hh"], w64["b_ih"], w64["b_hh"], h0, c0,
                                          lengths, reverse, w_hr=w64["w_hr"])
    assert out.shape == (T_, B_, P_) and hn.shape == (B_, P_) and cn.shape == (B_, H_)
    assert_close(out, ref_out, atol=tol, rtol=tol, what="output")
    assert_close(hn, ref_h, atol=tol, rtol=tol, what="h_n")
    assert_close(cn, ref_c, atol=tol, rtol=tol, what="c_n")


def test_kernel_out_columns_and_accumulate_dx():
    """A projected layer writes only its P columns of a wider out (bidirectional layout) and
    reads dy from the same columns."""
    rng = np.random.default_rng(5)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    out = np.full((T, B, 2 * P + 1), 7.0)
    _core.recurrent_forward("lstm", x, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], out=out, out_col=P + 1,
                            w_hr=w["w_hr"])
    ref, _, _ = run_forward(w, x, None, None, None, False)[:3]
    assert_same_bits(out[:, :, P + 1:], ref, "projected columns")
    assert np.all(out[:, :, :P + 1] == 7.0)


def test_one_thread_equals_two_bit_for_bit():
    if not _core.openmp_enabled():
        pytest.skip("built without OpenMP")
    rng = np.random.default_rng(9)
    T_, B_, I_, H_, P_ = 4, 24, 16, 200, 72
    assert _core.recurrent_threads("lstm", B_, H_, 2, proj_size=P_) == 2
    w = make_weights(rng, I_, H_, P_, np.float32)
    x = rng.standard_normal((T_, B_, I_)).astype(np.float32)
    lengths = rng.integers(0, T_ + 1, B_).astype(np.int64)
    dy = rng.standard_normal((T_, B_, P_)).astype(np.float32)
    dhn = rng.standard_normal((B_, P_)).astype(np.float32)
    results = []
    for threads in (1, 2):
        out, hn, cn, ws = run_forward(w, x, None, None, lengths, True, threads)
        g, dx, dh0, dc0 = run_backward(ws, w, dy, dhn, None, x.shape, threads)
        results.append((out, hn, cn, dx, dh0, dc0, g))
    a, b = results
    for name, u, v in zip(("out", "h_n", "c_n", "dx", "dh0", "dc0"), a[:6], b[:6]):
        assert_same_bits(v, u, name)
    for k in a[6]:
        assert_same_bits(b[6][k], a[6][k], k)


def test_workspace_moves_between_projected_and_plain():
    rng = np.random.default_rng(2)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    out, hn, cn, ws = run_forward(w, x, None, None, None, False)
    w_hh = rng.standard_normal((4 * H, H)) * 0.3
    plain = np.zeros((T, B, H))
    _core.recurrent_forward("lstm", x, w["w_ih"], w_hh, out=plain, workspace=ws)
    assert ws.proj_size == 0
    ref, _, _ = layer_forward("lstm", x, w["w_ih"], w_hh)
    assert_close(plain, ref, atol=1e-12, rtol=1e-12, what="plain after projected")
    with pytest.raises(ValueError, match="only for a forward with projections"):
        run_backward(ws, dict(w, w_hh=w_hh), np.ones((T, B, H)), None, None, x.shape)
    out2, _, _, ws = run_forward(w, x, None, None, None, False, workspace=ws)
    assert_same_bits(out2, out, "projected again")


def _fwd_kwargs(w, x, **over):
    kw = dict(cell="lstm", x=x, w_ih=w["w_ih"], w_hh=w["w_hh"], b_ih=w["b_ih"], b_hh=w["b_hh"],
              out=np.zeros((x.shape[0], x.shape[1], P)), w_hr=w["w_hr"])
    kw.update(over)
    return kw


@pytest.mark.parametrize("over, match", [
    (dict(cell="gru"), r"w_hr \(projections\) is only for lstm cells"),
    (dict(w_hr=np.zeros((H, H))), r"w_hr must have shape \(P, H\) with 0 < P < H"),
    (dict(w_hr=np.zeros((H + 1, H))), r"0 < P < H"),
    (dict(w_hr=np.zeros((0, H))), r"0 < P < H"),
    (dict(w_hh=np.zeros((4 * H, H))), r"w_hh must have shape \(G\*H, P\) = \(28, 3\)"),
    (dict(w_hr=np.zeros((P, H + 1))), r"w_hh must have shape \(G\*H, P\)"),
    (dict(h0=np.zeros((B, H))), r"h0 must have shape \(3, 3\)"),
    (dict(c0=np.zeros((B, P))), r"c0 must have shape \(3, 7\)"),
    (dict(out=np.zeros((T, B, P - 1))), r"out columns \[out_col, out_col \+ P\)"),
    (dict(w_hr=np.zeros((P, H), np.float32)), r"w_hr must have dtype float64"),
    (dict(w_hr=np.zeros((P, H, 1))), r"w_hr must have"),
])
def test_forward_bad_input(over, match):
    rng = np.random.default_rng(1)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    with pytest.raises(ValueError, match=match) if "dtype" not in match else pytest.raises((TypeError, ValueError),
                                                                                           match=match):
        _core.recurrent_forward(**_fwd_kwargs(w, x, **over))


def test_backward_bad_input():
    rng = np.random.default_rng(1)
    w = make_weights(rng, I, H, P, np.float64)
    x = rng.standard_normal((T, B, I))
    g = {k: np.zeros_like(v) for k, v in w.items()}
    dx = np.empty_like(x)

    def call(**over):
        kw = dict(workspace=ws, dy=np.ones((T, B, P)), dy_col=0, dh_n=None, dc_n=None, w_ih=w["w_ih"],
                  w_hh=w["w_hh"], dw_ih=g["w_ih"], dw_hh=g["w_hh"], db_ih=None, db_hh=None, dx=dx,
                  w_hr=w["w_hr"], dw_hr=g["w_hr"])
        kw.update(over)
        return _core.recurrent_backward(**kw)

    _, _, _, ws = run_forward(w, x, None, None, None, False)
    for over, match in [(dict(w_hr=None), "w_hr and dw_hr are required"),
                        (dict(dw_hr=None), "w_hr and dw_hr are required"),
                        (dict(dw_hr=np.zeros((P, H + 1))), r"dw_hr must have shape \(3, 7\)"),
                        (dict(w_hh=np.zeros((4 * H, H))), r"w_hh must have shape \(28, 3\)"),
                        (dict(dh_n=np.zeros((B, H))), r"dh_n must have shape \(3, 3\)"),
                        (dict(dy=np.ones((T, B, P - 1))), r"dy columns \[dy_col, dy_col \+ P\)")]:
        with pytest.raises(ValueError, match=match):
            call(**over)
        assert ws.ready  # a refused call leaves the forward to differentiate
    dh0, dc0 = call()
    assert dh0.shape == (B, P) and dc0.shape == (B, H)


def test_recurrent_threads_proj_size_checks():
    with pytest.raises(ValueError, match="proj_size"):
        _core.recurrent_threads("gru", 4, 16, 2, proj_size=4)
    with pytest.raises(ValueError, match="proj_size"):
        _core.recurrent_threads("lstm", 4, 16, 2, proj_size=16)
    with pytest.raises(ValueError, match="proj_size"):
        _core.recurrent_threads("lstm", 4, 16, 2, proj_size=-1)
    assert _core.recurrent_threads("lstm", 4, 16, 2, proj_size=8) >= 1


# ----------------------------------------------------------------------------------------------
# Generation: a LanguageModel whose LSTM layers have projections, decoded in C++
# ----------------------------------------------------------------------------------------------
def _lm(layers=2, dtype=np.float32, V=13, E=6, Hh=11, Pp=4, seed=0, threads=1):
    from rnncore.nn import LanguageModel

    m = LanguageModel(V, E, Hh, num_layers=layers, proj_size=Pp, seed=seed, dtype=dtype, threads=threads)
    m.eval()
    for _, p in m.named_parameters():  # sharper distributions: no argmax ties
        p.data *= 3.0
    return m


def _full_logits(model, tokens):
    logits, _ = model.forward(np.asarray(tokens, np.int64)[:, None])
    return logits[:, 0].astype(np.float64)


def test_lm_with_projections_shapes_and_state():
    m = _lm()
    assert m.decoder.weight.shape == (13, 4) and m.rnn.proj_size == 4 and "proj_size=4" in repr(m)
    logits, (h, c) = m.forward(np.zeros((5, 2), np.int64))
    assert logits.shape == (5, 2, 13) and h.shape == (2, 2, 4) and c.shape == (2, 2, 11)
    from rnncore.nn import LanguageModel

    again = LanguageModel(**m.config())
    again.load_state_dict(m.state_dict())
    assert_same_bits(again.forward(np.zeros((5, 2), np.int64))[0], logits, "rebuilt from config")
    with pytest.raises(ValueError, match="only for cell='lstm'"):
        LanguageModel(13, 6, 11, cell="gru", proj_size=4)
    with pytest.raises(ValueError, match="proj_size must be smaller than hidden_size"):
        LanguageModel(13, 6, 11, proj_size=11)
    with pytest.raises(ValueError, match="tie_weights requires proj_size == embedding_dim"):
        LanguageModel(13, 6, 11, proj_size=4, tie_weights=True)
    LanguageModel(13, 4, 11, proj_size=4, tie_weights=True)


def test_lm_with_projections_trains_checkpoints_and_checks_gradients():
    """The model's whole backward (head over P columns, projected layers) in float64 against
    central differences on a few parameters, and a save/load round trip."""
    import os
    import tempfile

    m = _lm(dtype=np.float64)
    m.train()
    tokens = np.array([[1, 2], [3, 4], [5, 6]])
    targets = np.array([[2, 3], [4, 5], [6, 7]])

    def f():
        return float(m.loss(tokens, targets)[0])

    m.zero_grad()
    f()
    m.backward()
    for name in ("rnn.weight_hr_l1", "rnn.weight_hr_l0", "rnn.weight_hh_l1", "decoder.weight"):
        p = dict(m.named_parameters())[name]
        num = numeric_grad(f, p.data)
        assert rel_err(p.grad, num) < TOL, name
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lm.safetensors")
        rnncore_mod = __import__("rnncore")
        rnncore_mod.save(path, m)
        model = rnncore_mod.load(path).build()
        assert model.rnn.proj_size == 4
        assert_same_bits(model.forward(tokens)[0], m.forward(tokens)[0], "loaded")


def test_decoder_logits_equal_the_full_forward_with_projections():
    from rnncore import sampling

    model = _lm(layers=3, dtype=np.float64)
    tokens = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    dec = sampling.Decoder(model, 1, threads=1)
    dec.prime(tokens[None, :1])
    step = []
    for t in range(len(tokens)):
        dec.set_next_tokens(np.array([tokens[t]], np.int64))
        step.append(dec.step_logits()[0])
    assert_close(np.array(step), _full_logits(model, tokens), atol=1e-12, rtol=1e-12, what="decoder logits")
    h, c = dec.get_state()
    assert h.shape == (3, 1, 4) and c.shape == (3, 1, 11)


def test_greedy_decode_equals_a_step_by_step_reference():
    """temperature 0: each token is the argmax of the logits the plain forward gives, one step
    at a time with the state carried (the reference loop), for 2 streams at once."""
    from rnncore import sampling

    model = _lm(layers=2)
    primes = np.array([[2, 7, 7, 1], [5, 0, 3, 3]])
    out = sampling.generate(model, primes, 25, temperature=0, seed=0)
    assert out.shape == (2, 25)
    for b in range(2):
        logits, state = model.forward(primes[b][:, None])
        tok = int(logits[-1, 0].argmax())
        ref = []
        for _ in range(25):
            ref.append(tok)
            logits, state = model.forward(np.array([[tok]]), state)
            tok = int(logits[-1, 0].argmax())
        np.testing.assert_array_equal(out[b], ref)


def test_beam_search_with_projections():
    from rnncore import sampling

    model = _lm(layers=2)
    greedy = sampling.generate(model, np.array([2, 3]), 12, temperature=0)
    (tokens, score), = sampling.beam_search(model, np.array([2, 3]), beam_width=1, max_len=12)
    np.testing.assert_array_equal(tokens, greedy)
    logits = _full_logits(model, np.concatenate([[2, 3], greedy[:-1]]))[1:]
    logp = [row - row.max() - np.log(np.exp(row - row.max()).sum()) for row in logits]
    assert score == pytest.approx(sum(lp[t] for lp, t in zip(logp, greedy)), rel=1e-5)
    hyps = sampling.beam_search(model, np.array([2, 3]), beam_width=4, max_len=12, n_best=3)
    assert len(hyps) == 3 and hyps[0][1] >= hyps[1][1] >= hyps[2][1] and hyps[0][1] >= score - 1e-9


def test_decoder_with_projections_one_thread_equals_two():
    from rnncore import sampling

    if not _core.openmp_enabled():
        pytest.skip("built without OpenMP")
    model = _lm(layers=2, V=40, E=16, Hh=64, Pp=24)
    outs = [sampling.generate(model, np.array([[1, 2], [3, 4], [5, 6]]), 20, temperature=1.0, seed=5, threads=t)
            for t in (1, 2)]
    assert_same_bits(outs[1], outs[0], "tokens")


def test_core_decoder_bad_projections():
    rng = np.random.default_rng(0)
    Vv, Ee, Hh, Pp = 7, 5, 6, 3

    def layer(in_size, p=Pp):
        r = p or Hh
        t = (rng.standard_normal((4 * Hh, in_size)), rng.standard_normal((4 * Hh, r)), None, None)
        return t + ((rng.standard_normal((p, Hh)),) if p else ())

    emb, w_out = rng.standard_normal((Vv, Ee)), rng.standard_normal((Vv, Pp))
    _core.LMDecoder("lstm", emb, [layer(Ee), layer(Pp)], w_out, None, 1, 1)  # valid
    with pytest.raises(ValueError, match="every layer must be projected alike"):
        _core.LMDecoder("lstm", emb, [layer(Ee), layer(Pp, 0)], w_out, None, 1, 1)
    with pytest.raises(ValueError, match=r"layers\[0\].w_hr must have shape \(P, H\) with 0 < P < H"):
        _core.LMDecoder("lstm", emb, [layer(Ee)[:4] + (np.zeros((Hh, Hh)),)], w_out, None, 1, 1)
    with pytest.raises(ValueError, match=r"w_out must have shape \(7, 3\)"):
        _core.LMDecoder("lstm", emb, [layer(Ee)], rng.standard_normal((Vv, Hh)), None, 1, 1)
    with pytest.raises(ValueError, match=r"layers\[1\].w_ih must have shape \(24, 3\)"):
        _core.LMDecoder("lstm", emb, [layer(Ee), layer(Hh)], w_out, None, 1, 1)
    with pytest.raises(ValueError, match="only for lstm cells"):
        g = (rng.standard_normal((3 * Hh, Ee)), rng.standard_normal((3 * Hh, Pp)), None, None,
             rng.standard_normal((Pp, Hh)))
        _core.LMDecoder("gru", emb, [g], w_out, None, 1, 1)
    dec = _core.LMDecoder("lstm", emb, [layer(Ee)], w_out, None, 2, 1)
    with pytest.raises(ValueError, match=r"h must have shape \(1, 2, 3\)"):
        dec.set_state(np.zeros((1, 2, Hh)), np.zeros((1, 2, Hh)))
    dec.set_state(np.zeros((1, 2, Pp)), np.zeros((1, 2, Hh)))


# ----------------------------------------------------------------------------------------------
# rnncore.nn.LSTM(proj_size=...) against torch.nn.LSTM(proj_size=...)
# ----------------------------------------------------------------------------------------------
torch = pytest.importorskip("torch")  # noqa: E402  (the kernel tests above need no torch)
import rnncore  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

F32 = 1e-5


def _configs(n, seed):
    """Random (T, B, I, H, P, L, bidirectional, batch_first, ragged) with 0 < P < H."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        H = int(rng.integers(2, 24))
        out.append((int(rng.integers(1, 8)), int(rng.integers(1, 6)), int(rng.integers(1, 9)), H,
                    int(rng.integers(1, H)), 1 + k % 3, bool(k % 2), bool(rng.integers(0, 2)), k % 4 >= 2))
    return out


def _torch_run(tl, x, h0, c0, lengths, batch_first):
    """torch's outputs (padded, zeros past each length), h_n, c_n for a padded batch."""
    if lengths is None:
        return tl(x, (h0, c0))
    packed = pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    y, (h, c) = tl(packed, (h0, c0))
    y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    return y, (h, c)


def _assert_torch_close(actual, expected, what, tol=F32):
    assert_close(actual, expected.detach().numpy(), atol=tol, rtol=tol, what=what)


@pytest.mark.parametrize("cfg", _configs(12, 4), ids=lambda c: "T%dB%dI%dH%dP%dL%d%s%s%s" % (
    c[:6] + ("bi" if c[6] else "", "bf" if c[7] else "", "rag" if c[8] else "")))
def test_nn_lstm_matches_torch(cfg):
    T_, B_, I_, H_, P_, L, bi, bf, ragged = cfg
    D = 2 if bi else 1
    torch.manual_seed(hash(cfg) % 2**31)
    tl = torch.nn.LSTM(I_, H_, L, bidirectional=bi, batch_first=bf, proj_size=P_)
    ours = rnncore.nn.LSTM(I_, H_, L, bidirectional=bi, batch_first=bf, proj_size=P_)
    assert list(ours.state_dict()) == list(tl.state_dict())
    ours.load_state_dict(rnncore.from_torch(tl))
    x = torch.randn((B_, T_, I_) if bf else (T_, B_, I_), requires_grad=True)
    h0 = torch.randn(L * D, B_, P_, requires_grad=True)
    c0 = torch.randn(L * D, B_, H_, requires_grad=True)
    lengths = None
    if ragged:
        lengths = np.random.default_rng(B_).integers(1, T_ + 1, B_).astype(np.int64)
        lengths[0] = T_
    y, (h, c) = _torch_run(tl, x, h0, c0, lengths, bf)
    yo, (ho, co) = ours(x.detach().numpy(), (h0.detach().numpy(), c0.detach().numpy()), lengths=lengths)
    assert yo.shape == tuple(y.shape) and ho.shape == (L * D, B_, P_) and co.shape == (L * D, B_, H_)
    _assert_torch_close(yo, y, "output")
    _assert_torch_close(ho, h, "h_n")
    _assert_torch_close(co, c, "c_n")
    gy, gh, gc = torch.randn_like(y), torch.randn_like(h), torch.randn_like(c)
    torch.autograd.backward([y, h, c], [gy, gh, gc])
    dx = ours.backward(gy.numpy(), (gh.numpy(), gc.numpy()))
    _assert_torch_close(dx, x.grad, "dx")
    _assert_torch_close(ours.grad_h0[0], h0.grad, "dh0")
    _assert_torch_close(ours.grad_h0[1], c0.grad, "dc0")
    theirs = dict(tl.named_parameters())
    for name, p in ours.named_parameters():
        _assert_torch_close(p.grad, theirs[name].grad, f"grad {name}")
    assert np.abs(ours.weight_hr_l0.grad).max() > 0


def test_nn_lstm_finite_differences_stacked_bidirectional_ragged():
    """The layer (2 layers, bidirectional, no bias, ragged with a 0) in float64: every parameter,
    x, h0 and c0 against central differences."""
    rng = np.random.default_rng(13)
    layer = rnncore.nn.LSTM(I, H, 2, bidirectional=True, proj_size=P, bias=False, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((4, B, P)) * 0.5
    c0 = rng.standard_normal((4, B, H)) * 0.5
    dy = rng.standard_normal((T, B, 2 * P))
    dh, dc = rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H))

    def f():
        out, (hn, cn) = layer.forward(x, (h0, c0), lengths=RAGGED)
        return float(np.sum(dy * out) + np.sum(dh * hn) + np.sum(dc * cn))

    layer.zero_grad()
    f()
    dx = layer.backward(dy, (dh, dc))
    analytic = {n: p.grad.copy() for n, p in layer.named_parameters()}
    analytic.update(x=dx, h0=layer.grad_h0[0], c0=layer.grad_h0[1])
    numeric = {n: numeric_grad(f, p.data) for n, p in layer.named_parameters()}
    numeric.update(x=numeric_grad(f, x), h0=numeric_grad(f, h0), c0=numeric_grad(f, c0))
    bad = {k: rel_err(analytic[k], numeric[k]) for k in analytic if not rel_err(analytic[k], numeric[k]) < TOL}
    assert not bad, bad
    assert sum(n.startswith("weight_hr") for n in analytic) == 4


def test_nn_lstm_matches_the_numpy_reference_unbatched_and_state_dict_round_trip():
    from reference import rnn_forward

    layer = rnncore.nn.LSTM(I, H, 3, proj_size=P, seed=1)
    x = np.random.default_rng(0).standard_normal((T, I)).astype(np.float32)
    out, (hn, cn) = layer(x)
    assert out.shape == (T, P) and hn.shape == (3, P) and cn.shape == (3, H)
    params = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    ref, ref_h, ref_c = rnn_forward("lstm", x[:, None].astype(np.float64), params, num_layers=3)
    assert_close(out, ref[:, 0], atol=F32, rtol=F32, what="output")
    assert_close(hn, ref_h[:, 0], atol=F32, rtol=F32, what="h_n")
    assert_close(cn, ref_c[:, 0], atol=F32, rtol=F32, what="c_n")
    tl = torch.nn.LSTM(I, H, 3, proj_size=P)
    tl.load_state_dict(rnncore.to_torch(layer))
    again = rnncore.nn.LSTM(**layer.config())
    again.load_state_dict(layer.state_dict())
    assert_same_bits(again(x)[0], out, "rebuilt from config + state_dict")
    assert layer.config()["proj_size"] == P and "proj_size=3" in repr(layer)
    assert layer.weight_hh_l1.shape == (4 * H, P) and layer.weight_ih_l1.shape == (4 * H, P)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(proj_size=7), ValueError, "proj_size must be smaller than hidden_size"),
    (dict(proj_size=9), ValueError, "proj_size must be smaller than hidden_size"),
    (dict(proj_size=-1), ValueError, "proj_size must be >= 0"),
    (dict(proj_size=1.5), TypeError, "proj_size must be an int"),
])
def test_nn_lstm_bad_proj_size(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rnncore.nn.LSTM(I, H, **kwargs)


def test_nn_proj_size_only_for_lstm_and_state_shapes_named():
    with pytest.raises(ValueError, match="only for LSTM"):
        rnncore.nn.RNNBase("gru", I, H, proj_size=2)
    layer = rnncore.nn.LSTM(I, H, proj_size=P)
    x = np.zeros((T, B, I), np.float32)
    with pytest.raises(ValueError, match=r"h0 must have shape \(L\*D, B, P\)"):
        layer(x, (np.zeros((1, B, H), np.float32), np.zeros((1, B, H), np.float32)))
    with pytest.raises(ValueError, match=r"c0 must have shape \(L\*D, B, H\)"):
        layer(x, (np.zeros((1, B, P), np.float32), np.zeros((1, B, P), np.float32)))
    layer(x)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(T, B, D\*P\)"):
        layer.backward(np.zeros((T, B, H), np.float32))
    layer.weight_hr_l0.data = np.zeros((H, H), np.float32)
    with pytest.raises(ValueError, match=r"weight_hr_l0"):
        layer(x)


# ----------------------------------------------------------------------------------------------
# rnncore.torch.LSTM(proj_size=...): the drop-in
# ----------------------------------------------------------------------------------------------
rt = pytest.importorskip("rnncore.torch")


@pytest.mark.parametrize("cfg", _configs(10, 8), ids=lambda c: "T%dB%dI%dH%dP%dL%d%s%s%s" % (
    c[:6] + ("bi" if c[6] else "", "bf" if c[7] else "", "packed" if c[8] else "")))
def test_dropin_matches_torch(cfg):
    T_, B_, I_, H_, P_, L, bi, bf, packed = cfg
    D = 2 if bi else 1
    torch.manual_seed(hash(cfg) % 2**31)
    tl = torch.nn.LSTM(I_, H_, L, bidirectional=bi, batch_first=bf, proj_size=P_)
    ours = rt.LSTM(I_, H_, L, bidirectional=bi, batch_first=bf, proj_size=P_)
    ours.load_state_dict(tl.state_dict())
    x = torch.randn((B_, T_, I_) if bf else (T_, B_, I_))
    h0 = torch.randn(L * D, B_, P_)
    c0 = torch.randn(L * D, B_, H_)
    lengths = np.random.default_rng(B_ + 1).integers(1, T_ + 1, B_)
    results = []
    for m in (tl, ours):
        xs, hs, cs = (t.clone().requires_grad_() for t in (x, h0, c0))
        inp = pack_padded_sequence(xs, torch.as_tensor(lengths), batch_first=bf, enforce_sorted=False) \
            if packed else xs
        y, (h, c) = m(inp, (hs, cs))
        if packed:
            assert isinstance(y, torch.nn.utils.rnn.PackedSequence)
            y = y.data
        torch.manual_seed(1)
        loss = (y * torch.randn_like(y)).sum() + (h * torch.randn_like(h)).sum() + (c * torch.randn_like(c)).sum()
        m.zero_grad()
        loss.backward()
        results.append((y, h, c, xs.grad, hs.grad, cs.grad, {n: p.grad.clone() for n, p in m.named_parameters()}))
    (ty, th, tc, tdx, tdh, tdc, tg), (oy, oh, oc, odx, odh, odc, og) = results
    for what, a, b in (("output", oy, ty), ("h_n", oh, th), ("c_n", oc, tc), ("dx", odx, tdx), ("dh0", odh, tdh),
                       ("dc0", odc, tdc)):
        torch.testing.assert_close(a, b, atol=F32, rtol=F32, msg=lambda m, w=what: f"{w}: {m}")
    assert set(og) == set(tg) and any(n.startswith("weight_hr") for n in og)
    for n in tg:
        torch.testing.assert_close(og[n], tg[n], atol=F32, rtol=F32, msg=lambda m, w=n: f"grad {w}: {m}")


def test_dropin_gradcheck_float64():
    torch.manual_seed(0)
    m = rt.LSTM(3, 5, 2, bidirectional=True, proj_size=2, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h0, c0: m(x, (h0, c0))[0], (x, h0, c0))
    assert torch.autograd.gradcheck(lambda x, h0, c0: torch.cat([t.reshape(-1) for t in m(x, (h0, c0))[1]]),
                                    (x, h0, c0))

    # Every weight (w_hr included) through torch.func.functional_call.
    names = [n for names in m._all_weights for n in names]
    weights = [getattr(m, n) for n in names]
    assert sum(n.startswith("weight_hr") for n in names) == 4

    def g(x, *ws):
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, ws)), (x, (h0.detach(), c0.detach())))
        return torch.cat([y.reshape(-1), h.reshape(-1), c.reshape(-1)])

    assert torch.autograd.gradcheck(g, (x, *[w.detach().clone().requires_grad_() for w in weights]))


def test_dropin_gradcheck_float64_packed():
    """A ragged PackedSequence (not sorted) through a bidirectional projected drop-in, float64."""
    torch.manual_seed(1)
    m = rt.LSTM(3, 5, bidirectional=True, proj_size=2, dtype=torch.float64)
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([2, 4, 1])

    def f(data):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        packed = torch.nn.utils.rnn.PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                                                   packed.unsorted_indices)
        y, (h, c) = m(packed)
        return torch.cat([y.data.reshape(-1), h.reshape(-1), c.reshape(-1)])

    data = pack_padded_sequence(x, lengths, enforce_sorted=False).data.clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (data,))
