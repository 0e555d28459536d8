"""Every Tunesmith plugin hook, in one module. Each docstring is the hook's contract.

All hooks are register-style and collect-all: each plugin is called with a `register`
callback and calls `register(name, obj)` once per thing it provides. The core
(tunesmith.core.plugins) collects the registrations and decides what a duplicate name means:
it is an error naming both plugins. Every registered object is checked against its kind's
Protocol in tunesmith.core.contracts at load (a missing member is a PluginError naming it).
Built-in plugins use these same hooks.

Plugins implement them with `@tunesmith.core.plugins.hookimpl` and are found through the
entry-point group "tunesmith" (see README: "Writing a plugin").
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "tunesmith"
hookspec = pluggy.HookspecMarker(PROJECT)

Register = Callable[[str, Any], None]


@hookspec
def register_peft_methods(register: Register) -> None:
    """Register fine-tuning methods: ``register(name, method)``.

    method: a tunesmith.core.contracts.PeftMethod (e.g. "lora", "qlora", "full").
    Called by: the trainer service at start-up and by each training worker process.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_training_recipes(register: Register) -> None:
    """Register training objectives: ``register(name, recipe)``.

    recipe: a tunesmith.core.contracts.TrainingRecipe (e.g. "sft", "dpo").
    Called by: the trainer service (validation) and each training worker process.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_templates(register: Register) -> None:
    """Register prompt templates: ``register(name, template)``.

    template: a tunesmith.core.contracts.PromptTemplate (e.g. "classification", "chat").
    Called by: the data service when it renders rows, and the evaluator.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_benchmarks(register: Register) -> None:
    """Register benchmarks (metrics over generated answers or log-likelihoods): ``register(name, benchmark)``.

    benchmark: a tunesmith.core.contracts.Benchmark (e.g. "exact_match").
    Called by: the evaluator service.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_error_checks(register: Register) -> None:
    """Register error-analysis checks: ``register(name, check)``.
    check: a tunesmith.core.contracts.ErrorCheck (e.g. "empty_answer", "repetition").
    Called by: the evaluator service when an evaluation asks for error analysis.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_judges(register: Register) -> None:
    """Register rule-based pairwise judges: ``register(name, judge)``.
    judge: a tunesmith.core.contracts.Judge (e.g. "reference_match").
    Called by: the evaluator service for JudgeConfig.rule.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_judge_templates(register: Register) -> None:
    """Register prompt templates for model judges: ``register(name, template)``.
    template: a tunesmith.core.contracts.JudgeTemplate (e.g. "pairwise").
    Called by: the evaluator service for JudgeConfig.template.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_storage_backends(register: Register) -> None:
    """Register storage backends by URI scheme: ``register(scheme, factory)``.

    factory: a tunesmith.core.contracts.StorageBackendFactory; factory(root_uri) -> Storage.
    Called by: every service when it opens shared storage (tunesmith.core.storage.open_storage).
    Collect-all; a scheme registered twice is a PluginError.
    """


@hookspec
def register_inference_backends(register: Register) -> None:
    """Register inference engines: ``register(name, backend)``.

    backend: a tunesmith.core.contracts.InferenceBackend (e.g. "vllm", "transformers").
    Called by: the inference service and the evaluator. Order of preference is the
    service's decision (vllm first where available), not registration order.
    Collect-all; a name registered twice is a PluginError.
    """


@hookspec
def register_training_executors(register: Register) -> None:
    """Register places where training jobs run: ``register(name, executor)``.

    executor: a tunesmith.core.contracts.TrainingExecutor (e.g. "local", later "kubernetes").
    Called by: the trainer service when it starts a job.
    Collect-all; a name registered twice is a PluginError.
    """


#: Hook name -> the registry kind it fills (used in status reports and by the plugin manager).
REGISTRY_KINDS: dict[str, str] = {
    "register_peft_methods": "peft_methods",
    "register_training_recipes": "training_recipes",
    "register_templates": "templates",
    "register_benchmarks": "benchmarks",
    "register_error_checks": "error_checks",
    "register_judges": "judges",
    "register_judge_templates": "judge_templates",
    "register_storage_backends": "storage_backends",
    "register_inference_backends": "inference_backends",
    "register_training_executors": "training_executors",
}
