"""Is feature i of one layer (or model) the same as feature i of another? Metrics over the
exhaustive single-token profiles of `feature_inputs.vocab_profiles`, with the nulls that make the
essay's claims testable.

A profile is a feature's activation on every token of the vocabulary alone: profiles [V, width]
per hook, feature i = column i. Two features are compared by the Spearman correlation of their
profiles and the Jaccard overlap of their top-k tokens.

    rho = paired_spearman(a, b)              # [width] feature i of a against feature i of b
    null = paired_spearman(a, b[:, perm])    # permuted-index null: i against a random other j
    rot = paired_spearman(a, rotate(b, q))   # random-rotation null: b's basis rotated
    lo = paired_spearman(a - embed, b - embed)  # identity path removed

Ranks break ties by position (activations are floats, ties are rare); a constant profile has no
ranking, and its correlations are NaN.

The identity path: in a pre-norm residual network resid.L = embed + the writes of blocks 0..L, so
the embedding alone makes feature i of every layer look alike. Two controls remove it:
resid.L - embed (the embedding's contribution, but the writes of blocks 0..min(a, b) are still
shared by layers a and b) and each block's own write, resid.L - resid.(L-1) (resid.(-1) = embed),
which shares nothing with another block's unless the blocks compute aligned features.
No file I/O.
"""

from __future__ import annotations

import torch


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


def topk_jaccard(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """a, b [V, F] -> [F]: |top-k tokens of a_i ∩ those of b_i| / |their union|."""
    vocab = a.shape[0]
    top_a = torch.zeros(a.shape[1], vocab, dtype=torch.bool).scatter_(1, a.topk(k, dim=0).indices.T, True)
    top_b = torch.zeros(b.shape[1], vocab, dtype=torch.bool).scatter_(1, b.topk(k, dim=0).indices.T, True)
    return ((top_a & top_b).sum(1) / (top_a | top_b).sum(1)).float()


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of range(n) with no fixed point (n >= 2): feature i is paired with another j."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    return torch.roll(perm, 1)[perm.argsort()]  # i -> the element after i in a random cycle: never i


def random_rotation(n: int, seed: int) -> torch.Tensor:
    """A seeded Haar-random orthogonal matrix [n, n] (QR of a Gaussian, signs fixed)."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def sequence_agreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b [F, n] token ids -> [F] bool: the generated sequences are identical."""
    return (a == b).all(1)


def layer_pair_alignment(profiles: list[torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Same-index Spearman of every pair of layers, and its two nulls, from profiles [V, F] per layer:
    {"same", "permuted", "rotated"}, each [L, L, F] (entry [a, b, i]: feature i of layer a against
    feature i of layer b, against feature perm(i) of layer b, against dimension i of layer b's
    basis rotated by one seeded random orthogonal matrix)."""
    width = profiles[0].shape[1]
    ranks = torch.stack([standard_ranks(p) for p in profiles])  # [L, F, V]
    rotation = random_rotation(width, seed)
    rotated = torch.stack([standard_ranks(p @ rotation) for p in profiles])
    perm = derangement(width, seed)
    return {
        "same": torch.einsum("afv,bfv->abf", ranks, ranks).float(),
        "permuted": torch.einsum("afv,bfv->abf", ranks, ranks[:, perm]).float(),
        "rotated": torch.einsum("afv,bfv->abf", ranks, rotated).float(),
    }


def pairs_mean(per_pair: torch.Tensor) -> torch.Tensor:
    """[L, L, F] -> [F]: each feature's mean over the layer pairs a < b."""
    rows, cols = torch.triu_indices(per_pair.shape[0], per_pair.shape[1], offset=1)
    return per_pair[rows, cols].mean(0)


def by_distance(per_pair: torch.Tensor) -> dict[int, torch.Tensor]:
    """[L, L, F] -> {layer distance d >= 1: [F] each feature's mean over the pairs b - a = d}."""
    n = per_pair.shape[0]
    return {d: torch.stack([per_pair[a, a + d] for a in range(n - d)]).mean(0) for d in range(1, n)}


def block_writes(embed: torch.Tensor, layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Profiles of what each block adds to the residual stream: resid.L - resid.(L-1), [V, d] each."""
    return [layer - previous for previous, layer in zip([embed, *layers[:-1]], layers)]
