"""A training job's worker files, under jobs/<job id>/ (the trainer service <-> its worker).

    worker-input.json     WorkerInput, written by the service before it starts the worker
    worker-events.jsonl   WorkerEvent lines, appended by the worker as they happen
    worker-result.json    WorkerResult, written by the worker on success
    worker-error.json     WorkerError, written by the worker on failure (exit code non-zero)
    latest-checkpoint.json LatestCheckpoint, replaced by the worker after each checkpoint

WorkerInput carries artifact URIs (artifact://model/..., artifact://dataset/...), never local
paths: the worker resolves them through its own storage, wherever that is mounted.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.formats._common import FormatError, artifact_from, check, loads, read_key, require, stamp
from tunesmith.core.storage import Artifact, parse_artifact_uri, validate_key

VERSION = "1.0"
INPUT_FILE = "worker-input.json"
RESULT_FILE = "worker-result.json"
ERROR_FILE = "worker-error.json"
EVENTS_FILE = "worker-events.jsonl"
LOG_FILE = "worker.log"
CHECKPOINT_FILE = "latest-checkpoint.json"
#: The pid of the worker's process (the executor's child), written by the service.
PID_FILE = "worker.pid"
EVENT_TYPES = ("progress", "metrics", "log", "checkpoint")


def job_key(job_id: str, name: str) -> str:
    """The storage key of one of a job's files, e.g. job_key(id, INPUT_FILE)."""
    return f"jobs/{validate_key(job_id)}/{name}"


class _JobFile:
    """One JSON file of a job's folder (FILE): write() and read() through storage, so a
    subclass defines only its to_dict/from_dict."""

    FILE = ""

    def write(self, storage, job_id: str) -> None:
        storage.write_json(job_key(job_id, self.FILE), self.to_dict())

    @classmethod
    def read(cls, storage, job_id: str):
        key = job_key(job_id, cls.FILE)
        return cls.from_dict(read_key(storage, key, "job"), key)


def _artifact_uri_of(uri: str, kind: str, name: str) -> str:
    try:
        found, _ = parse_artifact_uri(uri)
    except InvalidArgument:
        found = ""
    if found != kind:
        raise InvalidArgument(f"{name} must be an artifact://{kind}/<sha256> URI, got {uri!r}", field=name)
    return uri


@dataclass(frozen=True)
class WorkerInput(_JobFile):
    """What to train. base_model / dataset: artifact URIs; base_model_name: the store name."""

    base_model: str
    dataset: str
    train_split: str = "train"
    validation_split: str = ""
    method: str = "lora"
    method_options: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    merge: bool = False
    base_model_name: str = ""
    recipe: str = "sft"
    recipe_options: dict[str, Any] = field(default_factory=dict)
    #: A checkpoint artifact URI to continue from ("" = start fresh).
    resume_from: str = ""
    #: The serve_as hand-off: {"prompts": N, "max_new_tokens": M} asks for a serve reference
    #: (tunesmith.core.formats.serve_reference) with the output; {} = none.
    serve_check: dict[str, Any] = field(default_factory=dict)
    version: str = VERSION

    FORMAT = "tunesmith.worker-input"

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this run must match to be resumed by it."""
        return {"base_model": self.base_model, "dataset": self.dataset, "train_split": self.train_split,
                "method": self.method, "method_options": self.method_options, "recipe": self.recipe}

    def __post_init__(self) -> None:
        _artifact_uri_of(self.base_model, "model", "base_model")
        _artifact_uri_of(self.dataset, "dataset", "dataset")
        if self.resume_from:
            _artifact_uri_of(self.resume_from, "checkpoint", "resume_from")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("version")
        return {**stamp(self.FORMAT, self.version), **d}

    @classmethod
    def from_dict(cls, d: Any, where: str = INPUT_FILE) -> "WorkerInput":
        check(d, fmt=cls.FORMAT, version=VERSION, where=where)
        try:
            return cls(base_model=require(d, "base_model", str, where), dataset=require(d, "dataset", str, where),
                       train_split=str(d.get("train_split") or "train"),
                       validation_split=str(d.get("validation_split") or ""), method=str(d.get("method") or "lora"),
                       method_options=dict(d.get("method_options") or {}),
                       hyperparameters=dict(d.get("hyperparameters") or {}), merge=bool(d.get("merge")),
                       base_model_name=str(d.get("base_model_name") or ""), recipe=str(d.get("recipe") or "sft"),
                       recipe_options=dict(d.get("recipe_options") or {}),
                       resume_from=str(d.get("resume_from") or ""),
                       serve_check=dict(d.get("serve_check") or {}), version=str(d["version"]))
        except InvalidArgument as exc:
            raise FormatError(f"{where}: {exc}") from None

    FILE = INPUT_FILE


@dataclass(frozen=True)
class WorkerResult(_JobFile):
    """A finished training: the stored adapter (and merged model), or the stored model of a
    method that saves a whole model (full fine-tuning), and the training figures."""

    adapter: Artifact | None = None
    merged_model: Artifact | None = None
    model: Artifact | None = None
    train_seconds: float = 0.0
    train_tokens: int = 0
    tokens_per_second: float = 0.0
    first_train_loss: float | None = None
    final_train_loss: float | None = None
    best_validation_loss: float | None = None
    steps: int = 0
    trainable_parameters: int = 0
    total_parameters: int = 0
    peak_memory_bytes: int = 0
    stopped_early: bool = False
    truncated_rows: int = 0
    resumed_from_step: int = 0
    best_step: int = 0
    final_metrics: dict[str, float] = field(default_factory=dict)
    version: str = VERSION

    FORMAT = "tunesmith.worker-result"
    _ARTIFACTS = ("adapter", "merged_model", "model")

    def __post_init__(self) -> None:
        if (self.adapter is None) == (self.model is None):
            raise InvalidArgument("a worker result holds exactly one of adapter and model", field="adapter")

    @classmethod
    def figure_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in (*cls._ARTIFACTS, "version", "final_metrics")]

    @classmethod
    def from_training(cls, figures: dict[str, Any], *, adapter: Artifact | None = None,
                      merged_model: Artifact | None = None, model: Artifact | None = None) -> "WorkerResult":
        """From the training loop's result dict (unknown keys, e.g. output_dir, are dropped)."""
        metrics = {str(k): float(v) for k, v in (figures.get("final_metrics") or {}).items()}
        return cls(adapter=adapter, merged_model=merged_model, model=model, final_metrics=metrics,
                   **{k: figures[k] for k in cls.figure_names() if figures.get(k) is not None})

    def figures(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.figure_names()}

    def to_dict(self) -> dict[str, Any]:
        arts = {k: getattr(self, k).to_dict() if getattr(self, k) else None for k in self._ARTIFACTS}
        return {**stamp(self.FORMAT, self.version), **arts, "final_metrics": dict(self.final_metrics),
                **self.figures()}

    @classmethod
    def from_dict(cls, d: Any, where: str = RESULT_FILE) -> "WorkerResult":
        check(d, fmt=cls.FORMAT, version=VERSION, where=where)
        kinds = {f.name: f.type for f in fields(cls)}
        figures: dict[str, Any] = {}
        for name in cls.figure_names():
            value = d.get(name)
            if value is None:
                continue
            kind = str(kinds[name])
            figures[name] = bool(value) if kind == "bool" else int(value) if kind == "int" else float(value)
        arts = {k: artifact_from(d[k], f"{where}: {k}") if d.get(k) else None for k in cls._ARTIFACTS}
        metrics = d.get("final_metrics") or {}
        if not isinstance(metrics, dict):
            raise FormatError(f"{where}: final_metrics must be an object")
        try:
            return cls(**arts, version=str(d["version"]), final_metrics={str(k): float(v) for k, v in metrics.items()},
                       **figures)
        except InvalidArgument as exc:
            raise FormatError(f"{where}: {exc}") from None

    FILE = RESULT_FILE


