"""A neuron's explanation as token patterns, scored on held-out text: Neuron2Graph's predictor and metrics.

N2G (Foote et al. 2023) turns each pruned example into a pattern: the tokens from the first
important one to the anchor, the unimportant ones as wildcards, and predicts the neuron's
activation (normalised by its dataset maximum) at every token where a pattern ends. It is scored
on held-out examples by precision, recall and F1 of *firing* tokens (normalised activation >=
0.5), against a single-token lookup. We store the patterns as a set rather than N2G's trie: the
predictions are the same (the largest activation of any pattern that matches), and matching is one
tensor comparison per pattern over all windows.

    predictor = Predictor.fit(patterns)                   # patterns from MAEs and positive variants
    predicted = predictor.predict(windows)                # [w, n] normalised activations
    scores = firing_scores(predicted, actual, valid)      # precision, recall, f1
No file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIRING = 0.5  # N2G: a token fires at >= half the neuron's dataset maximum

WILDCARD = -1  # a pattern position that matches any token


def pattern_of(ids: torch.Tensor, anchor: int, importance: torch.Tensor, important: float) -> tuple[int, ...]:
    """The pattern of an example ids [m] with its anchor: tokens from the first important one up to
    the anchor (always kept), unimportant ones as WILDCARD."""
    keep = importance[: anchor + 1] >= important
    keep[anchor] = True
    first = int(torch.nonzero(keep)[0])
    return tuple(int(t) if k else WILDCARD for t, k in zip(ids[first : anchor + 1].tolist(), keep[first:].tolist()))


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
        """windows [w, n] token ids -> [w, n] predicted normalised activation: the largest of the
        patterns that end at each token (0 where none does)."""
        w, n = windows.shape
        predicted = torch.zeros(w, n)
        for pattern, activation in self.patterns.items():
            length = len(pattern)
            if length > n:
                continue
            match = torch.ones(w, n - length + 1, dtype=torch.bool)  # [w, end - length + 1]
            for offset, token in enumerate(pattern):
                if token != WILDCARD:
                    match &= windows[:, offset : n - length + 1 + offset] == token
            ends = predicted[:, length - 1 :]
            ends.copy_(torch.where(match, ends.clamp(min=activation), ends))
        return predicted


def token_lookup(windows: torch.Tensor, actual: torch.Tensor, valid: torch.Tensor) -> Predictor:
    """The single-token baseline: each token that appears in windows [w, n] (at valid [w, n] positions)
    predicts the largest normalised activation actual [w, n] it had there."""
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
