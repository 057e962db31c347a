"""Pruning's per-neuron evaluation pieces on hand-made inputs."""

import pytest
import torch
from micro import micro_model
from planted import ordered_pair_model

from lmfeatures.lm.architectures import context_free_mlp_layers
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.prune.evaluate import frontier_recall, n2g_examples, prune_neuron, split_by_document
from lmfeatures.prune.n2g import WILDCARD, Predictor
from lmfeatures.prune.prune import PruneConfig, Unit, Variant, activations_at, importance_matrices, prune
from lmfeatures.scan.neurons import Neuron
from lmfeatures.scan.scan import ScanConfig, make_windows, scan
from lmfeatures.store.scans import Scan


def test_frontier_recall_counts_the_firing_frontier_prompts_each_predictor_predicts():
    predictors = {
        "predictor": Predictor.from_json([[[7, WILDCARD, 9], 0.8]]),
        "token_lookup": Predictor.from_json([[[9], 0.6], [[4], 0.9]]),
    }
    frontier = [
        {"ids": [7, 1, 9], "rescored_target": 1.5},  # fires (0.75); patterns: yes; lookup: yes (9)
        {"ids": [3, 1, 9], "rescored_target": 1.2},  # fires (0.6); patterns: no; lookup: yes
        {"ids": [3, 9, 4], "rescored_target": 1.1},  # fires (0.55); patterns: no; lookup: yes (4, last)
        {"ids": [7, 1, 9], "rescored_target": 0.5},  # does not fire (0.25): not counted in recall
        {"ids": [9, 9, 5], "rescored_target": 1.9},  # fires; neither predicts at the last token
    ]
    row = frontier_recall(predictors, frontier, data_max=2.0, position="last")
    assert (row["prompts"], row["firing"]) == (5, 4)
    assert row["predictor"] == pytest.approx(1 / 4) and row["token_lookup"] == pytest.approx(3 / 4)
    # read at the max over positions: the last prompt's 9s now count for the lookup
    assert frontier_recall(predictors, frontier, 2.0, "max")["token_lookup"] == pytest.approx(1.0)


class _Tok:
    def decode(self, ids):
        return " ".join(str(int(t)) for t in ids)


def _planted_scan(hm, docs, context_length=12):
    windows = make_windows(docs, context_length)
    cfg = ScanConfig(context_length=context_length, batch_size=16, top_k=12, n_random=20, compile="never")
    result, _ = scan(hm, windows, cfg)
    return Scan(meta={}, tensors=result, windows=windows, path=None)


def _prune(hm, s, neuron, context_free=False):
    vocab = hm.vocab_size
    return prune_neuron(
        hm,
        _Tok(),
        s,
        neuron,
        PruneConfig(window=2),
        neutral=0,
        content=torch.ones(vocab, dtype=torch.bool),
        line_break=torch.zeros(vocab, dtype=torch.bool),
        propose=None,
        context_free=context_free,
    )


def test_patterns_beat_both_lookups_on_a_neuron_that_needs_its_context():
    """Planted: neuron 0 fires at b only right after a. Documents hold 'a b' pairs, or lone b's
    with no a anywhere; a lookup of b cannot tell them apart, the pattern (a, b) can."""
    hm, (a, b) = ordered_pair_model()
    g = torch.Generator().manual_seed(0)
    docs = []
    for d in range(40):
        doc = torch.randint(20, 120, (24,), generator=g)
        spots = torch.randperm(20, generator=g)[:3] + 2
        if d % 2:
            doc[spots[0]], doc[spots[0] + 1] = a, b
        else:
            doc[spots] = b
        docs.append(doc.tolist())
    evaluation, fitted, rows = _prune(hm, _planted_scan(hm, docs), Neuron(0, 0))
    f1 = {name: evaluation[name]["f1"] for name in ("predictor", "last_token_lookup", "token_lookup")}
    assert (a, b) in fitted["predictor"].patterns
    assert f1["predictor"] > f1["last_token_lookup"] + 0.2 and f1["predictor"] > f1["token_lookup"] + 0.2, f1
    assert rows and evaluation["n_test_documents"] > 0


