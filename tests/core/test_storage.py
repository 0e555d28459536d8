"""Shared storage: atomic writes, content addressing, key validation."""
import json
import signal
import subprocess
import sys

import pytest

from tunesmith.core.errors import InvalidArgument, NotFound, StorageKeyError
from tunesmith.core.storage import Artifact, LocalStorage, normalize_artifact, validate_key


@pytest.mark.parametrize("key", ["../etc/passwd", "/etc/passwd", "a/../../b", "a/./b", "a//b", "", "a\\b", "a\x00b"])
def test_bad_keys_are_rejected(tmp_path, key):
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageKeyError) as err:
        storage.write_bytes(key, b"x")
    assert err.value.field == "key"
    assert not (tmp_path.parent / "passwd").exists()


def test_symlink_escape_is_rejected(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    storage = LocalStorage(root)
    (root / "link").symlink_to(outside)
    with pytest.raises(StorageKeyError, match="outside the storage root"):
        storage.write_bytes("link/file", b"x")
    assert not (outside / "file").exists()


def test_good_keys_normalise():
    assert validate_key("records/jobs/x.json") == "records/jobs/x.json"


def test_artifact_is_content_addressed_and_verifiable(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x01" * 1000)
    (src / "sub").mkdir()
    (src / "sub" / "config.json").write_text("{}")
    a = storage.put_artifact("model", src)
    b = storage.put_artifact("model", src)
    assert a == b and a.size_bytes == 1002
    assert storage.verify(a)
    manifest = json.loads((storage.local_path(a.uri) / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"weights.bin", "sub/config.json"}
    (storage.local_path(a.uri) / "weights.bin").write_bytes(b"tampered")
    assert not storage.verify(a)


def _model_folder(tmp_path):
    src = tmp_path / "model"
    src.mkdir(exist_ok=True)
    (src / "weights.bin").write_bytes(b"\x02" * 64)
    return src


def test_artifact_uris_are_storage_relative(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    a = storage.put_artifact("model", _model_folder(tmp_path))
    assert a.uri == f"artifact://model/{a.sha256}"
    assert storage.key_of(a.uri) == f"artifacts/model/{a.sha256}"
    folder = storage.resolve(a.uri)
    assert folder == storage.root / "artifacts" / "model" / a.sha256
    assert (folder / "weights.bin").read_bytes() == b"\x02" * 64
    assert storage.artifact(a.uri) == a
    assert storage.list_artifacts() == [a]
    assert str(storage.root) not in (folder / "MANIFEST.json").read_text()
    # Local tools may name it by file:// URI or absolute path inside the root: converted.
    for local in (folder.as_uri(), str(folder)):
        assert storage.artifact(local) == a
        assert storage.resolve(local) == folder
        assert storage.key_of(local) == f"artifacts/model/{a.sha256}"


@pytest.mark.parametrize("bad", [
    "", "relative/path", "/etc", "file:///etc", "s3://bucket/key", "artifact://model/abc",
    "artifact://model/../../etc", f"artifact://../{'a' * 64}", f"artifact://model/{'a' * 64}/extra",
    f"artifact://model/{'A' * 64}", f"artifact:///{'a' * 64}"])
def test_uris_outside_the_root_or_malformed_are_invalid(tmp_path, bad):
    storage = LocalStorage(tmp_path / "store")
    for call in (storage.key_of, storage.local_path, storage.resolve, storage.artifact):
        with pytest.raises(InvalidArgument) as err:
            call(bad)
        assert err.value.field == "uri"


def test_missing_artifacts_are_not_found_and_do_not_verify(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    missing = f"artifact://model/{'0' * 64}"
    with pytest.raises(NotFound):
        storage.resolve(missing)
    assert not storage.verify(Artifact(missing, "0" * 64, "model", 0))
    assert not storage.verify(Artifact("file:///etc", "0" * 64, "model", 0))
    storage.write_bytes("records/x/1.json", b"{}")
    with pytest.raises(NotFound):
        storage.artifact(str(storage.path("records/x")))  # inside the root but not an artifact


def test_artifacts_resolve_after_the_root_is_moved(tmp_path):
    import os

    old = tmp_path / "old"
    a = LocalStorage(old).put_artifact("model", _model_folder(tmp_path))
    os.rename(old, tmp_path / "new")
    moved = LocalStorage(tmp_path / "new")
    assert moved.verify(a) and moved.artifact(a.uri) == a
    assert moved.resolve(a.uri) == (tmp_path / "new").resolve() / "artifacts" / "model" / a.sha256


def test_legacy_file_references_normalise_to_artifact_uris():
    sha = "b" * 64
    legacy = Artifact(f"file:///old/root/artifacts/adapter/{sha}", sha, "adapter", 3)
    assert normalize_artifact(legacy) == Artifact(f"artifact://adapter/{sha}", sha, "adapter", 3)
    with pytest.raises(InvalidArgument):
        normalize_artifact(Artifact(f"artifact://model/{sha}", sha, "adapter", 3))  # disagrees with its kind


def test_records_replace_atomically(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write_json("records/x/1.json", {"v": 1})
    storage.write_json("records/x/1.json", {"v": 2})
    assert storage.read_json("records/x/1.json") == {"v": 2}
    assert list((tmp_path / ".tmp").iterdir()) == []


WRITER = r"""
import os, sys, time, shutil
from pathlib import Path
from tunesmith.core import storage as storage_mod
storage = storage_mod.LocalStorage(sys.argv[1])
src = Path(sys.argv[2])

def copy_then_hang(s, d, *a, **k):
    # Write half of the folder's file, then stall: the kill lands mid-write.
    os.makedirs(d)
    data = (Path(s) / "data.bin").read_bytes()
    with open(Path(d) / "data.bin", "wb") as fo:
        fo.write(data[: len(data) // 2]); fo.flush()
    print("writing", flush=True)
    time.sleep(60)
shutil.copytree = copy_then_hang
if sys.argv[3] == "artifact":
    storage.put_artifact("dataset", src)
else:
    real_replace = os.replace
    def hang(*a, **k):
        print("writing", flush=True); time.sleep(60)
    storage_mod.os.replace = hang
    storage.write_bytes("records/x/1.json", b"{}")
"""


def _kill_mid_write(root, src, what):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(src), what], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_record_writer_killed_leaves_old_or_nothing(tmp_path):
    root = tmp_path / "store"
    _kill_mid_write(root, tmp_path, "record")
    assert not LocalStorage(root).exists("records/x/1.json")


def test_writer_killed_mid_write_leaves_no_visible_artifact(tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    (src / "data.bin").write_bytes(b"\x07" * (1 << 20))
    root = tmp_path / "store"
    _kill_mid_write(root, src, "artifact")
    storage = LocalStorage(root)
    assert storage.list_artifacts() == []
    assert not (root / "artifacts" / "dataset").exists() or not any((root / "artifacts" / "dataset").iterdir())
    leftovers = list((root / ".tmp").iterdir())
    assert leftovers, "the killed writer's partial data should sit in staging"
    assert storage.clean_staging(older_than_seconds=0) == len(leftovers)
    # A later complete write of the same content succeeds.
    art = storage.put_artifact("dataset", src)
    assert storage.verify(art)


def test_open_storage_picks_the_backend_by_scheme(tmp_path):
    """register_storage_backends: the "file" scheme comes from the built-in plugin."""
    from tunesmith.core.plugins import PluginRegistry
    from tunesmith.core.storage import open_storage

    registry = PluginRegistry(("tunesmith_builtin.storage_local",), entry_points=False)
    assert registry.names("storage_backends") == ["file"]
    storage = open_storage(tmp_path.as_uri(), registry)
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path.resolve()
    with pytest.raises(Exception, match="no storage backend named 's3'"):
        open_storage("s3://bucket/prefix", registry)
