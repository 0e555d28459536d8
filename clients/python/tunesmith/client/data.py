"""DataClient: datasets (upload, register, inspect, delete), templates, synthetic data jobs."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from google.protobuf import struct_pb2

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.client._base import LONG_TIMEOUT, BaseClient, coerce
from tunesmith.client.errors import translate_errors

__all__ = ["DataClient", "UPLOAD_CHUNK_BYTES"]

UPLOAD_CHUNK_BYTES = 1024 * 1024

DatasetSpecLike = Union[data_pb2.DatasetSpec, Mapping[str, Any], None]


def _struct(value: Mapping[str, Any] | struct_pb2.Struct | None) -> struct_pb2.Struct:
    if isinstance(value, struct_pb2.Struct):
        return value
    out = struct_pb2.Struct()
    if value:
        out.update(dict(value))
    return out


class DataClient(BaseClient):
    """Client of tunesmith.api.data.v1.DataService (default address localhost:50051).

    Dataset specs may be passed as `data_pb2.DatasetSpec` or as a dict in protobuf JSON form,
    e.g. {"name": "tickets", "schema": "SCHEMA_CLASSIFICATION", "template": "classification"}.
    """

    SERVICE = "data"
    _STUB = data_pb2_grpc.DataServiceStub

    # -- datasets ----------------------------------------------------------------------------

    @translate_errors
    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        spec: DatasetSpecLike = None,
        *,
        filename: str | None = None,
        chunk_size: int = UPLOAD_CHUNK_BYTES,
        timeout: float | None = LONG_TIMEOUT,
    ) -> data_pb2.RegisterDatasetResponse:
        """Upload a local file and prepare it as a dataset.

        Streams an UploadHeader (file name, spec, size, sha256) first, then the file in
        `chunk_size` pieces. Nothing is stored unless every row validates; a rejected file
        raises InvalidArgumentError. Returns the dataset and its validation report.
        """
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no such file: {file}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(chunk_size), b""):
                digest.update(block)
        header = data_pb2.UploadHeader(
            filename=filename or file.name,
            spec=coerce(spec, data_pb2.DatasetSpec, "spec"),
            sha256=digest.hexdigest(),
            size_bytes=file.stat().st_size,
        )

        def requests() -> Iterator[data_pb2.UploadDatasetRequest]:
            yield data_pb2.UploadDatasetRequest(header=header)
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(chunk_size), b""):
                    yield data_pb2.UploadDatasetRequest(chunk=block)

        return self._stub.UploadDataset(requests(), timeout=timeout)

    @translate_errors
    def register_dataset(
        self, source_uri: str, spec: DatasetSpecLike = None, *, timeout: float | None = LONG_TIMEOUT
    ) -> data_pb2.RegisterDatasetResponse:
        """Prepare a file the data service can read itself (a path or file:// URI on its side)."""
        request = data_pb2.RegisterDatasetRequest(
            source_uri=source_uri, spec=coerce(spec, data_pb2.DatasetSpec, "spec")
        )
        return self._stub.RegisterDataset(request, timeout=timeout)

    @translate_errors
    def get_dataset(self, dataset_id: str, *, timeout: float | None = None) -> data_pb2.Dataset:
        """One dataset by id; NotFoundError if there is none."""
        return self._stub.GetDataset(
            data_pb2.GetDatasetRequest(dataset_id=dataset_id), timeout=self._deadline(timeout)
        )

    @translate_errors
    def list_datasets(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> data_pb2.ListDatasetsResponse:
        """One page of datasets (page_size 0 = the service's default); see `iter_datasets`."""
        request = data_pb2.ListDatasetsRequest(
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        return self._stub.ListDatasets(request, timeout=self._deadline(timeout))

    def iter_datasets(self, *, page_size: int = 100, timeout: float | None = None) -> Iterator[data_pb2.Dataset]:
        """Every dataset, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_datasets(page_size=page_size, page_token=token, timeout=timeout)
            yield from page.datasets
            token = page.next_page_token
            if not token:
                return

    @translate_errors
    def preview_dataset(
        self,
        dataset_id: str,
        *,
        split: str = "train",
        offset: int = 0,
        limit: int = 10,
        timeout: float | None = None,
    ) -> data_pb2.PreviewDatasetResponse:
        """Rows `offset`..`offset+limit` of one split, rendered (prompt, completion) and raw."""
        request = data_pb2.PreviewDatasetRequest(
            dataset_id=dataset_id, split=split, offset=offset, limit=limit
        )
        return self._stub.PreviewDataset(request, timeout=self._deadline(timeout))

    @translate_errors
    def get_statistics(self, dataset_id: str, *, timeout: float | None = None) -> data_pb2.DatasetStatistics:
        """Token-length and label statistics per split."""
        return self._stub.GetDatasetStatistics(
            data_pb2.GetDatasetStatisticsRequest(dataset_id=dataset_id), timeout=self._deadline(timeout)
        )

    @translate_errors
    def delete_dataset(self, dataset_id: str, *, timeout: float | None = None) -> None:
        """Delete a dataset; NotFoundError if there is none."""
        self._stub.DeleteDataset(
            data_pb2.DeleteDatasetRequest(dataset_id=dataset_id), timeout=self._deadline(timeout)
        )

    @translate_errors
    def render_template(
        self,
        template: str | data_pb2.RenderTemplateRequest,
        rows: Sequence[Mapping[str, Any]] = (),
        *,
        schema: int = data_pb2.SCHEMA_UNSPECIFIED,
        template_options: Mapping[str, Any] | None = None,
        tokenizer_model: str = "",
        timeout: float | None = None,
    ) -> list[data_pb2.Example]:
        """Render `rows` (canonical fields, e.g. {"input": ..., "output": ...}) through a
        template without storing anything. A full RenderTemplateRequest may be passed instead."""
        if isinstance(template, data_pb2.RenderTemplateRequest):
            request = template
        else:
            request = data_pb2.RenderTemplateRequest(
                template=template,
                template_options=_struct(template_options),
                schema=schema,
                rows=[_struct(row) for row in rows],
                tokenizer_model=tokenizer_model,
            )
        return list(self._stub.RenderTemplate(request, timeout=self._deadline(timeout)).examples)

    # -- synthetic data jobs -----------------------------------------------------------------

    @translate_errors
    def create_synthetic_data_job(
        self,
        request: data_pb2.CreateSyntheticDataJobRequest | data_pb2.SyntheticDataSpec | Mapping[str, Any],
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
    ) -> data_pb2.SyntheticDataJob:
        """Start a synthetic-data job (returns at once; refused at once, naming the field, when
        the request is bad or the model is not READY on the inference service); follow it with
        `events` or `wait_job`. `request` is a CreateSyntheticDataJobRequest, a SyntheticDataSpec
        or a dict of either in protobuf JSON form, e.g. {"document_uris": [...], "model":
        "writer", "seed_examples": [{"instruction": ..., "response": ...}]}. Once it succeeds,
        `job.result.dataset_id` is the registered dataset."""
        if isinstance(request, data_pb2.SyntheticDataSpec):
            message = data_pb2.CreateSyntheticDataJobRequest(spec=request)
        elif isinstance(request, Mapping) and "spec" not in request:
            message = data_pb2.CreateSyntheticDataJobRequest(spec=coerce(request, data_pb2.SyntheticDataSpec, "request"))
        else:
            message = coerce(request, data_pb2.CreateSyntheticDataJobRequest, "request")
        if idempotency_key:
            message.idempotency_key = idempotency_key
        return self._stub.CreateSyntheticDataJob(message, timeout=self._deadline(timeout))

    @translate_errors
    def get_job(self, job_id: str, *, timeout: float | None = None) -> data_pb2.SyntheticDataJob:
        """A synthetic-data job by id (state, spec with defaults filled in, result counts)."""
        return self._stub.GetDataJob(common_pb2.GetJobRequest(job_id=job_id), timeout=self._deadline(timeout))

    @translate_errors
    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> data_pb2.SyntheticDataJob:
        """Ask a synthetic-data job to stop; returns its state after the request."""
        return self._stub.CancelDataJob(common_pb2.CancelJobRequest(job_id=job_id), timeout=self._deadline(timeout))

    @translate_errors
    def events(
        self, job_id: str, *, from_sequence: int = 0, follow: bool = True, timeout: float | None = None
    ) -> Iterator[common_pb2.JobEvent]:
        """The job's events in order from `from_sequence`; with `follow`, until the job ends.
        No deadline unless `timeout` is given. Closing the iterator cancels the stream."""
        yield from self._follow(self._stub.StreamDataJobEvents, job_id, from_sequence, follow, timeout)

    def wait_job(self, job_id: str, *, timeout: float | None = None) -> data_pb2.SyntheticDataJob:
        """Block until the job ends and return it (DeadlineExceededError after `timeout` s)."""
        return self._wait_job(self.get_job, self.events, job_id, timeout)

