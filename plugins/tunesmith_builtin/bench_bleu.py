"""Built-in benchmark "bleu": corpus BLEU exactly as sacrebleu computes it, on a 0-1 scale.

sacrebleu.metrics.BLEU with its corpus_bleu defaults (exponential smoothing, max n-gram order
4, no effective order), one reference per row, the whole prediction as the hypothesis. The
metric is sacrebleu's score divided by 100, so that like every built-in metric it lies in
[0, 1] (0.2731 where sacrebleu prints 27.31; clamped at 1.0 against float rounding).

BLEU is not a mean of per-row scores ("corpus"): score_rows keeps each row's sufficient
statistics (sacrebleu's own segment statistics: hypothesis and reference lengths, n-gram
matches and totals), and aggregate sums them and computes the score from the sums, as
sacrebleu's paired bootstrap (sacrebleu/significance.py) does, so a resample of rows scores
exactly what corpus_bleu gives for those rows. (This uses BLEU's _extract_corpus_statistics
and _compute_score_from_stats, which sacrebleu's significance tests rely on too.)
Options: tokenize (one of TOKENIZERS, default "13a"), lowercase (default false).
Row statistics: {"bleu_stats": [sys_len, ref_len, matches 1-4, totals 1-4]}.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.core.contracts import EvalRow, MetricSpec
from tunesmith.core.errors import InvalidArgument
from tunesmith.core.plugins import hookimpl

from tunesmith_builtin._answers import bool_option, known_options
from tunesmith_builtin._options import given

#: sacrebleu tokenizers that need nothing beyond sacrebleu itself (the MeCab and SentencePiece
#: ones need extra packages or a download).
TOKENIZERS = ("13a", "none", "intl", "char", "zh")


class Bleu:
    name = "bleu"
    description = "Corpus BLEU (sacrebleu, 13a tokenisation by default), on a 0-1 scale (sacrebleu's score / 100)."
    needs = "generation"
    requires: frozenset[str] = frozenset()
    metrics = (MetricSpec("bleu", "corpus", True, "corpus BLEU / 100"),)

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, bool], Any] = {}

    def _settings(self, options: dict[str, Any] | None) -> tuple[str, bool]:
        o = known_options(options, self.name, ("tokenize", "lowercase"))
        tokenize = given(o, "tokenize", "13a")
        if tokenize not in TOKENIZERS:
            raise InvalidArgument(f"tokenize must be one of {', '.join(TOKENIZERS)}, got {tokenize!r}",
                                  field="tokenize")
        return tokenize, bool_option(o, "lowercase", False)

    def _bleu(self, options: dict[str, Any] | None) -> Any:
        key = self._settings(options)
        if key not in self._metrics:
            from sacrebleu.metrics import BLEU

            self._metrics[key] = BLEU(tokenize=key[0], lowercase=key[1])
        return self._metrics[key]

    def validate_options(self, options: dict[str, Any]) -> None:
        self._settings(options)

    def requests(self, row: EvalRow, options: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    def score_rows(self, rows: Sequence[EvalRow], options: dict[str, Any]) -> list[dict[str, Any]]:
        if not rows:
            return []
        bleu = self._bleu(options)
        stats = bleu._extract_corpus_statistics([r.prediction or "" for r in rows], [[r.reference or "" for r in rows]])
        return [{"bleu_stats": [int(x) for x in s]} for s in stats]

    def aggregate(self, stats: Sequence[dict[str, Any]], options: dict[str, Any]) -> dict[str, float]:
        if not stats:
            return {"bleu": 0.0}
        bleu = self._bleu(options)
        summed = [sum(col) for col in zip(*(s["bleu_stats"] for s in stats))]
        # sacrebleu's exp/log arithmetic gives 100.00000000000004 for a perfect corpus: clamp.
        return {"bleu": min(1.0, float(bleu._compute_score_from_stats(summed).score) / 100.0)}


@hookimpl
def register_benchmarks(register):
    register("bleu", Bleu())
