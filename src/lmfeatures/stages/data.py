"""Rules of workflow/rules/data.smk: corpus -> tokenizer -> token arrays."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from ..corpus import CorpusConfig, build_corpus, load_corpus
from ..io import atomic_path, write_json, write_provenance
from ..tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from ..tokens import TokenizedSplit, tokenize_texts, unigram_baseline


def corpus(*, out_dir: str, corpus: dict, config: dict, seed: int) -> None:
    dd, info = build_corpus(CorpusConfig(**corpus))
    with atomic_path(out_dir, directory=True) as tmp:
        dd.save_to_disk(str(tmp))
        write_provenance(tmp, config, seed, corpus=info)


def tokenizer(*, corpus_dir: str, out_dir: str, tokenizer: dict, config: dict, seed: int) -> None:
    tok = train_tokenizer(load_corpus(corpus_dir)["train"], TokenizerConfig(**tokenizer))
    with atomic_path(out_dir, directory=True) as tmp:
        tok.save_pretrained(str(tmp))
        write_provenance(tmp, config, seed, vocab_size=len(tok))


def save_split(split: TokenizedSplit, path: str | Path) -> None:
    """The format TokenizedSplit.load reads: safetensors with `tokens` and `doc_offsets`."""
    save_file({"tokens": split.tokens.contiguous(), "doc_offsets": split.doc_offsets.contiguous()}, str(path))


def tokens(*, corpus_dir: str, tokenizer_dir: str, out_dir: str, config: dict, seed: int) -> None:
    texts = load_corpus(corpus_dir)
    tok = load_tokenizer(tokenizer_dir)
    splits = {name: tokenize_texts(tok, texts[name]["text"]) for name in ("train", "heldout")}
    stats = unigram_baseline(splits["train"], splits["heldout"], len(tok))
    stats["tokens"] = {name: len(s.tokens) for name, s in splits.items()}
    with atomic_path(out_dir, directory=True) as tmp:
        for name, split in splits.items():
            save_split(split, tmp / f"{name}.safetensors")
        write_json(tmp / "stats.json", stats)
        write_provenance(tmp, config, seed, **stats)
