"""Alignment metrics against scipy and hand counts, and each null on profiles where the answer is known."""

import pytest
import torch
from scipy.stats import spearmanr

from lmfeatures.alignment.alignment import (
    best_match,
    derangement,
    paired_spearman,
    random_rotation,
    sequence_agreement,
    spearman_matrix,
    topk_jaccard,
)
from lmfeatures.stats import bootstrap_mean

GEN = torch.Generator().manual_seed(0)
A = torch.randn(50, 6, generator=GEN)
B = A + 0.7 * torch.randn(50, 6, generator=GEN)


def test_spearman_equals_scipy():
    expected = [spearmanr(A[:, i], B[:, i]).statistic for i in range(6)]
    torch.testing.assert_close(paired_spearman(A, B), torch.tensor(expected, dtype=torch.float32))
    matrix = spearman_matrix(A, B[:, :4])
    assert matrix.shape == (6, 4)
    assert matrix[2, 3].item() == pytest.approx(spearmanr(A[:, 2], B[:, 3]).statistic, abs=1e-6)
    torch.testing.assert_close(best_match(A, B), spearman_matrix(A, B).max(1).values)


def test_topk_jaccard_by_hand():
    a = torch.tensor([[5.0], [4.0], [3.0], [0.0], [0.0]])
    b = torch.tensor([[0.0], [9.0], [8.0], [7.0], [0.0]])
    # top-2: {0, 1} and {1, 2}: 1 shared of 3; top-3: {0, 1, 2} and {1, 2, 3}: 2 of 4
    assert topk_jaccard(a, b, 2).item() == pytest.approx(1 / 3)
    assert topk_jaccard(a, b, 3).item() == pytest.approx(0.5)


def test_derangement_moves_every_index_and_is_a_permutation():
    for seed in range(20):
        perm = derangement(7, seed)
        assert sorted(perm.tolist()) == list(range(7)) and (perm != torch.arange(7)).all()


def test_the_permuted_null_of_identical_profiles_sits_at_chance():
    profiles = torch.randn(4000, 64, generator=GEN)
    assert paired_spearman(profiles, profiles).min() > 0.999
    null = paired_spearman(profiles, profiles[:, derangement(64, 0)])
    assert abs(null.mean()) < 0.02


def test_a_random_rotation_is_orthogonal_and_destroys_the_basis_but_not_the_subspace():
    q = random_rotation(64, 3)
    torch.testing.assert_close(q @ q.T, torch.eye(64), atol=1e-5, rtol=0)
    profiles = torch.randn(4000, 64, generator=GEN)
    rotated = profiles @ q
    assert abs(paired_spearman(profiles, rotated).mean()) < 0.05  # index i no longer matches index i
    torch.testing.assert_close(rotated @ q.T, profiles, atol=1e-4, rtol=0)  # nothing lost


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_features():
    small = torch.randn(20, generator=GEN) + 1
    large = torch.randn(2000, generator=GEN) + 1
    mean, lo, hi = bootstrap_mean(small)
    assert lo < mean < hi and mean == pytest.approx(small.double().mean().item())
    _, llo, lhi = bootstrap_mean(large)
    assert lhi - llo < (hi - lo) / 4
    assert bootstrap_mean(torch.tensor([float("nan"), 2.0, 4.0]))[0] == 3.0


def test_sequence_agreement():
    a = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert sequence_agreement(a, torch.tensor([[1, 2, 3], [4, 5, 7]])).tolist() == [True, False]


def test_layer_pair_alignment_equals_pairwise_spearman_and_its_nulls():
    from lmfeatures.alignment.alignment import by_distance, layer_pair_alignment, pairs_mean

    layers = [torch.randn(300, 8, generator=GEN) for _ in range(3)]
    pairs = layer_pair_alignment(layers, seed=4)
    torch.testing.assert_close(pairs["same"][0, 2], paired_spearman(layers[0], layers[2]), atol=1e-6, rtol=0)
    perm = derangement(8, 4)
    torch.testing.assert_close(
        pairs["permuted"][1, 2], paired_spearman(layers[1], layers[2][:, perm]), atol=1e-6, rtol=0
    )
    rotated = layers[2] @ random_rotation(8, 4)
    torch.testing.assert_close(pairs["rotated"][0, 2], paired_spearman(layers[0], rotated), atol=1e-6, rtol=0)
    same = pairs["same"]
    torch.testing.assert_close(pairs_mean(same), (same[0, 1] + same[0, 2] + same[1, 2]) / 3)
    distance = by_distance(same)
    torch.testing.assert_close(distance[1], (same[0, 1] + same[1, 2]) / 2)
    torch.testing.assert_close(distance[2], same[0, 2])


