"""The pruning section's paired comparison and its verdicts, against hand counts."""

import numpy as np
import pandas as pd
import pytest

from lmfeatures.report.pruning import layer_group, paired_differences, pruning_section, verdict
from lmfeatures.stats import bootstrap_mean


def _scores():
    # five trained neurons at layer 1 where the patterns gain 0.1-0.3 over their own final tokens
    # and lose 0.1 to the every-token lookup; one where no held-out token fires (left out of both)
    rows = [
        {
            "model": "m",
            "neuron": f"L1N{i}",
            "layer": 1,
            "context_free": False,
            "test_firing": 0 if i == 5 else 10,
            "predictor": p,
            "last_token_lookup": s,
            "token_lookup": t,
        }
        for i, (p, s, t) in enumerate(
            [
                (0.6, 0.4, 0.7),
                (0.5, 0.3, 0.6),
                (0.7, 0.6, 0.8),
                (0.4, 0.2, 0.5),
                (0.6, 0.3, 0.7),
                (0.0, 0.0, float("nan")),
            ]
        )
    ]
    rows += [
        {
            "model": "m",
            "neuron": f"L0N{i}",
            "layer": 0,
            "context_free": True,
            "test_firing": 10,
            "predictor": 0.5,
            "last_token_lookup": 0.5,
            "token_lookup": 0.5,
        }
        for i in range(5)
    ]
    scores = pd.DataFrame(rows)
    return scores.assign(kind="trained", group=layer_group(scores))


def test_paired_differences_resample_neurons_with_both_scores():
    paired = paired_differences(_scores()).set_index(["group", "lookup"])
    own = paired.loc[("layers ≥ 1", "last_token_lookup")]
    # by hand, the five complete neurons: differences 0.2, 0.2, 0.1, 0.2, 0.3
    assert own["neurons"] == 5 and own["difference"] == pytest.approx(0.2)
    assert (own["low"], own["high"]) == pytest.approx(bootstrap_mean(np.array([0.2, 0.2, 0.1, 0.2, 0.3]))[1:])
    assert own["predictor"] == pytest.approx(0.56) and own["lookup F1"] == pytest.approx(0.36)
    every = paired.loc[("layers ≥ 1", "token_lookup")]
    assert every["difference"] == pytest.approx(-0.1) and every["high"] < 0
    tie = paired.loc[("layer 0 (context-free)", "last_token_lookup")]
    assert tie["difference"] == 0 and tie["low"] == 0 and tie["high"] == 0


def test_the_paired_interval_by_hand():
    """Two neurons, differences 0 and 1: a resample's mean is 0, 0.5 or 1 (chance 1/4, 1/2, 1/4),
    so the 95% interval is [0, 1] around 0.5; their marginal F1s alone would say nothing of it."""
    scores = pd.DataFrame(
        {"model": "m", "layer": 1, "context_free": False, "test_firing": 5, "kind": "trained", "group": "layers ≥ 1"}
        | {"predictor": [0.5, 1.0], "last_token_lookup": [0.5, 0.0], "token_lookup": [0.5, 0.0]},
    )
    row = paired_differences(scores).iloc[0]
    assert (row["difference"], row["low"], row["high"]) == (0.5, 0.0, 1.0)


def test_verdicts_follow_the_paired_interval():
    base = {"neurons": 5, "difference": 0.1}
    assert verdict({**base, "low": 0.01, "high": 0.2}) == "beat"
    assert verdict({**base, "low": -0.2, "high": -0.01}) == "fell below"
    assert verdict({**base, "low": -0.01, "high": 0.2}) == "did not clearly differ from"
    assert verdict({**base, "neurons": 4, "low": 0.01, "high": 0.2}).startswith("are not judged, on 4 neuron(s)")


def test_the_section_states_the_paired_verdicts_and_names_the_context_free_layer(tmp_path):
    scores = (
        _scores().drop(columns=["kind", "group"]).assign(mae_tokens=3, mae_within_line=1.0, mae_activation_share=0.8)
    )
    epo = pd.DataFrame(
        columns=["model", "neuron", "prompts", "firing", "predictor", "last_token_lookup", "token_lookup"]
    )
    pruning_section(scores, {"m": "trained"}, {}, [], epo, tmp_path / "f.png", tmp_path / "s.md")
    text = (tmp_path / "s.md").read_text()
    assert (
        "**Trained models, layers ≥ 1 (5 neurons).** The patterns beat the lookup of the patterns' own final tokens"
        in text
    )
    assert "fell below the lookup of every token of the training windows" in text
    assert "layer 0 (context-free) (5 neurons).** The patterns did not clearly differ from" in text
    assert "1 of 11 scored neurons are left out of every comparison: no held-out token fires" in text
    assert "sees only the current token" in text and (tmp_path / "f.png").stat().st_size > 0
