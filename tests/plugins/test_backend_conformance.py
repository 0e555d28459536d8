"""The built-in inference backends' models and streams satisfy the Protocols the services call.

The behaviour is checked on a real model by tests/contract (transformers) and
tests/inference/test_backends.py (both backends); this checks the vLLM model's members and
signatures without starting an engine (30-60 s), and the shared TextStream.
"""
from __future__ import annotations

from tunesmith.core.contracts import (
    GenerationStream,
    InferenceBackend,
    LoadedModel,
    conformance_errors,
)
from tunesmith_builtin.inference_transformers import TextStream, TransformersBackend, TransformersModel
from tunesmith_builtin.inference_vllm import VllmBackend, VllmModel


def _unstarted(cls):
    """An instance without __init__ (no model, no engine); dtype and max_model_len are set
    there, so set them."""
    model = object.__new__(cls)
    model.dtype = "float32"
    model.max_model_len = 2048
    return model


def test_backends_and_their_models_conform():
    for backend, model_cls in ((TransformersBackend(), TransformersModel), (VllmBackend(), VllmModel)):
        assert conformance_errors(backend, InferenceBackend) == []
        model = _unstarted(model_cls)
        assert conformance_errors(model, LoadedModel) == []
        assert model.backend == backend.name


def test_a_model_without_dtype_would_not_conform():
    assert conformance_errors(object.__new__(VllmModel), LoadedModel) == ["lacks dtype, max_model_len"]


def test_text_stream_is_a_generation_stream():
    def deltas(handle):
        yield "a"
        yield "b"

    stream = TextStream(deltas)
    assert conformance_errors(stream, GenerationStream) == []
    assert stream.generation is None
    assert list(stream) == ["a", "b"]
    stream.close()
    stream.close()
