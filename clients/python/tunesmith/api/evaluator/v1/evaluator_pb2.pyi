from google.protobuf import struct_pb2 as _struct_pb2
from tunesmith.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelUnderTest(_message.Message):
    __slots__ = ("label", "model", "adapter", "training_job_id")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    label: str
    model: str
    adapter: _common_pb2.ArtifactRef
    training_job_id: str
    def __init__(self, label: _Optional[str] = ..., model: _Optional[str] = ..., adapter: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., training_job_id: _Optional[str] = ...) -> None: ...

class GenerationConfig(_message.Message):
    __slots__ = ("max_new_tokens", "temperature", "top_p", "batch_size", "stop", "seed")
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., batch_size: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluationSpec(_message.Message):
    __slots__ = ("dataset_id", "split", "max_rows", "benchmarks", "models", "generation", "backend", "baseline", "regression_tolerance", "keep_samples", "options", "judge", "error_analysis", "html_report", "error_checks", "gate")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    BENCHMARKS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    KEEP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    HTML_REPORT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CHECKS_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    split: str
    max_rows: int
    benchmarks: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ModelUnderTest]
    generation: GenerationConfig
    backend: str
    baseline: str
    regression_tolerance: float
    keep_samples: int
    options: _struct_pb2.Struct
    judge: JudgeConfig
    error_analysis: bool
    html_report: bool
    error_checks: _containers.RepeatedScalarFieldContainer[str]
    gate: RegressionGate
    def __init__(self, dataset_id: _Optional[str] = ..., split: _Optional[str] = ..., max_rows: _Optional[int] = ..., benchmarks: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ModelUnderTest, _Mapping]]] = ..., generation: _Optional[_Union[GenerationConfig, _Mapping]] = ..., backend: _Optional[str] = ..., baseline: _Optional[str] = ..., regression_tolerance: _Optional[float] = ..., keep_samples: _Optional[int] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., judge: _Optional[_Union[JudgeConfig, _Mapping]] = ..., error_analysis: _Optional[bool] = ..., html_report: _Optional[bool] = ..., error_checks: _Optional[_Iterable[str]] = ..., gate: _Optional[_Union[RegressionGate, _Mapping]] = ...) -> None: ...

class RegressionGate(_message.Message):
    __slots__ = ("suites", "tolerance", "alpha", "max_rows", "enabled")
    SUITES_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    suites: _containers.RepeatedScalarFieldContainer[str]
    tolerance: float
    alpha: float
    max_rows: int
    enabled: bool
    def __init__(self, suites: _Optional[_Iterable[str]] = ..., tolerance: _Optional[float] = ..., alpha: _Optional[float] = ..., max_rows: _Optional[int] = ..., enabled: _Optional[bool] = ...) -> None: ...

