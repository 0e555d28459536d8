"""The built-in "lora" PEFT method: registration, option checks, and a real peft model."""
from __future__ import annotations

import pytest

from tunesmith.core.contracts import PeftMethod
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import PluginRegistry
from tunesmith_builtin.peft_lora import LoraMethod


def tiny_llama():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))


def test_registered_as_lora_and_follows_the_contract():
    reg = PluginRegistry(("tunesmith_builtin.peft_lora",), entry_points=False)
    method = reg.get("peft_methods", "lora")
    assert isinstance(method, LoraMethod) and isinstance(method, PeftMethod)
    assert reg.owner("peft_methods", "lora") == "tunesmith_builtin.peft_lora"
    assert method.name == "lora" and method.supports_merge is True and method.quantized_base is False
    assert method.load_kwargs({"rank": 8}, "cpu") == {}


@pytest.mark.parametrize("options, field", [
    ({"rank": 0}, "method.rank"),
    ({"rank": -4}, "method.rank"),
    ({"rank": 2.5}, "method.rank"),
    ({"rank": "16"}, "method.rank"),
    ({"rank": True}, "method.rank"),
    ({"alpha": 0}, "method.alpha"),
    ({"alpha": -1.0}, "method.alpha"),
    ({"alpha": "big"}, "method.alpha"),
    ({"dropout": 1.0}, "method.dropout"),
    ({"dropout": -0.1}, "method.dropout"),
    ({"dropout": "0.1"}, "method.dropout"),
    ({"target_modules": 5}, "method.target_modules"),
    ({"target_modules": ["q_proj", ""]}, "method.target_modules"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(InvalidArgument) as info:
        LoraMethod().apply(object(), options)  # fails before touching the model
    assert info.value.field == field
    assert field in str(info.value)
    with pytest.raises(InvalidArgument):
        LoraMethod().load_kwargs(options, "cpu")


def test_defaults_and_accepted_values():
    m = LoraMethod()
    assert m.validate({}) == {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    assert m.validate({"rank": 8})["alpha"] == 16
    # numbers from a protobuf Struct arrive as floats
    assert m.validate({"rank": 4.0, "alpha": 8.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}) == {
        "rank": 4, "alpha": 8.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def test_apply_builds_a_peft_lora_model_on_all_linear_layers():
    peft = pytest.importorskip("peft")
    model = LoraMethod().apply(tiny_llama(), {"rank": 4, "alpha": 8, "dropout": 0.1})
    assert isinstance(model, peft.PeftModel)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.task_type) == (4, 8, 0.1, "CAUSAL_LM")
    wrapped = {name.split(".")[-1] for name, mod in model.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_apply_honours_explicit_target_modules():
    pytest.importorskip("peft")
    model = LoraMethod().apply(tiny_llama(), {"rank": 2, "target_modules": ["q_proj", "v_proj"]})
    wrapped = {name.split(".")[-1] for name, mod in model.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}
