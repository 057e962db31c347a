"""A neuron's explanation as token patterns, scored on held-out text: Neuron2Graph's predictor and metrics.

N2G (Foote et al. 2023; ANCHORS §2) builds, from every pruned example and every augmented (varied)
prompt, one pattern per token that fires there (normalised activation >= 0.5): the tokens from the
first one important *for that token* up to it, the unimportant ones as wildcards, stored with the
token's activation rescaled to the original context's (scale = original / pruned activation of the
example's anchor) and normalised by the neuron's dataset maximum. It predicts, at every token, the
activation of the longest pattern that ends there, matched right to left from that token (0 where
none does), and is scored on held-out examples by precision, recall and F1 of firing tokens.

Where this differs from N2G's public code (read 2026-12; ANCHORS §2), and why:
- the patterns are a set, matched exhaustively: every token takes the longest pattern that matches
  it. N2G walks a trie greedily from the predicted token leftwards (an exact-token child before a
  wildcard, no backtracking), so it can miss a longer match this finds; the set costs one tensor
  comparison per pattern over all windows and has no order dependence;
- among equally long patterns, and for a pattern seen twice, the largest activation wins (N2G keeps
  the first one stored). Every stored activation fires, so neither choice changes the F1;
- tokens are matched by id: N2G compares case- and whitespace-normalised strings, which merges
  tokens a tokenizer keeps apart; it also uses strict > thresholds and skips end-of-text tokens.

The two baselines get the same information or more: `last_token_lookup` keeps only the final token
of each of the predictor's patterns (the same prompts and the same tokens, no context), and
`token_lookup` is fitted on every token of the training windows in context.

    examples = firing_patterns(ids, activations, importance, important)   # per pruned / varied prompt
    predictor = Predictor.fit(examples)
    predicted = predictor.predict(windows)                # [w, n] normalised activations
    scores = firing_scores(predicted, actual, valid)      # precision, recall, f1
No file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIRING = 0.5  # N2G: a token fires at >= half the neuron's dataset maximum

WILDCARD = -1  # a pattern position that matches any token


def pattern_of(ids: torch.Tensor, end: int, importance: torch.Tensor, important: float) -> tuple[int, ...]:
    """The pattern of token `end` of ids [m], given importance [m] of each token for it: tokens from
    the first important one up to `end` (always kept), unimportant ones as WILDCARD."""
    keep = importance[: end + 1] >= important
    keep[end] = True
    first = int(torch.nonzero(keep)[0])
    return tuple(int(t) if k else WILDCARD for t, k in zip(ids[first : end + 1].tolist(), keep[first:].tolist()))


def firing_patterns(
    ids: torch.Tensor, activations: torch.Tensor, importance: torch.Tensor, important: float
) -> list[tuple[tuple[int, ...], float]]:
    """(pattern, activation) for every firing token of one prompt: ids [m], activations [m] already
    rescaled and normalised, importance [m, m] (row i: each token's importance for token i)."""
    return [
        (pattern_of(ids, i, importance[i], important), float(activations[i]))
        for i in torch.nonzero(activations >= FIRING).flatten().tolist()
    ]


@dataclass
class Predictor:
    """Patterns (token tuples ending at the predicted token, WILDCARD anywhere but the end) with the
    normalised activation each predicts."""

    patterns: dict[tuple[int, ...], float]

    @classmethod
    def fit(cls, examples: list[tuple[tuple[int, ...], float]]) -> Predictor:
        """From (pattern, normalised activation) pairs; a pattern seen twice keeps its largest activation."""
        patterns: dict[tuple[int, ...], float] = {}
        for pattern, activation in examples:
            if pattern and pattern[-1] != WILDCARD:
                patterns[pattern] = max(activation, patterns.get(pattern, -float("inf")))
        return cls(patterns)

    def to_json(self) -> list:
        """[[pattern tokens], activation] pairs, for json (WILDCARD stays -1)."""
        return [[list(pattern), activation] for pattern, activation in self.patterns.items()]

    @classmethod
    def from_json(cls, pairs: list) -> Predictor:
        return cls({tuple(pattern): activation for pattern, activation in pairs})

    def predict(self, windows: torch.Tensor) -> torch.Tensor:
        """windows [w, n] token ids -> [w, n] predicted normalised activation: that of the longest
        pattern ending at each token (the largest among equally long ones; 0 where none does)."""
        w, n = windows.shape
        predicted = torch.zeros(w, n)
        # shortest first, so a longer match overwrites a shorter one
        for pattern, activation in sorted(self.patterns.items(), key=lambda item: (len(item[0]), item[1])):
            length = len(pattern)
            if length > n:
                continue
            match = torch.ones(w, n - length + 1, dtype=torch.bool)  # [w, end - length + 1]
            for offset, token in enumerate(pattern):
                if token != WILDCARD:
                    match &= windows[:, offset : n - length + 1 + offset] == token
            ends = predicted[:, length - 1 :]
            ends.masked_fill_(match, activation)
        return predicted


def last_token_lookup(predictor: Predictor) -> Predictor:
    """The baseline with the predictor's information and no context: each pattern's final token
    predicts the largest activation of the patterns ending in it."""
    return Predictor.fit([((pattern[-1],), activation) for pattern, activation in predictor.patterns.items()])


def token_lookup(windows: torch.Tensor, actual: torch.Tensor, valid: torch.Tensor) -> Predictor:
    """The single-token baseline fitted on every token: each token that appears in windows [w, n] (at
    valid [w, n] positions) predicts the largest normalised activation actual [w, n] it had there."""
    tokens, acts = windows[valid], actual[valid]
    best = torch.full((int(tokens.max()) + 1,), -float("inf")).scatter_reduce(0, tokens, acts, "amax")
    seen = torch.nonzero(torch.isfinite(best)).flatten()
    return Predictor({(int(t),): float(best[t]) for t in seen})


def firing_scores(predicted: torch.Tensor, actual: torch.Tensor, valid: torch.Tensor) -> dict:
    """Precision, recall and F1 of firing tokens (>= FIRING) over valid [w, n] positions, with the counts.
    Precision is undefined (None) when nothing is predicted to fire, recall when nothing fires."""
    pred, true = predicted[valid] >= FIRING, actual[valid] >= FIRING
    tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
