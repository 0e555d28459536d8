"""CreateEvaluation's checks: everything knowable before an evaluation is accepted.

`accept_evaluation_request(request, runtime)` returns the spec with defaults filled in
(split "validation", benchmark "exact_match", backend "transformers", baseline the first model),
or raises: UNIMPLEMENTED for a field not built yet, INVALID_ARGUMENT listing every bad field,
NOT_FOUND for an unknown dataset, split or model, FAILED_PRECONDITION for a backend that is not
usable on this machine.
"""
from __future__ import annotations

import re

from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.core.checks import check_model, check_split
from tunesmith.core.errors import FailedPrecondition, Violations
from tunesmith.core.validation import check_float, check_int, check_strings, start_create_checks

DEFAULT_BACKEND = "transformers"
DEFAULT_SPLIT = "validation"
DEFAULT_BENCHMARK = "exact_match"
MAX_MODELS = 16
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_generation(v: Violations, g: evaluator_pb2.GenerationConfig, prefix: str = "spec.generation") -> None:
    check_int(v, g.max_new_tokens, f"{prefix}.max_new_tokens", 1, 4096, zero_means="the longest reference's length in tokens, plus 1")
    check_float(v, g.temperature, f"{prefix}.temperature", 0.0, 2.0)
    check_float(v, g.top_p, f"{prefix}.top_p", 0.0, 1.0, lo_open=True, zero_means="1.0")
    check_int(v, g.batch_size, f"{prefix}.batch_size", 1, 1024, zero_means="32")
    check_strings(v, g.stop, f"{prefix}.stop", max_items=16)
    check_int(v, g.seed, f"{prefix}.seed", 0, 2**63 - 1)


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
        labels.append(m.label)
    v.check(not spec.baseline or spec.baseline in labels, "spec.baseline",
            f"{spec.baseline!r} is not one of the model labels {labels}")
    check_strings(v, spec.benchmarks, "spec.benchmarks", max_items=32)
    check_generation(v, spec.generation)
    v.raise_if_any()

    if not spec.benchmarks:
        spec.benchmarks.append(DEFAULT_BENCHMARK)
    for i, b in enumerate(spec.benchmarks):
        runtime.registry.require("benchmarks", b, f"spec.benchmarks[{i}]")
    spec.backend = spec.backend or DEFAULT_BACKEND
    backend = runtime.registry.require("inference_backends", spec.backend, "spec.backend")
    ok, reason = backend.available()
    if not ok:
        raise FailedPrecondition(f"inference backend {spec.backend!r} is not usable here: {reason}",
                                 field="spec.backend", code="backend_unavailable")
    dataset = runtime.datasets.get(spec.dataset_id, field="spec.dataset_id")
    spec.split = spec.split or DEFAULT_SPLIT
    check_split(dataset, spec.split, "spec.split")
    for i, m in enumerate(spec.models):
        check_model(runtime.models, m.model, f"spec.models[{i}].model")
    spec.baseline = spec.baseline or spec.models[0].label
    return spec
