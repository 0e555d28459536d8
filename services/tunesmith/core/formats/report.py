"""The evaluation report artifact (kind "report").

    report.json     EvaluationReport: format "tunesmith.report", version, evaluation_id,
                    dataset_id, split, report (the proto JSON of
                    tunesmith.api.evaluator.v1.EvaluationReport: scores, comparisons, samples)
    outputs.jsonl   one OutputRow per evaluated row: row, prompt, reference, outputs
                    (model label -> generated text); covered by report.json's version
    report.html     (when asked for) the self-contained HTML report: inline CSS and SVG, no
                    scripts or network resources; covered by report.json's version
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tunesmith.core.errors import NotFound
from tunesmith.core.formats._common import FormatError, check, loads, read_file, stamp, write_file
from tunesmith.core.storage import Artifact

FORMAT = "tunesmith.report"
VERSION = "1.0"
REPORT_FILE = "report.json"
OUTPUTS_FILE = "outputs.jsonl"
HTML_FILE = "report.html"
KIND = "report"


@dataclass(frozen=True)
class EvaluationReport:
    evaluation_id: str
    report: dict[str, Any]
    dataset_id: str = ""
    split: str = ""
    version: str = VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**stamp(FORMAT, self.version), "evaluation_id": self.evaluation_id, "dataset_id": self.dataset_id,
                "split": self.split, "report": self.report}

    @classmethod
    def from_dict(cls, d: Any, where: str = REPORT_FILE) -> "EvaluationReport":
        check(d, fmt=FORMAT, version=VERSION, where=where)
        if not isinstance(d.get("report"), dict):
            raise FormatError(f"{where}: missing 'report'")
        return cls(evaluation_id=str(d.get("evaluation_id", "")), report=d["report"],
                   dataset_id=str(d.get("dataset_id", "")), split=str(d.get("split", "")), version=str(d["version"]))


@dataclass(frozen=True)
class OutputRow:
    row: int
    prompt: str
    reference: str
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "prompt": self.prompt, "reference": self.reference, "outputs": self.outputs}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "OutputRow":
        if not isinstance(d, dict) or not isinstance(d.get("outputs"), dict):
            raise FormatError(f"{where}: not an output row (row, prompt, reference, outputs)")
        return cls(int(d.get("row") or 0), str(d.get("prompt", "")), str(d.get("reference", "")),
                   {str(k): str(v) for k, v in d["outputs"].items()})


def write_report(folder: Path | str, report: EvaluationReport, outputs: Iterable[OutputRow], *,
                 html: str | None = None) -> None:
    """Write outputs.jsonl (and report.html) then report.json into a staged folder (see
    store_report)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if html is not None:
        (folder / HTML_FILE).write_text(html, encoding="utf-8")
    with open(folder / OUTPUTS_FILE, "w", encoding="utf-8", newline="\n") as f:
        for row in outputs:
            f.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
    write_file(folder / REPORT_FILE, EvaluationReport(report.evaluation_id, report.report, report.dataset_id,
                                                       report.split).to_dict())


def store_report(storage, report: EvaluationReport, outputs: Iterable[OutputRow], *,
                 html: str | None = None) -> Artifact:
    """Write the report in storage staging and store it as a "report" artifact (atomic)."""
    with storage.staging_dir() as tmp:
        write_report(tmp / "report", report, outputs, html=html)
        return storage.put_artifact(KIND, tmp / "report", move=True)


def read_report(folder: Path | str) -> EvaluationReport:
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        raise NotFound(f"{folder} is not an evaluation report (no {REPORT_FILE})", field="report")
    return EvaluationReport.from_dict(read_file(path, "report"), str(path))


def read_outputs(folder: Path | str) -> list[OutputRow]:
    """Every row's outputs (report.json's version is checked first)."""
    read_report(folder)
    path = Path(folder) / OUTPUTS_FILE
    with open(path, encoding="utf-8") as f:
        return [OutputRow.from_dict(loads(line, f"{path}:{i}"), f"{path}:{i}")
                for i, line in enumerate(f, start=1) if line.strip()]
