"""results/prune/{model}/: pruning's tables, fitted predictors and held-out scores.

L{l}N{n}.parquet          the report-style table: neuron, example, type (dataset example, MAE,
                          positive, negative, neither), prompt, activation, changed
L{l}N{n}.predictor.json   {"predictor": N2G patterns, "last_token_lookup": their final tokens,
                          "token_lookup": every token of the training windows}
evaluation.json           {"model", "neutral_token", "neurons": [per neuron: precision / recall /
                          F1 of the three, whether its layer is context-free, the split's sizes,
                          MAE statistics; or "skipped" with the reason]}
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmfeatures.io import read_json, read_parquet, write_json
from lmfeatures.prune.evaluate import PREDICTORS
from lmfeatures.prune.n2g import Predictor

TABLE_COLUMNS = ["neuron", "example", "type", "prompt", "activation", "changed"]


def write_neuron(folder: str | Path, neuron: str, rows: list[dict], fitted: dict[str, Predictor] | None) -> None:
    """A neuron's table and, unless it was skipped, its fitted predictors."""
    pd.DataFrame(rows, columns=TABLE_COLUMNS).to_parquet(Path(folder) / f"{neuron}.parquet", index=False)
    if fitted is not None:
        write_json(Path(folder) / f"{neuron}.predictor.json", {k: p.to_json() for k, p in fitted.items()})


def write_evaluation(folder: str | Path, evaluation: dict) -> None:
    write_json(Path(folder) / "evaluation.json", evaluation)


def read_evaluation(folder: str | Path) -> dict:
    return read_json(Path(folder) / "evaluation.json")


def read_table(folder: str | Path, neuron: str) -> pd.DataFrame:
    return read_parquet(Path(folder) / f"{neuron}.parquet")


def read_predictors(folder: str | Path, neuron: str) -> dict[str, Predictor] | None:
    """{name: predictor} of a neuron, None for one that pruning skipped."""
    path = Path(folder) / f"{neuron}.predictor.json"
    if not path.exists():
        return None
    return {name: Predictor.from_json(pairs) for name, pairs in read_json(path).items()}


def load_evaluations(prune_dirs: list[str]) -> pd.DataFrame:
    """One row per (model, neuron) with its dataset max, the F1 of the predictor and of both lookups
    (NaN where undefined), whether its layer is context-free, how many test tokens fire, and its MAEs' median
    length, share inside the anchor's line and mean share of the activation kept."""
    rows = []
    for folder in prune_dirs:
        for r in read_evaluation(folder)["neurons"]:
            if "skipped" in r:
                continue
            rows.append(
                {
                    "model": r["model"],
                    "neuron": r["neuron"],
                    "layer": r["layer"],
                    "data_max": r["data_max"],
                    "context_free": r["context_free"],
                    "test_firing": r["predictor"]["tp"] + r["predictor"]["fn"],
                    **{name: r[name]["f1"] for name in PREDICTORS},
                    "mae_tokens": r["mae_tokens_median"],
                    "mae_within_line": r["mae_within_line"],
                    "mae_activation_share": r["mae_activation_share"],
                }
            )
    columns = ["model", "neuron", "layer", "data_max", "context_free", "test_firing", *PREDICTORS]
    columns += ["mae_tokens", "mae_within_line", "mae_activation_share"]
    return pd.DataFrame(rows, columns=columns).astype(dict.fromkeys(PREDICTORS, float))


def skipped_neurons(prune_dirs: list[str]) -> list[str]:
    """'model neuron: reason' for every neuron a prune run skipped."""
    skipped = []
    for folder in prune_dirs:
        evaluation = read_evaluation(folder)
        skipped += [
            f"{evaluation['model']} {r['neuron']}: {r['skipped']}" for r in evaluation["neurons"] if "skipped" in r
        ]
    return skipped
