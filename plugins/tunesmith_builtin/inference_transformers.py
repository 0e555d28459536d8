"""Built-in inference backend "transformers": batched `generate` with left padding, any device.

Also holds the small helpers both built-in backends share (prompt rendering, stop strings,
sampling checks, the TextStream handle); inference_vllm imports them from here.

Nothing heavy (torch, transformers, peft) is imported at module import.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import queue
import threading
from typing import Any, Callable, Iterator, Sequence

from tunesmith.core.contracts import Generation, LogLikelihood, PromptInput, Sampling
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound
from tunesmith.core.plugins import hookimpl

DEFAULT_MAX_BATCH = 32
#: Temperatures below this sample greedily (vLLM's rule too, its _SAMPLING_EPS): the limit of
#: sampling as the temperature goes to 0, and logits / 1e-300 would overflow to inf (NaN probabilities).
GREEDY_TEMPERATURE = 1e-5
#: The smallest repetition penalty an engine can apply: logits / penalty overflow float32 below it.
MIN_REPETITION_PENALTY = 0.01
_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


# --- helpers shared with inference_vllm ---------------------------------------------------
def normalize_dtype(dtype: str) -> str:
    """'' -> '' (backend default); 'bf16' -> 'bfloat16', ...; 'auto' -> 'auto'; else InvalidArgument."""
    key = (dtype or "").strip().lower()
    if key in ("", "auto"):
        return key
    if key.startswith("torch."):
        key = key[len("torch."):]
    if key not in _DTYPES:
        raise InvalidArgument(f"unknown dtype {dtype!r} (use float32, bfloat16, float16 or auto)", field="dtype")
    return _DTYPES[key]


def check_sampling(sampling: Sampling) -> None:
    """Reject sampling settings no engine can honour (InvalidArgument naming the field)."""
    if sampling.max_new_tokens < 1:
        raise InvalidArgument("must be at least 1", field="max_new_tokens")
    if sampling.temperature < 0:
        raise InvalidArgument("must be >= 0 (0 = greedy)", field="temperature")
    if not 0 < sampling.top_p <= 1:
        raise InvalidArgument("must be in (0, 1]", field="top_p")
    if sampling.top_k < 0:
        raise InvalidArgument("must be >= 0 (0 = off)", field="top_k")
    if not MIN_REPETITION_PENALTY <= sampling.repetition_penalty < float("inf"):
        raise InvalidArgument(f"must be a finite number >= {MIN_REPETITION_PENALTY:g} (1 = off)", field="repetition_penalty")
    if any(not isinstance(s, str) or s == "" for s in sampling.stop):
        raise InvalidArgument("stop strings must be non-empty strings", field="stop")


def render_prompt(tokenizer: Any, prompt: PromptInput) -> list[int]:
    """Token ids for one prompt, by tunesmith.core.tokens.encode_prompt (as the trainer and the
    data service tokenise prompts: the tokenizer's special tokens, no second BOS).

    A str is a completion prompt (e.g. a dataset's rendered prompt). A list of {"role", "content"}
    dicts is a chat: rendered to text with the tokenizer's chat template and
    add_generation_prompt=True, then encoded the same way (a BOS the template writes is not doubled).
    """
    from tunesmith.core.tokens import encode_prompt

    if isinstance(prompt, str):
        return encode_prompt(tokenizer, prompt)
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise InvalidArgument("a prompt is a string or a non-empty list of {role, content} messages", field="prompt")
    for i, msg in enumerate(prompt):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise InvalidArgument(f"message {i} needs string 'role' and 'content'", field="prompt")
    if not getattr(tokenizer, "chat_template", None):
        raise FailedPrecondition("this model's tokenizer has no chat template; send a plain text prompt", field="prompt")
    import jinja2  # what transformers renders chat templates with

    try:
        text = tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in prompt],
            tokenize=False, add_generation_prompt=True,
        )
    except jinja2.TemplateError as exc:  # e.g. raise_exception("roles must alternate ...")
        raise InvalidArgument(f"the model's chat template refused this conversation: {exc}", field="prompt") from None
    return encode_prompt(tokenizer, text)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """(text cut before the earliest stop string, whether one was found)."""
    best = -1
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return (text, False) if best < 0 else (text[:best], True)


def load_tokenizer(model_path: str) -> Any:
    """The folder's tokenizer, left-padding, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise FailedPrecondition(f"tokenizer in {model_path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


class TextStream:
    """The iterator stream() returns: yields text deltas; close() (or breaking out of a for
    loop and dropping it) cancels generation. Once exhausted, `generation` holds the whole
    result (text, token counts, finish_reason) for usage reporting; it is None before that.
    """

    def __init__(self, gen_factory: Callable[["TextStream"], Iterator[str]]):
        self.generation: Generation | None = None
        self._gen = gen_factory(self)

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._gen.close()
        except Exception:
            pass


class StopScanner:
    """Turns a stream of text deltas into deltas that end before the first stop string.

    Holds back the shortest tail that could still be the start of a stop string.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.emitted = 0  # characters of `text` already handed out
        self.text = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add a delta; return the text now safe to hand out ('' when nothing is)."""
        if self.stopped:
            return ""
        self.text += delta
        if not self.stops:
            out = self.text[self.emitted:]
            self.emitted = len(self.text)
            return out
        cut, found = cut_at_stop(self.text, self.stops)
        if found:
            self.stopped = True
            self.text = cut
            out = cut[self.emitted:]
            self.emitted = len(cut)
            return out
        safe = max(self.emitted, len(self.text) - self.hold)
        out = self.text[self.emitted:safe]
        self.emitted = safe
        return out

    def flush(self) -> str:
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out


# --- log-likelihood requests, tokenised as lm-evaluation-harness does (shared with inference_vllm)
#: Logits one loglikelihood forward pass may hold (batch x positions x vocab, float32: 1 GiB).
LOGLIKELIHOOD_LOGITS_BUDGET = 1 << 28


def loglikelihood_prefix_token(tokenizer: Any) -> int:
    """The token an empty context is replaced by: BOS, else EOS (lm-eval HFLM.prefix_token_id)."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise FailedPrecondition("the tokenizer has neither a bos nor an eos token: an empty context cannot be scored")


def _lm_eval_encode(tokenizer: Any, text: str, prefix_text: str) -> list[int]:
    """lm-eval HFLM.tok_encode with add_special_tokens unset: the tokenizer's own special tokens,
    none when the text already starts with the prefix (BOS) token's text."""
    if prefix_text and text.startswith(prefix_text):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def encode_loglikelihood_request(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) for one request, exactly as lm-evaluation-harness 0.4
    (TemplateLM.loglikelihood + HFLM._encode_pair) tokenises it for a causal model:

    - context "": continuation encoded without special tokens, context = [BOS or EOS] (unless the
      continuation already starts with that token: then it is the context);
    - otherwise trailing whitespace of the context moves to the front of the continuation;
      whole = encode(context + continuation), context_ids = encode(context) and continuation_ids =
      whole[len(context_ids):] (the tokenizer's special tokens, none if the text starts with BOS).
      A context that was only whitespace encodes as "" (lm-eval does the same); where that gives
      no tokens (lm-eval asserts there) the context is the empty context's [BOS or EOS].

    The model is then run on context_ids + continuation_ids. InvalidArgument(field="continuation")
    when the continuation is empty or gets no tokens of its own."""
    if not isinstance(context, str) or not isinstance(continuation, str):
        raise InvalidArgument("a request is a (context, continuation) pair of strings", field="requests")
    if continuation == "":
        raise InvalidArgument("the continuation is empty", field="continuation")
    prefix = loglikelihood_prefix_token(tokenizer)
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        ctx = [prefix]
        if cont and cont[0] == prefix:
            ctx, cont = cont[:1], cont[1:]
    else:
        prefix_text = tokenizer.decode(prefix)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = _lm_eval_encode(tokenizer, context + continuation, prefix_text)
        ctx = _lm_eval_encode(tokenizer, context, prefix_text)
        cont = whole[len(ctx):]
        if not ctx:  # a whitespace-only context, with a tokenizer that adds nothing to ""
            ctx = [prefix]
    if not cont:
        raise InvalidArgument(f"the continuation {continuation!r} gets no tokens of its own after the context",
                              field="continuation")
    return ctx, cont


def truncate_loglikelihood_input(ctx: list[int], cont: list[int], max_len: int) -> tuple[list[int], int]:
    """(the model's input ids, how many of them are context): context + continuation cut on the
    left to `max_len` tokens (lm-eval: a warning, not an error). InvalidArgument when the
    continuation alone does not fit."""
    if len(cont) > max_len - 1:
        raise InvalidArgument(f"the continuation is {len(cont)} tokens; this model scores at most "
                              f"{max_len - 1} after at least one context token", field="continuation")
    full = ctx + cont
    kept = full[-max_len:]
    return kept, len(kept) - len(cont)


# --- the transformers backend ---------------------------------------------------------------
class TransformersModel:
    """A causal LM loaded with transformers. One lock serialises all use of the model."""

    backend = "transformers"

    def __init__(self, model_path: str, *, dtype: str = "", max_model_len: int = 0,
                 enable_adapters: bool = False, max_batch_size: int = DEFAULT_MAX_BATCH):
        import torch
        from transformers import AutoModelForCausalLM

        self.model_path = model_path
        self.max_batch_size = max(1, int(max_batch_size))
        self.enable_adapters = enable_adapters
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        name = normalize_dtype(dtype)
        if name in ("", "auto"):
            if self.device == "cpu":
                name = "float32"
            else:
                name = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        self.dtype = name
        if not os.path.isdir(model_path):
            raise NotFound(f"model folder {model_path!r} does not exist", field="model_path")
        self.tokenizer = load_tokenizer(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, name))
        self.model = model.to(self.device).eval()
        cfg = self.model.config
        self.max_model_len = int(max_model_len) or int(getattr(cfg, "max_position_embeddings", 0) or 2048)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        self.pad_id = self.tokenizer.pad_token_id
        self._lock = threading.RLock()
        # Served adapter name -> the name peft knows it by: peft adapter names become torch module
        # names, which may not contain "." nor shadow attributes ("forward"), and served names may.
        self._adapters: dict[str, str] = {}
        self._adapter_ids = itertools.count(1)
        self._closed = False

    # -- adapters ------------------------------------------------------------------------------
    def load_adapter(self, name: str, adapter_dir: str) -> None:
        """Load a peft adapter folder under `name` (a second load of a name replaces it)."""
        if not self.enable_adapters:
            raise FailedPrecondition("this model was loaded without enable_adapters; reload it with adapters enabled")
        if not name:
            raise InvalidArgument("an adapter needs a name", field="adapter")
        if importlib.util.find_spec("peft") is None:
            raise FailedPrecondition("adapters need the peft package (pip install peft)")
        if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
            raise NotFound(f"no adapter_config.json in {adapter_dir!r}", field="adapter_dir")
        from peft import PeftModel

        with self._lock:
            self._check_open()
            if name in self._adapters:
                self._delete_adapter(name)
            peft_name = f"adapter_{next(self._adapter_ids)}"
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(adapter_dir, adapter_name=peft_name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, adapter_dir, adapter_name=peft_name).eval()
            except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:  # a broken or mismatched adapter
                raise InvalidArgument(f"could not load adapter {name!r} from {adapter_dir!r}: {exc}",
                                      field="adapter_dir") from exc
            self._adapters[name] = peft_name

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._adapters:
                raise NotFound(f"no adapter named {name!r} is loaded", field="adapter")
            self._delete_adapter(name)

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    def _delete_adapter(self, name: str) -> None:
        if len(self._adapters) == 1:  # the last one: back to the plain base model
            self.model = self.model.unload().eval()
        else:
            self.model.delete_adapter(self._adapters[name])
        del self._adapters[name]

    def _adapter_context(self, adapter: str | None):
        """Context that runs the model with `adapter` active, or the bare base when None."""
        import contextlib

        if adapter:
            if adapter not in self._adapters:
                known = ", ".join(sorted(self._adapters)) or "none"
                raise NotFound(f"no adapter named {adapter!r} is loaded (loaded: {known})", field="adapter")
            self.model.set_adapter(self._adapters[adapter])
            return contextlib.nullcontext()
        if self._adapters:  # a PeftModel: run the base weights
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    # -- generation ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the model has been closed")

    def _encode(self, prompt: PromptInput, sampling: Sampling) -> tuple[list[int], int]:
        """(prompt ids, max new tokens allowed by max_model_len)."""
        ids = render_prompt(self.tokenizer, prompt)
        if not ids:
            raise InvalidArgument("the prompt is empty", field="prompt")
        room = self.max_model_len - len(ids)
        if room < 1:
            raise InvalidArgument(
                f"prompt is {len(ids)} tokens; this model takes at most {self.max_model_len - 1}", field="prompt")
        return ids, min(sampling.max_new_tokens, room)

    def _gen_kwargs(self, sampling: Sampling, max_new_tokens: int) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.pad_id,
            "repetition_penalty": sampling.repetition_penalty,
        }
        if sampling.temperature >= GREEDY_TEMPERATURE:
            kw.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kw.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        return kw

    def _seed(self, sampling: Sampling) -> None:
        if sampling.temperature >= GREEDY_TEMPERATURE and sampling.seed:
            import torch

            torch.manual_seed(sampling.seed)

    def _finish(self, prompt_len: int, new_ids: list[int], limit: int, stops: Sequence[str]) -> Generation:
        """Build a Generation from the generated ids of one row (padding removed here)."""
        n = len(new_ids)
        eos_at = next((i for i, t in enumerate(new_ids) if t in self.eos_ids), -1)
        if eos_at >= 0:
            n = eos_at + 1  # count the eos token, as vLLM does
        elif self.pad_id is not None:  # a row stopped by a stop string is padded to the batch's end
            while n > 0 and new_ids[n - 1] == self.pad_id:
                n -= 1
        text = self.tokenizer.decode(new_ids[:eos_at if eos_at >= 0 else n], skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stops)
        if stopped or eos_at >= 0:
            reason = "stop"
        else:
            reason = "length" if n >= limit else "stop"
        return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=n, finish_reason=reason)

    def generate(self, prompts: Sequence[PromptInput], sampling: Sampling, *,
                 adapter: str | None = None) -> list[Generation]:
        """Generate for all prompts, in batches of max_batch_size (prompts of similar length
        share a batch), left-padded. Results come back in prompt order."""
        import torch

        check_sampling(sampling)
        encoded = [self._encode(p, sampling) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: (encoded[i][1], len(encoded[i][0])))
        results: list[Generation | None] = [None] * len(encoded)
        with self._lock:
            self._check_open()
            with self._adapter_context(adapter):
                self._seed(sampling)
                for start in range(0, len(order), self.max_batch_size):
                    chunk = order[start:start + self.max_batch_size]
                    limit = min(encoded[i][1] for i in chunk)  # rows in a chunk share max_new_tokens
                    batch = self.tokenizer.pad({"input_ids": [encoded[i][0] for i in chunk]},
                                               padding=True, return_tensors="pt")
                    width = batch["input_ids"].shape[1]
                    with torch.inference_mode():
                        out = self.model.generate(
                            input_ids=batch["input_ids"].to(self.device),
                            attention_mask=batch["attention_mask"].to(self.device),
                            **self._gen_kwargs(sampling, limit),
                        )
                    new = out[:, width:].tolist()
                    for row, i in enumerate(chunk):
                        results[i] = self._finish(len(encoded[i][0]), new[row], limit, sampling.stop)
        return results  # type: ignore[return-value]

    def stream(self, prompt: PromptInput, sampling: Sampling, *, adapter: str | None = None) -> TextStream:
        """Text deltas for one prompt. Closing the stream stops generation within one token."""
        check_sampling(sampling)
        ids, limit = self._encode(prompt, sampling)
        self._check_open()
        if adapter and adapter not in self._adapters:
            raise NotFound(f"no adapter named {adapter!r} is loaded", field="adapter")
        return TextStream(lambda handle: self._stream(handle, ids, limit, sampling, adapter))

    def _stream(self, handle: TextStream, ids: list[int], limit: int, sampling: Sampling,
                adapter: str | None) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = threading.Event()
        counted: list[int] = []  # generated token ids, collected by the streamer's put()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        class _Streamer(TextIteratorStreamer):
            """Emits a delta per token (the stock one waits for whole words): decodes all tokens
            so far and hands out the new suffix, holding it while it ends in an incomplete
            UTF-8 character."""

            def put(self, value):  # noqa: ANN001
                if self.next_tokens_are_prompt:
                    self.next_tokens_are_prompt = False
                    return
                counted.extend(value.reshape(-1).tolist())
                text = self.tokenizer.decode(counted, **self.decode_kwargs)
                if len(text) > self.print_len and not text.endswith("\ufffd"):
                    self.on_finalized_text(text[self.print_len:])
                    self.print_len = len(text)

            def end(self):
                text = self.tokenizer.decode(counted, **self.decode_kwargs) if counted else ""
                self.on_finalized_text(text[self.print_len:], stream_end=True)
                self.print_len = max(self.print_len, len(text))

        streamer = _Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: queue.SimpleQueue = queue.SimpleQueue()

        def work() -> None:
            try:
                with self._lock:
                    self._check_open()
                    with self._adapter_context(adapter), torch.inference_mode():
                        self._seed(sampling)
                        self.model.generate(
                            input_ids=torch.tensor([ids], device=self.device),
                            attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=self.device),
                            streamer=streamer,
                            stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                            **self._gen_kwargs(sampling, limit),
                        )
            except BaseException as exc:  # hand it to the consumer, and always wake it up
                errors.put(exc)
                try:
                    streamer.end()
                except BaseException:
                    streamer.text_queue.put(streamer.stop_signal)

        thread = threading.Thread(target=work, name="tunesmith-transformers-stream", daemon=True)
        scanner = StopScanner(sampling.stop)
        finished = drained = False
        thread.start()
        try:
            for delta in streamer:
                out = scanner.feed(delta)
                if out:
                    yield out
                if scanner.stopped:
                    cancel.set()
                    break
            else:
                drained = True
            if not errors.empty():
                raise errors.get()
            out = scanner.flush()
            if out:
                yield out
            finished = True
        finally:
            cancel.set()
            if not drained:  # left early: the worker sees the flag, stops and ends the streamer
                for _ in streamer:
                    pass
            thread.join()
            if finished:
                handle.generation = self._finish(len(ids), counted, limit, [])
                handle.generation.text = scanner.text
                if scanner.stopped:
                    handle.generation.finish_reason = "stop"


    # -- log-likelihoods -------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]], *,
                      adapter: str | None = None) -> list[LogLikelihood]:
        """Log-likelihood of each continuation given its context, in request order, as
        lm-evaluation-harness's HFLM computes it (see encode_loglikelihood_request): the model
        runs on context + continuation (cut on the left to max_model_len + 1 tokens, last token
        not fed); the continuation's log-probs (log_softmax in float32) are summed; is_greedy
        when each continuation token is the argmax. Requests are sorted by length and batched
        right-padded (up to max_batch_size rows and LOGLIKELIHOOD_LOGITS_BUDGET logits). For a
        prompt-learning adapter (prompt/prefix tuning) the output's last positions are the
        input's: its virtual tokens come first."""
        import torch

        encoded = []
        for context, continuation in requests:
            ctx, cont = encode_loglikelihood_request(self.tokenizer, context, continuation)
            ids, _ = truncate_loglikelihood_input(ctx, cont, self.max_model_len + 1)
            encoded.append((ids[:-1], cont))  # the last token is only predicted, never fed
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        results: list[LogLikelihood | None] = [None] * len(encoded)
        vocab = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer)) if self.model else 1
        pad = self.pad_id if self.pad_id is not None else 0
        with self._lock:
            self._check_open()
            with self._adapter_context(adapter), torch.inference_mode():
                start = 0
                while start < len(order):
                    width = len(encoded[order[start]][0])  # the longest: sorted by length, descending
                    rows = max(1, min(self.max_batch_size, LOGLIKELIHOOD_LOGITS_BUDGET // max(1, width * vocab)))
                    chunk = order[start:start + rows]
                    start += len(chunk)
                    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for row, i in enumerate(chunk):
                        inp = encoded[i][0]
                        ids[row, :len(inp)] = torch.tensor(inp, dtype=torch.long)
                        mask[row, :len(inp)] = 1
                    logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                        use_cache=False).logits
                    logits = logits[:, -width:]  # prompt tuning: virtual tokens' positions come first
                    for row, i in enumerate(chunk):
                        inp, cont = encoded[i]
                        n = len(inp)
                        scores = torch.log_softmax(logits[row, n - len(cont):n].float(), dim=-1)
                        target = torch.tensor(cont, dtype=torch.long, device=scores.device)
                        picked = scores.gather(1, target.unsqueeze(1)).squeeze(1)
                        greedy = bool((scores.argmax(dim=-1) == target).all())
                        results[i] = LogLikelihood(logprob=float(picked.sum()), tokens=len(cont), is_greedy=greedy)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Drop the model and free its memory (waits for running generations)."""
        import gc

        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.model = None
            self._adapters.clear()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    def adapter_unsupported(self, config: dict) -> str:
        """"": peft serves every adapter type it can load (LoRA, DoRA, IA3, prefix and prompt tuning)."""
        return ""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype,
                "max_model_len": self.max_model_len, "max_batch_size": self.max_batch_size,
                "adapters": self.adapters()}


class TransformersBackend:
    name = "transformers"

    def __init__(self, max_batch_size: int | None = None):
        env = os.environ.get("TUNESMITH_TRANSFORMERS_MAX_BATCH", "")
        self.max_batch_size = max_batch_size or (int(env) if env.isdigit() and int(env) > 0 else DEFAULT_MAX_BATCH)

    def available(self) -> tuple[bool, str]:
        for mod in ("torch", "transformers"):
            if importlib.util.find_spec(mod) is None:
                return False, f"the {mod} package is not installed (pip install 'tunesmith[train]')"
        return True, "torch and transformers are installed"

    def load(self, model_path: str, *, dtype: str = "", max_model_len: int = 0,
             enable_adapters: bool = False, adapter_limits: Any = None) -> TransformersModel:
        """adapter_limits: not needed here (peft holds any number of adapters of any rank; the
        inference service enforces the limits)."""
        return TransformersModel(model_path, dtype=dtype, max_model_len=max_model_len,
                                 enable_adapters=enable_adapters, max_batch_size=self.max_batch_size)


@hookimpl
def register_inference_backends(register):
    register("transformers", TransformersBackend())
