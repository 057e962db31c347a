"""The seed document's (004) checks of a feature, for every feature of a dictionary at once.

A dictionary is a set of units read at one MLP layer: an SAE's features, or the layer's neurons
(each neuron a feature). Every unit gets the same five checks (Towards Monosemanticity's "detailed
investigations"), so "this feature passes" can be compared with neurons and with control SAEs:

    specificity    precision of its best proxy: share of its firing tokens (activation > 0) in the class
    sensitivity    recall of that proxy: share of the class's tokens where it fires
    downstream     mean |Δ log p(actual next token)| when the unit is removed, over tokens where it fires
    not a neuron   max |Pearson r| with any neuron of the layer is below a threshold (SAE features only)
    universality   best activation correlation with a unit of a second dictionary of the same kind
                   (the other seed's SAE; SAE features only)

The best proxy is the class with the highest F1 of (firing, in class). Its log-likelihood ratio
log P(fires | class) / P(fires | not class) is the document's specificity view in one number; the
per-activation-bin counts in and out of the class (`class_hist`) give its figure.
Correlations are Pearson over tokens from streaming sums (float64). No file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lmfeatures.lm.hooks import HookedModel

CHECKS = ("specificity", "sensitivity", "downstream", "not_a_neuron", "universality")
HIST_BINS = 10  # activation bins over (0, max] for the specificity view


@dataclass
class CheckThresholds:
    """A unit passes a check when its value clears the threshold (the report states them)."""

    specificity: float = 0.5  # precision of the best proxy at least this
    sensitivity: float = 0.5  # recall of the best proxy at least this
    downstream: float = 0.05  # mean |Δ log p| in nats at least this (the next token 5% more or less likely)
    not_a_neuron: float = 0.5  # max |r| with a neuron below this
    universality: float = 0.5  # best activation r with the other dictionary at least this


def _to_sparse_t(x: Tensor) -> Tensor:
    """x [tokens, units] (mostly zero) -> x^T as a sparse COO tensor, for x^T @ dense products."""
    return x.T.to_sparse()


class CheckAccumulator:
    """Streaming sums over tokens for one dictionary: `update` per batch, `result` at the end.

    units [T, U] the dictionary's activations; neurons [T, N] the layer's neurons (or None);
    other [T, V] the second dictionary's activations (or None); classes [T, C] bool proxy labels;
    unit_max [U] each unit's max activation (from its scan: the histogram's range)."""

    def __init__(self, n_units: int, n_neurons: int | None, n_other: int | None, n_classes: int, unit_max: Tensor):
        f64 = torch.float64
        self.n = 0
        self.sums = {"u": torch.zeros(n_units, dtype=f64), "u2": torch.zeros(n_units, dtype=f64)}
        self.class_count = torch.zeros(n_classes, dtype=f64)
        self.unit_max = unit_max.float().clamp(min=1e-12)
        # firing tokens per (unit, activation bin) in each class, last column all of them: the
        # per-unit counts of firing tokens and of firing tokens in each class are its sums over bins
        self.class_hist = torch.zeros(n_units * HIST_BINS, n_classes + 1, dtype=f64)
        self.pairs: dict[str, Tensor] = {}
        for key, width in (("neurons", n_neurons), ("other", n_other)):
            if width is not None:
                self.sums[key] = torch.zeros(width, dtype=f64)
                self.sums[key + "2"] = torch.zeros(width, dtype=f64)
                self.pairs[key] = torch.zeros(n_units, width, dtype=f64)

    def update(
        self, units: Tensor, classes: Tensor, neurons: Tensor | None = None, other: Tensor | None = None
    ) -> None:
        units, classes = units.float().cpu(), classes.cpu()
        self.n += len(units)
        self.sums["u"] += units.sum(0).double()
        self.sums["u2"] += units.pow(2).sum(0).double()
        cls = classes.float()
        self.class_count += cls.sum(0).double()
        token, unit = (units > 0).nonzero(as_tuple=True)
        bins = (units[token, unit] / self.unit_max[unit] * HIST_BINS).long().clamp(0, HIST_BINS - 1)
        rows = torch.cat([cls[token], torch.ones(len(token), 1)], dim=1)
        self.class_hist.index_add_(0, unit * HIST_BINS + bins, rows.double())
        sparse_units = _to_sparse_t(units) if self.pairs else None
        for key, values in (("neurons", neurons), ("other", other)):
            if key in self.pairs:
                values = values.float().cpu()
                self.sums[key] += values.sum(0).double()
                self.sums[key + "2"] += values.pow(2).sum(0).double()
                self.pairs[key] += torch.sparse.mm(sparse_units, values).double()

    def correlation(self, key: str) -> Tensor:
        """Pearson r [units, width] of every unit with every column of `key` ("neurons" or "other")."""
        n = self.n
        cov = self.pairs[key] - self.sums["u"][:, None] * self.sums[key][None, :] / n
        var_u = (self.sums["u2"] - self.sums["u"] ** 2 / n).clamp(min=0)
        var_v = (self.sums[key + "2"] - self.sums[key] ** 2 / n).clamp(min=0)
        return (cov / (var_u[:, None] * var_v[None, :]).sqrt()).nan_to_num(0.0).float()

    def proxy_scores(self) -> dict[str, Tensor]:
        """Per unit [U]: best proxy (class index, by F1; -1 where the unit never fires), its
        precision, recall, F1 and log-likelihood ratio log P(fire | class) / P(fire | not class)
        (fires and class counts smoothed by 0.5), and the unit's density."""
        per_unit = self.class_hist.view(-1, HIST_BINS, self.class_hist.shape[1]).sum(1)
        both, all_fires = per_unit[:, :-1], per_unit[:, -1]
        fires, cls = all_fires[:, None], self.class_count[None, :]
        precision = (both / fires).nan_to_num(0.0)
        recall = (both / cls).nan_to_num(0.0)
        f1 = (2 * precision * recall / (precision + recall)).nan_to_num(0.0)
        best = f1.argmax(1)
        pick = lambda t: t.gather(1, best[:, None])[:, 0]  # noqa: E731
        p_in = (pick(both) + 0.5) / (pick(cls.expand_as(both)) + 1)
        p_out = (all_fires - pick(both) + 0.5) / (self.n - pick(cls.expand_as(both)) + 1)
        return {
            "best_proxy": torch.where(all_fires > 0, best, -1),
            "precision": pick(precision).float(),
            "recall": pick(recall).float(),
            "f1": pick(f1).float(),
            "llr": (p_in / p_out).log().float(),
            "density": (all_fires / self.n).float(),
        }

    def best_class_hist(self, best: Tensor) -> tuple[Tensor, Tensor]:
        """(tokens in the best class, all firing tokens) per activation bin: two [U, HIST_BINS]."""
        hist = self.class_hist.view(-1, HIST_BINS, self.class_hist.shape[1])
        inside = hist.gather(2, best.clamp(min=0)[:, None, None].expand(-1, HIST_BINS, 1))[..., 0]
        return inside.float(), hist[..., -1].float()


