"""Alignment metrics against scipy, brute force and hand counts, each null on profiles where the answer
is known, planted models where the essay's claim holds and where it does not, and the verdicts."""

import pytest
import torch
from scipy.stats import spearmanr

from lmfeatures.alignment.alignment import (
    argmax_with_null,
    best_match,
    compare,
    jaccard_with_null,
    paired_spearman,
    random_rotation,
    sequence_agreement,
    spearman_matrix,
    spearman_with_null,
    standard_ranks,
    top_tokens,
)
from lmfeatures.stats import bootstrap_mean, cluster_bootstrap_mean

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


def test_ranks_break_ties_by_position():
    """The landed double argsort was not stable: tied tokens (common in float32 profiles over a
    large vocabulary) got an order of the sort's own choosing, not the documented token order."""
    profiles = (torch.arange(200) % 3).float()[:, None]  # tokens 0, 3, 6, ... tie at 0, and so on
    expected = torch.cat([torch.arange(200)[torch.arange(200) % 3 == v] for v in range(3)]).argsort().double()
    expected = (expected - expected.mean()) / (expected - expected.mean()).norm()
    torch.testing.assert_close(standard_ranks(profiles)[0], expected, atol=1e-12, rtol=0)


def test_chunked_ranks_equal_the_whole_computation_and_no_call_ranks_more_than_a_chunk(monkeypatch):
    """Ranks are computed a chunk of features at a time (here 3 of 8, over 3 layers of V = 300):
    every statistic equals the one-chunk computation and the brute force, and no chunk is wider.
    The landed code ranked every layer whole, in float64 ([layers, F, V] held at once)."""
    from lmfeatures.alignment import alignment
    from lmfeatures.alignment.alignment import layer_pair_alignment

    layers = [torch.randn(300, 8, generator=GEN) for _ in range(3)]
    layers[1][:, 2] = 1.0  # a constant profile: NaN, and left out of the permuted null
    a, b = layers[0], layers[2]

    def everything() -> dict[str, torch.Tensor]:
        grid = layer_pair_alignment(layers, top_k=5, seed=4)
        return {
            **{f"grid.{k}": v for k, v in grid.items()},
            **{f"compare.{k}": v for k, v in compare(a, layers[1], 5).items()},
            "paired": paired_spearman(a, b),
            "matrix": spearman_matrix(a, b[:, :5]),
        }

    whole = everything()
    monkeypatch.setattr(alignment, "_RANK_ELEMENTS", 3 * 3 * 300)
    widths: list[int] = []

    def recording(profiles: torch.Tensor) -> torch.Tensor:
        widths.append(profiles.shape[1])
        return standard_ranks(profiles)

    monkeypatch.setattr(alignment, "standard_ranks", recording)
    chunked = everything()
    assert max(widths) <= 4  # 3 features of 3 layers; 4 when only two profile sets are ranked together
    for name, value in whole.items():  # the rotated null's columns come from a narrower matmul: float32 rounding
        torch.testing.assert_close(chunked[name], value, atol=1e-6, rtol=0, equal_nan=True, msg=name)
    brute = [spearmanr(a[:, i], b[:, i]).statistic for i in range(8)]
    torch.testing.assert_close(chunked["paired"], torch.tensor(brute, dtype=torch.float32))
    matrix = [[spearmanr(a[:, i], b[:, j]).statistic for j in range(5)] for i in range(8)]
    torch.testing.assert_close(chunked["matrix"], torch.tensor(matrix, dtype=torch.float32))


