"""Supervised fine-tuning (SFT) of a causal LM on prompt/completion rows: a plain torch loop.

Library code, no gRPC. The trainer worker calls :func:`train_sft`; everything heavy (torch,
transformers, peft) is imported inside the functions so importing this module stays cheap.

Why not the transformers Trainer: on a small CPU machine its per-step overhead and padding
waste dominate. This loop is built for throughput:

- rows are tokenised once; examples of similar length are grouped into batches (seeded,
  shuffled buckets) and each batch is padded only to its own longest row;
- batches are padded on the LEFT with explicit position ids, so every completion ends at the
  right edge of the batch. With completion-only loss the model then computes the vocabulary
  projection (``logits_to_keep``) only for the last few positions that carry labels: on a small
  model the LM head is ~20% of the compute per token, and it is skipped for prompt tokens;
- AdamW (fused/foreach where available) over the trainable parameters only, no KV cache, no
  gradient checkpointing;
- CPU threads: by default the CPUs this process may use, but on a small shared machine another
  busy process makes every multi-threaded op wait at its barriers (measured here: 2 threads ran
  6x slower than 1 while another process held one of the 2 cores). So unless
  ``hp["num_threads"]`` fixes the count, a ~0.1 s matmul calibration picks the thread count
  at the start and again every ``_THREAD_RECHECK_SECONDS`` of training.

Loss: token-level mean cross-entropy over the label tokens of each optimizer step (all
micro-batches of a gradient-accumulation group are normalised by the group's label count).
"""
from __future__ import annotations

import math
import os
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.trainer.hyperparameters import DEFAULTS
from tunesmith.trainer.hyperparameters import resolve as resolve_hyperparameters

IGNORE_INDEX = -100

# The one hyperparameter schema (defaults, limits, checks) lives in tunesmith.trainer.hyperparameters.
DEFAULT_HP = DEFAULTS

# How many batches' worth of examples are sorted together when bucketing by length.
_BUCKET_BATCHES = 50
# final_train_loss is the mean loss of this many last optimizer steps.
_FINAL_LOSS_WINDOW = 5


class TrainingCancelled(Exception):
    """should_stop() returned True: training stopped before the end; nothing was saved."""

    def __init__(self, step: int):
        super().__init__(f"training cancelled at step {step}")
        self.step = step


# --- tokenisation and collation -----------------------------------------------------------
@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken
    truncated: bool

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    @property
    def label_span(self) -> int:
        """Positions from the first labelled token to the end (what logits_to_keep must cover)."""
        for i, x in enumerate(self.labels):
            if x != IGNORE_INDEX:
                return len(self.labels) - i
        return 0


def encode_rows(tokenizer: Any, rows: Sequence[dict], max_seq_length: int,
                completion_only_loss: bool = True) -> list[EncodedExample]:
    """Tokenise prompt/completion rows.

    The prompt is tokenised by ``tunesmith.core.tokens.encode_prompts`` (the tokenizer's normal
    special tokens, but no second BOS when the text already starts with one, as a rendered chat
    template does; the data service's statistics and the inference backends use the same rule),
    the completion gets no special tokens, then ``eos_token_id`` is appended. Rows longer than
    ``max_seq_length`` lose tokens from the left of the prompt (a leading BOS is kept) so the
    completion survives; if the completion plus EOS alone does not fit, it is cut from the right
    (no EOS) after one prompt token.
    """
    if max_seq_length < 2:
        raise ValueError("max_seq_length must be at least 2")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id")
    prompts = [str(r["prompt"]) for r in rows]
    completions = [str(r["completion"]) for r in rows]
    if not rows:
        return []
    from tunesmith.core.tokens import encode_completions, encode_prompts

    p_ids = encode_prompts(tokenizer, prompts)
    c_ids = encode_completions(tokenizer, completions)
    bos = tokenizer.bos_token_id
    out: list[EncodedExample] = []
    for p, c in zip(p_ids, c_ids):
        p, c = list(p), list(c) + [eos]
        truncated = False
        if len(p) + len(c) > max_seq_length:
            truncated = True
            if len(c) >= max_seq_length:
                c = c[: max_seq_length - 1]  # EOS is cut off with the rest of the tail
                p = p[-1:]
            else:
                room = max_seq_length - len(c)
                if bos is not None and p and p[0] == bos and room >= 2:
                    p = [bos] + p[len(p) - (room - 1):]
                else:
                    p = p[len(p) - room:]
        ids = p + c
        if completion_only_loss:
            labels = [IGNORE_INDEX] * len(p) + c
        else:
            labels = list(ids)
        out.append(EncodedExample(ids, labels, truncated))
    return out


