"""Stage entry points for data and models: read inputs, call the algorithms, write outputs atomically.

Each function is what one Snakemake rule runs (via a thin script in workflow/scripts/), and is
callable directly from Python for tests.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from .corpus import CorpusConfig, build_corpus, load_corpus
from .io import atomic_path, read_json, write_json, write_provenance
from .models import describe, family_config, init_model, load_hub_model, resolve_device
from .tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from .tokens import TokenizedSplit, tokenize_texts, unigram_baseline
from .train import TrainConfig, heldout_loss, train

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _train_config(training: dict, seed: int) -> TrainConfig:
    fields = {k: v for k, v in training.items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**fields, seed=seed)


def corpus_stage(out_dir: str, corpus: dict, config: dict, seed: int) -> None:
    dd, info = build_corpus(CorpusConfig(**corpus))
    with atomic_path(out_dir, directory=True) as tmp:
        dd.save_to_disk(str(tmp))
        write_provenance(tmp, config, seed, corpus=info)


def tokenizer_stage(corpus_dir: str, out_dir: str, tokenizer: dict, config: dict, seed: int) -> None:
    tok = train_tokenizer(load_corpus(corpus_dir)["train"], TokenizerConfig(**tokenizer))
    with atomic_path(out_dir, directory=True) as tmp:
        tok.save_pretrained(str(tmp))
        write_provenance(tmp, config, seed, vocab_size=len(tok))


def tokens_stage(corpus_dir: str, tokenizer_dir: str, out_dir: str, config: dict, seed: int) -> None:
    corpus = load_corpus(corpus_dir)
    tok = load_tokenizer(tokenizer_dir)
    splits = {name: tokenize_texts(tok, corpus[name]["text"]) for name in ("train", "heldout")}
    stats = unigram_baseline(splits["train"], splits["heldout"], len(tok))
    stats["tokens"] = {name: len(s.tokens) for name, s in splits.items()}
    with atomic_path(out_dir, directory=True) as tmp:
        for name, split in splits.items():
            split.save(tmp / f"{name}.safetensors")
        write_json(tmp / "stats.json", stats)
        write_provenance(tmp, config, seed, **stats)


def _finish_model(tmp: Path, model, tokenizer, record: dict, config: dict, seed: int) -> None:
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    write_json(tmp / "eval.json", record)
    write_provenance(tmp, config, seed, model=record)


def trained_model_stage(tokenizer_dir: str, tokens_dir: str, out_dir: str, entry: dict, training: dict,
                        config: dict, seed: int, device: str, threads: int) -> None:  # fmt: skip
    """Initialise with `seed`, train on the shared window order, save with training curve and held-out loss."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # bitwise on CPU; CUDA may warn
    dev = resolve_device(device)
    tok = load_tokenizer(tokenizer_dir)
    cfg = _train_config(training, seed)
    tokens = Path(tokens_dir)
    model = init_model(family_config(entry, len(tok), cfg.context_length, tok.eos_token_id), seed).to(dev)
    history = train(model, TokenizedSplit.load(tokens / "train.safetensors"), tok.eos_token_id, cfg, desc=entry["name"])
    record = {
        "name": entry["name"], "source": entry["source"], **describe(model),
        "training_tokens": cfg.steps * cfg.batch_size * cfg.context_length,
        "training_seconds": history[-1]["seconds"],
        **heldout_loss(model, TokenizedSplit.load(tokens / "heldout.safetensors"), tok.eos_token_id, cfg),
        **read_json(tokens / "stats.json"),
    }  # fmt: skip
    with atomic_path(out_dir, directory=True) as tmp:
        _finish_model(tmp, model.cpu(), tok, record, config, seed)
        with open(tmp / "training_log.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def untrained_twin_stage(tokenizer_dir: str, tokens_dir: str, out_dir: str, entry: dict, twin: dict,
                         training: dict, config: dict, seed: int, device: str, threads: int) -> None:  # fmt: skip
    """The trained model's exact starting point: same config, same seed, no training."""
    torch.set_num_threads(threads)
    tok = load_tokenizer(tokenizer_dir)
    cfg = _train_config(training, seed)
    model = init_model(family_config(twin, len(tok), cfg.context_length, tok.eos_token_id), seed)
    model = model.to(resolve_device(device))
    tokens = Path(tokens_dir)
    record = {
        "name": entry["name"], "source": entry["source"], "twin_of": twin["name"], **describe(model),
        "training_tokens": 0,
        **heldout_loss(model, TokenizedSplit.load(tokens / "heldout.safetensors"), tok.eos_token_id, cfg),
        **read_json(tokens / "stats.json"),
    }  # fmt: skip
    with atomic_path(out_dir, directory=True) as tmp:
        _finish_model(tmp, model.cpu(), tok, record, config, seed)


def hub_model_stage(corpus_dir: str, out_dir: str, entry: dict, training: dict, config: dict, seed: int,
                    device: str, threads: int) -> None:  # fmt: skip
    """Copy a hub / local model into results/models/{name}; score it on the held-out split with its own tokenizer."""
    torch.set_num_threads(threads)
    model, tok = load_hub_model(entry["name"], entry["source"], DTYPES[entry.get("dtype", "float32")])
    model = model.to(resolve_device(device))
    cfg = _train_config(training, seed)
    heldout = tokenize_texts(tok, load_corpus(corpus_dir)["heldout"]["text"])
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    record = {
        "name": entry["name"], "source": entry["source"], **describe(model), "training_tokens": None,
        **heldout_loss(model, heldout, eos, cfg),
        "note": "held-out loss uses this model's own tokenizer, so it is not comparable per token with the family",
    }  # fmt: skip
    with atomic_path(out_dir, directory=True) as tmp:
        _finish_model(tmp, model.cpu(), tok, record, config, seed)
