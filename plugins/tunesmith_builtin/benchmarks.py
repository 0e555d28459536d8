"""Built-in benchmarks: "exact_match" and "accuracy" (with macro F1) over generated answers.

Both compare a normalised prediction with a normalised reference (see `normalize`).
"""
from __future__ import annotations

import re
import string
from typing import Sequence

from tunesmith.core.contracts import BenchmarkResult
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl

#: Stripped from the end of an answer: ASCII punctuation plus a few common Unicode marks.
TRAILING_PUNCTUATION = string.punctuation + "…。！？，；：、"
_WS = re.compile(r"\s+")


def normalize(text: str, *, first_line: bool = True) -> str:
    """Normalise an answer for comparison.

    1. With first_line (used for predictions): keep only the first non-empty line, since a model
       often adds an explanation after the answer.
    2. Strip surrounding whitespace and collapse internal runs of whitespace to one space.
    3. Case-fold (case-insensitive comparison, Unicode-aware).
    4. Strip trailing punctuation (".", "!", "?", ",", ";", ":", quotes, brackets, "…", ...)
       and any whitespace left before it.

    Examples: "  Paris.\\nIt is in France" -> "paris"; "Card_Arrival" -> "card_arrival".
    None counts as "".
    """
    text = "" if text is None else str(text)
    if first_line:
        for line in text.splitlines():
            if line.strip():
                text = line
                break
        else:
            text = ""
    text = _WS.sub(" ", text).strip().casefold()
    return text.rstrip(TRAILING_PUNCTUATION + " ").strip()


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise InvalidArgument(
            f"{len(predictions)} predictions but {len(references)} references; they must be aligned",
            field="predictions",
        )


class ExactMatch:
    """Fraction of predictions equal to their reference after normalisation.

    Predictions are normalised with `normalize(first_line=True)`: first non-empty line only,
    whitespace stripped and collapsed, case-folded, trailing punctuation removed. References get
    the same normalisation except that they are not cut to their first line.
    Metrics: {"exact_match": fraction in [0, 1]} (0.0 for no rows); per_row: one bool per row.
    """

    name = "exact_match"
    description = (
        "Exact match after normalisation: first line of the prediction, whitespace stripped, "
        "case-insensitive, trailing punctuation removed."
    )

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> BenchmarkResult:
        _check(predictions, references)
        per_row = [normalize(p) == normalize(r, first_line=False) for p, r in zip(predictions, references)]
        value = sum(per_row) / len(per_row) if per_row else 0.0
        return BenchmarkResult(metrics={"exact_match": value}, per_row=per_row)


class Accuracy:
    """Classification accuracy and macro F1, with the same normalisation as ExactMatch.

    Labels are the distinct normalised references. For each label, precision and recall count
    predictions equal to that label; a prediction that is no label at all (free text) is simply
    wrong: it lowers recall of the row's label but is not a label of its own. macro_f1 is the
    unweighted mean of per-label F1 (as sklearn's f1_score(labels=references' labels,
    average="macro")).
    Metrics: {"accuracy", "macro_f1"} (0.0 for no rows); per_row: one bool per row.
    """

    name = "accuracy"
    description = "Classification accuracy and macro F1 over the reference labels (normalised like exact_match)."

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> BenchmarkResult:
        _check(predictions, references)
        preds = [normalize(p) for p in predictions]
        refs = [normalize(r, first_line=False) for r in references]
        per_row = [p == r for p, r in zip(preds, refs)]
        if not per_row:
            return BenchmarkResult(metrics={"accuracy": 0.0, "macro_f1": 0.0}, per_row=[])
        f1s = []
        for label in sorted(set(refs)):
            tp = sum(1 for p, r in zip(preds, refs) if p == label and r == label)
            predicted = sum(1 for p in preds if p == label)
            actual = sum(1 for r in refs if r == label)
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        return BenchmarkResult(
            metrics={"accuracy": sum(per_row) / len(per_row), "macro_f1": sum(f1s) / len(f1s)},
            per_row=per_row,
        )


@hookimpl
def register_benchmarks(register):
    register("exact_match", ExactMatch())
    register("accuracy", Accuracy())
