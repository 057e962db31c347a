"""The per-feature checks against brute force and hand computations; token-class proxies; the planted
ground truth on which a trained SAE must pass and a random-decoder SAE must fail."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from micro import micro_model
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.checks import (
    HIST_BINS,
    CheckThresholds,
    Correlations,
    ProxyScores,
    ProxySelection,
    SparseCodes,
    best_correlations,
    best_dot,
    class_logprob,
    decoder_neuron_share,
    logit_scores,
    next_token_counts,
    passes,
    predicted_tokens,
)
from lmfeatures.sae.dictionary_checks import (
    NEURONS,
    CheckWindows,
    ModelReader,
    _class_effects,
    ablation_rows,
    check_dictionaries,
    class_predictions,
)
from lmfeatures.sae.planted import PlantedConfig, PlantedReader, plant, planted_windows, recovery
from lmfeatures.sae.proxies import ProxyError, check_proxies, frequent_tokens, proxy_labels, token_classes
from lmfeatures.sae.sae import SAEConfig, SparseAutoencoder, train_sae


def _units(seed=0, tokens=300, units=6, classes=3):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(tokens, units, generator=g).relu() * (torch.rand(tokens, units, generator=g) < 0.3)
    c = torch.rand(tokens, classes, generator=g) < 0.2
    c[:, 1] = u[:, 0] > 0  # class 1 is exactly where unit 0 is above 0
    return u, c


def _brute_fires(u, unit_max, share):
    return (u >= share * unit_max) & (u > 0)


def test_proxy_selection_is_the_best_f1_at_the_firing_threshold():
    u, c = _units()
    unit_max, share = u.max(0).values, 0.3
    sel = ProxySelection(unit_max, c.shape[1], share)
    for rows in (slice(0, 120), slice(120, 300)):
        sel.update(u[rows], c[rows])
    best, f1 = sel.best()
    fires = _brute_fires(u, unit_max, share)
    for unit in range(u.shape[1]):
        both = (fires[:, unit, None] & c).sum(0).double()
        precision, recall = both / fires[:, unit].sum(), both / c.sum(0)
        brute = (2 * precision * recall / (precision + recall)).nan_to_num(0)
        assert int(best[unit]) == int(brute.argmax()) and float(f1[unit]) == pytest.approx(float(brute.max()))


def test_proxy_scores_match_brute_force():
    u, c = _units(seed=1)
    share = 0.25
    unit_max = u.max(0).values * 1.1  # the selection windows' max, not these windows'
    best = torch.tensor([1, 0, 2, -1, 1, 0])
    windows, pos = 30, 10  # 300 tokens as 30 windows of 10
    valid = torch.ones(windows, pos, dtype=torch.bool)
    valid[3, :4] = False
    scores = ProxyScores(unit_max, best, c.shape[1], share, n_top=2, per_class=True)
    for w in (slice(0, 12), slice(12, 30)):
        scores.update(u.view(windows, pos, -1)[w], c.view(windows, pos, -1)[w], valid[w], w.start)
    got = scores.scores()
    keep = valid.flatten()
    uu, cc = u[keep], c[keep]
    fires = _brute_fires(uu, unit_max, share)
    for unit in range(u.shape[1]):
        n_fires = fires[:, unit].sum()
        assert float(got["fires"][unit]) == n_fires
        if best[unit] < 0:
            assert math.isnan(got["precision"][unit]) and math.isnan(got["llr"][unit])
            continue
        inside = (fires[:, unit] & cc[:, best[unit]]).sum()
        cls = cc[:, best[unit]].sum()
        assert float(got["precision"][unit]) == pytest.approx(float(inside / n_fires))
        assert float(got["recall"][unit]) == pytest.approx(float(inside / cls))
        assert float(got["lift"][unit]) == pytest.approx(float((inside / n_fires) / (cls / len(uu))), rel=1e-5)
        llr = math.log((inside + 0.5) / (cls + 1)) - math.log((n_fires - inside + 0.5) / (len(uu) - cls + 1))
        assert float(got["llr"][unit]) == pytest.approx(llr, rel=1e-5)
        bins = (uu[fires[:, unit], unit] / unit_max[unit] * HIST_BINS).long().clamp(max=HIST_BINS - 1)
        assert scores.hist_all[unit].tolist() == torch.bincount(bins, minlength=HIST_BINS).double().tolist()
    on_proxy = c.view(windows, pos, -1)[..., best.clamp(min=0)] & (best >= 0)  # [W, pos, U]
    window_max = (u.view(windows, pos, -1) * valid[..., None] * on_proxy).amax(1)
    top = window_max.topk(2, dim=0)
    assert scores.top_window.tolist() == torch.where(top.values > 0, top.indices, -1).tolist()
    assert (scores.top_window[:, 3] == -1).all()  # unit 3 has no proxy
    per_class = (fires[:, :, None] & cc[:, None, :]).sum(0).double()
    assert torch.equal(scores.per_class, per_class)
    precision = per_class / fires.sum(0)[:, None]
    base = cc.float().mean(0)
    t = CheckThresholds(specificity=0.5, lift=2.0)
    brute = ((precision >= 0.5) & (precision >= 2.0 * base)).any(0)
    assert scores.specific_classes(t).tolist() == brute.tolist() and brute[1]  # unit 0 is class 1


def test_correlations_match_numpy():
    g = torch.Generator().manual_seed(2)
    u = torch.randn(200, 5, generator=g).relu()
    v = torch.randn(200, 4, generator=g)
    v[:, 0] = u[:, 2] * 2 + 0.01 * v[:, 0]
    acc = Correlations(5, 4)
    for rows in (slice(0, 70), slice(70, 200)):
        acc.update(u[rows], v[rows])
    full = np.corrcoef(np.concatenate([u.numpy(), v.numpy()], 1).T)[:5, 5:]
    assert np.allclose(acc.result().numpy(), full, atol=1e-5) and acc.result()[2, 0] > 0.99


def _codes(seed, tokens, units, k):
    """TopK-like activations [tokens, units]: k nonnegative values per token, the rest 0; unit 0 never fires."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(tokens, units, generator=g)
    pre[:, 0] = -math.inf
    top = pre.topk(k, 1)
    return torch.zeros(tokens, units).scatter_(1, top.indices, top.values.relu())