@dataclass(frozen=True)
class LatestCheckpoint(_JobFile):
    """The newest checkpoint of a job: its artifact URI and the optimizer step it holds."""

    uri: str
    step: int
    version: str = VERSION

    FORMAT = "tunesmith.latest-checkpoint"
    FILE = CHECKPOINT_FILE

    def to_dict(self) -> dict[str, Any]:
        return {**stamp(self.FORMAT, self.version), "uri": self.uri, "step": self.step}

    @classmethod
    def from_dict(cls, d: Any, where: str = CHECKPOINT_FILE) -> "LatestCheckpoint":
        check(d, fmt=cls.FORMAT, version=VERSION, where=where)
        try:
            return cls(_artifact_uri_of(require(d, "uri", str, where), "checkpoint", "uri"),
                       int(d.get("step") or 0), str(d["version"]))
        except (InvalidArgument, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class WorkerError(_JobFile):
    """A failed training: a short code (e.g. out_of_memory), a message for the job's error and,
    where one input is at fault, its proto field path (e.g. spec.hyperparameters.max_seq_length)."""

    code: str
    message: str
    version: str = VERSION
    field: str = ""

    FORMAT = "tunesmith.worker-error"

    def to_dict(self) -> dict[str, Any]:
        return {**stamp(self.FORMAT, self.version), "code": self.code, "message": self.message, "field": self.field}

    @classmethod
    def from_dict(cls, d: Any, where: str = ERROR_FILE) -> "WorkerError":
        check(d, fmt=cls.FORMAT, version=VERSION, where=where)
        return cls(str(d.get("code") or "training_error"), str(d.get("message") or ""), str(d["version"]),
                   str(d.get("field") or ""))

    FILE = ERROR_FILE


@dataclass(frozen=True)
class WorkerEvent:
    """One line of worker-events.jsonl.

    type "progress": data holds tunesmith.api.common.v1.Progress fields (phase, step, ...);
    "metrics": data = {"name", "values": {metric: number}}; "log": data = {"level", "message"}.
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    version: str = VERSION

    FORMAT = "tunesmith.worker-event"

    @classmethod
    def from_emitted(cls, event: dict[str, Any]) -> "WorkerEvent":
        """From the trainer's on_event dict ({"type": ..., **data})."""
        data = dict(event)
        return cls(type=str(data.pop("type", "")), data=data, time=float(data.pop("time", None) or time.time()))

    def to_line(self) -> str:
        return json.dumps({"version": self.version, "type": self.type, "time": self.time, "data": self.data})

    @classmethod
    def from_line(cls, line: str, where: str = EVENTS_FILE) -> "WorkerEvent":
        d = loads(line, where)
        check(d, fmt=cls.FORMAT, version=VERSION, where=where)
        if not isinstance(d.get("data"), dict):
            raise FormatError(f"{where}: an event needs a 'data' object")
        return cls(type=str(d.get("type", "")), data=d["data"], time=float(d.get("time") or 0.0), version=str(d["version"]))

    def append(self, storage, job_id: str) -> None:
        storage.append_line(job_key(job_id, EVENTS_FILE), self.to_line())
