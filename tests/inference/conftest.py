"""Fixtures for the inference backend tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The session's tiny Llama with its matrices redrawn at std 0.2.

    The stock random init (std 0.02) makes a 2-layer model repeat one token forever, so greedy
    outputs of different prompts look alike; at std 0.2 each prompt gets its own varied text
    (byte-level pieces included), which makes padding, streaming and stop-string bugs visible.
    """
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("varied-model") / "tiny-llama-varied"
    shutil.copytree(tiny_model_dir, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.save_pretrained(str(out))
    return str(Path(out))
