"""Checks of CreateSyntheticDataJob, run before a job exists (and again when it starts).

- `accept_synthetic_request(request)`: every field's form and range, with field paths under
  "spec" ("spec.seed_examples[0].response"); returns a copy of the spec with defaults filled in.
- `load_inputs(spec, runtime, datasets)`: the documents (UTF-8 text) and seeds they name, read;
  NotFound / InvalidArgument naming "spec.document_uris[2]", "spec.seed_dataset_id", ...
- `served_model(runtime, model)`: (the name to Generate with, backend) of a READY model on the
  inference peer; NotFound ("spec.model") for a model it does not serve.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from tunesmith.api.data.v1 import data_pb2
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tunesmith.core.validation import check_float, check_int, check_local_path, start_create_checks
from tunesmith.data.synthetic_documents import chunk_text, read_text_file
from tunesmith.data.synthetic_prompts import Seed

MAX_DOCUMENTS = 100
MAX_SEEDS = 100
MAX_SEED_CHARS = 4000
MAX_DATASET_DOCUMENTS = 10_000
DEFAULTS = {"examples_per_document": 4, "chunk_chars": 1500, "demonstrations": 2}
SAMPLING_DEFAULTS = {"max_new_tokens": 96, "temperature": 0.7, "top_p": 0.95, "repetition_penalty": 1.1}
FILTER_DEFAULTS = {"min_instruction_chars": 10, "min_response_chars": 10, "max_rouge_l": 0.7}


@dataclass(frozen=True)
class Document:
    source: str   # the URI as given, or "<dataset id>/<split>#<row>"
    field: str    # the request field it came from, for errors
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def chunks(self, limit: int) -> list[str]:
        return chunk_text(self.text, limit)


def accept_synthetic_request(request: data_pb2.CreateSyntheticDataJobRequest) -> data_pb2.SyntheticDataSpec:
    """See the module docstring."""
    spec, v = start_create_checks(request)
    v.check(len(spec.document_uris) <= MAX_DOCUMENTS, "spec.document_uris",
            f"at most {MAX_DOCUMENTS} documents, got {len(spec.document_uris)}")
    for i, uri in enumerate(spec.document_uris[:MAX_DOCUMENTS]):
        v.check(bool(uri) and "\x00" not in uri and len(uri) <= 4096, f"spec.document_uris[{i}]",
                "must be a path or file:// URI of 1 to 4096 characters, without NUL")
        v.check(urlparse(uri).scheme in ("", "file"), f"spec.document_uris[{i}]",
                f"unsupported scheme {urlparse(uri).scheme!r}; use a path or file:// URI")
    dd = spec.document_dataset
    if dd.split or dd.text_field:
        v.check(bool(dd.dataset_id), "spec.document_dataset.dataset_id", "is required when split or text_field is set")
    v.check(len(dd.split) <= 64 and len(dd.text_field) <= 64 and len(dd.dataset_id) <= 256,
            "spec.document_dataset", "dataset_id at most 256 characters, split and text_field at most 64")
    v.check(bool(spec.document_uris) or bool(dd.dataset_id), "spec.document_uris",
            "at least one document is required: text files here, or a dataset in document_dataset")
    v.check(len(spec.seed_examples) <= MAX_SEEDS, "spec.seed_examples", f"at most {MAX_SEEDS} seeds")
    for i, s in enumerate(spec.seed_examples[:MAX_SEEDS]):
        for name, value, required in (("instruction", s.instruction, True), ("input", s.input, False),
                                      ("response", s.response, True)):
            where = f"spec.seed_examples[{i}].{name}"
            if required:
                v.check(bool(value.strip()), where, "is required (not blank)")
            v.check(len(value) <= MAX_SEED_CHARS, where, f"at most {MAX_SEED_CHARS} characters, got {len(value)}")
    v.check(len(spec.seed_dataset_id) <= 256, "spec.seed_dataset_id", "at most 256 characters")
    v.check(bool(spec.seed_examples) or bool(spec.seed_dataset_id), "spec.seed_examples",
            "at least one seed example is required (here or through seed_dataset_id): the model imitates them")
    v.check(0 < len(spec.model) <= 256, "spec.model",
            "is required: a model served by the inference service (its name, or base:adapter)")
    check_int(v, spec.examples_per_document, "spec.examples_per_document", 1, 1000, zero_means="4")
    check_int(v, spec.chunk_chars, "spec.chunk_chars", 200, 20000, zero_means="1500")
    check_int(v, spec.demonstrations, "spec.demonstrations", 1, 8, zero_means="2")
    s = spec.sampling
    check_int(v, s.max_new_tokens, "spec.sampling.max_new_tokens", 1, 1024, zero_means="96")
    if s.HasField("temperature"):
        check_float(v, s.temperature, "spec.sampling.temperature", 0.0, 2.0)
    check_float(v, s.top_p, "spec.sampling.top_p", 0.0, 1.0, lo_open=True, zero_means="0.95")
    check_int(v, s.seed, "spec.sampling.seed", 0, 2**63 - 1)
    check_float(v, s.repetition_penalty, "spec.sampling.repetition_penalty", 1.0, 2.0, zero_means="1.1")
    f = spec.filters
    check_int(v, f.min_instruction_chars, "spec.filters.min_instruction_chars", 0, 1000)
    check_int(v, f.min_response_chars, "spec.filters.min_response_chars", 0, 10000)
    if f.HasField("max_rouge_l"):
        check_float(v, f.max_rouge_l, "spec.filters.max_rouge_l", 0.0, 1.0, lo_open=True)
    v.check(len(spec.dataset_name) <= 256, "spec.dataset_name", "at most 256 characters")
    sp = spec.split
    check_float(v, sp.validation_fraction, "spec.split.validation_fraction", 0.0, 1.0, hi_open=True)
    check_int(v, sp.validation_rows, "spec.split.validation_rows", 0, 100_000_000)
    check_int(v, sp.seed, "spec.split.seed", 0, 2**63 - 1)
    v.check(not sp.stratify, "spec.split.stratify", "synthetic pairs have no label to stratify by; leave it unset")
    v.raise_if_any()
    for name, value in DEFAULTS.items():
        setattr(spec, name, getattr(spec, name) or value)
    for name, value in SAMPLING_DEFAULTS.items():
        if name == "temperature":
            if not s.HasField("temperature"):
                s.temperature = value
        else:
            setattr(s, name, getattr(s, name) or value)
    if not f.HasField("max_rouge_l"):
        f.max_rouge_l = FILTER_DEFAULTS["max_rouge_l"]
    f.min_instruction_chars = f.min_instruction_chars or FILTER_DEFAULTS["min_instruction_chars"]
    f.min_response_chars = f.min_response_chars or FILTER_DEFAULTS["min_response_chars"]
    return spec


def load_inputs(spec: data_pb2.SyntheticDataSpec, runtime, datasets) -> tuple[list[Document], list[Seed]]:
    """The documents and seeds `spec` names, read and checked (see the module docstring).
    `datasets` is the data service's proto RecordStore of datasets."""
    from tunesmith.core.formats.dataset import read_prepared

    docs: list[Document] = []
    for i, uri in enumerate(spec.document_uris):
        field = f"spec.document_uris[{i}]"
        parsed = urlparse(uri)
        path = check_local_path(unquote(parsed.path) if parsed.scheme == "file" else uri, field)
        docs.append(Document(uri, field, read_text_file(path, field)))
    dd = spec.document_dataset
    if dd.dataset_id:
        from tunesmith.core.checks import check_split

        ds = datasets.get(dd.dataset_id, field="spec.document_dataset.dataset_id")
        split, text_field = dd.split or "train", dd.text_field or "text"
        check_split(ds, split, "spec.document_dataset.split")
        rows = read_prepared(runtime.storage, ds.artifact.uri).rows(split)
        if len(rows) > MAX_DATASET_DOCUMENTS:
            raise InvalidArgument(f"split {split!r} of dataset {ds.id} has {len(rows)} rows; at most "
                                  f"{MAX_DATASET_DOCUMENTS} documents per job", field="spec.document_dataset.split")
        for row in rows:
            fields = row.get("fields") or {}
            text = fields.get(text_field)
            where = f"{ds.id}/{split}#{row.get('source_row', 0)}"
            if not isinstance(text, str):
                raise InvalidArgument(f"row {row.get('source_row', 0)} of dataset {ds.id} has no text field "
                                      f"{text_field!r} (fields: {', '.join(sorted(fields)) or 'none'})",
                                      field="spec.document_dataset.text_field")
            if text.strip():
                docs.append(Document(where, "spec.document_dataset", text))
        if not any(d.field == "spec.document_dataset" for d in docs):
            raise InvalidArgument(f"split {split!r} of dataset {ds.id} has no non-empty {text_field!r} text",
                                  field="spec.document_dataset.text_field")
    seeds = [Seed(s.instruction, s.input, s.response) for s in spec.seed_examples]
    if spec.seed_dataset_id:
        ds = datasets.get(spec.seed_dataset_id, field="spec.seed_dataset_id")
        if ds.spec.schema != data_pb2.SCHEMA_ALPACA:
            raise FailedPrecondition(f"dataset {ds.id} is not an ALPACA dataset (instruction, input, output); seeds "
                                     "need those fields", field="spec.seed_dataset_id", code="not_an_alpaca_dataset")
        rows = read_prepared(runtime.storage, ds.artifact.uri).rows("train")
        for row in rows[:MAX_SEEDS]:
            fields = row.get("fields") or {}
            if str(fields.get("instruction") or "").strip() and str(fields.get("output") or "").strip():
                seeds.append(Seed(str(fields["instruction"]), str(fields.get("input") or ""), str(fields["output"])))
        if not seeds:
            raise FailedPrecondition(f"dataset {ds.id} has no train row with an instruction and an output",
                                     field="spec.seed_dataset_id", code="no_seeds")
    return docs, seeds


