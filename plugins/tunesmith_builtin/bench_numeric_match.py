"""Built-in benchmark "numeric_match": the answer's final number equals the reference's (GSM8K).

Both texts go through tunesmith_builtin._answers.final_number: the first number after the
last "####" when there is one (GSM8K's worked solutions end "#### 42"; a model trained on them
answers the same way), else the last number in the text. Thousands commas and "$" are dropped
and a trailing "." is not part of the number ("$1,234." -> 1234); fractions and scientific
notation are not read. The two numbers are compared exactly as decimals (18 == 18.00), or within
abs_tolerance. No number on either side is a miss.
Metric numeric_match ("binary"). Option abs_tolerance (default 0).
Row statistics: {"numeric_match": 1.0 | 0.0, "predicted": str | None, "expected": str | None}.
"""
from __future__ import annotations

from decimal import Decimal
from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import final_number, known_options, mean_of, number_option


def _text(number: Decimal | None) -> str | None:
    return None if number is None else format(number.normalize(), "f")


class NumericMatch:
    name = "numeric_match"
    description = "The prediction's final number (after '####', else the last number) equals the reference's."
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (MetricSpec("numeric_match", "binary", True, "share of rows whose final number is right"),)

    def _tolerance(self, options: dict[str, Any] | None) -> Decimal:
        o = known_options(options, self.name, ("abs_tolerance",))
        return Decimal(repr(number_option(o, "abs_tolerance", 0.0)))

    def validate_options(self, options: dict[str, Any]) -> None:
        self._tolerance(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        tolerance = self._tolerance(options)
        out = []
        for r in rows:
            pred, ref = final_number(r.prediction), final_number(r.reference)
            ok = pred is not None and ref is not None and abs(pred - ref) <= tolerance
            out.append({"numeric_match": float(ok), "predicted": _text(pred), "expected": _text(ref)})
        return out

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        return {"numeric_match": mean_of(stats, "numeric_match")}


@hookimpl
def register_benchmarks(register):
    register("numeric_match", NumericMatch())
