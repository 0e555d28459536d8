"""Built-in PEFT method "ia3": peft's IA3, learned vectors that rescale activations.

Options (all optional): target_modules (module names whose outputs are rescaled) and
feedforward_modules (those of target_modules that are feed-forward layers: their inputs are
rescaled instead). Empty or missing: peft's defaults for the model's architecture (for Llama,
k_proj, v_proj, down_proj with down_proj as feed-forward). feedforward_modules must be a subset
of target_modules; given without target_modules, it must be a subset of peft's default targets,
which apply() checks against the model's architecture.

Declares: supports_merge (the vectors fold into the weights with merge_and_unload),
servable_by_vllm False (vLLM serves LoRA adapters only), artifact_kind "adapter", a
full-precision base, not prompt learning.
"""
from __future__ import annotations

from typing import Any

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._methods import AdapterMethod
from tunesmith_builtin._options import module_names, options_dict

OPTIONS = ("target_modules", "feedforward_modules")


def _not_in(feedforward: list[str], targets: list[str]) -> None:
    missing = [m for m in feedforward if m not in targets]
    if missing:
        raise InvalidArgument(f"feedforward_modules must be a subset of target_modules ({', '.join(targets)}); "
                              f"not targeted: {', '.join(missing)}", field="feedforward_modules")


class Ia3Method(AdapterMethod):
    name = "ia3"
    supports_merge = True
    servable_by_vllm = False

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """{"target_modules": [...], "feedforward_modules": [...]} ([] = peft's defaults);
        InvalidArgument(field=<key>) for a bad list, an unknown key, or feedforward modules that
        are not targeted."""
        options = options_dict(options, self.name, OPTIONS)
        targets = module_names(options, "target_modules")
        feedforward = module_names(options, "feedforward_modules")
        if targets:
            _not_in(feedforward, targets)
        return {"target_modules": targets, "feedforward_modules": feedforward}

    def peft_config(self, options: dict[str, Any], model: Any) -> Any:
        from peft import IA3Config

        targets, feedforward = options["target_modules"], options["feedforward_modules"]
        if feedforward and not targets:
            from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULTS

            model_type = getattr(getattr(model, "config", None), "model_type", "")
            if model_type not in DEFAULTS:
                raise InvalidArgument(f"peft has no default IA3 target_modules for model type {model_type!r}; "
                                      "give target_modules", field="target_modules")
            targets = list(DEFAULTS[model_type])
            _not_in(feedforward, targets)
        return IA3Config(target_modules=targets or None, feedforward_modules=feedforward or None,
                         task_type="CAUSAL_LM")


@hookimpl
def register_peft_methods(register):
    register("ia3", Ia3Method())
