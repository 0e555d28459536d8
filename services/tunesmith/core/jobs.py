"""Jobs: long work with a lifecycle, persisted records and an ordered, replayable event feed.

States follow OpenAI's fine-tuning lifecycle: VALIDATING -> QUEUED -> RUNNING -> SUCCEEDED |
FAILED | CANCELLED. A job's record (the service's own proto, e.g. TrainingJob, with the common
Job in its `job` field) lives at records/<collection>/<id>.json; its events, one JSON line each
with a sequence number starting at 1, at jobs/<id>/events.jsonl. Only the manager assigns
sequence numbers, so the feed is gap-free and strictly ordered.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from google.protobuf import json_format
from google.protobuf.message import Message

from tunesmith.api.common.v1 import common_pb2
from tunesmith.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, TunesmithError
from tunesmith.core.records import RecordStore, artifact_ref, paginate

log = logging.getLogger("tunesmith.jobs")
S = common_pb2.JobState
TERMINAL = frozenset({S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED})


def log_level(name: str) -> int:
    """The LogLevel enum value of "debug", "info", "warning"/"warn" or "error" (else INFO)."""
    name = (name or "info").strip().upper()
    name = "WARNING" if name == "WARN" else name
    return common_pb2.LogLevel.Value(f"LOG_LEVEL_{name}") if f"LOG_LEVEL_{name}" in common_pb2.LogLevel.keys() \
        else common_pb2.LOG_LEVEL_INFO


class JobCancelled(Exception):
    """Raised inside a job's work when it notices it was cancelled."""


