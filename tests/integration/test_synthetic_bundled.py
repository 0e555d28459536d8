"""A synthetic-data job on CPU with the real bundled SmolLM2-135M-Instruct on the bundled sample
document registers a valid ALPACA dataset, within minutes. Prints the figures the README quotes
(run with -s): seconds, candidates, what each filter removed, and the kept pairs."""
from __future__ import annotations

import time

import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration
NAME = "smollm2-135m-instruct"
MAX_SECONDS = 180


@pytest.fixture(scope="module")
def servers(tmp_path_factory, bundled_model_dir):
    from tunesmith.cli.servers import start_service
    from tunesmith.core.models import ModelStore
    from tunesmith.core.runtime import Runtime

    runtime = Runtime.create(str(tmp_path_factory.mktemp("synthetic-bundled")))
    ModelStore(runtime.storage).register(NAME, bundled_model_dir)
    running = {s: start_service(s, runtime, port=0, host="127.0.0.1") for s in ("data", "inference")}
    runtime.peers.update({s: r.address for s, r in running.items()})
    channels = {s: grpc.insecure_channel(r.address) for s, r in running.items()}
    inference = inference_pb2_grpc.InferenceServiceStub(channels["inference"])
    served = inference.LoadModel(inference_pb2.LoadModelRequest(name="writer", model=NAME, backend="transformers"),
                                 timeout=30)
    deadline = time.monotonic() + 300
    while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING and time.monotonic() < deadline:
        time.sleep(0.2)
        served = inference.GetServedModel(inference_pb2.GetServedModelRequest(name="writer"), timeout=10)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error
    yield data_pb2_grpc.DataServiceStub(channels["data"])
    for ch in channels.values():
        ch.close()
    for r in running.values():
        r.stop(0)


def test_synthetic_job_on_the_bundled_model_registers_a_valid_dataset_in_minutes(servers):
    from tunesmith.data.synthetic_documents import SAMPLE_DOCUMENT, sample_seeds
    from tunesmith.data.synthetic_filters import FILTER_CODES, FilterSettings, Pair, PairFilter

    data = servers
    spec = data_pb2.SyntheticDataSpec(
        document_uris=[SAMPLE_DOCUMENT.as_uri()], model="writer",
        seed_examples=[data_pb2.SeedExample(**s) for s in sample_seeds()],
        examples_per_document=20, chunk_chars=400, dataset_name="water-cycle-synthetic",
        sampling=data_pb2.SyntheticSampling(max_new_tokens=80, seed=0))
    started = time.monotonic()
    job = data.CreateSyntheticDataJob(data_pb2.CreateSyntheticDataJobRequest(spec=spec), timeout=60)
    while job.job.state not in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED,
                                common_pb2.JOB_STATE_CANCELLED):
        assert time.monotonic() - started < MAX_SECONDS, f"still {job.job.state} after {MAX_SECONDS} s"
        time.sleep(0.5)
        job = data.GetDataJob(common_pb2.GetJobRequest(job_id=job.job.id), timeout=10)
    seconds = time.monotonic() - started
    r = job.result
    print(f"\nsynthetic job: {seconds:.1f} s ({r.generate_seconds:.1f} s generating, {r.completion_tokens} tokens), "
          f"{r.candidates} candidates, {r.kept} kept, filtered {dict((c, r.filtered[c]) for c in FILTER_CODES)}")
    assert job.job.state == common_pb2.JOB_STATE_SUCCEEDED, job.job.error
    assert r.candidates == 20 and r.kept + sum(r.filtered.values()) == 20
    assert r.kept >= 2, dict(r.filtered)  # a few: a 135M model keeps about 1 in 4-5

    ds = data.GetDataset(data_pb2.GetDatasetRequest(dataset_id=r.dataset_id), timeout=10)
    assert ds.spec.schema == data_pb2.SCHEMA_ALPACA and sum(s.rows for s in ds.splits) == r.kept
    assert ds.synthetic.model == "writer" and ds.synthetic.result.candidates == 20
    rows = data.PreviewDataset(data_pb2.PreviewDatasetRequest(dataset_id=ds.id, limit=100), timeout=10).examples
    again = PairFilter(FilterSettings(), [s["instruction"] for s in sample_seeds()])
    for ex in rows:
        fields = dict(ex.fields)
        print(f"--- instruction: {fields['instruction']!r}\n    response: {fields['output']!r}")
        assert fields["input"] in SAMPLE_DOCUMENT.read_text(encoding="utf-8").replace("\n\n", "\n\n")
        assert again.check(Pair(fields["instruction"], fields["input"], fields["output"])) == ""
        assert ex.prompt.strip() and ex.completion.strip()
