"""One rule for scalar arguments across the Python API (rnncore/_checks.py): a value of the
wrong kind (2.5 or True for an int, a string for a number) is a TypeError naming the argument;
a value of the right kind out of range is a ValueError naming it. And cell names in any case."""
import numpy as np
import pytest

import rnncore
from rnncore import nn, optim, sampling
from rnncore.data import CharTokenizer, StreamBatcher, Vocabulary
from rnncore.trainer import Trainer

IDS = np.arange(200) % 7


def _lm(**kw):
    return nn.LanguageModel(7, 4, 5, seed=0, **kw)


def _opt():
    return optim.SGD(_lm().parameters(), lr=0.1)


# entry point -> a call taking the value under test for one integer argument
INT_ENTRY_POINTS = {
    "LSTM hidden_size": (lambda v: nn.LSTM(3, v), "hidden_size"),
    "GRUCell input_size": (lambda v: nn.GRUCell(v, 4), "input_size"),
    "Linear out_features": (lambda v: nn.Linear(3, v), "out_features"),
    "LanguageModel num_layers": (lambda v: _lm(num_layers=v), "num_layers"),
    "StreamBatcher batch_size": (lambda v: StreamBatcher(IDS, v, 5), "batch_size"),
    "CharTokenizer min_count": (lambda v: CharTokenizer(min_count=v), "min_count"),
    "Vocabulary max_size": (lambda v: Vocabulary.from_counts({"a": 2}, max_size=v), "max_size"),
    "Trainer seq_len": (lambda v: Trainer(_lm(), _opt(), seq_len=v), "seq_len"),
    "StepLR step_size": (lambda v: optim.StepLR(_opt(), step_size=v), "step_size"),
    "generate max_new_tokens": (lambda v: sampling.generate(_lm(), np.array([1]), v), "max_new_tokens"),
    "beam_search beam_width": (lambda v: sampling.beam_search(_lm(), np.array([1]), v, 3), "beam_width"),
}


@pytest.mark.parametrize("entry", sorted(INT_ENTRY_POINTS))
@pytest.mark.parametrize("bad", [2.5, 2.0, True, "3", np.float64(3.0)], ids=repr)
def test_a_non_integer_is_a_type_error_naming_the_argument(entry, bad):
    call, name = INT_ENTRY_POINTS[entry]
    with pytest.raises(TypeError, match=rf"\b{name} must be an int\b.*got {type(bad).__name__}"):
        call(bad)


@pytest.mark.parametrize("entry", sorted(INT_ENTRY_POINTS))
def test_an_integer_out_of_range_is_a_value_error_naming_it(entry):
    call, name = INT_ENTRY_POINTS[entry]
    with pytest.raises(ValueError, match=rf"\b{name} must be (positive|>= -?\d+|in \[.*\]), got -1\b"):
        call(-1)


@pytest.mark.parametrize("entry", sorted(INT_ENTRY_POINTS))
def test_numpy_integers_are_integers(entry):
    call, _ = INT_ENTRY_POINTS[entry]
    call(np.int64(3))  # no exception


PROBABILITY_ENTRY_POINTS = {
    "RNN dropout": lambda p: nn.RNN(3, 4, num_layers=2, dropout=p),
    "LanguageModel dropout": lambda p: _lm(dropout=p),
    "SequenceClassifier dropout": lambda p: nn.SequenceClassifier(input_size=3, hidden_size=4, num_classes=2,
                                                                  dropout=p),
}


@pytest.mark.parametrize("entry", sorted(PROBABILITY_ENTRY_POINTS))
def test_probabilities(entry):
    call = PROBABILITY_ENTRY_POINTS[entry]
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"\bdropout must be a number in \[0, 1\), got"):
            call(bad)
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match=r"\bdropout must be a number in \[0, 1\), got"):
            call(bad)
    call(np.float32(0.25))
    call(0)


def test_dropout_layer_allows_one():
    assert nn.Dropout(1).p == 1.0
    with pytest.raises(ValueError, match=r"\bp must be a number in \[0, 1\], got 1.01"):
        nn.Dropout(1.01)
    with pytest.raises(TypeError, match=r"\bp must be a number in \[0, 1\], got str"):
        nn.Dropout("half")


