"""Built-in benchmark "rouge": ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures.

Computed by Google's rouge-score (rouge_score.rouge_scorer.RougeScorer, the implementation HF
evaluate wraps): each row's F-measure of the prediction against the reference, and each metric
is the mean over rows ("mean"), which is what HF evaluate's rouge reports with
use_aggregator=False averaged. Values are in [0, 1].
Option use_stemmer (default true: Porter stemming, as ROUGE-1.5.5's -m and most papers; note
rouge-score's and HF evaluate's own default is false). rouge-score's tokenizer lower-cases and
keeps only ASCII letters and digits, so text in other scripts scores 0; rougeLsum treats
newlines as sentence boundaries (no sentence splitting is added).
Row statistics: {"rouge1", "rouge2", "rougeL", "rougeLsum": F-measure}.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import bool_option, known_options, mean_of

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class Rouge:
    name = "rouge"
    description = "ROUGE-1/2/L/Lsum F-measure (rouge-score), mean over rows; Porter stemming by default."
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (
        MetricSpec("rouge1", "mean", True, "unigram-overlap F-measure"),
        MetricSpec("rouge2", "mean", True, "bigram-overlap F-measure"),
        MetricSpec("rougeL", "mean", True, "longest-common-subsequence F-measure"),
        MetricSpec("rougeLsum", "mean", True, "summary-level LCS F-measure (newline-separated sentences)"),
    )

    def _use_stemmer(self, options: dict[str, Any] | None) -> bool:
        return bool_option(known_options(options, self.name, ("use_stemmer",)), "use_stemmer", True)

    def validate_options(self, options: dict[str, Any]) -> None:
        self._use_stemmer(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        from rouge_score.rouge_scorer import RougeScorer

        scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=self._use_stemmer(options))
        out = []
        for r in rows:
            scores = scorer.score(r.reference or "", r.prediction or "")  # score(target, prediction)
            out.append({t: float(scores[t].fmeasure) for t in ROUGE_TYPES})
        return out

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        return {t: mean_of(stats, t) for t in ROUGE_TYPES}


@hookimpl
def register_benchmarks(register):
    register("rouge", Rouge())
