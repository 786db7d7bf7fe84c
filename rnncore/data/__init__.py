"""rnncore.data: tokenizers, vocabularies, batching and reading text.

- :class:`Vocabulary`, :class:`CharTokenizer`, :class:`WordTokenizer` (text <-> int64 ids,
  the long loops in Cython), :func:`tokenizer_from_dict` to rebuild one from a checkpoint.
- :class:`StreamBatcher` / :func:`lm_batches`: a token stream as B parallel streams in
  truncated-BPTT windows (T, B), resumable.
- :func:`pad_sequences`, :class:`BucketIterator`: padded (T, B) batches with lengths.
- :func:`read_text`: a UTF-8 file or folder, with clear errors.
- Sequence pairs (seq2seq): :func:`pair_tokenizer` (words, ``<pad> <unk> <s> </s>`` = 0..3),
  :class:`PairDataset` (pairs as ids), :class:`PairBatcher` (length-sorted pools, resumable)
  yielding :class:`PairBatch` (src, src_lengths, tgt_in, tgt_out, tgt_lengths).
"""
from .batching import BucketIterator, StreamBatcher, lm_batches, pad_sequences
from .pairs import PairBatch, PairBatcher, PairDataset, pair_tokenizer
from .text import read_text
from .tokenizers import CharTokenizer, WordTokenizer, tokenizer_from_dict
from .vocab import Vocabulary

__all__ = [
    "Vocabulary",
    "CharTokenizer",
    "WordTokenizer",
    "tokenizer_from_dict",
    "StreamBatcher",
    "lm_batches",
    "pad_sequences",
    "BucketIterator",
    "read_text",
    "PairBatch",
    "PairDataset",
    "PairBatcher",
    "pair_tokenizer",
]
