"""Built-in prompt templates: classification, chat, alpaca, plain and multiple_choice.

Each template turns one row's canonical fields into a RenderedExample(prompt, completion); the
trainer appends EOS to the completion. Templates read these canonical fields:

- input (or prompt), output (or completion): classification, prompt/completion and preference rows;
- instruction, input (optional), output: alpaca rows;
- messages: chat rows, a list of {"role", "content"} dicts whose last message is the assistant's;
- text: raw text rows ("plain" only: empty prompt, the text is the completion);
- question, choices, answer: multiple-choice rows ("multiple_choice": the cloze prompt
  lm-evaluation-harness's ARC and SciQ tasks use, the right choice as the completion).

Each follows tunesmith.core.contracts.PromptTemplate: `needs_tokenizer` (only "chat"), and
`validate_options(options)`, which raises InvalidArgument(field=<option key>) for an unknown or
non-string option; the data service calls it once per dataset so a typo in template_options
fails fast instead of being ignored. Besides the contract, `options` maps the option names each
template accepts to their defaults.
"""
from __future__ import annotations

from typing import Any

from tunesmith.core.contracts import RenderedExample
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.formats.dataset import choice_index
from tunesmith.core.plugins import hookimpl

DEFAULT_CLASSIFICATION_INSTRUCTION = "Classify this message."

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def _text(fields: dict[str, Any], *names: str, required: bool = True) -> str:
    """The first of `names` present in fields with a non-None value, as a string."""
    for name in names:
        value = fields.get(name)
        if value is not None:
            if isinstance(value, (dict, list, bool)):
                raise ValueError(f"field {name!r} must be text, got {type(value).__name__}")
            return str(value)
    if required:
        raise KeyError(names[0])
    return ""


def _input(fields: dict[str, Any], required: bool = True) -> str:
    return _text(fields, "input", "prompt", required=required)


def _output(fields: dict[str, Any]) -> str:
    return _text(fields, "output", "completion", "response", "chosen")


class _Base:
    name: str = ""
    description: str = ""
    needs_tokenizer: bool = False
    #: option name -> default value
    options: dict[str, str] = {}

    def validate_options(self, options: dict[str, Any] | None) -> None:
        """InvalidArgument(field=<key>) for an option this template does not have or a value that
        is not a string."""
        for key, value in (options or {}).items():
            if key not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise InvalidArgument(f"template {self.name!r} has no option {key!r} (options: {known})", field=key)
            if not isinstance(value, str):
                raise InvalidArgument(
                    f"template {self.name!r} option {key!r} must be a string, got {type(value).__name__}", field=key)

    def _opt(self, options: dict[str, Any] | None, key: str) -> str:
        options = options or {}
        value = options.get(key)
        return self.options[key] if value is None else str(value)

    def __repr__(self) -> str:
        return f"<template {self.name}>"


class ClassificationTemplate(_Base):
    """'{instruction}\\n{input_label}: {input}\\n{output_label}:' -> ' {output}'."""

    name = "classification"
    description = (
        "Short-label classification: '<instruction>\\nMessage: <input>\\nIntent:' -> ' <label>'. "
        "Options: instruction, input_label, output_label."
    )
    options = {
        "instruction": DEFAULT_CLASSIFICATION_INSTRUCTION,
        "input_label": "Message",
        "output_label": "Intent",
    }

    def render(self, fields: dict[str, Any], options: dict[str, Any] | None = None,
               tokenizer: Any | None = None) -> RenderedExample:
        text, label = _input(fields), _output(fields)
        instruction = self._opt(options, "instruction")
        head = f"{instruction}\n" if instruction else ""
        prompt = f"{head}{self._opt(options, 'input_label')}: {text}\n{self._opt(options, 'output_label')}:"
        return RenderedExample(prompt=prompt, completion=" " + label)


class AlpacaTemplate(_Base):
    """The Stanford Alpaca prompt, with and without input; the completion is the output."""

    name = "alpaca"
    description = (
        "The Stanford Alpaca prompt ('### Instruction:' [+ '### Input:'] + '### Response:\\n') -> "
        "output. Option: instruction (used when a row has none)."
    )
    options = {"instruction": ""}

    def render(self, fields: dict[str, Any], options: dict[str, Any] | None = None,
               tokenizer: Any | None = None) -> RenderedExample:
        instruction = _text(fields, "instruction", required=False) or self._opt(options, "instruction")
        if not instruction:
            raise KeyError("instruction")
        text = _input(fields, required=False)
        if text.strip():
            prompt = ALPACA_WITH_INPUT.format(instruction=instruction, input=text)
        else:
            prompt = ALPACA_NO_INPUT.format(instruction=instruction)
        return RenderedExample(prompt=prompt, completion=_output(fields))