def _near_identity_model(seed: int):
    """A micro GPT-NeoX whose blocks add only a tiny, independently random change to the residual stream."""
    from micro import micro_model

    from lmfeatures.lm.hooks import HookedModel

    model = micro_model("gpt_neox", seed=seed, vocab_size=512, n_layers=4)
    with torch.no_grad():
        for block in model.gpt_neox.layers:
            for proj in (block.attention.dense, block.mlp.dense_4h_to_h):
                proj.weight.mul_(0.02)
                proj.bias.zero_()
    return HookedModel(model)


def test_identity_blocks_align_every_layer_and_the_identity_path_controls_remove_it():
    from lmfeatures.alignment.alignment import block_writes, layer_pair_alignment, pairs_mean
    from lmfeatures.alignment.feature_inputs import vocab_profiles

    hm = _near_identity_model(0)
    profiles = vocab_profiles(hm, ["embed"] + [f"resid.{i}" for i in range(4)])
    layers = [profiles[f"resid.{i}"] for i in range(4)]
    raw = layer_pair_alignment(layers, seed=0)
    assert pairs_mean(raw["same"]).mean() > 0.95  # the identity path: every layer is the embedding
    assert abs(pairs_mean(raw["permuted"]).mean()) < 0.05 and abs(pairs_mean(raw["rotated"]).mean()) < 0.1
    # each block's own write is independent of every other's: at the null
    writes = layer_pair_alignment(block_writes(profiles["embed"], layers), seed=0)
    assert abs(pairs_mean(writes["same"]).mean()) < 0.1
    # resid.L - embed: layers a < b still share the writes of blocks 0..a, so it stays well above the
    # null (independent equal writes would give sqrt((a + 1) / (b + 1))) but below the raw alignment
    subtracted = pairs_mean(layer_pair_alignment([p - profiles["embed"] for p in layers], seed=0)["same"]).mean()
    assert 0.3 < subtracted < 0.9
    # exactly identity blocks: nothing is left after subtracting the embedding, and no correlation is defined
    with torch.no_grad():
        for block in hm.model.gpt_neox.layers:
            block.attention.dense.weight.zero_()
            block.mlp.dense_4h_to_h.weight.zero_()
    exact = vocab_profiles(hm, ["embed", "resid.2"])
    assert torch.isnan(paired_spearman(exact["resid.2"] - exact["embed"], exact["embed"])).all()


def test_an_independent_random_model_sits_at_the_null():
    from lmfeatures.alignment.feature_inputs import vocab_profiles

    first = vocab_profiles(_near_identity_model(0), ["resid.2"])["resid.2"]
    second = vocab_profiles(_near_identity_model(1), ["resid.2"])["resid.2"]
    same = paired_spearman(first, second)
    null = paired_spearman(first, second[:, derangement(16, 0)])
    assert abs(same.mean()) < 0.1 and abs(same.mean() - null.mean()) < 0.1


def test_the_verdict_rule_needs_the_threshold_and_an_interval_above_every_null():
    from lmfeatures.report.alignment import MIN_ALIGNED, aligned

    null = [0.0, -0.05, 0.05]
    assert aligned([0.5, 0.4, 0.6], null, [0.1, 0.0, 0.2])
    assert not aligned([0.5, 0.15, 0.8], null, [0.1, 0.0, 0.2])  # interval overlaps the second null
    assert not aligned([MIN_ALIGNED - 0.01, 0.2, 0.3], null)  # above the null, below the threshold


def test_identity_verdict_follows_the_numbers():
    from lmfeatures.report.alignment import verdicts

    def pooled(raw, writes, identity):
        values = {
            "trained.layers.raw.same": raw,
            "trained.layers.raw.permuted": 0.0,
            "trained.layers.raw.rotated": 0.0,
            "trained.layers.raw.jaccard": 0.3,
            "trained.layers.raw.jaccard_permuted": 0.0,
            "trained.layers.writes.same": writes,
            "trained.layers.writes.permuted": 0.0,
            "trained.layers.writes.rotated": 0.0,
            "trained.layers.minus_embed.same": raw,
            "trained.identity": identity,
        }
        return {k: v + 0.01 * torch.randn(200, generator=GEN) for k, v in values.items()}

    carried = " ".join(verdicts({"models": {}, "sizes": []}, pooled(0.9, 0.05, 0.8), 0))
    assert "**Holds**" in carried and "carried by the identity path**: the embedding itself" in carried
    past = " ".join(verdicts({"models": {}, "sizes": []}, pooled(0.9, 0.05, 0.1), 0))
    assert "carried by the identity path, past the embedding" in past
    own = " ".join(verdicts({"models": {}, "sizes": []}, pooled(0.9, 0.6, 0.1), 0))
    assert "The blocks' own writes are aligned too" in own
    none = " ".join(verdicts({"models": {}, "sizes": []}, pooled(0.05, 0.05, 0.1), 0))
    assert "**Does not hold**" in none and "no across-layer alignment" in none
