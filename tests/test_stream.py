"""rnncore.nn.Stream: chunk-by-chunk inference equals one whole-sequence forward bit for bit
(any chunking, single steps, stacked layers, every cell, 1 and 2 threads, every ISA path via
.ci/run step 2b), carries and exposes its state, allocates nothing per call, refuses bad input."""
import tracemalloc

import numpy as np
import pytest

import rnncore
from rnncore import _core, nn

CELLS = {"lstm": lambda I, H, **k: nn.LSTM(I, H, **k), "gru": lambda I, H, **k: nn.GRU(I, H, **k),
         "rnn_tanh": lambda I, H, **k: nn.RNN(I, H, **k),
         "rnn_relu": lambda I, H, **k: nn.RNN(I, H, nonlinearity="relu", **k)}


def make(cell, I=5, H=64, layers=1, threads=1, dtype=np.float32, **kw):
    layer = CELLS[cell](I, H, num_layers=layers, seed=3, threads=threads, dtype=dtype, **kw)
    layer.eval()
    return layer


def chunks_of(x, sizes):
    out, t = [], 0
    for n in sizes:
        out.append(np.ascontiguousarray(x[t:t + n]))
        t += n
    assert t == len(x)
    return out


def random_state(layer, B, rng):
    L, H, R = layer.num_layers, layer.hidden_size, layer.state_size
    h = rng.standard_normal((L, B, R)).astype(layer.dtype)
    return (h, rng.standard_normal((L, B, H)).astype(layer.dtype)) if layer.cell == "lstm" else h


def assert_state_equal(state, hn_ref, cell):
    """The stream's state equals the forward's final state bit for bit ((h, c) for an LSTM)."""
    pairs = zip(state, hn_ref) if cell == "lstm" else [(state, hn_ref)]
    for got, want in pairs:
        assert np.array_equal(got, want)


CHUNKINGS = {"steps": [1] * 29, "mixed": [1, 2, 7, 1, 5, 8, 3, 2], "whole": [29], "odd": [3, 5, 7, 11, 3]}


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("threads", [1, 2])
def test_stream_equals_forward_bit_for_bit(cell, layers, threads):
    B, T = 4, 29
    layer = make(cell, layers=layers, threads=threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    h0 = random_state(layer, B, rng)
    y_ref, hn_ref = layer.forward(x, h0)
    for name, sizes in CHUNKINGS.items():
        s = layer.stream(batch_size=B, capacity=max(sizes))
        assert s.threads == threads  # H=64, B=4: big enough that 2 threads really run
        s.state = h0
        y = np.concatenate([np.array(s.feed(c)) for c in chunks_of(x, sizes)])
        assert np.array_equal(y, y_ref), (name, np.abs(y - y_ref).max())
        assert_state_equal(s.state, hn_ref, cell)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_single_steps_projection_and_float64(dtype):
    layer = make("lstm", I=7, H=33, layers=2, proj_size=9, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((13, 3, 7)).astype(dtype)
    y_ref, _ = layer.forward(x)
    s = layer.stream(batch_size=3)
    y = np.stack([np.array(s.step(np.ascontiguousarray(x[t]))) for t in range(13)])
    assert y.dtype == dtype and y.shape == (13, 3, 9)
    assert np.array_equal(y, y_ref)


@pytest.mark.parametrize("threads", [1, 2])
def test_forward_rows_are_exact_across_lengths(threads):
    """The row-exact input projection: a forward over the first t steps equals the first t steps
    of a longer forward, bit for bit, for every t (every tail of the GEMM's row tiles, M = t*B
    rows from 1 up). This is the GEMM property the stream relies on; a change to the GEMM
    tiles that broke it fails here."""
    layer = make("gru", I=37, H=48, threads=threads)
    x = np.random.default_rng(2).standard_normal((40, 1, 37)).astype(np.float32)
    y_ref, _ = layer.forward(x)
    for t in range(1, 41):
        y, _ = layer.forward(np.ascontiguousarray(x[:t]))
        assert np.array_equal(y, y_ref[:t]), t


def test_one_and_two_threads_agree():
    layer = make("lstm", H=64, layers=2)
    x = np.random.default_rng(4).standard_normal((9, 4, 5)).astype(np.float32)
    ys = []
    for threads in (1, 2):
        s = layer.stream(batch_size=4, capacity=3, threads=threads)
        assert s.threads == threads
        ys.append(np.concatenate([np.array(s.feed(c)) for c in chunks_of(x, [3, 3, 1, 2])]))
    assert np.array_equal(ys[0], ys[1])


def test_state_reset_and_set():
    layer = make("lstm", H=16)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 2, 5)).astype(np.float32)
    s = layer.stream(batch_size=2, capacity=6)
    h, c = s.state
    assert h.shape == (1, 2, 16) and c.shape == (1, 2, 16) and not h.any() and not c.any()
    first = np.array(s.feed(x))
    again = np.array(s.feed(x))
    assert not np.array_equal(first, again)  # the state carried over
    s.reset()
    assert np.array_equal(np.array(s.feed(x)), first)
    h0 = random_state(layer, 2, rng)
    s.state = h0
    y_ref, (hn, cn) = layer.forward(x, h0)
    assert np.array_equal(np.array(s.feed(x)), y_ref)
    assert np.array_equal(s.state[0], hn) and np.array_equal(s.state[1], cn)


