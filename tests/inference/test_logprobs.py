"""Token log-probabilities on the transformers backend, over gRPC and the HTTP API (official
`openai` client), checked against a plain transformers forward pass."""
from __future__ import annotations

import pytest

from .reference import reference_logprobs
from .serving import inference_service

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def service(varied_model_dir, tmp_path_factory):
    with inference_service(str(tmp_path_factory.mktemp("logprob-storage")), {"tiny": varied_model_dir},
                           load={"name": "tiny", "model": "tiny", "backend": "transformers"}) as svc:
        client = openai.OpenAI(base_url=svc["http"] + "/v1", api_key="unused", max_retries=0)
        yield {**svc, "client": client, "dir": varied_model_dir}


def _prompt_ids(service, text):
    from tunesmith_builtin.inference_transformers import render_prompt

    return render_prompt(service["servicer"].served["tiny"][1].tokenizer, text)


def test_grpc_logprobs_match_a_forward_pass_and_greedy_picks_the_top_token(service):
    from tunesmith.api.inference.v1 import inference_pb2

    r = service["stub"].Generate(inference_pb2.GenerateRequest(
        model="tiny", prompts=[inference_pb2.Prompt(text="Logprob me")], logprobs=True, top_logprobs=3,
        sampling=inference_pb2.SamplingParams(max_new_tokens=8)), timeout=60)
    c = r.completions[0]
    assert len(c.logprobs) == c.completion_tokens == 8
    assert list(c.token_logprobs) == [t.logprob for t in c.logprobs]
    chosen, best = reference_logprobs(service["dir"], _prompt_ids(service, "Logprob me"),
                                      [t.token_id for t in c.logprobs], 3)
    for t, ref, ref_top in zip(c.logprobs, chosen, best):
        assert t.logprob == pytest.approx(ref, abs=1e-4)
        assert [a.token_id for a in t.top_logprobs] == ref_top
        assert t.top_logprobs[0].token_id == t.token_id  # greedy
    without = service["stub"].Generate(inference_pb2.GenerateRequest(
        model="tiny", prompts=[inference_pb2.Prompt(text="Logprob me")],
        sampling=inference_pb2.SamplingParams(max_new_tokens=8)), timeout=60).completions[0]
    assert without.text == c.text and not without.logprobs


def test_http_completions_and_chat_logprobs_in_openais_shapes(service):
    client = service["client"]
    r = client.completions.create(model="tiny", prompt="Logprob me", max_tokens=8, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert all(len(alts) == 2 for alts in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                          temperature=0, logprobs=True, top_logprobs=4)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) == 4 and t.top_logprobs[0].logprob >= t.logprob - 1e-9 for t in content)
    assert all(t.bytes == list(t.token.encode("utf-8")) for t in content)
    streamed = [c for c in client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0, logprobs=True,
        top_logprobs=4, stream=True) if c.choices and c.choices[0].logprobs]
    tokens = [t for c in streamed for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 5)) for t in tokens] == [(t.token, round(t.logprob, 5)) for t in content]


def test_bad_logprob_requests_are_refused_naming_the_parameter(service):
    client = service["client"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="x", max_tokens=2, logprobs=9)
    assert err.value.body["param"] == "logprobs"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                       top_logprobs=3)
    assert err.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                       logprobs=True, top_logprobs=21)
    assert err.value.body["param"] == "top_logprobs"
