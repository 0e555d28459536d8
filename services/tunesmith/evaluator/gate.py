"""The regression gates: a candidate fails a metric when it is worse than the baseline by more
than the tolerance AND the drop is significant (p below alpha).

How much is "worse": for metrics where lower is better (perplexity) the relative rise,
(candidate - baseline) / baseline; for the others the absolute drop, baseline - candidate.
"""
from __future__ import annotations

from collections.abc import Sequence

from tunesmith.api.evaluator.v1 import evaluator_pb2

#: Significance level of the task-metric gate (EvaluationSpec.regression_tolerance).
TASK_ALPHA = 0.05


def drop(baseline: float, candidate: float, higher_is_better: bool) -> float:
    """How much worse the candidate is (> 0 worse): absolute, or relative where lower is better."""
    if higher_is_better:
        return baseline - candidate
    if baseline == 0:
        return 0.0 if candidate <= 0 else float("inf")
    return (candidate - baseline) / abs(baseline)


def gate_check(*, kind: str, suite: str, candidate: str, comparison, baseline_value: float, candidate_value: float,
               tolerance: float, alpha: float) -> evaluator_pb2.GateCheck:
    """One GateCheck from a scoring.MetricComparison of candidate against baseline."""
    worse = drop(baseline_value, candidate_value, comparison.higher_is_better)
    failed = worse > tolerance and comparison.p_value < alpha
    return evaluator_pb2.GateCheck(kind=kind, suite=suite, candidate=candidate,
                                   metric=f"{comparison.benchmark}.{comparison.metric}",
                                   baseline_value=baseline_value, candidate_value=candidate_value,
                                   delta=comparison.delta, p_value=comparison.p_value, passed=not failed)


def all_passed(checks: Sequence[evaluator_pb2.GateCheck]) -> bool:
    return all(c.passed for c in checks)
