"""Shared storage: one layer every service uses to read and write artifacts and records.

Layout under the root (TUNESMITH_HOME, default ~/.tunesmith, or any URI whose
scheme has a storage-backend plugin):

    artifacts/<kind>/<sha256>/...   immutable, content-addressed folders with a MANIFEST.json
    records/<collection>/<id>.json  small mutable records (datasets, jobs), replaced atomically
    jobs/<id>/...                   a job's working files (events log, worker log)
    models/<name>.json              model-store entries pointing at model artifacts
    .tmp/                           staging; never visible as an artifact

Artifact URIs are storage-relative: ``artifact://<kind>/<sha256>`` names the folder at the key
``artifacts/<kind>/<sha256>`` in whichever root a reader opens, so a root can be copied or moved
(or mounted at another path) and every reference still resolves. Records and worker files hold
only such URIs. ``resolve(uri)`` is the one way to get a readable local folder for an artifact.
For local tools a ``file://`` URI or an absolute path inside the root is accepted too and
converted; anything outside the root is InvalidArgument.

Contracts:
- Keys are relative POSIX paths. Absolute paths, '..', backslashes, empty parts and anything
  resolving outside the root raise StorageKeyError naming the key.
- Every write is atomic: written under .tmp/ and renamed into place, so a reader never sees a
  half-written file or artifact, and a writer killed mid-write leaves no visible artifact.
- An artifact's sha256 is the sha256 of its MANIFEST.json's canonical "files" listing (path,
  size and sha256 of every file), so equal content gives an equal id. Artifacts never change.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from tunesmith.core.errors import InvalidArgument, NotFound, StorageKeyError

MANIFEST = "MANIFEST.json"
HOME_ENV = "TUNESMITH_HOME"
ARTIFACT_SCHEME = "artifact"
ARTIFACTS_PREFIX = "artifacts"
_CHUNK = 1 << 20
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def default_root() -> str:
    return os.environ.get(HOME_ENV) or str(Path.home() / ".tunesmith")


@dataclass(frozen=True)
class Artifact:
    """A stored artifact; mirrors tunesmith.api.common.v1.ArtifactRef.

    uri is storage-relative, artifact://<kind>/<sha256> (see the module docstring).
    """

    uri: str
    sha256: str
    kind: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "kind": self.kind, "size_bytes": self.size_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Artifact":
        return cls(d["uri"], d["sha256"], d["kind"], int(d.get("size_bytes", 0)))


def validate_kind(kind: str) -> str:
    """Return `kind` if it is a usable artifact kind (one path segment: letters, digits, . _ -)."""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise InvalidArgument(f"bad artifact kind {kind!r}: use letters, digits, '.', '_' or '-'", field="kind")
    return kind


def artifact_uri(kind: str, sha256: str) -> str:
    """The storage-relative URI of an artifact: artifact://<kind>/<sha256>."""
    validate_kind(kind)
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise InvalidArgument(f"bad artifact sha256 {sha256!r}: 64 lowercase hex digits expected", field="sha256")
    return f"{ARTIFACT_SCHEME}://{kind}/{sha256}"


def is_artifact_uri(uri: str) -> bool:
    return isinstance(uri, str) and uri.startswith(f"{ARTIFACT_SCHEME}://")


def parse_artifact_uri(uri: str) -> tuple[str, str]:
    """(kind, sha256) of an artifact:// URI; InvalidArgument(field="uri") if it is malformed."""
    if not is_artifact_uri(uri):
        raise InvalidArgument(f"{uri!r} is not an artifact URI (artifact://<kind>/<sha256>)", field="uri")
    parts = uri[len(ARTIFACT_SCHEME) + 3:].split("/")
    if len(parts) != 2 or not _KIND_RE.match(parts[0]) or not _SHA256_RE.match(parts[1]):
        raise InvalidArgument(f"malformed artifact URI {uri!r}: expected artifact://<kind>/<64 hex sha256>",
                              field="uri")
    return parts[0], parts[1]


def artifact_key(uri: str) -> str:
    """The storage key of an artifact:// URI: artifacts/<kind>/<sha256>."""
    kind, sha256 = parse_artifact_uri(uri)
    return f"{ARTIFACTS_PREFIX}/{kind}/{sha256}"


def normalize_artifact(a: Artifact) -> Artifact:
    """`a` with its storage-relative URI. A legacy reference (a file:// URI or a path, from before
    artifact:// URIs) is rebuilt from its kind and sha256, which name the artifact in any root.
    InvalidArgument if the URI disagrees with the kind or sha256, or nothing names the artifact."""
    if is_artifact_uri(a.uri):
        kind, sha256 = parse_artifact_uri(a.uri)
        if (a.kind and a.kind != kind) or (a.sha256 and a.sha256 != sha256):
            raise InvalidArgument(f"artifact reference {a.uri} disagrees with its kind {a.kind!r} or sha256 "
                                  f"{a.sha256[:12]!r}", field="uri")
        return Artifact(a.uri, sha256, kind, a.size_bytes)
    return Artifact(artifact_uri(a.kind, a.sha256), a.sha256, a.kind, a.size_bytes)


