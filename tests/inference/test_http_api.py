"""The OpenAI-compatible HTTP API, driven by the official `openai` client against a real inference
service (gRPC and HTTP in one process, sharing the loaded model) on a tiny model."""
from __future__ import annotations

import time

import pytest

from .serving import inference_service

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def service(varied_model_dir, tmp_path_factory):
    from tunesmith.api.inference.v1 import inference_pb2
    from tunesmith.testing.contracts import tiny_lora_adapter

    with inference_service(str(tmp_path_factory.mktemp("http-storage")), {"tiny": varied_model_dir},
                           load={"name": "tiny", "model": "tiny", "backend": "transformers",
                                 "enable_adapters": True}) as svc:
        adapter_dir = tiny_lora_adapter(varied_model_dir, tmp_path_factory.mktemp("lora") / "a")
        uri = svc["runtime"].storage.put_artifact("adapter", adapter_dir).uri
        svc["stub"].LoadAdapter(inference_pb2.LoadAdapterRequest(name="acme", base="tiny", adapter={"uri": uri}),
                                timeout=60)
        yield {"stub": svc["stub"], "http": svc["http"] + "/v1", "servicer": svc["servicer"]}


@pytest.fixture
def client(service):
    return openai.OpenAI(base_url=service["http"], api_key="unused", max_retries=0, timeout=60)


def _grpc_text(service, model, prompt, max_new_tokens):
    from tunesmith.api.inference.v1 import inference_pb2

    r = service["stub"].Generate(inference_pb2.GenerateRequest(
        model=model, prompts=[prompt], sampling=inference_pb2.SamplingParams(max_new_tokens=max_new_tokens)),
        timeout=60)
    return r.completions[0]


def test_models_lists_the_served_model_and_its_adapter(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tiny", "tiny:acme"}


def test_completion_equals_the_grpc_answer_and_reports_usage(client, service):
    from tunesmith.api.inference.v1 import inference_pb2

    r = client.completions.create(model="tiny", prompt="Hello there", max_tokens=8, temperature=0)
    expected = _grpc_text(service, "tiny", inference_pb2.Prompt(text="Hello there"), 8)
    assert r.choices[0].text == expected.text
    assert r.usage.completion_tokens == expected.completion_tokens
    assert r.usage.prompt_tokens == expected.prompt_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason == {1: "stop", 2: "length"}[expected.finish_reason]


def test_an_adapter_by_base_colon_name_answers_like_grpc_and_unlike_the_base(client, service):
    from tunesmith.api.inference.v1 import inference_pb2

    prompt = "Order status"
    tuned = client.completions.create(model="tiny:acme", prompt=prompt, max_tokens=8, temperature=0).choices[0].text
    assert tuned == _grpc_text(service, "acme", inference_pb2.Prompt(text=prompt), 8).text
    assert tuned != client.completions.create(model="tiny", prompt=prompt, max_tokens=8,
                                              temperature=0).choices[0].text


def test_streaming_joins_to_the_unary_text_and_ends_with_usage(client):
    unary = client.completions.create(model="tiny", prompt="Stream me", max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="Stream me", max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == unary.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == unary.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens


def test_chat_unary_and_streaming_agree(client, service):
    from tunesmith.api.inference.v1 import inference_pb2

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    expected = _grpc_text(service, "tiny", inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[
        inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_SYSTEM, content="Be brief."),
        inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_USER, content="Hi")])), 8)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == expected.text
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text


def test_n_and_seeded_sampling(client):
    r = client.completions.create(model="tiny", prompt="Pick", max_tokens=6, temperature=1.0, n=3, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    again = client.completions.create(model="tiny", prompt="Pick", max_tokens=6, temperature=1.0, n=3, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]


def test_stop_strings_cut_the_answer(client):
    full = client.completions.create(model="tiny", prompt="Stop test", max_tokens=12, temperature=0).choices[0].text
    assert len(full) > 2
    stop = full[2]
    cut = client.completions.create(model="tiny", prompt="Stop test", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_errors_use_openais_shape_and_status_codes(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    assert err.value.status_code == 404 and err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=5)
    assert err.value.body["param"] == "temperature" and "temperature" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="x", max_tokens=-3)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:  # not built: refused, never ignored
        client.completions.create(model="tiny", prompt="x", max_tokens=2, echo=True)
    assert err.value.body["param"] == "echo" and err.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "x"}], max_tokens=2)
    assert err.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other:acme", prompt="x", max_tokens=2)
    # the service keeps serving everyone else
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0).choices


def test_a_full_queue_is_refused_with_429_and_resource_exhausted_then_recovers(client, service):
    """Back-pressure: with every request slot taken, new requests are refused at once on both
    APIs (not queued without bound); once slots free up, the service answers again."""
    import contextlib

    import grpc

    from tunesmith.api.inference.v1 import inference_pb2

    servicer = service["servicer"]
    with contextlib.ExitStack() as held:
        for _ in range(servicer.max_queue - servicer.in_flight):
            held.enter_context(servicer.admit())
        with pytest.raises(openai.RateLimitError) as err:
            client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0)
        assert err.value.status_code == 429 and err.value.body["code"] == "queue_full"
        with pytest.raises(openai.RateLimitError):
            list(client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0, stream=True))
        with pytest.raises(grpc.RpcError) as rpc:
            _grpc_text(service, "tiny", inference_pb2.Prompt(text="x"), 2)
        assert rpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert servicer.in_flight == 0
    unary = client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0).choices[0].text
    assert "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="x", max_tokens=2, temperature=0, stream=True) if c.choices) == unary
    deadline = time.monotonic() + 10  # the server gives the slot back once its body iterator ends
    while servicer.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servicer.in_flight == 0


def test_streaming_n_choices_interleave_and_each_joins_to_its_own_text(client):
    greedy = client.completions.create(model="tiny", prompt="Many ways", max_tokens=8, temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt="Many ways", max_tokens=8, temperature=0, n=3,
                                            stream=True, stream_options={"include_usage": True}))
    texts = {i: "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i) for i in range(3)}
    assert texts == {0: greedy, 1: greedy, 2: greedy}
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finishes) == [0, 1, 2]
    single = client.completions.create(model="tiny", prompt="Many ways", max_tokens=8, temperature=0)
    assert chunks[-1].usage.completion_tokens == 3 * single.usage.completion_tokens

    def sampled():
        out = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Pick"}],
                                                  max_tokens=6, temperature=1.0, n=2, seed=11, stream=True))
        return {i: "".join(c.choices[0].delta.content or "" for c in out if c.choices[0].index == i) for i in (0, 1)}

    first = sampled()
    assert first == sampled()  # a seed reproduces the response
    assert first[0] != first[1]  # and the choices differ (seed + index)
