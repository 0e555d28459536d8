from google.protobuf import struct_pb2 as _struct_pb2
from tunesmith.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_SFT: _ClassVar[Objective]
    OBJECTIVE_DPO: _ClassVar[Objective]

class LrScheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LR_SCHEDULER_UNSPECIFIED: _ClassVar[LrScheduler]
    LR_SCHEDULER_LINEAR: _ClassVar[LrScheduler]
    LR_SCHEDULER_COSINE: _ClassVar[LrScheduler]
    LR_SCHEDULER_CONSTANT: _ClassVar[LrScheduler]

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_ADAMW: _ClassVar[Optimizer]
    OPTIMIZER_ADAMW_8BIT: _ClassVar[Optimizer]
    OPTIMIZER_SGD: _ClassVar[Optimizer]

class QuantType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANT_TYPE_UNSPECIFIED: _ClassVar[QuantType]
    QUANT_TYPE_NF4: _ClassVar[QuantType]
    QUANT_TYPE_FP4: _ClassVar[QuantType]

class DpoLossType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DPO_LOSS_TYPE_UNSPECIFIED: _ClassVar[DpoLossType]
    DPO_LOSS_TYPE_SIGMOID: _ClassVar[DpoLossType]
    DPO_LOSS_TYPE_IPO: _ClassVar[DpoLossType]
    DPO_LOSS_TYPE_HINGE: _ClassVar[DpoLossType]

class ReferenceModelPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFERENCE_MODEL_POLICY_UNSPECIFIED: _ClassVar[ReferenceModelPolicy]
    REFERENCE_MODEL_POLICY_FROZEN_BASE: _ClassVar[ReferenceModelPolicy]
    REFERENCE_MODEL_POLICY_SEPARATE_MODEL: _ClassVar[ReferenceModelPolicy]
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_SFT: Objective
OBJECTIVE_DPO: Objective
LR_SCHEDULER_UNSPECIFIED: LrScheduler
LR_SCHEDULER_LINEAR: LrScheduler
LR_SCHEDULER_COSINE: LrScheduler
LR_SCHEDULER_CONSTANT: LrScheduler
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_ADAMW: Optimizer
OPTIMIZER_ADAMW_8BIT: Optimizer
OPTIMIZER_SGD: Optimizer
QUANT_TYPE_UNSPECIFIED: QuantType
QUANT_TYPE_NF4: QuantType
QUANT_TYPE_FP4: QuantType
DPO_LOSS_TYPE_UNSPECIFIED: DpoLossType
DPO_LOSS_TYPE_SIGMOID: DpoLossType
DPO_LOSS_TYPE_IPO: DpoLossType
DPO_LOSS_TYPE_HINGE: DpoLossType
REFERENCE_MODEL_POLICY_UNSPECIFIED: ReferenceModelPolicy
REFERENCE_MODEL_POLICY_FROZEN_BASE: ReferenceModelPolicy
REFERENCE_MODEL_POLICY_SEPARATE_MODEL: ReferenceModelPolicy

class Hyperparameters(_message.Message):
    __slots__ = ("epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm", "seed", "max_seq_length", "dtype", "gradient_checkpointing", "completion_only_loss", "packing", "eval_every_steps", "early_stopping_patience", "checkpoint_every_steps", "log_every_steps", "optimizer")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_ONLY_LOSS_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOG_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    max_steps: int
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    lr_scheduler: LrScheduler
    warmup_ratio: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    max_seq_length: int
    dtype: _common_pb2.Dtype
    gradient_checkpointing: bool
    completion_only_loss: bool
    packing: bool
    eval_every_steps: int
    early_stopping_patience: int
    checkpoint_every_steps: int
    log_every_steps: int
    optimizer: Optimizer
    def __init__(self, epochs: _Optional[int] = ..., max_steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., lr_scheduler: _Optional[_Union[LrScheduler, str]] = ..., warmup_ratio: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., seed: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., dtype: _Optional[_Union[_common_pb2.Dtype, str]] = ..., gradient_checkpointing: _Optional[bool] = ..., completion_only_loss: _Optional[bool] = ..., packing: _Optional[bool] = ..., eval_every_steps: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ..., checkpoint_every_steps: _Optional[int] = ..., log_every_steps: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules", "use_dora", "use_rslora")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    USE_DORA_FIELD_NUMBER: _ClassVar[int]
    USE_RSLORA_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    use_dora: bool
    use_rslora: bool
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., use_dora: _Optional[bool] = ..., use_rslora: _Optional[bool] = ...) -> None: ...

