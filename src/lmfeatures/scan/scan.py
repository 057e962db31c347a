"""Dataset max-activation scan (Neuroscope-style) of every neuron of every layer, in one pass.

The held-out documents are cut into windows of `context_length` tokens. A document's last window is
aligned to the document's end, so it overlaps the previous one; its first `valid_from` positions are
context only and are not counted again. Every token is therefore counted exactly once, and no window
needs padding. Documents shorter than the context are skipped and counted.

For every unit u (an `mlp` neuron or a `resid` dimension) of every requested layer, one forward
pass per batch updates, all as tensor operations over [units]:
  * the top-k windows by the window's max activation (one example per window, at most
    `max_per_document` from one document), exactly;
  * moments (count, mean, M2, M3, M4 merged with Chan et al.'s parallel formulas in float64),
    max, min, density above 0 and above a threshold;
  * a 64-bin histogram anchored at 0 with a per-unit power-of-two bin width that doubles
    (merging bin pairs, which is exact) whenever a value falls outside the range;
  * each window's max, streamed to a table [windows, units] that the caller allocates (the scan
    stage memory-maps it to disk, so memory stays bounded whatever the corpus size), so that
    after the pass interval samples (equal-width intervals over (0, max]) and random examples are
    drawn exactly with the final max.
The forward pass stops after the deepest requested layer.

A scan can be split over jobs (scan.shards): each scans a consecutive range of whole batches
(`scan_part`), `merge_parts` merges their statistics exactly (the top-k order, value descending then
window ascending, is total; histograms merge to the widest power-of-two bins; moments by Chan et
al.'s formulas) and `finish_scan` draws the samples from the whole window-max table, so the result
is the single scan's (the moments to float rounding). That holds because a batch's statistics
depend on no earlier batch but through the histogram's bin widths, whose merges are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from lmfeatures.lm.hooks import HookedModel

HIST_BINS = 64  # 32 below zero, 32 above, all of one per-unit width


class ScanError(ValueError):
    """Bad scan input or a scan that does not match what the caller expects."""


class NonFiniteActivation(ScanError):
    """An activation is NaN or infinite: row `row` of the batch, unit `unit`."""

    def __init__(self, row: int, unit: int, value: float):
        super().__init__(f"activation {value} of unit {unit} in batch row {row} is not finite")
        self.row, self.unit, self.value = row, unit, value


@dataclass
class ScanConfig:
    context_length: int = 128
    max_tokens: int | None = None  # token budget; None = the whole held-out split
    batch_size: int = 32  # windows per forward pass
    top_k: int = 20
    max_per_document: int | None = 2  # top examples from one document (Neuroscope: 1); None = no cap
    kinds: list[str] = field(default_factory=lambda: ["mlp"])  # "mlp" and / or "resid"
    density_threshold: float = 0.5  # second density: share of tokens above this value
    n_intervals: int = 5
    per_interval: int = 5
    n_random: int = 20
    compile: str = "auto"  # fuse the per-batch statistics with torch.compile: auto | always | never
    seed: int = 0


# Compiling costs ~6-20 s once per shape and saves ~40 ns per activation on 2 CPU cores
# (benchmarks/scan_overhead.py), so it pays off from about this many activations per scan.
COMPILE_MIN_ACTIVATIONS = 500_000_000


@dataclass
class Windows:
    """The scanned windows: window w is tokens[doc_start[w] + start[w] : ... + context] of document doc[w]."""

    doc: torch.Tensor  # int64 [n_windows] index into the document list
    start: torch.Tensor  # int64 [n_windows] offset of the window inside its document
    valid_from: torch.Tensor  # int64 [n_windows] positions before this were already counted
    ids: torch.Tensor  # int64 [n_windows, context] token ids
    skipped_short_docs: int


def make_windows(docs: list[list[int]], context_length: int, max_tokens: int | None = None) -> Windows:
    """Cut documents (token id lists) into full windows covering every token once (see module doc)."""
    doc, start, valid, chunks, skipped, budget = [], [], [], [], 0, max_tokens
    for d, toks in enumerate(docs):
        n = len(toks)
        if n < context_length:
            skipped += 1
            continue
        covered = 0
        while covered < n and (budget is None or budget > 0):
            s = min(covered, n - context_length)
            doc.append(d)
            start.append(s)
            valid.append(covered - s)
            chunks.append(toks[s : s + context_length])
            new = s + context_length - covered
            covered = s + context_length
            if budget is not None:
                budget -= new
        if budget is not None and budget <= 0:
            break
    if not doc:
        raise ScanError(
            f"no document has at least scan.context_length={context_length} tokens ({skipped} skipped); "
            "lower scan.context_length or use a corpus with longer documents"
        )
    return Windows(
        doc=torch.tensor(doc),
        start=torch.tensor(start),
        valid_from=torch.tensor(valid),
        ids=torch.tensor(chunks, dtype=torch.int64),
        skipped_short_docs=skipped,
    )


def batch_statistics(
    acts: torch.Tensor, valid: torch.Tensor, threshold: float, inv_width: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Everything the scan needs from one batch of one hook point, in two passes over the activations.

    acts [batch, pos, units] float32 (anything, NaN included, at invalid positions); valid [batch, pos]
    bool; inv_width [units] the inverse histogram bin widths.
    Returns
        shift             [units]          the batch's mean, so that float32 power sums do not cancel
        win_max, win_arg  [batch, units]   max over valid positions and its position
        sums              [6, units]       Σd, Σd², Σd³, Σd⁴ (d = x - shift), #(x > 0), #(x > threshold)
        unit_max, unit_min [units]
        bins              [batch * pos * units] int64 each activation's cell of the flat histogram
                          [units * HIST_BINS + 1], clamped to the current widths; invalid positions go
                          to the last cell, which is dropped
    Nothing depends on earlier batches but the bin widths (exact), so a batch gives the same numbers
    in a single scan and in a shard of one. Pure tensor code, so `torch.compile` fuses it.
    """
    v = valid[..., None]
    win_max, win_arg = torch.where(v, acts, -math.inf).max(dim=1)
    x = torch.where(v, acts, 0.0).flatten(0, 1)  # [tokens, units]
    vf = v.flatten(0, 1)  # [tokens, 1]
    shift = x.sum(0) / vf.sum().clamp(min=1)
    d = torch.where(vf, x - shift, 0.0)
    d2 = d * d
    sums = torch.stack(
        [
            d.sum(0),
            d2.sum(0),
            (d2 * d).sum(0),
            (d2 * d2).sum(0),
            ((x > 0) & vf).to(x.dtype).sum(0),
            ((x > threshold) & vf).to(x.dtype).sum(0),
        ]
    )
    unit_max = torch.where(vf, x, -math.inf).amax(0)
    unit_min = torch.where(vf, x, math.inf).amin(0)
    return shift, win_max, win_arg, sums, unit_max, unit_min, histogram_bins(x, vf, inv_width).flatten()


