"""Pruning, token importance and local search against brute force on micro models and a planted neuron."""

import pytest
import torch
from micro import micro_model
from planted import conjunction_model

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.prune.prune import (
    MAE,
    PruneConfig,
    Unit,
    activations_at,
    importance_matrices,
    local_search,
    prune,
    sequence_log_likelihood,
    substitutes,
)

UNIT = Unit("mlp.0", 0)  # the planted conjunction neuron: large when tokens a and b are both in the prefix


@pytest.fixture(scope="module")
def planted():
    hm, (a, b) = conjunction_model()
    # fillers, then a, then b (the anchor, position 6), then two more fillers
    return hm, a, b, torch.tensor([40, 41, 42, 43, 44, a, b, 45, 46])


def test_right_padding_leaves_every_activation_as_computed_alone():
    hm = HookedModel(micro_model("gpt_neox", seed=3))
    seqs = [torch.tensor([5, 9, 2, 7]), torch.tensor([3, 1]), torch.tensor([8, 8, 8])]
    batched = activations_at(hm, Unit("mlp.1", 4), seqs, [3, 0, 2])
    with torch.no_grad():
        alone = [hm.run(["mlp.1"], input_ids=s[None])["mlp.1"][0, at, 4] for s, at in zip(seqs, [3, 0, 2])]
    torch.testing.assert_close(batched, torch.stack(alone))


def test_the_mae_of_a_planted_conjunction_is_exactly_the_pattern_plus_the_window(planted):
    hm, a, b, ids = planted
    mae = prune(hm, UNIT, ids, anchor=6, line_start=0, cfg=PruneConfig(keep_share=0.8, window=2))
    assert mae.ids.tolist() == [a, b, 45, 46] and (mae.start, mae.anchor) == (5, 1) and mae.within_line
    full = activations_at(hm, UNIT, [ids[:7]], [6])[0]
    assert mae.original == pytest.approx(float(full)) and mae.activation > mae.original  # less dilution
    # b alone keeps ~0.75 of the full window's activation: at keep_share 0.7 the MAE is [b]
    assert prune(hm, UNIT, ids, 6, 0, PruneConfig(keep_share=0.7)).ids.tolist() == [b]
    # a line break between a and b: the line alone ([b]) loses the activation, so the MAE reaches back
    crossed = prune(hm, UNIT, ids, 6, line_start=6, cfg=PruneConfig(keep_share=0.8))
    assert crossed.ids.tolist() == [a, b] and not crossed.within_line


def test_pruning_rejects_an_anchor_outside_the_window_and_a_non_positive_activation(planted):
    hm, _, _, ids = planted
    with pytest.raises(ValueError, match="anchor 9 is outside the window of 9 tokens"):
        prune(hm, UNIT, ids, 9, 0, PruneConfig())
    with pytest.raises(ValueError, match="nothing to prune"):
        prune(hm, UNIT, ids[:4], 3, 0, PruneConfig())  # neither a nor b: the neuron is at 0


def test_the_anchors_importance_equals_masking_one_token_at_a_time(planted):
    hm, a, b, ids = planted
    mae = ids[3:9]  # 43 44 a b 45 46, anchor at 3
    importance = importance_matrices(hm, UNIT, mae[None], neutral=40)[0, 3]
    base = activations_at(hm, UNIT, [mae[:4]], [3])[0]
    for j in range(4):
        masked = mae[:4].clone()
        masked[j] = 40
        expected = 1 - activations_at(hm, UNIT, [masked], [3])[0] / base
        assert float(importance[j]) == pytest.approx(float(expected), abs=1e-5)
    assert importance[4:].tolist() == [0.0, 0.0]  # after the anchor: invisible to a causal model
    assert min(importance[2], importance[3]) > 0.3 > max(abs(importance[0]), abs(importance[1]))


