"""What the inference service checks of an adapter folder before a backend loads it: its
adapter_config.json, its PEFT method and rank, and that it was trained on the served base."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tunesmith.core.formats.adapter import PEFT_CONFIG, base_reference
from tunesmith.core.storage import is_artifact_uri

FIELD = "adapter.uri"


def read_adapter_config(folder: Path | str, uri: str) -> dict[str, Any]:
    """adapter_config.json of an adapter folder; NotFound / InvalidArgument naming adapter.uri."""
    path = Path(folder) / PEFT_CONFIG
    if not path.is_file():
        raise NotFound(f"{uri} is not a peft adapter (no {PEFT_CONFIG})", field=FIELD, code="unknown_adapter")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{uri}: {PEFT_CONFIG} is not valid JSON: {exc}", field=FIELD) from None
    if not isinstance(config, dict):
        raise InvalidArgument(f"{uri}: {PEFT_CONFIG} is not a JSON object", field=FIELD)
    return config


def adapter_kind(config: dict[str, Any]) -> tuple[str, int]:
    """(PEFT method as ServedModel.peft_type reports it, rank): "LORA", "LORA+DORA", "IA3", ...;
    the rank is the largest of `r` and `rank_pattern`'s values (0 for methods without one)."""
    peft_type = str(config.get("peft_type") or "UNKNOWN").upper()
    if peft_type == "LORA" and config.get("use_dora"):
        peft_type = "LORA+DORA"
    ranks = [config.get("r")] + list((config.get("rank_pattern") or {}).values())
    rank = max((int(r) for r in ranks if isinstance(r, int) and not isinstance(r, bool)), default=0)
    return peft_type, rank


def check_adapter_on_base(models: Any, folder: Path | str, uri: str, base_served: Any) -> None:
    """FailedPrecondition (code adapter_base_mismatch) when the adapter names a base that is
    provably not the served model: a model artifact URI other than the served one, or a
    model-store name whose artifact is another. A base named by a hub id or a local path (a
    plain peft folder) cannot be compared here; a shape mismatch then fails in the engine."""
    base = base_reference(folder)
    if not base or base in (base_served.model, base_served.artifact.uri):
        return
    if is_artifact_uri(base):
        actual = base
    else:
        try:
            actual = models.get(base).artifact.uri if models.is_stored(base) else ""
        except (InvalidArgument, NotFound):  # not a model-store name (a hub id or a path)
            actual = ""
        if not actual:
            return
    if actual != base_served.artifact.uri:
        raise FailedPrecondition(
            f"adapter {uri} was trained on {base}, but {base_served.name!r} serves {base_served.model} "
            f"({base_served.artifact.uri}); load it on its own base model", field=FIELD, code="adapter_base_mismatch")