def test_stored_profiles_are_read_a_hook_at_a_time(tmp_path):
    """load_profiles reads a hook when it is indexed (the report holds one model's layers at a time,
    not every model's profiles): the landed version read the whole file up front."""
    from lmfeatures.io import DamagedFileError
    from lmfeatures.store.alignment import load_profiles, write_inputs

    written = {"embed": torch.randn(10, 4, generator=GEN), "resid.0": torch.randn(10, 4, generator=GEN)}
    write_inputs(tmp_path, written, {})
    profiles = load_profiles(tmp_path)
    assert sorted(profiles) == ["embed", "resid.0"] and len(profiles) == 2 and "resid.1" not in profiles
    write_inputs(tmp_path, {h: p + 1 for h, p in written.items()}, {})  # read when indexed, not when opened
    torch.testing.assert_close(profiles["resid.0"], written["resid.0"] + 1)
    with pytest.raises(KeyError):
        profiles["resid.1"]
    (tmp_path / "profiles.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DamagedFileError, match="profiles.safetensors is damaged"):
        load_profiles(tmp_path)


def test_topk_jaccard_by_hand():
    a = torch.tensor([[5.0], [4.0], [3.0], [0.0], [0.0]])
    b = torch.tensor([[0.0], [9.0], [8.0], [7.0], [0.0]])
    # top-2: {0, 1} and {1, 2}: 1 shared of 3; top-3: {0, 1, 2} and {1, 2, 3}: 2 of 4
    assert jaccard_with_null(top_tokens(a, 2)[1], top_tokens(b, 2)[1], 5)[0].item() == pytest.approx(1 / 3)
    assert jaccard_with_null(top_tokens(a, 3)[1], top_tokens(b, 3)[1], 5)[0].item() == pytest.approx(0.5)


def _brute_force_null(a, b, statistic):
    """[F]: the mean over j != i of statistic(a_i, b_j), NaN terms left out."""
    rows = []
    for i in range(a.shape[1]):
        terms = torch.tensor([statistic(a[:, i], b[:, j]) for j in range(b.shape[1]) if j != i], dtype=torch.float64)
        rows.append(terms[~torch.isnan(terms)].mean())
    return torch.stack(rows).float()


def test_the_permuted_nulls_are_the_mean_over_every_other_index():
    a = torch.randn(40, 7, generator=GEN)
    b = a[:, torch.tensor([1, 0, 2, 3, 4, 5, 6])] + 0.5 * torch.randn(40, 7, generator=GEN)
    b[:, 4] = 1.0  # a constant profile: no ranking, left out of the Spearman null
    b[a.argmax(0)[0], 5] = 99.0  # feature 5 of b is maximised by feature 0 of a's winner: a null hit
    same, null = spearman_with_null(a, b)
    torch.testing.assert_close(same, paired_spearman(a, b), equal_nan=True)
    expected = _brute_force_null(a, b, lambda x, y: spearmanr(x, y).statistic if y.std() > 0 else float("nan"))
    torch.testing.assert_close(null, expected, atol=1e-5, rtol=0)
    same, null = argmax_with_null(a.argmax(0), b.argmax(0), 40)
    torch.testing.assert_close(null, _brute_force_null(a, b, lambda x, y: float(x.argmax() == y.argmax())))
    assert null[0] > 0
    same, null = jaccard_with_null(top_tokens(a, 5)[1], top_tokens(b, 5)[1], 40)

    def jaccard(x, y):
        top_x, top_y = set(x.topk(5).indices.tolist()), set(y.topk(5).indices.tolist())
        return len(top_x & top_y) / len(top_x | top_y)

    torch.testing.assert_close(null, _brute_force_null(a, b, jaccard))
    torch.testing.assert_close(same, torch.tensor([jaccard(a[:, i], b[:, i]) for i in range(7)]))


def test_the_permuted_null_of_identical_profiles_sits_at_chance():
    profiles = torch.randn(4000, 64, generator=GEN)
    stats = compare(profiles, profiles, 10)
    assert stats["spearman"].min() > 0.999 and (stats["argmax"] == 1).all() and (stats["jaccard"] == 1).all()
    assert abs(stats["spearman_permuted"].mean()) < 0.02 and stats["argmax_permuted"].max() < 0.05
    assert stats["jaccard_permuted"].mean() < 0.01


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


def test_the_cluster_bootstrap_resamples_features_not_their_layers():
    """Two features, each measured at 50 layers: 0 everywhere and 1 everywhere. By hand, a resample
    draws two features, so its mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: the 95% interval
    is [0, 1]. Flattened, the 100 values look independent and the interval shrinks to about ±0.1."""
    values = torch.tensor([[0.0] * 50, [1.0] * 50])
    assert cluster_bootstrap_mean(values) == (0.5, 0.0, 1.0)
    _, lo, hi = bootstrap_mean(values.flatten())
    assert 0.35 < lo and hi < 0.65
    # NaN entries carry no weight; a feature's entries count as many times as the feature is drawn
    mean, lo, hi = cluster_bootstrap_mean(torch.tensor([[1.0, float("nan")], [3.0, 3.0]]))
    assert mean == pytest.approx(7 / 3) and (lo, hi) == (1.0, 3.0)


def test_sequence_agreement_and_its_null_by_hand():
    layer_0 = [[1, 2], [3, 4], [5, 6]]
    layer_1 = [[1, 2], [9, 9], [3, 4]]
    same, null = sequence_agreement(torch.tensor([layer_0, layer_1]))
    # feature 0 repeats its sequence; feature 1's [3, 4] reappears as feature 2's at layer 1: 1 of 2 others
    assert same.tolist() == [[1.0], [0.0], [0.0]] and null.tolist() == [[0.0], [0.5], [0.0]]


def test_layer_pair_alignment_equals_pairwise_statistics_and_their_nulls():
    from lmfeatures.alignment.alignment import by_distance, layer_pair_alignment, layer_pairs

    layers = [torch.randn(300, 8, generator=GEN) for _ in range(3)]
    grid = layer_pair_alignment(layers, top_k=5, seed=4)
    torch.testing.assert_close(grid["spearman"][0, 2], paired_spearman(layers[0], layers[2]), atol=1e-6, rtol=0)
    torch.testing.assert_close(grid["spearman"][2, 0], grid["spearman"][0, 2])
    direct = compare(layers[1], layers[2], 5)
    for name in ("argmax", "argmax_permuted", "jaccard", "jaccard_permuted", "spearman_permuted"):
        torch.testing.assert_close(grid[name][1, 2], direct[name])
    rotated = layers[2] @ random_rotation(8, 4)
    torch.testing.assert_close(grid["spearman_rotated"][0, 2], paired_spearman(layers[0], rotated), atol=1e-6, rtol=0)
    same = grid["spearman"]
    torch.testing.assert_close(layer_pairs(same), torch.stack([same[0, 1], same[0, 2], same[1, 2]], 1))
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
    from lmfeatures.alignment.alignment import block_writes, layer_pair_alignment, layer_pairs
    from lmfeatures.alignment.feature_inputs import vocab_profiles

    hm = _near_identity_model(0)
    profiles = vocab_profiles(hm, ["embed"] + [f"resid.{i}" for i in range(4)])
    layers = [profiles[f"resid.{i}"] for i in range(4)]
    raw = layer_pair_alignment(layers, top_k=10, seed=0)
    assert layer_pairs(raw["spearman"]).mean() > 0.95  # the identity path: every layer is the embedding
    assert layer_pairs(raw["argmax"]).mean() > 0.85 and layer_pairs(raw["argmax_permuted"]).mean() < 0.01
    assert abs(layer_pairs(raw["spearman_permuted"]).mean()) < 0.05
    assert abs(layer_pairs(raw["spearman_rotated"]).mean()) < 0.1
    # each block's own write is independent of every other's: at the null
    writes = layer_pair_alignment(block_writes(profiles["embed"], layers), top_k=10, seed=0)
    assert abs(layer_pairs(writes["spearman"]).mean()) < 0.1
    # resid.L - embed: layers a < b still share the writes of blocks 0..a, so it stays well above the
    # null (independent equal writes would give sqrt((a + 1) / (b + 1))) but below the raw alignment
    minus = layer_pair_alignment([p - profiles["embed"] for p in layers], top_k=10, seed=0)
    assert 0.3 < layer_pairs(minus["spearman"]).mean() < 0.9
    # exactly identity blocks: nothing is left after subtracting the embedding, and no correlation is defined
    with torch.no_grad():
        for block in hm.model.gpt_neox.layers:
            block.attention.dense.weight.zero_()
            block.mlp.dense_4h_to_h.weight.zero_()
    exact = vocab_profiles(hm, ["embed", "resid.2"])
    assert torch.isnan(paired_spearman(exact["resid.2"] - exact["embed"], exact["embed"])).all()


def _profiles_and_found(hm, n_layers: int) -> tuple[dict, dict]:
    from lmfeatures.alignment.feature_inputs import vocab_profiles

    profiles = vocab_profiles(hm, ["embed"] + [f"resid.{i}" for i in range(n_layers)])
    found = {
        "features": [0, 1, 2],
        "random_features": [2],
        "hooks": {h: {"exhaustive": p[:, :3].argmax(0).tolist()} for h, p in profiles.items() if h != "embed"},
    }
    return profiles, found


def test_planted_models_where_the_argmax_agrees_across_layers_and_where_it_does_not():
    """Near-identity blocks: the same maximising token at every layer, so the essay's claim holds
    there; blocks of the usual scale (the micro model as initialised) write enough to move it; two
    independent models share nothing index by index. The verdicts say so, per model."""
    from micro import micro_model

    from lmfeatures.alignment.metrics import compute_metrics
    from lmfeatures.lm.hooks import HookedModel
    from lmfeatures.report.alignment import agreement_verdict, verdicts

    models = {
        "identity": _near_identity_model(0),
        "written": HookedModel(micro_model("gpt_neox", seed=1, vocab_size=512, n_layers=4)),
    }
    pieces = {name: _profiles_and_found(hm, 4) for name, hm in models.items()}
    profiles, found = {n: p for n, (p, _) in pieces.items()}, {n: f for n, (_, f) in pieces.items()}
    kinds = dict.fromkeys(models, "trained")
    metrics = compute_metrics(profiles, found, kinds, {}, list(models), "resid", top_k=10, seed=0)
    identity = metrics["models"]["identity"]["across_layers"]["raw"]["argmax"]
    written = metrics["models"]["written"]["across_layers"]["raw"]["argmax"]
    assert identity["value"][0] > 0.85 and agreement_verdict(identity) == "holds"
    assert written["value"][0] < 0.4 and agreement_verdict(written) != "holds"
    sizes = metrics["sizes"][0]["depths"]["first block"]["argmax"]
    assert agreement_verdict(sizes) == "at chance"
    text = " ".join(verdicts(metrics))
    assert "**Across layers** (the essay" in text and "**Holds in 1 of 2** (identity)" in text
    assert "**Across sizes (first block)** (the essay: different-sized models share their features index by " \
        "index). **Does not hold**: at the permuted null in each" in text  # fmt: skip


def _decodings(tokens_of) -> dict:
    """A found dict with 6 method features (ids 0-4 the essay's, 10 random) at two layers, whose
    gradient decodings (3 positions) are tokens_of(feature)."""
    features = [0, 1, 2, 3, 4, 10]
    layer = {
        "exhaustive": [50 + f for f in features],
        "gradient": {"pinv": [[tokens_of(f)] * 3 for f in features], "nearest": [[60] * 3 for _ in features]},
    }
    return {"features": features, "random_features": [10], "hooks": {"resid.0": layer, "resid.1": layer}}


def test_id_equals_index_is_judged_against_the_other_features_indices():
    """A tokenizer whose id 0 is a special token every decoding falls into: feature 0 'decodes to its
    own index' as often as any feature decodes to feature 0's. The landed rule (at least 10 times
    chance 1/V) called that the essay's pattern; against the permuted null it is not."""
    from lmfeatures.alignment.metrics import method_metrics
    from lmfeatures.report.alignment import above, decoding_verdict

    attractor = method_metrics(_decodings(lambda f: 0), seed=0)["all"]["gradient_pinv_is_index"]
    assert attractor["value"][0] == pytest.approx(1 / 6)  # feature 0 only: above 10 / 4096 by far
    assert attractor["nulls"]["permuted"]["value"][0] == pytest.approx(1 / 6)  # each other feature hits id 0
    assert not above(attractor)
    own = method_metrics(_decodings(lambda f: f), seed=0)
    assert own["all"]["gradient_pinv_is_index"]["value"][0] == 1.0 and above(own["all"]["gradient_pinv_is_index"])
    assert own["random"]["gradient_pinv_is_index"]["value"] == [1.0, 1.0, 1.0]  # the random feature alone

    def verdict(found):
        entry = {"kind": "trained", "methods": method_metrics(found, seed=0)}
        return decoding_verdict({"models": {"m": entry}})

    assert "does not give id = index" in verdict(_decodings(lambda f: 0))
    assert "**The id = index pattern appears here** in m" in verdict(_decodings(lambda f: f))


def test_an_independent_random_model_sits_at_the_null():
    from lmfeatures.alignment.feature_inputs import vocab_profiles

    first = vocab_profiles(_near_identity_model(0), ["resid.2"])["resid.2"]
    second = vocab_profiles(_near_identity_model(1), ["resid.2"])["resid.2"]
    stats = compare(first, second, 10)
    same, null = stats["spearman"].mean(), stats["spearman_permuted"].mean()
    assert abs(same) < 0.1 and abs(same - null) < 0.1


def _record(value: list[float], null: list[float], difference: list[float]) -> dict:
    return {"value": value, "nulls": {"permuted": {"value": null, "difference": difference}}}


def test_the_verdict_rules_need_the_threshold_and_a_difference_above_zero():
    from lmfeatures.report.alignment import MIN_AGREEMENT, MIN_ALIGNED, agreement_verdict, aligned

    assert agreement_verdict(_record([0.8, 0.7, 0.9], [0.0] * 3, [0.8, 0.7, 0.9])) == "holds"
    assert agreement_verdict(_record([MIN_AGREEMENT - 0.1, 0.3, 0.5], [0.0] * 3, [0.4, 0.3, 0.5])) == "above chance"
    assert agreement_verdict(_record([0.8, 0.0, 1.0], [0.0] * 3, [0.8, 0.0, 1.0])) == "at chance"
    both = _record([0.5, 0.4, 0.6], [0.0] * 3, [0.5, 0.4, 0.6])
    both["nulls"]["rotated"] = {"value": [0.4] * 3, "difference": [0.1, -0.05, 0.2]}
    assert not aligned(both)  # above the permuted null, not above the rotated one
    assert not aligned(_record([MIN_ALIGNED - 0.01, 0.2, 0.3], [0.0] * 3, [0.2, 0.1, 0.3]))


def test_identity_verdict_follows_the_numbers():
    from lmfeatures.report.alignment import identity_verdict

    def metrics(raw, writes, identity):
        def spearman(value):
            record = _record([value] * 3, [0.0] * 3, [value - 0.05, value - 0.05, value + 0.05])
            record["nulls"]["rotated"] = record["nulls"]["permuted"]
            return {"spearman": record}

        across = {"raw": spearman(raw), "writes": spearman(writes), "minus_embed": spearman(raw)}
        entry = {"kind": "trained", "across_layers": across, "identity": {"all": [identity] * 3}}
        return {"models": {"m": entry}}

    assert "carried by the identity path: the embedding itself" in identity_verdict(metrics(0.9, 0.01, 0.8))
    assert "carried by the identity path, past the embedding" in identity_verdict(metrics(0.9, 0.01, 0.1))
    assert "the blocks' own writes are aligned too" in identity_verdict(metrics(0.9, 0.6, 0.1))
    assert "no across-layer alignment" in identity_verdict(metrics(0.01, 0.01, 0.1))


def test_the_stage_and_metrics_run_on_mlp_neurons_with_the_gradient_methods(tmp_path):
    """alignment.kind: mlp with the gradient method crashed in the landed stage (a neuron index
    gathered from the d_model-wide embedding); neurons have no basis cosine, every other number stays."""
    from micro import save_local_model

    from lmfeatures.alignment.metrics import compute_metrics
    from lmfeatures.stages.alignment import alignment_inputs
    from lmfeatures.store.alignment import load_methods, load_profiles

    save_local_model("gpt_neox", str(tmp_path / "model"), vocab_size=300)
    params = {"kind": "mlp", "methods": ["greedy", "gradient", "isolated"], "features": [0, 20], "random_features": 2,
              "greedy_tokens": 2, "gradient_tokens": 2, "gradient_steps": 3, "top_k": 5}  # fmt: skip
    out = tmp_path / "alignment"
    alignment_inputs(model_dir=str(tmp_path / "model"), out_dir=str(out), model="m", alignment_params=params,
                     config={}, seed=0, device="cpu")  # fmt: skip
    found = load_methods(out)
    assert len(found["features"]) == 4 and found["random_features"] == found["features"][2:]
    gradient = found["hooks"]["mlp.1"]["gradient"]
    assert "isolated" not in found["hooks"]["mlp.1"] and "basis_cosine" not in gradient
    metrics = compute_metrics({"m": load_profiles(out)}, {"m": found}, {"m": "trained"}, {}, [], "mlp", 5, 0)
    methods = metrics["models"]["m"]["methods"]["all"]
    assert "gradient_pinv_is_index" in methods and "gradient_basis_cosine" not in methods
    assert methods["greedy_first_is_exhaustive"]["value"][0] == 1.0
