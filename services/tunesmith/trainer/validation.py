"""CreateTrainingJob's checks: everything knowable before a job is accepted, with field paths.

`accept_training_request(request, runtime)` returns the spec with its defaults filled in (the
method options and hyperparameters checked the way the worker will resolve them), or raises the
first class of
problem found (UNIMPLEMENTED for a field not built yet, INVALID_ARGUMENT listing every bad
field, NOT_FOUND for an unknown model/dataset/split, FAILED_PRECONDITION for an unavailable
device). Nothing is stored.
"""
from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from tunesmith.api.trainer.v1 import trainer_pb2
from tunesmith.core.checks import check_model, check_split
from tunesmith.core.devices import check_device
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, TunesmithError, Unimplemented
from tunesmith.core.validation import check_enum, check_local_path, check_struct, start_create_checks
from tunesmith.trainer import hyperparameters

#: Built-in typed method configs (the MethodSpec `config` oneof) -> the method name they configure.
CONFIG_METHODS = {"lora": "lora", "qlora": "qlora", "ia3": "ia3", "prefix_tuning": "prefix_tuning",
                  "prompt_tuning": "prompt_tuning", "full": "full"}
DEFAULT_METHOD = "lora"
DEFAULT_EXECUTOR = "local"



def method_options(method: trainer_pb2.MethodSpec) -> dict[str, Any]:
    """The method plugin's options from the typed config (or the third-party Struct)."""
    which = method.WhichOneof("config")
    if which is None:
        return {}
    if which == "options":
        return json_format.MessageToDict(method.options)
    if which == "lora":
        c = method.lora
        opts: dict[str, Any] = {}
        if c.rank:
            opts["rank"] = c.rank
        if c.alpha:
            opts["alpha"] = c.alpha
        if c.dropout:
            opts["dropout"] = c.dropout
        if c.target_modules:
            opts["target_modules"] = "all-linear" if list(c.target_modules) == ["all-linear"] else list(c.target_modules)
        if c.use_dora:
            opts["use_dora"] = True
        if c.use_rslora:
            opts["use_rslora"] = True
        return opts
    return json_format.MessageToDict(getattr(method, which), preserving_proto_field_name=True)


def _check_method(spec: trainer_pb2.TrainingJobSpec, registry) -> None:
    """Fill in the method name; check the config against the plugin (its validate())."""
    method = spec.method
    which = method.WhichOneof("config")
    if not method.name:
        if which == "options":
            raise InvalidArgument("name the third-party method whose options these are", field="spec.method.name")
        method.name = CONFIG_METHODS.get(which or "", DEFAULT_METHOD)
    plugin = registry.require("peft_methods", method.name, "spec.method.name")
    if which in CONFIG_METHODS and CONFIG_METHODS[which] != method.name:
        raise InvalidArgument(f"spec.method.{which} configures the {CONFIG_METHODS[which]!r} method, but "
                              f"spec.method.name is {method.name!r}", field=f"spec.method.{which}")
    if which == "options" and method.name in CONFIG_METHODS.values():
        raise InvalidArgument(f"the built-in {method.name!r} method takes its typed config "
                              f"(spec.method.{method.name}), not options", field="spec.method.options")
    options = method_options(method)
    try:
        plugin.validate(options)
    except TunesmithError as exc:
        raise exc.prefixed(f"spec.method.{which or method.name}") from None
    if spec.merge and not plugin.supports_merge:
        raise InvalidArgument(f"{method.name} adapters cannot be merged; leave merge unset", field="spec.merge")


