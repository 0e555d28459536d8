"""Pairwise judging: the built-in judges and template, judge_all's orders and position bias,
ModelJudge's render/parse/batching, and three real tiny models ranked by the "shorter" rule."""
from __future__ import annotations

import itertools
import re

import pytest

from tunesmith.core.contracts import Judge, JudgeTemplate, Sampling
from tunesmith.core.plugins import PluginRegistry
from tunesmith.evaluator.elo import bradley_terry
from tunesmith.evaluator.judging import ModelJudge, Outcome, PairResult, judge_all, rule_compare

PROMPTS = ["Name a colour.", "What is 2+2?", "Say hi."]
ANSWERS = {
    "v1": ["red", "4", "hi"],
    "v2": ["blue, I think", "four", "hello there"],
    "v3": ["a shade of green, surely", "it is four, of course", "hello there, friend"],
}


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry(builtins=("tunesmith_builtin.judges", "tunesmith_builtin.judge_templates"),
                          entry_points=False)


def test_the_builtins_register_and_satisfy_their_contracts(registry):
    assert registry.names("judges") == ["longer", "reference_match", "shorter"]
    assert registry.names("judge_templates") == ["pairwise"]
    for name in registry.names("judges"):
        judge = registry.get("judges", name)
        assert isinstance(judge, Judge) and judge.name == name and judge.description
    template = registry.get("judge_templates", "pairwise")
    assert isinstance(template, JudgeTemplate) and template.name == "pairwise" and template.description


def test_reference_match(registry):
    judge = registry.get("judges", "reference_match")
    assert judge.compare("q", "  Paris ", "London", reference="paris") == "A"
    assert judge.compare("q", "London", "PARIS", reference="Paris") == "B"
    assert judge.compare("q", "Paris", "paris", reference="Paris") == "tie"  # both
    assert judge.compare("q", "Rome", "London", reference="Paris") == "tie"  # neither
    assert judge.compare("q", "", "London", reference="") == "tie"  # no reference: nothing to match


def test_shorter_and_longer(registry):
    shorter, longer = registry.get("judges", "shorter"), registry.get("judges", "longer")
    assert shorter.compare("q", "ok", "okay") == "A"
    assert shorter.compare("q", "okay", " ok ") == "B"  # whitespace does not count
    assert shorter.compare("q", "", "okay") == "B"  # an empty answer is no answer
    assert shorter.compare("q", "okay", "   ") == "A"
    assert shorter.compare("q", "abc", "xyz") == "tie" and shorter.compare("q", "", " ") == "tie"
    assert longer.compare("q", "ok", "okay") == "B" and longer.compare("q", "okay", "ok") == "A"
    assert longer.compare("q", "abc", "xyz") == "tie"
    for a, b in itertools.product(["", "a", "abc", "hello there"], repeat=2):
        assert shorter.compare("q", a, b) == shorter.compare("q", a, b)  # deterministic


def test_judge_all_covers_every_pair_prompt_and_order(registry):
    outcomes, results = judge_all(PROMPTS, ANSWERS, compare_many=rule_compare(registry.get("judges", "shorter")))
    assert len(outcomes) == 3 * 3 * 2 and len(results) == 3 * 3
    shown = {(o.prompt_index, o.first, o.second) for o in outcomes}
    for i in range(3):
        for a, b in itertools.combinations(ANSWERS, 2):
            assert (i, a, b) in shown and (i, b, a) in shown
    # a rule without position bias: both orders agree, and the shorter answer wins every pair
    assert all(r.consistent for r in results)
    for r in results:
        sa, sb = len(ANSWERS[r.a][r.prompt_index]), len(ANSWERS[r.b][r.prompt_index])
        assert r.winner == (r.a if sa < sb else r.b)
    # the swapped order's verdict is relative to the order shown
    first = next(o for o in outcomes if (o.prompt_index, o.first, o.second) == (0, "v1", "v2"))
    swapped = next(o for o in outcomes if (o.prompt_index, o.first, o.second) == (0, "v2", "v1"))
    assert (first.verdict, swapped.verdict) == ("A", "B")


