"""The real bundled model served by the InferenceService with the vLLM backend."""
import importlib.util

import pytest

from tunesmith.api.inference.v1 import inference_pb2

from .conftest import import_model, load_model

pytestmark = [pytest.mark.integration, pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]


def test_vllm_serves_the_bundled_model_and_streams(cluster, bundled_model_dir):
    # Reuse the session's one-time import instead of converting the GGUF again.
    import_model(cluster, "smollm2-135m-instruct", bundled_model_dir)
    served = load_model(cluster, inference_pb2.LoadModelRequest(
        name="smol", model="smollm2-135m-instruct", backend="vllm"), timeout=600)
    assert served.backend == "vllm"
    try:
        chat = inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[
            inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_USER, content="What is the capital of France?")]))
        sampling = inference_pb2.SamplingParams(max_new_tokens=24, temperature=0)
        resp = cluster.inference.Generate(inference_pb2.GenerateRequest(model="smol", prompts=[chat], sampling=sampling),
                                          timeout=300)
        assert resp.backend == "vllm"
        assert "Paris" in resp.completions[0].text
        chunks = list(cluster.inference.GenerateStream(
            inference_pb2.GenerateRequest(model="smol", prompts=[chat], sampling=sampling), timeout=300))
        assert len(chunks) > 2, "tokens should arrive in several chunks"
        assert "".join(c.delta for c in chunks) == resp.completions[0].text
    finally:
        cluster.inference.UnloadModel(inference_pb2.UnloadModelRequest(name="smol"), timeout=120)
