"""rnncore.nn.BiLM, ScalarMix, ELMoClassifier: float64 gradient checks, the backward LM against a
forward LM on reversed sequences, ragged batches, checkpoints, bad input, Trainer."""
import io

import numpy as np
import pytest

import rnncore
from gradcheck import numeric_grad
from helpers import rel_err
from rnncore import nn, optim
from rnncore.nn.bilm import reverse_index
from rnncore.tasks import ClassificationTask

V, E, T, B = 7, 3, 5, 3
LENGTHS = np.array([5, 2, 4])  # ragged, unsorted, one sequence with a single prediction per direction
TOL = 1e-6
EPS = 1e-4  # the loss goes through the engine's vectorised exp/tanh: rounding noise ~1e-12 dominates below


def tiny(**kw):
    args = dict(vocab_size=V, embedding_dim=E, hidden_size=E, num_layers=2, dtype=np.float64, seed=3)
    args.update(kw)
    return nn.BiLM(**args)


def ids_for(seed=0, shape=(T, B)):
    return np.random.default_rng(seed).integers(0, V, shape)


def check_params(model, f, skip=()):
    """Every parameter's analytic .grad (already accumulated) against central differences of f()."""
    checked = 0
    for name, p in model.named_parameters():
        if name in skip:
            continue
        num = numeric_grad(f, p.data, EPS)
        err = rel_err(p.grad, num)
        assert err < TOL, f"{name}: relative gradient error {err:.3e}"
        assert np.linalg.norm(num) > 1e-6, f"{name}: (almost) zero gradient, the check proves nothing"
        checked += 1
    return checked


# ---- ScalarMix --------------------------------------------------------------------------------

def test_scalar_mix_forward_is_softmax_weighted_sum():
    mix = nn.ScalarMix(3, dtype=np.float64)
    mix.weight.data[:] = [0.5, -1.0, 2.0]
    mix.gamma.data[:] = 1.7
    h = np.random.default_rng(0).normal(size=(3, 4, 2, 5))
    s = np.exp(mix.weight.data) / np.exp(mix.weight.data).sum()
    np.testing.assert_allclose(mix.mixing_weights(), s, rtol=1e-15)
    np.testing.assert_allclose(mix(h), 1.7 * np.einsum("j,j...->...", s, h), rtol=1e-13)


def test_scalar_mix_gradcheck():
    rng = np.random.default_rng(1)
    mix = nn.ScalarMix(4, initial_gamma=0.8, dtype=np.float64)
    mix.weight.data[:] = rng.normal(size=4)
    h = rng.normal(size=(4, 3, 5))
    w = rng.normal(size=(3, 5))
    f = lambda: float((mix(h) * w).sum())  # noqa: E731
    mix.zero_grad()
    mix(h)
    dh = mix.backward(w)
    check_params(mix, f)
    num = numeric_grad(f, h, EPS)
    assert rel_err(dh, num) < TOL


# ---- BiLM: gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"residual": False, "num_layers": 3}, {"tie_weights": True},
                                {"hidden_size": 5, "proj_size": E},
                                {"adaptive_softmax": [3], "adaptive_div_value": 1.0}])
def test_bilm_loss_gradcheck(kw):
    model = tiny(**kw)
    ids = ids_for()
    f = lambda: float(model.loss(ids, LENGTHS))  # noqa: E731
    model.zero_grad()
    model.loss(ids, LENGTHS)
    model.backward()
    # the mix is not part of the LM loss
    assert not np.any(model.mix.weight.grad) and not np.any(model.mix.gamma.grad)
    assert check_params(model, f, skip=("mix.weight", "mix.gamma")) >= 4


@pytest.mark.parametrize("mix_only", [False, True])
def test_embed_backward_gradcheck(mix_only):
    model = tiny()
    rng = np.random.default_rng(2)
    model.mix.weight.data[:] = rng.normal(size=3)
    ids = ids_for(1)
    w = rng.normal(size=(T, B, 2 * E))
    f = lambda: float((model.embed(ids, LENGTHS) * w).sum())  # noqa: E731
    model.zero_grad()
    model.embed(ids, LENGTHS)
    assert model.embed_backward(w, mix_only=mix_only) is None
    if mix_only:
        check_params(model.mix, f)
        for name, p in model.named_parameters():
            if not name.startswith("mix."):
                assert not np.any(p.grad), name
    else:
        check_params(model, f, skip=("decoder.weight", "decoder.bias"))
        assert not np.any(model.decoder.weight.grad)


