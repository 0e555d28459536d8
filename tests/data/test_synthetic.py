"""CreateSyntheticDataJob: the filters on real text, chunking, and the job through real data and
inference gRPC servers on localhost with the tiny random model (which writes garbage: the tests
assert the filter accounting, the refusals and what is registered, never quality)."""
from __future__ import annotations

import time

import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.data.synthetic_documents import SAMPLE_DOCUMENT, chunk_text, read_text_file, sample_seeds
from tunesmith.data.synthetic_filters import (
    FILTER_CODES,
    FilterSettings,
    Pair,
    PairFilter,
    clean_instruction,
    is_refusal,
    looks_like_text,
)

SEEDS = ["Explain in one sentence why the sky looks blue.", "What do bees collect from flowers?"]
PASSAGE = "Evaporation is the first step. The Sun heats water in oceans, lakes and rivers."
ANSWER = "Evaporation is when the Sun heats water and some of it turns into water vapour."


def _filter(**settings) -> PairFilter:
    return PairFilter(FilterSettings(**settings), SEEDS)


# -- filters -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pair,code", [
    (Pair("", "", ANSWER), "format"),
    (Pair("!!! ??? ###", "", ANSWER), "format"),
    (Pair("What is evaporation?", "", ""), "format"),
    (Pair("x" * 501 + " word", "", ANSWER), "format"),
    (Pair("This passage describes how the water cycle works.", "", ANSWER), "format"),
    (Pair("Here's a rewritten version of the passage:", "", ANSWER), "format"),
    (Pair("What is evaporation?", "", ANSWER, truncated=True), "truncated"),
    (Pair("What is evaporation?", "", "I'm sorry, but I cannot help with that request."), "refusal"),
    (Pair("What is evaporation?", "", "Water vapour forms. As an AI language model I have no view."), "refusal"),
    (Pair("Why rain?", "", ANSWER), "too_short"),
    (Pair("What is evaporation?", "", "Heat."), "too_short"),
    (Pair("What topic would you like to discuss?", PASSAGE, ANSWER), "off_topic"),
    (Pair("Why does evaporation need the Sun?", PASSAGE, ANSWER), ""),
    (Pair("Explain in one sentence why the sky looks so blue.", "", ANSWER), "similar_to_seed"),
    (Pair("What is evaporation in the water cycle?", "", ANSWER), ""),
])
def test_each_filter_drops_what_it_should_and_keeps_a_good_pair(pair, code):
    assert _filter().reason(pair) == code


def test_duplicates_and_near_duplicates_of_kept_pairs_are_dropped_and_counted():
    f = _filter()
    assert f.check(Pair("What is evaporation in the water cycle?", "", ANSWER)) == ""
    assert f.check(Pair("what is EVAPORATION in the water-cycle", "", ANSWER.upper() + "!")) == "duplicate"
    assert f.check(Pair("What is evaporation in the water cycle, briefly?", "", "Water turns into vapour when heated.")) \
        == "similar_to_kept"
    assert f.check(Pair("Name the four steps of the water cycle.", "", "Evaporation, condensation, precipitation "
                        "and collection.")) == ""
    assert f.counts == {**{c: 0 for c in FILTER_CODES}, "duplicate": 1, "similar_to_kept": 1}
    assert len(f.kept) == 2


def test_thresholds_move_the_filters():
    pair = Pair("Explain in one sentence why the sky looks so blue.", "", ANSWER)
    assert _filter(max_rouge_l=1.0).reason(pair) == ""
    assert _filter(min_response_chars=500).reason(pair) == "too_short"
    statement = Pair("This passage describes how the water cycle works.", "", ANSWER)
    assert _filter(allow_statements=True).reason(statement) == ""
    cut = Pair("What is evaporation in the water cycle?", "", ANSWER, truncated=True)
    assert _filter().reason(cut) == "truncated" and _filter(keep_truncated=True).reason(cut) == ""


def test_refusal_detection_and_cleaning_on_real_text():
    assert is_refusal("I cannot provide that information.")
    assert not is_refusal("Plants release water through transpiration; they cannot stop it entirely.")
    assert clean_instruction("Instruction: What is fog?\nResponse: a cloud") == "What is fog?"
    assert clean_instruction('1. **Question:** "Why does rain fall?"') == "Why does rain fall?"
    assert clean_instruction("1. What is fog?") == "What is fog?"
    assert looks_like_text("Describe how clouds form.")
    assert not looks_like_text("<|im_start|> 0 1 2 $ % &")


