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

Methods come from the plugin registry; while a built-in method plugin is missing from this
checkout (full, qlora), a stand-in defined here with the same behaviour is used and said so.
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
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for sub in ("services", "plugins", "clients/python"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))


# --- stand-ins for method plugins not in this checkout ------------------------------------
class _FullStandIn:
    name = "full"
    supports_merge = False
    servable_by_vllm = True
    quantized_base = False
    artifact_kind = "model"
    prompt_learning = False

    def validate(self, options):
        return {}

    def load_kwargs(self, options, device):
        return {}

    def apply(self, model, options):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def parameter_counts(self, model):
        return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))

    def save(self, model, folder):
        model.save_pretrained(folder)


class _QloraStandIn:
    """4-bit NF4 base (bitsandbytes), peft's prepare_model_for_kbit_training, LoRA on top."""

    name = "qlora"
    supports_merge = True
    servable_by_vllm = True
    quantized_base = True
    artifact_kind = "adapter"
    prompt_learning = False

    def _lora(self):
        from tunesmith_builtin.peft_lora import LoraMethod

        return LoraMethod()

    def validate(self, options):
        o = dict(options or {})
        return {"lora": self._lora().validate(o.get("lora") or {}), "bits": int(o.get("bits") or 4),
                "double_quant": bool(o.get("double_quant", False)), "compute_dtype": o.get("compute_dtype") or "float32"}

    def load_kwargs(self, options, device):
        import torch
        from transformers import BitsAndBytesConfig

        o = self.validate(options)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[o["compute_dtype"]]
        if o["bits"] == 8:
            return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
        return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_use_double_quant=o["double_quant"],
                                                          bnb_4bit_compute_dtype=dtype)}

    def apply(self, model, options):
        from peft import prepare_model_for_kbit_training

        o = self.validate(options)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return self._lora().apply(model, o["lora"])

    def parameter_counts(self, model):
        return tuple(model.get_nb_trainable_parameters())

    def save(self, model, folder):
        model.save_pretrained(folder)


class _Registry:
    """The plugin registry's get/require over the methods found (real plugins first)."""

    def __init__(self, methods: dict[str, Any]):
        self.methods = methods

    def get(self, kind, name):
        from tunesmith.core.errors import NotFound

        if kind != "peft_methods" or name not in self.methods:
            raise NotFound(f"no {kind} named {name!r}", field=kind)
        return self.methods[name]

    def require(self, kind, name, field):
        from tunesmith.core.errors import InvalidArgument, NotFound

        try:
            return self.get(kind, name)
        except NotFound as exc:
            raise InvalidArgument(exc.message, field=field) from None


def method_registry() -> tuple[Any, list[str]]:
    """(a registry with full, lora and qlora, notes on stand-ins used)."""
    notes: list[str] = []
    try:
        from tunesmith.core.plugins import get_registry

        registry = get_registry()
        methods = dict(registry.all("peft_methods"))
    except Exception as exc:  # noqa: BLE001 - a plugin of this checkout is missing or broken
        notes.append(f"plugin registry unavailable ({exc}); loading method plugins one by one")
        methods = {}
        import importlib

        for module in ("peft_full", "peft_lora", "peft_qlora"):
            try:
                mod = importlib.import_module(f"tunesmith_builtin.{module}")
            except ImportError:
                continue
            mod.register_peft_methods(register=methods.__setitem__)
    for name, stand_in in (("full", _FullStandIn), ("qlora", _QloraStandIn)):
        if name not in methods:
            methods[name] = stand_in()
            notes.append(f"method {name!r}: no plugin in this checkout, using the bench's stand-in")
    for name, plugin in methods.items():
        for attr, value in (("servable_by_vllm", True), ("artifact_kind", "adapter"), ("prompt_learning", False)):
            if not hasattr(plugin, attr):  # a plugin still on the older contract
                setattr(plugin, attr, value)
    return _Registry(methods), notes


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

    registry, _ = method_registry()
    method = registry.get("peft_methods", a.child)
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
                      "peak_steps": peak_steps, "file_backed_at_peak": file_at_peak, "seconds": seconds, "losses": losses, "trainable": trainable,
                      "threads": torch.get_num_threads()}))


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

    from tunesmith.core.models import ModelStore
    from tunesmith.core.storage import LocalStorage
    from tunesmith.trainer.planner import CPU_RUNTIME_BYTES, explain

    if a.mmap_threshold:  # the planner then leaves out glibc's heap retention (CPU_HEAP_RETENTION)
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)
    storage_root = a.storage or tempfile.mkdtemp(prefix="tunesmith-bench-")
    storage = LocalStorage(storage_root)
    models = ModelStore(storage)
    entry = models.ensure_bundled()
    model_dir = str(storage.resolve(entry.artifact.uri))
    registry, notes = method_registry()
    runtime = SimpleNamespace(storage=storage, registry=registry, models=models)
    for note in notes:
        print(f"note: {note}")
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
