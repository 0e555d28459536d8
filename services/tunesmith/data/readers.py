"""Read tabular source files (CSV, JSONL, JSON, Parquet) into numbered rows.

Every reader returns a `Table`: the column names and the rows as (row_number, {column: value}),
where row_number is 1-based and means what a person looking at the file would count:

- CSV: the data record number, header excluded (blank lines are skipped and not counted).
- JSONL: the line number in the file (blank lines are skipped but still counted), so an error
  names the line an editor shows.
- JSON: the 1-based position in the top-level array.
- Parquet: the 1-based row position (needs pyarrow).

Problems in the file itself are reported before any row is used: a file that is not UTF-8, a
JSONL line that is not valid JSON, a CSV record with the wrong number of fields, a JSON row that
is not an object. They raise DataValidationError (an InvalidArgument) whose message names the
file, the row and the problem, and whose `.report` lists every such row (first 100) with a
stable code, in the same shape as the preparation pipeline's report.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tunesmith.core.errors import DataValidationError, InvalidArgument

FORMATS: tuple[str, ...] = ("csv", "jsonl", "json", "parquet")
MAX_ISSUES = 100

_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# The proto FileFormat enum, by number and by name.
_ENUM_NUMBERS: dict[int, str] = {0: "", 1: "csv", 2: "jsonl", 3: "json", 4: "parquet"}

# Field size limit for CSV cells: long documents are legitimate training data.
csv.field_size_limit(1 << 30)


@dataclass
class Table:
    """A file read into rows. `columns` is the header (CSV/Parquet) or the union of keys seen."""

    source: str
    format: str
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


class Rows(list):
    """A list of (row_number, row) that also carries the file's `columns`, `source` and `format`.

    prepare() uses `.columns` as the file's header when it is not given one explicitly.
    """

    def __init__(self, table: Table):
        super().__init__(table.rows)
        self.columns = list(table.columns)
        self.source = table.source
        self.format = table.format


def read_rows(path: str | Path, fmt: str | int | None = "", *, display_name: str | None = None) -> Rows:
    """read_file(...) as a list of (row_number, row) with `.columns` (what prepare() takes)."""
    return Rows(read_file(path, fmt, source=display_name))


def normalize_format(fmt: str | int | None) -> str:
    """'' (infer), 'csv', 'jsonl', 'json' or 'parquet' from a name, a proto enum name or number."""
    if fmt is None:
        return ""
    if isinstance(fmt, int) and not isinstance(fmt, bool):
        if fmt not in _ENUM_NUMBERS:
            raise InvalidArgument(f"unknown file format number {fmt}", field="format")
        return _ENUM_NUMBERS[fmt]
    name = str(fmt).strip().lower()
    if name.startswith("file_format_"):
        name = name[len("file_format_"):]
    if name in ("", "unspecified"):
        return ""
    if name == "ndjson":
        return "jsonl"
    if name not in FORMATS:
        raise InvalidArgument(f"unknown file format {fmt!r} (known: {', '.join(FORMATS)})", field="format")
    return name


def infer_format(filename: str) -> str:
    """The format for a file name, from its suffix; InvalidArgument when the suffix says nothing."""
    name = PurePosixPath(str(filename).replace("\\", "/")).name.lower()
    suffix = PurePosixPath(name).suffix
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    known = ", ".join(sorted(_SUFFIXES))
    raise InvalidArgument(
        f"{name or filename!r}: cannot infer the file format from the name (known suffixes: {known}); "
        f"set the format explicitly",
        field="format",
    )


def read_file(path: str | Path, fmt: str | int | None = "", *, source: str | None = None) -> Table:
    """Read the file at `path`. `source` is the name used in messages (default: the file name)."""
    p = Path(path)
    label = source or p.name
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{label}: file not found: {p}", field="source_uri") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{label}: is a directory, not a file: {p}", field="source_uri") from None
    return read_bytes(data, label, fmt)


def read_bytes(data: bytes, filename: str, fmt: str | int | None = "") -> Table:
    """Read a file's content; `filename` names it in messages and gives the format when unset."""
    source = PurePosixPath(str(filename).replace("\\", "/")).name or str(filename)
    kind = normalize_format(fmt) or infer_format(filename)
    if kind == "parquet":
        return _read_parquet(data, source)
    text = _decode(data, source, kind)
    if kind == "csv":
        delimiter = "\t" if source.lower().endswith(".tsv") else ","
        return _read_csv(text, source, delimiter)
    if kind == "jsonl":
        return _read_jsonl(text, source)
    return _read_json(text, source)


# --- helpers ------------------------------------------------------------------------------
def _issue(row: int, field_name: str, code: str, message: str) -> dict[str, Any]:
    return {"row": row, "field": field_name, "code": code, "message": message}


