"""Training jobs run in their own process: a crash fails the job (not the service) or, under the
retry policy, restarts it from its latest checkpoint; cancel works; ResumeTrainingJob resumes."""
import subprocess
import time

import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.trainer.v1 import trainer_pb2

from .conftest import banking_rows, import_model, write_csv

S = common_pb2


@pytest.fixture(scope="module")
def dataset_id(cluster, tiny_model_dir, tmp_path_factory):
    import_model(cluster, "tiny", tiny_model_dir)
    path = write_csv(tmp_path_factory.mktemp("csv") / "t.csv", banking_rows(["card_arrival", "age_limit"], 20))
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"})
    return cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(path), spec=spec), timeout=60).dataset.id


def long_job(cluster, dataset_id, **spec):
    """A job that trains long enough to be interrupted (many epochs of a tiny model)."""
    job = cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
        base_model="tiny", dataset_id=dataset_id, method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=4)),
        hyperparameters=trainer_pb2.Hyperparameters(max_steps=100_000, batch_size=2, log_every_steps=1), **spec)),
        timeout=30)
    for event in cluster.trainer.StreamTrainingJobEvents(S.JobEventsRequest(job_id=job.job.id, follow=True), timeout=300):
        if event.WhichOneof("payload") == "progress" and event.progress.step >= 2:
            return job.job.id
    pytest.fail("the job never reported progress")


def wait_terminal(cluster, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cluster.trainer.GetTrainingJob(S.GetJobRequest(job_id=job_id), timeout=10)
        if job.job.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not finish")


def test_killed_worker_fails_the_job_not_the_service(cluster, dataset_id):
    job_id = long_job(cluster, dataset_id, retry=trainer_pb2.RetryPolicy(disabled=True))
    pids = subprocess.run(["pgrep", "-f", f"tunesmith.trainer.worker .*--job {job_id}"],
                          capture_output=True, text=True).stdout.split()
    assert len(pids) == 1, pids
    subprocess.run(["kill", "-9", pids[0]], check=True)  # what the kernel's OOM killer does
    job = wait_terminal(cluster, job_id)
    assert job.job.state == S.JOB_STATE_FAILED
    assert job.job.error.code == "worker_crashed" and "-9" in job.job.error.message
    status = cluster.trainer.GetStatus(S.GetStatusRequest(), timeout=10)
    assert status.service == "trainer"


def test_cancel_stops_a_running_job(cluster, dataset_id):
    job_id = long_job(cluster, dataset_id)
    cluster.trainer.CancelTrainingJob(S.CancelJobRequest(job_id=job_id), timeout=10)
    job = wait_terminal(cluster, job_id, timeout=60)
    assert job.job.state == S.JOB_STATE_CANCELLED
    assert not subprocess.run(["pgrep", "-f", f"--job {job_id}"], capture_output=True).stdout
    with pytest.raises(grpc.RpcError) as err:
        cluster.trainer.CancelTrainingJob(S.CancelJobRequest(job_id=job_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _worker_pid(cluster, job_id, not_pid=None, timeout=60):
    key = f"jobs/{job_id}/worker.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.runtime.storage.exists(key):
            pid = int(cluster.runtime.storage.read_bytes(key).decode())
            if pid != not_pid:
                return pid
        time.sleep(0.1)
    pytest.fail("no new worker started")


def test_a_worker_killed_five_times_resumes_from_its_checkpoints_and_succeeds(cluster, dataset_id):
    """kill -9 (what the OOM killer does) right after each of 5 checkpoints: each time the job
    restarts from the latest checkpoint, loses at most one checkpoint interval, and in the end
    SUCCEEDS with one loss-curve point per step."""
    every, total = 20, 400
    job = cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
        base_model="tiny", dataset_id=dataset_id, method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=4)),
        retry=trainer_pb2.RetryPolicy(max_restarts=5),
        hyperparameters=trainer_pb2.Hyperparameters(max_steps=total, batch_size=2, log_every_steps=1,
                                                    checkpoint_every_steps=every))), timeout=30)
    job_id = job.job.id
    pid, seen_ckpt = None, 0
    for kill in range(5):
        pid = _worker_pid(cluster, job_id, not_pid=pid)
        deadline = time.monotonic() + 120
        while True:  # wait for a checkpoint newer than the last kill's
            rec = cluster.trainer.GetTrainingJob(S.GetJobRequest(job_id=job_id), timeout=10)
            if rec.latest_checkpoint_step > seen_ckpt:
                break
            assert rec.job.state not in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED), rec.job
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.05)
        subprocess.run(["kill", "-9", str(pid)], check=True)
        at_kill = cluster.trainer.GetTrainingJob(S.GetJobRequest(job_id=job_id), timeout=10)
        seen_ckpt = at_kill.latest_checkpoint_step
        assert at_kill.job.progress.step - seen_ckpt <= every, "more than one interval since the checkpoint"
    done = wait_terminal(cluster, job_id, timeout=300)
    assert done.job.state == S.JOB_STATE_SUCCEEDED, done.job.error
    assert done.attempts == 6 and done.result.steps == total
    steps = [p.step for p in done.curves.train_loss]
    assert steps == list(range(1, total + 1)), "every step once: resumed attempts redo only what was lost"
    logs = [e.log.message for e in cluster.trainer.StreamTrainingJobEvents(S.JobEventsRequest(job_id=job_id), timeout=30)
            if e.WhichOneof("payload") == "log"]
    restarts = [m for m in logs if "restarting from its checkpoint at step" in m]
    assert len(restarts) == 5, logs
    assert done.result.checkpoints and done.result.checkpoints[0].uri.startswith("artifact://checkpoint/")


