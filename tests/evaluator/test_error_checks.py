"""The built-in error checks (tunesmith_builtin.error_checks), error analysis
(tunesmith.evaluator.errors) and the ErrorCheck contract of every registered check."""
from __future__ import annotations

import json

import pytest
from tunesmith.core.contracts import ErrorCheck, EvalRow, conformance_errors
from tunesmith.core.errors import InvalidArgument, PluginError
from tunesmith.core.plugins import PluginRegistry
from tunesmith.evaluator.errors import OTHER, ErrorAnalysis, analyse, confusion_matrix
from tunesmith_builtin.error_checks import (
    EmptyAnswer,
    InvalidJson,
    InvalidLabel,
    Repetition,
    Truncated,
    Verbose,
    builtin_checks,
    levenshtein,
    normalise,
)

LABELS = ("card_arrival", "activate_my_card", "lost_or_stolen_card", "exchange_rate", "top_up_failed")


def row(prediction: str = "", reference: str = "x", **kw) -> EvalRow:
    return EvalRow(prompt=kw.pop("prompt", "p"), reference=reference, prediction=prediction, **kw)


# --- helpers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("a,b,d", [
    ("", "", 0), ("abc", "", 3), ("", "abc", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
    ("card_arrival", "card_arival", 1), ("abc", "abc", 0), ("ab", "ba", 2), ("é", "e", 1),
])
def test_levenshtein(a, b, d):
    assert levenshtein(a, b) == d == levenshtein(b, a)


