"""The bundled general-ability suites the evaluator's regression gate runs to catch forgetting.

    general_mc    60 general-knowledge multiple-choice questions written for this project
                  (Apache-2.0), scored with the "mc_loglikelihood" benchmark (acc, acc_norm);
    general_text  100 held-out GSM8K test questions with their worked solutions (MIT, see
                  LICENSE-gsm8k), scored with the "perplexity" benchmark.

Both are package data read with importlib.resources; README.md in this folder says where each
row comes from. load_suite(name) returns a Suite whose rows are EvalRows ready for the named
benchmark (prompt "Question: <question>\\nAnswer:"; for general_mc the choices and gold index,
the reference the right choice; for general_text the reference is the worked solution).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tunesmith.core.contracts import EvalRow
from tunesmith.core.errors import NotFound
from tunesmith.core.formats.dataset import choice_index

SUITE_NAMES: tuple[str, ...] = ("general_mc", "general_text")


@dataclass(frozen=True)
class Suite:
    """One bundled suite: its rows and the registered benchmark that scores them."""

    name: str
    description: str
    benchmark: str
    rows: tuple[EvalRow, ...]
    source: str
    licence: str


_INFO: dict[str, dict[str, str]] = {
    "general_mc": {
        "file": "general_mc.jsonl", "benchmark": "mc_loglikelihood",
        "description": "General-knowledge multiple choice (geography, science, arithmetic, language, everyday "
                       "facts; 4 choices each), scored by log-likelihood as lm-evaluation-harness does.",
        "source": "written for this project (services/tunesmith/evaluator/suites/README.md)",
        "licence": "Apache-2.0"},
    "general_text": {
        "file": "general_text.jsonl", "benchmark": "perplexity",
        "description": "Perplexity of worked solutions to grade-school maths questions (GSM8K test set, the first "
                       "100 rows, calculator annotations removed).",
        "source": "GSM8K test split, openai/grade-school-math (Cobbe et al., 2021)",
        "licence": "MIT (LICENSE-gsm8k)"},
}


def _read_jsonl(file: str) -> list[dict]:
    text = resources.files(__name__).joinpath(file).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


@cache
def load_suite(name: str) -> Suite:
    """The bundled suite `name` (one of SUITE_NAMES); NotFound(field="suite") for another."""
    if name not in _INFO:
        raise NotFound(f"no bundled suite {name!r} (suites: {', '.join(SUITE_NAMES)})", field="suite")
    info = _INFO[name]
    rows = []
    for d in _read_jsonl(info["file"]):
        if name == "general_mc":
            choices = tuple(str(c) for c in d["choices"])
            gold = choice_index(choices, d["answer"])
            rows.append(EvalRow(prompt=_prompt(d["question"]), reference=choices[gold], choices=choices, gold=gold))
        else:
            rows.append(EvalRow(prompt=d["prompt"], reference=str(d["reference"]).strip()))
    return Suite(name=name, description=info["description"], benchmark=info["benchmark"], rows=tuple(rows),
                 source=info["source"], licence=info["licence"])
