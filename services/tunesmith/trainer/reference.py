"""Worker side of the serve_as hand-off: greedy answers of the trained model, in peft, still in
memory at the end of training, on held-out prompts; stored next to the saved output as a serve
reference (tunesmith.core.formats.serve_reference) for the trainer service to compare the served
model against (tunesmith.trainer.handoff).

Prompts are encoded as the inference backends encode a text prompt (tunesmith.core.tokens:
the tokenizer's special tokens, no second BOS) and generated one at a time (no padding), with
the base's EOS tokens (generation config and tokenizer) as the stop tokens; an answer is cut
after its first EOS token, which it counts, as the inference backends do.
"""
from __future__ import annotations

from typing import Any, Sequence

DEFAULT_PROMPTS = 8
DEFAULT_MAX_NEW_TOKENS = 32


def held_out_prompts(validation_rows: Sequence[dict] | None, train_rows: Sequence[dict], n: int) -> list[str]:
    """The first `n` validation prompts, else the last `n` training prompts (as rendered)."""
    rows = list(validation_rows or [])[:n] if validation_rows else list(train_rows)[-n:]
    return [str(r["prompt"]) for r in rows]


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The stop token ids: the generation config's eos_token_id(s) and the tokenizer's EOS."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(int(i) for i in ids)


def greedy_reference(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int):
    """A ServeReference of `model`'s greedy answers to `prompts` (prompts too long for the
    model's context are left out)."""
    import torch

    from tunesmith.core.formats.serve_reference import ServeReference, ServeSample
    from tunesmith.core.tokens import encode_prompt

    stops = eos_ids(model, tokenizer)
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    context = int(getattr(config, "max_position_embeddings", 0) or 2048)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else None)
    was_training = model.training
    model.eval()
    samples = []
    try:
        for prompt in prompts:
            ids = encode_prompt(tokenizer, prompt)
            limit = min(max_new_tokens, context - len(ids))
            if not ids or limit < 1:
                continue
            with torch.inference_mode():
                out = model.generate(input_ids=torch.tensor([ids], device=device),
                                     attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                                     max_new_tokens=limit, do_sample=False, temperature=None, top_p=None, top_k=None,
                                     eos_token_id=stops or None, pad_token_id=pad, use_cache=True)
            new = out[0, len(ids):].tolist()
            at = next((i for i, t in enumerate(new) if t in stops), -1)
            kept = new[:at + 1] if at >= 0 else new[:limit]
            text = tokenizer.decode(kept[:at] if at >= 0 else kept, skip_special_tokens=True)
            samples.append(ServeSample(prompt=prompt, max_new_tokens=limit, prompt_tokens=len(ids),
                                       token_ids=tuple(int(t) for t in kept), text=text,
                                       finish_reason="stop" if at >= 0 or len(kept) < limit else "length"))
    finally:
        if was_training:
            model.train()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return ServeReference(samples=tuple(samples), eos_token=str(tokenizer.eos_token or ""),
                          eos_token_ids=tuple(stops), dtype=dtype)
