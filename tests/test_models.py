"""Models: float64 central-difference checks of each model's full loss against every
parameter (and the inputs that have gradients), sequence semantics (pooling, lengths, carried
state, batch_first), bad input, and parity with PyTorch for the language model."""
import numpy as np
import pytest

import rnncore
from rnncore import NoForwardError
from rnncore import nn
from gradcheck import numeric_grad
from helpers import assert_close

V, E, H, T, B, C, F = 11, 5, 7, 5, 3, 4, 6
F64 = np.float64
LENGTHS = np.array([5, 2, 4])  # ragged; B = 3


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny shapes: one thread is fastest, and immune to a busy machine (barrier per step).
    rnncore.set_num_threads(1)
    yield
    rnncore.set_num_threads(None)


def _freeze_rngs(model):
    """A function that rewinds every Generator the model draws dropout masks from."""
    gens = {}
    for _, m in model.named_modules():
        for g in (getattr(m, "rng", None), getattr(m, "_rng", None)):
            if isinstance(g, np.random.Generator):
                gens[id(g)] = (g, g.bit_generator.state)

    def restore():
        for g, state in gens.values():
            g.bit_generator.state = state

    return restore


def _check_all_grads(model, loss_fn, backward=None, inputs=()):
    """loss_fn() runs forward and returns the loss; backward() (default model.backward)
    returns the input gradients listed in `inputs` (a sequence of (name, array))."""
    restore = _freeze_rngs(model)

    def f():
        restore()
        return float(loss_fn())

    model.zero_grad()
    f()
    out = (backward or model.backward)()
    names = []
    for name, p in model.named_parameters():
        names.append(name)
        assert_close(p.grad, numeric_grad(f, p.data), atol=1e-7, rtol=1e-5, what=name)
    for (name, x), g in zip(inputs, out if isinstance(out, tuple) else (out,)):
        assert_close(g, numeric_grad(f, x), atol=1e-7, rtol=1e-5, what=name)
    return names


def _tokens(rng, shape=(T, B)):
    return rng.integers(0, V, shape)


# ---------------------------------------------------------------------------------------------
# LanguageModel


@pytest.mark.parametrize("cell,layers,dropout,tie", [
    ("lstm", 1, 0.0, False),
    ("lstm", 2, 0.3, False),
    ("gru", 2, 0.0, True),
    ("rnn_tanh", 1, 0.2, True),
])
def test_language_model_gradients(cell, layers, dropout, tie):
    rng = np.random.default_rng(0)
    emb = H if tie else E
    model = nn.LanguageModel(V, emb, H, num_layers=layers, cell=cell, dropout=dropout, tie_weights=tie,
                             dtype=F64, seed=1)
    tokens, targets = _tokens(rng), _tokens(rng)
    targets[2, 1] = -100
    names = _check_all_grads(model, lambda: model.loss(tokens, targets)[0])
    assert names[0] == "encoder.weight" and names[-1] == "decoder.bias"
    assert ("decoder.weight" in names) is not tie


def test_language_model_state_gradient_and_carry():
    rng = np.random.default_rng(2)
    model = nn.LanguageModel(V, E, H, num_layers=2, dtype=F64, seed=3)
    tokens, targets = _tokens(rng, (2 * T, B)), _tokens(rng, (2 * T, B))
    # truncated BPTT: two windows with the state carried equal one long window
    full, state_full = model(tokens)
    first, state = model(tokens[:T])
    second, state2 = model(tokens[T:], state)
    assert_close(np.concatenate([first, second]), full, atol=1e-12, rtol=1e-5, what="carried logits")
    assert_close(state2[0], state_full[0], atol=1e-12, rtol=1e-5, what="h_n")
    # gradient with respect to the carried state
    h0, c0 = (np.array(s) for s in state)

    def loss():
        return model.loss(tokens[T:], targets[T:], (h0, c0))[0]

    model.loss(tokens[T:], targets[T:], (h0, c0))
    model.backward()
    dh0, dc0 = model.grad_state
    assert_close(dh0, numeric_grad(loss, h0), atol=1e-7, rtol=1e-5, what="dh0")
    assert_close(dc0, numeric_grad(loss, c0), atol=1e-7, rtol=1e-5, what="dc0")


def test_language_model_batch_first_and_mask():
    rng = np.random.default_rng(4)
    tm = nn.LanguageModel(V, E, H, dtype=F64, seed=5)
    bf = nn.LanguageModel(V, E, H, batch_first=True, dtype=F64, seed=5)
    tokens, targets = _tokens(rng), _tokens(rng)
    mask = rng.random((T, B)) < 0.6
    l1, _ = tm.loss(tokens, targets, mask=mask)
    tm.backward()
    l2, _ = bf.loss(tokens.T, targets.T, mask=mask.T)
    bf.backward()
    assert abs(l1 - l2) < 1e-12
    assert bf(tokens.T)[0].shape == (B, T, V)
    for (n, p), (_, q) in zip(tm.named_parameters(), bf.named_parameters()):
        assert_close(q.grad, p.grad, atol=1e-12, rtol=1e-5, what=n)