def accept_training_request(request: trainer_pb2.CreateTrainingJobRequest, runtime) -> trainer_pb2.TrainingJobSpec:
    """See the module docstring."""
    spec, v = start_create_checks(request)
    check_enum(v, trainer_pb2.Objective, spec.objective, "spec.objective")
    v.check(bool(spec.base_model), "spec.base_model",
            "is required: a model-store name (e.g. smollm2-135m-instruct) or a model artifact URI")
    v.check(bool(spec.dataset_id), "spec.dataset_id", "is required: the id of a registered dataset")
    v.check(0 <= spec.num_processes, "spec.num_processes", f"must be >= 0, got {spec.num_processes}")
    problem = check_device(spec.device)
    if problem and problem.startswith("unknown"):
        v.add("spec.device", problem)
    if spec.method.WhichOneof("config") == "options":
        check_struct(v, spec.method.options, "spec.method.options")
    v.raise_if_any()
    if spec.objective == trainer_pb2.OBJECTIVE_DPO:
        raise Unimplemented("the DPO objective is not built yet; use OBJECTIVE_SFT", field="spec.objective",
                            code="field_unimplemented")

    _check_method(spec, runtime.registry)
    hyperparameters.from_proto(spec.hyperparameters, device=spec.device)
    spec.executor = spec.executor or DEFAULT_EXECUTOR
    runtime.registry.require("training_executors", spec.executor, "spec.executor")
    if problem:
        raise FailedPrecondition(problem, field="spec.device", code="device_unavailable")

    check_model(runtime.models, spec.base_model, "spec.base_model")
    dataset = runtime.datasets.get(spec.dataset_id, field="spec.dataset_id")
    spec.train_split = spec.train_split or "train"
    check_split(dataset, spec.train_split, "spec.train_split")
    if not spec.validation_split and "validation" in {s.name for s in dataset.splits}:
        spec.validation_split = "validation"
    if spec.validation_split:
        check_split(dataset, spec.validation_split, "spec.validation_split", need_rows=False)
        if spec.validation_split == spec.train_split:
            raise InvalidArgument("must differ from spec.train_split", field="spec.validation_split")
    return spec


def accept_merge_request(request: trainer_pb2.CreateMergeJobRequest, runtime) -> trainer_pb2.MergeSpec:
    """CreateMergeJob's checks: the adapter artifact exists and is a peft adapter, the base model
    (when named) exists, the dtype is known."""
    from tunesmith.api.common.v1 import common_pb2

    spec, v = start_create_checks(request)
    check_enum(v, common_pb2.Dtype, spec.dtype, "spec.dtype")
    v.check(bool(spec.adapter.uri), "spec.adapter.uri", "is required: the adapter artifact (artifact://adapter/...)")
    v.raise_if_any()
    try:
        folder = runtime.storage.local_path(spec.adapter.uri)
        present = (folder / "adapter_config.json").is_file()
    except TunesmithError as exc:
        raise InvalidArgument(exc.message, field="spec.adapter.uri") from None
    if not present:
        from tunesmith.core.errors import NotFound

        raise NotFound(f"{spec.adapter.uri} is not a stored peft adapter (no adapter_config.json)",
                       field="spec.adapter.uri", code="unknown_adapter")
    if spec.base_model:
        check_model(runtime.models, spec.base_model, "spec.base_model")
    return spec


def accept_model_import_request(request: trainer_pb2.CreateModelImportJobRequest, runtime) -> trainer_pb2.ModelImportSpec:
    """CreateModelImportJob's checks: a valid, unused name and an existing folder or .gguf file."""
    from tunesmith.core.models import validate_name

    spec, v = start_create_checks(request)
    v.check(bool(spec.path) and "\x00" not in spec.path and len(spec.path) <= 4096, "spec.path",
            "is required: a Hugging Face model folder or a .gguf file on the trainer's machine")
    v.raise_if_any()
    try:
        validate_name(spec.name)
    except TunesmithError as exc:
        raise exc.prefixed("spec") from None
    path = check_local_path(spec.path, "spec.path")
    if not (path.is_dir() and (path / "config.json").is_file()) and not (path.is_file() and path.suffix == ".gguf"):
        from tunesmith.core.errors import NotFound

        raise NotFound(f"{spec.path!r} is neither a model folder (with config.json) nor a .gguf file",
                       field="spec.path", code="model_source_missing")
    if runtime.models.is_stored(spec.name):
        from tunesmith.core.errors import AlreadyExists

        raise AlreadyExists(f"a model named {spec.name!r} is already stored", field="spec.name")
    return spec
