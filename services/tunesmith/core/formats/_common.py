"""What every format shares: the format/version stamp, its check, and JSON I/O naming the file."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tunesmith.core.storage import Artifact, normalize_artifact

#: Ids of records (records/<collection>/<id>.json).
RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class FormatError(FailedPrecondition):
    """A stored file that this version cannot read: unknown major version, another format,
    or malformed content. The message names the file."""

    code = "unsupported_format"


def _major(version: Any, where: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise FormatError(f"{where}: version {version!r} is not MAJOR.MINOR") from None


def stamp(fmt: str, version: str) -> dict[str, str]:
    """The header every file of format `fmt` starts with."""
    return {"format": fmt, "version": version}


def check(d: Any, *, fmt: str, version: str, where: str, legacy_formats: tuple[str, ...] = ()) -> None:
    """Raise FormatError naming `where` unless `d` is a JSON object of format `fmt` with the
    same major version as `version` (a file without "format", or with one of `legacy_formats`
    and no version, is read as version 1.x)."""
    if not isinstance(d, Mapping):
        raise FormatError(f"{where}: expected a JSON object ({fmt}), got {type(d).__name__}")
    found_fmt = d.get("format")
    if found_fmt in legacy_formats and "version" not in d:
        found = "1.0"
    else:
        if found_fmt is not None and found_fmt != fmt:
            raise FormatError(f"{where} is a {found_fmt!r} file, not {fmt!r}")
        found = d.get("version")
        if found is None:
            raise FormatError(f"{where} has no version field (expected {fmt} version {version})")
    if _major(found, where) != _major(version, where):
        raise FormatError(f"{where}: {fmt} version {found} is not supported; this tunesmith reads version "
                          f"{_major(version, where)}.x (written by another tunesmith release?)")


def loads(data: bytes | str, where: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise FormatError(f"{where} is not valid JSON: {exc}") from None


def read_file(path: Path, what: str) -> Any:
    """JSON of a local file; NotFound(field=what) if it is missing, FormatError if malformed."""
    if not path.is_file():
        raise NotFound(f"no {path.name} in {path.parent}", field=what)
    return loads(path.read_text(encoding="utf-8"), str(path))


def write_file(path: Path, obj: Any) -> None:
    """Write JSON to a local (staged) file; the artifact that holds it makes it visible atomically."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_key(storage, key: str, what: str) -> Any:
    """JSON at a storage key; NotFound(field=what) if missing, FormatError if malformed."""
    if not storage.exists(key):
        raise NotFound(f"nothing stored at {key!r}", field=what)
    return loads(storage.read_bytes(key), key)


def artifact_from(d: Any, where: str) -> Artifact:
    """An Artifact from its dict (proto JSON or Artifact.to_dict), with its artifact:// URI."""
    if not isinstance(d, Mapping):
        raise FormatError(f"{where}: artifact reference missing")
    try:
        return normalize_artifact(Artifact(str(d.get("uri", "")), str(d.get("sha256", "")), str(d.get("kind", "")),
                                           int(d.get("size_bytes") or 0)))
    except (InvalidArgument, ValueError) as exc:
        raise FormatError(f"{where}: bad artifact reference {dict(d)!r}: {exc}") from None


def require(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """d[key], checked to be of `kind`; FormatError naming the file and key otherwise."""
    if key not in d:
        raise FormatError(f"{where}: missing {key!r}")
    value, kinds = d[key], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise FormatError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value
