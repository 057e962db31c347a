"""results/models/{model}/: a model saved with save_pretrained (weights, config, tokenizer) and
`eval.json` (the model table's row); trained models add `training_log.csv` (loss per step)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmfeatures.io import read_json, reading, write_json
from lmfeatures.lm.models import ModelUnavailable

TRAINING_LOG = "training_log.csv"


def save_model(folder: str | Path, model, tokenizer, record: dict) -> None:
    """Weights, config and tokenizer with save_pretrained, and `record` as eval.json."""
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    write_json(Path(folder) / "eval.json", record)


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Load a model saved under results/models/{name}: (model in eval mode on device, tokenizer)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelUnavailable(f"no model at {str(path)!r}: run the DAG (snakemake) to build it first")
    with reading(path / "model.safetensors"):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


def read_eval(model_dir: str | Path) -> dict:
    return read_json(Path(model_dir) / "eval.json")


def write_training_log(folder: str | Path, history: list[dict]) -> None:
    with open(Path(folder) / TRAINING_LOG, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def read_training_log(model_dir: str | Path) -> pd.DataFrame | None:
    """The training curve, or None for a model that was not trained here (untrained twins, hub models)."""
    log = Path(model_dir) / TRAINING_LOG
    return pd.read_csv(log) if log.exists() else None


FINGERPRINT_CHUNK = 1 << 20  # bytes read at the start, middle and end of each weight file


def fingerprint(model_dir: str | Path) -> str:
    """Identifies a saved model: a hash of its config.json and of each weight file's name, size and
    bytes at its start, middle and end, so that retrained weights of the same shapes differ while
    a multi-GB model is fingerprinted in milliseconds."""
    model_dir = Path(model_dir)
    h = hashlib.sha256((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as data:
            for offset in sorted({0, max(0, size // 2 - FINGERPRINT_CHUNK // 2), max(0, size - FINGERPRINT_CHUNK)}):
                data.seek(offset)
                h.update(data.read(FINGERPRINT_CHUNK))
    return h.hexdigest()[:16]
