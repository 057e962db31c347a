"""Rules of workflow/rules/prune.smk: minimal activating examples, variants and a held-out score per neuron."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..hooks import HookedModel
from ..io import atomic_path, read_json, write_json, write_provenance
from ..models import load_model, resolve_device
from ..n2g import Predictor, firing_scores, pattern_of, token_lookup
from ..neurons import NeuronSpec, resolve_neurons, token_activations
from ..prune import Unit, local_search, prune, prune_config, token_importance
from ..scan import load_scan

ROW_TYPES = ("dataset example", "MAE", "positive", "negative", "neither")


def neutral_token(windows: torch.Tensor, tokenizer) -> int:
    """The default neutral token: the most frequent whitespace-only token of the scanned windows."""
    counts = torch.bincount(windows.flatten(), minlength=len(tokenizer))
    for token in counts.argsort(descending=True).tolist():
        if tokenizer.decode([token]).isspace():
            return token
    return int(counts.argmax())


def _prune_neuron(hooked, tok, scan, neuron, cfg, neutral, content, line_break, rows):
    """MAEs and variants of the neuron's even-ranked top examples (rows appended to `rows`), and the
    predictor's and the token baseline's scores on its odd-ranked ones plus the random windows."""
    hook, index = neuron.hook, neuron.index
    unit = Unit(hook, index)
    data_max = float(scan.tensor(hook, "max")[index])
    tops = [
        (k, int(w), int(p))
        for k, (w, p, v) in enumerate(
            zip(
                scan.tensor(hook, "top_window")[:, index],
                scan.tensor(hook, "top_pos")[:, index],
                scan.tensor(hook, "top_values")[:, index],
            )
        )
        if w >= 0 and v > 0
    ]
    if len(tops) < 2 or data_max <= 0:
        return {"skipped": "fewer than two top examples above zero"}
    train, test = tops[0::2], tops[1::2]
    patterns, maes = [], []
    for k, w, p in train:
        ids = scan.windows.ids[w]
        breaks = torch.nonzero(line_break[ids[:p]]).flatten()
        mae = prune(hooked, unit, ids, p, int(breaks[-1]) + 1 if len(breaks) else 0, cfg)
        importance = token_importance(hooked, unit, mae.ids, mae.anchor, neutral)
        variants = local_search(hooked, unit, mae, importance, content, cfg)
        maes.append(mae)
        patterns.append((pattern_of(mae.ids, mae.anchor, importance, cfg.important), mae.activation / data_max))
        patterns += [
            (pattern_of(v.ids, mae.anchor, importance, cfg.important), v.activation / data_max)
            for v in variants
            if v.label == "positive"
        ]
        base = {"neuron": neuron.name, "example": k}
        rows.append({**base, "type": "dataset example", "prompt": tok.decode(ids[: p + 1]), "activation": mae.original})
        rows.append({**base, "type": "MAE", "prompt": tok.decode(mae.ids), "activation": mae.activation})
        for v in variants:
            changed = f"{tok.decode([int(mae.ids[v.position])])!r} → {tok.decode([v.token])!r}"
            rows.append(
                {**base, "type": v.label, "prompt": tok.decode(v.ids), "activation": v.activation, "changed": changed}
            )
    test_windows = sorted({w for _, w, _ in test} | set(scan.random_windows.tolist()))
    train_windows = sorted({w for _, w, _ in train})
    acts = token_activations(hooked, scan.windows.ids[train_windows + test_windows], [neuron])[neuron] / data_max
    positions = torch.arange(scan.windows.ids.shape[1])
    valid = positions[None, :] >= scan.windows.valid_from[train_windows + test_windows][:, None]
    n_train = len(train_windows)
    test_ids, test_acts, test_valid = (
        scan.windows.ids[test_windows],
        acts[n_train:],
        valid[n_train:],
    )
    baseline = token_lookup(scan.windows.ids[train_windows], acts[:n_train], valid[:n_train])
    predictor = Predictor.fit(patterns)
    return {
        "predictor": firing_scores(predictor.predict(test_ids), test_acts, test_valid),
        "token_baseline": firing_scores(baseline.predict(test_ids), test_acts, test_valid),
        "n_patterns": len(predictor.patterns),
        "mae_tokens_median": float(torch.tensor([m.anchor + 1 for m in maes]).float().median()),
        "mae_within_line": sum(m.within_line for m in maes) / len(maes),
        "mae_activation_share": sum(m.activation / m.original for m in maes) / len(maes),
    }


def prune_neurons(
    *,
    model_dir: str,
    scan_dir: str,
    out_dir: str,
    model: str,
    prune_params: dict,
    selection: dict,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """For each selected neuron: MAEs, token importance and variants of half its top examples
    (`{neuron}.parquet`), and how well the patterns they give predict it on the other half and the
    scan's random windows, against a single-token lookup (`evaluation.json`)."""
    torch.manual_seed(seed)
    cfg = prune_config(prune_params)
    scan = load_scan(scan_dir, model_dir=model_dir)
    lm, tok = load_model(model_dir, resolve_device(device))
    hooked = HookedModel(lm)
    vocab = [tok.decode([t]) for t in range(hooked.vocab_size)]
    line_break = torch.tensor([any(s in text for s in prune_params["separators"]) for text in vocab])
    content = torch.tensor([any(c.isalnum() for c in text) for text in vocab])  # the report skips stop words
    neutral = prune_params["neutral_token"]
    if neutral == "auto":
        neutral = neutral_token(scan.windows.ids, tok)
    neurons = resolve_neurons(scan, NeuronSpec(**selection, seed=seed))
    with atomic_path(out_dir, directory=True) as tmp:
        evaluation = []
        for neuron in neurons:
            rows: list[dict] = []
            result = _prune_neuron(hooked, tok, scan, neuron, cfg, neutral, content, line_break, rows)
            evaluation.append({"model": model, "neuron": neuron.name, "layer": neuron.layer, **result})
            frame = pd.DataFrame(rows, columns=["neuron", "example", "type", "prompt", "activation", "changed"])
            frame.to_parquet(tmp / f"{neuron.name}.parquet", index=False)
        write_json(tmp / "evaluation.json", {"model": model, "neutral_token": vocab[neutral], "neurons": evaluation})
        write_provenance(tmp, config, seed, model=model)


