"""The built-in generation benchmarks (bench_*.py): hand-computed values on small constructed
rows, and the defining libraries (rouge-score, sacrebleu, scikit-learn) as the reference."""
from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score

from tunesmith.core.contracts import Benchmark, EvalRow
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import PluginRegistry
from tunesmith.testing.contracts import check_benchmark
from tunesmith_builtin._answers import final_number, normalize, numbers_in, parse_json, strip_fence
from tunesmith_builtin.bench_accuracy import Accuracy
from tunesmith_builtin.bench_bleu import Bleu
from tunesmith_builtin.bench_exact_match import ExactMatch
from tunesmith_builtin.bench_json_field_f1 import JsonFieldF1
from tunesmith_builtin.bench_json_valid import JsonValid
from tunesmith_builtin.bench_macro_f1 import MacroF1
from tunesmith_builtin.bench_numeric_match import NumericMatch
from tunesmith_builtin.bench_rouge import Rouge

MODULES = {
    "exact_match": "tunesmith_builtin.bench_exact_match",
    "accuracy": "tunesmith_builtin.bench_accuracy",
    "macro_f1": "tunesmith_builtin.bench_macro_f1",
    "json_valid": "tunesmith_builtin.bench_json_valid",
    "json_field_f1": "tunesmith_builtin.bench_json_field_f1",
    "rouge": "tunesmith_builtin.bench_rouge",
    "bleu": "tunesmith_builtin.bench_bleu",
    "numeric_match": "tunesmith_builtin.bench_numeric_match",
}
ALL = [ExactMatch(), Accuracy(), MacroF1(), JsonValid(), JsonFieldF1(), Rouge(), Bleu(), NumericMatch()]
GSM8K = Path("/work/shared/datasets/gsm8k/test.jsonl")

#: Real-ish sentences (news-style) with paraphrased hypotheses, for ROUGE and BLEU.
REFS = [
    "The European Central Bank left interest rates unchanged on Thursday.",
    "Heavy rain caused flooding in several towns along the river.",
    "The company reported a ten percent rise in quarterly profits.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The match was postponed because of the storm.",
    "Ticket prices for the museum will rise next month.",
    "The minister resigned after the report was published.",
    "Local volunteers planted two thousand trees in the park.",
]
HYPS = [
    "The European Central Bank kept interest rates unchanged on Thursday.",
    "Flooding hit several towns along the river after heavy rain.",
    "The company reported a rise of ten percent in profits.",
    "A new frog species was discovered by scientists in the rainforest.",
    "The match was postponed because of the storm.",
    "Museum ticket prices rise next month.",
    "After the report was published the minister resigned.",
    "Volunteers planted trees.",
]


def rows(preds, refs, **kw) -> list[EvalRow]:
    return [EvalRow(prompt=f"q{i}", reference=r, prediction=p, **kw) for i, (p, r) in enumerate(zip(preds, refs))]


def score(bench, preds, refs, options=None, **kw) -> tuple[dict[str, float], list[dict]]:
    stats = bench.score_rows(rows(preds, refs, **kw), options or {})
    return bench.aggregate(stats, options or {}), stats


# --- registration and the shared contract ----------------------------------------------------
def test_each_module_registers_its_benchmark():
    for name, module in MODULES.items():
        reg = PluginRegistry(builtins=(module,), entry_points=False)
        assert reg.names("benchmarks") == [name]
        bench = reg.get("benchmarks", name)
        assert isinstance(bench, Benchmark) and bench.name == name and bench.description
        assert bench.needs == "generation" and bench.requires == frozenset()
        assert reg.owner("benchmarks", name) == module


@pytest.mark.parametrize("bench", ALL, ids=lambda b: b.name)
def test_builtin_keeps_the_benchmark_contract(bench):
    check_benchmark(bench)
    assert bench.requests(EvalRow(prompt="p", reference="r"), {}) == []


@pytest.mark.parametrize("bench", ALL, ids=lambda b: b.name)
def test_unknown_option_names_the_key(bench):
    with pytest.raises(InvalidArgument) as info:
        bench.validate_options({"ignore_cas": True})
    assert info.value.field == "ignore_cas"
    with pytest.raises(InvalidArgument):
        bench.score_rows(rows(["a"], ["a"]), {"ignore_cas": True})


