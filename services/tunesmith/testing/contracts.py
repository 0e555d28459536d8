"""Contract checks: the behaviour every plugin of a kind must have, run against the real plugin.

One check per kind (as peft's test matrix runs every tuner through the same tests):

    check_peft_method(method, model_factory=None, model_dir=None)
    check_template(template, schemas=None, tokenizer=None)
    check_benchmark(benchmark)
    check_storage_backend(factory, root)
    check_inference_backend(backend, model_dir, adapter_dir=None)
    check_training_executor(executor, tmp_dir)

Each first checks the object against its Protocol (tunesmith.core.contracts), then exercises it,
and raises ContractViolation (an AssertionError) saying which contract failed; a check that
cannot run here (backend unavailable, no model given) calls pytest.skip with the reason.

A third-party package runs its own plugins through the same checks:

    import pytest
    from tunesmith.testing.contracts import check_plugin, plugin_cases

    @pytest.mark.parametrize("case", plugin_cases(plugin="acme"))   # the entry-point name
    def test_acme_keeps_the_contracts(case, tmp_path):
        check_plugin(case, tmp_path)

torch, transformers and peft are imported inside the checks that need them. The checks are
sized for tiny models (tiny_llama(), a 2-layer Llama built from a config, takes well under a
second); vLLM is skipped by check_plugin unless TUNESMITH_CONTRACT_VLLM=1 (its engine start
takes 30-60 s).
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tunesmith.core import contracts as c
from tunesmith.core.errors import FailedPrecondition, InvalidArgument, NotFound

#: Environment variable that makes check_plugin run the slow inference backends too.
SLOW_BACKENDS_ENV = "TUNESMITH_CONTRACT_VLLM"
#: Inference backends check_plugin skips unless SLOW_BACKENDS_ENV is set (engine start 30-60 s).
SLOW_INFERENCE_BACKENDS = frozenset({"vllm"})
#: Errors a template may raise for a row it cannot render (the data service reports them per row).
TEMPLATE_ROW_ERRORS = (KeyError, ValueError, InvalidArgument)
#: An option key no template has.
NO_SUCH_OPTION = "__tunesmith_contract_no_such_option__"

#: One row per dataset schema, in canonical fields, as the data service hands them to render()
#: (a preference row is rendered with its chosen answer as output/completion).
SAMPLE_ROWS: dict[str, dict[str, Any]] = {
    "classification": {"input": "My card has not arrived yet.", "output": "card_arrival"},
    "alpaca": {"instruction": "Name the capital of France.", "input": "", "output": "Paris"},
    "chat": {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]},
    "prompt_completion": {"prompt": "2 + 2 =", "completion": " 4"},
    "text": {"text": "The quick brown fox jumps over the lazy dog."},
    "preference": {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away.",
                   "completion": "Hi!", "output": "Hi!"},
    "multiple_choice": {"question": "Which is a fruit?", "choices": ["carrot", "apple", "leek"], "answer": 1},
}

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ContractViolation(AssertionError):
    """A plugin broke its kind's contract; the message says which part."""


def _require(ok: Any, message: str) -> None:
    if not ok:
        raise ContractViolation(message)


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)


def _label(obj: Any) -> str:
    name = getattr(obj, "name", None) or getattr(obj, "scheme", None)
    return f"{type(obj).__name__}({name!r})" if name else type(obj).__name__


def check_conforms(obj: Any, protocol: type, what: str | None = None) -> None:
    """ContractViolation listing every member `obj` lacks or declares differently from `protocol`."""
    problems = c.conformance_errors(obj, protocol)
    _require(not problems, f"{what or _label(obj)} does not satisfy {protocol.__name__}: {'; '.join(problems)}")


def _raises(fn: Callable[[], Any], errors: tuple[type[BaseException], ...], what: str) -> BaseException:
    """Run fn; return the exception if it is one of `errors`, else ContractViolation."""
    try:
        fn()
    except errors as exc:
        return exc
    except Exception as exc:  # the wrong kind of error is the violation
        raise ContractViolation(f"{what}: expected {' or '.join(e.__name__ for e in errors)}, "
                                f"got {type(exc).__name__}: {exc}") from exc
    raise ContractViolation(f"{what}: expected {' or '.join(e.__name__ for e in errors)}, nothing was raised")


# --- tiny models ----------------------------------------------------------------------------
def tiny_llama(vocab_size: int = 96, seed: int = 0) -> Any:
    """A tiny random LlamaForCausalLM built from a config (hidden 32, 2 layers, 4 heads, 2 KV
    heads; about 20k parameters), float32, seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).to(torch.float32)


def tiny_tokenizer(chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """A tiny offline word-level tokenizer (transformers PreTrainedTokenizerFast) with a ChatML
    chat template, for templates that need one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|pad|>": 3}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", eos_token="<|im_end|>",
                                  pad_token="<|pad|>", bos_token="<|im_start|>")
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def tiny_lora_adapter(model_dir: str, out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Save a random, strongly scaled peft LoRA adapter for the model in `model_dir` to `out_dir`
    (it changes greedy output, so an adapter that is ignored shows). Returns out_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=256, target_modules="all-linear",
                                            init_lora_weights=False))
    model.save_pretrained(str(out_dir))
    return str(out_dir)


