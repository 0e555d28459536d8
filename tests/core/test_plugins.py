"""Plugin manager: built-ins through the same hooks, duplicates, allow/block lists, hook docs,
and every registration checked against its kind's Protocol."""
import inspect
import types
from pathlib import Path

import pytest

from tunesmith.core import contracts, hookspecs
from tunesmith.core.errors import NotFound, PluginError
from tunesmith.core.plugins import ALLOW_ENV, BLOCK_ENV, DEFAULT_PLUGINS, KIND_PROTOCOLS, PluginRegistry, hookimpl

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "tunesmith_spec")]


class Score:
    """A minimal Benchmark (the Protocol's members and nothing else)."""

    description = "always half"
    needs = "generation"
    requires = frozenset()
    metrics = (contracts.MetricSpec("half", "mean"),)

    def __init__(self, name="acme_score"):
        self.name = name

    def validate_options(self, options):
        pass

    def requests(self, row, options):
        return []

    def score_rows(self, rows, options):
        return [{"half": 0.5} for _ in rows]

    def aggregate(self, stats, options):
        return {"half": 0.5}


class Method:
    """A minimal PeftMethod."""

    supports_merge = False
    servable_by_vllm = False
    quantized_base = False
    artifact_kind = "adapter"
    prompt_learning = False

    def __init__(self, name="lora"):
        self.name = name

    def validate(self, options):
        return dict(options)

    def load_kwargs(self, options, device):
        return {}

    def apply(self, model, options):
        return model

    def parameter_counts(self, model):
        return 0, 0

    def save(self, model, folder):
        pass


class Template:
    """A minimal PromptTemplate."""

    name, description, needs_tokenizer = "acme_tpl", "input as is", False

    def validate_options(self, options):
        return None

    def render(self, fields, options, tokenizer):
        return contracts.RenderedExample(prompt=fields["input"], completion=fields["output"])


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
    plugin = make_plugin("acme", register_benchmarks=[("acme_score", Score())])
    reg = PluginRegistry(entry_points=False, extra=[("acme", plugin)])
    assert "acme_score" in reg.names("benchmarks")
    assert reg.owner("benchmarks", "acme_score") == "acme"
    assert {"name": "acme", "version": "", "hooks": ["register_benchmarks"], "source": "extra"} in reg.describe()


def test_duplicate_name_is_an_error_naming_both_plugins():
    plugin = make_plugin("acme", register_peft_methods=[("lora", Method())])
    with pytest.raises(PluginError) as err:
        PluginRegistry(entry_points=False, extra=[("acme", plugin)])
    msg = str(err.value)
    assert "'lora'" in msg and "tunesmith_builtin.peft_lora" in msg and "'acme'" in msg


def test_block_list_resolves_a_duplicate(monkeypatch):
    acme_lora = Method()
    plugin = make_plugin("acme", register_peft_methods=[("lora", acme_lora)])
    monkeypatch.setenv(BLOCK_ENV, "tunesmith_builtin.peft_lora")
    reg = PluginRegistry(entry_points=False, extra=[("acme", plugin)])
    assert reg.get("peft_methods", "lora") is acme_lora
    assert "tunesmith_builtin.peft_lora" not in [p.name for p in reg.plugins]


def test_allow_list_loads_only_named_plugins(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "tunesmith_builtin.storage_local, tunesmith_builtin.bench_exact_match")
    reg = PluginRegistry(entry_points=False)
    assert [p.name for p in reg.plugins] == ["tunesmith_builtin.bench_exact_match", "tunesmith_builtin.storage_local"]
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
        "class Tpl:\n"
        "    name, description, needs_tokenizer = 'acme_tpl', 'as is', False\n"
        "    def validate_options(self, options): pass\n"
        "    def render(self, fields, options, tokenizer): return None\n"
        "@hookimpl\n"
        "def register_templates(register):\n"
        "    register('acme_tpl', Tpl())\n")
    dist = tmp_path / "acme_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[tunesmith]\nacme = acme_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = PluginRegistry()
    assert "acme_tpl" in reg.names("templates")
    assert {"name": "acme", "version": "1.2.3", "hooks": ["register_templates"], "source": "entrypoint"} in reg.describe()


