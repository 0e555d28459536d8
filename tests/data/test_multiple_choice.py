"""Multiple-choice data (schema "multiple_choice": question, choices, answer) through the
preparation pipeline and the data service, from real JSONL and CSV files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tunesmith.core.errors import DataValidationError, InvalidArgument
from tunesmith.core.formats.dataset import (
    SCHEMA_NUMBERS,
    choice_index,
    read_split,
    write_prepared,
)
from tunesmith.data.prepare import (
    DEFAULT_TEMPLATES,
    REQUIRED_FIELDS,
    SCHEMAS,
    PrepareSpec,
    normalize_schema,
    prepare,
)
from tunesmith.data.readers import read_rows
from tunesmith_builtin import templates as builtin_templates

QUESTIONS = [
    ("What is the capital of France?", ["Paris", "Berlin", "Madrid", "Rome"], 0),
    ("How many legs does a spider have?", ["Six", "Ten", "Eight", "Four"], 2),
    ("Which planet is closest to the Sun?", ["Venus", "Mercury", "Mars"], 1),
    ("What is 7 times 8?", ["54", "64", "48", "56"], 3),
    ("What colour is a clear daytime sky?", ["Blue", "Green"], 0),
    ("Which month has the fewest days?", ["January", "April", "February", "December"], 2),
]


@pytest.fixture(scope="module")
def templates():
    found = {}
    builtin_templates.register_templates(register=found.__setitem__)
    return found


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], header: tuple[str, ...]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([json.dumps(r[h]) if isinstance(r.get(h), (list, dict)) else r.get(h, "") for h in header])
    return path


def mc_rows(answer=lambda q, choices, gold: gold) -> list[dict]:
    return [{"question": q, "choices": c, "answer": answer(q, c, g)} for q, c, g in QUESTIONS]


def run(path: Path, spec: PrepareSpec, templates):
    return prepare(read_rows(path), spec, source=path.name, templates=templates)


def by_row(prepared) -> dict[int, dict]:
    return {e["source_row"]: e for split in prepared.splits.values() for e in split}


def issues(info) -> list[tuple[int, str, str]]:
    return [(i["row"], i["field"], i["code"]) for i in info.value.report["issues"]]


# --- the schema is known everywhere ---------------------------------------------------------
def test_the_schema_has_a_number_a_name_fields_and_a_default_template():
    from tunesmith.api.data.v1 import data_pb2

    assert data_pb2.Schema.Value("SCHEMA_MULTIPLE_CHOICE") == 7
    assert SCHEMA_NUMBERS[7] == "multiple_choice" and "multiple_choice" in SCHEMAS
    assert normalize_schema(7) == normalize_schema("SCHEMA_MULTIPLE_CHOICE") == normalize_schema("multiple_choice") \
        == "multiple_choice"
    assert REQUIRED_FIELDS["multiple_choice"] == ("question", "choices", "answer")
    assert DEFAULT_TEMPLATES["multiple_choice"] == "multiple_choice"
    # one table of schema numbers: the data service's prepare uses the shared one
    import tunesmith.data.prepare as prep

    assert not hasattr(prep, "_SCHEMA_NUMBERS") and prep.SCHEMA_NUMBERS is SCHEMA_NUMBERS


# --- JSONL and CSV ------------------------------------------------------------------------------
def test_jsonl_and_csv_files_prepare_alike_with_choices_and_gold(tmp_path, templates):
    spec = dict(schema="multiple_choice", validation_fraction=0.5, seed=1)
    j = run(write_jsonl(tmp_path / "mc.jsonl", mc_rows()), PrepareSpec(**spec), templates)
    c = run(write_csv(tmp_path / "mc.csv", mc_rows(), ("question", "choices", "answer")), PrepareSpec(**spec),
            templates)
    assert j.split_rows() == c.split_rows() == {"train": 3, "validation": 3}
    jr, cr = by_row(j), by_row(c)
    assert sorted(jr) == sorted(cr) == list(range(1, 7))
    for n, (question, choices, gold) in enumerate(QUESTIONS, start=1):
        for e in (jr[n], cr[n]):
            assert e["prompt"] == f"Question: {question}\nAnswer:"
            assert e["completion"] == " " + choices[gold]
            assert e["choices"] == choices and e["gold"] == gold
            assert e["fields"] == {"question": question, "choices": choices, "answer": gold}
    assert j.template == "multiple_choice"


def test_prepared_rows_round_trip_to_the_evaluators_rows(tmp_path, templates):
    from tunesmith.evaluator.rows import eval_rows

    prepared = run(write_jsonl(tmp_path / "mc.jsonl", mc_rows()),
                   PrepareSpec(schema="multiple_choice", validation_fraction=1.0), templates)
    write_prepared(tmp_path / "out", prepared.splits, prepared.manifest())
    back = read_split(tmp_path / "out", "validation")
    assert {r["source_row"]: (r["choices"], r["gold"]) for r in back} == {
        n: (c, g) for n, (_, c, g) in enumerate(QUESTIONS, start=1)}
    rows = {r.prompt: r for r in eval_rows(back)}
    first = rows["Question: What is the capital of France?\nAnswer:"]
    assert first.choices == ("Paris", "Berlin", "Madrid", "Rome") and first.gold == 0 and first.reference == "Paris"


@pytest.mark.parametrize("form", ["index", "digits", "letter", "text", "float"])
def test_answer_as_index_digits_letter_text_or_whole_float(tmp_path, templates, form):
    make = {"index": lambda q, c, g: g, "digits": lambda q, c, g: str(g), "letter": lambda q, c, g: "ABCD"[g],
            "text": lambda q, c, g: f" {c[g]} ", "float": lambda q, c, g: float(g)}[form]
    rows = mc_rows(make)
    path = write_csv(tmp_path / "mc.csv", rows, ("question", "choices", "answer")) if form != "float" \
        else write_jsonl(tmp_path / "mc.jsonl", rows)
    got = by_row(run(path, PrepareSpec(schema="multiple_choice"), templates))
    assert [got[n]["gold"] for n in range(1, 7)] == [g for _, _, g in QUESTIONS]


def test_column_mapping_and_a_label_for_stratifying(tmp_path, templates):
    rows = [{"q": q, "options": c, "key": "ABCD"[g], "topic": "geo" if i % 2 else "sci"}
            for i, (q, c, g) in enumerate(QUESTIONS)]
    spec = PrepareSpec(schema="multiple_choice", column_mapping={"question": "q", "choices": "options",
                                                                 "answer": "key", "label": "topic"},
                       validation_fraction=0.5, stratify=True, template_options={"question_label": "Q",
                                                                                 "answer_label": "A"})
    prepared = run(write_jsonl(tmp_path / "mapped.jsonl", rows), spec, templates)
    assert prepared.labels == ["geo", "sci"]
    e = by_row(prepared)[2]
    assert e["prompt"] == "Q: How many legs does a spider have?\nA:" and e["completion"] == " Eight"
    assert e["gold"] == 2 and e["label"] == "geo"


# --- bad rows are refused, naming file, row and field ------------------------------------------
BAD_ROWS = [
    ({"choices": ["Paris"], "answer": 0}, "choices", "bad_value", "at least 2 choices"),
    ({"choices": [], "answer": 0}, "choices", "bad_value", "at least 2 choices"),
    ({"answer": 4}, "answer", "bad_value", "out of range"),
    ({"answer": -1}, "answer", "bad_value", "out of range"),
    ({"answer": "E"}, "answer", "bad_value", "letter E is out of range"),
    ({"answer": "Lyon"}, "answer", "bad_value", "neither an index"),
    ({"answer": 1.5}, "answer", "bad_value", "whole number"),
    ({"answer": True}, "answer", "bad_type", "expected an index"),
    ({"answer": ""}, "answer", "empty_value", "empty"),
    ({"choices": "Paris, Berlin"}, "choices", "bad_json", "not a valid JSON list"),
    ({"choices": {"a": "Paris"}}, "choices", "bad_type", "expected a list"),
    ({"choices": ["Paris", "Paris "]}, "choices", "bad_value", "same text"),
    ({"choices": ["Paris", ""]}, "choices", "empty_value", "choice 1"),
    ({"choices": ["Paris", ["Berlin"]]}, "choices", "bad_type", "choice 1"),
    ({"question": "  "}, "question", "empty_value", "empty"),
]


@pytest.mark.parametrize("change,field,code,text", BAD_ROWS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_ROWS)])
def test_a_bad_row_is_refused_with_file_row_and_field(tmp_path, templates, change, field, code, text):
    rows = mc_rows()
    rows[2] = {**rows[2], "choices": ["Paris", "Berlin", "Madrid", "Rome"], **change}
    with pytest.raises(DataValidationError) as info:
        run(write_jsonl(tmp_path / "bad.jsonl", rows), PrepareSpec(schema="multiple_choice"), templates)
    assert str(info.value).startswith(f"bad.jsonl: 1 of 6 rows are invalid; first: row 3, field '{field}'")
    assert issues(info) == [(3, field, code)]
    assert text in info.value.report["issues"][0]["message"]
    assert info.value.report["rows_rejected"] == 1


def test_an_ambiguous_csv_answer_is_refused(tmp_path, templates):
    rows = mc_rows()
    rows[1] = {"question": "What is 1 + 1?", "choices": ["1", "2", "3"], "answer": "1"}  # index 1 or the text "1"?
    rows[3] = {"question": "What is 2 + 2?", "choices": ["3", "4", "5", "6"], "answer": "4"}  # only the text reads
    with pytest.raises(DataValidationError, match=r"row 2, field 'key'.*ambiguous") as info:
        run(write_csv(tmp_path / "amb.csv", [{"q": r["question"], "opts": r["choices"], "key": r["answer"]}
                                             for r in rows], ("q", "opts", "key")),
            PrepareSpec(schema="multiple_choice", column_mapping={"question": "q", "choices": "opts",
                                                                  "answer": "key"}), templates)
    assert issues(info) == [(2, "key", "bad_value")]


def test_every_bad_row_is_listed_and_a_missing_column_once(tmp_path, templates):
    rows = mc_rows()
    rows[0]["answer"] = 9
    rows[4]["choices"] = ["only one"]
    with pytest.raises(DataValidationError, match="2 of 6 rows are invalid") as info:
        run(write_jsonl(tmp_path / "two.jsonl", rows), PrepareSpec(schema="multiple_choice"), templates)
    assert issues(info) == [(1, "answer", "bad_value"), (5, "choices", "bad_value")]
    no_choices = [{"question": q, "answer": g} for q, _, g in QUESTIONS]
    with pytest.raises(DataValidationError, match="needs field 'choices'") as info:
        run(write_jsonl(tmp_path / "cols.jsonl", no_choices), PrepareSpec(schema="multiple_choice"), templates)
    assert issues(info) == [(0, "choices", "missing_column")]


def test_choice_index_rules():
    choices = ["B", "A", "C"]
    assert choice_index(choices, 2) == 2 and choice_index(choices, 2.0) == 2 and choice_index(choices, "C") == 2
    with pytest.raises(ValueError, match="ambiguous"):
        choice_index(choices, "A")  # letter A is choice 0, the text "A" is choice 1
    assert choice_index(["A", "B", "C"], "B") == 1  # both readings agree
    assert choice_index(["3", "4", "5", "6"], "4") == 1  # index 4 is out of range: only the text reads
    for bad in (3, "D", "x", None, [], "  "):
        with pytest.raises(ValueError):
            choice_index(choices, bad)


# --- the template --------------------------------------------------------------------------------
def test_the_template_renders_lm_eval_cloze_prompts_and_refuses_what_it_cannot(templates):
    t = templates["multiple_choice"]
    fields = {"question": "What is 7 times 8?", "choices": ["54", "64", "48", "56"], "answer": 3}
    r = t.render(dict(fields), {}, None)
    assert (r.prompt, r.completion) == ("Question: What is 7 times 8?\nAnswer:", " 56")
    r = t.render({**fields, "choices": json.dumps(fields["choices"]), "answer": "D"}, {"answer_label": "A"}, None)
    assert (r.prompt, r.completion) == ("Question: What is 7 times 8?\nA:", " 56")
    with pytest.raises(KeyError):
        t.render({"question": "q", "answer": 0}, {}, None)
    with pytest.raises(ValueError):
        t.render({**fields, "answer": 7}, {}, None)
    with pytest.raises(InvalidArgument) as info:
        t.validate_options({"question_lable": "Q"})
    assert info.value.field == "question_lable"


def test_the_template_keeps_the_template_contract(templates, monkeypatch):
    from tunesmith.testing import contracts

    monkeypatch.setitem(contracts.SAMPLE_ROWS, "multiple_choice",
                        {"question": "What is 2 + 2?", "choices": ["3", "4", "5"], "answer": 1})
    contracts.check_template(templates["multiple_choice"])


# --- the data service, end to end ----------------------------------------------------------------
def test_register_dataset_with_schema_multiple_choice(tmp_path):
    from tunesmith.api.data.v1 import data_pb2
    from tunesmith.core.formats.dataset import read_prepared
    from tunesmith.core.runtime import Runtime
    from tunesmith.data.service import DataServicer

    rt = Runtime.create(str(tmp_path / "store"))
    service = DataServicer(rt)
    path = write_csv(tmp_path / "quiz.csv", mc_rows(lambda q, c, g: "ABCD"[g]), ("question", "choices", "answer"))
    spec = data_pb2.DatasetSpec(name="quiz", schema=data_pb2.SCHEMA_MULTIPLE_CHOICE,
                                split=data_pb2.SplitSpec(validation_fraction=1.0))
    resp = service.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(path), spec=spec), None)
    assert {s.name: s.rows for s in resp.dataset.splits} == {"validation": 6}
    record = rt.datasets.get(resp.dataset.id)
    assert record.schema == "multiple_choice"
    rows = read_prepared(rt.storage, record.artifact.uri).rows("validation")
    assert sorted((r["source_row"], r["gold"], len(r["choices"])) for r in rows) == [
        (n, g, len(c)) for n, (_, c, g) in enumerate(QUESTIONS, start=1)]

    bad = write_jsonl(tmp_path / "bad.jsonl", [*mc_rows()[:3], {"question": "q", "choices": ["x", "y"], "answer": "C"}])
    with pytest.raises(DataValidationError, match=r"bad.jsonl: 1 of 4 rows are invalid; first: row 4, field 'answer'"):
        service.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(bad), spec=spec), None)
