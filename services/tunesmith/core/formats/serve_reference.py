"""The serve_as hand-off reference: greedy answers of the trained model in peft, stored with the
job's output artifact (the adapter folder, or the model folder of a full fine-tune).

    tunesmith-serve-reference.json
        {"format": "tunesmith.serve-reference", "version": "1.0",
         "eos_token": "<|im_end|>", "eos_token_ids": [2], "dtype": "float32",
         "samples": [{"prompt": ..., "max_new_tokens": 32, "prompt_tokens": 17,
                      "token_ids": [...], "text": ..., "finish_reason": "stop" | "length"}]}

token_ids are the generated ids, up to and including the EOS token when one ended the answer
(counted as the inference backends count completion tokens); text is their decoding without
special tokens. eos_token / eos_token_ids are the base model's (tokenizer and generation config),
the tokens that ended the answers. The worker writes it; the trainer service reads it to check
the served model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.core.formats._common import FormatError, check, read_file, require, stamp, write_file

FORMAT = "tunesmith.serve-reference"
VERSION = "1.0"
FILE = "tunesmith-serve-reference.json"
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class ServeSample:
    """One prompt's greedy answer in peft."""

    prompt: str
    max_new_tokens: int
    prompt_tokens: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "max_new_tokens": self.max_new_tokens, "prompt_tokens": self.prompt_tokens,
                "token_ids": list(self.token_ids), "text": self.text, "finish_reason": self.finish_reason}


@dataclass(frozen=True)
class ServeReference:
    samples: tuple[ServeSample, ...]
    eos_token: str = ""
    eos_token_ids: tuple[int, ...] = ()
    dtype: str = ""
    version: str = VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**stamp(FORMAT, self.version), "eos_token": self.eos_token, "eos_token_ids": list(self.eos_token_ids),
                "dtype": self.dtype, "samples": [s.to_dict() for s in self.samples]}

    @classmethod
    def from_dict(cls, d: Any, where: str = FILE) -> "ServeReference":
        check(d, fmt=FORMAT, version=VERSION, where=where)
        raw = d.get("samples")
        if not isinstance(raw, list):
            raise FormatError(f"{where}: samples must be a list")
        try:
            samples = tuple(ServeSample(prompt=require(s, "prompt", str, where),
                                        max_new_tokens=int(s["max_new_tokens"]), prompt_tokens=int(s["prompt_tokens"]),
                                        token_ids=tuple(int(t) for t in s["token_ids"]),
                                        text=require(s, "text", str, where),
                                        finish_reason=require(s, "finish_reason", str, where)) for s in raw)
            return cls(samples=samples, eos_token=str(d.get("eos_token") or ""),
                       eos_token_ids=tuple(int(t) for t in d.get("eos_token_ids") or ()),
                       dtype=str(d.get("dtype") or ""), version=str(d["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: malformed sample: {exc}") from None

    def write(self, folder: Path | str) -> Path:
        """Write FILE into `folder` (a staged artifact folder); its path."""
        path = Path(folder) / FILE
        write_file(path, self.to_dict())
        return path


def has_reference(folder: Path | str) -> bool:
    return (Path(folder) / FILE).is_file()


def read_reference(folder: Path | str) -> ServeReference:
    """The reference in an artifact folder; NotFound (field "reference") if it has none,
    FormatError if it is unreadable."""
    path = Path(folder) / FILE
    return ServeReference.from_dict(read_file(path, "reference"), str(path))
