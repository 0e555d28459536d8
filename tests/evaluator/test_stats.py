"""tunesmith.evaluator.stats: McNemar's exact test, the paired permutation test, bootstrap
intervals and the paired bootstrap, checked against hand-computed values and the real built-in
macro_f1 / accuracy benchmarks."""
import itertools
import math
import random

import pytest

from tunesmith.core.contracts import EvalRow
from tunesmith.evaluator.stats import (
    bootstrap_metric_cis,
    mcnemar_p,
    paired_bootstrap_p,
    paired_bootstrap_ps,
    percentile_interval,
    permutation_p,
    resample_indices,
    resamples_for,
)
from tunesmith_builtin.bench_accuracy import Accuracy
from tunesmith_builtin.bench_macro_f1 import MacroF1


def _scorer(bench, preds, refs):
    stats = bench.score_rows([EvalRow(prompt="", reference=r, prediction=p) for p, r in zip(preds, refs)], {})
    return lambda idx: bench.aggregate([stats[i] for i in idx], {})


# --- McNemar -----------------------------------------------------------------------------------
def test_mcnemar_by_hand():
    # 3 rows only the candidate gets right, 0 only the baseline: 2 * (1/2)**3
    assert mcnemar_p([False] * 3 + [True] * 5, [True] * 8) == pytest.approx(0.25)
    # b = 1, c = 4: 2 * (C(5,0) + C(5,1)) / 2**5 = 12/32
    base = [True, False, False, False, False, True]
    cand = [False, True, True, True, True, True]
    assert mcnemar_p(base, cand) == pytest.approx(12 / 32)
    assert mcnemar_p([True, False], [True, False]) == 1.0
    with pytest.raises(ValueError):
        mcnemar_p([True], [True, False])


# --- permutation test --------------------------------------------------------------------------
def _exact_by_enumeration(diffs):
    observed = abs(sum(diffs))
    flips = list(itertools.product((1, -1), repeat=len(diffs)))
    return sum(1 for s in flips if abs(sum(a * d for a, d in zip(s, diffs))) >= observed - 1e-12) / len(flips)


def test_permutation_exact_by_hand():
    # differences 1, 2, 3: sums 6, 4, 2, 0, 0, -2, -4, -6; |sum| >= 6 in 2 of 8
    assert permutation_p([0, 0, 0], [1, 2, 3]) == pytest.approx(2 / 8)
    # ties (zero differences) change nothing
    assert permutation_p([0, 5, 0, 7, 0], [1, 5, 2, 7, 3]) == pytest.approx(2 / 8)
    # differences 1, 1, -1: |sum| = 1, and every flip gives |sum| 1 or 3 -> p = 1
    assert permutation_p([0, 0, 1], [1, 1, 0]) == 1.0
    # four equal improvements: only all-plus and all-minus are as extreme, 2 of 16
    assert permutation_p([0.2] * 4, [0.7] * 4) == pytest.approx(2 / 16)
    assert permutation_p([0.5, 0.5], [0.5, 0.5]) == 1.0
    with pytest.raises(ValueError):
        permutation_p([1.0], [1.0, 2.0])


def test_permutation_exact_matches_enumeration_and_is_symmetric():
    rng = random.Random(0)
    for _ in range(5):
        a = [rng.random() for _ in range(9)]
        b = [x + rng.gauss(0.1, 0.3) for x in a]
        diffs = [y - x for x, y in zip(a, b)]
        assert permutation_p(a, b) == pytest.approx(_exact_by_enumeration(diffs))
        assert permutation_p(a, b) == permutation_p(b, a)


def test_permutation_monte_carlo_is_seeded_and_close_to_exact():
    rng = random.Random(1)
    a = [rng.random() for _ in range(14)]
    b = [x + rng.gauss(0.15, 0.4) for x in a]
    exact = permutation_p(a, b)
    mc = permutation_p(a, b, exact_max=0, resamples=20_000, seed=3)
    assert mc == permutation_p(a, b, exact_max=0, resamples=20_000, seed=3)
    assert abs(mc - exact) < 0.015
    # above exact_max the Monte Carlo p-value never reaches 0: (1 + hits) / (1 + resamples)
    assert permutation_p([0.0] * 40, [1.0] * 40, resamples=999) == pytest.approx(1 / 1000)


# --- bootstrap ---------------------------------------------------------------------------------
def test_resample_indices_and_percentiles():
    draws = resample_indices(10, 3, seed=2)
    assert draws == resample_indices(10, 3, seed=2) and len(draws) == 3
    assert all(len(d) == 10 and all(0 <= i < 10 for i in d) for d in draws)
    assert percentile_interval(range(1000)) == (25, 975)
    assert percentile_interval([3.0]) == (3.0, 3.0)
    assert resamples_for(100) == 1000 and resamples_for(100_000) == 200


def test_macro_f1_gets_its_own_interval_not_accuracys():
    # 90 rows of a big class, all right; 10 rows of five small classes, all wrong.
    refs = ["card"] * 90 + [f"small_{i % 5}" for i in range(10)]
    preds = ["card"] * 100
    acc = _scorer(Accuracy(), preds, refs)(range(100))["accuracy"]
    f1 = _scorer(MacroF1(), preds, refs)(range(100))["macro_f1"]
    assert acc == 0.9 and math.isclose(f1, (2 * 0.9 / 1.9) / 6)
    accuracy, macro = _scorer(Accuracy(), preds, refs), _scorer(MacroF1(), preds, refs)

    def score(idx):
        return {**accuracy(idx), **macro(idx)}

    cis = bootstrap_metric_cis(score, len(refs), resamples=300, seed=1)
    (a_lo, a_hi), (f_lo, f_hi) = cis["accuracy"], cis["macro_f1"]
    assert a_lo <= acc <= a_hi and f_lo <= f1 <= f_hi
    assert f_hi < a_lo, "macro-F1 (about 0.16) must not borrow accuracy's interval (about 0.84-0.96)"


def test_accuracy_interval_is_the_per_row_bootstrap():
    refs = ["a", "b"] * 50
    preds = ["a"] * 100  # half right
    lo, hi = bootstrap_metric_cis(_scorer(Accuracy(), preds, refs), 100, resamples=500, seed=0)["accuracy"]
    assert 0.38 < lo < 0.5 < hi < 0.62
    assert bootstrap_metric_cis(_scorer(Accuracy(), [], []), 0) == {}


def test_paired_tests_see_a_clear_improvement_and_no_difference():
    refs = [f"l{i % 4}" for i in range(80)]
    base = ["l0"] * 80
    better = list(refs)
    bench = MacroF1()
    assert paired_bootstrap_p(_scorer(bench, base, refs), _scorer(bench, better, refs), 80, "macro_f1",
                              resamples=300) < 0.01
    assert paired_bootstrap_p(_scorer(bench, base, refs), _scorer(bench, base, refs), 80, "macro_f1",
                              resamples=300) == 1.0
    both = paired_bootstrap_ps(_scorer(bench, base, refs), _scorer(bench, better, refs), 80, ["macro_f1"],
                               resamples=300)
    assert both["macro_f1"] == paired_bootstrap_p(_scorer(bench, base, refs), _scorer(bench, better, refs), 80,
                                                  "macro_f1", resamples=300)
    right_base = [p == r for p, r in zip(base, refs)]
    right_better = [p == r for p, r in zip(better, refs)]
    assert mcnemar_p(right_base, right_better) < 1e-10
