"""Documents of a synthetic-data job: read as UTF-8 text, cut into chunks.

`read_text_file(path, field)` returns a file's text or raises InvalidArgument naming `field`
(not UTF-8, empty, too big); `chunk_text(text, limit)` cuts a text into chunks of at most
`limit` characters, at paragraph, line, sentence or word ends where it can.
"""
from __future__ import annotations

import re
from pathlib import Path

from tunesmith.core.errors import InvalidArgument, NotFound

MAX_DOCUMENT_BYTES = 10 * 1024 ** 2
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def read_text_file(path: Path, field: str) -> str:
    """The file's text; NotFound / InvalidArgument naming `field` (and the byte offset of bad UTF-8)."""
    if not path.is_file():
        raise NotFound(f"no file at {str(path)!r}", field=field)
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{path.name} is {size} bytes; a document is at most {MAX_DOCUMENT_BYTES} bytes "
                              "(split it into several files)", field=field)
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise InvalidArgument(f"{path.name} is not a text file (it contains NUL bytes)", field=field)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path.name} is not UTF-8 text: byte {exc.start} is {raw[exc.start:exc.start + 1]!r}",
                              field=field) from None
    if not text.strip():
        raise InvalidArgument(f"{path.name} holds no text", field=field)
    return text


def _split_piece(piece: str, limit: int) -> list[str]:
    """A paragraph longer than `limit`: by lines, then sentences, then words, then hard cuts."""
    for pattern in (r"\n", _SENTENCE_END, r"\s+"):
        parts = [p for p in re.split(pattern, piece) if p.strip()]
        if len(parts) > 1:
            return _pack(parts, limit, " " if pattern != r"\n" else "\n")
    return [piece[i:i + limit] for i in range(0, len(piece), limit)]


def _pack(parts: list[str], limit: int, joiner: str) -> list[str]:
    chunks: list[str] = []
    current = ""
    for part in parts:
        part = part.strip()
        if len(part) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.extend(_split_piece(part, limit))
            continue
        candidate = f"{current}{joiner}{part}" if current else part
        if len(candidate) <= limit:
            current = candidate
        else:
            chunks.append(current)
            current = part
    if current:
        chunks.append(current)
    return chunks


def chunk_text(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` characters covering the text's paragraphs in order (blank
    lines between paragraphs; whitespace-only chunks dropped)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    return [c for c in _pack(paragraphs, limit, "\n\n") if c.strip()]


#: The bundled sample (project-written, Apache-2.0): one document and three seed examples.
SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE_DOCUMENT = SAMPLES / "water_cycle.txt"
SAMPLE_SEEDS = SAMPLES / "seeds.jsonl"


def sample_seeds() -> list[dict[str, str]]:
    """The bundled seed examples as {"instruction", "input", "response"} dicts."""
    import json

    rows = [json.loads(line) for line in SAMPLE_SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"instruction": r["instruction"], "input": r.get("input", ""), "response": r["output"]} for r in rows]
