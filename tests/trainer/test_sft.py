"""The SFT loop on a real (tiny, random-weight) Llama model: nothing under test is mocked."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tunesmith.core.errors import InvalidArgument  # noqa: E402

from .conftest import make_rows  # noqa: E402

from tunesmith.trainer.hyperparameters import resolve as resolve_hp  # noqa: E402
from tunesmith.trainer.loop import ThreadTuner, TrainingCancelled, lr_factor  # noqa: E402
from tunesmith.trainer.sft import (  # noqa: E402
    IGNORE_INDEX, LossComputer, collate, encode_rows, length_grouped_batches, train_sft)
from tunesmith_builtin.peft_lora import LoraMethod  # noqa: E402


# --- tokenisation, masking, collation -----------------------------------------------------
def test_completion_only_labels_mask_exactly_prompt_and_padding(sft_tokenizer):
    tok = sft_tokenizer
    rows = [{"prompt": "Message: I lost my card\nIntent:", "completion": " lost_or_stolen_card"},
            {"prompt": "Message: how do I change my PIN please, it is urgent\nIntent:", "completion": " change_pin"}]
    ex = encode_rows(tok, rows, max_seq_length=512)
    pad = tok.eos_token_id
    batch = collate(ex, pad_token_id=pad)
    width = batch["input_ids"].shape[1]
    for i, row in enumerate(rows):
        p = tok(row["prompt"])["input_ids"]
        c = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n_pad = width - len(p) - len(c)
        # left padding, then prompt, then completion + EOS
        assert batch["input_ids"][i].tolist() == [pad] * n_pad + p + c
        assert batch["attention_mask"][i].tolist() == [0] * n_pad + [1] * (len(p) + len(c))
        assert batch["labels"][i].tolist() == [IGNORE_INDEX] * (n_pad + len(p)) + c
        # positions count real tokens only, so left padding does not shift them
        assert batch["position_ids"][i, n_pad:].tolist() == list(range(len(p) + len(c)))
    assert batch["label_span"] == max(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) + 1
                                      for r in rows)
    # The two rows differ in length, so one of them really is padded.
    assert (batch["attention_mask"] == 0).any()


def test_full_sequence_loss_labels_every_real_token_but_each_rows_first(sft_tokenizer):
    """Every real token is a label except a row's first: with left padding, the position before
    it is padding, so nothing predicts it (counting it would train on pad -> token)."""
    rows = make_rows(3)
    ex = encode_rows(sft_tokenizer, rows, 512, completion_only_loss=False)
    batch = collate(ex, sft_tokenizer.eos_token_id)
    real = batch["attention_mask"].bool()
    first = real & ~torch.cat([torch.zeros_like(real[:, :1]), real[:, :-1]], dim=1)
    assert first.sum() == len(rows)
    assert (batch["labels"][real & ~first] == batch["input_ids"][real & ~first]).all()
    assert (batch["labels"][first | ~real] == IGNORE_INDEX).all()
    assert int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) == sum(len(e.input_ids) - 1 for e in ex)


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_completion(sft_tokenizer):
    tok = sft_tokenizer
    row = {"prompt": "Message: " + "my card has not come in the post yet " * 6 + "\nIntent:",
           "completion": " card_arrival"}
    c = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    p = tok(row["prompt"])["input_ids"]
    (e,) = encode_rows(tok, [row], max_seq_length=len(c) + 5)
    assert e.truncated and len(e.input_ids) == len(c) + 5
    assert e.input_ids == p[-5:] + c
    (short,) = encode_rows(tok, [row], max_seq_length=512)
    assert not short.truncated


def test_length_grouped_batches_are_seeded_partitions_with_little_padding():
    lengths = [5 + (i * 37) % 60 for i in range(100)]
    a = length_grouped_batches(lengths, 8, seed=1)
    assert a == length_grouped_batches(lengths, 8, seed=1)
    assert a != length_grouped_batches(lengths, 8, seed=2)
    assert sorted(i for b in a for i in b) == list(range(100))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in a)
    assert padded - sum(lengths) < 0.1 * sum(lengths)


def test_lr_schedules():
    assert lr_factor(0, 10, 0, "linear") == 1.0
    assert lr_factor(5, 10, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(0, 10, 2, "cosine") == 0.0 and lr_factor(1, 10, 2, "cosine") == 0.5
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(9, 10, 0, "constant") == 1.0
    with pytest.raises(InvalidArgument) as info:
        resolve_hp({"lr_scheduler": "bogus"})
    assert info.value.field == "hyperparameters.lr_scheduler"
    with pytest.raises(InvalidArgument) as info:
        resolve_hp({"batch_size": 0})
    assert info.value.field == "hyperparameters.batch_size"
    # protobuf's JSON form sends int64 as strings; "" and None mean the default
    hp = resolve_hp({"max_steps": "12", "seed": "3", "lr_scheduler": "", "dtype": None, "learning_rate": 1e-3})
    assert hp["max_steps"] == 12 and hp["seed"] == 3 and hp["lr_scheduler"] == "linear" and hp["dtype"] == "auto"


def test_thread_tuner_fixed_and_auto():
    before = torch.get_num_threads()
    try:
        logs: list[str] = []
        ThreadTuner(1, logs.append).tune(0.0)
        assert torch.get_num_threads() == 1 and logs == []
        tuner = ThreadTuner(0, logs.append)
        tuner.tune(0.0)
        assert tuner.current in tuner.candidates() and torch.get_num_threads() == tuner.current
        assert tuner.max in tuner.candidates() and 1 in tuner.candidates()
        if tuner.max > 1:
            assert len(logs) == 1 and "CPU threads" in logs[0]
            tuner.tune(1.0)  # too soon to check again
            assert len(logs) == 1 and tuner.last_check == 0.0
    finally:
        torch.set_num_threads(before)


def test_fast_loss_on_left_padded_batch_equals_the_models_own_loss(sft_model_dir, sft_tokenizer):
    """The loop computes logits only for the labelled tail of a left-padded batch; that must give
    exactly the loss the model computes on each unpadded row with full logits."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = LoraMethod().apply(AutoModelForCausalLM.from_pretrained(sft_model_dir), {"rank": 4})
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    rows = make_rows(6, seed=7)
    ex = encode_rows(sft_tokenizer, rows, 512)
    batch = collate(ex, sft_tokenizer.eos_token_id)
    assert batch["label_span"] + 1 < batch["input_ids"].shape[1]  # the fast path is taken
    fast = LossComputer(model)
    assert fast.supports_keep
    with torch.no_grad():
        loss_sum, n = fast(model, batch, "cpu")
        ref_sum, ref_n = 0.0, 0
        for e in ex:
            labels = torch.tensor([e.labels])
            out = model(input_ids=torch.tensor([e.input_ids]), labels=labels)
            k = int((labels[:, 1:] != IGNORE_INDEX).sum())
            ref_sum += float(out.loss) * k
            ref_n += k
    assert n == ref_n
    assert float(loss_sum) / n == pytest.approx(ref_sum / ref_n, rel=1e-5)


