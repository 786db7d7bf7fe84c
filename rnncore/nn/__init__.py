"""rnncore.nn: layers and models, each an explicit forward/backward pair."""
from . import init
from .adaptive import AdaptiveLogSoftmaxWithLoss
from .attention import Attention
from .bilm import BiLM, ELMoClassifier, ScalarMix
from .input_feed import InputFeedRNN
from .cell import GRUCell, LSTMCell, RNNCell, RNNCellBase
from .layers import Dropout, Embedding, LayerNorm, Linear
from .loss import CrossEntropyLoss, cross_entropy
from .loss import MSELoss, mse_loss
from .models import SequenceRegressor
from .output_recurrent import OutputRecurrentRNN
from .models import ConditionedGenerator, LanguageModel, SequenceClassifier, SequenceTagger
from .module import Module, Parameter
from .rnn import GRU, LSTM, RNN, RNNBase
from .seq2seq import Bridge, Decoder, Encoder, Seq2Seq
from .stream import Stream
from .window import FixedWindowLM
from .quantized import QuantizedLanguageModel, quantize

__all__ = ["Module", "Parameter", "init", "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell",
           "GRUCell", "Embedding",
           "Linear", "Dropout", "LayerNorm", "cross_entropy", "CrossEntropyLoss", "LanguageModel",
           "SequenceClassifier", "SequenceTagger", "ConditionedGenerator", "FixedWindowLM",
           "AdaptiveLogSoftmaxWithLoss", "Attention", "InputFeedRNN", "Seq2Seq", "Encoder", "Decoder", "Bridge"]
__all__ += ["mse_loss", "MSELoss", "SequenceRegressor", "OutputRecurrentRNN"]  # issue 14: forecasting (regression)
__all__ += ["BiLM", "ScalarMix", "ELMoClassifier"]  # issue 14: the ELMo-style biLM
__all__ += ["Stream"]  # issue 15: streaming inference
__all__ += ["QuantizedLanguageModel", "quantize"]  # issue 16: int8 inference
