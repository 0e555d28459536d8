"""Packing (tunesmith.trainer.packing): packed rows give the same loss, logits and gradients as
the same examples run one by one, for SDPA and eager attention on a tiny Llama."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from tests.trainer.conftest import build_model, build_tokenizer, make_rows  # noqa: E402
from tunesmith.trainer.packing import collate_packed, pack_examples, packed_loss_sum, packing_stats  # noqa: E402
from tunesmith.trainer.sft import IGNORE_INDEX, EncodedExample, encode_rows  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def examples(tok):
    # prompt-only labels for most rows, full-sequence labels for a few (first token labelled too)
    ex = encode_rows(tok, make_rows(9, seed=3), 256)
    ex += encode_rows(tok, make_rows(3, seed=4), 256, completion_only_loss=False)
    return ex


def _model(tok, attn: str):
    m = build_model(len(tok), tok.eos_token_id, seed=1)
    m.config._attn_implementation = attn
    m.eval()
    return m.double()  # float64: the comparisons test the masking, not float32 summation order


def _unpacked(model, e: EncodedExample):
    ids = torch.tensor([e.input_ids])
    logits = model(input_ids=ids, use_cache=False).logits[0]
    labels = torch.tensor(e.labels)
    loss = F.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, logits, int((labels[1:] != IGNORE_INDEX).sum())


def _rows(examples):
    # 3 rows of uneven fill, so there is padding and several examples per row; the last two
    # rows mix in full-sequence-label examples (9-11), whose first token carries a label
    assert len(examples) == 12
    return [[0, 1, 2, 3], [4, 5, 9], [6, 7, 8, 10, 11]]


def _packed_forward(model, batch, **over):
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "position_ids": batch["position_ids"], "use_cache": False}
    kwargs.update(over)
    logits = model(**kwargs).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, logits


def test_collate_packed_layout(examples, tok):
    rows = _rows(examples)
    b = collate_packed(examples, rows, tok.eos_token_id, dtype=torch.float64)
    n_rows, width = b["input_ids"].shape
    assert (n_rows, width) == (3, max(sum(len(examples[i].input_ids) for i in r) for r in rows))
    assert b["attention_mask"].shape == (3, 1, width, width) and b["attention_mask"].dtype == torch.float64
    big = torch.finfo(torch.float64).min
    for r, row in enumerate(rows):
        at = 0
        for slot, i in enumerate(row):
            k = len(examples[i].input_ids)
            assert b["input_ids"][r, at:at + k].tolist() == examples[i].input_ids
            assert b["position_ids"][r, at:at + k].tolist() == list(range(k))
            assert b["labels"][r, at] == IGNORE_INDEX  # first token of every example
            assert b["labels"][r, at + 1:at + k].tolist() == examples[i].labels[1:]
            assert (b["segment_ids"][r, at:at + k] == slot).all()
            block = b["attention_mask"][r, 0, at:at + k]
            assert (block[:, at:at + k] == torch.zeros(k, k, dtype=torch.float64).masked_fill(
                ~torch.ones(k, k, dtype=torch.bool).tril(), big)).all()
            assert (block[:, :at] == big).all() and (block[:, at + k:] == big).all()
            at += k
        # padding: right side, ignored, attends to itself only
        assert (b["labels"][r, at:] == IGNORE_INDEX).all() and (b["segment_ids"][r, at:] == -1).all()
        for p in range(at, width):
            assert (b["attention_mask"][r, 0, p] == 0).sum() == 1 and b["attention_mask"][r, 0, p, p] == 0
    assert b["n_tokens"] == sum(len(e.input_ids) for e in examples)
    assert b["n_items"] == sum(sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) for e in examples)
    assert b["n_items"] > 0


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked_loss_and_logits(examples, tok, attn):
    model = _model(tok, attn)
    rows = _rows(examples)
    b = collate_packed(examples, rows, tok.eos_token_id, dtype=torch.float64)
    with torch.no_grad():
        ref = [_unpacked(model, e) for e in examples]
        loss, logits = _packed_forward(model, b)
        ks_loss, ks_n = packed_loss_sum(model, b)
    want = sum(float(r[0]) for r in ref)
    assert b["n_items"] == sum(r[2] for r in ref) == ks_n
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(ks_loss) == pytest.approx(want, rel=1e-6)  # logits_to_keep path
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            k = len(examples[i].input_ids)
            torch.testing.assert_close(logits[r, at:at + k], ref[i][1], rtol=1e-6, atol=1e-8)
            at += k


def test_float32_mask_matches_too(examples, tok):
    """The default (float32) mask with a float32 model: same loss within float32 noise."""
    model = build_model(len(tok), tok.eos_token_id, seed=1).eval()
    b = collate_packed(examples, _rows(examples), tok.eos_token_id)
    with torch.no_grad():
        want = sum(float(_unpacked(model, e)[0]) for e in examples)
        got, _ = packed_loss_sum(model, b)
    assert float(got) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_negative_control_plain_mask_differs(examples, tok, attn):
    """All-ones 2D mask and continuous position ids (a packed row run naively): tokens see the
    earlier examples, so loss and logits change. Proves the equivalence test above can fail."""
    model = _model(tok, attn)
    b = collate_packed(examples, _rows(examples), tok.eos_token_id, dtype=torch.float64)
    ids = b["input_ids"]
    continuous = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        want = sum(float(_unpacked(model, e)[0]) for e in examples)
        good, good_logits = _packed_forward(model, b)
        plain, plain_logits = _packed_forward(model, b, attention_mask=torch.ones_like(ids), position_ids=continuous)
        mask_only, mask_only_logits = _packed_forward(model, b, attention_mask=torch.ones_like(ids))
        # RoPE is relative: under the block mask a constant offset per example changes nothing
        # (up to rounding), so it is the mask that keeps examples apart, not the position ids
        pos_only, _ = _packed_forward(model, b, position_ids=continuous)
    assert abs(float(good) - want) < 1e-9 * want
    for bad, bad_logits in ((plain, plain_logits), (mask_only, mask_only_logits)):
        assert abs(float(bad) - want) > 0.05  # the random tiny model: about 0.4 of ~800
        assert (bad_logits - good_logits).abs().max() > 0.1
    assert float(pos_only) == pytest.approx(want, rel=1e-6)


def test_bool_mask_is_wrong_under_eager_but_none_mask_works(examples, tok):
    """Why the mask is additive: eager adds the mask to the scores, so a bool 4D mask (fine for
    SDPA) is silently wrong there. And with attention_mask=None transformers infers the blocks
    from the position-id restarts itself (the alternative documented in packing's docstring)."""
    b = collate_packed(examples, _rows(examples), tok.eos_token_id, dtype=torch.float64)
    as_bool = b["attention_mask"] == 0
    for attn in ("sdpa", "eager"):
        model = _model(tok, attn)
        with torch.no_grad():
            want = sum(float(_unpacked(model, e)[0]) for e in examples)
            boolean, _ = _packed_forward(model, b, attention_mask=as_bool)
            inferred, _ = _packed_forward(model, b, attention_mask=None)
        assert float(inferred) == pytest.approx(want, rel=1e-9)
        if attn == "sdpa":
            assert float(boolean) == pytest.approx(want, rel=1e-9)
        else:
            assert abs(float(boolean) - want) > 0.05


@pytest.mark.parametrize("attn,dtype", [("sdpa", "float64"), ("eager", "float64"), ("sdpa", "float32")])
def test_gradients_match(examples, tok, attn, dtype):
    """d(summed loss / n_items)/d(every parameter): packed batch vs the examples one by one."""
    model = _model(tok, attn)
    if dtype == "float32":
        model.float()
    model.train()  # no dropout in this config; train mode as in training
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    b = collate_packed(examples, _rows(examples), tok.eos_token_id, dtype=getattr(torch, dtype))

    model.zero_grad()
    loss, n = packed_loss_sum(model, b)
    (loss / n).backward()
    packed = {k: p.grad.clone() for k, p in named}

    model.zero_grad()
    total = 0
    for e in examples:
        l, _, k = _unpacked(model, e)
        (l / n).backward()
        total += k
    assert total == n
    # Relative to the tensor's largest gradient. float64 agrees to ~1e-15 in isolation, but run
    # after tests that change torch's thread count the embedding's gradient went past 1e-9 (the
    # reduction order changes). 1e-7 stays far below what a cross-example leak gives (~1e-1).
    tol = 1e-7 if dtype == "float64" else 1e-4
    for k, p in named:
        scale = float(p.grad.abs().max())
        assert scale > 0, k
        worst = float((packed[k] - p.grad).abs().max())
        assert worst <= tol * scale, f"{k}: max difference {worst:.3g}, {worst / scale:.3g} of its largest gradient"


def test_labels_work_with_the_models_own_loss(examples, tok):
    """Passing labels= to the model (its own shift, mean over n_items) gives sum / n_items."""
    model = _model(tok, "eager")
    b = collate_packed(examples, _rows(examples), tok.eos_token_id, dtype=torch.float64)
    with torch.no_grad():
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                    labels=b["labels"], use_cache=False)
        want = sum(float(_unpacked(model, e)[0]) for e in examples) / b["n_items"]
    assert float(out.loss) == pytest.approx(want, rel=1e-6)


