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
    values = values[~torch.isnan(values)]
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    gen = torch.Generator().manual_seed(seed)
    means = values[torch.randint(len(values), (n, len(values)), generator=gen)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(values.mean()), lo, hi


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """(share, lower, upper) of a binomial proportion with Wilson's 95% score interval; NaN for n = 0."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return p, centre - half, centre + half
