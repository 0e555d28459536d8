"""The built-in prompt templates render exactly the strings the trainer will see."""
from __future__ import annotations

import pytest

from tunesmith.core.contracts import PromptTemplate, RenderedExample
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import PluginRegistry

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tokenizer(chat_template: str | None = CHATML):
    """A tiny offline word-level tokenizer with a ChatML chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2, "hello": 3}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def templates():
    registry = PluginRegistry(builtins=("tunesmith_builtin.templates",), entry_points=False)
    return registry.all("templates")


def test_builtin_plugin_registers_the_templates(templates):
    assert {"classification", "chat", "alpaca", "plain"} <= set(templates)
    for name, template in templates.items():
        assert isinstance(template, PromptTemplate)
        assert template.name == name and template.description


def test_classification_default_and_demo_instruction(templates):
    t = templates["classification"]
    fields = {"input": "My card has not arrived yet", "output": "card_arrival"}
    assert t.render(fields, {}, None) == RenderedExample(
        prompt="Classify this message.\nMessage: My card has not arrived yet\nIntent:", completion=" card_arrival")
    demo = t.render(fields, {"instruction": "Route this banking customer message to its intent."}, None)
    assert demo.prompt == ("Route this banking customer message to its intent.\n"
                           "Message: My card has not arrived yet\nIntent:")
    assert demo.completion == " card_arrival"


def test_classification_labels_and_empty_instruction(templates):
    t = templates["classification"]
    r = t.render({"input": "great film", "output": "positive"},
                 {"instruction": "", "input_label": "Review", "output_label": "Sentiment"}, None)
    assert r.prompt == "Review: great film\nSentiment:" and r.completion == " positive"
    with pytest.raises(KeyError):
        t.render({"input": "no label"}, {}, None)


def test_alpaca_with_and_without_input(templates):
    t = templates["alpaca"]
    with_input = t.render({"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}, {}, None)
    assert with_input.prompt == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:\n"
    )
    assert with_input.completion == "Bonjour"
    no_input = t.render({"instruction": "Name a prime number.", "input": "", "output": "7"}, {}, None)
    assert no_input.prompt == (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a prime number.\n\n### Response:\n"
    )
    assert no_input.completion == "7"
    assert t.render({"instruction": "Say hi.", "output": "hi"}, {}, None).prompt == no_input.prompt.replace(
        "Name a prime number.", "Say hi.")
    with pytest.raises(KeyError):
        t.render({"output": "x"}, {}, None)


def test_plain_template(templates):
    t = templates["plain"]
    assert t.render({"prompt": "2+2=", "completion": "4"}, {}, None) == RenderedExample("2+2=", "4")
    assert t.render({"input": "a", "output": "b"}, {}, None) == RenderedExample("a", "b")
    assert t.render({"text": "raw text"}, {}, None) == RenderedExample("", "raw text")


def test_chat_template_uses_the_tokenizer_chat_template(templates):
    t = templates["chat"]
    tok = make_tokenizer()
    r = t.render({"input": "Where is my card?", "output": "card_arrival"},
                 {"system": "You route messages.", "instruction": "Route this message."}, tok)
    assert r.prompt == ("<|im_start|>system\nYou route messages.<|im_end|>\n"
                        "<|im_start|>user\nRoute this message.\n\nWhere is my card?<|im_end|>\n"
                        "<|im_start|>assistant\n")
    assert r.completion == "card_arrival"
    plain = t.render({"input": "Hi", "output": "Hello"}, {}, tok)
    assert plain.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_template_renders_conversations(templates):
    t = templates["chat"]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    r = t.render({"messages": messages}, {"system": "Be brief."}, make_tokenizer())
    assert r.prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert r.completion == "Goodbye."
    with pytest.raises(ValueError, match="last message"):
        t.render({"messages": messages[:-1]}, {}, make_tokenizer())


def test_chat_template_needs_a_tokenizer_with_a_chat_template(templates):
    t = templates["chat"]
    assert t.needs_tokenizer
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        t.render({"input": "a", "output": "b"}, {}, None)
    with pytest.raises(ValueError, match="no chat template"):
        t.render({"input": "a", "output": "b"}, {}, make_tokenizer(chat_template=None))


def test_unknown_or_mistyped_options_are_rejected(templates):
    templates["classification"].validate_options({"instruction": "x", "output_label": "Label"})
    with pytest.raises(InvalidArgument, match="no option 'instrution'") as info:
        templates["classification"].validate_options({"instrution": "x"})
    assert info.value.field == "instrution"  # the option key alone
    with pytest.raises(InvalidArgument, match="must be a string") as info:
        templates["chat"].validate_options({"system": 3})
    assert info.value.field == "system"
    with pytest.raises(InvalidArgument, match="has no option 'system'"):
        templates["plain"].validate_options({"system": "x"})
