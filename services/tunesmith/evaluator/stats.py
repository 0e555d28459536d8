"""Statistics for comparing models on the same rows: bootstrap intervals, McNemar's exact test,
a paired permutation (sign-flip) test and a paired bootstrap test.

Pure Python and seeded: the same inputs and seed give the same numbers on every machine.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence


def mcnemar_p(baseline: Sequence[bool], candidate: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired correctness (same rows, two models): the
    binomial test of the discordant pairs (b rows only the baseline got right, c only the
    candidate) against p = 1/2."""
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


#: Permutation tests enumerate all 2**k sign flips when k (the number of rows whose values
#: differ) is at most this; above it they draw random flips.
EXACT_PERMUTATION_MAX = 16


def permutation_p(baseline: Sequence[float], candidate: Sequence[float], *, resamples: int = 10_000,
                  seed: int = 0, exact_max: int = EXACT_PERMUTATION_MAX) -> float:
    """Two-sided paired permutation p-value for mean(candidate) - mean(baseline) on the same rows.

    Under the null hypothesis the two models' values of a row are exchangeable, so each per-row
    difference d_i = candidate_i - baseline_i is equally likely to have either sign. The p-value
    is the share of sign assignments whose |sum of signed d_i| is at least the observed |sum d_i|.
    Rows with d_i = 0 do not change the sum, so only the k rows that differ are flipped: exactly
    over all 2**k assignments when k <= exact_max, else over `resamples` random assignments
    (seeded), counting the observed one: (1 + hits) / (1 + resamples). 1.0 when no row differs.
    """
    if len(baseline) != len(candidate):
        raise ValueError("paired samples must have equal length")
    diffs = [float(c) - float(b) for b, c in zip(baseline, candidate)]
    diffs = [d for d in diffs if d != 0.0]
    k = len(diffs)
    if k == 0:
        return 1.0
    observed = abs(math.fsum(diffs))
    # Sums of the same numbers in another order differ in the last bits: count ties as "at least".
    tol = 1e-9 * math.fsum(abs(d) for d in diffs)
    if k <= exact_max:
        hits = sum(1 for signs in itertools.product((1.0, -1.0), repeat=k)
                   if abs(math.fsum(s * d for s, d in zip(signs, diffs))) >= observed - tol)
        return hits / 2 ** k
    rng = random.Random(seed)
    hits = 0
    for _ in range(resamples):
        bits = rng.getrandbits(k)
        total = math.fsum(-d if (bits >> i) & 1 else d for i, d in enumerate(diffs))
        if abs(total) >= observed - tol:
            hits += 1
    return (1 + hits) / (1 + resamples)


Score = Callable[[Sequence[int]], dict[str, float]]


def resample_indices(n: int, resamples: int, seed: int) -> list[list[int]]:
    """`resamples` lists of n row indices drawn with replacement (seeded)."""
    rng = random.Random(seed)
    population = range(n)
    return [rng.choices(population, k=n) for _ in range(resamples)]


_resample_indices = resample_indices  # the name earlier callers used


def percentile_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap draws: the (1-level)/2 and (1+level)/2 quantiles
    (nearest rank)."""
    values = sorted(float(v) for v in values)
    if not values:
        raise ValueError("no values")
    k = len(values)
    return values[int((1 - level) / 2 * k)], values[min(k - 1, int((1 + level) / 2 * k))]


def bootstrap_metric_cis(score: Score, n: int, *, resamples: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric `score(row_indices)` returns.

    Each resample draws n rows with replacement and recomputes the metrics from those rows, so
    a metric that is not a mean of per-row values (macro-F1, BLEU) gets its own interval rather
    than the accuracy rows' one."""
    if n == 0:
        return {}
    draws: dict[str, list[float]] = {}
    for idx in resample_indices(n, resamples, seed):
        for metric, value in score(idx).items():
            draws.setdefault(metric, []).append(float(value))
    return {metric: percentile_interval(values, level) for metric, values in draws.items()}


def _two_sided_bootstrap_p(deltas: Sequence[float]) -> float:
    below = sum(1 for d in deltas if d <= 0) / len(deltas)
    above = sum(1 for d in deltas if d >= 0) / len(deltas)
    return min(1.0, 2 * min(below, above))


def paired_bootstrap_ps(score_a: Score, score_b: Score, n: int, metrics: Iterable[str], *,
                        resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """paired_bootstrap_p for several metrics at once, from the same resamples (each score
    function is called once per resample)."""
    metrics = list(metrics)
    if n == 0:
        return {m: 1.0 for m in metrics}
    deltas: dict[str, list[float]] = {m: [] for m in metrics}
    for idx in resample_indices(n, resamples, seed):
        a, b = score_a(idx), score_b(idx)
        for m in metrics:
            deltas[m].append(float(b[m]) - float(a[m]))
    return {m: _two_sided_bootstrap_p(d) for m, d in deltas.items()}


def paired_bootstrap_p(score_a: Score, score_b: Score, n: int, metric: str, *, resamples: int = 1000,
                       seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for metric(b) - metric(a) on the same rows: the share of
    resamples (drawing the same rows for both models) on the far side of zero, doubled."""
    return paired_bootstrap_ps(score_a, score_b, n, [metric], resamples=resamples, seed=seed)[metric]


def resamples_for(n: int) -> int:
    """Bootstrap resamples for n rows: 1000, fewer for large sets so scoring stays in seconds."""
    return 1000 if n <= 2000 else max(200, 2_000_000 // n)