def test_language_model_tied_weights_state_dict_and_modes():
    model = nn.LanguageModel(V, H, H, tie_weights=True, dropout=0.5, seed=0)
    assert model.decoder.weight is model.encoder.weight
    assert len(model.parameters()) == len(list(model.named_parameters())) == 6
    sd = model.state_dict()
    assert "decoder.weight" in sd and "encoder.weight" in sd  # as in PyTorch
    other = nn.LanguageModel(V, H, H, tie_weights=True, seed=1)
    other.load_state_dict(sd)
    for (n, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)
    tokens = _tokens(np.random.default_rng(0))
    model.eval()
    a, _ = model(tokens)
    b, _ = model(tokens)
    np.testing.assert_array_equal(a, b)  # eval: dropout off
    model.train()
    c, _ = model(tokens)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="tie_weights requires hidden_size == embedding_dim"):
        nn.LanguageModel(V, E, H, tie_weights=True)


def test_language_model_learns_float32():
    model = nn.LanguageModel(V, 8, 16, seed=0)
    seq = np.tile(np.arange(V), 4)[: 4 * T + 1]
    tokens = np.stack([seq[:-1]] * B, axis=1)
    targets = np.stack([seq[1:]] * B, axis=1)
    losses = []
    for _ in range(40):
        loss, _ = model.loss(tokens, targets)
        losses.append(loss)
        model.zero_grad()
        model.backward()
        for p in model.parameters():
            p.data -= 1.0 * p.grad
    assert losses[-1] < 0.25 * losses[0]
    assert model(tokens)[0].dtype == np.float32


def test_language_model_bad_input():
    model = nn.LanguageModel(V, E, H, seed=0)
    tokens = np.zeros((T, B), np.int64)
    bad = tokens.copy()
    bad[3, 2] = V
    with pytest.raises(ValueError, match=r"token id 11 at position \[3, 2\] is out of range \[0, 11\)"):
        model(bad)
    bad[3, 2] = -1
    with pytest.raises(ValueError, match=r"token id -1"):
        model.loss(bad, tokens)
    with pytest.raises(TypeError, match="integer"):
        model(tokens.astype(F64))
    with pytest.raises(ValueError, match=r"tokens must have shape \(T, B\)"):
        model(tokens.reshape(-1))
    with pytest.raises(ValueError, match=r"targets must have the tokens' shape \(5, 3\)"):
        model.loss(tokens, tokens.T)
    bad_t = tokens.copy()
    bad_t[0, 1] = 99
    with pytest.raises(ValueError, match=r"target 99 at position \[0, 1\]"):
        model.loss(tokens, bad_t)
    with pytest.raises(NoForwardError):
        nn.LanguageModel(V, E, H).backward()
    model.decoder.bias.data[3] = np.nan
    with pytest.raises(FloatingPointError, match="not finite"):
        model.loss(tokens, tokens)
    with pytest.raises(ValueError, match="cell"):
        nn.LanguageModel(V, E, H, cell="transformer")


def test_language_model_matches_pytorch():
    torch = pytest.importorskip("torch")

    class TorchLM(torch.nn.Module):
        def __init__(self, cell, layers, tie, emb):
            super().__init__()
            self.encoder = torch.nn.Embedding(V, emb)
            self.rnn = getattr(torch.nn, cell.upper())(emb, H, layers)
            self.decoder = torch.nn.Linear(H, V)
            if tie:
                self.decoder.weight = self.encoder.weight

        def forward(self, x, state=None):
            out, state = self.rnn(self.encoder(x), state)
            return self.decoder(out), state

    rng = np.random.default_rng(8)
    for cell, layers, tie in (("lstm", 2, False), ("gru", 1, True)):
        emb = H if tie else E
        ours = nn.LanguageModel(V, emb, H, num_layers=layers, cell=cell, tie_weights=tie, dtype=F64, seed=2)
        ref = TorchLM(cell, layers, tie, emb).double()
        ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        tokens, targets = _tokens(rng), _tokens(rng)
        targets[0, 0] = -100
        logits, state = ref(torch.from_numpy(tokens))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1))
        loss.backward()
        our_logits, our_state = ours(tokens)
        assert_close(our_logits, logits.detach().numpy(), atol=1e-10, rtol=1e-5, what=f"{cell} logits")
        h = our_state[0] if cell == "lstm" else our_state
        th = state[0] if cell == "lstm" else state
        assert_close(h, th.detach().numpy(), atol=1e-10, rtol=1e-5, what=f"{cell} h_n")
        our_loss, _ = ours.loss(tokens, targets)
        assert abs(our_loss - loss.item()) < 1e-10
        ours.backward()
        tgrads = dict(ref.named_parameters())
        for name, p in ours.named_parameters():
            assert_close(p.grad, tgrads[name].grad.numpy(), atol=1e-10, rtol=1e-5, what=f"{cell} {name}")


