"""TrainerService: training jobs, each in its own process (a crash fails the job, not us)."""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time

from google.protobuf import json_format

from tunesmith.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunesmith.core.errors import InvalidArgument, NotFound, Unimplemented
from tunesmith.core.jobs import JobCancelled, JobControl, JobFailed, JobManager
from tunesmith.core.records import artifact_ref
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status
from tunesmith.core.storage import Artifact

log = logging.getLogger("tunesmith.trainer")

DEFAULT_HYPERPARAMETERS = {"epochs": 1, "batch_size": 8, "learning_rate": 2e-4, "lr_scheduler": "linear",
                           "max_grad_norm": 1.0, "max_seq_length": 512, "log_every_steps": 1}


def hyperparameters_dict(hp: trainer_pb2.Hyperparameters) -> dict:
    """Set fields of the proto over the defaults (proto3 zeros mean "not set")."""
    out = dict(DEFAULT_HYPERPARAMETERS)
    out.update(json_format.MessageToDict(hp, preserving_proto_field_name=True))
    return out


def method_options(method: trainer_pb2.MethodSpec) -> dict:
    opts = json_format.MessageToDict(method.options) if method.HasField("options") else {}
    if method.rank:
        opts["rank"] = method.rank
    if method.alpha:
        opts["alpha"] = method.alpha
    if method.dropout:
        opts["dropout"] = method.dropout
    if method.target_modules:
        opts["target_modules"] = list(method.target_modules)
        if opts["target_modules"] == ["all-linear"]:
            opts["target_modules"] = "all-linear"
    return opts


