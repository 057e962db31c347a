"""Every number of the alignment section, from each model's profiles and method inputs: argmax
agreement, top-k Jaccard and Spearman across layers, across sizes and between trained / untrained
twins, each against its permuted-index null (Spearman also against a random rotation), the
identity-path controls, and the methods' decodings against theirs. No file I/O.

    metrics = compute_metrics(profiles, methods, kinds, twins, sizes, kind, top_k, seed)

Profiles are read through their mappings a hook at a time ({model: {hook: [V, F]}}; the store's
mappings read each hook from disk when indexed and keep nothing), so the working set is one
model's layers, one layer pair of two models or one depth of a size pair, never every model's
profiles at once. The identity-path controls are built one at a time from the hooks.

The resampling unit is the feature: a statistic measured at several layers (or layer pairs, or
decoded positions) for one feature is one cluster of `cluster_bootstrap_mean`, and every interval
is per model (or per model pair). Claims across models are the report's, stated per model.

A comparison is a record {"value": summary, "nulls": {name: {"value": summary, "difference":
summary}}}, summary = [mean, lo, hi] with its 95% interval; the difference is the paired per-feature
value minus null, so the interval of the comparison itself, not of two overlapping intervals.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from lmfeatures.alignment.alignment import (
    STATISTICS,
    best_match,
    block_writes,
    by_distance,
    compare,
    layer_pair_alignment,
    layer_pairs,
    paired_spearman,
    random_rotation,
    sequence_agreement,
    token_hits,
)
from lmfeatures.stats import cluster_bootstrap_mean


def _summary(values: torch.Tensor, seed: int) -> list[float]:
    """[mean, lo, hi] of values [F, ...] with its 95% interval, resampled by feature (dim 0)."""
    return list(cluster_bootstrap_mean(values, seed))


def versus(values: torch.Tensor, nulls: dict[str, torch.Tensor], seed: int) -> dict:
    """A comparison record of values [F, ...] against nulls of the same shape, feature by feature."""
    return {
        "value": _summary(values, seed),
        "nulls": {
            name: {"value": _summary(null, seed), "difference": _summary(values - null, seed)}
            for name, null in nulls.items()
        },
    }


def _layer_metrics(layers: list[torch.Tensor], top_k: int, seed: int) -> tuple[dict, dict, dict]:
    """Across-layer alignment of one model's profiles [V, F] per layer: ({statistic: record over the
    layer pairs}, {statistic: heatmap [L, L] of the mean over features}, {Spearman and its nulls:
    {layer distance: summary}})."""
    grid = layer_pair_alignment(layers, top_k, seed)
    records = {}
    for name in STATISTICS:
        nulls = {"permuted": layer_pairs(grid[f"{name}_permuted"])}
        if name == "spearman":
            nulls["rotated"] = layer_pairs(grid["spearman_rotated"])
        records[name] = versus(layer_pairs(grid[name]), nulls, seed)
    heatmaps = {name: grid[name].nanmean(2).tolist() for name in STATISTICS}
    distance = {
        name: {d: _summary(v, seed) for d, v in by_distance(grid[name]).items()}
        for name in ("spearman", "spearman_permuted", "spearman_rotated")
    }
    return records, heatmaps, distance


def _records(per_feature: dict[str, torch.Tensor], seed: int) -> dict:
    """{statistic: record against its permuted null} from compare()'s values, [F, ...] each."""
    return {name: versus(per_feature[name], {"permuted": per_feature[f"{name}_permuted"]}, seed) for name in STATISTICS}


def _model_entry(hooks: Mapping[str, torch.Tensor], kind: str, top_k: int, seed: int) -> dict:
    """One model's shape, the across-layer alignment of its profiles [V, F] per layer and, for resid
    hooks, of the identity-path controls, and the identity-path measures. The controls are read
    afresh from `hooks` after the raw layers are dropped, so one variant's L layers are in memory."""

    def layers() -> Iterator[torch.Tensor]:
        return (hooks[f"{kind}.{i}"] for i in range(len(hooks) - 1))

    raw = list(layers())
    entry: dict = {"n_layers": len(raw), "width": raw[0].shape[1], "vocab": raw[0].shape[0]}
    entry["heatmap"], entry["across_layers"], entry["distance"] = {}, {}, {}

    def measure(variant: str, profiles_of: list[torch.Tensor]) -> None:
        if len(profiles_of) > 1:  # across layers needs two of them
            records, heatmaps, distance = _layer_metrics(profiles_of, top_k, seed)
            entry["across_layers"][variant], entry["heatmap"][variant] = records, heatmaps
            entry["distance"][variant] = distance

    measure("raw", raw)
    if kind == "resid":
        embed = hooks["embed"]
        identity = torch.stack([paired_spearman(p, embed) for p in raw]).T  # [F, L]
        entry["identity"] = {"per_layer": [_summary(v, seed) for v in identity.T], "all": _summary(identity, seed)}
        if len(raw) > 1:  # how much of what later layers add to the embedding is block 0's write
            first = raw[0] - embed
            inherited = torch.stack([paired_spearman(p - embed, first) for p in raw[1:]]).T
            entry["first_write"] = _summary(inherited, seed)
        del raw  # each control below is built from a fresh read, with only its own layers in memory
        measure("minus_embed", [p - embed for p in layers()])
        measure("writes", block_writes(embed, layers()))
    return entry


