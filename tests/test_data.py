"""rnncore.data: tokenizers, vocabularies, batching, reading text. No corpus needed."""
import json
import os

import numpy as np
import pytest

import rnncore
from rnncore.data import (BucketIterator, CharTokenizer, StreamBatcher, Vocabulary, WordTokenizer, lm_batches,
                          pad_sequences, read_text, tokenizer_from_dict)
from rnncore.data import _fast


def test_imports_this_checkout():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert os.path.dirname(os.path.dirname(_fast.__file__)) == os.path.join(root, "rnncore")
    assert rnncore.__file__.startswith(root)


def random_text(rng, n, alphabet="abcdefghij klmnop\n\t.,;!éßü中文\U0001F600"):
    return "".join(rng.choice(list(alphabet), size=n))


def random_words(rng, n_words, vocab=50, p_newline=0.1):
    words = [f"w{int(i)}" for i in rng.zipf(1.3, size=n_words) % vocab]
    out = []
    for w in words:
        out.append(w)
        out.append("\n" if rng.random() < p_newline else rng.choice([" ", "  ", "\t"]))
    return "".join(out)


# ---- the obvious Python versions the Cython loops are tested against ----------------------

def naive_char_encode(text, vocab):
    return np.array([vocab.stoi[c] if c in vocab.stoi else vocab.unk_id for c in text], dtype=np.int64)


def naive_word_encode(text, vocab):
    words = text.replace("\n", " <eos> ").split()
    return np.array([vocab.stoi.get(w, vocab.unk_id) for w in words], dtype=np.int64)


# ---- Vocabulary ----------------------------------------------------------------------------

def test_vocabulary_order_specials_then_count_then_symbol():
    counts = {"b": 3, "a": 3, "c": 5, "d": 1, "<unk>": 7}
    v = Vocabulary.from_counts(counts, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>")
    assert v.symbols == ("<pad>", "<unk>", "<eos>", "c", "a", "b", "d")
    assert (v.pad_id, v.unk_id, v.eos_id) == (0, 1, 2)
    # the order does not depend on the order the counts come in
    v2 = Vocabulary.from_counts(dict(reversed(list(counts.items()))), unk_token="<unk>", eos_token="<eos>",
                                pad_token="<pad>")
    assert v2 == v and v2.symbols == v.symbols
    assert len(v) == 7 and "c" in v and "z" not in v
    assert v["a"] == 4 and v["zzz"] == v.unk_id


def test_vocabulary_min_count_and_max_size():
    counts = {"a": 10, "b": 5, "c": 5, "d": 2, "e": 1}
    v = Vocabulary.from_counts(counts, min_count=2)
    assert v.symbols == ("<unk>", "a", "b", "c", "d")
    v = Vocabulary.from_counts(counts, max_size=3)  # specials count toward max_size
    assert v.symbols == ("<unk>", "a", "b")
    v = Vocabulary.from_counts(counts, min_count=5, max_size=100, unk_token=None)
    assert v.symbols == ("a", "b", "c") and v.unk_id is None
    with pytest.raises(KeyError, match="no <unk>"):
        v["zzz"]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.from_counts(counts, max_size=1, eos_token="<eos>")
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.from_counts(counts, min_count=0)


def test_vocabulary_rejects_bad_symbols():
    with pytest.raises(ValueError, match="appears twice"):
        Vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="unk_token"):
        Vocabulary(["a"], unk_token="<unk>")
    with pytest.raises(TypeError, match="strings"):
        Vocabulary(["a", 3])
    with pytest.raises(TypeError, match="one str"):
        Vocabulary("abc")


def test_vocabulary_dict_round_trip_through_json():
    v = Vocabulary.from_counts("abracadabra", eos_token="<eos>", pad_token="<pad>")
    d = json.loads(json.dumps(v.to_dict()))
    w = Vocabulary.from_dict(d)
    assert w == v and w.symbols == v.symbols and (w.unk_id, w.eos_id, w.pad_id) == (v.unk_id, v.eos_id, v.pad_id)
    with pytest.raises(ValueError, match="format"):
        Vocabulary.from_dict({**d, "format": 99})
    with pytest.raises(ValueError, match="missing"):
        Vocabulary.from_dict({"format": 1, "symbols": ["a"]})


