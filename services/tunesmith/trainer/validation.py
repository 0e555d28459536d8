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
from tunesmith.core.checks import check_adapter_artifact, check_model, check_split
from tunesmith.core.devices import check_device
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound, TunesmithError
from tunesmith.core.gates import DEFAULT_ALPHA, DEFAULT_TOLERANCE, SUITE_NAMES, check_gate_fields
from tunesmith.core.validation import check_enum, check_int, check_local_path, check_struct, start_create_checks
from tunesmith.trainer import hyperparameters

#: Built-in typed method configs (the MethodSpec `config` oneof) -> the method name they configure.
CONFIG_METHODS = {"lora": "lora", "qlora": "qlora", "ia3": "ia3", "prefix_tuning": "prefix_tuning",
                  "prompt_tuning": "prompt_tuning", "full": "full"}
DEFAULT_METHOD = "lora"
DEFAULT_EXECUTOR = "local"



def _lora_options(c: trainer_pb2.LoraConfig) -> dict[str, Any]:
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


def _enum_name(enum, value: int, prefix: str) -> Any:
    """"nf4" for QUANT_TYPE_NF4; a value the enum does not know stays an int, for the plugin
    to refuse with its field."""
    return enum.Name(value).removeprefix(prefix).lower() if value in enum.values() else value


def _qlora_options(c: trainer_pb2.QloraConfig) -> dict[str, Any]:
    from tunesmith.api.common.v1 import common_pb2

    opts: dict[str, Any] = {}
    if c.HasField("lora"):
        opts["lora"] = _lora_options(c.lora)
    if c.bits:
        opts["bits"] = c.bits
    if c.quant_type:
        opts["quant_type"] = _enum_name(trainer_pb2.QuantType, c.quant_type, "QUANT_TYPE_")
    if c.compute_dtype:
        opts["compute_dtype"] = _enum_name(common_pb2.Dtype, c.compute_dtype, "DTYPE_")
    if c.double_quant:
        opts["double_quant"] = True
    return opts


def _ia3_options(c: trainer_pb2.Ia3Config) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if c.target_modules:
        opts["target_modules"] = list(c.target_modules)
    if c.feedforward_modules:
        opts["feedforward_modules"] = list(c.feedforward_modules)
    return opts


def _virtual_token_options(c) -> dict[str, Any]:
    """PrefixTuningConfig and PromptTuningConfig (init_text is the latter's only)."""
    opts: dict[str, Any] = {}
    if c.num_virtual_tokens:
        opts["num_virtual_tokens"] = c.num_virtual_tokens
    if isinstance(c, trainer_pb2.PromptTuningConfig) and c.init_text:
        opts["init_text"] = c.init_text
    return opts


def _no_options(c: trainer_pb2.FullConfig) -> dict[str, Any]:
    """FullConfig has no settings."""
    return {}


#: MethodSpec config -> its plugin options (proto zero values are left out: the plugin's defaults).
_CONFIG_OPTIONS = {
    "lora": lambda m: _lora_options(m.lora),
    "qlora": lambda m: _qlora_options(m.qlora),
    "ia3": lambda m: _ia3_options(m.ia3),
    "prefix_tuning": lambda m: _virtual_token_options(m.prefix_tuning),
    "prompt_tuning": lambda m: _virtual_token_options(m.prompt_tuning),
    "full": lambda m: _no_options(m.full),
    "options": lambda m: json_format.MessageToDict(m.options),
}


def method_options(method: trainer_pb2.MethodSpec) -> dict[str, Any]:
    """The method plugin's options from the typed config (or the third-party Struct): QloraConfig
    as {"lora": {...}, "bits", "quant_type": "nf4" | "fp4", "compute_dtype": "float32" | ...,
    "double_quant"}, the others as their own fields."""
    which = method.WhichOneof("config")
    return {} if which is None else _CONFIG_OPTIONS[which](method)


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
        why = (f"the {method.name} method saves a whole model, so there is no adapter to merge"
               if plugin.artifact_kind == "model" else
               f"{method.name} adapters cannot be merged into the base weights (they learn virtual tokens "
               f"or other state that is not a weight delta; they are evaluated and served on top of their base)")
        raise InvalidArgument(f"{why}; leave merge unset", field="spec.merge")


def _accept_gate(spec: trainer_pb2.TrainingJobSpec, runtime) -> None:
    """Defaults for the quality gate; FailedPrecondition when no evaluator service is known."""
    runtime.require_peer("evaluator", needed_by="the quality gate", field="spec.gate")
    if not spec.gate.suites:
        spec.gate.suites.extend(SUITE_NAMES)
    spec.gate.tolerance = spec.gate.tolerance or DEFAULT_TOLERANCE
    spec.gate.alpha = spec.gate.alpha or DEFAULT_ALPHA