@pytest.mark.parametrize("text,expected", [
    ("  Card_Arrival.\nbecause it is late", "card_arrival"),
    ("\n\n  Paris!!  \n", "paris"),
    ("exchange  rate ?", "exchange rate"),
    ("", ""), ("   \n\t", ""), ("3.5", "3.5"), ("ÉTÉ…", "été"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


def test_normalise_agrees_with_the_benchmarks_when_available():
    answers = pytest.importorskip("tunesmith_builtin._answers")
    for text in ("  Card_Arrival.\nwhy", "Paris!!", "ÉTÉ…", "a  b ,", "", "x\n\ny"):
        assert normalise(text) == answers.normalize(text)


# --- each check --------------------------------------------------------------------------------
def test_empty_answer():
    check = EmptyAnswer()
    assert check.classify(row("")) == "empty_answer"
    assert check.classify(row("  \n\t ")) == "empty_answer"
    assert check.classify(row(" a ")) is None
    assert check.classify(row("0")) is None


def test_truncated():
    check = Truncated()
    assert check.classify(row("abc", finish_reason="length")) == "truncated"
    assert check.classify(row("abc", finish_reason="stop")) is None
    assert check.classify(row("", finish_reason="")) is None
    assert check.classify(row("abc", finish_reason="cancelled")) is None


def test_verbose_defaults_and_options():
    check = Verbose()
    assert (check.ratio, check.min_extra_words) == (3.0, 5)
    ref = "card_arrival"
    assert check.classify(row("card_arrival because it has not come yet", ref)) == "verbose"  # 7 > 3, +6
    assert check.classify(row("it is card_arrival", ref)) is None  # 3 words: not > 3x
    assert check.classify(row("the label is card_arrival", ref)) is None  # 4 > 3 but only 3 more
    assert check.classify(row("one two three four five six", ref)) == "verbose"  # 6 > 3 and +5
    long_ref = " ".join(["w"] * 10)
    assert check.classify(row(" ".join(["w"] * 30), long_ref)) is None  # exactly 3x is not more
    assert check.classify(row(" ".join(["w"] * 31), long_ref)) == "verbose"
    assert check.classify(row("a b c d e f g h", "")) is None  # no reference: not judged
    assert Verbose(ratio=1.5, min_extra_words=1).classify(row("a b c d", "a b")) == "verbose"
    for bad in ({"ratio": 0.5}, {"ratio": "3"}, {"min_extra_words": -1}, {"min_extra_words": 1.5}):
        with pytest.raises(InvalidArgument) as info:
            Verbose(**bad)
        assert info.value.field == next(iter(bad))


def test_repetition_word_loops():
    check = Repetition()
    assert (check.n, check.min_repeats, check.min_char_run) == (3, 3, 20)
    assert check.classify(row("I am sorry. I am sorry. I am sorry.")) == "repetition"
    assert check.classify(row("The answer is 5. The answer is 5. The answer is 5")) == "repetition"
    assert check.classify(row("no no no no no")) == "repetition"  # "no no no" at 3 positions
    assert check.classify(row("no no no no")) is None  # only 2 positions
    assert check.classify(row("I am sorry. I am sorry.")) is None  # twice is not a loop
    assert check.classify(row("The capital of France is Paris, a city on the Seine.")) is None
    assert check.classify(row("")) is None
    assert Repetition(n=2, min_repeats=2).classify(row("red car and red car")) == "repetition"
    with pytest.raises(InvalidArgument) as info:
        Repetition(min_repeats=1)
    assert info.value.field == "min_repeats"


def test_repetition_character_runs():
    check = Repetition()
    assert check.classify(row("ok " + "!" * 20)) == "repetition"
    assert check.classify(row("ok " + "!" * 19)) is None
    assert check.classify(row("ha" * 10)) == "repetition"
    assert check.classify(row("好的" * 10)) == "repetition"
    assert check.classify(row("card_arrival" + "a" * 25)) == "repetition"
    # Markdown rules and tables are no loop; nor is whitespace.
    assert check.classify(row("| a | b |\n|---|---|---|---|---|---|\n" + "=" * 40)) is None
    assert check.classify(row("x" + " " * 100 + "y")) is None
    assert Repetition(min_char_run=5).classify(row("aaaaa")) == "repetition"


def test_invalid_label_near_miss_and_invented():
    check = InvalidLabel()
    r = {"reference": "card_arrival", "labels": LABELS}
    assert check.classify(row("card_arrival", **r)) is None
    assert check.classify(row("  Card_Arrival.\nbecause it is late", **r)) is None  # normalised
    assert check.classify(row("card_arival", **r)) == "invalid_label.near_miss"  # 1 edit
    assert check.classify(row("card arrival", **r)) == "invalid_label.near_miss"  # 1 edit
    assert check.classify(row("activate_card", **r)) == "invalid_label.near_miss"  # 3 <= 20% of 16
    assert check.classify(row("refund_please", **r)) == "invalid_label.invented"
    assert check.classify(row("card", **r)) == "invalid_label.invented"  # 8 edits from card_arrival
    assert check.classify(row("x" * 100_000, **r)) == "invalid_label.invented"
    # threshold is max(2, 20% of the closest label's length): "exchange_rat" (1) near, "top_up" (7) not
    assert check.classify(row("exchange_rat", **r)) == "invalid_label.near_miss"
    assert check.classify(row("top_up", **r)) == "invalid_label.invented"
    # short labels: 2 edits always count
    short = {"reference": "yes", "labels": ("yes", "no")}
    assert check.classify(row("ye", **short)) == "invalid_label.near_miss"
    assert check.classify(row("nah", **short)) == "invalid_label.near_miss"  # 2 edits from "no"
    assert check.classify(row("maybe", **short)) == "invalid_label.invented"
    # not a classification row, or an empty answer: not this check's business
    assert check.classify(row("whatever", reference="card_arrival")) is None
    assert check.classify(row("  ", **r)) is None
    assert InvalidLabel(min_distance=0, relative_distance=0.0).classify(row("card_arival", **r)) == \
        "invalid_label.invented"


def test_invalid_json():
    check = InvalidJson()
    ref = json.dumps({"name": "Alice", "amount": 42.5})
    assert check.classify(row('{"name": "Alice", "amount": 42.5}', ref)) is None
    assert check.classify(row('{"amount": 1, "name": "Bob", "extra": true}', ref)) is None  # extra keys fine
    assert check.classify(row('```json\n{"name": "A", "amount": 1}\n```', ref)) is None  # fenced
    assert check.classify(row('{"name": "Alice"}', ref)) == "invalid_json.missing_fields"
    assert check.classify(row("[1, 2]", ref)) == "invalid_json.missing_fields"  # not an object
    assert check.classify(row('{"name": "Alice", "amount": ', ref)) == "invalid_json.unparseable"
    assert check.classify(row("The name is Alice", ref)) == "invalid_json.unparseable"
    assert check.classify(row('{"name": NaN, "amount": 1}', ref)) == "invalid_json.unparseable"
    assert check.classify(row("[" * 100_000, ref)) == "invalid_json.unparseable"
    # only when the reference is a JSON object; empty answers are empty_answer's
    assert check.classify(row("not json", "card_arrival")) is None
    assert check.classify(row("not json", "[1, 2]")) is None
    assert check.classify(row("", ref)) is None
    assert check.classify(row("[]", "{}")) is None  # nothing to miss


# --- analyse -----------------------------------------------------------------------------------
def _classification_rows() -> list[EvalRow]:
    c = {"labels": LABELS, "finish_reason": "stop"}
    return [
        row("card_arrival", "card_arrival", **c),                 # 0 right
        row("exchange_rate", "card_arrival", **c),                # 1 confusion card_arrival -> exchange_rate
        row("Exchange_Rate.", "card_arrival", **c),               # 2 same confusion (normalised)
        row("card_arival", "card_arrival", **c),                  # 3 near miss (no confusion)
        row("", "top_up_failed", **c),                            # 4 empty
        row("refund_me_now", "top_up_failed", **c),               # 5 invented
        row("top_up_failed", "exchange_rate", **c),               # 6 confusion exchange_rate -> top_up_failed
        row("x x x x x x x x x x x", "lost_or_stolen_card", labels=LABELS, finish_reason="length"),  # 7
        row("lost_or_stolen_card", "lost_or_stolen_card", **c),   # 8 right
        row("activate_my_card", "lost_or_stolen_card", **c),      # 9 confusion
    ]


def test_analyse_counts_examples_and_confusions():
    rows = _classification_rows()
    result = analyse(builtin_checks(), rows, examples_per_category=2, top_confusions=10)
    assert isinstance(result, ErrorAnalysis) and result.rows == 10
    assert result.counts == {
        "empty_answer": 1, "truncated": 1, "verbose": 1, "repetition": 1,
        "invalid_label.near_miss": 1, "invalid_label.invented": 2,
        "invalid_json.unparseable": 0, "invalid_json.missing_fields": 0,
    }
    assert list(result.counts)[:2] == ["empty_answer", "truncated"]  # check order, zeros kept
    assert result.examples == {
        "empty_answer": [4], "truncated": [7], "verbose": [7], "repetition": [7],
        "invalid_label.near_miss": [3], "invalid_label.invented": [5, 7],
    }
    assert result.confusion == [
        ("card_arrival", "exchange_rate", 2),
        ("exchange_rate", "top_up_failed", 1),
        ("lost_or_stolen_card", "activate_my_card", 1),
    ]
    top = analyse(builtin_checks(), rows, examples_per_category=1, top_confusions=1)
    assert top.confusion == [("card_arrival", "exchange_rate", 2)]
    assert top.examples["invalid_label.invented"] == [5]
    assert analyse({}, rows).counts == {} and analyse(builtin_checks(), []).rows == 0


def test_analyse_names_a_broken_check():
    class Broken:
        name = "broken"
        description = "raises"
        categories = ("broken",)

        def classify(self, row):
            raise ZeroDivisionError("oops")

    class Undeclared(Broken):
        def classify(self, row):
            return "something_else"

    with pytest.raises(PluginError, match=r"'broken'.*row 0.*ZeroDivisionError: oops"):
        analyse({"empty_answer": EmptyAnswer(), "broken": Broken()}, [row("a")])
    with pytest.raises(PluginError, match=r"'odd'.*something_else"):
        analyse({"odd": Undeclared()}, [row("a")])


def test_confusion_matrix():
    rows = _classification_rows() + [row("card_arrival", "not_a_label", labels=LABELS)]
    order, counts = confusion_matrix(rows, LABELS)
    assert order == list(LABELS) + [OTHER]
    assert len(counts) == len(order) and all(len(line) == len(order) for line in counts)
    i = {label: k for k, label in enumerate(order)}
    assert counts[i["card_arrival"]][i["card_arrival"]] == 1
    assert counts[i["card_arrival"]][i["exchange_rate"]] == 2
    assert counts[i["card_arrival"]][i[OTHER]] == 1  # the near miss
    assert counts[i["top_up_failed"]][i[OTHER]] == 2  # empty + invented
    assert counts[i["lost_or_stolen_card"]][i[OTHER]] == 1
    assert counts[i[OTHER]][i["card_arrival"]] == 1
    assert sum(map(sum, counts)) == len(rows)


# --- the contract, for every registered check ------------------------------------------------
REGISTRY = PluginRegistry(builtins=("tunesmith_builtin.error_checks",))
CHECKS = REGISTRY.all("error_checks")
ODD_PREDICTIONS = [
    "", " ", "\n\t\r\n", "\u200b", "\x00", "ünïcödé 🙂 日本語のテキスト", "\ud800", "\U0010ffff",
    "x" * 200_000, "word " * 20_000, "!" * 50_000, '{"name": "Alice", "amount": 1}', "[" * 50_000,
    "null", "```json\n{}\n```", "card_arrival", "CARD_ARRIVAL!!!", "\n\ncard arrival\n", "1e999",
    "9" * 10_000,
]
ODD_REFERENCES = ["", "card_arrival", '{"name": "Alice", "amount": 42.5}', "[1]", "ünïcödé", "x" * 1000]


def test_builtins_are_registered():
    assert set(CHECKS) >= {"empty_answer", "truncated", "verbose", "repetition", "invalid_label", "invalid_json"}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_registered_check_keeps_the_contract(name):
    check = CHECKS[name]
    assert isinstance(check, ErrorCheck) and not conformance_errors(check, ErrorCheck)
    assert check.name == name
    assert isinstance(check.description, str) and check.description.strip()
    assert isinstance(check.categories, tuple) and check.categories
    assert all(isinstance(c, str) and c for c in check.categories)
    assert len(set(check.categories)) == len(check.categories)
    for prediction in ODD_PREDICTIONS:
        for reference in ODD_REFERENCES:
            for extra in ({}, {"labels": LABELS}, {"finish_reason": "length", "labels": ("a",)}):
                r = row(prediction, reference, **extra)
                category = check.classify(r)
                assert category is None or category in check.categories, (prediction[:40], category)
                assert check.classify(r) == category  # deterministic
