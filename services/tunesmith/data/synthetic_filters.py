"""Filters of synthetic instruction/response pairs, each counted (self-instruct's filters).

`FilterSettings` holds the thresholds; `PairFilter(settings, seeds).check(pair)` returns the code
of the first filter that drops the pair (FILTER_CODES order) or "" to keep it, and a kept pair is
remembered so later ones are compared with it ("duplicate", "similar_to_kept"). `counts` has
every code, 0 included. Pure Python plus rouge-score; no model, no storage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

#: In the order they are applied; a dropped pair is counted under the first that drops it.
FILTER_CODES = ("format", "truncated", "refusal", "too_short", "off_topic", "duplicate", "similar_to_seed",
                "similar_to_kept")

#: Longest instruction accepted (characters): longer ones are a copied passage, not a request.
MAX_INSTRUCTION_CHARS = 500

_REFUSAL = re.compile(
    r"\b(as an ai\b|as a language model|i'?m an ai\b|i am an ai\b|i'?m sorry\b|i am sorry\b|i apologi[sz]e\b"
    r"|i cannot\b|i can'?t\b|i can not\b|i am unable\b|i'?m unable\b|i am not able\b|i'?m not able\b"
    r"|i do not have (access|the ability)|i don'?t have (access|the ability)|i won'?t be able\b)",
    re.IGNORECASE)
#: Refusal phrases count at the start of a response (its first REFUSAL_WINDOW characters),
#: except "as an AI" / "as a language model", which count anywhere.
REFUSAL_WINDOW = 120
_ANYWHERE = re.compile(r"\b(as an ai\b|as a language model)", re.IGNORECASE)
_LABEL = re.compile(r"^\s*(?:#+\s*)?(?:\d+[.)]\s*)?(?:\*\*)?(?:instruction|question|task|q)\s*\d*\s*(?:\*\*)?\s*[:.\-]\s*(?:\*\*)?\s*",
                    re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class FilterSettings:
    """Thresholds with the defaults filled in (see SyntheticFilters in data.proto)."""

    min_instruction_chars: int = 10
    min_response_chars: int = 10
    max_rouge_l: float = 0.7
    keep_truncated: bool = False
    allow_statements: bool = False
    allow_off_topic: bool = False


@dataclass(frozen=True)
class Pair:
    """One candidate: instruction, optional input (the chunk), response; truncated = the
    response stopped at max_new_tokens."""

    instruction: str
    input: str
    response: str
    truncated: bool = False


def clean_instruction(text: str) -> str:
    """The instruction in a model's answer to "write an instruction": the first non-empty line,
    without a leading "Instruction:" / "Question 1:" / "1." label or wrapping quotes; "" if none."""
    for line in (text or "").splitlines():
        line = re.sub(r"^\s*\d+[.)]\s+", "", _LABEL.sub("", line)).strip().strip('"“”').strip()
        if line:
            return line
    return ""


def looks_like_text(text: str) -> bool:
    """At least two words of letters, letters are at least half the non-space characters, and
    no chat-markup token ("<|im_start|>") leaked into it."""
    if len(_WORD.findall(text)) < 2 or "<|" in text or "|>" in text:
        return False
    letters = sum(1 for c in text if c.isalpha())
    return letters * 2 >= sum(1 for c in text if not c.isspace())


#: First words of a request: question words, auxiliaries and task verbs (lower case).
REQUEST_WORDS = frozenset("""
what why how when where which who whom whose is are was were does do did can could should would will
explain describe list name summarize summarise give write compare contrast define identify tell state outline
discuss classify suggest provide rewrite translate create find calculate choose imagine predict according based
using in from after before if imagine make draft convert rank sort estimate evaluate analyse analyze show
""".split())


def looks_like_request(text: str) -> bool:
    """A question (ends with "?") or a request (its first word is in REQUEST_WORDS), not a
    statement such as "This passage describes ..." or "Here's a rewritten version"."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    return text.rstrip().endswith("?") or (bool(words) and words[0] in REQUEST_WORDS)


#: Words too common to show an instruction is about its passage.
_COMMON = frozenset("""
this that these those with from what when where which while about would could should there their them they
have does done make made more most much many some such than then very also just only into onto your yours
text passage above below question task answer write explain describe example examples like reply help
topic tell give list name discuss thing things other another something anything everything next
""".split())


def content_stems(text: str) -> set[str]:
    """Five-letter prefixes of the words of four or more letters that are not in _COMMON."""
    return {w[:5] for w in re.findall(r"[^\W\d_]{4,}", text.lower()) if w not in _COMMON}


def is_off_topic(instruction: str, passage: str) -> bool:
    """The instruction shares no content word (by five-letter prefix) with its passage."""
    return bool(passage.strip()) and not content_stems(instruction) & content_stems(passage)


def is_refusal(response: str) -> bool:
    """A response that declines rather than answers ("I'm sorry, ...", "As an AI ...")."""
    return bool(_REFUSAL.search(response[:REFUSAL_WINDOW]) or _ANYWHERE.search(response))


def normalise(text: str) -> str:
    """Lower case, punctuation and runs of spaces collapsed to one space (for duplicates)."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


class PairFilter:
    """Applies FILTER_CODES in order; remembers kept pairs. Not thread-safe."""

    def __init__(self, settings: FilterSettings, seed_instructions: list[str]):
        from rouge_score import rouge_scorer

        self.settings = settings
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.seeds = [s for s in seed_instructions if s.strip()]
        self.kept: list[str] = []
        self._seen: set[tuple[str, str]] = set()
        self.counts: dict[str, int] = {code: 0 for code in FILTER_CODES}

    def _max_rouge(self, instruction: str, others: list[str]) -> float:
        return max((self.scorer.score(o, instruction)["rougeL"].fmeasure for o in others), default=0.0)

    def instruction_ok(self, instruction: str) -> bool:
        """Whether an instruction passes the "format" filter (then its response is worth asking for)."""
        ins = instruction.strip()
        return (bool(ins) and len(ins) <= MAX_INSTRUCTION_CHARS and looks_like_text(ins)
                and (self.settings.allow_statements or looks_like_request(ins)))

    def reason(self, pair: Pair) -> str:
        """The first filter that drops `pair`, or "" (does not count or remember it)."""
        s = self.settings
        ins, resp = pair.instruction.strip(), pair.response.strip()
        if not self.instruction_ok(ins) or not resp:
            return "format"
        if pair.truncated and not s.keep_truncated:
            return "truncated"
        if is_refusal(resp):
            return "refusal"
        if len(ins) < s.min_instruction_chars or len(resp) < s.min_response_chars:
            return "too_short"
        if not s.allow_off_topic and is_off_topic(ins, pair.input):
            return "off_topic"
        if (normalise(ins), normalise(resp)) in self._seen:
            return "duplicate"
        if s.max_rouge_l < 1.0:  # a ROUGE-L F-measure is at most 1
            if self._max_rouge(ins, self.seeds) > s.max_rouge_l:
                return "similar_to_seed"
            if self._max_rouge(ins, self.kept) > s.max_rouge_l:
                return "similar_to_kept"
        return ""

    def check(self, pair: Pair) -> str:
        """Like `reason`, but counts a dropped pair and remembers a kept one."""
        code = self.reason(pair)
        if code:
            self.counts[code] += 1
        else:
            self.kept.append(pair.instruction.strip())
            self._seen.add((normalise(pair.instruction), normalise(pair.response)))
        return code
