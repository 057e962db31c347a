"""Byte-level BPE tokenizer trained on the corpus' train split, saved as a transformers fast tokenizer.

Byte-level means every string round-trips, which EPO's retokenization check relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    min_frequency: int = 2


def train_tokenizer(train: datasets.Dataset, cfg: TokenizerConfig) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the `text` column; deterministic for a fixed corpus."""
    if cfg.vocab_size < 257 + 1:
        raise ValueError(f"tokenizer.vocab_size={cfg.vocab_size} is too small: byte-level BPE needs at least 258")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in train["text"]), trainer=trainer, length=len(train))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=None, pad_token=EOS_TOKEN
    )
