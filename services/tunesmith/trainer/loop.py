"""The training loop every recipe runs in: accelerate, optimizer, schedule, checkpoints, events.

Library code, no gRPC. `train()` loads the base model, applies the method (a PeftMethod
plugin), lets the recipe (a TrainingRecipe plugin: sft, dpo, ...) tokenise its rows, and runs
optimizer steps over the recipe's batches. The recipe computes losses; this module owns:

- placement and processes through `accelerate.Accelerator`: one process, or N under torchrun /
  accelerate launch (DDP; gloo on CPU). Micro-batch i of a group goes to rank i % N, and
  gradients are synchronised once per group (`no_sync` on the others);
- AdamW (fused/foreach where available), 8-bit AdamW or SGD over the trainable parameters;
  LR schedules as transformers defines them (a pure function of the step);
- gradient accumulation normalised by the group's item count (label tokens or pairs), not by
  the number of micro-batches, and gradient clipping;
- validation every N steps (or each epoch), early stopping with patience, and the best
  weights (by validation loss) restored before saving;
- checkpoints every N steps and when asked to stop (SIGTERM): trainable weights, optimizer,
  RNG states, data position and counters (format: tunesmith.core.formats.checkpoint), and
  resume from one, continuing the same loss curve;
- events: progress (loss, learning rate, grad norm, tokens/s, ETA, peak memory) and metrics;
- CPU threads: by default the CPUs this process may use, but on a small shared machine another
  busy process makes every multi-threaded op wait at its barriers (measured: 2 threads ran 6x
  slower than 1 while another process held one of 2 cores), so unless ``num_threads`` fixes the
  count a ~0.1 s matmul calibration picks it, again every ``_THREAD_RECHECK_SECONDS``.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import time
from pathlib import Path
from typing import Any, Callable

from tunesmith.trainer.hyperparameters import resolve as resolve_hyperparameters

# final_train_loss is the mean loss of this many last optimizer steps.
_FINAL_LOSS_WINDOW = 5
_THREAD_RECHECK_SECONDS = 20.0
#: checkpoint_every_steps 0: about this many checkpoints per run, but at least every 10 steps.
_DEFAULT_CHECKPOINTS_PER_RUN = 20


class TrainingCancelled(Exception):
    """should_stop() returned True: training stopped before the end (after a checkpoint, when a
    checkpoint sink was given); nothing else was saved."""

    def __init__(self, step: int):
        super().__init__(f"training cancelled at step {step}")
        self.step = step


class CheckpointError(Exception):
    """A checkpoint given to resume from is corrupt or belongs to another run."""

    code = "bad_checkpoint"
    field = "resume_from_checkpoint"


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


def checkpoint_interval(h: dict, total_steps: int) -> int:
    """Steps between checkpoints: checkpoint_every_steps, or the default for `total_steps`."""
    every = int(h.get("checkpoint_every_steps") or 0)
    if every > 0:
        return every
    return max(1, min(10, math.ceil(total_steps / _DEFAULT_CHECKPOINTS_PER_RUN)))


def resolve_device(name: str) -> str:
    import torch

    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def torch_dtype(name: str, device: str):
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


class ThreadTuner:
    """Chooses torch's CPU thread count: fixed when asked, else the fastest of a few candidates
    on a small matmul, preferring the most threads unless fewer are clearly (>15%) faster."""

    def __init__(self, fixed: int, log: Callable[[str], None], max_threads: int = 0):
        self.max = max_threads or _cpu_threads()
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

    def _set(self, n: int) -> None:
        import torch

        if self.current != n:
            torch.set_num_threads(n)
            self.current = n

    def tune(self, now: float) -> None:
        import torch

        if self.fixed or self.max == 1:
            self._set(self.fixed or 1)
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


def peak_memory_bytes(device: str) -> int:
    """CUDA: torch's max allocated; CPU: the process's peak RSS."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if os.uname().sysname == "Darwin" else int(rss) * 1024


def make_optimizer(params: list, h: dict) -> Any:
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


