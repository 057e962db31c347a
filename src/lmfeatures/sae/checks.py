"""The seed document's (004) checks of a feature, for every unit of a dictionary at once.

A dictionary is a set of units read at one MLP layer: an SAE's features, or the layer's neurons
(each neuron a feature). Every unit gets the same checks (Towards Monosemanticity's "detailed
investigations"), so "this feature passes" can be compared with neurons and with control SAEs.

A unit *fires* where its activation is at least `fire_share` of its max on the selection windows
(neurons the same way: a GELU neuron is above 0 on ~40% of tokens, so "> 0" would make every neuron
unspecific by construction). Its *best proxy* is the class (lmfeatures.sae.proxies) with the highest
F1 of (fires, in class) on the selection windows; the checks score that proxy on the check windows,
which the selection never saw:

    specificity    precision (share of its firing tokens in the class) >= `specificity`, and lift
                   (precision / the class's base rate) >= `lift`; the log-likelihood ratio
                   log P(fires | class) / P(fires | not) is reported beside them
    sensitivity    recall (share of the class's tokens where it fires) >= `sensitivity`
    downstream     at the class's tokens where the unit fires, removing its part (activation x
                   decoder row) from the layer's activations lowers log p(the tokens the class
                   predicts) by >= `downstream` nats and by >= `downstream_share` of what mean-ablating
                   the whole layer does there (a decoder that is not the concept's direction carries
                   only a small share: the planted ground truth's random-decoder SAE fails here). The
                   class's predicted tokens are those whose frequency as the next token after the
                   class most exceeds their overall frequency (selection windows); the share of them
                   among the unit's most promoted tokens by its direct logit weights (the seed's logit
                   view) is reported beside it
    not a neuron   it passes specificity, and no neuron of the layer passes specificity for the same
                   proxy at the same threshold (SAE features only)
    universality   best activation correlation with a unit of a second dictionary of the same kind
                   (the other seed's SAE) >= `universality` (SAE features only)

Correlations are Pearson over tokens from streaming sums (float64). Memory grows linearly with
the dictionary's width: what would be [units, units] (r with the other dictionary, decoder cosines)
is computed in blocks of rows of about `memory` bytes (MEMORY) and [units, vocab] (logit weights)
in chunks of units, keeping only each row's best match or top tokens. No file I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

CHECKS = ("specificity", "sensitivity", "downstream", "not_a_neuron", "universality")
SAE_ONLY = ("not_a_neuron", "universality")
HIST_BINS = 10  # activation bins over (0, max] for the specificity view
MEMORY = 256 * 2**20  # bytes of one block of a chunked [rows, width] product (the default config's fit in one)


def block_rows(memory: int, row_bytes: int) -> int:
    """How many rows of row_bytes each fit in `memory` bytes (at least 1)."""
    return max(1, memory // max(row_bytes, 1))


@dataclass
class CheckThresholds:
    """When a unit fires, and when it passes each check (the report states them)."""

    fire_share: float = 0.2  # fires at activation >= this share of its max on the selection windows
    specificity: float = 0.5  # precision of the best proxy at least this ...
    lift: float = 2.0  # ... and at least this many times the class's base rate
    sensitivity: float = 0.5  # recall of the best proxy at least this
    downstream: float = 0.05  # nats: removing it lowers log p(its class's predicted tokens) by at least this ...
    downstream_share: float = 0.5  # ... and carries at least this share of what mean-ablating the whole layer does
    universality: float = 0.5  # best activation r with the other dictionary at least this


def firing(units: Tensor, unit_max: Tensor, share: float) -> Tensor:
    """bool [..., U]: units [..., U] at least `share` of unit_max [U] (and above 0)."""
    return (units >= share * unit_max.to(units.device)) & (units > 0)


def _sparse_t(x: Tensor) -> Tensor:
    """x [tokens, units] (mostly zero) -> x^T as a sparse COO tensor, for x^T @ dense products
    (built from x's nonzeros: to_sparse of the transposed view is several times slower)."""
    token, unit = x.nonzero(as_tuple=True)
    indices = torch.stack([unit, token])
    return torch.sparse_coo_tensor(indices, x[token, unit], (x.shape[1], x.shape[0]), check_invariants=False).coalesce()


class ProxySelection:
    """Counts on the selection windows that choose each unit's best proxy: per (unit, class) its
    firing tokens in the class [U, C], its firing tokens [U], each class's tokens [C].
    unit_max [U]: each unit's max on the same windows (a first pass)."""

    def __init__(self, unit_max: Tensor, n_classes: int, share: float):
        f64 = torch.float64
        self.unit_max, self.share = unit_max.float().cpu(), share
        self.counts = torch.zeros(len(unit_max), n_classes, dtype=f64)
        self.fires = torch.zeros(len(unit_max), dtype=f64)
        self.class_count = torch.zeros(n_classes, dtype=f64)

    def update(self, units: Tensor, classes: Tensor) -> None:
        """units [T, U], classes bool [T, C]."""
        fires = firing(units.float().cpu(), self.unit_max, self.share).float()
        cls = classes.cpu().double()
        self.counts += torch.sparse.mm(_sparse_t(fires).double(), cls)
        self.fires += fires.sum(0).double()
        self.class_count += cls.sum(0)

    def best(self) -> tuple[Tensor, Tensor]:
        """[U] the class with the highest F1 of (fires, in class), -1 where the unit never fires; [U]
        that F1."""
        precision = (self.counts / self.fires[:, None]).nan_to_num(0.0)
        recall = (self.counts / self.class_count[None, :]).nan_to_num(0.0)
        f1 = (2 * precision * recall / (precision + recall)).nan_to_num(0.0)
        top = f1.max(1)
        return torch.where(self.fires > 0, top.indices, -1), top.values.float()


class ProxyScores:
    """Counts on the check windows for each unit's given proxy `best` [U] (-1: none): its firing
    tokens in the class and in all, per activation bin [U, HIST_BINS]; each class's tokens [C]; each
    unit's top windows by its max activation on the class's tokens ([n_top, U] values and window
    indices; -1 where it is 0 there); with `per_class`,
    its firing tokens in every class [U, C] (for neurons: which classes any neuron is specific to)."""

    def __init__(self, unit_max: Tensor, best: Tensor, n_classes: int, share: float, n_top: int, per_class=False):
        f64 = torch.float64
        n_units = len(unit_max)
        self.unit_max, self.best, self.share = unit_max.float().cpu().clamp(min=1e-12), best.cpu(), share
        self.n = 0
        self.hist_in = torch.zeros(n_units, HIST_BINS, dtype=f64)
        self.hist_all = torch.zeros(n_units, HIST_BINS, dtype=f64)
        self.class_count = torch.zeros(n_classes, dtype=f64)
        self.per_class = torch.zeros(n_units, n_classes, dtype=f64) if per_class else None
        self.top_value = torch.full((n_top, n_units), -math.inf)
        self.top_window = torch.full((n_top, n_units), -1, dtype=torch.long)

    def update(self, units: Tensor, classes: Tensor, valid: Tensor, first_window: int) -> None:
        """units [W, pos, U] of windows first_window ..., classes bool [W, pos, C], valid bool [W, pos]."""
        units, classes, valid = units.float().cpu(), classes.cpu(), valid.cpu()
        units = units * valid[..., None]
        # top windows by the unit's max on its proxy's tokens: where its downstream effect is measured
        in_proxy = classes[..., self.best.clamp(min=0)] & (self.best >= 0)  # [W, pos, U]
        window_max = torch.where(in_proxy, units, 0.0).amax(1)  # [W, U]
        values = torch.cat([self.top_value, window_max])
        windows = torch.cat([self.top_window, torch.arange(len(units))[:, None].expand_as(window_max) + first_window])
        top = values.topk(len(self.top_value), dim=0)
        self.top_value = top.values
        self.top_window = torch.where(top.values > 0, windows.gather(0, top.indices), -1)
        flat, cls = units[valid], classes[valid]
        self.n += len(flat)
        self.class_count += cls.sum(0).double()
        token, unit = firing(flat, self.unit_max, self.share).nonzero(as_tuple=True)
        bins = (flat[token, unit] / self.unit_max[unit] * HIST_BINS).long().clamp(0, HIST_BINS - 1)
        cell = unit * HIST_BINS + bins
        in_best = (self.best[unit] >= 0) & cls[token, self.best[unit].clamp(min=0)]
        self.hist_all.view(-1).index_add_(0, cell, torch.ones(len(cell), dtype=torch.float64))
        self.hist_in.view(-1).index_add_(0, cell, in_best.double())
        if self.per_class is not None:
            self.per_class.index_add_(0, unit, cls[token].double())

    def scores(self) -> dict[str, Tensor]:
        """Per unit [U]: precision, recall, lift and log-likelihood ratio of its proxy (NaN where it
        has none or never fires), its firing tokens and density."""
        both, fires = self.hist_in.sum(1), self.hist_all.sum(1)
        has = self.best >= 0
        cls = torch.where(has, self.class_count[self.best.clamp(min=0)], math.nan)
        base = cls / self.n
        precision = torch.where(has & (fires > 0), both / fires, math.nan)
        recall = torch.where(has & (cls > 0), both / cls, math.nan)
        # log P(fires | class) / P(fires | not), counts smoothed by 0.5
        llr = ((both + 0.5) / (cls + 1)).log() - ((fires - both + 0.5) / (self.n - cls + 1)).log()
        return {
            "precision": precision.float(),
            "recall": recall.float(),
            "base_rate": base.float(),
            "lift": (precision / base).float(),
            "llr": torch.where(has, llr, math.nan).float(),
            "fires": fires.float(),
            "density": (fires / max(self.n, 1)).float(),
        }

    def specific_classes(self, thresholds: CheckThresholds) -> Tensor:
        """bool [C]: some unit passes specificity for the class (needs per_class)."""
        precision = (self.per_class / self.hist_all.sum(1, keepdim=True)).nan_to_num(0.0)
        base = self.class_count / max(self.n, 1)
        return ((precision >= thresholds.specificity) & (precision >= thresholds.lift * base[None, :])).any(0)


class Correlations:
    """Streaming Pearson r of every unit with every column of a second set (the layer's neurons):
    sums over tokens, `update` per batch, `result` at the end. The cross sums are [units, width]
    float64, the size of the result itself."""

    def __init__(self, n_units: int, width: int):
        f64 = torch.float64
        self.n = 0
        self.su, self.su2 = torch.zeros(n_units, dtype=f64), torch.zeros(n_units, dtype=f64)
        self.sv, self.sv2 = torch.zeros(width, dtype=f64), torch.zeros(width, dtype=f64)
        self.cross = torch.zeros(n_units, width, dtype=f64)

    def update(self, units: Tensor, values: Tensor) -> None:
        """units [T, U] (mostly zero), values [T, width]."""
        units, values = units.float().cpu(), values.float().cpu()
        self.n += len(units)
        self.su += units.sum(0).double()
        self.su2 += units.pow(2).sum(0).double()
        self.sv += values.sum(0).double()
        self.sv2 += values.pow(2).sum(0).double()
        self.cross += torch.sparse.mm(_sparse_t(units), values)  # added in float64, no float64 copy

    def result(self, memory: int = MEMORY) -> Tensor:
        """Pearson r [units, width]; 0 where a side is constant. Computed in blocks of rows, so the
        float64 temporaries take `memory` bytes, not several times the cross sums."""
        out = torch.empty(self.cross.shape)
        step = block_rows(memory, 3 * 8 * self.cross.shape[1])  # cov, the variance product, r
        for a in range(0, len(out), step):
            rows = slice(a, a + step)
            out[rows] = pearson(self.cross[rows], self.su[rows], self.su2[rows], self.sv, self.sv2, self.n)
        return out


def pearson(cross: Tensor, su: Tensor, su2: Tensor, sv: Tensor, sv2: Tensor, n: int) -> Tensor:
    """float32 Pearson r [u, v] from token sums: cross [u, v] = Σ u·v, su, su2 [u], sv, sv2 [v]
    (float64); 0 where a side is constant."""
    cov = cross - su[:, None] * sv[None, :] / n
    var_u = (su2 - su**2 / n).clamp(min=0)
    var_v = (sv2 - sv**2 / n).clamp(min=0)
    return (cov / (var_u[:, None] * var_v[None, :]).sqrt()).nan_to_num(0.0).float()


class SparseCodes:
    """A dictionary's activations [T, U] over a stream of batches, kept as each batch's nonzeros (a
    TopK SAE has k per token: O(tokens · k) memory, not O(tokens · U)) with their token sums, so that
    best_correlations can correlate two dictionaries block by block after the stream."""

    def __init__(self, n_units: int):
        f64 = torch.float64
        self.n_units, self.n = n_units, 0
        self.su, self.su2 = torch.zeros(n_units, dtype=f64), torch.zeros(n_units, dtype=f64)
        self.batches: list[Tensor] = []  # per batch, its activations transposed: sparse [U, T_batch]

    def update(self, units: Tensor) -> None:
        """units [T, U] (mostly zero)."""
        units = units.float().cpu()
        self.n += len(units)
        self.su += units.sum(0).double()
        self.su2 += units.pow(2).sum(0).double()
        self.batches.append(_sparse_t(units))


def _row_block(x: Tensor, a: int, b: int) -> Tensor:
    """Rows a..b-1 of a coalesced sparse [U, T] as a dense [T, b - a] (its transpose)."""
    rows = x.indices()[0]
    lo, hi = torch.searchsorted(rows, torch.tensor([a, b])).tolist()
    index = x.indices()[:, lo:hi]
    out = torch.zeros(x.shape[1], b - a, dtype=x.dtype)
    out[index[1], index[0] - a] = x.values()[lo:hi]
    return out


def best_correlations(units: SparseCodes, other: SparseCodes, memory: int = MEMORY) -> tuple[Tensor, Tensor]:
    """(best column [U], its Pearson r [U]) per unit of `units` among the units of `other` (the same
    tokens, in the same batches), by the largest r. The [U, V] cross sums are built a block of rows
    at a time ([V, rows] float64 within `memory` bytes) from the batches' nonzeros, each batch's
    product the same float32 sum over tokens as a dense [U, V] accumulation would make."""
    width, tokens = other.n_units, max((x.shape[1] for x in units.batches), default=0)
    # per row: the cross sums, cov, the variance product and r [V] float64, a batch's dense block [T]
    step = block_rows(memory, 4 * 8 * width + 4 * tokens)
    found = []
    for a in range(0, units.n_units, step):
        b = min(a + step, units.n_units)
        cross = torch.zeros(width, b - a, dtype=torch.float64)
        for mine, theirs in zip(units.batches, other.batches):
            cross += torch.sparse.mm(theirs, _row_block(mine, a, b))  # float32 per batch, summed in float64
        r = pearson(cross.T, units.su[a:b], units.su2[a:b], other.su, other.su2, units.n)
        found.append(r.max(1))
    return torch.cat([f.indices for f in found]), torch.cat([f.values for f in found])


def next_token_counts(ids: Tensor, classes: Tensor, valid: Tensor, vocab: int) -> tuple[Tensor, Tensor]:
    """How often each token follows each class: ([C, vocab] counts after class positions, [vocab]
    counts after any position) over windows ids [W, pos] with classes bool [W, pos, C] (positions
    whose next position is valid, valid bool [W, pos])."""
    has_next = valid[:, :-1] & valid[:, 1:]
    following = ids[:, 1:][has_next]
    after = classes[:, :-1][has_next].double()  # [T, C]
    counts = torch.zeros(classes.shape[-1], vocab, dtype=torch.float64).index_add_(1, following, after.T)
    return counts, torch.bincount(following, minlength=vocab).double()


def predicted_tokens(after_class: Tensor, after_any: Tensor, n_tokens: int, min_count: int = 5) -> Tensor:
    """The tokens each class predicts: [C, n_tokens] ids (-1 padding), the tokens seen at least
    min_count times after the class whose frequency there most exceeds their frequency overall
    (log lift > 0), from next_token_counts' after_class [C, V] and after_any [V]."""
    p_after = after_class / after_class.sum(1, keepdim=True).clamp(min=1)
    p_any = after_any / after_any.sum().clamp(min=1)
    lift = (p_after / p_any[None, :]).log().nan_to_num(-math.inf, -math.inf, -math.inf)
    lift = lift.masked_fill(after_class < min_count, -math.inf)
    top = lift.topk(min(n_tokens, lift.shape[1]), dim=1)
    return torch.where(top.values > 0, top.indices, -1)


def class_logprob(logits: Tensor, tokens: Tensor, windows: Tensor | None = None) -> Tensor:
    """log p(any of tokens) [R, pos] from logits [W, pos, V] and tokens [R, P] (-1 padding; a row
    with none gives -inf): row r reads the logits of window windows[r] (default: window r). Each
    window's normaliser (logsumexp over V) is computed once, however many rows share it."""
    logits = logits.float()
    if windows is None:
        windows = torch.arange(len(tokens), device=logits.device)
    positions = torch.arange(logits.shape[1], device=logits.device)
    picked = logits[windows[:, None, None], positions[None, :, None], tokens.clamp(min=0)[:, None, :]]  # [R, pos, P]
    picked = picked.masked_fill((tokens < 0)[:, None, :], -math.inf)
    return picked.logsumexp(-1) - logits.logsumexp(-1)[windows]


def logit_scores(
    directions: Tensor | None, readout: Tensor, tokens: Tensor | None = None, top: int = 10, chunk: int = 512
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Each unit's direct effect on the logits, directions [U, d] @ readout [d, V] (for a model: W_out
    @ W_U with the final norm's scale folded in; directions None: the units are the d neurons, whose
    effects are the readout's rows, with no [d, d] identity built), in chunks of units (never [U, V]
    at once). Returns (top token ids, their weights, bottom ids, their weights), each [U, top], and
    the share of the unit's predicted tokens tokens [U, P] (-1 padding) among its n most promoted
    tokens, n the number it has (NaN where it has none; chance is n / V)."""
    out: list[list[Tensor]] = [[], [], [], [], []]
    readout = readout.float()
    n_units = len(readout) if directions is None else len(directions)
    for a in range(0, n_units, chunk):
        if directions is None:
            effect = readout[a : a + chunk]  # [u, V]
        else:
            effect = directions[a : a + chunk].float().to(readout.device) @ readout  # [u, V]
        hi, lo = effect.topk(top, dim=1), (-effect).topk(top, dim=1)
        share = torch.full((len(effect),), math.nan)
        if tokens is not None:
            mine = tokens[a : a + chunk].to(readout.device)
            n = (mine >= 0).sum(1)
            # a predicted token is among the n most promoted when its weight reaches the n-th largest
            ranked = effect.topk(max(int(n.max()), 1), dim=1).values
            nth = ranked.gather(1, (n - 1).clamp(min=0)[:, None])
            inside = (effect.gather(1, mine.clamp(min=0)) >= nth) & (mine >= 0)
            share = torch.where(n > 0, inside.sum(1) / n.clamp(min=1), math.nan).cpu()
        for lst, t in zip(out, (hi.indices, hi.values, lo.indices, -lo.values, share)):
            lst.append(t.cpu())
    return tuple(torch.cat(t) for t in out)


def decoder_neuron_share(w_dec: Tensor) -> tuple[Tensor, Tensor]:
    """Per decoder row of W_dec [U, N]: (its largest neuron, the share of the row's L1 mass on it)."""
    mass = w_dec.abs()
    top = mass.max(1)
    return top.indices, top.values / mass.sum(1).clamp(min=1e-12)


def best_match(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(best column, its value) per row of matrix [U, V] by the largest value."""
    top = matrix.max(1)
    return top.indices, top.values


def best_dot(rows: Tensor, columns: Tensor, memory: int = MEMORY) -> tuple[Tensor, Tensor]:
    """best_match of rows [U, d] @ columns [V, d]^T (e.g. decoder rows against another dictionary's:
    their cosines), on rows' device, a block of rows at a time (never [U, V] at once); [U] on the CPU."""
    columns = columns.to(rows.device).T
    step = block_rows(memory, 4 * columns.shape[1])
    found = [best_match(rows[a : a + step] @ columns) for a in range(0, len(rows), step)]
    return torch.cat([i for i, _ in found]).cpu(), torch.cat([v for _, v in found]).cpu()


def target_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """log p(ids[:, t + 1]) [batch, pos - 1] from logits [batch, pos, vocab] of ids [batch, pos]."""
    logits = logits[:, :-1].float()
    return logits.gather(2, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)  # no full log_softmax: 2x faster


def passes(values: dict[str, Tensor], thresholds: CheckThresholds) -> dict[str, Tensor]:
    """Per check, bool [U] whether each unit passes; a value that is absent (NaN: not measured or not
    applicable) fails. values: precision, lift, recall, downstream (Δ log p of the class's predicted
    tokens when removed: passes at or below -threshold), neuron_specific (bool: a neuron passes
    specificity for the unit's proxy; NaN-free, absent for neurons), universality (best r)."""
    t = thresholds
    specific = (values["precision"] >= t.specificity) & (values["lift"] >= t.lift)
    out = {
        "specificity": specific,
        "sensitivity": values["recall"] >= t.sensitivity,
        "downstream": (values["downstream"] <= -t.downstream)
        & (values["layer_downstream"] <= -t.downstream)
        & (values["downstream_share"] >= t.downstream_share),
        "not_a_neuron": torch.zeros_like(specific),
        "universality": values["universality"] >= t.universality,
    }
    if "neuron_specific" in values:
        out["not_a_neuron"] = specific & ~values["neuron_specific"]
    return out