def _check_serve_fields(v, spec: trainer_pb2.TrainingJobSpec) -> None:
    """serve_as's name and serve_check's ranges (serve_check needs serve_as)."""
    from tunesmith.trainer.handoff import BASE_SUFFIX, MAX_MAX_NEW_TOKENS, MAX_PROMPTS, SERVED_NAME

    c = spec.serve_check
    if not spec.serve_as:
        v.check(not spec.HasField("serve_check"), "spec.serve_check",
                "checks the serve_as hand-off: set spec.serve_as (the name to serve the model under) or leave it unset")
        return
    v.check(bool(SERVED_NAME.match(spec.serve_as)), "spec.serve_as",
            "must be 1-128 characters of letters, digits, '.', '_', ':', '/', '-', starting with a letter or digit "
            f"(the inference service's model names), got {spec.serve_as!r}")
    v.check(len(spec.serve_as) + len(BASE_SUFFIX) <= 128 or spec.merge, "spec.serve_as",
            f"an adapter is served on its base, named {spec.serve_as[:20]!r}...{BASE_SUFFIX!r}; that name must fit "
            f"in 128 characters, so serve_as may have at most {128 - len(BASE_SUFFIX)}")
    check_int(v, c.prompts, "spec.serve_check.prompts", 1, MAX_PROMPTS, zero_means="8")
    check_int(v, c.max_new_tokens, "spec.serve_check.max_new_tokens", 1, MAX_MAX_NEW_TOKENS, zero_means="32")


def _accept_serve_as(spec: trainer_pb2.TrainingJobSpec, runtime, method) -> None:
    """Defaults for serve_check; FailedPrecondition when no inference service is known;
    InvalidArgument when the requested backend cannot serve what the method saves."""
    from tunesmith.trainer.reference import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS

    runtime.require_peer("inference", needed_by="serve_as", field="spec.serve_as")
    c = spec.serve_check
    if c.backend:
        runtime.registry.require("inference_backends", c.backend, "spec.serve_check.backend")
    unmerged_adapter = method.artifact_kind != "model" and not spec.merge
    if c.backend == "vllm" and unmerged_adapter and not method.servable_by_vllm:
        raise InvalidArgument(f"vLLM cannot serve {method.name} adapters unmerged; set spec.merge (where the method "
                              f"supports it), serve on the transformers backend, or leave the backend empty",
                              field="spec.serve_check.backend")
    if c.backend == "vllm" and unmerged_adapter and method.name == "lora" and spec.method.lora.use_dora:
        raise InvalidArgument("vLLM cannot serve DoRA adapters unmerged; set spec.merge, serve on the transformers "
                              "backend, or leave the backend empty", field="spec.serve_check.backend")
    c.prompts = c.prompts or DEFAULT_PROMPTS
    c.max_new_tokens = c.max_new_tokens or DEFAULT_MAX_NEW_TOKENS


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
    v.check(0 <= spec.retry.max_restarts <= MAX_RESTARTS, "spec.retry.max_restarts",
            f"must be in [0, {MAX_RESTARTS}], got {spec.retry.max_restarts}")
    v.check(spec.num_processes <= MAX_PROCESSES, "spec.num_processes",
            f"must be at most {MAX_PROCESSES}, got {spec.num_processes}")
    if spec.gate.enabled:
        check_gate_fields(v, spec.gate.suites, spec.gate.tolerance, spec.gate.alpha, spec.gate.max_rows, "spec.gate")
    else:
        v.check(not spec.HasField("gate") or spec.gate == trainer_pb2.QualityGate(), "spec.gate.enabled",
                "set enabled to run the gate (its other fields are set but it is off)")
    _check_serve_fields(v, spec)
    v.raise_if_any()

    _check_method(spec, runtime.registry)
    hp = hyperparameters.from_proto(spec.hyperparameters, device=spec.device)
    recipe = _check_recipe(spec, runtime.registry)
    method = runtime.registry.get("peft_methods", spec.method.name)
    if hp["packing"] and not recipe.supports_packing:
        raise InvalidArgument(f"the {recipe.name} recipe does not pack rows", field="spec.hyperparameters.packing")
    if hp["packing"] and method.prompt_learning:
        raise InvalidArgument(f"{method.name} adds virtual tokens, which packed rows cannot carry",
                              field="spec.hyperparameters.packing")
    spec.executor = spec.executor or DEFAULT_EXECUTOR
    runtime.registry.require("training_executors", spec.executor, "spec.executor")
    if problem:
        raise FailedPrecondition(problem, field="spec.device", code="device_unavailable")
    if spec.num_processes > 1 and spec.device.startswith("cuda"):
        from tunesmith.core.devices import cuda_device_count

        gpus = cuda_device_count()
        if gpus < spec.num_processes:
            raise FailedPrecondition(f"{spec.num_processes} processes need {spec.num_processes} GPUs; {gpus} visible",
                                     field="spec.num_processes", code="device_unavailable")
    if spec.num_processes > 1 and spec.executor != DEFAULT_EXECUTOR:
        raise InvalidArgument(f"multi-process launch (torchrun) is built for the {DEFAULT_EXECUTOR!r} executor",
                              field="spec.num_processes")

    check_model(runtime.models, spec.base_model, "spec.base_model")
    check_reference_model(spec, runtime)
    if spec.gate.enabled:
        _accept_gate(spec, runtime)
    if spec.serve_as:
        _accept_serve_as(spec, runtime, method)
    dataset = runtime.datasets.get(spec.dataset_id, field="spec.dataset_id")
    spec.train_split = spec.train_split or "train"
    check_split(dataset, spec.train_split, "spec.train_split")
    if not spec.validation_split and "validation" in {s.name for s in dataset.splits}:
        spec.validation_split = "validation"
    if spec.validation_split:
        check_split(dataset, spec.validation_split, "spec.validation_split", need_rows=False)
        if spec.validation_split == spec.train_split:
            raise InvalidArgument("must differ from spec.train_split", field="spec.validation_split")
    missing = [f for f in recipe.row_fields if f not in _ROW_FIELDS.get(dataset.schema, _ROW_FIELDS[""])]
    if missing:
        hint = ("; prepare a preference dataset (schema SCHEMA_PREFERENCE: prompt, chosen, rejected)"
                if "rejected" in missing else "")
        raise InvalidArgument(f"the {recipe.name} recipe needs rows with {', '.join(recipe.row_fields)}, but "
                              f"dataset {dataset.id!r} ({dataset.schema or 'no'} schema) has no "
                              f"{', '.join(missing)}{hint}", field="spec.dataset_id")
    if spec.resume_from_checkpoint:
        _check_checkpoint(runtime, spec.resume_from_checkpoint, "spec.resume_from_checkpoint",
                          {"method": spec.method.name, "recipe": spec.recipe})
    return spec