# ---- CharTokenizer ---------------------------------------------------------------------------

def test_char_round_trip_random_unicode():
    rng = np.random.default_rng(0)
    text = random_text(rng, 20_000)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(set(text)) == len(tok)
    assert tok.vocab.unk_id is None


def test_char_cython_encode_equals_naive_python():
    rng = np.random.default_rng(1)
    text = random_text(rng, 50_000)
    tok = CharTokenizer.from_text(text[:25_000] + "zzz", unk=True, min_count=2, max_size=15)
    assert len(tok.vocab) == 15 and "z" not in tok.vocab
    np.testing.assert_array_equal(tok.encode(text), naive_char_encode(text, tok.vocab))


def test_char_unknown_maps_to_unk():
    tok = CharTokenizer.from_text("hello world\n", unk=True)
    ids = tok.encode("hex\U0001F600!")
    unk = tok.vocab.unk_id
    assert list(ids) == [tok.vocab["h"], tok.vocab["e"], unk, unk, unk]
    assert tok.decode(ids) == "he<unk><unk><unk>"


def test_char_unknown_without_unk_names_char_and_position():
    tok = CharTokenizer.from_text("hello world\n")
    with pytest.raises(ValueError) as e:
        tok.encode("hello\nwoxld")
    msg = str(e.value)
    assert "'x'" in msg and "U+0078" in msg and "position 8" in msg and "line 2, column 3" in msg
    assert "unk=True" in msg
    with pytest.raises(ValueError, match="'中'"):  # a code point beyond the table
        tok.encode("中")


def test_char_pad_is_id_zero_and_dropped_by_decode():
    tok = CharTokenizer.from_text("abc", pad=True)
    assert tok.vocab.pad_id == 0
    assert tok.decode([0, tok.vocab["a"], 0, 0, tok.vocab["c"]]) == "ac"


def test_char_fit_without_unk_refuses_to_drop_symbols():
    with pytest.raises(ValueError, match="unk=True"):
        CharTokenizer.from_text("aaab", min_count=2)
    assert CharTokenizer.from_text("aaab", min_count=2, unk=True).encode("b")[0] == 0


