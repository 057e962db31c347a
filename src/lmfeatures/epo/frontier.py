"""EPO runs against the data: the best prompt under each fluency threshold, and the neuron's top
dataset examples cut to the prompt length and scored the same way, so both sit on one frontier.

Fluency thresholds: the paper's fixed 4 and 6 nats come from Pythia-12B, where a 12-token slice of
real text has cross-entropy 3.7 +- 1.1. A smaller model, or one trained on code, puts real text
elsewhere, so the thresholds are also calibrated per fluency model: the median and the 90th
percentile of the cross-entropy of random n-token slices of held-out text (`real_text_xent`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from lmfeatures.epo.epo import Scorer, xent
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.scan.neurons import Neuron
from lmfeatures.store.scans import Scan

THRESHOLDS = (4.0, 6.0, math.inf)  # the paper's; xent < 6 counted as in-distribution there
CALIBRATED = {"median": 0.5, "p90": 0.9}  # quantiles of real-text slices' xent, per fluency model


@torch.no_grad()
def real_text_xent(
    model: HookedModel, windows: torch.Tensor, n_tokens: int, count: int, seed: int, batch_size: int = 256
) -> torch.Tensor:
    """Cross-entropy [count] of `count` random n_tokens slices of held-out windows [windows, context]
    (token ids), each scored as a prompt is: mean next-token NLL over its positions 1..n-1."""
    gen = torch.Generator().manual_seed(seed)
    n_windows, context = windows.shape
    if n_tokens > context:
        raise ValueError(f"epo.n_tokens={n_tokens} is longer than the scanned windows ({context} tokens)")
    rows = torch.randint(n_windows, (count,), generator=gen)
    starts = torch.randint(context - n_tokens + 1, (count,), generator=gen)
    slices = windows[rows[:, None], starts[:, None] + torch.arange(n_tokens)]  # [count, n_tokens]
    out = []
    for b in range(0, count, batch_size):
        ids = slices[b : b + batch_size].to(model.device)
        out.append(xent(model.run([], input_ids=ids, return_logits=True)["logits"], ids).cpu())
    return torch.cat(out)


def calibration(xents: torch.Tensor) -> dict:
    """The calibrated thresholds and a summary of the real-text cross-entropies they come from."""
    q = torch.quantile(xents.double(), torch.tensor(list(CALIBRATED.values()), dtype=torch.float64))
    summary = {"mean": float(xents.mean()), "sd": float(xents.std()), "n_slices": len(xents)}
    return dict(zip(CALIBRATED, q.tolist())) | summary


def best_below(df: pd.DataFrame, threshold: float) -> dict | None:
    """The highest-target row with xent < threshold, as a dict (None when there is none)."""
    ok = df[df["xent"] < threshold]
    return None if ok.empty else _row(ok.loc[ok["target"].idxmax()])


def _row(r: pd.Series) -> dict:
    x = float(r["xent"])
    return {"text": r["text"], "target": float(r["target"]), "xent": None if math.isnan(x) else x}


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
    targets, xents = torch.empty(len(cuts)), torch.empty(len(cuts))
    for length in sorted({len(c) for c in cuts}):  # one batch per cut length
        rows = [i for i, c in enumerate(cuts) if len(c) == length]
        t, x = scorer.score(torch.stack([cuts[i] for i in rows]).to(scorer.model.device))
        targets[rows], xents[rows] = t.cpu(), x.cpu()
    return pd.DataFrame(
        {
            "text": tokenizer.batch_decode([c.tolist() for c in cuts]),
            "target": targets.tolist(),
            "xent": xents.tolist(),
            "scan_max": float(scan.tensor(h, "top_values")[0, index]),
        }
    )


def compare_with_data(runs: pd.DataFrame, data: pd.DataFrame, neuron: str, calibrated: dict) -> dict:
    """Per method (epo, gcg, random): the best prompt under each threshold (the paper's, and
    `calibrated`, from calibration()), per-seed bests and the ratio to the dataset maximum.
    runs: every scored candidate (text, target, xent, method, seed); data: dataset_examples()."""
    scan_max = float(data["scan_max"].iloc[0])
    thresholds = {f"xent<{t:g}": t for t in THRESHOLDS} | {f"xent<{k}": calibrated[k] for k in CALIBRATED}
    summary = {
        "neuron": neuron,
        "dataset_max": scan_max,
        "dataset_cut_max": float(data["target"].max()),
        "dataset_top": _row(data.loc[data["target"].idxmax()]),  # a 1-token cut has no xent: None
        "real_text_xent": calibrated,
        "methods": {},
    }
    for method, df in runs.groupby("method"):
        best = {key: best_below(df, t) for key, t in thresholds.items()}
        per_seed = [b["target"] for _, g in df.groupby("seed") if (b := best_below(g, 6.0))]
        per_seed_p90 = [b["target"] for _, g in df.groupby("seed") if (b := best_below(g, calibrated["p90"]))]
        per_seed_any = [float(g["target"].max()) for _, g in df.groupby("seed")]
        summary["methods"][method] = {
            "best": best,
            "n_scored": len(df),
            "seeds": int(df["seed"].nunique()),
            "best_xent<6_per_seed": per_seed,
            "best_xent<p90_per_seed": per_seed_p90,
            "best_any_per_seed": per_seed_any,
            "ratio_to_dataset_max": {
                k: (v["target"] / scan_max if v and scan_max > 0 else None) for k, v in best.items()
            },
        }
    return summary