class QloraConfig(_message.Message):
    __slots__ = ("lora", "bits", "quant_type", "compute_dtype", "double_quant")
    LORA_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    QUANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_QUANT_FIELD_NUMBER: _ClassVar[int]
    lora: LoraConfig
    bits: int
    quant_type: QuantType
    compute_dtype: _common_pb2.Dtype
    double_quant: bool
    def __init__(self, lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., bits: _Optional[int] = ..., quant_type: _Optional[_Union[QuantType, str]] = ..., compute_dtype: _Optional[_Union[_common_pb2.Dtype, str]] = ..., double_quant: _Optional[bool] = ...) -> None: ...

class Ia3Config(_message.Message):
    __slots__ = ("target_modules", "feedforward_modules")
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    FEEDFORWARD_MODULES_FIELD_NUMBER: _ClassVar[int]
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    feedforward_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target_modules: _Optional[_Iterable[str]] = ..., feedforward_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class PrefixTuningConfig(_message.Message):
    __slots__ = ("num_virtual_tokens",)
    NUM_VIRTUAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    num_virtual_tokens: int
    def __init__(self, num_virtual_tokens: _Optional[int] = ...) -> None: ...

class PromptTuningConfig(_message.Message):
    __slots__ = ("num_virtual_tokens", "init_text")
    NUM_VIRTUAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INIT_TEXT_FIELD_NUMBER: _ClassVar[int]
    num_virtual_tokens: int
    init_text: str
    def __init__(self, num_virtual_tokens: _Optional[int] = ..., init_text: _Optional[str] = ...) -> None: ...

