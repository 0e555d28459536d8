"""Built-in error-analysis checks (tunesmith.core.contracts.ErrorCheck), registered by name.

Each check looks at one EvalRow and returns its category, or None when the check does not apply
or finds nothing. A row may fall in several checks' categories (they are counted separately).
Options are constructor arguments; the registered instances use the defaults below. A bad
option is InvalidArgument with `field` set to the argument name.

- "empty_answer" -> "empty_answer": the prediction is empty or whitespace only.
- "truncated" -> "truncated": finish_reason == "length" (generation stopped at max_new_tokens).
- "verbose" -> "verbose": the prediction is much longer than the reference. Lengths are counted
  in whitespace-separated words (str.split()). With P prediction words and R reference words the
  row is verbose when P > ratio * R *and* P - R >= min_extra_words. Defaults: ratio=3.0,
  min_extra_words=5 (so a 1-word label answered with 4 words is not verbose, a 1-word label
  answered with 6 words is). Rows with an empty reference are not judged (None).
- "repetition" -> "repetition": a repetition loop, either
  1. a word loop: the prediction is case-folded and split on whitespace, each word stripped of
     leading and trailing punctuation (string.punctuation) and dropped if nothing is left; some
     n-gram of those words (n=3 by default) starts at >= min_repeats (default 3) positions,
     overlapping occurrences included ("a b c a b c a b c" has "a b c" 3 times; "no no no no
     no" has "no no no" 3 times); or
  2. a character run: a unit of 1 to 4 non-whitespace characters repeated back to back that
     covers >= min_char_run characters (default 20): "!!!!!!!!!!!!!!!!!!!!",
     "hahahahahahahahahaha", "好的好的好的...". Units made only of Markdown rule and table
     characters (- = _ | : + * # ~ .) are not counted, so "|---|---|---|---|---|" or a line
     of "=" is not a loop.
  Options: n (>= 1), min_repeats (>= 2), min_char_run (>= 2).
- "invalid_label" -> "invalid_label.near_miss" | "invalid_label.invented": only for rows with
  a label set (row.labels non-empty) and a non-empty prediction. The prediction is normalised
  (first non-empty line, whitespace collapsed and stripped, case-folded, trailing punctuation
  removed; labels are normalised the same way); a prediction equal to a label is fine (None).
  Otherwise the closest label by Levenshtein distance (ties: the first in row.labels) decides:
  "near_miss" when the distance is <= max(2, 20% of that label's normalised length),
  "invented" otherwise ("card_arival" for "card_arrival" is a near miss, "refund_please" is
  invented). Options: min_distance (2), relative_distance (0.2).
- "invalid_json" -> "invalid_json.unparseable" | "invalid_json.missing_fields": only for rows
  whose reference parses as a JSON object and whose prediction is non-empty. Both texts are
  stripped and a Markdown code fence wrapping the whole text (```json ... ```) is removed; the
  rest is parsed as strict JSON (NaN/Infinity are not JSON). "unparseable": the prediction does
  not parse; "missing_fields": it parses but lacks one or more of the reference's top-level
  keys (a prediction that is not an object lacks them all).

Empty predictions are counted by "empty_answer" only: "invalid_label" and "invalid_json" skip
them, so one empty answer is not reported three times.
"""
from __future__ import annotations

import json
import math
import re
import string
from typing import Any

from tunesmith.core.contracts import EvalRow
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl

#: Stripped from the end of a normalised answer (as the built-in benchmarks do).
TRAILING_PUNCTUATION = string.punctuation + "…。！？，；：、"
_WS = re.compile(r"\s+")
_FENCE = re.compile(r"\A```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```\Z", re.DOTALL)
_RULE_CHARS = frozenset("-=_|:+*#~.")
_CHAR_UNIT = re.compile(r"(\S{1,4}?)\1+")


# --- helpers -----------------------------------------------------------------------------------
def normalise(text: str | None) -> str:
    """First non-empty line, whitespace collapsed and stripped, case-folded, trailing
    punctuation (and whitespace before it) removed. "  Card_Arrival.\\nbecause" -> "card_arrival"."""
    text = "" if text is None else str(text)
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _WS.sub(" ", line).strip().casefold()
    return line.rstrip(TRAILING_PUNCTUATION + " ").strip()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions and substitutions of one character, each cost 1)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _strip_fence(text: str) -> str:
    text = (text or "").strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(_strip_fence(text), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False, None


def _number(value: Any, field: str, minimum: float, *, integer: bool = False) -> Any:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < minimum or (integer and value != int(value))):
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"{field} must be {kind} >= {minimum:g}, got {value!r}", field=field)
    return int(value) if integer else float(value)


# --- checks ------------------------------------------------------------------------------------
class EmptyAnswer:
    name = "empty_answer"
    description = "the answer is empty or whitespace only"
    categories = ("empty_answer",)

    def classify(self, row: EvalRow) -> str | None:
        return "empty_answer" if not (row.prediction or "").strip() else None


