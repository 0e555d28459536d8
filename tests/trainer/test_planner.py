"""PlanMemory's planner (tunesmith.trainer.planner.plan_memory), called without a gRPC server:
parameter counts against peft and against really built models, the byte arithmetic, the
saved-activation formula against autograd, fits/suggestions, and the field paths of bad input."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tunesmith.api.common.v1 import common_pb2  # noqa: E402
from tunesmith.api.trainer.v1 import trainer_pb2  # noqa: E402
from tunesmith.core.errors import InvalidArgument, NotFound, TunesmithError  # noqa: E402
from tunesmith.core.plugins import get_registry  # noqa: E402
from tunesmith.core.runtime import Runtime  # noqa: E402
from tunesmith.core.storage import LocalStorage  # noqa: E402
from tunesmith.trainer import planner  # noqa: E402
from tunesmith.trainer.hyperparameters import DEFAULTS  # noqa: E402
from tunesmith.trainer.planner import GiB, plan_memory  # noqa: E402

from tests.trainer.conftest import build_model  # noqa: E402

#: meta-llama/Llama-2-7b-hf's config.json (the values that shape the model).
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "torch_dtype": "float16", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1,
    "rope_theta": 10000.0, "initializer_range": 0.02, "attention_bias": False,
}
LLAMA2_7B_PARAMETERS = 6_738_415_616


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return Runtime(LocalStorage(tmp_path_factory.mktemp("planner-store")), get_registry())


def request(method: trainer_pb2.MethodSpec | None = None, *, config: dict | str | None = LLAMA2_7B,
            device: str = "A100-80GB", memory: int = 0, base_model: str = "", **hp) -> trainer_pb2.PlanMemoryRequest:
    spec = trainer_pb2.TrainingJobSpec(base_model=base_model, hyperparameters=trainer_pb2.Hyperparameters(**hp))
    if method is not None:
        spec.method.CopyFrom(method)
    text = config if isinstance(config, str) else (json.dumps(config) if config is not None else "")
    return trainer_pb2.PlanMemoryRequest(spec=spec, device=device, device_memory_bytes=memory, model_config_json=text)


def lora(rank: int = 16, targets=("q_proj", "v_proj"), **kw) -> trainer_pb2.MethodSpec:
    return trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=rank, target_modules=list(targets), **kw))


FULL = trainer_pb2.MethodSpec(full=trainer_pb2.FullConfig())


def qlora(rank: int = 16, **kw) -> trainer_pb2.MethodSpec:
    return trainer_pb2.MethodSpec(qlora=trainer_pb2.QloraConfig(lora=trainer_pb2.LoraConfig(rank=rank), **kw))


def meta_model(config: dict, dtype=torch.bfloat16):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


# --- Llama-2-7B -----------------------------------------------------------------------------
def test_llama2_7b_lora_counts_are_peft_s(runtime):
    from peft import LoraConfig, get_peft_model

    plan = plan_memory(request(lora()), runtime)
    # peft's own count, on a model built independently of the planner
    with torch.device("meta"):
        reference = get_peft_model(meta_model(LLAMA2_7B),
                                   LoraConfig(r=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert reference.get_nb_trainable_parameters() == (8_388_608, LLAMA2_7B_PARAMETERS + 8_388_608)
    assert plan.trainable_parameters == 8_388_608  # 32 layers x 2 modules x (4096 x 16 + 16 x 4096)
    assert plan.total_parameters == LLAMA2_7B_PARAMETERS + 8_388_608
    # auto dtype on a GPU: a bfloat16 base, the adapter in float32 (peft's autocast_adapter_dtype)
    assert plan.weights_bytes == pytest.approx(LLAMA2_7B_PARAMETERS * 2 + 8_388_608 * 4, rel=1e-4)
    assert plan.gradients_bytes == 8_388_608 * 4
    assert plan.optimizer_bytes == 2 * 8_388_608 * 4
    assert (plan.batch_size, plan.sequence_length) == (DEFAULTS["batch_size"], DEFAULTS["max_seq_length"])
    assert plan.device_memory_bytes == planner.DEVICE_MEMORY["A100-80GB"]
    assert plan.total_bytes == (plan.weights_bytes + plan.gradients_bytes + plan.optimizer_bytes
                                + plan.activations_bytes + planner.CUDA_CONTEXT_BYTES)
    assert plan.fits and not plan.suggestions


def test_llama2_7b_full_adamw_fp32_does_not_fit_80gb(runtime):
    plan = plan_memory(request(FULL, dtype=common_pb2.DTYPE_FLOAT32), runtime)
    assert plan.total_parameters == plan.trainable_parameters == LLAMA2_7B_PARAMETERS
    assert plan.weights_bytes == pytest.approx(4 * LLAMA2_7B_PARAMETERS, rel=1e-4)
    assert plan.gradients_bytes == 4 * LLAMA2_7B_PARAMETERS
    assert plan.optimizer_bytes == 8 * LLAMA2_7B_PARAMETERS  # AdamW: 2 fp32 states
    assert not plan.fits
    assert plan.suggestions
    text = "\n".join(plan.suggestions)
    for expected in ("gradient checkpointing", "batch_size", "8-bit AdamW", "LoRA", "QLoRA", "bfloat16"):
        assert expected in text
    # every suggestion is re-planned: it names what it saves
    assert all("saves" in s and "GiB" in s for s in plan.suggestions)

    # the 8-bit AdamW suggestion saves what the optimizer term says it does
    eight = plan_memory(request(FULL, dtype=common_pb2.DTYPE_FLOAT32, optimizer=trainer_pb2.OPTIMIZER_ADAMW_8BIT),
                        runtime)
    assert eight.optimizer_bytes == pytest.approx(2 * LLAMA2_7B_PARAMETERS, rel=0.02)
    saving = (plan.total_bytes - eight.total_bytes) / GiB
    assert any(s.startswith("8-bit AdamW") and f"saves {saving:.2f} GiB" in s for s in plan.suggestions)


def test_llama2_7b_qlora_fits_a_24gb_device(runtime):
    plan = plan_memory(request(qlora(), device="RTX4090", gradient_checkpointing=True), runtime)
    assert plan.fits, planner.explain(plan)
    assert plan.total_bytes < 24 * 10**9
    # 4-bit linear weights (0.5 byte + fp32 absmax per 64) + float32 embeddings/head/norms
    # (prepare_model_for_kbit_training upcasts them) + the float32 adapter
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    others = LLAMA2_7B_PARAMETERS - linear
    adapter = plan.trainable_parameters
    assert plan.weights_bytes == pytest.approx(linear * (0.5 + 4 / 64) + (others + adapter) * 4, rel=1e-3)
    assert plan.trainable_parameters == 39_976_960  # r=16 on every linear layer but lm_head
    assert plan.total_parameters == LLAMA2_7B_PARAMETERS + plan.trainable_parameters

    double = plan_memory(request(qlora(double_quant=True), device="RTX4090", gradient_checkpointing=True), runtime)
    assert double.weights_bytes == pytest.approx(
        linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + (others + adapter) * 4, rel=1e-3)

    # the same at batch 8 x 512 without checkpointing does not fit, and says what would
    tight = plan_memory(request(qlora(), memory=24 * GiB), runtime)
    assert not tight.fits and tight.device_memory_bytes == 24 * GiB
    checkpointing = [s for s in tight.suggestions if s.startswith("enable gradient checkpointing")]
    assert checkpointing and "fits" in checkpointing[0] and "still" not in checkpointing[0]


def test_optimizer_and_checkpointing_terms(runtime):
    adamw = plan_memory(request(lora()), runtime)
    sgd = plan_memory(request(lora(), optimizer=trainer_pb2.OPTIMIZER_SGD), runtime)
    eight = plan_memory(request(lora(), optimizer=trainer_pb2.OPTIMIZER_ADAMW_8BIT), runtime)
    assert sgd.optimizer_bytes == 0
    # LoRA matrices of 65,536 values: 1 byte per state + an fp32 absmax per 256 values
    assert eight.optimizer_bytes == 8_388_608 * 2 + 2 * 4 * (8_388_608 // 256)
    ckpt = plan_memory(request(lora(), gradient_checkpointing=True), runtime)
    assert ckpt.activations_bytes < adamw.activations_bytes / 3
    half = plan_memory(request(lora(), batch_size=4), runtime)
    assert half.activations_bytes == pytest.approx(adamw.activations_bytes / 2, rel=1e-6)
    assert half.batch_size == 4


# --- tiny models: the plan against the real thing ------------------------------------------
def tiny_config() -> dict:
    return json.loads(build_model(400, 0).config.to_json_string())


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_tiny_model_from_config_counts_as_built(runtime, method):
    from tunesmith_builtin.peft_lora import LoraMethod

    spec = {"full": FULL, "lora": lora(4, ["all-linear"]), "qlora": qlora(4)}[method]
    plan = plan_memory(request(spec, config=tiny_config(), device="cpu"), runtime)
    model = build_model(400, 0)
    if method == "full":
        trainable = total = sum(p.numel() for p in model.parameters())
        assert plan.weights_bytes == 4 * total + sum(b.numel() * 4 for b in model.buffers())
    else:
        peft_model = LoraMethod().apply(model, LoraMethod().validate({"rank": 4, "target_modules": "all-linear"}))
        trainable, total = peft_model.get_nb_trainable_parameters()
    assert (plan.trainable_parameters, plan.total_parameters) == (trainable, total)
    assert plan.device_memory_bytes > 0 and plan.fits


@pytest.mark.parametrize("method", ["ia3", "prefix_tuning", "prompt_tuning"])
def test_other_peft_methods_count_as_peft_does(runtime, method):
    from tunesmith.trainer.validation import method_options

    spec = {"ia3": trainer_pb2.MethodSpec(ia3=trainer_pb2.Ia3Config()),
            "prefix_tuning": trainer_pb2.MethodSpec(prefix_tuning=trainer_pb2.PrefixTuningConfig(num_virtual_tokens=8)),
            "prompt_tuning": trainer_pb2.MethodSpec(prompt_tuning=trainer_pb2.PromptTuningConfig(
                num_virtual_tokens=8, init_text="route this message"))}[method]
    # prompt tuning's init_text needs a tokenizer, which a bare config has not: planned without it
    plan = plan_memory(request(spec, config=tiny_config(), device="cpu"), runtime)
    plugin = runtime.registry.get("peft_methods", method)
    options = dict(plugin.validate(method_options(spec)))
    if method == "prompt_tuning":
        options["init_text"] = ""
    real = plugin.apply(build_model(400, 0), plugin.validate(options))
    assert (plan.trainable_parameters, plan.total_parameters) == real.get_nb_trainable_parameters()


@pytest.mark.parametrize("bits,double_quant", [(4, False), (4, True), (8, False)])
def test_qlora_weights_are_the_quantised_model_s_bytes(runtime, sft_model_dir, bits, double_quant):
    """The plan (meta, unquantised) against a really quantised load: the same peft counts, and
    weights_bytes equal to the bytes of the parameters plus their bitsandbytes quant state."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    spec = qlora(4, bits=bits, double_quant=double_quant)
    with open(f"{sft_model_dir}/config.json") as f:
        plan = plan_memory(request(spec, config=f.read(), device="cpu", dtype=common_pb2.DTYPE_FLOAT32), runtime)
    plugin = runtime.registry.get("peft_methods", "qlora")
    options = plugin.validate({"lora": {"rank": 4}, "bits": bits, "double_quant": double_quant})
    model = AutoModelForCausalLM.from_pretrained(sft_model_dir, dtype=torch.float32,
                                                 **plugin.load_kwargs(options, "cpu"))
    model = plugin.apply(model, options)
    assert (plan.trainable_parameters, plan.total_parameters) == model.get_nb_trainable_parameters()
    nbytes = sum(b.numel() * b.element_size() for b in model.buffers())
    for p in model.parameters():
        nbytes += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            parts = [state.absmax, state.code] + ([state.state2.absmax, state.state2.code, state.offset]
                                                  if state.nested else [])
            nbytes += sum(t.numel() * t.element_size() for t in parts)
        scale = getattr(p, "SCB", None)
        if scale is not None:
            nbytes += scale.numel() * scale.element_size()
    assert plan.weights_bytes == nbytes


