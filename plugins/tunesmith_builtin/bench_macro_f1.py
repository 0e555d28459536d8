"""Built-in benchmark "macro_f1": unweighted mean of per-label F1 over a label set.

Predictions and references are normalised as accuracy / exact_match do by default. The label
set is, in order of preference: options.labels; the dataset's labels (EvalRow.labels, the union
over the rows given); the distinct references of the rows given (so every dataset has one, and
the benchmark requires nothing). For each label, precision and recall count predictions equal
to it; a prediction that is no label (free text) is simply wrong: it lowers recall of the row's
label and is not a label of its own. Per-label F1 = 2*TP / (predicted + actual), 0 when the
label is neither predicted nor present, so the value equals
sklearn.metrics.f1_score(refs, preds, labels=label_set, average="macro", zero_division=0).
A label of the set that the evaluated rows never contain and no row predicts scores 0 (as in
sklearn): evaluate on a split that covers the labels, or pass options.labels.

Metric macro_f1 ("corpus": recomputed from resampled rows for intervals and paired tests).
Option: labels (list of strings). Row statistics: {"prediction", "reference" (normalised),
"labels" (the row's normalised dataset labels, [] when it has none)}.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import known_options, label_option, normalize, normalize_reference


def macro_f1(preds: Sequence[str], refs: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean over `labels` of per-label F1 (0.0 for an empty label set)."""
    labels = sorted(set(labels))
    if not labels:
        return 0.0
    tp = Counter(p for p, r in zip(preds, refs) if p == r)
    predicted, actual = Counter(preds), Counter(refs)
    total = 0.0
    for label in labels:
        denominator = predicted[label] + actual[label]
        total += 2 * tp[label] / denominator if denominator else 0.0
    return total / len(labels)


class MacroF1:
    name = "macro_f1"
    description = "Macro-averaged F1 over the label set (options.labels, the dataset's labels, or the references)."
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (MetricSpec("macro_f1", "corpus", True, "unweighted mean of per-label F1"),)

    def _labels(self, options: dict[str, Any] | None) -> list[str]:
        return [normalize_reference(x) for x in label_option(known_options(options, self.name, ("labels",)))]

    def validate_options(self, options: dict[str, Any]) -> None:
        self._labels(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        self._labels(options)
        cache: dict[tuple[str, ...], list[str]] = {}  # one shared list per distinct label set
        return [{"prediction": normalize(r.prediction), "reference": normalize_reference(r.reference),
                 "labels": cache.setdefault(r.labels, sorted({normalize_reference(x) for x in r.labels}))}
                for r in rows]

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        preds = [s["prediction"] for s in stats]
        refs = [s["reference"] for s in stats]
        labels: set[str] = set(self._labels(options))
        if not labels:
            seen: set[int] = set()
            for s in stats:
                if id(s["labels"]) not in seen:
                    seen.add(id(s["labels"]))
                    labels.update(s["labels"])
        if not labels:
            labels = set(refs)
        return {"macro_f1": macro_f1(preds, refs, labels)}


@hookimpl
def register_benchmarks(register):
    register("macro_f1", MacroF1())
