"""Every registered PEFT method through one contract suite, plus what each built-in declares.

The methods come from tunesmith.core.plugins.get_registry() (built-ins and installed entry
points, so a new method plugin is checked without touching this file) and the third-party
fixture plugin tests/fixtures/acme_plugin (loaded from its file, not installed, so no other
test sees it). Each runs through tunesmith.testing.contracts.check_peft_method: defaults and
idempotent validate(), unknown and mistyped options refused with the bare field, apply() on a
tiny Llama loaded from a folder (QLoRA: quantised by bitsandbytes as it loads),
parameter_counts() as peft counts, logits aligned with the input (virtual tokens first for
prompt learning), a few AdamW steps lowering the loss on tokenised rows, save() loaded back by
stock peft/transformers with the same logits, and merge_and_unload() for mergeable adapters.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tunesmith.core.errors import FailedPrecondition, InvalidArgument
from tunesmith.core.plugins import PluginRegistry, get_registry
from tunesmith.testing.contracts import check_peft_method, plugin_cases

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HAS_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch, transformers and peft are needed")


def _acme_registry() -> PluginRegistry:
    """The acme fixture plugin alone, imported from its file (sys.path and entry points untouched)."""
    spec = importlib.util.spec_from_file_location("acme_tunesmith_plugin_contract",
                                                  FIXTURES / "acme_plugin" / "acme_tunesmith_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return PluginRegistry(builtins=(), entry_points=False, extra=[("acme", module)])


REGISTRY = get_registry()
CASES = plugin_cases(REGISTRY, kinds=["peft_methods"]) + plugin_cases(_acme_registry(), kinds=["peft_methods"])
BUILTIN = {"full", "lora", "qlora", "ia3", "prefix_tuning", "prompt_tuning"}


def method(name: str):
    return REGISTRY.get("peft_methods", name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model folder, tokenizer): tests/trainer's tiny Llama (hidden 64, 2 layers) and BPE
    tokenizer, saved as a Hugging Face folder."""
    if not HAS_TORCH:
        pytest.skip("torch, transformers and peft are needed")
    from tests.trainer.conftest import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    folder = tmp_path_factory.mktemp("peft-methods") / "tiny-llama"
    build_model(len(tokenizer), tokenizer.eos_token_id).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder), tokenizer


@pytest.fixture(scope="module")
def rows_batch(tiny):
    """Six prompt+completion rows, tokenised and right-padded as the trainer batches them (pad =
    EOS, labels -100 on the padding)."""
    from tests.trainer.conftest import make_rows

    _, tokenizer = tiny
    texts = [r["prompt"] + r["completion"] + tokenizer.eos_token for r in make_rows(6, seed=3)]
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


# --- the one contract suite -----------------------------------------------------------------
def test_every_builtin_method_is_registered():
    assert BUILTIN <= set(REGISTRY.names("peft_methods"))
    for name in BUILTIN:
        assert REGISTRY.owner("peft_methods", name) == f"tunesmith_builtin.peft_{name}"


@needs_torch
@pytest.mark.parametrize("case", CASES)
def test_method_keeps_the_peft_contract(case, tiny, rows_batch):
    # QLoRA: the reloaded adapter sits on a freshly quantised base; NF4 quantisation of the same
    # float32 weights is deterministic, so the logits match to the same 1e-5 as the others.
    if case.obj.quantized_base and not HAS_BNB:
        pytest.skip("bitsandbytes is not installed")
    check_peft_method(case.obj, model_dir=tiny[0], batch=rows_batch)


