"""The N2G-style predictor and its scores against brute force and hand counts."""

import json

import torch

from lmfeatures.prune.n2g import (
    WILDCARD,
    Predictor,
    firing_patterns,
    firing_scores,
    last_token_lookup,
    pattern_of,
    token_lookup,
)


def test_every_firing_token_gets_its_own_pattern_from_its_own_importance_row():
    ids = torch.tensor([5, 6, 7, 8])
    activations = torch.tensor([0.25, 0.75, 0.375, 0.5])  # tokens 1 and 3 fire (>= 0.5)
    importance = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.9, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.1, 0.8, 0.0, 1.0]])
    assert firing_patterns(ids, activations, importance, 0.5) == [((5, 6), 0.75), ((6, WILDCARD, 8), 0.5)]


def test_the_last_token_lookup_keeps_the_final_token_of_each_pattern():
    predictor = Predictor({(4, WILDCARD, 5): 0.7, (5,): 0.6, (3, 9): 0.8})
    assert last_token_lookup(predictor).patterns == {(5,): 0.7, (9,): 0.8}


def test_pattern_starts_at_the_first_important_token_and_wildcards_the_rest():
    ids = torch.tensor([5, 6, 7, 8, 9, 10])
    importance = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.0, 0.9])
    assert pattern_of(ids, 4, importance, 0.5) == (6, WILDCARD, 8, 9)  # the anchor (9) is always kept
    assert pattern_of(ids, 0, importance, 0.5) == (5,)


def test_predictions_equal_a_brute_force_match_of_every_pattern_at_every_token():
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 4, (30, 12), generator=g)  # a 4-token vocabulary: many matches
    # (0, 1) predicts less than (1,): the longer pattern wins where both match
    patterns = {(1,): 0.7, (2, WILDCARD, 3): 0.9, (0, 1): 0.6, (3, 3, 3, 3): 1.2, (WILDCARD, 2): 0.4, (1, 2): 0.3}
    predicted = Predictor.fit(list(patterns.items())).predict(windows)
    expected = torch.zeros(30, 12)
    for w in range(30):
        for t in range(12):
            matches = [
                (len(pattern), act)
                for pattern, act in patterns.items()
                if t - len(pattern) + 1 >= 0
                and all(p in (WILDCARD, int(windows[w, t - len(pattern) + 1 + j])) for j, p in enumerate(pattern))
            ]
            expected[w, t] = max(matches)[1] if matches else 0.0  # the longest, then the largest
    torch.testing.assert_close(predicted, expected)
    assert (predicted == torch.tensor(0.6)).any()  # (0, 1) overrides the larger (1,)


def test_fit_keeps_the_largest_activation_of_a_pattern_seen_twice():
    assert Predictor.fit([((4, 5), 0.2), ((4, 5), 0.7), ((4, 5), 0.5)]).patterns == {(4, 5): 0.7}


def test_a_predictor_survives_its_json_form():
    predictor = Predictor({(4, WILDCARD, 5): 0.7, (9,): 1.2})
    assert Predictor.from_json(json.loads(json.dumps(predictor.to_json()))) == predictor


def test_firing_scores_against_hand_counts():
    predicted = torch.tensor([[0.9, 0.1, 0.6, 0.0], [0.7, 0.2, 0.0, 0.8]])
    actual = torch.tensor([[1.0, 0.8, 0.2, 0.0], [0.6, 0.0, 0.9, 0.9]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    # valid positions: fired & predicted: (0,0) (1,0) -> tp 2; predicted only: (0,2) -> fp 1;
    # fired only: (0,1) (1,2) -> fn 2; (1,3) is not valid
    scores = firing_scores(predicted, actual, valid)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 2)
    assert scores["precision"] == 2 / 3 and scores["recall"] == 2 / 4 and scores["f1"] == 4 / 7
    nothing = firing_scores(torch.zeros(2, 4), torch.zeros(2, 4), valid)
    assert nothing["precision"] is None and nothing["recall"] is None and nothing["f1"] is None


def test_token_lookup_predicts_each_tokens_largest_activation():
    windows = torch.tensor([[3, 4, 3], [5, 3, 4]])
    actual = torch.tensor([[0.2, 0.9, 0.6], [0.1, 0.3, 0.4]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    patterns = token_lookup(windows, actual, valid).patterns
    assert patterns.keys() == {(3,), (4,), (5,)}
    assert [round(patterns[(t,)], 6) for t in (3, 4, 5)] == [0.6, 0.9, 0.1]  # float32 activations