# --- pack_examples ------------------------------------------------------------------------
def _random_lengths(n: int, seed: int, lo: int = 5, hi: int = 120) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def test_pack_examples_contract():
    lengths = _random_lengths(500, 0) + [300, 256, 1000]  # three at or over max_length
    max_length = 256
    rows = pack_examples(lengths, max_length, seed=1)
    assert rows == pack_examples(lengths, max_length, seed=1)  # deterministic
    flat = sorted(i for r in rows for i in r)
    assert flat == list(range(len(lengths)))  # every index exactly once
    for r in rows:
        total = sum(lengths[i] for i in r)
        assert total <= max_length or len(r) == 1
    assert sorted(len(r) for r in rows if sum(lengths[i] for i in r) > max_length) == [1, 1]
    other = pack_examples(lengths, max_length, seed=2)
    assert other != rows and sorted(i for r in other for i in r) == flat
    stats = packing_stats(lengths, rows, max_length)
    # lower bound on the rows: total tokens / max_length; best-fit decreasing gets close to it
    assert stats["fill_rate"] > 0.97, stats
    print(f"fill rate {stats['fill_rate']:.3f}, {stats['rows']} rows, {stats['examples_per_row']:.1f} examples/row")


def test_pack_examples_takes_encoded_examples_and_edge_cases(examples):
    rows = pack_examples(examples, 64, seed=0)
    lengths = [len(e.input_ids) for e in examples]
    assert rows == pack_examples(lengths, 64, seed=0)
    assert sorted(i for r in rows for i in r) == list(range(len(examples)))
    assert pack_examples([], 64, seed=0) == []
    assert pack_examples([64, 64], 64, seed=0) in ([[0], [1]], [[1], [0]])
    assert sorted(len(r) for r in pack_examples([32, 32, 32], 64, seed=0)) == [1, 2]
    with pytest.raises(ValueError):
        pack_examples([1], 0, seed=0)
    with pytest.raises(ValueError):
        collate_packed(examples, [[0], []], 0)


def test_the_sft_recipe_packs_about_batch_size_examples_per_batch(tok):
    """Packed batches carry about the examples an unpacked batch would, so a packed run takes
    about as many optimizer steps (and the LR schedule sees the same run length)."""
    from types import SimpleNamespace

    from tunesmith.trainer.hyperparameters import resolve
    from tunesmith_builtin.recipe_sft import SftRecipe

    rows = make_rows(96, seed=5)
    steps = {}
    for packing in (False, True):
        recipe = SftRecipe()
        h = resolve({"batch_size": 8, "max_seq_length": 128, "packing": packing})
        ctx = SimpleNamespace(hyperparameters=h, device="cpu", tokenizer=tok, options={},
                              method=SimpleNamespace(prompt_learning=False, name="lora"),
                              model=_model(tok, "sdpa"), log=lambda m: None)
        recipe.setup(ctx, rows, [])
        batches = recipe.train_batches(0, 0)
        steps[packing] = len(batches)
        assert sum(b["n_items"] for b in batches) == sum(SftRecipe._label_count(e) for e in recipe.train_ex)
    assert steps[False] == 12
    assert 0.5 * steps[False] <= steps[True] <= 1.5 * steps[False], steps
