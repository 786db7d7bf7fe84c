"""The PyTorch peer of Seq2Seq (bench/seq2seq_torch.py), on tiny cases: it learns a toy copy
task, its beam width 1 equals its greedy decoder, its exhaustive beam finds the brute-force
best, its teacher-forced logits equal its step-by-step decoder's, masked attention puts exactly
0 past each source's length, and its parameter names are rnncore's."""
import itertools
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from seq2seq_torch import (GlobalAttention, Seq2SeqTorch, load_rnncore_state, rnncore_key,  # noqa: E402
                           torch_state_as_rnncore)

BOS, EOS = 1, 2
CONFIGS = [(attn, feed) for attn in ("dot", "general", "additive", None) for feed in (True, False)
           if attn is not None or feed]


def tiny(attn="general", feed=True, layers=1, V=13, H=8, seed=0):
    torch.manual_seed(seed)
    return Seq2SeqTorch(V, V, 7, H, layers, attention=attn, input_feed=feed).double()


def ragged_source(rng, V, S=6, B=3):
    lengths = np.array([S, 2, 4][:B] + [S] * max(0, B - 3), np.int64)
    src = np.zeros((S, B), np.int64)
    for b, n in enumerate(lengths):
        src[:n, b] = rng.integers(3, V, size=n)
    return torch.from_numpy(src), torch.from_numpy(lengths)


@pytest.mark.parametrize("attn,feed", [("general", True), ("additive", False)])
def test_loss_decreases_on_copy_task(attn, feed):
    torch.manual_seed(0)
    V, B, S = 10, 16, 5
    model = Seq2SeqTorch(V, V, 16, 16, 1, attention=attn, input_feed=feed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(60):
        src = torch.randint(3, V, (S, B), generator=g)
        lengths = torch.full((B,), S, dtype=torch.long)
        tgt_in = torch.cat([torch.full((1, B), BOS), src])
        tgt_out = torch.cat([src, torch.full((1, B), EOS)])
        opt.zero_grad()
        loss = model.loss(src, lengths, tgt_in, tgt_out)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("attn,feed", CONFIGS)
@pytest.mark.parametrize("layers", [1, 2])
def test_beam_width_1_equals_greedy(attn, feed, layers):
    model = tiny(attn, feed, layers).eval()
    src, lengths = ragged_source(np.random.default_rng(0), 13)
    greedy = model.greedy(src, lengths, BOS, EOS, max_len=9)
    beam = model.beam_search(src, lengths, BOS, EOS, max_len=9, beam_width=1)
    for g, b in zip(greedy, beam):
        assert len(b) == 1
        assert g["tokens"] == b[0]["tokens"]
        assert abs(g["score"] - b[0]["score"]) <= 1e-12 * abs(g["score"])


def sequence_score(model, src, lengths, b, tokens):
    """Sum of log-probs of tokens for source b, by teacher forcing."""
    tgt_in = torch.tensor([BOS] + tokens[:-1]).view(-1, 1)
    with torch.no_grad():
        logits = model(src[:, b:b + 1], lengths[b:b + 1], tgt_in)
    logp = torch.log_softmax(logits[:, 0], dim=-1)
    return float(sum(logp[t, tok] for t, tok in enumerate(tokens)))


@pytest.mark.parametrize("attn,feed", [("general", True), ("dot", False)])
def test_exhaustive_beam_finds_brute_force_best(attn, feed):
    V, L = 4, 3  # ids 0..3; <s> = 1, </s> = 2; every hypothesis of up to 3 tokens
    torch.manual_seed(3)
    model = Seq2SeqTorch(V, V, 5, 6, 1, attention=attn, input_feed=feed).double().eval()
    src, lengths = ragged_source(np.random.default_rng(1), V, S=4, B=2)
    src = src.clamp(min=0) % V
    for lp in (0.0, 1.0):
        beam = model.beam_search(src, lengths, BOS, EOS, max_len=L, beam_width=V ** L, n_best=3, length_penalty=lp)
        for b in range(src.shape[1]):
            cands = []
            for n in range(1, L + 1):
                for seq in itertools.product(range(V), repeat=n):
                    if EOS in seq[:-1] or (n < L and seq[-1] != EOS):
                        continue
                    s = sequence_score(model, src, lengths, b, list(seq))
                    cands.append((s / n ** lp if lp else s, list(seq)))
            cands.sort(key=lambda c: -c[0])
            assert [h["tokens"] for h in beam[b]] == [c[1] for c in cands[:3]]
            for h, c in zip(beam[b], cands):
                assert abs(h["normalized"] - c[0]) <= 1e-10 * abs(c[0])


@pytest.mark.parametrize("attn,feed", CONFIGS)
def test_teacher_forced_logits_equal_step_by_step(attn, feed):
    model = tiny(attn, feed, layers=2).eval()
    rng = np.random.default_rng(2)
    src, lengths = ragged_source(rng, 13)
    tgt_in = torch.from_numpy(rng.integers(3, 13, size=(5, 3)))
    with torch.no_grad():
        logits = torch.log_softmax(model(src, lengths, tgt_in), dim=-1)
        mem, mask, keys, state = model._start(src, lengths)
        feed_h = mem.new_zeros(3, model.decoder.hidden_size)
        for t in range(tgt_in.shape[0]):
            logp, feed_h, state = model.decoder.step(tgt_in[t], feed_h, state, mem, mask, keys)
            np.testing.assert_allclose(logp.numpy(), logits[t].numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_is_masked(kind):
    torch.manual_seed(0)
    att = GlobalAttention(6, 6, kind).double()
    mem = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    q = torch.randn(3, 2, 6, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3])
    mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)
    attn_h, alpha = att(q, mem, mask)
    assert bool((alpha[~mask.unsqueeze(1).expand_as(alpha)] == 0).all())
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 2, dtype=torch.float64))
    attn_h.sum().backward()
    assert bool((mem.grad[~mask] == 0).all())
    assert float(mem.grad[mask].abs().sum()) > 0


