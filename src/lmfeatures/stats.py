"""Bootstrap intervals shared by the report sections and their stages. No file I/O."""

from __future__ import annotations

import numpy as np
import torch


def bootstrap_mean(values: torch.Tensor | np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """(mean, 2.5th and 97.5th percentile of the means of n resamples) of values [F] (NaN dropped)."""
    if isinstance(values, torch.Tensor):
        values = values.to(torch.float64)
    else:  # a copy: pandas hands out read-only arrays, which torch warns about
        values = torch.from_numpy(np.array(values, dtype=np.float64))
    return cluster_bootstrap_mean(values[~torch.isnan(values)][:, None], seed, n)


def cluster_bootstrap_mean(values: torch.Tensor, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """(mean, 95% percentile interval) of values [F, ...] resampled by cluster: each resample draws F
    rows (features) with replacement and keeps every entry of a drawn row (its layers, positions), so
    a feature seen at several layers counts once, not as independent draws. The mean is over the
    non-NaN entries; a row with none has no weight."""
    values = values.to(torch.float64).reshape(len(values), -1)
    present = ~torch.isnan(values)
    sums, counts = torch.where(present, values, 0.0).sum(1), present.sum(1).double()
    if not counts.sum():
        return float("nan"), float("nan"), float("nan")
    gen = torch.Generator().manual_seed(seed)
    drawn = torch.randint(len(values), (n, len(values)), generator=gen)
    means = sums[drawn].sum(1) / counts[drawn].sum(1)  # a resample of only empty rows: NaN, left out
    lo, hi = torch.nanquantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(sums.sum() / counts.sum()), lo, hi


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """(share, lower, upper) of a binomial proportion with Wilson's 95% score interval; NaN for n = 0."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)  # clamped: float rounding gives -0.0 at 0
