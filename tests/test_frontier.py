"""EPO against the data: the dataset examples are cut and scored exactly like prompts."""

import pandas as pd
import torch
from micro import micro_model

from lmfeatures.epo.epo import Scorer, UnitTarget
from lmfeatures.epo.frontier import best_below, calibration, compare_with_data, dataset_examples, real_text_xent
from lmfeatures.lm.hooks import HookedModel
from lmfeatures.scan.neurons import Neuron
from lmfeatures.scan.scan import ScanConfig, make_windows, scan
from lmfeatures.store.scans import Scan


class _Tok:
    def batch_decode(self, rows):
        return [" ".join(map(str, r)) for r in rows]


def test_dataset_cut_ends_at_the_max_token():
    model = HookedModel(micro_model("gpt_neox", seed=3))
    g = torch.Generator().manual_seed(1)
    windows = make_windows([torch.randint(1, 64, (30,), generator=g).tolist() for _ in range(8)], 16)
    result, _ = scan(model, windows, ScanConfig(context_length=16, batch_size=4, top_k=6))
    s = Scan(meta={}, tensors=result, windows=windows, path=None)
    neuron, n_tokens = Neuron(1, 5), 6
    data = dataset_examples(s, neuron, Scorer(model, UnitTarget("mlp.1", 5), batch_size=8), _Tok(), n_tokens)
    top_w, top_p, top_v = (result[f"mlp.1.{f}"][:, 5] for f in ("top_window", "top_pos", "top_values"))
    assert len(data) == 6
    short = 0
    for k in range(6):
        w, p = int(top_w[k]), int(top_p[k])
        cut = [int(t) for t in data["text"][k].split()]
        assert cut == windows.ids[w, max(0, p - n_tokens + 1) : p + 1].tolist()  # the max token is the last
        if p < n_tokens - 1:  # the whole left context the scan saw: the same activation
            short += 1
            assert abs(data["target"][k] - float(top_v[k])) < 1e-4
    assert short > 0 and data["scan_max"][0] == float(top_v[0])


def test_compare_with_data_by_hand():
    runs = pd.DataFrame(
        {
            "text": ["a", "b", "c", "d", "e"],
            "target": [1.0, 3.0, 2.0, 5.0, 4.0],
            "xent": [3.0, 5.0, 1.0, 9.0, 5.5],
            "method": ["epo", "epo", "epo", "epo", "gcg"],
            "seed": [0, 0, 1, 1, 0],
        }
    )
    data = pd.DataFrame({"text": ["x", "y"], "target": [2.5, 1.0], "xent": [4.5, 2.0], "scan_max": 2.5})
    s = compare_with_data(runs, data, "L0N0", {"median": 2.0, "p90": 5.2})
    epo = s["methods"]["epo"]
    assert epo["best"]["xent<4"]["text"] == "c" and epo["best"]["xent<6"]["text"] == "b"
    assert epo["best"]["xent<inf"]["target"] == 5.0 and epo["best_xent<6_per_seed"] == [3.0, 2.0]
    assert epo["ratio_to_dataset_max"]["xent<6"] == 3.0 / 2.5 and s["dataset_cut_max"] == 2.5
    assert s["methods"]["gcg"]["best"]["xent<4"] is None and best_below(data, 3.0)["text"] == "y"
    assert s["dataset_top"] == {"text": "x", "target": 2.5, "xent": 4.5}
    one_token = pd.DataFrame({"text": ["x", "y"], "target": [2.5, 1.0], "xent": [float("nan"), 2.0], "scan_max": 2.5})
    assert compare_with_data(runs, one_token, "L0N0", {"median": 2.0, "p90": 5.2})["dataset_top"]["xent"] is None
    assert epo["best"]["xent<median"]["text"] == "c" and epo["best"]["xent<p90"]["text"] == "b"
    assert epo["best_xent<p90_per_seed"] == [3.0, 2.0] and s["methods"]["gcg"]["best"]["xent<p90"] is None


def test_real_text_xent_scores_slices_like_prompts():
    """Every value is the cross-entropy of one n-token slice of a window, computed here by hand."""
    import numpy as np
    import torch.nn.functional as F

    model = HookedModel(micro_model("llama", seed=2))
    windows = torch.tensor([[3, 9, 4, 1, 7], [2, 2, 8, 5, 6]])
    by_hand = []
    for w in windows:
        for start in range(3):
            ids = w[start : start + 3][None]
            logits = model.model(ids).logits[0, :-1]
            by_hand.append(float(F.cross_entropy(logits, ids[0, 1:])))
    got = real_text_xent(model, windows, n_tokens=3, count=300, seed=0, batch_size=64)
    nearest = [min(range(6), key=lambda j: abs(by_hand[j] - float(x))) for x in got]
    assert all(abs(by_hand[j] - float(x)) < 1e-5 for j, x in zip(nearest, got))
    assert set(nearest) == set(range(6))  # every slice is drawn
    c = calibration(got)
    assert (
        abs(c["median"] - np.quantile(got.numpy(), 0.5)) < 1e-5 and abs(c["p90"] - np.quantile(got.numpy(), 0.9)) < 1e-5
    )
    assert c["n_slices"] == 300 and c["median"] <= c["p90"]
