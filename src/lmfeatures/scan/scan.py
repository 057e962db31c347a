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


def batch_partials(
    acts: torch.Tensor, valid: torch.Tensor, shift: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, ...]:
    """Everything the scan needs from one batch but the histogram, in as few passes as possible.

    acts [batch, pos, units] float32; valid [batch, pos] bool; shift [units] (≈ running mean, so
    float32 power sums do not cancel).
    Returns
        win_max, win_arg  [batch, units]   max over valid positions and its position
        sums              [6, units]       Σd, Σd², Σd³, Σd⁴ (d = x - shift), #(x > 0), #(x > threshold)
        unit_max, unit_min [units]
    Pure tensor code, so `torch.compile` can fuse it.
    """
    v = valid[..., None]
    win_max, win_arg = acts.masked_fill(~v, -math.inf).max(dim=1)
    x = acts.flatten(0, 1)  # [tokens, units]
    vf = v.flatten(0, 1).to(x.dtype)  # [tokens, 1]
    d = (x - shift) * vf
    d2 = d * d
    sums = torch.stack(
        [
            d.sum(0),
            d2.sum(0),
            (d2 * d).sum(0),
            (d2 * d2).sum(0),
            ((x > 0).to(x.dtype) * vf).sum(0),
            ((x > threshold).to(x.dtype) * vf).sum(0),
        ]
    )
    unit_max = torch.where(vf > 0, x, -math.inf).amax(0)
    unit_min = torch.where(vf > 0, x, math.inf).amin(0)
    return win_max, win_arg, sums, unit_max, unit_min


def batch_histogram(acts: torch.Tensor, valid: torch.Tensor, inv_width: torch.Tensor) -> torch.Tensor:
    """Counts of one batch in each unit's HIST_BINS bins of width 1 / inv_width, anchored at 0:
    acts [batch, pos, units] -> [units * HIST_BINS]. Widths must already hold every value."""
    half = HIST_BINS // 2
    x = acts.flatten(0, 1)
    vf = valid[..., None].flatten(0, 1).to(x.dtype)
    offset = half + torch.arange(x.shape[1], device=x.device) * HIST_BINS
    # floor before any offset is added: adding first would round values just below an edge up in float32
    idx = (x * inv_width).floor().clamp(-half, half - 1).to(torch.int64) + offset
    hist = torch.zeros(x.shape[1] * HIST_BINS, device=x.device, dtype=x.dtype)
    return hist.scatter_add(0, idx.flatten(), vf.expand_as(x).flatten())


def cap_per_document(values: torch.Tensor, docs: torch.Tensor, cap: int) -> torch.Tensor:
    """values, docs [n, units] -> values with every entry beyond the `cap` best of its document
    (per unit, ties broken by row) set to -inf."""
    n = values.shape[0]
    order = values.argsort(dim=0, descending=True, stable=True)
    d = docs.gather(0, order)  # [n, units], best first
    earlier = torch.ones(n, n, dtype=torch.bool, device=values.device).tril(-1)[..., None]  # [i, j]: j before i
    rank = ((d[:, None, :] == d[None, :, :]) & earlier).sum(1)  # better entries of the same document
    over = torch.zeros_like(values, dtype=torch.bool).scatter_(0, order, rank >= cap)
    return values.masked_fill(over, -math.inf)