# --- registrations are checked against their kind's Protocol ----------------------------------
HOOK_OF_KIND = {kind: hook for hook, kind in hookspecs.REGISTRY_KINDS.items()}


def refusal(kind, obj, plugin="acme", name="foo"):
    """The PluginError message for registering `obj` as `name` under `kind`."""
    module = make_plugin(plugin, **{HOOK_OF_KIND[kind]: [(name, obj)]})
    with pytest.raises(PluginError) as err:
        PluginRegistry(builtins=(), entry_points=False, extra=[(plugin, module)])
    return str(err.value)


def test_every_kind_has_one_protocol():
    assert set(KIND_PROTOCOLS) == set(hookspecs.REGISTRY_KINDS.values())


@pytest.mark.parametrize("kind", sorted(KIND_PROTOCOLS))
def test_an_empty_object_is_refused_naming_every_member(kind):
    members = [name for name, _ in contracts.protocol_members(KIND_PROTOCOLS[kind])]
    msg = refusal(kind, object())
    assert msg.startswith(f"plugin 'acme' registered {kind} entry 'foo' which lacks {', '.join(members)}")
    assert f"tunesmith.core.contracts.{KIND_PROTOCOLS[kind].__name__}" in msg


def test_missing_methods_are_listed_in_declaration_order():
    class Partial:
        name, supports_merge, servable_by_vllm, quantized_base = "foo", True, True, False
        artifact_kind, prompt_learning = "adapter", False

        def load_kwargs(self, options, device):
            return {}

        def save(self, model, folder):
            pass

    assert refusal("peft_methods", Partial()).startswith(
        "plugin 'acme' registered peft_methods entry 'foo' which lacks validate, apply, parameter_counts (")


def test_wrong_signatures_types_and_non_callables_are_refused():
    class Bad:
        name = 3  # not a str
        description = "d"
        needs = "generation"
        requires = frozenset()
        metrics = ()
        validate_options = requests = aggregate = None
        score_rows = "not a method"

    msg = refusal("benchmarks", Bad())
    assert "whose name is int, not str" in msg and "whose score_rows is not callable" in msg

    class OneArg(Score):
        def score_rows(self, rows):
            return None

    assert "whose score_rows does not accept score_rows(rows, options)" in refusal("benchmarks", OneArg())

    class NoAdapterKeyword:
        name = "foo"

        def available(self):
            return True, "yes"

        def load(self, model_path, *, dtype="", max_model_len=0):
            return None

    assert ("whose load does not accept load(model_path, *, dtype, max_model_len, enable_adapters, adapter_limits)"
            in refusal("inference_backends", NoAdapterKeyword()))

    class NotABool(Template):
        needs_tokenizer = "no"

    assert "whose needs_tokenizer is str, not bool" in refusal("templates", NotABool())


def test_storage_factories_must_be_callable_with_a_root():
    class NoRoot:
        scheme = "acme"

        def __init__(self):
            pass

    assert "whose __call__ does not accept (root)" in refusal("storage_backends", NoRoot)
    assert "lacks __call__" in refusal("storage_backends", types.SimpleNamespace(scheme="acme"))


def test_flexible_signatures_and_extra_members_are_accepted():
    class Flexible(Score):
        extra = "fine"

        def score(self, *args, **kwargs):
            return None

    class WithDefaults(Method):
        def apply(self, model, options=None, *, more=1):
            return model

    reg = PluginRegistry(builtins=(), entry_points=False, extra=[(
        "acme", make_plugin("acme", register_benchmarks=[("flex", Flexible("flex"))],
                            register_peft_methods=[("wd", WithDefaults("wd"))]))])
    assert reg.names("benchmarks") == ["flex"] and reg.names("peft_methods") == ["wd"]


def test_a_refused_registration_is_refused_with_the_builtins_too():
    """The check runs whatever else loads: the first bad registration stops the registry."""
    module = make_plugin("acme", register_templates=[("ok", Template()), ("bad", object())])
    with pytest.raises(PluginError, match="plugin 'acme' registered templates entry 'bad' which lacks name"):
        PluginRegistry(entry_points=False, extra=[("acme", module)])


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