def test_char_decode_bad_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"ids\[1\] = 3"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match=r"ids\[0\] = -1"):
        tok.decode(np.array([-1]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        tok.decode(np.array([2**63 + 5], dtype=np.uint64))
    with pytest.raises(TypeError, match="integers"):
        tok.decode(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.zeros((2, 2), dtype=np.int64))
    assert tok.decode([]) == ""
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"abc")


def test_unfitted_tokenizer_says_so():
    with pytest.raises(RuntimeError, match="fit"):
        CharTokenizer().encode("a")


# ---- WordTokenizer ---------------------------------------------------------------------------

def test_word_round_trip_and_eos():
    rng = np.random.default_rng(2)
    text = random_words(rng, 5_000)
    tok = WordTokenizer.from_text(text)
    ids = tok.encode(text)
    assert (ids == tok.vocab.eos_id).sum() == text.count("\n")
    normalised = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    assert tok.decode(ids) == normalised
    np.testing.assert_array_equal(ids, naive_word_encode(text, tok.vocab))


def test_word_ptb_style_lines():
    text = " the cat sat \n a <unk> dog \n"
    tok = WordTokenizer.from_text(text)
    v = tok.vocab
    assert v.symbols[:2] == ("<unk>", "<eos>")
    ids = tok.encode(text)
    assert [v.symbols[i] for i in ids] == ["the", "cat", "sat", "<eos>", "a", "<unk>", "dog", "<eos>"]
    assert tok.decode(ids) == "the cat sat\na <unk> dog\n"


def test_word_unknown_maps_to_unk_and_cython_equals_naive():
    rng = np.random.default_rng(3)
    train, test = random_words(rng, 3_000), random_words(rng, 3_000, vocab=80)
    tok = WordTokenizer.from_text(train, min_count=3, max_size=30)
    assert len(tok) == 30
    ids = tok.encode(test)
    np.testing.assert_array_equal(ids, naive_word_encode(test, tok.vocab))
    assert (ids == tok.vocab.unk_id).any()


def test_word_unknown_without_unk_names_the_word():
    tok = WordTokenizer.from_text("a b c\n", unk=False)
    with pytest.raises(ValueError, match=r"word 'zz' \(word 2 of the text\)"):
        tok.encode("a b zz c")


def test_word_options_lower_no_eos_pad():
    tok = WordTokenizer.from_text("The cat\nthe dog\n", lower=True, eos=False, pad=True)
    assert tok.vocab.eos_id is None and tok.vocab.pad_id == 0
    assert tok.vocab.symbols[2] == "the"  # most frequent after <pad>, <unk>
    ids = tok.encode("THE DOG\n")
    assert tok.decode(np.concatenate([ids, [0, 0]])) == "the dog"


def test_tokenizer_dict_round_trip():
    for tok in (CharTokenizer.from_text("héllo\nworld", unk=True, pad=True),
                WordTokenizer.from_text("a b b c\nc c\n", min_count=2, lower=True)):
        d = json.loads(json.dumps(tok.to_dict()))
        for back in (type(tok).from_dict(d), tokenizer_from_dict(d)):
            assert type(back) is type(tok) and back == tok
            np.testing.assert_array_equal(back.encode("héllo a c b"), tok.encode("héllo a c b"))
    with pytest.raises(ValueError, match="'word' tokenizer"):
        CharTokenizer.from_dict(WordTokenizer.from_text("a").to_dict())
    with pytest.raises(ValueError, match="type 'char' or 'word'"):
        tokenizer_from_dict({"type": "bpe"})


# ---- StreamBatcher -------------------------------------------------------------------------

@pytest.mark.parametrize("N,B,T", [(1000, 4, 7), (1001, 5, 10), (65, 8, 3), (40, 2, 19), (40, 2, 100)])
def test_stream_windows_cover_every_token_once_in_order(N, B, T):
    ids = np.random.default_rng(N).integers(0, 50, size=N)
    sb = StreamBatcher(ids, B, T)
    n = N // B
    streams = ids[: n * B].reshape(B, n).T
    windows = list(sb)
    assert len(windows) == sb.num_windows == len(sb) == -(-(n - 1) // T)
    for k, (x, y) in enumerate(windows):
        t = T if k < len(windows) - 1 else (n - 1) - T * (len(windows) - 1)
        assert x.shape == y.shape == (t, B) and x.dtype == np.int64
        assert x.flags.c_contiguous and not x.flags.writeable
    inputs = np.concatenate([x for x, _ in windows])
    targets = np.concatenate([y for _, y in windows])
    np.testing.assert_array_equal(inputs, streams[:-1])
    np.testing.assert_array_equal(targets, streams[1:])
    np.testing.assert_array_equal(np.vstack([inputs, targets[-1:]]), streams)  # every token, in order
    assert sb.tokens_per_epoch == (n - 1) * B == targets.size


def test_stream_matches_zaremba_producer():
    """drop_last=True gives the windows of Zaremba et al.'s ptb_producer (batch-major there)."""
    ids = np.arange(1003)
    B, T = 4, 6
    batch_len = len(ids) // B
    data = ids[: B * batch_len].reshape(B, batch_len)
    epoch_size = (batch_len - 1) // T
    sb = StreamBatcher(ids, B, T, drop_last=True)
    assert len(sb) == epoch_size
    for i, (x, y) in enumerate(sb):
        np.testing.assert_array_equal(x.T, data[:, i * T:(i + 1) * T])
        np.testing.assert_array_equal(y.T, data[:, i * T + 1:(i + 1) * T + 1])
    assert sb.tokens_per_epoch == epoch_size * T * B


def test_stream_resume_gives_the_same_windows():
    ids = np.random.default_rng(5).integers(0, 100, size=5000)
    full = [(x.copy(), y.copy()) for x, y in StreamBatcher(ids, 7, 13)]
    sb = StreamBatcher(ids, 7, 13)
    it = iter(sb)
    for _ in range(11):
        next(it)
    state = json.loads(json.dumps(sb.state_dict()))
    assert state["position"] == 11 and state["epoch"] == 0
    fresh = StreamBatcher(ids, 7, 13)
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert len(rest) == len(full) - 11
    for (x, y), (fx, fy) in zip(rest, full[11:]):
        np.testing.assert_array_equal(x, fx)
        np.testing.assert_array_equal(y, fy)
    assert (fresh.epoch, fresh.position) == (1, 0)
    for (x, y), (fx, fy) in zip(lm_batches(ids, 7, 13, start=11), full[11:]):
        np.testing.assert_array_equal(x, fx)
        np.testing.assert_array_equal(y, fy)
    # the next epoch is the same again
    np.testing.assert_array_equal(next(iter(fresh))[0], full[0][0])


def test_stream_state_must_match_layout_and_bad_input():
    ids = np.arange(100)
    state = StreamBatcher(ids, 4, 5).state_dict()
    with pytest.raises(ValueError, match="seq_len=5"):
        StreamBatcher(ids, 4, 6).load_state_dict(state)
    with pytest.raises(ValueError, match="position"):
        StreamBatcher(ids, 4, 5).load_state_dict({**state, "position": 999})
    with pytest.raises(ValueError, match="N >= 10"):
        StreamBatcher(np.arange(9), 5, 3)
    with pytest.raises(ValueError, match="1-D"):
        StreamBatcher(np.zeros((4, 4), dtype=np.int64), 2, 2)
    with pytest.raises(TypeError, match="integers"):
        StreamBatcher(np.zeros(10), 2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        StreamBatcher(ids, 0, 2)
    with pytest.raises(IndexError):
        StreamBatcher(ids, 4, 5).window(5)


# ---- pad_sequences / BucketIterator ----------------------------------------------------------

def test_pad_sequences_time_and_batch_major():
    seqs = [np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64), [5, 6]]
    padded, lengths = pad_sequences(seqs, pad_value=-1)
    assert padded.shape == (3, 4) and padded.dtype == np.int64 and padded.flags.c_contiguous
    np.testing.assert_array_equal(lengths, [3, 1, 0, 2])
    np.testing.assert_array_equal(padded, [[1, 4, -1, 5], [2, -1, -1, 6], [3, -1, -1, -1]])
    bm, _ = pad_sequences(seqs, pad_value=-1, time_major=False)
    np.testing.assert_array_equal(bm, padded.T)


def test_pad_sequences_features_and_errors():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(L, 3)).astype(np.float32) for L in (4, 2, 5)]
    padded, lengths = pad_sequences(seqs)
    assert padded.shape == (5, 3, 3) and padded.dtype == np.float32
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(padded[: len(s), b], s)
        assert not padded[len(s):, b].any()
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([])
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        pad_sequences([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(TypeError, match="encode it"):
        pad_sequences(["abc"])
    with pytest.raises(TypeError, match="list"):
        pad_sequences(np.zeros((3, 4)))


def make_corpus(n=500, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=n)
    return [rng.integers(1, 100, size=L) for L in lengths]


def epoch_indices(it, epoch):
    return [list(b) for b in it.batch_indices(epoch)]


@pytest.mark.parametrize("kw", [{"bucket_width": 8}, {"num_buckets": 5}, {}])
def test_bucket_every_sequence_once_and_padded_right(kw):
    seqs = make_corpus()
    labels = np.arange(len(seqs))  # label = index, to find each sequence back
    it = BucketIterator(seqs, labels, batch_size=16, seed=3, **kw)
    seen = []
    for padded, lengths, lab in it:
        assert padded.shape == (lengths.max(), len(lab)) and len(lab) <= 16
        for b, i in enumerate(lab):
            np.testing.assert_array_equal(padded[: lengths[b], b], seqs[i])
            assert not padded[lengths[b]:, b].any()
        seen.extend(lab.tolist())
    assert sorted(seen) == list(range(len(seqs)))
    assert it.epoch == 1 and it.position == 0
    if "bucket_width" in kw:
        for batch in it.batch_indices():
            keys = {len(seqs[i]) // 8 for i in batch}
            assert len(keys) == 1


def test_bucket_groups_similar_lengths():
    seqs = make_corpus(2000)
    it = BucketIterator(seqs, batch_size=32, seed=0, num_buckets=10)
    pad_fraction = np.mean([1 - lengths.mean() / lengths.max() for _, lengths, _ in it])
    unbucketed = BucketIterator(seqs, batch_size=32, seed=0, num_buckets=1)
    pad_fraction_1 = np.mean([1 - lengths.mean() / lengths.max() for _, lengths, _ in unbucketed])
    assert pad_fraction < 0.15 < pad_fraction_1


def test_bucket_deterministic_from_seed_without_global_rng():
    seqs = make_corpus()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = BucketIterator(seqs, batch_size=16, seed=7)
    b = BucketIterator(seqs, batch_size=16, seed=7)
    c = BucketIterator(seqs, batch_size=16, seed=8)
    assert epoch_indices(a, 0) == epoch_indices(b, 0)
    assert epoch_indices(a, 1) == epoch_indices(b, 1)
    assert epoch_indices(a, 0) != epoch_indices(a, 1)
    assert epoch_indices(a, 0) != epoch_indices(c, 0)
    list(a)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    unseeded = BucketIterator(seqs, batch_size=16)
    replay = BucketIterator(seqs, batch_size=16, seed=unseeded.seed)
    assert epoch_indices(unseeded, 2) == epoch_indices(replay, 2)
    plain = BucketIterator(seqs, batch_size=16, shuffle=False)
    assert epoch_indices(plain, 0) == epoch_indices(plain, 5)


def test_bucket_resume_and_drop_last():
    seqs = make_corpus()
    it = BucketIterator(seqs, np.arange(len(seqs)), batch_size=16, seed=1)
    list(it)  # epoch 0
    full = BucketIterator(seqs, np.arange(len(seqs)), batch_size=16, seed=1).batch_indices(1)
    gen = iter(it)
    for _ in range(5):
        next(gen)
    state = json.loads(json.dumps(it.state_dict()))
    fresh = BucketIterator(seqs, np.arange(len(seqs)), batch_size=16, seed=1)
    fresh.load_state_dict(state)
    rest = [lab for _, _, lab in fresh]
    assert [list(r) for r in rest] == [list(f) for f in full[5:]]
    with pytest.raises(ValueError, match="seed"):
        BucketIterator(seqs, batch_size=16, seed=2).load_state_dict(state)
    dl = BucketIterator(seqs, batch_size=16, seed=1, drop_last=True, bucket_width=10)
    sizes = [len(b) for b in dl.batch_indices()]
    assert set(sizes) == {16} and len(dl) == len(sizes)


def test_bucket_seq2seq_labels_and_errors():
    src = make_corpus(100, seed=1)
    tgt = [s[::-1] + 1 for s in src]
    it = BucketIterator(src, tgt, batch_size=8, seed=0, pad_labels=True)
    for padded, lengths, (tpad, tlen) in it:
        np.testing.assert_array_equal(lengths, tlen)
        for b in range(padded.shape[1]):
            np.testing.assert_array_equal(tpad[: tlen[b], b], padded[: lengths[b], b][::-1] + 1)
    with pytest.raises(ValueError, match="3 labels"):
        BucketIterator(src, [0, 1, 2], batch_size=8)
    with pytest.raises(ValueError, match="not both"):
        BucketIterator(src, batch_size=8, bucket_width=2, num_buckets=3)


# ---- read_text --------------------------------------------------------------------------------

def test_read_text_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_bytes("second\r\nfile".encode())
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbffirst \xc3\xa9\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third")
    (tmp_path / ".hidden").write_bytes(b"\x00binary")
    (tmp_path / "empty.txt").write_text("")
    assert read_text(tmp_path / "a.txt") == "first é\n"
    assert read_text(str(tmp_path)) == "first é\nsecond\nfile\nthird"


def test_read_text_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_text(missing)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt.* is empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "bin.dat").write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(ValueError, match=r"bin.dat.*NUL byte at byte offset 3"):
        read_text(tmp_path / "bin.dat")
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9!".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt.*not valid UTF-8.*byte offset 6"):
        read_text(tmp_path / "latin1.txt")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="no files"):
        read_text(folder)
    (folder / "x.txt").write_text("")
    with pytest.raises(ValueError, match="all empty"):
        read_text(folder)
    (folder / "y.txt").write_bytes(b"fine\n\xff")
    with pytest.raises(ValueError, match=r"y.txt.*byte offset 5"):
        read_text(folder)
