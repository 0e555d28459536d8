"""Token log-probabilities of finished completions for the transformers backend: one
teacher-forced forward pass over prompt + completion (the raw model distribution, before
temperature / top-p, as vLLM reports it), batched right-padded.

Nothing heavy is imported at module import.
"""
from __future__ import annotations

from typing import Any, Sequence

from tunesmith.core.contracts import TokenLogprob

#: Logits one forward pass may hold (rows x positions x vocab, float32: 512 MiB).
LOGITS_BUDGET = 1 << 27


def completion_logprobs(model: Any, tokenizer: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                        top: int, *, device: str = "cpu", pad_id: int = 0) -> list[list[TokenLogprob]]:
    """For each (prompt ids, completion ids): one TokenLogprob per completion token, with the
    `top` most likely tokens at its position (most likely first). The caller holds whatever
    lock / adapter context the model needs. A prompt-learning adapter's virtual tokens come
    first in the output, so positions are counted from the end."""
    import torch

    results: list[list[TokenLogprob] | None] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
    start = 0
    while start < len(order):
        width = len(rows[order[start]][0]) + len(rows[order[start]][1])
        count = max(1, min(len(order) - start, LOGITS_BUDGET // max(1, width * vocab)))
        chunk = order[start:start + count]
        start += count
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, i in enumerate(chunk):
            full = list(rows[i][0]) + list(rows[i][1])
            ids[r, :len(full)] = torch.tensor(full, dtype=torch.long)
            mask[r, :len(full)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        logits = logits[:, -width:]
        for r, i in enumerate(chunk):
            prompt, completion = rows[i]
            if not completion:
                results[i] = []
                continue
            n = len(prompt)
            scores = torch.log_softmax(logits[r, n - 1:n - 1 + len(completion)].float(), dim=-1)
            target = torch.tensor(list(completion), dtype=torch.long, device=scores.device)
            chosen = scores.gather(1, target.unsqueeze(1)).squeeze(1).tolist()
            best = scores.topk(top, dim=-1) if top else None
            out = []
            for k, tid in enumerate(completion):
                alts = [] if best is None else [
                    (tokenizer.decode([int(t)]), float(v), int(t))
                    for v, t in zip(best.values[k].tolist(), best.indices[k].tolist())]
                out.append(TokenLogprob(token=tokenizer.decode([int(tid)]), logprob=float(chosen[k]),
                                        token_id=int(tid), top=alts))
            results[i] = out
    return results  # type: ignore[return-value]