def load_evaluations(prune_dirs: list[str]) -> pd.DataFrame:
    """One row per (model, neuron) with the predictor's and the baseline's F1 (NaN where undefined)."""
    rows = []
    for folder in prune_dirs:
        for r in read_json(Path(folder) / "evaluation.json")["neurons"]:
            if "skipped" in r:
                continue
            rows.append(
                {
                    "model": r["model"],
                    "neuron": r["neuron"],
                    "layer": r["layer"],
                    "predictor": r["predictor"]["f1"],
                    "token_baseline": r["token_baseline"]["f1"],
                }
            )
    return pd.DataFrame(rows).astype({"predictor": float, "token_baseline": float})


def skipped_neurons(prune_dirs: list[str]) -> list[str]:
    """'model neuron: reason' for every neuron a prune run skipped."""
    skipped = []
    for folder in prune_dirs:
        evaluation = read_json(Path(folder) / "evaluation.json")
        skipped += [
            f"{evaluation['model']} {r['neuron']}: {r['skipped']}" for r in evaluation["neurons"] if "skipped" in r
        ]
    return skipped


def prune_summary(*, prune_dirs: list[str], kinds: dict, figure: str, section: str) -> None:
    """The report section's pieces: F1 by layer, verdicts per model kind, and the tables of the
    trained models' best- and worst-explained neurons (by held-out F1)."""
    from ..report.pruning import pruning_section

    scores = load_evaluations(prune_dirs)
    folders = {Path(f).name: Path(f) for f in prune_dirs}
    trained = scores[scores["model"].map(kinds) == "trained"].dropna(subset=["predictor"])
    picks = trained.sort_values("predictor") if len(trained) else scores.dropna(subset=["predictor"])
    examples = {}
    for _, row in pd.concat([picks.tail(1), picks.head(1)]).drop_duplicates(["model", "neuron"]).iterrows():
        label = f"{row['model']} {row['neuron']} (held-out F1 {row['predictor']:.2f})"
        examples[label] = pd.read_parquet(folders[row["model"]] / f"{row['neuron']}.parquet")
    pruning_section(scores, kinds, examples, skipped_neurons(prune_dirs), figure, section)