def histogram_bins(x: torch.Tensor, valid: torch.Tensor, inv_width: torch.Tensor) -> torch.Tensor:
    """x [tokens, units], valid [tokens, 1] bool -> int64 [tokens, units] cells of the flat histogram
    (units * HIST_BINS cells of width 1 / inv_width anchored at 0, then one cell for invalid positions)."""
    half = HIST_BINS // 2
    offset = half + torch.arange(x.shape[1], device=x.device) * HIST_BINS
    # floor before any offset is added: adding first would round values just below an edge up in float32
    cell = (x * inv_width).floor().clamp(-half, half - 1).to(torch.int64) + offset
    return torch.where(valid, cell, x.shape[1] * HIST_BINS)


def count_cells(bins: torch.Tensor, n_units: int) -> torch.Tensor:
    """int64 cells -> counts [units, HIST_BINS] (the invalid cell dropped)."""
    ones = torch.ones((), dtype=torch.int32, device=bins.device).expand(bins.shape)
    counts = torch.zeros(n_units * HIST_BINS + 1, dtype=torch.int32, device=bins.device).scatter_add_(0, bins, ones)
    return counts[:-1].view(n_units, HIST_BINS)


def best_first(values: torch.Tensor, docs: torch.Tensor, k: int, cap: int | None) -> tuple[torch.Tensor, ...]:
    """values, docs [n, units] -> (rows [k, units], kept [k, units]): the k best rows per unit, best
    first, ties to the earlier row, at most `cap` rows of one document (None: no cap); `kept` is False
    where fewer than k rows are allowed.

    The order (value descending, row ascending) is total, so when rows come in window order the
    result does not depend on how the windows were batched: a streaming scan and a merge of shards
    pick the same windows."""
    order = values.argsort(dim=0, descending=True, stable=True)  # [n, units]
    if cap is None:
        return order[:k], torch.ones_like(order[:k], dtype=torch.bool)
    d = docs.gather(0, order)  # documents, best first
    # rank of each entry among the better entries of its document: group by document (stable, so
    # best first within a group), rank = position - the group's first position
    by_doc = d.argsort(dim=0, stable=True)
    grouped = d.gather(0, by_doc)
    position = torch.arange(len(d), device=d.device)[:, None].expand_as(d)
    first = torch.ones_like(grouped, dtype=torch.bool)
    first[1:] = grouped[1:] != grouped[:-1]
    rank = position - torch.where(first, position, 0).cummax(0).values
    over = torch.empty_like(rank).scatter_(0, by_doc, rank) >= cap  # [n, units], best first
    allowed_first = over.to(torch.int8).argsort(dim=0, stable=True)[:k]
    return order.gather(0, allowed_first), ~over.gather(0, allowed_first)


