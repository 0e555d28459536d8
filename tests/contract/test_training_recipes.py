"""Every registered training recipe (sft, dpo, and any a plugin adds) through one contract
check, run by the real training loop on a tiny model: options, deterministic batches, the loss
falls, validation reports a loss, and a stopped-and-resumed run ends where an uninterrupted one
does (tunesmith.testing.contracts.check_training_recipe)."""
from __future__ import annotations

import importlib.util

import pytest

from tunesmith.core.plugins import get_registry
from tunesmith.testing.contracts import check_training_recipe

HAS_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))
RECIPES = sorted(get_registry().names("training_recipes"))


def test_the_built_in_recipes_are_registered():
    assert {"sft", "dpo"} <= set(RECIPES)


def preference_rows(n: int, seed: int) -> list[dict]:
    """Banking-style rows with a right (completion) and a wrong (rejected) intent."""
    import random

    from tests.trainer.conftest import LABELS, make_rows

    rng = random.Random(seed)
    rows = []
    for r in make_rows(n, seed=seed):
        wrong = rng.choice([x for x in LABELS if f" {x}" != r["completion"]])
        rows.append({**r, "rejected": f" {wrong}"})
    return rows


@pytest.mark.skipif(not HAS_TORCH, reason="needs torch, transformers and peft")
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_contract(name, tmp_path):
    from tests.trainer.conftest import build_model, build_tokenizer

    tok = build_tokenizer()
    model_dir = tmp_path / "model"
    build_model(len(tok), tok.eos_token_id).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    check_training_recipe(get_registry().get("training_recipes", name), model_dir, preference_rows(24, 1),
                          preference_rows(8, 2), tmp_path / "run")
