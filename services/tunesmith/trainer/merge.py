"""Merge a peft adapter into its base model and save a plain Hugging Face model folder.

The result (safetensors weights, config, generation config, tokenizer) loads with
transformers' from_pretrained and with vLLM like any base model; no peft needed to serve it.
merge_artifacts does it between artifacts: artifact URIs in, a stored "model" artifact out.
"""
from __future__ import annotations

from pathlib import Path

_DTYPES = ("float32", "bfloat16", "float16")


def merge_adapter(base_model_path: str, adapter_dir: str, output_dir: Path, dtype: str = "float32") -> Path:
    """Load the base in `dtype`, apply the adapter in `adapter_dir`, merge it into the weights
    and save to `output_dir` (created). The tokenizer comes from the adapter folder when it has
    one (the trainer saves it there), else from the base. Returns `output_dir`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    output_dir = Path(output_dir)
    torch_dtype = getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch_dtype)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(output_dir))  # transformers 5 always writes safetensors

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    except (OSError, ValueError):
        tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    tokenizer.save_pretrained(str(output_dir))
    return output_dir


def merge_artifacts(storage, base_model_uri: str, adapter_uri: str, dtype: str = "float32"):
    """Merge the adapter artifact `adapter_uri` into the model artifact `base_model_uri` (both
    resolved through `storage`) and store the result as a "model" artifact; its Artifact."""
    with storage.staging_dir() as tmp:
        merged = merge_adapter(str(storage.resolve(base_model_uri)), str(storage.resolve(adapter_uri)),
                               tmp / "merged", dtype=dtype)
        return storage.put_artifact("model", merged, move=True)
