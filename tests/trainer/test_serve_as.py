"""The train-to-serve hand-off (TrainingJobSpec.serve_as, .serve_check), through real data,
trainer and inference servers on localhost, on the tiny Llama: a finished job is served
automatically (base + adapter, or merged), and its greedy answers agree with peft's token for
token; requests that cannot be served are refused up front with field paths; an overwritten EOS
token is caught, both in the folder and by generation that no longer stops."""
from __future__ import annotations

import csv
import json
import shutil
import time

import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from .conftest import make_rows

pytest.importorskip("peft")

SERVICES = ("data", "trainer", "inference")
CHECK = trainer_pb2.ServeCheck(prompts=4, max_new_tokens=8, backend="transformers")


class _Cluster:
    def __init__(self, runtime, servers):
        self.runtime, self.servers = runtime, servers
        self.channels = {s: grpc.insecure_channel(r.address) for s, r in servers.items()}
        self.data = data_pb2_grpc.DataServiceStub(self.channels["data"])
        self.trainer = trainer_pb2_grpc.TrainerServiceStub(self.channels["trainer"])
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channels["inference"])


@pytest.fixture(scope="module")
def serve_cluster(tmp_path_factory, tiny_model_dir):
    """Data, trainer and inference servers in this process over one storage root, each knowing
    the others' addresses; the tiny model imported as "tiny-serve"; a classification dataset
    with a validation split."""
    from tunesmith.cli.servers import start_service
    from tunesmith.core.runtime import Runtime

    root = tmp_path_factory.mktemp("serve-storage")
    runtime = Runtime.create(str(root))
    servers = {s: start_service(s, runtime, port=0, host="127.0.0.1") for s in SERVICES}
    runtime.peers.clear()
    runtime.peers.update({s: r.address for s, r in servers.items()})
    c = _Cluster(runtime, servers)
    runtime.models.register("tiny-serve", tiny_model_dir)
    path = tmp_path_factory.mktemp("serve-data") / "rows.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        for r in make_rows(48, seed=7):
            w.writerow({"text": r["prompt"].split("Message: ")[1].split("\n")[0], "category": r["completion"].strip()})
    c.dataset = c.data.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(path), spec=data_pb2.DatasetSpec(
        schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"},
        split=data_pb2.SplitSpec(validation_rows=6, seed=1))), timeout=60).dataset.id
    yield c
    for ch in c.channels.values():
        ch.close()
    for r in servers.values():
        r.stop(0)


def _spec(c, **kw) -> trainer_pb2.TrainingJobSpec:
    base = dict(base_model="tiny-serve", dataset_id=c.dataset,
                method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=8)),
                hyperparameters=trainer_pb2.Hyperparameters(epochs=6, batch_size=8, learning_rate=1e-2))
    base.update(kw)
    return trainer_pb2.TrainingJobSpec(**base)


def _run(c, spec, timeout=300) -> trainer_pb2.TrainingJob:
    job = c.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=spec), timeout=30)
    deadline = time.monotonic() + timeout
    while job.job.state not in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED,
                                common_pb2.JOB_STATE_CANCELLED):
        assert time.monotonic() < deadline, f"job {job.job.id} did not end in {timeout} s"
        time.sleep(0.3)
        job = c.trainer.GetTrainingJob(common_pb2.GetJobRequest(job_id=job.job.id), timeout=10)
    return job


def _events(c, job_id):
    return list(c.trainer.StreamTrainingJobEvents(common_pb2.JobEventsRequest(job_id=job_id), timeout=30))


def _served(c) -> dict[str, inference_pb2.ServedModel]:
    return {m.name: m for m in c.inference.ListModels(inference_pb2.ListServedModelsRequest(), timeout=10).models}


def _reference(c, uri):
    from tunesmith.core.formats.serve_reference import read_reference

    return read_reference(c.runtime.storage.resolve(uri))


@pytest.fixture(scope="module")
def lora_job(serve_cluster):
    strict = trainer_pb2.ServeCheck(prompts=4, max_new_tokens=8, backend="transformers", strict=True)
    return _run(serve_cluster, _spec(serve_cluster, serve_as="router-lora", serve_check=strict))


