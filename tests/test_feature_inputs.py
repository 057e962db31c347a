"""The essay's four input-finding methods against brute force and hand computations on micro models."""

import pytest
import torch
from micro import micro_model

from lmfeatures.alignment.feature_inputs import (
    FeatureInputConfig,
    basis_cosines,
    embedding_ascent,
    greedy_search,
    greedy_step,
    nearest_token,
    pinv_decode,
    relaxed_onehot_ascent,
    vocab_profiles,
)
from lmfeatures.lm.hooks import HookedModel


@pytest.fixture(scope="module", params=["gpt_neox", "llama"])
def hm(request):
    return HookedModel(micro_model(request.param, seed=1))


def test_vocab_profiles_equal_each_token_run_alone(hm):
    profiles = vocab_profiles(hm, ["embed", "resid.1", "mlp.2"], batch_size=24)  # batches that do not divide V
    with torch.no_grad():
        for token in (0, 17, 63):
            alone = hm.run(["embed", "resid.1", "mlp.2"], input_ids=torch.tensor([[token]]))
            for hook, acts in alone.items():
                torch.testing.assert_close(profiles[hook][token], acts[0, 0], rtol=1e-5, atol=1e-5)
    assert profiles["resid.1"].shape == (64, 16) and profiles["mlp.2"].shape[0] == 64


