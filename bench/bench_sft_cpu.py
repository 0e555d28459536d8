"""Tunesmith's SFT recipe against transformers Trainer + peft: tokens/s and held-out accuracy.

    python bench/bench_sft_cpu.py MODEL_DIR [--intents 10] [--rows 200] [--eval-rows 100] [--epochs 1]
                                  [--batch-size 8] [--threads 2] [--packing] [--device cpu]

MODEL_DIR is a local Hugging Face causal-LM folder (e.g. SmolLM2-135M-Instruct in safetensors).

Data: real BANKING77 rows. The intents are the demo's (tunesmith.cli.demo: its 10 INTENTS first,
then the other BANKING77 intents in name order, --intents in all). Training rows come from
examples/banking77/train.csv, held-out rows from examples/banking77/test.csv, both filtered to
those intents, shuffled per intent (seeded) and interleaved round-robin across the intents, then
the first --rows / --eval-rows taken. The prompt is the demo's:
"Route this banking customer message to its intent.\\nMessage: {text}\\nIntent:" -> " {category}".

Both runs, each in a fresh subprocess: LoRA r=16, alpha=32, all linear layers, dropout 0, float32,
learning rate 5e-4 with linear decay and warmup ratio 0.05 (ceil(0.05 * steps) warmup steps, as
the demo), AdamW without weight decay, grad-norm clip 1.0, the same batch size, epochs, seed,
max_seq_length (256) and tokenisation (tunesmith.trainer.sft.encode_rows: prompt with the
tokenizer's special tokens, completion + EOS; completion-only labels, -100 on prompt tokens),
and the same CPU thread count (--threads N fixes both to N, default 2; 0 = the Tunesmith loop
calibrates and the Trainer uses torch's default).

- ours: tunesmith.trainer.sft.train_sft with the built-in "lora" method (length-grouped,
  left-padded batches with logits only where labels are; --packing packs rows instead).
- HF: what a user would write: AutoModelForCausalLM + peft.get_peft_model(LoraConfig(...)) +
  Trainer with DataCollatorForSeq2Seq (pads each batch to its longest row, labels -100 on
  padding), the default random sampler (no length grouping), report_to none,
  dataloader_num_workers 0, no evaluation or checkpoints during training.

tokens/s = non-padding tokens processed / training seconds (ours: its optimizer steps; HF: the
Trainer's own train_runtime). After training, each subprocess saves the adapter, loads it with
peft.PeftModel.from_pretrained on a freshly loaded base and measures held-out exact-match
accuracy with the one function `heldout_accuracy` below (left-padded batched greedy `generate`,
max_new_tokens = the longest label in tokens + 1, the answer cut at its first newline and
stripped, compared with the label). Evaluation time is not counted in tokens/s.

Prints one line per run (tokens/s, train seconds, tokens, steps, loss first -> last, accuracy),
then the ratio ours/HF tokens/s and both accuracies.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "banking77"
INSTRUCTION = "Route this banking customer message to its intent."
LEARNING_RATE = 5e-4
WARMUP_RATIO = 0.05
MAX_SEQ_LENGTH = 256
EVAL_BATCH_SIZE = 25


def intents_for(n: int) -> list[str]:
    from tunesmith.cli.demo import INTENTS, _intents

    assert _intents(EXAMPLES, len(INTENTS)) == INTENTS
    return _intents(EXAMPLES, n)


def banking_rows(csv_path: Path, intents: list[str], n: int, seed: int) -> list[dict]:
    """`n` prompt/completion rows of `intents` from `csv_path`, interleaved across the intents."""
    by_intent: dict[str, list[str]] = {i: [] for i in intents}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] in by_intent:
                by_intent[row["category"]].append(row["text"])
    rng = random.Random(seed)
    for texts in by_intent.values():
        rng.shuffle(texts)
    rows: list[dict] = []
    for k in range(max(len(t) for t in by_intent.values())):
        for intent in intents:
            if k < len(by_intent[intent]):
                rows.append({"prompt": f"{INSTRUCTION}\nMessage: {by_intent[intent][k]}\nIntent:",
                             "completion": f" {intent}"})
    if len(rows) < n:
        raise SystemExit(f"{csv_path} has only {len(rows)} rows of these {len(intents)} intents, {n} asked")
    return rows[:n]


def data(a: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    intents = intents_for(a.intents)
    return (banking_rows(EXAMPLES / "train.csv", intents, a.rows, a.seed),
            banking_rows(EXAMPLES / "test.csv", intents, a.eval_rows, a.seed))


def heldout_accuracy(model_path: str, adapter_dir: str, rows: list[dict], device: str) -> tuple[float, float]:
    """Exact-match accuracy of the adapter in `adapter_dir` on `rows` and the seconds it took.
    The one evaluation both runs use: a freshly loaded float32 base + PeftModel.from_pretrained,
    left-padded batches, greedy generate with max_new_tokens = longest label in tokens + 1, the
    answer cut at the first newline and stripped, compared with the stripped label."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).to(device)
    model.eval()
    labels = [r["completion"].strip() for r in rows]
    max_new = max(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows) + 1
    correct = 0
    for i in range(0, len(rows), EVAL_BATCH_SIZE):
        chunk = rows[i:i + EVAL_BATCH_SIZE]
        enc = tok([r["prompt"] for r in chunk], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        answers = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(ans.split("\n", 1)[0].strip() == lab for ans, lab in zip(answers, labels[i:i + len(chunk)]))
    return correct / len(rows), time.perf_counter() - t0


def run_ours(a: argparse.Namespace) -> dict:
    import torch

    from tunesmith.trainer.sft import train_sft
    from tunesmith_builtin.peft_lora import LoraMethod

    train_rows, eval_rows = data(a)
    events: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        r = train_sft(on_event=events.append, model_path=a.model, train_rows=train_rows, validation_rows=None,
                      method=LoraMethod(),
                      method_options={"rank": a.rank, "alpha": 2 * a.rank, "dropout": 0.0,
                                      "target_modules": "all-linear"},
                      hp={"epochs": a.epochs, "batch_size": a.batch_size, "learning_rate": LEARNING_RATE,
                          "warmup_ratio": WARMUP_RATIO, "seed": a.seed, "max_seq_length": MAX_SEQ_LENGTH,
                          "dtype": "float32", "log_every_steps": 10**9, "device": a.device,
                          "num_threads": a.threads, "packing": a.packing},
                      output_dir=Path(tmp))
        threads_used = torch.get_num_threads()
        accuracy, eval_seconds = heldout_accuracy(a.model, r["output_dir"], eval_rows, a.device)
    return {"tokens_per_second": r["tokens_per_second"], "train_seconds": r["train_seconds"],
            "train_tokens": r["train_tokens"], "steps": r["steps"], "first_loss": r["first_train_loss"],
            "final_loss": r["final_train_loss"], "accuracy": accuracy, "eval_seconds": eval_seconds,
            "threads": [e["message"] for e in events if e["type"] == "log" and "thread" in e["message"].lower()]
            + [f"torch threads at the end of training: {threads_used}"]}


def run_hf(a: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from tunesmith.trainer.sft import encode_rows

    if a.threads:
        torch.set_num_threads(a.threads)
    train_rows, eval_rows = data(a)
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    if a.device != "cpu":
        model.to(a.device)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    encoded = encode_rows(tok, train_rows, MAX_SEQ_LENGTH)  # the same ids and completion-only labels as ours
    dataset = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
               for e in encoded]
    tokens = sum(len(e.input_ids) for e in encoded) * a.epochs
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=a.batch_size, num_train_epochs=a.epochs,
                                 learning_rate=LEARNING_RATE, lr_scheduler_type="linear", warmup_steps=WARMUP_RATIO,
                                 weight_decay=0.0, max_grad_norm=1.0, seed=a.seed, logging_steps=1,
                                 save_strategy="no", eval_strategy="no", report_to="none",
                                 use_cpu=a.device == "cpu", dataloader_num_workers=0,
                                 train_sampling_strategy="random", remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100))
        out = trainer.train()
        threads_used = torch.get_num_threads()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        adapter = Path(tmp) / "adapter"
        trainer.model.save_pretrained(str(adapter))
        accuracy, eval_seconds = heldout_accuracy(a.model, str(adapter), eval_rows, a.device)
    secs = float(out.metrics["train_runtime"])
    return {"tokens_per_second": tokens / secs, "train_seconds": secs, "train_tokens": tokens,
            "steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "final_loss": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
            "accuracy": accuracy, "eval_seconds": eval_seconds,
            "threads": [f"torch threads during training: {threads_used}"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="local model folder")
    p.add_argument("--intents", type=int, default=10, help="how many BANKING77 intents (the demo's 10 first)")
    p.add_argument("--rows", type=int, default=200, help="training rows from train.csv")
    p.add_argument("--eval-rows", type=int, default=100, help="held-out rows from test.csv")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads for both runs (default 2; 0: ours calibrates, HF uses torch's default)")
    p.add_argument("--packing", action="store_true", help="ours packs rows (hyperparameters.packing)")
    p.add_argument("--only", choices=["ours", "hf"], help="run one side only, in this process")
    a = p.parse_args()
    if a.only:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print("RESULT " + json.dumps(run_ours(a) if a.only == "ours" else run_hf(a)), flush=True)
        return

    results = {}
    for which in ("ours", "hf"):
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, a.model, "--intents", str(a.intents), "--rows", str(a.rows),
               "--eval-rows", str(a.eval_rows), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
               "--rank", str(a.rank), "--seed", str(a.seed), "--device", a.device, "--threads", str(a.threads),
               "--only", which] + (["--packing"] if a.packing else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"{which} run failed (exit {proc.returncode})")
        r = json.loads(line[len("RESULT "):])
        results[which] = r
        name = ("tunesmith" + (" packed" if a.packing else "")) if which == "ours" else "HF Trainer+peft"
        print(f"{name:16s} {r['tokens_per_second']:8.1f} tokens/s  {r['train_tokens']} tokens in "
              f"{r['train_seconds']:.1f}s, {r['steps']} steps, loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}, "
              f"held-out accuracy {r['accuracy']:.1%} ({a.eval_rows} rows, eval {r['eval_seconds']:.0f}s)  "
              f"(wall {time.perf_counter() - t0:.0f}s)", flush=True)
        for note in r.get("threads", []):
            print(f"    threads: {note}")
    ours, hf = results["ours"], results["hf"]
    ratio = ours["tokens_per_second"] / hf["tokens_per_second"]
    print(f"speed-up ours/HF: {ratio:.2f}x tokens/s; held-out accuracy ours {ours['accuracy']:.1%}, "
          f"HF {hf['accuracy']:.1%}  (BANKING77 {a.intents} intents, {a.rows} train / {a.eval_rows} held-out rows, "
          f"{a.epochs} epoch(s), batch {a.batch_size}, LoRA r={a.rank} all-linear, float32, lr {LEARNING_RATE:g}, "
          f"{a.device}, threads {a.threads or 'auto'}, {len(os.sched_getaffinity(0))} CPUs"
          + (", ours packed" if a.packing else "") + ")")


if __name__ == "__main__":
    main()