def decoder_neuron_share(w_dec: Tensor) -> tuple[Tensor, Tensor]:
    """Per decoder row of W_dec [U, N]: (its largest neuron, the share of the row's L1 mass on it)."""
    mass = w_dec.abs()
    top = mass.max(1)
    return top.indices, top.values / mass.sum(1).clamp(min=1e-12)


def best_match(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(best column, its value) per row of matrix [U, V] by the largest value."""
    top = matrix.max(1)
    return top.indices, top.values


def logit_weights(
    directions: Tensor, w_out: Tensor, w_u: Tensor, top: int = 10
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each unit's direct effect on the logits: directions [U, d_mlp] @ W_out [d_mlp, d_model] @ W_U
    [d_model, vocab] (the final norm's scale folded into W_U). Returns (top token ids, their weights,
    bottom token ids, their weights), each [U, top]."""
    effect = directions.float() @ w_out.float() @ w_u.float()
    hi, lo = effect.topk(top, dim=1), (-effect).topk(top, dim=1)
    return hi.indices, hi.values, lo.indices, -lo.values


def target_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """log p(ids[:, t + 1]) [batch, pos - 1] from logits [batch, pos, vocab] of ids [batch, pos]."""
    logits = logits[:, :-1].float()
    return logits.gather(2, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)  # no full log_softmax: 2x faster


@torch.no_grad()
def next_token_logprobs(model: HookedModel, ids: Tensor, edit: dict | None = None) -> Tensor:
    """log p(ids[:, t + 1] | ids[:, :t + 1]) [batch, pos - 1] of ids [batch, pos], with `edit` applied."""
    return target_logprobs(model.run([], input_ids=ids, return_logits=True, edit=edit)["logits"], ids)


@torch.no_grad()
def ablation_effects(
    model: HookedModel,
    layer: int,
    ids: Tensor,
    fires: Tensor,
    edited: Callable[[slice], Tensor],
    base: Tensor,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor, Tensor]:
    """The downstream effect of removing one unit per row of ids [R, pos].

    edited(rows) -> [len(rows), pos, d_mlp] is what mlp.{layer} reads with the row's unit removed
    (e.g. the SAE's reconstruction minus the unit's decoder row times its activation); base [R,
    pos - 1] the next-token log-probs without the removal; fires [R, pos] where the unit fires.
    Returns per row (mean Δ log p, mean |Δ log p|, number of positions) of the actual next token
    over the positions where the unit fires (the last has no next token); NaN where it fires nowhere."""
    hook = f"mlp.{layer}"
    model.check_hook(hook)
    out = torch.full((3, len(ids)), math.nan)
    for b in range(0, len(ids), batch_size):
        rows = slice(b, b + batch_size)
        replacement = edited(rows).to(model.device)
        logprob = next_token_logprobs(model, ids[rows].to(model.device), {hook: lambda acts, r=replacement: r}).cpu()
        delta = logprob - base[rows]
        mask = fires[rows, :-1].float()
        count = mask.sum(1)
        out[0, rows] = (delta * mask).sum(1) / count
        out[1, rows] = (delta.abs() * mask).sum(1) / count
        out[2, rows] = count
    return out[0], out[1], out[2]


def passes(values: dict[str, Tensor], thresholds: CheckThresholds) -> dict[str, Tensor]:
    """Per check, bool [U] whether each unit passes; a check whose value is absent (NaN: not
    applicable, e.g. not-a-neuron for neurons) is False. values: specificity (precision),
    sensitivity (recall), downstream (mean |Δ log p|), not_a_neuron (max |r| with a neuron),
    universality (best r with the other dictionary)."""
    t = thresholds
    return {
        "specificity": values["specificity"] >= t.specificity,
        "sensitivity": values["sensitivity"] >= t.sensitivity,
        "downstream": values["downstream"] >= t.downstream,
        "not_a_neuron": values["not_a_neuron"] < t.not_a_neuron,  # NaN compares False
        "universality": values["universality"] >= t.universality,
    }
