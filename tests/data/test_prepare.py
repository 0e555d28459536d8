"""The preparation pipeline on real files in tmp_path: validation, filters, splits, statistics."""
from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.core.errors import DataValidationError, InvalidArgument, NotFound
from tunesmith.core.formats.dataset import read_manifest, read_split, write_prepared
from tunesmith.data.prepare import PrepareSpec, prepare, render_rows
from tunesmith.data.readers import read_file, read_rows
from tunesmith_builtin import templates as builtin_templates

BANKING77 = Path("/work/shared/datasets/banking77/train.csv")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MAPPING = {"input": "text", "output": "category"}


@pytest.fixture(scope="module")
def templates():
    found = {}
    builtin_templates.register_templates(register=found.__setitem__)
    return found


@pytest.fixture(scope="module")
def tokenizer():
    """Offline word-level tokenizer: one token per word or punctuation mark; ChatML template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    return tok


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "category")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def labelled_rows(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"message {label} {i}", label) for label, n in counts.items() for i in range(n)]


def run(path: Path, spec: PrepareSpec, templates, tokenizer=None):
    table = read_file(path)
    return prepare(table.rows, spec, source=table.source, templates=templates, tokenizer=tokenizer,
                   columns=table.columns)


def rows_of(prepared, split: str) -> list[int]:
    return [e["source_row"] for e in prepared.splits[split]]


# --- validation ---------------------------------------------------------------------------
def test_missing_values_reject_the_file_naming_file_row_and_field(tmp_path, templates):
    rows = labelled_rows({"a": 250, "b": 250})
    rows[16] = (rows[16][0], "")          # row 17: empty category
    rows[39] = ("", rows[39][1])          # row 40: empty text
    rows[299] = (rows[299][0], "   ")     # row 300: whitespace only
    path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(DataValidationError) as info:
        run(path, PrepareSpec(column_mapping=MAPPING), templates)
    err = info.value
    assert str(err).startswith("train.csv: 3 of 500 rows are invalid; first: row 17, field 'category': empty value")
    report = err.report
    assert report["source"] == "train.csv"
    assert (report["rows_read"], report["rows_accepted"], report["rows_rejected"]) == (500, 0, 3)
    assert [(i["row"], i["field"], i["code"]) for i in report["issues"]] == [
        (17, "category", "empty_value"), (40, "text", "empty_value"), (300, "category", "empty_value")]
    assert report["counts_by_code"] == {"empty_value": 3}


def test_wrong_mapped_column_lists_available_columns(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 5}))
    with pytest.raises(DataValidationError) as info:
        run(path, PrepareSpec(column_mapping={"input": "text", "output": "label"}), templates)
    err = info.value
    assert "train.csv" in str(err) and "'label'" in str(err) and "available columns: text, category" in str(err)
    issues = err.report["issues"]
    assert len(issues) == 1 and issues[0]["code"] == "missing_column" and issues[0]["row"] == 0
    assert err.report["rows_rejected"] == err.report["rows_read"] == 5


def test_service_style_call_with_read_rows(tmp_path, templates):
    path = write_csv(tmp_path / "upload.csv", labelled_rows({"a": 4}))
    rows = read_rows(path, None, display_name="mine.csv")
    p = prepare(rows, PrepareSpec(column_mapping=MAPPING), source="mine.csv", templates=templates)
    assert p.report["source"] == "mine.csv" and p.split_rows() == {"train": 4}
    with pytest.raises(DataValidationError, match=r"^mine.csv: column 'label' .*available columns: text, category"):
        prepare(rows, PrepareSpec(column_mapping={"input": "text", "output": "label"}), source="mine.csv",
                templates=templates)


def test_unmapped_required_field_is_a_missing_column(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 3}))
    with pytest.raises(DataValidationError, match=r"needs field 'input'.*available columns: text, category"):
        run(path, PrepareSpec(), templates)


def test_jsonl_rows_with_missing_keys_and_wrong_types(tmp_path, templates):
    path = tmp_path / "d.jsonl"
    lines = [{"input": "ok", "output": "x"}, {"input": "no label"}, {"input": ["a", "list"], "output": "x"},
             {"input": "number label", "output": 3}, {"input": "null", "output": None}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        run(path, PrepareSpec(), templates)
    report = info.value.report
    assert "row 2, field 'output'" in str(info.value)
    assert [(i["row"], i["field"], i["code"]) for i in report["issues"]] == [
        (2, "output", "missing_field"), (3, "input", "bad_type"), (5, "output", "empty_value")]
    assert report["counts_by_code"] == {"bad_type": 1, "empty_value": 1, "missing_field": 1}


def test_template_problems_fail_fast(tmp_path, templates, tokenizer):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 3}))
    spec = PrepareSpec(column_mapping=MAPPING, template_options={"instrution": "typo"})
    with pytest.raises(InvalidArgument, match="no option 'instrution'"):
        run(path, spec, templates)
    with pytest.raises(InvalidArgument, match="needs a tokenizer"):
        run(path, PrepareSpec(column_mapping=MAPPING, template="chat"), templates)
    with pytest.raises(InvalidArgument, match="unknown template 'nope'"):
        run(path, PrepareSpec(column_mapping=MAPPING, template="nope"), templates)


# --- splits -------------------------------------------------------------------------------
def test_seeded_split_is_reproducible_and_seed_dependent(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 60, "b": 40}))
    table = read_file(path)

    def split(seed, rows):
        p = prepare(rows, PrepareSpec(column_mapping=MAPPING, validation_fraction=0.2, seed=seed),
                    source="train.csv", templates=templates)
        return rows_of(p, "train"), rows_of(p, "validation")

    train, val = split(7, table.rows)
    assert len(val) == 20 and len(train) == 80
    assert sorted(train + val) == list(range(1, 101))
    assert split(7, table.rows) == (train, val)
    # the same rows in another order, with other dict key order, give the same split
    shuffled = [(n, dict(reversed(list(r.items())))) for n, r in reversed(table.rows)]
    assert split(7, shuffled) == (train, val)
    assert set(split(8, table.rows)[1]) != set(val)


def test_split_does_not_depend_on_python_hash_seed(tmp_path):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 30, "b": 20}))
    code = (
        "import json, sys\n"
        "from tunesmith.data.prepare import PrepareSpec, prepare\n"
        "from tunesmith.data.readers import read_file, read_rows\n"
        "from tunesmith_builtin.templates import TEMPLATES\n"
        "t = read_file(sys.argv[1])\n"
        "p = prepare(t.rows, PrepareSpec(column_mapping={'input': 'text', 'output': 'category'},\n"
        "            validation_fraction=0.3, seed=3, stratify=True, nested_subset_sizes=[5, 10]),\n"
        "            source=t.source, templates={x.name: x for x in TEMPLATES})\n"
        "print(json.dumps({k: [e['source_row'] for e in v] for k, v in p.splits.items()}))\n"
    )
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outs.add(subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True,
                                capture_output=True, text=True).stdout)
    assert len(outs) == 1


def test_stratified_split_keeps_label_proportions(tmp_path, templates):
    counts = {"a": 50, "b": 30, "c": 13, "d": 7}
    path = write_csv(tmp_path / "train.csv", labelled_rows(counts))
    for seed in range(5):
        p = run(path, PrepareSpec(column_mapping=MAPPING, validation_fraction=0.25, seed=seed, stratify=True),
                templates)
        val = Counter(e["label"] for e in p.splits["validation"])
        train = Counter(e["label"] for e in p.splits["train"])
        assert sum(val.values()) == 25
        for label, n in counts.items():
            assert abs(val[label] - n * 0.25) <= 1, (seed, label, val)
            assert train[label] > 0 and val[label] > 0
        assert p.statistics["validation"]["label_counts"] == dict(sorted(val.items()))


def test_row_caps_are_seeded_and_stratified(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 60, "b": 30, "c": 10}))
    spec = PrepareSpec(column_mapping=MAPPING, validation_rows=20, seed=1, stratify=True,
                       max_train_rows=40, max_validation_rows=10)
    p = run(path, spec, templates)
    assert p.split_rows() == {"train": 40, "validation": 10}
    assert abs(Counter(e["label"] for e in p.splits["train"])["a"] - 24) <= 1
    assert not set(rows_of(p, "train")) & set(rows_of(p, "validation"))
    assert rows_of(run(path, spec, templates), "train") == rows_of(p, "train")
    assert p.report["rows_accepted"] == 100


def test_nested_subsets_nest_inside_train(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 50, "b": 50, "c": 20}))
    spec = PrepareSpec(column_mapping=MAPPING, validation_fraction=0.1, seed=5, stratify=True,
                       nested_subset_sizes=[40, 10, 20, 80])
    p = run(path, spec, templates)
    assert [k for k in p.splits] == ["train", "validation", "train_10", "train_20", "train_40", "train_80"]
    sets = [set(rows_of(p, f"train_{n}")) for n in (10, 20, 40, 80)]
    for n, s in zip((10, 20, 40, 80), sets):
        assert len(s) == n
    for small, large in itertools.pairwise(sets):
        assert small < large
    assert sets[-1] <= set(rows_of(p, "train"))
    train_labels = Counter(e["label"] for e in p.splits["train"])
    for n in (10, 20, 40, 80):  # every subset keeps the train split's label proportions (stratify)
        subset = Counter(e["label"] for e in p.splits[f"train_{n}"])
        for label, count in train_labels.items():
            assert abs(subset[label] - count * n / len(p.splits["train"])) <= 1, (n, label, subset)
    with pytest.raises(InvalidArgument, match="larger than the train split"):
        run(path, PrepareSpec(column_mapping=MAPPING, validation_fraction=0.1, nested_subset_sizes=[500]), templates)


# --- filters ------------------------------------------------------------------------------
def test_deduplicate_counts_and_keeps_first(tmp_path, templates):
    rows = labelled_rows({"a": 5, "b": 5})
    rows += [rows[0], rows[3], (rows[3][0] + "  ", rows[3][1]), rows[7]]  # rows 11-14 repeat 1, 4, 4, 8
    path = write_csv(tmp_path / "train.csv", rows)
    p = run(path, PrepareSpec(column_mapping=MAPPING, deduplicate=True), templates)
    assert p.report["rows_deduplicated"] == 4 and p.report["rows_accepted"] == 10
    assert sorted(rows_of(p, "train")) == list(range(1, 11))
    assert p.report["counts_by_code"] == {"duplicate": 4}
    assert p.report["issues"][0] == {"row": 11, "field": "", "code": "duplicate", "message": "duplicate of row 1"}
    assert run(path, PrepareSpec(column_mapping=MAPPING), templates).report["rows_accepted"] == 14


def test_label_filter(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 5, "b": 6, "c": 7}))
    p = run(path, PrepareSpec(column_mapping=MAPPING, label_filter=["a", "c"]), templates)
    assert p.labels == ["a", "c"]
    assert Counter(e["label"] for e in p.splits["train"]) == {"a": 5, "c": 7}
    assert p.report["rows_filtered"] == 6 and p.report["rows_accepted"] == 12
    with pytest.raises(InvalidArgument, match="no row has: z"):
        run(path, PrepareSpec(column_mapping=MAPPING, label_filter=["a", "z"]), templates)


# --- rendering, statistics, writing -------------------------------------------------------
def test_examples_statistics_and_truncation(tmp_path, templates, tokenizer):
    rows = [("one two three", "x"), ("one two three four five six seven eight", "y"), ("one", "x")]
    path = write_csv(tmp_path / "train.csv", rows)
    p = run(path, PrepareSpec(column_mapping=MAPPING, max_seq_length=14), templates, tokenizer)
    by_row = {e["source_row"]: e for e in p.splits["train"]}
    assert by_row[1] == {"source_row": 1, "prompt": "Classify this message.\nMessage: one two three\nIntent:",
                         "completion": " x", "label": "x", "fields": {"input": "one two three", "output": "x"}}
    stats = p.statistics["train"]
    # prompt: "Classify this message . Message : <text> Intent :" = 8 + text words -> 11, 16, 9
    # completion: the label plus the EOS the trainer appends -> 2
    assert stats["prompt_tokens"] == {"min": 9, "max": 16, "mean": 12.0, "p50": 11, "p95": 16, "p99": 16}
    assert stats["completion_tokens"]["min"] == 2 and stats["completion_tokens"]["max"] == 2
    assert stats["total_tokens"]["max"] == 18
    assert stats["truncated_rows"] == 1 and stats["label_counts"] == {"x": 2, "y": 1}
    assert p.report["counts_by_code"] == {"too_long": 1} and p.report["issues"][0]["row"] == 2


def test_write_and_read_prepared(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 10, "b": 10}))
    p = run(path, PrepareSpec(column_mapping=MAPPING, validation_rows=4, nested_subset_sizes=[8]), templates)
    out = tmp_path / "prepared"
    write_prepared(out, p.splits, p.manifest())
    assert sorted(x.name for x in out.iterdir()) == ["dataset.json", "train.jsonl", "train_8.jsonl", "validation.jsonl"]
    assert read_split(out, "validation") == p.splits["validation"]
    manifest = read_manifest(out)
    assert manifest.splits == {"train": 16, "validation": 4, "train_8": 8}
    assert manifest.labels == ["a", "b"] and manifest.spec["column_mapping"] == MAPPING
    assert manifest.report["rows_read"] == 20 and manifest.template == "classification"
    with pytest.raises(NotFound, match="splits: train, train_8, validation"):
        read_split(out, "test")


def test_other_schemas(tmp_path, templates, tokenizer):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([
        {"instruction": "Add.", "input": "2 and 2", "output": "4", "category": "math"},
        {"instruction": "Say hi.", "input": "", "output": "hi", "category": "chat"},
    ]), encoding="utf-8")
    p = run(alpaca, PrepareSpec(schema="SCHEMA_ALPACA", column_mapping={"label": "category"}), templates)
    ex = {e["source_row"]: e for e in p.splits["train"]}
    assert ex[1]["prompt"].endswith("### Input:\n2 and 2\n\n### Response:\n") and ex[1]["completion"] == "4"
    assert "### Input" not in ex[2]["prompt"] and ex[2]["fields"] == {"instruction": "Say hi.", "output": "hi",
                                                                          "label": "chat"}
    assert p.labels == ["chat", "math"]

    pref = tmp_path / "pref.jsonl"
    pref.write_text(json.dumps({"prompt": "Q?", "chosen": "good", "rejected": "bad"}) + "\n", encoding="utf-8")
    e = run(pref, PrepareSpec(schema="preference"), templates).splits["train"][0]
    assert (e["prompt"], e["completion"], e["rejected"]) == ("Q?", "good", "bad")

    chat = tmp_path / "chat.csv"  # ShareGPT conversations stored as a JSON string in a CSV cell
    conv = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    write_csv(chat, [(json.dumps(conv), "greet"), ("[{broken", "x")], header=("conversations", "kind"))
    with pytest.raises(DataValidationError, match=r"1 of 2 rows are invalid; first: row 2, field 'conversations'"):
        run(chat, PrepareSpec(schema="chat"), templates, tokenizer)
    write_csv(chat, [(json.dumps(conv), "greet")], header=("conversations", "kind"))
    e = run(chat, PrepareSpec(schema="chat", template_options={"system": "Be nice."}), templates,
            tokenizer).splits["train"][0]
    assert e["prompt"] == ("<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\n")
    assert e["completion"] == "Hello!"

    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "Once upon a time."}) + "\n", encoding="utf-8")
    e = run(text, PrepareSpec(schema="text"), templates).splits["train"][0]
    assert (e["prompt"], e["completion"], e["label"]) == ("", "Once upon a time.", "")


def test_render_rows_keeps_file_order(tmp_path, templates):
    path = write_csv(tmp_path / "train.csv", labelled_rows({"a": 3, "b": 3}))
    table = read_file(path)
    out = render_rows(table.rows, PrepareSpec(column_mapping=MAPPING), source="train.csv", templates=templates)
    assert [e["source_row"] for e in out] == [1, 2, 3, 4, 5, 6]


@pytest.mark.skipif(not BANKING77.is_file(), reason="BANKING77 not available")
def test_real_banking77_slice_passes(tmp_path, templates, tokenizer):
    with open(BANKING77, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    header, body = lines[0], lines[1:]
    sample = body[::25][:300]  # every 25th row: many intents, a few rows each
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header] + sample)
    assert header == ["text", "category"]
    instruction = "Route this banking customer message to its intent."
    spec = PrepareSpec(column_mapping=MAPPING, template_options={"instruction": instruction},
                       validation_fraction=0.1, seed=42, stratify=True, deduplicate=True, max_seq_length=256)
    p = run(path, spec, templates, tokenizer)
    assert p.report["rows_read"] == len(sample) and p.report["rows_rejected"] == 0
    assert len(p.labels) > 20
    first = next(e for e in p.splits["train"] + p.splits["validation"] if e["source_row"] == 1)
    assert first["prompt"] == f"{instruction}\nMessage: {sample[0][0]}\nIntent:"
    assert first["completion"] == " " + sample[0][1]
    assert p.split_rows()["validation"] == round(p.report["rows_accepted"] * 0.1)
    assert p.statistics["train"]["total_tokens"]["max"] > 0


def test_validation_fraction_one_holds_out_every_row():
    """An evaluation-only dataset: every row in "validation", stratified caps still apply."""
    from tunesmith.core.plugins import PluginRegistry
    from tunesmith.data.prepare import PrepareSpec, prepare

    templates = PluginRegistry(("tunesmith_builtin.templates",), entry_points=False).all("templates")
    rows = [(i + 1, {"input": f"message {i}", "output": f"label{i % 4}"}) for i in range(40)]
    spec = PrepareSpec(schema="classification", validation_fraction=1.0, seed=3, stratify=True,
                       max_validation_rows=20)
    prepared = prepare(rows, spec, source="eval.csv", templates=templates)
    assert set(prepared.splits) == {"validation"}
    labels = [e["label"] for e in prepared.splits["validation"]]
    assert len(labels) == 20 and all(labels.count(f"label{k}") == 5 for k in range(4))
