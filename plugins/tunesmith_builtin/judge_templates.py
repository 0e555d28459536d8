"""Built-in judge prompt templates for model judges: "pairwise" (MT-Bench style).

A template follows tunesmith.core.contracts.JudgeTemplate: render() builds the prompt the judge
model sees for one comparison, parse() reads its verdict ("A", "B" or "tie") from the reply.

"pairwise" asks for a final verdict in double brackets, as MT-Bench's pairwise judge does:
``[[A]]`` (the first answer is better), ``[[B]]`` (the second) or ``[[C]]`` (a tie). parse()
takes the LAST such marker in the reply (a judge that reasons first may quote the markers while
explaining them); a reply with no marker is a tie.
"""
from __future__ import annotations

import re

from tunesmith.core.plugins import hookimpl

DEFAULT_RUBRIC = (
    "Consider how helpful, relevant, accurate, deep and detailed each response is, and how well it "
    "follows the user's instructions."
)

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. Choose the assistant that answers the user's "
    "question better. Avoid any position biases: the order in which the responses were presented "
    "must not influence your decision. Do not let the length of the responses influence your "
    "evaluation, and do not favour certain names of the assistants. Be as objective as possible."
)

#: A verdict marker: [[A]], [[B]] or [[C]] (spaces inside the brackets tolerated).
MARKER = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_VERDICT_OF = {"A": "A", "B": "B", "C": "tie"}


class PairwiseTemplate:
    """MT-Bench style pairwise comparison with an optional reference answer."""

    name = "pairwise"
    description = "MT-Bench style pairwise judge prompt; the verdict is the last [[A]], [[B]] or [[C]] (tie)"

    def render(self, prompt: str, answer_a: str, answer_b: str, *, rubric: str = "",
               reference: str = "") -> str:
        parts = [
            f"[Instruction]\n{PAIRWISE_SYSTEM}",
            f"[Rubric]\n{rubric.strip() or DEFAULT_RUBRIC}",
            f"[User Question]\n{prompt}",
        ]
        if reference:
            parts.append("A reference answer is provided; judge the responses' correctness against it.\n"
                         f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]")
        parts += [
            f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]",
            f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]",
            ("Begin with a short explanation comparing the two responses. Then output your final "
             "verdict. Reply with exactly one of: [[A]] if assistant A is better, [[B]] if assistant "
             "B is better, [[C]] for a tie."),
        ]
        return "\n\n".join(parts) + "\n"

    def parse(self, reply: str) -> str:
        found = MARKER.findall(reply or "")
        return _VERDICT_OF[found[-1]] if found else "tie"


@hookimpl
def register_judge_templates(register) -> None:
    register("pairwise", PairwiseTemplate())