def test_chunks_cover_the_document_within_the_limit(tmp_path):
    text = read_text_file(SAMPLE_DOCUMENT, "doc")
    for limit in (200, 600, 1500):
        chunks = chunk_text(text, limit)
        assert all(0 < len(c) <= limit for c in chunks)
        assert " ".join(" ".join(chunks).split()) == " ".join(text.split())
    assert len(chunk_text(text, 20000)) == 1
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 latte")
    with pytest.raises(Exception) as err:
        read_text_file(bad, "spec.document_uris[1]")
    assert err.value.field == "spec.document_uris[1]" and "byte 3" in str(err.value)


# -- the service, with real gRPC servers --------------------------------------------------------

@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir):
    """Data and inference services on localhost over one storage; the tiny model served as "tiny"."""
    from tunesmith.cli.servers import start_service
    from tunesmith.core.models import ModelStore
    from tunesmith.core.runtime import Runtime

    runtime = Runtime.create(str(tmp_path_factory.mktemp("synthetic-storage")))
    ModelStore(runtime.storage).register("tiny", tiny_model_dir)
    running = {s: start_service(s, runtime, port=0, host="127.0.0.1") for s in ("data", "inference")}
    runtime.peers.update({s: r.address for s, r in running.items()})
    channels = {s: grpc.insecure_channel(r.address) for s, r in running.items()}
    data = data_pb2_grpc.DataServiceStub(channels["data"])
    inference = inference_pb2_grpc.InferenceServiceStub(channels["inference"])
    served = inference.LoadModel(inference_pb2.LoadModelRequest(name="tiny", model="tiny", backend="transformers"),
                                 timeout=30)
    deadline = time.monotonic() + 120
    while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING and time.monotonic() < deadline:
        time.sleep(0.2)
        served = inference.GetServedModel(inference_pb2.GetServedModelRequest(name="tiny"), timeout=10)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error
    yield runtime, data, inference
    for ch in channels.values():
        ch.close()
    for r in running.values():
        r.stop(0)


def _request(**overrides) -> data_pb2.CreateSyntheticDataJobRequest:
    spec = dict(document_uris=[str(SAMPLE_DOCUMENT)], model="tiny",
                seed_examples=[data_pb2.SeedExample(**s) for s in sample_seeds()], examples_per_document=6,
                chunk_chars=200, demonstrations=1, sampling=data_pb2.SyntheticSampling(max_new_tokens=12, seed=1))
    spec.update(overrides)
    return data_pb2.CreateSyntheticDataJobRequest(spec=data_pb2.SyntheticDataSpec(**spec))


