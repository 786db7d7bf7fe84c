"""AdaptiveLogSoftmaxWithLoss: float64 gradient check, a full softmax when the head covers the
vocabulary, log_prob against a direct computation, torch.nn.AdaptiveLogSoftmaxWithLoss with
the same weights, bad input."""
import numpy as np
import pytest

import rnncore
from rnncore.nn import AdaptiveLogSoftmaxWithLoss

from gradcheck import numeric_grad

I, V, CUT = 12, 20, [4, 9, 15]


@pytest.fixture(autouse=True)
def _one_thread():
    rnncore.set_num_threads(1)


def _model(dtype=np.float64, cutoffs=CUT, head_bias=True, div_value=2.0, seed=0):
    m = AdaptiveLogSoftmaxWithLoss(I, V, cutoffs, div_value=div_value, head_bias=head_bias, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for p in m.parameters():
        p.data[...] = rng.standard_normal(p.data.shape) * 0.5
    return m


def _data(N=11, seed=2, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, I)).astype(dtype)
    t = np.concatenate([np.array([0, 3, 4, 8, 9, 14, 15, 19]), rng.integers(0, V, N - 8)])
    return x, t


def test_state_dict_names_and_shapes():
    m = AdaptiveLogSoftmaxWithLoss(16, 30, [5, 12], div_value=2.0)
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert shapes == {"head.weight": (7, 16), "tail.0.0.weight": (8, 16), "tail.0.1.weight": (7, 8),
                      "tail.1.0.weight": (4, 16), "tail.1.1.weight": (18, 4)}


@pytest.mark.parametrize("with_grad_output", [False, True])
def test_gradcheck(with_grad_output):
    m = _model()
    x, t = _data()
    go = np.random.default_rng(5).standard_normal(x.shape[0]) if with_grad_output else None

    def f():
        out, loss = m.forward(x, t)
        return float(loss) * 0.7 + (0.0 if go is None else float((go * out).sum()))

    m.zero_grad()
    m.forward(x, t)
    dx = m.backward(0.7, go)
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, numeric_grad(f, p.data), rtol=1e-6, atol=1e-8, err_msg=name)


def test_log_prob_sums_to_one_and_matches_forward_and_predict():
    m = _model()
    x, t = _data()
    lp = m.log_prob(x)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-12)
    out, loss = m.forward(x, t)
    np.testing.assert_allclose(out, lp[np.arange(len(t)), t], rtol=1e-12)
    assert loss == pytest.approx(-out.mean(), rel=1e-12)
    assert (m.predict(x) == lp.argmax(axis=1)).all()
    # a direct computation of one class in cluster 1: head entry S+1 then the cluster's softmax
    w, b = m.head.weight.data, m.head.bias.data
    h = x @ w.T + b
    hl = h - np.log(np.exp(h).sum(1, keepdims=True))
    z = (x @ m.tail[1][0].weight.data.T) @ m.tail[1][1].weight.data.T
    zl = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(lp[:, 10], hl[:, 4 + 1] + zl[:, 10 - 9], rtol=1e-12)


