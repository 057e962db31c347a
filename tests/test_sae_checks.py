"""The per-feature checks against brute force and hand computations; token-class proxies."""

import math

import numpy as np
import pytest
import torch
from micro import micro_model

from lmfeatures.lm.hooks import HookedModel
from lmfeatures.sae.checks import (
    HIST_BINS,
    CheckAccumulator,
    CheckThresholds,
    ablation_effects,
    decoder_neuron_share,
    logit_weights,
    next_token_logprobs,
    passes,
)
from lmfeatures.sae.proxies import ProxyError, check_proxies, proxy_labels


def _data(seed=0, tokens=300, units=6, neurons=4, other=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(tokens, units, generator=g).relu() * (torch.rand(tokens, units, generator=g) < 0.3)
    n = torch.randn(tokens, neurons, generator=g)
    n[:, 0] = u[:, 2] * 2 + 0.01 * n[:, 0]  # neuron 0 tracks unit 2
    o = torch.randn(tokens, other, generator=g).relu()
    o[:, 3] = u[:, 1]  # the other run's unit 3 is unit 1
    c = torch.rand(tokens, classes, generator=g) < 0.2
    c[:, 1] = u[:, 0] > 0  # class 1 is exactly where unit 0 fires
    return u, n, o, c


def test_streaming_correlations_and_proxy_scores_match_brute_force():
    u, n, o, c = _data()
    acc = CheckAccumulator(u.shape[1], n.shape[1], o.shape[1], c.shape[1], u.max(0).values)
    for rows in (slice(0, 100), slice(100, 170), slice(170, 300)):
        acc.update(u[rows], c[rows], neurons=n[rows], other=o[rows])
    full = np.corrcoef(np.concatenate([u.numpy(), n.numpy(), o.numpy()], 1).T)
    k = u.shape[1]
    assert np.allclose(acc.correlation("neurons").numpy(), full[:k, k : k + n.shape[1]], atol=1e-5)
    assert np.allclose(acc.correlation("other").numpy(), full[:k, k + n.shape[1] :], atol=1e-5)
    assert acc.correlation("neurons")[2, 0] > 0.99 and acc.correlation("other")[1, 3] == pytest.approx(1.0)

    scores = acc.proxy_scores()
    fires = u > 0
    for unit in range(k):
        both = (fires[:, unit, None] & c).sum(0).double()
        precision = both / fires[:, unit].sum()
        recall = both / c.sum(0)
        f1 = 2 * precision * recall / (precision + recall)
        best = int(f1.nan_to_num(0).argmax())
        assert int(scores["best_proxy"][unit]) == best
        assert float(scores["precision"][unit]) == pytest.approx(float(precision[best]))
        assert float(scores["recall"][unit]) == pytest.approx(float(recall[best]))
        p_in = (both[best] + 0.5) / (c[:, best].sum() + 1)
        p_out = (fires[:, unit].sum() - both[best] + 0.5) / (len(u) - c[:, best].sum() + 1)
        assert float(scores["llr"][unit]) == pytest.approx(math.log(p_in / p_out), rel=1e-5)
    assert int(scores["best_proxy"][0]) == 1 and scores["precision"][0] == 1 and scores["recall"][0] == 1
    assert scores["density"].tolist() == pytest.approx(fires.float().mean(0).tolist())

    inside, total = acc.best_class_hist(scores["best_proxy"])
    unit = 0
    bins = (u[fires[:, unit], unit] / u[:, unit].max() * HIST_BINS).long().clamp(max=HIST_BINS - 1)
    assert total[unit].tolist() == torch.bincount(bins, minlength=HIST_BINS).float().tolist()
    assert inside[unit].tolist() == total[unit].tolist()  # every firing token of unit 0 is in class 1


def test_pass_rule():
    values = {
        "specificity": torch.tensor([0.9, 0.4, 0.9, 0.9]),
        "sensitivity": torch.tensor([0.6, 0.9, 0.9, 0.9]),
        "downstream": torch.tensor([0.06, 0.05, math.nan, 0.04]),
        "not_a_neuron": torch.tensor([0.2, 0.5, 0.2, math.nan]),
        "universality": torch.tensor([0.5, 0.9, 0.9, 0.9]),
    }
    verdict = passes(values, CheckThresholds())
    assert verdict["specificity"].tolist() == [True, False, True, True]
    assert verdict["downstream"].tolist() == [True, True, False, False]  # NaN (never measured) fails
    assert verdict["not_a_neuron"].tolist() == [True, False, True, False]  # at the threshold or n/a fails
    assert verdict["universality"].tolist() == [True, True, True, True]  # at the threshold passes


def test_decoder_share_and_logit_weights_by_hand():
    top, share = decoder_neuron_share(torch.tensor([[3.0, -1.0, 0.0], [0.5, 0.5, -1.0]]))
    assert top.tolist() == [0, 2] and share.tolist() == pytest.approx([0.75, 0.5])
    directions = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    w_out = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    w_u = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 3.0, -1.0, 0.2], [9.0, 9.0, 9.0, 9.0]])
    ids, weights, low_ids, low_weights = logit_weights(directions, w_out, w_u, top=2)
    assert ids.tolist() == [[0, 2], [1, 3]] and weights.flatten().tolist() == pytest.approx([1.0, 0.5, 6.0, 0.4])
    assert low_ids.tolist() == [[1, 3], [2, 0]] and low_weights.flatten().tolist() == pytest.approx(
        [-2.0, 0.0, -2.0, 0.0]
    )