# --- PEFT methods -----------------------------------------------------------------------------
def _bad_values(defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """One clearly mistyped value per default option: a string for a number or bool, a number
    for a string or list."""
    bad: list[dict[str, Any]] = []
    for key, value in defaults.items():
        if isinstance(value, bool):
            bad.append({key: "not-a-bool"})
        elif isinstance(value, (int, float)):
            bad.append({key: "not-a-number"})
        elif isinstance(value, (str, list, tuple)):
            bad.append({key: 12345})
    return bad


def _random_batch(vocab: int) -> dict[str, Any]:
    """Four rows of 12 random tokens (ids >= 3, clear of special tokens), the last two
    right-padded, as the trainer batches them: labels -100 on the padding."""
    import torch

    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab, (4, 12), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2:, 9:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _shifted_loss(logits: Any, labels: Any) -> Any:
    """Mean next-token cross-entropy of `logits` (one position per label) against `labels`."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def check_peft_method(method: Any, model_factory: Callable[[], Any] | None = None, *,
                      model_dir: str | os.PathLike[str] | None = None, options: dict[str, Any] | None = None,
                      bad_options: Sequence[dict[str, Any]] | None = None, batch: dict[str, Any] | None = None,
                      lr: float = 1e-2, steps: int = 4, atol: float = 1e-5, quantized_atol: float = 1e-2) -> None:
    """A PeftMethod keeps its contract.

    - Declarations: artifact_kind is "adapter" or "model"; supports_merge only with "adapter".
    - validate({}) returns a dict of defaults; validating that again returns it unchanged and
      does not modify its argument; load_kwargs(defaults, "cpu") is a dict.
    - An unknown option, and each of `bad_options` (default: one mistyped value per default
      option, see _bad_values), is refused by validate(), load_kwargs() and apply() with
      InvalidArgument whose field is one of its option keys (the bare key), apply() before
      touching the model.
    - apply(base, options) leaves trainable parameters; parameter_counts() is (trainable, total)
      as peft counts them: PeftModel.get_nb_trainable_parameters() for a peft model, the
      parameters' numel() otherwise.
    - The logits have one position per input token, or (prompt_learning) more, the virtual
      tokens first: the model's own loss equals the next-token loss of the last len(input)
      positions.
    - `steps` AdamW steps (lr) on the model's own loss (forward with labels) make that loss fall,
      with non-zero gradients on the trainable parameters.
    - save(model, folder) writes artifact_kind's format, which stock libraries load with the
      same logits (eval mode, `atol`): "adapter", peft.PeftModel.from_pretrained on a fresh base
      (for quantized_base, one quantised afresh the same way, to `quantized_atol`: on CPU a
      stock-loaded bitsandbytes 4-bit base runs eval forwards through repacked weights with
      bfloat16 scales, about 1e-3 off the exact 4-bit matmul a training model keeps); "model",
      AutoModelForCausalLM.from_pretrained. With supports_merge, merge_and_unload() on a
      full-precision base gives the adapter's logits on that base (a quantised base is merged
      onto the unquantised model, as the trainer's merge does).

    model_factory: returns a fresh causal LM (default: loaded from model_dir in float32, else
        tiny_llama()). For a method with quantized_base, either give model_dir (the base is then
        loaded from it with the method's load_kwargs) or a factory that loads the base that way
        (the merge check is then skipped: it needs the unquantised base).
    batch: input_ids, attention_mask and labels to train on (default: random tokens, right-padded
        rows included).
    """
    import torch

    what = f"peft method {_label(method)}"
    check_conforms(method, c.PeftMethod, what)
    _require(method.artifact_kind in ("adapter", "model"),
             f"{what}: artifact_kind is {method.artifact_kind!r}, not 'adapter' or 'model'")
    _require(not (method.supports_merge and method.artifact_kind != "adapter"),
             f"{what}: supports_merge is True but artifact_kind is {method.artifact_kind!r}: only adapters merge")
    defaults = method.validate({})
    _require(isinstance(defaults, dict), f"{what}: validate({{}}) returned {type(defaults).__name__}, not a dict")
    argument = copy.deepcopy(defaults)
    again = method.validate(argument)
    _require(argument == defaults, f"{what}: validate() modified its argument")
    _require(again == defaults, f"{what}: validate(validate({{}})) = {again!r} differs from validate({{}}) = {defaults!r}")
    load_kwargs = method.load_kwargs(copy.deepcopy(defaults), "cpu")
    _require(isinstance(load_kwargs, dict), f"{what}: load_kwargs() returned {type(load_kwargs).__name__}, not a dict")

    cases = list(_bad_values(defaults) if bad_options is None else bad_options) + [{NO_SUCH_OPTION: 1}]
    for bad in cases:
        for call, fn in (("validate", lambda b=bad: method.validate(dict(b))),
                         ("load_kwargs", lambda b=bad: method.load_kwargs(dict(b), "cpu")),
                         ("apply", lambda b=bad: method.apply(object(), dict(b)))):
            exc = _raises(fn, (InvalidArgument,), f"{what}: {call}({bad!r})")
            _require(exc.field in bad, f"{what}: {call}({bad!r}) raised InvalidArgument with field {exc.field!r}; "
                                       f"the field must be the option key alone (one of {sorted(bad)})")

    from transformers import AutoModelForCausalLM

    chosen = method.validate(dict(options or {}))
    if model_factory is not None:
        plain = model_factory
    elif model_dir is not None:
        def plain():
            return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    else:
        plain = tiny_llama
    quantised = method.quantized_base and model_factory is None and model_dir is not None
    if quantised:
        def factory():
            return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                        **method.load_kwargs(copy.deepcopy(chosen), "cpu"))
    else:
        factory = plain

    base = factory()
    base.eval()
    if batch is None:
        batch = _random_batch(int(base.config.vocab_size))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    base_state = None if method.quantized_base else {k: v.detach().clone() for k, v in base.state_dict().items()}

    model = method.apply(base, copy.deepcopy(chosen))
    trainable = [p for p in model.parameters() if p.requires_grad]
    _require(trainable, f"{what}: apply() left no trainable parameters")
    counts = method.parameter_counts(model)
    if callable(getattr(model, "get_nb_trainable_parameters", None)):
        expected = tuple(model.get_nb_trainable_parameters())
    else:
        expected = (sum(p.numel() for p in trainable), sum(p.numel() for p in model.parameters()))
    _require(tuple(counts) == expected and all(isinstance(n, int) for n in counts),
             f"{what}: parameter_counts() = {counts!r}, but peft counts (trainable, total) = {expected!r}")

    # The logits line up with the input, virtual tokens (if any) first.
    labels = batch["labels"].clone()
    labels[:, 0] = -100  # peft predicts the first token from the last virtual one; leave that out
    model.eval()
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    seq = inputs["input_ids"].shape[1]
    extra = out.logits.shape[1] - seq
    _require(extra == 0 or (method.prompt_learning and extra > 0),
             f"{what}: logits have {out.logits.shape[1]} positions for {seq} input tokens"
             + ("" if method.prompt_learning else " (only prompt_learning methods add positions)"))
    own = _shifted_loss(out.logits[:, extra:], labels)
    _require(torch.allclose(own, out.loss.float(), atol=1e-4),
             f"{what}: the model's loss ({float(out.loss):.5f}) is not the loss of its last {seq} logits "
             f"({float(own):.5f}): the virtual tokens must come first")

    model.train()
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    losses = []
    for step in range(steps):
        loss = model(**inputs, labels=batch["labels"]).loss
        _require(loss is not None and math.isfinite(float(loss.detach())), f"{what}: forward gave no finite loss")
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for p in trainable if p.grad is not None]
            _require(grads and any(float(g.abs().sum()) > 0 for g in grads),
                     f"{what}: backward left no non-zero gradient on the trainable parameters")
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        out = model(**inputs, labels=batch["labels"])
    tuned_logits = out.logits.float()
    _require(float(out.loss) < losses[0],
             f"{what}: {steps} AdamW steps did not lower the loss ({losses[0]:.4f} -> {float(out.loss):.4f})")

    def fresh_base(quantise: bool) -> Any:
        fresh = factory() if quantise else plain()
        if base_state is not None:
            fresh.load_state_dict(base_state)
        return fresh

    def logits_of(m: Any) -> Any:
        with torch.no_grad():
            return m.eval()(**inputs).logits.float()

    def same(a: Any, b: Any, tol: float, claim: str) -> None:
        _require(torch.allclose(a, b, atol=tol), f"{what}: {claim} (max difference {float((a - b).abs().max()):.3g})")

    with tempfile.TemporaryDirectory(prefix="tunesmith-contract-") as tmp:
        method.save(model, Path(tmp))
        _require(any(Path(tmp).iterdir()), f"{what}: save() wrote nothing")
        if method.artifact_kind == "model":
            _require((Path(tmp) / "config.json").is_file(), f"{what}: save() wrote no transformers model (config.json)")
            reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
            same(logits_of(reloaded), tuned_logits, atol,
                 "the saved model, loaded with AutoModelForCausalLM.from_pretrained, gives other logits")
            return
        _require((Path(tmp) / "adapter_config.json").is_file(), f"{what}: save() wrote no peft adapter (adapter_config.json)")
        from peft import PeftModel

        reloaded = PeftModel.from_pretrained(fresh_base(quantise=True), tmp)
        same(logits_of(reloaded), tuned_logits, quantized_atol if method.quantized_base else atol,
             "the saved adapter, loaded with peft.PeftModel.from_pretrained, gives other logits")
        if not method.supports_merge or (method.quantized_base and not quantised):
            return
        if quantised:  # merge onto the full-precision base, as the trainer's merge does
            reloaded = PeftModel.from_pretrained(fresh_base(quantise=False), tmp)
        unmerged = logits_of(reloaded)
        same(logits_of(reloaded.merge_and_unload()), unmerged, 1e-4, "merge_and_unload() changes the logits")


# --- prompt templates -------------------------------------------------------------------------
def claimed_schemas(template: Any) -> list[str]:
    """The dataset schemas whose default template is this one (tunesmith.data.prepare)."""
    from tunesmith.data.prepare import DEFAULT_TEMPLATES

    return [schema for schema, name in DEFAULT_TEMPLATES.items() if name == getattr(template, "name", None)]


def _check_rendered(what: str, rendered: Any) -> None:
    prompt, completion = getattr(rendered, "prompt", None), getattr(rendered, "completion", None)
    _require(isinstance(prompt, str) and isinstance(completion, str),
             f"{what} returned {rendered!r}: it needs str attributes prompt and completion")
    _require(completion.strip(), f"{what} rendered an empty completion")


def check_training_recipe(recipe: Any, model_dir: str | os.PathLike[str], rows: Sequence[dict],
                          validation_rows: Sequence[dict], tmp_dir: str | os.PathLike[str], *,
                          hyperparameters: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> None:
    """A TrainingRecipe keeps its contract, run by the real training loop with LoRA.

    - validate_options({}) is a dict that validates to itself; an unknown option is refused with
      InvalidArgument whose field is the option key.
    - train_batches(epoch, seed) is deterministic and every batch carries int n_items > 0 and
      n_tokens > 0.
    - Training `rows` (dicts with at least recipe.row_fields) lowers the training loss, and
      evaluate() on `validation_rows` reports a finite "loss".
    - A run stopped at a checkpoint and resumed from it ends with the uninterrupted run's final
      loss (the recipe's batches and state survive a restart).
    """
    import shutil

    from tunesmith.core.errors import InvalidArgument
    from tunesmith.trainer.loop import TrainingCancelled, train
    from tunesmith_builtin.peft_lora import LoraMethod

    what = f"training recipe {_label(recipe)}"
    check_conforms(recipe, c.TrainingRecipe, what)
    defaults = recipe.validate_options({})
    _require(isinstance(defaults, dict) and recipe.validate_options(dict(defaults)) == defaults,
             f"{what}: validate_options({{}}) must give defaults that validate to themselves")
    err = _raises(lambda: recipe.validate_options({**defaults, "no_such_option": 1}), (InvalidArgument,),
                  f"{what}: validate_options with an unknown key")
    _require(getattr(err, "field", "") == "no_such_option", f"{what}: an unknown option's field is {err.field!r}")
    missing = [f for f in recipe.row_fields if any(f not in r for r in rows)]
    _require(not missing, f"{what}: the rows given lack {missing}")

    tmp = Path(tmp_dir)
    hp = {"epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "seed": 3, "num_threads": 1, "device": "cpu",
          "checkpoint_every_steps": 2, **(hyperparameters or {})}
    opts = dict(options or {})

    def run(out: Path, stop_after: int = 0, resume_from: Path | None = None):
        saved: list[Path] = []
        steps: list[int] = []

        def on_event(e: dict) -> None:
            if e["type"] == "progress":
                steps.append(e["step"])

        def sink(folder: Path, step: int) -> None:
            saved.append(Path(shutil.copytree(folder, out / f"ckpt-{step}")))

        result = train(model_path=str(model_dir), train_rows=list(rows), validation_rows=list(validation_rows),
                       method=LoraMethod(), method_options={"rank": 4}, recipe=recipe, recipe_options=opts,
                       hp=hp, output_dir=out, on_event=on_event, checkpoint_sink=sink, resume_from=resume_from,
                       should_stop=lambda: bool(stop_after) and bool(steps) and steps[-1] >= stop_after)
        return result, saved

    full, _ = run(tmp / "full")
    _require(full["steps"] >= 4, f"{what}: the contract rows gave only {full['steps']} steps")
    _require(full["final_train_loss"] < full["first_train_loss"],
             f"{what}: training did not lower the loss ({full['first_train_loss']} -> {full['final_train_loss']})")
    loss = full["final_metrics"].get("loss")
    _require(isinstance(loss, float) and math.isfinite(loss), f"{what}: evaluate() gave no finite 'loss': "
                                                                 f"{full['final_metrics']}")
    batches = [(b["n_items"], b["n_tokens"]) for b in recipe.train_batches(1, 3)]
    _require(batches == [(b["n_items"], b["n_tokens"]) for b in recipe.train_batches(1, 3)],
             f"{what}: train_batches(1, 3) differs between calls")
    _require(all(isinstance(n, int) and isinstance(t, int) and n > 0 and t > 0 for n, t in batches),
             f"{what}: every batch needs int n_items > 0 and n_tokens > 0: {batches[:3]}")
    try:
        run(tmp / "stopped", stop_after=3)
        raise ContractViolation(f"{what}: should_stop() did not stop training")
    except TrainingCancelled:
        pass
    checkpoints = sorted((tmp / "stopped").glob("ckpt-*"), key=lambda p: int(p.name.split("-")[1]))
    _require(checkpoints and checkpoints[-1].name == "ckpt-3", f"{what}: no checkpoint at the stop (step 3)")
    resumed, _ = run(tmp / "resumed", resume_from=checkpoints[-1])
    _require(abs(resumed["final_train_loss"] - full["final_train_loss"]) <= 1e-4 * max(1.0, abs(full["final_train_loss"])),
             f"{what}: resumed from step 3 it ends at loss {resumed['final_train_loss']}, the uninterrupted run "
             f"at {full['final_train_loss']}")


def check_template(template: Any, *, schemas: Iterable[str] | None = None, tokenizer: Any = None,
                   options: dict[str, Any] | None = None) -> None:
    """A PromptTemplate keeps its contract.

    - validate_options({}) and validate_options(options) pass; an unknown option is refused with
      InvalidArgument whose field is that option key.
    - Each schema in `schemas` (default: claimed_schemas(template); SAMPLE_ROWS has one row per
      schema) renders: str prompt, non-empty str completion, the same result twice, its fields
      and options unmodified. For other schemas render() succeeds or raises KeyError, ValueError
      or InvalidArgument. With no schema claimed, at least one sample row must render.
    - An empty row raises KeyError, ValueError or InvalidArgument.
    - needs_tokenizer False: rendering with tokenizer=None works; True: tokenizer=None raises one
      of those errors (the chat-template rows then get `tokenizer`, default tiny_tokenizer()).
    """
    what = f"template {_label(template)}"
    check_conforms(template, c.PromptTemplate, what)
    options = dict(options or {})
    template.validate_options({})
    template.validate_options(dict(options))
    exc = _raises(lambda: template.validate_options({NO_SUCH_OPTION: "x"}), (InvalidArgument,),
                  f"{what}: validate_options with an unknown option")
    _require(exc.field == NO_SUCH_OPTION,
             f"{what}: validate_options named field {exc.field!r}, not the unknown option key {NO_SUCH_OPTION!r}")

    required = list(schemas) if schemas is not None else claimed_schemas(template)
    unknown = sorted(set(required) - set(SAMPLE_ROWS))
    _require(not unknown, f"no sample row for schema(s) {unknown} (known: {sorted(SAMPLE_ROWS)})")
    tok = None
    if template.needs_tokenizer:
        tok = tokenizer if tokenizer is not None else tiny_tokenizer()
        _raises(lambda: template.render(dict(SAMPLE_ROWS[(required or ["chat"])[0]]), dict(options), None),
                TEMPLATE_ROW_ERRORS, f"{what}: needs_tokenizer is True, so render() with tokenizer=None")

    rendered_any = False
    for schema, row in SAMPLE_ROWS.items():
        fields, opts = copy.deepcopy(row), copy.deepcopy(options)
        label = f"{what}.render({schema} row)"
        if schema in required:
            first = template.render(fields, opts, tok)
            _check_rendered(label, first)
            second = template.render(copy.deepcopy(row), copy.deepcopy(options), tok)
            _require((first.prompt, first.completion) == (second.prompt, second.completion),
                     f"{label} is not deterministic")
            _require(fields == row and opts == options, f"{label} modified its fields or options")
            rendered_any = True
            continue
        try:
            result = template.render(fields, opts, tok)
        except TEMPLATE_ROW_ERRORS:
            continue
        except Exception as err:  # any other error type breaks the contract
            raise ContractViolation(f"{label} raised {type(err).__name__}: {err}; a row it cannot render must "
                                    f"raise KeyError, ValueError or InvalidArgument") from err
        _check_rendered(label, result)
        rendered_any = True
    _require(rendered_any, f"{what} rendered none of the sample rows ({', '.join(SAMPLE_ROWS)})")
    _raises(lambda: template.render({}, dict(options), tok), TEMPLATE_ROW_ERRORS, f"{what}.render(empty row)")


# --- benchmarks -------------------------------------------------------------------------------
#: References check_benchmark scores by default: JSON objects holding a label, a sentence of
#: several words and a number, so that every kind of built-in benchmark (labels, text overlap,
#: BLEU's 4-grams, JSON fields, final numbers) has something to match. The wrong answers
#: ("zz wrong answer <i>") share no label, words, field or number with them.
BENCHMARK_REFERENCES = (
    '{"intent": "card_arrival", "text": "my new card has not arrived yet", "amount": 12}',
    '{"intent": "change_pin", "text": "how do I change the PIN of my card", "amount": 40}',
    '{"intent": "exchange_rate", "text": "which exchange rate do you use for euros", "amount": 7.5}',
    '{"intent": "card_arrival", "text": "my new card has not arrived yet", "amount": 12}',
    '{"intent": "top_up_limits", "text": "is there a limit on how much I can top up", "amount": 250}',
    '{"intent": "lost_or_stolen_phone", "text": "someone stole my phone with the app on it", "amount": 99}',
)

#: Multiple-choice rows (prompt, choices, gold) for loglikelihood benchmarks.
BENCHMARK_CHOICE_ROWS = (
    ("Question: What is the capital of France?\nAnswer:", ("Paris", "London", "Berlin", "Madrid"), 0),
    ("Question: How many legs does a spider have?\nAnswer:", ("six", "eight", "four", "ten"), 1),
    ("Question: Which planet is called the red planet?\nAnswer:", ("Venus", "Jupiter", "Mars", "Saturn"), 2),
    ("Question: What do bees make?\nAnswer:", ("milk", "silk", "paper", "honey"), 3),
)

_TOL = 1e-9


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_TOL, abs_tol=_TOL)


def _metric_specs(what: str, benchmark: Any) -> list[Any]:
    """benchmark.metrics checked: a non-empty sequence of MetricSpec-like objects (name: str,
    statistic in METRIC_STATISTICS, higher_is_better: bool), names unique."""
    specs = benchmark.metrics
    _require(isinstance(specs, (tuple, list)) and specs, f"{what}: metrics must be a non-empty tuple of MetricSpec")
    names = []
    for spec in specs:
        name, statistic = getattr(spec, "name", None), getattr(spec, "statistic", None)
        _require(isinstance(name, str) and name, f"{what}: a metric has no name: {spec!r}")
        _require(statistic in c.METRIC_STATISTICS,
                 f"{what}: metric {name!r} has statistic {statistic!r}, not one of {sorted(c.METRIC_STATISTICS)}")
        _require(isinstance(getattr(spec, "higher_is_better", None), bool),
                 f"{what}: metric {name!r} higher_is_better must be a bool")
        names.append(name)
    _require(len(set(names)) == len(names), f"{what}: metric names repeat: {names}")
    return list(specs)


def _generation_rows(benchmark: Any, references: Sequence[str], predictions: Sequence[str]) -> list[c.EvalRow]:
    requires = set(benchmark.requires)
    labels = tuple(sorted(set(references))) if "labels" in requires else ()
    choices = tuple(sorted(set(references))) if "choices" in requires else ()
    return [c.EvalRow(prompt=f"Row {i}: answer as the reference does.", reference=ref, prediction=pred,
                      finish_reason="stop", completion_tokens=len(pred.split()), labels=labels, choices=choices,
                      gold=choices.index(ref) if choices else -1, max_new_tokens=64)
            for i, (ref, pred) in enumerate(zip(references, predictions))]


def _loglikelihood_rows(what: str, benchmark: Any, options: dict[str, Any], good: Sequence[bool]) -> list[c.EvalRow]:
    """BENCHMARK_CHOICE_ROWS with log-likelihoods for their requests: in a good row the gold
    choice (and any continuation that is no choice, e.g. the reference for perplexity) is far
    likelier than the other choices; in a bad row the reverse."""
    rows = []
    for i, is_good in enumerate(good):
        prompt, choices, gold = BENCHMARK_CHOICE_ROWS[i % len(BENCHMARK_CHOICE_ROWS)]
        row = c.EvalRow(prompt=prompt, reference=choices[gold], choices=choices, gold=gold,
                        labels=choices if "labels" in set(benchmark.requires) else ())
        requests = benchmark.requests(row, dict(options))
        _require(isinstance(requests, list) and requests
                 and all(isinstance(r, tuple) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in requests),
                 f"{what}: requests() must return a non-empty list of (context, continuation) string pairs, "
                 f"got {requests!r}")
        _require(benchmark.requests(row, dict(options)) == requests, f"{what}: requests() is not deterministic")
        lls = []
        for _context, continuation in requests:
            matches = [j for j, choice in enumerate(choices) if continuation.strip() == choice.strip()]
            favoured = not matches or matches[0] == gold
            tokens = max(1, len(continuation.split()))
            likely = favoured == is_good
            lls.append(c.LogLikelihood(logprob=(-0.1 if likely else -10.0) * tokens, tokens=tokens, is_greedy=likely))
        rows.append(replace(row, loglikelihoods=tuple(lls)))
    return rows


def _bounded(benchmark: Any, spec: Any, unbounded: frozenset[str]) -> bool:
    """Whether a metric must lie in [0, 1] with 1.0 its best value: binary metrics, and a
    generation benchmark's higher-is-better metrics (accuracy, F1, ROUGE, BLEU / 100), except
    `unbounded` ones. Loglikelihood metrics other than binary ones (mean log-probability,
    perplexity) have no fixed range."""
    if spec.name in unbounded:
        return False
    return spec.statistic == "binary" or (benchmark.needs == "generation" and spec.higher_is_better)


def _score(what: str, benchmark: Any, rows: list[c.EvalRow], options: dict[str, Any], specs: list[Any],
           unbounded: frozenset[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """score_rows then aggregate, checked: one JSON-serialisable dict per row; every metric a
    finite number (in [0, 1] where _bounded); binary/mean rows hold their value (binary: 0 or 1)
    and the aggregate is their mean."""
    import json

    stats = benchmark.score_rows(list(rows), dict(options))
    _require(isinstance(stats, list) and len(stats) == len(rows) and all(isinstance(s, dict) for s in stats),
             f"{what}: score_rows() must return one dict per row ({len(rows)}), got {type(stats).__name__}"
             f"{'' if not isinstance(stats, list) else f' of {len(stats)}'}")
    try:
        json.dumps(stats, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractViolation(f"{what}: score_rows() statistics are not JSON-serialisable: {exc}") from None
    row_values: dict[str, list[Any]] = {}
    for spec in specs:
        if spec.statistic in ("binary", "mean"):
            per_row = row_values[spec.name] = [s.get(spec.name) for s in stats]
            _require(all(isinstance(x, (int, float)) and math.isfinite(x) for x in per_row),
                     f"{what}: {spec.statistic} metric {spec.name!r}: every row statistic must hold the row's "
                     f"value under {spec.name!r}, got {per_row!r}")
            if spec.statistic == "binary":
                _require(all(x in (0, 1) for x in per_row),
                         f"{what}: binary metric {spec.name!r}: row values must be 0 or 1, got {per_row!r}")
    before = copy.deepcopy(stats)
    values = benchmark.aggregate(stats, dict(options))
    _require(stats == before, f"{what}: aggregate() changed the row statistics it was given")
    _require(isinstance(values, dict), f"{what}: aggregate() must return a dict, got {type(values).__name__}")
    out = {}
    for spec in specs:
        value = values.get(spec.name)
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                 f"{what}: aggregate() metric {spec.name!r} = {value!r} is not a finite number")
        _require(not _bounded(benchmark, spec, unbounded) or 0.0 <= value <= 1.0,
                 f"{what}: metric {spec.name!r} = {value} is outside [0, 1]")
        out[spec.name] = float(value)
        per_row = row_values.get(spec.name)
        if per_row:
            mean = sum(float(x) for x in per_row) / len(per_row)
            _require(_close(mean, value), f"{what}: {spec.statistic} metric {spec.name!r} = {value} is not the "
                                              f"mean of its row values ({mean})")
    return out, stats


def check_benchmark(benchmark: Any, *, references: Sequence[str] | None = None,
                    unbounded_metrics: Iterable[str] = (), options: dict[str, Any] | None = None) -> None:
    """A Benchmark keeps its contract (tunesmith.core.contracts.Benchmark).

    - It satisfies the Protocol; needs is in BENCHMARK_NEEDS, requires a subset of
      BENCHMARK_REQUIREMENTS, metrics MetricSpecs with valid statistics and unique names.
    - validate_options({}) passes; an unknown option raises InvalidArgument naming it (field).
    - Generation benchmarks ask for no log-likelihoods (requests() == []) and are scored on
      `references` (default BENCHMARK_REFERENCES) with perfect, half-right and all-wrong
      predictions; loglikelihood benchmarks on multiple-choice rows whose log-likelihoods make the
      gold choice clearly likeliest (good), or clearly not (bad).
    - score_rows gives one JSON-serialisable dict per row; every metric is a finite number;
      binary metrics, and a generation benchmark's higher-is-better metrics (except
      `unbounded_metrics`), lie in [0, 1]; binary/mean row statistics hold the row's value and
      the aggregate is their mean; aggregate() leaves its input alone and scores a row list
      twice over the same as once (binary/mean); a JSON round trip of the statistics
      aggregates the same, and an empty list gives a number (worst value or 0.0) per metric.
    - Better answers never score worse (perfect, half, wrong, by each metric's direction) and
      some metric scores perfect above wrong; perfect answers get 1.0 on each metric that must
      lie in [0, 1] and where higher is better.
    - Scoring is deterministic.
    """
    import json

    what = f"benchmark {_label(benchmark)}"
    check_conforms(benchmark, c.Benchmark, what)
    _require(isinstance(benchmark.name, str) and benchmark.name, f"{what}: name must be a non-empty string")
    _require(isinstance(benchmark.description, str) and benchmark.description.strip(),
             f"{what}: description must be a non-empty string")
    _require(benchmark.needs in c.BENCHMARK_NEEDS,
             f"{what}: needs is {benchmark.needs!r}, not one of {sorted(c.BENCHMARK_NEEDS)}")
    requires = benchmark.requires
    _require(isinstance(requires, (frozenset, set)) and set(requires) <= c.BENCHMARK_REQUIREMENTS,
             f"{what}: requires must be a frozenset of {sorted(c.BENCHMARK_REQUIREMENTS)}, got {requires!r}")
    specs = _metric_specs(what, benchmark)
    unbounded = frozenset(unbounded_metrics)
    opts = dict(options or {})

    try:
        benchmark.validate_options({})
        if opts:
            benchmark.validate_options(dict(opts))
    except Exception as exc:
        raise ContractViolation(f"{what}: validate_options refuses its defaults: {type(exc).__name__}: {exc}") from exc
    exc = _raises(lambda: benchmark.validate_options({NO_SUCH_OPTION: 1}), (InvalidArgument,),
                  f"{what}: validate_options with an unknown option")
    _require(getattr(exc, "field", None) == NO_SUCH_OPTION,
             f"{what}: the unknown-option error must name the option key alone (field={NO_SUCH_OPTION!r}), "
             f"got field={getattr(exc, 'field', None)!r}")

    if benchmark.needs == "generation":
        refs = list(references or BENCHMARK_REFERENCES)
        wrong_answers = [f"zz wrong answer {i}" for i in range(len(refs))]
        half_answers = [r if i % 2 == 0 else wrong_answers[i] for i, r in enumerate(refs)]
        perfect = _generation_rows(benchmark, refs, refs)
        half = _generation_rows(benchmark, refs, half_answers)
        wrong = _generation_rows(benchmark, refs, wrong_answers)
        for row in perfect:
            _require(benchmark.requests(row, dict(opts)) == [],
                     f"{what}: a generation benchmark's requests() must be [] (it asked for log-likelihoods)")
    else:
        n = len(BENCHMARK_CHOICE_ROWS) * 2
        perfect = _loglikelihood_rows(what, benchmark, opts, [True] * n)
        half = _loglikelihood_rows(what, benchmark, opts, [i % 2 == 0 for i in range(n)])
        wrong = _loglikelihood_rows(what, benchmark, opts, [False] * n)

    perfect_m, perfect_stats = _score(what, benchmark, perfect, opts, specs, unbounded)
    half_m, half_stats = _score(what, benchmark, half, opts, specs, unbounded)
    wrong_m, _ = _score(what, benchmark, wrong, opts, specs, unbounded)
    for spec in specs:
        sign = 1.0 if spec.higher_is_better else -1.0
        p, h, w = (sign * m[spec.name] for m in (perfect_m, half_m, wrong_m))
        _require(p >= h - _TOL and h >= w - _TOL,
                 f"{what}: metric {spec.name!r} is not better for better answers "
                 f"(perfect {perfect_m[spec.name]}, half right {half_m[spec.name]}, all wrong {wrong_m[spec.name]}; "
                 f"{'higher' if spec.higher_is_better else 'lower'} is better)")
        if _bounded(benchmark, spec, unbounded) and spec.higher_is_better:
            _require(_close(perfect_m[spec.name], 1.0),
                     f"{what}: metric {spec.name!r} = {perfect_m[spec.name]} for perfect answers, "
                     "not its best value 1.0")
    _require(any((1.0 if s.higher_is_better else -1.0) * (perfect_m[s.name] - wrong_m[s.name]) > _TOL for s in specs),
             f"{what}: no metric scores perfect answers above wrong ones ({perfect_m} vs {wrong_m})")

    doubled = benchmark.aggregate(half_stats + half_stats, dict(opts))
    for spec in specs:
        if spec.statistic in ("binary", "mean"):
            _require(_close(float(doubled[spec.name]), half_m[spec.name]),
                     f"{what}: {spec.statistic} metric {spec.name!r}: the rows twice over score {doubled[spec.name]}, "
                     f"once {half_m[spec.name]}")
    resampled = [half_stats[i] for i in (0, 0, 1, len(half_stats) - 1, 2)]
    again = benchmark.aggregate(resampled, dict(opts))
    _require(all(isinstance(again.get(s.name), (int, float)) and math.isfinite(again[s.name]) for s in specs),
             f"{what}: aggregate() over resampled rows (repeats) gave {again!r}")
    empty = benchmark.aggregate([], dict(opts))
    _require(isinstance(empty, dict) and all(isinstance(empty.get(s.name), (int, float))
                                             and not isinstance(empty[s.name], bool) and not math.isnan(empty[s.name])
                                             for s in specs),
             f"{what}: aggregate([]) must give a number (the worst value, or 0.0) for every metric, got {empty!r}")
    round_trip = benchmark.aggregate(json.loads(json.dumps(half_stats)), dict(opts))
    _require(all(_close(float(round_trip[s.name]), half_m[s.name]) for s in specs),
             f"{what}: the row statistics after a JSON round trip aggregate to {round_trip}, not {half_m}")

    half_again, half_stats_again = _score(what, benchmark, half, opts, specs, unbounded)
    _require(half_stats_again == half_stats and half_again == half_m,
             f"{what}: scoring the same rows twice differs")
    _require(benchmark.aggregate(perfect_stats, dict(opts)) == benchmark.aggregate(perfect_stats, dict(opts)),
             f"{what}: aggregate() is not deterministic")


# --- storage backends -------------------------------------------------------------------------
def check_storage_backend(factory: Any, root: str) -> None:
    """A StorageBackendFactory and the Storage it builds keep their contracts.

    - factory(root) satisfies the Storage Protocol; a second factory(root) and
      factory(storage.root_uri) see the same data.
    - write_bytes/read_bytes round trip; writing again replaces; a reader running alongside a
      writer only ever sees a whole old or whole new file; reading a missing key is NotFound;
      exists, write_json/read_json, append_line, list (sorted, direct children only, no staging
      leftovers), delete (file, folder, missing) behave; bad keys are InvalidArgument.
    - staging_dir gives a fresh folder, gone afterwards; put_artifact (folder, single file,
      move=True) returns a reference (64-hex sha256, kind, size) that artifact(), verify() and
      resolve() agree with; equal content gives an equal reference; a wrong sha256 does not
      verify; key_of/uri round trip; clean_staging returns a count.
    """
    what = f"storage backend {_label(factory)}"
    check_conforms(factory, c.StorageBackendFactory, what)
    storage = factory(root)
    check_conforms(storage, c.Storage, f"{what}: {type(storage).__name__}({root!r})")
    _require(isinstance(storage.root_uri, str) and "://" in storage.root_uri,
             f"{what}: root_uri {storage.root_uri!r} is not a URI")

    key = "contract/files/a.bin"
    _require(not storage.exists(key), f"{what}: exists() is True for a key never written")
    _raises(lambda: storage.read_bytes(key), (NotFound,), f"{what}: read_bytes of a missing key")
    storage.write_bytes(key, b"first")
    _require(storage.exists(key) and storage.read_bytes(key) == b"first", f"{what}: write_bytes/read_bytes round trip")
    storage.write_bytes(key, b"second")
    _require(storage.read_bytes(key) == b"second", f"{what}: write_bytes does not replace the file")
    for bad in ("../escape", "/absolute/key", "contract/../../escape", ""):
        _raises(lambda k=bad: storage.write_bytes(k, b"x"), (InvalidArgument,), f"{what}: write_bytes({bad!r})")

    old, new = b"o" * (1 << 18), b"n" * (1 << 18)
    storage.write_bytes("contract/atomic.bin", old)
    seen: list[bytes] = []
    stop = threading.Event()

    def writer() -> None:
        for i in range(40):
            storage.write_bytes("contract/atomic.bin", new if i % 2 == 0 else old)
        stop.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while not stop.is_set() or len(seen) < 5:
        seen.append(storage.read_bytes("contract/atomic.bin"))
        if len(seen) > 2000:
            break
    thread.join(60)
    torn = [len(b) for b in seen if b not in (old, new)]
    _require(not torn, f"{what}: a reader saw a partly written file ({len(torn)} of {len(seen)} reads)")

    storage.write_json("contract/files/b.json", {"x": [1, 2], "y": "z"})
    _require(storage.read_json("contract/files/b.json") == {"x": [1, 2], "y": "z"}, f"{what}: write_json/read_json")
    storage.append_line("contract/files/log.jsonl", "one")
    storage.append_line("contract/files/log.jsonl", "two\n")
    _require(storage.read_bytes("contract/files/log.jsonl") == b"one\ntwo\n",
             f"{what}: append_line gave {storage.read_bytes('contract/files/log.jsonl')!r}, not b'one\\ntwo\\n'")
    storage.write_bytes("contract/files/sub/deep.txt", b"deep")
    listed = storage.list("contract/files")
    expected = ["contract/files/a.bin", "contract/files/b.json", "contract/files/log.jsonl", "contract/files/sub"]
    _require(listed == expected, f"{what}: list('contract/files') = {listed}, expected {expected}")
    _require(storage.list("contract") == ["contract/atomic.bin", "contract/files"],
             f"{what}: list('contract') = {storage.list('contract')} (staging leftovers must not show)")
    _require(storage.list("contract/nothing-here") == [], f"{what}: list of a missing folder is not []")
    storage.delete("contract/files/a.bin")
    _require(not storage.exists("contract/files/a.bin"), f"{what}: delete() left the file")
    storage.delete("contract/files/sub")
    _require(not storage.exists("contract/files/sub/deep.txt"), f"{what}: delete() of a folder left its files")
    storage.delete("contract/files/never-written")
    _require(isinstance(storage.path("contract/files/b.json"), os.PathLike), f"{what}: path() is not a local path")

    with storage.staging_dir() as tmp:
        tmp = Path(tmp)
        _require(tmp.is_dir() and not any(tmp.iterdir()), f"{what}: staging_dir() is not a fresh empty folder")
        (tmp / "weights.bin").write_bytes(b"\x00\x01" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text('{"a": 1}')
        ref = storage.put_artifact("contract", tmp)
        twin = storage.put_artifact("contract", tmp)
    _require(not tmp.exists(), f"{what}: staging_dir() folder still exists after the block")
    _require(re.fullmatch(r"[0-9a-f]{64}", str(ref.sha256)) and ref.kind == "contract" and ref.size_bytes == 208,
             f"{what}: put_artifact returned {ref!r} (want a 64-hex sha256, kind 'contract', 208 bytes)")
    _require((twin.uri, twin.sha256) == (ref.uri, ref.sha256), f"{what}: equal content gave another artifact")
    _require(storage.artifact(ref.uri) == ref, f"{what}: artifact({ref.uri!r}) = {storage.artifact(ref.uri)!r} != {ref!r}")
    _require(storage.verify(ref), f"{what}: verify() refuses a stored artifact")
    _require(not storage.verify(replace(ref, sha256="0" * 64)), f"{what}: verify() accepts a wrong sha256")
    folder = Path(storage.resolve(ref.uri))
    _require((folder / "weights.bin").read_bytes() == b"\x00\x01" * 100
             and (folder / "sub" / "config.json").read_text() == '{"a": 1}',
             f"{what}: resolve({ref.uri!r}) does not hold the stored files")
    art_key = storage.key_of(ref.uri)
    _require(storage.exists(art_key), f"{what}: key_of({ref.uri!r}) = {art_key!r}, which does not exist")
    _require(storage.key_of(storage.uri(art_key)) == art_key, f"{what}: key_of(uri(key)) != key for {art_key!r}")
    _raises(lambda: storage.resolve(ref.uri.replace(ref.sha256, "f" * 64)), (NotFound,),
            f"{what}: resolve() of an artifact never stored")

    with storage.staging_dir() as tmp:
        single = Path(tmp) / "only.txt"
        single.write_text("just one file")
        one = storage.put_artifact("contract", single)
        moved_src = Path(tmp) / "moved"
        moved_src.mkdir()
        (moved_src / "m.txt").write_text("moved")
        moved = storage.put_artifact("contract", moved_src, move=True)
    _require((Path(storage.resolve(one.uri)) / "only.txt").read_text() == "just one file",
             f"{what}: a single-file artifact does not hold that file under its name")
    _require((Path(storage.resolve(moved.uri)) / "m.txt").read_text() == "moved" and storage.verify(moved),
             f"{what}: put_artifact(move=True) lost the content")
    _require(isinstance(storage.clean_staging(older_than_seconds=3600), int), f"{what}: clean_staging() is not a count")

    for reopened_root in (root, storage.root_uri):
        other = factory(reopened_root)
        _require(other.read_json("contract/files/b.json") == {"x": [1, 2], "y": "z"} and other.verify(ref),
                 f"{what}: factory({reopened_root!r}) does not see the same data")


# --- training executors -----------------------------------------------------------------------
def check_training_executor(executor: Any, tmp_dir: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
    """A TrainingExecutor and its handles keep their contracts.

    - A `python -c` job gets the service environment plus `env`, its stdout and stderr land in
      log_path, and wait()/poll() give exit code 0; a job exiting 3 gives 3.
    - A running job: poll() is None, wait(short timeout) is None, cancel() returns at once and
      the job ends with a non-zero code within `timeout`; cancel() again is harmless.
    """
    what = f"training executor {_label(executor)}"
    check_conforms(executor, c.TrainingExecutor, what)
    logs = Path(tmp_dir) / "executor-logs"
    logs.mkdir(parents=True, exist_ok=True)
    code = ("import os, sys; print('contract-stdout'); print('contract-stderr', file=sys.stderr); "
            "print('env=' + os.environ['TUNESMITH_CONTRACT_ENV'])")
    handle = executor.submit("contract-ok", [sys.executable, "-c", code], {"TUNESMITH_CONTRACT_ENV": "passed"},
                             str(logs / "ok.log"))
    check_conforms(handle, c.ExecutionHandle, f"{what}: the handle submit() returned")
    rc = handle.wait(timeout)
    _require(rc == 0, f"{what}: a job that succeeds gave wait() = {rc!r}, not 0")
    _require(handle.poll() == 0, f"{what}: poll() after the job ended is {handle.poll()!r}, not 0")
    log = (logs / "ok.log").read_text(errors="replace") if (logs / "ok.log").exists() else ""
    for needle in ("contract-stdout", "contract-stderr", "env=passed"):
        _require(needle in log, f"{what}: {needle!r} is missing from the job's log: {log!r}")

    failing = executor.submit("contract-fail", [sys.executable, "-c", "import sys; sys.exit(3)"], {},
                              str(logs / "fail.log"))
    rc = failing.wait(timeout)
    _require(rc == 3, f"{what}: a job exiting 3 gave wait() = {rc!r}")

    running = executor.submit("contract-cancel", [sys.executable, "-c", "import time; time.sleep(120)"], {},
                              str(logs / "cancel.log"))
    try:
        _require(running.poll() is None, f"{what}: poll() of a running job is {running.poll()!r}, not None")
        _require(running.wait(0.2) is None, f"{what}: wait(0.2) of a running job did not time out with None")
        t0 = time.monotonic()
        running.cancel()
        _require(time.monotonic() - t0 < 5, f"{what}: cancel() did not return at once")
        rc = running.wait(timeout)
        _require(rc is not None, f"{what}: a cancelled job still runs after {timeout:.0f} s")
        _require(rc != 0, f"{what}: a cancelled job reported success (exit code 0)")
        running.cancel()  # harmless after the end
    finally:
        if running.poll() is None:
            running.cancel()


# --- inference backends -----------------------------------------------------------------------
CONTRACT_PROMPTS: list[c.PromptInput] = [
    "Hello there, how are you",
    [{"role": "user", "content": "How do I change my PIN number?"}],
    "zero one two three four five six seven eight nine ten",
]


def check_inference_backend(backend: Any, model_dir: str, *, adapter_dir: str | None = None,
                            dtype: str = "") -> None:
    """An InferenceBackend and the LoadedModel it loads keep their contracts.

    - available() is (bool, non-empty str); unavailable backends are skipped with that reason.
    - load(model_dir) satisfies LoadedModel: backend == backend.name, dtype a non-empty str.
    - generate(): one Generation per prompt (text and chat prompts), token counts within
      max_new_tokens, known finish reasons; batched greedy results equal one-by-one results.
    - stream(): satisfies GenerationStream; generation is None before the end, then matches
      generate(); its deltas join to generate()'s text; closing a stream early leaves the model
      working; close() again is harmless.
    - Bad sampling is InvalidArgument; an unknown adapter is NotFound.
    - With `adapter_dir` (a peft LoRA folder for this model, e.g. tiny_lora_adapter): the model
      is loaded with enable_adapters; the adapter changes the output, stream() and generate()
      agree on it, adapter=None still gives the base output, and unload_adapter() makes the name
      unknown (NotFound, also for a second unload).
    - After close(), generate() raises FailedPrecondition; close() again is harmless.
    """
    what = f"inference backend {_label(backend)}"
    check_conforms(backend, c.InferenceBackend, what)
    ok, reason = backend.available()
    _require(isinstance(ok, bool) and isinstance(reason, str) and reason,
             f"{what}: available() returned {(ok, reason)!r}, not (bool, non-empty reason)")
    if not ok:
        _skip(f"inference backend {backend.name!r} is not usable here: {reason}")
    model = backend.load(model_dir, dtype=dtype, enable_adapters=adapter_dir is not None)
    try:
        mwhat = f"{what}: the model it loaded"
        check_conforms(model, c.LoadedModel, mwhat)
        _require(model.backend == backend.name, f"{mwhat}: backend is {model.backend!r}, not {backend.name!r}")
        _require(isinstance(model.dtype, str) and model.dtype, f"{mwhat}: dtype {model.dtype!r} is not a dtype name")
        sampling = c.Sampling(max_new_tokens=6)
        gens = model.generate(list(CONTRACT_PROMPTS), sampling)
        _require(isinstance(gens, list) and len(gens) == len(CONTRACT_PROMPTS),
                 f"{mwhat}: generate() of {len(CONTRACT_PROMPTS)} prompts returned {gens!r}")
        for g in gens:
            _require(isinstance(g.text, str) and isinstance(g.prompt_tokens, int) and g.prompt_tokens > 0
                     and isinstance(g.completion_tokens, int) and 0 <= g.completion_tokens <= 6
                     and g.finish_reason in c.FINISH_REASONS, f"{mwhat}: generate() gave {g!r}")
        base_texts = [g.text for g in gens]
        one_by_one = [model.generate([p], sampling)[0].text for p in CONTRACT_PROMPTS]
        _require(one_by_one == base_texts, f"{mwhat}: batched greedy texts {base_texts} differ from one-by-one "
                                           f"texts {one_by_one}")

        stream = model.stream(CONTRACT_PROMPTS[1], sampling)
        check_conforms(stream, c.GenerationStream, f"{mwhat}: its stream")
        _require(stream.generation is None, f"{mwhat}: stream.generation is set before the stream ends")
        deltas = list(stream)
        _require(all(isinstance(d, str) for d in deltas), f"{mwhat}: stream yielded non-text deltas {deltas!r}")
        _require("".join(deltas) == gens[1].text,
                 f"{mwhat}: stream deltas join to {''.join(deltas)!r}, generate() gave {gens[1].text!r}")
        final = stream.generation
        _require(final is not None and final.text == gens[1].text
                 and final.completion_tokens == gens[1].completion_tokens
                 and final.finish_reason == gens[1].finish_reason,
                 f"{mwhat}: stream.generation after the end is {final!r}, generate() gave {gens[1]!r}")
        stream.close()
        early = model.stream(CONTRACT_PROMPTS[2], c.Sampling(max_new_tokens=64))
        next(iter(early), None)
        early.close()
        early.close()
        _require(model.generate([CONTRACT_PROMPTS[0]], sampling)[0].text == base_texts[0],
                 f"{mwhat}: after closing a stream early the model answers differently")

        exc = _raises(lambda: model.generate([CONTRACT_PROMPTS[0]], c.Sampling(max_new_tokens=0)),
                      (InvalidArgument,), f"{mwhat}: generate() with max_new_tokens=0")
        _require(exc.field and "max_new_tokens" in exc.field, f"{mwhat}: the bad sampling error names {exc.field!r}")
        _raises(lambda: model.generate([CONTRACT_PROMPTS[0]], sampling, adapter="no-such-adapter"), (NotFound,),
                f"{mwhat}: generate() with an unknown adapter")

        if adapter_dir is not None:
            model.load_adapter("contract", str(adapter_dir))
            tuned = [g.text for g in model.generate(list(CONTRACT_PROMPTS), sampling, adapter="contract")]
            _require(tuned != base_texts, f"{mwhat}: a strong random adapter did not change the output {tuned}")
            joined = "".join(model.stream(CONTRACT_PROMPTS[0], sampling, adapter="contract"))
            _require(joined == tuned[0], f"{mwhat}: stream(adapter=...) gave {joined!r}, generate() {tuned[0]!r}")
            _require([g.text for g in model.generate(list(CONTRACT_PROMPTS), sampling)] == base_texts,
                     f"{mwhat}: adapter=None no longer gives the base model's output")
            model.unload_adapter("contract")
            _raises(lambda: model.generate([CONTRACT_PROMPTS[0]], sampling, adapter="contract"), (NotFound,),
                    f"{mwhat}: generate() with an unloaded adapter")
            _raises(lambda: model.unload_adapter("contract"), (NotFound,), f"{mwhat}: unload_adapter() twice")
    finally:
        model.close()
    model.close()
    _raises(lambda: model.generate([CONTRACT_PROMPTS[0]], c.Sampling(max_new_tokens=2)), (FailedPrecondition,),
            f"{what}: generate() after close()")


# --- running a registry's plugins through the checks -------------------------------------------
@dataclass(frozen=True)
class PluginCase:
    """One registration: kind, registered name, the object, and the plugin that registered it."""

    kind: str
    name: str
    obj: Any
    plugin: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


#: Registry kind -> the check check_plugin runs for it.
# --- error checks, judges, judge templates ----------------------------------------------------
#: Predictions no error check may crash on (empty, whitespace, unicode, JSON, huge, repeated).
ODD_PREDICTIONS = ("", "   ", "\n\n", "card_arrival", "Card_Arival.", "ça va? 你好 🙂", '{"a": 1}', "{not json",
                   "[1, 2]", "null", "word " * 2000, "ab" * 500, "```json\n{\"a\": 1}\n```")
ODD_REFERENCES = ("card_arrival", '{"a": 1, "b": {"c": 2}}', "", "A long reference sentence of several words.")


def check_error_check(check: Any) -> None:
    """An ErrorCheck: conforms; declares at least one category, each a non-empty string; for
    odd predictions against several references (with and without a label set, cut or not)
    classify() returns None or a declared category, never raises, and is deterministic."""
    what = f"error check {_label(check)}"
    check_conforms(check, c.ErrorCheck, what)
    cats = tuple(check.categories)
    _require(cats and all(isinstance(x, str) and x for x in cats), f"{what}: categories must be non-empty strings")
    for ref in ODD_REFERENCES:
        for pred in ODD_PREDICTIONS:
            for labels, reason in (((), "stop"), (("card_arrival", "age_limit"), "length")):
                row = c.EvalRow(prompt="p", reference=ref, prediction=pred, finish_reason=reason, labels=labels,
                                max_new_tokens=16)
                try:
                    got = check.classify(row)
                except Exception as exc:  # noqa: BLE001 - any exception breaks the contract
                    raise ContractViolation(f"{what}: classify raised {exc!r} for prediction {pred[:40]!r}") from exc
                _require(got is None or got in cats, f"{what}: returned {got!r}, not one of {cats} or None")
                _require(check.classify(row) == got, f"{what}: not deterministic for {pred[:40]!r}")


def check_judge(judge: Any) -> None:
    """A rule Judge: conforms; returns a verdict in VERDICTS for odd answer pairs; deterministic;
    identical answers tie."""
    what = f"judge {_label(judge)}"
    check_conforms(judge, c.Judge, what)
    for a, b in itertools.product(ODD_PREDICTIONS[:8], repeat=2):
        got = judge.compare("prompt", a, b, reference="card_arrival")
        _require(got in c.VERDICTS, f"{what}: verdict {got!r} not in {sorted(c.VERDICTS)}")
        _require(judge.compare("prompt", a, b, reference="card_arrival") == got, f"{what}: not deterministic")
        if a == b:
            _require(got == "tie", f"{what}: identical answers must tie, got {got!r}")


def check_judge_template(template: Any) -> None:
    """A JudgeTemplate: conforms; render() includes the prompt and both answers; parse() maps
    any reply to a verdict in VERDICTS (nonsense and empty replies included)."""
    what = f"judge template {_label(template)}"
    check_conforms(template, c.JudgeTemplate, what)
    text = template.render("What is 2 + 2?", "ANSWER-ONE-4", "ANSWER-TWO-5", rubric="be right", reference="4")
    _require(isinstance(text, str), f"{what}: render must return a string")
    for part in ("What is 2 + 2?", "ANSWER-ONE-4", "ANSWER-TWO-5"):
        _require(part in text, f"{what}: the rendered prompt lacks {part!r}")
    for reply in ("", "no idea", *ODD_PREDICTIONS[:6]):
        got = template.parse(reply)
        _require(got in c.VERDICTS, f"{what}: parse({reply[:30]!r}) gave {got!r}, not a verdict")


CHECKS: dict[str, Callable[..., None]] = {
    "peft_methods": check_peft_method,
    "templates": check_template,
    "benchmarks": check_benchmark,
    "storage_backends": check_storage_backend,
    "inference_backends": check_inference_backend,
    "training_executors": check_training_executor,
    "training_recipes": check_training_recipe,
    "error_checks": check_error_check,
    "judges": check_judge,
    "judge_templates": check_judge_template,
}


def registered_cases(registry: Any = None, *, plugin: str | Iterable[str] | None = None,
                     kinds: Iterable[str] | None = None) -> list[PluginCase]:
    """Every registration of `registry` (default: a fresh PluginRegistry(), entry points
    included), optionally only those of `plugin` (plugin names) and `kinds`."""
    if registry is None:
        from tunesmith.core.plugins import PluginRegistry

        registry = PluginRegistry()
    plugins = None if plugin is None else ({plugin} if isinstance(plugin, str) else set(plugin))
    cases = []
    for kind in (list(kinds) if kinds is not None else list(CHECKS)):
        for name in registry.names(kind):
            owner = registry.owner(kind, name)
            if plugins is None or owner in plugins:
                cases.append(PluginCase(kind, name, registry.get(kind, name), owner))
    return cases


def plugin_cases(registry: Any = None, *, plugin: str | Iterable[str] | None = None,
                 kinds: Iterable[str] | None = None) -> list[Any]:
    """registered_cases() as pytest params with readable ids ("templates:chat"), for
    @pytest.mark.parametrize("case", plugin_cases(plugin="acme"))."""
    import pytest

    return [pytest.param(case, id=str(case)) for case in registered_cases(registry, plugin=plugin, kinds=kinds)]


def check_plugin(case: PluginCase, tmp_path: str | os.PathLike[str], *, model_dir: str | None = None,
                 model_factory: Callable[[], Any] | None = None, tokenizer: Any = None,
                 schemas: Iterable[str] | None = None, adapter: bool = True,
                 recipe_rows: tuple[Sequence[dict], Sequence[dict]] | None = None) -> None:
    """Run the check for case.kind on case.obj.

    tmp_path: a scratch folder (storage roots, executor logs, adapters).
    model_dir: a small Hugging Face model folder for inference backends (skipped without one);
        with adapter=True a tiny_lora_adapter for it is built and checked too.
    model_factory: builds the model PEFT methods are applied to (default: from model_dir, else
        tiny_llama; see check_peft_method for quantized_base methods).
    tokenizer, schemas: for templates (see check_template).
    recipe_rows: (train, validation) rows with the recipe's row_fields, tokenisable by
        model_dir's tokenizer, for training recipes (skipped without them).
    Backends in SLOW_INFERENCE_BACKENDS are skipped unless TUNESMITH_CONTRACT_VLLM=1.
    """
    tmp = Path(tmp_path)
    if case.kind == "peft_methods":
        check_peft_method(case.obj, model_factory, model_dir=model_dir)
    elif case.kind == "templates":
        check_template(case.obj, schemas=schemas, tokenizer=tokenizer)
    elif case.kind == "benchmarks":
        check_benchmark(case.obj)
    elif case.kind == "error_checks":
        check_error_check(case.obj)
    elif case.kind == "judges":
        check_judge(case.obj)
    elif case.kind == "judge_templates":
        check_judge_template(case.obj)
    elif case.kind == "storage_backends":
        check_storage_backend(case.obj, str(tmp / f"storage-{case.name}"))
    elif case.kind == "training_executors":
        check_training_executor(case.obj, tmp / f"executor-{case.name}")
    elif case.kind == "inference_backends":
        if case.name in SLOW_INFERENCE_BACKENDS and os.environ.get(SLOW_BACKENDS_ENV) != "1":
            _skip(f"inference backend {case.name!r}: its engine start takes 30-60 s; "
                  f"set {SLOW_BACKENDS_ENV}=1 to run its contract checks")
        if model_dir is None:
            _skip(f"inference backend {case.name!r}: no model_dir given to check_plugin")
        adapter_dir = tiny_lora_adapter(model_dir, tmp / f"adapter-{case.name}") if adapter else None
        check_inference_backend(case.obj, model_dir, adapter_dir=adapter_dir)
    elif case.kind == "training_recipes":
        if model_dir is None or not recipe_rows:
            _skip(f"training recipe {case.name!r}: check_plugin needs model_dir and recipe_rows "
                  "(train, validation) for it")
        check_training_recipe(case.obj, model_dir, recipe_rows[0], recipe_rows[1], tmp / f"recipe-{case.name}")
    else:
        raise ContractViolation(f"no contract check for registry kind {case.kind!r}")