class ChatTemplate(_Base):
    """The model's own chat template (tokenizer.apply_chat_template)."""

    name = "chat"
    description = (
        "The model's own chat template: [system] + user (instruction + input) rendered with "
        "add_generation_prompt -> the answer; chat rows render all but the last message as the "
        "prompt. Needs a tokenizer. Options: system, instruction."
    )
    needs_tokenizer = True
    options = {"system": "", "instruction": ""}

    def render(self, fields: dict[str, Any], options: dict[str, Any] | None = None,
               tokenizer: Any | None = None) -> RenderedExample:
        if tokenizer is None:
            raise ValueError(
                "the 'chat' template needs the model's tokenizer (set tokenizer_model on the dataset spec)"
            )
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"the tokenizer {getattr(tokenizer, 'name_or_path', '') or ''!s} has no chat template; "
                f"use the 'classification', 'alpaca' or 'plain' template, or an instruct model"
            )
        system = self._opt(options, "system")
        if fields.get("messages") is not None:
            messages = _messages(fields["messages"])
            if messages[-1]["role"] != "assistant":
                raise ValueError("the last message must be the assistant's answer")
            history, completion = messages[:-1], messages[-1]["content"]
            if not history:
                raise ValueError("a chat row needs at least one message before the assistant's answer")
            if system and history[0]["role"] != "system":
                history = [{"role": "system", "content": system}] + history
        else:
            instruction = _text(fields, "instruction", required=False) or self._opt(options, "instruction")
            text = _input(fields, required=not instruction)
            user = f"{instruction}\n\n{text}" if instruction and text else (instruction or text)
            history = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
            completion = _output(fields)
        import jinja2  # what transformers renders chat templates with

        try:
            prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        except jinja2.TemplateError as exc:  # e.g. raise_exception("roles must alternate ...")
            raise ValueError(f"the model's chat template refused this conversation: {exc}") from None
        if not isinstance(prompt, str):  # some versions return a list for batched input
            prompt = prompt[0]
        return RenderedExample(prompt=prompt, completion=completion)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be an object with string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    return out


class PlainTemplate(_Base):
    """No decoration: prompt = input (or prompt), completion = output (or completion)."""

    name = "plain"
    description = (
        "No template: prompt = prompt/input, completion = completion/output; raw text rows get an "
        "empty prompt and the text as completion."
    )
    options = {}

    def render(self, fields: dict[str, Any], options: dict[str, Any] | None = None,
               tokenizer: Any | None = None) -> RenderedExample:
        if fields.get("text") is not None and not any(fields.get(k) is not None for k in ("prompt", "input")):
            return RenderedExample(prompt="", completion=_text(fields, "text"))
        return RenderedExample(prompt=_input(fields), completion=_output(fields))


def _choices(value: Any) -> list[str]:
    """A multiple-choice row's choices: a list of texts, or a JSON string of one (a CSV cell)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"choices are not a JSON list: {exc.msg}") from None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"choices must be a list of texts, got {type(value).__name__}")
    out = []
    for i, choice in enumerate(value):
        if isinstance(choice, (dict, list, tuple, bool)) or choice is None:
            raise ValueError(f"choice {i} must be text, got {type(choice).__name__}")
        out.append(str(int(choice)) if isinstance(choice, float) and choice.is_integer() else str(choice).strip())
    if len(out) < 2:
        raise ValueError(f"a multiple-choice row needs at least 2 choices, got {len(out)}")
    return out


class MultipleChoiceTemplate(_Base):
    """'{question_label}: {question}\n{answer_label}:' -> ' {right choice}' (lm-eval's ARC/SciQ
    cloze form: the choices are not listed; each is scored as a continuation)."""

    name = "multiple_choice"
    description = (
        "Multiple choice, cloze style (as lm-evaluation-harness's ARC/SciQ): 'Question: <question>\nAnswer:' "
        "-> ' <right choice>'. Fields: question, choices, answer (index, letter A-Z or choice text). "
        "Options: question_label, answer_label."
    )
    options = {"question_label": "Question", "answer_label": "Answer"}

    def render(self, fields: dict[str, Any], options: dict[str, Any] | None = None,
               tokenizer: Any | None = None) -> RenderedExample:
        question = _text(fields, "question")
        if "choices" not in fields or fields["choices"] is None:
            raise KeyError("choices")
        if "answer" not in fields or fields["answer"] is None:
            raise KeyError("answer")
        choices = _choices(fields["choices"])
        gold = choice_index(choices, fields["answer"])
        prompt = f"{self._opt(options, 'question_label')}: {question}\n{self._opt(options, 'answer_label')}:"
        return RenderedExample(prompt=prompt, completion=" " + choices[gold])


TEMPLATES: tuple[_Base, ...] = (ClassificationTemplate(), ChatTemplate(), AlpacaTemplate(), PlainTemplate(),
                                MultipleChoiceTemplate())


@hookimpl
def register_templates(register):
    for template in TEMPLATES:
        register(template.name, template)
