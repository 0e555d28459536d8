"""Reference computations the inference tests compare the backends against."""
from __future__ import annotations


def reference_logprobs(model_dir, prompt_ids, completion_ids, top):
    """Each completion token's log-probability, and the `top` most likely ids at its position,
    from a plain transformers forward pass over prompt + completion (float32): the reference
    both backends' logprobs are checked against."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    scores = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    chosen = [float(scores[i, t]) for i, t in enumerate(completion_ids)]
    best = [scores[i].topk(top).indices.tolist() for i in range(len(completion_ids))]
    return chosen, best