class _Accumulator:
    """Running statistics of one hook point over [units]: merges of per-batch partials, on the device."""

    def __init__(
        self,
        n_units: int,
        k: int,
        threshold: float,
        device: torch.device,
        kernels=(batch_partials, batch_histogram),
        max_per_document: int | None = None,
    ):
        f64 = dict(dtype=torch.float64, device=device)
        self.k, self.threshold, self.max_per_document = k, threshold, max_per_document
        self.partials, self.histogram = kernels
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

    def update(
        self, acts: torch.Tensor, valid: torch.Tensor, window_ids: torch.Tensor, doc_ids: torch.Tensor
    ) -> torch.Tensor:
        """acts [batch, pos, units] float32; valid [batch, pos] bool; window_ids, doc_ids [batch] int64.
        Returns the window maxima [batch, units] for the on-disk table."""
        half = HIST_BINS // 2
        acts = acts.masked_fill(~valid[..., None], 0.0)  # context-only positions count nowhere, NaN or not
        if self.bin_width is None:  # first batch: range and shift from the data itself
            x = acts[valid]
            lo, hi = x.aminmax(dim=0)
            # Widths are powers of two, so x * (1 / w) is exact and binning is exact arithmetic.
            # The range [-half*w, half*w) starts as the smallest such range holding the first batch.
            absmax = torch.clamp(torch.maximum(hi.abs(), lo.abs()), min=2.0**-20)
            self.bin_width = torch.exp2(torch.floor(torch.log2(absmax / half)) + 1)
            self.mean = x.double().mean(0)
        shift = self.mean.float()
        win_max, win_arg, sums, bmax, bmin = self.partials(acts, valid, shift, self.threshold)
        if not bool((torch.isfinite(bmax) & torch.isfinite(bmin)).all()):  # NaN or Inf: no range holds it
            row, _, unit = (int(i) for i in torch.nonzero(~torch.isfinite(acts) & valid[..., None])[0])
            raise NonFiniteActivation(row, unit, float(acts[row, :, unit][~torch.isfinite(acts[row, :, unit])][0]))
        self._grow(torch.maximum(bmax.abs(), bmin.abs()))  # widen ranges first, then count once
        self.hist += self.histogram(acts, valid, 1 / self.bin_width).view_as(self.hist)
        # top-k over windows: the running top-k and this batch's window maxima, one topk. Capping per
        # document is exact greedily: a window left out because its document already has `cap`
        # better ones kept can never come back, since those leave the top-k only for better windows.
        cand_v = torch.cat([self.top_values, win_max])
        cand_w = torch.cat([self.top_window, window_ids[:, None].expand_as(win_max)])
        cand_p = torch.cat([self.top_pos, win_arg])
        cand_d = torch.cat([self.top_doc, doc_ids[:, None].expand_as(win_max)])
        if self.max_per_document is not None:
            cand_v = cap_per_document(cand_v, cand_d, self.max_per_document)
        self.top_values, idx = cand_v.topk(self.k, dim=0)
        found = torch.isfinite(self.top_values)  # fewer than k windows may be allowed in all
        self.top_window = torch.where(found, cand_w.gather(0, idx), -1)
        self.top_pos = torch.where(found, cand_p.gather(0, idx), -1)
        self.top_doc = torch.where(found, cand_d.gather(0, idx), -1)
        self.max = torch.maximum(self.max, bmax)
        self.min = torch.minimum(self.min, bmin)
        sums = sums.double()
        self.n_pos += sums[4]
        self.n_thr += sums[5]
        self._merge_moments(int(valid.sum()), shift.double(), sums[:4])
        return win_max

    def _grow(self, absmax: torch.Tensor) -> None:
        """Double bin widths (merging neighbouring bins, anchored at 0) until every value fits: exact."""
        half = HIST_BINS // 2
        while bool((rows := absmax >= half * self.bin_width).any()):
            neg, pos = self.hist[rows, :half], self.hist[rows, half:]
            zeros = torch.zeros_like(neg[:, : half // 2])
            self.hist[rows] = torch.cat(
                [zeros, neg.reshape(-1, half // 2, 2).sum(-1), pos.reshape(-1, half // 2, 2).sum(-1), zeros], dim=1
            )
            self.bin_width[rows] *= 2

    def _merge_moments(self, nb: int, shift: torch.Tensor, s: torch.Tensor) -> None:
        """Central moments of the batch from its shifted power sums, then Chan et al.'s merge (float64)."""
        e = s[0] / nb
        m2b = s[1] - nb * e**2
        m3b = s[2] - 3 * e * s[1] + 2 * nb * e**3
        m4b = s[3] - 4 * e * s[2] + 6 * e**2 * s[1] - 3 * nb * e**4
        mb = shift + e
        na, n = self.count, self.count + nb
        if na == 0:
            self.mean, self.m2, self.m3, self.m4, self.count = mb, m2b, m3b, m4b, nb
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


def _kernels(mode: str, n_activations: int):
    """(batch_partials, batch_histogram), compiled when asked or when the scan repays compilation."""
    if mode not in ("auto", "always", "never"):
        raise ScanError(f"scan.compile={mode!r} is not one of: auto, always, never")
    if mode == "always" or (mode == "auto" and n_activations >= COMPILE_MIN_ACTIVATIONS):
        return torch.compile(batch_partials, dynamic=False), torch.compile(batch_histogram, dynamic=False)
    return batch_partials, batch_histogram


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
    hooks of cfg.kinds: an SAE is one more hook to scan.
    """
    derived = derived or {}
    hooks = hook_names(model, cfg.kinds) + list(derived)
    dims = {h: model.d_mlp if h.startswith("mlp") else model.d_model for h in hook_names(model, cfg.kinds)}
    dims |= {name: d.width for name, d in derived.items()}
    sources = hook_names(model, cfg.kinds) + [d.source for d in derived.values()]
    device = model.device
    n_win = len(windows.doc)
    n_tokens = int((cfg.context_length - windows.valid_from).sum())
    kernels = _kernels(cfg.compile, n_tokens * sum(dims.values()))
    k = min(cfg.top_k, n_win)
    acc = {h: _Accumulator(dims[h], k, cfg.density_threshold, device, kernels, cfg.max_per_document) for h in hooks}
    tables = {h: allocate(h, (n_win, dims[h])) for h in hooks}
    positions = torch.arange(cfg.context_length)
    bar = tqdm(total=n_tokens, desc=desc, unit="tok", unit_scale=True, mininterval=2.0)
    with torch.inference_mode():
        for b0 in range(0, n_win, cfg.batch_size):
            # the last batch is padded with invalid rows, so shapes stay fixed (one compilation)
            rows = torch.arange(b0, b0 + cfg.batch_size).clamp(max=n_win - 1)
            real = torch.arange(b0, b0 + cfg.batch_size) < n_win
            ids = windows.ids[rows].to(device)
            valid = ((positions[None, :] >= windows.valid_from[rows, None]) & real[:, None]).to(device)
            acts = model.run(sources, input_ids=ids)
            acts |= {name: d.compute(acts[d.source]) for name, d in derived.items()}
            n_real = int(real.sum())
            for h in hooks:
                try:
                    win_max = acc[h].update(acts[h].float(), valid, rows.to(device), windows.doc[rows].to(device))
                except NonFiniteActivation as err:
                    raise ScanError(
                        f"{desc}: hook {h}, unit {err.unit}, window {int(rows[err.row])}: activation {err.value} "
                        "is not finite; check the model's weights and dtype (float16 overflows: use float32)"
                    ) from None
                tables[h][b0 : b0 + n_real] = win_max[:n_real].half().cpu().numpy()
            bar.update(int(valid.sum()))
    bar.close()
    rng = np.random.default_rng(cfg.seed)
    random_windows = torch.from_numpy(rng.choice(n_win, size=min(cfg.n_random, n_win), replace=False))
    out = {"random_window": random_windows}
    for h in hooks:
        a = acc[h]
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
    return out, tables


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
