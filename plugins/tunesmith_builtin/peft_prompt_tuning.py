"""Built-in PEFT method "prompt_tuning": peft's prompt tuning, learned virtual input tokens.

Options (all optional): num_virtual_tokens (integer in [1, 512], default 16) and init_text (a
string; "" = random initialisation; otherwise the virtual tokens start as the embeddings of this
text's tokens, repeated or cut to num_virtual_tokens: peft's PromptTuningInit.TEXT). init_text
needs the model's tokenizer, which apply() loads from the model's own folder
(model.name_or_path): a model that was not loaded from a folder is refused then
(FailedPrecondition). save() writes peft's folder with the init recorded as spent: its
adapter_config.json keeps prompt_tuning_init_text but says RANDOM and names no tokenizer, so the
folder holds no path into the machine that trained it and stock PeftModel.from_pretrained loads
it anywhere without the tokenizer (the trained embeddings replace any initialisation).

Declares: prompt_learning (the logits are longer than the input by num_virtual_tokens, which
come first), supports_merge False (virtual tokens are not weight deltas: a merge is refused and
the adapter is used on top of its base), servable_by_vllm False, artifact_kind "adapter", a
full-precision base.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.core.errors import FailedPrecondition
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._methods import PromptLearningMethod
from tunesmith_builtin._options import options_dict, text

OPTIONS = ("num_virtual_tokens", "init_text")


def _model_folder(model: Any) -> str:
    """The folder the model was loaded from ("" when none)."""
    path = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    return str(path or "")


class PromptTuningMethod(PromptLearningMethod):
    name = "prompt_tuning"

    def validate(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """{"num_virtual_tokens": n, "init_text": s}; InvalidArgument(field=<key>) otherwise."""
        options = options_dict(options, self.name, OPTIONS)
        return {"num_virtual_tokens": self.virtual_tokens(options), "init_text": text(options, "init_text")}

    def peft_config(self, options: dict[str, Any], model: Any) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        n, init_text = options["num_virtual_tokens"], options["init_text"]
        if not init_text:
            return PromptTuningConfig(num_virtual_tokens=n, prompt_tuning_init=PromptTuningInit.RANDOM,
                                      task_type="CAUSAL_LM")
        folder = _model_folder(model)
        if not folder or not Path(folder).is_dir():
            raise FailedPrecondition("prompt_tuning init_text needs the model's tokenizer, from the folder the "
                                     f"model was loaded from; this model has none ({folder!r})", field="init_text")
        return PromptTuningConfig(num_virtual_tokens=n, prompt_tuning_init=PromptTuningInit.TEXT,
                                  prompt_tuning_init_text=init_text, tokenizer_name_or_path=folder,
                                  task_type="CAUSAL_LM")

    def save(self, model: Any, folder: Path) -> None:
        super().save(model, folder)
        config_path = Path(folder) / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("prompt_tuning_init") == "TEXT":
            config.update(prompt_tuning_init="RANDOM", tokenizer_name_or_path=None)
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@hookimpl
def register_peft_methods(register):
    register("prompt_tuning", PromptTuningMethod())