@pytest.fixture(scope="module")
def merged_job(serve_cluster):
    return _run(serve_cluster, _spec(serve_cluster, serve_as="router-merged", merge=True, serve_check=CHECK))


def test_a_lora_job_is_served_as_base_plus_adapter_and_agrees_with_peft(serve_cluster, lora_job):
    c, job = serve_cluster, lora_job
    assert job.job.state == common_pb2.JOB_STATE_SUCCEEDED, job.job.error
    r = job.result
    assert (r.served_model, r.served_base) == ("router-lora", "router-lora-base")
    served = _served(c)
    assert served["router-lora"].state == served["router-lora-base"].state == inference_pb2.SERVED_MODEL_STATE_READY
    assert served["router-lora"].kind == "adapter" and served["router-lora"].artifact.uri == r.adapter.uri
    assert served["router-lora-base"].artifact.uri == c.runtime.models.get("tiny-serve").artifact.uri
    check = r.serve_check
    assert (check.prompts_compared, check.prompts_agreed, check.agreement_rate) == (4, 4, 1.0)
    assert check.eos_ok and check.passed and check.backend == "transformers" and not check.mismatches
    # the reference is the validation split's first prompts, answered in peft at the end of training
    ref = _reference(c, r.adapter.uri)
    from tunesmith.core.formats.dataset import read_prepared

    rows = read_prepared(c.runtime.storage, c.runtime.datasets.get(c.dataset).artifact.uri).rows("validation")
    assert [s.prompt for s in ref.samples] == [row["prompt"] for row in rows[:4]]
    assert ref.eos_token == "<|im_end|>"
    # and the served adapter answers the same, as any client sees it
    got = c.inference.Generate(inference_pb2.GenerateRequest(
        model="router-lora", prompts=[inference_pb2.Prompt(text=ref.samples[0].prompt)],
        sampling=inference_pb2.SamplingParams(max_new_tokens=8)), timeout=60).completions[0]
    assert (got.text, got.completion_tokens) == (ref.samples[0].text, len(ref.samples[0].token_ids))
    metrics = [e.metrics for e in _events(c, job.job.id) if e.HasField("metrics") and e.metrics.name == "serve_check"]
    assert metrics and metrics[-1].values["agreement_rate"] == 1.0


def test_a_merged_job_serves_the_merged_model_and_agrees_with_peft(serve_cluster, merged_job):
    c, job = serve_cluster, merged_job
    assert job.job.state == common_pb2.JOB_STATE_SUCCEEDED, job.job.error
    r = job.result
    assert (r.served_model, r.served_base) == ("router-merged", "")
    served = _served(c)["router-merged"]
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY
    assert served.kind == "model" and served.artifact.uri == r.merged_model.uri
    assert (r.serve_check.agreement_rate, r.serve_check.prompts_compared) == (1.0, 4)
    assert r.serve_check.eos_ok and r.serve_check.passed


def test_a_job_whose_name_is_taken_fails_with_its_artifacts_kept(serve_cluster, lora_job):
    c = serve_cluster
    assert lora_job.result.served_model == "router-lora"
    job = _run(c, _spec(c, serve_as="router-lora", serve_check=CHECK,
                        hyperparameters=trainer_pb2.Hyperparameters(max_steps=1, batch_size=8)))
    assert job.job.state == common_pb2.JOB_STATE_FAILED
    assert (job.job.error.code, job.job.error.field) == ("serve_name_taken", "spec.serve_as")
    assert job.result.adapter.uri and not job.result.served_model


