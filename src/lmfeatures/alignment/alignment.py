"""Is feature i of one layer (or model) the same as feature i of another? Statistics over the
exhaustive single-token profiles of `feature_inputs.vocab_profiles`, each with the null that makes
the essay's claims testable.

A profile is a feature's activation on every token of the vocabulary alone: profiles [V, width]
per hook, feature i = column i. Feature i of a is compared with feature i of b three ways:

    argmax agreement   the same maximising token (the essay's own claim: "the same input")
    top-k Jaccard      the overlap of their k most activating tokens
    Spearman           the rank correlation of the whole profiles

    stats = compare(ranked(a, k), ranked(b, k))       # {statistic: [F], statistic_permuted: [F]}
    rot = paired_spearman(a, b @ random_rotation(...))  # random-rotation null: b's basis rotated
    lo = compare(ranked(a - embed, k), ...)             # identity path removed

The permuted-index null of each statistic pairs feature i of a with feature j != i of b; it is
computed exactly, as the mean over every j != i (the expectation over uniformly random
derangements), so it carries no seed. Ranks break ties by position (activations are floats, ties
are rare); a constant profile has no ranking, and its correlations are NaN.

The identity path: in a pre-norm residual network resid.L = embed + the writes of blocks 0..L, so
the embedding alone makes feature i of every layer look alike. Two controls remove it:
resid.L - embed (the embedding's contribution, but the writes of blocks 0..min(a, b) are still
shared by layers a and b) and each block's own write, resid.L - resid.(L-1) (resid.(-1) = embed),
which shares nothing with another block's unless the blocks compute aligned features.
No file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STATISTICS = ("argmax", "jaccard", "spearman")
# rows of a per chunk of the top-k intersection count [rows, k, F_b]: memory linear in the width
_INTERSECTION_ELEMENTS = 1 << 24


def standard_ranks(profiles: torch.Tensor) -> torch.Tensor:
    """profiles [V, F] -> [F, V]: each feature's ranks over the vocabulary, centred and scaled to
    unit norm, so the Spearman correlation of two features is the dot product of their rows."""
    ranks = profiles.double().argsort(0).argsort(0).T.double()  # [F, V]
    ranks = ranks - ranks.mean(1, keepdim=True)
    ranks = ranks / ranks.norm(dim=1, keepdim=True)
    constant = profiles.amax(0) == profiles.amin(0)  # no ranking at all: every correlation with it is NaN
    return ranks.masked_fill(constant[:, None], float("nan"))


def paired_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b [V, F] -> [F]: Spearman correlation of feature i of a with feature i of b."""
    return (standard_ranks(a) * standard_ranks(b)).sum(1).float()


def spearman_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [V, Fa], b [V, Fb] -> [Fa, Fb]: every feature of a against every feature of b."""
    return (standard_ranks(a) @ standard_ranks(b).T).float()


def best_match(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [V, Fa], b [V, Fb] -> [Fa]: each feature of a against its most correlated feature of b."""
    return spearman_matrix(a, b).max(1).values


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


@dataclass(frozen=True)
class Ranked:
    """What the statistics read of profiles [V, F], computed once per profile set."""

    ranks: torch.Tensor  # [F, V] standard_ranks: centred, unit-norm ranks (NaN rows: constant profiles)
    argmax: torch.Tensor  # [F] each feature's maximising token
    top: torch.Tensor  # [F, k] each feature's k most activating tokens


def ranked(profiles: torch.Tensor, top_k: int) -> Ranked:
    return Ranked(standard_ranks(profiles), profiles.argmax(0), profiles.topk(top_k, dim=0).indices.T)


def _others_mean(total: torch.Tensor, own: torch.Tensor, count: int) -> torch.Tensor:
    """The mean over the count - 1 terms j != i, given the sum over all j (total) and the term j = i (own)."""
    return (total - own) / (count - 1)


