"""Supervised fine-tuning (SFT) pieces: tokenising prompt/completion rows, batching, the loss.

Library code, no gRPC; the "sft" recipe plugin (tunesmith_builtin.recipe_sft) runs them inside
the training loop (tunesmith.trainer.loop). Heavy imports stay inside the functions.

Built for throughput on a small CPU machine:

- rows are tokenised once; examples of similar length are grouped into batches (seeded,
  shuffled buckets) and each batch is padded only to its own longest row, or rows are packed
  (tunesmith.trainer.packing);
- batches are padded on the LEFT with explicit position ids, so every completion ends at the
  right edge of the batch. With completion-only loss the model then computes the vocabulary
  projection (``logits_to_keep``) only for the last few positions that carry labels: on a small
  model the LM head is ~20% of the compute per token, and it is skipped for prompt tokens.
  Prompt-learning methods (prefix/prompt tuning) ignore position ids, so for them rows are
  padded on the right and the logits of the virtual tokens are dropped before the loss.

Loss: token-level summed cross-entropy over the label tokens; the loop normalises each optimizer
step by the label count of all its micro-batches.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tunesmith.trainer.loop import TrainingCancelled  # noqa: F401 - re-exported for callers of train_sft

IGNORE_INDEX = -100

# How many batches' worth of examples are sorted together when bucketing by length.
_BUCKET_BATCHES = 50


# --- tokenisation and collation -----------------------------------------------------------
@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken
    truncated: bool

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    @property
    def label_span(self) -> int:
        """Positions from the first labelled token to the end (what logits_to_keep must cover)."""
        for i, x in enumerate(self.labels):
            if x != IGNORE_INDEX:
                return len(self.labels) - i
        return 0


def encode_rows(tokenizer: Any, rows: Sequence[dict], max_seq_length: int,
                completion_only_loss: bool = True) -> list[EncodedExample]:
    """Tokenise prompt/completion rows.

    The prompt is tokenised by ``tunesmith.core.tokens.encode_prompts`` (the tokenizer's normal
    special tokens, but no second BOS when the text already starts with one, as a rendered chat
    template does; the data service's statistics and the inference backends use the same rule),
    the completion gets no special tokens, then ``eos_token_id`` is appended. Rows longer than
    ``max_seq_length`` lose tokens from the left of the prompt (a leading BOS is kept) so the
    completion survives; if the completion plus EOS alone does not fit, it is cut from the right
    (no EOS) after one prompt token.
    """
    if max_seq_length < 2:
        raise ValueError("max_seq_length must be at least 2")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id")
    prompts = [str(r["prompt"]) for r in rows]
    completions = [str(r["completion"]) for r in rows]
    if not rows:
        return []
    from tunesmith.core.tokens import encode_completions, encode_prompts

    p_ids = encode_prompts(tokenizer, prompts)
    c_ids = encode_completions(tokenizer, completions)
    bos = tokenizer.bos_token_id
    out: list[EncodedExample] = []
    for p, c in zip(p_ids, c_ids):
        p, c = list(p), list(c) + [eos]
        truncated = False
        if len(p) + len(c) > max_seq_length:
            truncated = True
            if len(c) >= max_seq_length:
                c = c[: max_seq_length - 1]  # EOS is cut off with the rest of the tail
                p = p[-1:]
            else:
                room = max_seq_length - len(c)
                if bos is not None and p and p[0] == bos and room >= 2:
                    p = [bos] + p[len(p) - (room - 1):]
                else:
                    p = p[len(p) - room:]
        ids = p + c
        if completion_only_loss:
            labels = [IGNORE_INDEX] * len(p) + c
        else:
            labels = list(ids)
        out.append(EncodedExample(ids, labels, truncated))
    return out


def collate(examples: Sequence[EncodedExample], pad_token_id: int, padding_side: str = "left") -> dict[str, Any]:
    """Pad a batch to its longest row. Returns torch tensors input_ids, attention_mask,
    position_ids (0.. over real tokens, so left padding does not shift positions) and labels
    (IGNORE_INDEX on padding), plus ``label_span``: how many final positions hold a label
    (with left padding, logits for the last ``label_span + 1`` positions suffice)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    span = 0
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        sl = slice(width - k, width) if padding_side == "left" else slice(0, k)
        input_ids[i, sl] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, sl] = torch.tensor(e.labels, dtype=torch.long)
        labels[i, sl.start] = IGNORE_INDEX  # a row's first token has no position predicting it
        attention_mask[i, sl] = 1
        position_ids[i, sl] = torch.arange(k, dtype=torch.long)
        if padding_side == "left":
            span = max(span, e.label_span)
        else:
            span = width
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            "labels": labels, "label_span": span}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Seeded batches of similar-length examples: shuffle, sort within buckets of
    ``_BUCKET_BATCHES`` batches, cut into batches, shuffle the batch order."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    bucket = max(batch_size * _BUCKET_BATCHES, batch_size)
    batches: list[list[int]] = []
    for start in range(0, len(idx), bucket):
        chunk = sorted(idx[start:start + bucket], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


# --- the loss -----------------------------------------------------------------------------
class LossComputer:
    """Summed cross-entropy over label tokens of one padded batch, computing the vocabulary
    projection only where it is needed (``logits_to_keep``) when the model supports it.

    prompt_learning (prefix/prompt tuning): peft ignores position ids and prepends virtual
    tokens, so no position ids or logits_to_keep are passed, batches must be right-padded, and
    logits longer than the input (prompt tuning's virtual tokens come first) are cut to the
    input's positions before the shift."""

    def __init__(self, model: Any, prompt_learning: bool = False):
        import inspect

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        try:
            params = inspect.signature(base.forward).parameters
        except (TypeError, ValueError):
            params = {}
        self.prompt_learning = prompt_learning
        self.supports_keep = "logits_to_keep" in params and not prompt_learning
        self.supports_position_ids = "position_ids" in params and not prompt_learning

    def shifted_logits(self, model: Any, batch: dict, device: str):
        """(logits, target) of one padded batch, aligned for next-token loss: only the labelled
        tail's logits when logits_to_keep is usable, virtual-token logits (if any) dropped."""
        import torch

        input_ids = batch["input_ids"].to(device, non_blocking=True)
        attention_mask = batch["attention_mask"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        width = input_ids.shape[1]
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if self.supports_position_ids:
            kwargs["position_ids"] = batch["position_ids"].to(device, non_blocking=True)
        keep = min(width, int(batch["label_span"]) + 1)
        if self.supports_keep and keep < width:
            # positions width-keep .. width-2 predict tokens width-keep+1 .. width-1
            kwargs["logits_to_keep"] = torch.arange(width - keep, width - 1, device=device)
            return model(**kwargs).logits, labels[:, width - keep + 1:]
        logits = model(**kwargs).logits
        return logits[:, logits.shape[1] - width:-1, :], labels[:, 1:]  # virtual tokens (if any) come first

    def __call__(self, model: Any, batch: dict, device: str):
        import torch.nn.functional as F

        logits, target = self.shifted_logits(model, batch, device)
        loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, int((target != IGNORE_INDEX).sum())


def train_sft(*, model_path: str, train_rows: list[dict], validation_rows: list[dict] | None,
              method: Any, method_options: dict, hp: dict, output_dir: Path,
              on_event: Callable[[dict], None] = lambda e: None,
              should_stop: Callable[[], bool] = lambda: False, **loop_kwargs: Any) -> dict:
    """SFT of `model_path` with `method` through the training loop and the built-in "sft"
    recipe (see tunesmith.trainer.loop.train for the result; "adapter_dir" is its output_dir)."""
    from tunesmith.trainer.loop import train
    from tunesmith_builtin.recipe_sft import SftRecipe

    result = train(model_path=model_path, train_rows=train_rows, validation_rows=validation_rows, method=method,
                   method_options=method_options, recipe=SftRecipe(), hp=hp, output_dir=output_dir,
                   on_event=on_event, should_stop=should_stop, **loop_kwargs)
    return {**result, "adapter_dir": result["output_dir"]}


def completion_logprobs(computer: LossComputer, model: Any, batch: dict, device: str):
    """Per row of one padded batch (collate's output): the summed log-probability of its label
    tokens and how many there are, as tensors of shape [rows] (float32, long). What preference
    recipes (DPO) need; the forward is LossComputer's: `computer` says whether position ids and
    ``logits_to_keep`` may be passed (with left padding only the labelled tail gets logits), and
    logits longer than the input (prompt tuning's virtual tokens, first) are cut to its positions.
    Gradients flow unless the caller disables them."""
    import torch.nn.functional as F

    logits, target = computer.shifted_logits(model, batch, device)
    token_logps = -F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="none").view(target.shape)
    mask = target != IGNORE_INDEX
    return (token_logps * mask).sum(-1), mask.sum(-1)
