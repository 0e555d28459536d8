"""End to end through the four real gRPC services with a tiny model: data -> train -> eval -> serve."""
import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.api.inference.v1 import inference_pb2
from tunesmith.api.trainer.v1 import trainer_pb2
from tunesmith.core.storage import Artifact

from .conftest import banking_rows, import_model, load_model, write_csv

S = common_pb2
INTENTS = ["card_arrival", "age_limit", "change_pin"]


def upload(data_stub, path, spec, chunk=4096):
    def messages():
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(filename=path.name, spec=spec))
        blob = path.read_bytes()
        for i in range(0, len(blob), chunk):
            yield data_pb2.UploadDatasetRequest(chunk=blob[i:i + chunk])
    return data_stub.UploadDataset(messages(), timeout=120)


def classification_spec(**kw):
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_CLASSIFICATION, template="classification",
                                column_mapping={"input": "text", "output": "category"}, **kw)
    spec.template_options.update({"instruction": "Route this banking customer message to its intent."})
    return spec


def storage_snapshot(storage):
    root = storage.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" not in p.relative_to(root).parts)


@pytest.fixture(scope="module")
def tiny_registered(cluster, tiny_model_dir):
    import_model(cluster, "tiny", tiny_model_dir)
    return "tiny"


def test_malformed_csv_is_rejected_with_the_row_and_nothing_is_stored(cluster, tmp_path):
    rows = banking_rows(INTENTS, 5)
    rows[6]["category"] = ""  # data row 7
    path = write_csv(tmp_path / "broken.csv", rows)
    before = storage_snapshot(cluster.runtime.storage)
    with pytest.raises(grpc.RpcError) as err:
        upload(cluster.data, path, classification_spec(name="broken"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "broken.csv" in err.value.details() and "row 7" in err.value.details()
    assert "category" in err.value.details() or "output" in err.value.details()
    assert storage_snapshot(cluster.runtime.storage) == before
    assert not cluster.data.ListDatasets(data_pb2.ListDatasetsRequest(), timeout=10).datasets


def test_fine_tune_end_to_end(cluster, tmp_path, tiny_registered):
    storage = cluster.runtime.storage
    train_csv = write_csv(tmp_path / "train.csv", banking_rows(INTENTS, 16))
    ds = upload(cluster.data, train_csv, classification_spec(
        name="tiny-train", split=data_pb2.SplitSpec(validation_fraction=0.25, seed=1, stratify=True))).dataset
    assert {s.name: s.rows for s in ds.splits} == {"train": 36, "validation": 12}
    assert ds.artifact.uri == f"artifact://dataset/{ds.artifact.sha256}"  # storage-relative, never a location
    assert storage.verify(Artifact(ds.artifact.uri, ds.artifact.sha256, ds.artifact.kind, ds.artifact.size_bytes))

    request = trainer_pb2.CreateTrainingJobRequest(
        idempotency_key="e2e-1",
        spec=trainer_pb2.TrainingJobSpec(
            base_model=tiny_registered, dataset_id=ds.id, validation_split="validation",
            method=trainer_pb2.MethodSpec(name="lora", lora=trainer_pb2.LoraConfig(rank=8, alpha=16,
                                                                                     target_modules=["all-linear"])),
            hyperparameters=trainer_pb2.Hyperparameters(epochs=4, batch_size=4, learning_rate=3e-3, seed=0),
            merge=True))
    job = cluster.trainer.CreateTrainingJob(request, timeout=30)
    again = cluster.trainer.CreateTrainingJob(request, timeout=30)
    assert again.job.id == job.job.id
    with pytest.raises(grpc.RpcError) as reused:  # the same key with another request is refused
        cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(
            idempotency_key="e2e-1", spec=trainer_pb2.TrainingJobSpec(base_model="tiny", dataset_id=ds.id)), timeout=30)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS and job.job.id in reused.value.details()

    events = list(cluster.trainer.StreamTrainingJobEvents(
        S.JobEventsRequest(job_id=job.job.id, follow=True), timeout=600))
    states = [e.state_change.state for e in events if e.WhichOneof("payload") == "state_change"]
    assert states == [S.JOB_STATE_VALIDATING, S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED], \
        [e for e in events if e.WhichOneof("payload") in ("state_change", "log")][-3:]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    steps = [e.progress.step for e in events if e.WhichOneof("payload") == "progress" and e.progress.phase == "train"]
    assert len(steps) >= 10 and all(a < b for a, b in zip(steps, steps[1:]))
    # Replay from the middle gives the tail of the same feed.
    replay = list(cluster.trainer.StreamTrainingJobEvents(S.JobEventsRequest(job_id=job.job.id, from_sequence=5), timeout=30))
    assert [e.sequence for e in replay] == [e.sequence for e in events[4:]]

    done = cluster.trainer.GetTrainingJob(S.GetJobRequest(job_id=job.job.id), timeout=10)
    result = done.result
    assert result.final_train_loss < result.first_train_loss
    assert result.tokens_per_second > 0 and result.steps == steps[-1]
    for ref in (result.adapter, result.merged_model, *done.job.outputs):
        assert ref.uri == f"artifact://{ref.kind}/{ref.sha256}", ref.uri
        assert storage.verify(Artifact(ref.uri, ref.sha256, ref.kind, ref.size_bytes)), ref.uri
    adapter_dir = storage.resolve(result.adapter.uri)
    assert (adapter_dir / "adapter_config.json").is_file()
    from tunesmith.core.formats.adapter import read_adapter

    meta = read_adapter(adapter_dir)  # the adapter names its base by artifact URI, not by a path
    assert meta.base_model_uri == cluster.runtime.models.get("tiny").artifact.uri and meta.base_model_name == "tiny"
    assert (storage.resolve(result.merged_model.uri) / "model.safetensors").is_file()

    ev = cluster.evaluator.CreateEvaluation(evaluator_pb2.CreateEvaluationRequest(spec=evaluator_pb2.EvaluationSpec(
        dataset_id=ds.id, split="validation", benchmarks=["exact_match"], baseline="base",
        models=[evaluator_pb2.ModelUnderTest(label="base", model="tiny"),
                evaluator_pb2.ModelUnderTest(label="tuned", model=result.merged_model.uri)],
        generation=evaluator_pb2.GenerationConfig(max_new_tokens=6, batch_size=8))), timeout=30)
    list(cluster.evaluator.StreamEvaluationEvents(S.JobEventsRequest(job_id=ev.job.id, follow=True), timeout=600))
    ev = cluster.evaluator.GetEvaluation(S.GetJobRequest(job_id=ev.job.id), timeout=10)
    assert ev.job.state == S.JOB_STATE_SUCCEEDED, ev.job.error.message
    scores = {s.label: {m.metric: m.value for m in s.metrics} for s in ev.report.scores}
    assert set(scores) == {"base", "tuned"} and all("exact_match" in v for v in scores.values())
    assert ev.report.rows == 12 and len(ev.report.comparisons) == 1
    assert storage.verify(Artifact(ev.report_artifact.uri, ev.report_artifact.sha256, "report", 0))
    from tunesmith.core.formats.report import read_outputs, read_report

    report_dir = storage.resolve(ev.report_artifact.uri)
    assert read_report(report_dir).evaluation_id == ev.job.id
    assert [set(r.outputs) for r in read_outputs(report_dir)] == [{"base", "tuned"}] * 12

    served = load_model(cluster, inference_pb2.LoadModelRequest(
        name="tuned", model=result.merged_model.uri, backend="transformers"))
    assert served.backend == "transformers"
    prompt = inference_pb2.Prompt(text=ev.report.samples[0].prompt)
    sampling = inference_pb2.SamplingParams(max_new_tokens=5)
    whole = cluster.inference.Generate(inference_pb2.GenerateRequest(model="tuned", prompts=[prompt], sampling=sampling),
                                       timeout=60).completions[0].text
    chunks = list(cluster.inference.GenerateStream(
        inference_pb2.GenerateRequest(model="tuned", prompts=[prompt], sampling=sampling), timeout=60))
    assert "".join(c.delta for c in chunks) == whole
    assert chunks[-1].finish_reason in (inference_pb2.FINISH_REASON_STOP, inference_pb2.FINISH_REASON_LENGTH)
    assert chunks[-1].completion_tokens <= 5
    cluster.inference.UnloadModel(inference_pb2.UnloadModelRequest(name="tuned"), timeout=30)


def test_cancel_a_finished_job_is_a_failed_precondition(cluster):
    jobs = cluster.trainer.ListTrainingJobs(S.ListJobsRequest(), timeout=10).jobs
    finished = [j for j in jobs if j.job.state == S.JOB_STATE_SUCCEEDED]
    if not finished:
        pytest.skip("needs the end-to-end job")
    with pytest.raises(grpc.RpcError) as err:
        cluster.trainer.CancelTrainingJob(S.CancelJobRequest(job_id=finished[0].job.id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_ids_are_not_found(cluster):
    for call, req in [(cluster.trainer.GetTrainingJob, S.GetJobRequest(job_id="train-nope")),
                      (cluster.trainer.GetTrainingJob, S.GetJobRequest(job_id="..")),
                      (cluster.data.GetDataset, data_pb2.GetDatasetRequest(dataset_id="../records/x")),
                      (cluster.data.GetDataset, data_pb2.GetDatasetRequest(dataset_id="ds-nope")),
                      (cluster.evaluator.GetEvaluation, S.GetJobRequest(job_id="evalu-nope"))]:
        with pytest.raises(grpc.RpcError) as err:
            call(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, req


def test_bad_hyperparameter_is_invalid_argument_naming_the_field(cluster, tiny_registered, tmp_path):
    ds = upload(cluster.data, write_csv(tmp_path / "t.csv", banking_rows(INTENTS, 3)), classification_spec()).dataset
    with pytest.raises(grpc.RpcError) as err:
        cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
            base_model="tiny", dataset_id=ds.id,
            hyperparameters=trainer_pb2.Hyperparameters(learning_rate=5))), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("spec.hyperparameters.learning_rate:")


def test_unknown_method_is_invalid_argument_naming_the_request_field(cluster, tiny_registered, tmp_path):
    ds = upload(cluster.data, write_csv(tmp_path / "m.csv", banking_rows(INTENTS, 3)), classification_spec()).dataset
    with pytest.raises(grpc.RpcError) as err:
        cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
            base_model="tiny", dataset_id=ds.id, method=trainer_pb2.MethodSpec(name="lorax"))), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("spec.method.name:") and "lora" in err.value.details()


def test_upload_with_an_unusable_filename_is_rejected(cluster, tmp_path):
    path = write_csv(tmp_path / "ok.csv", banking_rows(INTENTS, 2))
    for bad in ("..", "MANIFEST.json"):
        def messages(name=bad):
            yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(filename=name, spec=classification_spec()))
            yield data_pb2.UploadDatasetRequest(chunk=path.read_bytes())
        with pytest.raises(grpc.RpcError) as err:
            cluster.data.UploadDataset(messages(), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("header.filename:")