# ---------------------------------------------------------------------------------------------
# SequenceClassifier


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_bidirectional_classifier_gradients_ragged(pooling):
    rng = np.random.default_rng(10)
    model = nn.SequenceClassifier(V, E, H, C, bidirectional=True, pooling=pooling, dtype=F64, seed=11)
    tokens, labels = _tokens(rng), rng.integers(0, C, B)
    names = _check_all_grads(model, lambda: model.loss(tokens, labels, lengths=LENGTHS))
    assert "rnn.weight_hh_l0_reverse" in names and names[-1] == "fc.bias"


@pytest.mark.parametrize("pooling,cell,layers,bidir,dropout", [
    ("last", "gru", 2, True, 0.3),
    ("max", "lstm", 1, False, 0.0),
    ("mean", "rnn_tanh", 2, False, 0.2),
])
def test_feature_classifier_gradients_wrt_input(pooling, cell, layers, bidir, dropout):
    rng = np.random.default_rng(12)
    model = nn.SequenceClassifier(input_size=3, hidden_size=H, num_classes=C, num_layers=layers, cell=cell,
                                  bidirectional=bidir, pooling=pooling, dropout=dropout, batch_first=True,
                                  dtype=F64, seed=13)
    x = rng.standard_normal((B, T, 3))
    labels = rng.integers(0, C, B)
    lengths = np.array([5, 1, 3])
    _check_all_grads(model, lambda: model.loss(x, labels, lengths), inputs=[("x", x)])


def test_classifier_pooling_semantics():
    rng = np.random.default_rng(14)
    lengths = np.array([5, 2, 0])
    x = rng.standard_normal((T, B, 3))
    for pooling in ("last", "mean", "max"):
        model = nn.SequenceClassifier(input_size=3, hidden_size=H, num_classes=C, bidirectional=True,
                                      pooling=pooling, dtype=F64, seed=15)
        logits = model(x, lengths)
        out, _ = model.rnn(x, lengths=lengths)
        rows = []
        for b, n in enumerate(lengths):
            if n == 0:
                rows.append(np.zeros(2 * H))
            elif pooling == "last":  # forward state at its last step, reverse state at t = 0
                rows.append(np.concatenate([out[n - 1, b, :H], out[0, b, H:]]))
            elif pooling == "mean":
                rows.append(out[:n, b].mean(0))
            else:
                rows.append(out[:n, b].max(0))
        expected = np.array(rows) @ model.fc.weight.data.T + model.fc.bias.data
        assert_close(logits, expected, atol=1e-12, rtol=1e-5, what=pooling)


def test_classifier_bad_input():
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        nn.SequenceClassifier(V, E, H, C, input_size=3)
    with pytest.raises(ValueError, match="pooling"):
        nn.SequenceClassifier(V, E, H, C, pooling="attention")
    model = nn.SequenceClassifier(V, E, H, C, seed=0)
    tokens = np.zeros((T, B), np.int64)
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) \(3,\)"):
        model.loss(tokens, np.zeros((B, 1), np.int64))
    with pytest.raises(ValueError, match=r"target 4 at position \[1\]"):
        model.loss(tokens, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"lengths must be in \[0, T\]"):
        model(tokens, lengths=[1, 2, 9])
    with pytest.raises(ValueError, match="token id 12"):
        model(tokens + 12)
    with pytest.raises(NoForwardError):
        model.backward()


# ---------------------------------------------------------------------------------------------
# SequenceTagger


def test_feature_tagger_batch_first_gradients_wrt_input():
    rng = np.random.default_rng(20)
    model = nn.SequenceTagger(input_size=3, hidden_size=H, num_classes=C, num_layers=2, cell="gru",
                              bidirectional=True, dropout=0.25, batch_first=True, dtype=F64, seed=21)
    x = rng.standard_normal((B, T, 3))
    tags = rng.integers(0, C, (B, T))
    _check_all_grads(model, lambda: model.loss(x, tags, LENGTHS), inputs=[("x", x)])


