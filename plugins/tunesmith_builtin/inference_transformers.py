"""Built-in inference backend "transformers": a batching queue over left-padded `generate`, any device.

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
import weakref
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
    With Sampling.logprobs set, `logprobs` grows with each token's TokenLogprob (those of a
    delta are there when it is yielded).
    """

    def __init__(self, gen_factory: Callable[["TextStream"], Iterator[str]]):
        self.generation: Generation | None = None
        self.logprobs: list = []
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


# --- the transformers backend's batching queue ------------------------------------------------
class _Request:
    """What the rows of one generate() or stream() call share: sampling, adapter, batch key."""

    _ids = itertools.count(1)

    def __init__(self, sampling: Sampling, adapter: str | None):
        self.sampling = sampling
        self.adapter = adapter or None
        self.id = next(self._ids)
        self.batches = 0  # batches started with rows of this request (seeded sampling: the seed's offset)
        self.key = batch_key(sampling, adapter, self.id)


def batch_key(sampling: Sampling, adapter: str | None, request_id: int) -> tuple:
    """Rows whose keys are equal may share one model.generate call (see TransformersModel).

    Greedy rows: the adapter and repetition_penalty. Sampled rows: the adapter and every
    sampling setting but max_new_tokens and the stop strings; a seeded sampled row batches only
    with rows of its own request, so that a seed reproduces whatever else is being served."""
    if sampling.temperature < GREEDY_TEMPERATURE:
        return (adapter or "", "greedy", sampling.repetition_penalty)
    key: tuple = (adapter or "", "sample", sampling.temperature, sampling.top_p, sampling.top_k,
                  sampling.repetition_penalty)
    return key + (("seed", request_id),) if sampling.seed else key


class _Row:
    """One prompt in the queue: its ids, its token limit, and where its output goes.

    The worker thread is the only writer of tokens/scanner/done; the caller reads `out`: text
    deltas (stream rows only), then one final item, a Generation or an exception."""

    def __init__(self, request: _Request, ids: list[int], limit: int, stream: bool):
        self.request = request
        self.ids = ids
        self.limit = limit
        self.stream = stream
        self.cancel = threading.Event()
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.tokens: list[int] = []
        # Text is decoded per token only where someone needs it: streams and stop strings.
        self.decode = stream or bool(request.sampling.stop)
        self.scanner = StopScanner(request.sampling.stop)
        self.print_len = 0  # characters of the decoded text already fed to the scanner
        self.done = False


