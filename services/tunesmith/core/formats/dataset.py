"""The prepared dataset artifact (written by the data service, read by the trainer worker and
the evaluator) and a typed reader of the dataset record.

Artifact folder (kind "dataset"):
    dataset.json     DatasetManifest: format "tunesmith.dataset", version, splits (name -> rows),
                     source, template, labels, spec, report, statistics
    <split>.jsonl    one example per line: source_row, prompt, completion, label, fields
                     (+ rejected for preference rows; + choices (list of str) and gold (the
                     right choice's 0-based index) for multiple_choice rows)

The record records/datasets/<id>.json is the proto JSON of tunesmith.api.data.v1.Dataset (its
version is the proto package's, v1). DatasetRecord reads only the keys other services need (id,
name, artifact, splits, labels), so they never import the data service's protos.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.core.formats._common import (RECORD_ID, FormatError, artifact_from, check, loads, read_file,
                                            require, stamp, write_file)
from tunesmith.core.storage import Artifact, validate_key

FORMAT = "tunesmith.dataset"
VERSION = "1.0"
LEGACY_FORMATS = ("tunesmith.prepared/v1",)  # manifests written before the version field
MANIFEST_FILE = "dataset.json"
KIND = "dataset"
COLLECTION = "datasets"
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_split_name(split: str) -> str:
    if not isinstance(split, str) or not SPLIT_NAME.match(split):
        raise InvalidArgument(f"bad split name {split!r}", field="split")
    return split


# --- the prepared folder ------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetManifest:
    """dataset.json. `splits` (name -> rows) is filled in by write_prepared from what it wrote."""

    splits: dict[str, int] = field(default_factory=dict)
    source: str = ""
    template: str = ""
    labels: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    version: str = VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("version")
        return {**stamp(FORMAT, self.version), **d}

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST_FILE) -> "DatasetManifest":
        check(d, fmt=FORMAT, version=VERSION, where=where, legacy_formats=LEGACY_FORMATS)
        splits = require(d, "splits", dict, where)
        return cls(splits={str(k): int(v) for k, v in splits.items()}, source=str(d.get("source", "")),
                   template=str(d.get("template", "")), labels=[str(x) for x in d.get("labels") or []],
                   spec=dict(d.get("spec") or {}), report=dict(d.get("report") or {}),
                   statistics=dict(d.get("statistics") or {}),
                   version=str(d.get("version", VERSION)))


def write_prepared(folder: Path | str, splits: Mapping[str, Iterable[dict[str, Any]]],
                   manifest: DatasetManifest) -> DatasetManifest:
    """Write <split>.jsonl for every split, then dataset.json (with the rows written); return it.

    `folder` is a plain, staged folder: store it with storage.put_artifact (or use
    store_prepared, which does both) so that readers see all of it or nothing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, examples in splits.items():
        check_split_name(name)
        n = 0
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for example in examples:
                f.write(json.dumps(example, ensure_ascii=False) + "\n")
                n += 1
        counts[name] = n
    written = dataclasses.replace(manifest, splits=counts, version=VERSION)
    write_file(folder / MANIFEST_FILE, written.to_dict())
    return written


def store_prepared(storage, splits: Mapping[str, Iterable[dict[str, Any]]], manifest: DatasetManifest) -> Artifact:
    """Write the prepared folder in storage staging and store it as a "dataset" artifact (atomic)."""
    with storage.staging_dir() as tmp:
        write_prepared(tmp / "prepared", splits, manifest)
        return storage.put_artifact(KIND, tmp / "prepared", move=True)


