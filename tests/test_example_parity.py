"""examples/parity.py --quick: the lecture's qualitative result, and the hand-set parity RNN."""
import importlib.util
import os

import numpy as np
import pytest

from rnncore import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def load_example():
    spec = importlib.util.spec_from_file_location("parity_example", os.path.join(HERE, "..", "examples", "parity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parity = load_example()


def test_handset_weights_are_exact():
    checked, errors = parity.check_handset(max_bits=10, T=50, n_random=200)
    assert checked == 2 ** 11 - 2 + 200 and errors == 0


def test_handset_rnn_step_by_step():
    rnn = parity.handset_parity_rnn()
    bits = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], np.float32)
    out, h_n = rnn.forward(bits[:, None])  # unbatched (T, I)
    assert np.array_equal(out @ parity.READOUT, np.cumsum(bits) % 2)
    assert np.array_equal(h_n[0] @ parity.READOUT, bits.sum() % 2)


def test_quick_parity_lstm_beats_vanilla_rnn():
    args = parity.parse_args(["--quick", "--task", "parity"])
    assert args.steps <= 1000 and args.figure == ""
    lines = []
    results = parity.run(args, log=lines.append)
    acc = results["accuracy"]
    lstm, gru, rnn = acc[("parity", "LSTM")], acc[("parity", "GRU")], acc[("parity", "RNN (tanh)")]
    assert lstm >= 0.95 and gru >= 0.95, lines
    assert rnn < 0.65, lines  # near chance (0.5)
    assert lstm > rnn + 0.3
    assert results["handset"][1] == 0
    assert results["exploding"][0] > 1e3  # the chaotic tanh RNN's gradient grows back in time
    assert any("hand-set parity RNN" in line for line in lines)


def test_tasks_labels():
    bits = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 0]])  # (T=4, B=3)
    lengths = np.array([4, 4, 1])
    assert list(parity.labels_of("parity", bits, lengths)) == [1, 0, 1]
    assert list(parity.labels_of("sum", bits, lengths)) == [3, 2, 1]
    # first half [0, len // 2) against the rest; ties are "no"; a 1-bit string has an empty first half
    assert list(parity.labels_of("compare", bits, lengths)) == [1, 0, 0]
    x, y, lens = parity.make_batch(np.random.default_rng(0), "sum", 8, 6, ragged=True)
    assert x.shape == (6, 8, 1) and lens.min() >= 1 and np.all(y <= lens)


def test_bad_input():
    with pytest.raises(SystemExit):
        parity.parse_args(["--length", "0"])
    model = nn.SequenceClassifier(input_size=1, hidden_size=4, num_classes=2, seed=0)
    x = np.zeros((5, 3, 1), np.float32)
    with pytest.raises(ValueError, match=r"out of range \[0, 2\)"):
        model.loss(x, np.array([0, 2, 1]))
    with pytest.raises(ValueError, match=r"out of range \[0, 2\)"):
        model.loss(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="lengths"):
        model.loss(x, np.array([0, 1, 1]), lengths=[6, 1, 1])
