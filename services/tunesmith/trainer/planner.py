"""TrainerService.PlanMemory: will this training job fit on that device? Estimated from the
model's config alone, without loading a weight.

`plan_memory(request, runtime)` is the whole RPC. The model comes from the model store
(spec.base_model: its config.json) or from request.model_config_json (a Hugging Face config.json
as text), never both. It is built on PyTorch's meta device (shapes and dtypes, no storage), the
method the spec names is applied to it (the method plugin's own apply(), on meta), and the
parameters are counted from the result: the trainable count is peft's own
(PeftModel.get_nb_trainable_parameters) for a peft method. Sizes are in bytes; B is
hyperparameters.batch_size, S hyperparameters.max_seq_length (tunesmith.trainer.hyperparameters
DEFAULTS when unset, the same defaults the training loop uses), e the byte size of the training
dtype (hyperparameters.dtype; "auto" is bfloat16 on a CUDA device, float32 on the CPU, like the
loop), L, h, i, a, V the config's layers, hidden size, intermediate size, attention heads and
vocabulary; qd = a x head_dim.

weights_bytes
    The sum over the applied model's parameters and buffers of numel x element size, in the
    dtypes the method leaves them in (peft keeps LoRA adapters in float32 on a 16-bit base).
    QLoRA (a method with quantized_base): a quantised load is impossible on meta, so the
    method's apply() (prepare_model_for_kbit_training + its LoRA config) runs on the
    unquantised meta model, and the linear weights bitsandbytes would quantise (every
    nn.Linear but the output head, the embeddings, the adapters and llm_int8_skip_modules, as
    the method's quantization_config says) are counted at
        4-bit: 0.5 byte/param + an absmax per 64-value block: fp32 (4/64 byte/param) or, with
               double_quant, 8-bit (1/64) + an fp32 absmax per 256 blocks + its 256-entry code;
               + the 16-entry fp32 code of each weight;
        8-bit: 1 byte/param + one fp32 scale per output row;
    and everything else (embeddings, norms, lm_head, biases, the adapters) in the dtype the
    method leaves it in (prepare_model_for_kbit_training casts those to float32). The test
    checks this byte for byte against a really quantised load. (On the CPU the loader keeps the
    checkpoint file mapped, so the process's RSS also shows up to the checkpoint's size in clean,
    reclaimable page cache; that is not planned.)
    A method whose apply() cannot run on meta tensors is planned from what it trains: a
    quantised-base method through the "lora" method with its LoRA options, a method that saves a
    whole model with every weight trainable; otherwise InvalidArgument on spec.method.<config>
    (typically options that do not suit the model, e.g. target modules it has not).
gradients_bytes
    numel x element size of every trainable parameter (its gradient has its dtype); full
    fine-tuning: all of them. With num_processes > 1, once more for DDP's gradient buckets.
optimizer_bytes
    AdamW (torch, as the loop builds it): 2 states of the parameter's dtype per trainable
    parameter (8 bytes each in float32, 4 in bfloat16: torch keeps Adam's states in the
    parameter dtype, and the loop trains in the load dtype without fp32 master weights).
    adamw_8bit (bitsandbytes AdamW8bit): 2 bytes/param + 2 fp32 absmax per 256-value block for
    tensors of >= 4096 values; smaller tensors keep 2 fp32 states (8 bytes/param). SGD: 0 (the
    loop uses no momentum).
activations_bytes (what autograd keeps for the backward pass, plus the loss's peak)
    Per token and decoder layer, counted the way a Llama-style layer (pre-norm, RMSNorm with an
    fp32 upcast, SDPA attention, gated MLP) saves tensors, checked against
    torch.autograd.graph.saved_tensors_hooks on real models (tests/trainer/test_planner.py):
      gradient flow (always): 2 x h x 4 (the fp32 inputs of the two norms) + 3 x qd x e (q, k,
        v after RoPE; k and v repeated to every head, as transformers does when the batch has a
        padding mask) + qd x e (attention output) + a x 4 (SDPA's logsumexp) + MLP: 3 x i x e
        (act input, act output, up) for a gated MLP, i x e for a plain one;
      per trained module (weight requires grad, or a LoRA adapter), by group (q/k/v share
        their input, gate/up theirs): full: the group's input once in e (for o_proj: nothing
        more, SDPA keeps it), and h x e per trained norm; LoRA: the module's input in the
        adapter's dtype (one shared copy when that is e, one fp32 copy per module on a 16-bit
        base, where peft casts the input), x 2 per module with dropout > 0 (its output, and its
        mask: a float tensor on the CPU, a bool one on CUDA), + r x 4 (lora_A's output);
      eager attention (attn_implementation "eager") adds B x a x S^2 x (4 + e) per layer (the
        fp32 softmax and its cast); SDPA keeps no S^2 tensor.
    Outside the layers, per token: h x 4 (final norm input) + h x e more for a trained final
    norm and another for a trained lm_head; the loss: B x S x V x 12 (float32 log-probabilities
    kept by cross-entropy, plus two float32 gradient buffers of that size at the start of the
    backward pass: the logits tensor often dominates for small models). This is the
    conservative full-sequence case: our SFT loop passes logits_to_keep and computes logits only
    from the first labelled position, so completion-only batches use less. A backward working
    set of 2 x (h + i) x e per token is added once. Prompt learning (prompt/prefix tuning) runs
    S + num_virtual_tokens positions.
      Without gradient checkpointing: L x layer + outside.
      With it (one checkpoint per decoder layer): L x B x S x h x e (each layer's input) + one
      layer's activations (recomputed during its backward) + outside.
    On the CPU, glibc's heap keeps freed activation memory: + CPU_HEAP_RETENTION x the saved
    activations (layers or checkpoint inputs, one recomputed layer, final norm; not the loss,
    whose blocks are large enough to go back to the OS): 0.55 for full fine-tuning, 1.45 for
    an adapter on a full-precision base, 1.9 on a bitsandbytes base (measured; see the constant).
runtime overhead (part of total_bytes; not a separate field)
    CUDA: CUDA_CONTEXT_BYTES (~0.5 GiB: context, cuBLAS workspace). CPU: CPU_RUNTIME_BYTES, the
    resident set of a Python process after `import torch, transformers, peft` and resolving a
    model class (measured: 460 MiB with torch 2.13 CPU, transformers 5.19, peft 0.21; a bare
    `import torch, transformers` is 240 MiB).

total_bytes = weights + gradients + optimizer + activations + runtime overhead. It leans high:
with zero_grad(set_to_none=True) a step's gradients and its activations are never all resident
together (full fine-tuning's live peak measured 12% under the sum), while the CUDA caching
allocator's fragmentation is not counted. bench/bench_memory_plan.py compares the plan with the
measured peak RSS of real training steps on the CPU.

fits = total_bytes <= the device's memory: request.device_memory_bytes when set, else a named
device's (DEVICE_MEMORY, as nvidia-smi reports it), else the local device's ("cpu": physical RAM,
or the cgroup limit when lower; "cuda[:N]": torch.cuda's total memory). When it does not fit,
`suggestions` lists the changes that would shrink the plan (gradient checkpointing, a smaller
batch, 8-bit AdamW, bfloat16, LoRA instead of full fine-tuning, QLoRA), each re-planned, with
the bytes it saves and whether the job would then fit.

Errors (tunesmith.core.errors, field paths as in the proto): InvalidArgument for both or neither
config source ("model_config_json" / "spec.base_model"), a config that is not JSON, not an
object or has an unknown model_type ("model_config_json"), an unknown device name ("device"), a
negative "device_memory_bytes", bad method options ("spec.method.lora.rank") or hyperparameters
("spec.hyperparameters.batch_size"), a method that cannot be applied to the model
("spec.method.lora"); NotFound for an unknown model name; FailedPrecondition for a local CUDA
device that is not there (give device_memory_bytes or a device name).

torch and transformers are imported inside the functions (the service must start fast).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from tunesmith.api.trainer.v1 import trainer_pb2
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, TunesmithError
from tunesmith.trainer import hyperparameters
from tunesmith.trainer.validation import _check_method, method_options

log = logging.getLogger("tunesmith.trainer.planner")

MiB = 2**20
GiB = 2**30

#: The CUDA context, cuBLAS workspace and friends on a GPU.
CUDA_CONTEXT_BYTES = 512 * MiB
#: Resident set of a fresh Python process after `import torch, transformers, peft` and resolving
#: AutoModelForCausalLM's class (measured on the development machine: 471,344 kB; torch 2.13 CPU,
#: transformers 5.19, peft 0.21). A bare `import torch, transformers` measured 245,500 kB.
CPU_RUNTIME_BYTES = 460 * MiB

#: Named GPUs -> memory in bytes, as nvidia-smi reports it (MiB).
DEVICE_MEMORY: dict[str, int] = {
    "A100-80GB": 81920 * MiB,
    "A100-40GB": 40960 * MiB,
    "H100-80GB": 81559 * MiB,
    "H100-94GB": 95830 * MiB,
    "H200": 143771 * MiB,
    "L4": 23034 * MiB,
    "L40S": 46068 * MiB,
    "T4": 15360 * MiB,
    "V100-16GB": 16384 * MiB,
    "V100-32GB": 32768 * MiB,
    "A10G": 23028 * MiB,
    "A10": 23028 * MiB,
    "RTX3090": 24576 * MiB,
    "RTX4090": 24564 * MiB,
    "RTXA6000": 49140 * MiB,
}

#: bitsandbytes' 4-bit block size, and the double-quant block of block maxima.
QUANT_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256
#: bitsandbytes' 8-bit optimizers: block size of their states, and the smallest tensor they
#: quantise (smaller ones keep fp32 states).
OPTIM_8BIT_BLOCK = 256
OPTIM_8BIT_MIN_SIZE = 4096
#: Bytes per vocabulary entry and position of the loss (fp32 log-probs + two fp32 gradients).
LOSS_BYTES_PER_LOGIT = 12
#: CPU only: glibc malloc keeps the memory of freed activations in its heap (its mmap threshold
#: rises to 32 MiB after the first frees, so activation-sized blocks stop going back to the OS,
#: and small long-lived tensors between them fragment it), so the process's resident set stays
#: above its live tensors. The plan adds this many times the saved activations, by kind of
#: training; measured with bench/bench_memory_plan.py on this project's development machine
#: (SmolLM2-135M, batch 8 x 128, float32, 2 threads, glibc 2.x; peak RSS with default malloc
#: minus the live peak measured with MALLOC_MMAP_THRESHOLD_=131072, over the saved activations):
#:   "full" (most parameters train): 0.52-0.59 (its gradients reuse the freed blocks);
#:   "adapter" (LoRA-style, few parameters train): 1.35-1.53 (4 runs);
#:   "quantized" (a bitsandbytes base: dequantised weights add to the churn): 1.28-2.03 (3 runs).
#: Not applied when MALLOC_MMAP_THRESHOLD_ is set in the environment (the workers inherit the
#: service's): glibc then returns every block above it, and the resident set follows the live
#: tensors.
CPU_HEAP_RETENTION = {"full": 0.55, "adapter": 1.45, "quantized": 1.9}

#: Linear-module names -> the group that shares one input tensor (Llama, Mistral, Qwen, Phi,
#: GPT-2, Falcon, MPT naming). Unknown names count as their own group.
_GROUPS = {
    "q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in",
    "query_key_value": "attn_in", "c_attn": "attn_in", "Wqkv": "attn_in",
    "o_proj": "attn_out", "out_proj": "attn_out",
    "gate_proj": "mlp_in", "up_proj": "mlp_in", "gate_up_proj": "mlp_in", "w1": "mlp_in", "w3": "mlp_in",
    "c_fc": "mlp_in", "fc1": "mlp_in",
    "down_proj": "mlp_out", "w2": "mlp_out", "fc2": "mlp_out",
}
_GATED_NAMES = ("gate_proj", "gate_up_proj", "w3")
_LORA_KEYS = ("rank", "alpha", "dropout", "target_modules", "use_dora", "use_rslora")


# --- what the meta model tells ------------------------------------------------------------
@dataclass
class _Module:
    """One trained module of a decoder layer."""

    group: str
    in_features: int
    kind: str  # "full" (its own weight trains) or "adapter" (LoRA or another peft wrapper)
    rank: int = 0
    dropout: float = 0.0
    adapter_bytes: int = 4  # element size of the adapter's weights (its input is cast to it)


@dataclass
class _Facts:
    """The sizes of one applied model (meta device), independent of batch and optimizer."""

    total: int
    trainable: int
    weights_bytes: int
    #: (numel, element size) of every trainable tensor.
    trainable_tensors: list[tuple[int, int]]
    layers: int
    hidden: int
    intermediate: int
    heads: int
    q_dim: int
    vocab: int
    gated: bool
    eager: bool
    layer_modules: list[_Module] = field(default_factory=list)
    norms_trained: int = 0  # trained norms per layer
    final_norm_trained: bool = False
    head_trained: bool = False
    virtual_tokens: int = 0
    quantized: bool = False  # the base is loaded quantised (bitsandbytes)
    element: int = 4  # bytes per value of the training dtype
    notes: list[str] = field(default_factory=list)


@dataclass
class _Setup:
    """What one plan depends on besides the model: a resolved hyperparameter dict and device."""

    hp: dict[str, Any]
    kind: str  # "cpu" or "cuda"
    processes: int = 1


# --- request checks -----------------------------------------------------------------------
def _normalise_device_name(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).upper()


_NAMED = {_normalise_device_name(k): k for k in DEVICE_MEMORY}


def _device(request: trainer_pb2.PlanMemoryRequest, spec: trainer_pb2.TrainingJobSpec) -> tuple[str, str, int | None]:
    """(kind "cpu"/"cuda", the name as asked, the memory from the request or the table, or None
    for a local device to measure)."""
    from tunesmith.core.devices import cuda_device_count

    if request.device_memory_bytes < 0:
        raise InvalidArgument(f"must be >= 0 (0: the device's own memory), got {request.device_memory_bytes}",
                              field="device_memory_bytes")
    name = request.device.strip()
    field_name = "device"
    if not name:
        name, field_name = (spec.device.strip() or "auto"), "spec.device"
    low = name.lower()
    if low == "auto":
        low = "cuda" if cuda_device_count() > 0 else "cpu"
    given = request.device_memory_bytes or None
    if low == "cpu" or re.fullmatch(r"cuda(:\d{1,2})?", low):
        return ("cpu" if low == "cpu" else "cuda"), low, given
    key = _NAMED.get(_normalise_device_name(name))
    if key is None:
        raise InvalidArgument(f"unknown device {name!r}: use cpu, cuda, cuda:N or a GPU name "
                              f"({', '.join(DEVICE_MEMORY)})", field=field_name)
    return "cuda", key, given or DEVICE_MEMORY[key]


def _local_memory(name: str) -> int:
    if name == "cpu":
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            try:
                with open(path) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if text.isdigit() and 0 < int(text) < total:
                total = int(text)
            break
        return total
    from tunesmith.core.devices import check_device

    problem = check_device(name)
    if problem is None:
        import torch

        if torch.cuda.is_available():
            index = int(name.partition(":")[2] or 0)
            return int(torch.cuda.get_device_properties(index).total_memory)
        problem = f"device {name!r} is not available: torch sees no CUDA GPU"
    raise FailedPrecondition(f"{problem}; to plan for a GPU that is not here, give device_memory_bytes or a "
                             f"device name ({', '.join(DEVICE_MEMORY)})", field="device",
                             code="device_unavailable")


def _check_sources(request: trainer_pb2.PlanMemoryRequest, spec: trainer_pb2.TrainingJobSpec) -> None:
    if spec.base_model and request.model_config_json:
        raise InvalidArgument("give either spec.base_model or model_config_json, not both",
                              field="model_config_json")
    if not spec.base_model and not request.model_config_json:
        raise InvalidArgument("is required: a model-store name (e.g. smollm2-135m-instruct), or leave it empty "
                              "and give model_config_json", field="spec.base_model")


def _config(request: trainer_pb2.PlanMemoryRequest, spec: trainer_pb2.TrainingJobSpec, runtime) -> Any:
    """The transformers config of the model to plan (no weights are read)."""
    from tunesmith.core.checks import check_model

    _check_sources(request, spec)
    if spec.base_model:
        check_model(runtime.models, spec.base_model, "spec.base_model")
        entry = runtime.models.get(spec.base_model)
        folder = runtime.storage.resolve(entry.artifact.uri)
        try:
            data = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"model {spec.base_model!r} has no readable config.json: {exc}",
                                     field="spec.base_model") from None
        config = _config_from_dict(data, "spec.base_model")
        config._name_or_path = str(folder)  # model.name_or_path, as from_pretrained(folder) sets it
        return config
    try:
        data = json.loads(request.model_config_json)
    except ValueError as exc:
        raise InvalidArgument(f"is not valid JSON: {exc}", field="model_config_json") from None
    config = _config_from_dict(data, "model_config_json")
    config._name_or_path = ""  # no folder on this machine: a config's own path is not one to read
    return config


def _config_from_dict(data: Any, field_name: str) -> Any:
    if not isinstance(data, dict):
        raise InvalidArgument(f"must be a JSON object (a config.json), got {type(data).__name__}", field=field_name)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise InvalidArgument("has no model_type (e.g. \"llama\")", field=field_name)
    _offline()
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise InvalidArgument(f"unknown model_type {model_type!r}: this transformers does not know it",
                              field=field_name)
    kwargs = {k: v for k, v in data.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the config class makes of bad values
        raise InvalidArgument(f"is not a valid {model_type} config: {type(exc).__name__}: {exc}",
                              field=field_name) from None


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _method(spec: trainer_pb2.TrainingJobSpec, registry) -> tuple[Any, dict[str, Any], str]:
    """(plugin, validated options, the `spec.method.<config>` path) as CreateTrainingJob resolves
    them (the spec's method name is filled in)."""
    _check_method(spec, registry)
    plugin = registry.require("peft_methods", spec.method.name, "spec.method.name")
    path = f"spec.method.{spec.method.WhichOneof('config') or spec.method.name}"
    try:
        options = plugin.validate(method_options(spec.method))
    except TunesmithError as exc:
        raise exc.prefixed(path) from None
    return plugin, options, path


# --- the meta model -----------------------------------------------------------------------
def _torch_dtype(name: str, kind: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if kind == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _build(config: Any, dtype: Any, attn: str | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever transformers makes of a bad config
        raise InvalidArgument(f"cannot build a causal language model from this config: {type(exc).__name__}: {exc}",
                              field=_config_field(config)) from None


def _config_field(config: Any) -> str:
    """The request field a config came from (a model-store config carries its folder)."""
    return "spec.base_model" if getattr(config, "_name_or_path", "") else "model_config_json"


#: Bounds on the shape of a planned model (a meta model still costs Python objects per layer).
_DIM_LIMITS = {"layers": (1, 1024), "hidden": (1, 1 << 17), "heads": (1, 4096), "q_dim": (1, 1 << 18),
               "intermediate": (1, 1 << 20), "vocab": (1, 1 << 24)}


def _checked_dims(config: Any) -> dict[str, int]:
    """The config's dimensions (see _dims), InvalidArgument when missing or out of bounds."""
    try:
        dims = _dims(config)
    except (TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:
        raise InvalidArgument(f"lacks the dimensions of a decoder (hidden size, layers, heads, vocabulary): {exc}",
                              field=_config_field(config)) from None
    for key, (lo, hi) in _DIM_LIMITS.items():
        if not lo <= dims[key] <= hi:
            raise InvalidArgument(f"{key} {dims[key]} is outside [{lo}, {hi}]", field=_config_field(config))
    return dims


def _quantisation(plugin: Any, options: dict[str, Any], kind: str, path: str) -> tuple[int, bool, list[str]]:
    """(bits, double quant, modules not to quantise) of a quantized_base method, from the
    quantization_config its load_kwargs() returns (else the options, else 4-bit NF4)."""
    try:
        kwargs = plugin.load_kwargs(options, kind) or {}
    except TunesmithError as exc:
        raise exc.prefixed(path) from None
    qc = kwargs.get("quantization_config")
    if qc is not None:
        to_dict = qc.to_dict() if hasattr(qc, "to_dict") else dict(qc)
        bits = 8 if to_dict.get("load_in_8bit") else 4
        return bits, bool(to_dict.get("bnb_4bit_use_double_quant")), list(to_dict.get("llm_int8_skip_modules") or [])
    return int(options.get("bits") or 4), bool(options.get("double_quant")), []


def _quantised_bytes(model: Any, bits: int, double_quant: bool, skip: list[str]) -> tuple[dict[int, int], int]:
    """({id(weight): numel} of the linear weights bitsandbytes would quantise, their bytes)."""
    import torch

    out_emb = model.get_output_embeddings()
    head = id(out_emb.weight) if out_emb is not None and getattr(out_emb, "weight", None) is not None else None
    tied_in = model.get_input_embeddings()
    skip_ids = {head, id(getattr(tied_in, "weight", None))}
    ids: dict[int, int] = {}
    nbytes = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module.weight) in skip_ids or module.weight.requires_grad:
            continue  # the head, the embeddings and the adapters stay unquantised
        if any(s and (name == s or name.endswith("." + s) or name.split(".")[-1] == s) for s in skip):
            continue
        n = module.weight.numel()
        ids[id(module.weight)] = n
        nbytes += _quantised_weight_bytes(n, module.out_features, bits, double_quant)
    return ids, nbytes


def _quantised_weight_bytes(n: int, rows: int, bits: int, double_quant: bool) -> int:
    """Bytes of one linear weight of n values as bitsandbytes stores it (with its quant state)."""
    if bits == 8:
        return n + 4 * rows  # int8 values + one fp32 scale per output row (SCB)
    blocks = math.ceil(n / QUANT_BLOCK)
    size = math.ceil(n / 2) + 16 * 4  # two 4-bit values per byte; the 16-entry fp32 code
    if double_quant:  # 8-bit absmax per block, fp32 absmax per 256 of them, their code and offset
        return size + blocks + 4 * math.ceil(blocks / DOUBLE_QUANT_BLOCK) + 256 * 4 + 4
    return size + 4 * blocks  # fp32 absmax per block


def _apply(plugin: Any, model: Any, options: dict[str, Any], registry, build, path: str) -> tuple[Any, list[str]]:
    """The method applied on the meta device; when its apply() cannot run on meta tensors, the
    plan falls back to what the method trains: LoRA (its LoRA settings, through the "lora"
    method) for a quantised-base method, every weight for a method that saves a model. A
    prompt-learning method whose init_text needs a tokenizer the plan does not have (a model
    given as model_config_json) is planned without it: the text only sets initial values."""
    import torch

    try:
        with torch.device("meta"):
            return plugin.apply(model, options), []
    except TunesmithError as exc:
        if not (plugin.prompt_learning and options.get("init_text")):
            raise exc.prefixed(path) from None
        try:
            with torch.device("meta"):
                return plugin.apply(build(), plugin.validate({**options, "init_text": ""})), [
                    f"planned without init_text ({exc.message})"]
        except TunesmithError as again:
            raise again.prefixed(path) from None
    except Exception as exc:  # noqa: BLE001 - a plugin that cannot run on meta tensors
        reason = f"{type(exc).__name__}: {exc}"
    fresh = build()
    if plugin.quantized_base:
        lora_options = options.get("lora") if isinstance(options.get("lora"), dict) else \
            {k: options[k] for k in _LORA_KEYS if k in options}
        try:
            lora = registry.get("peft_methods", "lora")
            with torch.device("meta"):
                return lora.apply(fresh, lora.validate(lora_options)), [
                    f"{plugin.name}.apply() failed on the meta device ({reason}); planned with its LoRA settings"]
        except TunesmithError:
            raise
        except Exception as exc:  # noqa: BLE001
            reason += f"; LoRA fallback: {type(exc).__name__}: {exc}"
    elif plugin.artifact_kind == "model":
        for p in fresh.parameters():
            p.requires_grad_(True)
        return fresh, [f"{plugin.name}.apply() failed on the meta device ({reason}); planned with every weight trained"]
    # Most often the options do not suit this model (target modules it has not); the reason says.
    raise InvalidArgument(f"the {plugin.name} method cannot be applied to this model (on the meta device): {reason}",
                          field=path, code="unplannable_method")


def _decoder_layers(base: Any, n_layers: int) -> Any:
    import torch

    for _, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and n_layers > 0:
            return module
    return None


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _dims(config: Any) -> dict[str, int]:
    c = _text_config(config)

    def first(*names: str, default: Any = None) -> Any:
        for n in names:
            value = getattr(c, n, None)
            if value:
                return value
        return default

    hidden = int(first("hidden_size", "n_embd", "d_model"))
    heads = int(first("num_attention_heads", "n_head", "num_heads"))
    head_dim = int(first("head_dim", default=hidden // heads if heads > 0 else 0))
    return {"layers": int(first("num_hidden_layers", "n_layer", "num_layers")), "hidden": hidden,
            "heads": heads, "q_dim": heads * head_dim,
            "intermediate": int(first("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
            "vocab": int(first("vocab_size"))}


def _layer_modules(layer: Any) -> tuple[list[_Module], int, bool]:
    """Trained modules of one decoder layer, its trained norms, whether its MLP is gated."""
    import torch

    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft absent: only full fine-tuning can be planned
        BaseTunerLayer = ()  # noqa: N806
    modules: list[_Module] = []
    norms = 0
    gated = False
    inside_adapter: list[str] = []
    for name, module in layer.named_modules():
        leaf = name.split(".")[-1]
        if leaf in _GATED_NAMES:
            gated = True
        if any(name.startswith(p + ".") for p in inside_adapter):
            continue
        group = _GROUPS.get(leaf, f"own:{name}")
        if BaseTunerLayer and isinstance(module, BaseTunerLayer):
            inside_adapter.append(name)
            trainable = [p for p in module.parameters() if p.requires_grad]
            if not trainable:
                continue
            base = module.get_base_layer()
            in_features = getattr(base, "in_features", None) or base.weight.shape[-1]
            rank = 0
            dropout = 0.0
            r = getattr(module, "r", None)
            if isinstance(r, dict) and r:
                rank = int(max(r.values()))
                drop = getattr(module, "lora_dropout", None)
                if drop is not None:
                    for d in drop.values():
                        dropout = max(dropout, float(getattr(d, "p", 0.0)))
            adapter_bytes = max(p.element_size() for p in trainable)
            kind = "full" if any(p.requires_grad for p in base.parameters(recurse=False)) else "adapter"
            modules.append(_Module(group, int(in_features), kind, rank, dropout, adapter_bytes))
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(module, torch.nn.Linear):
            modules.append(_Module(group, module.in_features, "full"))
        elif isinstance(module, torch.nn.Embedding):
            continue
        elif "norm" in type(module).__name__.lower() or "norm" in leaf.lower():
            norms += 1
        else:
            width = own[0].shape[-1] if own[0].dim() else 1
            modules.append(_Module(group, int(width), "full"))
    return modules, norms, gated


def _facts(config: Any, plugin: Any, options: dict[str, Any], setup: _Setup, registry, path: str) -> _Facts:
    import torch

    dtype = _torch_dtype(setup.hp["dtype"], setup.kind)
    attn = setup.hp.get("attn_implementation") or None
    dims = _checked_dims(config)

    def build() -> Any:
        return _build(config, dtype, attn)

    model = build()
    applied, notes = _apply(plugin, model, options, registry, build, path)
    base = applied.get_base_model() if hasattr(applied, "get_base_model") else applied
    quant_ids: dict[int, int] = {}
    quant_bytes = 0
    if plugin.quantized_base:
        bits, double_quant, skip = _quantisation(plugin, options, setup.kind, path)
        quant_ids, quant_bytes = _quantised_bytes(base, bits, double_quant, skip)
        notes.append(f"{bits}-bit base{' with double quantisation' if double_quant else ''}: "
                     f"{sum(quant_ids.values()):,} linear weights quantised")

    if hasattr(applied, "get_nb_trainable_parameters"):  # peft's own count
        trainable, total = (int(x) for x in applied.get_nb_trainable_parameters())
    else:
        trainable = sum(p.numel() for p in applied.parameters() if p.requires_grad)
        total = sum(p.numel() for p in applied.parameters())
    if trainable == 0:
        raise FailedPrecondition(f"the {plugin.name} method leaves no trainable parameter in this model",
                                 field="spec.method.name")

    weights = quant_bytes
    tensors: list[tuple[int, int]] = []
    for p in applied.parameters():
        if id(p) not in quant_ids:
            weights += p.numel() * p.element_size()
        if p.requires_grad:
            tensors.append((p.numel(), p.element_size()))
    weights += sum(b.numel() * b.element_size() for b in applied.buffers())

    layers = _decoder_layers(base, dims["layers"])
    # The residual stream's dtype: the load dtype, or float32 where the method upcast the
    # embeddings (peft's prepare_model_for_kbit_training does, for QLoRA).
    embeddings = base.get_input_embeddings()
    element = (embeddings.weight.element_size() if embeddings is not None and getattr(embeddings, "weight", None)
               is not None else torch.empty((), dtype=dtype, device="meta").element_size())
    modules, norms, gated = _layer_modules(layers[0]) if layers is not None else ([], 0, True)
    if layers is None:
        notes.append("no decoder-layer list found: activations estimated as a Llama-style model")
    final_norm_trained = head_trained = False
    out_emb = base.get_output_embeddings()
    if out_emb is not None:
        head_trained = any(p.requires_grad for p in out_emb.parameters())
    in_layers = {id(m) for m in layers.modules()} if layers is not None else set()
    for name, module in base.named_modules():
        if "norm" in name.split(".")[-1].lower() and id(module) not in in_layers:
            final_norm_trained = final_norm_trained or any(p.requires_grad for p in module.parameters())
    virtual = 0
    peft_config = getattr(applied, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        virtual = int(getattr(peft_config, "num_virtual_tokens", 0) or 0)
    eager = str(getattr(base.config, "_attn_implementation", "") or "") == "eager"
    for note in notes:
        log.info("memory plan for %s: %s", plugin.name, note)
    return _Facts(total=total, trainable=trainable, weights_bytes=int(weights), trainable_tensors=tensors,
                  layers=dims["layers"], hidden=dims["hidden"], intermediate=dims["intermediate"],
                  heads=dims["heads"], q_dim=dims["q_dim"], vocab=dims["vocab"], gated=gated, eager=eager,
                  layer_modules=modules, norms_trained=norms, final_norm_trained=final_norm_trained,
                  head_trained=head_trained, virtual_tokens=virtual, quantized=bool(plugin.quantized_base),
                  element=element, notes=notes)


# --- the byte arithmetic ------------------------------------------------------------------
def _layer_bytes_per_token(f: _Facts) -> float:
    """Bytes one decoder layer keeps for backward, per token (see the module docstring)."""
    e, h, i, qd = f.element, f.hidden, f.intermediate, f.q_dim
    total = 2 * h * 4 + 3 * qd * e + qd * e + f.heads * 4 + (3 * i * e if f.gated else i * e)
    total += f.norms_trained * h * e
    shared: set[str] = set()
    for m in f.layer_modules:
        if m.kind == "full":
            if m.group not in shared and m.group != "attn_out":
                total += m.in_features * e
            shared.add(m.group)
            continue
        if m.dropout > 0:  # dropout's output, and its mask (a float "noise" tensor on the CPU)
            total += m.in_features * 2 * m.adapter_bytes
        elif m.adapter_bytes == e:
            if m.group not in shared and m.group != "attn_out":
                total += m.in_features * e
            shared.add(m.group)
        else:
            total += m.in_features * m.adapter_bytes  # peft casts the input to the adapter's dtype
        total += m.rank * m.adapter_bytes
    return total


def _activation_parts(f: _Facts, batch: int, seq: int, checkpointing: bool) -> dict[str, int]:
    """The activation estimate by part: "saved" (what the forward pass leaves for autograd: the
    layers, or with checkpointing their inputs, and the final norm/head), "recompute" (with
    checkpointing: one layer's activations, rebuilt during its backward), "loss" (the logits'
    peak) and "working" (transient backward buffers)."""
    e, h = f.element, f.hidden
    positions = seq + f.virtual_tokens
    tokens = batch * positions
    layer = tokens * _layer_bytes_per_token(f)
    if f.eager:
        layer += batch * f.heads * positions * positions * (4 + e if e < 4 else 4)
    head = tokens * (h * 4 + (h * e if f.final_norm_trained else 0) + (h * e if f.head_trained else 0))
    saved = f.layers * tokens * h * e if checkpointing else f.layers * layer
    return {"saved": int(saved + head), "recompute": int(layer) if checkpointing else 0,
            "loss": int(tokens * f.vocab * LOSS_BYTES_PER_LOGIT), "working": int(tokens * 2 * (h + f.intermediate) * e)}


def _activation_bytes(f: _Facts, batch: int, seq: int, checkpointing: bool, kind: str = "cuda") -> int:
    parts = _activation_parts(f, batch, seq, checkpointing)
    total = sum(parts.values())
    if kind == "cpu" and not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        total += int(CPU_HEAP_RETENTION[_training_kind(f)] * (parts["saved"] + parts["recompute"]))
    return total


def _training_kind(f: _Facts) -> str:
    """The CPU_HEAP_RETENTION key of a plan."""
    if f.quantized:
        return "quantized"
    return "full" if 2 * f.trainable >= f.total else "adapter"


def _optimizer_bytes(f: _Facts, optimizer: str) -> int:
    if optimizer == "sgd":
        return 0
    if optimizer == "adamw_8bit":
        total = 0
        for n, _ in f.trainable_tensors:
            if n >= OPTIM_8BIT_MIN_SIZE:
                total += 2 * n + 2 * 4 * math.ceil(n / OPTIM_8BIT_BLOCK)
            else:
                total += 2 * 4 * n
        return total
    return sum(2 * n * size for n, size in f.trainable_tensors)


@dataclass
class _Bytes:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead


def _bytes(f: _Facts, setup: _Setup) -> _Bytes:
    hp = setup.hp
    grads = sum(n * size for n, size in f.trainable_tensors)
    if setup.processes > 1:
        grads *= 2  # DDP's gradient buckets
    return _Bytes(weights=f.weights_bytes, gradients=grads, optimizer=_optimizer_bytes(f, hp["optimizer"]),
                  activations=_activation_bytes(f, hp["batch_size"], hp["max_seq_length"],
                                                hp["gradient_checkpointing"], setup.kind),
                  overhead=CUDA_CONTEXT_BYTES if setup.kind == "cuda" else CPU_RUNTIME_BYTES)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


# --- suggestions --------------------------------------------------------------------------
def _suggestions(config: Any, facts: _Facts, setup: _Setup, spec: trainer_pb2.TrainingJobSpec, plugin: Any,
                 registry, memory: int) -> list[str]:
    current = _bytes(facts, setup).total
    found: list[tuple[int, str]] = []

    def offer(text: str, total: int) -> None:
        saved = current - total
        if saved > 0:
            verdict = "fits" if total <= memory else "still does not fit"
            found.append((saved, f"{text}: saves {_gib(saved)} (total {_gib(total)}, {verdict} in {_gib(memory)})"))

    hp = setup.hp
    if not hp["gradient_checkpointing"]:
        offer("enable gradient checkpointing (hyperparameters.gradient_checkpointing)",
              _bytes(facts, replace(setup, hp={**hp, "gradient_checkpointing": True})).total)
    if hp["batch_size"] > 1:
        b = hp["batch_size"]
        choice = 1
        while b > 1:
            b //= 2
            if _bytes(facts, replace(setup, hp={**hp, "batch_size": b})).total <= memory:
                choice = b
                break
        accumulation = hp["gradient_accumulation_steps"] * hp["batch_size"] // choice
        offer(f"batch_size {choice} with gradient_accumulation_steps {accumulation} (the same effective batch)",
              _bytes(facts, replace(setup, hp={**hp, "batch_size": choice})).total)
    if hp["optimizer"] == "adamw":
        offer("8-bit AdamW (hyperparameters.optimizer OPTIMIZER_ADAMW_8BIT)",
              _bytes(facts, replace(setup, hp={**hp, "optimizer": "adamw_8bit"})).total)
    if setup.kind == "cuda" and _torch_dtype(hp["dtype"], setup.kind).itemsize == 4:
        alt = replace(setup, hp={**hp, "dtype": "bfloat16"})
        offer("train in bfloat16 (hyperparameters.dtype DTYPE_BFLOAT16)", _replan(config, plugin, spec, alt, registry))
    if plugin.artifact_kind == "model":
        offer("LoRA (spec.method.lora, rank 16 on every linear layer) instead of full fine-tuning",
              _replan_method(config, trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig()), spec, setup, registry))
    if not plugin.quantized_base and not plugin.prompt_learning:
        lora = trainer_pb2.LoraConfig()
        if spec.method.WhichOneof("config") == "lora":
            lora.CopyFrom(spec.method.lora)
        offer("QLoRA (spec.method.qlora: a 4-bit base with LoRA" + (" of the same settings" if
              spec.method.WhichOneof("config") == "lora" else ", rank 16") + ")",
              _replan_method(config, trainer_pb2.MethodSpec(qlora=trainer_pb2.QloraConfig(lora=lora)), spec, setup,
                             registry))
    if found and not any(current - saved <= memory for saved, _ in found):
        combined = {**hp, "gradient_checkpointing": True, "batch_size": 1}
        if hp["optimizer"] == "adamw":
            combined["optimizer"] = "adamw_8bit"
        eight_bit = " and 8-bit AdamW" if hp["optimizer"] == "adamw" else ""
        offer(f"all of gradient checkpointing, batch_size 1{eight_bit}",
              _bytes(facts, replace(setup, hp=combined)).total)
    found.sort(key=lambda item: -item[0])
    return [text for _, text in found]


def _replan(config: Any, plugin: Any, spec: trainer_pb2.TrainingJobSpec, setup: _Setup, registry) -> int:
    try:
        options = plugin.validate(method_options(spec.method))
        return _bytes(_facts(config, plugin, options, setup, registry, "spec.method"), setup).total
    except TunesmithError:
        return 2**62  # not possible here: never offered


def _replan_method(config: Any, method: trainer_pb2.MethodSpec, spec: trainer_pb2.TrainingJobSpec, setup: _Setup,
                   registry) -> int:
    alt = trainer_pb2.TrainingJobSpec()
    alt.CopyFrom(spec)
    alt.method.CopyFrom(method)
    alt.merge = False
    try:
        plugin, options, path = _method(alt, registry)
        return _bytes(_facts(config, plugin, options, setup, registry, path), setup).total
    except TunesmithError:  # the method is not installed, or cannot run here (no bitsandbytes)
        return 2**62


# --- the RPC ------------------------------------------------------------------------------
def plan_memory(request: trainer_pb2.PlanMemoryRequest, runtime) -> trainer_pb2.MemoryPlan:
    """TrainerService.PlanMemory: see the module docstring."""
    spec = trainer_pb2.TrainingJobSpec()
    spec.CopyFrom(request.spec)
    _check_sources(request, spec)
    kind, device_name, memory = _device(request, spec)
    hp = hyperparameters.from_proto(spec.hyperparameters)
    plugin, options, path = _method(spec, runtime.registry)
    config = _config(request, spec, runtime)
    if memory is None:
        memory = _local_memory(device_name)
    setup = _Setup(hp=hp, kind=kind, processes=max(1, spec.num_processes))
    facts = _facts(config, plugin, options, setup, runtime.registry, path)
    b = _bytes(facts, setup)
    fits = b.total <= memory
    plan = trainer_pb2.MemoryPlan(
        weights_bytes=b.weights, gradients_bytes=b.gradients, optimizer_bytes=b.optimizer,
        activations_bytes=b.activations, total_bytes=b.total, fits=fits, total_parameters=facts.total,
        trainable_parameters=facts.trainable, device_memory_bytes=memory, batch_size=hp["batch_size"],
        sequence_length=hp["max_seq_length"])
    if not fits:
        plan.suggestions.extend(_suggestions(config, facts, setup, spec, plugin, runtime.registry, memory))
    return plan


def explain(plan: trainer_pb2.MemoryPlan) -> str:
    """A few human lines for a plan (the CLI and the bench print them)."""
    lines = [f"parameters: {plan.trainable_parameters:,} trainable of {plan.total_parameters:,}",
             f"weights {_gib(plan.weights_bytes)}, gradients {_gib(plan.gradients_bytes)}, optimizer "
             f"{_gib(plan.optimizer_bytes)}, activations {_gib(plan.activations_bytes)} "
             f"(batch {plan.batch_size} x {plan.sequence_length} tokens)",
             f"total {_gib(plan.total_bytes)} of {_gib(plan.device_memory_bytes)}: "
             f"{'fits' if plan.fits else 'does not fit'}"]
    lines += [f"  - {s}" for s in plan.suggestions]
    return "\n".join(lines)


__all__ = ["plan_memory", "explain", "DEVICE_MEMORY", "CPU_RUNTIME_BYTES", "CUDA_CONTEXT_BYTES"]
