"""Built-in benchmark "perplexity": how likely the model finds each row's reference, given its prompt.

One log-likelihood request per row: (prompt, continuation_prefix + reference), scored by the
model's loglikelihood() (tokenised as lm-evaluation-harness does, see LoadedModel.loglikelihood).

Why a prefix: the evaluator hands benchmarks the reference stripped, while the prepared
completion usually began with a space (the classification and multiple-choice templates render
" <answer>" after a prompt ending in ":"). The option `continuation_prefix` (default " ") is put
back in front of the reference when the prompt is non-empty and does not already end in
whitespace; a prompt ending in whitespace (e.g. "### Response:\\n", a chat template's
"assistant\\n") or an empty prompt (raw text rows) gets the reference as it is. Set it to "" to
score the stripped reference everywhere.

Metrics (both "corpus": token-weighted over all rows, recomputed on resampled rows):
- perplexity = exp(-sum of logprobs / sum of tokens), lower is better;
- mean_logprob_per_token = sum of logprobs / sum of tokens, higher is better.
Row statistics: {"logprob": summed natural-log probability, "tokens": continuation tokens}.
With no rows (or no tokens): perplexity inf, mean_logprob_per_token -inf (the worst values).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl
from tunesmith_builtin._answers import string_options

OPTIONS: dict[str, Any] = {"continuation_prefix": " "}


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    return {**OPTIONS, **(options or {})}


def continuation(row: EvalRow, prefix: str) -> str:
    """The continuation scored for a row: the reference, with `prefix` in front when the prompt
    is non-empty and does not end in whitespace."""
    if row.prompt and not row.prompt[-1].isspace():
        return prefix + row.reference
    return row.reference


class Perplexity:
    name = "perplexity"
    description = ("Perplexity of the reference given the prompt (token-weighted over rows, lower is better), "
                   "from the model's log-likelihoods. Option: continuation_prefix (default ' ').")
    needs = "loglikelihood"
    requires: frozenset[str] = frozenset()
    metrics = (
        MetricSpec("perplexity", "corpus", higher_is_better=False,
                   description="exp(-total logprob / total reference tokens)"),
        MetricSpec("mean_logprob_per_token", "corpus", higher_is_better=True,
                   description="total logprob / total reference tokens (natural log)"),
    )

    def validate_options(self, options: dict[str, Any]) -> None:
        string_options(options, self.name, OPTIONS)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        text = continuation(row, _options(options)["continuation_prefix"])
        if not text:
            raise ValueError("the row's reference is empty: there is nothing to score")
        return [(row.prompt, text)]

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        stats = []
        for i, row in enumerate(rows):
            if len(row.loglikelihoods) != 1:
                raise ValueError(f"row {i}: expected 1 log-likelihood, got {len(row.loglikelihoods)}")
            ll = row.loglikelihoods[0]
            stats.append({"logprob": float(ll.logprob), "tokens": int(ll.tokens)})
        return stats

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        total = math.fsum(float(s["logprob"]) for s in stats)
        tokens = sum(int(s["tokens"]) for s in stats)
        if tokens <= 0:
            return {"perplexity": math.inf, "mean_logprob_per_token": -math.inf}
        mean = total / tokens
        try:
            ppl = math.exp(-mean)
        except OverflowError:
            ppl = math.inf
        return {"perplexity": ppl, "mean_logprob_per_token": mean}


@hookimpl
def register_benchmarks(register):
    register("perplexity", Perplexity())
