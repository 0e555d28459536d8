"""TrainerService: training jobs, each in its own process (a crash fails the job, not us)."""
from __future__ import annotations

import logging
import subprocess
import sys
import time


from tunesmith.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunesmith.core.errors import InvalidArgument, NotFound, Unimplemented
from tunesmith.core.jobs import JobCancelled, JobControl, JobFailed, JobManager
from tunesmith.core.records import artifact_ref
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status
from tunesmith.trainer import hyperparameters
from tunesmith.trainer.validation import (accept_merge_request, accept_model_import_request, accept_training_request,
                                         method_options)

log = logging.getLogger("tunesmith.trainer")

class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, runtime: Runtime, *, max_concurrent_jobs: int = 1):
        self.rt = runtime
        self.handles: dict[str, object] = {}
        self.jobs = JobManager(runtime.storage, collection="training_jobs", record_cls=trainer_pb2.TrainingJob,
                               kind="training", noun="training job", validate=self._validate,
                               execute=self._execute, cancel_hook=self._on_cancel,
                               max_concurrent=max_concurrent_jobs)
        self.merges = JobManager(runtime.storage, collection="merge_jobs", record_cls=trainer_pb2.MergeJob,
                                 kind="merge", noun="merge job", validate=lambda r, c: None,
                                 execute=self._execute_merge)
        self.imports = JobManager(runtime.storage, collection="model_import_jobs",
                                  record_cls=trainer_pb2.ModelImportJob, kind="model_import", noun="model import job",
                                  validate=lambda r, c: None, execute=self._execute_import)

    # -- job stages ------------------------------------------------------------------------
    def _validate(self, record: trainer_pb2.TrainingJob, control: JobControl) -> None:
        # Everything knowable was checked by CreateTrainingJob; what is left needs work: the
        # bundled model's one-time import.
        control.log(f"resolving base model {record.spec.base_model!r}")
        self._ensure_model(record.spec.base_model, control)

    def _ensure_model(self, name: str, control: JobControl) -> None:
        """NotFound for an unknown model. The bundled model's one-time import runs in a child
        process, so this service never loads torch and stays small."""
        from tunesmith.core.models import BUNDLED_NAME

        if name == BUNDLED_NAME and not self.rt.models.is_stored(name):
            control.log("importing the bundled base model (one time, about 30 s)")
            done = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "models", "import-bundled",
                                   "--storage", str(self.rt.storage.root)], capture_output=True, text=True)
            if done.returncode != 0:
                raise JobFailed("model_import_failed", f"importing {name} failed: {done.stderr[-800:]}",
                                "spec.base_model")
        try:
            self.rt.models.get(name)
        except NotFound as exc:
            raise JobFailed("unknown_model", exc.message, "spec.base_model") from None

    def _execute(self, record: trainer_pb2.TrainingJob, control: JobControl) -> None:
        from tunesmith.core.formats.worker import (ERROR_FILE, EVENTS_FILE, LOG_FILE, WorkerError, WorkerInput,
                                                   WorkerResult, job_key)

        spec, job_id = record.spec, record.job.id
        storage = self.rt.storage
        ds = self.rt.datasets.get(spec.dataset_id)
        base_model = self.rt.models.get(spec.base_model)
        WorkerInput(  # artifact URIs only: the worker resolves them through its own storage
            base_model=base_model.artifact.uri,
            base_model_name="" if "://" in base_model.name else base_model.name,
            dataset=ds.artifact.uri,
            train_split=spec.train_split,
            validation_split=spec.validation_split,
            method=spec.method.name,
            method_options=method_options(spec.method),
            hyperparameters=hyperparameters.from_proto(spec.hyperparameters, device=spec.device),
            merge=spec.merge,
        ).write(storage, job_id)
        executor = self.rt.registry.get("training_executors", spec.executor)
        argv = [sys.executable, "-m", "tunesmith.trainer.worker", "--storage", str(storage.root), "--job", job_id]
        log_path = storage.path(job_key(job_id, LOG_FILE))
        handle = executor.submit(job_id, argv, {"HF_HUB_OFFLINE": "1"}, str(log_path))
        self.handles[job_id] = handle
        control.log(f"worker started by the {spec.executor!r} executor")
        events_path = storage.path(job_key(job_id, EVENTS_FILE))
        offset, code = 0, None
        try:
            while True:
                code = handle.poll()
                offset = self._forward_events(events_path, offset, record, control)
                if code is not None:
                    break
                if control.cancelled.is_set():
                    handle.cancel()
                time.sleep(0.2)
            self._forward_events(events_path, offset, record, control)
        finally:
            if handle.poll() is None:  # we are failing for another reason: never leave a worker behind
                handle.cancel()
            self.handles.pop(job_id, None)
        if control.cancelled.is_set():
            raise JobCancelled()
        if code != 0:
            if storage.exists(job_key(job_id, ERROR_FILE)):
                err = WorkerError.read(storage, job_id)
                raise JobFailed(err.code, err.message, err.field)
            tail = log_path.read_text(errors="replace")[-600:] if log_path.is_file() else ""
            raise JobFailed("worker_crashed", f"the training process exited with code {code} "
                                              f"(killed by the OS if negative or 137: out of memory?); log tail: {tail}")
        self._apply_result(record, WorkerResult.read(storage, job_id), control)

    def _forward_events(self, path, offset: int, record, control: JobControl) -> int:
        """Forward the complete lines after `offset` of worker-events.jsonl; the new offset."""
        from tunesmith.core.formats import FormatError
        from tunesmith.core.formats.worker import WorkerEvent

        if not path.exists():
            return offset
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.decode().splitlines():
            if not line.strip():
                continue
            try:
                event = WorkerEvent.from_line(line, str(path))
            except FormatError as exc:
                log.warning("skipping an unreadable worker event: %s", exc.message, extra={"job_id": record.job.id})
                continue
            if event.type == "progress":
                control.progress(**event.data)
            elif event.type == "metrics":
                values = event.data.get("values") or {}
                control.metrics(str(event.data.get("name", "")),
                                {k: float(v) for k, v in values.items() if isinstance(v, (int, float))})
            elif event.type == "log":
                control.log(str(event.data.get("message", "")), str(event.data.get("level", "info")))
        return offset + len(complete)

    def _apply_result(self, record: trainer_pb2.TrainingJob, result, control: JobControl) -> None:
        """Copy a WorkerResult (tunesmith.core.formats.worker) into the job record and save it."""
        r = record.result
        r.adapter.CopyFrom(control.output(result.adapter))
        if result.merged_model is not None:
            r.merged_model.CopyFrom(control.output(result.merged_model))
        for name in ("train_seconds", "tokens_per_second", "first_train_loss", "final_train_loss",
                     "best_validation_loss"):
            setattr(r, name, float(getattr(result, name) or 0.0))
        for name in ("steps", "trainable_parameters", "total_parameters", "peak_memory_bytes", "train_tokens"):
            setattr(r, name, int(getattr(result, name) or 0))
        r.stopped_early = bool(result.stopped_early)
        control.save()

    def _on_cancel(self, record, control: JobControl) -> None:
        handle = self.handles.get(record.job.id)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        """Stop every running worker (service shutdown): no training outlives its service."""
        for handle in list(self.handles.values()):
            handle.cancel()
        for handle in list(self.handles.values()):
            handle.wait(15)

    # -- RPCs ------------------------------------------------------------------------------
    def GetStatus(self, request, context):
        return service_status("trainer", self.rt.registry, {"storage": self.rt.storage.root_uri,
                                                            "python": sys.executable})

    def CreateTrainingJob(self, request, context):
        record = trainer_pb2.TrainingJob(spec=accept_training_request(request, self.rt))
        return self.jobs.create(record, request.idempotency_key, dict(request.labels))

    def GetTrainingJob(self, request, context):
        return self.jobs.get(request.job_id)

    def ListTrainingJobs(self, request, context):
        jobs, token = self.jobs.list(list(request.states), request.page.page_size, request.page.page_token)
        return trainer_pb2.ListTrainingJobsResponse(jobs=jobs, next_page_token=token)

    def CancelTrainingJob(self, request, context):
        return self.jobs.cancel(request.job_id)

    def StreamTrainingJobEvents(self, request, context):
        yield from self.jobs.events(request.job_id, request.from_sequence, request.follow, alive=context.is_active)

    # -- merges and model imports: jobs, since they take minutes on a CPU ----------------------
    def CreateMergeJob(self, request, context):
        spec = accept_merge_request(request, self.rt)
        return self.merges.create(trainer_pb2.MergeJob(spec=spec), request.idempotency_key, dict(request.labels))

    def GetMergeJob(self, request, context):
        return self.merges.get(request.job_id)

    def CancelMergeJob(self, request, context):
        return self.merges.cancel(request.job_id)

    def StreamMergeJobEvents(self, request, context):
        yield from self.merges.events(request.job_id, request.from_sequence, request.follow, alive=context.is_active)

    def _execute_merge(self, record: trainer_pb2.MergeJob, control: JobControl) -> None:
        from tunesmith.core.dtypes import dtype_name
        from tunesmith.trainer.merge import merge_artifacts

        spec = record.spec
        adapter_dir = self.rt.storage.resolve(spec.adapter.uri)
        base = self.rt.models.get(spec.base_model or _adapter_base(adapter_dir)).artifact.uri
        control.progress(phase="merge")
        art = merge_artifacts(self.rt.storage, base, spec.adapter.uri, dtype=dtype_name(spec.dtype, "float32"))
        record.merged_model.CopyFrom(control.output(art))
        control.save()

    def CreateModelImportJob(self, request, context):
        spec = accept_model_import_request(request, self.rt)
        return self.imports.create(trainer_pb2.ModelImportJob(spec=spec), request.idempotency_key, dict(request.labels))

    def GetModelImportJob(self, request, context):
        return self.imports.get(request.job_id)

    def CancelModelImportJob(self, request, context):
        return self.imports.cancel(request.job_id)

    def StreamModelImportJobEvents(self, request, context):
        yield from self.imports.events(request.job_id, request.from_sequence, request.follow, alive=context.is_active)

    def _execute_import(self, record: trainer_pb2.ModelImportJob, control: JobControl) -> None:
        control.progress(phase="import")
        record.model.CopyFrom(model_proto(self.rt.models.register(record.spec.name, record.spec.path)))
        control.output(self.rt.models.get(record.spec.name).artifact)
        control.save()

    def PlanMemory(self, request, context):
        raise Unimplemented("the memory planner is on the roadmap (trainer in depth), not built yet")

    def CreateSweep(self, request, context):
        raise Unimplemented("sweeps are on the roadmap (trainer in depth), not built yet")

    def GetSweep(self, request, context):
        raise NotFound(f"no sweep with id {request.sweep_id!r}", field="sweep_id")

    def ListModels(self, request, context):
        return trainer_pb2.ListModelsResponse(models=[model_proto(m) for m in self.rt.models.list()])

def _adapter_base(adapter_dir) -> str:
    """The base model an adapter folder names (tunesmith-adapter.json: artifact://model/...), for
    ModelStore.get; InvalidArgument(field="base_model") if it names none."""
    from tunesmith.core.formats.adapter import base_reference

    base = base_reference(adapter_dir)
    if not base:
        raise InvalidArgument("the adapter does not name its base model; pass base_model", field="base_model")
    return base


def model_proto(entry) -> trainer_pb2.Model:
    return trainer_pb2.Model(name=entry.name, artifact=artifact_ref(entry.artifact), architecture=entry.architecture,
                             parameters=entry.parameters, source=entry.source,
                             has_chat_template=entry.has_chat_template)


def add_to_server(servicer, server) -> None:
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, server)


__all__ = ["TrainerServicer", "add_to_server"]
