"""The official `openai` client against `tunesmith up` serving the real bundled model on vLLM:
unary and streaming chat and completions, a per-request LoRA adapter loaded and unloaded at run
time (no engine restart), and errors; DoRA refused by vLLM with the reason, then served through
the transformers fallback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest

from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc

from .test_up import free_base_port

openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.integration, pytest.mark.vllm,
              pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None,
                                 reason="vLLM is not installed")]

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _lora(model_dir, folder, *, dora=False, seed=0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=8, lora_alpha=512, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False, use_dora=dora)).save_pretrained(str(folder))
    return str(folder)


def _ready(http, name, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{http}/ready/{name}", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
            assert body.get("state") != "FAILED", body
        time.sleep(1)
    raise AssertionError(f"{name} was not READY after {timeout} s")


@pytest.fixture(scope="module")
def up(bundled_storage, bundled_model_dir, tmp_path_factory):
    from tunesmith.core.models import BUNDLED_NAME

    base = free_base_port()
    root = str(bundled_storage.root)
    folders = tmp_path_factory.mktemp("up-vllm-adapters")
    uris = {name: bundled_storage.put_artifact("adapter", _lora(bundled_model_dir, folders / name, **kw)).uri
            for name, kw in (("acme", {}), ("globex", {"seed": 1}), ("dora", {"dora": True, "seed": 2}))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith.cli.main", "up", "--base-port", str(base), "--storage", root,
         "--load", f"smol={BUNDLED_NAME}", "--load-backend", "vllm", "--enable-adapters"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("SERVING" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("SERVING" in line for line in lines), lines
        http = f"http://127.0.0.1:{base + 3 + 1000}"
        t0 = time.monotonic()
        assert _ready(http, "smol", timeout=420)["ready"]
        sys.stderr.write(f"\nvLLM model READY {time.monotonic() - t0:.0f} s after the services\n")
        channel = grpc.insecure_channel(f"127.0.0.1:{base + 3}")
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        stub.LoadAdapter(inference_pb2.LoadAdapterRequest(name="acme", base="smol", adapter={"uri": uris["acme"]}),
                         timeout=120)
        client = openai.OpenAI(base_url=f"{http}/v1", api_key="unused", max_retries=0, timeout=120)
        yield {"stub": stub, "client": client, "uris": uris, "http": http, "proc": proc}
        channel.close()
    finally:
        proc.terminate()
        proc.wait(60)


def _grpc(stub, model, prompt, n=24):
    return stub.Generate(inference_pb2.GenerateRequest(
        model=model, prompts=[prompt], sampling=inference_pb2.SamplingParams(max_new_tokens=n)), timeout=120).completions[0]


def test_the_model_is_served_by_vllm(up):
    served = up["stub"].GetServedModel(inference_pb2.GetServedModelRequest(name="smol"))
    assert served.backend == "vllm" and served.state == inference_pb2.SERVED_MODEL_STATE_READY
    assert {m.id for m in up["client"].models.list().data} == {"smol", "smol:acme"}


def test_chat_unary_and_streaming(up):
    client = up["client"]
    r = client.chat.completions.create(model="smol", messages=CHAT, max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop" and 0 < r.usage.completion_tokens < 24
    chunks = list(client.chat.completions.create(model="smol", messages=CHAT, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_completions_unary_and_streaming_equal_grpc(up):
    client, stub = up["client"], up["stub"]
    prompt = "The three primary colours are"
    r = client.completions.create(model="smol", prompt=prompt, max_tokens=16, temperature=0)
    assert r.choices[0].text == _grpc(stub, "smol", inference_pb2.Prompt(text=prompt), 16).text
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="smol", prompt=prompt, max_tokens=16, temperature=0, stream=True))
    assert streamed == r.choices[0].text


def test_a_per_request_adapter_loads_and_unloads_at_run_time(up):
    client, stub, uris = up["client"], up["stub"], up["uris"]
    base = client.chat.completions.create(model="smol", messages=CHAT, max_tokens=24, temperature=0)
    tuned = client.chat.completions.create(model="smol:acme", messages=CHAT, max_tokens=24, temperature=0)
    chat = inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[
        inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_USER, content=CHAT[0]["content"])]))
    assert tuned.choices[0].message.content == _grpc(stub, "acme", chat).text
    assert tuned.choices[0].message.content != base.choices[0].message.content
    # a second adapter joins the same engine, then the first leaves: no restart, the base unchanged
    stub.LoadAdapter(inference_pb2.LoadAdapterRequest(name="globex", base="smol", adapter={"uri": uris["globex"]}),
                     timeout=120)
    other = client.chat.completions.create(model="smol:globex", messages=CHAT, max_tokens=24, temperature=0)
    assert other.choices[0].message.content not in (tuned.choices[0].message.content, base.choices[0].message.content)
    stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name="globex"))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="smol:globex", messages=CHAT, max_tokens=4)
    again = client.chat.completions.create(model="smol", messages=CHAT, max_tokens=24, temperature=0)
    assert again.choices[0].message.content == base.choices[0].message.content
    assert up["proc"].poll() is None


def test_errors_use_openais_shape_and_the_engine_keeps_serving(up):
    client = up["client"]
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=CHAT)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smol", messages=CHAT, max_tokens=100_000)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smol", messages=[{"role": "wizard", "content": "hi"}])
    assert err.value.body["param"] == "messages[0].role"
    assert "Paris" in client.chat.completions.create(model="smol", messages=CHAT, max_tokens=24,
                                                     temperature=0).choices[0].message.content


def test_dora_is_refused_by_vllm_with_the_reason_then_served_by_the_fallback(up):
    client, stub, uris = up["client"], up["stub"], up["uris"]
    with pytest.raises(grpc.RpcError) as err:
        stub.LoadAdapter(inference_pb2.LoadAdapterRequest(name="dora", base="smol", adapter={"uri": uris["dora"]}),
                         timeout=120)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DoRA" in err.value.details() and "allow_fallback" in err.value.details()
    served = stub.LoadAdapter(inference_pb2.LoadAdapterRequest(name="dora", base="smol", adapter={"uri": uris["dora"]},
                                                               allow_fallback=True), timeout=300)
    assert served.backend == "transformers" and "DoRA" in served.backend_reason
    assert served.peft_type == "LORA+DORA"
    r = client.chat.completions.create(model="smol:dora", messages=CHAT, max_tokens=12, temperature=0)
    assert r.choices[0].message.content
    stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name="dora"))


def test_64_mixed_grpc_and_http_streams_equal_sequential_greedy_outputs(up):
    """64 streams at once against the one vLLM engine, half gRPC GenerateStream and half HTTP
    streaming chat: 0 errors, and each equals its prompt's answer asked alone."""
    from concurrent.futures import ThreadPoolExecutor

    client, stub = up["client"], up["stub"]
    questions = [f"Name one thing that is {c} and say why in a sentence." for c in
                 ("red", "blue", "green", "yellow", "round", "soft", "loud", "cold")] * 8
    alone = {}
    for q in set(questions):
        alone[q] = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": q}],
                                                  max_tokens=16, temperature=0).choices[0].message.content

    def over_grpc(q):
        prompt = inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[
            inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_USER, content=q)]))
        return "".join(c.delta for c in stub.GenerateStream(inference_pb2.GenerateRequest(
            model="smol", prompts=[prompt], sampling=inference_pb2.SamplingParams(max_new_tokens=16)), timeout=300))

    def over_http(q):
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": q}], max_tokens=16, temperature=0, stream=True))

    jobs = [(over_grpc if i % 2 else over_http, q) for i, q in enumerate(questions)]
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda job: job[0](job[1]), jobs))
    assert answers == [alone[q] for q in questions]
