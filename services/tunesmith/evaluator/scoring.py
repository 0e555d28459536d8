"""Scores a benchmark with an interval per metric, and compares two models' scores per metric
with the test that fits the metric's statistic (tunesmith.core.contracts.METRIC_STATISTICS):

- "binary": percentile bootstrap interval; McNemar's exact test on the per-row values.
- "mean":   percentile bootstrap interval; paired permutation (sign-flip) test.
- "corpus": percentile bootstrap of aggregate() over resampled rows; paired bootstrap test
            (the same resampled rows for both models).

The point value of every metric is aggregate() over all rows. For "binary" and "mean" metrics
the resampled value is the mean of the resampled rows' values (the contract makes aggregate()
exactly that mean), computed without calling aggregate(); aggregate() is called once per
resample only when the benchmark has a "corpus" metric.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.contracts import METRIC_STATISTICS, EvalRow
from tunesmith.evaluator import stats as st


@dataclass(frozen=True)
class MetricResult:
    benchmark: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    statistic: str
    higher_is_better: bool


@dataclass
class BenchmarkScore:
    benchmark: str
    metrics: list[MetricResult]
    stats: list[dict]  # score_rows output, kept for comparisons
    #: One short fingerprint of (prompt, reference) per row, so compare_scores can refuse scores
    #: of different rows; empty when unknown (then only the row counts are checked).
    row_keys: list[str] = field(default_factory=list)

    def metric(self, name: str) -> MetricResult:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)


@dataclass(frozen=True)
class MetricComparison:
    benchmark: str
    metric: str
    delta: float  # candidate - baseline, raw
    p_value: float
    test: str  # "mcnemar" | "permutation" | "paired_bootstrap"
    higher_is_better: bool

    @property
    def improvement(self) -> float:
        """delta signed so that > 0 is better (-delta for metrics where lower is better)."""
        return self.delta if self.higher_is_better else -self.delta


#: The paired test compare_scores runs for each statistic.
TESTS = {"binary": "mcnemar", "mean": "permutation", "corpus": "paired_bootstrap"}


def row_key(row: EvalRow) -> str:
    return hashlib.blake2b(f"{row.prompt}\0{row.reference}".encode(), digest_size=8).hexdigest()


def _specs(bench: Any) -> list[Any]:
    specs = list(bench.metrics)
    for spec in specs:
        if spec.statistic not in METRIC_STATISTICS:
            raise ValueError(f"benchmark {bench.name!r} metric {spec.name!r} has statistic {spec.statistic!r}, "
                             f"not one of {sorted(METRIC_STATISTICS)}")
    return specs


def _aggregate(bench: Any, stats: Sequence[dict], options: dict, specs: Sequence[Any]) -> dict[str, float]:
    values = bench.aggregate(stats, options)
    missing = [s.name for s in specs if s.name not in values]
    if missing:
        raise ValueError(f"benchmark {bench.name!r} aggregate() did not return {', '.join(missing)}")
    return {s.name: float(values[s.name]) for s in specs}


def _row_values(stats: Sequence[dict], metric: str) -> list[float]:
    return [float(s[metric]) for s in stats]


def _resampled_scorer(bench: Any, stats: Sequence[dict], options: dict, specs: Sequence[Any]):
    """score(indices) -> {metric: value over stats[indices]}: the fast mean for binary/mean
    metrics, aggregate() for corpus ones."""
    per_row = {s.name: _row_values(stats, s.name) for s in specs if s.statistic != "corpus"}
    corpus = [s for s in specs if s.statistic == "corpus"]

    def score(idx: Sequence[int]) -> dict[str, float]:
        out = {name: (sum(values[i] for i in idx) / len(idx) if idx else 0.0)
               for name, values in per_row.items()}
        if corpus:
            agg = _aggregate(bench, [stats[i] for i in idx], options, corpus)
            out.update(agg)
        return out

    return score


def score_benchmark(bench: Any, rows: Sequence[EvalRow], options: dict, *, seed: int = 0,
                    resamples: int | None = None, level: float = 0.95) -> BenchmarkScore:
    """Every metric of `bench` on `rows`: value = aggregate(all row stats); interval = percentile
    bootstrap of the metric over `resamples` resampled lists of row stats (default
    stats.resamples_for(len(rows))), seeded."""
    options = dict(options or {})
    specs = _specs(bench)
    stats = list(bench.score_rows(list(rows), options))
    if len(stats) != len(rows):
        raise ValueError(f"benchmark {bench.name!r} score_rows gave {len(stats)} statistics for {len(rows)} rows")
    values = _aggregate(bench, stats, options, specs)
    n = len(stats)
    if n:
        cis = st.bootstrap_metric_cis(_resampled_scorer(bench, stats, options, specs), n,
                                      resamples=resamples or st.resamples_for(n), level=level, seed=seed)
    else:
        cis = {}
    metrics = []
    for spec in specs:
        value = values[spec.name]
        lo, hi = cis.get(spec.name, (value, value))
        metrics.append(MetricResult(benchmark=bench.name, metric=spec.name, value=value, ci_low=lo, ci_high=hi,
                                    statistic=spec.statistic, higher_is_better=bool(spec.higher_is_better)))
    return BenchmarkScore(benchmark=bench.name, metrics=metrics, stats=stats, row_keys=[row_key(r) for r in rows])


def compare_scores(bench: Any, baseline: BenchmarkScore, candidate: BenchmarkScore, options: dict, *,
                   seed: int = 0, resamples: int | None = None) -> list[MetricComparison]:
    """Candidate against baseline on each metric of `bench`, with TESTS[statistic]: McNemar's
    exact test on binary row values, a paired permutation test on mean ones, a paired bootstrap
    (the same resampled rows for both) on corpus metrics. Both scores must be of the same rows in
    the same order (ValueError otherwise)."""
    options = dict(options or {})
    specs = _specs(bench)
    n = len(baseline.stats)
    if len(candidate.stats) != n:
        raise ValueError(f"the scores are of different rows: {n} baseline rows, {len(candidate.stats)} candidate rows")
    if baseline.row_keys and candidate.row_keys and baseline.row_keys != candidate.row_keys:
        raise ValueError("the scores are of different rows (or the same rows in another order)")
    resamples = resamples or st.resamples_for(n)

    def value(score: BenchmarkScore, spec: Any) -> float:
        for m in score.metrics:
            if m.metric == spec.name:
                return m.value
        return _aggregate(bench, score.stats, options, [spec])[spec.name]

    corpus = [s for s in specs if s.statistic == "corpus"]
    corpus_p: dict[str, float] = {}
    if corpus:
        corpus_p = st.paired_bootstrap_ps(_resampled_scorer(bench, baseline.stats, options, corpus),
                                          _resampled_scorer(bench, candidate.stats, options, corpus),
                                          n, [s.name for s in corpus], resamples=resamples, seed=seed)
    out = []
    for spec in specs:
        if spec.statistic == "binary":
            p = st.mcnemar_p([bool(x) for x in _row_values(baseline.stats, spec.name)],
                             [bool(x) for x in _row_values(candidate.stats, spec.name)])
        elif spec.statistic == "mean":
            p = st.permutation_p(_row_values(baseline.stats, spec.name), _row_values(candidate.stats, spec.name),
                                 resamples=resamples, seed=seed)
        else:
            p = corpus_p[spec.name]
        out.append(MetricComparison(benchmark=bench.name, metric=spec.name,
                                    delta=value(candidate, spec) - value(baseline, spec), p_value=p,
                                    test=TESTS[spec.statistic], higher_is_better=bool(spec.higher_is_better)))
    return out
