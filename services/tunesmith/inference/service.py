"""InferenceService: load merged models (and adapters) into a backend and generate.

Backend choice is explicit: a requested backend must be usable here or the call fails with the
reason; with none requested, vLLM serves when it is installed and usable, otherwise the
transformers backend serves and the reason is reported (ServedModel.backend_reason, logs).
"""
from __future__ import annotations

import logging
import threading

from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.core.contracts import Sampling
from tunesmith.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tunesmith.core.records import artifact_ref
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status

log = logging.getLogger("tunesmith.inference")
PREFERENCE = ("vllm", "transformers")


def sampling_from(p: inference_pb2.SamplingParams) -> Sampling:
    if p.temperature < 0:
        raise InvalidArgument("temperature must be >= 0", field="sampling.temperature")
    if p.max_new_tokens < 0:
        raise InvalidArgument("max_new_tokens must be >= 0", field="sampling.max_new_tokens")
    return Sampling(max_new_tokens=p.max_new_tokens or 128, temperature=p.temperature, top_p=p.top_p or 1.0,
                    top_k=p.top_k, stop=list(p.stop), seed=p.seed, repetition_penalty=p.repetition_penalty or 1.0)


def prompt_from(p: inference_pb2.Prompt, index: int):
    kind = p.WhichOneof("kind")
    if kind == "text":
        return p.text
    if kind == "chat":
        if not p.chat.messages:
            raise InvalidArgument("a chat prompt needs at least one message", field=f"prompts[{index}].chat")
        return [{"role": m.role, "content": m.content} for m in p.chat.messages]
    raise InvalidArgument("each prompt needs text or chat", field=f"prompts[{index}]")


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, runtime: Runtime, *, default_backend: str = ""):
        self.rt = runtime
        self.default_backend = default_backend
        self.served: dict[str, tuple[inference_pb2.ServedModel, object]] = {}
        self.lock = threading.Lock()

    def choose_backend(self, requested: str) -> tuple[object, str]:
        """The backend to use and why, or FailedPrecondition naming what is missing."""
        backends = self.rt.registry.all("inference_backends")
        if requested:
            backend = self.rt.registry.get("inference_backends", requested)
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

    def _get(self, name: str, field: str = "model"):
        with self.lock:
            if name not in self.served:
                known = ", ".join(sorted(self.served)) or "none loaded"
                raise NotFound(f"no served model named {name!r} (served: {known}); call LoadModel first", field=field)
            return self.served[name]

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
        if not request.name:
            raise InvalidArgument("name is required (the name to serve it under)", field="name")
        if not request.model:
            raise InvalidArgument("model is required (a model-store name or a model artifact URI)", field="model")
        with self.lock:
            if request.name in self.served:
                raise AlreadyExists(f"a model is already served as {request.name!r}; unload it first", field="name")
        try:
            path = self.rt.models.local_path(request.model)
            entry_artifact = (self.rt.storage.artifact(request.model) if request.model.startswith("file://")
                              else self.rt.models.get(request.model).artifact)
        except NotFound as exc:
            raise NotFound(exc.message, field="model") from None
        backend, reason = self.choose_backend(request.backend or self.default_backend)
        log.info("loading model", extra={"model_name": request.name, "backend": backend.name, "reason": reason})
        loaded = backend.load(str(path), dtype=request.dtype, max_model_len=request.max_model_len,
                              enable_adapters=request.enable_adapters)
        served = inference_pb2.ServedModel(name=request.name, kind="model", backend=backend.name,
                                           backend_reason=reason, dtype=request.dtype or getattr(loaded, "dtype", ""))
        served.artifact.CopyFrom(artifact_ref(entry_artifact))
        with self.lock:
            if request.name in self.served:  # lost a race with another LoadModel
                loaded.close()
                raise AlreadyExists(f"a model is already served as {request.name!r}", field="name")
            self.served[request.name] = (served, loaded)
        return served

    def UnloadModel(self, request, context):
        served, loaded = self._get(request.name, "name")
        if served.kind == "adapter":
            raise FailedPrecondition(f"{request.name!r} is an adapter; use UnloadAdapter", field="name")
        with self.lock:
            adapters = sorted(n for n, (s, _) in self.served.items() if s.kind == "adapter" and s.base == request.name)
            if adapters:
                raise FailedPrecondition(f"adapters {adapters} are served on {request.name!r}; unload them first",
                                         field="name")
            self.served.pop(request.name, None)
        loaded.close()
        return inference_pb2.UnloadModelResponse()

    def LoadAdapter(self, request, context):
        base_served, loaded = self._get(request.base, "base")
        if not request.name:
            raise InvalidArgument("name is required", field="name")
        if base_served.kind != "model":
            raise FailedPrecondition(f"{request.base!r} is an adapter; adapters go on a model", field="base")
        with self.lock:
            if request.name in self.served:
                raise AlreadyExists(f"something is already served as {request.name!r}", field="name")
        adapter_dir = self.rt.storage.local_path(request.adapter.uri)
        loaded.load_adapter(request.name, str(adapter_dir))
        served = inference_pb2.ServedModel(name=request.name, kind="adapter", base=request.base,
                                           backend=base_served.backend, artifact=request.adapter)
        with self.lock:
            self.served[request.name] = (served, loaded)
        return served

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
            return inference_pb2.ListServedModelsResponse(models=[s for s, _ in self.served.values()])

    def _target(self, name: str):
        served, loaded = self._get(name)
        return loaded, (name if served.kind == "adapter" else None), served

    def Generate(self, request, context):
        loaded, adapter, served = self._target(request.model)
        if not request.prompts:
            raise InvalidArgument("at least one prompt is required", field="prompts")
        prompts = [prompt_from(p, i) for i, p in enumerate(request.prompts)]
        kwargs = {"adapter": adapter} if adapter else {}
        results = loaded.generate(prompts, sampling_from(request.sampling), **kwargs)
        return inference_pb2.GenerateResponse(
            model=request.model, backend=served.backend,
            completions=[inference_pb2.Completion(text=g.text, prompt_tokens=g.prompt_tokens,
                                                  completion_tokens=g.completion_tokens,
                                                  finish_reason=g.finish_reason) for g in results])

    def GenerateStream(self, request, context):
        loaded, adapter, _ = self._target(request.model)
        if len(request.prompts) != 1:
            raise InvalidArgument("GenerateStream takes exactly one prompt", field="prompts")
        prompt = prompt_from(request.prompts[0], 0)
        kwargs = {"adapter": adapter} if adapter else {}
        stream = loaded.stream(prompt, sampling_from(request.sampling), **kwargs)
        count = 0
        try:
            for delta in stream:
                if not context.is_active():
                    return
                count += 1
                yield inference_pb2.GenerateChunk(delta=delta, completion_tokens=count)
            # Once exhausted, the backend's stream knows the real token count and why it ended.
            final = getattr(stream, "generation", None)
            yield inference_pb2.GenerateChunk(
                finish_reason=final.finish_reason if final else "stop",
                completion_tokens=final.completion_tokens if final else count)
        finally:
            stream.close()  # a cancelled call stops generation

    def close(self) -> None:
        with self.lock:
            items = list(self.served.values())
            self.served.clear()
        for _, loaded in items:
            try:
                loaded.close()
            except Exception:  # noqa: BLE001
                log.exception("closing a model failed")


def add_to_server(servicer, server) -> None:
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