class Truncated:
    name = "truncated"
    description = "generation stopped at the token limit (finish_reason 'length')"
    categories = ("truncated",)

    def classify(self, row: EvalRow) -> str | None:
        return "truncated" if row.finish_reason == "length" else None


class Verbose:
    """Prediction words P, reference words R: verbose when P > ratio*R and P - R >= min_extra_words."""

    name = "verbose"
    categories = ("verbose",)

    def __init__(self, ratio: float = 3.0, min_extra_words: int = 5):
        self.ratio = _number(ratio, "ratio", 1.0)
        self.min_extra_words = _number(min_extra_words, "min_extra_words", 0, integer=True)
        self.description = (f"the answer has more than {self.ratio:g}x the reference's words and at least "
                            f"{self.min_extra_words} words more")

    def classify(self, row: EvalRow) -> str | None:
        reference = len((row.reference or "").split())
        if reference == 0:
            return None
        prediction = len((row.prediction or "").split())
        if prediction > self.ratio * reference and prediction - reference >= self.min_extra_words:
            return "verbose"
        return None


class Repetition:
    """A word n-gram at >= min_repeats positions, or a 1-4 character unit repeated back to back
    over >= min_char_run characters (see the module docstring)."""

    name = "repetition"
    categories = ("repetition",)

    def __init__(self, n: int = 3, min_repeats: int = 3, min_char_run: int = 20):
        self.n = _number(n, "n", 1, integer=True)
        self.min_repeats = _number(min_repeats, "min_repeats", 2, integer=True)
        self.min_char_run = _number(min_char_run, "min_char_run", 2, integer=True)
        self.description = (f"a repetition loop: a {self.n}-word sequence {self.min_repeats}+ times, or a "
                            f"repeated 1-4 character unit over {self.min_char_run}+ characters")

    def _word_loop(self, text: str) -> bool:
        words = [w for w in (t.strip(string.punctuation) for t in text.casefold().split()) if w]
        if len(words) < self.n + self.min_repeats - 1:
            return False
        seen: dict[tuple[str, ...], int] = {}
        for i in range(len(words) - self.n + 1):
            gram = tuple(words[i:i + self.n])
            seen[gram] = seen.get(gram, 0) + 1
            if seen[gram] >= self.min_repeats:
                return True
        return False

    def _char_run(self, text: str) -> bool:
        for m in _CHAR_UNIT.finditer(text):
            if len(m.group(0)) >= self.min_char_run and not set(m.group(1)) <= _RULE_CHARS:
                return True
        return False

    def classify(self, row: EvalRow) -> str | None:
        text = row.prediction or ""
        return "repetition" if text.strip() and (self._word_loop(text) or self._char_run(text)) else None


class InvalidLabel:
    """Classification answers that are not a label: near misses (a typo away) vs invented ones."""

    name = "invalid_label"
    description = "the answer is not one of the labels: a near miss (small edit distance) or an invented label"
    categories = ("invalid_label.near_miss", "invalid_label.invented")

    def __init__(self, min_distance: int = 2, relative_distance: float = 0.2):
        self.min_distance = _number(min_distance, "min_distance", 0, integer=True)
        self.relative_distance = _number(relative_distance, "relative_distance", 0.0)

    def _threshold(self, label: str) -> float:
        return max(self.min_distance, self.relative_distance * len(label))

    def classify(self, row: EvalRow) -> str | None:
        if not row.labels or not (row.prediction or "").strip():
            return None
        answer = normalise(row.prediction)
        labels = [normalise(label) for label in row.labels]
        if answer in labels:
            return None
        # The distance is at least the length difference: an answer longer than every label by
        # more than that label's threshold can be no near miss (and is not compared, so a huge
        # answer costs nothing).
        if all(len(answer) - len(label) > self._threshold(label) for label in labels):
            return "invalid_label.invented"
        closest = min(labels, key=lambda label: levenshtein(answer, label))  # first of equals
        near = levenshtein(answer, closest) <= self._threshold(closest)
        return "invalid_label.near_miss" if near else "invalid_label.invented"


class InvalidJson:
    name = "invalid_json"
    description = "the reference is a JSON object and the answer does not parse, or lacks some of its top-level fields"
    categories = ("invalid_json.unparseable", "invalid_json.missing_fields")

    def classify(self, row: EvalRow) -> str | None:
        if not (row.prediction or "").strip():
            return None
        ok, reference = _parse_json(row.reference or "")
        if not ok or not isinstance(reference, dict):
            return None
        ok, prediction = _parse_json(row.prediction)
        if not ok:
            return "invalid_json.unparseable"
        present = prediction.keys() if isinstance(prediction, dict) else ()
        return "invalid_json.missing_fields" if any(k not in present for k in reference) else None


def builtin_checks() -> dict[str, Any]:
    """A fresh instance of every built-in check, with default options, by name."""
    checks = [EmptyAnswer(), Truncated(), Verbose(), Repetition(), InvalidLabel(), InvalidJson()]
    return {check.name: check for check in checks}


@hookimpl
def register_error_checks(register):
    for name, check in builtin_checks().items():
        register(name, check)