@dataclass(frozen=True)
class PreparedFolder:
    """A readable prepared dataset folder with its checked manifest."""

    folder: Path
    manifest: DatasetManifest

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest.splits)

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The examples of one split; NotFound(field="split") listing the splits there are."""
        check_split_name(split)
        path = self.folder / f"{split}.jsonl"
        if not path.is_file():
            known = sorted(p.stem for p in self.folder.glob("*.jsonl"))
            raise NotFound(f"no split {split!r} (splits: {', '.join(known) or 'none'})", field="split")
        with open(path, encoding="utf-8") as f:
            return [loads(line, f"{path}:{i}") for i, line in enumerate(f, start=1) if line.strip()]


def read_manifest(folder: Path | str) -> DatasetManifest:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise NotFound(f"{folder} is not a prepared dataset (no {MANIFEST_FILE})", field="dataset")
    return DatasetManifest.from_dict(read_file(path, "dataset"), str(path))


def open_prepared(folder: Path | str) -> PreparedFolder:
    """The prepared dataset in a local folder; FormatError if its manifest version is unknown."""
    return PreparedFolder(Path(folder), read_manifest(folder))


def read_prepared(storage, uri: str) -> PreparedFolder:
    """The prepared dataset artifact `uri` (artifact://dataset/<sha256>) of `storage`."""
    return open_prepared(storage.resolve(uri))


def read_split(folder: Path | str, split: str) -> list[dict[str, Any]]:
    """The examples of one split of a prepared folder (manifest version checked)."""
    return open_prepared(folder).rows(split)


# --- the dataset record -------------------------------------------------------------------
@dataclass(frozen=True)
class SplitInfo:
    name: str
    rows: int


@dataclass(frozen=True)
class DatasetRecord:
    """The parts of a tunesmith.api.data.v1.Dataset record other services use."""

    id: str
    name: str
    artifact: Artifact
    splits: tuple[SplitInfo, ...]
    labels: tuple[str, ...] = ()
    #: The spec's schema in lower case ("preference", "classification", ...; "" when unset).
    schema: str = ""

    def split_rows(self) -> dict[str, int]:
        return {s.name: s.rows for s in self.splits}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "DatasetRecord":
        if not isinstance(d, Mapping):
            raise FormatError(f"{where}: expected a JSON object (a tunesmith.api.data.v1.Dataset)")
        splits = tuple(SplitInfo(str(s.get("name", "")), int(s.get("rows") or 0)) for s in d.get("splits") or [])
        return cls(id=str(require(d, "id", str, where)), name=str(d.get("name", "")),
                   artifact=artifact_from(d.get("artifact"), f"{where}: artifact"), splits=splits,
                   labels=tuple(str(x) for x in d.get("labels") or []), schema=_schema_name(d.get("spec")))


#: Schema enum numbers of tunesmith.api.data.v1.Schema (records written with ints) -> names.
SCHEMA_NUMBERS = {0: "", 1: "classification", 2: "alpaca", 3: "chat", 4: "prompt_completion", 5: "text", 6: "preference",
                  7: "multiple_choice"}


def choice_index(choices: list[str] | tuple[str, ...], answer: Any) -> int:
    """The 0-based index of a multiple-choice row's right answer (ValueError saying why not).

    `answer` is an index (an int, or a whole float as JSON numbers may arrive), or a string: an
    index in digits, a capital letter A-Z (A = 0), or the right choice's text (surrounding
    whitespace ignored). A string that reads two ways pointing at different choices (choices
    ["1", "2", "3"] with answer "1": index 1 or the text "1"?) is refused as ambiguous."""
    n = len(choices)
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"the answer must be a choice index, a letter or the choice text, got {answer!r}")
    if isinstance(answer, float):
        if not answer.is_integer():
            raise ValueError(f"the answer index must be a whole number, got {answer!r}")
        answer = int(answer)
    if isinstance(answer, int):
        if not 0 <= answer < n:
            raise ValueError(f"answer index {answer} is out of range: the row has {n} choices (0 to {n - 1})")
        return answer
    if not isinstance(answer, str):
        raise ValueError(f"the answer must be a choice index, a letter or the choice text, got {type(answer).__name__}")
    text = answer.strip()
    if not text:
        raise ValueError("the answer is empty")
    readings: dict[int, str] = {}
    if text.isdigit() and text.isascii() and int(text) < n:
        readings.setdefault(int(text), f"index {text}")
    if len(text) == 1 and "A" <= text <= "Z" and ord(text) - ord("A") < n:
        readings.setdefault(ord(text) - ord("A"), f"letter {text}")
    for i, choice in enumerate(choices):
        if str(choice).strip() == text:
            readings.setdefault(i, f"the text of choice {i}")
            break
    if len(readings) > 1:
        ways = " or ".join(f"{why} (choice {i})" for i, why in readings.items())
        raise ValueError(f"answer {answer!r} is ambiguous: it reads as {ways}; give the index as a number "
                         f"or use a letter that is not also a choice")
    if readings:
        return next(iter(readings))
    if text.isdigit():
        raise ValueError(f"answer index {text} is out of range: the row has {n} choices (0 to {n - 1})")
    if len(text) == 1 and "A" <= text <= "Z":
        raise ValueError(f"answer letter {text} is out of range: the row has {n} choices (A to {chr(ord('A') + n - 1)})")
    raise ValueError(f"answer {answer!r} is neither an index, a letter A-Z nor the text of one of the {n} choices")


def _schema_name(spec: Any) -> str:
    value = spec.get("schema") if isinstance(spec, Mapping) else None
    if isinstance(value, int):
        return SCHEMA_NUMBERS.get(value, "")
    return str(value or "").removeprefix("SCHEMA_").lower().replace("unspecified", "")


def record_key(dataset_id: str) -> str:
    return f"records/{COLLECTION}/{validate_key(dataset_id)}.json"


class DatasetRecords:
    """Read-only, typed view of records/datasets/ (the data service writes them)."""

    def __init__(self, storage):
        self.storage = storage

    def exists(self, dataset_id: str) -> bool:
        return (isinstance(dataset_id, str) and bool(RECORD_ID.match(dataset_id)) and ".." not in dataset_id
                and self.storage.exists(record_key(dataset_id)))

    def get(self, dataset_id: str, *, field: str = "id") -> DatasetRecord:
        """The record; NotFound(field=field) for an unknown or malformed id."""
        if not self.exists(dataset_id):
            raise NotFound(f"no dataset with id {dataset_id!r}", field=field)
        key = record_key(dataset_id)
        return DatasetRecord.from_dict(loads(self.storage.read_bytes(key), key), key)

    def list(self) -> list[DatasetRecord]:
        return [DatasetRecord.from_dict(loads(self.storage.read_bytes(k), k), k)
                for k in self.storage.list(f"records/{COLLECTION}") if k.endswith(".json")]
