"""The plugin manager: loads built-in and third-party plugins and collects their registrations.

- Built-ins are listed in DEFAULT_PLUGINS and registered like any other plugin.
- Third-party plugins come from the entry-point group "tunesmith".
- TUNESMITH_PLUGINS_ALLOW (comma-separated plugin names) loads only those; TUNESMITH_PLUGINS_BLOCK
  skips those. Names are the entry-point names, or the module names of built-ins.
- A name registered twice for one kind is a PluginError naming both plugins.
- Every registration is checked against its kind's Protocol (KIND_PROTOCOLS, from
  tunesmith.core.contracts) as it is registered: an object lacking a member, with a method that
  cannot be called as declared, or with a str/bool attribute of another type is a PluginError
  naming the plugin, the registered name, the kind and every problem.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pluggy

from tunesmith.core import contracts, hookspecs
from tunesmith.core.errors import InvalidArgument, NotFound, PluginError

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)
ENTRY_POINT_GROUP = "tunesmith"
ALLOW_ENV = "TUNESMITH_PLUGINS_ALLOW"
BLOCK_ENV = "TUNESMITH_PLUGINS_BLOCK"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "tunesmith_builtin.peft_full",
    "tunesmith_builtin.peft_lora",
    "tunesmith_builtin.peft_qlora",
    "tunesmith_builtin.peft_ia3",
    "tunesmith_builtin.peft_prefix_tuning",
    "tunesmith_builtin.peft_prompt_tuning",
    "tunesmith_builtin.recipe_sft",
    "tunesmith_builtin.recipe_dpo",
    "tunesmith_builtin.templates",
    "tunesmith_builtin.bench_exact_match",
    "tunesmith_builtin.bench_accuracy",
    "tunesmith_builtin.bench_macro_f1",
    "tunesmith_builtin.bench_json_valid",
    "tunesmith_builtin.bench_json_field_f1",
    "tunesmith_builtin.bench_rouge",
    "tunesmith_builtin.bench_bleu",
    "tunesmith_builtin.bench_perplexity",
    "tunesmith_builtin.bench_mc_loglikelihood",
    "tunesmith_builtin.bench_numeric_match",
    "tunesmith_builtin.error_checks",
    "tunesmith_builtin.judges",
    "tunesmith_builtin.judge_templates",
    "tunesmith_builtin.storage_local",
    "tunesmith_builtin.inference_transformers",
    "tunesmith_builtin.inference_vllm",
    "tunesmith_builtin.executor_local",
)

#: Registry kind -> the Protocol every registration of that kind must satisfy.
KIND_PROTOCOLS: dict[str, type] = {
    "peft_methods": contracts.PeftMethod,
    "training_recipes": contracts.TrainingRecipe,
    "templates": contracts.PromptTemplate,
    "benchmarks": contracts.Benchmark,
    "error_checks": contracts.ErrorCheck,
    "judges": contracts.Judge,
    "judge_templates": contracts.JudgeTemplate,
    "storage_backends": contracts.StorageBackendFactory,
    "inference_backends": contracts.InferenceBackend,
    "training_executors": contracts.TrainingExecutor,
}
assert set(KIND_PROTOCOLS) == set(hookspecs.REGISTRY_KINDS.values()), "every registry kind needs its Protocol"


def check_registration(plugin: str, kind: str, name: str, obj: Any) -> None:
    """Raise PluginError unless `obj` satisfies KIND_PROTOCOLS[kind], e.g.
    "plugin 'acme' registered peft_methods entry 'foo' which lacks validate, apply (...)"."""
    protocol = KIND_PROTOCOLS[kind]
    problems = contracts.conformance_errors(obj, protocol)
    if problems:
        what = "; ".join(p if p.startswith("lacks ") else f"whose {p}" for p in problems)
        raise PluginError(
            f"plugin {plugin!r} registered {kind} entry {name!r} which {what} "
            f"(contract: {protocol.__module__}.{protocol.__qualname__})"
        )


@dataclass
class LoadedPlugin:
    name: str
    version: str
    source: str  # "builtin" | "entrypoint"
    module: Any
    hooks: list[str] = field(default_factory=list)


def _names_from_env(var: str) -> set[str] | None:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


class PluginRegistry:
    """Loaded plugins plus everything they registered, by kind ("templates", ...)."""

    def __init__(self, builtins: tuple[str, ...] = DEFAULT_PLUGINS, *, entry_points: bool = True,
                 extra: list[tuple[str, Any]] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[LoadedPlugin] = []
        allow, block = _names_from_env(ALLOW_ENV), _names_from_env(BLOCK_ENV)

        candidates: list[tuple[str, str, str, Any]] = []  # (name, version, source, loader)
        for modname in builtins:
            candidates.append((modname, tunesmith_version(), "builtin", modname))
        if entry_points:
            for ep in md.entry_points(group=ENTRY_POINT_GROUP):
                version = ep.dist.version if ep.dist is not None else ""
                candidates.append((ep.name, version, "entrypoint", ep))
        for name, obj in extra or []:
            candidates.append((name, "", "extra", obj))

        for name, version, source, loader in candidates:
            if allow is not None and name not in allow:
                continue
            if block is not None and name in block:
                continue
            module = self._load(name, loader)
            if self.pm.is_registered(module):
                continue
            self.pm.register(module, name=name)
            hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
            self.plugins.append(LoadedPlugin(name, version, source, module, hooks))

        self._registries: dict[str, dict[str, Any]] = {}
        self._owners: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._collect()

    @staticmethod
    def _load(name: str, loader: Any) -> Any:
        try:
            if isinstance(loader, str):
                return importlib.import_module(loader)
            if isinstance(loader, md.EntryPoint):
                return loader.load()
            return loader
        except Exception as exc:  # a broken plugin must say which one
            raise PluginError(f"plugin {name!r} failed to load: {exc}") from exc

    def _collect(self) -> None:
        for hook_name, kind in hookspecs.REGISTRY_KINDS.items():
            registry: dict[str, Any] = {}
            owners: dict[str, str] = {}
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin_name = impl.plugin_name

                def register(name: str, obj: Any, _plugin: str = plugin_name, _kind: str = kind) -> None:
                    if not isinstance(name, str) or not name:
                        raise PluginError(f"plugin {_plugin!r} registered a {_kind} entry without a name")
                    if name in registry:
                        raise PluginError(
                            f"duplicate {_kind} name {name!r}: registered by plugin {owners[name]!r} "
                            f"and by plugin {_plugin!r}; block one with {BLOCK_ENV}"
                        )
                    check_registration(_plugin, _kind, name, obj)
                    registry[name] = obj
                    owners[name] = _plugin

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(f"plugin {plugin_name!r} failed in {hook_name}: {exc}") from exc
            self._registries[kind] = registry
            self._owners[kind] = owners

    # -- queries ----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._registries[kind])

    def get(self, kind: str, name: str) -> Any:
        """The object registered as `name` under `kind`, or NotFound listing what exists."""
        registry = self._registries[kind]
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            raise NotFound(f"no {kind[:-1].replace('_', ' ')} named {name!r} (known: {known})", field=kind)
        return registry[name]

    def require(self, kind: str, name: str, field: str) -> Any:
        """Like get(), for a name taken from a request: an unknown name is the caller's bad input
        (InvalidArgument naming the request `field`), listing what exists."""
        try:
            return self.get(kind, name)
        except NotFound as exc:
            raise InvalidArgument(exc.message, field=field) from None

    def owner(self, kind: str, name: str) -> str:
        return self._owners[kind][name]

    def all(self, kind: str) -> dict[str, Any]:
        return dict(self._registries[kind])

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "version": p.version, "hooks": p.hooks, "source": p.source}
            for p in self.plugins
        ]


def tunesmith_version() -> str:
    """The installed tunesmith distribution's version (built-in plugins share it)."""
    try:
        return md.version("tunesmith")
    except md.PackageNotFoundError:
        return "0+unknown"


_default: PluginRegistry | None = None
_default_lock = threading.Lock()


def get_registry() -> PluginRegistry:
    """The process-wide registry, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginRegistry()
        return _default


def reset_registry() -> None:
    """Forget the process-wide registry (tests change the environment and rebuild it)."""
    global _default
    with _default_lock:
        _default = None