def compute_metrics(
    profiles: Mapping[str, Mapping[str, torch.Tensor]],
    methods: dict[str, dict],
    kinds: dict[str, str],
    twins: dict[str, str],
    sizes: list[str],
    kind: str,
    top_k: int,
    seed: int,
) -> dict:
    """Every number of the alignment section (metrics.json). Profiles: {model: {hook: [V, F]}}."""
    metrics: dict = {"models": {}, "twins": {}, "sizes": []}
    for name, hooks in profiles.items():
        entry = _model_entry(hooks, kind, top_k, seed)
        metrics["models"][name] = {"kind": kinds[name], **entry, "methods": method_metrics(methods[name], seed)}

    for trained, twin in twins.items():
        a, b = profiles[trained], profiles[twin]
        per_layer = [compare(a[f"{kind}.{i}"], b[f"{kind}.{i}"], top_k) for i in range(len(a) - 1)]
        stacked = {k: torch.stack([layer[k] for layer in per_layer], 1) for k in per_layer[0]}  # [F, L]
        metrics["twins"][trained] = {"twin": twin, **_records(stacked, seed)}

    for i, a in enumerate(sizes):
        for b in sizes[i + 1 :]:
            metrics["sizes"].append(_size_pair(a, b, profiles[a], profiles[b], kind, top_k, seed))
    return metrics


def _size_pair(
    a: str, b: str, pa: Mapping[str, torch.Tensor], pb: Mapping[str, torch.Tensor], kind: str, top_k: int, seed: int
) -> dict:
    """Feature i of model a against feature i of model b on their shared dimensions, and each
    feature of a against its best match in b (null: b's basis randomly rotated), at the embedding,
    the first and the last block."""
    depths = {"first block": (f"{kind}.0", f"{kind}.0")}
    depths["last block"] = (f"{kind}.{len(pa) - 2}", f"{kind}.{len(pb) - 2}")
    if kind == "resid":
        depths = {"embedding": ("embed", "embed"), **depths}
    record: dict = {"a": a, "b": b, "depths": {}}
    for depth, (ha, hb) in depths.items():
        x, y = pa[ha], pb[hb]
        shared = min(x.shape[1], y.shape[1])
        best = best_match(x, y)
        best_null = best_match(x, y @ random_rotation(y.shape[1], seed).to(y.device))
        record["shared"] = shared
        record["depths"][depth] = {
            **_records(compare(x[:, :shared], y[:, :shared], top_k), seed),
            "best_match": versus(best, {"rotated": best_null}, seed),
        }
    return record


def method_metrics(found: dict, seed: int) -> dict:
    """The methods' decodings for the method features, each against its permuted-feature null:
    decoded id == feature index (the essay's tables), |cos(e_g, e_i)| against the other basis vectors
    from the same optimised embedding (resid hooks), agreement with the exhaustive winner and with
    greedy's tokens, the same sequence across layers; and greedy's own first step against the
    exhaustive winner, a check that the two searches read the same one-token input. Records over all
    method features ("all") and over the seeded random ones ("random"), whose indices are not chosen
    (the essay's 0-4 are special and byte tokens in many tokenizers)."""
    hooks = list(found["hooks"].values())
    features = torch.tensor(found["features"])
    n_layers, n_features = len(hooks), len(features)
    out: dict = {"features": found["features"], "random_features": found["random_features"]}
    if n_features < 2:  # a permuted-feature null needs another feature
        return out
    exhaustive = torch.tensor([h["exhaustive"] for h in hooks])[:, :, None]  # [L, F, 1]
    index = features.expand(n_layers, -1)[:, :, None]
    # key: (values [F, ...], {null: [F, ...]})
    measured: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def hits(key: str, tokens: torch.Tensor, targets: torch.Tensor) -> None:
        value, null = token_hits(tokens, targets)
        measured[key] = value, {"permuted": null}

    greedy = None
    if "greedy" in hooks[0]:
        greedy = torch.tensor([h["greedy"] for h in hooks])  # [L, F, N]
        measured["greedy_first_is_exhaustive"] = (greedy[:, :, :1] == exhaustive).double()[:, :, 0].T, {}
        if n_layers > 1:
            same, others = sequence_agreement(greedy)
            measured["greedy_same_across_layers"] = same, {"permuted": others}
    for method in ("gradient", "isolated"):
        if method not in hooks[0]:
            continue
        decoded = {d: torch.tensor([h[method][d] for h in hooks]) for d in ("pinv", "nearest")}  # [L, F, n]
        if n_layers > 1:
            same, others = sequence_agreement(decoded["pinv"])
            measured[f"{method}_pinv_same_across_layers"] = same, {"permuted": others}
        if greedy is not None:
            hits(f"{method}_pinv_in_greedy", decoded["pinv"], greedy)
        for decoding, tokens in decoded.items():
            hits(f"{method}_{decoding}_is_index", tokens, index)
            hits(f"{method}_{decoding}_is_exhaustive", tokens, exhaustive)
        if "basis_cosine" in hooks[0][method]:
            own, others = (
                torch.tensor([h[method][key] for h in hooks]).transpose(0, 1).flatten(1)  # [F, L * n]
                for key in ("basis_cosine", "other_basis_cosine")
            )
            measured[f"{method}_basis_cosine"] = own, {"other basis vectors": others}
    if "relaxed" in hooks[0]:
        hits("relaxed_is_exhaustive", torch.tensor([h["relaxed"]["tokens"] for h in hooks]), exhaustive)
    subsets = {"all": torch.ones(n_features, dtype=torch.bool)}
    subsets["random"] = torch.tensor([f in found["random_features"] for f in found["features"]])
    for subset, rows in subsets.items():
        if rows.any():
            out[subset] = {
                key: versus(values[rows], {k: v[rows] for k, v in nulls.items()}, seed)
                for key, (values, nulls) in measured.items()
            }
    return out