def test_representations_backward_gradcheck_batch_first():
    model = tiny(batch_first=True)
    ids = ids_for(4, (B, T))
    w = np.random.default_rng(5).normal(size=(3, B, T, 2 * E))
    f = lambda: float((model.representations(ids, LENGTHS) * w).sum())  # noqa: E731
    model.zero_grad()
    reps = model.representations(ids, LENGTHS)
    assert reps.shape == (3, B, T, 2 * E)
    model.embed_backward(w)
    check_params(model, f, skip=("decoder.weight", "decoder.bias", "mix.weight", "mix.gamma"))


# ---- BiLM: what it computes ----------------------------------------------------------------------

def lm_copy(model, direction):
    """An nn.LanguageModel with the weights of one direction of a residual=False BiLM."""
    lm = nn.LanguageModel(V, E, E, num_layers=model.num_layers, dtype=np.float64, seed=0)
    lm.encoder.weight.data[:] = model.encoder.weight.data
    lm.decoder.weight.data[:] = model.decoder.weight.data
    lm.decoder.bias.data[:] = model.decoder.bias.data
    name = ("forward", "backward")[direction]
    for k in range(model.num_layers):
        layer = model._modules[f"{name}_l{k}"]
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lm.rnn, f"{p}_l{k}").data[:] = getattr(layer, f"{p}_l0").data
    return lm


