"""DataService: register files as prepared, validated, split datasets in shared storage.

A dataset is stored only when every row validates: the prepared splits (JSONL) become one
immutable artifact, the source file another, and the dataset record is written last, so a
rejected or interrupted upload leaves nothing behind that anyone can see.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

from google.protobuf import json_format

from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.core.checks import check_model
from tunesmith.core.errors import InvalidArgument, NotFound, TunesmithError, Violations
from tunesmith.core.validation import check_enum, check_int, check_local_path, check_struct
from tunesmith.core.records import RecordStore, artifact_ref, paginate
from tunesmith.core.runtime import Runtime
from tunesmith.core.server import report_message
from tunesmith.core.status import service_status
from tunesmith.data.validation import accept_dataset_spec, check_filename

log = logging.getLogger("tunesmith.data")

MAX_UPLOAD_BYTES = 2 * 1024 ** 3
MAX_RENDER_ROWS = 1000
MAX_PREVIEW_ROWS = 1000


def prepare_spec(spec: data_pb2.DatasetSpec):
    """The proto DatasetSpec as the preparation pipeline's PrepareSpec."""
    from tunesmith.data.prepare import PrepareSpec

    return PrepareSpec(
        schema=spec.schema,  # prepare.normalize_schema reads the proto enum number
        column_mapping=dict(spec.column_mapping),
        template=spec.template,  # empty: the schema's default template
        template_options=json_format.MessageToDict(spec.template_options),
        validation_fraction=spec.split.validation_fraction,
        validation_rows=spec.split.validation_rows,
        seed=spec.split.seed,
        stratify=spec.split.stratify,
        label_filter=list(spec.label_filter),
        max_train_rows=spec.max_train_rows,
        max_validation_rows=spec.max_validation_rows,
        deduplicate=spec.deduplicate,
        max_seq_length=spec.max_seq_length,
        nested_subset_sizes=list(spec.nested_subset_sizes),
    )


def _length_stats(d: dict | None) -> data_pb2.LengthStatistics:
    d = d or {}
    return data_pb2.LengthStatistics(**{k: d[k] for k in ("min", "max", "mean", "p50", "p95", "p99") if k in d})


def statistics_proto(stats: dict, tokenizer_model: str) -> data_pb2.DatasetStatistics:
    out = data_pb2.DatasetStatistics(tokenizer_model=tokenizer_model)
    for split, s in (stats or {}).items():
        out.splits.add(split=split, rows=s.get("rows", 0), prompt_tokens=_length_stats(s.get("prompt_tokens")),
                       completion_tokens=_length_stats(s.get("completion_tokens")),
                       total_tokens=_length_stats(s.get("total_tokens")),
                       truncated_rows=s.get("truncated_rows", 0), label_counts=s.get("label_counts", {}))
    return out


def example_proto(ex: dict) -> data_pb2.Example:
    out = data_pb2.Example(source_row=ex.get("source_row", 0), prompt=ex.get("prompt", ""),
                           completion=ex.get("completion", ""), rejected=ex.get("rejected", "") or "",
                           label=ex.get("label", "") or "")
    fields = {k: v for k, v in (ex.get("fields") or {}).items() if v is not None}
    if fields:
        out.fields.update(fields)
    return out


