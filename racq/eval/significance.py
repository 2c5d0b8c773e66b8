"""Statistics for `racq eval`: bootstrap confidence intervals and paired tests (numpy only).

    from racq.eval.significance import bootstrap_ci, paired_test
    bootstrap_ci([0, 1, 1, 0, 1])                 # {'mean': 0.6, 'ci_low': ..., 'ci_high': ..., 'n': 5}
    paired_test(aligned_scores, sft_scores)       # {'diff', 'ci_low', 'ci_high', 'p_bootstrap', 'p_sign', ...}

- bootstrap_ci: percentile bootstrap of the mean over examples (resampling examples with replacement).
- paired_test: the same examples scored for two stages. The paired bootstrap resamples examples and
  recomputes the mean difference a - b; its two-sided p is twice the smaller tail share of resampled
  differences on either side of 0 (add-one smoothed, so it is never exactly 0: the smallest value is
  2 / (n_boot + 1)). The sign test counts examples where a > b (wins) and a < b (losses), ties dropped,
  and gives the exact two-sided binomial p (racq.annotation.rating.binom_test).
A fixed seed makes every interval reproducible run to run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from racq.annotation.rating import binom_test


def _clean(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return x[~np.isnan(x)]


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict:
    """Mean and percentile-bootstrap CI of the mean; None values are dropped (n counts the rest)."""
    x = _clean(values)
    if len(x) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return {"mean": float(x.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(x))}


def paired_test(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, ci: float = 0.95,
                seed: int = 0) -> dict:
    """Paired bootstrap (mean of a - b with CI and p) and sign test over the pairs where both exist."""
    if len(a) != len(b):
        raise ValueError(f"paired test needs equally long score lists (got {len(a)} and {len(b)})")
    xa = np.asarray([np.nan if v is None else v for v in a], dtype=float)
    xb = np.asarray([np.nan if v is None else v for v in b], dtype=float)
    keep = ~(np.isnan(xa) | np.isnan(xb))
    d = xa[keep] - xb[keep]
    n = len(d)
    if n == 0:
        return {"diff": None, "ci_low": None, "ci_high": None, "p_bootstrap": None, "p_sign": None,
                "wins": 0, "losses": 0, "ties": 0, "n": 0}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    tail = min(int((boots <= 0).sum()), int((boots >= 0).sum()))
    p_boot = min(1.0, 2 * (tail + 1) / (n_boot + 1))
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "p_bootstrap": float(p_boot),
            "p_sign": binom_test(wins, wins + losses), "wins": wins, "losses": losses,
            "ties": int(n - wins - losses), "n": int(n)}