def test_every_firing_token_is_stored_at_the_original_contexts_scale():
    """N2G's scale factor by hand: [.. a b] pruned to [a b] fires higher (a shorter prefix dilutes a
    less); its pattern is stored at original / data max, and a variant's tokens at their own
    activation times the same factor original / pruned."""
    hm, (a, b) = ordered_pair_model()
    unit, ids = Unit("mlp.0", 0), torch.tensor([75, 98, 74, a, b, 110])
    mae = prune(hm, unit, ids, anchor=4, line_start=0, cfg=PruneConfig(window=1))
    assert mae.ids.tolist() == [a, b, 110] and mae.activation > 1.5 * mae.original
    importance = importance_matrices(hm, unit, mae.ids[None], 0)[0]
    again = torch.tensor([a, 30, b])  # b two tokens after a: fires less, still above half
    variant = Variant(again, 1, 30, float(activations_at(hm, unit, [again], [2])[0]), "positive")
    data_max = 1.2 * mae.original
    examples = dict(n2g_examples(hm, unit, mae, [variant], importance, 0, 0.5, data_max))
    scale = mae.original / mae.activation / data_max
    assert examples[(a, b)] == pytest.approx(mae.original / data_max, rel=1e-5)  # = mae.activation * scale
    assert examples[(a, WILDCARD, b)] == pytest.approx(variant.activation * scale, rel=1e-5)
    assert set(examples) == {(a, b), (a, WILDCARD, b)}  # no other token fires


def test_on_a_context_free_layer_the_patterns_tie_the_lookup_of_their_own_tokens():
    """Layer 0 of a parallel-residual GPT-NeoX sees only the current token: every token's
    importance for another is exactly 0, so each pattern is one token and the predictor is its own
    final-token lookup."""
    hm = HookedModel(micro_model("gpt_neox", seed=3))
    assert context_free_mlp_layers(hm.model.config) == {0}
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(1, 64, (30,), generator=g).tolist() for _ in range(16)]
    evaluation, fitted, _ = _prune(hm, _planted_scan(hm, docs), Neuron(0, 5), context_free=True)
    assert fitted["predictor"].patterns and all(len(p) == 1 for p in fitted["predictor"].patterns)
    assert fitted["predictor"] == fitted["last_token_lookup"]
    assert evaluation["predictor"] == evaluation["last_token_lookup"] and evaluation["context_free"]


def test_context_free_layers_are_those_whose_activations_ignore_the_context():
    ids = torch.tensor([[7, 3, 9, 12, 5]])
    for arch, expected in (("gpt_neox", {0}), ("llama", set())):
        hm = HookedModel(micro_model(arch, seed=2))
        assert context_free_mlp_layers(hm.model.config) == expected
        with torch.no_grad():
            in_context = hm.run(["mlp.0"], input_ids=ids)["mlp.0"][0]
            alone = torch.cat([hm.run(["mlp.0"], input_ids=ids[:, i : i + 1])["mlp.0"][0] for i in range(5)])
        gap = float((in_context - alone).abs().max())  # float rounding differs between the two shapes
        assert (gap < 1e-5) == bool(expected) and (gap > 1e-3) != bool(expected), (arch, gap)


def test_the_split_keeps_every_document_on_one_side_and_the_sides_near_half():
    docs = [4, 4, 7, 1, 4, 9, 1, 3, 8, 8]  # ranks 0..9
    train, test = split_by_document(docs)
    # by hand, each new document to the smaller side (train on ties): 4 → train, 7 → test (0 < 2),
    # 1 → test (1 < 2), 9 → test (2 < 3), 3 → train (4 < 4 fails), 8 → train (4 < 4 fails)
    assert (train, test) == ([0, 1, 4, 7, 8, 9], [2, 3, 5, 6])
    assert not {docs[i] for i in train} & {docs[i] for i in test}
    assert split_by_document([2, 2, 2]) == ([0, 1, 2], [])
