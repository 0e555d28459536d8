"""The inference service's OpenAI-compatible HTTP API: GET /v1/models, POST /v1/completions,
POST /v1/chat/completions (unary and SSE streaming, ending "data: [DONE]").

It runs in the inference service's own process (uvicorn on a thread, `HttpServer`) and calls
the same InferenceServicer, so it shares the loaded models with the gRPC API: there is no
second copy of an engine.

- `model` is a served model's name, an adapter's served name, or "base:adapter".
- Supported parameters: max_tokens, temperature (OpenAI's default 1.0), top_p, stop (a string or
  up to 16), n, seed, stream, stream_options.include_usage, logprobs (completions:
  0-5 alternatives; chat: true, with top_logprobs 0-20), user (ignored).
- Parameters OpenAI defines that are not built here (echo, suffix, logit_bias, tools,
  response_format, presence/frequency penalties other than 0, best_of other than n) are refused
  with 400 naming the parameter, never ignored; so is any unknown parameter.
- Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 for a bad
  request, 404 for an unknown model, 409 for a model still loading or failed, 500 otherwise.
"""

import dataclasses
import json
import logging
import re
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from tunesmith.api.inference.v1 import inference_pb2
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, TunesmithError
from tunesmith.inference.service import checked_logprobs

log = logging.getLogger("tunesmith.inference.http")

DEFAULT_HTTP_PORT = 8000
#: OpenAI's defaults where the request leaves a parameter out.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TOKENS = {"completions": 16, "chat": 256}
MAX_N = 16
#: OpenAI's limit on the completions API's `logprobs` (alternatives per token).
MAX_COMPLETION_LOGPROBS = 5
#: Our SamplingParams field -> the OpenAI parameter it comes from (for error messages).
_PARAM = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stop": "stop",
          "seed": "seed"}
_COMMON = {"model", "max_tokens", "temperature", "top_p", "stop", "n", "seed", "stream", "stream_options", "user",
           "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}
_ALLOWED = {"completions": _COMMON | {"prompt", "echo", "suffix", "best_of"},
            "chat": _COMMON | {"messages", "top_logprobs", "tools", "tool_choice", "response_format",
                               "max_completion_tokens", "parallel_tool_calls"}}
_ROLES = {"system": inference_pb2.CHAT_ROLE_SYSTEM, "user": inference_pb2.CHAT_ROLE_USER,
          "assistant": inference_pb2.CHAT_ROLE_ASSISTANT, "tool": inference_pb2.CHAT_ROLE_TOOL}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _from_domain(exc: TunesmithError, param_map: dict[str, str] | None = None) -> ApiError:
    field = exc.field or None
    if field:  # the gRPC request's field paths, as the OpenAI request names them
        field = re.sub(r"^prompts\[\d+\]\.chat\.", "", field)
        field = re.sub(r"^prompts\[\d+\]\.text$", "prompt", field)
    if field and param_map:
        field = param_map.get(field.split(".")[-1], field)
    message = exc.message if not field or exc.message.startswith(field) else f"{field}: {exc.message}"
    if isinstance(exc, ResourceExhausted):
        return ApiError(429, exc.message, code=exc.code or "queue_full", kind="rate_limit_error")
    if isinstance(exc, NotFound):
        return ApiError(404, message, param=field, code=exc.code or "model_not_found")
    if isinstance(exc, FailedPrecondition):
        return ApiError(409, message, param=field, code=exc.code or "failed_precondition")
    if isinstance(exc, InvalidArgument):
        return ApiError(400, message, param=field, code=exc.code or "invalid_value")
    return ApiError(500, message, param=field, code=exc.code, kind="server_error")


# --- request parsing ---------------------------------------------------------------------------
def _refuse_unbuilt(body: dict[str, Any], kind: str) -> None:
    unknown = sorted(set(body) - _ALLOWED[kind])
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r}", param=unknown[0], code="unknown_parameter")
    unbuilt = {"echo": bool, "suffix": bool, "logit_bias": bool,
               "tools": bool, "tool_choice": lambda v: v is not None,
               "response_format": bool, "parallel_tool_calls": lambda v: v is not None,
               "presence_penalty": lambda v: v not in (None, 0, 0.0),
               "frequency_penalty": lambda v: v not in (None, 0, 0.0),
               "best_of": lambda v: v is not None and v != body.get("n", 1)}
    for key, is_set in unbuilt.items():
        if key in body and is_set(body[key]):
            raise ApiError(400, f"{key!r} is not supported by this server yet; leave it unset", param=key,
                           code="unsupported_parameter")


