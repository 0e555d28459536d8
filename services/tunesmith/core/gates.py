"""The regression gate's shared vocabulary: the bundled general-ability suites and the gate's
defaults. The evaluator runs the suites (tunesmith.evaluator.suites holds their data); the
trainer checks a training job's gate against these names at CreateTrainingJob, without
importing the evaluator."""
from __future__ import annotations

#: Bundled suites: multiple choice by log-likelihood, and perplexity on held-out general text.
SUITE_NAMES: tuple[str, ...] = ("general_mc", "general_text")
DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHA = 0.05


def check_gate_fields(v, suites, tolerance: float, alpha: float, max_rows: int, prefix: str) -> None:
    """Range checks of a gate message (evaluator RegressionGate or trainer QualityGate) into the
    Violations `v`, naming fields under `prefix` (e.g. "spec.gate")."""
    from tunesmith.core.validation import check_float, check_int

    for i, name in enumerate(suites):
        v.check(name in SUITE_NAMES, f"{prefix}.suites[{i}]", f"unknown suite {name!r} (known: {', '.join(SUITE_NAMES)})")
    check_float(v, tolerance, f"{prefix}.tolerance", 0.0, 1.0, zero_means=str(DEFAULT_TOLERANCE))
    check_float(v, alpha, f"{prefix}.alpha", 0.0, 1.0, lo_open=True, zero_means=str(DEFAULT_ALPHA))
    v.check(alpha < 1.0, f"{prefix}.alpha", "must be below 1")
    check_int(v, max_rows, f"{prefix}.max_rows", 0, 1_000_000, zero_means="all rows")
