"""TrainerClient: training jobs and their events, merges, memory plans, sweeps, base models."""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

import grpc

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunesmith.client._base import LONG_TIMEOUT, BaseClient, coerce
from tunesmith.client.errors import DeadlineExceededError, FailedPreconditionError, translate_errors

__all__ = ["TrainerClient"]

TrainingJobSpecLike = Union[trainer_pb2.TrainingJobSpec, Mapping[str, Any]]


class TrainerClient(BaseClient):
    """Client of tunesmith.api.trainer.v1.TrainerService (default address localhost:50052).

    Specs may be passed as `trainer_pb2.TrainingJobSpec` or as a dict in protobuf JSON form,
    e.g. {"base_model": "smollm2-135m-instruct", "dataset_id": "...",
    "method": {"name": "lora", "rank": 8}, "hyperparameters": {"epochs": 1}}.
    """

    SERVICE = "trainer"
    _STUB = trainer_pb2_grpc.TrainerServiceStub

    # -- training jobs -----------------------------------------------------------------------

    @translate_errors
    def create_job(
        self,
        spec: TrainingJobSpecLike,
        idempotency_key: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> trainer_pb2.TrainingJob:
        """Start a training job; returns at once (state VALIDATING or QUEUED). Repeating a
        call with the same `idempotency_key` returns the existing job instead of a new one.
        Safe to retry only with an idempotency key."""
        request = trainer_pb2.CreateTrainingJobRequest(
            spec=coerce(spec, trainer_pb2.TrainingJobSpec, "spec"),
            idempotency_key=idempotency_key or "",
            labels=dict(labels or {}),
        )
        return self._stub.CreateTrainingJob(request, timeout=self._deadline(timeout))

    @translate_errors
    def get_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.TrainingJob:
        """A training job by id (state, progress, result); NotFoundError if there is none."""
        return self._stub.GetTrainingJob(
            common_pb2.GetJobRequest(job_id=job_id), timeout=self._deadline(timeout)
        )

    @translate_errors
    def list_jobs(
        self,
        *,
        states: Iterable[int] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> trainer_pb2.ListTrainingJobsResponse:
        """One page of training jobs, optionally only those in `states` (common_pb2.JobState)."""
        request = common_pb2.ListJobsRequest(
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
            states=list(states),
        )
        return self._stub.ListTrainingJobs(request, timeout=self._deadline(timeout))

    @translate_errors
    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.TrainingJob:
        """Ask a training job to stop; returns the job after the request."""
        return self._stub.CancelTrainingJob(
            common_pb2.CancelJobRequest(job_id=job_id), timeout=self._deadline(timeout)
        )

    @translate_errors
    def events(
        self, job_id: str, *, from_sequence: int = 0, follow: bool = True, timeout: float | None = None
    ) -> Iterator[common_pb2.JobEvent]:
        """The job's events (state changes, progress, logs, artifacts, metrics) in order from
        `from_sequence`; with `follow`, the stream stays open until the job ends. No deadline
        unless `timeout` is given. Closing the iterator cancels the stream."""
        yield from self._follow(self._stub.StreamTrainingJobEvents, job_id, from_sequence, follow, timeout)

    def wait(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.TrainingJob:
        """Block until the job ends and return it (DeadlineExceededError after `timeout` s).
        A failed job is returned, not raised: check `job.job.state` and `job.job.error`."""
        return self._wait_job(self.get_job, self.events, job_id, timeout)

    # -- adapters, memory, sweeps ------------------------------------------------------------

    @translate_errors
    def create_merge_job(
        self,
        adapter: common_pb2.ArtifactRef | str,
        base_model: str = "",
        *,
        dtype: int = common_pb2.DTYPE_UNSPECIFIED,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> trainer_pb2.MergeJob:
        """Start merging an adapter (an ArtifactRef, or its URI) into `base_model` (empty: the
        base it was trained on); returns the job at once."""
        ref = adapter if isinstance(adapter, common_pb2.ArtifactRef) else common_pb2.ArtifactRef(uri=adapter)
        request = trainer_pb2.CreateMergeJobRequest(
            spec=trainer_pb2.MergeSpec(adapter=ref, base_model=base_model, dtype=dtype),
            idempotency_key=idempotency_key or "")
        return self._stub.CreateMergeJob(request, timeout=self._deadline(timeout))

    @translate_errors
    def get_merge_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.MergeJob:
        return self._stub.GetMergeJob(common_pb2.GetJobRequest(job_id=job_id), timeout=self._deadline(timeout))

    @translate_errors
    def cancel_merge_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.MergeJob:
        return self._stub.CancelMergeJob(common_pb2.CancelJobRequest(job_id=job_id), timeout=self._deadline(timeout))

    @translate_errors
    def merge_events(
        self, job_id: str, *, from_sequence: int = 0, follow: bool = True, timeout: float | None = None
    ) -> Iterator[common_pb2.JobEvent]:
        """A merge job's events, as events() gives a training job's."""
        yield from self._follow(self._stub.StreamMergeJobEvents, job_id, from_sequence, follow, timeout)

    def merge_adapter(
        self,
        adapter: common_pb2.ArtifactRef | str,
        base_model: str = "",
        *,
        dtype: int = common_pb2.DTYPE_UNSPECIFIED,
        timeout: float | None = LONG_TIMEOUT,
    ) -> common_pb2.ArtifactRef:
        """Merge and wait: the merged model's artifact. A failed merge raises
        FailedPreconditionError with the job's error."""
        job = self.create_merge_job(adapter, base_model, dtype=dtype)
        job = self._wait_job(self.get_merge_job, self.merge_events, job.job.id, timeout)
        _raise_if_failed(job.job)
        return job.merged_model

    @translate_errors
    def plan_memory(
        self,
        spec: TrainingJobSpecLike,
        *,
        device: str = "",
        device_memory_bytes: int = 0,
        timeout: float | None = None,
    ) -> trainer_pb2.MemoryPlan:
        """Estimate the memory `spec` needs on `device` ("cpu", "cuda:0", "A100-80GB", ...)."""
        request = trainer_pb2.PlanMemoryRequest(
            spec=coerce(spec, trainer_pb2.TrainingJobSpec, "spec"),
            device=device,
            device_memory_bytes=device_memory_bytes,
        )
        return self._stub.PlanMemory(request, timeout=self._deadline(timeout))

    @translate_errors
    def create_sweep(
        self, request: trainer_pb2.CreateSweepRequest | Mapping[str, Any], *, timeout: float | None = None
    ) -> trainer_pb2.Sweep:
        """Start a sweep (a managed group of training jobs); returns at once."""
        message = coerce(request, trainer_pb2.CreateSweepRequest, "request")
        return self._stub.CreateSweep(message, timeout=self._deadline(timeout))

    @translate_errors
    def get_sweep(self, sweep_id: str, *, timeout: float | None = None) -> trainer_pb2.Sweep:
        """A sweep and its trials by id."""
        return self._stub.GetSweep(trainer_pb2.GetSweepRequest(sweep_id=sweep_id), timeout=self._deadline(timeout))

    # -- base models -------------------------------------------------------------------------

    @translate_errors
    def list_models(self, *, timeout: float | None = None) -> list[trainer_pb2.Model]:
        """Base models in the model store."""
        return list(self._stub.ListModels(trainer_pb2.ListModelsRequest(), timeout=self._deadline(timeout)).models)

    @translate_errors
    def create_model_import_job(
        self, name: str, path: str, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> trainer_pb2.ModelImportJob:
        """Start importing a local Hugging Face model folder or .gguf file (a path on the
        service's side) into the model store under `name`; returns the job at once."""
        request = trainer_pb2.CreateModelImportJobRequest(
            spec=trainer_pb2.ModelImportSpec(name=name, path=path), idempotency_key=idempotency_key or "")
        return self._stub.CreateModelImportJob(request, timeout=self._deadline(timeout))

    @translate_errors
    def get_model_import_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.ModelImportJob:
        return self._stub.GetModelImportJob(common_pb2.GetJobRequest(job_id=job_id), timeout=self._deadline(timeout))

    @translate_errors
    def cancel_model_import_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.ModelImportJob:
        return self._stub.CancelModelImportJob(common_pb2.CancelJobRequest(job_id=job_id),
                                               timeout=self._deadline(timeout))

    @translate_errors
    def model_import_events(
        self, job_id: str, *, from_sequence: int = 0, follow: bool = True, timeout: float | None = None
    ) -> Iterator[common_pb2.JobEvent]:
        """A model import job's events, as events() gives a training job's."""
        yield from self._follow(self._stub.StreamModelImportJobEvents, job_id, from_sequence, follow, timeout)

    def register_model(self, name: str, path: str, *, timeout: float | None = LONG_TIMEOUT) -> trainer_pb2.Model:
        """Import and wait: the stored model. A failed import raises FailedPreconditionError."""
        job = self.create_model_import_job(name, path)
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.job.state not in _TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError(f"importing {name!r} did not finish in {timeout} s",
                                            code=grpc.StatusCode.DEADLINE_EXCEEDED)
            time.sleep(0.5)
            job = self.get_model_import_job(job.job.id)
        _raise_if_failed(job.job)
        return job.model


_TERMINAL = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


def _raise_if_failed(job: common_pb2.Job) -> None:
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise FailedPreconditionError(
            f"job {job.id} ended {common_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_')}: "
            f"{job.error.code}: {job.error.message}", code=grpc.StatusCode.FAILED_PRECONDITION,
            reason=(job.error.code or "job_failed").upper(), field=job.error.field or None, metadata={"job_id": job.id})