def test_head_over_the_whole_vocabulary_is_a_full_softmax():
    m = _model(cutoffs=[])
    x, t = _data()
    logits = x @ m.head.weight.data.T + m.head.bias.data
    ref = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(m.log_prob(x), ref, rtol=1e-12)
    out, loss = m.forward(x, t)
    ce, _ = rnncore.nn.cross_entropy(logits, t)
    assert loss == pytest.approx(float(ce), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("head_bias", [False, True])
def test_matches_torch(dtype, head_bias):
    torch = pytest.importorskip("torch")
    m = _model(dtype=dtype, head_bias=head_bias, div_value=2.0)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(I, V, CUT, div_value=2.0, head_bias=head_bias)
    ref = ref.to(torch.float64 if dtype == np.float64 else torch.float32)
    assert set(ref.state_dict()) == set(m.state_dict())
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
    x, t = _data(N=40, dtype=dtype)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    r = ref(xt, torch.from_numpy(t))
    out, loss = m.forward(x, t)
    np.testing.assert_allclose(out, r.output.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert float(loss) == pytest.approx(r.loss.item(), rel=1e-5, abs=1e-5)
    r.loss.backward()
    m.zero_grad()
    dx = m.backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(dict(m.named_parameters())[name].grad, p.grad.numpy(), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    with torch.no_grad():
        np.testing.assert_allclose(m.log_prob(x), ref.log_prob(torch.from_numpy(x.copy())).numpy(), rtol=1e-5,
                                   atol=1e-5)
        assert (m.predict(x) == ref.predict(torch.from_numpy(x.copy())).numpy()).all()
    # unbatched
    o1, l1 = m.forward(x[3], t[3])
    assert np.ndim(o1) == 0 and float(o1) == pytest.approx(float(out[3]), rel=1e-5)


def test_bad_input_is_a_clear_error():
    for cut in ([5, 3], [3, 3], [0, 4], [4, 20], [4, 25]):
        with pytest.raises(ValueError, match="cutoffs should be a sequence of unique, positive integers"):
            AdaptiveLogSoftmaxWithLoss(I, V, cut)
    with pytest.raises(TypeError, match="cutoffs must be ints"):
        AdaptiveLogSoftmaxWithLoss(I, V, [2.5])
    with pytest.raises(ValueError, match="div_value"):
        AdaptiveLogSoftmaxWithLoss(I, V, [4], div_value=0)
    with pytest.raises(ValueError, match="is 0; use a smaller div_value"):
        AdaptiveLogSoftmaxWithLoss(4, V, [4, 9], div_value=4.0)
    m = _model()
    x, t = _data()
    with pytest.raises(ValueError, match=r"target values should be in \[0, 19\], but values in range \[0, 20\]"):
        m.forward(x, np.where(t == 19, 20, t))
    with pytest.raises(ValueError, match=r"target values should be in \[0, 19\]"):
        m.forward(x, np.where(t == 0, -1, t))
    with pytest.raises(ValueError, match="input must have shape"):
        m.forward(x[:, :5], t)
    with pytest.raises(ValueError, match="target must have shape"):
        m.forward(x, t[:3])
    with pytest.raises(RuntimeError):
        _model().backward()


# -- in the language model -------------------------------------------------------------------

def test_lm_loss_equals_the_cross_entropy_of_its_log_probs_and_gradcheck():
    from rnncore.nn import LanguageModel, cross_entropy

    V, T, B = 15, 4, 3
    m = LanguageModel(V, 5, 16, cell="gru", adaptive_softmax=[4, 9], dtype=np.float64, seed=0, threads=1)
    assert "decoder.tail.1.1.weight" in m.state_dict() and m.config()["adaptive_softmax"] == [4, 9]
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    logits, _ = m.forward(x)
    loss, _ = m.loss(x, y)
    assert float(loss) == pytest.approx(float(cross_entropy(logits, y)[0]), rel=1e-12)
    m.zero_grad()
    m.loss(x, y)
    m.backward()
    for name, p in m.named_parameters():
        num = numeric_grad(lambda: float(m.loss(x, y)[0]), p.data)
        np.testing.assert_allclose(p.grad, num, rtol=1e-5, atol=1e-8, err_msg=name)
    # ignore_index leaves positions out
    y2 = y.copy()
    y2[0] = -100
    keep = y2 != -100
    assert float(m.loss(x, y2)[0]) == pytest.approx(-float(m.forward(x)[0][keep, y2[keep]].mean()), rel=1e-12)
    with pytest.raises(ValueError, match="tie_weights and adaptive_softmax"):
        LanguageModel(V, 6, 6, tie_weights=True, adaptive_softmax=[4])


def test_lm_with_adaptive_softmax_trains_and_round_trips(tmp_path):
    import io

    from rnncore import optim
    from rnncore.data import CharTokenizer
    from rnncore.nn import LanguageModel
    from rnncore.trainer import Trainer

    text = "hello world, hello rnn. the adaptive softmax.\n" * 8
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    m = LanguageModel(tok.vocab_size, 16, 48, adaptive_softmax=[6, 12], seed=0)
    trainer = Trainer(m, optim.Adam(m.parameters(), lr=2e-2), clip_grad_norm=5.0, batch_size=2, seq_len=24,
                      tokenizer=tok, stream=io.StringIO(), progress=False, checkpoint_dir=tmp_path)
    before = rnncore.evaluate(m, ids)["loss"]
    result = trainer.fit(ids, ids, epochs=20)
    assert result["val_loss"] < 0.3 * before, (before, result)
    m2 = rnncore.load(str(tmp_path / "last.safetensors")).build()
    assert m2.config() == m.config()
    x = ids[:24].reshape(12, 2)
    np.testing.assert_array_equal(m2.forward(x)[0], m.forward(x)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_matches_the_composed_reference(dtype):
    a, b = _model(dtype=dtype), _model(dtype=dtype)
    b.fused = False
    x, t = _data(N=30, dtype=dtype)
    go = np.random.default_rng(7).standard_normal(30).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    (oa, la), (ob, lb) = a.forward(x, t), b.forward(x, t)
    np.testing.assert_allclose(oa, ob, **tol)
    np.testing.assert_allclose(a.backward(0.5, go), b.backward(0.5, go), **tol)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, err_msg=name, **tol)


def test_kernel_binding_checks_its_arguments():
    from rnncore import _core

    m = _model()
    x, t = _data()
    tail = [m.tail[i] for i in range(m.n_clusters)]
    args = dict(x=x, targets=t, head_w=m.head.weight.data, head_b=m.head.bias.data,
                proj=[c[0].weight.data for c in tail], out=[c[1].weight.data for c in tail], cutoffs=m.cutoffs)
    out, dx = _core.adaptive_softmax(**args)
    assert dx is None and out.shape == (len(t),)
    with pytest.raises(ValueError, match="cutoffs must be increasing"):
        _core.adaptive_softmax(**dict(args, cutoffs=[4, 15, 9, 20]))
    with pytest.raises(ValueError, match=r"target 20 at position 0 is out of range \[0, 20\)"):
        _core.adaptive_softmax(**dict(args, targets=np.where(np.arange(len(t)) == 0, 20, t)))
    with pytest.raises(ValueError, match=r"head_w must have shape \(7, 12\)"):
        _core.adaptive_softmax(**dict(args, head_w=m.head.weight.data[:3]))
    with pytest.raises(TypeError, match="x"):
        _core.adaptive_softmax(**dict(args, x=x.astype(np.float32)))
    with pytest.raises(ValueError, match="dhead_w"):
        _core.adaptive_softmax(**dict(args, row_weights=np.ones(len(t))))


def test_training_mode_one_pass_equals_eval_mode_recompute():
    a, b = _model(), _model()
    b.eval()
    x, t = _data(N=25)
    a.forward(x, t)
    b.forward(x, t)
    np.testing.assert_allclose(a.backward(0.3), b.backward(0.3), rtol=1e-12, atol=1e-14)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-14, err_msg=name)


def test_lm_adaptive_div_value_sizes_the_clusters_and_round_trips():
    from rnncore.nn import LanguageModel

    m = LanguageModel(20, 8, 16, adaptive_softmax=[6, 12], adaptive_div_value=2.0, seed=0)
    shapes = {k: v.shape for k, v in m.decoder.state_dict().items()}
    assert shapes["tail.0.0.weight"] == (8, 16) and shapes["tail.1.0.weight"] == (4, 16)  # 16 // 2, 16 // 4
    assert m.config()["adaptive_div_value"] == 2.0 and "adaptive_div_value=2" in repr(m)
    m2 = LanguageModel(**m.config())
    assert {k: v.shape for k, v in m2.decoder.state_dict().items()} == shapes
    assert "adaptive_div_value" not in LanguageModel(20, 8, 16, adaptive_softmax=[6, 12]).config()  # the default
    with pytest.raises(ValueError, match="div_value"):
        LanguageModel(20, 8, 16, adaptive_softmax=[6, 12], adaptive_div_value=0.0)


def test_lm_adaptive_head_bias_trains_and_round_trips():
    from rnncore.nn import LanguageModel

    m = LanguageModel(20, 8, 16, adaptive_softmax=[6], adaptive_head_bias=True, dtype=np.float64, seed=0)
    assert m.decoder.head.bias.data.shape == (7,) and "adaptive_head_bias=True" in repr(m)
    assert m.config()["adaptive_head_bias"] is True and LanguageModel(**m.config()).decoder.head_bias
    assert "adaptive_head_bias" not in LanguageModel(20, 8, 16, adaptive_softmax=[6]).config()  # the default
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, (5, 3)), rng.integers(0, 20, (5, 3))
    m.zero_grad()
    m.loss(x, y)
    m.backward()
    g = m.decoder.head.bias.grad.copy()
    eps, b = 1e-6, m.decoder.head.bias.data
    b[2] += eps
    up = float(m.loss(x, y)[0])
    b[2] -= 2 * eps
    down = float(m.loss(x, y)[0])
    b[2] += eps
    assert abs(g[2] - (up - down) / (2 * eps)) < 1e-7


@pytest.mark.parametrize("batch_first", [False, True])
def test_evaluate_reads_only_the_targets_clusters_and_equals_the_full_forward(batch_first):
    from rnncore.data import StreamBatcher
    from rnncore.trainer import evaluate

    V = 50
    rng = np.random.default_rng(3)
    lm = rnncore.nn.LanguageModel(V, 8, 12, num_layers=2, dropout=0.3, adaptive_softmax=[10, 30],
                                  adaptive_div_value=2.0, batch_first=batch_first, dtype=np.float64, seed=4)
    for p in lm.parameters():
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape)
    ids = rng.integers(0, V, 403)
    # the full-forward way: forward()'s (T, B, V) log-probabilities read at the targets
    lm.eval()
    batcher, total, count, state = StreamBatcher(ids, 4, 7), 0.0, 0, None
    for k in range(batcher.num_windows):
        x, y = batcher.window(k)
        if batch_first:
            x, y = np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
        logp, state = lm.forward(x, state)
        total -= np.take_along_axis(logp, y[..., None], axis=-1).sum()
        count += y.size
    ref = total / count
    lm.train()
    ev = evaluate(lm, ids, batch_size=4, seq_len=7)
    assert lm.training  # mode restored
    assert abs(ev["loss"] - ref) <= 1e-10 * abs(ref)
    assert abs(ev["ppl"] - np.exp(ref)) <= 1e-10 * np.exp(ref)
    # per target and the state, against forward() on the same window
    lm.eval()
    x, y = batcher.window(0)
    if batch_first:
        x, y = np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
    logp, s1 = lm.forward(x)
    lp, s2 = lm.target_log_prob(x, y)
    np.testing.assert_allclose(lp, np.take_along_axis(logp, y[..., None], axis=-1)[..., 0], rtol=0, atol=1e-12)
    for a, b in zip(s1, s2):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="targets must have the tokens' shape"):
        lm.target_log_prob(x, y[:1])
    with pytest.raises(ValueError, match="target values should be in"):
        lm.target_log_prob(x, y + V)


def test_target_log_prob_of_a_full_softmax_lm_and_of_the_module():
    V = 30
    rng = np.random.default_rng(5)
    lm = rnncore.nn.LanguageModel(V, 6, 9, dtype=np.float64, seed=1)
    x, y = rng.integers(0, V, (5, 3)), rng.integers(0, V, (5, 3))
    logits, _ = lm.forward(x)
    ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    lp, _ = lm.target_log_prob(x, y)
    np.testing.assert_allclose(lp, np.take_along_axis(ref, y[..., None], axis=-1)[..., 0], rtol=0, atol=1e-12)
    asm = AdaptiveLogSoftmaxWithLoss(9, V, [5, 20], div_value=2.0, dtype=np.float64, seed=2)
    h, t = rng.standard_normal((7, 9)), rng.integers(0, V, 7)
    out, _ = asm(h, t)
    np.testing.assert_allclose(asm.target_log_prob(h, t), out, rtol=0, atol=1e-13)
    assert asm.target_log_prob(h[0], t[0]).shape == ()