def collate(examples: Sequence[EncodedExample], pad_token_id: int, padding_side: str = "left") -> dict[str, Any]:
    """Pad a batch to its longest row. Returns torch tensors input_ids, attention_mask,
    position_ids (0.. over real tokens, so left padding does not shift positions) and labels
    (IGNORE_INDEX on padding), plus ``label_span``: how many final positions hold a label
    (with left padding, logits for the last ``label_span + 1`` positions suffice)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    span = 0
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        sl = slice(width - k, width) if padding_side == "left" else slice(0, k)
        input_ids[i, sl] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, sl] = torch.tensor(e.labels, dtype=torch.long)
        attention_mask[i, sl] = 1
        position_ids[i, sl] = torch.arange(k, dtype=torch.long)
        if padding_side == "left":
            span = max(span, e.label_span)
        else:
            span = width
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            "labels": labels, "label_span": span}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Seeded batches of similar-length examples: shuffle, sort within buckets of
    ``_BUCKET_BATCHES`` batches, cut into batches, shuffle the batch order."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    bucket = max(batch_size * _BUCKET_BATCHES, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(idx), bucket):
        chunk = sorted(idx[start:start + bucket], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


# --- hyperparameters ----------------------------------------------------------------------
def resolve_hp(hp: dict | None) -> dict[str, Any]:
    """Defaults filled in and values checked (InvalidArgument naming ``hyperparameters.<key>``);
    see tunesmith.trainer.hyperparameters.resolve."""
    return resolve_hyperparameters(hp)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak LR for 0-based optimizer step `step` (transformers' formulas)."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, (total - step) / max(1, total - warmup))


def _resolve_device(name: str) -> str:
    import torch

    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_THREAD_RECHECK_SECONDS = 20.0


class _ThreadTuner:
    """Chooses torch's CPU thread count: fixed when asked, else the fastest of a few candidates
    on a small matmul, preferring the most threads unless fewer are clearly (>15%) faster."""

    def __init__(self, fixed: int, log: Callable[[str], None]):
        self.max = _cpu_threads()
        self.fixed = fixed
        self.log = log
        self.current = 0
        self.last_check = -math.inf

    def candidates(self) -> list[int]:
        return sorted({self.max, max(1, self.max // 2), 1}, reverse=True)

    def _time(self, threads: int) -> float:
        import torch

        torch.set_num_threads(threads)
        a, b = self._a, self._b
        a @ b
        times = []
        for _ in range(3):
            t = time.perf_counter()
            a @ b
            a @ b
            times.append(time.perf_counter() - t)
        return sorted(times)[1]

    def tune(self, now: float) -> None:
        import torch

        if self.fixed:
            if self.current != self.fixed:
                torch.set_num_threads(self.fixed)
                self.current = self.fixed
            return
        if self.max == 1:
            if self.current != 1:
                torch.set_num_threads(1)
                self.current = 1
            return
        if now - self.last_check < _THREAD_RECHECK_SECONDS:
            return
        self.last_check = now
        if not hasattr(self, "_a"):
            gen = torch.Generator().manual_seed(0)
            self._a = torch.randn(256, 1024, generator=gen)
            self._b = torch.randn(1024, 1024, generator=gen)
        timings = {n: self._time(n) for n in self.candidates()}
        best = self.max
        for n, t in timings.items():  # most threads first
            if t < timings[best] * 0.85:
                best = n
        torch.set_num_threads(best)
        if best != self.current:
            detail = ", ".join(f"{n}: {t * 1e3:.1f} ms" for n, t in sorted(timings.items()))
            self.log(f"using {best} of {self.max} CPU threads (matmul calibration {detail})")
        self.current = best


def _peak_memory_bytes(device: str) -> int:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if os.uname().sysname == "Darwin" else int(rss) * 1024


def _make_optimizer(params: list, h: dict) -> Any:
    """AdamW (fused, else foreach, else plain), bitsandbytes' 8-bit AdamW, or SGD."""
    import torch

    kwargs: dict[str, Any] = {"lr": h["learning_rate"], "weight_decay": h["weight_decay"]}
    if h["optimizer"] == "sgd":
        return torch.optim.SGD(params, **kwargs)
    if h["optimizer"] == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kwargs)
    for flag in ("fused", "foreach"):
        try:
            return torch.optim.AdamW(params, **kwargs, **{flag: True})
        except (RuntimeError, TypeError, ValueError):
            continue
    return torch.optim.AdamW(params, **kwargs)


