"""CreateEvaluation's checks: everything knowable before an evaluation is accepted.

`accept_evaluation_request(request, runtime)` returns the spec with defaults filled in
(split "validation", benchmark "exact_match", backend "transformers", baseline the first model,
judge template "pairwise", gate suites both), or raises: INVALID_ARGUMENT listing every bad
field, NOT_FOUND for an unknown dataset, split, model or adapter, FAILED_PRECONDITION for a
backend that is not usable here, a benchmark whose labels or choices the dataset lacks, an
adapter whose base is not the model it is paired with, or a judge model that is not loaded.
"""
from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.core.checks import (
    check_adapter_artifact,
    check_adapter_base,
    check_model,
    check_split,
)
from tunesmith.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    TunesmithError,
    Violations,
)
from tunesmith.core.gates import (
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    SUITE_NAMES,
    check_gate_fields,
)
from tunesmith.core.validation import (
    check_float,
    check_int,
    check_strings,
    check_struct,
    start_create_checks,
)

DEFAULT_BACKEND = "transformers"
DEFAULT_SPLIT = "validation"
DEFAULT_BENCHMARK = "exact_match"
DEFAULT_JUDGE_TEMPLATE = "pairwise"
DEFAULT_ELO_INITIAL = 1000.0
DEFAULT_JUDGE_TOKENS = 128
MAX_MODELS = 16
MAX_JUDGE_PROMPTS = 1000
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BOARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_generation(v: Violations, g: evaluator_pb2.GenerationConfig, prefix: str = "spec.generation") -> None:
    check_int(v, g.max_new_tokens, f"{prefix}.max_new_tokens", 1, 4096, zero_means="the longest reference's length in tokens, plus 1")
    check_float(v, g.temperature, f"{prefix}.temperature", 0.0, 2.0)
    check_float(v, g.top_p, f"{prefix}.top_p", 0.0, 1.0, lo_open=True, zero_means="1.0")
    check_int(v, g.batch_size, f"{prefix}.batch_size", 1, 1024, zero_means="32")
    check_strings(v, g.stop, f"{prefix}.stop", max_items=16)
    check_int(v, g.seed, f"{prefix}.seed", 0, 2**63 - 1)


def benchmark_options(spec: evaluator_pb2.EvaluationSpec) -> dict[str, dict[str, Any]]:
    """EvaluationSpec.options as {benchmark name: its options dict} (numbers as floats)."""
    return {k: (v if isinstance(v, dict) else {}) for k, v in json_format.MessageToDict(spec.options).items()}


def _check_options(v: Violations, spec, registry) -> None:
    check_struct(v, spec.options, "spec.options")
    if v.items:
        return
    options = json_format.MessageToDict(spec.options)
    for name, opts in options.items():
        where = f"spec.options.{name}"
        if name not in spec.benchmarks:
            v.add(where, f"{name!r} is not one of spec.benchmarks {list(spec.benchmarks)}: options are keyed by "
                         "benchmark name")
            continue
        if not isinstance(opts, dict):
            v.add(where, "must be an object of that benchmark's options")
            continue
        try:
            registry.get("benchmarks", name).validate_options(opts)
        except TunesmithError as exc:
            v.add(f"{where}.{exc.field}" if exc.field else where, exc.message)
        except (ValueError, TypeError) as exc:
            v.add(where, str(exc))


def _check_judge(v: Violations, spec) -> None:
    j = spec.judge
    v.check(len(spec.models) >= 2, "spec.judge", "judging compares answers: it needs at least two models")
    v.check(bool(j.model) != bool(j.rule), "spec.judge",
            "set exactly one of judge.model (a served model) and judge.rule (a rule-based judge plugin)")
    check_float(v, j.elo_initial, "spec.judge.elo_initial", 0.0, 1e6, zero_means=str(DEFAULT_ELO_INITIAL))
    check_float(v, j.elo_k, "spec.judge.elo_k", 0.0, 100.0, zero_means="Bradley-Terry ratings")
    check_int(v, j.max_prompts, "spec.judge.max_prompts", 0, MAX_JUDGE_PROMPTS, zero_means="every evaluated row")
    check_int(v, j.max_new_tokens, "spec.judge.max_new_tokens", 0, 1024, zero_means=str(DEFAULT_JUDGE_TOKENS))
    v.check(not (j.rule and j.max_new_tokens), "spec.judge.max_new_tokens", "applies to model judges only")
    check_strings(v, [j.rubric], "spec.judge.rubric", max_items=1, max_length=4000, allow_empty=True)
    v.check(not (j.rule and j.rubric), "spec.judge.rubric", "applies to model judges only (a rule plugin has no prompt)")
    v.check(not (j.rule and j.template), "spec.judge.template", "applies to model judges only")
    v.check(not j.leaderboard or bool(_BOARD.match(j.leaderboard)), "spec.judge.leaderboard",
            "1-64 characters of letters, digits, '.', '_', '-'")


