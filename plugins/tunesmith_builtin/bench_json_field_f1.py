"""Built-in benchmark "json_field_f1": field-level precision, recall and F1 of extracted JSON.

The reference is the JSON text of an object; the prediction is parsed like json_valid does (a
whole-answer ```json fence is allowed). Both objects are flattened to dotted paths: nested
non-empty objects are descended ({"a": {"b": 1}} has the field "a.b"); any other value (a
string, number, boolean, null, list, or {}) is a leaf. A predicted field matches when the
reference has the same path with an equal value: numbers compare numerically (1 == 1.0;
booleans are not numbers), lists element by element in order, and with normalize_strings
(default true) strings are compared case-folded and stripped of surrounding whitespace. A
prediction that is not a JSON object has no fields (precision untouched, recall 0 for its row);
a reference that is not a JSON object has none either.

Metrics (micro over all fields of all rows, "corpus"): field_precision = matched / predicted,
field_recall = matched / reference, field_f1 = 2 * matched / (predicted + reference); each 0.0
when its denominator is 0, except that rows with no fields on either side at all are vacuously
perfect (1.0). exact_object ("binary"): the prediction is a JSON object whose fields are exactly
the reference's. Row statistics: {"matched", "predicted", "reference" (field counts),
"exact_object": 1.0 | 0.0}.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import bool_option, known_options, mean_of, parse_json


def _canonical(value: Any, normalize_strings: bool) -> Any:
    """A hashable value that is equal exactly when two JSON values count as equal."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, str):
        return ("string", value.strip().casefold() if normalize_strings else value)
    if isinstance(value, list):
        return ("list", tuple(_canonical(v, normalize_strings) for v in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _canonical(v, normalize_strings)) for k, v in value.items())))
    return ("other", repr(value))  # pragma: no cover - json.loads gives none of these


def flatten(obj: dict[str, Any], normalize_strings: bool = True, prefix: str = "") -> dict[str, Any]:
    """{dotted path: canonical leaf value} of a JSON object."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, normalize_strings, path))
        else:
            out[path] = _canonical(value, normalize_strings)
    return out


def _fields(text: str, normalize_strings: bool) -> tuple[bool, dict[str, Any]]:
    ok, value = parse_json(text)
    if not ok or not isinstance(value, dict):
        return False, {}
    return True, flatten(value, normalize_strings)


class JsonFieldF1:
    name = "json_field_f1"
    description = ("Field-level micro precision/recall/F1 of the predicted JSON object against the "
                   "reference object (dotted paths, normalised values), and exact-object match.")
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (
        MetricSpec("field_f1", "corpus", True, "micro F1 over fields (path and value equal)"),
        MetricSpec("field_precision", "corpus", True, "matched fields / predicted fields"),
        MetricSpec("field_recall", "corpus", True, "matched fields / reference fields"),
        MetricSpec("exact_object", "binary", True, "share of predictions with exactly the reference's fields"),
    )

    def _normalize_strings(self, options: dict[str, Any] | None) -> bool:
        return bool_option(known_options(options, self.name, ("normalize_strings",)), "normalize_strings", True)

    def validate_options(self, options: dict[str, Any]) -> None:
        self._normalize_strings(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        norm = self._normalize_strings(options)
        out = []
        for r in rows:
            pred_ok, pred = _fields(r.prediction, norm)
            _, ref = _fields(r.reference, norm)
            matched = sum(1 for path, value in pred.items() if path in ref and ref[path] == value)
            out.append({"matched": matched, "predicted": len(pred), "reference": len(ref),
                        "exact_object": float(pred_ok and pred == ref)})
        return out

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        matched = sum(int(s["matched"]) for s in stats)
        predicted = sum(int(s["predicted"]) for s in stats)
        reference = sum(int(s["reference"]) for s in stats)
        if stats and predicted == 0 and reference == 0:
            precision = recall = f1 = 1.0
        else:
            precision = matched / predicted if predicted else 0.0
            recall = matched / reference if reference else 0.0
            f1 = 2 * matched / (predicted + reference) if predicted + reference else 0.0
        return {"field_f1": f1, "field_precision": precision, "field_recall": recall,
                "exact_object": mean_of(stats, "exact_object")}


@hookimpl
def register_benchmarks(register):
    register("json_field_f1", JsonFieldF1())
