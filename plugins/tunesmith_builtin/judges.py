"""Built-in rule-based pairwise judges: "reference_match", "shorter" and "longer".

Each follows tunesmith.core.contracts.Judge: compare(prompt, answer_a, answer_b, *, reference)
returns "A" (the first answer wins), "B" (the second) or "tie". They are deterministic and need
no model: for tests, and for checks whose preference is a plain rule.

- reference_match: the answer equal to the reference (both compared after strip() and
  casefold()) wins; both or neither equal, or no reference given, is a tie.
- shorter: the shorter non-empty answer wins (length in characters after strip()); an empty
  answer loses to a non-empty one; equal lengths (or both empty) are a tie.
- longer: the longer answer wins (length in characters after strip()); equal lengths are a tie.
"""
from __future__ import annotations

from tunesmith.core.plugins import hookimpl


def _norm(text: str) -> str:
    return (text or "").strip().casefold()


class ReferenceMatch:
    name = "reference_match"
    description = "prefers the answer equal to the reference (after strip and casefold); both or neither: tie"

    def compare(self, prompt: str, answer_a: str, answer_b: str, *, reference: str = "") -> str:
        ref = _norm(reference)
        if not ref:
            return "tie"
        a, b = _norm(answer_a) == ref, _norm(answer_b) == ref
        return "A" if a and not b else "B" if b and not a else "tie"


class Shorter:
    name = "shorter"
    description = "prefers the shorter non-empty answer (characters after strip); equal lengths: tie"

    def compare(self, prompt: str, answer_a: str, answer_b: str, *, reference: str = "") -> str:
        a, b = len((answer_a or "").strip()), len((answer_b or "").strip())
        if a == b:
            return "tie"
        if a == 0 or b == 0:  # an empty answer is no answer: the non-empty one wins
            return "A" if b == 0 else "B"
        return "A" if a < b else "B"


class Longer:
    name = "longer"
    description = "prefers the longer answer (characters after strip); equal lengths: tie"

    def compare(self, prompt: str, answer_a: str, answer_b: str, *, reference: str = "") -> str:
        a, b = len((answer_a or "").strip()), len((answer_b or "").strip())
        return "tie" if a == b else "A" if a > b else "B"


@hookimpl
def register_judges(register) -> None:
    register("reference_match", ReferenceMatch())
    register("shorter", Shorter())
    register("longer", Longer())
