"""Statistics for comparing models on the same rows: bootstrap intervals and McNemar's test."""
from __future__ import annotations

import math
import random
from typing import Sequence


def bootstrap_ci(per_row: Sequence[bool], *, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-row correctness."""
    n = len(per_row)
    if n == 0:
        return 0.0, 0.0
    rng = random.Random(seed)
    values = [1.0 if x else 0.0 for x in per_row]
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def mcnemar_p(baseline: Sequence[bool], candidate: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired correctness (same rows, two models)."""
    if len(baseline) != len(candidate):
        raise ValueError("paired samples must have equal length")
    b = sum(1 for x, y in zip(baseline, candidate) if x and not y)
    c = sum(1 for x, y in zip(baseline, candidate) if y and not x)
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)