def spearman_with_null(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b [F, V] standard ranks -> ([F] Spearman of a_i with b_i, [F] its mean over b_j, j != i):
    linear in F, since the sum over j of a_i . b_j is a_i . (sum_j b_j). Constant features of b
    leave the mean; a constant a_i or b_i gives NaN."""
    valid_b = ~torch.isnan(b[:, 0])
    same = (a * b).sum(1)
    total = a @ torch.nan_to_num(b).sum(0)
    others = (total - torch.where(valid_b, same, 0.0)) / (valid_b.sum() - valid_b.double())
    return same.float(), others.float()


def argmax_with_null(a: torch.Tensor, b: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b [F] maximising tokens -> ([F] 1.0 where a_i == b_i, [F] the share of j != i with b_j == a_i)."""
    same = (a == b).double()
    counts = torch.bincount(b, minlength=vocab).double()  # how many features of b each token maximises
    return same.float(), _others_mean(counts[a], same, len(a)).float()


def jaccard_with_null(a: torch.Tensor, b: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b [F, k] top-k tokens -> ([F] Jaccard of a_i and b_i, [F] its mean over b_j, j != i).
    Intersections come from b's membership table [V, F], a chunk of a's rows at a time."""
    n_features, k = a.shape
    member = torch.zeros(vocab, b.shape[0], dtype=torch.float32)
    member[b, torch.arange(b.shape[0])[:, None].expand_as(b)] = 1.0
    same, total = torch.empty(n_features, dtype=torch.float64), torch.empty(n_features, dtype=torch.float64)
    rows = max(1, _INTERSECTION_ELEMENTS // (k * b.shape[0]))
    for start in range(0, n_features, rows):
        chunk = torch.arange(start, min(start + rows, n_features))
        shared = member[a[chunk]].sum(1).double()  # [rows, F_b] |top_a_i ∩ top_b_j|
        jaccard = shared / (2 * k - shared)
        same[chunk], total[chunk] = jaccard[torch.arange(len(chunk)), chunk], jaccard.sum(1)
    return same.float(), _others_mean(total, same, b.shape[0]).float()


def compare(a: Ranked, b: Ranked, vocab: int) -> dict[str, torch.Tensor]:
    """Feature i of a against feature i of b (same width F): {statistic: [F], f"{statistic}_permuted": [F]}
    for each of STATISTICS."""
    out = {}
    for name, (same, null) in {
        "argmax": argmax_with_null(a.argmax, b.argmax, vocab),
        "jaccard": jaccard_with_null(a.top, b.top, vocab),
        "spearman": spearman_with_null(a.ranks, b.ranks),
    }.items():
        out[name], out[f"{name}_permuted"] = same, null
    return out


def layer_pair_alignment(profiles: list[torch.Tensor], top_k: int, seed: int) -> dict[str, torch.Tensor]:
    """Every statistic of every pair of layers with its nulls, from profiles [V, F] per layer: for each
    of STATISTICS and its "_permuted" null, and "spearman_rotated" (layer b's basis rotated by one
    seeded random orthogonal matrix), [L, L, F]; entry [a, b, i] (a < b, mirrored; the diagonal
    compares a layer with itself)."""
    n, (vocab, width) = len(profiles), profiles[0].shape
    sets = [ranked(p, top_k) for p in profiles]
    rotation = random_rotation(width, seed)
    rotated = [standard_ranks(p @ rotation) for p in profiles]
    out: dict[str, torch.Tensor] = {}
    for a in range(n):
        for b in range(a, n):
            values = compare(sets[a], sets[b], vocab)
            values["spearman_rotated"] = (sets[a].ranks * rotated[b]).sum(1).float()
            for name, v in values.items():
                grid = out.setdefault(name, torch.full((n, n, width), float("nan")))
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


def block_writes(embed: torch.Tensor, layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Profiles of what each block adds to the residual stream: resid.L - resid.(L-1), [V, d] each."""
    return [layer - previous for previous, layer in zip([embed, *layers[:-1]], layers)]
