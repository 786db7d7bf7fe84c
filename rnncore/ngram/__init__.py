"""n-gram language models: interpolated Kneser–Ney (modified or plain), ARPA files.

    from rnncore.ngram import KneserNeyLM
    lm = KneserNeyLM(order=5).fit(train_text)        # one sentence per line
    lm.evaluate(test_text)                            # log10prob, tokens, oov, perplexity
    lm.save_arpa("kn5.arpa")                          # KenLM's query reads it, same scores

``python -m rnncore.ngram ptb --order 5`` fits and evaluates on Penn Treebank.
"""
try:
    from . import _kn  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "rnncore.ngram._kn (the Cython n-gram loops) is not built; build it with\n"
        "  python setup.py build_ext --inplace   (or pip install -e .)"
    ) from exc

from .corpus import BOS, EOS, UNK
from .kneser_ney import KENLM_FALLBACK, Evaluation, KneserNeyLM, load_arpa

__all__ = ["KneserNeyLM", "Evaluation", "load_arpa", "KENLM_FALLBACK", "UNK", "BOS", "EOS"]
