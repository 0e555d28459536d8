"""A third-party plugin package, found through its entry point, keeps the same contracts.

tests/fixtures/acme_plugin/ is what `pip install acme-tunesmith-plugin` would leave in
site-packages: the module acme_tunesmith_plugin (written against the documented Protocols alone)
and its dist-info (METADATA, entry_points.txt with `[tunesmith] acme = acme_tunesmith_plugin`).
tests/fixtures/broken_plugin/ is one whose benchmark lacks score(). Each folder is on sys.path
only inside the tests that ask for it, so no other test sees these plugins.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

import pytest

from tunesmith.core.errors import PluginError
from tunesmith.core.plugins import PluginRegistry
from tunesmith.testing.contracts import check_plugin, registered_cases

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ACME_ENTRIES = [("benchmarks", "acme_contains"), ("peft_methods", "acme_ia3"), ("templates", "acme_qa")]
#: The dataset schemas acme_qa is written for (it reads input/output or prompt/completion).
ACME_QA_SCHEMAS = ["classification", "prompt_completion"]
needs_torch = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")),
    reason="torch, transformers and peft are needed for the PEFT method and the pipeline")


@pytest.fixture
def install(monkeypatch):
    """install(folder, module): put tests/fixtures/<folder> on sys.path, as if pip-installed."""
    modules: list[str] = []

    def _install(folder: str, module: str) -> None:
        monkeypatch.syspath_prepend(str(FIXTURES / folder))
        importlib.invalidate_caches()
        modules.append(module)

    yield _install
    for module in modules:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


@pytest.fixture
def acme(install):
    install("acme_plugin", "acme_tunesmith_plugin")
    return PluginRegistry()


def test_fixture_plugins_are_invisible_unless_installed():
    assert not [ep for ep in md.entry_points(group="tunesmith") if ep.name in ("acme", "broken")]
    assert not {"acme", "broken"} & {p.name for p in PluginRegistry().plugins}


def test_acme_is_loaded_from_its_entry_point_with_its_version(acme):
    info = next(p for p in acme.describe() if p["name"] == "acme")
    assert info == {"name": "acme", "version": "1.0", "source": "entrypoint",
                    "hooks": ["register_benchmarks", "register_peft_methods", "register_templates"]}
    assert sorted((c.kind, c.name) for c in registered_cases(acme, plugin="acme")) == ACME_ENTRIES
    assert "lora" in acme.names("peft_methods")  # the built-ins load alongside it


def test_acme_is_written_against_the_protocols_alone():
    """It imports nothing from tunesmith but the error type the contracts name."""
    source = (FIXTURES / "acme_plugin" / "acme_tunesmith_plugin.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert {m for m in imported if m.split(".")[0] == "tunesmith"} == {"tunesmith.core.errors"}
    assert "pluggy" in imported


@pytest.mark.parametrize("kind, name", ACME_ENTRIES, ids=[f"{k}:{n}" for k, n in ACME_ENTRIES])
def test_acme_plugins_pass_the_shared_contract_checks(acme, kind, name, tmp_path):
    if kind == "peft_methods" and any(importlib.util.find_spec(m) is None for m in ("torch", "peft")):
        pytest.skip("torch and peft are needed to apply a PEFT method")
    case = next(c for c in registered_cases(acme, plugin="acme") if (c.kind, c.name) == (kind, name))
    check_plugin(case, tmp_path, schemas=ACME_QA_SCHEMAS)


@needs_torch
def test_acme_plugins_run_in_the_services_own_pipeline(acme, tiny_model_dir, tmp_path):
    """The data pipeline renders with acme_qa, the trainer trains acme_ia3 and merges it, the
    transformers backend serves the merged model, and acme_contains scores its answers."""
    from tunesmith.data.prepare import PrepareSpec, render_rows
    from tunesmith.trainer.merge import merge_adapter
    from tunesmith.trainer.sft import train_sft

    rows = [(i, {"question": q, "answer": a}) for i, (q, a) in enumerate(
        [("where is my card", "card_arrival"), ("change my pin", "change_pin")] * 4, start=1)]
    spec = PrepareSpec(schema="classification", template="acme_qa", template_options={"question_label": "Ask"},
                       column_mapping={"input": "question", "output": "answer"})
    rendered = render_rows(rows, spec, source="acme.csv", templates=acme.all("templates"),
                           columns=["question", "answer"])
    assert rendered[0]["prompt"] == "Ask: where is my card\nA:" and rendered[0]["completion"] == " card_arrival"

    method = acme.get("peft_methods", "acme_ia3")
    result = train_sft(model_path=tiny_model_dir, train_rows=[{"prompt": r["prompt"], "completion": r["completion"]}
                                                              for r in rendered],
                       validation_rows=None, method=method, method_options={}, output_dir=tmp_path / "train",
                       hp={"epochs": 1, "batch_size": 4, "learning_rate": 1e-2, "device": "cpu"})
    assert 0 < result["trainable_parameters"] < result["total_parameters"]
    assert (Path(result["adapter_dir"]) / "adapter_config.json").is_file()
    merged = merge_adapter(tiny_model_dir, result["adapter_dir"], tmp_path / "merged")

    model = acme.get("inference_backends", "transformers").load(str(merged), dtype="float32")
    try:
        from tunesmith.core.contracts import Sampling

        answers = [g.text for g in model.generate([r["prompt"] for r in rendered[:2]], Sampling(max_new_tokens=4))]
    finally:
        model.close()
    from tunesmith.core.contracts import EvalRow

    bench = acme.get("benchmarks", "acme_contains")
    stats = bench.score_rows([EvalRow(prompt=r["prompt"], reference=ref, prediction=answer) for r, answer, ref
                              in zip(rendered[:2], answers, ["card_arrival", "change_pin"])], {})
    assert len(stats) == 2 and set(bench.aggregate(stats, {})) == {"contains"}


def test_a_plugin_missing_a_member_is_refused_at_load(install):
    install("broken_plugin", "broken_tunesmith_plugin")
    assert "broken" in {ep.name for ep in md.entry_points(group="tunesmith")}
    with pytest.raises(PluginError) as info:
        PluginRegistry()
    message = str(info.value)
    assert message.startswith("plugin 'broken' registered benchmarks entry 'scoreless' which lacks ")
    assert "score_rows" in message and "aggregate" in message
    assert "tunesmith.core.contracts.Benchmark" in message


def test_the_readme_example_plugin_passes_the_checks():
    """The template in README's "Writing a plugin" is a working plugin, not just an illustration."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Writing a plugin"):]
    start = section.index("# acme_tunesmith/plugin.py")
    code = section[start:section.index("```", start)]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    module = type(sys)("readme_plugin")
    module.__dict__.update(namespace)
    registry = PluginRegistry(builtins=(), entry_points=False, extra=[("readme", module)])
    (case,) = registered_cases(registry, plugin="readme")
    check_plugin(case, "unused")
