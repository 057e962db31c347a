"""Rules of workflow/rules/data.smk: corpus -> tokenizer -> token arrays."""

from __future__ import annotations

from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.corpus import CorpusConfig, build_corpus
from lmfeatures.lm.tokenizer import TokenizerConfig, train_tokenizer
from lmfeatures.lm.tokens import tokenize_texts, unigram_baseline
from lmfeatures.store.data import (
    load_corpus,
    load_tokenizer,
    save_corpus,
    save_split,
    save_tokenizer,
    write_token_stats,
)


def corpus(*, out_dir: str, corpus: dict, config: dict, seed: int) -> None:
    dd, info = build_corpus(CorpusConfig(**corpus))
    with atomic_path(out_dir, directory=True) as tmp:
        save_corpus(tmp, dd)
        write_provenance(tmp, config, seed, corpus=info)


def tokenizer(*, corpus_dir: str, out_dir: str, tokenizer: dict, config: dict, seed: int) -> None:
    tok = train_tokenizer(load_corpus(corpus_dir)["train"], TokenizerConfig(**tokenizer))
    with atomic_path(out_dir, directory=True) as tmp:
        save_tokenizer(tmp, tok)
        write_provenance(tmp, config, seed, vocab_size=len(tok))


def tokens(*, corpus_dir: str, tokenizer_dir: str, out_dir: str, config: dict, seed: int) -> None:
    texts = load_corpus(corpus_dir)
    tok = load_tokenizer(tokenizer_dir)
    splits = {name: tokenize_texts(tok, texts[name]["text"]) for name in ("train", "heldout")}
    stats = unigram_baseline(splits["train"], splits["heldout"], len(tok))
    stats["tokens"] = {name: len(s.tokens) for name, s in splits.items()}
    with atomic_path(out_dir, directory=True) as tmp:
        for name, split in splits.items():
            save_split(split, tmp / f"{name}.safetensors")
        write_token_stats(tmp, stats)
        write_provenance(tmp, config, seed, **stats)
