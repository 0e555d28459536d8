"""Built-in PEFT method "prefix_tuning": peft's prefix tuning, learned key/value prefixes in
every attention layer.

Option: num_virtual_tokens (integer in [1, 512], default 16): the prefix length.

Declares: prompt_learning (peft passes the prefixes as past key/values, so the logits are as
long as the input), supports_merge False (the prefixes are not weight deltas: a merge is refused
and the adapter is used on top of its base), servable_by_vllm False, artifact_kind "adapter",
a full-precision base.
"""
from __future__ import annotations

from typing import Any

from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._methods import PromptLearningMethod
from tunesmith_builtin._options import options_dict

OPTIONS = ("num_virtual_tokens",)


class PrefixTuningMethod(PromptLearningMethod):
    name = "prefix_tuning"

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """{"num_virtual_tokens": n}; InvalidArgument(field=<key>) otherwise."""
        options = options_dict(options, self.name, OPTIONS)
        return {"num_virtual_tokens": self.virtual_tokens(options)}

    def peft_config(self, options: dict[str, Any], model: Any) -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=options["num_virtual_tokens"], task_type="CAUSAL_LM")


@hookimpl
def register_peft_methods(register):
    register("prefix_tuning", PrefixTuningMethod())
