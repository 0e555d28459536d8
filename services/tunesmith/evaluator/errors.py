"""Error analysis: run the registered error checks over one model's evaluated rows.

- analyse(checks, rows) counts, per category, the rows each check puts in it (every declared
  category of every check is in `counts`, 0 included, in check then category order; a row may
  be counted by several checks), keeps the first `examples_per_category` row indices of each
  category that has any, and lists the most frequent classification confusions.
- confusion_matrix(rows, labels) is the full reference x prediction count matrix.

Classification answers are compared as the built-in checks do (error_checks.normalise: first
non-empty line, case-folded, trailing punctuation removed), and reported in the labels' own
spelling. A confusion is a row with a label set whose reference is a label and whose prediction
is a *different* label; predictions that are no label are the invalid_label check's business,
not confusions.

A check that raises, or returns a category it does not declare, is a bug in its plugin: that is a
PluginError naming the check and the row, never swallowed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tunesmith.core.contracts import ErrorCheck, EvalRow
from tunesmith.core.errors import PluginError
from tunesmith_builtin.error_checks import normalise

#: The last row and column of confusion_matrix(): references / predictions that are no label.
OTHER = "(other)"


@dataclass
class ErrorAnalysis:
    counts: dict[str, int]                 # category -> rows
    examples: dict[str, list[int]]         # category -> up to k row indices (ascending)
    confusion: list[tuple[str, str, int]]  # (reference, prediction, count), most frequent first
    rows: int


def _normalise(text: str) -> str:
    return normalise(text)


def _label_index(labels: Sequence[str]) -> dict[str, str]:
    """Normalised label -> the label as written (the first wins if two normalise alike)."""
    index: dict[str, str] = {}
    for label in labels:
        index.setdefault(_normalise(label), label)
    return index


def analyse(checks: Mapping[str, ErrorCheck], rows: Sequence[EvalRow], *, examples_per_category: int = 3,
            top_confusions: int = 10) -> ErrorAnalysis:
    """Counts, examples and top confusions of `rows` (one model's answers) under `checks`
    (registry name -> check). Deterministic. Raises PluginError for a broken check."""
    counts: dict[str, int] = {}
    examples: dict[str, list[int]] = {}
    declared: dict[str, tuple[str, ...]] = {}
    for name, check in checks.items():
        declared[name] = tuple(check.categories)
        for category in declared[name]:
            counts.setdefault(category, 0)

    for i, row in enumerate(rows):
        for name, check in checks.items():
            try:
                category = check.classify(row)
            except Exception as exc:
                raise PluginError(f"error check {name!r} raised on row {i}: {type(exc).__name__}: {exc}") from exc
            if category is None:
                continue
            if category not in declared[name]:
                raise PluginError(f"error check {name!r} returned category {category!r} on row {i}, "
                                  f"which it does not declare (categories: {', '.join(declared[name])})")
            counts[category] += 1
            found = examples.setdefault(category, [])
            if len(found) < examples_per_category:
                found.append(i)

    pairs: Counter[tuple[str, str]] = Counter()
    cache: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        if not row.labels:
            continue
        index = cache.get(row.labels)
        if index is None:
            index = cache[row.labels] = _label_index(row.labels)
        reference = index.get(_normalise(row.reference))
        prediction = index.get(_normalise(row.prediction))
        if reference is not None and prediction is not None and reference != prediction:
            pairs[(reference, prediction)] += 1
    confusion = sorted(((r, p, n) for (r, p), n in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))
    return ErrorAnalysis(counts=counts, examples=examples, confusion=confusion[:max(0, top_confusions)],
                         rows=len(rows))


def confusion_matrix(rows: Sequence[EvalRow], labels: Sequence[str]) -> tuple[list[str], list[list[int]]]:
    """(order, counts): order is `labels` then OTHER; counts[r][p] is how many rows have reference
    order[r] and prediction order[p] (square, len(labels) + 1 each way). The OTHER column counts
    predictions that are no label (empty answers too); the OTHER row counts references that are
    no label. Matching is on normalised text."""
    index = {norm: i for i, norm in reversed(list(enumerate(_normalise(label) for label in labels)))}
    order = list(labels) + [OTHER]
    other = len(labels)
    counts = [[0] * len(order) for _ in order]
    for row in rows:
        r = index.get(_normalise(row.reference), other)
        p = index.get(_normalise(row.prediction), other)
        counts[r][p] += 1
    return order, counts
