"""Built-in benchmark "json_valid": the prediction is valid JSON.

The prediction is stripped, and a Markdown code fence wrapping the whole answer (```json ...
``` or ``` ... ```) is removed; the rest must parse as strict JSON (json.loads; NaN and
Infinity are not JSON). The reference is not read. Option require_object (default true): the
value must be a JSON object ({...}), as structured-output tasks expect; false accepts any JSON
value (arrays, strings, numbers, ...).
Metric json_valid ("binary"). Row statistics: {"json_valid": 1.0 | 0.0}.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import bool_option, known_options, mean_of, parse_json


class JsonValid:
    name = "json_valid"
    description = "Share of predictions that parse as JSON (a JSON object by default; a ```json fence is allowed)."
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (MetricSpec("json_valid", "binary", True, "share of predictions that are valid JSON"),)

    def _require_object(self, options: dict[str, Any] | None) -> bool:
        return bool_option(known_options(options, self.name, ("require_object",)), "require_object", True)

    def validate_options(self, options: dict[str, Any]) -> None:
        self._require_object(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        require_object = self._require_object(options)
        out = []
        for r in rows:
            ok, value = parse_json(r.prediction)
            out.append({"json_valid": float(ok and (isinstance(value, dict) or not require_object))})
        return out

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        return {"json_valid": mean_of(stats, "json_valid")}


@hookimpl
def register_benchmarks(register):
    register("json_valid", JsonValid())
