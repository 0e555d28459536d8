"""A resumable training checkpoint: one folder, stored as an artifact://checkpoint/... artifact.

    checkpoint.json        CheckpointMeta: format, version, step, data position, loop state,
                           identity (base model, dataset, method, recipe: what it belongs to)
                           and the trainable parameters' names and shapes
    trainable.safetensors  the trainable weights only (LoRA: the adapter; full: every weight)
    optimizer.pt           the optimizer's state_dict (torch.save)
    rng.pt                 python, torch (and CUDA) RNG states (torch.save)

The learning-rate schedule is a pure function of the step, so the step is its whole state.
A folder is complete or absent: the worker writes it in a staging folder and storage moves it
in as one artifact. `read_meta` refuses a folder that is not a checkpoint, is of another
version, or lacks a file, naming what is wrong.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.formats._common import FormatError, check, loads, stamp

FORMAT = "tunesmith.checkpoint"
VERSION = "1.0"
META_FILE = "checkpoint.json"
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
FILES = (META_FILE, WEIGHTS_FILE, OPTIMIZER_FILE, RNG_FILE)
#: The job file naming its latest checkpoint (jobs/<id>/latest-checkpoint.json).
POINTER_FILE = "latest-checkpoint.json"


@dataclass
class CheckpointMeta:
    """step: optimizer steps done. epoch, group: the next gradient-accumulation group to run.
    state: the loop's counters (tokens, seconds, losses, best validation loss, ...).
    identity: what the run trains (base_model, dataset, method, method_options, recipe); a
    resume with a different identity is refused. parameters: name -> shape of trainable ones."""

    step: int
    epoch: int
    group: int
    state: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, list[int]] = field(default_factory=dict)
    version: str = VERSION

    def write(self, folder: Path) -> None:
        import json

        body = {**asdict(self), **stamp(FORMAT, self.version)}
        (Path(folder) / META_FILE).write_text(json.dumps(body, indent=1, sort_keys=True))


def read_meta(folder: Path, source: str) -> CheckpointMeta:
    """The CheckpointMeta of checkpoint folder `folder`; FormatError naming `source` (the URI
    the user gave) when it is not a complete checkpoint of this version."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FormatError(f"{source} is not a complete checkpoint: {', '.join(missing)} missing")
    where = f"{source} ({META_FILE})"
    body = loads((folder / META_FILE).read_bytes(), where)
    check(body, fmt=FORMAT, version=VERSION, where=where)
    try:
        return CheckpointMeta(step=int(body["step"]), epoch=int(body["epoch"]), group=int(body["group"]),
                              state=dict(body.get("state") or {}), identity=dict(body.get("identity") or {}),
                              parameters={str(k): [int(x) for x in v] for k, v in (body.get("parameters") or {}).items()},
                              version=str(body["version"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{source}: {META_FILE} lacks or mistypes {exc}") from None


def identity_mismatch(found: dict[str, Any], expected: dict[str, Any]) -> str:
    """'' when checkpoint identity `found` belongs to the run `expected`, else what differs."""
    for key, want in expected.items():
        if key in found and found[key] != want:
            return f"{key} is {found[key]!r} in the checkpoint but {want!r} in this job"
    return ""