def test_the_kv_cached_greedy_step_equals_running_every_candidate_in_full(hm):
    features = torch.tensor([3, 0, 11])
    prefixes = torch.tensor([[5, 9], [1, 1], [40, 2]])
    cached = greedy_step(hm, "resid.2", features, prefixes, batch_size=50)
    full = torch.cat([prefixes.repeat_interleave(64, 0), torch.arange(64).repeat(3)[:, None]], dim=1)  # [3 * 64, 3]
    with torch.no_grad():
        acts = hm.run(["resid.2"], input_ids=full)["resid.2"][:, -1]  # [3 * 64, d]
    expected = acts.gather(1, features.repeat_interleave(64)[:, None]).view(3, 64)
    torch.testing.assert_close(cached, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hook", ["resid.2", "mlp.1"])
def test_the_greedy_step_does_not_depend_on_its_chunk_size(hm, hook):
    features, prefixes = torch.tensor([3, 0, 11]), torch.tensor([[5, 9, 7], [1, 1, 1], [40, 2, 63]])
    one = greedy_step(hm, hook, features, prefixes, batch_size=1)
    whole = greedy_step(hm, hook, features, prefixes, batch_size=10_000)
    torch.testing.assert_close(one, whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(one.argmax(1), whole.argmax(1))


def test_the_greedy_step_reads_the_prefix_cache_as_a_view_never_a_copy(hm, monkeypatch):
    """Each chunk's cache is its feature's prefix expanded along the batch axis (stride 0): the
    landed step deep-copied the whole cache and gathered its rows for every chunk."""
    import copy

    from transformers.cache_utils import DynamicLayer

    from lmfeatures.alignment import feature_inputs

    def refuse(*args, **kwargs):
        raise AssertionError("the prefix cache was copied")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    for name in ("batch_select_indices", "batch_repeat_interleave", "reorder_cache"):
        monkeypatch.setattr(DynamicLayer, name, refuse)
    chunks, cache = [], feature_inputs.Cache

    def spy(layers):  # per chunk, per layer: (batch stride of keys, of values, rows)
        chunks.append([(layer.keys.stride(0), layer.values.stride(0), len(layer.keys)) for layer in layers])
        return cache(layers=layers)

    monkeypatch.setattr(feature_inputs, "Cache", spy)
    features, prefixes = torch.tensor([3, 0]), torch.tensor([[5, 9], [1, 1]])
    got = greedy_step(hm, "resid.2", features, prefixes, batch_size=24)
    assert len(chunks) == 2 * 3  # per feature: 24 + 24 + 16 of the 64 candidates
    assert all(len(layers) == 3 for layers in chunks)  # blocks 0..2 run up to resid.2
    assert {entry[:2] for layers in chunks for entry in layers} == {(0, 0)}
    assert sorted({entry[2] for layers in chunks for entry in layers}) == [16, 24]
    monkeypatch.undo()
    torch.testing.assert_close(got, greedy_step(hm, "resid.2", features, prefixes, batch_size=64), rtol=1e-5, atol=1e-6)


def test_greedy_search_appends_the_brute_force_best_token_at_each_step(hm):
    features = torch.tensor([2, 7])
    got = greedy_search(hm, "mlp.1", features, FeatureInputConfig(greedy_tokens=3, batch_size=40))
    for f, row in zip(features.tolist(), got.tolist()):
        prefix: list[int] = []
        for _ in range(3):
            seqs = torch.tensor([prefix + [t] for t in range(64)])
            with torch.no_grad():
                last = hm.run(["mlp.1"], input_ids=seqs)["mlp.1"][:, -1, f]
            prefix.append(int(last.argmax()))
        assert row == prefix


def test_pseudo_inverse_decoding_by_hand():
    # W_E rows (V = 3, d = 2): e = W a with W = W_E^T. W_E^T W_E = [[2, 1], [1, 2]], its inverse
    # [[2, -1], [-1, 2]] / 3, so a = W_E (W_E^T W_E)^-1 e. For e = (1, 0): (2/3, -1/3, 1/3) -> token 0.
    # For e = (0.2, 1): (-0.2, 0.6, 0.4) -> token 1.
    w_e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert pinv_decode(torch.tensor([[1.0, 0.0], [0.2, 1.0]]), w_e).tolist() == [0, 1]
    a = torch.tensor([0.2, 1.0]) @ torch.linalg.pinv(w_e.T).T
    torch.testing.assert_close(a, torch.tensor([-0.2, 0.6, 0.4]))
    # by cosine: (0.2, 1) is 11 degrees from (0, 1) and 34 from (1, 1); (0.9, 1) is 3 degrees from (1, 1)
    assert nearest_token(torch.tensor([[0.2, 1.0], [0.9, 1.0]]), w_e).tolist() == [1, 2]


def test_the_isolated_block_equals_a_model_without_the_blocks_before_it(hm):
    embeds = torch.randn(3, 5, hm.d_model, generator=torch.Generator().manual_seed(0))
    entry = torch.tensor([1, 2, 1])  # rows may enter at different blocks
    with torch.no_grad():
        isolated = hm.run(["resid.1", "resid.2"], inputs_embeds=embeds, block_input=(entry, embeds))
        blocks = hm.model.get_submodule(hm.spec.blocks)
        parent, _, name = hm.spec.blocks.rpartition(".")
        hm.model.get_submodule(parent).register_module(name, torch.nn.ModuleList(list(blocks)[1:]))
        try:  # hidden_states[1]: the output of the first remaining block (block 1; not the last, so not normed)
            alone = hm.model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[1]
        finally:
            hm.model.get_submodule(parent).register_module(name, blocks)
        whole = hm.run(["resid.1"], inputs_embeds=embeds)["resid.1"]
    torch.testing.assert_close(isolated["resid.1"][[0, 2]], alone[[0, 2]], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(isolated["resid.1"], whole, atol=1e-3)
    # row 1 enters block 2: its resid.1 is the model's own, its resid.2 is block 2 applied to the embedding
    torch.testing.assert_close(isolated["resid.1"][1], whole[1])
    with torch.no_grad():
        direct = hm.run(["resid.2"], inputs_embeds=embeds[1:2], block_input=(torch.tensor([2]), embeds[1:2]))
    torch.testing.assert_close(isolated["resid.2"][1], direct["resid.2"][0], rtol=1e-4, atol=1e-5)


def test_embedding_ascent_raises_every_feature_of_every_hook_in_one_batch(hm):
    features, hooks = torch.tensor([0, 5, 9]), ["resid.0", "resid.2"]
    cfg = FeatureInputConfig(gradient_tokens=3, gradient_steps=30)
    found = embedding_ascent(hm, hooks, features, cfg)
    start = embedding_ascent(hm, hooks, features, FeatureInputConfig(gradient_tokens=3, gradient_steps=1))
    assert found.activation.shape == (2, 3) and (found.activation > start.activation).all()
    with torch.no_grad():  # each (hook, feature) is read where it belongs
        acts = hm.run(hooks, inputs_embeds=found.embeddings[1])["resid.2"]
    torch.testing.assert_close(found.activation[1], acts.sum(1).gather(1, features[:, None]).squeeze(1))
    w_e = hm.embedding_matrix().detach()
    assert torch.equal(found.pinv_tokens, pinv_decode(found.embeddings, w_e))
    assert torch.equal(found.nearest_tokens, nearest_token(found.embeddings, w_e))
    own, others = basis_cosines(found.embeddings, features)
    expected = found.embeddings[0, 1, :, 5].abs() / found.embeddings[0, 1].norm(dim=-1)
    torch.testing.assert_close(own[0, 1], expected)
    unit = found.embeddings[1, 2].abs() / found.embeddings[1, 2].norm(dim=-1, keepdim=True)  # feature 9, resid.2
    torch.testing.assert_close(others[1, 2], unit[:, [j for j in range(hm.d_model) if j != 9]].mean(1))
    isolated = embedding_ascent(hm, hooks, features, cfg, isolated=True)
    assert torch.allclose(isolated.embeddings[0], found.embeddings[0], atol=1e-5)  # block 0 has nothing before it
    assert not torch.allclose(isolated.embeddings[1], found.embeddings[1])
    with pytest.raises(ValueError, match="needs resid hooks"):
        embedding_ascent(hm, ["mlp.1"], features, cfg, isolated=True)


def test_relaxed_onehot_returns_tokens_and_their_activation(hm):
    features, hooks = torch.tensor([1, 4]), ["mlp.0", "mlp.2"]
    cfg = FeatureInputConfig(gradient_tokens=3, relaxed_steps=20, position="last")
    tokens, value = relaxed_onehot_ascent(hm, hooks, features, cfg)
    assert tokens.shape == (2, 2, 3)
    with torch.no_grad():
        acts = hm.run(["mlp.2"], input_ids=tokens[1])["mlp.2"][:, -1]
    torch.testing.assert_close(value[1], acts.gather(1, features[:, None]).squeeze(1))


def test_basis_cosines_by_hand():
    # e = (3, 4, 0), |e| = 5: |cos(e, e_0)| = 0.6, the other basis vectors (0.8 + 0) / 2 = 0.4
    own, others = basis_cosines(torch.tensor([[[3.0, 4.0, 0.0]]]), torch.tensor([0]))
    assert own.item() == pytest.approx(0.6) and others.item() == pytest.approx(0.4)


def test_mlp_neurons_beyond_the_embedding_width_ascend_and_have_no_basis_cosine(hm):
    """The landed ascent gathered neuron 20 from a 16-wide embedding: an IndexError."""
    features = torch.tensor([3, hm.d_model + 4])
    found = embedding_ascent(hm, ["mlp.1"], features, FeatureInputConfig(gradient_tokens=2, gradient_steps=3))
    assert found.activation.shape == (1, 2) and found.pinv_tokens.shape == (1, 2, 2)
    with pytest.raises(ValueError, match="not mlp.L neurons"):
        basis_cosines(found.embeddings, features)


def test_greedy_first_step_searches_the_vocabulary_itself(hm):
    """From an empty prefix greedy reads every one-token input: equal to the exhaustive profiles,
    computed apart from them (the landed stage handed greedy the exhaustive winner)."""
    features = torch.tensor([2, 7, 15])
    first = greedy_step(hm, "resid.1", features, torch.empty(3, 0, dtype=torch.long), batch_size=24)
    torch.testing.assert_close(first, vocab_profiles(hm, ["resid.1"])["resid.1"][:, features].T)
