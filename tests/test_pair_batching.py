"""rnncore.data: seq2seq pairs as ids (pair_tokenizer, PairDataset) and their batches (PairBatcher)."""
import json

import numpy as np
import pytest

from rnncore import data
from rnncore.data import PairBatch, PairBatcher, PairDataset, Vocabulary, WordTokenizer, pair_tokenizer

PAIRS = [("the cat sat", "el gato"), ("a dog", "un perro ladra"), ("the dog sat on the mat", "el perro"),
         ("hi", ""), ("the the cat", "el el el gato gato")]


def random_pairs(n, seed=0, vocab=12, max_len=9):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(vocab)]
    return [(" ".join(rng.choice(words, rng.integers(1, max_len + 1))),
             " ".join(rng.choice(words, rng.integers(0, max_len + 1)))) for _ in range(n)]


def test_pair_tokenizer_specials_and_limits():
    tok = pair_tokenizer(["b a a", "c a b", "d"])
    v = tok.vocab
    assert v.symbols == ("<pad>", "<unk>", "<s>", "</s>", "a", "b", "c", "d")
    assert (v.pad_id, v.unk_id, v.bos_id, v.eos_id) == (0, 1, 2, 3)
    assert list(tok.encode("a zz d")) == [4, 1, 7]
    assert pair_tokenizer(["b a a", "c a b", "d"], min_freq=2).vocab.symbols[4:] == ("a", "b")
    assert pair_tokenizer(["b a a", "c a b", "d"], max_size=5).vocab.symbols[4:] == ("a",)
    assert pair_tokenizer(["A a"], lower=True).vocab.symbols[4:] == ("a",)
    again = data.tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again.vocab.bos_id == 2
    with pytest.raises(ValueError, match="max_size must be >= 4"):
        pair_tokenizer(["a"], max_size=3)
    with pytest.raises(TypeError, match=r"sentences\[1\] must be a str"):
        pair_tokenizer(["a", 3])
    with pytest.raises(TypeError, match="must be a list of str"):
        pair_tokenizer("a b")


def test_punctuation_is_split_off_and_glued_back():
    text = '\u00bfQui\u00e9n es? (Dios) dijo: "s\u00ed", y fu\u00e9.'
    tok = pair_tokenizer([text, "the LORD'S house-hold."])
    assert tok.split(text) == ["\u00bf", "Qui\u00e9n", "es", "?", "(", "Dios", ")", "dijo", ":", '"', "s\u00ed", '"', ",",
                               "y", "fu\u00e9", "."]
    assert tok.split("the LORD'S house-hold.") == ["the", "LORD'S", "house-hold", "."]
    assert tok.decode(tok.encode("(Dios) dijo: s\u00ed, y fu\u00e9.")) == "(Dios) dijo: s\u00ed, y fu\u00e9."
    assert tok.decode(tok.encode("\u00bfQui\u00e9n es?")) == "\u00bfQui\u00e9n es?"
    assert pair_tokenizer(["a b."], punct=False).split("a b.") == ["a", "b."]
    # an old tokenizer's dict has no 'punct' and reads back as punct=False
    old = WordTokenizer().fit("a b.\n")
    assert "punct" not in old.to_dict()["options"] and data.tokenizer_from_dict(old.to_dict()).split("b.") == ["b."]
    ds = PairDataset([("the end.", "el fin.")])
    assert list(ds.src_lengths) == [3] and ds.decode_target(ds.make_batch([0]).tgt_out[:, 0]) == "el fin."


def test_vocabulary_bos_token():
    v = Vocabulary(["<pad>", "<s>", "x"], pad_token="<pad>", bos_token="<s>")
    assert v.bos_id == 1 and v.specials == ("<pad>", "<s>") and Vocabulary.from_dict(v.to_dict()) == v
    old = Vocabulary(["<unk>", "x"], unk_token="<unk>").to_dict()
    assert "bos_token" not in old and Vocabulary.from_dict(old).bos_id is None  # older dicts still load
    with pytest.raises(ValueError, match="bos_token '<s>' is not one of the symbols"):
        Vocabulary(["x"], bos_token="<s>")


def reference_batch(ds, indices):
    """The obvious per-pair loop: one column at a time."""
    srcs = [ds.source_ids(i) for i in indices]
    tgts = [ds.target_ids(i) for i in indices]
    S, T = max(len(s) for s in srcs), max(len(t) for t in tgts) + 1
    B = len(indices)
    src = np.full((S, B), ds.src_pad_id, np.int64)
    tgt_in = np.full((T, B), ds.pad_id, np.int64)
    tgt_out = np.full((T, B), -100, np.int64)
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        src[: len(s), b] = s
        tgt_in[: len(t) + 1, b] = [ds.bos_id] + list(t)
        tgt_out[: len(t) + 1, b] = list(t) + [ds.eos_id]
    return src, tgt_in, tgt_out, np.array([len(s) for s in srcs]), np.array([len(t) + 1 for t in tgts])


