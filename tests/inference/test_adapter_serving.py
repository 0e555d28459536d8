"""Many adapters on one served model (transformers backend, peft's multi-adapter API), their
limits, the checks LoadAdapter makes, the context-length check and per-model readiness, against
a real inference service (gRPC and HTTP in one process) on a tiny model."""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import grpc
import pytest

from tunesmith.api.inference.v1 import inference_pb2

from .serving import inference_service, wait_ready


def _adapter(runtime, model_dir, folder, *, seed=0, rank=4, dora=False, ia3=False):
    """A random peft adapter for the model in model_dir, stored as an adapter artifact; its URI."""
    import torch
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = IA3Config(target_modules=["q_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                       init_ia3_weights=False) if ia3 else \
        LoraConfig(r=rank, lora_alpha=64 * rank, target_modules="all-linear", init_lora_weights=False, use_dora=dora)
    get_peft_model(base, config).save_pretrained(str(folder))
    return runtime.storage.put_artifact("adapter", str(folder)).uri


@pytest.fixture(scope="module")
def service(varied_model_dir, tiny_model_dir, tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken") / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    models = {"tiny": varied_model_dir, "other": tiny_model_dir, "broken": str(broken)}
    load = {"name": "tiny", "model": "tiny", "backend": "transformers", "enable_adapters": True,
            "adapter_limits": {"max_adapters": 3, "max_rank": 8}}
    with inference_service(str(tmp_path_factory.mktemp("adapter-serving")), models, load=load) as svc:
        runtime = svc["runtime"]
        folders = tmp_path_factory.mktemp("adapters")
        uris = {name: _adapter(runtime, varied_model_dir, folders / name, seed=i)
                for i, name in enumerate(["a", "b", "c"])}
        uris["wide"] = _adapter(runtime, varied_model_dir, folders / "wide", rank=16)
        uris["dora"] = _adapter(runtime, varied_model_dir, folders / "dora", seed=5, dora=True)
        uris["ia3"] = _adapter(runtime, varied_model_dir, folders / "ia3", seed=6, ia3=True)
        yield {"stub": svc["stub"], "runtime": runtime, "uris": uris, "folders": folders, "http": svc["http"]}


def _generate(stub, model, prompt="Where is my card?", n=8):
    r = stub.Generate(inference_pb2.GenerateRequest(
        model=model, prompts=[inference_pb2.Prompt(text=prompt)],
        sampling=inference_pb2.SamplingParams(max_new_tokens=n)), timeout=60)
    return r.completions[0].text


def _load(stub, name, uri, **kw):
    return stub.LoadAdapter(inference_pb2.LoadAdapterRequest(name=name, base="tiny", adapter={"uri": uri}, **kw),
                            timeout=60)


def _unload_all_adapters(stub):
    for m in stub.ListModels(inference_pb2.ListServedModelsRequest()).models:
        if m.kind == "adapter":
            stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name=m.name))


def _status(fn):
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code(), err.value.details()


def test_served_model_reports_its_source_and_adapter_limits(service):
    served = service["stub"].GetServedModel(inference_pb2.GetServedModelRequest(name="tiny"))
    assert served.model == "tiny"
    assert (served.adapter_limits.max_adapters, served.adapter_limits.max_rank) == (3, 8)


def test_adapters_load_and_unload_at_run_time_and_each_request_names_its_own(service):
    stub, uris = service["stub"], service["uris"]
    _unload_all_adapters(stub)
    alone = {}
    for name in "abc":  # each adapter's answer when it is the only one loaded
        _load(stub, name, uris[name])
        alone[name] = _generate(stub, name)
        stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name=name))
    base = _generate(stub, "tiny")
    assert len({base, *alone.values()}) == 4, (base, alone)  # four different models
    for name in "abc":
        served = _load(stub, name, uris[name])
        assert (served.peft_type, served.rank, served.backend) == ("LORA", 4, "transformers")
    for name in "cab":  # interleaved requests, each to its own adapter, on one engine
        assert _generate(stub, name) == alone[name]
    assert _generate(stub, "tiny") == base
    stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name="b"))  # no restart of the base
    assert _generate(stub, "a") == alone["a"] and _generate(stub, "c") == alone["c"]
    code, details = _status(lambda: _generate(stub, "b"))
    assert code == grpc.StatusCode.NOT_FOUND and "'b'" in details


def test_the_adapter_count_limit_refuses_one_more_until_one_is_unloaded(service):
    stub, uris = service["stub"], service["uris"]
    _unload_all_adapters(stub)
    for name in "abc":
        _load(stub, name, uris[name])
    code, details = _status(lambda: _load(stub, "d", uris["a"]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_adapters" in details and "3 adapters" in details
    stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name="c"))
    assert _load(stub, "d", uris["a"]).state == inference_pb2.SERVED_MODEL_STATE_READY


