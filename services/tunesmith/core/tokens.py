"""How every service tokenises prompts and completions: one rule, shared by the data service's
token statistics, the trainer and the inference backends (so the evaluator's prompts match).

The rule (``encode_prompts``): a prompt is tokenised with the tokenizer's normal special tokens
(``tokenizer(text, add_special_tokens=True)``: BOS for Llama-2/Llama-3 style tokenizers, none for
ChatML/SmolLM2 style ones), except that a BOS the text already starts with is not added again.
"Already starts with" is decided from token ids, not from a template name: when the tokenizer's
output is ``[bos] + own`` where ``own`` (the text encoded without special tokens) itself starts
with ``bos`` (as a prompt rendered by a Llama-3 chat template, beginning ``<|begin_of_text|>``,
does), the added BOS is dropped. Any other special token the tokenizer adds is kept.

A completion is tokenised with no special tokens (``encode_completions``); the trainer appends EOS.

Works with any callable Hugging Face style tokenizer (``tokenizer(texts, add_special_tokens=...)``
returning ``input_ids``); nothing heavy is imported here.
"""
from __future__ import annotations

from typing import Any, Sequence

_BATCH = 1024


def _input_ids(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), _BATCH):
        encoded = tokenizer(list(texts[start:start + _BATCH]), add_special_tokens=add_special_tokens)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded.input_ids
        out.extend(list(x) for x in ids)
    return out


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids for each prompt text, by the module's rule (special tokens, no doubled BOS)."""
    texts = [str(t) for t in texts]
    if not texts:
        return []
    full = _input_ids(tokenizer, texts, add_special_tokens=True)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return full
    # Only rows starting [bos, bos] can hold a doubled BOS; re-encode just those without specials.
    suspects = [i for i, ids in enumerate(full) if len(ids) >= 2 and ids[0] == bos and ids[1] == bos]
    if suspects:
        own = _input_ids(tokenizer, [texts[i] for i in suspects], add_special_tokens=False)
        for i, plain in zip(suspects, own):
            if plain and plain[0] == bos and full[i][1:1 + len(plain)] == plain:
                full[i] = full[i][1:]
    return full


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids for one prompt text: ``encode_prompts`` for a single text."""
    return encode_prompts(tokenizer, [text])[0]


def encode_completions(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids for each completion text, without special tokens (callers append EOS)."""
    texts = [str(t) for t in texts]
    return _input_ids(tokenizer, texts, add_special_tokens=False) if texts else []


def encode_completion(tokenizer: Any, text: str) -> list[int]:
    """Token ids for one completion text, without special tokens."""
    return encode_completions(tokenizer, [text])[0]
