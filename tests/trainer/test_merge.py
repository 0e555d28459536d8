"""merge_adapter folds a real LoRA adapter into a real (tiny) base and saves a plain HF folder."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tunesmith.trainer.merge import merge_adapter  # noqa: E402
from tunesmith_builtin.peft_lora import LoraMethod  # noqa: E402

RANK, ALPHA = 4, 12  # scaling = alpha / rank = 3


@pytest.fixture(scope="module")
def adapter_dir(sft_model_dir, tmp_path_factory):
    """A LoRA adapter with non-zero B (a fresh adapter's B is zero, which would merge to nothing)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = LoraMethod().apply(AutoModelForCausalLM.from_pretrained(sft_model_dir),
                               {"rank": RANK, "alpha": ALPHA})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(path))
    return str(path)


def test_merged_weights_are_base_plus_scaled_lora_product(sft_model_dir, adapter_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = merge_adapter(sft_model_dir, adapter_dir, tmp_path / "merged")
    assert out == tmp_path / "merged"
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert (out / "tokenizer.json").exists()  # the adapter folder has none: taken from the base
    assert not (out / "adapter_config.json").exists()

    base = load_file(f"{sft_model_dir}/model.safetensors")
    lora = load_file(f"{adapter_dir}/adapter_model.safetensors")
    merged = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    checked = 0
    for key in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        a = lora[f"base_model.model.{key}.lora_A.weight"]
        b = lora[f"base_model.model.{key}.lora_B.weight"]
        expected = base[f"{key}.weight"] + (b @ a) * (ALPHA / RANK)
        assert not torch.allclose(expected, base[f"{key}.weight"])  # the adapter really changes it
        assert torch.allclose(merged[f"{key}.weight"], expected, atol=1e-6)
        checked += 1
    assert checked == 2
    # layers LoRA does not touch stay the base's
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], base["lm_head.weight"])


def test_merged_model_gives_the_peft_models_logits(sft_model_dir, adapter_dir, sft_tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge_adapter(sft_model_dir, adapter_dir, tmp_path / "merged")
    ids = torch.tensor([sft_tokenizer("Message: I lost my card\nIntent:")["input_ids"]])
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_model_dir), adapter_dir).eval()
        plain = AutoModelForCausalLM.from_pretrained(sft_model_dir).eval()
        merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
        want = peft_model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        assert not torch.allclose(plain(input_ids=ids).logits, want, atol=1e-3)
    assert torch.allclose(got, want, atol=1e-4)
    assert AutoTokenizer.from_pretrained(str(out))("hello")["input_ids"] == sft_tokenizer("hello")["input_ids"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


def test_merge_prefers_the_adapters_tokenizer_and_honours_dtype(sft_model_dir, adapter_dir, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_copy = tmp_path / "adapter"
    shutil.copytree(adapter_dir, adapter_copy)
    tok = AutoTokenizer.from_pretrained(sft_model_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|marker|>"]})
    tok.save_pretrained(str(adapter_copy))
    out = merge_adapter(sft_model_dir, str(adapter_copy), tmp_path / "merged", dtype="bfloat16")
    assert "<|marker|>" in AutoTokenizer.from_pretrained(str(out)).get_vocab()
    assert AutoModelForCausalLM.from_pretrained(str(out), dtype="auto").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        merge_adapter(sft_model_dir, adapter_dir, tmp_path / "x", dtype="int3")