def check_hyperparameters(hp: trainer_pb2.Hyperparameters) -> None:
    """Reject values that cannot work, naming the field."""
    checks = [
        (hp.epochs < 0, "hyperparameters.epochs", "must be >= 0"),
        (hp.max_steps < 0, "hyperparameters.max_steps", "must be >= 0"),
        (hp.batch_size < 0, "hyperparameters.batch_size", "must be >= 1"),
        (hp.gradient_accumulation_steps < 0, "hyperparameters.gradient_accumulation_steps", "must be >= 1"),
        (not math.isfinite(hp.learning_rate) or hp.learning_rate < 0 or hp.learning_rate > 1,
         "hyperparameters.learning_rate", "must be in (0, 1]"),
        (not math.isfinite(hp.weight_decay) or hp.weight_decay < 0, "hyperparameters.weight_decay", "must be >= 0"),
        (not 0 <= hp.warmup_ratio < 1, "hyperparameters.warmup_ratio", "must be in [0, 1)"),
        (hp.lr_scheduler not in ("", "linear", "cosine", "constant"), "hyperparameters.lr_scheduler",
         "must be linear, cosine or constant"),
        (hp.max_seq_length < 0, "hyperparameters.max_seq_length", "must be >= 1"),
        (hp.dtype not in ("", "float32", "bfloat16", "float16"), "hyperparameters.dtype",
         "must be float32, bfloat16 or float16"),
    ]
    for bad, field, message in checks:
        if bad:
            raise InvalidArgument(f"{message} (got {getattr(hp, field.split('.')[1])!r})", field=field)


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, runtime: Runtime, *, max_concurrent_jobs: int = 1):
        self.rt = runtime
        self.handles: dict[str, object] = {}
        self.jobs = JobManager(runtime.storage, collection="training_jobs", record_cls=trainer_pb2.TrainingJob,
                               kind="training", noun="training job", validate=self._validate,
                               execute=self._execute, cancel_hook=self._on_cancel,
                               max_concurrent=max_concurrent_jobs)

    # -- job stages ------------------------------------------------------------------------
    def _validate(self, record: trainer_pb2.TrainingJob, control: JobControl) -> None:
        spec = record.spec
        control.log(f"resolving base model {spec.base_model!r}")
        self._ensure_model(spec.base_model, control)
        ds = self.rt.datasets.get(spec.dataset_id, field="spec.dataset_id")
        splits = {s.name: s.rows for s in ds.splits}
        for field, name in (("spec.train_split", spec.train_split), ("spec.validation_split", spec.validation_split)):
            if name and name not in splits:
                raise JobFailed("invalid_split", f"dataset {ds.id} has no split {name!r} (splits: {', '.join(splits)})", field)
        if not splits.get(spec.train_split):
            raise JobFailed("empty_dataset", f"split {spec.train_split!r} of dataset {ds.id} has no rows", "spec.train_split")

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
        spec, job_id = record.spec, record.job.id
        storage = self.rt.storage
        ds = self.rt.datasets.get(spec.dataset_id)
        base = f"jobs/{job_id}"
        storage.write_json(f"{base}/worker-input.json", {
            "model_path": self.rt.models.local_path(spec.base_model),
            "dataset_dir": str(storage.local_path(ds.artifact.uri)),
            "train_split": spec.train_split,
            "validation_split": spec.validation_split,
            "method": spec.method.name,
            "method_options": method_options(spec.method),
            "hyperparameters": {**hyperparameters_dict(spec.hyperparameters),
                                **({"device": spec.device} if spec.device else {})},
            "merge": spec.merge,
        })
        executor = self.rt.registry.get("training_executors", spec.executor)
        argv = [sys.executable, "-m", "tunesmith.trainer.worker", "--storage", str(storage.root), "--job", job_id]
        handle = executor.submit(job_id, argv, {"HF_HUB_OFFLINE": "1"}, str(storage.path(f"{base}/worker.log")))
        self.handles[job_id] = handle
        control.log(f"worker started by the {spec.executor!r} executor")
        events_path = storage.path(f"{base}/worker-events.jsonl")
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
            err_key = f"{base}/worker-error.json"
            if storage.exists(err_key):
                err = storage.read_json(err_key)
                raise JobFailed(err.get("code", "training_error"), err.get("message", ""))
            tail = storage.path(f"{base}/worker.log").read_text(errors="replace")[-600:] if storage.exists(f"{base}/worker.log") else ""
            raise JobFailed("worker_crashed", f"the training process exited with code {code} "
                                              f"(killed by the OS if negative or 137: out of memory?); log tail: {tail}")
        result = storage.read_json(f"{base}/worker-result.json")
        self._apply_result(record, result, control)

    def _forward_events(self, path, offset: int, record, control: JobControl) -> int:
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
                event = json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping an unreadable worker event", extra={"job_id": record.job.id})
                continue
            kind = event.pop("type", "")
            if kind == "progress":
                control.progress(**event)
            elif kind == "metrics":
                control.metrics(event.get("name", ""), {k: float(v) for k, v in event.get("values", {}).items()
                                                        if isinstance(v, (int, float))})
            elif kind == "log":
                control.log(event.get("message", ""), event.get("level", "info"))
        return offset + len(complete)

    def _apply_result(self, record: trainer_pb2.TrainingJob, result: dict, control: JobControl) -> None:
        r = record.result
        r.adapter.CopyFrom(control.output(Artifact.from_dict(result["adapter"])))
        if result.get("merged_model"):
            r.merged_model.CopyFrom(control.output(Artifact.from_dict(result["merged_model"])))
        for name in ("train_seconds", "tokens_per_second", "first_train_loss", "final_train_loss"):
            setattr(r, name, float(result.get(name) or 0.0))
        r.best_validation_loss = float(result.get("best_validation_loss") or 0.0)
        for name in ("steps", "trainable_parameters", "total_parameters", "peak_memory_bytes"):
            setattr(r, name, int(result.get(name) or 0))
        r.train_tokens = int(result.get("train_tokens") or 0)
        r.stopped_early = bool(result.get("stopped_early"))
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
        spec = trainer_pb2.TrainingJobSpec()
        spec.CopyFrom(request.spec)
        if not spec.base_model:
            raise InvalidArgument("base_model is required (a model-store name, e.g. smollm2-135m-instruct)",
                                  field="spec.base_model")
        if not spec.dataset_id:
            raise InvalidArgument("dataset_id is required", field="spec.dataset_id")
        self.rt.datasets.get(spec.dataset_id, field="spec.dataset_id")
        if spec.objective == trainer_pb2.OBJECTIVE_DPO:
            raise Unimplemented("DPO is on the roadmap (trainer in depth), not built yet")
        spec.method.name = spec.method.name or "lora"
        self.rt.registry.require("peft_methods", spec.method.name, "spec.method.name")
        spec.executor = spec.executor or "local"
        self.rt.registry.require("training_executors", spec.executor, "spec.executor")
        check_hyperparameters(spec.hyperparameters)
        spec.train_split = spec.train_split or "train"
        spec.validation_split = spec.validation_split or ""
        record = trainer_pb2.TrainingJob(spec=spec)
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

    def MergeAdapter(self, request, context):
        from tunesmith.trainer.merge import merge_adapter

        if not request.adapter.uri:
            raise InvalidArgument("adapter.uri is required", field="adapter")
        adapter_dir = self.rt.storage.local_path(request.adapter.uri)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise InvalidArgument(f"{request.adapter.uri} is not a peft adapter (no adapter_config.json)", field="adapter")
        base = self.rt.models.local_path(request.base_model or _adapter_base(adapter_dir))
        with self.rt.storage.staging_dir() as tmp:
            merged = merge_adapter(base, str(adapter_dir), tmp / "merged", dtype=request.dtype or "float32")
            art = self.rt.storage.put_artifact("model", merged, move=True)
        return trainer_pb2.MergeAdapterResponse(merged_model=artifact_ref(art))

    def PlanMemory(self, request, context):
        raise Unimplemented("the memory planner is on the roadmap (trainer in depth), not built yet")

    def CreateSweep(self, request, context):
        raise Unimplemented("sweeps are on the roadmap (trainer in depth), not built yet")

    def GetSweep(self, request, context):
        raise NotFound(f"no sweep with id {request.sweep_id!r}", field="sweep_id")

    def ListModels(self, request, context):
        return trainer_pb2.ListModelsResponse(models=[model_proto(m) for m in self.rt.models.list()])

    def RegisterModel(self, request, context):
        if not request.name:
            raise InvalidArgument("name is required", field="name")
        if not request.path:
            raise InvalidArgument("path is required (a Hugging Face model folder or a .gguf file)", field="path")
        return model_proto(self.rt.models.register(request.name, request.path))


def _adapter_base(adapter_dir) -> str:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path") or ""
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
