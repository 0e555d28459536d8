"""Proto messages stored as JSON records in shared storage (datasets, jobs, evaluations)."""
from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.core.formats._common import RECORD_ID as _ID
from tunesmith.core.storage import Artifact, normalize_artifact, validate_key

M = TypeVar("M", bound=Message)
log = logging.getLogger("tunesmith.records")


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


DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def newest_first_key(msg: Message) -> tuple:
    """Sort key of records listed newest first: (created_at seconds, nanos, id).

    Works for job records (the common Job in `.job`) and for records with their own
    created_at and id (datasets)."""
    holder = msg.job if "job" in msg.DESCRIPTOR.fields_by_name else msg
    return (holder.created_at.seconds, holder.created_at.nanos, holder.id)


def _encode_token(key: tuple) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
        if not isinstance(key, list) or not key:
            raise ValueError
        return tuple(key)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidArgument("page_token is not a token this service returned", field="page.page_token") from None


def paginate(items: list, page_size: int, page_token: str, key=newest_first_key) -> tuple[list, str]:
    """One page of `items` (sorted newest first by `key`) and the next page's token ("" at the end).

    Tokens are opaque: the key of the last item returned. The next page holds the items that
    sort after it, so records created meanwhile (newer: they sort first) never shift or repeat
    later pages. page_size 0 means DEFAULT_PAGE_SIZE; negative or above MAX_PAGE_SIZE is
    InvalidArgument naming ``page.page_size``.
    """
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"must be in [0, {MAX_PAGE_SIZE}] (0 = {DEFAULT_PAGE_SIZE}), got {page_size}",
                              field="page.page_size")
    size = page_size or DEFAULT_PAGE_SIZE
    keyed = sorted(((tuple(key(item)), item) for item in items), key=lambda p: p[0], reverse=True)
    if page_token:
        cursor = _decode_token(page_token)
        try:
            keyed = [(k, item) for k, item in keyed if k < cursor]
        except TypeError:
            raise InvalidArgument("page_token is not a token this service returned", field="page.page_token") from None
    page = keyed[:size]
    more = len(keyed) > size
    return [item for _, item in page], (_encode_token(page[-1][0]) if more and page else "")


def artifact_ref(a: Artifact):
    """The proto ArtifactRef of `a`, always with its artifact://<kind>/<sha256> URI (a legacy
    file:// reference is rebuilt from its kind and sha256), so records never hold a location."""
    from tunesmith.api.common.v1 import common_pb2

    a = normalize_artifact(a)
    return common_pb2.ArtifactRef(uri=a.uri, sha256=a.sha256, kind=a.kind, size_bytes=a.size_bytes)


def artifact_from_ref(ref) -> Artifact:
    """The Artifact of a proto ArtifactRef, with its artifact:// URI (see artifact_ref)."""
    return normalize_artifact(Artifact(ref.uri, ref.sha256, ref.kind, ref.size_bytes))