def _int(body, key, default):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key!r} must be an integer, got {json.dumps(value)}", param=key, code="invalid_type")
    return value


def _number(body, key, default):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{key!r} must be a number, got {json.dumps(value)}", param=key, code="invalid_type")
    return float(value)


def sampling_params(body: dict[str, Any], kind: str) -> inference_pb2.SamplingParams:
    """The SamplingParams of an OpenAI request body (checked later by the gRPC servicer's rules)."""
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) for s in stops):
        raise ApiError(400, "'stop' must be a string or a list of strings", param="stop", code="invalid_type")
    max_tokens = _int(body, "max_completion_tokens", None) if kind == "chat" else None
    max_tokens = _int(body, "max_tokens", max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS[kind])
    seed = _int(body, "seed", 0)
    if seed < 0:
        raise ApiError(400, "'seed' must be >= 0", param="seed", code="invalid_value")
    return inference_pb2.SamplingParams(max_new_tokens=max_tokens, temperature=_number(body, "temperature",
                                                                                      DEFAULT_TEMPERATURE),
                                        top_p=_number(body, "top_p", 1.0), stop=stops, seed=seed)


def logprob_request(body: dict[str, Any], kind: str) -> tuple[bool, int]:
    """(logprobs?, top alternatives) of a request: completions take `logprobs` = 0-5 (the
    number of alternatives), chat takes `logprobs` = true with `top_logprobs` = 0-20."""
    if kind == "completions":
        value = body.get("logprobs")
        if value is None:
            return False, 0
        n = _int(body, "logprobs", 0)
        if not 0 <= n <= MAX_COMPLETION_LOGPROBS:
            raise ApiError(400, f"'logprobs' must be in [0, {MAX_COMPLETION_LOGPROBS}]", param="logprobs",
                           code="invalid_value")
        return True, n
    want = body.get("logprobs")
    if want is not None and not isinstance(want, bool):
        raise ApiError(400, "'logprobs' must be a boolean", param="logprobs", code="invalid_type")
    top = _int(body, "top_logprobs", 0)
    if body.get("top_logprobs") is not None and not want:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs", code="invalid_value")
    return bool(want), top


def logprobs_json(logprobs, kind: str, offset: int = 0) -> dict[str, Any] | None:
    """An OpenAI choice's `logprobs` from contract TokenLogprobs (None when not asked). offset:
    characters of completion text before these tokens (completions' text_offset)."""
    if logprobs is None:
        return None
    if kind == "chat":
        return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode("utf-8")),
                             "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}
                                              for tok, lp, _ in t.top]} for t in logprobs], "refusal": None}
    offsets = []
    for t in logprobs:
        offsets.append(offset)
        offset += len(t.token)
    return {"tokens": [t.token for t in logprobs], "token_logprobs": [t.logprob for t in logprobs],
            "top_logprobs": [{tok: lp for tok, lp, _ in t.top} for t in logprobs], "text_offset": offsets}


