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
    ({"rank": 0}, "rank"),
    ({"rank": -4}, "rank"),
    ({"rank": 2.5}, "rank"),
    ({"rank": "16"}, "rank"),
    ({"rank": True}, "rank"),
    ({"alpha": 0}, "alpha"),
    ({"alpha": -1.0}, "alpha"),
    ({"alpha": "big"}, "alpha"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"dropout": "0.1"}, "dropout"),
    ({"target_modules": 5}, "target_modules"),
    ({"target_modules": ["q_proj", ""]}, "target_modules"),
    ({"use_dora": "yes"}, "use_dora"),
    ({"use_rslora": 1}, "use_rslora"),
    ({"rnak": 8}, "rnak"),  # a misspelt option is refused, never ignored
])
def test_bad_options_name_the_option_key(options, field):
    """field is the option key alone; the trainer service puts it under its request path."""
    with pytest.raises(InvalidArgument) as info:
        LoraMethod().validate(options)
    assert info.value.field == field
    assert field in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        LoraMethod().apply(object(), options)  # fails before touching the model
    assert info.value.field == field
    with pytest.raises(InvalidArgument):
        LoraMethod().load_kwargs(options, "cpu")


def test_defaults_and_accepted_values():
    m = LoraMethod()
    assert m.validate({}) == {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear",
                              "use_dora": False, "use_rslora": False}
    assert m.validate({"rank": 8})["alpha"] == 16
    # numbers from a protobuf Struct arrive as floats
    assert m.validate({"rank": 4.0, "alpha": 8.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}) == {
        "rank": 4, "alpha": 8.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
        "use_dora": False, "use_rslora": False}


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


def test_rslora_scales_by_alpha_over_sqrt_rank():
    """Reference values: LoRA scales B·A by alpha / r, rsLoRA by alpha / sqrt(r) (Kalajdzievski 2023)."""
    pytest.importorskip("peft")
    plain = LoraMethod().apply(tiny_llama(), {"rank": 4, "alpha": 8, "target_modules": ["q_proj"]})
    rs = LoraMethod().apply(tiny_llama(), {"rank": 4, "alpha": 8, "target_modules": ["q_proj"], "use_rslora": True})
    q_plain = plain.base_model.model.model.layers[0].self_attn.q_proj
    q_rs = rs.base_model.model.model.layers[0].self_attn.q_proj
    assert q_plain.scaling["default"] == pytest.approx(8 / 4)
    assert q_rs.scaling["default"] == pytest.approx(8 / 4 ** 0.5)


def test_dora_adds_a_magnitude_vector_and_merges_to_the_same_outputs():
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    model = LoraMethod().apply(tiny_llama(), {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                                              "use_dora": True})
    assert model.peft_config["default"].use_dora is True
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_magnitude_vector" in n for n in trainable)
    with torch.no_grad():  # a non-zero B so the adapter changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    assert torch.allclose(adapted, merged, atol=1e-4)
