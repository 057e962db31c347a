"""Pruning's per-neuron evaluation pieces on hand-made inputs."""

import pytest

from lmfeatures.prune.evaluate import frontier_recall
from lmfeatures.prune.n2g import WILDCARD, Predictor


def test_frontier_recall_counts_the_firing_frontier_prompts_each_predictor_predicts():
    predictors = {
        "predictor": Predictor.from_json([[[7, WILDCARD, 9], 0.8]]),
        "token_baseline": Predictor.from_json([[[9], 0.6], [[4], 0.9]]),
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
    assert row["predictor"] == pytest.approx(1 / 4) and row["token_baseline"] == pytest.approx(3 / 4)
    # read at the max over positions: the last prompt's 9s now count for the lookup
    assert frontier_recall(predictors, frontier, 2.0, "max")["token_baseline"] == pytest.approx(1.0)
