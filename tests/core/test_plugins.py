"""Plugin manager: built-ins through the same hooks, duplicates, allow/block lists, hook docs."""
import inspect
import types
from pathlib import Path

import pytest

from tunesmith.core import hookspecs
from tunesmith.core.errors import NotFound, PluginError
from tunesmith.core.plugins import ALLOW_ENV, BLOCK_ENV, DEFAULT_PLUGINS, PluginRegistry, hookimpl

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "tunesmith_spec")]


def make_plugin(name, **hooks):
    """A real plugin module whose hooks register the given {hook_name: [(name, obj)]}."""
    module = types.ModuleType(name)
    for hook_name, entries in hooks.items():
        def impl(register, _entries=entries):
            for n, obj in _entries:
                register(n, obj)
        impl.__name__ = hook_name
        setattr(module, hook_name, hookimpl(impl))
    return module


def test_builtins_register_through_the_hooks():
    reg = PluginRegistry(entry_points=False)
    assert [p.name for p in reg.plugins] == list(DEFAULT_PLUGINS)
    assert "lora" in reg.names("peft_methods")
    assert {"classification", "chat"} <= set(reg.names("templates"))
    assert "exact_match" in reg.names("benchmarks")
    assert "file" in reg.names("storage_backends")
    assert {"transformers", "vllm"} <= set(reg.names("inference_backends"))
    assert "local" in reg.names("training_executors")
    assert reg.owner("peft_methods", "lora") == "tunesmith_builtin.peft_lora"
    lora = next(p for p in reg.plugins if p.name == "tunesmith_builtin.peft_lora")
    assert lora.hooks == ["register_peft_methods"] and lora.source == "builtin"


def test_third_party_plugin_adds_names():
    plugin = make_plugin("acme", register_benchmarks=[("acme_score", object())])
    reg = PluginRegistry(entry_points=False, extra=[("acme", plugin)])
    assert "acme_score" in reg.names("benchmarks")
    assert reg.owner("benchmarks", "acme_score") == "acme"
    assert {"name": "acme", "version": "", "hooks": ["register_benchmarks"], "source": "extra"} in reg.describe()


def test_duplicate_name_is_an_error_naming_both_plugins():
    plugin = make_plugin("acme", register_peft_methods=[("lora", object())])
    with pytest.raises(PluginError) as err:
        PluginRegistry(entry_points=False, extra=[("acme", plugin)])
    msg = str(err.value)
    assert "'lora'" in msg and "tunesmith_builtin.peft_lora" in msg and "'acme'" in msg


def test_block_list_resolves_a_duplicate(monkeypatch):
    plugin = make_plugin("acme", register_peft_methods=[("lora", "acme-lora")])
    monkeypatch.setenv(BLOCK_ENV, "tunesmith_builtin.peft_lora")
    reg = PluginRegistry(entry_points=False, extra=[("acme", plugin)])
    assert reg.get("peft_methods", "lora") == "acme-lora"
    assert "tunesmith_builtin.peft_lora" not in [p.name for p in reg.plugins]


def test_allow_list_loads_only_named_plugins(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "tunesmith_builtin.storage_local, tunesmith_builtin.benchmarks")
    reg = PluginRegistry(entry_points=False)
    assert [p.name for p in reg.plugins] == ["tunesmith_builtin.benchmarks", "tunesmith_builtin.storage_local"]
    assert reg.names("peft_methods") == []
    with pytest.raises(NotFound, match="no peft method named 'lora'"):
        reg.get("peft_methods", "lora")


def test_broken_plugin_names_itself():
    def boom(register):
        raise RuntimeError("kaput")
    boom.__name__ = "register_templates"
    module = types.ModuleType("broken")
    module.register_templates = hookimpl(boom)
    with pytest.raises(PluginError, match="plugin 'broken' failed in register_templates: kaput"):
        PluginRegistry(entry_points=False, extra=[("broken", module)])


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    """A real distribution on sys.path with an entry point in group 'tunesmith'."""
    pkg = tmp_path / "acme_plugin.py"
    pkg.write_text(
        "from tunesmith.core.plugins import hookimpl\n"
        "@hookimpl\n"
        "def register_templates(register):\n"
        "    register('acme_tpl', object())\n")
    dist = tmp_path / "acme_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[tunesmith]\nacme = acme_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = PluginRegistry()
    assert "acme_tpl" in reg.names("templates")
    assert {"name": "acme", "version": "1.2.3", "hooks": ["register_templates"], "source": "entrypoint"} in reg.describe()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "register(" in doc, f"{hook}: say how to call register"
    assert "Called by" in doc, f"{hook}: say which service calls it"
    assert "Collect-all" in doc or "first-result" in doc.lower(), f"{hook}: say collect-all or first-result"
    assert hook in hookspecs.REGISTRY_KINDS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    """Some test other than this generic file implements or exercises each hook."""
    tests = Path(__file__).resolve().parents[1]
    mentioned = [p for p in tests.rglob("test_*.py") if p.name != "test_plugins.py" and hook in p.read_text()]
    kind = hookspecs.REGISTRY_KINDS[hook]
    used = [p for p in tests.rglob("test_*.py") if p.name != "test_plugins.py" and f'"{kind}"' in p.read_text()]
    assert mentioned or used, f"no test exercises hook {hook} (registry kind {kind!r})"
