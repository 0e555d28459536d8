"""score_benchmark / compare_scores (tunesmith.evaluator.scoring) on the real built-in
benchmarks, plus tiny benchmarks built here for what the built-ins do not have (a metric where
lower is better, per-row values chosen by hand)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sacrebleu

from tunesmith.core.contracts import Benchmark, EvalRow, MetricSpec
from tunesmith.evaluator import stats as st
from tunesmith.evaluator.scoring import (
    BenchmarkScore,
    MetricComparison,
    MetricResult,
    compare_scores,
    score_benchmark,
)
from tunesmith_builtin.bench_accuracy import Accuracy
from tunesmith_builtin.bench_bleu import Bleu
from tunesmith_builtin.bench_exact_match import ExactMatch
from tunesmith_builtin.bench_json_field_f1 import JsonFieldF1
from tunesmith_builtin.bench_macro_f1 import MacroF1
from tunesmith_builtin.bench_rouge import Rouge

from .test_benchmarks import HYPS, REFS


def rows(preds, refs, **kw) -> list[EvalRow]:
    return [EvalRow(prompt=f"q{i}", reference=r, prediction=p, **kw) for i, (p, r) in enumerate(zip(preds, refs))]


class RowValue:
    """A "mean" metric whose row value is float(prediction); `higher` sets its direction."""

    description = "float(prediction)"
    needs = "generation"
    requires: frozenset[str] = frozenset()

    def __init__(self, name: str = "loss", higher: bool = False):
        self.name = name
        self.metrics = (MetricSpec(name, "mean", higher),)

    def validate_options(self, options: dict[str, Any]) -> None:
        return None

    def requests(self, row, options):
        return []

    def score_rows(self, rows: Sequence[EvalRow], options) -> list[dict[str, Any]]:
        return [{self.name: float(r.prediction)} for r in rows]

    def aggregate(self, stats, options) -> dict[str, float]:
        return {self.name: sum(s[self.name] for s in stats) / len(stats) if stats else 0.0}


def test_row_value_bench_is_a_benchmark():
    assert isinstance(RowValue(), Benchmark)


# --- intervals ---------------------------------------------------------------------------------
def test_macro_f1_gets_its_own_interval_not_accuracys():
    # 90 rows of a big class, all right; 10 rows of five small classes, all wrong: a model that
    # always answers the majority label. Accuracy is high, macro-F1 low.
    refs = ["card"] * 90 + [f"small_{i % 5}" for i in range(10)]
    preds = ["card"] * 100
    acc = score_benchmark(Accuracy(), rows(preds, refs), {}, seed=1, resamples=300)
    f1 = score_benchmark(MacroF1(), rows(preds, refs), {}, seed=1, resamples=300)
    (a,), (f,) = acc.metrics, f1.metrics
    assert a.value == 0.9 and a.statistic == "binary"
    assert f.value == pytest.approx((2 * 90 / (100 + 90)) / 6) and f.statistic == "corpus"  # about 0.158
    assert a.ci_low <= a.value <= a.ci_high and f.ci_low <= f.value <= f.ci_high
    assert f.ci_high < a.ci_low, "macro-F1 (about 0.16) must not borrow accuracy's interval (about 0.84-0.96)"
    assert 0.82 < a.ci_low < 0.9 < a.ci_high < 0.97
    assert f.ci_high - f.ci_low < 0.2


def test_accuracy_interval_is_the_per_row_bootstrap():
    refs = ["a", "b"] * 50
    preds = ["a"] * 100  # half right
    (m,) = score_benchmark(ExactMatch(), rows(preds, refs), {}, seed=0, resamples=500).metrics
    assert m.value == 0.5 and 0.38 < m.ci_low < 0.5 < m.ci_high < 0.62
    # the fast path (means of resampled row values) is the bootstrap of aggregate() itself
    stats = ExactMatch().score_rows(rows(preds, refs), {})
    lo, hi = st.bootstrap_metric_cis(lambda idx: ExactMatch().aggregate([stats[i] for i in idx], {}), 100,
                                     resamples=500, seed=0)["exact_match"]
    assert (m.ci_low, m.ci_high) == (lo, hi)


def test_bleu_interval_is_sacrebleu_over_the_same_resampled_rows():
    resamples, seed = 60, 5
    score = score_benchmark(Bleu(), rows(HYPS, REFS), {}, seed=seed, resamples=resamples)
    (m,) = score.metrics
    assert m.value == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score / 100, abs=1e-12)
    draws = [sacrebleu.corpus_bleu([HYPS[i] for i in idx], [[REFS[i] for i in idx]]).score / 100
             for idx in st.resample_indices(len(HYPS), resamples, seed)]
    lo, hi = st.percentile_interval(draws)
    assert m.ci_low == pytest.approx(lo, abs=1e-12) and m.ci_high == pytest.approx(hi, abs=1e-12)
    assert m.ci_low < m.value < m.ci_high


def test_score_keeps_stats_and_reports_every_metric_in_order():
    score = score_benchmark(JsonFieldF1(), rows(['{"a": 1}', "x"], ['{"a": 1}', '{"b": 2}']), {}, resamples=50)
    assert isinstance(score, BenchmarkScore) and score.benchmark == "json_field_f1"
    assert [m.metric for m in score.metrics] == ["field_f1", "field_precision", "field_recall", "exact_object"]
    assert all(isinstance(m, MetricResult) and m.benchmark == "json_field_f1" for m in score.metrics)
    assert score.metric("field_recall").value == 0.5 and score.metric("field_precision").value == 1.0
    assert len(score.stats) == 2 and len(score.row_keys) == 2


def test_no_rows_gives_a_point_interval():
    (m,) = score_benchmark(ExactMatch(), [], {}).metrics
    assert (m.value, m.ci_low, m.ci_high) == (0.0, 0.0, 0.0)


def test_scoring_is_seeded():
    refs = [f"l{i % 3}" for i in range(40)]
    preds = [r if i % 4 else "l0" for i, r in enumerate(refs)]
    a = score_benchmark(MacroF1(), rows(preds, refs), {}, seed=3, resamples=100)
    b = score_benchmark(MacroF1(), rows(preds, refs), {}, seed=3, resamples=100)
    c = score_benchmark(MacroF1(), rows(preds, refs), {}, seed=4, resamples=100)
    assert a.metrics == b.metrics and a.metrics != c.metrics


# --- comparisons -------------------------------------------------------------------------------
def test_binary_metrics_use_mcnemar_on_the_row_values():
    refs = [f"l{i % 4}" for i in range(40)]
    base_preds = ["l0"] * 40
    cand_preds = list(refs[:30]) + ["l0"] * 10
    bench = ExactMatch()
    base = score_benchmark(bench, rows(base_preds, refs), {}, resamples=50)
    cand = score_benchmark(bench, rows(cand_preds, refs), {}, resamples=50)
    (c,) = compare_scores(bench, base, cand, {})
    assert isinstance(c, MetricComparison) and c.test == "mcnemar" and c.metric == "exact_match"
    base_right = [p == r for p, r in zip(base_preds, refs)]
    cand_right = [p == r for p, r in zip(cand_preds, refs)]
    assert c.p_value == st.mcnemar_p(base_right, cand_right) < 1e-5
    assert c.delta == pytest.approx(sum(cand_right) / 40 - sum(base_right) / 40) and c.improvement == c.delta > 0


def test_mean_metrics_use_the_permutation_test():
    preds_a = HYPS
    preds_b = REFS[:4] + HYPS[4:]  # better on the first four rows
    bench = Rouge()
    base = score_benchmark(bench, rows(preds_a, REFS), {}, resamples=50)
    cand = score_benchmark(bench, rows(preds_b, REFS), {}, resamples=50)
    comparisons = compare_scores(bench, base, cand, {})
    assert [c.test for c in comparisons] == ["permutation"] * 4
    r1 = comparisons[0]
    assert r1.metric == "rouge1" and r1.delta > 0
    # four rows differ, all improving: 2 of the 2**4 sign flips are as extreme
    assert r1.p_value == pytest.approx(st.permutation_p([s["rouge1"] for s in base.stats],
                                                        [s["rouge1"] for s in cand.stats]))
    assert r1.p_value == pytest.approx(2 / 16)


def test_corpus_metrics_use_the_paired_bootstrap():
    bench = Bleu()
    base = score_benchmark(bench, rows(HYPS, REFS), {}, resamples=50)
    cand = score_benchmark(bench, rows(REFS, REFS), {}, resamples=50)
    (c,) = compare_scores(bench, base, cand, {}, resamples=200)
    assert c.test == "paired_bootstrap" and c.delta == pytest.approx(1.0 - base.metrics[0].value)
    assert c.p_value < 0.05
    (same,) = compare_scores(bench, base, base, {}, resamples=200)
    assert same.p_value == 1.0 and same.delta == 0.0

    refs = [f"l{i % 4}" for i in range(80)]
    f1 = MacroF1()
    f_base = score_benchmark(f1, rows(["l0"] * 80, refs), {}, resamples=50)
    f_cand = score_benchmark(f1, rows(refs, refs), {}, resamples=50)
    (fc,) = compare_scores(f1, f_base, f_cand, {}, resamples=200)
    assert fc.test == "paired_bootstrap" and fc.p_value < 0.01 and fc.improvement > 0.5


def test_mixed_statistics_each_get_their_test():
    bench = JsonFieldF1()
    refs = ['{"a": 1, "b": 2}'] * 30
    base = score_benchmark(bench, rows(['{"a": 1}'] * 30, refs), {}, resamples=50)
    cand = score_benchmark(bench, rows(refs, refs), {}, resamples=50)
    tests = {c.metric: c.test for c in compare_scores(bench, base, cand, {}, resamples=100)}
    assert tests == {"field_f1": "paired_bootstrap", "field_precision": "paired_bootstrap",
                     "field_recall": "paired_bootstrap", "exact_object": "mcnemar"}


def test_permutation_p_value_by_hand():
    # per-row differences 1, 2, 3 (plus two ties): sign flips give sums 6, 4, 2, 0, 0, -2, -4, -6;
    # |sum| >= 6 for 2 of the 8.
    bench = RowValue("score", higher=True)
    base = score_benchmark(bench, rows(["0", "0", "0", "5", "5"], ["r"] * 5), {}, resamples=20)
    cand = score_benchmark(bench, rows(["1", "2", "3", "5", "5"], ["r"] * 5), {}, resamples=20)
    (c,) = compare_scores(bench, base, cand, {})
    assert c.test == "permutation" and c.p_value == pytest.approx(2 / 8)
    assert c.delta == pytest.approx(6 / 5) and c.improvement == c.delta


def test_improvement_is_signed_by_direction():
    bench = RowValue("loss", higher=False)
    base = score_benchmark(bench, rows(["3", "2", "4"], ["r"] * 3), {}, resamples=20)
    cand = score_benchmark(bench, rows(["1", "1", "1"], ["r"] * 3), {}, resamples=20)
    (c,) = compare_scores(bench, base, cand, {})
    assert c.higher_is_better is False and base.metrics[0].higher_is_better is False
    assert c.delta == pytest.approx(1.0 - 3.0)  # raw: candidate - baseline
    assert c.improvement == pytest.approx(2.0)  # lower loss is better
    (worse,) = compare_scores(bench, cand, base, {})
    assert worse.improvement == pytest.approx(-2.0)


def test_different_rows_are_refused():
    bench = ExactMatch()
    a = score_benchmark(bench, rows(["a", "b"], ["a", "b"]), {}, resamples=10)
    shorter = score_benchmark(bench, rows(["a"], ["a"]), {}, resamples=10)
    reordered = score_benchmark(bench, list(reversed(rows(["a", "b"], ["a", "b"]))), {}, resamples=10)
    with pytest.raises(ValueError, match="different rows"):
        compare_scores(bench, a, shorter, {})
    with pytest.raises(ValueError, match="different rows"):
        compare_scores(bench, a, reordered, {})