def _check_gate(v: Violations, spec) -> None:
    g = spec.gate
    v.check(len(spec.models) >= 2, "spec.gate", "the gate compares candidates with the baseline: it needs at least "
                                                "two models")
    check_gate_fields(v, g.suites, g.tolerance, g.alpha, g.max_rows, "spec.gate")


def _check_requirements(spec, dataset, registry, options) -> None:
    """FailedPrecondition for a benchmark that needs labels or choices the dataset lacks."""
    for i, name in enumerate(spec.benchmarks):
        bench = registry.get("benchmarks", name)
        needs = set(getattr(bench, "requires", ()) or ())
        if "choices" in needs and dataset.schema != "multiple_choice":
            raise FailedPrecondition(
                f"benchmark {name!r} scores multiple-choice rows, and dataset {dataset.id} is a "
                f"{dataset.schema or 'schema-less'} dataset with no choices; register it with schema MULTIPLE_CHOICE",
                field=f"spec.benchmarks[{i}]", code="dataset_has_no_choices")
        if "labels" in needs and not dataset.labels and not options.get(name, {}).get("labels"):
            raise FailedPrecondition(
                f"benchmark {name!r} needs a label set, and dataset {dataset.id} has none (it is not a classification "
                f"dataset); give spec.options.{name}.labels", field=f"spec.benchmarks[{i}]", code="dataset_has_no_labels")


def _check_served_judge(runtime, name: str) -> None:
    """FailedPrecondition unless `name` is READY on the inference service (Runtime.peers)."""
    address = runtime.require_peer("inference", needed_by="a model judge", field="spec.judge.model")
    from tunesmith.client.errors import TunesmithClientError
    from tunesmith.client.inference import InferenceClient

    try:
        with InferenceClient(address) as client:
            served = {m.name: m for m in client.list_models(timeout=10)}
    except TunesmithClientError as exc:
        raise FailedPrecondition(f"the inference service at {address} did not answer: {exc}",
                                 field="spec.judge.model", code="inference_unavailable") from None
    from tunesmith.api.inference.v1 import inference_pb2

    model = served.get(name)
    if model is None:
        raise FailedPrecondition(f"judge model {name!r} is not loaded on the inference service (loaded: "
                                 f"{', '.join(sorted(served)) or 'none'}); LoadModel it first",
                                 field="spec.judge.model", code="judge_not_loaded")
    if model.state != inference_pb2.SERVED_MODEL_STATE_READY:
        state = inference_pb2.ServedModelState.Name(model.state)
        raise FailedPrecondition(f"judge model {name!r} is {state}, not READY", field="spec.judge.model",
                                 code="judge_not_ready")