@pytest.mark.parametrize("bench, options, field", [
    (ExactMatch(), {"ignore_case": "yes"}, "ignore_case"),
    (ExactMatch(), {"first_line": 1.0}, "first_line"),
    (ExactMatch(), {"regexes_to_ignore": "^A:"}, "regexes_to_ignore"),
    (ExactMatch(), {"regexes_to_ignore": ["("]}, "regexes_to_ignore"),
    (Accuracy(), {"labels": ["a", "a"]}, "labels"),
    (MacroF1(), {"labels": "a,b"}, "labels"),
    (MacroF1(), {"labels": ["a", ""]}, "labels"),
    (JsonValid(), {"require_object": "false"}, "require_object"),
    (JsonFieldF1(), {"normalize_strings": 0}, "normalize_strings"),
    (Rouge(), {"use_stemmer": None, "rouge_types": ["rouge1"]}, "rouge_types"),
    (Bleu(), {"tokenize": "moses"}, "tokenize"),
    (Bleu(), {"lowercase": "true"}, "lowercase"),
    (NumericMatch(), {"abs_tolerance": -1.0}, "abs_tolerance"),
    (NumericMatch(), {"abs_tolerance": "0.1"}, "abs_tolerance"),
])
def test_bad_option_values_name_the_key(bench, options, field):
    with pytest.raises(InvalidArgument) as info:
        bench.validate_options(options)
    assert info.value.field == field


def test_valid_options_pass():
    ExactMatch().validate_options({"ignore_case": False, "regexes_to_ignore": [r"^Answer:\s*"], "first_line": None})
    MacroF1().validate_options({"labels": ["a", "b"]})
    Bleu().validate_options({"tokenize": "intl", "lowercase": True})
    NumericMatch().validate_options({"abs_tolerance": 2.0})
    NumericMatch().validate_options({"abs_tolerance": 1})
    for bench in ALL:
        bench.validate_options({})
        bench.validate_options(None)


