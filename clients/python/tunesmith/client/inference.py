"""InferenceClient: generate text with served models and adapters; load and unload them.

Prompts: a `str` is a raw completion prompt (no template); a list of messages is a chat,
rendered through the model's chat template. A message is a {"role", "content"} dict, a
(role, content) tuple or an `inference_pb2.ChatMessage`. Sampling settings are keyword
arguments named as in `inference_pb2.SamplingParams`: max_new_tokens, temperature (0 =
greedy), top_p, top_k, stop, seed, repetition_penalty.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

import grpc

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.client._base import LONG_TIMEOUT, BaseClient, coerce
from tunesmith.client.errors import DeadlineExceededError, FailedPreconditionError, translate_errors

__all__ = ["InferenceClient", "SAMPLING_FIELDS"]

MessageLike = Union[inference_pb2.ChatMessage, Mapping[str, str], Sequence[str]]
PromptLike = Union[str, inference_pb2.Prompt, inference_pb2.Conversation, Sequence[MessageLike]]

SAMPLING_FIELDS = tuple(f.name for f in inference_pb2.SamplingParams.DESCRIPTOR.fields)


def to_role(role: str | int) -> int:
    """A ChatRole from "system", "user", "assistant", "tool" (or the enum value itself)."""
    if isinstance(role, int):
        return role
    name = f"CHAT_ROLE_{str(role).strip().upper()}"
    if name not in inference_pb2.ChatRole.keys() or name == "CHAT_ROLE_UNSPECIFIED":
        raise ValueError(f"unknown chat role {role!r}: use system, user, assistant or tool")
    return inference_pb2.ChatRole.Value(name)


def to_dtype(dtype: str | int) -> int:
    """A Dtype from "float32", "bfloat16", "float16", "" (unspecified), or the enum value."""
    if isinstance(dtype, int):
        return dtype
    if not dtype:
        return common_pb2.DTYPE_UNSPECIFIED
    name = f"DTYPE_{dtype.strip().upper()}"
    if name not in common_pb2.Dtype.keys():
        raise ValueError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return common_pb2.Dtype.Value(name)


def to_message(message: MessageLike) -> inference_pb2.ChatMessage:
    """A ChatMessage from a message, a {"role", "content"} dict or a (role, content) pair."""
    if isinstance(message, inference_pb2.ChatMessage):
        return message
    if isinstance(message, Mapping):
        unknown = set(message) - {"role", "content"}
        if unknown or "role" not in message or "content" not in message:
            raise ValueError(f"a chat message needs exactly 'role' and 'content', got keys {sorted(message)}")
        return inference_pb2.ChatMessage(role=to_role(message["role"]), content=str(message["content"]))
    if isinstance(message, (tuple, list)) and len(message) == 2 and all(isinstance(x, str) for x in message):
        return inference_pb2.ChatMessage(role=to_role(message[0]), content=message[1])
    raise TypeError(f"not a chat message: {message!r}")


def to_prompt(prompt: PromptLike) -> inference_pb2.Prompt:
    """A Prompt: a str is raw text; a Conversation or a list of messages is a chat."""
    if isinstance(prompt, inference_pb2.Prompt):
        return prompt
    if isinstance(prompt, str):
        return inference_pb2.Prompt(text=prompt)
    if isinstance(prompt, inference_pb2.Conversation):
        return inference_pb2.Prompt(chat=prompt)
    if isinstance(prompt, Sequence):
        return inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=[to_message(m) for m in prompt]))
    raise TypeError(f"a prompt is a str, a list of chat messages or a Prompt, got {type(prompt).__name__}")


def to_sampling(
    sampling: inference_pb2.SamplingParams | Mapping[str, Any] | None, params: Mapping[str, Any]
) -> inference_pb2.SamplingParams:
    """SamplingParams from a message/dict, overridden by keyword `params`."""
    unknown = sorted(set(params) - set(SAMPLING_FIELDS))
    if unknown:
        raise TypeError(f"unknown sampling parameter(s) {unknown}; expected some of {list(SAMPLING_FIELDS)}")
    out = inference_pb2.SamplingParams()
    out.CopyFrom(coerce(sampling, inference_pb2.SamplingParams, "sampling"))
    for name, value in params.items():
        if value is None:
            continue
        if name == "stop":
            del out.stop[:]
            out.stop.extend([value] if isinstance(value, str) else list(value))
        else:
            setattr(out, name, value)
    return out


class InferenceClient(BaseClient):
    """Client of tunesmith.api.inference.v1.InferenceService (default address localhost:50054)."""

    SERVICE = "inference"
    _STUB = inference_pb2_grpc.InferenceServiceStub

    # -- generation --------------------------------------------------------------------------

    @translate_errors
    def generate_response(
        self,
        model: str,
        prompts: PromptLike | Sequence[PromptLike],
        *,
        sampling: inference_pb2.SamplingParams | Mapping[str, Any] | None = None,
        timeout: float | None = LONG_TIMEOUT,
        **params: Any,
    ) -> inference_pb2.GenerateResponse:
        """Like `generate`, but returns the whole GenerateResponse (token counts, finish
        reasons, backend)."""
        request = inference_pb2.GenerateRequest(
            model=model, prompts=self._prompts(prompts), sampling=to_sampling(sampling, params)
        )
        return self._stub.Generate(request, timeout=timeout)

    def generate(
        self,
        model: str,
        prompts: PromptLike | Sequence[PromptLike],
        *,
        sampling: inference_pb2.SamplingParams | Mapping[str, Any] | None = None,
        timeout: float | None = LONG_TIMEOUT,
        **params: Any,
    ) -> list[str]:
        """Answers to `prompts`, batched in one request, in order. `prompts` is one prompt (a
        str or a Prompt) or a list of prompts (str = raw text, list of messages = chat)."""
        response = self.generate_response(model, prompts, sampling=sampling, timeout=timeout, **params)
        return [c.text for c in response.completions]

    def chat(
        self,
        model: str,
        messages: str | Sequence[MessageLike] | inference_pb2.Conversation,
        *,
        system: str | None = None,
        sampling: inference_pb2.SamplingParams | Mapping[str, Any] | None = None,
        timeout: float | None = LONG_TIMEOUT,
        **params: Any,
    ) -> str:
        """The assistant's reply to one conversation. A str is one user message; `system`
        prepends a system message."""
        prompt = self._chat_prompt(messages, system)
        return self.generate(model, [prompt], sampling=sampling, timeout=timeout, **params)[0]

    @translate_errors
    def stream(
        self,
        model: str,
        prompt_or_messages: PromptLike,
        *,
        sampling: inference_pb2.SamplingParams | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Iterator[str]:
        """The answer to one prompt (str = raw text, list of messages = chat) as text pieces,
        as they are generated. Closing the iterator (or breaking out of the loop) cancels the
        generation. No deadline unless `timeout` is given."""
        request = inference_pb2.GenerateRequest(
            model=model, prompts=[to_prompt(prompt_or_messages)], sampling=to_sampling(sampling, params)
        )
        call = self._stub.GenerateStream(request, timeout=timeout)
        try:
            for chunk in call:
                if chunk.delta:
                    yield chunk.delta
        finally:
            call.cancel()

    # -- served models -----------------------------------------------------------------------

    @translate_errors
    def list_models(self, *, timeout: float | None = None) -> list[inference_pb2.ServedModel]:
        """Models and adapters being served."""
        response = self._stub.ListModels(inference_pb2.ListServedModelsRequest(), timeout=self._deadline(timeout))
        return list(response.models)

    @translate_errors
    def load_model(
        self,
        name: str,
        model: str,
        *,
        backend: str = "",
        dtype: str | int = "",
        enable_adapters: bool = False,
        max_model_len: int = 0,
        max_adapters: int = 0,
        max_adapter_rank: int = 0,
        wait: bool = True,
        timeout: float | None = LONG_TIMEOUT,
    ) -> inference_pb2.ServedModel:
        """Serve `model` (a model-store name or model artifact URI) under `name`. `backend`:
        "vllm", "transformers" or "" for the best available; `enable_adapters` allows LoRA
        adapters on top. The service returns at once in LOADING; with `wait` (the default) this
        polls until READY and raises FailedPreconditionError if loading FAILED (DeadlineExceeded
        after `timeout` s). With wait=False it returns the LOADING model: poll get_model().
        max_adapters / max_adapter_rank (0: the service's defaults, 8 and 64) limit the adapters
        put on it; setting either needs enable_adapters."""
        request = inference_pb2.LoadModelRequest(
            name=name,
            model=model,
            backend=backend,
            dtype=to_dtype(dtype),
            enable_adapters=enable_adapters,
            max_model_len=max_model_len,
        )
        if max_adapters or max_adapter_rank:
            request.adapter_limits.max_adapters = max_adapters
            request.adapter_limits.max_rank = max_adapter_rank
        served = self._stub.LoadModel(request, timeout=self._deadline(None))
        if not wait:
            return served
        deadline = None if timeout is None else time.monotonic() + timeout
        while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError(f"{name!r} was still loading after {timeout} s", code=grpc.StatusCode.DEADLINE_EXCEEDED)
            time.sleep(0.5)
            served = self.get_model(name)
        if served.state == inference_pb2.SERVED_MODEL_STATE_FAILED:
            raise FailedPreconditionError(f"{name!r} failed to load: {served.error.message}",
                                          code=grpc.StatusCode.FAILED_PRECONDITION, reason=served.error.code.upper(),
                                          field=served.error.field or None)
        return served

    @translate_errors
    def get_model(self, name: str, *, timeout: float | None = None) -> inference_pb2.ServedModel:
        """A served model by name, with its state (LOADING, READY, FAILED)."""
        return self._stub.GetServedModel(inference_pb2.GetServedModelRequest(name=name), timeout=self._deadline(timeout))

    @translate_errors
    def unload_model(self, name: str, *, timeout: float | None = None) -> None:
        """Stop serving a model."""
        self._stub.UnloadModel(inference_pb2.UnloadModelRequest(name=name), timeout=self._deadline(timeout))

    @translate_errors
    def load_adapter(
        self,
        name: str,
        base: str,
        adapter: common_pb2.ArtifactRef | str,
        *,
        allow_fallback: bool = False,
        timeout: float | None = LONG_TIMEOUT,
    ) -> inference_pb2.ServedModel:
        """Serve an adapter (an ArtifactRef, or its URI) on top of the served model `base`,
        under `name`. allow_fallback: an adapter the base's engine cannot serve (DoRA, IA3,
        prefix or prompt tuning on vLLM) is served on a transformers copy of the base instead of
        being refused."""
        ref = adapter if isinstance(adapter, common_pb2.ArtifactRef) else common_pb2.ArtifactRef(uri=adapter)
        request = inference_pb2.LoadAdapterRequest(name=name, base=base, adapter=ref, allow_fallback=allow_fallback)
        return self._stub.LoadAdapter(request, timeout=timeout)

    @translate_errors
    def unload_adapter(self, name: str, *, timeout: float | None = None) -> None:
        """Stop serving an adapter."""
        self._stub.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name=name), timeout=self._deadline(timeout))

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _prompts(prompts: PromptLike | Sequence[PromptLike]) -> list[inference_pb2.Prompt]:
        if isinstance(prompts, (str, inference_pb2.Prompt, inference_pb2.Conversation)):
            return [to_prompt(prompts)]
        if not isinstance(prompts, Sequence):
            raise TypeError(f"prompts must be a str, a Prompt or a list of prompts, got {type(prompts).__name__}")
        out = []
        for prompt in prompts:
            if isinstance(prompt, (Mapping, inference_pb2.ChatMessage)):
                raise TypeError(
                    "prompts is a list of prompts, and a chat prompt is itself a list of messages: "
                    "pass [messages] for one conversation, or use chat()"
                )
            out.append(to_prompt(prompt))
        return out

    @staticmethod
    def _chat_prompt(
        messages: str | Sequence[MessageLike] | inference_pb2.Conversation, system: str | None
    ) -> inference_pb2.Prompt:
        if isinstance(messages, str):
            conversation = [inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_USER, content=messages)]
        elif isinstance(messages, inference_pb2.Conversation):
            conversation = list(messages.messages)
        else:
            conversation = [to_message(m) for m in messages]
        if system is not None:
            conversation.insert(0, inference_pb2.ChatMessage(role=inference_pb2.CHAT_ROLE_SYSTEM, content=system))
        return inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=conversation))