#: Prepared row fields by dataset schema (the data service's prepared-row format).
_ROW_FIELDS = {"": ("prompt", "completion"), "preference": ("prompt", "completion", "rejected")}
MAX_RESTARTS = 100
MAX_PROCESSES = 64
#: Objective enum -> the built-in recipe that serves it.
OBJECTIVE_RECIPES = {trainer_pb2.OBJECTIVE_UNSPECIFIED: "sft", trainer_pb2.OBJECTIVE_SFT: "sft",
                     trainer_pb2.OBJECTIVE_DPO: "dpo"}


def recipe_options(spec: trainer_pb2.TrainingJobSpec) -> dict[str, Any]:
    """The recipe's options from the spec: DpoConfig for the DPO objective, else {}."""
    if not spec.HasField("dpo"):
        return {}
    d = spec.dpo
    opts: dict[str, Any] = {}
    if d.beta:
        opts["beta"] = d.beta
    if d.loss_type:
        opts["loss_type"] = trainer_pb2.DpoLossType.Name(d.loss_type).removeprefix("DPO_LOSS_TYPE_").lower()
    if d.reference_policy:
        opts["reference_policy"] = trainer_pb2.ReferenceModelPolicy.Name(
            d.reference_policy).removeprefix("REFERENCE_MODEL_POLICY_").lower()
    if d.reference_model:
        opts["reference_model"] = d.reference_model
    return opts


def _check_recipe(spec: trainer_pb2.TrainingJobSpec, registry):
    """Fill in spec.recipe from the objective; check it exists, serves the objective, and takes
    the spec's recipe options. The recipe plugin."""
    objective = OBJECTIVE_RECIPES[spec.objective]
    name = spec.recipe or objective
    recipe = registry.require("training_recipes", name, "spec.recipe")
    if spec.recipe and spec.objective and recipe.objective and recipe.objective != objective:
        raise InvalidArgument(f"the {name!r} recipe serves the {recipe.objective} objective, not {objective}",
                              field="spec.recipe")
    spec.recipe = name
    if spec.HasField("dpo") and recipe.objective != "dpo":
        raise InvalidArgument("DPO settings apply to the DPO objective only (set spec.objective to OBJECTIVE_DPO)",
                              field="spec.dpo")
    check_enum_values = [(trainer_pb2.DpoLossType, spec.dpo.loss_type, "spec.dpo.loss_type"),
                         (trainer_pb2.ReferenceModelPolicy, spec.dpo.reference_policy, "spec.dpo.reference_policy")]
    for enum, value, path in check_enum_values:
        if value not in enum.values():
            raise InvalidArgument(f"unknown value {value}", field=path)
    try:
        recipe.validate_options(recipe_options(spec))
    except TunesmithError as exc:
        raise exc.prefixed("spec.dpo" if spec.HasField("dpo") else "spec.recipe") from None
    return recipe


