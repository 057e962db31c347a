"""The pruning stage's summary pieces on hand-made inputs."""

import json

import pytest

from lmfeatures.n2g import WILDCARD
from lmfeatures.stages.prune import epo_coverage


def test_epo_coverage_counts_the_firing_frontier_prompts_each_predictor_predicts(tmp_path):
    prune_dir = tmp_path / "prune" / "m"
    prune_dir.mkdir(parents=True)
    (prune_dir / "evaluation.json").write_text(json.dumps({"neurons": [{"neuron": "L1N2", "data_max": 2.0}]}))
    predictors = {"predictor": [[[7, WILDCARD, 9], 0.8]], "token_baseline": [[[9], 0.6], [[4], 0.9]]}
    (prune_dir / "L1N2.predictor.json").write_text(json.dumps(predictors))
    frontier = [
        {"ids": [7, 1, 9], "rescored_target": 1.5},  # fires (0.75); patterns: yes; lookup: yes (9)
        {"ids": [3, 1, 9], "rescored_target": 1.2},  # fires (0.6); patterns: no; lookup: yes
        {"ids": [3, 9, 4], "rescored_target": 1.1},  # fires (0.55); patterns: no; lookup: yes (4, last)
        {"ids": [7, 1, 9], "rescored_target": 0.5},  # does not fire (0.25): not counted in recall
        {"ids": [9, 9, 5], "rescored_target": 1.9},  # fires; neither predicts at the last token
    ]
    run = tmp_path / "epo" / "seed0"
    run.mkdir(parents=True)
    (run / "frontier.json").write_text(json.dumps({"frontier": frontier}))
    targets = [{"model": "m", "neuron": "L1N2", "runs": [str(run)]}]
    row = epo_coverage([str(prune_dir)], targets, "last").iloc[0]
    assert (row["prompts"], row["firing"]) == (5, 4)
    assert row["predictor"] == pytest.approx(1 / 4) and row["token_baseline"] == pytest.approx(3 / 4)
    # read at the max over positions: the last prompt's 9s now count for the lookup
    assert epo_coverage([str(prune_dir)], targets, "max").iloc[0]["token_baseline"] == pytest.approx(1.0)
