"""Built-in benchmarks: exact_match and accuracy (macro F1)."""
from __future__ import annotations

import pytest

from tunesmith.core.contracts import Benchmark, BenchmarkResult
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import PluginRegistry
from tunesmith_builtin.benchmarks import Accuracy, ExactMatch, normalize


def test_plugin_registers_both_benchmarks():
    reg = PluginRegistry(builtins=("tunesmith_builtin.benchmarks",), entry_points=False)
    assert reg.names("benchmarks") == ["accuracy", "exact_match"]
    for name in ("accuracy", "exact_match"):
        bench = reg.get("benchmarks", name)
        assert isinstance(bench, Benchmark)
        assert bench.name == name and bench.description
    assert reg.owner("benchmarks", "exact_match") == "tunesmith_builtin.benchmarks"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Paris", "paris"),
        ("  Paris.  ", "paris"),
        ("PARIS!", "paris"),
        ("Paris.\nIt is the capital of France.", "paris"),
        ("\n\n  card_arrival\nbecause the card is late", "card_arrival"),
        ("The capital   of\tFrance is Paris...", "the capital of france is paris"),
        ("what?!", "what"),
        ("card_arrival", "card_arrival"),  # underscores inside are kept
        ("(a)", "(a"),  # only trailing punctuation goes
        ("", ""),
        ("   \n  \n", ""),
        ("Straße.", "strasse"),  # casefold
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_normalize_reference_keeps_all_lines():
    assert normalize("line one\nline two", first_line=False) == "line one line two"


def test_exact_match_scores_rows():
    preds = ["Paris.", " paris", "PARIS!\nextra words", "Lyon", "\ncard_arrival", "card arrival"]
    refs = ["Paris", "Paris", "paris", "Paris", "card_arrival", "card_arrival"]
    result = ExactMatch().score(preds, refs)
    assert isinstance(result, BenchmarkResult)
    assert result.per_row == [True, True, True, False, True, False]
    assert result.metrics == {"exact_match": pytest.approx(4 / 6)}


def test_exact_match_all_wrong_and_all_right():
    assert ExactMatch().score(["a", "b"], ["b", "a"]).metrics["exact_match"] == 0.0
    assert ExactMatch().score(["A.", "b!"], ["a", "B"]).metrics["exact_match"] == 1.0


def test_exact_match_prediction_line_two_does_not_count():
    # Only the first line of a prediction is the answer.
    result = ExactMatch().score(["I think the answer is\nParis"], ["Paris"])
    assert result.per_row == [False]


def test_empty_inputs():
    assert ExactMatch().score([], []) == BenchmarkResult(metrics={"exact_match": 0.0}, per_row=[])
    assert Accuracy().score([], []).metrics == {"accuracy": 0.0, "macro_f1": 0.0}


@pytest.mark.parametrize("bench", [ExactMatch(), Accuracy()])
def test_length_mismatch_is_invalid_argument(bench):
    with pytest.raises(InvalidArgument, match="2 predictions but 1 references"):
        bench.score(["a", "b"], ["a"])


def test_accuracy_and_macro_f1():
    refs = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", "nonsense"]
    result = Accuracy().score(preds, refs)
    assert result.per_row == [True, False, True, True, False]
    assert result.metrics["accuracy"] == pytest.approx(3 / 5)
    # a: P=1/1 R=1/2 F1=2/3; b: P=2/3 R=2/2 F1=0.8; c: P=0 R=0 F1=0 -> mean over a, b, c.
    assert result.metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)


def test_accuracy_normalises_like_exact_match():
    result = Accuracy().score(["Card_Arrival.\nbecause", "LOST_OR_STOLEN_CARD"], ["card_arrival", "lost_or_stolen_card"])
    assert result.metrics == {"accuracy": 1.0, "macro_f1": 1.0}
