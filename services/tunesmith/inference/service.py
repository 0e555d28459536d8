"""InferenceService: load merged models (and adapters) into a backend and generate.

Backend choice is explicit: a requested backend must be usable here or the call fails with the
reason; with none requested, vLLM serves when it is installed and usable, otherwise the
transformers backend serves and the reason is reported (ServedModel.backend_reason, logs).
"""
from __future__ import annotations

import logging
import threading

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.core.checks import check_adapter_base, check_model
from tunesmith.core.formats.adapter import peft_config, peft_kind
from tunesmith.core.contracts import AdapterLimits, Sampling
from tunesmith.core.dtypes import dtype_enum, dtype_name
from tunesmith.core.errors import (AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted,
                                   TunesmithError, Violations)
from tunesmith.core.unimplemented import refuse_unimplemented
from tunesmith.core.validation import SERVED_NAME, check_enum, check_float, check_int, check_strings
from tunesmith.core.records import artifact_ref
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status

log = logging.getLogger("tunesmith.inference")
PREFERENCE = ("vllm", "transformers")


MAX_PROMPTS = 256
#: Generation requests (gRPC and HTTP together) in flight before new ones are refused with
#: RESOURCE_EXHAUSTED / HTTP 429 (back-pressure instead of unbounded memory).
DEFAULT_MAX_QUEUE = 64
MIN_REPETITION_PENALTY = 0.01
MAX_PROMPT_CHARS = 1_000_000
#: GenerateRequest.top_logprobs at most (OpenAI's limit for chat).
MAX_TOP_LOGPROBS = 20
#: LoadModel adapter_limits: defaults (AdapterLimits()) and the largest values accepted.
MAX_ADAPTERS_LIMIT = 64
MAX_ADAPTER_RANK_LIMIT = 512
#: The suffix of the hidden transformers copy of a base that serves fallback adapters.
FALLBACK_SUFFIX = "@transformers"
_ROLES = {inference_pb2.CHAT_ROLE_SYSTEM: "system", inference_pb2.CHAT_ROLE_USER: "user",
          inference_pb2.CHAT_ROLE_ASSISTANT: "assistant", inference_pb2.CHAT_ROLE_TOOL: "tool"}
_FINISH = {"stop": inference_pb2.FINISH_REASON_STOP, "length": inference_pb2.FINISH_REASON_LENGTH,
           "cancelled": inference_pb2.FINISH_REASON_CANCELLED}


def finish_reason(name: str) -> int:
    """The FinishReason of a backend's finish reason ("stop", "length", "cancelled")."""
    return _FINISH.get(name, inference_pb2.FINISH_REASON_UNSPECIFIED)


def sampling_from(p: inference_pb2.SamplingParams, prefix: str = "sampling") -> Sampling:
    """Sampling settings, every field checked (InvalidArgument listing each bad one)."""
    v = Violations()
    check_int(v, p.max_new_tokens, f"{prefix}.max_new_tokens", 1, 8192, zero_means="128")
    check_float(v, p.temperature, f"{prefix}.temperature", 0.0, 2.0)
    check_float(v, p.top_p, f"{prefix}.top_p", 0.0, 1.0, lo_open=True, zero_means="1.0")
    check_int(v, p.top_k, f"{prefix}.top_k", 0, 1_000_000)
    check_strings(v, p.stop, f"{prefix}.stop", max_items=16)
    check_int(v, p.seed, f"{prefix}.seed", 0, 2**63 - 1)
    # At least MIN_REPETITION_PENALTY: smaller ones overflow the logits in every engine (NaN probabilities).
    check_float(v, p.repetition_penalty, f"{prefix}.repetition_penalty", MIN_REPETITION_PENALTY, 2.0, zero_means="1.0")
    v.raise_if_any()
    return Sampling(max_new_tokens=p.max_new_tokens or 128, temperature=p.temperature, top_p=p.top_p or 1.0,
                    top_k=p.top_k, stop=list(p.stop), seed=p.seed, repetition_penalty=p.repetition_penalty or 1.0)


