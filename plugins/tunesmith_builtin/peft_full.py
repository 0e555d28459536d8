"""Built-in PEFT method "full": full fine-tuning, every weight trainable.

No options: {} is the only valid set (any key is refused, never ignored).

Declares: artifact_kind "model" (save() writes a transformers model folder, config.json plus
model.safetensors, that AutoModelForCausalLM.from_pretrained loads); supports_merge False, since
there is no adapter to merge: the result already is a whole model, so a merge request for it is
refused; servable_by_vllm True (vLLM serves the saved folder as a model); a full-precision base;
not prompt learning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._methods import count_parameters
from tunesmith_builtin._options import options_dict


class FullMethod:
    name = "full"
    supports_merge = False
    servable_by_vllm = True
    quantized_base = False
    artifact_kind = "model"
    prompt_learning = False

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """{}; InvalidArgument(field=<key>) for any key."""
        return options_dict(options, self.name, ())

    def load_kwargs(self, options: dict[str, Any], device: str) -> dict[str, Any]:
        self.validate(options)
        return {}

    def apply(self, model: Any, options: dict[str, Any]) -> Any:
        """The model itself, with requires_grad on every parameter."""
        self.validate(options)
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def parameter_counts(self, model: Any) -> tuple[int, int]:
        return count_parameters(model)

    def save(self, model: Any, folder: Path) -> None:
        """transformers' own model folder (safetensors weights)."""
        model.save_pretrained(str(folder))


@hookimpl
def register_peft_methods(register):
    register("full", FullMethod())