# --- the loop -----------------------------------------------------------------------------
def test_training_lowers_the_loss_emits_events_and_saves_a_loadable_adapter(sft_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    events: list[dict] = []
    result = train_sft(
        model_path=sft_model_dir, train_rows=make_rows(40), validation_rows=make_rows(8, seed=99),
        method=LoraMethod(), method_options={"rank": 8}, output_dir=tmp_path,
        hp={"epochs": 4, "batch_size": 4, "learning_rate": 5e-3, "seed": 0, "eval_every_steps": 10},
        on_event=events.append)

    progress = [e for e in events if e["type"] == "progress"]
    steps = [e["step"] for e in progress]
    assert steps[0] == 1 and all(b > a for a, b in zip(steps, steps[1:]))
    assert steps[-1] == result["steps"] == 40 and progress[-1]["total_steps"] == 40
    for e in progress:
        assert e["phase"] == "train" and e["loss"] > 0 and e["tokens_per_second"] > 0
        assert set(e) >= {"epoch", "learning_rate", "eta_seconds", "tokens_seen", "elapsed_seconds", "grad_norm"}
    assert progress[-1]["loss"] < progress[0]["loss"]
    assert result["final_train_loss"] < result["first_train_loss"]
    assert progress[-1]["epoch"] == pytest.approx(4.0)

    vals = [e for e in events if e["type"] == "metrics" and e["name"] == "validation"]
    assert [v["values"]["step"] for v in vals] == [10, 20, 30, 40]
    assert result["best_validation_loss"] == min(v["values"]["loss"] for v in vals)
    assert vals[-1]["values"]["loss"] < vals[0]["values"]["loss"]
    assert any(e["type"] == "log" for e in events)

    assert 0 < result["trainable_parameters"] < result["total_parameters"]
    assert result["train_tokens"] > 0 and result["tokens_per_second"] > 0 and result["peak_memory_bytes"] > 0
    assert result["stopped_early"] is False and result["truncated_rows"] == 0

    adapter = tmp_path / "output"
    assert result["adapter_dir"] == str(adapter)
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "tokenizer.json").exists()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_model_dir), str(adapter))
    b_weights = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert b_weights and any(p.abs().sum() > 0 for p in b_weights)  # trained, not the zero init


def test_should_stop_raises_training_cancelled(sft_model_dir, tmp_path):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    events: list[dict] = []
    with pytest.raises(TrainingCancelled) as info:
        train_sft(model_path=sft_model_dir, train_rows=make_rows(40), validation_rows=None,
                  method=LoraMethod(), method_options={"rank": 4}, output_dir=tmp_path,
                  hp={"epochs": 3, "batch_size": 4}, on_event=events.append, should_stop=should_stop)
    assert info.value.step == 3
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3]
    assert not (tmp_path / "adapter").exists()


def test_early_stopping_when_validation_stops_improving(sft_model_dir, tmp_path):
    """Validation rows carry the opposite labels to training: fitting the training data makes the
    validation loss rise, so patience 2 stops training long before the 60 planned steps."""
    train = make_rows(24, seed=3)
    swap = {"card_arrival": "change_pin", "change_pin": "card_arrival",
            "lost_or_stolen_card": "exchange_rate", "exchange_rate": "lost_or_stolen_card"}
    val = [{"prompt": r["prompt"], "completion": " " + swap[r["completion"].strip()]} for r in train[:8]]
    events: list[dict] = []
    result = train_sft(model_path=sft_model_dir, train_rows=train, validation_rows=val,
                       method=LoraMethod(), method_options={"rank": 8}, output_dir=tmp_path,
                       hp={"epochs": 10, "batch_size": 4, "learning_rate": 1e-2, "eval_every_steps": 3,
                           "early_stopping_patience": 2},
                       on_event=events.append)
    assert result["stopped_early"] is True
    assert result["steps"] < 60
    vals = [e["values"]["loss"] for e in events if e["type"] == "metrics"]
    assert vals[-1] > result["best_validation_loss"] and vals[-2] > result["best_validation_loss"]
    assert (tmp_path / "output" / "adapter_config.json").exists()
    # The saved adapter is the best one: its validation loss is the best seen, not the last.
    assert result["best_step"] < result["steps"]
    assert result["final_metrics"]["loss"] == pytest.approx(result["best_validation_loss"], rel=1e-4)
    assert any("restored the best weights" in e.get("message", "") for e in events if e["type"] == "log")
