"""Training throughput: Tunesmith's SFT loop against transformers Trainer + peft, same work.

    python bench/bench_sft_cpu.py MODEL_DIR [--rows 500] [--batch-size 8] [--rank 16] [--device cpu] [--threads N]

MODEL_DIR is a local Hugging Face causal-LM folder (e.g. SmolLM2-135M converted to safetensors).
Both runs train LoRA (r=16, alpha=32, all linear layers, no dropout) for one epoch in float32 on
the same synthetic banking-intent rows ("Route this banking customer message to its intent.
\\nMessage: ...\\nIntent:" -> " <label>"), with the same tokenisation, completion-only labels,
batch size, learning rate (2e-4, linear decay) and seed. Each run is a fresh subprocess.

tokens/s = non-padding tokens processed / training seconds (the Trainer's own train_runtime
for the baseline). Prints one line per run, then the ratio.

Threads: by default the Tunesmith loop calibrates its CPU thread count (it drops to fewer threads
when another process is busy on a small machine) while the Trainer uses torch's default;
--threads N fixes both to N for a like-for-like comparison of the loops alone.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTENTS = {
    "card_arrival": ["when will my new card arrive", "my card still hasn't come in the post",
                     "how long does card delivery take", "I ordered a card {n} days ago and nothing yet"],
    "lost_or_stolen_card": ["I lost my card", "my wallet was stolen with my card in it",
                            "someone took my debit card at the {place}", "I can't find my card anywhere"],
    "exchange_rate": ["what exchange rate do you use", "how much is {cur} worth in pounds today",
                      "is the rate for {cur} fair", "why is your exchange rate different from Google"],
    "balance_not_updated_after_bank_transfer": ["my transfer went through but my balance is the same",
                                                "I sent {amt} from my other bank and it's not showing",
                                                "balance didn't update after the transfer"],
    "declined_card_payment": ["my card was declined at the {place}", "why was my payment refused",
                              "card payment of {amt} got declined again"],
    "top_up_failed": ["my top up failed", "I tried to add {amt} and it didn't work",
                      "top-up keeps failing with my {bank} card"],
    "pending_cash_withdrawal": ["the cash I took out at the {place} is still pending",
                                "ATM withdrawal of {amt} shows as pending", "why is my withdrawal pending"],
    "change_pin": ["how do I change my PIN", "I want a new PIN for my card",
                   "can I reset my PIN at the {place}"],
    "refund_not_showing_up": ["the {place} said they refunded me but I don't see it",
                              "refund of {amt} is missing", "where is my refund"],
    "transfer_timing": ["how long does a transfer to {bank} take", "when will the money I sent arrive",
                        "transfer of {amt} still not there after {n} days"],
}
PLACES = ["supermarket", "petrol station", "airport", "train station", "restaurant", "hotel in Lisbon"]
CURRENCIES = ["euros", "US dollars", "Swiss francs", "yen", "Polish zloty"]
BANKS = ["Barclays", "HSBC", "Santander", "Monzo", "Lloyds"]
FILLERS = ["", "Hi, ", "Hello there. ", "Please help, ", "Quick question: ", "This is urgent! ",
           "I've been a customer for years and ", "Sorry to bother you but "]
SUFFIXES = ["", "?", ".", " - can you check?", " What should I do?", " Thanks in advance.",
            " I need this sorted today because I'm travelling tomorrow."]


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    labels = sorted(INTENTS)
    rows = []
    for _ in range(n):
        label = rng.choice(labels)
        text = rng.choice(INTENTS[label]).format(
            n=rng.randint(2, 14), place=rng.choice(PLACES), cur=rng.choice(CURRENCIES),
            amt=f"£{rng.randint(5, 900)}", bank=rng.choice(BANKS))
        text = rng.choice(FILLERS) + text + rng.choice(SUFFIXES)
        rows.append({"prompt": f"Route this banking customer message to its intent.\nMessage: {text}\nIntent:",
                     "completion": f" {label}"})
    return rows


def run_ours(a: argparse.Namespace) -> dict:
    from tunesmith.trainer.sft import train_sft
    from tunesmith_builtin.peft_lora import LoraMethod

    events: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        r = train_sft(on_event=events.append, model_path=a.model, train_rows=make_rows(a.rows), validation_rows=None,
                      method=LoraMethod(), method_options={"rank": a.rank, "alpha": 2 * a.rank},
                      hp={"epochs": 1, "batch_size": a.batch_size, "learning_rate": 2e-4, "seed": 0,
                          "max_seq_length": 512, "dtype": "float32", "log_every_steps": 10**9,
                          "device": a.device, "num_threads": a.threads},
                      output_dir=Path(tmp))
    return {"tokens_per_second": r["tokens_per_second"], "train_seconds": r["train_seconds"],
            "train_tokens": r["train_tokens"], "steps": r["steps"], "first_loss": r["first_train_loss"],
            "final_loss": r["final_train_loss"], "peak_memory_bytes": r["peak_memory_bytes"],
            "threads": [e["message"] for e in events if e["type"] == "log" and "CPU threads" in e["message"]]}


def run_hf(a: argparse.Namespace) -> dict:
    import resource

    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments)

    from tunesmith.trainer.sft import encode_rows
    from tunesmith_builtin.peft_lora import LoraMethod

    torch.manual_seed(0)
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    if a.device != "cpu":
        model.to(a.device)
    model = LoraMethod().apply(model, {"rank": a.rank, "alpha": 2 * a.rank})
    encoded = encode_rows(tok, make_rows(a.rows), 512)
    data = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in encoded]
    tokens = sum(len(e.input_ids) for e in encoded)
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=a.batch_size, num_train_epochs=1,
                                 learning_rate=2e-4, lr_scheduler_type="linear", warmup_steps=0, seed=0,
                                 logging_steps=1, save_strategy="no", report_to="none", use_cpu=a.device == "cpu",
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        out = trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    secs = float(out.metrics["train_runtime"])
    return {"tokens_per_second": tokens / secs, "train_seconds": secs, "train_tokens": tokens,
            "steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "final_loss": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
            "peak_memory_bytes": (torch.cuda.max_memory_allocated() if a.device != "cpu"
                                  else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
            "threads": [f"torch default: {torch.get_num_threads()} threads"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="local model folder")
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="fix the CPU thread count for both runs (default: ours calibrates, HF uses torch's default)")
    p.add_argument("--only", choices=["ours", "hf"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.only:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print("RESULT " + json.dumps(run_ours(a) if a.only == "ours" else run_hf(a)), flush=True)
        return

    results = {}
    for which in ("ours", "hf"):
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, a.model, "--rows", str(a.rows), "--batch-size", str(a.batch_size),
               "--rank", str(a.rank), "--device", a.device, "--threads", str(a.threads), "--only", which]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"{which} run failed (exit {proc.returncode})")
        r = json.loads(line[len("RESULT "):])
        results[which] = r
        print(f"{'tunesmith loop' if which == 'ours' else 'HF Trainer+peft':16s} "
              f"{r['tokens_per_second']:8.1f} tokens/s  {r['train_tokens']} tokens in {r['train_seconds']:.1f}s, "
              f"{r['steps']} steps, loss {r['first_loss']:.3f} -> {r['final_loss']:.3f}, "
              f"peak mem {r['peak_memory_bytes'] / 2**20:.0f} MiB  (wall {time.perf_counter() - t0:.0f}s)",
              flush=True)
        for note in r.get("threads", []):
            print(f"    threads: {note}")
    ratio = results["ours"]["tokens_per_second"] / results["hf"]["tokens_per_second"]
    print(f"speed-up: {ratio:.2f}x  (rows={a.rows}, batch={a.batch_size}, LoRA r={a.rank} all-linear, float32, "
          f"{a.device}, {len(os.sched_getaffinity(0))} CPUs)")


if __name__ == "__main__":
    main()