class _Scheduler:
    """The queue the batch worker serves, and its statistics (guarded by `cv`)."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.pending: list[_Row] = []
        self.running: list[_Row] = []
        self.closing = False
        self.gone = False  # the model was garbage-collected without close()
        self.thread: threading.Thread | None = None
        self.stats = {"requests": 0, "rows": 0, "batches": 0, "max_batch_rows": 0, "last_batch_rows": 0,
                      "tokens": 0, "rows_cancelled": 0, "cancelled_tokens": 0}

    def model_gone(self) -> None:
        with self.cv:
            self.gone = True
            self.cv.notify_all()


def _batch_worker(sched: _Scheduler, model_ref: Any) -> None:
    """The one thread that runs generation: takes a batch of compatible rows, runs it, repeats.

    Holds the model only through a weak reference while idle, so a model dropped without
    close() is still freed (and this thread ends)."""
    while True:
        with sched.cv:
            while not sched.pending and not sched.closing and not sched.gone:
                sched.cv.wait()
            if sched.closing or sched.gone:
                return
            model = model_ref()
            if model is None:
                return
            batch = model._take_batch()
            sched.running = batch
        try:
            if batch:
                model._run_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - every row of the batch must hear of it
            for row in batch:
                if not row.done:
                    model._end_row(row, error=exc)
        finally:
            with sched.cv:
                sched.running = []
            del model


# --- the transformers backend ---------------------------------------------------------------
class TransformersModel:
    """A causal LM loaded with transformers, served by a batching queue.

    generate() and stream() put one row per prompt in a queue and wait for their own results;
    one worker thread owns the model. It takes the oldest waiting row and every other waiting
    row that is compatible with it (same batch_key: same adapter and, for sampled rows, the same
    temperature, top_p, top_k and repetition_penalty; a seeded sampled row only with rows of its
    own request, so a seed reproduces; max_new_tokens and stop strings may differ), up to
    max_batch_size rows (and only while the longest prompt plus the largest token limit fits
    max_model_len), and runs ONE left-padded model.generate for them. Each row stops on its own:
    its EOS, its max_new_tokens, its stop string, or its cancellation (closing its stream); its
    text deltas go to its own queue as they are decoded, and its result is handed out as soon as
    it stops. Rows arriving while a batch runs wait for the next batch: this is static batching
    between requests; continuous batching (rows joining a running batch) is vLLM's job.

    peft's active adapter is global model state, so the worker, loglikelihood() and adapter
    loading share one lock; generation requests from different clients still share batches.
    stats() reports what the queue has done (batches run, their largest size, cancellations).
    """

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
        self._sched = _Scheduler()
        weakref.finalize(self, self._sched.model_gone)

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
        return kw

    def _finish(self, prompt_len: int, new_ids: list[int], limit: int, stops: Sequence[str]) -> Generation:
        """Build a Generation from the generated ids of one row (trailing padding removed)."""
        n = len(new_ids)
        eos_at = next((i for i, t in enumerate(new_ids) if t in self.eos_ids), -1)
        if eos_at >= 0:
            n = eos_at + 1  # count the eos token, as vLLM does
        elif self.pad_id is not None:
            while n > 0 and new_ids[n - 1] == self.pad_id:
                n -= 1
        text = self.tokenizer.decode(new_ids[:eos_at if eos_at >= 0 else n], skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stops)
        if stopped or eos_at >= 0:
            reason = "stop"
        else:
            reason = "length" if n >= limit else "stop"
        return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=n, finish_reason=reason)

    def stats(self) -> dict[str, int]:
        """What the batching queue has done since the model was loaded (a snapshot):

        requests / rows: generate() and stream() calls queued, and their prompts; batches: the
        model.generate calls run for them; max_batch_rows / last_batch_rows: rows in the largest
        and in the latest batch; tokens: tokens generated for rows (not counting the padding
        of rows that stopped before their batch did); rows_cancelled: rows stopped because their
        stream was closed (or the model was), cancelled_tokens: the tokens those rows had
        generated; queued / running: rows waiting now, rows in the batch running now."""
        sched = self._sched
        with sched.cv:
            return dict(sched.stats, queued=len(sched.pending), running=len(sched.running))

    def _enqueue(self, rows: list[_Row]) -> None:
        sched = self._sched
        with sched.cv:
            self._check_open()
            if sched.thread is None or not sched.thread.is_alive():
                sched.thread = threading.Thread(target=_batch_worker, args=(sched, weakref.ref(self)),
                                                name="tunesmith-transformers-batch", daemon=True)
                sched.thread.start()
            sched.pending.extend(rows)
            sched.stats["requests"] += 1
            sched.stats["rows"] += len(rows)
            sched.cv.notify_all()

    def _take_batch(self) -> list[_Row]:
        """Pop the next batch from the queue (the caller holds the scheduler's lock): the oldest
        row and the compatible rows behind it, in queue order; rows cancelled while waiting end here."""
        sched = self._sched
        batch: list[_Row] = []
        rest: list[_Row] = []
        longest = largest = 0
        for row in sched.pending:
            if row.cancel.is_set():
                self._end_row(row, cancelled=True)
                continue
            fits = max(longest, len(row.ids)) + max(largest, row.limit) <= self.max_model_len
            if len(batch) < self.max_batch_size and (not batch or (row.request.key == batch[0].request.key and fits)):
                batch.append(row)
                longest, largest = max(longest, len(row.ids)), max(largest, row.limit)
            else:
                rest.append(row)
        sched.pending = rest
        if batch:
            stats = sched.stats
            stats["batches"] += 1
            stats["last_batch_rows"] = len(batch)
            stats["max_batch_rows"] = max(stats["max_batch_rows"], len(batch))
        return batch

    def _run_batch(self, rows: list[_Row]) -> None:
        """One left-padded model.generate for `rows` (all of one batch_key), each row stopped by
        its own criteria (see _step)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model_self = self
        request = rows[0].request
        sampling = request.sampling

        class _PerRow(StoppingCriteria):
            """Called once per generated token with every row's sequence so far: hands each
            row its new token and says which rows are done (finished rows are padded by generate)."""

            def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001
                done = model_self._step(rows, input_ids[:, -1].tolist())
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        with self._lock:
            if self._closed or self.model is None:  # closed after this batch was taken
                for row in rows:
                    self._end_row(row, cancelled=True)
                return
            with self._adapter_context(request.adapter), torch.inference_mode():
                if sampling.temperature >= GREEDY_TEMPERATURE and sampling.seed:
                    # A seeded request batches only with itself: its k-th batch draws from seed + k.
                    torch.manual_seed(sampling.seed + request.batches)
                request.batches += 1
                batch = self.tokenizer.pad({"input_ids": [row.ids for row in rows]}, padding=True, return_tensors="pt")
                self.model.generate(
                    input_ids=batch["input_ids"].to(self.device),
                    attention_mask=batch["attention_mask"].to(self.device),
                    stopping_criteria=StoppingCriteriaList([_PerRow()]),
                    **self._gen_kwargs(sampling, max(row.limit for row in rows)),
                )
                for row in rows:  # generate ended (all rows done, or its own length limit): end the rest
                    if not row.done:
                        self._end_row(row)

    def _step(self, rows: list[_Row], last: list[int]) -> list[bool]:
        """Dispatch one generated token per row; return which rows are done."""
        closing = self._sched.closing
        eos = self.eos_ids
        done: list[bool] = []
        n_new = 0
        for row, token in zip(rows, last):
            if row.done:
                done.append(True)
                continue
            if row.cancel.is_set() or closing:
                self._end_row(row, cancelled=True)
                done.append(True)
                continue
            row.tokens.append(token)
            n_new += 1
            if row.decode:
                # A delta per token: decode all tokens so far, hand out the new suffix unless it
                # ends in an incomplete UTF-8 character; the StopScanner holds back a possible stop.
                text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
                if len(text) > row.print_len and not text.endswith("\ufffd"):
                    self._feed(row, text[row.print_len:])
                    row.print_len = len(text)
            if row.scanner.stopped or token in eos or len(row.tokens) >= row.limit:
                self._end_row(row)
            done.append(row.done)
        if n_new:
            with self._sched.cv:
                self._sched.stats["tokens"] += n_new
        return done

    def _feed(self, row: _Row, delta: str) -> None:
        out = row.scanner.feed(delta)
        if out and row.stream:
            row.out.put(out)

    def _end_row(self, row: _Row, *, cancelled: bool = False, error: BaseException | None = None) -> None:
        """Finish a row and hand its result (or error) to its caller."""
        if row.done:
            return
        row.done = True
        if error is None and cancelled:
            with self._sched.cv:  # a reentrant lock: _take_batch calls this holding it
                self._sched.stats["rows_cancelled"] += 1
                self._sched.stats["cancelled_tokens"] += len(row.tokens)
            if self._sched.closing and not row.cancel.is_set() and not row.stream:
                row.out.put(FailedPrecondition("the model was closed while generating"))
            else:  # a closed stream (nobody reads this), or one aborted by close(): ends "cancelled" as vLLM's do
                row.out.put(Generation(row.scanner.text, len(row.ids), len(row.tokens), "cancelled"))
            return
        if error is not None:
            row.out.put(error)
            return
        try:
            if row.decode and not row.scanner.stopped:  # the held-back tail
                text = self.tokenizer.decode(row.tokens, skip_special_tokens=True) if row.tokens else ""
                self._feed(row, text[row.print_len:])
                row.print_len = max(row.print_len, len(text))
                out = row.scanner.flush()
                if out and row.stream:
                    row.out.put(out)
            if row.stream:
                gen = self._finish(len(row.ids), row.tokens, row.limit, [])
                gen.text = row.scanner.text  # exactly the deltas handed out
                if row.scanner.stopped:
                    gen.finish_reason = "stop"
            else:
                gen = self._finish(len(row.ids), row.tokens, row.limit, row.request.sampling.stop)
            top = row.request.sampling.logprobs
            if top is not None:  # the worker holds the model lock and the row's adapter context here
                from tunesmith_builtin._logprobs import completion_logprobs

                gen.logprobs = completion_logprobs(self.model, self.tokenizer,
                                                   [(row.ids, row.tokens[:gen.completion_tokens])], top,
                                                   device=self.device, pad_id=self.pad_id or 0)[0]
        except BaseException as exc:  # noqa: BLE001 - the caller must wake up
            gen = exc
        row.out.put(gen)

    def _new_request(self, sampling: Sampling, adapter: str | None) -> _Request:
        check_sampling(sampling)
        self._check_open()
        if adapter and adapter not in self._adapters:
            known = ", ".join(sorted(self._adapters)) or "none"
            raise NotFound(f"no adapter named {adapter!r} is loaded (loaded: {known})", field="adapter")
        return _Request(sampling, adapter)

    def generate(self, prompts: Sequence[PromptInput], sampling: Sampling, *,
                 adapter: str | None = None) -> list[Generation]:
        """Generate for all prompts through the batching queue (one row per prompt, queued in
        order of length so that a request's own batches need little padding; they may share
        batches with other callers' rows). Results come back in prompt order."""
        request = self._new_request(sampling, adapter)
        encoded = [self._encode(p, sampling) for p in prompts]
        if not encoded:
            return []
        rows = [_Row(request, ids, limit, stream=False) for ids, limit in encoded]
        order = sorted(range(len(rows)), key=lambda i: (rows[i].limit, len(rows[i].ids)))
        self._enqueue([rows[i] for i in order])
        results: list[Generation] = []
        try:
            for row in rows:
                item = row.out.get()
                if isinstance(item, BaseException):
                    raise item
                results.append(item)
        finally:
            for row in rows:  # an interrupted caller (or a failed row) cancels the rest
                row.cancel.set()
        return results

    def stream(self, prompt: PromptInput, sampling: Sampling, *, adapter: str | None = None) -> TextStream:
        """Text deltas for one prompt, generated in a batch with other waiting rows. The row is
        queued on the first next(); closing the stream stops its generation within one token
        (the other rows of its batch go on)."""
        request = self._new_request(sampling, adapter)
        ids, limit = self._encode(prompt, sampling)
        return TextStream(lambda handle: self._stream(handle, _Row(request, ids, limit, stream=True)))

    def _stream(self, handle: TextStream, row: _Row) -> Iterator[str]:
        try:
            self._enqueue([row])
            while True:
                item = row.out.get()
                if isinstance(item, str):
                    yield item
                elif isinstance(item, BaseException):
                    raise item
                else:
                    handle.logprobs.extend(item.logprobs or [])  # Sampling.logprobs: all at the end
                    handle.generation = item
                    return
        finally:
            row.cancel.set()  # the worker drops the row at its next token (or when it reaches the queue's head)


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
        """Drop the model and free its memory. Queued rows and the running batch are aborted
        (within one token): generate() callers get FailedPrecondition, streams end with
        finish_reason "cancelled". Harmless when repeated."""
        import gc

        sched = self._sched
        with sched.cv:
            if self._closed:
                return
            self._closed = True
            sched.closing = True
            pending, sched.pending = sched.pending, []
            for row in pending:
                self._end_row(row, cancelled=True)
            sched.cv.notify_all()
            thread = sched.thread
        with self._lock:  # the running batch sees `closing` at its next token and returns
            self.model = None
            self._adapters.clear()
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)
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