# --- checkpoints --------------------------------------------------------------------------
def _trainable(model: Any) -> dict[str, Any]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def write_checkpoint(folder: Path, model: Any, optimizer: Any, meta) -> None:
    """Write a complete checkpoint folder (see tunesmith.core.formats.checkpoint)."""
    import torch
    from safetensors.torch import save_file

    from tunesmith.core.formats.checkpoint import OPTIMIZER_FILE, RNG_FILE, WEIGHTS_FILE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().to("cpu").contiguous() for n, p in _trainable(model).items()}
    save_file(weights, str(folder / WEIGHTS_FILE))
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, folder / RNG_FILE)
    meta.parameters = {n: list(t.shape) for n, t in weights.items()}
    meta.write(folder)


def load_checkpoint(folder: Path, source: str, model: Any, optimizer: Any, identity: dict):
    """Restore weights, optimizer and RNG states from checkpoint `folder`; its CheckpointMeta.
    CheckpointError naming `source` when it is corrupt or belongs to another run; nothing of the
    model is changed then."""
    import torch
    from safetensors.torch import load_file

    from tunesmith.core.formats import FormatError
    from tunesmith.core.formats.checkpoint import (OPTIMIZER_FILE, RNG_FILE, WEIGHTS_FILE, identity_mismatch,
                                                   read_meta)

    try:
        meta = read_meta(folder, source)
    except FormatError as exc:
        raise CheckpointError(exc.message) from None
    problem = identity_mismatch(meta.identity, identity)
    if problem:
        raise CheckpointError(f"{source} belongs to another run: {problem}")
    params = _trainable(model)
    want = {n: list(p.shape) for n, p in params.items()}
    if meta.parameters != want:
        extra = sorted(set(meta.parameters) ^ set(want))[:3] or [
            n for n in want if meta.parameters.get(n) != want[n]][:3]
        raise CheckpointError(f"{source} holds other trainable parameters than this job's model ({', '.join(extra)})")
    try:
        weights = load_file(str(Path(folder) / WEIGHTS_FILE))
        opt_state = torch.load(Path(folder) / OPTIMIZER_FILE, map_location="cpu", weights_only=False)
        rng = torch.load(Path(folder) / RNG_FILE, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a corrupt checkpoint
        raise CheckpointError(f"{source} is corrupt: {type(exc).__name__}: {exc}") from None
    if set(weights) != set(want) or any(list(weights[n].shape) != want[n] for n in want):
        raise CheckpointError(f"{source} is corrupt: its weights do not match its {want and 'parameter list'}")
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: the optimizer state does not fit this job's optimizer ({exc})") from None
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return meta


# --- the loop -----------------------------------------------------------------------------
def train(*, model_path: str, train_rows: list[dict], validation_rows: list[dict] | None, method: Any,
          method_options: dict, recipe: Any, recipe_options: dict | None = None, hp: dict, output_dir: Path,
          on_event: Callable[[dict], None] = lambda e: None, should_stop: Callable[[], bool] = lambda: False,
          identity: dict | None = None, checkpoint_sink: Callable[[Path, int], None] | None = None,
          resume_from: Path | None = None, resume_source: str = "",
          on_trained: Callable[[Any, Any, Path], None] | None = None) -> dict:
    """Train `model_path` with `method` (a PeftMethod) and `recipe` (a TrainingRecipe).

    Emits progress/metrics/log events through `on_event`; checks `should_stop` before every
    optimizer step, then writes a checkpoint (when `checkpoint_sink` is given) and raises
    TrainingCancelled. `checkpoint_sink(folder, step)` stores a complete checkpoint folder
    (every `checkpoint_every_steps`, rank 0 only); `resume_from` is such a folder to continue
    from (CheckpointError when it is corrupt or its `identity` differs from this run's).
    Saves with method.save() (plus the tokenizer) to ``output_dir/"output"``, then (rank 0 only)
    calls ``on_trained(model, tokenizer, output folder)`` with the trained model still in memory
    (in eval mode), e.g. to record reference answers next to what was saved.

    Returns a dict: output_dir, artifact_kind, train_seconds (optimizer steps only), train_tokens,
    tokens_per_second, first_train_loss, final_train_loss (mean of the last
    ``_FINAL_LOSS_WINDOW`` steps), best_validation_loss, best_step, steps, resumed_from_step,
    trainable_parameters, total_parameters, peak_memory_bytes, stopped_early, truncated_rows,
    train_examples, final_metrics (the recipe's last evaluate()), train_loss_curve and
    validation_curve ([step, loss] pairs).
    """
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.core.contracts import RecipeContext
    from tunesmith.core.errors import InvalidArgument
    from tunesmith.core.formats.checkpoint import CheckpointMeta

    h = resolve_hyperparameters(hp)
    if not train_rows:
        raise InvalidArgument("no training rows", field="train_rows")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(str(h["device"]))
    accelerator = Accelerator(cpu=device == "cpu")
    rank, world = accelerator.process_index, accelerator.num_processes
    if device.startswith("cuda") and world > 1:
        device = str(accelerator.device)
    elif device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    main = accelerator.is_main_process
    random.seed(h["seed"])
    torch.manual_seed(h["seed"])

    def log(message: str) -> None:
        if main:
            on_event({"type": "log", "level": "info", "message": message})

    threads = None
    if device == "cpu":
        threads = ThreadTuner(h["num_threads"], log, max_threads=max(1, _cpu_threads() // world))
        threads.tune(0.0)

    # -- model and data --
    t_load = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch_dtype(h["dtype"], device)
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
    if not params:
        raise ValueError(f"method {method.name!r} left no trainable parameters")
    trainable, total_params = method.parameter_counts(model)

    options = recipe.validate_options(dict(recipe_options or {}))
    ctx = RecipeContext(model=model, tokenizer=tokenizer, method=method, hyperparameters=h, options=options,
                        device=device, log=log)
    figures = recipe.setup(ctx, train_rows, validation_rows or [])
    has_validation = bool(validation_rows)
    log(f"loaded {model_path} on {device} ({dtype}) in {time.perf_counter() - t_load:.1f}s; "
        f"{trainable:,} trainable of {total_params:,} parameters; {figures.get('train_examples', len(train_rows))} "
        f"training examples, {len(validation_rows or [])} validation rows, {figures.get('truncated_rows', 0)} "
        f"truncated to {h['max_seq_length']} tokens" + (f"; {world} processes" if world > 1 else ""))

    ga = h["gradient_accumulation_steps"]
    group_size = ga * world
    epoch_batches: dict[int, list[dict]] = {}

    def groups_of(epoch: int) -> list[list[dict]]:
        if epoch not in epoch_batches:
            epoch_batches.clear()
            epoch_batches[epoch] = recipe.train_batches(epoch, h["seed"])
        b = epoch_batches[epoch]
        return [b[i:i + group_size] for i in range(0, len(b), group_size)]

    steps_per_epoch = max(1, len(groups_of(0)))
    total_steps = h["max_steps"] if h["max_steps"] > 0 else steps_per_epoch * h["epochs"]
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = h["warmup_steps"] if h["warmup_steps"] is not None else math.ceil(h["warmup_ratio"] * total_steps)
    every_ckpt = checkpoint_interval(h, total_steps)

    optimizer = make_optimizer(params, h)
    wrapped = accelerator.prepare_model(model) if world > 1 else model

    # -- state (what a checkpoint carries) --
    st: dict[str, Any] = {"tokens_seen": 0, "train_seconds": 0.0, "step_losses": [], "train_curve": [],
                          "validation_curve": [], "best_val": None, "best_step": 0, "bad_evals": 0,
                          "last_eval_step": -1, "log_loss_sum": 0.0, "log_loss_items": 0}
    step, start_epoch, start_group = 0, 0, 0
    identity = dict(identity or {})
    if resume_from is not None:
        meta = load_checkpoint(resume_from, resume_source or str(resume_from), model, optimizer, identity)
        step, start_epoch, start_group = meta.step, meta.epoch, meta.group
        st.update(meta.state)
        log(f"resumed from {resume_source or resume_from} at step {step} (epoch {start_epoch}, group {start_group})")
    resumed_from_step = step
    best_weights: dict[str, Any] | None = None

    def save_checkpoint(epoch: int, group: int) -> None:
        if checkpoint_sink is None or not main:
            return
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ckpt-", dir=str(output_dir)) as tmp:
            write_checkpoint(Path(tmp), model, optimizer,
                             CheckpointMeta(step=step, epoch=epoch, group=group, state=dict(st), identity=identity))
            checkpoint_sink(Path(tmp), step)

    def run_eval() -> tuple[dict, bool]:
        """Evaluate; emit metrics; (metrics, whether early stopping says stop)."""
        nonlocal best_weights
        st["last_eval_step"] = step
        wrapped.eval()
        with torch.inference_mode():
            metrics = {k: float(v) for k, v in recipe.evaluate(model).items()}
        wrapped.train()
        if "loss" not in metrics:
            return metrics, False
        vloss = metrics["loss"]
        st["validation_curve"].append([step, vloss])
        if main:
            on_event({"type": "metrics", "name": "validation", "values": {**metrics, "step": step}})
        if st["best_val"] is None or vloss < st["best_val"]:
            st["best_val"], st["best_step"], st["bad_evals"] = vloss, step, 0
            best_weights = {n: p.detach().to("cpu", copy=True) for n, p in _trainable(model).items()}
        else:
            st["bad_evals"] += 1
        patience = h["early_stopping_patience"]
        return metrics, patience > 0 and st["bad_evals"] >= patience

    if h["packing"] and not recipe.supports_packing:
        raise InvalidArgument(f"the {recipe.name} recipe does not pack rows", field="hyperparameters.packing")
    log(f"training {total_steps} steps ({n_epochs} epoch(s), {steps_per_epoch} steps each, batch "
        f"{h['batch_size']} x {ga} accumulation" + (f" x {world} processes" if world > 1 else "")
        + f"), warmup {warmup} steps, a checkpoint every {every_ckpt} steps")
    stopped_early = False
    final_metrics: dict[str, float] = {}
    done = step >= total_steps
    clip = h["max_grad_norm"] if h["max_grad_norm"] > 0 else float("inf")
    for epoch in range(start_epoch, n_epochs):
        if done:
            break
        groups = groups_of(epoch)
        for g_idx in range(start_group if epoch == start_epoch else 0, len(groups)):
            if step >= total_steps:
                done = True
                break
            if _stop_everywhere(should_stop(), world, accelerator.device):
                save_checkpoint(epoch, g_idx)
                log(f"stopped at step {step}" + (" (checkpoint saved)" if checkpoint_sink else ""))
                raise TrainingCancelled(step)
            group = groups[g_idx]
            mine = group[rank::world]
            t0 = time.perf_counter()
            if threads is not None:
                threads.tune(st["train_seconds"])
            n_items = sum(int(b["n_items"]) for b in group)
            lr = h["learning_rate"] * lr_factor(step, total_steps, warmup, h["lr_scheduler"])
            for pg in optimizer.param_groups:
                pg["lr"] = lr
            loss_total, group_tokens = 0.0, 0
            for batch in mine:
                # Several processes: no DDP sync per micro-batch; one all-reduce per group below.
                with accelerator.no_sync(wrapped) if world > 1 else contextlib.nullcontext():
                    loss_sum, _ = recipe.loss(wrapped, batch)
                    accelerator.backward(loss_sum / max(1, n_items))
                loss_total += float(loss_sum.detach())
                group_tokens += int(batch["n_tokens"])
            if world > 1:
                loss_total, group_tokens = _all_reduce_group(params, loss_total, group_tokens)
            st["tokens_seen"] += group_tokens
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            st["train_seconds"] += time.perf_counter() - t0
            step += 1
            step_loss = loss_total / max(1, n_items)
            st["step_losses"].append(step_loss)
            st["log_loss_sum"] += loss_total
            st["log_loss_items"] += n_items

            if step % h["log_every_steps"] == 0 or step == total_steps:
                loss = st["log_loss_sum"] / max(1, st["log_loss_items"])
                st["train_curve"].append([step, loss])
                secs = st["train_seconds"]
                if main:
                    on_event({
                        "type": "progress", "phase": "train", "step": step, "total_steps": total_steps,
                        "epoch": epoch + (g_idx + 1) / len(groups), "loss": loss, "learning_rate": lr,
                        "tokens_per_second": st["tokens_seen"] / secs if secs > 0 else 0.0,
                        "eta_seconds": (total_steps - step) * secs / max(1, step - resumed_from_step)
                        if step > resumed_from_step else 0.0,
                        "tokens_seen": st["tokens_seen"], "elapsed_seconds": secs, "grad_norm": grad_norm,
                        "memory_bytes": peak_memory_bytes(device),
                    })
                st["log_loss_sum"], st["log_loss_items"] = 0.0, 0

            if has_validation and h["eval_every_steps"] > 0 and step % h["eval_every_steps"] == 0:
                final_metrics, stop_now = run_eval()
                if stop_now:
                    stopped_early = done = True
                    break
            if step % every_ckpt == 0 and step < total_steps:
                nxt_epoch, nxt_group = (epoch, g_idx + 1) if g_idx + 1 < len(groups) else (epoch + 1, 0)
                save_checkpoint(nxt_epoch, nxt_group)
        if done:
            break
        if has_validation and h["eval_every_steps"] == 0 and st["last_eval_step"] != step:
            final_metrics, stop_now = run_eval()
            if stop_now:
                stopped_early = True
                break
    if stopped_early:
        log(f"early stopping at step {step}: validation loss did not improve for "
            f"{h['early_stopping_patience']} evaluation(s) (best {st['best_val']:.4f} at step {st['best_step']})")
    elif has_validation and st["last_eval_step"] != step:
        final_metrics, _ = run_eval()
    if best_weights is not None and st["best_step"] != step:
        with torch.no_grad():
            for n, p in _trainable(model).items():
                p.copy_(best_weights[n].to(p.device, p.dtype))
        log(f"restored the best weights (step {st['best_step']}, validation loss {st['best_val']:.4f})")
        model.eval()
        with torch.inference_mode():
            final_metrics = {k: float(v) for k, v in recipe.evaluate(model).items()}
    elif best_weights is None and st["best_step"] and st["best_step"] != step and resume_from is not None:
        log("the best weights were seen before the resume and are not kept in checkpoints; saving the last ones")

    # -- save --
    out = output_dir / "output"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        model.eval()
        method.save(model, out)
        tokenizer.save_pretrained(str(out))
    accelerator.wait_for_everyone()
    if main and on_trained is not None:
        on_trained(model, tokenizer, out)
    secs = st["train_seconds"]
    tps = st["tokens_seen"] / secs if secs > 0 else 0.0
    window = st["step_losses"][-_FINAL_LOSS_WINDOW:]
    result = {
        "output_dir": str(out), "artifact_kind": method.artifact_kind, "train_seconds": secs,
        "train_tokens": st["tokens_seen"], "tokens_per_second": tps,
        "first_train_loss": st["step_losses"][0] if st["step_losses"] else None,
        "final_train_loss": sum(window) / len(window) if window else None,
        "best_validation_loss": st["best_val"], "best_step": st["best_step"], "steps": step,
        "resumed_from_step": resumed_from_step, "trainable_parameters": trainable,
        "total_parameters": total_params, "peak_memory_bytes": peak_memory_bytes(device),
        "stopped_early": stopped_early, "truncated_rows": figures.get("truncated_rows", 0),
        "train_examples": figures.get("train_examples", len(train_rows)), "final_metrics": final_metrics,
        "train_loss_curve": st["train_curve"], "validation_curve": st["validation_curve"], "world_size": world,
    }
    log(f"trained {step} steps in {secs:.1f}s ({tps:.0f} tokens/s); saved to {out}")
    return result


def _stop_everywhere(stop: bool, world: int, device: Any) -> bool:
    """Whether any process was asked to stop (all ranks must stop at the same step)."""
    if world == 1:
        return stop
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _all_reduce_group(params: list, loss_total: float, tokens: int) -> tuple[float, int]:
    """Sum every rank's gradients (a rank with no micro-batch in a short last group adds zeros),
    the group's summed loss and its tokens; returns the summed loss and tokens."""
    import torch
    import torch.distributed as dist

    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    figures = torch.tensor([loss_total, float(tokens)], dtype=torch.float64, device=grads[0].device)
    dist.all_reduce(figures)
    return float(figures[0]), int(figures[1])