def _prompts(body: dict[str, Any], kind: str) -> list[inference_pb2.Prompt]:
    if kind == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return [inference_pb2.Prompt(text=prompt)]
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            return [inference_pb2.Prompt(text=p) for p in prompt]
        raise ApiError(400, "'prompt' is required: a string or a list of strings (token ids are not supported)",
                       param="prompt", code="invalid_value")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' is required: a non-empty list of {role, content}", param="messages",
                       code="invalid_value")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {sorted(_ROLES)}", param=f"messages[{i}].role",
                           code="invalid_value")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}] parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise ApiError(400, "only text content parts are supported", param=f"messages[{i}].content",
                               code="unsupported_parameter")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string", param=f"messages[{i}].content",
                           code="invalid_type")
        out.append(inference_pb2.ChatMessage(role=_ROLES[m["role"]], content=content))
    return [inference_pb2.Prompt(chat=inference_pb2.Conversation(messages=out))]


# --- the app ----------------------------------------------------------------------------------
class OpenAIApi:
    """The request handling, independent of the ASGI app (which only routes and serialises)."""

    def __init__(self, servicer):
        self.servicer = servicer

    def resolve(self, model: Any) -> str:
        """The served name a request's `model` means: a served name, or "base:adapter"."""
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required: a served model's name", param="model", code="invalid_value")
        with self.servicer.lock:
            served = dict(self.servicer.served)
        if model in served:
            return model
        base, sep, adapter = model.rpartition(":")
        if sep and adapter in served and served[adapter][0].kind == "adapter":
            if served[adapter][0].base != base:
                raise ApiError(404, f"adapter {adapter!r} is served on {served[adapter][0].base!r}, not on {base!r}",
                               param="model", code="model_not_found")
            return adapter
        known = ", ".join(sorted(served)) or "none"
        raise ApiError(404, f"The model {model!r} does not exist (served: {known})", param="model",
                       code="model_not_found")

    def models(self) -> dict[str, Any]:
        with self.servicer.lock:
            items = [s for s, _ in self.servicer.served.values()]
        data = []
        for s in items:
            if s.state != inference_pb2.SERVED_MODEL_STATE_READY:
                continue
            ident = f"{s.base}:{s.name}" if s.kind == "adapter" else s.name
            data.append({"id": ident, "object": "model", "created": 0, "owned_by": "tunesmith",
                         "root": s.base or s.name, "parent": s.base or None})
        return {"object": "list", "data": data}

    def states(self) -> dict[str, str]:
        """Served name -> "LOADING" | "READY" | "FAILED" (models and adapters)."""
        with self.servicer.lock:
            items = [s for s, _ in self.servicer.served.values()]
        return {s.name: inference_pb2.ServedModelState.Name(s.state).removeprefix("SERVED_MODEL_STATE_")
                for s in items}

    def error(self, name: str) -> str:
        with self.servicer.lock:
            entry = self.servicer.served.get(name)
        return entry[0].error.message if entry is not None else ""

    def prepare(self, body: Any, kind: str):
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
        _refuse_unbuilt(body, kind)
        name = self.resolve(body.get("model"))
        n = _int(body, "n", 1)
        if not 1 <= n <= MAX_N:
            raise ApiError(400, f"'n' must be in [1, {MAX_N}]", param="n", code="invalid_value")
        stream = bool(body.get("stream", False))
        prompts = _prompts(body, kind)
        want_logprobs, top = logprob_request(body, kind)
        request = inference_pb2.GenerateRequest(model=name, prompts=[p for p in prompts for _ in range(n)],
                                                sampling=sampling_params(body, kind), logprobs=want_logprobs,
                                                top_logprobs=top)
        try:
            prompts_in, sampling = self.servicer.checked_request(request, stream=stream and n == 1)
            loaded, adapter, served = self.servicer.target(name, sampling)
        except TunesmithError as exc:
            raise _from_domain(exc, _PARAM) from None
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False
        return name, prompts_in, sampling, loaded, adapter, n, include_usage

    def complete(self, body: Any, kind: str, model_label: str | None = None) -> dict[str, Any]:
        name, prompts, sampling, loaded, adapter, n, _ = self.prepare(body, kind)
        try:
            with self.servicer.admit():
                results = loaded.generate(prompts, sampling, adapter=adapter)
        except TunesmithError as exc:
            raise _from_domain(exc, _PARAM) from None
        created = int(time.time())
        choices = []
        for i, g in enumerate(results):
            logprobs = None
            if sampling.logprobs is not None:
                try:
                    logprobs = logprobs_json(checked_logprobs(g.logprobs, loaded.backend), kind)
                except TunesmithError as exc:
                    raise _from_domain(exc) from None
            if kind == "chat":
                choices.append({"index": i, "message": {"role": "assistant", "content": g.text},
                                "finish_reason": _finish(g.finish_reason), "logprobs": logprobs})
            else:
                choices.append({"index": i, "text": g.text, "finish_reason": _finish(g.finish_reason),
                                "logprobs": logprobs})
        prompt_tokens = sum(g.prompt_tokens for g in results[::n])
        completion_tokens = sum(g.completion_tokens for g in results)
        return {"id": _id(kind), "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": created, "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def stream(self, body: Any, kind: str) -> Iterator[str]:
        """SSE lines for one streamed request (checked before the first line is sent). With n > 1
        the n choices stream together, each chunk naming its choice `index`; with a seed, choice
        i samples with seed + i (so choices differ, and a seed reproduces the whole response)."""
        _, prompts, sampling, loaded, adapter, n, include_usage = self.prepare(body, kind)
        slot = self.servicer.admit()
        try:  # the slot is taken before the response starts, so a full queue is a plain 429
            slot.__enter__()
        except TunesmithError as exc:
            raise _from_domain(exc, _PARAM) from None
        streams = []
        try:
            for i, prompt in enumerate(prompts):
                each = dataclasses.replace(sampling, seed=sampling.seed + i if sampling.seed else 0)
                streams.append(loaded.stream(prompt, each, adapter=adapter))
        except TunesmithError as exc:
            for stream in streams:
                stream.close()
            slot.__exit__(None, None, None)
            raise _from_domain(exc, _PARAM) from None
        ident, created, model = _id(kind), int(time.time()), body["model"]
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        want = sampling.logprobs is not None
        sent = [0] * len(streams)   # tokens whose logprobs went out, per choice
        chars = [0] * len(streams)  # characters of text before them (completions' text_offset)

        def new_logprobs(i: int, final: bool):
            """The logprobs of choice i's tokens since its last chunk (None when not asked)."""
            if not want:
                return None
            stream = streams[i]
            tokens = stream.logprobs
            if final:
                tokens = checked_logprobs(stream.generation.logprobs if stream.generation else None, loaded.backend)
            tokens = tokens[sent[i]:]
            out = logprobs_json(tokens, kind, chars[i])
            sent[i] += len(tokens)
            chars[i] += sum(len(t.token) for t in tokens)
            return out

        def chunk(i: int, delta: str | None, finish: str | None, first: bool = False, final: bool = False) -> str:
            logprobs = None if first else new_logprobs(i, final)
            if kind == "chat":
                d: dict[str, Any] = {}
                if first:
                    d["role"] = "assistant"
                if delta is not None:
                    d["content"] = delta
                choice = {"index": i, "delta": d, "finish_reason": finish, "logprobs": logprobs}
            else:
                choice = {"index": i, "text": delta or "", "finish_reason": finish, "logprobs": logprobs}
            return _sse({"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]})

        def lines() -> Iterator[str]:
            try:
                if kind == "chat":
                    for i in range(len(streams)):
                        yield chunk(i, "", None, first=True)
                active = list(range(len(streams)))
                while active:  # round robin: the engine generates the choices together
                    for i in list(active):
                        delta = next(streams[i], None)
                        if delta is not None:
                            yield chunk(i, delta, None)
                            continue
                        active.remove(i)
                        final = streams[i].generation
                        yield chunk(i, None if kind == "chat" else "",
                                    _finish(final.finish_reason if final else "stop"), final=True)
                finals = [s.generation for s in streams]
                if include_usage and all(g is not None for g in finals):
                    prompt_tokens = finals[0].prompt_tokens
                    completion_tokens = sum(g.completion_tokens for g in finals)
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
                    yield _sse({"id": ident, "object": obj, "created": created, "model": model, "choices": [],
                                "usage": usage})
                yield "data: [DONE]\n\n"
            finally:
                for stream in streams:
                    stream.close()  # a client that goes away stops its generation

        return _Releasing(lines(), lambda: slot.__exit__(None, None, None))


class _Releasing:
    """An iterator over `lines` that calls `release` exactly once: when exhausted, closed, or
    collected (a response the server never started still gives its queue slot back)."""

    def __init__(self, lines: Iterator[str], release):
        self.lines, self._release, self._done = lines, release, False
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            return next(self.lines)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        try:
            self.lines.close()
        finally:
            self._release()

    def __del__(self):
        self.close()


def _finish(reason: str) -> str:
    return {"stop": "stop", "length": "length"}.get(reason, "stop")


def _id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def _sse(obj: dict[str, Any]) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


def build_app(servicer):
    """The FastAPI app over an InferenceServicer."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    api = OpenAIApi(servicer)
    app = FastAPI(title="Tunesmith inference (OpenAI-compatible)", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("HTTP request failed")
        return JSONResponse(ApiError(500, f"{type(exc).__name__}: {exc}", kind="server_error").body(),
                            status_code=500)

    async def _body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None

    @app.get("/v1/models")
    async def models():
        return api.models()

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        for m in api.models()["data"]:
            if m["id"] == model_id:
                return m
        raise ApiError(404, f"The model {model_id!r} does not exist", param="model", code="model_not_found")

    async def _handle(request: Request, kind: str):
        body = await _body(request)
        if isinstance(body, dict) and body.get("stream"):
            lines = await run_in_threadpool(api.stream, body, kind)

            async def body_lines():
                try:
                    async for line in iterate_in_threadpool(lines):
                        yield line
                finally:
                    # A client that disconnects cancels this generator: stop its generation and
                    # free its queue slot now (synchronously: an await here would be cancelled).
                    lines.close()

            return StreamingResponse(body_lines(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await run_in_threadpool(api.complete, body, kind))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _handle(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _handle(request, "chat")

    @app.get("/health")
    async def health():
        """Liveness: the process serves HTTP (models may still be loading)."""
        return {"status": "SERVING"}

    @app.get("/ready")
    async def ready_all():
        """Readiness of the whole service: 200 when every served model is READY (none loading or
        failed), else 503 with each model's state."""
        states = api.states()
        ok = all(state == "READY" for state in states.values())
        return JSONResponse({"ready": ok, "models": states}, status_code=200 if ok else 503)

    @app.get("/ready/{name:path}")
    async def ready_one(name: str):
        """Readiness of one served model (a Kubernetes readinessProbe path): 200 when READY, 503
        while LOADING or when FAILED (with the error), 404 when nothing is served by that name."""
        states = api.states()
        if name not in states:
            raise ApiError(404, f"no served model named {name!r}", param="name", code="model_not_found")
        body = {"name": name, "state": states[name], "ready": states[name] == "READY"}
        error = api.error(name)
        if error:
            body["error"] = error
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    return app


class HttpServer:
    """uvicorn serving build_app(servicer) on a thread of this process. port 0: any free port."""

    def __init__(self, servicer, *, host: str = "127.0.0.1", port: int = DEFAULT_HTTP_PORT):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host.strip("[]"), port))
        except OSError as exc:
            self.sock.close()
            raise TunesmithError(f"cannot listen on {host}:{port} for the HTTP API: {exc}", field="http_port") from None
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(build_app(servicer), log_level="warning", lifespan="off",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="inference-http", daemon=True)

    def start(self, timeout: float = 30.0) -> "HttpServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise TunesmithError("the HTTP API did not start", field="http_port")
            time.sleep(0.05)
        log.info("HTTP API serving", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
