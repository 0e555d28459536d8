"""The job manager: lifecycle, idempotency, cancel, replay, restarts, torn event logs."""
import threading

import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.trainer.v1 import trainer_pb2
from tunesmith.core.errors import FailedPrecondition, NotFound
from tunesmith.core.jobs import EventLog, JobFailed, JobManager
from tunesmith.core.storage import LocalStorage

S = common_pb2


def manager(storage, execute, validate=lambda r, c: None, **kw):
    return JobManager(storage, collection="jobs", record_cls=trainer_pb2.TrainingJob, kind="training",
                      noun="training job", validate=validate, execute=execute, **kw)


def states(mgr, job_id):
    return [e.state_change.state for e in mgr.events(job_id) if e.WhichOneof("payload") == "state_change"]


def test_lifecycle_events_and_replay(tmp_path):
    def work(record, control):
        for step in range(1, 4):
            control.progress(step=step, total_steps=3, loss=1.0 / step)
    mgr = manager(LocalStorage(tmp_path), work)
    job = mgr.create(trainer_pb2.TrainingJob())
    done = mgr.wait(job.job.id, timeout=10)
    assert done.job.state == S.JOB_STATE_SUCCEEDED
    assert states(mgr, job.job.id) == [S.JOB_STATE_VALIDATING, S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING,
                                       S.JOB_STATE_SUCCEEDED]
    events = list(mgr.events(job.job.id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.sequence for e in mgr.events(job.job.id, from_sequence=3)] == [e.sequence for e in events[2:]]
    assert done.job.progress.step == 3


def test_idempotency_key_returns_the_same_job(tmp_path):
    mgr = manager(LocalStorage(tmp_path), lambda r, c: None)
    a = mgr.create(trainer_pb2.TrainingJob(), idempotency_key="k1")
    b = mgr.create(trainer_pb2.TrainingJob(), idempotency_key="k1")
    c = mgr.create(trainer_pb2.TrainingJob(), idempotency_key="k2")
    assert a.job.id == b.job.id != c.job.id
    mgr.wait(a.job.id, 10), mgr.wait(c.job.id, 10)
    # The key survives a restart (a new manager over the same storage).
    again = manager(LocalStorage(tmp_path), lambda r, c: None).create(trainer_pb2.TrainingJob(), idempotency_key="k1")
    assert again.job.id == a.job.id


def test_validation_failure_names_the_field(tmp_path):
    def validate(record, control):
        raise JobFailed("invalid_split", "no split 'dev'", "spec.validation_split")
    mgr = manager(LocalStorage(tmp_path), lambda r, c: None, validate=validate)
    job = mgr.wait(mgr.create(trainer_pb2.TrainingJob()).job.id, 10)
    assert job.job.state == S.JOB_STATE_FAILED
    assert (job.job.error.code, job.job.error.field) == ("invalid_split", "spec.validation_split")


def test_cancel_a_queued_job_and_a_running_one(tmp_path):
    release = threading.Event()

    def work(record, control):
        while not release.wait(0.05):
            control.check_cancelled()
    mgr = manager(LocalStorage(tmp_path), work, max_concurrent=1)
    first = mgr.create(trainer_pb2.TrainingJob()).job.id
    second = mgr.create(trainer_pb2.TrainingJob()).job.id
    for _ in range(100):
        if mgr.get(second).job.state == S.JOB_STATE_QUEUED and mgr.get(first).job.state == S.JOB_STATE_RUNNING:
            break
        threading.Event().wait(0.05)
    mgr.cancel(second)
    mgr.cancel(first)
    assert mgr.wait(first, 10).job.state == S.JOB_STATE_CANCELLED
    assert mgr.wait(second, 10).job.state == S.JOB_STATE_CANCELLED
    assert S.JOB_STATE_RUNNING not in states(mgr, second)
    with pytest.raises(FailedPrecondition):
        mgr.cancel(first)
    with pytest.raises(NotFound):
        mgr.get("train-unknown")


def test_crash_in_work_fails_the_job_not_the_manager(tmp_path):
    mgr = manager(LocalStorage(tmp_path), lambda r, c: 1 / 0)
    job = mgr.wait(mgr.create(trainer_pb2.TrainingJob()).job.id, 10)
    assert job.job.state == S.JOB_STATE_FAILED and "ZeroDivisionError" in job.job.error.message
    assert mgr.wait(mgr.create(trainer_pb2.TrainingJob()).job.id, 10).job.state == S.JOB_STATE_FAILED


def test_restart_fails_unfinished_jobs_and_survives_a_torn_event_log(tmp_path):
    storage = LocalStorage(tmp_path)
    block = threading.Event()
    mgr = manager(storage, lambda r, c: block.wait(5))
    job_id = mgr.create(trainer_pb2.TrainingJob()).job.id
    for _ in range(100):
        if mgr.get(job_id).job.state == S.JOB_STATE_RUNNING:
            break
        threading.Event().wait(0.05)
    with open(storage.path(f"jobs/{job_id}/events.jsonl"), "a") as f:
        f.write('{"jobId": "torn')  # a short write: disk full, power loss
    restarted = manager(storage, lambda r, c: None)
    rec = restarted.get(job_id)
    assert rec.job.state == S.JOB_STATE_FAILED and rec.job.error.code == "service_restarted"
    assert states(restarted, job_id)[-1] == S.JOB_STATE_FAILED
    assert len(EventLog(storage, job_id).events) >= 4
    block.set()
