"""Readers: CSV / JSONL / JSON (and Parquet when pyarrow is there) into numbered rows."""
from __future__ import annotations

import json
import sys

import pytest

from tunesmith.core.errors import DataValidationError, InvalidArgument
from tunesmith.data.readers import infer_format, normalize_format, read_bytes, read_file, read_rows


def test_csv_rows_are_numbered_from_one_and_keep_quoted_newlines(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('\ufefftext,category\nhello,greet\n"two\nlines, and a comma",other\n\nbye,greet\n',
                    encoding="utf-8")
    table = read_file(path)
    assert table.format == "csv" and table.source == "train.csv"
    assert table.columns == ["text", "category"]  # BOM stripped from the first column name
    assert table.rows == [
        (1, {"text": "hello", "category": "greet"}),
        (2, {"text": "two\nlines, and a comma", "category": "other"}),
        (3, {"text": "bye", "category": "greet"}),  # blank line skipped
    ]


def test_csv_row_with_wrong_number_of_fields_names_file_and_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,category\na,x\nb,y\nc,z,extra\nd\ne,x\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        read_file(path)
    err = info.value
    assert "bad.csv" in str(err) and "row 3" in str(err) and "3 fields" in str(err)
    assert [(i["row"], i["code"]) for i in err.report["issues"]] == [(3, "bad_row"), (4, "bad_row")]
    assert err.report["counts_by_code"] == {"bad_row": 2}
    assert err.report["rows_read"] == 5 and err.report["rows_rejected"] == 2


def test_jsonl_broken_line_is_named_with_its_line_number(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "a", "output": "x"}\n\n{"input": "b", "output": }\n{"input": "c", "output": "z"}\n',
                    encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        read_file(path)
    err = info.value
    assert "data.jsonl" in str(err) and "line 3" in str(err) and "malformed JSON" in str(err)
    assert err.report["issues"][0]["row"] == 3 and err.report["issues"][0]["code"] == "bad_json"
    assert err.report["counts_by_code"] == {"bad_json": 1}


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "a"}\n["input", "b"]\n', encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"line 2: expected a JSON object, got an array"):
        read_file(path)


def test_jsonl_rows_use_line_numbers_and_collect_columns(tmp_path):
    path = tmp_path / "d.ndjson"
    path.write_text('{"a": 1}\n\n{"b": "x", "a": 2}\n', encoding="utf-8")
    table = read_file(path)
    assert table.format == "jsonl"
    assert table.rows == [(1, {"a": 1}), (3, {"b": "x", "a": 2})]
    assert table.columns == ["a", "b"]


def test_json_array_of_objects(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"input": "a", "output": "x"}, {"input": "b", "output": "y"}]), encoding="utf-8")
    table = read_file(path)
    assert table.rows == [(1, {"input": "a", "output": "x"}), (2, {"input": "b", "output": "y"})]
    (tmp_path / "o.json").write_text('{"input": "a"}', encoding="utf-8")
    with pytest.raises(InvalidArgument, match="expected a JSON array of objects"):
        read_file(tmp_path / "o.json")
    (tmp_path / "m.json").write_text('[{"a": 1}, 5]', encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"m.json: row 2: expected a JSON object, got a number"):
        read_file(tmp_path / "m.json")


def test_bad_encoding_names_file_and_row(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,category\nfine,a\ncaf\u00e9,b\n".encode("latin-1"))
    with pytest.raises(DataValidationError) as info:
        read_file(path)
    assert "latin.csv" in str(info.value) and "row 2" in str(info.value) and "UTF-8" in str(info.value)
    assert info.value.report["issues"][0]["code"] == "bad_encoding"


def test_utf16_with_bom_is_read():
    table = read_bytes("text,category\ncaf\u00e9,b\n".encode("utf-16"), "excel.csv")
    assert table.rows == [(1, {"text": "caf\u00e9", "category": "b"})]


def test_format_inferred_from_name_or_given():
    assert infer_format("x/train.CSV") == "csv"
    assert infer_format("a.jsonl") == "jsonl" and infer_format("a.json") == "json"
    assert infer_format("a.parquet") == "parquet" and infer_format("a.tsv") == "csv"
    with pytest.raises(InvalidArgument, match="cannot infer the file format"):
        infer_format("notes.txt")
    assert normalize_format("FILE_FORMAT_JSONL") == "jsonl" and normalize_format(1) == "csv"
    assert normalize_format(0) == "" and normalize_format("") == ""
    with pytest.raises(InvalidArgument, match="unknown file format"):
        normalize_format("xml")
    table = read_bytes(b'{"a": "b"}\n', "upload.txt", "jsonl")  # explicit format wins over the name
    assert table.rows == [(1, {"a": "b"})]


def test_tsv_uses_tabs():
    table = read_bytes(b"text\tcategory\nhello, world\tgreet\n", "d.tsv")
    assert table.rows == [(1, {"text": "hello, world", "category": "greet"})]


def test_empty_csv_and_duplicate_header(tmp_path):
    with pytest.raises(InvalidArgument, match="empty"):
        read_bytes(b"", "e.csv")
    with pytest.raises(InvalidArgument, match="'text' appears twice"):
        read_bytes(b"text,text\na,b\n", "d.csv")


def test_parquet_without_pyarrow_says_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(InvalidArgument, match="pip install pyarrow") as info:
        read_bytes(b"PAR1", "train.parquet")
    assert "train.parquet" in str(info.value)


def test_parquet_with_pyarrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"text": ["a", "b"], "category": ["x", "y"]}), tmp_path / "d.parquet")
    table = read_file(tmp_path / "d.parquet")
    assert table.columns == ["text", "category"]
    assert table.rows == [(1, {"text": "a", "category": "x"}), (2, {"text": "b", "category": "y"})]


def test_read_rows_is_a_list_of_numbered_rows_with_the_header(tmp_path):
    path = tmp_path / "upload-123.csv"
    path.write_text("text,category\nhello,greet\n", encoding="utf-8")
    rows = read_rows(path, None, display_name="train.csv")
    assert rows == [(1, {"text": "hello", "category": "greet"})]
    assert rows.columns == ["text", "category"] and rows.source == "train.csv" and rows.format == "csv"