def test_best_correlations_in_blocks_match_the_dense_brute_force():
    """Universality r from the batches' nonzeros, a few rows at a time (blocks smaller than the
    width), picks the same column with the same r as the dense [U, V] Pearson matrix."""
    u, v = _codes(3, 400, 40, 4), _codes(4, 400, 30, 3)
    v[:, 5] = u[:, 7] * 3 + 0.01 * v[:, 5]  # a match to find
    mine, theirs, dense = SparseCodes(40), SparseCodes(30), Correlations(40, 30)
    for rows in (slice(0, 150), slice(150, 270), slice(270, 400)):
        mine.update(u[rows])
        theirs.update(v[rows])
        dense.update(u[rows], v[rows])
    memory = 4 * 8 * 30 * 7  # 7 of the 40 rows per block
    column, r = best_correlations(mine, theirs, memory)
    want = dense.result()
    assert torch.equal(column, want.max(1).indices) and torch.equal(r, want.max(1).values)
    with np.errstate(invalid="ignore"):  # unit 0 is constant: NaN, which Pearson r here reads as 0
        full = np.nan_to_num(np.corrcoef(np.concatenate([u.numpy(), v.numpy()], 1).T)[:40, 40:])
    assert np.allclose(r.numpy(), full.max(1), atol=1e-5) and int(column[7]) == 5 and float(r[7]) > 0.99
    assert float(r[0]) == 0.0  # a unit that never fires correlates with nothing
    assert torch.equal(dense.result(memory), want)  # the neuron correlations in blocks of 9 rows: the same r


def test_best_dot_in_blocks_matches_the_dense_product():
    g = torch.Generator().manual_seed(5)
    rows, columns = torch.randn(50, 8, generator=g), torch.randn(70, 8, generator=g)
    index, value = best_dot(rows, columns, memory=4 * 70 * 6)  # 6 rows per block
    want = (rows @ columns.T).max(1)
    assert torch.equal(index, want.indices) and torch.allclose(value, want.values, rtol=1e-6)


def test_logit_scores_of_neurons_are_the_readout_rows():
    readout = torch.randn(6, 40, generator=torch.Generator().manual_seed(6))
    tokens = torch.randint(-1, 40, (6, 3), generator=torch.Generator().manual_seed(7))
    for got, want in zip(logit_scores(None, readout, tokens, chunk=4), logit_scores(torch.eye(6), readout, tokens)):
        assert torch.equal(got.nan_to_num(-1), want.nan_to_num(-1))