def test_make_batch_shapes_padding_and_lengths():
    ds = PairDataset(PAIRS)
    assert (ds.pad_id, ds.unk_id, ds.bos_id, ds.eos_id, ds.src_pad_id) == (0, 1, 2, 3, 0)
    assert list(ds.src_lengths) == [3, 2, 6, 1, 3] and list(ds.tgt_lengths) == [2, 3, 2, 0, 5]
    b = ds.make_batch([0, 3, 4])
    assert isinstance(b, PairBatch) and b._fields == ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths")
    assert b.src.shape == (3, 3) and b.tgt_in.shape == b.tgt_out.shape == (6, 3)
    assert all(a.dtype == np.int64 and a.flags.c_contiguous for a in b)
    assert list(b.src_lengths) == [3, 1, 3] and list(b.tgt_lengths) == [3, 1, 6]
    src, tgt_in, tgt_out, sl, tl = reference_batch(ds, [0, 3, 4])
    assert np.array_equal(b.src, src) and np.array_equal(b.tgt_in, tgt_in) and np.array_equal(b.tgt_out, tgt_out)
    # the empty target: <s> in, </s> out, nothing else
    assert list(b.tgt_in[:, 1]) == [2, 0, 0, 0, 0, 0] and list(b.tgt_out[:, 1]) == [3] + [-100] * 5
    # tgt_lengths counts the non-ignored positions; tgt_in is tgt_out shifted right behind <s>
    assert list((b.tgt_out != -100).sum(axis=0)) == list(b.tgt_lengths)
    for col in range(3):
        n = b.tgt_lengths[col]
        assert np.array_equal(b.tgt_in[1:n, col], b.tgt_out[: n - 1, col])
    assert ds.decode_source(b.src[:, 0]) == "the cat sat"
    assert ds.decode_target(b.tgt_out[:, 2]) == "el el el gato gato" == ds.decode_target(b.tgt_in[:, 2])
    assert ds.decode_target([2, 4, 3, 5, 5]) == ds.tgt_tokenizer.decode([4])  # stops at </s>


