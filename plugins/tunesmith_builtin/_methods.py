"""What the built-in PEFT methods share: counting parameters as peft does, and the members of a
method whose result is a peft adapter (AdapterMethod). Not a plugin itself (it registers
nothing); peft_*.py subclass AdapterMethod or use count_parameters.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) exactly as peft counts them: PeftModel.get_nb_trainable_parameters()
    where the model has it, else the same count over named_parameters() (a bitsandbytes 4-bit
    parameter packs two values per byte of its storage, so peft counts it twice per byte)."""
    counter = getattr(model, "get_nb_trainable_parameters", None)
    if callable(counter):
        trainable, total = counter()
        return int(trainable), int(total)
    trainable = total = 0
    for _, param in model.named_parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2 * (param.element_size() if hasattr(param, "element_size") else 1)
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


class AdapterMethod:
    """Base of a built-in method that trains a peft adapter (artifact_kind "adapter").

    A subclass sets `name` (and the flags that differ), implements validate() and
    peft_config(validated_options, model), and gets load_kwargs, apply, parameter_counts and
    save. apply() validates first, so a bad option is refused before the model is touched.
    """

    name = ""
    supports_merge = True
    servable_by_vllm = False
    quantized_base = False
    artifact_kind = "adapter"
    prompt_learning = False

    def validate(self, options: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def peft_config(self, options: dict[str, Any], model: Any) -> Any:  # pragma: no cover - abstract
        """The peft config for validated `options` (model: what apply() was given)."""
        raise NotImplementedError

    def load_kwargs(self, options: dict[str, Any], device: str) -> dict[str, Any]:
        self.validate(options)
        return {}

    def prepare(self, model: Any, options: dict[str, Any]) -> Any:
        """What to do to the base before get_peft_model (validated options); default nothing."""
        return model

    def apply(self, model: Any, options: dict[str, Any]) -> Any:
        o = self.validate(options)
        config = self.peft_config(o, model)
        from peft import get_peft_model

        return get_peft_model(self.prepare(model, o), config)

    def parameter_counts(self, model: Any) -> tuple[int, int]:
        return count_parameters(model)

    def save(self, model: Any, folder: Path) -> None:
        """peft's adapter folder (adapter_config.json, adapter_model.safetensors)."""
        model.save_pretrained(str(folder))


class PromptLearningMethod(AdapterMethod):
    """Base of a peft prompt-learning method (prefix or prompt tuning): it learns virtual tokens,
    not weight deltas, so there is nothing to merge (supports_merge False) and vLLM cannot serve
    it; the adapter is evaluated and served on top of its base by the transformers backend.
    Both take num_virtual_tokens (an integer in [1, MAX_VIRTUAL_TOKENS], default
    DEFAULT_VIRTUAL_TOKENS)."""

    supports_merge = False
    servable_by_vllm = False
    prompt_learning = True
    DEFAULT_VIRTUAL_TOKENS = 16
    MAX_VIRTUAL_TOKENS = 512

    def virtual_tokens(self, options: dict[str, Any]) -> int:
        from tunesmith_builtin._options import integer

        return integer(options, "num_virtual_tokens", self.DEFAULT_VIRTUAL_TOKENS, minimum=1,
                       maximum=self.MAX_VIRTUAL_TOKENS)
