"""Rules of workflow/rules/prune.smk: minimal activating examples, variants and a held-out score per neuron."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..config import fill_mask_path
from ..fill_mask import FillMaskProposer, word_overlap
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


def _prune_neuron(hooked, tok, scan, neuron, cfg, neutral, content, line_break, propose, rows):
    """MAEs and variants of the neuron's even-ranked top examples (rows appended to `rows`), the
    predictor and the token baseline fitted on them, and their scores on the odd-ranked top examples
    plus the random windows that are not training windows: (evaluation, predictors)."""
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
        return {"skipped": "fewer than two top examples above zero"}, None
    train, test = tops[0::2], tops[1::2]
    patterns, maes = [], []
    for k, w, p in train:
        ids = scan.windows.ids[w]
        breaks = torch.nonzero(line_break[ids[:p]]).flatten()
        mae = prune(hooked, unit, ids, p, int(breaks[-1]) + 1 if len(breaks) else 0, cfg)
        importance = token_importance(hooked, unit, mae.ids, mae.anchor, neutral)
        variants = local_search(hooked, unit, mae, importance, content, cfg, propose)
        maes.append(mae)
        patterns.append((pattern_of(mae.ids, mae.anchor, importance, cfg.important), mae.activation / data_max))
        patterns += [
            (pattern_of(v.ids, mae.anchor, importance, cfg.important), v.activation / data_max)
            for v in variants
            if v.label == "positive"
        ]
        base = {"neuron": neuron.name, "example": k}
        rows.append(
            {
                **base,
                "type": "dataset example",
                "prompt": tok.decode(ids[: p + 1 + cfg.window]),
                "activation": mae.original,
            }
        )
        rows.append({**base, "type": "MAE", "prompt": tok.decode(mae.ids), "activation": mae.activation})
        for v in variants:
            changed = f"{tok.decode([int(mae.ids[v.position])])!r} → {tok.decode([v.token])!r}"
            rows.append(
                {**base, "type": v.label, "prompt": tok.decode(v.ids), "activation": v.activation, "changed": changed}
            )
    train_windows = sorted({w for _, w, _ in train})
    test_windows = sorted(({w for _, w, _ in test} | set(scan.random_windows.tolist())) - set(train_windows))
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
    evaluation = {
        "data_max": data_max,
        "n_test_windows": len(test_windows),
        "predictor": firing_scores(predictor.predict(test_ids), test_acts, test_valid),
        "token_baseline": firing_scores(baseline.predict(test_ids), test_acts, test_valid),
        "n_patterns": len(predictor.patterns),
        "mae_tokens_median": float(torch.tensor([m.anchor + 1 for m in maes]).float().median()),
        "mae_within_line": sum(m.within_line for m in maes) / len(maes),
        "mae_activation_share": sum(m.activation / m.original for m in maes) / len(maes),
    }
    return evaluation, {"predictor": predictor, "token_baseline": baseline}


def prune_neurons(
    *,
    model_dir: str,
    scan_dir: str,
    out_dir: str,
    model: str,
    prune_params: dict,
    selection: dict,
    epo_selection: dict | None,
    config: dict,
    seed: int,
    device: str,
) -> None:
    """For each selected neuron, and each neuron EPO selects (`epo_selection`, if EPO runs on this
    model): MAEs, token importance and variants of half its top examples (`{neuron}.parquet`), the
    pattern predictor and token lookup fitted on them (`{neuron}.predictor.json`), and how well they
    predict it on the other half and the scan's random windows (`evaluation.json`)."""
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
    propose, incompatible = fill_mask_proposer(prune_params, cfg, tok, hooked.device)
    # EPO's selection resolved here, not read from its checkpoint, so a change of EPO's code reruns no pruning
    extra = resolve_neurons(scan, NeuronSpec(**epo_selection, seed=seed)) if epo_selection else []
    neurons = resolve_neurons(scan, NeuronSpec(**selection, seed=seed), extra=extra)
    with atomic_path(out_dir, directory=True) as tmp:
        evaluation = []
        for neuron in tqdm(neurons, desc=f"prune {model}", unit="neuron"):
            rows: list[dict] = []
            if incompatible:
                result, fitted = {"skipped": incompatible}, None
            else:
                result, fitted = _prune_neuron(
                    hooked, tok, scan, neuron, cfg, neutral, content, line_break, propose, rows
                )
            evaluation.append({"model": model, "neuron": neuron.name, "layer": neuron.layer, **result})
            frame = pd.DataFrame(rows, columns=["neuron", "example", "type", "prompt", "activation", "changed"])
            frame.to_parquet(tmp / f"{neuron.name}.parquet", index=False)
            if fitted is not None:
                write_json(tmp / f"{neuron.name}.predictor.json", {k: p.to_json() for k, p in fitted.items()})
        write_json(tmp / "evaluation.json", {"model": model, "neutral_token": vocab[neutral], "neurons": evaluation})
        write_provenance(tmp, config, seed, model=model, epo_selection=epo_selection)