# --- the loss -----------------------------------------------------------------------------
class _LossComputer:
    """Summed cross-entropy over label tokens of one padded batch, computing the vocabulary
    projection only where it is needed (``logits_to_keep``) when the model supports it."""

    def __init__(self, model: Any):
        import inspect

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        try:
            params = inspect.signature(base.forward).parameters
        except (TypeError, ValueError):
            params = {}
        self.supports_keep = "logits_to_keep" in params
        self.supports_position_ids = "position_ids" in params

    def __call__(self, model: Any, batch: dict, device: str):
        import torch
        import torch.nn.functional as F

        input_ids = batch["input_ids"].to(device, non_blocking=True)
        attention_mask = batch["attention_mask"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        width = input_ids.shape[1]
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if self.supports_position_ids:
            kwargs["position_ids"] = batch["position_ids"].to(device, non_blocking=True)
        keep = min(width, int(batch["label_span"]) + 1)
        if self.supports_keep and keep < width:
            # positions width-keep .. width-2 predict tokens width-keep+1 .. width-1
            kwargs["logits_to_keep"] = torch.arange(width - keep, width - 1, device=device)
            target = labels[:, width - keep + 1:]
            logits = model(**kwargs).logits
        else:
            logits = model(**kwargs).logits[:, :-1, :]
            target = labels[:, 1:]
        loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, int((target != IGNORE_INDEX).sum())


# --- the loop -----------------------------------------------------------------------------
def train_sft(*, model_path: str, train_rows: list[dict], validation_rows: list[dict] | None,
              method: Any, method_options: dict, hp: dict, output_dir: Path,
              on_event: Callable[[dict], None] = lambda e: None,
              should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Fine-tune `model_path` with `method` (a PeftMethod) on prompt/completion rows.

    Emits progress/metrics/log events through `on_event`, checks `should_stop` before every
    optimizer step (raising TrainingCancelled), and saves the adapter in peft's format (plus the
    tokenizer) to ``output_dir/"adapter"``. Returns a dict: adapter_dir, train_seconds (optimizer
    steps only: no loading, evaluation or saving), train_tokens (non-padding tokens),
    tokens_per_second (their ratio), first_train_loss (loss of step 1), final_train_loss (mean
    loss of the last ``_FINAL_LOSS_WINDOW`` optimizer steps), best_validation_loss (None without
    validation rows), steps, trainable_parameters, total_parameters, peak_memory_bytes (CPU: the
    process's max RSS; CUDA: torch's max allocated), stopped_early, truncated_rows (training and
    validation rows cut to max_seq_length).

    ``hp`` keys (all optional): see DEFAULT_HP. Unknown keys are ignored; bad values raise
    InvalidArgument naming ``hyperparameters.<key>``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.core.errors import InvalidArgument

    h = resolve_hp(hp)
    if not train_rows:
        raise InvalidArgument("no training rows", field="train_rows")
    output_dir = Path(output_dir)
    device = _resolve_device(str(h["device"]))
    random.seed(h["seed"])
    torch.manual_seed(h["seed"])

    def log(message: str) -> None:
        on_event({"type": "log", "level": "info", "message": message})

    threads = _ThreadTuner(h["num_threads"], log) if device == "cpu" else None
    if threads is not None:
        threads.tune(0.0)

    # -- model and data --
    t_load = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = _torch_dtype(h["dtype"], device)
    load_kwargs = dict(method.load_kwargs(method_options, device) or {})
    if h["attn_implementation"] and "attn_implementation" not in load_kwargs:
        load_kwargs["attn_implementation"] = h["attn_implementation"]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **load_kwargs)
    if "device_map" not in load_kwargs and not getattr(model, "is_quantized", False):
        model.to(device)
    model.config.use_cache = False
    if h["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = method.apply(model, method_options)
    if h["gradient_checkpointing"] and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    total_params = sum(p.numel() for p in model.parameters())
    if not params:
        raise ValueError(f"method {getattr(method, 'name', method)!r} left no trainable parameters")

    train_ex = encode_rows(tokenizer, train_rows, h["max_seq_length"], h["completion_only_loss"])
    val_ex = encode_rows(tokenizer, validation_rows or [], h["max_seq_length"], True)
    truncated_rows = sum(e.truncated for e in train_ex) + sum(e.truncated for e in val_ex)
    lengths = [len(e.input_ids) for e in train_ex]
    log(f"loaded {model_path} on {device} ({dtype}) in {time.perf_counter() - t_load:.1f}s; "
        f"{trainable:,} trainable of {total_params:,} parameters; {len(train_ex)} training rows, "
        f"{len(val_ex)} validation rows, {truncated_rows} truncated to {h['max_seq_length']} tokens")

    bs, ga = h["batch_size"], h["gradient_accumulation_steps"]
    batches_per_epoch = math.ceil(len(train_ex) / bs)
    steps_per_epoch = math.ceil(batches_per_epoch / ga)
    total_steps = h["max_steps"] if h["max_steps"] > 0 else steps_per_epoch * h["epochs"]
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = h["warmup_steps"] if h["warmup_steps"] is not None else math.ceil(h["warmup_ratio"] * total_steps)

    optimizer = _make_optimizer(params, h)
    loss_fn = _LossComputer(model)
    pad_id = tokenizer.pad_token_id

    # -- validation --
    val_batches: list[list[int]] = []
    if val_ex:
        order = sorted(range(len(val_ex)), key=lambda i: len(val_ex[i].input_ids))
        val_bs = bs * 2
        val_batches = [order[i:i + val_bs] for i in range(0, len(order), val_bs)]

    def evaluate() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for idx in val_batches:
                s, n = loss_fn(model, collate([val_ex[i] for i in idx], pad_id), device)
                total += float(s)
                count += n
        model.train()
        return total / max(1, count)

    # -- training --
    step = 0
    tokens_seen = 0
    train_seconds = 0.0
    step_losses: list[float] = []
    log_loss_sum, log_loss_tokens = 0.0, 0
    best_val: float | None = None
    evals_without_improvement = 0
    stopped_early = False
    last_eval_step = -1

    def run_eval() -> bool:
        """Evaluate, emit metrics; True when early stopping says stop."""
        nonlocal best_val, evals_without_improvement, last_eval_step
        last_eval_step = step
        vloss = evaluate()
        on_event({"type": "metrics", "name": "validation", "values": {"loss": vloss, "step": step}})
        if best_val is None or vloss < best_val:
            best_val = vloss
            evals_without_improvement = 0
        else:
            evals_without_improvement += 1
        patience = h["early_stopping_patience"]
        return patience > 0 and evals_without_improvement >= patience

    if h["packing"]:
        log("packing is not implemented; rows are grouped by length into batches instead")
    log(f"training {total_steps} steps ({n_epochs} epoch(s), {steps_per_epoch} steps each, "
        f"batch {bs} x {ga} accumulation), warmup {warmup} steps")
    done = False
    for epoch in range(n_epochs):
        batches = length_grouped_batches(lengths, bs, h["seed"] + epoch)
        groups = [batches[i:i + ga] for i in range(0, len(batches), ga)]
        for g_idx, group in enumerate(groups):
            if step >= total_steps:
                done = True
                break
            if should_stop():
                log(f"cancelled at step {step}")
                raise TrainingCancelled(step)
            t0 = time.perf_counter()
            if threads is not None:
                threads.tune(train_seconds)
            collated = [collate([train_ex[i] for i in b], pad_id) for b in group]
            n_labels = sum(int((c["labels"][:, 1:] != IGNORE_INDEX).sum()) for c in collated)
            lr = h["learning_rate"] * lr_factor(step, total_steps, warmup, h["lr_scheduler"])
            for pg in optimizer.param_groups:
                pg["lr"] = lr
            loss_total = 0.0
            for c in collated:
                loss_sum, _ = loss_fn(model, c, device)
                (loss_sum / max(1, n_labels)).backward()
                loss_total += float(loss_sum.detach())
                tokens_seen += int(c["attention_mask"].sum())
            clip = h["max_grad_norm"] if h["max_grad_norm"] > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - t0
            step += 1
            step_loss = loss_total / max(1, n_labels)
            step_losses.append(step_loss)
            log_loss_sum += loss_total
            log_loss_tokens += n_labels

            if step % h["log_every_steps"] == 0 or step == total_steps:
                tps = tokens_seen / train_seconds if train_seconds > 0 else 0.0
                on_event({
                    "type": "progress", "phase": "train", "step": step, "total_steps": total_steps,
                    "epoch": epoch + (g_idx + 1) / len(groups),
                    "loss": log_loss_sum / max(1, log_loss_tokens), "learning_rate": lr,
                    "tokens_per_second": tps,
                    "eta_seconds": (total_steps - step) * train_seconds / step,
                    "tokens_seen": tokens_seen, "elapsed_seconds": train_seconds, "grad_norm": grad_norm,
                })
                log_loss_sum, log_loss_tokens = 0.0, 0

            if val_batches and h["eval_every_steps"] > 0 and step % h["eval_every_steps"] == 0:
                if run_eval():
                    stopped_early = True
                    done = True
                    break
        if done:
            break
        if val_batches and h["eval_every_steps"] == 0 and last_eval_step != step:
            if run_eval():
                stopped_early = True
                break
    if stopped_early:
        log(f"early stopping at step {step}: validation loss did not improve for "
            f"{h['early_stopping_patience']} evaluation(s) (best {best_val:.4f})")
    elif val_batches and last_eval_step != step:
        run_eval()

    # -- save --
    adapter_dir = output_dir / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    tps = tokens_seen / train_seconds if train_seconds > 0 else 0.0
    window = step_losses[-_FINAL_LOSS_WINDOW:]
    result = {
        "adapter_dir": str(adapter_dir),
        "train_seconds": train_seconds,
        "train_tokens": tokens_seen,
        "tokens_per_second": tps,
        "first_train_loss": step_losses[0] if step_losses else None,
        "final_train_loss": sum(window) / len(window) if window else None,
        "best_validation_loss": best_val,
        "steps": step,
        "trainable_parameters": trainable,
        "total_parameters": total_params,
        "peak_memory_bytes": _peak_memory_bytes(device),
        "stopped_early": stopped_early,
        "truncated_rows": truncated_rows,
    }
    log(f"trained {step} steps in {train_seconds:.1f}s ({tps:.0f} tokens/s); adapter saved to {adapter_dir}")
    return result