def test_a_plain_compare_function_and_pairs_and_references(registry):
    judge = registry.get("judges", "reference_match")
    calls = []

    def compare(prompt, first, second, reference):
        calls.append((prompt, first, second, reference))
        return judge.compare(prompt, first, second, reference=reference)

    outcomes, results = judge_all(PROMPTS, ANSWERS, compare, references=["red", "four", "hi"], pairs=[("v1", "v2")])
    assert len(calls) == 3 * 2 and {(o.first, o.second) for o in outcomes} == {("v1", "v2"), ("v2", "v1")}
    assert [r.winner for r in results] == ["v1", "v2", "v1"]
    assert calls[0] == ("Name a colour.", "red", "blue, I think", "red")


def test_a_judge_that_always_says_A_is_all_ties_with_swapped_positions():
    def always_a(items):
        return ["A"] * len(items)

    outcomes, results = judge_all(PROMPTS, ANSWERS, compare_many=always_a)
    assert all(o.verdict == "A" for o in outcomes)
    assert all(r.winner is None and not r.consistent for r in results)
    ratings = bradley_terry(results, list(ANSWERS), resamples=0)
    assert max(r.rating for r in ratings) - min(r.rating for r in ratings) < 1e-6
    assert all(r.ties == 2 * 3 and r.wins == r.losses == 0 for r in ratings)

    _, unswapped = judge_all(PROMPTS, ANSWERS, compare_many=always_a, swap_positions=False)
    assert len(unswapped) == 9 and all(r.consistent and r.winner == r.a for r in unswapped)


def test_one_order_tie_and_one_order_win_is_inconsistent():
    # verdicts in judging order: first order "A", swapped order "tie"
    verdicts = iter(["A", "tie"])
    _, results = judge_all(["q"], {"x": ["1"], "y": ["2"]}, lambda *_: next(verdicts))
    assert results == [PairResult(0, "x", "y", None, False)]


def test_judge_all_refuses_bad_input():
    with pytest.raises(ValueError, match="exactly one"):
        judge_all(PROMPTS, ANSWERS)
    with pytest.raises(ValueError, match="2 answers for 3 prompts"):
        judge_all(PROMPTS, {"a": ["x", "y"], "b": ["x", "y", "z"]}, lambda *_: "tie")
    with pytest.raises(ValueError, match="not one of"):
        judge_all(PROMPTS, ANSWERS, lambda *_: "C")
    with pytest.raises(ValueError, match="verdicts for"):
        judge_all(PROMPTS, ANSWERS, compare_many=lambda items: ["tie"])
    with pytest.raises(ValueError, match="no answers"):
        judge_all(PROMPTS, ANSWERS, lambda *_: "tie", pairs=[("v1", "v9")])
    with pytest.raises(ValueError, match="references"):
        judge_all(PROMPTS, ANSWERS, lambda *_: "tie", references=["r"])


def test_outcome_winner():
    assert Outcome(0, "x", "y", "A").winner == "x"
    assert Outcome(0, "x", "y", "B").winner == "y"
    assert Outcome(0, "x", "y", "tie").winner is None


# --- the pairwise template and ModelJudge --------------------------------------------------------
def test_pairwise_render_has_every_part(registry):
    template = registry.get("judge_templates", "pairwise")
    text = template.render("What is the capital of France?", "Paris.", "Lyon.", rubric="Prefer correct answers.",
                           reference="Paris")
    for part in ("What is the capital of France?", "Paris.", "Lyon.", "Prefer correct answers.",
                 "[The Start of Reference Answer]\nParis", "[[A]]", "[[B]]", "[[C]]"):
        assert part in text
    assert text.index("Assistant A's Answer]\nParis.") < text.index("Assistant B's Answer]\nLyon.")
    plain = template.render("q", "x", "y")
    assert "Reference Answer" not in plain and "[Rubric]" in plain  # a default rubric


@pytest.mark.parametrize("reply, verdict", [
    ("[[A]]", "A"), ("Both are fine. [[B]]", "B"), ("[[C]]", "tie"),
    ("I could say [[A]] or [[B]]; my final verdict: [[B]]", "B"),
    ("Assistant B quotes [[B]] wrongly... final verdict: [[A]]", "A"),
    ("[[ B ]]", "B"), ("no verdict here", "tie"), ("[A] or [B]", "tie"), ("", "tie"),
])
def test_pairwise_parse_takes_the_last_marker(registry, reply, verdict):
    assert registry.get("judge_templates", "pairwise").parse(reply) == verdict