def test_a_cancelled_job_resumes_by_request_from_its_checkpoint(cluster, dataset_id):
    job_id = long_job(cluster, dataset_id)
    deadline = time.monotonic() + 120
    while cluster.trainer.GetTrainingJob(S.GetJobRequest(job_id=job_id), timeout=10).latest_checkpoint_step == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cluster.trainer.CancelTrainingJob(S.CancelJobRequest(job_id=job_id), timeout=10)
    job = wait_terminal(cluster, job_id, timeout=60)
    assert job.job.state == S.JOB_STATE_CANCELLED
    step = job.latest_checkpoint_step  # the SIGTERM checkpoint is at least as new as the periodic ones
    assert step > 0

    bogus = "artifact://checkpoint/" + "0" * 64
    with pytest.raises(grpc.RpcError) as err:
        cluster.trainer.ResumeTrainingJob(trainer_pb2.ResumeTrainingJobRequest(job_id=job_id, checkpoint=bogus),
                                          timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    resumed = cluster.trainer.ResumeTrainingJob(trainer_pb2.ResumeTrainingJobRequest(job_id=job_id), timeout=10)
    assert resumed.job.state not in (S.JOB_STATE_CANCELLED, S.JOB_STATE_FAILED)
    for event in cluster.trainer.StreamTrainingJobEvents(
            S.JobEventsRequest(job_id=job_id, from_sequence=resumed.job.last_event_sequence, follow=True), timeout=120):
        if event.WhichOneof("payload") == "progress" and event.progress.phase == "train":
            assert event.progress.step == step + 1  # continues where the checkpoint left off
            break
    with pytest.raises(grpc.RpcError) as err:  # running: resuming again is refused
        cluster.trainer.ResumeTrainingJob(trainer_pb2.ResumeTrainingJobRequest(job_id=job_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    cluster.trainer.CancelTrainingJob(S.CancelJobRequest(job_id=job_id), timeout=10)
    assert wait_terminal(cluster, job_id, timeout=60).job.state == S.JOB_STATE_CANCELLED


def _short_job(cluster, dataset_id, **hp_and_spec):
    processes = hp_and_spec.pop("num_processes", 0)
    job = cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
        base_model="tiny", dataset_id=dataset_id, method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=4)),
        num_processes=processes, device="cpu",
        hyperparameters=trainer_pb2.Hyperparameters(max_steps=8, batch_size=2, log_every_steps=1, seed=3,
                                                    **hp_and_spec))), timeout=30)
    return wait_terminal(cluster, job.job.id, timeout=300)


