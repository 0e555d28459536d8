"""Statistics for comparing models on the same rows: bootstrap intervals and McNemar's test."""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence


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


Score = Callable[[Sequence[int]], dict[str, float]]


def _resample_indices(n: int, resamples: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(resamples)]


def bootstrap_metric_cis(score: Score, n: int, *, resamples: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric `score(row_indices)` returns.

    Each resample draws n rows with replacement and recomputes the metrics from those rows, so
    a metric that is not a mean of per-row values (macro-F1, ROUGE, BLEU) gets its own interval
    rather than the accuracy rows' one."""
    if n == 0:
        return {}
    draws: dict[str, list[float]] = {}
    for idx in _resample_indices(n, resamples, seed):
        for metric, value in score(idx).items():
            draws.setdefault(metric, []).append(float(value))
    out = {}
    for metric, values in draws.items():
        values.sort()
        k = len(values)
        out[metric] = (values[int((1 - level) / 2 * k)], values[min(k - 1, int((1 + level) / 2 * k))])
    return out


def paired_bootstrap_p(score_a: Score, score_b: Score, n: int, metric: str, *, resamples: int = 1000,
                       seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for metric(b) - metric(a) on the same rows: the share of
    resamples (drawing the same rows for both models) on the far side of zero, doubled."""
    if n == 0:
        return 1.0
    deltas = [score_b(idx)[metric] - score_a(idx)[metric] for idx in _resample_indices(n, resamples, seed)]
    below = sum(1 for d in deltas if d <= 0) / len(deltas)
    above = sum(1 for d in deltas if d >= 0) / len(deltas)
    return min(1.0, 2 * min(below, above))


def resamples_for(n: int) -> int:
    """Bootstrap resamples for n rows: 1000, fewer for large sets so scoring stays in seconds."""
    return 1000 if n <= 2000 else max(200, 2_000_000 // n)
