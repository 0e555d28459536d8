"""Built-in PEFT method "lora": a peft LoRA adapter on a full-precision base.

Options (all optional): rank (int > 0, default 16), alpha (> 0, default 2 * rank),
dropout (0 <= dropout < 1, default 0.0), target_modules (a module-name list, a regex string, or
"all-linear", the default: every linear layer but the output head), use_dora (weight-decomposed
LoRA, peft's use_dora; vLLM cannot serve such adapters unmerged), use_rslora (scaling
alpha / sqrt(rank) instead of alpha / rank). An unknown key is refused, never ignored.
Bad values raise InvalidArgument whose `field` is the option key alone ("rank", ...); the trainer
service puts it under the request's path (spec.method.lora.rank).
"""
from __future__ import annotations

from typing import Any

from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl


OPTIONS = ("rank", "alpha", "dropout", "target_modules", "use_dora", "use_rslora")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class LoraMethod:
    name = "lora"
    supports_merge = True
    quantized_base = False

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Check the options and return them with defaults filled in (rank, alpha, dropout,
        target_modules, use_dora, use_rslora); raise InvalidArgument(field=<option key>) on a bad
        value or an unknown key; `options` itself is not modified."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidArgument(f"lora has no option {unknown[0]!r} (options: {', '.join(OPTIONS)})", field=unknown[0])
        for flag in ("use_dora", "use_rslora"):
            if not isinstance(options.get(flag, False), bool):
                raise InvalidArgument(f"{flag} must be true or false, got {options[flag]!r}", field=flag)
        rank = options.get("rank", 16)
        if rank is None:
            rank = 16
        if not _number(rank) or int(rank) != rank or rank <= 0:
            raise InvalidArgument(f"rank must be a positive integer, got {rank!r}", field="rank")
        rank = int(rank)
        alpha = options.get("alpha")
        if alpha is None:
            alpha = 2 * rank
        if not _number(alpha) or not alpha > 0:
            raise InvalidArgument(f"alpha must be a number > 0, got {alpha!r}", field="alpha")
        dropout = options.get("dropout", 0.0)
        if dropout is None:
            dropout = 0.0
        if not _number(dropout) or not 0.0 <= dropout < 1.0:
            raise InvalidArgument(f"dropout must be in [0, 1), got {dropout!r}", field="dropout")
        targets = options.get("target_modules") or "all-linear"
        if isinstance(targets, (list, tuple)):
            if not all(isinstance(t, str) and t for t in targets):
                raise InvalidArgument("target_modules must be non-empty module names",
                                      field="target_modules")
            targets = list(targets)
        elif not isinstance(targets, str):
            raise InvalidArgument(f"target_modules must be a list of names or a string, got {targets!r}",
                                  field="target_modules")
        return {"rank": rank, "alpha": alpha, "dropout": float(dropout), "target_modules": targets,
                "use_dora": options.get("use_dora", False), "use_rslora": options.get("use_rslora", False)}

    def load_kwargs(self, options: dict[str, Any], device: str) -> dict[str, Any]:
        self.validate(options)
        return {}

    def lora_config(self, options: dict[str, Any]) -> Any:
        from peft import LoraConfig

        o = self.validate(options)
        return LoraConfig(r=o["rank"], lora_alpha=o["alpha"], lora_dropout=o["dropout"],
                          target_modules=o["target_modules"], use_dora=o["use_dora"], use_rslora=o["use_rslora"],
                          task_type="CAUSAL_LM")

    def apply(self, model: Any, options: dict[str, Any]) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.lora_config(options))


@hookimpl
def register_peft_methods(register):
    register("lora", LoraMethod())
