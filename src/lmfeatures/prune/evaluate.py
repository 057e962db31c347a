"""Pruning's per-neuron driver: MAEs and variants of half of a neuron's top examples, the N2G-style
predictor and the token lookup fitted on them, and both scored on held-out windows; and how well
the fitted predictors foresee what EPO found. No file I/O: the prune stage reads and writes.

    evaluation, fitted, rows = prune_neuron(model, tokenizer, scan, neuron, cfg, neutral, content,
                                            line_break, propose)
"""

from __future__ import annotations

import torch

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.prune.n2g import Predictor, firing_scores, pattern_of, token_lookup
from lmfeatures.prune.prune import PruneConfig, Unit, local_search, prune, token_importance
from lmfeatures.scan.neurons import Neuron, token_activations
from lmfeatures.store.scans import Scan


def prune_neuron(
    hooked: HookedModel,
    tok,
    scan: Scan,
    neuron: Neuron,
    cfg: PruneConfig,
    neutral: int,
    content: torch.Tensor,
    line_break: torch.Tensor,
    propose,
) -> tuple[dict, dict[str, Predictor] | None, list[dict]]:
    """MAEs and variants of the neuron's even-ranked top examples, the predictor and the token
    baseline fitted on them, and their scores on the odd-ranked top examples plus the random
    windows that are not training windows: (evaluation, {name: predictor} or None when skipped,
    the report-style rows: dataset example, MAE and variants per example). `content` and
    `line_break` are bool [vocab]; `propose` is a fill-mask proposer or None (the model proposes)."""
    rows: list[dict] = []
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
        return {"skipped": "fewer than two top examples above zero"}, None, rows
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
    return evaluation, {"predictor": predictor, "token_baseline": baseline}, rows


def frontier_recall(predictors: dict[str, Predictor], frontier: list[dict], data_max: float, position: str) -> dict:
    """Do the patterns from dataset examples predict what EPO found? Over EPO's frontier prompts
    (frontier.json entries: ids, rescored_target): how many fire (the neuron at the EPO target >=
    the firing share of its dataset max), and per predictor the share of those it predicts to fire
    there (recall)."""
    ids = torch.tensor([p["ids"] for p in frontier])  # [p, n]: one length per EPO config
    actual = torch.tensor([p["rescored_target"] for p in frontier])[:, None] / data_max
    row: dict = {"prompts": len(frontier)}
    for name, predictor in predictors.items():
        predicted = predictor.predict(ids)
        predicted = predicted[:, -1:] if position == "last" else predicted.max(1, keepdim=True).values
        scores = firing_scores(predicted, actual, torch.ones_like(actual, dtype=torch.bool))
        row["firing"] = scores["tp"] + scores["fn"]
        row[name] = scores["recall"]
    return row