def test_two_processes_under_torchrun_train_like_one_with_twice_the_accumulation(cluster, dataset_id):
    """DDP on CPU (gloo): 2 processes x 1 micro-batch per step see the same micro-batches as one
    process accumulating 2, so their loss curves agree."""
    ddp = _short_job(cluster, dataset_id, num_processes=2, gradient_accumulation_steps=1)
    assert ddp.job.state == S.JOB_STATE_SUCCEEDED, ddp.job.error
    single = _short_job(cluster, dataset_id, gradient_accumulation_steps=2)
    assert single.job.state == S.JOB_STATE_SUCCEEDED, single.job.error
    a = [p.loss for p in ddp.curves.train_loss]
    b = [p.loss for p in single.curves.train_loss]
    assert len(a) == len(b) == 8
    assert a == pytest.approx(b, rel=1e-4)
    assert ddp.result.train_tokens == single.result.train_tokens
    logs = [e.log.message for e in cluster.trainer.StreamTrainingJobEvents(S.JobEventsRequest(job_id=ddp.job.id),
                                                                          timeout=30) if e.WhichOneof("payload") == "log"]
    assert any("2 processes" in m for m in logs), logs


def _serve_trainer(root, port):
    import sys

    return subprocess.Popen([sys.executable, "-m", "tunesmith.cli.main", "serve", "trainer", "--port", str(port),
                             "--host", "127.0.0.1", "--storage", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_trainer_service_killed_mid_job_continues_the_job_after_its_restart(cluster, dataset_id):
    """kill -9 of the trainer service itself: its worker stops at once with a checkpoint (its
    parent is gone); the restarted service continues the job from that checkpoint to SUCCEEDED."""
    import socket

    from tunesmith.api.trainer.v1 import trainer_pb2_grpc
    from tunesmith.cli.servers import wait_healthy

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = cluster.runtime.storage.root
    service = _serve_trainer(root, port)
    try:
        assert wait_healthy(f"127.0.0.1:{port}", "trainer", 60)
        stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        total = 150
        job = stub.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
            base_model="tiny", dataset_id=dataset_id, method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=4)),
            hyperparameters=trainer_pb2.Hyperparameters(max_steps=total, batch_size=2, log_every_steps=1,
                                                        checkpoint_every_steps=50))), timeout=30)
        deadline = time.monotonic() + 120
        while stub.GetTrainingJob(S.GetJobRequest(job_id=job.job.id), timeout=10).job.progress.step < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        service.kill()
        service.wait()
        service = _serve_trainer(root, port)
        assert wait_healthy(f"127.0.0.1:{port}", "trainer", 60)
        stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        deadline = time.monotonic() + 300
        while True:
            rec = stub.GetTrainingJob(S.GetJobRequest(job_id=job.job.id), timeout=10)
            if rec.job.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
                break
            assert time.monotonic() < deadline, "the job did not finish after the restart"
            time.sleep(0.2)
        assert rec.job.state == S.JOB_STATE_SUCCEEDED, rec.job.error
        assert rec.attempts == 2 and rec.result.steps == total
        assert [p.step for p in rec.curves.train_loss] == list(range(1, total + 1))
        logs = [e.log.message for e in stub.StreamTrainingJobEvents(S.JobEventsRequest(job_id=job.job.id), timeout=30)
                if e.WhichOneof("payload") == "log"]
        assert any("service restarted" in m and "continuing it from its checkpoint" in m for m in logs), logs
    finally:
        service.kill()
        service.wait()