# --- what each built-in declares --------------------------------------------------------------
DECLARED = {  # name: (supports_merge, servable_by_vllm, quantized_base, artifact_kind, prompt_learning)
    "full": (False, True, False, "model", False),
    "lora": (True, True, False, "adapter", False),
    "qlora": (True, True, True, "adapter", False),
    "ia3": (True, False, False, "adapter", False),
    "prefix_tuning": (False, False, False, "adapter", True),
    "prompt_tuning": (False, False, False, "adapter", True),
}
DEFAULTS = {
    "full": {},
    "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear", "use_dora": False,
             "use_rslora": False},
    "ia3": {"target_modules": [], "feedforward_modules": []},
    "prefix_tuning": {"num_virtual_tokens": 16},
    "prompt_tuning": {"num_virtual_tokens": 16, "init_text": ""},
}
DEFAULTS["qlora"] = {"lora": DEFAULTS["lora"], "bits": 4, "quant_type": "nf4", "compute_dtype": "auto",
                     "double_quant": False}


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_builtin_declarations_and_defaults(name):
    m = method(name)
    assert (m.supports_merge, m.servable_by_vllm, m.quantized_base, m.artifact_kind, m.prompt_learning) == DECLARED[name]
    if name == "qlora" and not HAS_BNB:
        pytest.skip("bitsandbytes is not installed")
    assert m.validate({}) == DEFAULTS[name]
    assert m.validate(None) == DEFAULTS[name]


