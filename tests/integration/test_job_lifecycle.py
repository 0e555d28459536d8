"""Training jobs run in their own process: a crash fails the job (not the service); cancel works."""
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


def long_job(cluster, dataset_id):
    """A job that trains long enough to be interrupted (many epochs of a tiny model)."""
    job = cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
        base_model="tiny", dataset_id=dataset_id, method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=4)),
        hyperparameters=trainer_pb2.Hyperparameters(max_steps=100_000, batch_size=2, log_every_steps=1))), timeout=30)
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
    job_id = long_job(cluster, dataset_id)
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
