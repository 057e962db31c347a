"""Rules of workflow/rules/models.smk: every configured model ends up under results/models/{model}."""

from __future__ import annotations

from pathlib import Path

import torch

from lmfeatures.io import atomic_path, write_provenance
from lmfeatures.lm.architectures import ArchitectureError
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.lm.models import describe, family_config, init_model, load_hub_model, resolve_device
from lmfeatures.lm.tokens import tokenize_texts
from lmfeatures.lm.train import TrainConfig, heldout_loss, train
from lmfeatures.store.data import load_corpus, load_split, load_tokenizer, read_token_stats
from lmfeatures.store.models import save_model, write_training_log

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _train_config(training: dict, seed: int) -> TrainConfig:
    fields = {k: v for k, v in training.items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**fields, seed=seed)


def _finish_model(tmp: Path, model, tokenizer, record: dict, config: dict, seed: int) -> None:
    save_model(tmp, model, tokenizer, record)
    write_provenance(tmp, config, seed, model=record)


def train_model(
    *,
    tokenizer_dir: str,
    tokens_dir: str,
    out_dir: str,
    entry: dict,
    training: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """Initialise with `seed`, train on the shared window order, save with training curve and held-out loss."""
    torch.use_deterministic_algorithms(True, warn_only=True)  # bitwise on CPU; CUDA may warn
    tok = load_tokenizer(tokenizer_dir)
    cfg = _train_config(training, seed)
    tokens = Path(tokens_dir)
    model_config = family_config(entry, len(tok), cfg.context_length, tok.eos_token_id)
    model = init_model(model_config, seed).to(resolve_device(device))
    history = train(model, load_split(tokens / "train.safetensors"), tok.eos_token_id, cfg, desc=entry["name"])
    record = {
        "name": entry["name"],
        "source": entry["source"],
        **describe(model),
        "training_tokens": cfg.steps * cfg.batch_size * cfg.context_length,
        "training_seconds": history[-1]["seconds"] if history else 0.0,  # training.steps 0: none
        **heldout_loss(model, load_split(tokens / "heldout.safetensors"), tok.eos_token_id, cfg),
        **read_token_stats(tokens),
    }
    with atomic_path(out_dir, directory=True) as tmp:
        _finish_model(tmp, model.cpu(), tok, record, config, seed)
        if history:
            write_training_log(tmp, history)


def untrained_twin(
    *,
    tokenizer_dir: str,
    tokens_dir: str,
    out_dir: str,
    entry: dict,
    twin: dict,
    training: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """The trained model's exact starting point: same config, same seed, no training."""
    tok = load_tokenizer(tokenizer_dir)
    cfg = _train_config(training, seed)
    model = init_model(family_config(twin, len(tok), cfg.context_length, tok.eos_token_id), seed)
    model = model.to(resolve_device(device))
    tokens = Path(tokens_dir)
    record = {
        "name": entry["name"],
        "source": entry["source"],
        "twin_of": twin["name"],
        **describe(model),
        "training_tokens": 0,
        **heldout_loss(model, load_split(tokens / "heldout.safetensors"), tok.eos_token_id, cfg),
        **read_token_stats(tokens),
    }
    with atomic_path(out_dir, directory=True) as tmp:
        _finish_model(tmp, model.cpu(), tok, record, config, seed)


def hub_model(
    *,
    corpus_dir: str,
    out_dir: str,
    entry: dict,
    entry_key: str,
    training: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """Copy a hub / local model into results/models/{name}; score it on the held-out split with its
    own tokenizer. Its hook points are checked first (entry_key: its config key, e.g. "models[3]")."""
    model, tok = load_hub_model(entry["name"], entry["source"], DTYPES[entry.get("dtype", "float32")])
    if entry.get("module_paths"):  # saved with the model, so every stage's HookedModel finds them
        model.config.lmfeatures_module_paths = entry["module_paths"]
    try:
        HookedModel(model)  # stop here, not after a scan of the wrong modules
    except ArchitectureError as err:
        raise ArchitectureError(
            f"config key {err.config_key(entry_key)!r} ({entry['name']}): {err}", key=err.key
        ) from None
    model = model.to(resolve_device(device))
    cfg = _train_config(training, seed)
    heldout = tokenize_texts(tok, load_corpus(corpus_dir)["heldout"]["text"])
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    record = {
        "name": entry["name"],
        "source": entry["source"],
        **describe(model, entry["name"]),
        "training_tokens": None,
        **heldout_loss(model, heldout, eos, cfg),
        "note": "held-out loss uses this model's own tokenizer, so it is not comparable per token with the family",
    }
    with atomic_path(out_dir, directory=True) as tmp:
        _finish_model(tmp, model.cpu(), tok, record, config, seed)