def served_model(runtime, model: str) -> tuple[str, str]:
    """(served name to Generate with, backend) of `model` on the inference peer, READY."""
    from tunesmith.api.inference.v1 import inference_pb2
    from tunesmith.client.errors import InvalidArgumentError, NotFoundError, TunesmithClientError
    from tunesmith.client.inference import InferenceClient

    address = runtime.require_peer("inference", needed_by="synthetic data", field="spec.model")
    try:
        with InferenceClient(address) as client:
            try:
                served = client.get_model(model, timeout=10)
            except (NotFoundError, InvalidArgumentError):
                base, sep, adapter = model.rpartition(":")
                if not sep:
                    raise
                served = client.get_model(adapter, timeout=10)
                if served.kind != "adapter" or served.base != base:
                    raise NotFound(f"{adapter!r} is not an adapter served on {base!r}", field="spec.model",
                                   code="unknown_model") from None
                model = adapter
    except (NotFoundError, InvalidArgumentError):
        raise NotFound(f"the inference service at {address} does not serve {model!r}; LoadModel it first",
                       field="spec.model", code="model_not_served") from None
    except TunesmithClientError as exc:
        raise Unavailable(f"the inference service at {address} did not answer: {exc}", field="spec.model",
                          code="inference_unavailable") from None
    if served.state != inference_pb2.SERVED_MODEL_STATE_READY:
        state = inference_pb2.ServedModelState.Name(served.state).removeprefix("SERVED_MODEL_STATE_")
        raise FailedPrecondition(f"{model!r} is {state} on the inference service, not READY", field="spec.model",
                                 code="model_not_ready")
    return model, served.backend