class _LargestTensor(TorchDispatchMode):
    """The most bytes of any dense tensor an op returns while the mode is active."""

    def __init__(self):
        super().__init__()
        self.bytes, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.numel() * t.element_size() > self.bytes:
                self.bytes, self.shape = t.numel() * t.element_size(), tuple(t.shape)
        return out


def _wide_dictionaries(**options):
    """Two random TopK SAEs of width 1024 on a planted layer of width 8 (vocab 50): a [d_sae, d_sae]
    tensor (4 MiB in float32) would be by far the largest thing the checks could build."""
    selection = _planted_windows(48, 1, vocab=50, n_classes=10, pos=16)
    check = _planted_windows(32, 2, vocab=50, n_classes=10, pos=16)
    predicted, after_any = class_predictions(selection, 50, 5)
    planted = plant(selection, predicted, 8, 4, after_any, PlantedConfig(directions=4, background=8, min_tokens=5))
    dicts = {}
    for name, seed in (("A", 0), ("B", 1)):
        g = torch.Generator().manual_seed(seed)
        sae = SparseAutoencoder(8, 1024, "topk", k=4)
        with torch.no_grad():
            sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(1024, 8, generator=g), dim=1))
            sae.W_enc.copy_(sae.W_dec.T)
        dicts[name] = sae.requires_grad_(False)
    dicts[NEURONS] = None
    names = [f"c{i}" for i in range(10)]
    reader = PlantedReader(planted)
    train, held = planted_windows(planted, selection, 1), planted_windows(planted, check, 2)
    return lambda memory: check_dictionaries(
        reader, dicts, train, held, names, predicted, CheckThresholds(), memory=memory, **options
    )


def test_the_checks_build_no_units_by_units_tensor_and_blocks_change_nothing():
    checks = _wide_dictionaries()
    whole = checks(2**30)  # every product in one block, 16 rows per ablation forward
    memory = 2**18
    assert ablation_rows(memory, 16, 50, 1024) < 16  # the ablations are split too
    with _LargestTensor() as largest:
        blocks = checks(memory)
    # never [1024, 1024] (4 or 8 MiB): a batch's activations [256 tokens, 1024] (1 MiB) at most
    assert largest.bytes <= 2**20 + memory, largest.shape
    for name, table in whole.tables.items():
        other = blocks.tables[name]
        for column in table.columns:
            if column == "other_decoder_cos":  # a matrix product's rounding depends on its block
                assert np.allclose(table[column], other[column], rtol=1e-6)
            else:
                assert table[column].equals(other[column]), column
    assert whole.tables["A"]["live"].sum() > 100 and whole.tables["A"]["other_corr"].notna().all()
    assert torch.equal(whole.correlations["A.neurons"], blocks.correlations["A.neurons"])


def test_a_class_predicts_the_tokens_that_follow_it_more_than_elsewhere():
    # class 0 at token 5; after it always 7; 9 follows everything (frequent, but no lift)
    ids = torch.tensor([[5, 7, 9, 9, 5, 7, 9, 3, 9, 5, 7]])
    classes = (ids == 5)[..., None]
    valid = torch.ones_like(ids, dtype=torch.bool)
    after, any_ = next_token_counts(ids, classes, valid, vocab=10)
    assert after[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 3, 0, 0] and any_[9] == 4 and any_.sum() == 10
    assert predicted_tokens(after, any_, n_tokens=3, min_count=2)[0].tolist() == [7, -1, -1]
    assert predicted_tokens(after, any_, n_tokens=3, min_count=4)[0].tolist() == [-1, -1, -1]


def test_class_logprob_by_hand():
    logits = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    p = torch.softmax(logits[0, 0], 0)
    got = class_logprob(logits, torch.tensor([[1, 3, -1]]))
    assert float(got) == pytest.approx(math.log(p[1] + p[3]), rel=1e-6)
    assert class_logprob(logits, torch.tensor([[-1, -1]])).isneginf().all()