class JobFailed(Exception):
    """Raised inside a job's work to fail it with a code and a message naming the problem."""

    def __init__(self, code: str, message: str, field: str = ""):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class EventLog:
    """Events of one job: persisted as JSON lines, kept in memory, followed with a Condition."""

    def __init__(self, storage, job_id: str):
        self.storage, self.job_id = storage, job_id
        self.key = f"jobs/{job_id}/events.jsonl"
        self.events: list[common_pb2.JobEvent] = []
        self.cond = threading.Condition()
        if storage.exists(self.key):
            raw = storage.read_bytes(self.key)
            if raw and not raw.endswith(b"\n"):
                storage.append_line(self.key, "")  # end a torn line so the next event starts afresh
            for number, line in enumerate(raw.decode(errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.events.append(json_format.Parse(line, common_pb2.JobEvent()))
                except json_format.ParseError:
                    # A torn last line (disk full, power loss) must not stop the service starting.
                    log.warning("skipping unreadable event", extra={"job_id": job_id, "line": number})

    def append(self, **payload: Message) -> common_pb2.JobEvent:
        with self.cond:
            event = common_pb2.JobEvent(job_id=self.job_id, sequence=len(self.events) + 1, **payload)
            event.time.GetCurrentTime()
            self.storage.append_line(self.key, json_format.MessageToJson(event, indent=None))
            self.events.append(event)
            self.cond.notify_all()
            return event

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def follow(self, from_sequence: int, done: Callable[[], bool], follow: bool,
               alive: Callable[[], bool] = lambda: True) -> Iterator[common_pb2.JobEvent]:
        """Events with sequence >= from_sequence; with follow, wait for more until done()."""
        index = max(from_sequence, 1) - 1
        while alive():
            with self.cond:
                batch = self.events[index:]
            if batch:
                index += len(batch)
                yield from batch
                continue
            # done() takes the job manager's lock: never call it while holding self.cond.
            finished = not follow or done()
            with self.cond:
                if len(self.events) > index:
                    continue  # an event raced in (e.g. the final state change)
                if finished:
                    return
                self.cond.wait(timeout=0.5)


class JobControl:
    """What a job's work uses to report progress, outputs and to notice cancellation."""

    def __init__(self, manager: "JobManager", record: Message):
        self.manager, self.record = manager, record
        self.cancelled = threading.Event()

    @property
    def job_id(self) -> str:
        return self.record.job.id

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    def progress(self, **fields: Any) -> None:
        p = common_pb2.Progress(**{k: v for k, v in fields.items() if v is not None and k in common_pb2.Progress.DESCRIPTOR.fields_by_name})
        self.record.job.progress.CopyFrom(p)
        self.manager._event(self.record, progress=p, save=False)

    def log(self, message: str, level: str = "info") -> None:
        """A log event; `level` is "debug", "info", "warning" or "error" (others: info)."""
        self.manager._event(self.record, log=common_pb2.LogLine(level=log_level(level), message=message), save=False)

    def metrics(self, name: str, values: dict[str, float]) -> None:
        self.manager._event(self.record, metrics=common_pb2.Metrics(name=name, values=values), save=False)

    def output(self, artifact) -> common_pb2.ArtifactRef:
        ref = artifact_ref(artifact)
        self.record.job.outputs.append(ref)
        self.manager._event(self.record, artifact=ref)
        return ref

    def save(self) -> None:
        self.manager.records.put(self.record.job.id, self.record)


class JobManager:
    """Runs jobs of one kind: validate, queue (max_concurrent at a time), run, record the end.

    `validate(record, control)` and `execute(record, control)` run on a background thread;
    they raise JobFailed (or a TunesmithError) to fail the job and JobCancelled when cancelled.
    """

    def __init__(self, storage, *, collection: str, record_cls: type[Message], kind: str, noun: str,
                 validate: Callable[[Message, JobControl], None], execute: Callable[[Message, JobControl], None],
                 cancel_hook: Callable[[Message, JobControl], None] | None = None, max_concurrent: int = 1,
                 recover: Callable[[Message], str] | None = None):
        self.storage, self.kind, self.noun = storage, kind, noun
        self.records = RecordStore(storage, collection, record_cls, noun=noun)
        self.validate_fn, self.execute_fn, self.cancel_hook = validate, execute, cancel_hook
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.lock = threading.RLock()
        self.logs: dict[str, EventLog] = {}
        self.controls: dict[str, JobControl] = {}
        self.by_key: dict[str, str] = {}
        for rec in self.records.list(skip_unreadable=True):
            if rec.job.idempotency_key:
                self.by_key[rec.job.idempotency_key] = rec.job.id
            if rec.job.state not in TERMINAL:
                # The process that ran it is gone: continue it where `recover` says how (e.g. from
                # a training checkpoint), else say so rather than leave it hanging.
                why = recover(rec) if recover is not None else ""
                if why:
                    self._restart(rec, f"the {noun} service restarted while this job was "
                                       f"{S.Name(rec.job.state).removeprefix('JOB_STATE_')}; {why}")
                    continue
                self._finish(rec, S.JOB_STATE_FAILED, common_pb2.JobError(
                    code="service_restarted", message=f"the {noun} service restarted while this job was {S.Name(rec.job.state)}"))

    # -- public API ------------------------------------------------------------------------
    def create(self, record: Message, idempotency_key: str = "", labels: dict[str, str] | None = None) -> Message:
        """Persist a new job (VALIDATING) and start it in the background; returns the record.

        With an idempotency key seen before and the same request (spec and labels), returns that
        job instead; the same key with a different request is AlreadyExists naming the job.
        """
        with self.lock:
            if idempotency_key and idempotency_key in self.by_key:
                existing = self.get(self.by_key[idempotency_key])
                if existing.spec != record.spec or dict(existing.job.labels) != dict(labels or {}):
                    raise AlreadyExists(
                        f"idempotency key {idempotency_key!r} was used for {self.noun} {existing.job.id} with a "
                        "different request; use a new key for a new job", field="idempotency_key",
                        code="idempotency_key_reused", metadata={"job_id": existing.job.id})
                return existing
            job_id = f"{self.kind[:5]}-{uuid.uuid4().hex[:12]}"
            record.job.id, record.job.kind, record.job.state = job_id, self.kind, S.JOB_STATE_VALIDATING
            record.job.idempotency_key = idempotency_key
            record.job.labels.update(labels or {})
            record.job.created_at.GetCurrentTime()
            self.records.put(job_id, record)  # first: a key never points at a job that was not saved
            if idempotency_key:
                self.by_key[idempotency_key] = job_id
            control = JobControl(self, record)
            self.controls[job_id] = control
            self._event(record, state_change=common_pb2.StateChange(state=S.JOB_STATE_VALIDATING), save=False)
        threading.Thread(target=self._run, args=(control,), name=f"job-{job_id}", daemon=True).start()
        return self._copy(record)

    def get(self, job_id: str) -> Message:
        with self.lock:
            control = self.controls.get(job_id)
            if control is not None:
                return self._copy(control.record)
        return self.records.get(job_id, field="job_id")

    def list(self, states: list[int] | None = None, page_size: int = 0, page_token: str = "") -> tuple[list[Message], str]:
        for i, state in enumerate(states or []):
            if state not in S.values() or state == S.JOB_STATE_UNSPECIFIED:
                raise InvalidArgument(f"unknown job state {state}", field=f"states[{i}]")
        items = [self.get(r.job.id) for r in self.records.list()]
        if states:
            items = [r for r in items if r.job.state in states]
        return paginate(items, page_size, page_token)

    def cancel(self, job_id: str) -> Message:
        record = self.get(job_id)
        if record.job.state in TERMINAL:
            raise FailedPrecondition(
                f"job {job_id} is already {S.Name(record.job.state).removeprefix('JOB_STATE_')}; only an unfinished job can be cancelled",
                field="job_id")
        control = self.controls.get(job_id)
        if control is None:
            raise FailedPrecondition(f"job {job_id} is not run by this service instance", field="job_id")
        control.cancelled.set()
        if self.cancel_hook:
            self.cancel_hook(control.record, control)
        return self.get(job_id)

    def rerun(self, job_id: str, why: str, prepare: Callable[[Message], None] = lambda r: None) -> Message:
        """Run a FAILED or CANCELLED job again (same id, same events log): `prepare(record)`
        may adjust the record first. FailedPrecondition for a job in any other state."""
        with self.lock:
            record = self.get(job_id)
            if record.job.state not in (S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
                raise FailedPrecondition(
                    f"job {job_id} is {S.Name(record.job.state).removeprefix('JOB_STATE_')}; only a failed or "
                    "cancelled job can be resumed", field="job_id")
            prepare(record)
            self._restart(record, why)
        return self.get(job_id)

    def _restart(self, record: Message, why: str) -> None:
        with self.lock:
            record.job.ClearField("error")
            record.job.ClearField("finished_at")
            control = JobControl(self, record)
            self.controls[record.job.id] = control
            self._set_state(record, S.JOB_STATE_VALIDATING)
            control.log(why, "warning")
        threading.Thread(target=self._run, args=(control,), name=f"job-{record.job.id}", daemon=True).start()

    def events(self, job_id: str, from_sequence: int = 0, follow: bool = False,
               alive: Callable[[], bool] = lambda: True) -> Iterator[common_pb2.JobEvent]:
        self.get(job_id)  # NotFound for an unknown id
        log_ = self._log(job_id)
        done = lambda: self.get(job_id).job.state in TERMINAL  # noqa: E731
        yield from log_.follow(from_sequence, done, follow, alive)

    def wait(self, job_id: str, timeout: float | None = None) -> Message:
        """Block until the job ends (tests and in-process callers)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.get(job_id).job.state not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return self.get(job_id)

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _copy(record: Message) -> Message:
        out = type(record)()
        out.CopyFrom(record)
        return out

    def _log(self, job_id: str) -> EventLog:
        with self.lock:
            if job_id not in self.logs:
                self.logs[job_id] = EventLog(self.storage, job_id)
            return self.logs[job_id]

    def _event(self, record: Message, *, save: bool = True, **payload: Message) -> None:
        with self.lock:
            event = self._log(record.job.id).append(**payload)
            record.job.last_event_sequence = event.sequence
            if save:
                self.records.put(record.job.id, record)

    def _set_state(self, record: Message, state: int, error: common_pb2.JobError | None = None) -> None:
        with self.lock:
            record.job.state = state
            if state == S.JOB_STATE_RUNNING:
                record.job.started_at.GetCurrentTime()
            if state in TERMINAL:
                record.job.finished_at.GetCurrentTime()
            if error is not None:
                record.job.error.CopyFrom(error)
            self._event(record, state_change=common_pb2.StateChange(state=state, error=error))

    def _finish(self, record: Message, state: int, error: common_pb2.JobError | None = None) -> None:
        self._set_state(record, state, error)
        log.info("job finished", extra={"job_id": record.job.id, "state": S.Name(state),
                                        "error": error.message if error else ""})

    def _run(self, control: JobControl) -> None:
        record = control.record
        acquired = False
        try:
            self.validate_fn(record, control)
            control.check_cancelled()
            self._set_state(record, S.JOB_STATE_QUEUED)
            while not (acquired := self.slots.acquire(timeout=0.5)):
                control.check_cancelled()
            control.check_cancelled()
            self._set_state(record, S.JOB_STATE_RUNNING)
            self.execute_fn(record, control)
            control.check_cancelled()
            self._finish(record, S.JOB_STATE_SUCCEEDED)
        except JobCancelled:
            self._finish(record, S.JOB_STATE_CANCELLED)
        except JobFailed as exc:
            self._finish(record, S.JOB_STATE_FAILED, common_pb2.JobError(code=exc.code, message=exc.message, field=exc.field))
        except TunesmithError as exc:
            self._finish(record, S.JOB_STATE_FAILED, common_pb2.JobError(code=exc.code, message=str(exc), field=exc.field or ""))
        except Exception as exc:  # noqa: BLE001 - a job's crash fails the job, not the service
            log.exception("job crashed", extra={"job_id": record.job.id})
            self._finish(record, S.JOB_STATE_FAILED, common_pb2.JobError(code="internal", message=f"{type(exc).__name__}: {exc}"))
        finally:
            if acquired:
                self.slots.release()
            if record.job.state not in TERMINAL:  # recording the end itself failed (e.g. disk full)
                record.job.state = S.JOB_STATE_FAILED
                record.job.error.CopyFrom(common_pb2.JobError(code="internal", message="could not record the job's end"))
            self._log(record.job.id).notify()
