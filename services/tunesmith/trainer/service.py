"""TrainerService: training jobs, each in its own worker process.

A worker that dies without reporting (SIGKILL, OOM kill, a lost node) is restarted from the
job's latest checkpoint while its retry policy allows (default: 3 restarts); a worker that
reports an error fails the job. A service restarted mid-job continues its training jobs the same
way. ResumeTrainingJob restarts a failed or cancelled job from a checkpoint by hand.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time


from tunesmith.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound, TunesmithError, Unimplemented
from tunesmith.core.jobs import JobCancelled, JobControl, JobFailed, JobManager
from tunesmith.core.records import artifact_ref
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status
from tunesmith.trainer import hyperparameters
from tunesmith.trainer.validation import (accept_merge_request, accept_model_import_request, accept_resume_request,
                                         accept_training_request, method_options, recipe_options)

log = logging.getLogger("tunesmith.trainer")
DEFAULT_MAX_RESTARTS = 3


def _add_to_curves(record: trainer_pb2.TrainingJob, event) -> None:
    """Add a worker event's loss to the job's curves: a train progress event's loss, or a
    validation metrics event's loss."""
    d = event.data
    if event.type == "progress" and d.get("phase") == "train" and isinstance(d.get("loss"), (int, float)):
        record.curves.train_loss.add(step=int(d.get("step", 0)), loss=float(d["loss"]))
    elif event.type == "metrics" and d.get("name") == "validation":
        values = d.get("values") or {}
        if isinstance(values.get("loss"), (int, float)):
            record.curves.validation_loss.add(step=int(values.get("step", 0)), loss=float(values["loss"]))


def _curves_from_worker_events(storage, record: trainer_pb2.TrainingJob) -> None:
    """Rebuild the job's curves from worker-events.jsonl (what a killed service had not saved);
    later attempts' points replace earlier ones of the same step."""
    from tunesmith.core.formats import FormatError
    from tunesmith.core.formats.worker import EVENTS_FILE, WorkerEvent, job_key

    path = storage.path(job_key(record.job.id, EVENTS_FILE))
    if not path.is_file():
        return
    record.ClearField("curves")
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = WorkerEvent.from_line(line, str(path))
        except FormatError:
            continue
        if event.type == "progress" and event.data.get("phase") == "train":
            _trim_curves(record, int(event.data.get("step", 0)) - 1)
        _add_to_curves(record, event)


def _trim_curves(record: trainer_pb2.TrainingJob, step: int) -> None:
    """Drop loss-curve points after `step`: a resumed attempt redoes those steps."""
    for curve in (record.curves.train_loss, record.curves.validation_loss):
        keep = [p for p in curve if p.step <= step]
        del curve[:]
        curve.extend(keep)


#: How long a restarted service waits at start-up for a previous service's worker to checkpoint
#: and exit before continuing its job (then it is killed).
RECOVER_WAIT_SECONDS = 30.0


