"""Every number of the alignment section, from each model's profiles and method inputs: across-layer
alignment with permuted-index and random-rotation nulls, identity-path controls, trained vs. untrained
twins, sizes, and the methods' agreement, each with its 95% bootstrap interval. No file I/O.

    numbers, pooled = compute_metrics(profiles, methods, kinds, twins, sizes, kind, top_k, seed)
"""

from __future__ import annotations

import math

import torch

from lmfeatures.alignment.alignment import (
    best_match,
    block_writes,
    by_distance,
    derangement,
    layer_pair_alignment,
    paired_spearman,
    pairs_mean,
    random_rotation,
    sequence_agreement,
    topk_jaccard,
)
from lmfeatures.stats import bootstrap_mean


def _summary(values: torch.Tensor, seed: int) -> list[float]:
    """[mean, lo, hi]: the mean over features with its 95% bootstrap interval."""
    return list(bootstrap_mean(values.flatten(), seed))


def _layer_metrics(layers: list[torch.Tensor], top_k: int, seed: int) -> tuple[dict, dict, dict]:
    """Across-layer alignment of one model's profiles [V, F] per layer: (summaries over layer pairs
    {same, permuted, rotated, jaccard, jaccard_permuted}, heatmap [L, L] of the mean over features,
    {distance: summaries}), with per-feature values kept for pooling."""
    pairs = layer_pair_alignment(layers, seed)
    n = len(layers)
    perm = derangement(layers[0].shape[1], seed)
    jaccard = torch.full((n, n, layers[0].shape[1]), float("nan"))
    jaccard_null = torch.full_like(jaccard, float("nan"))
    for a in range(n):
        for b in range(a + 1, n):
            jaccard[a, b] = topk_jaccard(layers[a], layers[b], top_k)
            jaccard_null[a, b] = topk_jaccard(layers[a], layers[b][:, perm], top_k)
    per_feature = {name: pairs_mean(v) for name, v in pairs.items()}
    per_feature["jaccard"], per_feature["jaccard_permuted"] = pairs_mean(jaccard), pairs_mean(jaccard_null)
    distance = {
        name: {d: _summary(v, seed) for d, v in by_distance(pairs[name]).items()}
        for name in ("same", "permuted", "rotated")
    }
    return per_feature, pairs["same"].nanmean(2).tolist(), distance


def compute_metrics(
    profiles: dict[str, dict[str, torch.Tensor]],
    methods: dict[str, dict],
    kinds: dict[str, str],
    twins: dict[str, str],
    sizes: list[str],
    kind: str,
    top_k: int,
    seed: int,
) -> tuple[dict, dict]:
    """Every number of the alignment section: (metrics for metrics.json, per-feature values
    {key: [F]} that the verdicts pool across models). Profiles: {model: {hook: [V, F]}}."""
    metrics: dict = {"models": {}, "twins": {}, "sizes": []}
    pooled: dict[str, list[torch.Tensor]] = {}

    def pool(key: str, values: torch.Tensor) -> None:
        pooled.setdefault(key, []).append(values.flatten())

    for name, hooks in profiles.items():
        layers = [hooks[f"{kind}.{i}"] for i in range(len(hooks) - 1)]
        variants = {"raw": layers}
        if kind == "resid":
            variants["minus_embed"] = [p - hooks["embed"] for p in layers]
            variants["writes"] = block_writes(hooks["embed"], layers)
        entry: dict = {"kind": kinds[name], "n_layers": len(layers), "width": layers[0].shape[1]}
        entry["vocab"] = layers[0].shape[0]
        entry["heatmap"], entry["across_layers"], entry["distance"] = {}, {}, {}
        for variant, profiles_of in variants.items():
            if len(layers) < 2:
                break
            per_feature, heatmap, distance = _layer_metrics(profiles_of, top_k, seed)
            entry["heatmap"][variant], entry["distance"][variant] = heatmap, distance
            entry["across_layers"][variant] = {k: _summary(v, seed) for k, v in per_feature.items()}
            for k, v in per_feature.items():
                pool(f"{kinds[name]}.layers.{variant}.{k}", v)
        if kind == "resid":
            identity = torch.stack([paired_spearman(p, hooks["embed"]) for p in layers])  # [L, F]
            entry["identity"] = {"per_layer": [_summary(v, seed) for v in identity], "all": _summary(identity, seed)}
            pool(f"{kinds[name]}.identity", identity.nanmean(0))
            if len(layers) > 1:  # how much of what later layers add to the embedding is block 0's write
                first = variants["writes"][0]
                inherited = torch.stack([paired_spearman(p, first) for p in variants["minus_embed"][1:]])
                entry["first_write"] = _summary(inherited, seed)
                pool(f"{kinds[name]}.first_write", inherited.nanmean(0))
        d_model = hooks["embed"].shape[1]
        entry["methods"] = _method_metrics(methods[name], entry["vocab"], d_model, seed, pool, kinds[name])
        metrics["models"][name] = entry

    for trained, twin in twins.items():
        record: dict = {"twin": twin, "per_layer": {}}
        a, b = profiles[trained], profiles[twin]
        n_layers = len(a) - 1
        perm = derangement(a[f"{kind}.0"].shape[1], seed)
        same = torch.stack([paired_spearman(a[f"{kind}.{i}"], b[f"{kind}.{i}"]) for i in range(n_layers)])
        null = torch.stack([paired_spearman(a[f"{kind}.{i}"], b[f"{kind}.{i}"][:, perm]) for i in range(n_layers)])
        record["per_layer"]["same"] = [_summary(v, seed) for v in same]
        record["per_layer"]["permuted"] = [_summary(v, seed) for v in null]
        record["same"], record["permuted"] = _summary(same, seed), _summary(null, seed)
        pool("twins.same", same.nanmean(0))
        pool("twins.permuted", null.nanmean(0))
        metrics["twins"][trained] = record

    for i, a in enumerate(sizes):
        for b in sizes[i + 1 :]:
            metrics["sizes"].append(_size_pair(a, b, profiles[a], profiles[b], kind, seed, pool))
    return metrics, {k: torch.cat(v) for k, v in pooled.items()}


