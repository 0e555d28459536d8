"""Sequence packing for SFT that works with SDPA and eager attention (so on CPU).

HF's padding-free path (``DataCollatorWithFlattening``, TRL ``padding_free``) relies on
FlashAttention's varlen kernels and has no CPU path. Here several examples share one row and an
explicit 4D mask keeps them apart; the model itself is unchanged.

Contract
--------
:func:`pack_examples` ``(examples, max_length, seed) -> rows``
    Assigns every example index exactly once to a row (a list of indices) whose summed length is
    at most ``max_length``; an example longer than ``max_length`` sits alone in its row (nothing
    is cut here: ``encode_rows`` truncates to max_seq_length, so pack with
    ``max_length >= max_seq_length`` and this never happens). Best-fit decreasing on the lengths,
    ties among equal lengths broken by a seeded shuffle, then the rows themselves are shuffled
    with the same seed: deterministic for a given seed, and a new seed (e.g. ``seed + epoch``)
    gives a new order and, through the tie-breaks, new row contents. ``examples`` may be
    EncodedExample objects or plain int lengths. :func:`packing_stats` reports the fill rate.

:func:`collate_packed` ``(examples, rows_of_indices, pad_token_id, *, dtype=float32) -> batch``
    One batch of ``B = len(rows_of_indices)`` rows, width ``W`` = the longest row. The examples of
    a row are laid out left to right in the given order; padding is on the right. Torch tensors:

    - ``input_ids`` (B, W) long: pad_token_id on padding.
    - ``labels`` (B, W) long, HF convention (the logits at position t are scored against
      ``labels[t + 1]``; the model's own loss does that shift). IGNORE_INDEX on padding, where the
      example has no loss, AND on the first token of every example: otherwise the last token of
      example k would be trained to predict the first token of example k+1. (Unpacked, an
      example's first token is never a target either, so nothing is lost.)
    - ``position_ids`` (B, W) long: 0, 1, ... restarting at every example (RoPE sees each example
      exactly as it would alone); 0 on padding.
    - ``attention_mask`` (B, 1, W, W) in ``dtype``, ADDITIVE: 0.0 where query i may attend to key
      j (same example and j <= i), ``torch.finfo(dtype).min`` elsewhere. A padding position
      attends to itself only, so no row is fully masked (no NaN) and padding never feeds a real
      token. transformers 5.x (``masking_utils._preprocess_mask_arguments``) returns any 4D mask
      as-is for every attention implementation; eager ADDS it to the scores and SDPA accepts a
      float mask as an additive bias, so this one form is right for both. A bool mask would be
      silently wrong under eager (True/False become +1/+0 on the scores), so none is offered.
      Build it in the model's compute dtype (``dtype=``) or cast it (packed_loss_sum does): a
      float mask of another dtype is accepted by torch 2.13's CPU SDPA and by eager, but the
      SDPA contract asks for the query's dtype and other backends may refuse it.
    - ``segment_ids`` (B, W) long: the example's slot in its row (0, 1, ...), -1 on padding.
    - ``n_items`` int: label tokens that count (``(labels[:, 1:] != IGNORE_INDEX).sum()``), the
      denominator of a token-level mean; ``n_tokens`` int: non-padding tokens.

    Pass ``input_ids``, ``attention_mask`` and ``position_ids`` to the model (``use_cache=False``)
    and compute the loss yourself, or use :func:`packed_loss_sum`. Do not drop the 4D mask and
    keep the position ids: with ``attention_mask=None`` transformers would infer the example
    boundaries from the position-id restarts (``find_packed_sequence_indices``), which also works
    for one-row batches but makes padding a set of one-token "examples"; the explicit mask is the
    documented, checked path.

:func:`packed_loss_sum` ``(model, batch, device=None) -> (loss_sum, n_items)``
    Summed cross-entropy over the label tokens, computing the vocabulary projection only at the
    positions that predict a label (``logits_to_keep`` as an index tensor: the union over the
    batch's rows, so exact for one row per batch and a small excess for several).

Cost: attention is computed over the whole row (the masked blocks are not skipped), so the
attention part of the compute grows with the row width; on small models the linear layers
dominate up to a few hundred tokens per row.
"""
from __future__ import annotations

import bisect
import random
from typing import Any, Sequence

from tunesmith.trainer.sft import IGNORE_INDEX, EncodedExample

__all__ = ["pack_examples", "packing_stats", "collate_packed", "packed_loss_sum"]


