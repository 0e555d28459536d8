"""The adapter artifact (kind "adapter"): peft's own files plus tunesmith-adapter.json.

    adapter_config.json, adapter_model.safetensors, README.md, tokenizer files   (peft, as saved)
    tunesmith-adapter.json   AdapterMeta: format "tunesmith.adapter", version, base_model_uri
                             (artifact://model/<sha256>), base_model_name (model-store name),
                             method, training figures

Stock ``PeftModel.from_pretrained(base, folder)`` loads the folder unchanged. finalize_adapter
rewrites ``base_model_name_or_path`` in adapter_config.json (and peft's README model card) from
the local path peft recorded to the base model's artifact URI, so no stored file holds an
absolute path into the root that wrote it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.formats._common import FormatError, check, read_file, require, stamp, write_file
from tunesmith.core.storage import is_artifact_uri, parse_artifact_uri

FORMAT = "tunesmith.adapter"
VERSION = "1.0"
META_FILE = "tunesmith-adapter.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_README = "README.md"
KIND = "adapter"


@dataclass(frozen=True)
class AdapterMeta:
    """tunesmith-adapter.json. base_model_uri is the exact base (artifact://model/<sha256>)."""

    base_model_uri: str
    base_model_name: str = ""
    method: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    version: str = VERSION

    def __post_init__(self) -> None:
        if not is_artifact_uri(self.base_model_uri) or parse_artifact_uri(self.base_model_uri)[0] != "model":
            raise InvalidArgument(f"an adapter's base must be a model artifact URI (artifact://model/<sha256>), "
                                  f"got {self.base_model_uri!r}", field="base_model_uri")

    @property
    def base_reference(self) -> str:
        """What names the base model: its artifact URI (exact weights)."""
        return self.base_model_uri

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("version")
        return {**stamp(FORMAT, self.version), **d}

    @classmethod
    def from_dict(cls, d: Any, where: str = META_FILE) -> "AdapterMeta":
        check(d, fmt=FORMAT, version=VERSION, where=where)
        try:
            return cls(base_model_uri=require(d, "base_model_uri", str, where),
                       base_model_name=str(d.get("base_model_name", "")), method=str(d.get("method", "")),
                       training=dict(d.get("training") or {}), version=str(d["version"]))
        except InvalidArgument as exc:
            raise FormatError(f"{where}: {exc.message}") from None


def is_adapter(folder: Path | str) -> bool:
    return (Path(folder) / PEFT_CONFIG).is_file()


def finalize_adapter(folder: Path | str, meta: AdapterMeta) -> AdapterMeta:
    """Turn a folder peft just saved (staged, not yet stored) into a tunesmith adapter: point
    base_model_name_or_path at meta.base_model_uri and write tunesmith-adapter.json."""
    folder = Path(folder)
    if not is_adapter(folder):
        raise InvalidArgument(f"{folder} is not a peft adapter (no {PEFT_CONFIG})", field="adapter")
    config_path = folder / PEFT_CONFIG
    config = read_file(config_path, "adapter")
    old = config.get("base_model_name_or_path") or ""
    config["base_model_name_or_path"] = meta.base_reference
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    readme = folder / PEFT_README
    if old and readme.is_file():  # peft's model card repeats the path (base_model: ...)
        readme.write_text(readme.read_text(encoding="utf-8").replace(old, meta.base_reference), encoding="utf-8")
    written = dataclasses.replace(meta, version=VERSION)
    write_file(folder / META_FILE, written.to_dict())
    return written


def read_adapter(folder: Path | str) -> AdapterMeta:
    """The AdapterMeta of an adapter folder; FormatError naming the file if it is missing (not
    a tunesmith adapter) or of an unknown major version."""
    folder = Path(folder)
    if not is_adapter(folder):
        raise InvalidArgument(f"{folder} is not a peft adapter (no {PEFT_CONFIG})", field="adapter")
    path = folder / META_FILE
    if not path.is_file():
        raise FormatError(f"{folder} has no {META_FILE}: not written by this tunesmith (pass the base model)")
    return AdapterMeta.from_dict(read_file(path, "adapter"), str(path))


def base_reference(folder: Path | str) -> str:
    """The base model of an adapter folder: AdapterMeta.base_reference, or for a folder without
    tunesmith-adapter.json, adapter_config.json's base_model_name_or_path ("" if unset)."""
    folder = Path(folder)
    if (folder / META_FILE).is_file():
        return read_adapter(folder).base_reference
    if not is_adapter(folder):
        raise InvalidArgument(f"{folder} is not a peft adapter (no {PEFT_CONFIG})", field="adapter")
    return str(read_file(folder / PEFT_CONFIG, "adapter").get("base_model_name_or_path") or "")


def peft_config(folder: Path | str, what: str = "adapter") -> dict[str, Any]:
    """adapter_config.json of an adapter folder; NotFound(field=what) if missing, FormatError if
    malformed."""
    config = read_file(Path(folder) / PEFT_CONFIG, what)
    if not isinstance(config, dict):
        raise FormatError(f"{Path(folder) / PEFT_CONFIG} is not a JSON object")
    return config


def peft_kind(config: dict[str, Any]) -> tuple[str, int]:
    """(PEFT method, rank) of an adapter_config.json: "LORA", "LORA+DORA", "IA3", ...; the rank
    is the largest of `r` and `rank_pattern`'s values (0 for methods without one)."""
    peft_type = str(config.get("peft_type") or "UNKNOWN").upper()
    if peft_type == "LORA" and config.get("use_dora"):
        peft_type = "LORA+DORA"
    ranks = [config.get("r")] + list((config.get("rank_pattern") or {}).values())
    rank = max((int(r) for r in ranks if isinstance(r, int) and not isinstance(r, bool)), default=0)
    return peft_type, rank