def test_load_weights_after_a_change():
    layer = make("gru", H=16)
    x = np.random.default_rng(6).standard_normal((4, 1, 5)).astype(np.float32)
    s = layer.stream(capacity=4)
    before = np.array(s.feed(x))
    w_hh = layer.layer_parameters(0)[1]
    w_hh.data *= 0.5
    s.reset()
    assert np.array_equal(np.array(s.feed(x)), before)  # packed once: the change is not seen yet
    s.load_weights()
    s.reset()
    y_ref, _ = layer.forward(x)
    assert np.array_equal(np.array(s.feed(x)), y_ref)
    assert not np.array_equal(y_ref, before)


def test_no_allocation_per_call_after_warm_up():
    layer = make("lstm", H=64, layers=2, threads=2)
    rng = np.random.default_rng(7)
    s = layer.stream(batch_size=1, capacity=8)
    xs = [rng.standard_normal((n, 1, 5)).astype(np.float32) for n in (1, 8, 3, 1)]
    for x in xs:
        s.feed(x)
    assert s.allocations == 0  # buffers are sized when the stream is made
    s.reserve(16)  # allocates now, not in feed
    s.feed(rng.standard_normal((16, 1, 5)).astype(np.float32))
    assert s.allocations == 0
    x1 = rng.standard_normal((1, 5)).astype(np.float32)
    y = s.step(x1)
    assert s.step(x1) is y  # the same view of the stream's buffer, no new array per step
    tracemalloc.start()
    try:
        for _ in range(50):
            s.step(x1)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            s.step(x1)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 2048, grown  # Python memory flat over 1000 steps
    assert s.allocations == 0


def test_feed_returns_its_buffer_or_out():
    layer = make("rnn_tanh", H=8)
    s = layer.stream(batch_size=2, capacity=4)
    x = np.ones((3, 2, 5), np.float32)
    y1 = s.feed(x)
    assert s.feed(x) is y1 and y1.shape == (3, 2, 8)
    out = np.empty((3, 2, 8), np.float32)
    s.reset()
    y_ref, _ = layer.forward(x)
    assert s.feed(x, out=out) is out and np.array_equal(out, y_ref)