def accept_evaluation_request(request: evaluator_pb2.CreateEvaluationRequest, runtime) -> evaluator_pb2.EvaluationSpec:
    """See the module docstring."""
    spec, v = start_create_checks(request)
    v.check(bool(spec.dataset_id), "spec.dataset_id", "is required: the id of a registered dataset")
    check_int(v, spec.max_rows, "spec.max_rows", 0, 10_000_000)
    check_int(v, spec.keep_samples, "spec.keep_samples", 0, 10_000)
    check_float(v, spec.regression_tolerance, "spec.regression_tolerance", 0.0, 1.0)
    v.check(0 < len(spec.models) <= MAX_MODELS, "spec.models", f"1 to {MAX_MODELS} models are required, got {len(spec.models)}")
    labels = []
    for i, m in enumerate(spec.models):
        v.check(bool(_LABEL.match(m.label)), f"spec.models[{i}].label",
                "is required: 1-64 characters of letters, digits, '.', '_', '-' (e.g. base, tuned)")
        v.check(bool(m.model), f"spec.models[{i}].model", "is required: a model-store name or a model artifact URI")
        v.check(m.label not in labels, f"spec.models[{i}].label", f"label {m.label!r} is used twice; labels must be unique")
        v.check(not m.training_job_id or spec.html_report, f"spec.models[{i}].training_job_id",
                "is read only for the HTML report's loss curve: set html_report too")
        v.check(not m.adapter.kind or m.adapter.kind == "adapter", f"spec.models[{i}].adapter.kind",
                f"must be 'adapter' (or unset), got {m.adapter.kind!r}")
        labels.append(m.label)
    v.check(not spec.baseline or spec.baseline in labels, "spec.baseline",
            f"{spec.baseline!r} is not one of the model labels {labels}")
    check_strings(v, spec.benchmarks, "spec.benchmarks", max_items=32)
    v.check(len(set(spec.benchmarks)) == len(spec.benchmarks), "spec.benchmarks", "a benchmark is listed twice")
    check_generation(v, spec.generation)
    check_strings(v, spec.error_checks, "spec.error_checks", max_items=64)
    v.check(not spec.error_checks or spec.error_analysis, "spec.error_checks",
            "error checks run only with error_analysis set")
    if spec.HasField("judge"):
        _check_judge(v, spec)
    if spec.gate.enabled:
        _check_gate(v, spec)
    else:
        v.check(not spec.HasField("gate") or spec.gate == evaluator_pb2.RegressionGate(), "spec.gate.enabled",
                "set enabled to run the gate (its other fields are set but it is off)")
    v.raise_if_any()

    if not spec.benchmarks:
        spec.benchmarks.append(DEFAULT_BENCHMARK)
    for i, b in enumerate(spec.benchmarks):
        runtime.registry.require("benchmarks", b, f"spec.benchmarks[{i}]")
    for i, c in enumerate(spec.error_checks):
        runtime.registry.require("error_checks", c, f"spec.error_checks[{i}]")
    if spec.HasField("judge"):
        if spec.judge.rule:
            runtime.registry.require("judges", spec.judge.rule, "spec.judge.rule")
        spec.judge.template = spec.judge.template or DEFAULT_JUDGE_TEMPLATE
        runtime.registry.require("judge_templates", spec.judge.template, "spec.judge.template")
        spec.judge.elo_initial = spec.judge.elo_initial or DEFAULT_ELO_INITIAL
        if spec.judge.model:
            spec.judge.max_new_tokens = spec.judge.max_new_tokens or DEFAULT_JUDGE_TOKENS
        if not spec.judge.HasField("swap_positions"):
            spec.judge.swap_positions = True
    if spec.gate.enabled:
        if not spec.gate.suites:
            spec.gate.suites.extend(SUITE_NAMES)
        spec.gate.tolerance = spec.gate.tolerance or DEFAULT_TOLERANCE
        spec.gate.alpha = spec.gate.alpha or DEFAULT_ALPHA
    v = Violations()
    _check_options(v, spec, runtime.registry)
    v.raise_if_any()
    spec.backend = spec.backend or DEFAULT_BACKEND
    backend = runtime.registry.require("inference_backends", spec.backend, "spec.backend")
    ok, reason = backend.available()
    if not ok:
        raise FailedPrecondition(f"inference backend {spec.backend!r} is not usable here: {reason}",
                                 field="spec.backend", code="backend_unavailable")
    dataset = runtime.datasets.get(spec.dataset_id, field="spec.dataset_id")
    spec.split = spec.split or DEFAULT_SPLIT
    check_split(dataset, spec.split, "spec.split")
    _check_requirements(spec, dataset, runtime.registry, benchmark_options(spec))
    for i, m in enumerate(spec.models):
        check_model(runtime.models, m.model, f"spec.models[{i}].model")
        if m.adapter.uri:
            where = f"spec.models[{i}].adapter.uri"
            folder = check_adapter_artifact(runtime.storage, m.adapter.uri, where)
            check_adapter_base(runtime.models, folder, m.adapter.uri, m.model, where)
            m.adapter.kind = "adapter"
    if spec.HasField("judge") and spec.judge.model:
        _check_served_judge(runtime, spec.judge.model)
    spec.baseline = spec.baseline or spec.models[0].label
    return spec


__all__ = ["InvalidArgument", "accept_evaluation_request", "benchmark_options", "check_generation"]
