"""tunesmith.core.tokens: one prompt-tokenisation rule for the data service, trainer and backends.

A tiny Llama-style tokenizer that ADDS a BOS ("<s> $A" post-processor) with a Llama-3-like chat
template that itself writes the BOS text is built here, offline. The tests prove that a prompt
gets exactly one BOS whether or not the text already has one, and that prepare's token counts,
the trainer's encode_rows and the inference backends' prompt encoding agree token for token;
with the suite's ChatML tokenizer (no BOS added) nothing changes.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tunesmith.core.contracts import Sampling  # noqa: E402
from tunesmith.core.tokens import encode_completion, encode_prompt, encode_prompts  # noqa: E402
from tunesmith.data.prepare import PrepareSpec, _count_tokens, prepare  # noqa: E402
from tunesmith.trainer.sft import IGNORE_INDEX, encode_rows  # noqa: E402
from tunesmith_builtin import templates as builtin_templates  # noqa: E402

from ..conftest import _tiny_corpus, build_tiny_tokenizer  # noqa: E402

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA_SPECIALS = ["<s>", "</s>", "<pad>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

MESSAGES = ["I am still waiting on my card, when will it arrive?", "How do I activate my new card?",
            "Why was I charged a fee for a transfer?", "My top up failed, what should I do?",
            "I want to change my PIN number.", "Can I get a virtual card for online shopping?"]
LABELS = ["card_arrival", "activate_my_card", "transfer_fee_charged", "top_up_failed", "change_pin",
          "getting_virtual_card"]


def build_bos_tokenizer(post: str = "<s> $A", chat_template: str = LLAMA3_TEMPLATE):
    """Byte-level BPE, bos "<s>" added by a TemplateProcessing post-processor, eos "</s>"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_tiny_corpus(), trainer=trainers.BpeTrainer(
        vocab_size=640, special_tokens=LLAMA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single=post, pair=f"{post} $B:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("<s>", "</s>")])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                      model_max_length=512)
    wrapped.chat_template = chat_template
    return wrapped


@pytest.fixture(scope="module")
def bos_tok():
    return build_bos_tokenizer()


@pytest.fixture(scope="module")
def chatml_tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def templates():
    found = {}
    builtin_templates.register_templates(register=found.__setitem__)
    return found


def _chat_prompt(tokenizer, templates, text: str) -> str:
    return templates["chat"].render({"input": text, "output": "x"}, {}, tokenizer).prompt


def _rows(tokenizer, templates):
    """Rows as prepare() renders them with the `chat` template."""
    raw = [(i + 2, {"text": m, "category": lab}) for i, (m, lab) in enumerate(zip(MESSAGES, LABELS))]
    spec = PrepareSpec(column_mapping={"input": "text", "output": "category"}, template="chat",
                       validation_fraction=0.0, max_seq_length=512)
    prepared = prepare(raw, spec, source="train.csv", templates=templates, tokenizer=tokenizer)
    return prepared, prepared.splits["train"]


def _n_bos(ids, tokenizer) -> int:
    return sum(1 for t in ids if t == tokenizer.bos_token_id)


# --- (a), (b): exactly one BOS --------------------------------------------------------------
def test_the_tokenizer_really_adds_a_bos_and_the_chat_template_writes_one(bos_tok, templates):
    """Guards the premise: without the rule, the chat prompt would get two BOS."""
    assert bos_tok("hello")["input_ids"][0] == bos_tok.bos_token_id
    prompt = _chat_prompt(bos_tok, templates, "hello")
    assert prompt.startswith("<s><|start_header_id|>user")
    assert bos_tok(prompt, add_special_tokens=True)["input_ids"][:2] == [bos_tok.bos_token_id] * 2


def test_plain_text_gets_exactly_one_bos(bos_tok):
    text = "How do I activate my new card?"
    ids = encode_prompt(bos_tok, text)
    assert ids == [bos_tok.bos_token_id] + bos_tok(text, add_special_tokens=False)["input_ids"]
    assert _n_bos(ids, bos_tok) == 1


def test_chat_rendered_prompt_gets_exactly_one_bos(bos_tok, templates):
    prompt = _chat_prompt(bos_tok, templates, "How do I activate my new card?")
    ids = encode_prompt(bos_tok, prompt)
    assert ids[0] == bos_tok.bos_token_id and ids[1] != bos_tok.bos_token_id
    assert _n_bos(ids, bos_tok) == 1
    assert ids == bos_tok(prompt, add_special_tokens=False)["input_ids"]


def test_batch_and_single_agree_and_only_the_added_bos_is_dropped(bos_tok, templates):
    texts = ["plain text", _chat_prompt(bos_tok, templates, "hi"), "<s><s>two of my own", ""]
    batch = encode_prompts(bos_tok, texts)
    assert batch == [encode_prompt(bos_tok, t) for t in texts]
    assert _n_bos(batch[2], bos_tok) == 2  # the text's own two are kept, the tokenizer's is not added
    assert batch[3] == [bos_tok.bos_token_id]


def test_other_added_special_tokens_are_kept(templates):
    tok = build_bos_tokenizer("<s> $A </s>")
    prompt = _chat_prompt(tok, templates, "hello there")
    ids = encode_prompt(tok, prompt)
    assert _n_bos(ids, tok) == 1 and ids[-1] == tok.eos_token_id


def test_completion_has_no_special_tokens(bos_tok):
    assert encode_completion(bos_tok, " card_arrival") == bos_tok(" card_arrival", add_special_tokens=False)["input_ids"]
    assert bos_tok.bos_token_id not in encode_completion(bos_tok, " card_arrival")


# --- (c): data service, trainer and backends agree ---------------------------------------------
def _trainer_prompts(tokenizer, rows):
    encoded = encode_rows(tokenizer, rows, max_seq_length=512)
    prompts = [[t for t, lab in zip(e.input_ids, e.labels) if lab == IGNORE_INDEX] for e in encoded]
    completions = [len(e.input_ids) - len(p) for e, p in zip(encoded, prompts)]
    return prompts, completions


@pytest.mark.parametrize("which", ["bos", "bos_template_without_bos", "chatml"])
def test_prepare_statistics_and_trainer_agree_on_chat_rows(which, bos_tok, chatml_tok, templates):
    """Llama-3 style (template writes the BOS), a BOS-adding tokenizer whose template writes none
    (the tokenizer's BOS is then the only one), and ChatML (no BOS added)."""
    tok = {"bos": bos_tok, "chatml": chatml_tok,
           "bos_template_without_bos": build_bos_tokenizer(chat_template=LLAMA3_TEMPLATE[len("{{ bos_token }}"):])}[which]
    prepared, rows = _rows(tok, templates)
    prompts, completions = _trainer_prompts(tok, rows)
    bos = tok.bos_token_id  # ChatML: "<|im_start|>" (opens every turn, never added by the tokenizer)
    assert all(p[0] == bos and p[1] != bos for p in prompts)
    assert prompts == encode_prompts(tok, [r["prompt"] for r in rows])
    counts = _count_tokens(rows, tok)
    assert [counts[r["source_row"]] for r in rows] == [(len(p), c) for p, c in zip(prompts, completions)]
    stats = prepared.statistics["train"]["prompt_tokens"]
    assert (stats["min"], stats["max"]) == (min(map(len, prompts)), max(map(len, prompts)))


def _save_tiny_llama(tokenizer, folder: Path) -> str:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, **ids)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(**ids)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def bos_model_dir(bos_tok, tmp_path_factory):
    pytest.importorskip("torch")
    return _save_tiny_llama(bos_tok, tmp_path_factory.mktemp("bos-model") / "tiny-llama-bos")