def _coarsen(hist: torch.Tensor, width: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """hist [units, HIST_BINS] float64 with bin widths `width` [units] -> the same counts in bins of width
    `target` (each a power-of-two multiple of width): neighbouring bins merge in pairs, anchored at 0,
    so the result is exact."""
    half = HIST_BINS // 2
    hist, width = hist.clone(), width.clone()
    while bool((rows := width < target).any()):
        neg, pos = hist[rows, :half], hist[rows, half:]
        zeros = torch.zeros_like(neg[:, : half // 2])
        hist[rows] = torch.cat(
            [zeros, neg.reshape(-1, half // 2, 2).sum(-1), pos.reshape(-1, half // 2, 2).sum(-1), zeros], dim=1
        )
        width[rows] *= 2
    return hist


class _Accumulator:
    """Running statistics of one hook point over [units]: merges of per-batch partials, on the device."""

    def __init__(
        self,
        n_units: int,
        k: int,
        threshold: float,
        device: torch.device,
        kernel=batch_statistics,
        max_per_document: int | None = None,
    ):
        f64 = dict(dtype=torch.float64, device=device)
        self.k, self.threshold, self.max_per_document, self.kernel = k, threshold, max_per_document, kernel
        self.top_values = torch.full((k, n_units), -math.inf, device=device)
        self.top_window = torch.full((k, n_units), -1, dtype=torch.int64, device=device)
        self.top_pos = torch.full((k, n_units), -1, dtype=torch.int64, device=device)
        self.top_doc = torch.full((k, n_units), -1, dtype=torch.int64, device=device)
        self.count = 0
        self.mean, self.m2, self.m3, self.m4 = (torch.zeros(n_units, **f64) for _ in range(4))
        self.max = torch.full((n_units,), -math.inf, device=device)
        self.min = torch.full((n_units,), math.inf, device=device)
        self.n_pos = torch.zeros(n_units, **f64)
        self.n_thr = torch.zeros(n_units, **f64)
        self.hist = torch.zeros(n_units, HIST_BINS, **f64)
        self.bin_width = None  # [units], set from the first batch

    STATE = ("top_values", "top_window", "top_pos", "top_doc", "mean", "m2", "m3", "m4", "max", "min")
    STATE += ("n_pos", "n_thr", "hist", "bin_width")

    def state(self) -> dict[str, torch.Tensor]:
        """Everything a merge needs, as tensors (see `merge`)."""
        return {name: getattr(self, name) for name in self.STATE} | {"count": torch.tensor(self.count)}

    @classmethod
    def merge(cls, states: list[dict[str, torch.Tensor]], k: int, max_per_document: int | None) -> _Accumulator:
        """One accumulator from the states of scans over consecutive window ranges, in window order:
        exact for top-k, counts, extremes and histograms, Chan et al.'s merge for the moments."""
        with torch.inference_mode():  # the states may come from a scan, which made them in inference mode
            return cls._merge(states, k, max_per_document)

    @classmethod
    def _merge(cls, states: list[dict[str, torch.Tensor]], k: int, max_per_document: int | None) -> _Accumulator:
        first = states[0]
        acc = cls(first["max"].shape[0], k, 0.0, first["max"].device, max_per_document=max_per_document)
        acc.bin_width = torch.stack([s["bin_width"] for s in states]).amax(0)
        for s in states:
            acc.hist += _coarsen(s["hist"], s["bin_width"], acc.bin_width)
            acc.max, acc.min = torch.maximum(acc.max, s["max"]), torch.minimum(acc.min, s["min"])
            acc.n_pos += s["n_pos"]
            acc.n_thr += s["n_thr"]
            acc._merge_moments(int(s["count"]), s["mean"], s["m2"], s["m3"], s["m4"])
            acc._keep_best(s["top_values"], s["top_window"], s["top_pos"], s["top_doc"])
        return acc

    def update(
        self, acts: torch.Tensor, valid: torch.Tensor, window_ids: torch.Tensor, doc_ids: torch.Tensor
    ) -> torch.Tensor:
        """acts [batch, pos, units] float32; valid [batch, pos] bool; window_ids, doc_ids [batch] int64.
        Returns the window maxima [batch, units] for the on-disk table."""
        half = HIST_BINS // 2
        if self.bin_width is None:  # first batch: the histogram's range from the data itself
            lo, hi = acts[valid].aminmax(dim=0)
            # Widths are powers of two, so x * (1 / w) is exact and binning is exact arithmetic.
            # The range [-half*w, half*w) starts as the smallest such range holding the first batch.
            absmax = torch.clamp(torch.maximum(hi.abs(), lo.abs()), min=2.0**-20)
            self.bin_width = torch.exp2(torch.floor(torch.log2(absmax / half)) + 1)
        shift, win_max, win_arg, sums, bmax, bmin, bins = self.kernel(acts, valid, self.threshold, 1 / self.bin_width)
        if not bool((torch.isfinite(bmax) & torch.isfinite(bmin)).all()):  # NaN or Inf: no range holds it
            row, _, unit = (int(i) for i in torch.nonzero(~torch.isfinite(acts) & valid[..., None])[0])
            raise NonFiniteActivation(row, unit, float(acts[row, :, unit][~torch.isfinite(acts[row, :, unit])][0]))
        absmax = torch.maximum(bmax.abs(), bmin.abs())
        if bool((absmax >= half * self.bin_width).any()):  # rare: widen the ranges, then bin again
            self._grow(absmax)
            x = acts.flatten(0, 1)
            bins = histogram_bins(x, valid.flatten()[:, None], 1 / self.bin_width).flatten()
        self.hist += count_cells(bins, self.hist.shape[0])
        self._keep_best(win_max, window_ids[:, None].expand_as(win_max), win_arg, doc_ids[:, None].expand_as(win_max))
        self.max = torch.maximum(self.max, bmax)
        self.min = torch.minimum(self.min, bmin)
        sums = sums.double()
        self.n_pos += sums[4]
        self.n_thr += sums[5]
        nb = int(valid.sum())
        e = sums[0] / nb  # central moments of the batch from its shifted power sums
        m2b = sums[1] - nb * e**2
        m3b = sums[2] - 3 * e * sums[1] + 2 * nb * e**3
        m4b = sums[3] - 4 * e * sums[2] + 6 * e**2 * sums[1] - 3 * nb * e**4
        self._merge_moments(nb, shift.double() + e, m2b, m3b, m4b)
        return win_max

    def _keep_best(self, values, windows, positions, docs) -> None:
        """Merge candidates [n, units], all of later windows than the kept ones, into the running top-k.
        Capping per document is exact greedily: a window left out because its document already has
        `cap` better ones kept can never come back, since those leave the top-k only for better windows."""
        # only units where a candidate beats the k-th kept value can change (a tie goes to the
        # earlier, kept window); after the first batches that is a small share of the units
        units = torch.nonzero((values > self.top_values[-1]).any(0)).flatten()
        if len(units) == 0:
            return
        old = [t.index_select(1, units) for t in (self.top_values, self.top_window, self.top_pos, self.top_doc)]
        new = [t.index_select(1, units) for t in (values, windows, positions, docs)]
        cand_v, cand_w, cand_p, cand_d = (torch.cat(pair) for pair in zip(old, new))
        idx, kept = best_first(cand_v, cand_d, self.k, self.max_per_document)
        top_values = cand_v.gather(0, idx)
        found = kept & torch.isfinite(top_values)  # fewer than k windows may be allowed in all
        self.top_values[:, units] = top_values.masked_fill(~found, -math.inf)
        self.top_window[:, units] = torch.where(found, cand_w.gather(0, idx), -1)
        self.top_pos[:, units] = torch.where(found, cand_p.gather(0, idx), -1)
        self.top_doc[:, units] = torch.where(found, cand_d.gather(0, idx), -1)

    def _grow(self, absmax: torch.Tensor) -> None:
        """Double bin widths (merging neighbouring bins, anchored at 0) until every value fits: exact."""
        half = HIST_BINS // 2
        target = self.bin_width.clone()
        while bool((rows := absmax >= half * target).any()):
            target[rows] *= 2
        self.hist = _coarsen(self.hist, self.bin_width, target)
        self.bin_width = target

    def _merge_moments(self, nb: int, mb, m2b, m3b, m4b) -> None:
        """Chan et al.'s merge of another part's count, mean and central moment sums (float64)."""
        na, n = self.count, self.count + nb
        if na == 0:  # copies: the sums are updated in place, and a merged part's state stays as it was
            self.mean, self.m2, self.m3, self.m4 = (t.clone() for t in (mb, m2b, m3b, m4b))
            self.count = nb
            return
        delta = mb - self.mean
        self.m4 += (
            m4b
            + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
            + 6 * delta**2 * (na * na * m2b + nb * nb * self.m2) / n**2
            + 4 * delta * (na * m3b - nb * self.m3) / n
        )
        self.m3 += m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * self.m2) / n
        self.m2 += m2b + delta**2 * na * nb / n
        self.mean = self.mean + delta * nb / n
        self.count = n

    def stats(self) -> dict[str, torch.Tensor]:
        n = self.count
        var = self.m2 / n
        sd = var.sqrt()
        safe = torch.where(sd > 0, sd, torch.ones_like(sd))
        return {
            "max": self.max,
            "min": self.min,
            "mean": self.mean.float(),
            "var": var.float(),
            "skew": torch.where(sd > 0, (self.m3 / n) / safe**3, torch.zeros_like(sd)).float(),
            "kurtosis": torch.where(sd > 0, (self.m4 / n) / safe**4 - 3, torch.zeros_like(sd)).float(),
            "density": (self.n_pos / n).float(),
            "density_above_threshold": (self.n_thr / n).float(),
        }


def _interval_samples(win_max: np.ndarray, unit_max: np.ndarray, cfg: ScanConfig, rng: np.random.Generator):
    """Equal-width intervals over (0, max] per unit; `per_interval` windows (at most all of them)
    drawn uniformly from those whose max falls in each interval. win_max [windows, units] float16
    -> window ids [intervals, min(per_interval, windows), units] (-1 where an interval has fewer)."""
    n_win, n_units = win_max.shape
    per_interval = min(cfg.per_interval, n_win)
    out = np.full((cfg.n_intervals, per_interval, n_units), -1, dtype=np.int64)
    block = max(1, 2**22 // max(1, n_win))  # units per block keeps the working set ~ 32 MB
    for u0 in range(0, n_units, block):
        wm = np.asarray(win_max[:, u0 : u0 + block], dtype=np.float32)  # [windows, block]
        # the unit max in the table's precision: float16 may round a window max above the float32 max,
        # which would put the max window itself in no interval
        top = unit_max[u0 : u0 + block].astype(win_max.dtype).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            which = np.ceil(wm / top * cfg.n_intervals).astype(np.int64) - 1  # interval index, -1 for <= 0
        which[(wm <= 0) | ~(top > 0)[None, :]] = -1
        keys = rng.random(wm.shape)  # random priority: the lowest keys per interval are a uniform sample
        for i in range(cfg.n_intervals):
            k = np.where(which == i, keys, np.inf)
            order = np.argsort(k, axis=0)[:per_interval]  # [per_interval, block]
            picked = np.take_along_axis(k, order, 0)
            out[i, :, u0 : u0 + block] = np.where(np.isfinite(picked), order, -1)
    return out


def _kernel(mode: str, n_activations: int):
    """batch_statistics, compiled when asked or when the scan repays compilation."""
    if mode not in ("auto", "always", "never"):
        raise ScanError(f"scan.compile={mode!r} is not one of: auto, always, never")
    if mode == "always" or (mode == "auto" and n_activations >= COMPILE_MIN_ACTIVATIONS):
        return torch.compile(batch_statistics, dynamic=False)
    return batch_statistics


def hook_names(model: HookedModel, kinds: list[str]) -> list[str]:
    for k in kinds:
        if k not in ("mlp", "resid"):
            raise ScanError(f"scan.kinds entry {k!r} is not one of: mlp, resid")
    return [f"{k}.{layer}" for k in kinds for layer in range(model.n_layers)]


def in_memory(hook: str, shape: tuple[int, int]) -> np.ndarray:
    """The default window-max table: a float16 array in RAM."""
    return np.empty(shape, dtype=np.float16)


@dataclass
class DerivedHook:
    """Units computed from a hook point, scanned like one: e.g. an SAE's features from mlp.L."""

    source: str  # the hook point read, e.g. "mlp.0"
    compute: Callable[[torch.Tensor], torch.Tensor]  # [batch, pos, source dim] -> [batch, pos, width]
    width: int


@dataclass
class ScanPart:
    """The statistics of a scan over the windows [start, stop): merged with `merge_parts`, finished
    with `finish_scan`. The window-max tables of the part are the caller's (rows start..stop-1)."""

    start: int
    stop: int
    state: dict[str, dict[str, torch.Tensor]]  # {hook: accumulator state}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat {'{hook}/{field}': tensor}, to save (e.g. with safetensors)."""
        return {f"{h}/{k}": v for h, st in self.state.items() for k, v in st.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], start: int, stop: int) -> ScanPart:
        state: dict[str, dict[str, torch.Tensor]] = {}
        for name, v in tensors.items():
            hook, field_name = name.rsplit("/", 1)
            state.setdefault(hook, {})[field_name] = v
        return cls(start, stop, state)


def shard_range(n_windows: int, shard: int, n_shards: int, batch_size: int) -> tuple[int, int]:
    """Windows [start, stop) of shard `shard` of `n_shards`: consecutive, disjoint, covering all, and
    made of whole batches of the single scan, so that every forward pass sees the same batch (its
    last bits may depend on the batch) and the shards merge into the single scan. Empty when there
    are fewer batches than shards."""
    n_batches = -(-n_windows // batch_size)
    first, last = n_batches * shard // n_shards, n_batches * (shard + 1) // n_shards
    return min(n_windows, first * batch_size), min(n_windows, last * batch_size)


def scan_part(
    model: HookedModel,
    windows: Windows,
    cfg: ScanConfig,
    allocate: Callable[[str, tuple[int, int]], np.ndarray] = in_memory,
    desc: str = "scan",
    derived: dict[str, DerivedHook] | None = None,
    rows: tuple[int, int] | None = None,
) -> tuple[ScanPart, dict[str, np.ndarray]]:
    """The forward passes over windows[start:stop] (`rows`; default all): returns the part's statistics
    and its window-max tables, float16 [stop - start, units] from `allocate(hook, shape)`."""
    derived = derived or {}
    start, stop = rows if rows is not None else (0, len(windows.doc))
    if not 0 <= start < stop <= len(windows.doc):
        raise ScanError(f"window range [{start}, {stop}) is empty or outside the {len(windows.doc)} windows")
    hooks = hook_names(model, cfg.kinds) + list(derived)
    dims = {h: model.d_mlp if h.startswith("mlp") else model.d_model for h in hook_names(model, cfg.kinds)}
    dims |= {name: d.width for name, d in derived.items()}
    sources = hook_names(model, cfg.kinds) + [d.source for d in derived.values()]
    device = model.device
    n_tokens = int((cfg.context_length - windows.valid_from[start:stop]).sum())
    kernel = _kernel(cfg.compile, n_tokens * sum(dims.values()))
    k = min(cfg.top_k, len(windows.doc))
    acc = {h: _Accumulator(dims[h], k, cfg.density_threshold, device, kernel, cfg.max_per_document) for h in hooks}
    tables = {h: allocate(h, (stop - start, dims[h])) for h in hooks}
    positions = torch.arange(cfg.context_length)
    bar = tqdm(total=n_tokens, desc=desc, unit="tok", unit_scale=True, mininterval=2.0)
    with torch.inference_mode():
        for b0 in range(start, stop, cfg.batch_size):
            # the last batch is padded with invalid rows, so shapes stay fixed (one compilation)
            batch = torch.arange(b0, b0 + cfg.batch_size).clamp(max=stop - 1)
            real = torch.arange(b0, b0 + cfg.batch_size) < stop
            ids = windows.ids[batch].to(device)
            valid = ((positions[None, :] >= windows.valid_from[batch, None]) & real[:, None]).to(device)
            acts = model.run(sources, input_ids=ids)
            acts |= {name: d.compute(acts[d.source]) for name, d in derived.items()}
            n_real = int(real.sum())
            for h in hooks:
                try:
                    win_max = acc[h].update(acts[h].float(), valid, batch.to(device), windows.doc[batch].to(device))
                except NonFiniteActivation as err:
                    raise ScanError(
                        f"{desc}: hook {h}, unit {err.unit}, window {int(batch[err.row])}: activation {err.value} "
                        "is not finite; check the model's weights and dtype (float16 overflows: use float32)"
                    ) from None
                tables[h][b0 - start : b0 - start + n_real] = win_max[:n_real].half().cpu().numpy()
            bar.update(int(valid.sum()))
    bar.close()
    return ScanPart(start, stop, {h: a.state() for h, a in acc.items()}), tables


def merge_parts(parts: list[ScanPart], cfg: ScanConfig) -> ScanPart:
    """One part from parts over consecutive window ranges (any order given): exact for the top-k with
    its per-document cap, counts, extremes and histograms; Chan et al.'s merge for the moments."""
    parts = sorted(parts, key=lambda p: p.start)
    for a, b in zip(parts, parts[1:]):
        if a.stop != b.start or a.state.keys() != b.state.keys():
            raise ScanError(f"scan parts [{a.start}, {a.stop}) and [{b.start}, {b.stop}) do not follow each other")
    k = next(iter(parts[0].state.values()))["top_values"].shape[0]
    merged = {
        h: _Accumulator.merge([p.state[h] for p in parts], k, cfg.max_per_document).state() for h in parts[0].state
    }
    return ScanPart(parts[0].start, parts[-1].stop, merged)


def finish_scan(part: ScanPart, tables: dict[str, np.ndarray], cfg: ScanConfig) -> dict[str, torch.Tensor]:
    """The scan's tensors by '{hook}.{field}' name from the part over all windows and the full
    window-max tables: statistics, then interval samples and random windows drawn exactly with the
    final max."""
    n_win = part.stop
    if part.start != 0 or any(len(t) != n_win for t in tables.values()):
        raise ScanError(f"a scan finishes from all windows; got part [{part.start}, {part.stop}) and its tables")
    rng = np.random.default_rng(cfg.seed)
    random_windows = torch.from_numpy(rng.choice(n_win, size=min(cfg.n_random, n_win), replace=False))
    out = {"random_window": random_windows}
    n_tokens = 0
    for h, state in part.state.items():
        a = _Accumulator.merge([state], state["top_values"].shape[0], cfg.max_per_document)
        n_tokens = a.count
        st = {k: v.cpu() for k, v in a.stats().items()}
        intervals = torch.from_numpy(_interval_samples(tables[h], st["max"].numpy(), cfg, rng))
        hist = a.hist.cpu()
        edges_w = a.bin_width.cpu()
        # share of tokens per interval (0, max/I], ...: from the histogram, linear within a straddling bin
        share = _interval_share(hist, edges_w, st["max"], cfg.n_intervals)
        out.update(
            {
                f"{h}.top_values": a.top_values.cpu(),
                f"{h}.top_window": a.top_window.cpu(),
                f"{h}.top_pos": a.top_pos.cpu(),
                f"{h}.hist": hist.float(),
                f"{h}.bin_width": edges_w,
                f"{h}.interval_window": intervals,
                f"{h}.interval_share": share,
                f"{h}.random_values": torch.from_numpy(np.asarray(tables[h][random_windows.numpy()], dtype=np.float32)),
            }
        )
        out.update({f"{h}.{k}": v for k, v in st.items()})
    out["n_tokens"] = torch.tensor(n_tokens)
    return out


def scan(
    model: HookedModel,
    windows: Windows,
    cfg: ScanConfig,
    allocate: Callable[[str, tuple[int, int]], np.ndarray] = in_memory,
    desc: str = "scan",
    derived: dict[str, DerivedHook] | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Run the scan. Returns (tensors by '{hook}.{field}' name, {hook: window-max table}).

    Each hook's window-max table, float16 [windows, units], comes from `allocate(hook, shape)`:
    an array in RAM by default, or a memory-mapped file to keep RAM bounded for large corpora.
    `derived` adds units computed from hook points ({name: DerivedHook}), scanned exactly like the
    hooks of cfg.kinds: an SAE is one more hook to scan. A scan split over jobs runs `scan_part` on
    each `shard_range`, then `merge_parts` and `finish_scan`: the same result.
    """
    part, tables = scan_part(model, windows, cfg, allocate, desc, derived)
    return finish_scan(part, tables, cfg), tables


def _interval_share(hist: torch.Tensor, width: torch.Tensor, unit_max: torch.Tensor, n_intervals: int):
    """Share of all tokens in each interval ((i/I)·max, ((i+1)/I)·max] -> [intervals, units]."""
    half = HIST_BINS // 2
    lo = (torch.arange(HIST_BINS) - half)[None, :] * width[:, None]  # [units, bins] left edges
    hi = lo + width[:, None]
    total = hist.sum(1, keepdim=True).clamp(min=1)
    out = []
    for i in range(n_intervals):
        a = (unit_max * i / n_intervals)[:, None]
        b = (unit_max * (i + 1) / n_intervals)[:, None]
        overlap = (torch.minimum(hi, b) - torch.maximum(lo, a)).clamp(min=0) / width[:, None]
        out.append(((hist * overlap).sum(1, keepdim=True) / total).squeeze(1))
    return torch.stack(out).float()
