"""results/data/: the corpus (a datasets.DatasetDict saved to disk), the tokenizer (save_pretrained)
and the token arrays (one safetensors file per split with `tokens` and `doc_offsets`, and
`stats.json` with the unigram baseline)."""

from __future__ import annotations

from pathlib import Path

import datasets
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerFast

from lmfeatures.io import read_json, read_safetensors, write_json
from lmfeatures.lm.tokens import TokenizedSplit


def save_corpus(folder: str | Path, corpus: datasets.DatasetDict) -> None:
    corpus.save_to_disk(str(folder))


def load_corpus(path: str | Path) -> datasets.DatasetDict:
    return datasets.load_from_disk(str(path))


def save_tokenizer(folder: str | Path, tokenizer: PreTrainedTokenizerFast) -> None:
    tokenizer.save_pretrained(str(folder))


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def save_split(split: TokenizedSplit, path: str | Path) -> None:
    """The format load_split reads: safetensors with `tokens` and `doc_offsets`."""
    save_file({"tokens": split.tokens.contiguous(), "doc_offsets": split.doc_offsets.contiguous()}, str(path))


def load_split(path: str | Path) -> TokenizedSplit:
    t = read_safetensors(path)
    return TokenizedSplit(tokens=t["tokens"], doc_offsets=t["doc_offsets"])


def write_token_stats(folder: str | Path, stats: dict) -> None:
    write_json(Path(folder) / "stats.json", stats)


def read_token_stats(folder: str | Path) -> dict:
    return read_json(Path(folder) / "stats.json")
