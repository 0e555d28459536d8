"""Calls that take minutes return at once with a state, through the SDK against real servers:
model import and merge are jobs; LoadModel returns LOADING and GetServedModel reports the end."""
import shutil

import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.inference.v1 import inference_pb2
from tunesmith.client import AlreadyExistsError, FailedPreconditionError, Tunesmith
from tunesmith.core.storage import Artifact

from .conftest import banking_rows, write_csv


@pytest.fixture(scope="module")
def ts(cluster):
    client = Tunesmith(**{s: r.address for s, r in cluster.servers.items()})
    yield client
    client.close()


def test_import_train_merge_and_serve_through_the_sdk(cluster, ts, tiny_model_dir, tmp_path):
    job = ts.trainer.create_model_import_job("tiny-sdk", str(tiny_model_dir))
    assert job.job.state in (common_pb2.JOB_STATE_VALIDATING, common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING)
    states = [e.state_change.state for e in ts.trainer.model_import_events(job.job.id)
              if e.WhichOneof("payload") == "state_change"]
    assert states == [common_pb2.JOB_STATE_VALIDATING, common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING,
                      common_pb2.JOB_STATE_SUCCEEDED]
    model = ts.trainer.register_model("tiny-sdk2", str(tiny_model_dir))  # the same, waiting for the job
    assert model.name == "tiny-sdk2" and model.artifact.uri.startswith("artifact://model/")
    assert "tiny-sdk2" in {m.name for m in ts.trainer.list_models()}
    with pytest.raises(AlreadyExistsError) as taken:
        ts.trainer.create_model_import_job("tiny-sdk2", str(tiny_model_dir))
    assert taken.value.field == "spec.name"

    path = write_csv(tmp_path / "t.csv", banking_rows(["card_arrival", "age_limit"], 6))
    ds = ts.data.register_dataset(str(path), data_pb2.DatasetSpec(
        schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"})).dataset
    trained = ts.trainer.wait(ts.trainer.create_job({"base_model": "tiny-sdk2", "dataset_id": ds.id,
                                                     "method": {"lora": {"rank": 2}},
                                                     "hyperparameters": {"max_steps": 2, "batch_size": 4}}).job.id)
    assert trained.job.state == common_pb2.JOB_STATE_SUCCEEDED, trained.job.error

    merge = ts.trainer.create_merge_job(trained.result.adapter, idempotency_key="merge-1")
    again = ts.trainer.create_merge_job(trained.result.adapter, idempotency_key="merge-1")
    assert again.job.id == merge.job.id
    events = list(ts.trainer.merge_events(merge.job.id))
    states = [e.state_change.state for e in events if e.WhichOneof("payload") == "state_change"]
    assert states[-1] == common_pb2.JOB_STATE_SUCCEEDED, events[-1]
    done = ts.trainer.get_merge_job(merge.job.id)
    with pytest.raises(FailedPreconditionError):  # a finished job cannot be cancelled
        ts.trainer.cancel_merge_job(merge.job.id)
    ref = done.merged_model
    assert ref.uri.startswith("artifact://model/")
    assert cluster.runtime.storage.verify(Artifact(ref.uri, ref.sha256, ref.kind, ref.size_bytes))

    loading = ts.inference.load_model("merged", ref.uri, backend="transformers", wait=False)
    assert loading.state == inference_pb2.SERVED_MODEL_STATE_LOADING
    served = ts.inference.load_model("merged-2", ref.uri, backend="transformers")  # waits until READY
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY
    assert ts.inference.generate("merged-2", ["hello"], max_new_tokens=3)
    ts.inference.unload_model("merged-2")
    for _ in range(300):
        if ts.inference.get_model("merged").state != inference_pb2.SERVED_MODEL_STATE_LOADING:
            break
        import time
        time.sleep(0.1)
    assert ts.inference.get_model("merged").state == inference_pb2.SERVED_MODEL_STATE_READY
    ts.inference.unload_model("merged")


def test_a_model_that_cannot_load_ends_failed_with_the_reason(cluster, ts, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    cluster.runtime.models.register("broken", str(broken))
    with pytest.raises(FailedPreconditionError) as err:
        ts.inference.load_model("broken", "broken", backend="transformers", timeout=120)
    assert "failed to load" in str(err.value)
    failed = ts.inference.get_model("broken")
    assert failed.state == inference_pb2.SERVED_MODEL_STATE_FAILED and failed.error.message
    with pytest.raises(FailedPreconditionError):  # a failed model does not serve
        ts.inference.generate("broken", ["hi"])
    ts.inference.unload_model("broken")  # and its name can be reused
    assert "broken" not in {m.name for m in ts.inference.list_models()}


def test_a_refused_upload_brings_its_per_row_report_to_the_sdk(cluster, ts, tmp_path):
    from tunesmith.client import InvalidArgumentError

    rows = banking_rows(["card_arrival", "age_limit"], 5)
    rows[6]["category"] = ""  # data row 7
    rows[8]["text"] = ""      # data row 9
    path = write_csv(tmp_path / "broken.csv", rows)
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_CLASSIFICATION,
                                column_mapping={"input": "text", "output": "category"})
    with pytest.raises(InvalidArgumentError) as err:
        ts.data.upload_dataset(str(path), spec)
    assert err.value.reason == "INVALID_DATASET"
    report = err.value.report
    assert report is not None and report.source == "broken.csv" and report.rows_rejected == 2
    assert [(i.row, i.field) for i in report.issues] == [(7, "category"), (9, "text")]
    assert sum(report.counts_by_code.values()) == 2