def test_backward_lm_is_a_forward_lm_on_reversed_sequences():
    model = tiny(residual=False)
    ids = ids_for(6)
    fwd_lm, bwd_lm = lm_copy(model, 0), lm_copy(model, 1)
    total = {0: 0.0, 1: 0.0}
    for b in range(B):
        seq = ids[:LENGTHS[b], b]
        for d, lm, s in ((0, fwd_lm, seq), (1, bwd_lm, seq[::-1].copy())):
            loss, _ = lm.loss(s[:-1, None], s[1:, None], reduction="sum")
            total[d] += float(loss)
    n = int((LENGTHS - 1).sum())
    f, b_, count = model.direction_losses(ids, LENGTHS)
    assert count == n
    assert f == pytest.approx(total[0] / n, rel=1e-12)
    assert b_ == pytest.approx(total[1] / n, rel=1e-12)
    assert float(model.loss(ids, LENGTHS)) == pytest.approx(f + b_, rel=1e-12)
    # the backward half of representation k at token t: the backward LM's layer-k state after
    # reading the sequence from its end back to t
    reps = model.representations(ids, LENGTHS)
    for b in range(B):
        L_b = LENGTHS[b]
        seq = ids[:L_b, b][::-1].copy()
        x = bwd_lm.encoder(seq[:, None])
        out1, _ = bwd_lm.rnn(x)  # both layers; the first layer alone:
        out0, _ = model.backward_l0(x)
        np.testing.assert_allclose(reps[1, :L_b, b, E:], out0[::-1, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(reps[2, :L_b, b, E:], out1[::-1, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(reps[:, L_b:, b], 0)


def test_residual_adds_the_layer_input():
    model = tiny()
    ids = ids_for(7)
    reps = model.representations(ids, LENGTHS)
    # layer 1 of the forward stack = LSTM(layer-0 output) + layer-0 output
    out1, _ = model.forward_l1(reps[1, :, :, :E], lengths=LENGTHS)
    np.testing.assert_allclose(reps[2, :, :, :E], out1 + reps[1, :, :, :E], rtol=1e-12, atol=1e-14)


def test_ragged_batch_equals_each_sequence_alone():
    model = tiny()
    model.mix.weight.data[:] = [0.3, -0.2, 0.1]
    ids = ids_for(8)
    emb = model.embed(ids, LENGTHS)
    f, b_, n = model.direction_losses(ids, LENGTHS)
    sums = np.zeros(2)
    for b in range(B):
        one = ids[:LENGTHS[b], b:b + 1]
        np.testing.assert_allclose(emb[:LENGTHS[b], b], model.embed(one)[:, 0], rtol=1e-12, atol=1e-14)
        fb, bb, nb = model.direction_losses(one)
        sums += np.array([fb, bb]) * nb
    np.testing.assert_allclose([f, b_], sums / n, rtol=1e-12)
    # what sits in the padding does not matter
    other = ids.copy()
    other[(np.arange(T)[:, None] >= LENGTHS[None, :])] = 6
    np.testing.assert_allclose(model.embed(other, LENGTHS), emb, rtol=0, atol=0)
    # a list of ragged sequences is padded and answered batch-major
    seqs = [ids[:LENGTHS[b], b] for b in range(B)]
    np.testing.assert_allclose(model.embed(seqs), emb.transpose(1, 0, 2), rtol=0, atol=0)


def test_reverse_index_is_its_own_inverse():
    rev = reverse_index(np.array([4, 0, 1, 2]), 4)
    assert rev[:, 0].tolist() == [3, 2, 1, 0] and rev[:, 1].tolist() == [0, 1, 2, 3]
    assert rev[:, 3].tolist() == [1, 0, 2, 3]
    assert np.array_equal(np.take_along_axis(rev, rev, axis=0), np.broadcast_to(np.arange(4)[:, None], (4, 4)))


def test_dropout_only_in_training_and_float32_runs():
    model = nn.BiLM(V, 8, 8, dropout=0.5, seed=0)
    ids = ids_for(9)
    model.eval()
    a, b = model.loss(ids, LENGTHS), model.loss(ids, LENGTHS)
    assert a == b and model.embed(ids).dtype == np.float32
    model.train()
    assert model.loss(ids, LENGTHS) != a
    model.backward()


# ---- checkpoints ------------------------------------------------------------------------------------

def test_bilm_checkpoint_round_trip(tmp_path):
    model = tiny(tie_weights=True, padding_idx=0)
    model.mix.weight.data[:] = [1.0, 0.0, -1.0]
    path = str(tmp_path / "bilm.safetensors")
    rnncore.save(path, model)
    again = rnncore.load(path).build()
    assert isinstance(again, nn.BiLM) and again.config() == model.config()
    ids = ids_for(10)
    assert float(again.loss(ids, LENGTHS)) == float(model.loss(ids, LENGTHS))
    np.testing.assert_array_equal(again.embed(ids, LENGTHS), model.embed(ids, LENGTHS))
    assert nn.BiLM(**model.config()).config() == model.config()
    adaptive = tiny(adaptive_softmax=[2, 4], adaptive_div_value=1.5)
    rnncore.save(path, adaptive)
    again = rnncore.load(path).build()
    assert again.config() == adaptive.config() and again.config()["adaptive_softmax"] == [2, 4]
    assert float(again.loss(ids, LENGTHS)) == float(adaptive.loss(ids, LENGTHS))
    assert adaptive.direction_losses(ids, LENGTHS)[:2] == again.direction_losses(ids, LENGTHS)[:2]


def test_elmo_classifier_checkpoint_round_trip(tmp_path):
    clf = nn.ELMoClassifier(V, E, E, num_classes=3, head_hidden=4, dtype=np.float64, seed=1, dropout=0.0)
    path = str(tmp_path / "clf.safetensors")
    rnncore.save(path, clf)
    again = rnncore.load(path).build()
    ids = ids_for(11)
    np.testing.assert_array_equal(again(ids, LENGTHS), clf(ids, LENGTHS))
    assert again.config() == clf.config()


# ---- ELMoClassifier ---------------------------------------------------------------------------------

@pytest.mark.parametrize("finetune", [False, True])
def test_elmo_classifier_gradients(finetune):
    clf = nn.ELMoClassifier(V, E, E, num_classes=2, head_hidden=3, pooling="mean", dropout=0.0, finetune=finetune,
                            dtype=np.float64, seed=2)
    clf.bilm.mix.weight.data[:] = [0.2, -0.4, 0.3]
    ids, labels = ids_for(12), np.array([1, 0, 1])
    f = lambda: float(clf.loss(ids, labels, LENGTHS))  # noqa: E731
    clf.train()  # dropout 0: training mode is deterministic
    clf.zero_grad()
    clf.loss(ids, labels, LENGTHS)
    clf.backward()
    trainable = {id(p) for p in clf.trainable_parameters()}
    for name, p in clf.named_parameters():
        if name.startswith("bilm.decoder"):
            assert not np.any(p.grad)
            continue
        if id(p) not in trainable:
            assert not np.any(p.grad), f"{name}: a frozen BiLM got a gradient"
            continue
        num = numeric_grad(f, p.data, EPS)
        assert rel_err(p.grad, num) < TOL, name
        assert np.linalg.norm(num) > 1e-5, name
    assert len(trainable) == (len(clf.parameters()) if finetune else 2 + len(clf.head.parameters()))


def test_from_bilm_copies_the_weights_and_frozen_bilm_stays():
    bilm = tiny(tie_weights=True)
    clf = nn.ELMoClassifier.from_bilm(bilm, 2, head_hidden=4, seed=0)
    for name, p in bilm.named_parameters():
        np.testing.assert_array_equal(clf.bilm.state_dict()[name], p.data)
    ids = ids_for(13)
    np.testing.assert_array_equal(clf.bilm.representations(ids), bilm.representations(ids))
    with pytest.raises(TypeError, match="bilm must be a BiLM"):
        nn.ELMoClassifier.from_bilm(nn.LanguageModel(V, E, E), 2)


def toy_sentiment(n, seed):
    """Sequences over ids 1..6; label 1 when id 3 ('good') occurs more often than id 4 ('bad')."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    while len(seqs) < n:
        s = rng.integers(1, 7, rng.integers(2, 9))
        good, bad = int((s == 3).sum()), int((s == 4).sum())
        if good != bad:
            seqs.append(s)
            labels.append(int(good > bad))
    return seqs, np.array(labels)


def test_elmo_classifier_trains_with_trainer_and_classification_task(tmp_path):
    clf = nn.ELMoClassifier(V, 8, 8, num_classes=2, head_hidden=8, dropout=0.0, padding_idx=0, seed=0, threads=1)
    frozen = {name: p.data.copy() for name, p in clf.bilm.named_parameters() if not name.startswith("mix.")}
    opt = optim.Adam(clf.trainable_parameters(), lr=2e-2)
    task = ClassificationTask(16, seed=0, metric="accuracy")
    trainer = rnncore.Trainer(clf, opt, task=task, checkpoint_dir=str(tmp_path), progress=False, stream=io.StringIO())
    train, valid = toy_sentiment(240, 0), toy_sentiment(80, 1)
    result = trainer.fit(train, valid, epochs=6)
    assert result["best_val_accuracy"] > 0.8
    for name, p in clf.bilm.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(p.data, frozen[name], err_msg=name)
    assert np.any(clf.bilm.mix.weight.data != 0)  # the mix learned


# ---- bad input -------------------------------------------------------------------------------------

def test_bad_input():
    model = tiny()
    ids = ids_for()
    with pytest.raises(ValueError, match="length 0 for sequence 1"):
        model.loss(ids, [5, 0, 3])
    with pytest.raises(ValueError, match="length 0"):
        model.embed([[1, 2], []])
    with pytest.raises(ValueError, match=r"lengths must be in \[0, T\]"):
        model.embed(ids, [6, 1, 1])
    bad = ids.copy()
    bad[1, 2] = V
    with pytest.raises(ValueError, match=r"ids in \[0, 7\), got 7 at step 1 of sequence 2"):
        model.loss(bad)
    bad[1, 2] = -1
    with pytest.raises(ValueError, match="got -1"):
        model.embed(bad)
    model.embed(bad, [5, 5, 1])  # past its length the id is padding and not read
    with pytest.raises(TypeError, match="integer"):
        model.loss(ids.astype(np.float64))
    with pytest.raises(ValueError, match=r"tokens must have shape \(T, B\)"):
        model.loss(ids[0])
    with pytest.raises(ValueError, match="at least one sequence"):
        model.loss(np.zeros((0, 2), np.int64))
    with pytest.raises(ValueError, match="lengths must be None"):
        model.embed([[1, 2]], lengths=[2])
    with pytest.raises(ValueError, match="hidden_size must equal embedding_dim"):
        nn.BiLM(V, 4, 5)
    with pytest.raises(ValueError, match="tie_weights and adaptive_softmax"):
        nn.BiLM(V, 4, 4, tie_weights=True, adaptive_softmax=[3])
    single = tiny(adaptive_softmax=[3], adaptive_div_value=1.0)
    assert single.loss(ids, [1, 1, 1]) == 0
    single.backward()  # nothing to predict: a zero gradient, no error
    assert not any(np.any(p.grad) for p in single.parameters())
    assert single.direction_losses(ids, [1, 1, 1]) == (0.0, 0.0, 0)
    with pytest.raises(ValueError, match="num_layers"):
        nn.BiLM(V, 4, 4, num_layers=0)
    with pytest.raises(ValueError, match="backward"):
        tiny().backward()
    model.embed(ids)
    with pytest.raises(ValueError, match="loss"):
        model.backward()  # after embed(), not loss()
    model.loss(ids)
    with pytest.raises(ValueError, match="embed"):
        model.embed_backward(np.zeros((T, B, 2 * E)))
    model.embed(ids)
    with pytest.raises(ValueError, match=r"grad_output must have shape like embed\(\)'s output \(5, 3, 6\)"):
        model.embed_backward(np.zeros((T, B, E)))
    mix = nn.ScalarMix(3)
    with pytest.raises(ValueError, match="N = 3"):
        mix(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="num_representations"):
        nn.ScalarMix(0)
    clf = nn.ELMoClassifier(V, E, E, num_classes=2, head_hidden=3, dtype=np.float64, seed=0)
    with pytest.raises(ValueError, match=r"target 2 at position \[1\] is out of range \[0, 2\)"):
        clf.loss(ids, [0, 2, 1])
    with pytest.raises(ValueError, match="length 0"):
        clf.loss(ids, [0, 1, 1], lengths=[0, 2, 2])
    with pytest.raises(ValueError, match=r"ids in \[0, 7\)"):
        clf.forward(np.full((T, B), 9))
    with pytest.raises(TypeError, match="padded ids"):
        clf.forward([[1, 2], [3]])
