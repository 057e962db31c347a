"""results/sae/{model}/L{layer}/: SAEs, their checks and feature pages.

{run}/       one SAE in SAELens's layout (cfg.json, sae_weights.safetensors) with
             training_log.json and evaluation.json
checks/      {dictionary}.parquet (one check table per dictionary), scan/ (the scan of every
             dictionary's units, lmfeatures.store.scans), neuron_correlations.safetensors
             ({"{run}.neurons": [d_sae, d_mlp] Pearson r}), proxies.json (classes, their tokens in the
             check windows, their predicted tokens)
planted/     the planted ground truth: {dictionary}.parquet, planted.json (planted classes, each run's
             recovery of their directions), proxies.json
pages/       {run}/F{unit}.html and index.html, pages.json ({run: [paged units]})
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from lmfeatures.io import read_json, read_parquet, read_safetensors, write_json
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.sae import SAEError, SparseAutoencoder, from_sae_lens_files, sae_lens_files
from lmfeatures.store.neurons import write_pages as write_html_pages
from lmfeatures.store.scans import Scan, load_scan, write_scan


def activation_file(path: str | Path, rows: int, width: int) -> torch.Tensor:
    """A float16 [rows, width] tensor backed by a new file at `path` (a training job's scratch): the OS
    pages in the rows a training batch reads and may drop them again, so the activations need not fit in RAM."""
    return torch.from_numpy(np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, width)))


def save_sae(out_dir: Path, sae: SparseAutoencoder, hook: str, model: str, extra: dict) -> None:
    cfg, tensors = sae_lens_files(sae, hook, {"model_name": model, **extra})
    write_json(out_dir / "cfg.json", cfg)
    save_file(tensors, str(out_dir / "sae_weights.safetensors"))


def load_sae(path: str | Path, model: HookedModel | None = None) -> tuple[SparseAutoencoder, str]:
    """(the SAE of a SAELens-layout folder, its hook name); with `model`, refuse one whose hook or
    d_in does not fit that model (SAEError, one line)."""
    path = Path(path)
    if not (path / "cfg.json").is_file() or not (path / "sae_weights.safetensors").is_file():
        raise SAEError(f"{str(path)!r} is not an SAE folder (cfg.json and sae_weights.safetensors)")
    cfg = read_json(path / "cfg.json")
    sae = from_sae_lens_files(cfg, read_safetensors(path / "sae_weights.safetensors"))
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    if model is not None:
        try:
            kind, layer = model.check_hook(hook)
        except (ValueError, TypeError) as err:
            raise SAEError(f"SAE {str(path)!r}: its hook {hook!r} does not fit this model: {err}") from None
        width = model.d_mlp if kind in ("mlp", "mlp_pre") else model.d_model
        if sae.d_in != width:
            raise SAEError(f"SAE {str(path)!r} reads {sae.d_in} dimensions, but {hook} of this model has {width}")
    return sae, hook


def read_checks(checks_dir: str | Path) -> dict[str, pd.DataFrame]:
    """{dictionary name: its check table} of a checks folder."""
    return {p.stem: read_parquet(p) for p in sorted(Path(checks_dir).glob("*.parquet"))}


def write_run(folder: str | Path, log: list[dict], evaluation: dict) -> None:
    """A run's training log and evaluation, beside its SAE files."""
    write_json(Path(folder) / "training_log.json", log)
    write_json(Path(folder) / "evaluation.json", evaluation)


def read_evaluation(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "evaluation.json")


def write_checks(folder: str | Path, scan: tuple, tables: dict[str, pd.DataFrame], correlations: dict, proxies: dict):
    """A checks folder: `scan` = (result, windows, meta, window_max) as write_scan takes them, the
    check tables, the neuron correlations and proxies.json ({"proxies", "class_tokens"})."""
    folder = Path(folder)
    write_scan(folder / "scan", *scan)
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet")
    save_file(correlations, str(folder / "neuron_correlations.safetensors"))
    write_json(folder / "proxies.json", proxies)


def write_planted(folder: str | Path, tables: dict[str, pd.DataFrame], summary: dict, proxies: dict) -> None:
    """A planted folder: the check table of each dictionary, planted.json (the planted classes and
    each run's recovery of their directions) and proxies.json."""
    folder = Path(folder)
    for name, table in tables.items():
        table.to_parquet(folder / f"{name}.parquet")
    write_json(folder / "planted.json", summary)
    write_json(folder / "proxies.json", proxies)


def read_planted(planted_dir: str | Path) -> tuple[dict[str, pd.DataFrame], dict]:
    """(check tables by dictionary, planted.json) of a planted folder."""
    folder = Path(planted_dir)
    return read_checks(folder), read_json(folder / "planted.json")


def load_checks_scan(checks_dir: str | Path, model_dir: str | Path) -> Scan:
    return load_scan(Path(checks_dir) / "scan", model_dir=model_dir)


def read_correlations(checks_dir: str | Path, run: str) -> torch.Tensor:
    """[d_sae, d_mlp]: Pearson r of each of run's features with each neuron of the layer."""
    return read_safetensors(Path(checks_dir) / "neuron_correlations.safetensors")[f"{run}.neurons"]


def read_proxies(checks_dir: str | Path) -> dict:
    return read_json(Path(checks_dir) / "proxies.json")


def write_pages(folder: str | Path, run: str, pages: dict[str, str], chosen: list[int]) -> None:
    """A run's feature pages ({file name: html}) and pages.json."""
    (Path(folder) / run).mkdir(exist_ok=True)
    write_html_pages(Path(folder) / run, pages)
    write_json(Path(folder) / "pages.json", {run: chosen})


def read_paged(pages_dir: str | Path, run: str) -> list[int]:
    """The features of `run` that have a page."""
    return read_json(Path(pages_dir) / "pages.json")[run]