def _lengths(examples: Sequence[EncodedExample | int]) -> list[int]:
    return [e if isinstance(e, int) else len(e.input_ids) for e in examples]


def pack_examples(examples: Sequence[EncodedExample | int], max_length: int, seed: int) -> list[list[int]]:
    """Rows of example indices, each row at most ``max_length`` tokens (see the module docstring)."""
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    lengths = _lengths(examples)
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i], reverse=True)  # stable: equal lengths keep the shuffle
    rows: list[list[int]] = []
    # open rows as a sorted list of (room left, row number): best fit = the smallest room that fits
    open_rows: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        if n >= max_length:  # fills a row on its own (or overflows it: alone either way)
            rows.append([i])
            continue
        k = bisect.bisect_left(open_rows, (n, -1))
        if k < len(open_rows):
            room, r = open_rows.pop(k)
            rows[r].append(i)
            room -= n
        else:
            r = len(rows)
            rows.append([i])
            room = max_length - n
        if room > 0:
            bisect.insort(open_rows, (room, r))
    rng.shuffle(rows)
    return rows


def packing_stats(examples: Sequence[EncodedExample | int], rows: Sequence[Sequence[int]],
                  max_length: int) -> dict[str, float]:
    """rows, tokens, fill_rate (tokens / (rows * max_length), over-long rows counted at their
    length) and mean examples per row."""
    lengths = _lengths(examples)
    tokens = sum(lengths[i] for row in rows for i in row)
    capacity = sum(max(max_length, sum(lengths[i] for i in row)) for row in rows)
    return {"rows": len(rows), "tokens": tokens, "fill_rate": tokens / capacity if capacity else 0.0,
            "examples_per_row": sum(len(r) for r in rows) / len(rows) if rows else 0.0}


def collate_packed(examples: Sequence[EncodedExample], rows_of_indices: Sequence[Sequence[int]],
                   pad_token_id: int, *, dtype: Any = None) -> dict[str, Any]:
    """One packed batch (see the module docstring for every key)."""
    import torch

    if not rows_of_indices or any(not row for row in rows_of_indices):
        raise ValueError("every packed row needs at least one example")
    dtype = torch.float32 if dtype is None else dtype
    widths = [sum(len(examples[i].input_ids) for i in row) for row in rows_of_indices]
    n, width = len(rows_of_indices), max(widths)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segment_ids = torch.full((n, width), -1, dtype=torch.long)
    for b, row in enumerate(rows_of_indices):
        at = 0
        for slot, i in enumerate(row):
            e = examples[i]
            k = len(e.input_ids)
            input_ids[b, at:at + k] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[b, at:at + k] = torch.tensor(e.labels, dtype=torch.long)
            labels[b, at] = IGNORE_INDEX  # never predicted from the previous example's last token
            position_ids[b, at:at + k] = torch.arange(k, dtype=torch.long)
            segment_ids[b, at:at + k] = slot
            at += k
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    real = (segment_ids >= 0)[:, :, None]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    eye = torch.eye(width, dtype=torch.bool)
    allowed = (same & real & causal) | eye  # padding: itself only
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": mask,
            "segment_ids": segment_ids, "n_items": int((labels[:, 1:] != IGNORE_INDEX).sum()),
            "n_tokens": int((segment_ids >= 0).sum())}


def packed_loss_sum(model: Any, batch: dict, device: Any = None) -> tuple[Any, int]:
    """Summed cross-entropy over the label tokens of a packed batch and their count.

    The logits are computed only where a label is predicted (``logits_to_keep`` index tensor)
    when the model's forward takes ``logits_to_keep``; the 4D mask is cast to the dtype of the
    model's parameters."""
    import inspect

    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        supports_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        supports_keep = False
    if device is None:
        device = next(model.parameters()).device
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    input_ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "position_ids": batch["position_ids"].to(device),
                              "attention_mask": batch["attention_mask"].to(device=device, dtype=dtype),
                              "use_cache": False}
    predicts = (labels[:, 1:] != IGNORE_INDEX).any(0)  # position t predicts labels[:, t + 1]
    cols = predicts.nonzero().squeeze(1)
    if supports_keep and cols.numel() < labels.shape[1] - 1:
        logits = model(**kwargs, logits_to_keep=cols).logits
        target = labels[:, cols + 1]
    else:
        logits = model(**kwargs).logits[:, :-1, :]
        target = labels[:, 1:]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, int((target != IGNORE_INDEX).sum())