@pytest.mark.parametrize("bidir,cell", [(True, "lstm"), (False, "gru")])
def test_tagger_gradients_masks_padding(bidir, cell):
    rng = np.random.default_rng(16)
    model = nn.SequenceTagger(V, E, H, C, cell=cell, bidirectional=bidir, dtype=F64, seed=17)
    tokens, tags = _tokens(rng), rng.integers(0, C, (T, B))
    tags[LENGTHS[1]:, 1] = -1  # padding labels need not be valid: they are masked out
    _check_all_grads(model, lambda: model.loss(tokens, tags, LENGTHS))
    # the loss is the mean over the valid steps only
    logits = model(tokens, LENGTHS)
    valid = np.arange(T)[:, None] < LENGTHS[None, :]
    per, _ = nn.cross_entropy(logits[valid], tags[valid], reduction="none")
    assert abs(model.loss(tokens, tags, LENGTHS) - per.mean()) < 1e-12
    assert model(tokens).shape == (T, B, C)


def test_tagger_bad_labels():
    model = nn.SequenceTagger(input_size=3, hidden_size=H, num_classes=C, batch_first=True, seed=0)
    x = np.zeros((B, T, 3))
    with pytest.raises(ValueError, match=r"tags must have shape \(B, T\) \(3, 5\)"):
        model.loss(x, np.zeros((T, B), np.int64))
    with pytest.raises(ValueError, match=r"x must be features of shape \(B, T, I\)"):
        model(np.zeros((B, T, 4)))


# ---------------------------------------------------------------------------------------------
# ConditionedGenerator


@pytest.mark.parametrize("condition,cell,layers,batch_first", [("init", "lstm", 2, False), ("input", "gru", 1, True),
                                                               ("both", "lstm", 1, True), ("both", "gru", 2, False)])
def test_conditioned_generator_gradients(condition, cell, layers, batch_first):
    rng = np.random.default_rng(18)
    model = nn.ConditionedGenerator(V, E, H, F, num_layers=layers, cell=cell, condition=condition, dropout=0.2,
                                    batch_first=batch_first, dtype=F64, seed=19)
    feats = rng.standard_normal((B, F))
    shape = (B, T) if batch_first else (T, B)
    tokens, targets = _tokens(rng, shape), _tokens(rng, shape)
    names = _check_all_grads(model, lambda: model.loss(feats, tokens, targets)[0], inputs=[("features", feats)])
    assert ("init_h.weight" in names) == (condition != "input")
    assert ("init_c.weight" in names) == (condition != "input" and cell == "lstm")
    assert ("feature_proj.weight" in names) == (condition != "init")


@pytest.mark.parametrize("condition,layers", [("init", 2), ("both", 1)])
def test_conditioned_generator_projections(condition, layers):
    """proj_size: h0 comes from Linear(F, L*P), c0 from Linear(F, L*H); float64 gradient check,
    and the initial state equals what the plain LSTM gets when handed the same (h0, c0)."""
    rng = np.random.default_rng(23)
    P = H - 2
    model = nn.ConditionedGenerator(V, E, H, F, num_layers=layers, condition=condition, proj_size=P, dtype=F64,
                                    seed=24)
    assert model.init_h.weight.shape == (layers * P, F) and model.init_c.weight.shape == (layers * H, F)
    assert "proj_size=" in repr(model) and model.config()["proj_size"] == P
    feats = rng.standard_normal((B, F))
    tokens, targets = _tokens(rng, (T, B)), _tokens(rng, (T, B))
    logits, (h, c) = model(feats, tokens)
    assert logits.shape == (T, B, V) and h.shape == (layers, B, P) and c.shape == (layers, B, H)
    h0, c0 = model._initial_state(feats)
    assert h0.shape == (layers, B, P) and c0.shape == (layers, B, H)
    if condition == "init":  # the same forward as handing the state in explicitly
        again, _ = model(feats, tokens, state=(h0, c0))
        np.testing.assert_array_equal(again, logits)
    names = _check_all_grads(model, lambda: model.loss(feats, tokens, targets)[0], inputs=[("features", feats)])
    assert "init_h.weight" in names and "init_c.weight" in names and "rnn.weight_hr_l0" in names
    with pytest.raises(ValueError, match="proj_size"):
        nn.ConditionedGenerator(V, E, H, F, cell="gru", proj_size=P)


def test_conditioned_generator_bad_input():
    model = nn.ConditionedGenerator(V, E, H, F, seed=0)
    with pytest.raises(ValueError, match=r"features must have shape \(B, F\) \(3, 6\)"):
        model(np.zeros((B, F + 1)), np.zeros((T, B), np.int64))
    with pytest.raises(ValueError, match="condition"):
        nn.ConditionedGenerator(V, E, H, F, condition="attend")
