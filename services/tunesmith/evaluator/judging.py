"""Pairwise judging: every pair of models, every prompt, both orders.

judge_all() asks a judge about each (prompt, pair of models) and returns the raw judgements
(Outcome: one per order shown to the judge) and, per prompt and unordered pair, the two orders
combined (PairResult). With swap_positions (the default) each pair is judged twice, once with
each model's answer first; when the two verdicts disagree (a judge that prefers a position, not
an answer) the pair counts as a tie and is marked inconsistent.

A judge is either a rule (`compare(prompt, first, second, reference) -> verdict`, e.g. a
tunesmith.core.contracts.Judge wrapped by `rule_compare`) or a batched function
(`compare_many([(prompt, first, second, reference), ...]) -> [verdict, ...]`, e.g.
ModelJudge.compare_many, which renders the judge prompts with a JudgeTemplate and generates
them in batches). judge_all calls compare_many once with every comparison, in a fixed order:
prompt by prompt, pair by pair, the first order then the swapped one.

Verdicts are "A" (the answer shown first wins), "B" (the second) or "tie"
(tunesmith.core.contracts.VERDICTS); anything else is a ValueError naming the comparison.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.core.contracts import VERDICTS

if TYPE_CHECKING:
    from tunesmith.core.contracts import Judge, JudgeTemplate

#: One comparison: (prompt, answer shown first, answer shown second, reference).
Item = tuple[str, str, str, str]
CompareFn = Callable[[str, str, str, str], str]
CompareManyFn = Callable[[Sequence[Item]], Sequence[str]]


@dataclass(frozen=True)
class Outcome:
    """One judged comparison. first/second: the model labels in the order shown to the judge;
    verdict (in VERDICTS) is relative to that order ("A" = `first` won)."""

    prompt_index: int
    first: str
    second: str
    verdict: str

    @property
    def winner(self) -> str | None:
        """The winning label, or None for a tie."""
        return self.first if self.verdict == "A" else self.second if self.verdict == "B" else None


@dataclass(frozen=True)
class PairResult:
    """Both orders combined for one prompt and one unordered pair (a, b).

    winner: a, b, or None for a tie. consistent: the orders agreed (always True when the pair
    was judged in one order only); an inconsistent pair is a tie (position bias).
    """

    prompt_index: int
    a: str
    b: str
    winner: str | None
    consistent: bool = True


def rule_compare(judge: Judge) -> CompareManyFn:
    """A rule-based Judge as a compare_many function for judge_all."""
    return lambda items: [judge.compare(p, a, b, reference=ref) for p, a, b, ref in items]


def judge_all(prompts: Sequence[str], answers: Mapping[str, Sequence[str]],
              compare: CompareFn | None = None, *, compare_many: CompareManyFn | None = None,
              references: Sequence[str] | None = None, swap_positions: bool = True,
              pairs: Sequence[tuple[str, str]] | None = None) -> tuple[list[Outcome], list[PairResult]]:
    """Judge every unordered pair of labels in `answers` (or just `pairs`) on every prompt.

    answers: label -> one answer per prompt. references: one per prompt (default "").
    Give exactly one of compare (called once per comparison) and compare_many (called once
    with every comparison). Returns (outcomes in judging order, pair results by prompt then pair).
    """
    if (compare is None) == (compare_many is None):
        raise ValueError("give exactly one of compare and compare_many")
    n = len(prompts)
    for label, got in answers.items():
        if len(got) != n:
            raise ValueError(f"model {label!r} has {len(got)} answers for {n} prompts")
    refs = list(references) if references is not None else [""] * n
    if len(refs) != n:
        raise ValueError(f"{len(refs)} references for {n} prompts")
    labels = list(answers)
    if pairs is None:
        pair_list = list(itertools.combinations(labels, 2))
    else:
        pair_list = [(a, b) for a, b in pairs]
        for a, b in pair_list:
            for label in (a, b):
                if label not in answers:
                    raise ValueError(f"pair ({a!r}, {b!r}) names {label!r}, which has no answers")
            if a == b:
                raise ValueError(f"pair ({a!r}, {b!r}) compares a model with itself")
        if len({frozenset(p) for p in pair_list}) != len(pair_list):
            raise ValueError("a pair is listed twice")

    shown: list[tuple[int, str, str]] = []
    items: list[Item] = []
    for i in range(n):
        for a, b in pair_list:
            orders = ((a, b), (b, a)) if swap_positions else ((a, b),)
            for first, second in orders:
                shown.append((i, first, second))
                items.append((prompts[i], answers[first][i], answers[second][i], refs[i]))

    if compare_many is not None:
        verdicts = list(compare_many(items)) if items else []
    else:
        verdicts = [compare(*item) for item in items]  # type: ignore[misc]
    if len(verdicts) != len(items):
        raise ValueError(f"the judge returned {len(verdicts)} verdicts for {len(items)} comparisons")
    outcomes = []
    for (i, first, second), verdict in zip(shown, verdicts, strict=True):
        if verdict not in VERDICTS:
            raise ValueError(f"the judge answered {verdict!r} (not one of {sorted(VERDICTS)}) on prompt {i} "
                             f"for {first!r} vs {second!r}")
        outcomes.append(Outcome(i, first, second, verdict))

    results = []
    step = 2 if swap_positions else 1
    for k in range(0, len(outcomes), step):
        first = outcomes[k]
        if swap_positions:
            w1, w2 = first.winner, outcomes[k + 1].winner
            consistent = w1 == w2
            results.append(PairResult(first.prompt_index, first.first, first.second,
                                      w1 if consistent else None, consistent))
        else:
            results.append(PairResult(first.prompt_index, first.first, first.second, first.winner, True))
    return outcomes, results


class ModelJudge:
    """A judge backed by a model: a JudgeTemplate renders each comparison, `generate` (a list of
    judge prompts -> one reply each, in order) answers them in batches of batch_size, and the
    template parses each reply into a verdict."""

    def __init__(self, template: JudgeTemplate, generate: Callable[[list[str]], list[str]], *,
                 rubric: str = "", batch_size: int = 16):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.template = template
        self.generate = generate
        self.rubric = rubric
        self.batch_size = int(batch_size)

    def render(self, item: Item) -> str:
        prompt, first, second, reference = item
        return self.template.render(prompt, first, second, rubric=self.rubric, reference=reference)

    def compare_many(self, items: Sequence[Item]) -> list[str]:
        """Verdicts for (prompt, first, second, reference) items, in order."""
        verdicts: list[str] = []
        for start in range(0, len(items), self.batch_size):
            batch = [self.render(item) for item in items[start:start + self.batch_size]]
            replies = list(self.generate(batch))
            if len(replies) != len(batch):
                raise ValueError(f"the judge model returned {len(replies)} replies for {len(batch)} prompts")
            verdicts.extend(self.template.parse(reply) for reply in replies)
        return verdicts

    def compare(self, prompt: str, answer_a: str, answer_b: str, *, reference: str = "") -> str:
        """One comparison (a batch of one)."""
        return self.compare_many([(prompt, answer_a, answer_b, reference)])[0]