def _wait(data, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        job = data.GetDataJob(common_pb2.GetJobRequest(job_id=job_id), timeout=10)
        if job.job.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not end in {timeout} s"
        time.sleep(0.2)


def _datasets(data) -> set[str]:
    return {d.id for d in data.ListDatasets(data_pb2.ListDatasetsRequest(), timeout=10).datasets}


def _violation(err) -> tuple[grpc.StatusCode, str]:
    return err.code(), err.details().split(":", 1)[0]


@pytest.mark.parametrize("overrides,code,field", [
    ({"model": "no-such-model"}, grpc.StatusCode.NOT_FOUND, "spec.model"),
    ({"model": "tiny:no-adapter"}, grpc.StatusCode.NOT_FOUND, "spec.model"),
    ({"model": ""}, grpc.StatusCode.INVALID_ARGUMENT, "spec.model"),
    ({"document_uris": [str(SAMPLE_DOCUMENT), "/no/such/file.txt"]}, grpc.StatusCode.NOT_FOUND, "spec.document_uris[1]"),
    ({"document_uris": []}, grpc.StatusCode.INVALID_ARGUMENT, "spec.document_uris"),
    ({"document_uris": ["s3://bucket/doc.txt"]}, grpc.StatusCode.INVALID_ARGUMENT, "spec.document_uris[0]"),
    ({"seed_examples": []}, grpc.StatusCode.INVALID_ARGUMENT, "spec.seed_examples"),
    ({"seed_examples": [data_pb2.SeedExample(instruction="Say hi.", response="  ")]},
     grpc.StatusCode.INVALID_ARGUMENT, "spec.seed_examples[0].response"),
    ({"filters": data_pb2.SyntheticFilters(max_rouge_l=1.5)}, grpc.StatusCode.INVALID_ARGUMENT, "spec.filters.max_rouge_l"),
    ({"filters": data_pb2.SyntheticFilters(max_rouge_l=0.0)}, grpc.StatusCode.INVALID_ARGUMENT, "spec.filters.max_rouge_l"),
    ({"sampling": data_pb2.SyntheticSampling(temperature=float("nan"))}, grpc.StatusCode.INVALID_ARGUMENT,
     "spec.sampling.temperature"),
    ({"chunk_chars": 50}, grpc.StatusCode.INVALID_ARGUMENT, "spec.chunk_chars"),
    ({"seed_dataset_id": "ds-nope"}, grpc.StatusCode.NOT_FOUND, "spec.seed_dataset_id"),
    ({"document_dataset": data_pb2.DocumentDataset(dataset_id="ds-nope")}, grpc.StatusCode.NOT_FOUND,
     "spec.document_dataset.dataset_id"),
    ({"split": data_pb2.SplitSpec(stratify=True)}, grpc.StatusCode.INVALID_ARGUMENT, "spec.split.stratify"),
])
def test_bad_requests_are_refused_at_once_with_the_field_and_start_nothing(servers, overrides, code, field):
    runtime, data, _ = servers
    before = set(runtime.storage.list("records/synthetic_data_jobs"))
    with pytest.raises(grpc.RpcError) as err:
        data.CreateSyntheticDataJob(_request(**overrides), timeout=30)
    assert _violation(err.value) == (code, field), err.value.details()
    assert set(runtime.storage.list("records/synthetic_data_jobs")) == before


def test_a_non_utf8_document_is_refused_naming_it(servers, tmp_path):
    _, data, _ = servers
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(grpc.RpcError) as err:
        data.CreateSyntheticDataJob(_request(document_uris=[str(SAMPLE_DOCUMENT), str(bad)]), timeout=30)
    assert _violation(err.value) == (grpc.StatusCode.INVALID_ARGUMENT, "spec.document_uris[1]")
    assert "latin1.txt is not UTF-8" in err.value.details()


def test_garbage_from_the_tiny_model_is_filtered_and_nothing_is_registered(servers):
    """The random model's words fail the filters; every candidate is counted once; a job that
    keeps nothing fails and registers nothing."""
    _, data, _ = servers
    before = _datasets(data)
    job = data.CreateSyntheticDataJob(_request(filters=data_pb2.SyntheticFilters(min_response_chars=5000)), timeout=30)
    assert job.job.kind == "synthetic_data" and job.spec.filters.max_rouge_l == pytest.approx(0.7)
    job = _wait(data, job.job.id)
    assert job.job.state == common_pb2.JOB_STATE_FAILED, job.job
    assert job.job.error.code == "no_examples_kept" and job.job.error.field == "spec.filters"
    r = job.result
    assert r.candidates == 6 and r.kept == 0 and r.documents == 1 and r.chunks == 13
    assert set(r.filtered) == set(FILTER_CODES)
    assert sum(r.filtered.values()) == 6
    assert r.filtered["format"] + r.filtered["truncated"] + r.filtered["too_short"] == 6, dict(r.filtered)
    assert r.completion_tokens > 0
    assert _datasets(data) == before


def test_a_job_registers_what_it_keeps_as_a_valid_alpaca_dataset_with_its_provenance(servers):
    runtime, data, _ = servers
    lenient = data_pb2.SyntheticFilters(min_instruction_chars=1, min_response_chars=1, max_rouge_l=1.0,
                                        keep_truncated=True, allow_statements=True,
                                        allow_off_topic=True)
    request = _request(filters=lenient, examples_per_document=8, dataset_name="tiny-synthetic",
                       sampling=data_pb2.SyntheticSampling(max_new_tokens=12, seed=3, temperature=1.0))
    request.idempotency_key = "synthetic-tiny-1"
    job = data.CreateSyntheticDataJob(request, timeout=30)
    assert data.CreateSyntheticDataJob(request, timeout=30).job.id == job.job.id  # idempotent
    events = list(data.StreamDataJobEvents(common_pb2.JobEventsRequest(job_id=job.job.id, follow=True), timeout=300))
    job = _wait(data, job.job.id)
    r = job.result
    assert r.candidates == 8 and r.kept + sum(r.filtered.values()) == 8
    assert r.filtered["truncated"] == 0 and r.kept > 0, dict(r.filtered)
    assert job.job.state == common_pb2.JOB_STATE_SUCCEEDED, job.job.error
    assert [e.progress.step for e in events if e.HasField("progress")][-1] == 8
    ds = data.GetDataset(data_pb2.GetDatasetRequest(dataset_id=r.dataset_id), timeout=10)
    assert ds.name == "tiny-synthetic" and ds.spec.schema == data_pb2.SCHEMA_ALPACA
    assert sum(s.rows for s in ds.splits) == r.kept
    p = ds.synthetic
    assert p.job_id == job.job.id and p.model == "tiny" and p.backend == "transformers"
    assert p.prompt_template_version == "synthetic-v1" and p.seeds == 3
    assert p.sampling.seed == 3 and p.sampling.max_new_tokens == 12 and p.sampling.top_p == pytest.approx(0.95)
    assert p.filters.max_rouge_l == 1.0 and p.result.kept == r.kept and dict(p.result.filtered) == dict(r.filtered)
    assert len(p.documents) == 1 and len(p.documents[0].sha256) == 64 and p.documents[0].chunks == 13
    preview = data.PreviewDataset(data_pb2.PreviewDatasetRequest(dataset_id=ds.id, limit=100), timeout=10)
    again = PairFilter(FilterSettings(1, 1, 1.0, True, True, True), [])
    chunks = set(chunk_text(SAMPLE_DOCUMENT.read_text(encoding="utf-8"), 200))
    for ex in preview.examples:
        fields = dict(ex.fields)
        assert fields["input"] in chunks and fields["instruction"] in ex.prompt
        assert again.check(Pair(fields["instruction"], fields["input"], fields["output"])) == ""
    # The job's feed: state changes through SUCCEEDED, progress and a filter-count metric.
    states = [e.state_change.state for e in events if e.HasField("state_change")]
    assert states[-1] == common_pb2.JOB_STATE_SUCCEEDED
    assert any(e.metrics.name == "synthetic_filters" for e in events if e.HasField("metrics"))


def test_unknown_data_jobs_are_not_found(servers):
    _, data, _ = servers
    with pytest.raises(grpc.RpcError) as err:
        data.GetDataJob(common_pb2.GetJobRequest(job_id="synth-000000000000"), timeout=10)
    assert _violation(err.value) == (grpc.StatusCode.NOT_FOUND, "job_id")


def test_the_sdk_starts_waits_for_and_refuses_synthetic_jobs(servers):
    from tunesmith.client.data import DataClient
    from tunesmith.client.errors import NotFoundError

    runtime, _, _ = servers
    spec = {"documentUris": [str(SAMPLE_DOCUMENT)], "model": "tiny", "seedExamples": sample_seeds(),
            "examplesPerDocument": 2, "chunkChars": 200, "demonstrations": 1,
            "sampling": {"maxNewTokens": 8, "seed": 5},
            "filters": {"minInstructionChars": 1, "minResponseChars": 1, "maxRougeL": 1.0, "keepTruncated": True,
                        "allowStatements": True, "allowOffTopic": True}}
    with DataClient(runtime.peers["data"]) as client:
        with pytest.raises(NotFoundError) as err:
            client.create_synthetic_data_job({**spec, "model": "nope"})
        assert err.value.field == "spec.model"
        job = client.create_synthetic_data_job(spec, idempotency_key="sdk-synthetic-1")
        done = client.wait_job(job.job.id, timeout=300)
    assert done.job.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED)
    assert done.result.candidates == 2 and done.result.kept + sum(done.result.filtered.values()) == 2
    assert (done.job.state == common_pb2.JOB_STATE_SUCCEEDED) == bool(done.result.dataset_id)


