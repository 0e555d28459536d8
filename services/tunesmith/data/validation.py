"""The data service's request checks, run before a single byte of a file is read or stored.

`accept_dataset_spec(spec, runtime, prefix)` checks a DatasetSpec (enums, ranges, column
mapping, template and its options, tokenizer model) and returns the pipeline's PrepareSpec;
`check_filename(name, field)` checks an upload's file name. Errors name proto field paths under
`prefix` ("spec" for RegisterDataset, "header.spec" for UploadDataset).
"""
from __future__ import annotations

from tunesmith.api.data.v1 import data_pb2
from tunesmith.core.checks import check_model
from tunesmith.core.errors import InvalidArgument, TunesmithError, Violations
from tunesmith.core.validation import check_enum, check_int, check_strings, check_struct

MAX_FILENAME_BYTES = 255
MAX_LABEL_FILTER = 10_000
MAX_ROWS = 100_000_000
MAX_SEQ_LENGTH = 32768


def check_filename(name: str, field: str) -> str:
    """The upload's file name if usable: a base name of 1-255 bytes, no NUL, '/', '\\\\' or
    control characters, not '.', '..' or a name storage reserves."""
    problem = None
    if not name:
        problem = "is required: the original file name, e.g. tickets.csv (it names the format)"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        problem = f"is {len(name.encode('utf-8', 'surrogatepass'))} bytes long; at most {MAX_FILENAME_BYTES}"
    elif any(c in name for c in "\x00/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "must be a base name without NUL, '/', '\\' or control characters"
    elif name in (".", "..") or name == "MANIFEST.json" or name.startswith(".tmp"):
        problem = f"{name!r} is reserved; use the file's own name, e.g. tickets.csv"
    if problem:
        raise InvalidArgument(problem, field=field)
    return name


def accept_dataset_spec(spec: data_pb2.DatasetSpec, runtime, prefix: str = "spec"):
    """See the module docstring."""
    from tunesmith.data.prepare import PrepareSpec
    from tunesmith.data.service import prepare_spec

    v = Violations()
    check_enum(v, data_pb2.FileFormat, spec.format, f"{prefix}.format")
    check_enum(v, data_pb2.Schema, spec.schema, f"{prefix}.schema")
    v.check(len(spec.name) <= 256, f"{prefix}.name", "at most 256 characters")
    check_int(v, spec.max_seq_length, f"{prefix}.max_seq_length", 0, MAX_SEQ_LENGTH)
    check_int(v, spec.max_train_rows, f"{prefix}.max_train_rows", 0, MAX_ROWS)
    check_int(v, spec.max_validation_rows, f"{prefix}.max_validation_rows", 0, MAX_ROWS)
    check_int(v, spec.split.validation_rows, f"{prefix}.split.validation_rows", 0, MAX_ROWS)
    check_int(v, spec.split.seed, f"{prefix}.split.seed", 0, 2**63 - 1)
    check_strings(v, spec.label_filter, f"{prefix}.label_filter", max_items=MAX_LABEL_FILTER, max_length=1024)
    v.check(len(spec.nested_subset_sizes) <= 32, f"{prefix}.nested_subset_sizes", "at most 32 sizes")
    for i, n in enumerate(spec.nested_subset_sizes):
        check_int(v, n, f"{prefix}.nested_subset_sizes[{i}]", 1, MAX_ROWS)
    check_struct(v, spec.template_options, f"{prefix}.template_options")
    v.raise_if_any()
    try:
        pspec: PrepareSpec = prepare_spec(spec)
        pspec.check()
    except TunesmithError as exc:
        raise exc.prefixed(prefix) from None
    template = runtime.registry.require("templates", pspec.resolved_template, f"{prefix}.template")
    try:
        template.validate_options(dict(pspec.template_options))
    except TunesmithError as exc:
        raise exc.prefixed(f"{prefix}.template_options") from None
    if spec.tokenizer_model:
        check_model(runtime.models, spec.tokenizer_model, f"{prefix}.tokenizer_model")
    return pspec