def validate_key(key: str) -> str:
    """Return the normalised key, or raise StorageKeyError saying what is wrong with it."""
    if not isinstance(key, str) or not key:
        raise StorageKeyError("storage key is empty", field="key")
    if "\x00" in key or "\\" in key:
        raise StorageKeyError(f"storage key {key!r} contains a NUL or backslash", field="key")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise StorageKeyError(f"storage key {key!r} is absolute; keys are relative to the storage root", field="key")
    parts = PurePosixPath(key).parts
    if any(p in ("..", ".") for p in key.split("/")):
        raise StorageKeyError(f"storage key {key!r} contains '.' or '..'", field="key")
    if any(p == "" for p in key.rstrip("/").split("/")):
        raise StorageKeyError(f"storage key {key!r} has an empty path segment", field="key")
    return "/".join(parts)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def build_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a folder: every file (but the manifest) with its size and sha256."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not (p.parent == folder and p.name == MANIFEST):
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return {"files": files}


def manifest_digest(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalStorage:
    """Shared storage on a local (or shared-volume) folder."""

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str]):
        root_str = str(root)
        if root_str.startswith("file://"):
            root_str = unquote(urlparse(root_str).path)
        self.root = Path(root_str).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".tmp").mkdir(exist_ok=True)

    # -- keys and paths ---------------------------------------------------------------------
    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def path(self, key: str) -> Path:
        """Local path of a key; raises StorageKeyError if it would escape the root."""
        key = validate_key(key)
        p = (self.root / key).resolve()
        if p != self.root and self.root not in p.parents:
            raise StorageKeyError(f"storage key {key!r} resolves outside the storage root", field="key")
        return p

    def uri(self, key: str) -> str:
        """The local file:// URI of a key (for people and local tools; records hold artifact://)."""
        return self.path(key).as_uri()

    def key_of(self, uri: str) -> str:
        """The key of an artifact:// URI (artifacts/<kind>/<sha256>), or of a file:// URI or
        absolute path inside this root; InvalidArgument(field="uri") otherwise."""
        if not isinstance(uri, str) or not uri:
            raise InvalidArgument("artifact URI is empty", field="uri")
        if is_artifact_uri(uri):
            return artifact_key(uri)
        if "://" in uri and not uri.startswith("file://"):
            raise InvalidArgument(f"{uri!r}: unsupported URI scheme (use artifact://<kind>/<sha256>)", field="uri")
        raw = unquote(urlparse(uri).path) if uri.startswith("file://") else uri
        if not os.path.isabs(raw):
            raise InvalidArgument(f"{uri!r} is neither an artifact:// URI nor an absolute path", field="uri")
        path = Path(raw).resolve()
        if self.root not in path.parents:
            raise InvalidArgument(f"{uri!r} is not inside storage root {self.root_uri}", field="uri")
        return path.relative_to(self.root).as_posix()

    def local_path(self, uri: str) -> Path:
        """The local path of `uri` (artifact://, or a file:// URI or path inside the root); it
        need not exist. To read an artifact use resolve(), which checks that it is there."""
        return self.path(self.key_of(uri))

    def resolve(self, uri: str) -> Path:
        """A readable local folder holding the artifact `uri` (here: the folder in place).

        NotFound if no complete artifact is stored there. Treat the folder as read-only."""
        folder = self.local_path(uri)
        if not (folder / MANIFEST).is_file():
            raise NotFound(f"no artifact {uri} in storage {self.root_uri}", field="uri")
        return folder

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A fresh private folder under .tmp/, removed afterwards whatever happens."""
        tmp = self.root / ".tmp" / uuid.uuid4().hex
        tmp.mkdir(parents=True)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- small files and records ------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomically create or replace the file at `key`."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / ".tmp" / f"{uuid.uuid4().hex}.part"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)

    def read_bytes(self, key: str) -> bytes:
        p = self.path(key)
        if not p.is_file():
            raise NotFound(f"nothing stored at {key!r}", field="key")
        return p.read_bytes()

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def append_line(self, key: str, line: str) -> None:
        """Append one line to a log file (event logs). Lines are written whole with O_APPEND."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode())
        finally:
            os.close(fd)

    def list(self, prefix: str) -> list[str]:
        """Keys of the files directly inside folder `prefix` (sorted)."""
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(f"{validate_key(prefix)}/{p.name}" for p in folder.iterdir() if not p.name.startswith("."))

    def delete(self, key: str) -> None:
        p = self.path(key)
        if p.is_dir():
            # Rename first so a half-deleted folder is never visible under its key.
            trash = self.root / ".tmp" / f"{uuid.uuid4().hex}.deleted"
            os.replace(p, trash)
            shutil.rmtree(trash, ignore_errors=True)
        elif p.exists():
            p.unlink()

    # -- artifacts --------------------------------------------------------------------------
    def put_artifact(self, kind: str, source: str | os.PathLike[str], *, move: bool = False) -> Artifact:
        """Store a file or folder as an immutable artifact of `kind`; return its reference.

        A single file is stored as a folder holding that file. With move=True the source folder
        is moved instead of copied (it must be on the same filesystem, e.g. a staging_dir()).
        Storing equal content twice returns the same artifact.
        """
        validate_kind(kind)
        src = Path(source)
        if not src.exists():
            raise NotFound(f"cannot store {src}: it does not exist", field="source")
        stage = self.root / ".tmp" / f"{uuid.uuid4().hex}.artifact"
        try:
            if src.is_dir():
                if move:
                    os.replace(src, stage)
                else:
                    shutil.copytree(src, stage)
            else:
                stage.mkdir()
                (shutil.move if move else shutil.copy2)(str(src), str(stage / src.name))
            (stage / MANIFEST).unlink(missing_ok=True)
            manifest = build_manifest(stage)
            digest = manifest_digest(manifest)
            size = sum(f["size"] for f in manifest["files"].values())
            manifest.update({"kind": kind, "sha256": digest, "created_at": time.time()})
            (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            for p in stage.rglob("*"):
                if p.is_file():
                    with open(p, "rb+") as f:
                        os.fsync(f.fileno())
            dest = self.path(f"{ARTIFACTS_PREFIX}/{kind}/{digest}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(stage, dest)  # atomic; fails if dest exists (same content stored)
            except OSError:
                if not (dest / MANIFEST).exists():
                    raise
            _fsync_dir(dest.parent)
            return Artifact(artifact_uri(kind, digest), digest, kind, size)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def artifact(self, uri: str) -> Artifact:
        """The reference (with its artifact:// URI) of a stored artifact, read from its manifest.
        `uri` may also be a file:// URI or path of the artifact's folder inside this root."""
        key = self.key_of(uri)
        folder = self.path(key)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise NotFound(f"no artifact at {uri}", field="uri")
        m = json.loads(manifest_path.read_text())
        if key != f"{ARTIFACTS_PREFIX}/{m.get('kind')}/{m.get('sha256')}":
            raise NotFound(f"{uri} is not a stored artifact (artifacts live at "
                           f"{ARTIFACTS_PREFIX}/<kind>/<sha256>)", field="uri")
        size = sum(f["size"] for f in m["files"].values())
        return Artifact(artifact_uri(m["kind"], m["sha256"]), m["sha256"], m["kind"], size)

    def verify(self, ref: Artifact) -> bool:
        """True if the artifact at ref.uri exists and its content hashes to ref.sha256."""
        try:
            folder = self.local_path(ref.uri)
        except InvalidArgument:
            return False
        if not (folder / MANIFEST).is_file():
            return False
        return manifest_digest(build_manifest(folder)) == ref.sha256

    def list_artifacts(self, kind: str | None = None) -> list[Artifact]:
        base = self.root / ARTIFACTS_PREFIX
        kinds = [kind] if kind else sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        found = []
        for k in kinds:
            for folder in sorted((base / k).glob("*")) if (base / k).is_dir() else []:
                if (folder / MANIFEST).is_file() and _KIND_RE.match(k) and _SHA256_RE.match(folder.name):
                    found.append(self.artifact(artifact_uri(k, folder.name)))
        return found

    def clean_staging(self, older_than_seconds: float = 3600) -> int:
        """Remove staging leftovers of killed writers; returns how many were removed."""
        now, removed = time.time(), 0
        for p in (self.root / ".tmp").iterdir():
            if now - p.stat().st_mtime > older_than_seconds:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed += 1
        return removed


def open_storage(root: str | None = None, registry=None) -> LocalStorage:
    """Open shared storage at `root` (default TUNESMITH_HOME), choosing the backend by scheme
    among the registered storage-backend plugins (of `registry`, default the process-wide one)."""
    root = root or default_root()
    scheme = urlparse(root).scheme if "://" in root else "file"
    if registry is None:
        from tunesmith.core.plugins import get_registry

        registry = get_registry()
    return registry.get("storage_backends", scheme)(root)


_FALLBACK_LOCK = threading.RLock()


@contextlib.contextmanager
def file_lock(path: Path):
    """Serialise a critical section across threads and processes sharing a POSIX filesystem:
    flock on the lock file `path` (created with its folder), one open file per caller so threads
    block each other too. Without fcntl only the threads of this process are serialised (atomic
    writes still keep each document whole)."""
    try:
        import fcntl
    except ImportError:
        with _FALLBACK_LOCK:
            yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