def test_a_rank_above_the_limit_is_refused_naming_the_field_and_the_engine_keeps_serving(service):
    stub, uris = service["stub"], service["uris"]
    _unload_all_adapters(stub)
    before = _generate(stub, "tiny")
    code, details = _status(lambda: _load(stub, "wide", uris["wide"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "adapter.uri" in details and "rank is 16" in details and "max_rank" in details
    assert _generate(stub, "tiny") == before
    assert "wide" not in {m.name for m in stub.ListModels(inference_pb2.ListServedModelsRequest()).models}


def test_an_adapter_trained_on_another_base_is_refused(service, tmp_path):
    stub, runtime = service["stub"], service["runtime"]
    _unload_all_adapters(stub)
    folder = tmp_path / "other-base"
    shutil.copytree(service["folders"] / "a", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "other"  # a model-store name: another model's artifact
    (folder / "adapter_config.json").write_text(json.dumps(config))
    uri = runtime.storage.put_artifact("adapter", str(folder)).uri
    code, details = _status(lambda: _load(stub, "misfit", uri))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "adapter.uri" in details and "trained on other" in details


def test_dora_and_ia3_adapters_serve_on_transformers_one_peft_type_at_a_time(service):
    stub, uris = service["stub"], service["uris"]
    _unload_all_adapters(stub)
    base = _generate(stub, "tiny")
    dora = _load(stub, "dora", uris["dora"])
    assert (dora.peft_type, dora.rank) == ("LORA+DORA", 4)
    assert _generate(stub, "dora") != base
    _load(stub, "a", uris["a"])  # DoRA is LoRA to peft: they share the model
    code, details = _status(lambda: _load(stub, "ia3", uris["ia3"]))  # peft cannot mix types
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "one PEFT type" in details and "dora (LORA+DORA)" in details and "a (LORA)" in details
    _unload_all_adapters(stub)
    ia3 = _load(stub, "ia3", uris["ia3"])
    assert (ia3.peft_type, ia3.rank) == ("IA3", 0)
    assert _generate(stub, "ia3") != base
    _unload_all_adapters(stub)
    assert _generate(stub, "tiny") == base


def test_max_tokens_beyond_the_context_is_refused_over_grpc_and_http(service):
    openai = pytest.importorskip("openai")
    stub = service["stub"]
    code, details = _status(lambda: stub.Generate(inference_pb2.GenerateRequest(
        model="tiny", prompts=[inference_pb2.Prompt(text="hi")],
        sampling=inference_pb2.SamplingParams(max_new_tokens=5000))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sampling.max_new_tokens" in details
    client = openai.OpenAI(base_url=service["http"] + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="hi", max_tokens=5000)
    assert err.value.body["param"] == "max_tokens" and err.value.body["code"] == "context_length_exceeded"
    assert client.completions.create(model="tiny", prompt="hi", max_tokens=4).usage.completion_tokens >= 1


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_readiness_per_model_for_kubernetes_probes(service):
    stub, http = service["stub"], service["http"]
    assert _get(f"{http}/ready/tiny") == (200, {"name": "tiny", "state": "READY", "ready": True})
    assert _get(f"{http}/ready")[0] == 200
    stub.LoadModel(inference_pb2.LoadModelRequest(name="broken", model="broken", backend="transformers"))
    assert wait_ready(stub, "broken").state == inference_pb2.SERVED_MODEL_STATE_FAILED
    try:
        status, body = _get(f"{http}/ready/broken")
        assert status == 503 and body["state"] == "FAILED" and body["error"]
        status, body = _get(f"{http}/ready")
        assert status == 503 and body["models"]["broken"] == "FAILED" and body["models"]["tiny"] == "READY"
        assert _get(f"{http}/ready/tiny")[0] == 200  # the others stay ready
        assert _get(f"{http}/health") == (200, {"status": "SERVING"})
    finally:
        stub.UnloadModel(inference_pb2.UnloadModelRequest(name="broken"))
    status, body = _get(f"{http}/ready/nothing")
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_adapter_limits_are_refused_without_enable_adapters_and_out_of_range(service):
    stub = service["stub"]
    code, details = _status(lambda: stub.LoadModel(inference_pb2.LoadModelRequest(
        name="x", model="tiny", adapter_limits=inference_pb2.AdapterLimits(max_adapters=2))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "adapter_limits" in details and "enable_adapters" in details
    code, details = _status(lambda: stub.LoadModel(inference_pb2.LoadModelRequest(
        name="x", model="tiny", enable_adapters=True, adapter_limits=inference_pb2.AdapterLimits(max_rank=4096))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "adapter_limits.max_rank" in details
