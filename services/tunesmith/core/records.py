"""Proto messages stored as JSON records in shared storage (datasets, jobs, evaluations)."""
from __future__ import annotations

import logging
import re
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from tunesmith.core.errors import NotFound
from tunesmith.core.storage import Artifact, validate_key

M = TypeVar("M", bound=Message)
log = logging.getLogger("tunesmith.records")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def to_dict(msg: Message) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def from_dict(d: dict, cls: type[M]) -> M:
    return json_format.ParseDict(d, cls(), ignore_unknown_fields=True)


class RecordStore:
    """Records of one collection at records/<collection>/<id>.json, each written atomically."""

    def __init__(self, storage, collection: str, cls: type[M], *, noun: str):
        self.storage, self.collection, self.cls, self.noun = storage, validate_key(collection), cls, noun

    def _key(self, record_id: str) -> str:
        return f"records/{self.collection}/{validate_key(record_id)}.json"

    def put(self, record_id: str, msg: Message) -> None:
        self.storage.write_json(self._key(record_id), to_dict(msg))

    def get(self, record_id: str, *, field: str = "id"):
        if not self.exists(record_id):
            raise NotFound(f"no {self.noun} with id {record_id!r}", field=field)
        return from_dict(self.storage.read_json(self._key(record_id)), self.cls)

    def exists(self, record_id: str) -> bool:
        return bool(_ID.match(record_id or "")) and ".." not in record_id and self.storage.exists(self._key(record_id))

    def list(self, *, skip_unreadable: bool = False) -> list:
        out = []
        for key in self.storage.list(f"records/{self.collection}"):
            if not key.endswith(".json"):
                continue
            try:
                out.append(from_dict(self.storage.read_json(key), self.cls))
            except Exception:  # noqa: BLE001
                if not skip_unreadable:
                    raise
                log.warning("skipping unreadable record", extra={"key": key})
        return out

    def delete(self, record_id: str) -> None:
        self.storage.delete(self._key(record_id))


def paginate(items: list, page_size: int, page_token: str) -> tuple[list, str]:
    """One page of `items` and the token of the next ("" at the end); the token is an offset."""
    start = int(page_token) if page_token.isdigit() else 0
    if page_size <= 0:
        return items[start:], ""
    end = start + page_size
    return items[start:end], str(end) if end < len(items) else ""


def artifact_ref(a: Artifact):
    from tunesmith.api.common.v1 import common_pb2

    return common_pb2.ArtifactRef(uri=a.uri, sha256=a.sha256, kind=a.kind, size_bytes=a.size_bytes)


def artifact_from_ref(ref) -> Artifact:
    return Artifact(ref.uri, ref.sha256, ref.kind, ref.size_bytes)
