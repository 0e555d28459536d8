"""Every registered plugin, of every kind, through the shared contract checks.

The cases come from a fresh PluginRegistry() (built-ins plus any installed entry points), so a
new built-in is checked without touching this file. The second half shows that the checks fail
for plugins that break a contract (deliberately broken variants of the built-ins).
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from tunesmith.core import hookspecs
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import DEFAULT_PLUGINS, KIND_PROTOCOLS, PluginRegistry
from tunesmith.testing.contracts import (
    CHECKS,
    SLOW_BACKENDS_ENV,
    SLOW_INFERENCE_BACKENDS,
    ContractViolation,
    check_benchmark,
    check_peft_method,
    check_plugin,
    check_storage_backend,
    check_template,
    plugin_cases,
    registered_cases,
)
from tunesmith_builtin.bench_exact_match import ExactMatch
from tunesmith_builtin.peft_lora import LoraMethod
from tunesmith_builtin.templates import ClassificationTemplate

#: PEFT methods run through the same check in tests/contract/test_peft_methods.py, on a model
#: folder with a tokenizer and on tokenised rows (QLoRA quantised as it loads), so not again here.
CASES = [p for p in plugin_cases(PluginRegistry()) if p.values[0].kind != "peft_methods"]
NEEDS_MODEL = {"inference_backends"}
needs_torch = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")),
    reason="torch, transformers and peft are needed to build the tiny models")


def test_every_kind_has_a_protocol_a_check_and_a_builtin():
    kinds = set(hookspecs.REGISTRY_KINDS.values())
    assert set(KIND_PROTOCOLS) == kinds and set(CHECKS) == kinds
    builtin = registered_cases(PluginRegistry(entry_points=False))
    assert {c.kind for c in builtin} == kinds
    assert {c.plugin for c in builtin} == set(DEFAULT_PLUGINS)
    assert {str(p.values[0]) for p in CASES} >= {str(c) for c in builtin if c.kind != "peft_methods"}


@pytest.mark.parametrize("case", CASES)
def test_registered_plugin_keeps_its_contract(case, tmp_path, request):
    model_dir = None
    if case.kind in NEEDS_MODEL:
        # vLLM on CPU has no attention kernel for the tiny model's head_dim of 16, so its opt-in
        # run (TUNESMITH_CONTRACT_VLLM=1; check_plugin skips it otherwise) uses the bundled model.
        fixture = "bundled_model_dir" if case.name in SLOW_INFERENCE_BACKENDS and os.environ.get(
            SLOW_BACKENDS_ENV) == "1" else "tiny_model_dir"
        model_dir = request.getfixturevalue(fixture)
    check_plugin(case, tmp_path, model_dir=model_dir)


# --- the checks catch broken plugins --------------------------------------------------------
class PrefixedFieldLora(LoraMethod):
    """The old LoRA behaviour: fields prefixed with "method."."""

    def validate(self, options):
        try:
            return super().validate(options)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message, field=f"method.{exc.field}") from None


class FrozenLora(LoraMethod):
    """Applies LoRA, then freezes every parameter."""

    def apply(self, model, options):
        model = super().apply(model, options)
        for p in model.parameters():
            p.requires_grad_(False)
        return model


class Lenient(ClassificationTemplate):
    """Ignores unknown options instead of refusing them."""

    def validate_options(self, options):
        return None


class AlwaysRight(ExactMatch):
    """Scores every prediction as right."""

    def score_rows(self, rows, options):
        return [{"exact_match": 1.0} for _ in rows]


def test_check_catches_a_prefixed_option_field():
    with pytest.raises(ContractViolation, match="option key alone"):
        check_peft_method(PrefixedFieldLora())


@needs_torch
def test_check_catches_a_method_that_trains_nothing():
    with pytest.raises(ContractViolation, match="no trainable parameters"):
        check_peft_method(FrozenLora())


def test_check_catches_a_template_that_accepts_any_option():
    with pytest.raises(ContractViolation, match="unknown option"):
        check_template(Lenient())


def test_check_catches_a_benchmark_that_ignores_the_predictions():
    with pytest.raises(ContractViolation, match="not higher for better answers|perfect answers above wrong"):
        check_benchmark(AlwaysRight())


def test_check_catches_storage_that_verifies_anything(tmp_path):
    from tunesmith.core.storage import LocalStorage

    class Trusting(LocalStorage):
        def verify(self, ref):
            return True

    with pytest.raises(ContractViolation, match="accepts a wrong sha256"):
        check_storage_backend(Trusting, str(tmp_path / "root"))


def test_check_refuses_an_object_missing_members():
    class Half:
        name = "half"

        def score_rows(self, rows):
            return None

    with pytest.raises(ContractViolation) as info:
        check_benchmark(Half())
    assert "lacks description" in str(info.value)
    assert "score_rows does not accept score_rows(rows, options)" in str(info.value)
