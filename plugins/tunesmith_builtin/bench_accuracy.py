"""Built-in benchmark "accuracy": classification accuracy over generated labels.

A row is right when the normalised prediction (first non-empty line, whitespace collapsed,
case-folded, trailing punctuation removed: exact_match's defaults) equals the normalised
reference. Any reference counts as a label, so the benchmark requires nothing of the dataset.
The label set (options.labels if given, else the dataset's labels, EvalRow.labels) does not
change the score; it marks each row's prediction as a label or not (row statistic "in_labels",
for reports and error analysis; None when no label set is known).
Metric accuracy ("binary"). Option: labels (list of strings).
Row statistics: {"accuracy": 1.0 | 0.0, "prediction": str, "reference": str, "in_labels": bool | None}
(normalised texts).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import known_options, label_option, mean_of, normalize, normalize_reference


class Accuracy:
    name = "accuracy"
    description = "Classification accuracy: the prediction's first line equals the reference label (normalised)."
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (MetricSpec("accuracy", "binary", True, "share of rows whose predicted label is the reference"),)

    def validate_options(self, options: dict[str, Any]) -> None:
        label_option(known_options(options, self.name, ("labels",)))

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        given = {normalize_reference(x) for x in label_option(known_options(options, self.name, ("labels",)))}
        cache: dict[tuple[str, ...], frozenset[str]] = {}
        out = []
        for r in rows:
            labels = given or cache.setdefault(r.labels, frozenset(normalize_reference(x) for x in r.labels))
            pred, ref = normalize(r.prediction), normalize_reference(r.reference)
            out.append({"accuracy": float(pred == ref), "prediction": pred, "reference": ref,
                        "in_labels": (pred in labels) if labels else None})
        return out

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        return {"accuracy": mean_of(stats, "accuracy")}


@hookimpl
def register_benchmarks(register):
    register("accuracy", Accuracy())