# --- normalisation (today's behaviour, now in _answers) ----------------------------------------
@pytest.mark.parametrize("text,expected", [
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
    (None, ""),
    ("   \n  \n", ""),
    ("Straße.", "strasse"),  # casefold
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_normalize_switches():
    assert normalize("line one\nline two", first_line=False) == "line one line two"
    assert normalize("Paris.", ignore_case=False) == "Paris"
    assert normalize("Paris.", ignore_punctuation=False) == "paris."
    assert normalize("Answer: Paris", regexes_to_ignore=[r"^Answer:\s*"]) == "paris"
    # regexes run on the whole text before the first line is taken
    assert normalize("\nSure!\nParis", regexes_to_ignore=[r"\s*Sure!"]) == "paris"


# --- exact_match and accuracy ------------------------------------------------------------------
def test_exact_match_scores_rows():
    preds = ["Paris.", " paris", "PARIS!\nextra words", "Lyon", "\ncard_arrival", "card arrival"]
    refs = ["Paris", "Paris", "paris", "Paris", "card_arrival", "card_arrival"]
    values, stats = score(ExactMatch(), preds, refs)
    assert [s["exact_match"] for s in stats] == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert values == {"exact_match": pytest.approx(4 / 6)}


def test_exact_match_options():
    preds, refs = ["Paris.", "I think the answer is\nParis", "Answer: Lyon"], ["paris", "Paris", "Lyon"]
    assert score(ExactMatch(), preds, refs)[0]["exact_match"] == pytest.approx(1 / 3)
    assert [s["exact_match"] for s in score(ExactMatch(), preds, refs, {"ignore_case": False})[1]] == [0, 0, 0]
    assert [s["exact_match"] for s in score(ExactMatch(), preds, refs, {"ignore_punctuation": False})[1]] == [0, 0, 0]
    kept = score(ExactMatch(), ["Paris"], ["Paris."], {"ignore_punctuation": False})[1]
    assert [s["exact_match"] for s in kept] == [0]
    assert [s["exact_match"] for s in score(ExactMatch(), preds, refs, {"regexes_to_ignore": ["^Answer: "]})[1]] \
        == [1, 0, 1]
    # first_line false: the whole prediction (collapsed) must equal the reference
    assert [s["exact_match"] for s in score(ExactMatch(), ["Paris\n", "Paris\nreally"], ["Paris", "Paris"],
                                            {"first_line": False})[1]] == [1, 0]


def test_empty_inputs_score_zero():
    for bench in ALL:
        assert bench.score_rows([], {}) == []
        assert all(v == 0.0 for v in bench.aggregate([], {}).values())


def test_accuracy_normalises_like_exact_match_and_marks_labels():
    preds = ["Card_Arrival.\nbecause", "LOST_OR_STOLEN_CARD", "my card is lost", "change_pin"]
    refs = ["card_arrival", "lost_or_stolen_card", "lost_or_stolen_card", "card_arrival"]
    labels = ("card_arrival", "lost_or_stolen_card", "change_pin")
    values, stats = score(Accuracy(), preds, refs, labels=labels)
    assert values == {"accuracy": 0.5}
    assert [s["accuracy"] for s in stats] == [1.0, 1.0, 0.0, 0.0]
    assert [s["in_labels"] for s in stats] == [True, True, False, True]
    assert stats[0]["prediction"] == "card_arrival"
    assert [s["in_labels"] for s in score(Accuracy(), preds, refs)[1]] == [None] * 4
    given = score(Accuracy(), preds, refs, {"labels": ["Card_Arrival"]})[1]
    assert [s["in_labels"] for s in given] == [True, False, False, False]


# --- macro_f1 ------------------------------------------------------------------------------------
def test_macro_f1_hand_computed():
    refs = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", "nonsense"]
    # a: P=1/1 R=1/2 F1=2/3; b: P=2/3 R=2/2 F1=0.8; c: P=0 R=0 F1=0 -> mean over a, b, c.
    assert score(MacroF1(), preds, refs)[0]["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert score(Accuracy(), preds, refs)[0]["accuracy"] == pytest.approx(3 / 5)
    # with the dataset's label set {a, b, c, d}: d is never present nor predicted, so F1 0
    assert score(MacroF1(), preds, refs, labels=("a", "b", "c", "d"))[0]["macro_f1"] == \
        pytest.approx((2 / 3 + 0.8) / 4)
    # options.labels wins over the rows' labels
    assert score(MacroF1(), preds, refs, {"labels": ["A", "B"]}, labels=("a", "b", "c", "d"))[0]["macro_f1"] == \
        pytest.approx((2 / 3 + 0.8) / 2)


def _labelled_case(seed=3, n=60):
    rng = random.Random(seed)
    labels = ["billing", "card_arrival", "change_pin", "exchange_rate", "top_up"]
    weights = [0.5, 0.2, 0.15, 0.1, 0.05]
    refs = rng.choices(labels, weights, k=n)
    preds = [r if rng.random() < 0.6 else rng.choice(labels + ["I am not sure", "Billing."]) for r in refs]
    return labels, preds, refs


@pytest.mark.parametrize("source", ["references", "row_labels", "options"])
def test_macro_f1_equals_sklearn(source):
    labels, preds, refs = _labelled_case()
    bench = MacroF1()
    kw = {"labels": tuple(labels) + ("never_seen",)} if source == "row_labels" else {}
    options = {"labels": labels[:3]} if source == "options" else {}
    values, stats = score(bench, preds, refs, options, **kw)
    y_true, y_pred = [normalize(r, first_line=False) for r in refs], [normalize(p) for p in preds]
    label_set = {"references": sorted(set(y_true)), "row_labels": labels + ["never_seen"],
                 "options": labels[:3]}[source]
    expected = f1_score(y_true, y_pred, labels=label_set, average="macro", zero_division=0)
    assert values["macro_f1"] == pytest.approx(expected, abs=1e-12)
    # a resample (rows repeated, some left out) is what sklearn gives on the resampled rows
    rng = random.Random(7)
    idx = [rng.randrange(len(refs)) for _ in refs]
    resampled = bench.aggregate([stats[i] for i in idx], options)["macro_f1"]
    r_true, r_pred = [y_true[i] for i in idx], [y_pred[i] for i in idx]
    r_labels = sorted(set(r_true)) if source == "references" else label_set
    assert resampled == pytest.approx(f1_score(r_true, r_pred, labels=r_labels, average="macro", zero_division=0),
                                      abs=1e-12)


# --- json ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, valid, any_value", [
    ('{"a": 1}', True, True),
    ('  {"a": {"b": [1, 2]}}\n', True, True),
    ('```json\n{"a": 1}\n```', True, True),
    ('```\n{"a": 1}\n```', True, True),
    ("[1, 2]", False, True),
    ('"text"', False, True),
    ('{"a": NaN}', False, False),
    ("Infinity", False, False),
    ('Sure! {"a": 1}', False, False),
    ('{"a": 1}\nHope this helps', False, False),
    ("{'a': 1}", False, False),
    ("", False, False),
])
def test_json_valid(text, valid, any_value):
    assert score(JsonValid(), [text], ["{}"])[0]["json_valid"] == float(valid)
    assert score(JsonValid(), [text], ["{}"], {"require_object": False})[0]["json_valid"] == float(any_value)


def test_strip_fence_and_parse():
    assert strip_fence('```json\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_fence("no fence") == "no fence"
    assert parse_json("```JSON\n[1]\n```") == (True, [1])
    assert parse_json("nope") == (False, None)


def test_json_field_f1_hand_computed():
    refs = [json.dumps({"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}}),
            json.dumps({"tags": [1, 2]}),
            json.dumps({"active": True})]
    preds = [json.dumps({"name": " ada ", "age": 36.0, "address": {"city": "Paris"}, "extra": 1}),
             "not json at all",
             '```json\n{"active": true}\n```']
    values, stats = score(JsonFieldF1(), preds, refs)
    assert [(s["matched"], s["predicted"], s["reference"]) for s in stats] == [(2, 4, 4), (0, 0, 1), (1, 1, 1)]
    assert [s["exact_object"] for s in stats] == [0.0, 0.0, 1.0]
    assert values["field_precision"] == pytest.approx(3 / 5)
    assert values["field_recall"] == pytest.approx(3 / 6)
    assert values["field_f1"] == pytest.approx(2 * (3 / 5) * (3 / 6) / (3 / 5 + 3 / 6))
    assert values["exact_object"] == pytest.approx(1 / 3)
    # strings compared as written without normalize_strings: "ada" no longer matches
    strict = score(JsonFieldF1(), preds, refs, {"normalize_strings": False})[1]
    assert strict[0]["matched"] == 1


def test_json_field_values_compare_by_type():
    pairs = [({"k": True}, {"k": 1}, 0), ({"k": 1}, {"k": 1.0}, 1), ({"k": "1"}, {"k": 1}, 0),
             ({"k": [1, 2]}, {"k": [2, 1]}, 0), ({"k": None}, {"k": None}, 1), ({"k": {}}, {"k": {}}, 1),
             ({"a": {"b": {"c": "X"}}}, {"a": {"b": {"c": "x "}}}, 1)]
    for pred, ref, matched in pairs:
        (s,) = score(JsonFieldF1(), [json.dumps(pred)], [json.dumps(ref)])[1]
        assert s["matched"] == matched, (pred, ref)
    # a prediction with exactly the reference's fields plus one more is not the exact object
    (s,) = score(JsonFieldF1(), ['{"a": 1, "b": 2}'], ['{"a": 1}'])[1]
    assert (s["matched"], s["exact_object"]) == (1, 0.0)


# --- rouge -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_is_rouge_score_mean_f_measure(use_stemmer):
    preds = HYPS + ["", "Completely unrelated words here.\nSecond line about rain."]
    refs = REFS + ["Something.", "Heavy rain caused flooding.\nThe river rose."]
    values, stats = score(Rouge(), preds, refs, {"use_stemmer": use_stemmer})
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=use_stemmer)
    direct = [scorer.score(r, p) for p, r in zip(preds, refs)]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert [s[key] for s in stats] == [d[key].fmeasure for d in direct]
        assert values[key] == pytest.approx(sum(d[key].fmeasure for d in direct) / len(direct))
    assert stats[4]["rouge1"] == 1.0 and stats[8]["rouge1"] == 0.0


def test_rouge_stemming_matters():
    with_stem = score(Rouge(), ["the cats were running"], ["the cat was run"])[0]["rouge1"]
    without = score(Rouge(), ["the cats were running"], ["the cat was run"], {"use_stemmer": False})[0]["rouge1"]
    assert with_stem > without


# --- bleu ------------------------------------------------------------------------------------------
def test_bleu_is_sacrebleu_corpus_bleu_over_100():
    values, stats = score(Bleu(), HYPS, REFS)
    expected = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert 10 < expected < 90
    assert values["bleu"] == pytest.approx(expected / 100, abs=1e-12)
    assert all(len(s["bleu_stats"]) == 10 for s in stats)


def test_bleu_of_resampled_rows_is_sacrebleu_of_those_rows():
    _, stats = score(Bleu(), HYPS, REFS)
    rng = random.Random(0)
    for _ in range(5):
        idx = [rng.randrange(len(HYPS)) for _ in HYPS]
        got = Bleu().aggregate([stats[i] for i in idx], {})["bleu"]
        expected = sacrebleu.corpus_bleu([HYPS[i] for i in idx], [[REFS[i] for i in idx]]).score
        assert got == pytest.approx(expected / 100, abs=1e-12)


def test_bleu_options_are_sacrebleus():
    hyps = [h.upper() for h in HYPS]
    assert score(Bleu(), hyps, REFS)[0]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [REFS]).score / 100, abs=1e-12)
    lower = score(Bleu(), hyps, REFS, {"lowercase": True})[0]["bleu"]
    assert lower == pytest.approx(sacrebleu.corpus_bleu(hyps, [REFS], lowercase=True).score / 100, abs=1e-12)
    assert lower > score(Bleu(), hyps, REFS)[0]["bleu"]
    char = score(Bleu(), HYPS, REFS, {"tokenize": "char"})[0]["bleu"]
    assert char == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="char").score / 100, abs=1e-12)


