"""Per-metric bootstrap intervals and paired tests, on the real built-in Accuracy benchmark."""
from tunesmith.evaluator.stats import bootstrap_metric_cis, mcnemar_p, paired_bootstrap_p
from tunesmith_builtin.benchmarks import Accuracy


def _scorer(preds, refs):
    bench = Accuracy()
    return lambda idx: bench.score([preds[i] for i in idx], [refs[i] for i in idx]).metrics


def test_macro_f1_gets_its_own_interval_not_accuracys():
    # 90 rows of a big class, all right; 10 rows of five small classes, all wrong.
    refs = ["card"] * 90 + [f"small_{i % 5}" for i in range(10)]
    preds = ["card"] * 100
    result = Accuracy().score(preds, refs)
    acc, f1 = result.metrics["accuracy"], result.metrics["macro_f1"]
    assert acc == 0.9 and abs(f1 - (2 * 0.9 / 1.9) / 6) < 1e-9
    cis = bootstrap_metric_cis(_scorer(preds, refs), len(refs), resamples=300, seed=1)
    (a_lo, a_hi), (f_lo, f_hi) = cis["accuracy"], cis["macro_f1"]
    assert a_lo <= acc <= a_hi and f_lo <= f1 <= f_hi
    assert f_hi < a_lo, "macro-F1 (about 0.16) must not borrow accuracy's interval (about 0.84-0.96)"


def test_accuracy_interval_is_the_per_row_bootstrap():
    refs = ["a", "b"] * 50
    preds = ["a"] * 100  # half right
    lo, hi = bootstrap_metric_cis(_scorer(preds, refs), 100, resamples=500, seed=0)["accuracy"]
    assert 0.38 < lo < 0.5 < hi < 0.62


def test_paired_tests_see_a_clear_improvement_and_no_difference():
    refs = [f"l{i % 4}" for i in range(80)]
    base = ["l0"] * 80
    better = list(refs)
    assert paired_bootstrap_p(_scorer(base, refs), _scorer(better, refs), 80, "macro_f1", resamples=300) < 0.01
    assert paired_bootstrap_p(_scorer(base, refs), _scorer(base, refs), 80, "macro_f1", resamples=300) == 1.0
    right_base = [p == r for p, r in zip(base, refs)]
    right_better = [p == r for p, r in zip(better, refs)]
    assert mcnemar_p(right_base, right_better) < 1e-10
