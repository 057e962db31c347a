"""Pruning's per-neuron driver: MAEs and variants of the top examples of half of a neuron's
documents, the N2G predictor and the two token lookups fitted on them, and all three scored on the
other documents; and how well the fitted predictors foresee what EPO found. No file I/O: the prune
stage reads and writes.

    evaluation, fitted, rows = prune_neuron(model, tokenizer, scan, neuron, cfg, neutral, content,
                                            line_break, propose, context_free)
"""

from __future__ import annotations

import torch

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.prune.n2g import FIRING, Predictor, firing_patterns, firing_scores, last_token_lookup, token_lookup
from lmfeatures.prune.prune import (
    MAE,
    PruneConfig,
    Unit,
    Variant,
    activations_everywhere,
    importance_matrices,
    local_search,
    prune,
)
from lmfeatures.scan.neurons import Neuron, token_activations
from lmfeatures.store.scans import Scan

PREDICTORS = ("predictor", "last_token_lookup", "token_lookup")  # N2G; its tokens alone; every token


def split_by_document(docs: list[int]) -> tuple[list[int], list[int]]:
    """(train, test) indices into a neuron's top examples, given each one's document docs[i] in rank
    order: whole documents go to the side with fewer examples so far, in the order of their best
    example, so no document is on both sides and the sides stay near half each."""
    sides: tuple[list[int], list[int]] = ([], [])
    side_of: dict[int, int] = {}
    for i, doc in enumerate(docs):
        if doc not in side_of:
            side_of[doc] = int(len(sides[1]) < len(sides[0]))
        sides[side_of[doc]].append(i)
    return sides


def n2g_examples(
    hooked: HookedModel,
    unit: Unit,
    mae: MAE,
    variants: list[Variant],
    importance: torch.Tensor,
    neutral: int,
    important: float,
    data_max: float,
) -> list[tuple[tuple[int, ...], float]]:
    """(pattern, activation) for every firing token of the MAE and of each variant, every activation
    rescaled as N2G does to the original context's (original / pruned activation at the anchor) and
    normalised by the dataset max. `importance` [m, m] is the MAE's (importance_matrices); a
    variant's own is computed only when one of its tokens fires, and, as in N2G, a token important
    in the MAE stays important in its variants (they differ in one token, position for position)."""
    prompts = torch.stack([mae.ids] + [v.ids for v in variants])  # [1 + variants, m]
    acts = activations_everywhere(hooked, unit, prompts) * (mae.original / mae.activation / data_max)
    examples = firing_patterns(mae.ids, acts[0], importance, important)
    fired = [j for j in range(1, len(prompts)) if bool((acts[j] >= FIRING).any())]
    if fired:
        for j, matrix in zip(fired, importance_matrices(hooked, unit, prompts[fired], neutral)):
            examples += firing_patterns(prompts[j], acts[j], torch.maximum(matrix, importance), important)
    return examples


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
    context_free: bool,
) -> tuple[dict, dict[str, Predictor] | None, list[dict]]:
    """MAEs and variants of the neuron's training top examples (split_by_document), the N2G
    predictor (firing_patterns of every MAE and variant, rescaled to the original context), the
    lookup of its final tokens and the lookup fitted on every token of the training windows, and
    their scores on the test top examples plus the random windows of documents on neither side:
    (evaluation, {name: predictor} or None when skipped, the report-style rows: dataset example, MAE
    and variants per example). `content` and `line_break` are bool [vocab]; `propose` is a
    fill-mask proposer or None (the model proposes); `context_free`: the neuron's layer sees only
    the current token (lm.architectures.context_free_mlp_layers), recorded for the report."""
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
    docs = scan.windows.doc
    train_idx, test_idx = split_by_document([int(docs[w]) for _, w, _ in tops])
    if not test_idx:
        return {"skipped": "every top example comes from one document: no top example is left to test on"}, None, rows
    train, test = [tops[i] for i in train_idx], [tops[i] for i in test_idx]
    examples, maes = [], []
    for k, w, p in train:
        ids = scan.windows.ids[w]
        breaks = torch.nonzero(line_break[ids[:p]]).flatten()
        mae = prune(hooked, unit, ids, p, int(breaks[-1]) + 1 if len(breaks) else 0, cfg)
        importance = importance_matrices(hooked, unit, mae.ids[None], neutral)[0]  # [m, m]
        variants = local_search(hooked, unit, mae, importance[mae.anchor], content, cfg, propose)
        maes.append(mae)
        examples += n2g_examples(hooked, unit, mae, variants, importance, neutral, cfg.important, data_max)
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
    seen_docs = {int(docs[w]) for _, w, _ in tops}
    random_windows = [w for w in scan.random_windows.tolist() if int(docs[w]) not in seen_docs]
    test_windows = sorted({w for _, w, _ in test} | set(random_windows))
    acts = token_activations(hooked, scan.windows.ids[train_windows + test_windows], [neuron])[neuron] / data_max
    positions = torch.arange(scan.windows.ids.shape[1])
    valid = positions[None, :] >= scan.windows.valid_from[train_windows + test_windows][:, None]
    n_train = len(train_windows)
    test_ids, test_acts, test_valid = scan.windows.ids[test_windows], acts[n_train:], valid[n_train:]
    predictor = Predictor.fit(examples)
    fitted = {
        "predictor": predictor,
        "last_token_lookup": last_token_lookup(predictor),
        "token_lookup": token_lookup(scan.windows.ids[train_windows], acts[:n_train], valid[:n_train]),
    }
    evaluation = {
        "data_max": data_max,
        "context_free": context_free,
        "n_train_documents": len({int(docs[w]) for _, w, _ in train}),
        "n_test_documents": len({int(docs[w]) for w in test_windows}),
        "n_test_windows": len(test_windows),
        **{name: firing_scores(p.predict(test_ids), test_acts, test_valid) for name, p in fitted.items()},
        "n_patterns": len(predictor.patterns),
        "mae_tokens_median": float(torch.tensor([m.anchor + 1 for m in maes]).float().median()),
        "mae_within_line": sum(m.within_line for m in maes) / len(maes),
        "mae_activation_share": sum(m.activation / m.original for m in maes) / len(maes),
    }
    return evaluation, fitted, rows


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