def check_reference_model(spec: trainer_pb2.TrainingJobSpec, runtime) -> None:
    """A separate DPO reference model must be in the model store (or a stored model artifact)."""
    if spec.dpo.reference_model:
        check_model(runtime.models, spec.dpo.reference_model, "spec.dpo.reference_model")


def _check_checkpoint(runtime, uri: str, path: str, expect: dict[str, Any]):
    """A stored checkpoint artifact whose metadata reads and matches `expect`: (its ArtifactRef,
    its step)."""
    from tunesmith.core.formats import FormatError
    from tunesmith.core.formats.checkpoint import identity_mismatch, read_meta
    from tunesmith.core.records import artifact_ref
    from tunesmith.core.storage import parse_artifact_uri

    try:
        kind, _ = parse_artifact_uri(uri)
    except InvalidArgument:
        kind = ""
    if kind != "checkpoint":
        raise InvalidArgument(f"must be an artifact://checkpoint/<sha256> URI, got {uri!r}", field=path)
    try:
        folder = runtime.storage.resolve(uri)
    except TunesmithError:
        raise NotFound(f"no checkpoint {uri} is stored", field=path) from None
    try:
        meta = read_meta(folder, uri)
    except FormatError as exc:
        raise FailedPrecondition(exc.message, field=path, code="bad_checkpoint") from None
    problem = identity_mismatch(meta.identity, expect)
    if problem:
        raise FailedPrecondition(f"{uri} belongs to another run: {problem}", field=path, code="bad_checkpoint")
    return artifact_ref(runtime.storage.artifact(uri)), meta.step


def accept_resume_request(request: trainer_pb2.ResumeTrainingJobRequest, runtime):
    """ResumeTrainingJob's checks: the checkpoint (when named) is a stored, readable checkpoint;
    (its ArtifactRef, its step), or None for "the job's latest". The job's state is checked by the
    job manager."""
    if not request.job_id:
        raise InvalidArgument("is required", field="job_id")
    if not request.checkpoint:
        return None
    return _check_checkpoint(runtime, request.checkpoint, "checkpoint", {})


def accept_merge_request(request: trainer_pb2.CreateMergeJobRequest, runtime) -> trainer_pb2.MergeSpec:
    """CreateMergeJob's checks: the adapter artifact exists and is a peft adapter, the base model
    (when named) exists, the dtype is known."""
    from tunesmith.api.common.v1 import common_pb2

    spec, v = start_create_checks(request)
    check_enum(v, common_pb2.Dtype, spec.dtype, "spec.dtype")
    v.raise_if_any()
    folder = check_adapter_artifact(runtime.storage, spec.adapter.uri, "spec.adapter.uri")
    _refuse_unmergeable(folder, spec.adapter.uri, runtime.registry)
    if spec.base_model:
        check_model(runtime.models, spec.base_model, "spec.base_model")
    return spec


#: peft types whose adapters hold no weight deltas (prompt learning): merge_and_unload cannot merge them.
_UNMERGEABLE_PEFT_TYPES = frozenset({"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING",
                                     "ADAPTION_PROMPT", "CPT"})


def _refuse_unmergeable(folder, uri: str, registry) -> None:
    """FailedPrecondition when the adapter's method cannot be merged: the method named in its
    tunesmith-adapter.json when that plugin is registered (its supports_merge), else the peft_type
    in adapter_config.json (prompt learning cannot be merged)."""
    import json

    from tunesmith.core.formats.adapter import META_FILE, PEFT_CONFIG

    def read(name: str) -> dict[str, Any]:
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # unreadable: the merge job reports it
        return value if isinstance(value, dict) else {}

    method = str(read(META_FILE).get("method") or "")
    if method and method in registry.names("peft_methods"):
        mergeable = registry.get("peft_methods", method).supports_merge
        what = f"the {method!r} method"
    else:
        peft_type = str(read(PEFT_CONFIG).get("peft_type") or "")
        mergeable = peft_type not in _UNMERGEABLE_PEFT_TYPES
        what = f"peft {peft_type}"
    if not mergeable:
        raise FailedPrecondition(
            f"{uri} was trained with {what}, whose adapters cannot be merged into the base weights (prefix and "
            f"prompt tuning learn virtual tokens, not weight deltas); evaluate or serve it on top of its base "
            f"model instead", field="spec.adapter.uri", code="adapter_not_mergeable")


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