def prompt_from(p: inference_pb2.Prompt, index: int):
    """A backend prompt (text, or a list of {"role", "content"}) from the proto, checked."""
    where = f"prompts[{index}]"
    kind = p.WhichOneof("kind")
    if kind == "text":
        if len(p.text) > MAX_PROMPT_CHARS:
            raise InvalidArgument(f"at most {MAX_PROMPT_CHARS} characters", field=f"{where}.text")
        return p.text
    if kind == "chat":
        v = Violations()
        v.check(0 < len(p.chat.messages) <= 1024, f"{where}.chat.messages", "a chat prompt needs 1-1024 messages")
        for j, m in enumerate(p.chat.messages):
            v.check(m.role in _ROLES, f"{where}.chat.messages[{j}].role",
                    "must be CHAT_ROLE_SYSTEM, CHAT_ROLE_USER, CHAT_ROLE_ASSISTANT or CHAT_ROLE_TOOL")
            v.check(len(m.content) <= MAX_PROMPT_CHARS, f"{where}.chat.messages[{j}].content",
                    f"at most {MAX_PROMPT_CHARS} characters")
            v.check(bool(m.content.strip()), f"{where}.chat.messages[{j}].content", "is empty")
        v.raise_if_any()
        return [{"role": _ROLES[m.role], "content": m.content} for m in p.chat.messages]
    raise InvalidArgument("each prompt needs text or chat", field=where)


def checked_logprobs(logprobs, backend: str):
    """The Generation's logprobs, or FailedPrecondition when a backend that was asked for them
    returned none (so they are never silently missing)."""
    if logprobs is None:
        raise FailedPrecondition(f"the {backend or 'serving'} backend returned no token log-probabilities",
                                 field="logprobs", code="logprobs_unsupported")
    return logprobs


def logprobs_proto(logprobs) -> list[inference_pb2.TokenLogprob]:
    """TokenLogprob messages of contract TokenLogprobs."""
    return [inference_pb2.TokenLogprob(token=t.token, logprob=t.logprob, token_id=t.token_id, top_logprobs=[
        inference_pb2.TopLogprob(token=tok, logprob=lp, token_id=tid) for tok, lp, tid in t.top]) for t in logprobs]