def _wait_for_old_worker(storage, job_id: str, timeout: float = 60.0) -> None:
    """Wait until the job's previous worker (pid in worker.pid) is gone, SIGKILLing its process
    group after `timeout`. A pid now used by another program (its command line does not name the
    job) is left alone."""
    import os
    import signal

    from tunesmith.core.formats.worker import PID_FILE, job_key

    try:
        pid = int(storage.read_bytes(job_key(job_id, PID_FILE)).decode().strip())
    except Exception:  # noqa: BLE001 - no pid file: nothing to wait for
        return

    def alive() -> bool:
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return job_id in cmdline and state != "Z"

    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        time.sleep(0.2)


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, runtime: Runtime, *, max_concurrent_jobs: int = 1):
        self.rt = runtime
        self.handles: dict[str, object] = {}
        self.jobs = JobManager(runtime.storage, collection="training_jobs", record_cls=trainer_pb2.TrainingJob,
                               kind="training", noun="training job", validate=self._validate,
                               execute=self._execute, cancel_hook=self._on_cancel,
                               max_concurrent=max_concurrent_jobs, recover=self._recover)
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
        """Run worker attempts until one succeeds, reports an error, or the retry policy ends."""
        from tunesmith.core.formats.worker import ERROR_FILE, LOG_FILE, RESULT_FILE, WorkerError, WorkerResult, job_key

        spec, job_id, storage = record.spec, record.job.id, self.rt.storage
        max_restarts = 0 if spec.retry.disabled else (spec.retry.max_restarts or DEFAULT_MAX_RESTARTS)
        restarts = 0
        while True:
            for name in (ERROR_FILE, RESULT_FILE):
                storage.delete(job_key(job_id, name))
            record.attempts += 1
            control.save()  # a service restarted mid-attempt counts it
            code = self._run_attempt(record, control)
            if control.cancelled.is_set():
                raise JobCancelled()
            if code == 0:
                self._apply_result(record, WorkerResult.read(storage, job_id), control)
                if spec.gate.enabled:
                    from tunesmith.trainer.quality_gate import run_quality_gate

                    run_quality_gate(record, control, self.rt.peers.get("evaluator", ""))
                if spec.serve_as:
                    self._serve(record, control)
                return
            if storage.exists(job_key(job_id, ERROR_FILE)):
                err = WorkerError.read(storage, job_id)
                raise JobFailed(err.code, err.message, err.field)
            log_path = storage.path(job_key(job_id, LOG_FILE))
            tail = log_path.read_text(errors="replace")[-600:] if log_path.is_file() else ""
            if restarts < max_restarts:
                restarts += 1
                self._refresh_checkpoint(record)
                where = (f"its checkpoint at step {record.latest_checkpoint_step}" if record.latest_checkpoint.uri
                         else "the start (no checkpoint yet)")
                control.log(f"the training process died (exit code {code}); restarting from {where} "
                            f"(restart {restarts} of {max_restarts})", "warning")
                continue
            raise JobFailed("worker_crashed", f"the training process exited with code {code} "
                                              f"(killed by the OS if negative or 137: out of memory?)"
                                              + (f" after {restarts} restart(s)" if restarts else "")
                                              + f"; log tail: {tail}")

    def _serve(self, record: trainer_pb2.TrainingJob, control: JobControl) -> None:
        """The serve_as hand-off (tunesmith.trainer.handoff), unless the gate failed."""
        from tunesmith.trainer.handoff import run_handoff, skip_serving

        if record.spec.gate.enabled and not record.result.gate_passed:
            skip_serving(record, control, f"the quality gate failed (evaluation {record.result.gate_evaluation_id}): "
                                          f"a model that regressed is not served")
            return
        base_uri = self.rt.models.get(record.spec.base_model).artifact.uri
        run_handoff(record, control, self.rt.peers.get("inference", ""), self.rt.storage, base_uri)

    def _worker_input(self, record: trainer_pb2.TrainingJob):
        from tunesmith.core.formats.worker import WorkerInput

        spec = record.spec
        ds = self.rt.datasets.get(spec.dataset_id)
        base_model = self.rt.models.get(spec.base_model)
        return WorkerInput(  # artifact URIs only: the worker resolves them through its own storage
            base_model=base_model.artifact.uri,
            base_model_name="" if "://" in base_model.name else base_model.name,
            dataset=ds.artifact.uri,
            train_split=spec.train_split,
            validation_split=spec.validation_split,
            method=spec.method.name,
            method_options=method_options(spec.method),
            hyperparameters=hyperparameters.from_proto(spec.hyperparameters, device=spec.device),
            merge=spec.merge,
            recipe=spec.recipe,
            recipe_options=self._resolved_recipe_options(spec),
            resume_from=record.latest_checkpoint.uri or spec.resume_from_checkpoint,
            serve_check=({"prompts": spec.serve_check.prompts, "max_new_tokens": spec.serve_check.max_new_tokens}
                         if spec.serve_as else {}),
        )

    def _resolved_recipe_options(self, spec: trainer_pb2.TrainingJobSpec) -> dict:
        """The recipe options with a model-store name (DPO's reference_model) made its artifact URI,
        which the worker resolves through its own storage."""
        opts = recipe_options(spec)
        if opts.get("reference_model"):
            opts["reference_model"] = self.rt.models.get(opts["reference_model"]).artifact.uri
        return opts

    def _run_attempt(self, record: trainer_pb2.TrainingJob, control: JobControl) -> int:
        """Start one worker (from the latest checkpoint, if any), forward its events until it
        ends; its exit code."""
        from tunesmith.core.formats.worker import EVENTS_FILE, LOG_FILE, PID_FILE, job_key

        spec, job_id, storage = record.spec, record.job.id, self.rt.storage
        _wait_for_old_worker(storage, job_id)
        worker_input = self._worker_input(record)
        _trim_curves(record, record.latest_checkpoint_step if worker_input.resume_from else 0)
        worker_input.write(storage, job_id)
        executor = self.rt.registry.get("training_executors", spec.executor)
        argv = [sys.executable, "-m", "tunesmith.trainer.worker", "--storage", str(storage.root), "--job", job_id]
        if spec.num_processes > 1:
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={spec.num_processes}", "-m", "tunesmith.trainer.worker",
                    "--storage", str(storage.root), "--job", job_id]
        log_path = storage.path(job_key(job_id, LOG_FILE))
        handle = executor.submit(job_id, argv, {"HF_HUB_OFFLINE": "1"}, str(log_path))
        self.handles[job_id] = handle
        pid = getattr(handle, "pid", None)
        if pid:
            storage.write_bytes(job_key(job_id, PID_FILE), str(pid).encode())
        control.log(f"worker started by the {spec.executor!r} executor (attempt {record.attempts}"
                    + (f", from {worker_input.resume_from}" if worker_input.resume_from else "") + ")")
        events_path = storage.path(job_key(job_id, EVENTS_FILE))
        offset = storage.path(job_key(job_id, EVENTS_FILE)).stat().st_size if events_path.exists() else 0
        code = None
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
        return code

    def _refresh_checkpoint(self, record: trainer_pb2.TrainingJob) -> None:
        """Take the newest checkpoint the worker wrote (latest-checkpoint.json), in case its last
        event was not forwarded before it died."""
        from tunesmith.core.formats.worker import LatestCheckpoint

        try:
            latest = LatestCheckpoint.read(self.rt.storage, record.job.id)
        except TunesmithError:
            return
        if latest.step > record.latest_checkpoint_step or not record.latest_checkpoint.uri:
            record.latest_checkpoint.CopyFrom(artifact_ref(self.rt.storage.artifact(latest.uri)))
            record.latest_checkpoint_step = latest.step

    def _recover(self, record: trainer_pb2.TrainingJob) -> str:
        """At start-up, for a job left unfinished by a previous service: why and how it continues,
        or "" to fail it. The old worker stops (with a checkpoint) once its parent is gone;
        recovery waits for it to exit (at most RECOVER_WAIT_SECONDS) before reading its checkpoint."""
        from tunesmith.core.formats.worker import LatestCheckpoint

        if record.spec.retry.disabled:
            return ""
        storage = self.rt.storage
        # The old worker writes its last checkpoint as it stops: wait for it (it notices its
        # parent is gone within a step), or this would read the checkpoint before it exists.
        _wait_for_old_worker(storage, record.job.id, timeout=RECOVER_WAIT_SECONDS)
        try:
            latest = LatestCheckpoint.read(storage, record.job.id)
        except Exception:  # noqa: BLE001 - no (readable) checkpoint: start over
            return "restarting it from the start (no checkpoint)"
        record.latest_checkpoint.CopyFrom(artifact_ref(storage.artifact(latest.uri)))
        record.latest_checkpoint_step = latest.step
        _curves_from_worker_events(storage, record)
        return f"continuing it from its checkpoint at step {latest.step}"

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
                _add_to_curves(record, event)
            elif event.type == "metrics":
                values = {k: float(v) for k, v in (event.data.get("values") or {}).items()
                          if isinstance(v, (int, float))}
                control.metrics(str(event.data.get("name", "")), values)
                _add_to_curves(record, event)
            elif event.type == "checkpoint":
                uri = str(event.data.get("uri", ""))
                try:
                    record.latest_checkpoint.CopyFrom(artifact_ref(self.rt.storage.artifact(uri)))
                except TunesmithError as exc:
                    log.warning("the worker named a checkpoint that is not stored: %s", exc,
                                extra={"job_id": record.job.id})
                    continue
                record.latest_checkpoint_step = int(event.data.get("step", 0))
                control.save()
            elif event.type == "log":
                control.log(str(event.data.get("message", "")), str(event.data.get("level", "info")))
        return offset + len(complete)

    def _apply_result(self, record: trainer_pb2.TrainingJob, result, control: JobControl) -> None:
        """Copy a WorkerResult (tunesmith.core.formats.worker) into the job record and save it."""
        r = record.result
        if result.adapter is not None:
            r.adapter.CopyFrom(control.output(result.adapter))
        if result.model is not None:
            r.model.CopyFrom(control.output(result.model))
        if record.latest_checkpoint.uri:
            r.checkpoints.append(record.latest_checkpoint)
        r.final_metrics.update(result.final_metrics)
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

    def ResumeTrainingJob(self, request, context):
        named = accept_resume_request(request, self.rt)
        ref = named[0] if named else None

        def prepare(record: trainer_pb2.TrainingJob) -> None:
            if named is not None:
                record.latest_checkpoint.CopyFrom(named[0])
                record.latest_checkpoint_step = named[1]
            elif not record.latest_checkpoint.uri:
                raise FailedPrecondition(f"job {record.job.id} has no checkpoint to resume from; start a new job",
                                         field="job_id")

        where = ref.uri if ref is not None else "its latest checkpoint"
        return self.jobs.rerun(request.job_id, f"resumed by request from {where}", prepare)

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
        from tunesmith.trainer.planner import plan_memory

        return plan_memory(request, self.rt)

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