def _size_pair(a: str, b: str, pa: dict, pb: dict, kind: str, seed: int, pool) -> dict:
    """Feature i of model a against feature i of model b on their shared dimensions, and each
    feature of a against its best match in b, at the embedding, the first and the last block."""
    depths = {"first block": (f"{kind}.0", f"{kind}.0")}
    depths["last block"] = (f"{kind}.{len(pa) - 2}", f"{kind}.{len(pb) - 2}")
    if kind == "resid":
        depths = {"embedding": ("embed", "embed"), **depths}
    record: dict = {"a": a, "b": b, "depths": {}}
    for depth, (ha, hb) in depths.items():
        x, y = pa[ha], pb[hb]
        shared = min(x.shape[1], y.shape[1])
        same = paired_spearman(x[:, :shared], y[:, :shared])
        null = paired_spearman(x[:, :shared], y[:, :shared][:, derangement(shared, seed)])
        best = best_match(x, y)
        best_null = best_match(x, y @ random_rotation(y.shape[1], seed))
        record["shared"] = shared
        record["depths"][depth] = {
            "same": _summary(same, seed),
            "permuted": _summary(null, seed),
            "best": _summary(best, seed),
            "best_rotated": _summary(best_null, seed),
        }
        for key, values in (("same", same), ("permuted", null), ("best", best), ("best_rotated", best_null)):
            pool(f"sizes.{depth}.{key}", values)
    return record


def _method_metrics(found: dict, vocab: int, d_model: int, seed: int, pool, kind_of_model: str) -> dict:
    """Agreement of the methods with the exhaustive winner and with each other, and the essay's
    decoding artefact (decoded id == feature index), per model; with the chance levels of id ==
    index (1 / V) and of |cos| between a random direction and a basis vector (sqrt(2 / (pi d)))."""
    features = torch.tensor(found["features"])
    hooks = list(found["hooks"].values())
    out: dict = {"chance_index": 1 / vocab, "chance_cosine": math.sqrt(2 / (math.pi * d_model))}
    if not hooks:
        return out
    exhaustive = torch.tensor([h["exhaustive"] for h in hooks])  # [L, F]

    def share(values: torch.Tensor, key: str) -> None:
        out[key] = _summary(values.float(), seed)
        pool(f"{kind_of_model}.methods.{key}", values.float())

    pairs = [(a, b) for a in range(len(hooks)) for b in range(a + 1, len(hooks))]
    greedy = None
    if "greedy" in hooks[0]:
        greedy = torch.tensor([h["greedy"] for h in hooks])  # [L, F, N]
        share((greedy[:, :, 0] == exhaustive).float().mean(0), "greedy_first_is_exhaustive")
        if pairs:
            same = torch.stack([sequence_agreement(greedy[a], greedy[b]) for a, b in pairs]).float().mean(0)
            share(same, "greedy_same_across_layers")
    for method in ("gradient", "isolated"):
        if method not in hooks[0]:
            continue
        pinv = torch.tensor([h[method]["pinv"] for h in hooks])  # [L, F, n]
        nearest = torch.tensor([h[method]["nearest"] for h in hooks])
        if pairs:
            same = torch.stack([sequence_agreement(pinv[a], pinv[b]) for a, b in pairs]).float().mean(0)
            share(same, f"{method}_pinv_same_across_layers")
        if greedy is not None:  # a decoded token that greedy search also chose, anywhere in its sequence
            in_greedy = (pinv[..., :, None] == greedy[..., None, :]).any(-1)  # [L, F, n]
            share(in_greedy.float().mean((0, 2)), f"{method}_pinv_in_greedy")
        share((pinv == features[None, :, None]).float().mean((0, 2)), f"{method}_pinv_is_index")
        share((nearest == features[None, :, None]).float().mean((0, 2)), f"{method}_nearest_is_index")
        share((pinv == exhaustive[:, :, None]).float().mean((0, 2)), f"{method}_pinv_is_exhaustive")
        share((nearest == exhaustive[:, :, None]).float().mean((0, 2)), f"{method}_nearest_is_exhaustive")
        cosine = torch.tensor([h[method]["basis_cosine"] for h in hooks]).abs().mean((0, 2))
        share(cosine, f"{method}_basis_cosine")
    if "relaxed" in hooks[0]:
        relaxed = torch.tensor([h["relaxed"]["tokens"] for h in hooks])
        share((relaxed == exhaustive[:, :, None]).float().mean((0, 2)), "relaxed_is_exhaustive")
    return out
