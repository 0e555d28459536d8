"""Built-in benchmark "exact_match": the prediction equals the reference after normalisation.

Metric exact_match ("binary"): the share of rows whose normalised prediction equals the
normalised reference (tunesmith_builtin._answers.normalize; the reference is never cut to its
first line). Options, as HF evaluate's exact_match names them:
  ignore_case (default true): case-insensitive (Unicode case-folding);
  ignore_punctuation (default true): strip trailing punctuation and the whitespace before it
    ("Paris." == "paris"); punctuation inside an answer always counts;
  first_line (default true): only the prediction's first non-empty line counts;
  regexes_to_ignore (default []): regular expressions whose matches are removed from both texts
    before anything else (e.g. ["^Answer:\\s*"]).
Row statistics: {"exact_match": 1.0 | 0.0}.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import bool_option, known_options, mean_of, normalize, regex_list

OPTIONS = ("ignore_case", "ignore_punctuation", "first_line", "regexes_to_ignore")


class ExactMatch:
    name = "exact_match"
    description = ("Exact match after normalisation: first line of the prediction, whitespace collapsed, "
                   "case-insensitive, trailing punctuation removed (each optional).")
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (MetricSpec("exact_match", "binary", True, "share of predictions equal to the reference"),)

    def _settings(self, options: dict[str, Any] | None) -> dict[str, Any]:
        o = known_options(options, self.name, OPTIONS)
        return {"ignore_case": bool_option(o, "ignore_case", True),
                "ignore_punctuation": bool_option(o, "ignore_punctuation", True),
                "first_line": bool_option(o, "first_line", True),
                "regexes_to_ignore": regex_list(o, "regexes_to_ignore")}

    def validate_options(self, options: dict[str, Any]) -> None:
        self._settings(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        s = self._settings(options)
        ref_settings = {**s, "first_line": False}
        return [{"exact_match": float(normalize(r.prediction, **s) == normalize(r.reference, **ref_settings))}
                for r in rows]

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        return {"exact_match": mean_of(stats, "exact_match")}


@hookimpl
def register_benchmarks(register):
    register("exact_match", ExactMatch())