def test_model_store_name_plans_like_its_config(runtime, sft_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith_builtin.peft_lora import LoraMethod

    runtime.models.register("tiny-planner", sft_model_dir)
    by_name = plan_memory(request(lora(8, ["all-linear"]), config=None, base_model="tiny-planner", device="cpu"),
                          runtime)
    with open(f"{sft_model_dir}/config.json") as f:
        by_config = plan_memory(request(lora(8, ["all-linear"]), config=f.read(), device="cpu"), runtime)
    assert by_name == by_config
    real = LoraMethod().apply(AutoModelForCausalLM.from_pretrained(sft_model_dir),
                              LoraMethod().validate({"rank": 8, "target_modules": "all-linear"}))
    assert (by_name.trainable_parameters, by_name.total_parameters) == real.get_nb_trainable_parameters()


def _saved_bytes(model, batch: int, seq: int, vocab: int) -> int:
    """Bytes of the tensors autograd keeps from one forward pass (parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[: batch // 2, : seq // 8] = 0  # padding, as in SFT batches
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("method", ["full", "lora-all", "lora-qv"])
def test_saved_activation_formula_matches_autograd(method, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith_builtin.peft_lora import LoraMethod

    cfg = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    options = {"full": None, "lora-all": {"rank": 8}, "lora-qv": {"rank": 8, "target_modules": ["q_proj", "v_proj"]}}

    class Method:  # the method, as the planner sees a plugin
        name = method
        quantized_base = False
        artifact_kind = "model" if method == "full" else "adapter"

        def apply(self, model, _options):
            if method == "full":
                for p in model.parameters():
                    p.requires_grad_(True)
                return model
            return LoraMethod().apply(model, LoraMethod().validate(options[method]))

    torch.manual_seed(0)
    real = Method().apply(LlamaForCausalLM(cfg).to(getattr(torch, dtype)), None)
    measured = _saved_bytes(real, 4, 64, 300)
    facts = planner._facts(cfg, Method(), {}, planner._Setup(hp=dict(DEFAULTS, dtype=dtype), kind="cpu"), None,
                           "spec.method")
    planned = planner._activation_parts(facts, 4, 64, False)["saved"]
    assert planned == pytest.approx(measured, rel=0.06)


# --- bad input ------------------------------------------------------------------------------
def field_of(runtime, req) -> str:
    with pytest.raises(TunesmithError) as info:
        plan_memory(req, runtime)
    return info.value.field


def test_config_sources_are_exclusive(runtime):
    assert field_of(runtime, request(lora(), base_model="tiny-planner")) == "model_config_json"
    with pytest.raises(InvalidArgument) as info:
        plan_memory(request(lora(), config=None), runtime)
    assert info.value.field == "spec.base_model"


@pytest.mark.parametrize("text", [
    "{not json", "[1, 2]", '{"hidden_size": 8}', '{"model_type": "no-such-model"}',
    json.dumps({**LLAMA2_7B, "num_hidden_layers": 10**7}), json.dumps({**LLAMA2_7B, "num_attention_heads": 0}),
    json.dumps({**LLAMA2_7B, "hidden_size": "wide"})])
def test_bad_config_json(runtime, text):
    with pytest.raises(InvalidArgument) as info:
        plan_memory(request(lora(), config=text), runtime)
    assert info.value.field == "model_config_json"


def test_method_that_does_not_suit_the_model(runtime):
    """LoRA on q_proj/v_proj of a model that has no such modules (BERT's are query/value)."""
    with pytest.raises(InvalidArgument) as info:
        plan_memory(request(lora(), config={"model_type": "bert", "is_decoder": True}), runtime)
    assert info.value.field == "spec.method.lora"
    assert "q_proj" in info.value.message


def test_unknown_model_name(runtime):
    with pytest.raises(NotFound) as info:
        plan_memory(request(lora(), config=None, base_model="no-such-model"), runtime)
    assert info.value.field == "spec.base_model"


def test_device_checks(runtime):
    with pytest.raises(InvalidArgument) as info:
        plan_memory(request(lora(), device="B300-ultra"), runtime)
    assert info.value.field == "device"
    assert "A100-80GB" in info.value.message
    assert field_of(runtime, request(lora(), memory=-1)) == "device_memory_bytes"
    # names are matched loosely; device_memory_bytes wins over the table
    assert plan_memory(request(lora(), device="a100 80gb"), runtime).device_memory_bytes == 81920 * 2**20
    assert plan_memory(request(lora(), device="H200", memory=10**9), runtime).device_memory_bytes == 10**9


def test_local_devices(runtime):
    cpu = plan_memory(request(lora(), device="cpu"), runtime)
    assert 0 < cpu.device_memory_bytes <= planner._local_memory("cpu")
    assert cpu.activations_bytes > plan_memory(request(lora()), runtime).activations_bytes  # float32, not bf16
    if not torch.cuda.is_available():
        with pytest.raises(TunesmithError) as info:
            plan_memory(request(lora(), device="cuda:0"), runtime)
        assert info.value.code == "device_unavailable" and info.value.field == "device"
        # with the memory given, a GPU that is not here can still be planned for
        assert plan_memory(request(lora(), device="cuda", memory=16 * GiB), runtime).device_memory_bytes == 16 * GiB


def test_bad_method_and_hyperparameters_name_their_fields(runtime):
    bad_rank = trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=-1))
    assert field_of(runtime, request(bad_rank)) == "spec.method.lora.rank"
    assert field_of(runtime, request(lora(), batch_size=-2)) == "spec.hyperparameters.batch_size"
    assert field_of(runtime, request(trainer_pb2.MethodSpec(name="no-such-method"))) == "spec.method.name"


def test_cpu_heap_retention_term(runtime, monkeypatch):
    """On the CPU the plan adds glibc's heap retention, unless MALLOC_MMAP_THRESHOLD_ is set."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    config = tiny_config()
    with_retention = plan_memory(request(lora(4), config=config, device="cpu"), runtime)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    live = plan_memory(request(lora(4), config=config, device="cpu"), runtime)
    method = runtime.registry.get("peft_methods", "lora")
    options = method.validate({"rank": 4, "target_modules": ["q_proj", "v_proj"]})
    setup = planner._Setup(hp=dict(DEFAULTS, dtype="float32"), kind="cpu")
    facts = planner._facts(_config_of(config), method, options, setup, runtime.registry, "spec.method")
    saved = planner._activation_parts(facts, DEFAULTS["batch_size"], DEFAULTS["max_seq_length"], False)["saved"]
    expected = int(planner.CPU_HEAP_RETENTION["adapter"] * saved)
    assert with_retention.activations_bytes - live.activations_bytes == expected > 0


def _config_of(config: dict):
    from transformers import AutoConfig

    return AutoConfig.for_model(**config)
