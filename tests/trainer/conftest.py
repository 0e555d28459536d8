"""A tiny Llama model plus a tokenizer trained on the spot, saved as a normal HF folder.

No downloads: the tokenizer is a byte-level BPE trained on the test rows' text, the model a
2-layer Llama with hidden size 64 built from a config with random weights.
"""
from __future__ import annotations

import random

import pytest

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "change_pin"]
MESSAGES = {
    "card_arrival": ["when will my new card arrive", "my card has not come in the post yet",
                     "how long does card delivery take"],
    "lost_or_stolen_card": ["I lost my card", "my wallet was stolen with my card",
                            "I cannot find my card anywhere"],
    "exchange_rate": ["what exchange rate do you use", "how much is a euro worth today",
                      "is the rate for dollars fair"],
    "change_pin": ["how do I change my PIN", "I want a new PIN for my card", "can I reset my PIN"],
}
EOS = "<|endoftext|>"


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(LABELS)
        text = rng.choice(MESSAGES[label]) + rng.choice(["", "?", " please", " - it is urgent!"])
        rows.append({"prompt": f"Route this banking customer message to its intent.\nMessage: {text}\nIntent:",
                     "completion": f" {label}"})
    return rows


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [r["prompt"] + r["completion"] for r in make_rows(200, seed=123)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    # No pad token on purpose: the trainer must fall back to EOS, as for Llama-style tokenizers.
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=None)


def build_model(vocab_size: int, eos_id: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=eos_id, eos_token_id=eos_id,
                         pad_token_id=None)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def sft_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def sft_model_dir(tmp_path_factory, sft_tokenizer):
    path = tmp_path_factory.mktemp("tiny-llama")
    model = build_model(len(sft_tokenizer), sft_tokenizer.eos_token_id)
    model.save_pretrained(str(path))
    sft_tokenizer.save_pretrained(str(path))
    return str(path)