def test_parameter_names_are_rnncore_names():
    feed = dict(tiny("general", True, layers=2).named_parameters())
    names = {rnncore_key(k, True) for k in feed}
    for k in ("encoder.embedding.weight", "encoder.rnn.weight_ih_l0_reverse", "encoder.rnn.bias_hh_l1",
              "decoder.embedding.weight", "decoder.rnn.weight_ih_l0", "decoder.rnn.attn.linear_in.weight",
              "decoder.rnn.attn.linear_out.weight", "decoder.generator.weight", "decoder.generator.bias"):
        assert k in names, k
    assert feed["decoder.rnn.weight_ih_l0"].shape == (4 * 8, 7 + 8)  # [x ; attn_h] as rnncore's InputFeedRNN
    after = {rnncore_key(k, False) for k, _ in tiny("additive", False).named_parameters()}
    assert {"decoder.attn.linear_query.weight", "decoder.attn.linear_query.bias", "decoder.attn.linear_context.weight",
            "decoder.attn.v.weight", "decoder.attn.linear_out.bias"} <= after


def test_load_rnncore_state_round_trip_and_errors():
    a, b = tiny(seed=0), tiny(seed=1)
    state = torch_state_as_rnncore(a)
    load_rnncore_state(b, state)
    for (k, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), k
    bad = dict(state)
    del bad["decoder.generator.bias"]
    with pytest.raises(KeyError, match="decoder.generator.bias"):
        load_rnncore_state(b, bad)
    bad = dict(state, **{"decoder.generator.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="decoder.generator.bias"):
        load_rnncore_state(b, bad)


@pytest.mark.parametrize("placement", ["feed", "after"])
def test_harness_parity_check_runs(placement, tmp_path):
    """bench/seq2seq_compare.check() end to end on a tiny real rnncore.nn.Seq2Seq: loss, gradients,
    three steps of rnncore.optim.Adam against torch.optim.Adam (float64), the beam comparison, and
    the float32 weights file the timing workers load."""
    import seq2seq_compare as C

    w = {"kind": "train", "layers": 2, "placement": placement, "attention": "general", "V": 40, "E": 8, "H": 8,
         "data_seed": 0, "B": 4, "name": "tiny"}
    out = tmp_path / "w.npz"
    report = C.check(w, str(out), check_batch=3, decode_sources=3)
    assert report["loss"][0] == pytest.approx(report["loss"][1], rel=1e-12)
    assert report["grad_rel_err"] < 1e-10
    assert len(report["adam_losses"]) == 3
    assert report["beam_same"].endswith("/3"), report["beam_same"]  # the stopping rules may differ
    with np.load(out) as f:
        assert "decoder.generator.weight" in f.files and f["decoder.generator.weight"].dtype == np.float32