def test_bad_input_is_reported_by_name():
    layer = make("lstm", H=8)
    s = layer.stream(batch_size=2, capacity=3)
    good = np.zeros((2, 2, 5), np.float32)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 2, 5\)"):
        s.feed(np.zeros((2, 3, 5), np.float32))  # batch size
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 2, 5\)"):
        s.feed(np.zeros((2, 2, 4), np.float32))  # features
    with pytest.raises(TypeError, match="x must have dtype float32"):
        s.feed(good.astype(np.float64))
    with pytest.raises(TypeError, match="x must be a numpy array"):
        s.feed(good.tolist())
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        s.feed(np.zeros((2, 5, 2), np.float32).transpose(0, 2, 1))
    with pytest.raises(ValueError, match="capacity = 3"):
        s.feed(np.zeros((4, 2, 5), np.float32))
    with pytest.raises(ValueError, match="x must have 1 to capacity"):
        s.feed(np.zeros((0, 2, 5), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        s.feed(good, out=np.zeros((2, 2, 7), np.float32))
    with pytest.raises(ValueError, match="out must not overlap x"):
        buf = np.zeros(64, np.float32)
        s2 = make("rnn_tanh", I=8, H=8).stream(batch_size=2, capacity=2)
        s2.feed(buf[:32].reshape(2, 2, 8), out=buf[16:48].reshape(2, 2, 8))
    with pytest.raises(ValueError, match=r"Stream.state: h must have shape \(1, 2, 8\)"):
        s.state = (np.zeros((1, 3, 8), np.float32), np.zeros((1, 2, 8), np.float32))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        s.state = np.zeros((1, 2, 8), np.float32)
    with pytest.raises(ValueError, match=r"Stream.step: x must have shape \(B, I\)"):
        s.step(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="bidirectional"):
        make("gru", H=8, bidirectional=True).stream()
    with pytest.raises(TypeError, match="layer must be"):
        nn.Stream(object())
    with pytest.raises(ValueError, match="batch_size"):
        layer.stream(batch_size=0)
    with pytest.raises(ValueError, match="capacity"):
        layer.stream(capacity=0)
    with pytest.raises(ValueError, match="capacity"):
        s.reserve(0)
    # a refused call leaves the stream usable
    y_ref, _ = layer.forward(good)
    s.reset()
    assert np.array_equal(np.array(s.feed(good)), y_ref)


def test_core_stream_checks_weights():
    w = np.zeros((4 * 8, 5), np.float32)
    with pytest.raises(ValueError, match=r"weights\[0\]\.w_hh must have shape \(32, 8\)"):
        _core.RecurrentStream("lstm", [(w, np.zeros((30, 8), np.float32), None, None, None)], 1, 1, 1)
    with pytest.raises(ValueError, match=r"weights\[0\]\.w_ih must have shape \(32, \*\)"):
        _core.RecurrentStream("lstm", [(w[:28], np.zeros((32, 8), np.float32), None, None, None)], 1, 1, 1)
    with pytest.raises(TypeError, match=r"weights\[0\]\.w_ih"):
        _core.RecurrentStream("lstm", [(w.astype(np.int32), np.zeros((32, 8), np.float32), None, None, None)], 1, 1, 1)
    with pytest.raises(ValueError, match="cell"):
        _core.RecurrentStream("lstmx", [(w, np.zeros((32, 8), np.float32), None, None, None)], 1, 1, 1)
    s = _core.RecurrentStream("lstm", [(w, np.zeros((32, 8), np.float32), None, None, None)], 1, 1, 1)
    with pytest.raises(ValueError, match="weights must hold at least one layer"):
        s.load_weights([])
    with pytest.raises(ValueError, match="weights must hold 1 layers, got 2"):
        s.load_weights([(w, np.zeros((32, 8), np.float32), None, None, None)] * 2)
    assert s.cell == "lstm" and s.dtype == "float32" and s.num_layers == 1 and s.batch_size == 1


def test_stream_is_exported():
    assert rnncore.nn.Stream is nn.Stream
    assert "Stream" in nn.__all__


# -- bf16 streams (issue 16): a layer with precision="bf16" streams in bf16 ---------------------------

@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layers,threads", [(1, 1), (2, 2)])
@pytest.mark.parametrize("B", [1, 4, 9])
def test_bf16_stream_equals_bf16_forward_bit_for_bit(cell, layers, threads, B):
    """Any chunking equals the bf16 layer's whole-sequence forward bit for bit (batch 1, a few rows and
    more than one 8-row panel: the small-batch and the tile kernels), and the result is really bf16."""
    T = 29
    layer = make(cell, layers=layers, threads=threads, precision="bf16")
    rng = np.random.default_rng(B)
    x = rng.standard_normal((T, B, 5)).astype(np.float32)
    h0 = random_state(layer, B, rng)
    y_ref, hn_ref = layer.forward(x, h0)
    layer.set_precision("fp32")
    y_fp32, _ = layer.forward(x, h0)
    layer.set_precision("bf16")
    assert np.abs(y_ref - y_fp32).max() > 1e-4  # the bf16 path, not float32's
    for name, sizes in CHUNKINGS.items():
        s = layer.stream(batch_size=B, capacity=max(sizes))
        assert s.precision == "bf16" and "precision='bf16'" in repr(s)
        s.state = h0
        y = np.concatenate([np.array(s.feed(c)) for c in chunks_of(x, sizes)])
        assert np.array_equal(y, y_ref), (name, np.abs(y - y_ref).max())
        assert_state_equal(s.state, hn_ref, cell)
        assert s.allocations == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_stream_with_projections(threads):
    layer = make("lstm", I=7, H=40, layers=2, proj_size=9, threads=threads, precision="bf16")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((13, 3, 7)).astype(np.float32)
    y_ref, _ = layer.forward(x)
    s = layer.stream(batch_size=3)
    y = np.stack([np.array(s.step(np.ascontiguousarray(x[t]))) for t in range(13)])
    assert np.array_equal(y, y_ref)
    # load_weights after a change keeps bf16
    for p in layer.parameters():
        p.data *= 0.5
    s.load_weights()
    s.reset()
    y2 = np.stack([np.array(s.step(np.ascontiguousarray(x[t]))) for t in range(13)])
    assert np.array_equal(y2, layer.forward(x)[0])


def test_bf16_stream_refuses_float64():
    with pytest.raises(TypeError, match="bf16=True needs float32"):
        _core.RecurrentStream("gru", [(np.ones((6, 3)), np.ones((6, 2)), None, None, None)], 1, 1, 1, bf16=True)
    assert _core.RecurrentStream("gru", [(np.ones((6, 3), np.float32), np.ones((6, 2), np.float32), None, None,
                                          None)], 1, 1, 1, bf16=True).bf16
