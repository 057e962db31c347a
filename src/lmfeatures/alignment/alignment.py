"""Is feature i of one layer (or model) the same as feature i of another? Statistics over the
exhaustive single-token profiles of `feature_inputs.vocab_profiles`, each with the null that makes
the essay's claims testable.

A profile is a feature's activation on every token of the vocabulary alone: profiles [V, width]
per hook, feature i = column i. Feature i of a is compared with feature i of b three ways:

    argmax agreement   the same maximising token (the essay's own claim: "the same input")
    top-k Jaccard      the overlap of their k most activating tokens
    Spearman           the rank correlation of the whole profiles

    stats = compare(a, b, k)                            # {statistic: [F], statistic_permuted: [F]}
    rot = paired_spearman(a, b @ random_rotation(...))  # random-rotation null: b's basis rotated
    lo = compare(a - embed, b - embed, k)               # identity path removed

The permuted-index null of each statistic pairs feature i of a with feature j != i of b; it is
computed exactly, as the mean over every j != i (the expectation over uniformly random
derangements), so it carries no seed. Ranks break ties by token order (a stable sort: float32
profiles over thousands of tokens do tie); a constant profile has no ranking, and its correlations
are NaN.

Memory: no layer's ranks are ever held whole. They are computed for a chunk of features at once
(of every layer compared, at most _RANK_ELEMENTS values) and used at once, so statistics over L
layers of profiles [V, F] need the float32 profiles (L x V x F) plus a bounded working set,
whatever L, V and F. The permuted Spearman null needs each layer's ranks summed over all its
features before any feature's null, so `spearman_grid` ranks every chunk twice rather than keep them.

The identity path: in a pre-norm residual network resid.L = embed + the writes of blocks 0..L, so
the embedding alone makes feature i of every layer look alike. Two controls remove it:
resid.L - embed (the embedding's contribution, but the writes of blocks 0..min(a, b) are still
shared by layers a and b) and each block's own write, resid.L - resid.(L-1) (resid.(-1) = embed),
which shares nothing with another block's unless the blocks compute aligned features.
No file I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain, pairwise

import torch

STATISTICS = ("argmax", "jaccard", "spearman")
# rows of a per chunk of the top-k intersection count [rows, k, F_b]: memory linear in the width
_INTERSECTION_ELEMENTS = 1 << 24
# values of one chunk's float64 ranks [features, layers, V] (256 MB): with one layer's sort of the chunk
# besides, the rank statistics' working set, whatever the number of layers, features or tokens
_RANK_ELEMENTS = 1 << 25


def _chunks(width: int, per_feature: int) -> list[slice]:
    """range(width) in consecutive slices of features, each holding at most _RANK_ELEMENTS values
    when a feature takes per_feature of them (at least one feature per slice)."""
    size = max(1, _RANK_ELEMENTS // per_feature)
    return [slice(start, min(start + size, width)) for start in range(0, width, size)]


def standard_ranks(profiles: torch.Tensor) -> torch.Tensor:
    """profiles [V, c] (a chunk of features) -> [c, V] float64: each feature's ranks over the
    vocabulary, centred and scaled to unit norm, so the Spearman correlation of two features is the
    dot product of their rows. The ranks are exact integers (one stable sort, inverted by a
    scatter); float64 keeps that dot product over V tokens exact to ~1e-16 (float32 would lose
    ~1e-6, more than the statistics' float32 results carry)."""
    order = profiles.argsort(dim=0, stable=True)  # [V, c]: ties in token order
    positions = torch.arange(len(order), device=order.device)[:, None].expand_as(order)
    ranks = torch.empty_like(order).scatter_(0, order, positions).T.double()  # [c, V]: token v's rank
    ranks -= ranks.mean(1, keepdim=True)
    ranks /= ranks.norm(dim=1, keepdim=True)
    constant = profiles.amax(0) == profiles.amin(0)  # no ranking at all: every correlation with it is NaN
    return ranks.masked_fill_(constant[:, None], float("nan"))


def paired_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b [V, F] -> [F]: Spearman correlation of feature i of a with feature i of b."""
    out = torch.empty(a.shape[1], device=a.device)
    for cols in _chunks(a.shape[1], 2 * a.shape[0]):
        out[cols] = (standard_ranks(a[:, cols]) * standard_ranks(b[:, cols])).sum(1).float()
    return out


def spearman_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [V, Fa], b [V, Fb] -> [Fa, Fb]: every feature of a against every feature of b. Each chunk
    of b's features is ranked once and a's are ranked again for each (ceil(Fb / chunk) times), so
    neither matrix's ranks are held whole."""
    vocab = a.shape[0]
    out = torch.empty(a.shape[1], b.shape[1], device=a.device)
    for cols_b in _chunks(b.shape[1], 2 * vocab):
        ranks_b = standard_ranks(b[:, cols_b])  # [cb, V]
        for cols_a in _chunks(a.shape[1], 2 * vocab):
            out[cols_a, cols_b] = (standard_ranks(a[:, cols_a]) @ ranks_b.T).float()
    return out


def best_match(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [V, Fa], b [V, Fb] -> [Fa]: each feature of a against its most correlated feature of b."""
    return spearman_matrix(a, b).max(1).values


def spearman_grid(profiles: Sequence[torch.Tensor], rotation: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Spearman of feature i of layer a with feature i of layer b for every ordered pair (a, b), from
    profiles [V, F] per layer: {"spearman": [L, L, F], "spearman_permuted": [L, L, F] its mean over
    b_j, j != i} and, given a rotation [F, F], "spearman_rotated": [L, L, F] a_i against feature i
    of b @ rotation. The null is linear in F: the sum over j of a_i . b_j is a_i . (sum_j b_j), so a
    first pass sums each layer's ranks over its features. Constant features of b leave the mean; a
    constant a_i or b_i gives NaN."""
    n, (vocab, width), device = len(profiles), profiles[0].shape, profiles[0].device
    chunks = _chunks(width, n * vocab)

    # one chunk's ranks [c, L, V], refilled for every chunk of both passes: features first, so the
    # batched matmuls below read it without a permuted copy
    buffer = torch.empty(chunks[0].stop, n, vocab, dtype=torch.float64, device=device)

    def ranks_of(cols: slice) -> torch.Tensor:
        ranks = buffer[: cols.stop - cols.start]
        for layer, p in enumerate(profiles):
            ranks[:, layer] = standard_ranks(p[:, cols])
        return ranks

    def per_pair(products: torch.Tensor) -> torch.Tensor:
        return products.permute(1, 2, 0).float()  # [c, L, L] -> [L, L, c]

    total = torch.zeros(n, vocab, dtype=torch.float64, device=device)  # [L, V]: sum of b_j over valid j
    valid = torch.empty(n, width, dtype=torch.bool, device=device)  # [L, F]: not a constant profile
    for cols in chunks:
        ranks = ranks_of(cols)
        valid[:, cols] = ~torch.isnan(ranks[:, :, 0]).T
        total += ranks.nan_to_num_().sum(0)
    others = valid.sum(1, keepdim=True) - valid.double()  # [L, F]: how many valid j != i in layer b
    names = ["spearman", "spearman_permuted"] + ["spearman_rotated"] * (rotation is not None)
    out = {name: torch.empty(n, n, width, device=device) for name in names}
    for cols in chunks:
        ranks = ranks_of(cols)
        same = ranks @ ranks.transpose(1, 2)  # [c, L, L]: a_i . b_i
        everyone = ranks @ total.T  # [c, L, L]: sum over valid j of a_i . b_j
        permuted = (everyone - torch.where(valid[:, cols].T[:, None, :], same, 0.0)) / others[:, cols].T[:, None, :]
        out["spearman"][:, :, cols], out["spearman_permuted"][:, :, cols] = per_pair(same), per_pair(permuted)
        if rotation is not None:  # this chunk's rotated features of one layer b at a time, [c, V]
            for b, p in enumerate(profiles):
                rotated = standard_ranks(p @ rotation[:, cols])[:, :, None]  # [c, V, 1]
                out["spearman_rotated"][:, b, cols] = (ranks @ rotated)[:, :, 0].T.float()  # [L, c]
    return out


def spearman_with_null(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b [V, F] profiles -> ([F] Spearman of a_i with b_i, [F] its mean over b_j, j != i)."""
    grid = spearman_grid([a, b])
    return grid["spearman"][0, 1], grid["spearman_permuted"][0, 1]


def random_rotation(n: int, seed: int) -> torch.Tensor:
    """A seeded Haar-random orthogonal matrix [n, n] (QR of a Gaussian, signs fixed)."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def sequence_agreement(sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sequences [L, F, n] token ids -> ([F, P] 1.0 where feature i gives the same sequence at layers
    a < b, [F, P] the share of features j != i whose sequence at layer b is feature i's at layer a)."""
    n_layers = sequences.shape[0]
    pairs = [(a, b) for a in range(n_layers) for b in range(a + 1, n_layers)]
    same = (sequences[[a for a, _ in pairs], :, None] == sequences[[b for _, b in pairs], None]).all(-1)  # [P, F, F]
    own = same.diagonal(dim1=1, dim2=2).double()  # [P, F]
    return own.T, _others_mean(same.sum(-1), own, sequences.shape[1]).T


def token_hits(tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [L, F, n], targets [L, F, m] -> ([F, L * n] 1.0 where a token of feature i is one of
    feature i's targets at the same layer, [F, L * n] the share of features j != i whose targets hold
    it): the hit rate and its permuted-feature null."""
    hits = (tokens[:, :, :, None, None] == targets[:, None, None, :, :]).any(-1).double()  # [L, F, n, F]
    own = hits.diagonal(dim1=1, dim2=3).permute(0, 2, 1)  # [L, F, n]
    others = _others_mean(hits.sum(-1), own, tokens.shape[1])
    return own.permute(1, 0, 2).flatten(1), others.permute(1, 0, 2).flatten(1)


def top_tokens(profiles: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """profiles [V, F] -> ([F] each feature's maximising token, [F, k] its k most activating tokens),
    a chunk of features at a time."""
    width = profiles.shape[1]
    argmax = torch.empty(width, dtype=torch.long, device=profiles.device)
    top = torch.empty(width, top_k, dtype=torch.long, device=profiles.device)
    for cols in _chunks(width, profiles.shape[0]):
        argmax[cols] = profiles[:, cols].argmax(0)
        top[cols] = profiles[:, cols].topk(top_k, dim=0).indices.T
    return argmax, top


def _others_mean(total: torch.Tensor, own: torch.Tensor, count: int) -> torch.Tensor:
    """The mean over the count - 1 terms j != i, given the sum over all j (total) and the term j = i (own)."""
    return (total - own) / (count - 1)


def argmax_with_null(a: torch.Tensor, b: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b [F] maximising tokens -> ([F] 1.0 where a_i == b_i, [F] the share of j != i with b_j == a_i)."""
    same = (a == b).double()
    counts = torch.bincount(b, minlength=vocab).double()  # how many features of b each token maximises
    return same.float(), _others_mean(counts[a], same, len(a)).float()


def jaccard_with_null(a: torch.Tensor, b: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b [F, k] top-k tokens -> ([F] Jaccard of a_i and b_i, [F] its mean over b_j, j != i).
    Intersections come from b's membership table [V, F], a chunk of a's rows at a time."""
    n_features, k = a.shape
    member = torch.zeros(vocab, b.shape[0], dtype=torch.float32, device=b.device)
    member[b, torch.arange(b.shape[0], device=b.device)[:, None].expand_as(b)] = 1.0
    same = torch.empty(n_features, dtype=torch.float64, device=b.device)
    total = torch.empty_like(same)
    rows = max(1, _INTERSECTION_ELEMENTS // (k * b.shape[0]))
    for start in range(0, n_features, rows):
        chunk = torch.arange(start, min(start + rows, n_features), device=b.device)
        shared = member[a[chunk]].sum(1).double()  # [rows, F_b] |top_a_i ∩ top_b_j|
        jaccard = shared / (2 * k - shared)
        same[chunk], total[chunk] = jaccard[torch.arange(len(chunk), device=b.device), chunk], jaccard.sum(1)
    return same.float(), _others_mean(total, same, b.shape[0]).float()


def _statistics(
    top_a: tuple[torch.Tensor, torch.Tensor],
    top_b: tuple[torch.Tensor, torch.Tensor],
    vocab: int,
    spearman: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """{statistic: [F], f"{statistic}_permuted": [F]} for each of STATISTICS, from each side's
    top_tokens and the Spearman correlations with their null."""
    out = {}
    for name, (same, null) in {
        "argmax": argmax_with_null(top_a[0], top_b[0], vocab),
        "jaccard": jaccard_with_null(top_a[1], top_b[1], vocab),
        "spearman": spearman,
    }.items():
        out[name], out[f"{name}_permuted"] = same, null
    return out


def compare(a: torch.Tensor, b: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Feature i of a against feature i of b, profiles [V, F] of the same width: {statistic: [F],
    f"{statistic}_permuted": [F]} for each of STATISTICS."""
    return _statistics(top_tokens(a, top_k), top_tokens(b, top_k), a.shape[0], spearman_with_null(a, b))


def layer_pair_alignment(profiles: Sequence[torch.Tensor], top_k: int, seed: int) -> dict[str, torch.Tensor]:
    """Every statistic of every pair of layers with its nulls, from profiles [V, F] per layer: for each
    of STATISTICS and its "_permuted" null, and "spearman_rotated" (layer b's basis rotated by one
    seeded random orthogonal matrix), [L, L, F]; entry [a, b, i] (a < b, mirrored; the diagonal
    compares a layer with itself)."""
    n, (vocab, width), device = len(profiles), profiles[0].shape, profiles[0].device
    tops = [top_tokens(p, top_k) for p in profiles]
    spearman = spearman_grid(profiles, random_rotation(width, seed).to(device))
    out: dict[str, torch.Tensor] = {}
    for a in range(n):
        for b in range(a, n):
            values = _statistics(
                tops[a], tops[b], vocab, (spearman["spearman"][a, b], spearman["spearman_permuted"][a, b])
            )
            values["spearman_rotated"] = spearman["spearman_rotated"][a, b]
            for name, v in values.items():
                grid = out.setdefault(name, torch.full((n, n, width), float("nan"), device=device))
                grid[a, b] = grid[b, a] = v
    return out


def layer_pairs(per_pair: torch.Tensor) -> torch.Tensor:
    """[L, L, F] -> [F, P]: the layer pairs a < b, feature first (the resampling unit)."""
    rows, cols = torch.triu_indices(per_pair.shape[0], per_pair.shape[1], offset=1)
    return per_pair[rows, cols].T


def by_distance(per_pair: torch.Tensor) -> dict[int, torch.Tensor]:
    """[L, L, F] -> {layer distance d >= 1: [F] each feature's mean over the pairs b - a = d}."""
    n = per_pair.shape[0]
    return {d: torch.stack([per_pair[a, a + d] for a in range(n - d)]).mean(0) for d in range(1, n)}


def block_writes(embed: torch.Tensor, layers: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Profiles of what each block adds to the residual stream: resid.L - resid.(L-1), [V, d] each.
    `layers` may be read lazily (a generator): only the previous layer is kept besides the writes."""
    return [layer - previous for previous, layer in pairwise(chain([embed], layers))]