GOOD = [  # (method, options, what validate() returns for the keys given)
    ("prefix_tuning", {"num_virtual_tokens": 8.0}, {"num_virtual_tokens": 8}),  # Struct numbers are floats
    ("prompt_tuning", {"num_virtual_tokens": 512, "init_text": "Route"}, {"num_virtual_tokens": 512, "init_text": "Route"}),
    ("ia3", {"target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
     {"target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]}),
    ("ia3", {"feedforward_modules": ["down_proj"]}, {"target_modules": [], "feedforward_modules": ["down_proj"]}),
    ("qlora", {"lora": {"rank": 4.0}, "bits": 8.0}, {"lora": {**DEFAULTS["lora"], "rank": 4, "alpha": 8}, "bits": 8}),
    ("qlora", {"quant_type": "fp4", "compute_dtype": "bfloat16", "double_quant": True},
     {"quant_type": "fp4", "compute_dtype": "bfloat16", "double_quant": True}),
]


@pytest.mark.parametrize("name, options, expected", GOOD, ids=[f"{n}-{sorted(o)}" for n, o, _ in GOOD])
def test_good_options_are_normalised(name, options, expected):
    if name == "qlora" and not HAS_BNB:
        pytest.skip("bitsandbytes is not installed")
    before = {k: (dict(v) if isinstance(v, dict) else v) for k, v in options.items()}
    out = method(name).validate(options)
    assert options == before, "validate() must not modify its argument"
    assert {k: out[k] for k in expected} == expected
    assert method(name).validate(out) == out


BAD = [  # (method, options, field)
    ("full", {"rank": 4}, "rank"),
    ("prefix_tuning", {"num_virtual_tokens": 0}, "num_virtual_tokens"),
    ("prefix_tuning", {"num_virtual_tokens": 513}, "num_virtual_tokens"),
    ("prefix_tuning", {"num_virtual_tokens": 2.5}, "num_virtual_tokens"),
    ("prefix_tuning", {"num_virtual_tokens": True}, "num_virtual_tokens"),
    ("prefix_tuning", {"init_text": "hi"}, "init_text"),  # prompt tuning's option, not prefix tuning's
    ("prompt_tuning", {"num_virtual_tokens": -3}, "num_virtual_tokens"),
    ("prompt_tuning", {"init_text": 7}, "init_text"),
    ("prompt_tuning", {"init_text": ["a"]}, "init_text"),
    ("ia3", {"target_modules": "k_proj"}, "target_modules"),
    ("ia3", {"target_modules": ["k_proj", ""]}, "target_modules"),
    ("ia3", {"feedforward_modules": [3]}, "feedforward_modules"),
    ("ia3", {"target_modules": ["k_proj", "v_proj"], "feedforward_modules": ["down_proj"]}, "feedforward_modules"),
    ("qlora", {"bits": 3}, "bits"),
    ("qlora", {"bits": "4"}, "bits"),
    ("qlora", {"quant_type": "int4"}, "quant_type"),
    ("qlora", {"compute_dtype": "float64"}, "compute_dtype"),
    ("qlora", {"double_quant": 1}, "double_quant"),
    ("qlora", {"bits": 8, "quant_type": "fp4"}, "quant_type"),
    ("qlora", {"bits": 8, "double_quant": True}, "double_quant"),
    ("qlora", {"lora": {"rank": -1}}, "lora.rank"),
    ("qlora", {"lora": {"rnak": 4}}, "lora.rnak"),
    ("qlora", {"lora": "r=4"}, "lora"),
    ("qlora", {"rank": 4}, "rank"),  # the LoRA options live under "lora", as in QloraConfig
]


@pytest.mark.parametrize("name, options, field", BAD, ids=[f"{n}-{f}" for n, _, f in BAD])
def test_bad_options_are_refused_with_their_key(name, options, field):
    m = method(name)
    for call in (lambda: m.validate(options), lambda: m.load_kwargs(options, "cpu"),
                 lambda: m.apply(object(), options)):  # apply refuses before touching the model
        with pytest.raises(InvalidArgument) as info:
            call()
        assert info.value.field == field
        assert field.split(".")[-1] in str(info.value)


# --- QLoRA ------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_qlora_load_kwargs_configure_bitsandbytes():
    import torch
    from transformers import BitsAndBytesConfig

    m = method("qlora")
    kw = m.load_kwargs({"quant_type": "fp4", "double_quant": True}, "cpu")
    assert set(kw) == {"quantization_config", "device_map"} and kw["device_map"] == {"": "cpu"}
    q = kw["quantization_config"]
    assert isinstance(q, BitsAndBytesConfig) and q.load_in_4bit and not q.load_in_8bit
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == ("fp4", True, torch.float32)
    assert m.load_kwargs({}, "cpu")["quantization_config"].bnb_4bit_quant_type == "nf4"
    assert m.load_kwargs({"compute_dtype": "bfloat16"}, "cpu")["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    eight = m.load_kwargs({"bits": 8}, "cuda:0")
    assert eight["quantization_config"].load_in_8bit and eight["device_map"] == {"": "cuda:0"}


@needs_torch
@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_qlora_quantises_the_base_and_trains_lora_only(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    m = method("qlora")
    options = {"lora": {"rank": 4}}
    base = AutoModelForCausalLM.from_pretrained(tiny[0], dtype=torch.float32, **m.load_kwargs(options, "cpu"))
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    model = m.apply(base, options)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert m.parameter_counts(model) == model.get_nb_trainable_parameters()


@needs_torch
@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_qlora_gradients_are_unchanged_by_an_evaluation_pass(tiny, rows_batch):
    """On a CPU with AVX512-BF16, bitsandbytes repacks 4-bit weights at the first eval forward and
    then backpropagates through a kernel without autograd: wrong gradients after every validation
    pass unless apply() switches the repacking off."""
    import torch
    from transformers import AutoModelForCausalLM

    m, options = method("qlora"), {"lora": {"rank": 4}}
    inputs = {k: rows_batch[k] for k in ("input_ids", "attention_mask")}

    def gradients(evaluate_first: bool) -> dict:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny[0], dtype=torch.float32, **m.load_kwargs(options, "cpu"))
        model = m.apply(base, options)
        if evaluate_first:
            with torch.no_grad():
                model.eval()(**inputs)
        model.train()(**inputs, labels=rows_batch["labels"]).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, after_eval = gradients(False), gradients(True)
    assert any(float(g.abs().max()) > 0 for g in plain.values())
    for name, grad in plain.items():
        assert torch.allclose(after_eval[name], grad, atol=1e-6), name


def test_qlora_without_bitsandbytes_is_a_failed_precondition(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(FailedPrecondition, match="bitsandbytes"):
        method("qlora").validate({})
    with pytest.raises(InvalidArgument):  # bad options are still reported as such
        method("qlora").validate({"bits": 3})


# --- prompt tuning from text, IA3 defaults ----------------------------------------------------
@needs_torch
def test_prompt_tuning_init_text_starts_from_the_texts_embeddings(tiny, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder, tokenizer = tiny
    m = method("prompt_tuning")
    model = m.apply(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                    {"num_virtual_tokens": 4, "init_text": "Route this message"})
    ids = tokenizer("Route this message")["input_ids"]
    expected = model.get_input_embeddings().weight[torch.tensor((ids * 4)[:4])]
    assert torch.allclose(model.prompt_encoder["default"].embedding.weight, expected)

    m.save(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    # The init is spent: no tokenizer path into this machine (finalize_adapter rewrites the base's).
    assert (config["prompt_tuning_init"], config["tokenizer_name_or_path"]) == ("RANDOM", None)
    assert config["prompt_tuning_init_text"] == "Route this message"
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                                         str(tmp_path))
    assert torch.equal(reloaded.prompt_encoder["default"].embedding.weight, model.prompt_encoder["default"].embedding.weight)


@needs_torch
def test_prompt_tuning_init_text_needs_the_models_folder():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(FailedPrecondition, match="tokenizer") as info:
        method("prompt_tuning").apply(model, {"init_text": "hello"})
    assert info.value.field == "init_text"


@needs_torch
def test_ia3_feedforward_modules_without_targets_are_checked_against_peft_defaults(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny[0], dtype=torch.float32)
    with pytest.raises(InvalidArgument, match="subset") as info:
        method("ia3").apply(base, {"feedforward_modules": ["up_proj"]})  # Llama's defaults: k, v, down
    assert info.value.field == "feedforward_modules"
    model = method("ia3").apply(base, {"feedforward_modules": ["down_proj"]})
    assert sorted(model.peft_config["default"].target_modules) == ["down_proj", "k_proj", "v_proj"]


# --- the trainer service's mapping of the typed configs ---------------------------------------
def test_typed_configs_map_to_each_plugins_options():
    from tunesmith.api.common.v1 import common_pb2
    from tunesmith.api.trainer.v1 import trainer_pb2 as t
    from tunesmith.trainer.validation import method_options

    cases = [
        (t.MethodSpec(full=t.FullConfig()), "full", {}),
        (t.MethodSpec(qlora=t.QloraConfig()), "qlora", {}),
        (t.MethodSpec(qlora=t.QloraConfig(lora=t.LoraConfig(rank=4, use_dora=True), bits=8)), "qlora",
         {"lora": {"rank": 4, "use_dora": True}, "bits": 8}),
        (t.MethodSpec(qlora=t.QloraConfig(quant_type=t.QUANT_TYPE_FP4, compute_dtype=common_pb2.DTYPE_BFLOAT16,
                                          double_quant=True)), "qlora",
         {"quant_type": "fp4", "compute_dtype": "bfloat16", "double_quant": True}),
        (t.MethodSpec(qlora=t.QloraConfig(quant_type=9)), "qlora", {"quant_type": 9}),  # refused by the plugin
        (t.MethodSpec(ia3=t.Ia3Config(target_modules=["k_proj"], feedforward_modules=["k_proj"])), "ia3",
         {"target_modules": ["k_proj"], "feedforward_modules": ["k_proj"]}),
        (t.MethodSpec(prefix_tuning=t.PrefixTuningConfig(num_virtual_tokens=8)), "prefix_tuning",
         {"num_virtual_tokens": 8}),
        (t.MethodSpec(prompt_tuning=t.PromptTuningConfig(init_text="Intent:")), "prompt_tuning",
         {"init_text": "Intent:"}),
    ]
    for spec, name, expected in cases:
        options = method_options(spec)
        assert options == expected, spec
        if name == "qlora" and not HAS_BNB:
            continue
        if expected.get("quant_type") == 9:
            with pytest.raises(InvalidArgument, match="quant_type"):
                method(name).validate(options)
        else:
            method(name).validate(options)


def test_a_merge_of_a_prompt_learning_adapter_is_refused_even_without_tunesmith_metadata(tmp_path):
    """A plain peft folder (no tunesmith-adapter.json) is judged by its peft_type."""
    from tunesmith.trainer.validation import _refuse_unmergeable

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    with pytest.raises(FailedPrecondition, match="cannot be merged") as info:
        _refuse_unmergeable(tmp_path, "artifact://adapter/x", REGISTRY)
    assert info.value.field == "spec.adapter.uri"
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    _refuse_unmergeable(tmp_path, "artifact://adapter/x", REGISTRY)
    (tmp_path / "tunesmith-adapter.json").write_text(json.dumps({"method": "prefix_tuning"}))
    with pytest.raises(FailedPrecondition, match="'prefix_tuning' method"):
        _refuse_unmergeable(tmp_path, "artifact://adapter/x", REGISTRY)
