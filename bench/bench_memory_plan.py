"""PlanMemory against reality: planned bytes vs the measured peak memory of real training steps.

    python bench/bench_memory_plan.py [--storage DIR] [--methods full,lora,qlora] [--steps 4]
                                      [--batch-size 8] [--seq 128]

For the bundled model (SmolLM2-135M-Instruct, imported into the storage on first use, as
`tunesmith models import-bundled --storage DIR` does), each method trains a few AdamW steps on
the CPU in float32: AutoModelForCausalLM.from_pretrained (+ the method's load_kwargs), the
method's apply(), then forward with labels / backward / step / zero_grad(set_to_none=True) on
random token ids, batch 8 x 128 with right padding in half the rows (as SFT batches have). Each
method runs in a fresh subprocess that records its resident set (VmRSS from /proc/self/status,
polled every 2 ms by a thread): the baseline after the imports and before the model load, and
the peak during the training steps.

Printed per method: planned (plan.total_bytes minus the plan's fixed CPU runtime term, since
the baseline is subtracted from the measurement), measured (peak RSS during the steps minus the
baseline; how much of it is file-backed, i.e. mapped safetensors pages, is shown too) and
planned / measured (target: within 25%, i.e. 0.75-1.25), plus the plan's parts.
--mmap-threshold N runs the training with MALLOC_MMAP_THRESHOLD_=N, so glibc returns freed
blocks and the peak RSS is the live peak; the plan then leaves out its CPU heap-retention term
(tunesmith.trainer.planner.CPU_HEAP_RETENTION), and the two compare the live estimate alone.
The plan is made by tunesmith.trainer.planner.plan_memory with the same hyperparameters
(device "cpu", dtype float32, the same batch and sequence length).

The methods are the plugin registry's (tunesmith_builtin.peft_full, peft_lora, peft_qlora with
their default options: LoRA rank 16 on every linear layer; QLoRA 4-bit NF4, no double quant).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in ("services", "plugins", "clients/python"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))


# --- the child: one method's real training steps ------------------------------------------
def _status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        text = f.read()
    return {key: int(re.search(rf"{key}:\s+(\d+)\s+kB", text).group(1)) * 1024
            for key in ("VmRSS", "RssAnon", "RssFile")}


def _rss() -> int:
    return _status()["VmRSS"]


class _Poller(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.at_peak: dict[str, int] = {}
        self.running = True

    def reset(self) -> None:
        self.at_peak = _status()
        self.peak = self.at_peak["VmRSS"]

    def run(self) -> None:
        while self.running:
            status = _status()
            if status["VmRSS"] > self.peak:
                self.peak, self.at_peak = status["VmRSS"], status
            time.sleep(0.002)


def child(a: argparse.Namespace) -> None:
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM

    import peft  # noqa: F401

    from tunesmith.core.plugins import get_registry

    method = get_registry().get("peft_methods", a.child)
    options = method.validate(json.loads(a.options))
    torch.manual_seed(0)
    start = _status()
    baseline, baseline_file = start["VmRSS"], start["RssFile"]
    poller = _Poller()
    poller.reset()
    poller.start()

    kwargs = dict(method.load_kwargs(options, "cpu") or {})
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32, **kwargs)
    model.config.use_cache = False
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = method.apply(model, options)
    if a.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(params, lr=1e-5, foreach=True)
    after_load = _rss()
    peak_load = poller.peak

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    poller.reset()
    losses = []
    t0 = time.perf_counter()
    for _ in range(a.steps):
        ids = torch.randint(0, vocab, (a.batch_size, a.seq), generator=gen)
        mask = torch.ones_like(ids)
        for row in range(0, a.batch_size, 2):  # right padding in every other row
            cut = a.seq // 2 + row * (a.seq // (2 * a.batch_size))
            mask[row, cut:] = 0
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    seconds = time.perf_counter() - t0
    peak_steps = poller.peak
    file_at_peak = poller.at_peak.get("RssFile", 0) - baseline_file
    poller.running = False
    trainable = sum(p.numel() for p in params)
    print(json.dumps({"baseline": baseline, "after_load": after_load, "peak_load": peak_load,
                      "peak_steps": peak_steps, "file_backed_at_peak": file_at_peak, "seconds": seconds,
                      "losses": losses, "trainable": trainable, "threads": torch.get_num_threads()}))


# --- the parent ---------------------------------------------------------------------------
METHODS = {
    "full": ("full", {}, False),
    "lora": ("lora", {}, False),
    "qlora": ("qlora", {}, False),
    "lora-gc": ("lora", {}, True),
    "full-gc": ("full", {}, True),
}


def plan(method_name: str, checkpointing: bool, a: argparse.Namespace, runtime) -> Any:
    from tunesmith.api.common.v1 import common_pb2
    from tunesmith.api.trainer.v1 import trainer_pb2
    from tunesmith.core.models import BUNDLED_NAME
    from tunesmith.trainer.planner import plan_memory

    config = {"full": {"full": trainer_pb2.FullConfig()}, "lora": {"lora": trainer_pb2.LoraConfig()},
              "qlora": {"qlora": trainer_pb2.QloraConfig()}}[method_name]
    spec = trainer_pb2.TrainingJobSpec(
        base_model=BUNDLED_NAME, method=trainer_pb2.MethodSpec(**config),
        hyperparameters=trainer_pb2.Hyperparameters(batch_size=a.batch_size, max_seq_length=a.seq,
                                                    dtype=common_pb2.DTYPE_FLOAT32,
                                                    gradient_checkpointing=checkpointing))
    return plan_memory(trainer_pb2.PlanMemoryRequest(spec=spec, device="cpu"), runtime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storage", default=None, help="storage root (default: a temporary folder)")
    p.add_argument("--methods", default="full,lora,qlora", help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    p.add_argument("--mmap-threshold", type=int, default=0,
                   help="run the training subprocesses with MALLOC_MMAP_THRESHOLD_=N (e.g. 131072): glibc then "
                        "returns every freed block of N bytes or more at once, so the peak RSS is the live peak")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.child:
        child(a)
        return 0

    from tunesmith.core.plugins import get_registry
    from tunesmith.core.runtime import Runtime
    from tunesmith.core.storage import LocalStorage
    from tunesmith.trainer.planner import CPU_RUNTIME_BYTES, explain

    if a.mmap_threshold:  # the planner then leaves out glibc's heap retention (CPU_HEAP_RETENTION)
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)
    storage_root = a.storage or tempfile.mkdtemp(prefix="tunesmith-bench-")
    runtime = Runtime(LocalStorage(storage_root), get_registry())
    entry = runtime.models.ensure_bundled()  # what `tunesmith models import-bundled` does
    model_dir = str(runtime.storage.resolve(entry.artifact.uri))
    print(f"model {entry.name} ({model_dir}); batch {a.batch_size} x {a.seq}, {a.steps} AdamW steps, CPU float32"
          + (f"; MALLOC_MMAP_THRESHOLD_={a.mmap_threshold}" if a.mmap_threshold else "; default glibc malloc"))

    rows = []
    for label in [m.strip() for m in a.methods.split(",") if m.strip()]:
        method_name, options, checkpointing = METHODS[label]
        memory_plan = plan(method_name, checkpointing, a, runtime)
        cmd = [sys.executable, __file__, "--child", method_name, "--options", json.dumps(options),
               "--model-dir", model_dir, "--steps", str(a.steps), "--batch-size", str(a.batch_size),
               "--seq", str(a.seq)] + (["--gradient-checkpointing"] if checkpointing else [])
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if a.mmap_threshold:
            env["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{label}: the training run failed:\n{done.stderr[-3000:]}")
            rows.append({"method": label, "error": done.stderr[-500:]})
            continue
        m = json.loads(done.stdout.strip().splitlines()[-1])
        planned = memory_plan.total_bytes - CPU_RUNTIME_BYTES
        measured = m["peak_steps"] - m["baseline"]
        ratio = planned / measured
        row = {"method": label, "planned_bytes": planned, "measured_bytes": measured, "ratio": round(ratio, 3),
               "baseline_rss": m["baseline"], "peak_rss_steps": m["peak_steps"], "peak_rss_load": m["peak_load"],
               "file_backed_at_peak": m["file_backed_at_peak"],
               "weights": memory_plan.weights_bytes, "gradients": memory_plan.gradients_bytes,
               "optimizer": memory_plan.optimizer_bytes, "activations": memory_plan.activations_bytes,
               "trainable_planned": memory_plan.trainable_parameters, "trainable_real": m["trainable"],
               "seconds": round(m["seconds"], 1), "losses": [round(x, 3) for x in m["losses"]]}
        rows.append(row)
        mib = 2**20
        print(f"\n{label}: planned {planned / mib:,.0f} MiB, measured {measured / mib:,.0f} MiB "
              f"(peak RSS {m['peak_steps'] / mib:,.0f} MiB - baseline {m['baseline'] / mib:,.0f} MiB; "
              f"{m['file_backed_at_peak'] / mib:,.0f} MiB of it file-backed: mapped weight files), "
              f"ratio {ratio:.2f} {'ok' if 0.75 <= ratio <= 1.25 else 'OUTSIDE 25%'}; "
              f"trainable {memory_plan.trainable_parameters:,} planned / {m['trainable']:,} real; "
              f"{m['seconds']:.1f} s, {m['threads']} threads")
        print("  " + explain(memory_plan).replace("\n", "\n  "))
    if a.json:
        print(json.dumps(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