def test_a_cancelled_job_registers_nothing(servers):
    _, data, _ = servers
    before = _datasets(data)
    lenient = data_pb2.SyntheticFilters(min_instruction_chars=1, min_response_chars=1, max_rouge_l=1.0,
                                        keep_truncated=True, allow_statements=True, allow_off_topic=True)
    job = data.CreateSyntheticDataJob(_request(examples_per_document=400, filters=lenient), timeout=30)
    data.CancelDataJob(common_pb2.CancelJobRequest(job_id=job.job.id), timeout=10)
    job = _wait(data, job.job.id)
    assert job.job.state == common_pb2.JOB_STATE_CANCELLED
    assert job.result.candidates < 400 and not job.result.dataset_id
    assert _datasets(data) == before
    with pytest.raises(grpc.RpcError) as err:
        data.CancelDataJob(common_pb2.CancelJobRequest(job_id=job.job.id), timeout=10)
    assert _violation(err.value) == (grpc.StatusCode.FAILED_PRECONDITION, "job_id")


def test_the_cli_runs_a_job_and_reports_its_counts(servers, capsys):
    """`tunesmith synth` on the tiny model: its garbage is filtered (exit 1, nothing registered)."""
    from tunesmith.cli.main import main

    runtime, data, _ = servers
    before = _datasets(data)
    code = main(["synth", "--model", "tiny", "--data-address", runtime.peers["data"], "--examples-per-document", "2",
                 "--chunk-chars", "200", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED: 2 candidates, 0 kept" in out and "no_examples_kept" not in out
    assert "all 2 candidates were filtered out" in out
    assert _datasets(data) == before
    assert main(["synth", "--model", "nope", "--data-address", runtime.peers["data"]]) == 1
    assert "spec.model" in capsys.readouterr().out
