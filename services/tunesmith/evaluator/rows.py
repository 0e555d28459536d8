"""EvalRows (tunesmith.core.contracts.EvalRow) from a prepared dataset split, and the answers
and log-likelihoods a model adds to them. The one place that maps prepared-row fields to what
benchmarks and error checks read."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, Generation, LogLikelihood


def eval_rows(prepared: Sequence[dict[str, Any]], labels: Sequence[str] = ()) -> list[EvalRow]:
    """One EvalRow per prepared row: prompt, reference (the completion, stripped), the dataset's
    label set, and a multiple-choice row's choices and gold index."""
    label_set = tuple(str(x) for x in labels)
    out = []
    for r in prepared:
        choices = tuple(str(c) for c in r.get("choices") or ())
        out.append(EvalRow(prompt=str(r.get("prompt", "")), reference=str(r.get("completion", "")).strip(),
                           labels=label_set, choices=choices,
                           gold=int(r["gold"]) if choices and r.get("gold") is not None else -1))
    return out


def with_answers(rows: Sequence[EvalRow], generations: Sequence[Generation], max_new_tokens: int) -> list[EvalRow]:
    """The rows with one model's generated answers filled in."""
    if len(rows) != len(generations):
        raise ValueError(f"{len(generations)} answers for {len(rows)} rows")
    return [dataclasses.replace(r, prediction=g.text, finish_reason=g.finish_reason,
                                completion_tokens=g.completion_tokens, max_new_tokens=max_new_tokens)
            for r, g in zip(rows, generations)]


def with_loglikelihoods(rows: Sequence[EvalRow], requests: Sequence[Sequence[tuple[str, str]]],
                        results: Sequence[LogLikelihood]) -> list[EvalRow]:
    """The rows with the log-likelihoods of their requests (flattened in row order in `results`)."""
    if sum(len(r) for r in requests) != len(results):
        raise ValueError(f"{len(results)} log-likelihoods for {sum(len(r) for r in requests)} requests")
    out, i = [], 0
    for row, reqs in zip(rows, requests):
        out.append(dataclasses.replace(row, loglikelihoods=tuple(results[i:i + len(reqs)])))
        i += len(reqs)
    return out