@pytest.mark.parametrize("change, code, field", [
    (dict(serve_as="-router"), grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_as"),
    (dict(serve_as="has space"), grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_as"),
    (dict(serve_as="x" * 129, merge=True), grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_as"),
    (dict(serve_as="x" * 124), grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_as"),  # "<name>-base" is too long
    (dict(serve_check=trainer_pb2.ServeCheck(strict=True)), grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_check"),
    (dict(serve_as="r", serve_check=trainer_pb2.ServeCheck(prompts=65)), grpc.StatusCode.INVALID_ARGUMENT,
     "spec.serve_check.prompts"),
    (dict(serve_as="r", serve_check=trainer_pb2.ServeCheck(max_new_tokens=-1)), grpc.StatusCode.INVALID_ARGUMENT,
     "spec.serve_check.max_new_tokens"),
    (dict(serve_as="r", serve_check=trainer_pb2.ServeCheck(backend="tgi")), grpc.StatusCode.INVALID_ARGUMENT,
     "spec.serve_check.backend"),
    (dict(serve_as="r", serve_check=trainer_pb2.ServeCheck(backend="vllm"),
          method=trainer_pb2.MethodSpec(prefix_tuning=trainer_pb2.PrefixTuningConfig(num_virtual_tokens=2))),
     grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_check.backend"),
    (dict(serve_as="r", serve_check=trainer_pb2.ServeCheck(backend="vllm"),
          method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(use_dora=True))),
     grpc.StatusCode.INVALID_ARGUMENT, "spec.serve_check.backend"),
])
def test_requests_that_cannot_be_served_are_refused_with_the_field(serve_cluster, change, code, field):
    _refused(serve_cluster, _spec(serve_cluster, **change), code, field)


def _refused(c, spec, code, field):
    with pytest.raises(grpc.RpcError) as info:
        c.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=spec), timeout=30)
    assert info.value.code() == code, info.value.details()
    assert field in info.value.details(), info.value.details()


def test_serve_as_without_an_inference_service_is_refused(serve_cluster):
    c = serve_cluster
    address = c.runtime.peers.pop("inference")
    try:
        _refused(c, _spec(c, serve_as="router"), grpc.StatusCode.FAILED_PRECONDITION, "spec.serve_as")
    finally:
        c.runtime.peers["inference"] = address
    # the defaults are filled in for an accepted request
    spec = _spec(c, serve_as="router-defaults", hyperparameters=trainer_pb2.Hyperparameters(max_steps=1))
    job = c.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=spec), timeout=30)
    assert (job.spec.serve_check.prompts, job.spec.serve_check.max_new_tokens) == (8, 32)
    c.trainer.CancelTrainingJob(common_pb2.CancelJobRequest(job_id=job.job.id), timeout=30)


def _overwrite_eos(folder, token: str, token_id: int) -> None:
    """What a merge that overwrote the EOS leaves: another token in the tokenizer and generation config."""
    for name in ("tokenizer_config.json", "generation_config.json"):
        path = folder / name
        d = json.loads(path.read_text())
        if name == "tokenizer_config.json":
            d["eos_token"] = token
        else:
            d["eos_token_id"] = token_id
        path.write_text(json.dumps(d))


def test_an_overwritten_eos_is_caught_in_the_folder_and_in_generation(serve_cluster, merged_job, tmp_path):
    from tunesmith.trainer.handoff import compare, eos_problems

    c, r = serve_cluster, merged_job.result
    base_dir = c.runtime.storage.resolve(c.runtime.models.get("tiny-serve").artifact.uri)
    merged_dir = c.runtime.storage.resolve(r.merged_model.uri)
    assert eos_problems(base_dir, merged_dir) == []
    bad = tmp_path / "bad-eos"
    shutil.copytree(merged_dir, bad)
    _overwrite_eos(bad, "<|endoftext|>", 0)
    problems = eos_problems(base_dir, bad)
    assert len(problems) == 2 and "'<|endoftext|>'" in problems[0] and "[0]" in problems[1]

    # Served, the overwritten EOS no longer ends the answers that ended with EOS in peft.
    ref = _reference(c, r.adapter.uri)
    stopped = [s for s in ref.samples if s.finish_reason == "stop"]
    assert stopped, "the trained model ends no answer with EOS: train it longer"
    c.runtime.models.register("tiny-bad-eos", str(bad))
    c.inference.LoadModel(inference_pb2.LoadModelRequest(name="bad-eos", model="tiny-bad-eos",
                                                         backend="transformers"), timeout=30)
    deadline = time.monotonic() + 120
    while c.inference.GetServedModel(inference_pb2.GetServedModelRequest(name="bad-eos"), timeout=10).state \
            == inference_pb2.SERVED_MODEL_STATE_LOADING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    completions = [c.inference.Generate(inference_pb2.GenerateRequest(
        model="bad-eos", prompts=[inference_pb2.Prompt(text=s.prompt)],
        sampling=inference_pb2.SamplingParams(max_new_tokens=s.max_new_tokens)), timeout=60).completions[0]
        for s in ref.samples]
    check = compare(ref, completions)
    assert not check.eos_ok and check.agreement_rate < 1.0
    assert any(m.expected_finish == "stop" and m.got_finish == "length" for m in check.mismatches)


def test_strict_fails_the_hand_off_and_unloads_a_served_model_that_does_not_agree(serve_cluster, merged_job, tmp_path):
    """The hand-off of the service itself (run_handoff, on a real job record, job manager and
    inference server), given a merged model whose EOS was overwritten."""
    from tunesmith.core.jobs import JobControl, JobFailed
    from tunesmith.trainer.handoff import run_handoff

    c = serve_cluster
    merged_dir = c.runtime.storage.resolve(merged_job.result.merged_model.uri)
    bad = tmp_path / "bad-eos"
    shutil.copytree(merged_dir, bad)
    _overwrite_eos(bad, "<|endoftext|>", 0)
    record = trainer_pb2.TrainingJob()
    record.CopyFrom(merged_job)
    record.result.merged_model.uri = c.runtime.storage.put_artifact("model", bad).uri
    record.result.ClearField("serve_check")
    record.spec.serve_as = "router-strict"
    record.spec.serve_check.strict = True
    servicer = c.servers["trainer"].servicer
    base_uri = c.runtime.models.get("tiny-serve").artifact.uri
    with pytest.raises(JobFailed) as info:
        run_handoff(record, JobControl(servicer.jobs, record), c.runtime.peers["inference"], c.runtime.storage,
                    base_uri)
    assert (info.value.code, info.value.field) == ("serve_check_failed", "spec.serve_check.strict")
    assert "EOS" in info.value.message and "agreement rate" in info.value.message
    check = record.result.serve_check
    assert not check.eos_ok and not check.passed and check.agreement_rate < 1.0 and check.mismatches
    assert "router-strict" not in _served(c) and not record.result.served_model

    # without strict: the same hand-off serves it, with a warning event naming the disagreement
    record.spec.serve_check.strict = False
    record.result.ClearField("serve_check")
    seen = len(_events(c, record.job.id))
    run_handoff(record, JobControl(servicer.jobs, record), c.runtime.peers["inference"], c.runtime.storage, base_uri)
    assert record.result.served_model == "router-strict" and "router-strict" in _served(c)
    assert not record.result.serve_check.passed
    warnings = [e.log.message for e in _events(c, record.job.id)[seen:]
                if e.HasField("log") and e.log.level == common_pb2.LOG_LEVEL_WARNING]
    assert any("hand-off check FAILED" in w and "e.g. prompt" in w for w in warnings), warnings


def test_a_model_that_failed_its_gate_is_not_served(serve_cluster, lora_job):
    """The service's hand-off step on a real job record whose quality gate failed."""
    from tunesmith.core.jobs import JobControl

    c = serve_cluster
    record = trainer_pb2.TrainingJob()
    record.CopyFrom(lora_job)
    record.spec.serve_as = "router-regressed"
    record.spec.gate.enabled = True
    record.result.gate_evaluation_id, record.result.gate_passed = "eval-x", False
    record.result.ClearField("serve_check")
    record.result.served_model = ""
    servicer = c.servers["trainer"].servicer
    servicer._serve(record, JobControl(servicer.jobs, record))
    assert not record.result.served_model and "router-regressed" not in _served(c)
    assert "quality gate failed (evaluation eval-x)" in record.result.serve_check.warnings[0]
