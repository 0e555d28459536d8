"""The "dpo" recipe on a real (tiny, random-weight) Llama: nothing under test is mocked.

Hand computations use a plain forward of each unpadded row + log_softmax + gather, never the
recipe's own code path (tunesmith.trainer.sft.completion_logprobs).
"""
from __future__ import annotations

import random
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tunesmith.core.contracts import RecipeContext, TrainingRecipe  # noqa: E402
from tunesmith.core.errors import InvalidArgument, TunesmithError  # noqa: E402
from tunesmith.trainer.hyperparameters import resolve  # noqa: E402
from tunesmith.trainer.loop import train  # noqa: E402
from tunesmith_builtin.peft_full import FullMethod  # noqa: E402
from tunesmith_builtin.peft_lora import LoraMethod  # noqa: E402
from tunesmith_builtin.recipe_dpo import REWARD_KEYS, DpoRecipe  # noqa: E402

from .conftest import LABELS, MESSAGES  # noqa: E402

PROMPT = "Route this banking customer message to its intent.\nMessage: {}\nIntent:"
TRAIN_SUFFIXES = ["", "?", " please"]
HELD_OUT_SUFFIXES = [" - it is urgent!"]


def preference_rows(n: int, seed: int, suffixes: list[str]) -> list[dict]:
    """Banking-style pairs as the data service prepares them: chosen = the right intent,
    rejected = a wrong one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(LABELS)
        wrong = rng.choice([x for x in LABELS if x != label])
        text = rng.choice(MESSAGES[label]) + rng.choice(suffixes)
        rows.append({"prompt": PROMPT.format(text), "completion": f" {label}", "rejected": f" {wrong}"})
    return rows


def load(model_dir: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    return model


def lora_model(model_dir: str, perturb: bool = True):
    torch.manual_seed(0)
    model = LoraMethod().apply(load(model_dir), {"rank": 4})
    if perturb:  # B = 0 at init would make policy == reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
    return model


def make_recipe(model, tokenizer, method, train_rows, validation_rows, options=None, **hp):
    recipe = DpoRecipe()
    ctx = RecipeContext(model=model, tokenizer=tokenizer, method=method,
                        hyperparameters=resolve({"batch_size": 4, **hp}),
                        options=recipe.validate_options(dict(options or {})), device="cpu", log=lambda m: None)
    recipe.figures = recipe.setup(ctx, train_rows, validation_rows)
    return recipe


def hand_logp(model, tok, prompt: str, completion: str, virtual: int = 0) -> float:
    """Summed log-prob of completion + EOS after prompt: one unpadded row, full logits."""
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, virtual:].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(p) - 1 + j, tok_id]) for j, tok_id in enumerate(c))


def hand_pair(policy, reference, tok, row, virtual: int = 0) -> dict:
    c = tok(row["completion"], add_special_tokens=False)["input_ids"]
    r = tok(row["rejected"], add_special_tokens=False)["input_ids"]
    return {"pc": hand_logp(policy, tok, row["prompt"], row["completion"], virtual),
            "pr": hand_logp(policy, tok, row["prompt"], row["rejected"], virtual),
            "rc": hand_logp(reference, tok, row["prompt"], row["completion"]),
            "rr": hand_logp(reference, tok, row["prompt"], row["rejected"]),
            "nc": len(c) + 1, "nr": len(r) + 1}


def hand_loss(h: dict, loss_type: str, beta: float) -> float:
    import math

    pc, pr, rc, rr = h["pc"], h["pr"], h["rc"], h["rr"]
    if loss_type == "ipo":  # TRL: IPO works on per-token mean log-probs
        pc, rc, pr, rr = pc / h["nc"], rc / h["nc"], pr / h["nr"], rr / h["nr"]
    z = (pc - rc) - (pr - rr)
    if loss_type == "sigmoid":
        return math.log1p(math.exp(-beta * z))  # -logsigmoid(beta z)
    if loss_type == "ipo":
        return (z - 1 / (2 * beta)) ** 2
    return max(0.0, 1 - beta * z)


def test_the_recipe_conforms_and_registers():
    from tunesmith.testing.contracts import check_conforms
    from tunesmith_builtin import recipe_dpo

    check_conforms(DpoRecipe(), TrainingRecipe)
    found = {}
    recipe_dpo.register_training_recipes(register=found.__setitem__)
    r = found["dpo"]
    assert (r.name, r.objective, r.row_fields, r.supports_packing) == (
        "dpo", "dpo", ("prompt", "completion", "rejected"), False)


# --- 1. the loss is the hand computation ------------------------------------------------
@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("ipo", 0.5), ("hinge", 2.0)])
def test_loss_equals_a_hand_computation_from_the_models_own_log_probs(sft_model_dir, sft_tokenizer,
                                                                       loss_type, beta):
    tok = sft_tokenizer
    policy = lora_model(sft_model_dir)
    base = load(sft_model_dir)  # the original base, loaded again: the reference by hand
    rows = preference_rows(6, seed=3, suffixes=TRAIN_SUFFIXES + HELD_OUT_SUFFIXES)
    recipe = make_recipe(policy, tok, LoraMethod(), rows, rows[:3], {"loss_type": loss_type, "beta": beta},
                         batch_size=6)
    assert recipe.reference_mode == "disabled_adapter"
    batch = {"pairs": list(range(6)), "n_items": 6, "n_tokens": 0}
    collated = recipe._collate("train", batch["pairs"])
    assert collated["input_ids"].shape[0] == 12  # one forward over 2B rows
    assert collated["label_span"] + 1 < collated["input_ids"].shape[1]  # logits_to_keep is used
    with torch.no_grad():
        loss_sum, metrics = recipe.loss(policy, batch)
    hands = [hand_pair(policy, base, tok, row) for row in rows]
    expect = sum(hand_loss(h, loss_type, beta) for h in hands)
    assert float(loss_sum) == pytest.approx(expect, rel=1e-4, abs=1e-6)
    assert float(loss_sum) > 0
    assert set(metrics) == set(REWARD_KEYS)
    norm = (lambda h, k, n: h[k] / h[n]) if loss_type == "ipo" else (lambda h, k, n: h[k])
    chosen = [beta * (norm(h, "pc", "nc") - norm(h, "rc", "nc")) for h in hands]
    rejected = [beta * (norm(h, "pr", "nr") - norm(h, "rr", "nr")) for h in hands]
    assert metrics["rewards/chosen"] == pytest.approx(sum(chosen) / 6, rel=1e-4, abs=1e-6)
    assert metrics["rewards/rejected"] == pytest.approx(sum(rejected) / 6, rel=1e-4, abs=1e-6)
    assert metrics["rewards/accuracies"] == pytest.approx(sum(c > r for c, r in zip(chosen, rejected)) / 6)

    ev = recipe.evaluate(policy)  # validation = the first 3 pairs
    assert ev["loss"] == pytest.approx(sum(hand_loss(h, loss_type, beta) for h in hands[:3]) / 3, rel=1e-4)
    assert ev["rewards/margins"] == pytest.approx(
        sum(c - r for c, r in zip(chosen[:3], rejected[:3])) / 3, rel=1e-4, abs=1e-6)


def test_prompt_tuning_pads_right_and_drops_the_virtual_token_logits(sft_model_dir, sft_tokenizer):
    from tunesmith_builtin.peft_prompt_tuning import PromptTuningMethod

    tok = sft_tokenizer
    method = PromptTuningMethod()
    torch.manual_seed(0)
    policy = method.apply(load(sft_model_dir), {"num_virtual_tokens": 3})
    base = load(sft_model_dir)
    rows = preference_rows(4, seed=5, suffixes=TRAIN_SUFFIXES)
    recipe = make_recipe(policy, tok, method, rows, [], batch_size=4)
    assert recipe.padding_side == "right" and not recipe.computer.supports_keep
    with torch.no_grad():
        loss_sum, _ = recipe.loss(policy, {"pairs": [0, 1, 2, 3], "n_items": 4, "n_tokens": 0})
    expect = sum(hand_loss(hand_pair(policy, base, tok, row, virtual=3), "sigmoid", 0.1) for row in rows)
    assert float(loss_sum) == pytest.approx(expect, rel=1e-4)
    assert recipe.evaluate(policy) == {}  # no validation pairs


def test_setup_figures_and_truncation(sft_model_dir, sft_tokenizer):
    tok = sft_tokenizer
    rows = preference_rows(5, seed=6, suffixes=TRAIN_SUFFIXES)
    model = lora_model(sft_model_dir)
    r = make_recipe(model, tok, LoraMethod(), rows, rows[:2])
    assert r.figures == {"train_examples": 5, "truncated_rows": 0, "validation_pairs": 2,
                         "reference": "disabled_adapter"}
    short = make_recipe(model, tok, LoraMethod(), rows, rows[:2], max_seq_length=8)
    assert short.figures["truncated_rows"] == 7  # pairs, train and validation
    c, rj = short.pairs["train"]
    assert all(len(e.input_ids) <= 8 for e in c + rj)
    # every pair shares its prompt; the answers differ
    assert all(a.input_ids != b.input_ids for a, b in zip(c, rj))
    batches = short.train_batches(0, seed=1)
    assert batches == short.train_batches(0, seed=1)  # deterministic in (epoch, seed)
    assert sorted(i for b in batches for i in b["pairs"]) == list(range(5))
    assert sum(b["n_items"] for b in batches) == 5


# --- 2. the reference is the adapter-disabled base ----------------------------------------
def _train_steps(recipe, model, steps: int = 4, lr: float = 1e-2):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    for batch in recipe.train_batches(0, seed=0)[:steps]:
        loss_sum, _ = recipe.loss(model, batch)
        (loss_sum / batch["n_items"]).backward()
        assert all(p.grad is not None for p in params)
        opt.step()
        opt.zero_grad()
    assert all(p.requires_grad for p in params)  # disable_adapter() left the adapter trainable
    model.eval()


@pytest.mark.parametrize("method_name", ["lora", "full"])
def test_reference_stays_the_original_base_while_the_policy_moves(sft_model_dir, sft_tokenizer, method_name):
    tok = sft_tokenizer
    base = load(sft_model_dir)
    if method_name == "lora":
        method, model = LoraMethod(), lora_model(sft_model_dir, perturb=False)
    else:
        method, model = FullMethod(), FullMethod().apply(load(sft_model_dir), {})
    rows = preference_rows(16, seed=1, suffixes=TRAIN_SUFFIXES)
    val = preference_rows(4, seed=2, suffixes=HELD_OUT_SUFFIXES)
    recipe = make_recipe(model, tok, method, rows, val)
    assert recipe.reference_mode == ("disabled_adapter" if method_name == "lora" else "initial_model")
    _train_steps(recipe, model)

    with torch.no_grad():
        lp = recipe.pair_logprobs(model, "validation", [0, 1, 2, 3])
    for i, row in enumerate(val):
        assert float(lp["ref_chosen"][i]) == pytest.approx(hand_logp(base, tok, row["prompt"], row["completion"]),
                                                           abs=1e-4)
        assert float(lp["ref_rejected"][i]) == pytest.approx(hand_logp(base, tok, row["prompt"], row["rejected"]),
                                                             abs=1e-4)
        now = hand_logp(model, tok, row["prompt"], row["completion"])
        assert float(lp["policy_chosen"][i]) == pytest.approx(now, abs=1e-4)
        assert abs(now - hand_logp(base, tok, row["prompt"], row["completion"])) > 1e-3  # the policy moved


# --- 3. DPO through the training loop raises rewards/accuracies ----------------------------
def test_dpo_through_the_loop_learns_to_prefer_the_right_intent(sft_model_dir, sft_tokenizer, tmp_path, capsys):
    train_rows = preference_rows(96, seed=0, suffixes=TRAIN_SUFFIXES)
    held_out = preference_rows(32, seed=99, suffixes=HELD_OUT_SUFFIXES)  # a suffix never trained on
    # beta 1: a random-weight model has to move its log-probs by ~beta^-1 nats per pair; with the
    # default 0.1 a tiny model needs many more steps than a unit test should take.
    options = {"beta": 1.0, "loss_type": "sigmoid"}

    # step 0: policy == reference (LoRA's B starts at 0), so every reward is exactly 0
    model0 = LoraMethod().apply(load(sft_model_dir), {"rank": 8}).eval()
    step0 = make_recipe(model0, sft_tokenizer, LoraMethod(), train_rows, held_out, options, batch_size=8)
    before = step0.evaluate(model0)
    assert before["rewards/chosen"] == before["rewards/rejected"] == before["rewards/margins"] == 0.0
    assert before["rewards/accuracies"] == 0.0  # strict ">" (as TRL counts), all ties

    events: list[dict] = []
    t0 = time.perf_counter()
    result = train(model_path=sft_model_dir, train_rows=train_rows, validation_rows=held_out, method=LoraMethod(),
                   method_options={"rank": 8}, recipe=DpoRecipe(), recipe_options=options,
                   hp={"epochs": 6, "batch_size": 8, "learning_rate": 5e-3, "seed": 0, "eval_every_steps": 12,
                       "num_threads": 1},
                   output_dir=tmp_path, on_event=events.append)
    seconds = time.perf_counter() - t0
    final = result["final_metrics"]
    validations = [e["values"] for e in events if e["type"] == "metrics" and e["name"] == "validation"]
    assert validations and all(set(REWARD_KEYS) <= set(v) and "loss" in v for v in validations)
    with capsys.disabled():
        print(f"\nDPO tiny llama: held-out rewards/accuracies {before['rewards/accuracies']:.2f} at step 0 -> "
              f"{final['rewards/accuracies']:.2f} after {result['steps']} steps "
              f"(margin {final['rewards/margins']:.3f}, loss {before['loss']:.3f} -> {final['loss']:.3f}); "
              f"{seconds:.1f}s")
    assert final["rewards/accuracies"] >= 0.9
    assert final["loss"] < before["loss"] and final["rewards/margins"] > 0
    assert result["artifact_kind"] == "adapter" and seconds < 60


# --- 4. options -------------------------------------------------------------------------
def test_options_defaults_and_normalisation():
    r = DpoRecipe()
    d = r.validate_options({})
    assert d == {"beta": 0.1, "loss_type": "sigmoid", "reference_policy": "frozen_base", "reference_model": ""}
    assert r.validate_options(d) == d
    o = r.validate_options({"beta": 1, "loss_type": "IPO", "reference_policy": "separate_model",
                            "reference_model": "/models/ref"})
    assert o == {"beta": 1.0, "loss_type": "ipo", "reference_policy": "separate_model",
                 "reference_model": "/models/ref"}
    assert isinstance(o["beta"], float)


@pytest.mark.parametrize("options,field", [
    ({"beta": 0}, "beta"), ({"beta": -0.1}, "beta"), ({"beta": "0.1"}, "beta"), ({"beta": True}, "beta"),
    ({"beta": float("nan")}, "beta"), ({"loss_type": "kto"}, "loss_type"), ({"loss_type": 1}, "loss_type"),
    ({"reference_policy": "ema"}, "reference_policy"),
    ({"reference_policy": "separate_model"}, "reference_model"),
    ({"reference_model": "/models/ref"}, "reference_model"),
    ({"reference_policy": "separate_model", "reference_model": 3}, "reference_model"),
    ({"label_smoothing": 0.1}, "label_smoothing"),
])
def test_bad_options_are_refused_naming_the_field(options, field):
    with pytest.raises(InvalidArgument) as info:
        DpoRecipe().validate_options(options)
    assert info.value.field == field


def test_separate_reference_model(sft_model_dir, sft_tokenizer, tmp_path):
    """reference_policy separate_model: another model folder's log-probs, computed once in setup."""
    tok = sft_tokenizer
    from .conftest import build_model

    other = build_model(len(tok), tok.eos_token_id, seed=7)
    other.save_pretrained(str(tmp_path / "ref"))
    ref = load(str(tmp_path / "ref"))
    policy = lora_model(sft_model_dir)
    rows = preference_rows(4, seed=4, suffixes=TRAIN_SUFFIXES)
    recipe = make_recipe(policy, tok, LoraMethod(), rows, rows[:2],
                         {"reference_policy": "separate_model", "reference_model": str(tmp_path / "ref")})
    assert recipe.reference_mode == "separate_model"
    with torch.no_grad():
        lp = recipe.pair_logprobs(policy, "train", [0, 1, 2, 3])
    for i, row in enumerate(rows):
        assert float(lp["ref_chosen"][i]) == pytest.approx(hand_logp(ref, tok, row["prompt"], row["completion"]),
                                                           abs=1e-4)
    with pytest.raises(TunesmithError) as info:
        make_recipe(policy, tok, LoraMethod(), rows, [],
                    {"reference_policy": "separate_model", "reference_model": str(tmp_path / "missing")})
    assert info.value.field == "reference_model"
