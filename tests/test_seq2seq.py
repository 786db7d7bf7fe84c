"""rnncore.nn.Seq2Seq: float64 finite-difference gradients of the whole loss with ragged source
lengths, masking, bridges, scheduled sampling, bad input, and the reversal task (attention
learns it, no attention visibly does not)."""
import numpy as np
import pytest

import rnncore
from rnncore.nn import Seq2Seq
from rnncore.nn.seq2seq import Bridge, Decoder, Encoder

SRC_V, TGT_V = 7, 6


def _batch(rng, S=5, T=4, B=3, lengths=(5, 2, 3)):
    src = rng.integers(1, SRC_V, size=(S, B))
    lengths = np.array(lengths, np.int64)
    for b, n in enumerate(lengths):
        src[n:, b] = 0
    tgt_in = rng.integers(1, TGT_V, size=(T, B))
    tgt_out = rng.integers(1, TGT_V, size=(T, B))
    tgt_out[T - 1, 1] = -100  # a padded target position
    tgt_out[T - 2:, 2] = -100
    return src, lengths, tgt_in, tgt_out


def _model(**kw):
    args = dict(embedding_dim=4, hidden_size=6, dtype=np.float64, seed=3)
    args.update(kw)
    return Seq2Seq(SRC_V, TGT_V, **args)