def test_logit_scores_by_hand():
    directions = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    readout = torch.tensor([[1.0, -2.0, 0.5, 0.0, 0.3], [0.0, 3.0, -1.0, 0.2, 0.1]])
    tokens = torch.tensor([[0, 4], [2, -1]])
    ids, weights, low_ids, low_weights, share = logit_scores(directions, readout, tokens, top=2, chunk=1)
    assert ids.tolist() == [[0, 2], [1, 3]] and weights.flatten().tolist() == pytest.approx([1.0, 0.5, 6.0, 0.4])
    assert low_ids.tolist() == [[1, 3], [2, 0]] and low_weights.flatten().tolist() == pytest.approx([-2.0, 0, -2.0, 0])
    # unit 0's two most promoted are 0 and 2: one of its predicted tokens (0, 4); unit 1's one is 1, not 2
    assert share.tolist() == [0.5, 0.0]
    top, mass = decoder_neuron_share(torch.tensor([[3.0, -1.0, 0.0], [0.5, 0.5, -1.0]]))
    assert top.tolist() == [0, 2] and mass.tolist() == pytest.approx([0.75, 0.5])


def test_pass_rule():
    values = {
        "precision": torch.tensor([0.9, 0.6, 0.9, math.nan]),
        "lift": torch.tensor([3.0, 1.5, 2.0, math.nan]),  # unit 1: above 0.5 but only 1.5x its class's base rate
        "recall": torch.tensor([0.6, 0.9, 0.5, math.nan]),
        "downstream": torch.tensor([-0.06, -0.2, -0.05, math.nan]),
        "layer_downstream": torch.tensor([-0.1, -0.2, -0.5, math.nan]),
        "downstream_share": torch.tensor([0.6, 1.0, 0.1, math.nan]),
        "neuron_specific": torch.tensor([False, False, True, False]),
        "universality": torch.tensor([0.5, 0.9, 0.4, math.nan]),
    }
    verdict = passes(values, CheckThresholds())
    assert verdict["specificity"].tolist() == [True, False, True, False]
    assert verdict["sensitivity"].tolist() == [True, True, True, False]
    assert verdict["downstream"].tolist() == [True, True, False, False]  # unit 2: a tenth of the layer's effect
    assert verdict["not_a_neuron"].tolist() == [True, False, False, False]  # specific, and no neuron is
    assert verdict["universality"].tolist() == [True, True, False, False]
    del values["neuron_specific"]  # neurons: not applicable
    assert not passes(values, CheckThresholds())["not_a_neuron"].any()


def test_downstream_effect_matches_zeroing_the_neuron_by_hand():
    model = micro_model("gpt_neox", seed=0)
    hooked = HookedModel(model)
    reader = ModelReader(hooked, 0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, hooked.vocab_size, (3, 10), generator=g)
    classes = torch.rand(3, 10, 2, generator=g) < 0.7
    windows = CheckWindows(ids, torch.ones(3, 10, dtype=torch.bool), classes)
    predicted = torch.tensor([[4, 9, -1], [2, -1, -1]])
    rows_window, rows_unit, rows_class = torch.tensor([0, 1, 2]), torch.tensor([5, 17, 5]), torch.tensor([0, 1, 1])
    with torch.no_grad():
        acts = hooked.run(["mlp.0"], input_ids=ids)["mlp.0"]
        maxima = acts.amax((0, 1))
        layer_mean = acts.mean((0, 1))
        effect, layer_effect, count = _class_effects(
            reader, None, windows, rows_window, rows_unit, rows_class, predicted, maxima, 0.0, layer_mean
        )
        mlp = model.gpt_neox.layers[0].mlp
        for r in range(3):
            w, unit, cls = int(rows_window[r]), int(rows_unit[r]), int(rows_class[r])
            mask = (acts[w, :, unit] > 0) & classes[w, :, cls]
            tokens = predicted[cls][predicted[cls] >= 0]

            def logp(m, w=w, tokens=tokens):
                return torch.log_softmax(m(ids[w : w + 1]).logits[0], -1)[:, tokens].logsumexp(-1)

            clean = logp(model)
            saved = mlp.dense_4h_to_h.weight[:, unit].clone()  # test-only surgery: the neuron's W_out column
            mlp.dense_4h_to_h.weight[:, unit] = 0.0
            removed = logp(model)
            mlp.dense_4h_to_h.weight[:, unit] = saved
            saved_w, saved_b = mlp.dense_4h_to_h.weight.clone(), mlp.dense_4h_to_h.bias.clone()
            mlp.dense_4h_to_h.bias += saved_w @ layer_mean  # mean-ablating the layer: its output at the mean
            mlp.dense_4h_to_h.weight.zero_()
            ablated = logp(model)
            mlp.dense_4h_to_h.weight.copy_(saved_w)
            mlp.dense_4h_to_h.bias.copy_(saved_b)
            assert float(count[r]) == int(mask.sum()) > 0
            assert float(effect[r]) == pytest.approx(float((removed - clean)[mask].mean()), abs=1e-5)
            assert float(layer_effect[r]) == pytest.approx(float((ablated - clean)[mask].mean()), abs=1e-5)