def test_ablation_effect_matches_zeroing_the_neuron_by_hand():
    model = micro_model("gpt_neox", seed=0)
    hooked = HookedModel(model)
    ids = torch.randint(0, hooked.vocab_size, (3, 10), generator=torch.Generator().manual_seed(1))
    units = torch.tensor([5, 17, 5])
    with torch.no_grad():
        acts = hooked.run(["mlp.0"], input_ids=ids)["mlp.0"]
        base = next_token_logprobs(hooked, ids)
        fires = acts[torch.arange(3), :, units] > 0

        def edited(rows):
            out = acts[rows].clone()
            out[torch.arange(len(out)), :, units[rows]] = 0.0
            return out

        signed, magnitude, count = ablation_effects(hooked, 0, ids, fires, edited, base, batch_size=2)
        # brute force: zero the neuron's row of W_out (test-only surgery), one row at a time
        proj = model.gpt_neox.layers[0].mlp.dense_4h_to_h
        for r in range(3):
            saved = proj.weight[:, units[r]].clone()
            proj.weight[:, units[r]] = 0.0
            logprob = torch.log_softmax(model(ids[r : r + 1]).logits[0, :-1], -1).gather(1, ids[r, 1:, None])[:, 0]
            proj.weight[:, units[r]] = saved
            delta = (logprob - base[r])[fires[r, :-1]]
            assert float(count[r]) == len(delta)
            assert float(signed[r]) == pytest.approx(float(delta.mean()), abs=1e-5)
            assert float(magnitude[r]) == pytest.approx(float(delta.abs().mean()), abs=1e-5)


def test_proxy_labels_by_hand():
    text = 'import os\n    # note. x\n    for i in "a for"\n'
    tokens = [
        "import",
        " os",
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
    names = ["for", ".", "@indent", "@comment", "@string"]
    labels = proxy_labels(text, tokens, offsets, names)
    got = {name: [tokens[i] for i in labels[:, c].nonzero()[:, 0].tolist()] for c, name in enumerate(names)}
    assert got["for"] == [" for", " for"]
    assert got["."] == ["."]
    assert got["@indent"] == ["\n   ", "\n   "]  # the final bare newline is no indentation
    assert got["@comment"] == [" #", " note", ".", " x"]
    assert got["@string"] == [' "', "a", " for", '"']
    assert not proxy_labels("x = (", ["x", " =", " ("], [(0, 1), (1, 3), (3, 5)], ["@string"]).any()  # not Python


def test_bad_proxies_are_named():
    with pytest.raises(ProxyError, match="'@keyword' is not a known class"):
        check_proxies(["for", "@keyword"])
    with pytest.raises(ProxyError, match="empty"):
        check_proxies([" "])
