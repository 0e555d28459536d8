"""Built-in PEFT method "lora": a peft LoRA adapter on a full-precision base.

Options (all optional): rank (int > 0, default 16), alpha (> 0, default 2 * rank),
dropout (0 <= dropout < 1, default 0.0), target_modules (a module-name list, a regex string, or
"all-linear", the default: every linear layer but the output head), use_dora (weight-decomposed
LoRA, peft's use_dora), use_rslora (scaling alpha / sqrt(rank) instead of alpha / rank). An
unknown key is refused, never ignored. Bad values raise InvalidArgument whose `field` is the
option key alone ("rank", ...); the trainer service puts it under the request's path
(spec.method.lora.rank).

Declares: supports_merge (merge_and_unload), servable_by_vllm (an unmerged LoRA adapter; note
that vLLM does not serve DoRA adapters unmerged, vLLM issue 10849: merge a DoRA adapter, or
serve it with the transformers backend), artifact_kind "adapter", not prompt learning, a
full-precision base. peft_qlora reuses this validation for its nested "lora" options.
"""
from __future__ import annotations

from typing import Any

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._methods import AdapterMethod
from tunesmith_builtin._options import flag, given, integer, is_number, module_names, options_dict

OPTIONS = ("rank", "alpha", "dropout", "target_modules", "use_dora", "use_rslora")


class LoraMethod(AdapterMethod):
    """LoRA. servable_by_vllm is True for plain LoRA; DoRA adapters (use_dora) are not servable
    by vLLM unmerged (the attribute is per method, not per options)."""

    name = "lora"
    supports_merge = True
    servable_by_vllm = True
    quantized_base = False

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Check the options and return them with defaults filled in (rank, alpha, dropout,
        target_modules, use_dora, use_rslora); raise InvalidArgument(field=<option key>) on a bad
        value or an unknown key; `options` itself is not modified."""
        options = options_dict(options, self.name, OPTIONS)
        use_dora, use_rslora = flag(options, "use_dora"), flag(options, "use_rslora")
        rank = integer(options, "rank", 16, minimum=1)
        alpha = given(options, "alpha", 2 * rank)
        if not is_number(alpha) or not alpha > 0:
            raise InvalidArgument(f"alpha must be a number > 0, got {alpha!r}", field="alpha")
        dropout = given(options, "dropout", 0.0)
        if not is_number(dropout) or not 0.0 <= dropout < 1.0:
            raise InvalidArgument(f"dropout must be in [0, 1), got {dropout!r}", field="dropout")
        targets = module_names(options, "target_modules", allow_string=True) or "all-linear"
        return {"rank": rank, "alpha": alpha, "dropout": float(dropout), "target_modules": targets,
                "use_dora": use_dora, "use_rslora": use_rslora}

    def lora_config(self, options: dict[str, Any]) -> Any:
        from peft import LoraConfig

        o = self.validate(options)
        return LoraConfig(r=o["rank"], lora_alpha=o["alpha"], lora_dropout=o["dropout"],
                          target_modules=o["target_modules"], use_dora=o["use_dora"], use_rslora=o["use_rslora"],
                          task_type="CAUSAL_LM")

    def peft_config(self, options: dict[str, Any], model: Any) -> Any:
        return self.lora_config(options)


@hookimpl
def register_peft_methods(register):
    register("lora", LoraMethod())