def test_proxy_labels_by_hand():
    text = 'import os\n@deco(1)\ndef f(x):\n    """Doc."""\n    # note. x\n    for i in "a for"\n'
    tokens = [
        "import",
        " os",
        "\n",
        "@",
        "deco",
        "(",
        "1",
        ")",
        "\n",
        "def",
        " f",
        "(",
        "x",
        "):",
        "\n   ",
        ' """',
        "Doc",
        '."""',
        "\n   ",
        " #",
        " note",
        ".",
        " x",
        "\n   ",
        " for",
        " i",
        " in",
        ' "',
        "a",
        " for",
        '"',
        "\n",
    ]
    offsets, at = [], 0
    for t in tokens:
        offsets.append((at, at + len(t)))
        at += len(t)
    assert "".join(tokens) == text
    names = ["for", ".", "@indent", "@digits", "@comment", "@string", "@docstring", "@import", "@decorator"]
    names += ["@bracket", "@line_start"]
    labels = proxy_labels(text, tokens, offsets, names)
    got = {name: [tokens[i] for i in labels[:, c].nonzero()[:, 0].tolist()] for c, name in enumerate(names)}
    assert got["for"] == [" for", " for"]
    assert got["."] == ["."]
    assert got["@indent"] == ["\n   ", "\n   ", "\n   "]  # the final bare newline is no indentation
    assert got["@digits"] == ["1"]
    assert got["@comment"] == [" #", " note", ".", " x"]
    assert got["@string"] == [' """', "Doc", '."""', ' "', "a", " for", '"']
    assert got["@docstring"] == [' """', "Doc", '."""']  # a string standing alone; "a for" is in a for line
    assert got["@import"] == ["import", " os"]
    assert got["@decorator"] == ["@", "deco", "(", "1", ")"]
    assert got["@bracket"] == ["1", "x"]  # inside ( ): "):" ends on ':' outside the bracket
    assert got["@line_start"] == ["import", "@", "def", ' """', " #", " for"]
    assert not proxy_labels("x = (", ["x", " =", " ("], [(0, 1), (1, 3), (3, 5)], ["@string"]).any()  # not Python


def test_frequent_tokens_become_classes():
    ids = torch.tensor([[3, 3, 3, 7, 7, 1], [7, 3, 1, 9, 9, 9]])
    assert frequent_tokens(ids, min_tokens=3, max_classes=5).tolist() == [3, 7, 9]
    assert frequent_tokens(ids, min_tokens=3, max_classes=1).tolist() == [3]  # the most frequent first
    assert token_classes(ids, torch.tensor([3, 9]))[1].tolist() == [[0, 0], [1, 0], [0, 0], [0, 1], [0, 1], [0, 1]]


def test_bad_proxies_are_named():
    with pytest.raises(ProxyError, match="'@keyword' is not a known class"):
        check_proxies(["for", "@keyword"])
    with pytest.raises(ProxyError, match="empty"):
        check_proxies([" "])


