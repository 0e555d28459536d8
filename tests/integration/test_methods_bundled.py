"""Every registered fine-tuning method on the real bundled SmolLM2-135M-Instruct for a few steps
through the SFT recipe and the training loop: the loss falls, and the saved artifact loads in
stock peft / transformers with the trained model's logits."""
from __future__ import annotations

import pytest

from tunesmith.core.plugins import get_registry

pytestmark = pytest.mark.integration
METHODS = sorted(get_registry().names("peft_methods"))
#: Prompt-learning methods learn only a few virtual tokens: they need a larger step to move.
LEARNING_RATES = {"prefix_tuning": 3e-2, "prompt_tuning": 3e-2, "full": 1e-4}


@pytest.fixture(scope="module")
def rows():
    from .conftest import banking_rows

    out = []
    for r in banking_rows(["card_arrival", "age_limit", "change_pin", "exchange_rate"], 4):
        out.append({"prompt": f"Route this banking customer message to its intent.\nMessage: {r['text']}\nIntent:",
                    "completion": f" {r['category']}"})
    return out


@pytest.fixture(scope="module")
def probe(rows, bundled_model_dir):
    """One tokenised training row and the untuned model's logits on it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    batch = tok([rows[0]["prompt"] + rows[0]["completion"]], return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return batch, base(**batch).logits


@pytest.mark.parametrize("name", METHODS)
def test_method_trains_the_bundled_model_and_saves_what_stock_libraries_load(name, rows, probe, bundled_model_dir,
                                                                           tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.trainer.sft import train_sft

    method = get_registry().get("peft_methods", name)
    result = train_sft(model_path=bundled_model_dir, train_rows=rows, validation_rows=None, method=method,
                       method_options={}, output_dir=tmp_path,
                       hp={"max_steps": 4, "batch_size": 4, "learning_rate": LEARNING_RATES.get(name, 1e-3),
                           "max_seq_length": 64, "device": "cpu", "seed": 0, "dtype": "float32"})
    assert result["steps"] == 4
    assert result["final_train_loss"] < result["first_train_loss"], result
    trainable, total = result["trainable_parameters"], result["total_parameters"]
    assert 0 < trainable <= total
    assert (trainable == total) == (name == "full")

    batch, base_logits = probe
    out = result["output_dir"]
    if method.artifact_kind == "model":
        loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    else:
        from peft import PeftModel

        kwargs = method.load_kwargs({}, "cpu")
        base = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32, **kwargs)
        loaded = PeftModel.from_pretrained(base, out)
    loaded.eval()
    with torch.no_grad():
        tuned_logits = loaded(**batch).logits[:, -batch["input_ids"].shape[1]:]
    # The artifact carries the training: its logits moved away from the base model's.
    assert not torch.allclose(tuned_logits, base_logits, atol=1e-4)