class JudgeConfig(_message.Message):
    __slots__ = ("model", "rubric", "swap_positions", "elo_initial", "elo_k", "rule", "template", "leaderboard", "max_prompts", "max_new_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    SWAP_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    ELO_INITIAL_FIELD_NUMBER: _ClassVar[int]
    ELO_K_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    LEADERBOARD_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    rubric: str
    swap_positions: bool
    elo_initial: float
    elo_k: float
    rule: str
    template: str
    leaderboard: str
    max_prompts: int
    max_new_tokens: int
    def __init__(self, model: _Optional[str] = ..., rubric: _Optional[str] = ..., swap_positions: _Optional[bool] = ..., elo_initial: _Optional[float] = ..., elo_k: _Optional[float] = ..., rule: _Optional[str] = ..., template: _Optional[str] = ..., leaderboard: _Optional[str] = ..., max_prompts: _Optional[int] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class EloRating(_message.Message):
    __slots__ = ("label", "rating", "wins", "losses", "ties", "ci_low", "ci_high", "model")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    WINS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    TIES_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    label: str
    rating: float
    wins: int
    losses: int
    ties: int
    ci_low: float
    ci_high: float
    model: str
    def __init__(self, label: _Optional[str] = ..., rating: _Optional[float] = ..., wins: _Optional[int] = ..., losses: _Optional[int] = ..., ties: _Optional[int] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class CreateEvaluationRequest(_message.Message):
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
    spec: EvaluationSpec
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[EvaluationSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("benchmark", "metric", "value", "ci_low", "ci_high", "statistic", "higher_is_better")
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    benchmark: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    statistic: str
    higher_is_better: bool
    def __init__(self, benchmark: _Optional[str] = ..., metric: _Optional[str] = ..., value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., statistic: _Optional[str] = ..., higher_is_better: _Optional[bool] = ...) -> None: ...

class ModelScore(_message.Message):
    __slots__ = ("label", "model", "metrics", "generate_seconds", "tokens_per_second")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    label: str
    model: str
    metrics: _containers.RepeatedCompositeFieldContainer[MetricValue]
    generate_seconds: float
    tokens_per_second: float
    def __init__(self, label: _Optional[str] = ..., model: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[MetricValue, _Mapping]]] = ..., generate_seconds: _Optional[float] = ..., tokens_per_second: _Optional[float] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("baseline", "candidate", "metric", "delta", "p_value", "significant", "test", "improvement")
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    baseline: str
    candidate: str
    metric: str
    delta: float
    p_value: float
    significant: bool
    test: str
    improvement: float
    def __init__(self, baseline: _Optional[str] = ..., candidate: _Optional[str] = ..., metric: _Optional[str] = ..., delta: _Optional[float] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ..., test: _Optional[str] = ..., improvement: _Optional[float] = ...) -> None: ...

class GateCheck(_message.Message):
    __slots__ = ("suite", "candidate", "metric", "baseline_value", "candidate_value", "delta", "p_value", "passed", "kind")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VALUE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VALUE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    suite: str
    candidate: str
    metric: str
    baseline_value: float
    candidate_value: float
    delta: float
    p_value: float
    passed: bool
    kind: str
    def __init__(self, suite: _Optional[str] = ..., candidate: _Optional[str] = ..., metric: _Optional[str] = ..., baseline_value: _Optional[float] = ..., candidate_value: _Optional[float] = ..., delta: _Optional[float] = ..., p_value: _Optional[float] = ..., passed: _Optional[bool] = ..., kind: _Optional[str] = ...) -> None: ...

class GateResult(_message.Message):
    __slots__ = ("passed", "tolerance", "alpha", "checks", "suite_scores")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    SUITE_SCORES_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    tolerance: float
    alpha: float
    checks: _containers.RepeatedCompositeFieldContainer[GateCheck]
    suite_scores: _containers.RepeatedCompositeFieldContainer[ModelScore]
    def __init__(self, passed: _Optional[bool] = ..., tolerance: _Optional[float] = ..., alpha: _Optional[float] = ..., checks: _Optional[_Iterable[_Union[GateCheck, _Mapping]]] = ..., suite_scores: _Optional[_Iterable[_Union[ModelScore, _Mapping]]] = ...) -> None: ...

class ErrorExamples(_message.Message):
    __slots__ = ("label", "category", "count", "rows", "predictions")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    label: str
    category: str
    count: int
    rows: _containers.RepeatedScalarFieldContainer[int]
    predictions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, label: _Optional[str] = ..., category: _Optional[str] = ..., count: _Optional[int] = ..., rows: _Optional[_Iterable[int]] = ..., predictions: _Optional[_Iterable[str]] = ...) -> None: ...

class ConfusionPair(_message.Message):
    __slots__ = ("label", "reference", "prediction", "count")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    label: str
    reference: str
    prediction: str
    count: int
    def __init__(self, label: _Optional[str] = ..., reference: _Optional[str] = ..., prediction: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("row", "prompt", "reference", "outputs", "correct")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CorrectEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    ROW_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    row: int
    prompt: str
    reference: str
    outputs: _containers.ScalarMap[str, str]
    correct: _containers.ScalarMap[str, bool]
    def __init__(self, row: _Optional[int] = ..., prompt: _Optional[str] = ..., reference: _Optional[str] = ..., outputs: _Optional[_Mapping[str, str]] = ..., correct: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("scores", "comparisons", "samples", "rows", "regression_gate_passed", "error_analysis", "elo", "html_report", "gate", "error_examples", "confusions", "judged_pairs", "inconsistent_pairs")
    class ErrorAnalysisEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Metrics
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Metrics, _Mapping]] = ...) -> None: ...
    SCORES_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_GATE_PASSED_FIELD_NUMBER: _ClassVar[int]
    ERROR_ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    ELO_FIELD_NUMBER: _ClassVar[int]
    HTML_REPORT_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    CONFUSIONS_FIELD_NUMBER: _ClassVar[int]
    JUDGED_PAIRS_FIELD_NUMBER: _ClassVar[int]
    INCONSISTENT_PAIRS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ModelScore]
    comparisons: _containers.RepeatedCompositeFieldContainer[Comparison]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    rows: int
    regression_gate_passed: bool
    error_analysis: _containers.MessageMap[str, _common_pb2.Metrics]
    elo: _containers.RepeatedCompositeFieldContainer[EloRating]
    html_report: _common_pb2.ArtifactRef
    gate: GateResult
    error_examples: _containers.RepeatedCompositeFieldContainer[ErrorExamples]
    confusions: _containers.RepeatedCompositeFieldContainer[ConfusionPair]
    judged_pairs: int
    inconsistent_pairs: int
    def __init__(self, scores: _Optional[_Iterable[_Union[ModelScore, _Mapping]]] = ..., comparisons: _Optional[_Iterable[_Union[Comparison, _Mapping]]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., rows: _Optional[int] = ..., regression_gate_passed: _Optional[bool] = ..., error_analysis: _Optional[_Mapping[str, _common_pb2.Metrics]] = ..., elo: _Optional[_Iterable[_Union[EloRating, _Mapping]]] = ..., html_report: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., gate: _Optional[_Union[GateResult, _Mapping]] = ..., error_examples: _Optional[_Iterable[_Union[ErrorExamples, _Mapping]]] = ..., confusions: _Optional[_Iterable[_Union[ConfusionPair, _Mapping]]] = ..., judged_pairs: _Optional[int] = ..., inconsistent_pairs: _Optional[int] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("job", "spec", "report", "report_artifact")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    REPORT_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    spec: EvaluationSpec
    report: EvaluationReport
    report_artifact: _common_pb2.ArtifactRef
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., spec: _Optional[_Union[EvaluationSpec, _Mapping]] = ..., report: _Optional[_Union[EvaluationReport, _Mapping]] = ..., report_artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class ListEvaluationsResponse(_message.Message):
    __slots__ = ("evaluations", "next_page_token")
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    evaluations: _containers.RepeatedCompositeFieldContainer[Evaluation]
    next_page_token: str
    def __init__(self, evaluations: _Optional[_Iterable[_Union[Evaluation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