def _planted_windows(n_windows, seed, vocab=300, n_classes=40, pos=64):
    """Token windows whose classes are token id mod n_classes; after a class-c token, token 7c mod
    vocab follows half the time (so each class predicts a token)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_windows, pos), generator=g)
    follow = torch.rand(n_windows, pos - 1, generator=g) < 0.5
    ids[:, 1:] = torch.where(follow, (ids[:, :-1] % n_classes) * 7 % vocab, ids[:, 1:])
    classes = torch.nn.functional.one_hot(ids % n_classes, n_classes).bool()
    return CheckWindows(ids, torch.ones(n_windows, pos, dtype=torch.bool), classes)


@pytest.fixture(scope="module")
def planted_checks():
    """SAEs A, B and random-decoder A, B trained on planted activations (24 class directions and 64
    background ones in R^64, k = 4), checked with the planted readout."""
    d, k, vocab = 64, 4, 300
    selection, check = _planted_windows(600, 1, vocab), _planted_windows(300, 2, vocab)
    predicted, after_any = class_predictions(selection, vocab, 20)
    planted = plant(selection, predicted, d, k, after_any, PlantedConfig(directions=24, background=64))
    train, held = planted_windows(planted, selection, 1), planted_windows(planted, check, 2)
    dicts = {}
    for name, seed in (("A", 0), ("B", 1), ("random-A", 0), ("random-B", 1)):
        cfg = SAEConfig(expansion=2, k=k, tokens=300_000, batch_size=512, seed=seed, frozen_decoder="random" in name)
        dicts[name] = train_sae(train.acts[train.valid], cfg)[0]
    dicts[NEURONS] = None
    names = [f"c{i}" for i in range(selection.classes.shape[-1])]
    found = check_dictionaries(PlantedReader(planted), dicts, train, held, names, predicted, CheckThresholds())
    return planted, dicts, found, [names[c] for c in planted.classes.tolist()], predicted


def _planted_pass_rates(table: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    """Per check, the share of planted classes whose unit (best selection F1 among the live units with
    that proxy) passes."""
    from lmfeatures.report.sae import planted_features

    chosen = planted_features(table, classes)
    return {c: float(chosen[f"pass_{c}"].mean()) for c in ("specificity", "sensitivity", "downstream", "all")}


def test_a_trained_sae_recovers_the_planted_directions_and_passes(planted_checks):
    planted, dicts, found, classes, predicted = planted_checks
    assert len(classes) == 24 and planted.background.shape == (64, 64)
    for name in ("A", "B"):
        _, cosine = recovery(planted.directions, dicts[name].W_dec.detach())
        assert (cosine >= 0.9).float().mean() >= 0.9
        rates = _planted_pass_rates(found.tables[name], classes)
        assert min(rates.values()) >= 0.8, rates


def test_a_random_decoder_fails_the_decoder_checks_on_planted_data(planted_checks):
    planted, dicts, found, classes, predicted = planted_checks
    for name in ("random-A", "random-B"):
        _, cosine = recovery(planted.directions, dicts[name].W_dec.detach())
        assert (cosine >= 0.9).float().mean() == 0
        rates = _planted_pass_rates(found.tables[name], classes)
        assert rates["downstream"] <= 0.2 and rates["all"] <= 0.1, rates
    neurons = _planted_pass_rates(found.tables[NEURONS], classes)
    assert neurons["specificity"] <= 0.1  # planted directions are not axis-aligned


def test_the_best_proxy_is_chosen_on_the_selection_windows(planted_checks):
    """Checked on windows whose class labels are rotated by one, the units keep the proxies the
    selection windows gave them, and then fail specificity: nothing is selected on the scored data."""
    planted, dicts, found, classes, predicted = planted_checks
    _, check = _planted_windows(600, 1), _planted_windows(300, 2)
    held = planted_windows(planted, check, 2)
    held.classes = held.classes.roll(1, dims=-1)
    train = planted_windows(planted, _planted_windows(600, 1), 1)
    names = [f"c{i}" for i in range(check.classes.shape[-1])]
    reader = PlantedReader(planted)
    rotated = check_dictionaries(reader, {"A": dicts["A"]}, train, held, names, predicted, CheckThresholds())
    before, after = found.tables["A"], rotated.tables["A"]
    assert after["best_proxy"].equals(before["best_proxy"])
    assert before["pass_specificity"].sum() > 20 and after["pass_specificity"].sum() == 0


def _table(n: int, passing: dict[str, int]) -> pd.DataFrame:
    """n live units, the first passing[check] of them passing each check."""
    from lmfeatures.sae.checks import CHECKS

    frame = pd.DataFrame({"live": [True] * n})
    for c in CHECKS:
        frame[f"pass_{c}"] = np.arange(n) < passing.get(c, 0)
    return frame


def test_verdict_sentences_are_computed_from_the_counts():
    from lmfeatures.report.sae import _verdicts, pass_rates

    checks = {
        ("m", "A"): _table(400, {"specificity": 200, "sensitivity": 40, "downstream": 120, "universality": 100}),
        ("m", "random-A"): _table(400, {"specificity": 190, "sensitivity": 40, "downstream": 10, "universality": 100}),
        ("m", "neurons"): _table(100, {"specificity": 2, "sensitivity": 60}),
    }
    rates = pass_rates(checks, "m")
    assert rates.set_index("name").loc["A", "specificity"] == 0.5
    assert np.isnan(rates.set_index("name").loc["neurons", "universality"])  # not applicable to neurons
    lines = _verdicts(rates, "m", None)
    against_random = next(line for line in lines if "random-decoder" in line)
    assert "above it on downstream;" in against_random  # 30% [26, 35] vs 2.5% [1.4, 4.5]
    assert "not above on specificity, sensitivity, not a neuron, universality, all" in against_random
    against_neurons = next(line for line in lines if "neurons" in line)
    assert "above it on specificity, downstream;" in against_neurons and "not above on sensitivity" in against_neurons


@pytest.mark.parametrize(
    "text", ["", "x", "  a = 1\n\n\tb\r\n  \x0c c\n", "if x:\n    y  # c\n\u2028 z\n   \n", "\xa0\n \xa0x\n"]
)
def test_line_starts_equal_a_loop_over_lines(text):
    """The vectorised line starts against str.splitlines and lstrip, line by line."""
    from lmfeatures.sae.proxies import _line_start_chars

    expected, at = torch.zeros(len(text), dtype=torch.bool), 0
    for line in text.splitlines(keepends=True):
        body = line.lstrip(" \t")
        if body.strip():
            expected[at + len(line) - len(body)] = True
        at += len(line)
    assert torch.equal(_line_start_chars(text), expected)


def test_the_downstream_check_on_a_sample_of_units_equals_the_full_check_there():
    """sae.downstream_units: the sampled units (and each class's best unit) get the same downstream
    numbers as when every unit is measured; the others none; the rates count the sample only."""
    from lmfeatures.report.sae import pass_rates
    from lmfeatures.sae.dictionary_checks import downstream_sample

    full, sampled = _wide_dictionaries(), _wide_dictionaries(downstream_units=40)
    whole, part = full(2**30), sampled(2**30)
    table, sub = whole.tables["A"], part.tables["A"]
    assert table["downstream_sampled"].equals(table["live"])  # None: every live unit
    assert sub["downstream_sampled"].sum() == 40 and (sub["downstream_sampled"] <= sub["live"]).all()
    measured = sub["downstream_positions"] > 0
    assert measured[sub["downstream_sampled"]].mean() > 0.5  # most sampled units fire on their class
    for column in ("downstream", "layer_downstream", "downstream_positions"):
        assert np.allclose(sub.loc[measured, column], table.loc[measured, column], equal_nan=True), column
    assert sub.loc[~sub["downstream_sampled"] & ~measured, "downstream"].isna().all()
    rates = pass_rates({("m", "A"): sub}, "m").iloc[0]
    expected = sub.loc[sub["live"] & sub["downstream_sampled"], "pass_downstream"].mean()
    assert rates["downstream"] == pytest.approx(expected) and rates["live"] == sub["live"].sum()
    # the planted rows: one chosen unit per class (measured whatever the sample), a class without one fails
    from lmfeatures.report.sae import planted_rates

    classes = [*sub.loc[measured & ~sub["downstream_sampled"], "best_proxy"].dropna().unique()[:2], "absent"]
    planted = planted_rates({"A": sub}, {"planted_classes": classes, "recovery": {}}).iloc[0]
    assert planted["classes"] == len(classes) and planted["downstream_n"] <= len(classes) - 1
    # each class's best unit is measured whatever the sample: the ones the report shows for a class
    live = torch.tensor([True, True, True, False, True])
    best = torch.tensor([0, 0, 1, 1, -1])
    f1 = torch.tensor([0.2, 0.5, 0.4, 0.9, 0.1])
    s, m = downstream_sample(live, best, f1, 1, seed=3, shown=[0, 1])
    assert int(s.sum()) == 1 and (s <= live).all()
    assert m.tolist() == [bool(s[0]), True, True, False, bool(s[4])]  # unit 3 is not live
    assert downstream_sample(live, best, f1, 1, seed=3)[1].equal(s)  # no class shown: the sample alone
