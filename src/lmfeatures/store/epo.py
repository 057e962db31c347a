"""results/epo/{model}/: EPO's runs and their comparison with the data.

L{l}N{n}/seed{s}/ and L{l}N{n}/baselines/{method}/seed{s}/   one run:
    history.parquet   every scored candidate: iteration, ids, target, xent, kept, restart_lambda,
                      reinitialised, seconds, text
    frontier.json     the run's settings and its Pareto frontier (decoded, re-encoded, re-scored)
.seed{s}.checkpoint.pt   beside a run until epo_compare has read it: its state, to resume from
L{l}N{n}/compare/     compare.json (best per fluency threshold vs. the dataset maximum) and
                      dataset_examples.parquet (the top examples scored the way EPO scores)
real_text_xent.json   the fluency model's cross-entropy on real text (calibrated thresholds)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lmfeatures.io import atomic_path, read_json, read_parquet, write_json


def checkpoint_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.checkpoint.pt"


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Written under a temporary name and renamed, so a job killed mid-save leaves the last good one."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=False, map_location="cpu")  # written on any device


def remove_checkpoint(path: Path) -> None:
    """Once the run it belongs to is read by the job after it (epo_compare)."""
    path.unlink(missing_ok=True)


def write_run(folder: str | Path, history: pd.DataFrame, frontier: dict) -> None:
    history.to_parquet(Path(folder) / "history.parquet")
    write_json(Path(folder) / "frontier.json", frontier)


def read_frontier(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / "frontier.json")


def load_runs(run_dirs: list[str]) -> pd.DataFrame:
    """Every scored candidate of these runs: text, target, xent, method, seed."""
    runs = []
    for d in run_dirs:
        meta = read_frontier(d)
        h = read_parquet(Path(d) / "history.parquet", columns=["text", "target", "xent"])
        h["method"], h["seed"] = meta["method"], meta["seed"]
        runs.append(h)
    return pd.concat(runs, ignore_index=True)


def write_real_text(path: str | Path, calibration: dict) -> None:
    write_json(path, calibration)


def read_real_text(path: str | Path) -> dict:
    return read_json(path)


def write_compare(folder: str | Path, summary: dict, data: pd.DataFrame) -> None:
    write_json(Path(folder) / "compare.json", summary)
    data.to_parquet(Path(folder) / "dataset_examples.parquet")


def read_compare(folder: str | Path) -> tuple[dict, pd.DataFrame]:
    """(compare.json, the dataset examples) of a compare folder."""
    return read_json(Path(folder) / "compare.json"), read_parquet(Path(folder) / "dataset_examples.parquet")