def _stand_in_judge_model(batches):
    """The judge model's stand-in: reads both answers from the rendered prompt and replies, MT-Bench
    style, with an explanation that mentions a marker and then its verdict (the shorter answer)."""
    def generate(prompts: list[str]) -> list[str]:
        batches.append(list(prompts))
        replies = []
        for text in prompts:
            a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End", text, re.DOTALL).group(1)
            b = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End", text, re.DOTALL).group(1)
            verdict = "[[A]]" if len(a) < len(b) else "[[B]]" if len(b) < len(a) else "[[C]]"
            replies.append(f"One might answer [[C]], but weighing brevity my final verdict is {verdict}")
        return replies
    return generate


def test_model_judge_renders_generates_in_batches_and_parses(registry):
    batches: list[list[str]] = []
    judge = ModelJudge(registry.get("judge_templates", "pairwise"), _stand_in_judge_model(batches),
                       rubric="Prefer the shorter answer.", batch_size=4)
    _, results = judge_all(PROMPTS, ANSWERS, compare_many=judge.compare_many)
    assert [len(b) for b in batches] == [4, 4, 4, 4, 2]  # 18 comparisons in batches of 4
    assert all("Prefer the shorter answer." in p for b in batches for p in b)
    # the same verdicts the "shorter" rule gives
    _, by_rule = judge_all(PROMPTS, ANSWERS, compare_many=rule_compare(registry.get("judges", "shorter")))
    assert results == by_rule
    assert judge.compare("q", "long answer", "short") == "B"
    with pytest.raises(ValueError, match="batch_size"):
        ModelJudge(registry.get("judge_templates", "pairwise"), lambda p: p, batch_size=0)


def test_model_judge_refuses_a_wrong_number_of_replies(registry):
    judge = ModelJudge(registry.get("judge_templates", "pairwise"), lambda prompts: ["[[A]]"])
    with pytest.raises(ValueError, match="1 replies for 2 prompts"):
        judge.compare_many([("q", "a", "b", ""), ("q", "b", "a", "")])


# --- three real tiny models ----------------------------------------------------------------------
def _tiny_version(tokenizer, folder, seed: int) -> str:
    """A tiny random Llama built from a config, its matrices redrawn at std 0.2 so it writes
    varied text (the stock init repeats one token), saved with the tokenizer."""
    import torch

    from tunesmith.testing.contracts import tiny_llama

    model = tiny_llama(vocab_size=len(tokenizer), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def test_three_tiny_model_versions_rank_as_the_shorter_rule_implies(registry, tiny_model_dir, tmp_path):
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    from tunesmith_builtin.inference_transformers import TransformersBackend

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(10)]
    answers = {}
    for version, max_new_tokens in (("v1", 2), ("v2", 6), ("v3", 12)):
        folder = _tiny_version(tokenizer, tmp_path / version, seed=int(version[1]))
        model = TransformersBackend().load(folder, dtype="float32")
        try:
            generations = model.generate(prompts, Sampling(max_new_tokens=max_new_tokens))
        finally:
            model.close()
        assert all(g.completion_tokens <= max_new_tokens for g in generations)
        answers[version] = [g.text for g in generations]

    shorter = registry.get("judges", "shorter")
    _, results = judge_all(prompts, answers, compare_many=rule_compare(shorter))
    assert len(results) == 3 * len(prompts) and all(r.consistent for r in results)  # a rule has no position bias
    # the pairwise wins the rule implies, counted from the answers themselves
    wins = dict.fromkeys(answers, 0)
    for i in range(len(prompts)):
        for a, b in itertools.combinations(answers, 2):
            verdict = shorter.compare(prompts[i], answers[a][i], answers[b][i])
            if verdict != "tie":
                wins[a if verdict == "A" else b] += 1
    assert sorted(answers, key=lambda v: -wins[v]) == ["v1", "v2", "v3"]
    ratings = bradley_terry(results, list(answers), seed=0)
    assert [r.label for r in ratings] == ["v1", "v2", "v3"]
    assert all(r.ci_low <= r.rating <= r.ci_high for r in ratings)
    assert abs(sum(r.rating for r in ratings) / 3 - 1000.0) < 1e-6
    assert [r.wins for r in ratings] == [wins["v1"], wins["v2"], wins["v3"]]