def _check_name(name: str, field: str) -> None:
    if not SERVED_NAME.match(name or ""):
        raise InvalidArgument("is required: 1-128 characters of letters, digits, '.', '_', ':', '/', '-'", field=field)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, runtime: Runtime, *, default_backend: str = "", max_queue: int | None = None):
        import os

        self.rt = runtime
        self.default_backend = default_backend
        self.max_queue = max_queue or int(os.environ.get("TUNESMITH_INFERENCE_MAX_QUEUE") or DEFAULT_MAX_QUEUE)
        self.in_flight = 0
        self.served: dict[str, tuple[inference_pb2.ServedModel, object]] = {}
        #: "<base>@transformers" -> the transformers copy serving that base's fallback adapters.
        self.fallbacks: dict[str, object] = {}
        self.lock = threading.Lock()
        # Loads run on background threads (LoadModel returns at once) and one at a time:
        # concurrent from_pretrained calls share transformers' global init state and break.
        self.load_lock = threading.Lock()

    def choose_backend(self, requested: str) -> tuple[object, str]:
        """The backend to use and why, or FailedPrecondition naming what is missing."""
        backends = self.rt.registry.all("inference_backends")
        if requested:
            backend = self.rt.registry.require("inference_backends", requested, "backend")
            ok, reason = backend.available()
            if not ok:
                raise FailedPrecondition(f"inference backend {requested!r} is not usable here: {reason}", field="backend")
            return backend, f"{requested} requested"
        skipped = []
        for name in PREFERENCE + tuple(sorted(set(backends) - set(PREFERENCE))):
            if name not in backends:
                continue
            ok, reason = backends[name].available()
            if ok:
                why = f"{name} is the preferred backend available" if not skipped else \
                      f"{'; '.join(skipped)}: serving with {name}"
                return backends[name], why
            skipped.append(f"{name} unavailable ({reason})")
        raise FailedPrecondition("no inference backend is usable here: " + "; ".join(skipped), field="backend")

    def _get(self, name: str, field: str = "model", *, ready: bool = True):
        """(ServedModel, loaded) by name; NotFound if unknown; FailedPrecondition if `ready` is
        asked and it is still loading or failed."""
        with self.lock:
            if name not in self.served:
                known = ", ".join(sorted(self.served)) or "none loaded"
                raise NotFound(f"no served model named {name!r} (served: {known}); call LoadModel first", field=field)
            served, loaded = self.served[name]
            if ready and served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
                raise FailedPrecondition(f"{name!r} is still loading; poll GetServedModel until READY", field=field,
                                         code="model_loading")
            if ready and served.state == inference_pb2.SERVED_MODEL_STATE_FAILED:
                raise FailedPrecondition(f"{name!r} failed to load: {served.error.message}", field=field,
                                         code="model_load_failed")
            return served, loaded

    # -- RPCs ------------------------------------------------------------------------------
    def GetStatus(self, request, context):
        info = {"storage": self.rt.storage.root_uri}
        for name, backend in self.rt.registry.all("inference_backends").items():
            ok, reason = backend.available()
            info[f"backend.{name}"] = "available" if ok else f"unavailable: {reason}"
        with self.lock:
            info["served"] = ", ".join(sorted(self.served))
        return service_status("inference", self.rt.registry, info)

    def LoadModel(self, request, context):
        """Checks the request, then loads on a background thread: returns at once in LOADING."""
        _check_name(request.name, "name")
        v = Violations()
        v.check(bool(request.model), "model", "is required: a model-store name or a model artifact URI")
        check_enum(v, common_pb2.Dtype, request.dtype, "dtype")
        check_int(v, request.max_model_len, "max_model_len", 0, 1 << 20)
        limits = request.adapter_limits
        check_int(v, limits.max_adapters, "adapter_limits.max_adapters", 0, MAX_ADAPTERS_LIMIT,
                  zero_means=str(AdapterLimits.max_adapters))
        check_int(v, limits.max_rank, "adapter_limits.max_rank", 0, MAX_ADAPTER_RANK_LIMIT,
                  zero_means=str(AdapterLimits.max_rank))
        if request.HasField("adapter_limits") and not request.enable_adapters:
            v.add("adapter_limits", "limits adapters, so it needs enable_adapters")
        v.raise_if_any()
        check_model(self.rt.models, request.model, "model")
        backend, reason = self.choose_backend(request.backend or self.default_backend)
        served = inference_pb2.ServedModel(name=request.name, kind="model", backend=backend.name,
                                           backend_reason=reason, dtype=request.dtype, model=request.model,
                                           state=inference_pb2.SERVED_MODEL_STATE_LOADING)
        if request.enable_adapters:
            served.adapter_limits.max_adapters = limits.max_adapters or AdapterLimits.max_adapters
            served.adapter_limits.max_rank = limits.max_rank or AdapterLimits.max_rank
        with self.lock:
            if request.name in self.served:
                raise AlreadyExists(f"something is already served as {request.name!r}; unload it first", field="name")
            self.served[request.name] = (served, None)
        log.info("loading model", extra={"model_name": request.name, "backend": backend.name, "reason": reason})
        threading.Thread(target=self._load, args=(served, request, backend), name=f"load-{request.name}",
                         daemon=True).start()
        return self._copy(served)

    def _load(self, served: inference_pb2.ServedModel, request, backend) -> None:
        try:
            entry = self.rt.models.get(request.model)
            path = self.rt.storage.resolve(entry.artifact.uri)
            with self.load_lock:  # one load at a time: transformers' from_pretrained is not thread-safe
                loaded = backend.load(str(path), dtype=dtype_name(request.dtype, ""),
                                      max_model_len=request.max_model_len, enable_adapters=request.enable_adapters,
                                      adapter_limits=AdapterLimits(served.adapter_limits.max_adapters,
                                                                   served.adapter_limits.max_rank)
                                      if request.enable_adapters else None)
        except Exception as exc:  # noqa: BLE001 - a failed load fails the served model, not the service
            known = isinstance(exc, TunesmithError)
            if not known:
                log.exception("loading a model failed", extra={"model_name": served.name})
            with self.lock:
                served.state = inference_pb2.SERVED_MODEL_STATE_FAILED
                served.error.CopyFrom(common_pb2.JobError(
                    code=exc.code if known else "load_failed",
                    message=str(exc) if known else f"{type(exc).__name__}: {exc}", field=(exc.field or "") if known else ""))
            return
        with self.lock:
            served.artifact.CopyFrom(artifact_ref(entry.artifact))
            served.dtype = dtype_enum(loaded.dtype)
            served.state = inference_pb2.SERVED_MODEL_STATE_READY
            current = self.served.get(served.name)
            if current is not None and current[0] is served:
                self.served[served.name] = (served, loaded)
                return
        loaded.close()  # unloaded while loading

    @staticmethod
    def _copy(served: inference_pb2.ServedModel) -> inference_pb2.ServedModel:
        out = inference_pb2.ServedModel()
        out.CopyFrom(served)
        return out

    def GetServedModel(self, request, context):
        served, _ = self._get(request.name, "name", ready=False)
        with self.lock:
            return self._copy(served)

    def UnloadModel(self, request, context):
        served, loaded = self._get(request.name, "name", ready=False)
        if served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
            raise FailedPrecondition(f"{request.name!r} is still loading; unload it once it is READY or FAILED",
                                     field="name", code="model_loading")
        if served.kind == "adapter":
            raise FailedPrecondition(f"{request.name!r} is an adapter; use UnloadAdapter", field="name")
        with self.lock:
            adapters = sorted(n for n, (s, _) in self.served.items() if s.kind == "adapter" and s.base == request.name)
            if adapters:
                raise FailedPrecondition(f"adapters {adapters} are served on {request.name!r}; unload them first",
                                         field="name")
            self.served.pop(request.name, None)
            fallback = self.fallbacks.pop(request.name + FALLBACK_SUFFIX, None)
        for model in (loaded, fallback):
            if model is not None:  # None: it failed to load, or has no fallback copy
                model.close()
        return inference_pb2.UnloadModelResponse()

    def LoadAdapter(self, request, context):
        """Checks, in order: the name, the artifact, the base (served, READY, a model), the
        adapter was trained on that base, the base's adapter limits (count, rank), and that the
        base's engine serves the adapter's PEFT method (else a transformers fallback when
        allow_fallback). Then loads it: READY on return."""
        _check_name(request.name, "name")
        if not request.adapter.uri:
            raise InvalidArgument("is required: the adapter artifact (artifact://adapter/...)", field="adapter.uri")
        base_served, loaded = self._get(request.base, "base")
        if base_served.kind != "model":
            raise FailedPrecondition(f"{request.base!r} is an adapter; adapters go on a model", field="base")
        with self.lock:
            if request.name in self.served:
                raise AlreadyExists(f"something is already served as {request.name!r}", field="name")
        try:
            adapter_dir = self.rt.storage.resolve(request.adapter.uri)
        except (InvalidArgument, NotFound) as exc:
            raise type(exc)(exc.message, field="adapter.uri") from None
        config = peft_config(adapter_dir, "adapter.uri")
        check_adapter_base(self.rt.models, adapter_dir, request.adapter.uri, base_served.model, "adapter.uri",
                           model_uri=base_served.artifact.uri, unknown_ok=True)
        peft_type, rank = peft_kind(config)
        self._check_adapter_limits(base_served, request, rank)
        backend_name, reason = base_served.backend, ""
        unsupported = loaded.adapter_unsupported(config)
        if not unsupported and base_served.backend == "transformers":
            self._check_one_peft_type(request.base, peft_type)
        if unsupported:
            if not request.allow_fallback:
                raise FailedPrecondition(
                    f"{base_served.backend} cannot serve this adapter: {unsupported}; set allow_fallback to serve it "
                    f"on a transformers copy of {request.base!r}", field="adapter.uri",
                    code="adapter_unsupported_by_backend")
            loaded = self._fallback_copy(base_served)
            backend_name = "transformers"
            reason = f"{unsupported}: served on a transformers copy of {request.base!r} (allow_fallback)"
        try:
            with self.load_lock:
                loaded.load_adapter(request.name, str(adapter_dir))
        except (InvalidArgument, NotFound, FailedPrecondition) as exc:  # the backend names its own argument
            raise type(exc)(exc.message, field="adapter.uri", code=exc.code) from None
        served = inference_pb2.ServedModel(name=request.name, kind="adapter", base=request.base,
                                           backend=backend_name, backend_reason=reason, artifact=request.adapter,
                                           peft_type=peft_type, rank=rank,
                                           state=inference_pb2.SERVED_MODEL_STATE_READY)
        with self.lock:
            self.served[request.name] = (served, loaded)
        return served

    def _check_adapter_limits(self, base_served, request, rank: int) -> None:
        limits = base_served.adapter_limits
        if not base_served.HasField("adapter_limits"):
            raise FailedPrecondition(f"{request.base!r} was loaded without enable_adapters; reload it with "
                                     "enable_adapters to serve adapters on it", field="base")
        if rank > limits.max_rank:
            raise InvalidArgument(f"the adapter's rank is {rank}, above {request.base!r}'s limit of {limits.max_rank} "
                                  "(LoadModel adapter_limits.max_rank)", field="adapter.uri", code="adapter_rank_too_large")
        with self.lock:
            count = sum(1 for s, _ in self.served.values() if s.kind == "adapter" and s.base == request.base)
        if count >= limits.max_adapters:
            raise ResourceExhausted(f"{request.base!r} already serves {count} adapters, its limit "
                                    "(LoadModel adapter_limits.max_adapters); unload one first", field="base",
                                    code="adapter_limit")

    def _check_one_peft_type(self, base: str, peft_type: str) -> None:
        """peft holds adapters of one PEFT type per model ("Cannot combine adapters with different
        peft types"): FailedPrecondition naming the ones in the way."""
        family = peft_type.split("+")[0]
        with self.lock:
            others = sorted((s.name, s.peft_type) for s, _ in self.served.values()
                            if s.kind == "adapter" and s.base == base and not s.backend_reason
                            and s.peft_type.split("+")[0] != family)
        if others:
            raise FailedPrecondition(
                f"peft serves adapters of one PEFT type per model: {base!r} has "
                + ", ".join(f"{n} ({t})" for n, t in others)
                + f" loaded, and this adapter is {peft_type}; unload those, or serve it on another copy of the base",
                field="adapter.uri", code="adapter_type_conflict")

    def _fallback_copy(self, base_served):
        """The transformers copy of a served base that fallback adapters run on (loaded once, on
        first use; dropped with the base)."""
        key = base_served.name + FALLBACK_SUFFIX
        with self.lock:
            copy = self.fallbacks.get(key)
        if copy is not None:
            return copy
        backend, _ = self.choose_backend("transformers")
        path = self.rt.storage.resolve(base_served.artifact.uri)
        with self.load_lock:
            copy = backend.load(str(path), dtype=dtype_name(base_served.dtype, ""), enable_adapters=True)
        with self.lock:
            self.fallbacks[key] = copy
        log.info("loaded a transformers copy for fallback adapters", extra={"model_name": base_served.name})
        return copy

    def UnloadAdapter(self, request, context):
        served, loaded = self._get(request.name, "name")
        if served.kind != "adapter":
            raise FailedPrecondition(f"{request.name!r} is a model, not an adapter; use UnloadModel", field="name")
        loaded.unload_adapter(request.name)
        with self.lock:
            self.served.pop(request.name, None)
        return inference_pb2.UnloadModelResponse()

    def ListModels(self, request, context):
        with self.lock:
            return inference_pb2.ListServedModelsResponse(models=[self._copy(s) for s, _ in self.served.values()])

    def admit(self):
        """Context manager holding one of max_queue request slots; ResourceExhausted when none
        is free (the request is refused before any work, and everyone else keeps being served)."""
        import contextlib

        @contextlib.contextmanager
        def slot():
            with self.lock:
                if self.in_flight >= self.max_queue:
                    raise ResourceExhausted(f"{self.in_flight} generation requests are in flight, the limit is "
                                            f"{self.max_queue}; retry later", code="queue_full")
                self.in_flight += 1
            try:
                yield
            finally:
                with self.lock:
                    self.in_flight -= 1

        return slot()

    def target(self, name: str, sampling: Sampling | None = None):
        """(loaded model, adapter name or None, ServedModel) that a request for `name` runs on;
        NotFound / FailedPrecondition naming `model`. With `sampling`, InvalidArgument when its
        max_new_tokens leaves no room for a prompt in the model's context (field
        sampling.max_new_tokens; a prompt that then does not fit cuts the completion short)."""
        served, loaded = self._get(name)
        limit = loaded.max_model_len
        if sampling is not None and sampling.max_new_tokens >= limit:
            raise InvalidArgument(f"is {sampling.max_new_tokens}, but {name!r} has a context of {limit} tokens, "
                                  "prompt and completion together", field="sampling.max_new_tokens",
                                  code="context_length_exceeded")
        return loaded, (name if served.kind == "adapter" else None), served

    def checked_request(self, request, *, stream: bool):
        """(prompts, sampling) of a Generate request, every field checked before any work (the
        HTTP API calls this too, so both APIs refuse the same things)."""
        refuse_unimplemented(request)
        if stream and len(request.prompts) != 1:
            raise InvalidArgument("GenerateStream takes exactly one prompt", field="prompts")
        if not 0 < len(request.prompts) <= MAX_PROMPTS:
            raise InvalidArgument(f"1 to {MAX_PROMPTS} prompts are required, got {len(request.prompts)}", field="prompts")
        prompts = [prompt_from(p, i) for i, p in enumerate(request.prompts)]
        sampling = sampling_from(request.sampling)
        v = Violations()
        check_int(v, request.top_logprobs, "top_logprobs", 0, MAX_TOP_LOGPROBS)
        if request.top_logprobs and not request.logprobs:
            v.add("top_logprobs", "needs logprobs")
        v.raise_if_any()
        if request.logprobs:
            sampling.logprobs = request.top_logprobs
        return prompts, sampling

    def Generate(self, request, context):
        prompts, sampling = self.checked_request(request, stream=False)
        loaded, adapter, served = self.target(request.model, sampling)
        with self.admit():
            results = loaded.generate(prompts, sampling, adapter=adapter)
        completions = []
        for g in results:
            c = inference_pb2.Completion(text=g.text, prompt_tokens=g.prompt_tokens,
                                         completion_tokens=g.completion_tokens, finish_reason=finish_reason(g.finish_reason))
            if sampling.logprobs is not None:
                c.logprobs.extend(logprobs_proto(checked_logprobs(g.logprobs, served.backend)))
                c.token_logprobs.extend(t.logprob for t in g.logprobs)
            completions.append(c)
        return inference_pb2.GenerateResponse(model=request.model, backend=served.backend, completions=completions)

    def GenerateStream(self, request, context):
        (prompt,), sampling = self.checked_request(request, stream=True)
        loaded, adapter, served = self.target(request.model, sampling)
        with self.admit():
            yield from self._stream(loaded, prompt, sampling, adapter, context, served.backend)

    def _stream(self, loaded, prompt, sampling, adapter, context, backend=""):
        stream = loaded.stream(prompt, sampling, adapter=adapter)
        count = sent = 0
        want = sampling.logprobs is not None
        try:
            for delta in stream:
                if not context.is_active():
                    return
                count += 1
                chunk = inference_pb2.GenerateChunk(delta=delta, completion_tokens=count)
                if want:
                    new = stream.logprobs[sent:]
                    sent += len(new)
                    chunk.logprobs.extend(logprobs_proto(new))
                yield chunk
            # Once exhausted, the backend's stream knows the real token count and why it ended.
            final = stream.generation
            last = inference_pb2.GenerateChunk(
                finish_reason=finish_reason(final.finish_reason if final else "stop"),
                completion_tokens=final.completion_tokens if final else count)
            if want:
                last.logprobs.extend(logprobs_proto(checked_logprobs(final.logprobs if final else None,
                                                                     backend)[sent:]))
            yield last
        finally:
            stream.close()  # a cancelled call stops generation

    def close(self) -> None:
        with self.lock:
            items = list(self.served.values()) + [(None, m) for m in self.fallbacks.values()]
            self.served.clear()
            self.fallbacks.clear()
        for _, loaded in items:
            if loaded is None:
                continue
            try:
                loaded.close()
            except Exception:  # noqa: BLE001
                log.exception("closing a model failed")


def add_to_server(servicer, server) -> None:
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