MIN_WORD_OVERLAP = 0.05  # below this share of its words, a fill-mask model cannot propose for this tokenizer


def fill_mask_proposer(prune_params: dict, cfg, studied, device) -> tuple[FillMaskProposer | None, str | None]:
    """(proposer, None) for `prune.proposer` (None: the studied model proposes), or (None, reason)
    when the fill-mask model's words are too rarely single tokens of the studied tokenizer."""
    source = prune_params["proposer"]
    if source == "model":
        return None, None
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = fill_mask_path(source)
    mlm_tok = AutoTokenizer.from_pretrained(str(path))
    overlap = word_overlap(mlm_tok, studied)
    if overlap < MIN_WORD_OVERLAP:
        return None, (
            f"fill-mask model {source}: only {overlap:.1%} of its words are single tokens of this model's "
            f"tokenizer (need {MIN_WORD_OVERLAP:.0%}); use proposer: model"
        )
    mlm = AutoModelForMaskedLM.from_pretrained(str(path)).to(device).eval()
    return FillMaskProposer(mlm, mlm_tok, studied, n=cfg.n_substitutes, candidate_k=cfg.candidate_k), None


def load_evaluations(prune_dirs: list[str]) -> pd.DataFrame:
    """One row per (model, neuron) with the predictor's and the baseline's F1 (NaN where undefined)
    and its MAEs' median length, share inside the anchor's line and mean share of the activation kept."""
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
                    "mae_tokens": r["mae_tokens_median"],
                    "mae_within_line": r["mae_within_line"],
                    "mae_activation_share": r["mae_activation_share"],
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


def epo_coverage(prune_dirs: list[str], epo_targets: list[dict], position: str) -> pd.DataFrame:
    """Do the patterns from dataset examples predict what EPO found? For each (model, neuron) of
    `epo_targets` ({"model", "neuron", "runs": EPO run dirs}): its EPO frontier prompts, how many
    fire (the neuron at the EPO target >= FIRING x its dataset max), and the share of those the
    pattern predictor and the token lookup predict to fire there (recall)."""
    folders = {Path(f).name: Path(f) for f in prune_dirs}
    rows = []
    for target in epo_targets:
        folder = folders[target["model"]]
        fitted = folder / f"{target['neuron']}.predictor.json"
        if not fitted.exists():  # skipped by pruning: listed in the section already
            continue
        data_max = next(
            r["data_max"] for r in read_json(folder / "evaluation.json")["neurons"] if r["neuron"] == target["neuron"]
        )
        frontier = [p for run in target["runs"] for p in read_json(Path(run) / "frontier.json")["frontier"]]
        ids = torch.tensor([p["ids"] for p in frontier])  # [p, n]: one length per EPO config
        actual = torch.tensor([p["rescored_target"] for p in frontier])[:, None] / data_max
        row = {"model": target["model"], "neuron": target["neuron"], "prompts": len(frontier)}
        for name, pairs in read_json(fitted).items():
            predicted = Predictor.from_json(pairs).predict(ids)
            predicted = predicted[:, -1:] if position == "last" else predicted.max(1, keepdim=True).values
            scores = firing_scores(predicted, actual, torch.ones_like(actual, dtype=torch.bool))
            row["firing"] = scores["tp"] + scores["fn"]
            row[name] = scores["recall"]
        rows.append(row)
    columns = ["model", "neuron", "prompts", "firing", "predictor", "token_baseline"]
    return pd.DataFrame(rows, columns=columns).astype({"predictor": float, "token_baseline": float})


def prune_summary(
    *,
    prune_dirs: list[str],
    epo_runs: list[str],
    kinds: dict,
    epo_targets: list[dict],
    epo_position: str,
    figure: str,
    section: str,
) -> None:
    """The report section's pieces: F1 by layer, verdicts per model kind, the tables of the trained
    models' best- and worst-explained neurons (by held-out F1), and the patterns' recall on EPO's
    frontier prompts (`epo_runs`: every run dir of `epo_targets`)."""
    from ..report.pruning import pruning_section

    scores = load_evaluations(prune_dirs)
    folders = {Path(f).name: Path(f) for f in prune_dirs}
    trained = scores[scores["model"].map(kinds) == "trained"].dropna(subset=["predictor"])
    picks = trained.sort_values("predictor") if len(trained) else scores.dropna(subset=["predictor"])
    examples = {}
    for _, row in pd.concat([picks.tail(1), picks.head(1)]).drop_duplicates(["model", "neuron"]).iterrows():
        label = f"{row['model']} {row['neuron']} (held-out F1 {row['predictor']:.2f})"
        examples[label] = pd.read_parquet(folders[row["model"]] / f"{row['neuron']}.parquet")
    epo = epo_coverage(prune_dirs, epo_targets, epo_position)
    pruning_section(scores, kinds, examples, skipped_neurons(prune_dirs), epo, figure, section)
