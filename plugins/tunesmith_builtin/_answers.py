"""Helpers shared by the built-in benchmarks (bench_*.py): answer normalisation, final-number
and JSON extraction, option checks, and the mean aggregate of per-row values.

Importable by any benchmark plugin (`from tunesmith_builtin._answers import normalize`).
"""
from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from tunesmith.core.errors import InvalidArgument

from tunesmith_builtin._options import flag, given, options_dict

#: Stripped from the end of an answer: ASCII punctuation plus a few common Unicode marks.
TRAILING_PUNCTUATION = string.punctuation + "…。！？，；：、"
_WS = re.compile(r"\s+")


# --- normalisation ----------------------------------------------------------------------------
def first_nonempty_line(text: str) -> str:
    """The first line with anything but whitespace on it, else ""."""
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def normalize(text: str | None, *, first_line: bool = True, ignore_case: bool = True,
              ignore_punctuation: bool = True, regexes_to_ignore: Sequence[str | re.Pattern] = ()) -> str:
    """Normalise an answer for comparison.

    0. Every match of each of `regexes_to_ignore` is removed from the whole text, in order
       (as HF evaluate's exact_match does, before anything else).
    1. With first_line (used for predictions): keep only the first non-empty line, since a model
       often adds an explanation after the answer.
    2. Strip surrounding whitespace and collapse internal runs of whitespace to one space.
    3. With ignore_case: case-fold (case-insensitive comparison, Unicode-aware).
    4. With ignore_punctuation: strip *trailing* punctuation (".", "!", "?", ",", ";", ":",
       quotes, brackets, "…", ...) and any whitespace left before it. Punctuation inside the
       answer is kept: it is meaningful in labels ("card_arrival") and numbers ("3.5").

    Defaults are the built-in benchmarks' normalisation. Examples: "  Paris.\\nIt is in France"
    -> "paris"; "Card_Arrival" -> "card_arrival". None counts as "".
    """
    text = "" if text is None else str(text)
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if first_line:
        text = first_nonempty_line(text)
    text = _WS.sub(" ", text).strip()
    if ignore_case:
        text = text.casefold()
    if ignore_punctuation:
        text = text.rstrip(TRAILING_PUNCTUATION + " ").strip()
    return text


def normalize_reference(text: str | None, **kwargs: Any) -> str:
    """normalize() for a reference: never cut to its first line."""
    return normalize(text, **{**kwargs, "first_line": False})


# --- options ----------------------------------------------------------------------------------
def known_options(options: Any, benchmark: str, allowed: Iterable[str]) -> dict[str, Any]:
    """A copy of `options` (None is {}); InvalidArgument(field=<key>) for a non-dict or an unknown key."""
    return options_dict(options, f"benchmark {benchmark!r}", allowed)


def string_options(options: Any, benchmark: str, allowed: Iterable[str]) -> dict[str, Any]:
    """known_options() for a benchmark whose options are all strings: InvalidArgument(field=<key>)
    for an unknown key or a value that is not a string."""
    opts = known_options(options, benchmark, allowed)
    for key, value in opts.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"option {key!r} must be a string, got {type(value).__name__}", field=key)
    return opts


def bool_option(options: dict[str, Any], key: str, default: bool) -> bool:
    return flag(options, key, default)


def string_list(options: dict[str, Any], key: str) -> list[str]:
    """A list of strings ([] when missing or None)."""
    value = given(options, key, [])
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key} must be a list of strings, got {value!r}", field=key)
    return list(value)


def regex_list(options: dict[str, Any], key: str) -> list[re.Pattern]:
    """A list of regular expressions (strings), compiled; a pattern that does not compile is
    InvalidArgument naming the key."""
    patterns = []
    for pattern in string_list(options, key):
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise InvalidArgument(f"{key}: {pattern!r} is not a valid regular expression ({exc})", field=key) from None
    return patterns


def number_option(options: dict[str, Any], key: str, default: float, *, minimum: float = 0.0) -> float:
    value = given(options, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise InvalidArgument(f"{key} must be a number >= {minimum}, got {value!r}", field=key)
    return float(value)


def label_option(options: dict[str, Any], key: str = "labels") -> list[str]:
    """options.labels as a list of distinct non-empty strings ([] when not given)."""
    labels = string_list(options, key)
    if any(not label.strip() for label in labels):
        raise InvalidArgument(f"{key} must not contain empty labels", field=key)
    if len(set(labels)) != len(labels):
        raise InvalidArgument(f"{key} has duplicate labels", field=key)
    return labels


# --- aggregation ------------------------------------------------------------------------------
def mean_of(stats: Sequence[dict[str, Any]], metric: str) -> float:
    """The mean of each row's stats[metric] (0.0 for no rows): the aggregate of a "binary" or
    "mean" metric."""
    if not stats:
        return 0.0
    return float(sum(float(s[metric]) for s in stats) / len(stats))


# --- numbers ----------------------------------------------------------------------------------
#: A number as answers write it: optional sign and "$", digits with optional thousands commas
#: ("1,234"), an optional decimal part. "1,2,3" is three numbers; a trailing "." is not part of
#: it; a digit run glued to a word ("step2") is not a number.
_NUMBER = re.compile(r"(?<![\w.])(-?)\$?(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?!\d)")


def numbers_in(text: str) -> list[Decimal]:
    """Every number in `text`, in order, as Decimal ("$1,234.50" -> 1234.50, "-3" -> -3)."""
    out = []
    for m in _NUMBER.finditer(text or ""):
        sign = "-" if (m.group(1) or m.group(2)) else ""
        try:
            out.append(Decimal(sign + m.group(3).replace(",", "") + (m.group(4) or "")))
        except InvalidOperation:  # pragma: no cover - the pattern only matches valid numbers
            continue
    return out


def final_number(text: str | None) -> Decimal | None:
    """The answer's final number, GSM8K style: the first number after the last "####" when the
    text has one (GSM8K's references end "#### 42"), else the last number in the text; None when
    there is none. Commas, "$" and a trailing "." are dropped."""
    text = "" if text is None else str(text)
    if "####" in text:
        found = numbers_in(text.rsplit("####", 1)[1])
        return found[0] if found else None
    found = numbers_in(text)
    return found[-1] if found else None


# --- JSON -------------------------------------------------------------------------------------
_FENCE = re.compile(r"\A```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```\Z", re.DOTALL)


def strip_fence(text: str) -> str:
    """The text inside a Markdown code fence (```json ... ``` or ``` ... ```) that wraps the
    whole (stripped) answer; otherwise the stripped text unchanged."""
    text = (text or "").strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | None) -> tuple[bool, Any]:
    """(ok, value): the answer parsed as strict JSON after strip_fence(); NaN and Infinity (which
    Python's json accepts) are not JSON and fail."""
    try:
        return True, json.loads(strip_fence("" if text is None else str(text)), parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False, None