def test_real_numbers():
    with pytest.raises(TypeError, match=r"Trainer: clip_grad_norm must be a number > 0, got str"):
        Trainer(_lm(), _opt(), clip_grad_norm="5")
    with pytest.raises(ValueError, match=r"Trainer: clip_grad_norm must be a number > 0, got 0"):
        Trainer(_lm(), _opt(), clip_grad_norm=0)
    with pytest.raises(ValueError, match=r"LayerNorm: eps must be a number >= 0, got -1"):
        nn.LayerNorm(3, eps=-1)
    with pytest.raises(ValueError, match=r"ZarembaLR: factor must be a number in \(0, 1\], got 2"):
        optim.ZarembaLR(_opt(), 1, factor=2)


# -- cell names, as PyTorch and Keras users type them ------------------------------------------

@pytest.mark.parametrize("typed, canonical", [("LSTM", "lstm"), ("Gru", "gru"), ("RNN_TANH", "rnn_tanh"),
                                              ("Rnn_Relu", "rnn_relu"), ("RNN", "rnn")])
def test_model_cell_names_are_case_insensitive(typed, canonical):
    model = nn.LanguageModel(7, 4, 5, cell=typed, seed=0)
    assert model.cell == canonical and model.config()["cell"] == canonical
    reference = nn.LanguageModel(7, 4, 5, cell=canonical, seed=0)
    assert type(model.rnn) is type(reference.rnn) and model.rnn.cell == reference.rnn.cell
    for (n1, a), (n2, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert n1 == n2
        np.testing.assert_array_equal(a, b)
    tagger = nn.SequenceTagger(input_size=3, hidden_size=4, num_classes=2, cell=typed)
    assert tagger.cell == canonical
    logits, _ = model.forward(np.array([[1, 2], [3, 4]]))  # _core received a name it knows
    assert logits.shape == (2, 2, 7)


@pytest.mark.parametrize("typed, canonical", [("LSTM", "lstm"), ("gRu", "gru"), ("RNN_TANH", "rnn_tanh"),
                                              ("RNN_RELU", "rnn_relu")])
def test_rnnbase_and_rnncellbase_take_pytorch_mode_names(typed, canonical):
    layer = nn.RNNBase(typed, 3, 4, seed=0)
    assert layer.cell == canonical
    out, _ = layer.forward(np.zeros((2, 1, 3), np.float32))
    assert out.shape == (2, 1, 4)
    cell = nn.RNNCellBase(typed, 3, 4, seed=0)
    assert cell.cell == canonical
    h = cell.forward(np.zeros((2, 3), np.float32))
    assert (h[0] if canonical == "lstm" else h).shape == (2, 4)
    rebuilt = type(layer)(**layer.config())
    assert rebuilt.cell == canonical and type(cell)(**cell.config()).cell == canonical


def test_unknown_cell_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"LanguageModel: cell must be one of 'lstm', 'gru', 'rnn', 'rnn_tanh', "
                                         r"'rnn_relu' \(in any case\), got 'Transformer'"):
        nn.LanguageModel(7, 4, 5, cell="Transformer")
    with pytest.raises(ValueError, match=r"cell must be one of .*got None"):
        nn.SequenceClassifier(input_size=3, hidden_size=4, num_classes=2, cell=None)
    with pytest.raises(ValueError, match=r"RNNBase: cell must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu'"):
        nn.RNNBase("rnn", 3, 4)


def test_checkpoint_of_an_upper_case_model_loads_into_a_lower_case_one(tmp_path):
    model = nn.LanguageModel(7, 4, 5, cell="GRU", seed=1)
    rnncore.save(tmp_path / "m.safetensors", model)
    rnncore.load(tmp_path / "m.safetensors", nn.LanguageModel(7, 4, 5, cell="gru", seed=2))
    assert rnncore.load(tmp_path / "m.safetensors").build().cell == "gru"
