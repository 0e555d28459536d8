"""QLoRA against LoRA on the bundled model: the memory the model costs, tokens/s, peak RSS.

    python bench/bench_qlora_cpu.py MODEL_DIR [--rows 96] [--batch-size 8] [--rank 16] [--threads 2]

MODEL_DIR: a local Hugging Face folder (the bundled SmolLM2-135M-Instruct: `tunesmith models
import-bundled --storage DIR`, then the folder `tunesmith models list` shows). Each method runs
the real SFT recipe in the training loop (tunesmith.trainer.sft.train_sft) for one epoch on the
same BANKING77 rows (examples/banking77/train.csv, the demo's prompt), LoRA r=16 on all linear
layers, float32 compute, in a fresh subprocess that polls its own VmRSS every 2 ms:

- baseline: RSS after importing torch, transformers, peft and bitsandbytes, before the model
  loads;
- model cost: peak RSS during loading and training minus the baseline (what the model, its
  adapters, optimizer state and activations cost);
- peak RSS as it is (on a 135M model the process itself dominates it);
- tokens/s: the loop's own figure (non-padding tokens / optimizer-step seconds).

Prints one line per method and the QLoRA / LoRA ratios (goal: model cost <= 0.5x).
--gradient-checkpointing runs both with activation recomputation, so that the weights, not the
activations of the batch, dominate what the model costs. For a 7B
model, plan it with PlanMemory (bench/bench_memory_plan.py checks the planner against measured
peaks).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Route this banking customer message to its intent.\nMessage: {text}\nIntent:"


def banking_rows(n: int) -> list[dict]:
    """The first n rows of examples/banking77/train.csv, interleaved across intents."""
    by_label: dict[str, list[dict]] = {}
    with open(ROOT / "examples" / "banking77" / "train.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_label.setdefault(row["category"], []).append(row)
    rows, i = [], 0
    while len(rows) < n:
        for label in sorted(by_label):
            if i < len(by_label[label]) and len(rows) < n:
                r = by_label[label][i]
                rows.append({"prompt": PROMPT.format(text=r["text"]), "completion": f" {label}"})
        i += 1
    return rows


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(a: argparse.Namespace) -> None:
    import bitsandbytes  # noqa: F401 - imported before the baseline, for both methods alike
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from tunesmith.core.plugins import get_registry
    from tunesmith.trainer.sft import train_sft

    method = get_registry().get("peft_methods", a.child)
    options = {"rank": a.rank} if a.child == "lora" else {"lora": {"rank": a.rank}}
    rows = banking_rows(a.rows)
    baseline = _rss()
    peak = [baseline]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    threading.Thread(target=poll, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        r = train_sft(model_path=a.model, train_rows=rows, validation_rows=None, method=method,
                      method_options=options, output_dir=Path(tmp),
                      hp={"epochs": 1, "batch_size": a.batch_size, "learning_rate": 2e-4, "seed": 0,
                          "dtype": "float32", "device": "cpu", "num_threads": a.threads,
                          "log_every_steps": 10**9, "max_seq_length": 128,
                          "gradient_checkpointing": a.gradient_checkpointing})
    stop.set()
    print(json.dumps({"method": a.child, "baseline_bytes": baseline, "peak_rss_bytes": peak[0],
                      "model_bytes": peak[0] - baseline, "tokens_per_second": r["tokens_per_second"],
                      "trainable_parameters": r["trainable_parameters"], "first_loss": r["first_train_loss"],
                      "final_loss": r["final_train_loss"]}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="both runs recompute activations in backward (then the weights dominate)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return 0
    results = {}
    for name in ("lora", "qlora"):
        cmd = [sys.executable, __file__, a.model, "--rows", str(a.rows), "--batch-size", str(a.batch_size),
               "--rank", str(a.rank), "--threads", str(a.threads), "--child", name]
        if a.gradient_checkpointing:
            cmd.append("--gradient-checkpointing")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:6s} model cost {r['model_bytes'] / 2**20:7.0f} MiB  peak RSS {r['peak_rss_bytes'] / 2**20:7.0f} MiB"
              f"  (baseline {r['baseline_bytes'] / 2**20:.0f} MiB)  {r['tokens_per_second']:6.1f} tokens/s  "
              f"loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}  trainable {r['trainable_parameters']:,}")
    lo, q = results["lora"], results["qlora"]
    print(f"qlora / lora: model cost {q['model_bytes'] / lo['model_bytes']:.2f}x (goal <= 0.5x), "
          f"peak RSS {q['peak_rss_bytes'] / lo['peak_rss_bytes']:.2f}x, "
          f"tokens/s {q['tokens_per_second'] / lo['tokens_per_second']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