def _fail(source: str, rows_read: int, issues: list[dict[str, Any]], unit: str = "row") -> DataValidationError:
    counts: dict[str, int] = {}
    for item in issues:
        counts[item["code"]] = counts.get(item["code"], 0) + 1
    bad_rows = len({item["row"] for item in issues})
    first = issues[0]
    more = f" ({bad_rows - 1} more bad {unit}s)" if bad_rows > 1 else ""
    message = f"{source}: {unit} {first['row']}: {first['message']}{more}"
    report = {
        "source": source,
        "rows_read": rows_read,
        "rows_accepted": 0,
        "rows_rejected": bad_rows,
        "rows_filtered": 0,
        "rows_deduplicated": 0,
        "issues": issues[:MAX_ISSUES],
        "counts_by_code": counts,
    }
    return DataValidationError(message, report=report)


def _decode(data: bytes, source: str, kind: str) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16").lstrip("\ufeff")
        except UnicodeDecodeError:
            pass  # fall through to the UTF-8 error, which says where
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start: exc.start + 4].hex(" ")
        where = f"byte {exc.start}, bytes {bad}"
        row, unit = line, "line"
        if kind == "csv":
            row, unit = _csv_row_at(data[: exc.start].decode("utf-8", "replace")), "row"
            where = f"line {line}, {where}"
        issue = _issue(row, "", "bad_encoding", f"not valid UTF-8 ({where}); save the file as UTF-8")
        raise _fail(source, 0, [issue], unit) from None
    return text[1:] if text.startswith("\ufeff") else text


def _csv_row_at(prefix: str) -> int:
    """The 1-based data row that the end of `prefix` falls in (header excluded)."""
    try:
        records = [r for r in csv.reader(io.StringIO(prefix + "\u2063")) if r]
    except csv.Error:
        return max(prefix.count("\n"), 1)
    return max(len(records) - 1, 1)


# --- CSV ----------------------------------------------------------------------------------
def _read_csv(text: str, source: str, delimiter: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    issues: list[dict[str, Any]] = []
    number = 0
    try:
        for record in reader:
            if not record:
                continue  # blank line
            if header is None:
                header = [name.strip() for name in record]
                _check_header(header, source)
                continue
            number += 1
            if len(record) != len(header):
                issues.append(_issue(
                    number, "", "bad_row",
                    f"has {_fields(len(record))} but the header has {_fields(len(header))} "
                    f"(line {reader.line_num}); check quoting and delimiters",
                ))
                continue
            rows.append((number, dict(zip(header, record))))
    except csv.Error as exc:
        issues.append(_issue(number + 1, "", "bad_row", f"malformed CSV (line {reader.line_num}): {exc}"))
        number += 1
    if header is None:
        raise InvalidArgument(f"{source}: the file is empty (no header row)", field="source")
    if issues:
        raise _fail(source, number, issues)
    return Table(source=source, format="csv", columns=header, rows=rows)


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def _check_header(header: list[str], source: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:
            raise InvalidArgument(f"{source}: header column {i} has no name", field="source")
        if name in seen:
            raise InvalidArgument(f"{source}: column {name!r} appears twice in the header", field="source")
        seen.add(name)


# --- JSON lines ---------------------------------------------------------------------------
def _read_jsonl(text: str, source: str) -> Table:
    rows: list[tuple[int, dict[str, Any]]] = []
    issues: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    lines_read = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        lines_read += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            issues.append(_issue(number, "", "bad_json", f"malformed JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(value, dict):
            issues.append(_issue(number, "", "bad_type", f"expected a JSON object, got {_json_type(value)}"))
            continue
        columns.update(dict.fromkeys(value))
        rows.append((number, value))
    if issues:
        raise _fail(source, lines_read, issues, unit="line")
    return Table(source=source, format="jsonl", columns=list(columns), rows=rows)


# --- JSON array ---------------------------------------------------------------------------
def _read_json(text: str, source: str) -> Table:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        issue = _issue(exc.lineno, "", "bad_json", f"malformed JSON: {exc.msg} (column {exc.colno})")
        raise _fail(source, 0, [issue], unit="line") from None
    if not isinstance(value, list):
        raise InvalidArgument(
            f"{source}: expected a JSON array of objects at the top level, got {_json_type(value)}"
            + ("; for one object per line use the .jsonl format" if isinstance(value, dict) else ""),
            field="format",
        )
    rows: list[tuple[int, dict[str, Any]]] = []
    issues: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            issues.append(_issue(number, "", "bad_type", f"expected a JSON object, got {_json_type(item)}"))
            continue
        columns.update(dict.fromkeys(item))
        rows.append((number, item))
    if issues:
        raise _fail(source, len(value), issues)
    return Table(source=source, format="json", columns=list(columns), rows=rows)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- Parquet ------------------------------------------------------------------------------
def _read_parquet(data: bytes, source: str) -> Table:
    try:
        import pyarrow.parquet as pq  # optional dependency
    except ImportError:
        raise InvalidArgument(
            f"{source}: reading Parquet files needs pyarrow, which is not installed; "
            f"install it (pip install pyarrow) or convert the file to CSV or JSONL",
            field="format",
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several of its own classes
        raise InvalidArgument(f"{source}: not a readable Parquet file: {exc}", field="source") from None
    records = table.to_pylist()
    rows = [(i, dict(r)) for i, r in enumerate(records, start=1)]
    return Table(source=source, format="parquet", columns=list(table.column_names), rows=rows)