def _fd_check(model, batch, samples=4, eps=1e-6, tol=1e-7):
    model.zero_grad()
    model.loss(*batch, reduction="sum")
    model.backward()
    rng = np.random.default_rng(0)
    checked = 0
    for name, p in model.named_parameters():
        flat, gflat = p.data.reshape(-1), p.grad.reshape(-1)
        for i in rng.choice(flat.size, size=min(samples, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = model.loss(*batch, reduction="sum")
            flat[i] = old - eps
            down = model.loss(*batch, reduction="sum")
            flat[i] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - gflat[i]) <= tol * max(1.0, abs(fd)), (name, i, fd, gflat[i])
            checked += 1
    model._ctx = model._dlogits = None
    return checked


@pytest.mark.parametrize("attention", [None, "dot", "general", "additive"])
@pytest.mark.parametrize("input_feed", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_whole_loss_gradient_ragged_sources(attention, input_feed, cell):
    if attention is None and not input_feed:
        pytest.skip("input_feed has no meaning without attention")
    model = _model(attention=attention, input_feed=input_feed, cell=cell)
    assert _fd_check(model, _batch(np.random.default_rng(1))) > 20


@pytest.mark.parametrize("bridge,kw", [("linear", {}), ("zeros", {}), ("auto", dict(bidirectional=False)),
                                       ("auto", dict(encoder_layers=2, decoder_layers=1)),
                                       ("linear", dict(cell="rnn", num_layers=2))])
def test_bridges_gradient(bridge, kw):
    model = _model(bridge=bridge, **kw)
    _fd_check(model, _batch(np.random.default_rng(2)))


def test_bridge_auto_picks_concat_when_shapes_fit_and_linear_otherwise():
    assert _model().bridge.kind == "concat"
    assert _model(encoder_hidden_size=4).bridge.kind == "linear"
    assert _model(bidirectional=False).bridge.kind == "concat"
    with pytest.raises(ValueError, match="bridge='concat'"):
        _model(bridge="concat", encoder_hidden_size=4)


def test_source_padding_has_no_effect_and_attention_is_zero_there():
    rng = np.random.default_rng(4)
    model = _model(attention="general")
    model.eval()
    src, lengths, tgt_in, tgt_out = _batch(rng)
    logits, alpha = model.forward(src, lengths, tgt_in)
    for b, n in enumerate(lengths):
        assert np.all(alpha[:, b, n:] == 0.0)
        np.testing.assert_allclose(alpha[:, b, :n].sum(axis=-1), 1.0, rtol=1e-12)
    other = src.copy()
    other[2:, 1] = 5  # past source 1's length (2)
    other[3:, 2] = 4
    logits2, alpha2 = model.forward(other, lengths, tgt_in)
    np.testing.assert_array_equal(logits, logits2)
    np.testing.assert_array_equal(alpha, alpha2)


def test_mean_loss_counts_only_real_targets():
    rng = np.random.default_rng(5)
    model = _model()
    batch = _batch(rng)
    total = model.loss(*batch, reduction="sum")
    mean = model.loss(*batch)
    n = int((batch[3] != -100).sum())
    assert mean == pytest.approx(total / n, rel=1e-12)
    nll, count, correct = model.evaluate_batch(*batch)
    assert count == n and 0 <= correct <= n
    assert nll == pytest.approx(total, rel=1e-12)


def test_scheduled_sampling_is_seeded_and_zero_is_teacher_forcing():
    batch = _batch(np.random.default_rng(6))
    a, b = _model(), _model()
    assert a.loss(*batch) == b.loss(*batch)
    a.scheduled_sampling = b.scheduled_sampling = 0.5
    la, lb = a.loss(*batch), b.loss(*batch)
    assert la == lb  # same seed, same draws
    a.backward()
    a.eval()  # no sampling at evaluation
    assert a.loss(*batch) == _model().eval().loss(*batch)


def test_config_round_trip():
    model = _model(attention="additive", attention_size=5, input_feed=False, bridge="linear", dropout=0.1)
    again = Seq2Seq(**model.config())
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    batch = _batch(np.random.default_rng(7))
    assert model.loss(*batch) == again.loss(*batch)


def test_tied_generator_shares_the_target_embedding():
    model = _model(embedding_dim=6, tie_weights=True)
    assert model.decoder.generator.weight is model.decoder.embedding.weight
    with pytest.raises(ValueError, match="tie_weights"):
        _model(tie_weights=True)


@pytest.mark.parametrize("case,match", [
    ("batch", "same number of sequences"), ("empty", "at least one step"), ("src_id", "src ids must be in"),
    ("tgt_id", "tgt_in ids must be in"), ("len0", r"src_lengths must be in \[1, S\]"),
    ("len_big", r"lengths must be in \[0, T\]"), ("tgt_out", "tgt_out must have"),
])
def test_bad_input_is_named(case, match):
    model = _model()
    src, lengths, tgt_in, tgt_out = _batch(np.random.default_rng(8))
    if case == "batch":
        tgt_in, tgt_out = tgt_in[:, :2], tgt_out[:, :2]
    elif case == "empty":
        src = src[:0]
    elif case == "src_id":
        src[0, 0] = SRC_V
    elif case == "tgt_id":
        tgt_in[1, 1] = -1
    elif case == "len0":
        lengths[1] = 0
    elif case == "len_big":
        lengths[0] = 9
    elif case == "tgt_out":
        tgt_out = tgt_out[:-1]
    with pytest.raises((ValueError, TypeError), match=match):
        model.loss(src, lengths, tgt_in, tgt_out)


def _reversal_data(rng, n, length=20, digits=10):
    """Sources of `length` digits (ids 3..), targets the reversed digits. Ids: 0 pad, 1 <s>, 2 </s>."""
    src = rng.integers(3, 3 + digits, size=(length, n))
    tgt = src[::-1]
    tgt_in = np.concatenate([np.ones((1, n), np.int64), tgt], axis=0)
    tgt_out = np.concatenate([tgt, np.full((1, n), 2, np.int64)], axis=0)
    return src, np.full(n, length, np.int64), tgt_in, tgt_out


def _train_reversal(attention, steps, seed=0):
    rng = np.random.default_rng(seed)
    V = 13
    model = Seq2Seq(V, V, embedding_dim=32, hidden_size=64, attention=attention, seed=seed, threads=1)
    opt = rnncore.optim.Adam(model.parameters(), lr=1e-2)
    schedule = rnncore.optim.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        batch = _reversal_data(rng, 32)
        model.zero_grad()
        model.loss(*batch)
        model.backward()
        rnncore.optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        schedule.step()
    model.eval()
    src, lengths, tgt_in, tgt_out = _reversal_data(np.random.default_rng(999), 500)
    hyps = model.translate_ids(list(src.T), bos=1, eos=2, method="greedy", max_len=25)
    right = [np.array_equal(h[0].tokens, tgt_out[:, b]) for b, h in enumerate(hyps)]
    return float(np.mean(right))


def test_reversal_with_attention_reaches_99_percent_and_without_does_not():
    # 2,000 steps (~14 s on one thread): at 1,000 this seed ended at 0.986 on one host (AMD EPYC family 25)
    # and above 0.99 on another, float rounding steering the run; at 2,000 seeds 0 and 1 reach 0.996.
    with_attention = _train_reversal("general", 2000)
    without = _train_reversal(None, 300)
    assert with_attention >= 0.99, with_attention
    assert without < with_attention - 0.3, (with_attention, without)


# -- decoding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention,input_feed", [("general", True), ("additive", False), ("dot", True),
                                                  (None, False)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_teacher_forced_logits_equal_the_step_by_step_decoder(attention, input_feed, cell):
    from rnncore.sampling import _decoder_core

    model = _model(attention=attention, input_feed=input_feed, cell=cell, num_layers=2).eval()
    src, lengths, tgt_in, _ = _batch(np.random.default_rng(9))
    logits, alpha = model.forward(src, lengths, tgt_in)
    memory, state = model.encode(src, lengths)
    h0, c0 = state if cell == "lstm" else (state, None)
    core, _ = _decoder_core(model.decoder_parts(), 1, "test")
    step_logits, step_alpha = core.forced(memory if attention else None, lengths if attention else None, h0, c0,
                                          tgt_in, attention is not None)
    np.testing.assert_allclose(step_logits, logits, rtol=0, atol=1e-12)
    if attention:
        np.testing.assert_allclose(step_alpha, alpha, rtol=0, atol=1e-12)


def test_greedy_follows_the_argmax_chain_and_beam_1_equals_greedy():
    model = _model(num_layers=2).eval()
    src, lengths, _, _ = _batch(np.random.default_rng(10))
    sources = [src[:n, b] for b, n in enumerate(lengths)]
    greedy = model.translate_ids(sources, bos=1, eos=2, method="greedy", max_len=6)
    beam1 = model.translate_ids(sources, bos=1, eos=2, method="beam", beam_width=1, max_len=6)
    for b, (g, k) in enumerate(zip(greedy, beam1)):
        np.testing.assert_array_equal(g[0].tokens, k[0].tokens)
        # re-feeding the greedy tokens teacher-forced picks the same token at every step
        toks = g[0].tokens
        tgt_in = np.concatenate([[1], toks[:-1]]).reshape(-1, 1)
        logits, _ = model.forward(sources[b].reshape(-1, 1), [len(sources[b])], tgt_in)
        np.testing.assert_array_equal(logits[:, 0].argmax(-1), toks)
        lp = logits[:, 0] - np.log(np.exp(logits[:, 0]).sum(-1, keepdims=True))
        assert g[0].score == pytest.approx(lp[np.arange(len(toks)), toks].sum(), rel=1e-10)


def test_translate_text_round_trip_and_attention():
    from rnncore.data import PairDataset

    pairs = [("a b c", "x y"), ("b c", "y z"), ("c a", "z x x")]
    ds = PairDataset(pairs)
    model = Seq2Seq(ds.src_vocab_size, ds.tgt_vocab_size, embedding_dim=8, hidden_size=8, seed=0,
                    src_padding_idx=ds.src_pad_id, tgt_padding_idx=ds.pad_id)
    out = model.translate(["a b", "c"], ds.src_tokenizer, ds.tgt_tokenizer, beam_width=3, max_len=5)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    best3 = model.translate("a b", ds.src_tokenizer, ds.tgt_tokenizer, n_best=3, beam_width=3, max_len=5)
    assert isinstance(best3, list) and 1 <= len(best3) <= 3
    text, alpha, src_toks, tgt_toks = model.translate("a b c", ds.src_tokenizer, ds.tgt_tokenizer,
                                                      return_attention=True, max_len=5)
    assert src_toks == ["a", "b", "c"] and alpha.shape == (len(tgt_toks), 3)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="needs the source and target tokenizers"):
        model.translate("a")
    with pytest.raises(ValueError, match="no tokens"):
        model.translate("", ds.src_tokenizer, ds.tgt_tokenizer)
    with pytest.raises(ValueError, match="beam_width"):
        model.translate("a", ds.src_tokenizer, ds.tgt_tokenizer, beam_width=0)
    with pytest.raises(ValueError, match="sources\\[1\\] is empty"):
        model.translate_ids([[1], []], bos=2, eos=3)