def test_bleu_perfect_is_one():
    assert score(Bleu(), REFS, REFS)[0]["bleu"] == 1.0


# --- numeric_match ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, number", [
    ("#### 18", "18"),
    ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
    ("The answer is $1,234.50.", "1234.50"),
    ("So 3 apples. Total: 70,000.", "70000"),
    ("1,2,3", "3"),
    ("It dropped to -5 degrees", "-5"),
    ("Answer: 18.00", "18"),
    ("#### 42\nQuestion: what is 7 * 8?", "42"),
    ("no number here", None),
    ("step2 done", None),
    ("", None),
])
def test_final_number(text, number):
    got = final_number(text)
    assert (got is None and number is None) or got == Decimal(number)


def test_numbers_in():
    assert numbers_in("$5 and 1,000 then 3.25.") == [Decimal(5), Decimal(1000), Decimal("3.25")]


def test_numeric_match_on_real_gsm8k_rows():
    lines = GSM8K.read_text().splitlines()[:6]
    refs = [json.loads(line)["answer"] for line in lines]
    finals = [final_number(r) for r in refs]
    assert finals[:3] == [Decimal(18), Decimal(3), Decimal(70000)]  # the file's first rows
    preds = [
        refs[0],                                                 # the worked solution itself
        f"She needs {finals[1]} bolts in total.",                # last number, plain
        f"The profit is ${int(finals[2]):,}.",                   # "$70,000."
        f"#### {finals[3] + 1}",                                 # wrong number
        "I do not know.",                                        # no number
        f"First 2 then 5, so the answer is {finals[5]}.\n",      # last number wins
    ]
    values, stats = score(NumericMatch(), preds, refs)
    assert [s["numeric_match"] for s in stats] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert values["numeric_match"] == pytest.approx(4 / 6)
    assert stats[2]["predicted"] == "70000" and stats[4]["predicted"] is None
    assert stats[3]["expected"] == str(finals[3])