def test_make_batch_equals_the_reference_on_random_pairs():
    pairs = random_pairs(300, seed=1)
    ds = PairDataset(pairs, min_freq=2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = rng.choice(len(ds), size=int(rng.integers(1, 40)), replace=False)
        b = ds.make_batch(idx)
        src, tgt_in, tgt_out, sl, tl = reference_batch(ds, idx)
        assert np.array_equal(b.src, src) and np.array_equal(b.tgt_in, tgt_in) and np.array_equal(b.tgt_out, tgt_out)
        assert np.array_equal(b.src_lengths, sl) and np.array_equal(b.tgt_lengths, tl)


def test_with_pairs_uses_the_training_vocabularies():
    train = PairDataset(PAIRS)
    test = train.with_pairs([("the zebra", "el cebra")])
    assert test.src_tokenizer is train.src_tokenizer
    assert list(test.source_ids(0)) == [train.src_tokenizer.vocab["the"], train.src_unk_id]


def epoch_of(batcher):
    return [tuple(map(np.copy, b)) for b in batcher]


def test_batcher_covers_every_pair_once_in_length_sorted_batches():
    pairs = random_pairs(1000, seed=2, max_len=30)
    ds = PairDataset(pairs)
    it = PairBatcher(ds, 16, seed=5, pool_size=10)
    batches = it.batch_indices()
    assert len(batches) == len(it) == sum(-(-min(160, 1000 - s) // 16) for s in range(0, 1000, 160))
    assert sorted(np.concatenate(batches)) == list(range(1000))
    # sorted inside the pools: a batch's source lengths span far less than the data's
    spans = [np.ptp(ds.src_lengths[b]) for b in batches]
    assert np.mean(spans) < 0.25 * np.ptp(ds.src_lengths)
    # every batch is a PairBatch of at most B pairs
    for b in it:
        assert b.src.shape[1] <= 16 and b.src.shape[0] == b.src_lengths.max()
    # pool_size=None without shuffle: globally sorted by (source, target) length
    flat = np.concatenate(PairBatcher(ds, 16, shuffle=False, pool_size=None).batch_indices())
    keys = list(zip(ds.src_lengths[flat], ds.tgt_lengths[flat]))
    assert keys == sorted(keys)


def test_batcher_length_limits_and_drop_last():
    ds = PairDataset(random_pairs(200, seed=3, max_len=12))
    it = PairBatcher(ds, 8, seed=0, max_src_len=5, max_tgt_len=6)
    kept = np.concatenate(it.batch_indices())
    assert it.num_dropped == 200 - len(kept) > 0 and it.num_pairs == len(kept)
    assert ds.src_lengths[kept].max() <= 5 and ds.tgt_lengths[kept].max() <= 6
    full = PairBatcher(ds, 8, seed=0, drop_last=True, pool_size=3)
    assert all(len(b) == 8 for b in full.batch_indices()) and len(full) == len(full.batch_indices())
    with pytest.raises(ValueError, match="leave none of the 200 pairs"):
        PairBatcher(ds, 8, max_src_len=1, max_tgt_len=0)


def test_batcher_is_seeded_per_epoch():
    ds = PairDataset(random_pairs(300, seed=4))
    a, b = PairBatcher(ds, 10, seed=7), PairBatcher(ds, 10, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a.batch_indices(0), b.batch_indices(0)))
    assert not all(np.array_equal(x, y) for x, y in zip(a.batch_indices(0), a.batch_indices(1)))
    c = PairBatcher(ds, 10, seed=8)
    assert not all(np.array_equal(x, y) for x, y in zip(a.batch_indices(0), c.batch_indices(0)))
    e1 = epoch_of(a)
    assert a.epoch == 1 and a.position == 0
    assert all(np.array_equal(x, y) for bx, by in zip(e1, epoch_of(b)) for x, y in zip(bx, by))


def test_resume_mid_epoch_is_exact():
    ds = PairDataset(random_pairs(250, seed=5))
    whole = PairBatcher(ds, 12, seed=11, pool_size=4)
    straight = epoch_of(whole) + epoch_of(whole)
    n = len(whole)
    for stop in (0, 3, n - 1, n, n + 2):
        first = PairBatcher(ds, 12, seed=11, pool_size=4)
        got = []
        stream = iter(first)
        while len(got) < stop:
            try:
                got.append(tuple(map(np.copy, next(stream))))
            except StopIteration:
                stream = iter(first)
        state = json.loads(json.dumps(first.state_dict()))
        second = PairBatcher(ds, 12, seed=11, pool_size=4)
        second.load_state_dict(state)
        while len(got) < 2 * n:
            got.extend(epoch_of(second))
        assert len(got) == 2 * n
        for x, y in zip(got, straight):
            assert all(np.array_equal(p, q) for p, q in zip(x, y)), stop
    other = PairBatcher(ds, 12, seed=12, pool_size=4)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(whole.state_dict())
    with pytest.raises(ValueError, match="past the"):
        whole.load_state_dict(dict(whole.state_dict(), position=n + 1))
    with pytest.raises(TypeError, match="expected a dict"):
        whole.load_state_dict([1])


def test_bad_input():
    with pytest.raises(ValueError, match=r"pairs\[1\] has an empty source"):
        PairDataset([("a", "b"), ("  ", "c")])
    with pytest.raises(ValueError, match="pairs is empty"):
        PairDataset([])
    with pytest.raises(TypeError, match=r"pairs\[0\] must be a \(source, target\) pair"):
        PairDataset([("a", "b", "c")])
    with pytest.raises(TypeError, match="pairs must be a list"):
        PairDataset("a b")
    with pytest.raises(ValueError, match=r"tgt_tokenizer has no <s> \(bos\), </s> \(eos\) symbol"):
        PairDataset([("a", "b")], pair_tokenizer(["a"]), WordTokenizer(pad=True, eos=False).fit("a b"))
    with pytest.raises(ValueError, match="src_tokenizer has no <pad>"):
        PairDataset([("a", "b")], WordTokenizer(eos=False).fit("a"), pair_tokenizer(["b"]))
    with pytest.raises(TypeError, match="src_tokenizer must be an rnncore.data tokenizer"):
        PairDataset([("a", "b")], "tok", pair_tokenizer(["b"]))
    with pytest.raises(ValueError, match="encodes newlines as <eos>"):
        PairDataset([("a", "b")], pair_tokenizer(["a"]), WordTokenizer(pad=True, vocab=Vocabulary(
            ["<pad>", "<unk>", "<s>", "<eos>", "b"], pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
            eos_token="<eos>")))
    ds = PairDataset(PAIRS)
    with pytest.raises(IndexError, match=r"indices\[1\] = 5"):
        ds.make_batch([0, 5])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ds.make_batch([])
    with pytest.raises(TypeError, match="must hold integers"):
        ds.make_batch([0.5])
    with pytest.raises(TypeError, match="dataset must be a PairDataset"):
        PairBatcher(PAIRS, 2)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        PairBatcher(ds, 0)
    with pytest.raises(ValueError, match="pool_size must be positive"):
        PairBatcher(ds, 2, pool_size=0)
    with pytest.raises(ValueError, match="ids must be 1-D"):
        ds.decode_target(np.zeros((2, 2), np.int64))
    with pytest.raises(IndexError, match=r"i must be in \[0, 5\)"):
        ds.source_ids(5)
