"""The SDK installs on its own (grpcio + protobuf only) and imports fast without torch.

Creates a fresh venv, `pip install clients/python` into it (from PyPI, or pip's cache), then
checks what got installed and what importing `tunesmith.client` pulls in.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "clients" / "python"

HEAVY = ("torch", "transformers", "vllm", "peft", "accelerate")
# Top-level names and packages that importing the SDK must not load (nor their submodules).
FORBIDDEN_MODULES = (
    "torch", "transformers", "vllm", "tunesmith.core", "tunesmith.data", "tunesmith.trainer",
    "tunesmith.evaluator", "tunesmith.inference", "tunesmith.cli",
)
NETWORK_ERRORS = (
    "NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
    "Max retries exceeded", "ConnectTimeoutError", "No matching distribution found",
)

PROBE = """
import json, sys
import tunesmith.client
from tunesmith.client import Tunesmith, DataClient, connect
Tunesmith.local().close()
print(json.dumps({"modules": sorted(sys.modules), "file": tunesmith.client.__file__}))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def _run(args: list, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(300)
def test_sdk_installs_alone_and_imports_fast_without_torch(tmp_path):
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv], tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    # Install from a copy: pip builds in-tree, and its build/ and *.egg-info folders must not
    # land in the source tree that others work in.
    source = tmp_path / "sdk"
    shutil.copytree(SDK, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    installed = _run([python, "-m", "pip", "install", "--quiet", source], tmp_path)
    if installed.returncode != 0 and any(marker in installed.stderr for marker in NETWORK_ERRORS):
        pytest.skip(f"PyPI not reachable: {installed.stderr.strip().splitlines()[-1]}")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    listing = _run([python, "-m", "pip", "list", "--format=json"], tmp_path)
    assert listing.returncode == 0, listing.stderr
    packages = {p["name"].lower() for p in json.loads(listing.stdout)}
    assert "tunesmith-client" in packages
    assert {"grpcio", "protobuf"} <= packages
    assert not packages & set(HEAVY), f"heavy packages installed: {sorted(packages & set(HEAVY))}"
    assert "tunesmith" not in packages  # the services package did not come along

    # Import time: the second of two runs (the first compiles .pyc files).
    durations = []
    for _ in range(2):
        started = time.perf_counter()
        probe = _run([python, "-c", "import tunesmith.client"], tmp_path, timeout=60)
        durations.append(time.perf_counter() - started)
        assert probe.returncode == 0, probe.stderr
    assert durations[1] < 1.0, f"`import tunesmith.client` took {durations[1]:.2f}s (runs: {durations})"

    probe = _run([python, "-c", PROBE], tmp_path, timeout=60)
    assert probe.returncode == 0, probe.stderr
    result = json.loads(probe.stdout)
    assert Path(result["file"]).resolve().is_relative_to(venv.resolve()), result["file"]  # not the repo
    loaded = [
        m for m in result["modules"]
        if any(m == name or m.startswith(name + ".") for name in FORBIDDEN_MODULES)
    ]
    assert not loaded, f"importing tunesmith.client loaded {loaded}"

    core = _run([python, "-c", "import tunesmith.core"], tmp_path, timeout=60)
    assert core.returncode != 0 and "ModuleNotFoundError" in core.stderr
