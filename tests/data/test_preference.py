"""Preference data (schema "preference": prompt, chosen, rejected) through the preparation
pipeline, from real JSONL and CSV files: TRL's standard and conversational forms."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tunesmith.core.errors import DataValidationError
from tunesmith.core.formats.dataset import read_split, write_prepared
from tunesmith.data.prepare import PrepareSpec, prepare
from tunesmith.data.readers import read_file, read_rows
from tunesmith_builtin import templates as builtin_templates

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "change_pin"]


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


def pairs(n: int) -> list[dict]:
    return [{"prompt": f"Message: customer message number {i}\nIntent:", "chosen": f" {INTENTS[i % 4]}",
             "rejected": f" {INTENTS[(i + 1) % 4]}", "label": INTENTS[i % 4]} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], header: tuple[str, ...]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(h, "") if not isinstance(r.get(h), (list, dict)) else json.dumps(r[h]) for h in header])
    return path


def run(path: Path, spec: PrepareSpec, templates, tokenizer=None):
    rows = read_rows(path)
    return prepare(rows, spec, source=path.name, templates=templates, tokenizer=tokenizer)


def by_row(prepared) -> dict[int, dict]:
    return {e["source_row"]: e for split in ("train", "validation") for e in prepared.splits.get(split, [])}


# --- the standard form: JSONL and CSV give the same prepared pairs --------------------------
def test_jsonl_and_csv_preference_files_prepare_alike(tmp_path, templates, tokenizer):
    rows = pairs(20)
    spec = dict(schema="preference", validation_fraction=0.25, seed=3, stratify=True, max_seq_length=64)
    j = run(write_jsonl(tmp_path / "pref.jsonl", rows), PrepareSpec(**spec), templates, tokenizer)
    c = run(write_csv(tmp_path / "pref.csv", rows, ("prompt", "chosen", "rejected", "label")), PrepareSpec(**spec),
            templates, tokenizer)
    assert j.split_rows() == c.split_rows() == {"train": 15, "validation": 5}
    assert j.labels == sorted(INTENTS)
    for jr, cr in zip(sorted(by_row(j).items()), sorted(by_row(c).items())):
        assert jr[0] == cr[0]  # JSONL line number == CSV record number here
        assert {k: jr[1][k] for k in ("prompt", "completion", "rejected", "label")} == \
               {k: cr[1][k] for k in ("prompt", "completion", "rejected", "label")}
    e = by_row(j)[1]  # the first row of the file
    assert (e["prompt"], e["completion"], e["rejected"]) == (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"])

    # every prepared row carries what the dpo recipe reads
    from tunesmith_builtin.recipe_dpo import DpoRecipe

    assert all(all(k in ex for k in DpoRecipe.row_fields) for split in j.splits.values() for ex in split)

    # statistics still count prompt and (chosen) completion tokens, per split
    stats = j.statistics["train"]
    assert stats["rows"] == 15 and sum(stats["label_counts"].values()) == 15
    assert stats["prompt_tokens"]["min"] > 0 and stats["completion_tokens"]["min"] >= 2  # label + EOS
    assert stats["truncated_rows"] == 0

    # the prepared folder round-trips the rejected answers
    out = tmp_path / "prepared"
    write_prepared(out, j.splits, j.manifest())
    assert [e["rejected"] for e in read_split(out, "validation")] == [e["rejected"] for e in j.splits["validation"]]


# --- the conversational form -----------------------------------------------------------------
def test_chat_form_prompt_renders_with_the_chat_template(tmp_path, templates, tokenizer):
    conv = [{"role": "system", "content": "You route messages."}, {"role": "user", "content": "I lost my card"}]
    rows = [
        # TRL's conversational preference row: prompt messages, answers as one assistant message
        {"prompt": conv, "chosen": [{"role": "assistant", "content": "lost_or_stolen_card"}],
         "rejected": [{"role": "assistant", "content": "card_arrival"}]},
        # answers as plain strings, ShareGPT speaker names in the prompt
        {"prompt": [{"from": "human", "value": "what exchange rate do you use"}], "chosen": "exchange_rate",
         "rejected": {"role": "assistant", "content": "change_pin"}},
    ]
    p = run(write_jsonl(tmp_path / "conv.jsonl", rows), PrepareSpec(schema="preference", template="chat"),
            templates, tokenizer)
    ex = by_row(p)
    assert ex[1]["prompt"] == ("<|im_start|>system\nYou route messages.<|im_end|>\n<|im_start|>user\nI lost my card"
                               "<|im_end|>\n<|im_start|>assistant\n")
    assert (ex[1]["completion"], ex[1]["rejected"]) == ("lost_or_stolen_card", "card_arrival")
    assert ex[2]["prompt"] == "<|im_start|>user\nwhat exchange rate do you use<|im_end|>\n<|im_start|>assistant\n"
    assert (ex[2]["completion"], ex[2]["rejected"]) == ("exchange_rate", "change_pin")
    assert ex[2]["fields"]["prompt"] == [{"role": "user", "content": "what exchange rate do you use"}]
    assert p.statistics["train"]["prompt_tokens"]["max"] > 0  # statistics on the rendered chat prompts

    # the same in a CSV file: the messages as a JSON string in the cell
    c = run(write_csv(tmp_path / "conv.csv", rows, ("prompt", "chosen", "rejected")),
            PrepareSpec(schema="preference", template="chat"), templates, tokenizer)
    assert [(e["prompt"], e["completion"], e["rejected"]) for _, e in sorted(by_row(c).items())] == \
           [(e["prompt"], e["completion"], e["rejected"]) for _, e in sorted(ex.items())]

    # a string prompt with the chat template becomes the user turn
    s = run(write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "I lost my card", "chosen": "a", "rejected": "b"}]),
            PrepareSpec(schema="preference", template="chat", template_options={"system": "You route messages."}),
            templates, tokenizer)
    assert s.splits["train"][0]["prompt"] == ex[1]["prompt"]

    # text that merely looks like a list or JSON stays text
    t = run(write_jsonl(tmp_path / "brackets.jsonl", [{"prompt": "[urgent] my card", "chosen": '{"intent": "x"}',
                                                       "rejected": "[b]"}]),
            PrepareSpec(schema="preference"), templates)
    e = t.splits["train"][0]
    assert (e["prompt"], e["completion"], e["rejected"]) == ("[urgent] my card", '{"intent": "x"}', "[b]")


def test_chat_form_prompt_without_the_chat_template_is_reported_per_row(tmp_path, templates):
    rows = [{"prompt": "text prompt", "chosen": "a", "rejected": "b"},
            {"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}]
    with pytest.raises(DataValidationError, match=r"row 2.*'chat' template") as info:
        run(write_jsonl(tmp_path / "mixed.jsonl", rows), PrepareSpec(schema="preference"), templates)
    assert [(i["row"], i["code"]) for i in info.value.report["issues"]] == [(2, "template_error")]


@pytest.mark.parametrize("row,field,code", [
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "chosen": "a",
      "rejected": "b"}, "prompt", "bad_value"),  # the prompt already holds the answer
    ({"prompt": [{"role": "system", "content": "be nice"}], "chosen": "a", "rejected": "b"}, "prompt", "bad_value"),
    ({"prompt": [{"role": "user", "content": 3}], "chosen": "a", "rejected": "b"}, "prompt", "bad_type"),
    ({"prompt": "hi", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "chosen", "bad_value"),
    ({"prompt": "hi", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}, {"role": "user",
                                                                                           "content": "c"}]},
     "rejected", "bad_type"),
    ({"prompt": "hi", "chosen": "a", "rejected": {"role": "assistant", "content": "  "}}, "rejected", "empty_value"),
])
def test_bad_chat_form_values_are_reported_with_row_and_field(tmp_path, templates, row, field, code):
    rows = [{"prompt": "ok", "chosen": "a", "rejected": "b"}, row]
    with pytest.raises(DataValidationError) as info:
        run(write_jsonl(tmp_path / "bad.jsonl", rows), PrepareSpec(schema="preference", template="chat"), templates)
    assert [(i["row"], i["field"], i["code"]) for i in info.value.report["issues"]] == [(2, field, code)]


# --- missing answers --------------------------------------------------------------------
def test_a_row_missing_rejected_is_reported_with_its_row_number_and_field(tmp_path, templates):
    rows = pairs(5)
    del rows[2]["rejected"]  # line 3 of the JSONL file
    with pytest.raises(DataValidationError, match=r"1 of 5 rows are invalid; first: row 3, field 'rejected'") as info:
        run(write_jsonl(tmp_path / "pref.jsonl", rows), PrepareSpec(schema="preference"), templates)
    assert info.value.report["issues"] == [
        {"row": 3, "field": "rejected", "code": "missing_field", "message": "missing (the row has no 'rejected' key)"}]
    assert info.value.report["rows_rejected"] == 1

    # CSV: an empty cell in a mapped column, reported under the file's own column name
    rows = pairs(5)
    rows[3]["rejected"] = ""
    header = ("prompt", "chosen", "worse", "label")
    for r in rows:
        r["worse"] = r.pop("rejected")
    with pytest.raises(DataValidationError, match=r"row 4, field 'worse'") as info:
        run(write_csv(tmp_path / "pref.csv", rows, header),
            PrepareSpec(schema="preference", column_mapping={"rejected": "worse"}), templates)
    assert [(i["row"], i["field"], i["code"]) for i in info.value.report["issues"]] == [(4, "worse", "empty_value")]

    # no rejected column at all: said once, for the whole file
    table = read_file(write_csv(tmp_path / "norej.csv", pairs(3), ("prompt", "chosen")))
    with pytest.raises(DataValidationError, match="needs field 'rejected'") as info:
        prepare(table.rows, PrepareSpec(schema="preference"), source=table.source, templates=templates,
                columns=table.columns)
    assert [(i["row"], i["field"], i["code"]) for i in info.value.report["issues"]] == [(0, "rejected",
                                                                                        "missing_column")]
