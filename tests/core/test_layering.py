"""Services share storage, not code: core imports no service's protos and no SDK; the trainer
worker and the evaluator read datasets through tunesmith.core.formats, not tunesmith.data."""
from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tunesmith.core

SERVICES = Path(__file__).resolve().parents[2] / "services" / "tunesmith"
FORBIDDEN_IN_CORE = ("tunesmith.api.data", "tunesmith.api.trainer", "tunesmith.api.evaluator",
                     "tunesmith.api.inference", "tunesmith.client")
HEAVY = ("torch", "transformers", "peft", "google.protobuf")
EXEMPT = {"tunesmith.core.server"}  # being moved off the SDK separately

CORE_MODULES = sorted(m.name for m in pkgutil.walk_packages(tunesmith.core.__path__, "tunesmith.core.")
                      if m.name not in EXEMPT)

CHECK = r"""
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _loaded_by(module: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_core_modules_are_found():
    assert {"tunesmith.core.storage", "tunesmith.core.runtime", "tunesmith.core.formats.dataset",
            "tunesmith.core.formats.worker"} <= set(CORE_MODULES)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_importing_a_core_module_loads_no_service_protos_or_sdk(module):
    loaded = _loaded_by(module)
    assert [m for m in loaded if _matches(m, FORBIDDEN_IN_CORE)] == []
    if module.startswith("tunesmith.core.formats"):
        assert [m for m in loaded if _matches(m, HEAVY)] == [], "formats must stay stdlib + core only"


def _imports(path: Path) -> set[str]:
    """Every module an import statement in `path` names, at any depth (function bodies too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_import_scan_sees_nested_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from tunesmith.data.prepare import read_split\n    import tunesmith.client\n")
    assert {"tunesmith.data.prepare", "tunesmith.client"} <= _imports(probe)


@pytest.mark.parametrize("path", sorted(p for p in (SERVICES / "core").rglob("*.py") if p.name != "server.py"),
                         ids=lambda p: str(p.relative_to(SERVICES)))
def test_core_source_never_imports_service_protos_or_sdk(path):
    assert sorted(n for n in _imports(path) if _matches(n, FORBIDDEN_IN_CORE)) == []


@pytest.mark.parametrize("path", [SERVICES / "trainer" / "worker.py", *sorted((SERVICES / "evaluator").glob("*.py"))],
                         ids=lambda p: str(p.relative_to(SERVICES)))
def test_trainer_worker_and_evaluator_never_import_the_data_service(path):
    assert sorted(n for n in _imports(path) if _matches(n, ("tunesmith.data",))) == []