def test_numeric_match_tolerance():
    preds, refs = ["about 3.14", "3.2"], ["#### 3.14159", "#### 3.14159"]
    assert score(NumericMatch(), preds, refs)[0]["numeric_match"] == 0.0
    assert [s["numeric_match"] for s in score(NumericMatch(), preds, refs, {"abs_tolerance": 0.01})[1]] == [1.0, 0.0]


# --- the contract check catches broken benchmarks ----------------------------------------------
class _NotTheMean(ExactMatch):
    def aggregate(self, stats, options):
        return {"exact_match": max((s["exact_match"] for s in stats), default=0.0)}


class _Lenient(ExactMatch):
    def validate_options(self, options):
        return None


class _NoRowValue(Rouge):
    def score_rows(self, rows, options):
        return [{"rouge": s["rouge1"]} for s in super().score_rows(rows, options)]


class _BadStatistic(JsonValid):
    metrics = (JsonValid.metrics[0].__class__("json_valid", "median"),)


class _IgnoresLoglikelihoods:
    name, description, needs, requires = "ll", "ignores its log-likelihoods", "loglikelihood", frozenset()
    metrics = (ExactMatch.metrics[0].__class__("acc", "binary"),)

    def validate_options(self, options):
        for key in options or {}:
            raise InvalidArgument(f"no option {key!r}", field=key)

    def requests(self, row, options):
        return [(row.prompt, " " + c) for c in row.choices]

    def score_rows(self, rows, options):
        return [{"acc": 1.0} for _ in rows]

    def aggregate(self, stats, options):
        return {"acc": sum(s["acc"] for s in stats) / len(stats) if stats else 0.0}


@pytest.mark.parametrize("bench, message", [
    (_NotTheMean(), "not the mean of its row values"),
    (_Lenient(), "unknown option"),
    (_NoRowValue(), "must hold the row's value under 'rouge1'"),
    (_BadStatistic(), "statistic 'median'"),
    (_IgnoresLoglikelihoods(), "no metric scores perfect answers above wrong ones"),
], ids=["not-the-mean", "lenient", "no-row-value", "bad-statistic", "ignores-loglikelihoods"])
def test_check_benchmark_catches(bench, message):
    from tunesmith.testing.contracts import ContractViolation

    with pytest.raises(ContractViolation, match=message):
        check_benchmark(bench)
