"""Real gRPC servers on localhost over one temporary storage root."""
import csv
import os
from pathlib import Path

import grpc
import pytest

from tunesmith.api.data.v1 import data_pb2_grpc
from tunesmith.api.evaluator.v1 import evaluator_pb2_grpc
from tunesmith.api.inference.v1 import inference_pb2_grpc
from tunesmith.api.trainer.v1 import trainer_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
BANKING = ROOT / "examples" / "banking77"
STUBS = {"data": data_pb2_grpc.DataServiceStub, "trainer": trainer_pb2_grpc.TrainerServiceStub,
         "evaluator": evaluator_pb2_grpc.EvaluatorServiceStub, "inference": inference_pb2_grpc.InferenceServiceStub}


class Cluster:
    def __init__(self, runtime, servers):
        self.runtime, self.servers = runtime, servers
        self.channels = {s: grpc.insecure_channel(r.address) for s, r in servers.items()}
        self.stubs = {s: STUBS[s](ch) for s, ch in self.channels.items()}

    def __getattr__(self, name):
        if name in STUBS:
            return self.stubs[name]
        raise AttributeError(name)

    def close(self):
        for ch in self.channels.values():
            ch.close()
        for r in self.servers.values():
            r.stop(0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The four services started in this process on free ports, sharing one storage root."""
    from tunesmith.cli.servers import start_service
    from tunesmith.core.runtime import Runtime

    root = tmp_path_factory.mktemp("storage")
    os.environ["HF_HUB_OFFLINE"] = "1"
    runtime = Runtime.create(str(root))
    servers = {s: start_service(s, runtime, port=0, host="127.0.0.1") for s in STUBS}
    runtime.peers.update({s: r.address for s, r in servers.items()})
    c = Cluster(runtime, servers)
    yield c
    c.close()


def banking_rows(intents, per_intent, source="train.csv"):
    """The first `per_intent` rows of each intent from the shipped BANKING77 CSV."""
    counts = {i: 0 for i in intents}
    rows = []
    with open(BANKING / source, newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] in counts and counts[row["category"]] < per_intent:
                counts[row["category"]] += 1
                rows.append(row)
    return rows


def write_csv(path, rows, fields=("text", "category")):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)
    return path


def wait_job(get, job_id, timeout=300):
    """Poll a Get*Job RPC until the job ends; return it."""
    import time

    from tunesmith.api.common.v1 import common_pb2

    deadline = time.monotonic() + timeout
    while True:
        job = get(common_pb2.GetJobRequest(job_id=job_id), timeout=10)
        if job.job.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not end in {timeout} s"
        time.sleep(0.2)


def import_model(cluster, name, path, timeout=300):
    """Import a model folder through CreateModelImportJob and wait for it; returns the Model."""
    from tunesmith.api.common.v1 import common_pb2
    from tunesmith.api.trainer.v1 import trainer_pb2

    job = cluster.trainer.CreateModelImportJob(trainer_pb2.CreateModelImportJobRequest(
        spec=trainer_pb2.ModelImportSpec(name=name, path=str(path))), timeout=30)
    job = wait_job(cluster.trainer.GetModelImportJob, job.job.id, timeout)
    assert job.job.state == common_pb2.JOB_STATE_SUCCEEDED, job.job.error
    return job.model


def load_model(cluster, request, timeout=300):
    """LoadModel (returns at once in LOADING), then poll GetServedModel until READY."""
    import time

    from tunesmith.api.inference.v1 import inference_pb2

    served = cluster.inference.LoadModel(request, timeout=30)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_LOADING
    deadline = time.monotonic() + timeout
    while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
        assert time.monotonic() < deadline, f"{request.name} did not load in {timeout} s"
        time.sleep(0.2)
        served = cluster.inference.GetServedModel(inference_pb2.GetServedModelRequest(name=request.name), timeout=10)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error
    return served
