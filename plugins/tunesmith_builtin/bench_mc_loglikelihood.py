"""Built-in benchmark "mc_loglikelihood": multiple-choice accuracy by log-likelihood, as
lm-evaluation-harness scores its `multiple_choice` tasks (ARC, SciQ, HellaSwag, MMLU ...).

For a row with choices c_0..c_{n-1} and gold index g it asks for one log-likelihood per choice:
(prompt, target_delimiter + c_i), target_delimiter defaulting to " " (lm-eval's default). Then,
exactly as lm-eval's Task.process_results for multiple_choice:
- acc      = 1 if argmax_i logprob_i == g;
- acc_norm = 1 if argmax_i logprob_i / len(c_i) == g, len in characters of the choice text
  itself (the delimiter is not counted);
argmax takes the first of equal values, as numpy.argmax does. (A zero-length choice, which the
data service refuses, is divided by 1.)

Both metrics are "binary": row statistics hold acc and acc_norm (0.0 or 1.0), with pred,
pred_norm, gold and the per-choice logprobs for inspection; aggregate() is their mean (0.0 for
no rows). Option: target_delimiter (a string).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._answers import string_options

OPTIONS: dict[str, Any] = {"target_delimiter": " "}


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties (numpy.argmax's rule); -1 for none."""
    best = -1
    for i, v in enumerate(values):
        if best < 0 or v > values[best]:
            best = i
    return best


class MultipleChoiceLogLikelihood:
    name = "mc_loglikelihood"
    description = ("Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness: acc (highest summed "
                   "logprob) and acc_norm (highest logprob per character of the choice). "
                   "Option: target_delimiter (default ' ').")
    needs = "loglikelihood"
    requires = frozenset({"choices"})
    metrics = (
        MetricSpec("acc", "binary", description="the choice with the highest log-likelihood is the gold one"),
        MetricSpec("acc_norm", "binary",
                   description="the choice with the highest log-likelihood per character is the gold one"),
    )

    def validate_options(self, options: dict[str, Any]) -> None:
        string_options(options, self.name, OPTIONS)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        if len(row.choices) < 2:
            raise ValueError(f"a multiple-choice row needs at least 2 choices, this one has {len(row.choices)}")
        delimiter = {**OPTIONS, **(options or {})}["target_delimiter"]
        return [(row.prompt, f"{delimiter}{choice}") for choice in row.choices]

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        stats = []
        for i, row in enumerate(rows):
            n = len(row.choices)
            if len(row.loglikelihoods) != n or n < 2:
                raise ValueError(f"row {i}: {len(row.loglikelihoods)} log-likelihoods for {n} choices")
            if not 0 <= row.gold < n:
                raise ValueError(f"row {i}: gold index {row.gold} is not one of its {n} choices")
            lls = [float(ll.logprob) for ll in row.loglikelihoods]
            pred = argmax(lls)
            pred_norm = argmax([ll / max(len(choice), 1) for ll, choice in zip(lls, row.choices)])
            stats.append({"acc": 1.0 if pred == row.gold else 0.0,
                          "acc_norm": 1.0 if pred_norm == row.gold else 0.0,
                          "pred": pred, "pred_norm": pred_norm, "gold": row.gold, "logprobs": lls})
        return stats

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        if not stats:
            return {"acc": 0.0, "acc_norm": 0.0}
        return {"acc": sum(float(s["acc"]) for s in stats) / len(stats),
                "acc_norm": sum(float(s["acc_norm"]) for s in stats) / len(stats)}


@hookimpl
def register_benchmarks(register):
    register("mc_loglikelihood", MultipleChoiceLogLikelihood())