def test_transformers_backend_encodes_dataset_prompts_as_the_trainer_does(bos_model_dir, bos_tok, templates):
    from tunesmith_builtin.inference_transformers import TransformersModel, render_prompt

    model = TransformersModel(bos_model_dir)
    try:
        _, rows = _rows(bos_tok, templates)
        trainer_prompts, _ = _trainer_prompts(bos_tok, rows)
        sampling = Sampling(max_new_tokens=1)
        backend = [model._encode(r["prompt"], sampling)[0] for r in rows]
        assert backend == trainer_prompts
        assert all(_n_bos(ids, bos_tok) == 1 for ids in backend)
        gens = model.generate([r["prompt"] for r in rows], sampling)
        assert [g.prompt_tokens for g in gens] == [len(p) for p in trainer_prompts]
        # the same chat sent as messages renders to the text the `chat` template produced: same ids
        chat = [{"role": "user", "content": rows[0]["fields"]["input"]}]
        assert render_prompt(model.tokenizer, chat) == trainer_prompts[0]
        plain = "How do I activate my new card?"
        assert render_prompt(model.tokenizer, plain) == encode_prompt(bos_tok, plain)
    finally:
        model.close()


# --- (d): the ChatML tokenizer (no BOS added) is unchanged --------------------------------------
def test_chatml_tokenizer_encoding_is_unchanged(chatml_tok, templates):
    for text in ["The quick brown fox.", _chat_prompt(chatml_tok, templates, "How do I activate my new card?")]:
        expected = chatml_tok(text, add_special_tokens=True)["input_ids"]
        assert expected == chatml_tok(text, add_special_tokens=False)["input_ids"]
        assert encode_prompt(chatml_tok, text) == expected


def test_chatml_backend_encoding_is_unchanged(tiny_model_dir, templates):
    from tunesmith_builtin.inference_transformers import load_tokenizer, render_prompt

    tok = load_tokenizer(tiny_model_dir)
    prompt = _chat_prompt(tok, templates, "hello")
    assert render_prompt(tok, prompt) == tok(prompt)["input_ids"]
    chat = [{"role": "user", "content": "hello"}]
    assert render_prompt(tok, chat) == tok(prompt, add_special_tokens=False)["input_ids"]


# --- vLLM: the ids it is sent are encode_prompt's --------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_backend_sends_encode_prompt_ids(bos_model_dir, bos_tok, templates):
    """Only the encoding path (VllmModel._engine_input); no engine is started."""
    from tunesmith_builtin.inference_transformers import load_tokenizer
    from tunesmith_builtin.inference_vllm import VllmModel

    model = object.__new__(VllmModel)  # the real method, on an instance that has no engine
    model.tokenizer = load_tokenizer(bos_model_dir)
    model.max_model_len = 512
    _, rows = _rows(bos_tok, templates)
    for text in ["How do I activate my new card?", rows[0]["prompt"]]:
        engine_input, n = model._engine_input(text)
        assert engine_input["prompt_token_ids"] == encode_prompt(bos_tok, text)
        assert n == len(encode_prompt(bos_tok, text))
        assert _n_bos(engine_input["prompt_token_ids"], bos_tok) == 1
    engine_input, _ = model._engine_input([{"role": "user", "content": MESSAGES[0]}])
    assert _n_bos(engine_input["prompt_token_ids"], bos_tok) == 1