def test_importance_matrices_rows_equal_masking_one_token_at_a_time_for_every_token():
    hm = HookedModel(micro_model("llama", seed=5))
    unit, ids, neutral = Unit("mlp.1", 2), torch.tensor([7, 3, 9, 40, 12, 5]), 40
    other = torch.tensor([40, 3, 2, 8, 12, 5])
    matrices = importance_matrices(hm, unit, torch.stack([other, ids]), neutral)  # prompts batched together
    torch.testing.assert_close(matrices[0], importance_matrices(hm, unit, other[None], neutral)[0])
    chunked = importance_matrices(hm, unit, torch.stack([other, ids]), neutral, max_sequences=3)  # a prompt per forward
    torch.testing.assert_close(chunked, matrices)
    matrix = matrices[1]
    for i in range(len(ids)):
        base = activations_at(hm, unit, [ids[: i + 1]], [i])[0]
        for j in range(len(ids)):
            masked = ids[: i + 1].clone()
            if j <= i:
                masked[j] = neutral
            expected = (
                0.0 if j > i or int(ids[j]) == neutral else float(1 - activations_at(hm, unit, [masked], [i])[0] / base)
            )
            assert float(matrix[i, j]) == pytest.approx(expected, abs=1e-4), (i, j)


def test_substitutes_are_ranked_by_the_masked_lm_posterior():
    """p(w | left) p(right | left, w) ∝ p(w | left, right): the ranking must equal the brute-force
    posterior over the whole vocabulary, restricted to the proposed candidates."""
    hm = HookedModel(micro_model("llama", seed=2))
    ids, position, anchor = torch.tensor([4, 17, 33, 8, 21]), 2, 4
    allowed = torch.ones(hm.vocab_size, dtype=torch.bool)
    cfg = PruneConfig(n_substitutes=5, candidate_k=8)
    picked = substitutes(hm, Unit("mlp.1", 3), ids, anchor, position, allowed, cfg)
    every = ids.repeat(hm.vocab_size, 1)
    every[:, position] = torch.arange(hm.vocab_size)
    with torch.no_grad():
        logp = hm.run([], input_ids=every, return_logits=True)["logits"].log_softmax(-1)
    by_hand = sum(logp[:, i - 1].gather(1, every[:, i : i + 1]).squeeze(1) for i in range(1, len(ids)))
    torch.testing.assert_close(sequence_log_likelihood(hm, every), by_hand)
    posterior = by_hand - by_hand.logsumexp(0)
    assert len(picked) == 5 and int(ids[position]) not in picked.tolist()
    assert posterior[picked].tolist() == sorted(posterior[picked].tolist(), reverse=True)
    next_token = set(logp[0, position - 1].topk(8).indices.tolist())
    assert set(picked.tolist()) & next_token  # the next-token proposer contributes


def test_local_search_labels_variants_by_the_share_of_the_mae_activation_they_keep(planted):
    hm, a, b, ids = planted
    cfg = PruneConfig(keep_share=0.5, important=-1.0, positive_share=0.9, negative_share=0.5, candidate_k=6)
    window = ids[3:7]  # 43 44 a b, taken whole as the example to vary
    act = float(activations_at(hm, UNIT, [window], [3])[0])
    mae = MAE(window, anchor=3, start=3, activation=act, original=act, within_line=True)
    importance = importance_matrices(hm, UNIT, mae.ids[None], neutral=40)[0, mae.anchor]
    allowed = torch.ones(hm.vocab_size, dtype=torch.bool)
    variants = local_search(hm, UNIT, mae, importance, allowed, cfg)
    assert variants and {v.position for v in variants} == set(range(mae.anchor + 1))
    for v in variants:
        share = float(activations_at(hm, UNIT, [v.ids], [mae.anchor])[0]) / mae.activation
        assert v.activation / mae.activation == pytest.approx(share, abs=1e-5)
        assert v.label == ("positive" if share >= 0.9 else "negative" if share < 0.5 else "neither")
        assert (v.ids != mae.ids).sum() == 1 and int(v.ids[v.position]) == v.token
    # swapping a leaves b alone (~0.66 of the activation: neither); swapping a filler keeps it all
    assert all(v.label == "neither" for v in variants if v.position == 2 and v.token != b)
    assert any(v.label == "positive" for v in variants if v.position in (0, 1))


def test_config_ranges():
    with pytest.raises(ValueError, match="keep_share"):
        PruneConfig(keep_share=0)
    with pytest.raises(ValueError, match="negative_share"):
        PruneConfig(positive_share=0.3, negative_share=0.6)