class FullConfig(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MethodSpec(_message.Message):
    __slots__ = ("name", "lora", "qlora", "ia3", "prefix_tuning", "prompt_tuning", "full", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    QLORA_FIELD_NUMBER: _ClassVar[int]
    IA3_FIELD_NUMBER: _ClassVar[int]
    PREFIX_TUNING_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TUNING_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    lora: LoraConfig
    qlora: QloraConfig
    ia3: Ia3Config
    prefix_tuning: PrefixTuningConfig
    prompt_tuning: PromptTuningConfig
    full: FullConfig
    options: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., qlora: _Optional[_Union[QloraConfig, _Mapping]] = ..., ia3: _Optional[_Union[Ia3Config, _Mapping]] = ..., prefix_tuning: _Optional[_Union[PrefixTuningConfig, _Mapping]] = ..., prompt_tuning: _Optional[_Union[PromptTuningConfig, _Mapping]] = ..., full: _Optional[_Union[FullConfig, _Mapping]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DpoConfig(_message.Message):
    __slots__ = ("beta", "loss_type", "reference_policy", "reference_model")
    BETA_FIELD_NUMBER: _ClassVar[int]
    LOSS_TYPE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_POLICY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MODEL_FIELD_NUMBER: _ClassVar[int]
    beta: float
    loss_type: DpoLossType
    reference_policy: ReferenceModelPolicy
    reference_model: str
    def __init__(self, beta: _Optional[float] = ..., loss_type: _Optional[_Union[DpoLossType, str]] = ..., reference_policy: _Optional[_Union[ReferenceModelPolicy, str]] = ..., reference_model: _Optional[str] = ...) -> None: ...

class TrainingJobSpec(_message.Message):
    __slots__ = ("base_model", "dataset_id", "train_split", "validation_split", "objective", "method", "hyperparameters", "merge", "executor", "device", "num_processes", "resume_from_checkpoint", "serve_as", "dpo", "recipe", "retry", "gate", "serve_check")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SPLIT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NUM_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SERVE_AS_FIELD_NUMBER: _ClassVar[int]
    DPO_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    SERVE_CHECK_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    dataset_id: str
    train_split: str
    validation_split: str
    objective: Objective
    method: MethodSpec
    hyperparameters: Hyperparameters
    merge: bool
    executor: str
    device: str
    num_processes: int
    resume_from_checkpoint: str
    serve_as: str
    dpo: DpoConfig
    recipe: str
    retry: RetryPolicy
    gate: QualityGate
    serve_check: ServeCheck
    def __init__(self, base_model: _Optional[str] = ..., dataset_id: _Optional[str] = ..., train_split: _Optional[str] = ..., validation_split: _Optional[str] = ..., objective: _Optional[_Union[Objective, str]] = ..., method: _Optional[_Union[MethodSpec, _Mapping]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., merge: _Optional[bool] = ..., executor: _Optional[str] = ..., device: _Optional[str] = ..., num_processes: _Optional[int] = ..., resume_from_checkpoint: _Optional[str] = ..., serve_as: _Optional[str] = ..., dpo: _Optional[_Union[DpoConfig, _Mapping]] = ..., recipe: _Optional[str] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., gate: _Optional[_Union[QualityGate, _Mapping]] = ..., serve_check: _Optional[_Union[ServeCheck, _Mapping]] = ...) -> None: ...

class ServeCheck(_message.Message):
    __slots__ = ("prompts", "max_new_tokens", "strict", "backend")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    prompts: int
    max_new_tokens: int
    strict: bool
    backend: str
    def __init__(self, prompts: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., strict: _Optional[bool] = ..., backend: _Optional[str] = ...) -> None: ...

class QualityGate(_message.Message):
    __slots__ = ("enabled", "suites", "tolerance", "alpha", "max_rows")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SUITES_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    suites: _containers.RepeatedScalarFieldContainer[str]
    tolerance: float
    alpha: float
    max_rows: int
    def __init__(self, enabled: _Optional[bool] = ..., suites: _Optional[_Iterable[str]] = ..., tolerance: _Optional[float] = ..., alpha: _Optional[float] = ..., max_rows: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("disabled", "max_restarts")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    max_restarts: int
    def __init__(self, disabled: _Optional[bool] = ..., max_restarts: _Optional[int] = ...) -> None: ...

class ResumeTrainingJobRequest(_message.Message):
    __slots__ = ("job_id", "checkpoint")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    checkpoint: str
    def __init__(self, job_id: _Optional[str] = ..., checkpoint: _Optional[str] = ...) -> None: ...

class LossPoint(_message.Message):
    __slots__ = ("step", "loss")
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    step: int
    loss: float
    def __init__(self, step: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class CreateTrainingJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingJobSpec
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TrainingResult(_message.Message):
    __slots__ = ("adapter", "merged_model", "checkpoints", "train_seconds", "train_tokens", "tokens_per_second", "final_train_loss", "first_train_loss", "best_validation_loss", "steps", "trainable_parameters", "total_parameters", "peak_memory_bytes", "stopped_early", "model", "final_metrics", "gate_evaluation_id", "gate_passed", "served_model", "served_base", "serve_check")
    class FinalMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    MERGED_MODEL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FINAL_TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    FIRST_TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    BEST_VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    STOPPED_EARLY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINAL_METRICS_FIELD_NUMBER: _ClassVar[int]
    GATE_EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    GATE_PASSED_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVED_BASE_FIELD_NUMBER: _ClassVar[int]
    SERVE_CHECK_FIELD_NUMBER: _ClassVar[int]
    adapter: _common_pb2.ArtifactRef
    merged_model: _common_pb2.ArtifactRef
    checkpoints: _containers.RepeatedCompositeFieldContainer[_common_pb2.ArtifactRef]
    train_seconds: float
    train_tokens: int
    tokens_per_second: float
    final_train_loss: float
    first_train_loss: float
    best_validation_loss: float
    steps: int
    trainable_parameters: int
    total_parameters: int
    peak_memory_bytes: int
    stopped_early: bool
    model: _common_pb2.ArtifactRef
    final_metrics: _containers.ScalarMap[str, float]
    gate_evaluation_id: str
    gate_passed: bool
    served_model: str
    served_base: str
    serve_check: ServeCheckResult
    def __init__(self, adapter: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., merged_model: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., checkpoints: _Optional[_Iterable[_Union[_common_pb2.ArtifactRef, _Mapping]]] = ..., train_seconds: _Optional[float] = ..., train_tokens: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., final_train_loss: _Optional[float] = ..., first_train_loss: _Optional[float] = ..., best_validation_loss: _Optional[float] = ..., steps: _Optional[int] = ..., trainable_parameters: _Optional[int] = ..., total_parameters: _Optional[int] = ..., peak_memory_bytes: _Optional[int] = ..., stopped_early: _Optional[bool] = ..., model: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., final_metrics: _Optional[_Mapping[str, float]] = ..., gate_evaluation_id: _Optional[str] = ..., gate_passed: _Optional[bool] = ..., served_model: _Optional[str] = ..., served_base: _Optional[str] = ..., serve_check: _Optional[_Union[ServeCheckResult, _Mapping]] = ...) -> None: ...

class ServeMismatch(_message.Message):
    __slots__ = ("prompt", "expected", "got", "expected_tokens", "got_tokens", "expected_finish", "got_finish")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    GOT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GOT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FINISH_FIELD_NUMBER: _ClassVar[int]
    GOT_FINISH_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    expected: str
    got: str
    expected_tokens: int
    got_tokens: int
    expected_finish: str
    got_finish: str
    def __init__(self, prompt: _Optional[str] = ..., expected: _Optional[str] = ..., got: _Optional[str] = ..., expected_tokens: _Optional[int] = ..., got_tokens: _Optional[int] = ..., expected_finish: _Optional[str] = ..., got_finish: _Optional[str] = ...) -> None: ...

class ServeCheckResult(_message.Message):
    __slots__ = ("agreement_rate", "prompts_compared", "prompts_agreed", "mismatches", "eos_ok", "warnings", "backend", "passed")
    AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_COMPARED_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_AGREED_FIELD_NUMBER: _ClassVar[int]
    MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    EOS_OK_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    agreement_rate: float
    prompts_compared: int
    prompts_agreed: int
    mismatches: _containers.RepeatedCompositeFieldContainer[ServeMismatch]
    eos_ok: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    passed: bool
    def __init__(self, agreement_rate: _Optional[float] = ..., prompts_compared: _Optional[int] = ..., prompts_agreed: _Optional[int] = ..., mismatches: _Optional[_Iterable[_Union[ServeMismatch, _Mapping]]] = ..., eos_ok: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., passed: _Optional[bool] = ...) -> None: ...

class TrainingCurves(_message.Message):
    __slots__ = ("train_loss", "validation_loss")
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    train_loss: _containers.RepeatedCompositeFieldContainer[LossPoint]
    validation_loss: _containers.RepeatedCompositeFieldContainer[LossPoint]
    def __init__(self, train_loss: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ..., validation_loss: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("job", "spec", "result", "curves", "attempts", "latest_checkpoint", "latest_checkpoint_step")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CURVES_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    spec: TrainingJobSpec
    result: TrainingResult
    curves: TrainingCurves
    attempts: int
    latest_checkpoint: _common_pb2.ArtifactRef
    latest_checkpoint_step: int
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., result: _Optional[_Union[TrainingResult, _Mapping]] = ..., curves: _Optional[_Union[TrainingCurves, _Mapping]] = ..., attempts: _Optional[int] = ..., latest_checkpoint: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., latest_checkpoint_step: _Optional[int] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MergeSpec(_message.Message):
    __slots__ = ("adapter", "base_model", "dtype")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    adapter: _common_pb2.ArtifactRef
    base_model: str
    dtype: _common_pb2.Dtype
    def __init__(self, adapter: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., base_model: _Optional[str] = ..., dtype: _Optional[_Union[_common_pb2.Dtype, str]] = ...) -> None: ...

class CreateMergeJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    spec: MergeSpec
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[MergeSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MergeJob(_message.Message):
    __slots__ = ("job", "spec", "merged_model")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    MERGED_MODEL_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    spec: MergeSpec
    merged_model: _common_pb2.ArtifactRef
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., spec: _Optional[_Union[MergeSpec, _Mapping]] = ..., merged_model: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class PlanMemoryRequest(_message.Message):
    __slots__ = ("spec", "device", "device_memory_bytes", "model_config_json")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingJobSpec
    device: str
    device_memory_bytes: int
    model_config_json: str
    def __init__(self, spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., device: _Optional[str] = ..., device_memory_bytes: _Optional[int] = ..., model_config_json: _Optional[str] = ...) -> None: ...

class MemoryPlan(_message.Message):
    __slots__ = ("weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "total_bytes", "fits", "suggestions", "total_parameters", "trainable_parameters", "device_memory_bytes", "batch_size", "sequence_length")
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    total_bytes: int
    fits: bool
    suggestions: _containers.RepeatedScalarFieldContainer[str]
    total_parameters: int
    trainable_parameters: int
    device_memory_bytes: int
    batch_size: int
    sequence_length: int
    def __init__(self, weights_bytes: _Optional[int] = ..., gradients_bytes: _Optional[int] = ..., optimizer_bytes: _Optional[int] = ..., activations_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., fits: _Optional[bool] = ..., suggestions: _Optional[_Iterable[str]] = ..., total_parameters: _Optional[int] = ..., trainable_parameters: _Optional[int] = ..., device_memory_bytes: _Optional[int] = ..., batch_size: _Optional[int] = ..., sequence_length: _Optional[int] = ...) -> None: ...

class SweepAxis(_message.Message):
    __slots__ = ("parameter", "values")
    PARAMETER_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    parameter: str
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, parameter: _Optional[str] = ..., values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class CreateSweepRequest(_message.Message):
    __slots__ = ("base_spec", "axes", "evaluation", "max_parallel", "idempotency_key")
    BASE_SPEC_FIELD_NUMBER: _ClassVar[int]
    AXES_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    base_spec: TrainingJobSpec
    axes: _containers.RepeatedCompositeFieldContainer[SweepAxis]
    evaluation: str
    max_parallel: int
    idempotency_key: str
    def __init__(self, base_spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., axes: _Optional[_Iterable[_Union[SweepAxis, _Mapping]]] = ..., evaluation: _Optional[str] = ..., max_parallel: _Optional[int] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Sweep(_message.Message):
    __slots__ = ("id", "state", "trials")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: _common_pb2.JobState
    trials: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., trials: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ...) -> None: ...

class GetSweepRequest(_message.Message):
    __slots__ = ("sweep_id",)
    SWEEP_ID_FIELD_NUMBER: _ClassVar[int]
    sweep_id: str
    def __init__(self, sweep_id: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "artifact", "architecture", "parameters", "source", "has_chat_template")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HAS_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact: _common_pb2.ArtifactRef
    architecture: str
    parameters: int
    source: str
    has_chat_template: bool
    def __init__(self, name: _Optional[str] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., architecture: _Optional[str] = ..., parameters: _Optional[int] = ..., source: _Optional[str] = ..., has_chat_template: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class ModelImportSpec(_message.Message):
    __slots__ = ("name", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class CreateModelImportJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    spec: ModelImportSpec
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[ModelImportSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ModelImportJob(_message.Message):
    __slots__ = ("job", "spec", "model")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    spec: ModelImportSpec
    model: Model
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., spec: _Optional[_Union[ModelImportSpec, _Mapping]] = ..., model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...
