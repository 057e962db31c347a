"""EPO runs against the data: the best prompt under each fluency threshold, and the neuron's top
dataset examples cut to the prompt length and scored the same way, so both sit on one frontier."""

from __future__ import annotations

import math

import pandas as pd
import torch

from .epo import Scorer
from .neurons import Neuron
from .scan import Scan

THRESHOLDS = (4.0, 6.0, math.inf)  # xent < 6 counts as in-distribution (paper: real 12-token text ~3.7 ± 1.1)


def best_below(df: pd.DataFrame, threshold: float) -> dict | None:
    """The highest-target row with xent < threshold, as a dict (None when there is none)."""
    ok = df[df["xent"] < threshold]
    if ok.empty:
        return None
    r = ok.loc[ok["target"].idxmax()]
    return {"text": r["text"], "target": float(r["target"]), "xent": float(r["xent"])}


def dataset_examples(scan: Scan, neuron: Neuron, scorer: Scorer, tokenizer, n_tokens: int) -> pd.DataFrame:
    """The neuron's top dataset windows cut to at most n_tokens ending at their max token (left
    context only, so the max token is the last, where a `last`-position target reads it), scored
    like prompts. A max token with fewer than n_tokens - 1 tokens before it gives a shorter cut."""
    h, index = neuron.hook, neuron.index
    cuts = []
    for k in range(scan.tensor(h, "top_window").shape[0]):
        w, p = int(scan.tensor(h, "top_window")[k, index]), int(scan.tensor(h, "top_pos")[k, index])
        if w >= 0:
            cuts.append(scan.windows.ids[w, max(0, p - n_tokens + 1) : p + 1])
    target, xent = torch.empty(len(cuts)), torch.empty(len(cuts))
    for length in sorted({len(c) for c in cuts}):  # one batch per cut length
        rows = [i for i, c in enumerate(cuts) if len(c) == length]
        t, x = scorer.score(torch.stack([cuts[i] for i in rows]).to(scorer.model.device))
        target[rows], xent[rows] = t.cpu(), x.cpu()
    return pd.DataFrame(
        {
            "text": tokenizer.batch_decode([c.tolist() for c in cuts]),
            "target": target.tolist(),
            "xent": xent.tolist(),
            "scan_max": float(scan.tensor(h, "top_values")[0, index]),
        }
    )


def compare_with_data(runs: pd.DataFrame, data: pd.DataFrame, neuron: str) -> dict:
    """Per method (epo, gcg, random): the best prompt under each threshold, per-seed bests and the
    ratio to the dataset maximum. runs: every scored candidate (text, target, xent, method, seed);
    data: dataset_examples()."""
    scan_max = float(data["scan_max"].iloc[0])
    summary = {
        "neuron": neuron,
        "dataset_max": scan_max,
        "dataset_cut_max": float(data["target"].max()),
        "dataset_top": best_below(data, math.inf),
        "methods": {},
    }
    for method, df in runs.groupby("method"):
        best = {f"xent<{t:g}": best_below(df, t) for t in THRESHOLDS}
        per_seed = [b["target"] for _, g in df.groupby("seed") if (b := best_below(g, 6.0))]
        per_seed_any = [float(g["target"].max()) for _, g in df.groupby("seed")]
        summary["methods"][method] = {
            "best": best,
            "n_scored": len(df),
            "seeds": int(df["seed"].nunique()),
            "best_xent<6_per_seed": per_seed,
            "best_any_per_seed": per_seed_any,
            "ratio_to_dataset_max": {
                k: (v["target"] / scan_max if v and scan_max > 0 else None) for k, v in best.items()
            },
        }
    return summary
