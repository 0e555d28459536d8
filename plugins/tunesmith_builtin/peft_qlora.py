"""Built-in PEFT method "qlora": a LoRA adapter trained on a base that bitsandbytes quantises as it
loads (4-bit NF4/FP4 or 8-bit). Works on CPU (bitsandbytes' CPU kernels; a warning about the
optional `kernels` package is harmless) and CUDA.

Options (all optional), the shape of the proto's QloraConfig:
    lora: the LoRA options (rank, alpha, dropout, target_modules, use_dora, use_rslora), checked
        by the "lora" method's own validate(); an error's field is "lora.<key>".
    bits: 4 (default) or 8.
    quant_type: "nf4" (default) or "fp4" (4-bit only).
    compute_dtype: "auto" (default: float32 on CPU; on CUDA bfloat16 where the GPU supports it,
        else float16), "float32", "bfloat16" or "float16" (4-bit only).
    double_quant: quantise the quantisation constants too (4-bit only; default false).

load_kwargs() gives from_pretrained a BitsAndBytesConfig and device_map {"": device} (a quantised
model is placed as it loads); apply() runs peft's prepare_model_for_kbit_training (without
gradient checkpointing: the training loop turns that on from the job's hyperparameters) and
adds the LoRA adapter.

Declares: quantized_base; supports_merge (the adapter is merged into the full-precision base,
not the quantised one: the trainer's merge loads the unquantised base, so the merged model has
no requantisation error); servable_by_vllm (a plain LoRA adapter); artifact_kind "adapter"; not
prompt learning. Without bitsandbytes, validate() raises FailedPrecondition.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from tunesmith.core.errors import FailedPrecondition, InvalidArgument, TunesmithError
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._methods import AdapterMethod
from tunesmith_builtin._options import choice, flag, given, options_dict
from tunesmith_builtin.peft_lora import LoraMethod

OPTIONS = ("lora", "bits", "quant_type", "compute_dtype", "double_quant")
QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
BITS = (4, 8)
LORA = LoraMethod()
INSTALL_HINT = "pip install bitsandbytes"


def _bitsandbytes_missing(import_it: bool = False) -> str:
    """Why bitsandbytes is unusable here ("" when it is usable). Without import_it only its
    presence is checked (cheap: the trainer service validates requests without importing torch)."""
    try:
        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed"
        if import_it:
            importlib.import_module("bitsandbytes")
    except Exception as exc:  # a broken install: say why
        return f"bitsandbytes cannot be imported ({type(exc).__name__}: {exc})"
    return ""


def _require_bitsandbytes(import_it: bool = False) -> None:
    problem = _bitsandbytes_missing(import_it)
    if problem:
        raise FailedPrecondition(f"the qlora method quantises the base with bitsandbytes, but {problem}; "
                                 f"install it ({INSTALL_HINT}) or use the lora method", code="bitsandbytes_missing")


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        if not str(device).startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


class QloraMethod(AdapterMethod):
    name = "qlora"
    supports_merge = True
    servable_by_vllm = True
    quantized_base = True

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """The options with defaults (lora with its own defaults filled in);
        InvalidArgument(field=<key> or "lora.<key>") for a bad value or unknown key;
        FailedPrecondition when bitsandbytes is not installed."""
        options = options_dict(options, self.name, OPTIONS)
        lora = given(options, "lora", {})
        if not isinstance(lora, dict):
            raise InvalidArgument(f"lora must be a mapping of LoRA options, got {lora!r}", field="lora")
        try:
            lora = LORA.validate(lora)
        except TunesmithError as exc:
            raise exc.prefixed("lora") from None
        bits = given(options, "bits", 4)
        if bits not in BITS or isinstance(bits, bool):
            raise InvalidArgument(f"bits must be 4 or 8, got {bits!r}", field="bits")
        bits = int(bits)
        o = {"lora": lora, "bits": bits, "quant_type": choice(options, "quant_type", "nf4", QUANT_TYPES),
             "compute_dtype": choice(options, "compute_dtype", "auto", COMPUTE_DTYPES),
             "double_quant": flag(options, "double_quant")}
        if bits == 8:
            for key, default in (("quant_type", "nf4"), ("compute_dtype", "auto"), ("double_quant", False)):
                if o[key] != default:
                    raise InvalidArgument(f"{key} applies to 4-bit quantisation only; leave it unset with bits 8",
                                          field=key)
        _require_bitsandbytes()
        return o

    def load_kwargs(self, options: dict[str, Any], device: str) -> dict[str, Any]:
        """quantization_config (a transformers BitsAndBytesConfig) and device_map {"": device}."""
        o = self.validate(options)
        _require_bitsandbytes(import_it=True)
        from transformers import BitsAndBytesConfig

        if o["bits"] == 8:
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=o["quant_type"],
                                        bnb_4bit_compute_dtype=_torch_dtype(o["compute_dtype"], device),
                                        bnb_4bit_use_double_quant=o["double_quant"])
        return {"quantization_config": config, "device_map": {"": device}}

    def peft_config(self, options: dict[str, Any], model: Any) -> Any:
        return LORA.lora_config(options["lora"])

    def prepare(self, model: Any, options: dict[str, Any]) -> Any:
        _require_bitsandbytes(import_it=True)
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        _no_cpu_inference_repacking(model)
        _release_checkpoint_mapping(model)
        return model


def _release_checkpoint_mapping(model: Any) -> None:
    """Copy the unquantised tensors (embeddings, norms, head) out of the checkpoint file.

    transformers loads safetensors by mmap; after a quantised load the tensors left unquantised
    still point into that mapping, which keeps every page of the file that quantisation read
    mapped in the process (about 440 MB of the bundled model's 540 MB file, measured with
    /proc/self/smaps). Copying those few tensors releases the mapping: the quantised model then
    costs about 200 MB instead of about 500 MB on the bundled model.
    """
    import gc

    import torch

    with torch.no_grad():
        for module in model.modules():
            for param in module._parameters.values():
                if param is not None and param.dtype.is_floating_point and not hasattr(param, "quant_state"):
                    param.data = param.data.clone()
            for key, buf in list(module._buffers.items()):
                if buf is not None:
                    module._buffers[key] = buf.clone()
    gc.collect()


def _no_cpu_inference_repacking(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference.

    On a CPU with AVX512-BF16, a bitsandbytes Linear4bit's first forward in eval mode without
    grad (a validation pass) repacks its weight into a CPU inference layout and never unpacks it
    when training resumes; later training forwards then run a kernel with no autograd support,
    and gradients through the quantised layers are silently wrong (torch warns "gemv_4bit: an
    autograd kernel was not registered"). Training interleaves evaluation, so the repacking is
    switched off (and a weight already repacked by an earlier eval forward is unpacked): eval
    forwards use the ordinary 4-bit matmul, which is correct in both modes.
    """
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)


@hookimpl
def register_peft_methods(register):
    register("qlora", QloraMethod())