class DataServicer(data_pb2_grpc.DataServiceServicer):
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        # This service writes the dataset records (proto JSON); other services read them typed,
        # without these protos, through runtime.datasets (tunesmith.core.formats.dataset).
        self.datasets = RecordStore(runtime.storage, "datasets", data_pb2.Dataset, noun="dataset")
        self._tokenizers: dict[str, object] = {}
        self._tok_lock = threading.Lock()
        from tunesmith.data.synthetic import SyntheticJobs

        self.synthetic = SyntheticJobs(self)

    # -- helpers ---------------------------------------------------------------------------
    def _tokenizer(self, model: str):
        with self._tok_lock:
            if model not in self._tokenizers:
                from transformers import AutoTokenizer

                self._tokenizers[model] = AutoTokenizer.from_pretrained(self.rt.models.local_path(model))
            return self._tokenizers[model]

    def _register(self, source: Path, filename: str, spec: data_pb2.DatasetSpec,
                  pspec, synthetic: data_pb2.SyntheticProvenance | None = None) -> data_pb2.RegisterDatasetResponse:
        """Read, prepare and store `source`; `pspec` is accept_dataset_spec's checked PrepareSpec;
        `synthetic` goes on the record of a dataset a synthetic-data job generated."""
        from tunesmith.core.formats.dataset import store_prepared
        from tunesmith.data.prepare import prepare
        from tunesmith.data.readers import read_rows

        templates = self.rt.registry.all("templates")
        tokenizer_model = spec.tokenizer_model
        if not tokenizer_model and (templates[pspec.resolved_template].needs_tokenizer or spec.max_seq_length):
            from tunesmith.core.models import BUNDLED_NAME

            tokenizer_model = BUNDLED_NAME
        tokenizer = self._tokenizer(tokenizer_model) if tokenizer_model else None
        rows = read_rows(source, spec.format, display_name=filename)  # enum number; 0 = from the name
        prepared = prepare(rows, pspec, source=filename, templates=templates, tokenizer=tokenizer)

        storage = self.rt.storage
        source_art = storage.put_artifact("dataset-source", source)
        art = store_prepared(storage, prepared.splits, prepared.manifest())
        ds = data_pb2.Dataset(id=f"ds-{uuid.uuid4().hex[:12]}", name=spec.name or Path(filename).stem, spec=spec,
                              artifact=artifact_ref(art), source=artifact_ref(source_art),
                              labels=prepared.labels,
                              statistics=statistics_proto(prepared.statistics, tokenizer_model))
        ds.created_at.GetCurrentTime()
        if synthetic is not None:
            ds.synthetic.CopyFrom(synthetic)
        for name, examples in prepared.splits.items():
            ds.splits.add(name=name, rows=len(examples), artifact=artifact_ref(art))
        self.datasets.put(ds.id, ds)  # last: the dataset exists only once everything is stored
        log.info("dataset registered", extra={"dataset_id": ds.id, "source": filename,
                                               "splits": {s.name: s.rows for s in ds.splits}})
        return data_pb2.RegisterDatasetResponse(dataset=ds, report=report_message(prepared.report))

    def _prepared_folder(self, ds: data_pb2.Dataset):
        """The dataset's prepared artifact (tunesmith.core.formats.dataset.PreparedFolder)."""
        from tunesmith.core.formats.dataset import read_prepared

        return read_prepared(self.rt.storage, ds.artifact.uri)

    # -- RPCs ------------------------------------------------------------------------------
    def GetStatus(self, request, context):
        return service_status("data", self.rt.registry, {"storage": self.rt.storage.root_uri})

    def RegisterDataset(self, request, context):
        uri = request.source_uri
        if not uri:
            raise InvalidArgument("source_uri is required (a local path or file:// URI)", field="source_uri")
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            raise InvalidArgument(f"unsupported scheme {parsed.scheme!r} in {uri!r}; use a path or file:// URI "
                                  "(or upload the file with UploadDataset)", field="source_uri")
        if "\x00" in uri or len(uri) > 4096:
            raise InvalidArgument("must be a path or file:// URI of at most 4096 characters, without NUL",
                                  field="source_uri")
        pspec = accept_dataset_spec(request.spec, self.rt, "spec")
        path = check_local_path(unquote(parsed.path) if parsed.scheme == "file" else uri, "source_uri")
        if not path.is_file():
            raise NotFound(f"no file at {uri!r}", field="source_uri")
        return self._register(path, path.name, request.spec, pspec)

    def UploadDataset(self, request_iterator: Iterator[data_pb2.UploadDatasetRequest], context):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first UploadDataset message must carry the header", field="header")
        header = first.header
        name = check_filename(header.filename, "header.filename")
        if header.sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", header.sha256):
            raise InvalidArgument("must be 64 hex digits (the sha256 of the whole file)", field="header.sha256")
        if not 0 <= header.size_bytes <= MAX_UPLOAD_BYTES:
            raise InvalidArgument(f"must be in [0, {MAX_UPLOAD_BYTES}] (0 = not announced)", field="header.size_bytes")
        pspec = accept_dataset_spec(header.spec, self.rt, "header.spec")
        digest, size = hashlib.sha256(), 0
        with self.rt.storage.staging_dir() as tmp:
            path = tmp / name
            with open(path, "wb") as f:
                for msg in request_iterator:
                    if msg.WhichOneof("part") != "chunk":
                        raise InvalidArgument("only the first message may carry a header", field="header")
                    size += len(msg.chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise InvalidArgument(f"upload exceeds {MAX_UPLOAD_BYTES} bytes", field="chunk")
                    digest.update(msg.chunk)
                    f.write(msg.chunk)
            if header.size_bytes and header.size_bytes != size:
                raise InvalidArgument(f"received {size} bytes but the header announced {header.size_bytes}",
                                      field="header.size_bytes")
            if header.sha256 and header.sha256.lower() != digest.hexdigest():
                raise InvalidArgument("the upload's sha256 does not match header.sha256", field="header.sha256")
            return self._register(path, name, header.spec, pspec)

    def GetDataset(self, request, context):
        return self.datasets.get(request.dataset_id, field="dataset_id")

    def ListDatasets(self, request, context):
        items = sorted(self.datasets.list(), key=lambda d: (d.created_at.seconds, d.id), reverse=True)
        page, nxt = paginate(items, request.page.page_size, request.page.page_token)
        return data_pb2.ListDatasetsResponse(datasets=page, next_page_token=nxt)

    def PreviewDataset(self, request, context):
        v = Violations()
        check_int(v, request.offset, "offset", 0, 2**62)
        check_int(v, request.limit, "limit", 0, MAX_PREVIEW_ROWS)
        v.raise_if_any()
        ds = self.datasets.get(request.dataset_id, field="dataset_id")
        split = request.split or "train"
        if split not in {s.name for s in ds.splits}:
            raise NotFound(f"dataset {ds.id} has no split {split!r} (splits: {', '.join(s.name for s in ds.splits)})",
                           field="split")
        rows = self._prepared_folder(ds).rows(split)
        limit = request.limit or 10
        chosen = rows[request.offset:request.offset + limit]
        return data_pb2.PreviewDatasetResponse(examples=[example_proto(r) for r in chosen], total_rows=len(rows))

    def GetDatasetStatistics(self, request, context):
        return self.datasets.get(request.dataset_id, field="dataset_id").statistics

    def DeleteDataset(self, request, context):
        self.datasets.get(request.dataset_id, field="dataset_id")
        # Artifacts stay: they are immutable and jobs may reference them.
        self.datasets.delete(request.dataset_id)
        return data_pb2.DeleteDatasetResponse()

    def RenderTemplate(self, request, context):
        from tunesmith.data.prepare import DEFAULT_TEMPLATES, normalize_schema

        v = Violations()
        check_enum(v, data_pb2.Schema, request.schema, "schema")
        v.check(0 < len(request.rows) <= MAX_RENDER_ROWS, "rows", f"1 to {MAX_RENDER_ROWS} rows are required")
        check_struct(v, request.template_options, "template_options")
        for i, row in enumerate(request.rows[:MAX_RENDER_ROWS]):
            check_struct(v, row, f"rows[{i}]")
        v.raise_if_any()
        name = request.template or DEFAULT_TEMPLATES[normalize_schema(request.schema)]
        template = self.rt.registry.require("templates", name, "template")
        options = json_format.MessageToDict(request.template_options)
        try:
            template.validate_options(options)
        except TunesmithError as exc:
            raise exc.prefixed("template_options") from None
        if request.tokenizer_model:
            check_model(self.rt.models, request.tokenizer_model, "tokenizer_model")
        elif template.needs_tokenizer:
            raise InvalidArgument(f"template {name!r} renders the model's chat template: name the model whose "
                                  "tokenizer to use", field="tokenizer_model")
        tokenizer = self._tokenizer(request.tokenizer_model) if request.tokenizer_model else None
        out = data_pb2.RenderTemplateResponse()
        for i, row in enumerate(request.rows):
            fields = json_format.MessageToDict(row)
            try:
                rendered = template.render(fields, options, tokenizer)
            except KeyError as exc:
                key = exc.args[0] if exc.args else ""
                raise InvalidArgument(f"template {name!r} needs field {key!r}", field=f"rows[{i}].{key}") from None
            except TunesmithError as exc:
                raise exc.prefixed(f"rows[{i}]") from None
            except Exception as exc:  # noqa: BLE001 - as in dataset preparation: the row is refused, not a bug of ours
                raise InvalidArgument(f"template {name!r} cannot render it: {type(exc).__name__}: {exc}",
                                      field=f"rows[{i}]") from None
            out.examples.add(source_row=i + 1, prompt=rendered.prompt, completion=rendered.completion)
        return out

    def CreateSyntheticDataJob(self, request, context):
        from tunesmith.data.synthetic_validation import accept_synthetic_request, load_inputs, served_model

        spec = accept_synthetic_request(request)
        served_model(self.rt, spec.model)
        load_inputs(spec, self.rt, self.datasets)  # the documents exist and are UTF-8 text; the seeds exist
        record = data_pb2.SyntheticDataJob(spec=spec)
        return self.synthetic.manager.create(record, request.idempotency_key, dict(request.labels))

    def GetDataJob(self, request, context):
        return self.synthetic.manager.get(request.job_id)

    def CancelDataJob(self, request, context):
        return self.synthetic.manager.cancel(request.job_id)

    def StreamDataJobEvents(self, request, context):
        yield from self.synthetic.manager.events(request.job_id, request.from_sequence, request.follow,
                                                 alive=context.is_active)


def add_to_server(servicer, server) -> None:
    data_pb2_grpc.add_DataServiceServicer_to_server(servicer, server)
