import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tunesmith.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_FORMAT_UNSPECIFIED: _ClassVar[FileFormat]
    FILE_FORMAT_CSV: _ClassVar[FileFormat]
    FILE_FORMAT_JSONL: _ClassVar[FileFormat]
    FILE_FORMAT_JSON: _ClassVar[FileFormat]
    FILE_FORMAT_PARQUET: _ClassVar[FileFormat]

class Schema(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEMA_UNSPECIFIED: _ClassVar[Schema]
    SCHEMA_CLASSIFICATION: _ClassVar[Schema]
    SCHEMA_ALPACA: _ClassVar[Schema]
    SCHEMA_CHAT: _ClassVar[Schema]
    SCHEMA_PROMPT_COMPLETION: _ClassVar[Schema]
    SCHEMA_TEXT: _ClassVar[Schema]
    SCHEMA_PREFERENCE: _ClassVar[Schema]
    SCHEMA_MULTIPLE_CHOICE: _ClassVar[Schema]
FILE_FORMAT_UNSPECIFIED: FileFormat
FILE_FORMAT_CSV: FileFormat
FILE_FORMAT_JSONL: FileFormat
FILE_FORMAT_JSON: FileFormat
FILE_FORMAT_PARQUET: FileFormat
SCHEMA_UNSPECIFIED: Schema
SCHEMA_CLASSIFICATION: Schema
SCHEMA_ALPACA: Schema
SCHEMA_CHAT: Schema
SCHEMA_PROMPT_COMPLETION: Schema
SCHEMA_TEXT: Schema
SCHEMA_PREFERENCE: Schema
SCHEMA_MULTIPLE_CHOICE: Schema

class SplitSpec(_message.Message):
    __slots__ = ("validation_fraction", "validation_rows", "seed", "stratify")
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STRATIFY_FIELD_NUMBER: _ClassVar[int]
    validation_fraction: float
    validation_rows: int
    seed: int
    stratify: bool
    def __init__(self, validation_fraction: _Optional[float] = ..., validation_rows: _Optional[int] = ..., seed: _Optional[int] = ..., stratify: _Optional[bool] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("name", "format", "schema", "column_mapping", "template", "template_options", "split", "label_filter", "max_train_rows", "max_validation_rows", "deduplicate", "tokenizer_model", "max_seq_length", "nested_subset_sizes")
    class ColumnMappingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    COLUMN_MAPPING_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_TRAIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_VALIDATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NESTED_SUBSET_SIZES_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: FileFormat
    schema: Schema
    column_mapping: _containers.ScalarMap[str, str]
    template: str
    template_options: _struct_pb2.Struct
    split: SplitSpec
    label_filter: _containers.RepeatedScalarFieldContainer[str]
    max_train_rows: int
    max_validation_rows: int
    deduplicate: bool
    tokenizer_model: str
    max_seq_length: int
    nested_subset_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[FileFormat, str]] = ..., schema: _Optional[_Union[Schema, str]] = ..., column_mapping: _Optional[_Mapping[str, str]] = ..., template: _Optional[str] = ..., template_options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., split: _Optional[_Union[SplitSpec, _Mapping]] = ..., label_filter: _Optional[_Iterable[str]] = ..., max_train_rows: _Optional[int] = ..., max_validation_rows: _Optional[int] = ..., deduplicate: _Optional[bool] = ..., tokenizer_model: _Optional[str] = ..., max_seq_length: _Optional[int] = ..., nested_subset_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("filename", "spec", "sha256", "size_bytes")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    filename: str
    spec: DatasetSpec
    sha256: str
    size_bytes: int
    def __init__(self, filename: _Optional[str] = ..., spec: _Optional[_Union[DatasetSpec, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class RegisterDatasetRequest(_message.Message):
    __slots__ = ("source_uri", "spec")
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    source_uri: str
    spec: DatasetSpec
    def __init__(self, source_uri: _Optional[str] = ..., spec: _Optional[_Union[DatasetSpec, _Mapping]] = ...) -> None: ...

class RegisterDatasetResponse(_message.Message):
    __slots__ = ("dataset", "report")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    report: _common_pb2.ValidationReport
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., report: _Optional[_Union[_common_pb2.ValidationReport, _Mapping]] = ...) -> None: ...

class Split(_message.Message):
    __slots__ = ("name", "rows", "artifact")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: int
    artifact: _common_pb2.ArtifactRef
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[int] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "name", "spec", "splits", "artifact", "source", "created_at", "statistics", "labels", "synthetic")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    spec: DatasetSpec
    splits: _containers.RepeatedCompositeFieldContainer[Split]
    artifact: _common_pb2.ArtifactRef
    source: _common_pb2.ArtifactRef
    created_at: _timestamp_pb2.Timestamp
    statistics: DatasetStatistics
    labels: _containers.RepeatedScalarFieldContainer[str]
    synthetic: SyntheticProvenance
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[DatasetSpec, _Mapping]] = ..., splits: _Optional[_Iterable[_Union[Split, _Mapping]]] = ..., artifact: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., source: _Optional[_Union[_common_pb2.ArtifactRef, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., statistics: _Optional[_Union[DatasetStatistics, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., synthetic: _Optional[_Union[SyntheticProvenance, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PreviewDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "split", "offset", "limit")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    split: str
    offset: int
    limit: int
    def __init__(self, dataset_id: _Optional[str] = ..., split: _Optional[str] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("source_row", "prompt", "completion", "fields", "rejected", "label")
    SOURCE_ROW_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    source_row: int
    prompt: str
    completion: str
    fields: _struct_pb2.Struct
    rejected: str
    label: str
    def __init__(self, source_row: _Optional[int] = ..., prompt: _Optional[str] = ..., completion: _Optional[str] = ..., fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., rejected: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class PreviewDatasetResponse(_message.Message):
    __slots__ = ("examples", "total_rows")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    total_rows: int
    def __init__(self, examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., total_rows: _Optional[int] = ...) -> None: ...

class GetDatasetStatisticsRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class LengthStatistics(_message.Message):
    __slots__ = ("min", "max", "mean", "p50", "p95", "p99")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    mean: float
    p50: int
    p95: int
    p99: int
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ..., mean: _Optional[float] = ..., p50: _Optional[int] = ..., p95: _Optional[int] = ..., p99: _Optional[int] = ...) -> None: ...

class SplitStatistics(_message.Message):
    __slots__ = ("split", "rows", "prompt_tokens", "completion_tokens", "total_tokens", "truncated_rows", "label_counts")
    class LabelCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    split: str
    rows: int
    prompt_tokens: LengthStatistics
    completion_tokens: LengthStatistics
    total_tokens: LengthStatistics
    truncated_rows: int
    label_counts: _containers.ScalarMap[str, int]
    def __init__(self, split: _Optional[str] = ..., rows: _Optional[int] = ..., prompt_tokens: _Optional[_Union[LengthStatistics, _Mapping]] = ..., completion_tokens: _Optional[_Union[LengthStatistics, _Mapping]] = ..., total_tokens: _Optional[_Union[LengthStatistics, _Mapping]] = ..., truncated_rows: _Optional[int] = ..., label_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DatasetStatistics(_message.Message):
    __slots__ = ("splits", "tokenizer_model")
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_MODEL_FIELD_NUMBER: _ClassVar[int]
    splits: _containers.RepeatedCompositeFieldContainer[SplitStatistics]
    tokenizer_model: str
    def __init__(self, splits: _Optional[_Iterable[_Union[SplitStatistics, _Mapping]]] = ..., tokenizer_model: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenderTemplateRequest(_message.Message):
    __slots__ = ("template", "template_options", "schema", "rows", "tokenizer_model")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_MODEL_FIELD_NUMBER: _ClassVar[int]
    template: str
    template_options: _struct_pb2.Struct
    schema: Schema
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    tokenizer_model: str
    def __init__(self, template: _Optional[str] = ..., template_options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., schema: _Optional[_Union[Schema, str]] = ..., rows: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., tokenizer_model: _Optional[str] = ...) -> None: ...

class RenderTemplateResponse(_message.Message):
    __slots__ = ("examples",)
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    def __init__(self, examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ...) -> None: ...

class CreateSyntheticDataJobRequest(_message.Message):
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
    spec: SyntheticDataSpec
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, spec: _Optional[_Union[SyntheticDataSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SyntheticDataSpec(_message.Message):
    __slots__ = ("document_uris", "document_dataset", "seed_examples", "seed_dataset_id", "model", "examples_per_document", "chunk_chars", "demonstrations", "sampling", "filters", "dataset_name", "split")
    DOCUMENT_URIS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_DATASET_FIELD_NUMBER: _ClassVar[int]
    SEED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_CHARS_FIELD_NUMBER: _ClassVar[int]
    DEMONSTRATIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    document_uris: _containers.RepeatedScalarFieldContainer[str]
    document_dataset: DocumentDataset
    seed_examples: _containers.RepeatedCompositeFieldContainer[SeedExample]
    seed_dataset_id: str
    model: str
    examples_per_document: int
    chunk_chars: int
    demonstrations: int
    sampling: SyntheticSampling
    filters: SyntheticFilters
    dataset_name: str
    split: SplitSpec
    def __init__(self, document_uris: _Optional[_Iterable[str]] = ..., document_dataset: _Optional[_Union[DocumentDataset, _Mapping]] = ..., seed_examples: _Optional[_Iterable[_Union[SeedExample, _Mapping]]] = ..., seed_dataset_id: _Optional[str] = ..., model: _Optional[str] = ..., examples_per_document: _Optional[int] = ..., chunk_chars: _Optional[int] = ..., demonstrations: _Optional[int] = ..., sampling: _Optional[_Union[SyntheticSampling, _Mapping]] = ..., filters: _Optional[_Union[SyntheticFilters, _Mapping]] = ..., dataset_name: _Optional[str] = ..., split: _Optional[_Union[SplitSpec, _Mapping]] = ...) -> None: ...

class DocumentDataset(_message.Message):
    __slots__ = ("dataset_id", "split", "text_field")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    split: str
    text_field: str
    def __init__(self, dataset_id: _Optional[str] = ..., split: _Optional[str] = ..., text_field: _Optional[str] = ...) -> None: ...

class SeedExample(_message.Message):
    __slots__ = ("instruction", "input", "response")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    input: str
    response: str
    def __init__(self, instruction: _Optional[str] = ..., input: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class SyntheticSampling(_message.Message):
    __slots__ = ("max_new_tokens", "temperature", "top_p", "seed", "repetition_penalty")
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    repetition_penalty: float
    def __init__(self, max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., repetition_penalty: _Optional[float] = ...) -> None: ...

class SyntheticFilters(_message.Message):
    __slots__ = ("min_instruction_chars", "min_response_chars", "max_rouge_l", "keep_truncated", "allow_statements", "allow_off_topic")
    MIN_INSTRUCTION_CHARS_FIELD_NUMBER: _ClassVar[int]
    MIN_RESPONSE_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUGE_L_FIELD_NUMBER: _ClassVar[int]
    KEEP_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ALLOW_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OFF_TOPIC_FIELD_NUMBER: _ClassVar[int]
    min_instruction_chars: int
    min_response_chars: int
    max_rouge_l: float
    keep_truncated: bool
    allow_statements: bool
    allow_off_topic: bool
    def __init__(self, min_instruction_chars: _Optional[int] = ..., min_response_chars: _Optional[int] = ..., max_rouge_l: _Optional[float] = ..., keep_truncated: _Optional[bool] = ..., allow_statements: _Optional[bool] = ..., allow_off_topic: _Optional[bool] = ...) -> None: ...

class SyntheticDataResult(_message.Message):
    __slots__ = ("dataset_id", "documents", "chunks", "candidates", "kept", "filtered", "generate_seconds", "completion_tokens", "backend")
    class FilteredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    GENERATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    documents: int
    chunks: int
    candidates: int
    kept: int
    filtered: _containers.ScalarMap[str, int]
    generate_seconds: float
    completion_tokens: int
    backend: str
    def __init__(self, dataset_id: _Optional[str] = ..., documents: _Optional[int] = ..., chunks: _Optional[int] = ..., candidates: _Optional[int] = ..., kept: _Optional[int] = ..., filtered: _Optional[_Mapping[str, int]] = ..., generate_seconds: _Optional[float] = ..., completion_tokens: _Optional[int] = ..., backend: _Optional[str] = ...) -> None: ...

class SyntheticDataJob(_message.Message):
    __slots__ = ("job", "spec", "result")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    spec: SyntheticDataSpec
    result: SyntheticDataResult
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., spec: _Optional[_Union[SyntheticDataSpec, _Mapping]] = ..., result: _Optional[_Union[SyntheticDataResult, _Mapping]] = ...) -> None: ...

class SyntheticProvenance(_message.Message):
    __slots__ = ("job_id", "model", "backend", "sampling", "filters", "examples_per_document", "chunk_chars", "demonstrations", "prompt_template_version", "documents", "seeds", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_CHARS_FIELD_NUMBER: _ClassVar[int]
    DEMONSTRATIONS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model: str
    backend: str
    sampling: SyntheticSampling
    filters: SyntheticFilters
    examples_per_document: int
    chunk_chars: int
    demonstrations: int
    prompt_template_version: str
    documents: _containers.RepeatedCompositeFieldContainer[SyntheticDocument]
    seeds: int
    result: SyntheticDataResult
    def __init__(self, job_id: _Optional[str] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., sampling: _Optional[_Union[SyntheticSampling, _Mapping]] = ..., filters: _Optional[_Union[SyntheticFilters, _Mapping]] = ..., examples_per_document: _Optional[int] = ..., chunk_chars: _Optional[int] = ..., demonstrations: _Optional[int] = ..., prompt_template_version: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[SyntheticDocument, _Mapping]]] = ..., seeds: _Optional[int] = ..., result: _Optional[_Union[SyntheticDataResult, _Mapping]] = ...) -> None: ...

class SyntheticDocument(_message.Message):
    __slots__ = ("source", "sha256", "chunks")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    source: str
    sha256: str
    chunks: int
    def __init__(self, source: _Optional[str] = ..., sha256: _Optional[str] = ..., chunks: _Optional[int] = ...) -> None: ...
