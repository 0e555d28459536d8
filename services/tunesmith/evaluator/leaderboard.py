"""A leaderboard (kind "leaderboard"): every pairwise judgement of a named board, and the ratings
recomputed from all of them. Stored at leaderboards/<name>.json:

    format      "tunesmith.leaderboard"
    version     "1.0"
    name        letters, digits, '.', '_', '-' (at most 64 characters, starting with a letter
                or digit)
    updated_at  when the last update was written (seconds since the epoch)
    labels      model reference -> the label it had in its latest evaluation
    entries     one per judged PairResult: evaluation_id, judge, time, prompt_index, a, b (the
                model references), a_label, b_label (the labels in that evaluation), winner (a
                model reference, or null for a tie), consistent (both orders agreed)
    ratings     best first: model (reference), label, rating, ci_low, ci_high, wins, losses, ties

A model is identified by its model reference (tunesmith.evaluator.runner.model_reference: the
model, plus "+<adapter URI>"), so a version keeps its judgements across evaluations whatever it
was called in each; it is shown by its latest label. Ratings are
tunesmith.evaluator.elo.bradley_terry over every entry (judges pooled), with the bootstrap
resampling prompts: a prompt is (evaluation_id, prompt_index), so the judgements made on one
prompt of one evaluation stay together. The bootstrap seed is fixed (0), so equal entries give
equal ratings.

Writes: update_leaderboard() reads, appends, recomputes and replaces the whole document with one
atomic storage write (Storage.write_bytes: a staged file renamed into place), so a reader or a
crash mid-write sees the old document or the new one, never part. The storage API has no
conditional write; concurrent updaters of one name serialise on a lock file
(leaderboards/.<name>.lock, fcntl.flock on the storage's local path, as the model store does),
so no update is lost between processes sharing a POSIX filesystem. Where fcntl is missing only
the threads of one process are serialised.

The evaluator alone writes and reads leaderboards, so the format lives with it (not in
core/formats) and computes the ratings with tunesmith.evaluator.elo.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.core.formats._common import FormatError, check, read_key, require, stamp
from tunesmith.core.storage import file_lock

FORMAT = "tunesmith.leaderboard"
VERSION = "1.0"
KIND = "leaderboard"
PREFIX = "leaderboards"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Bootstrap settings of the stored ratings.
RESAMPLES = 200
SEED = 0



@dataclass(frozen=True)
class LeaderboardEntry:
    """One judged pair (a tunesmith.evaluator.judging.PairResult) with the models' references."""

    evaluation_id: str
    judge: str
    time: float
    prompt_index: int
    a: str
    b: str
    winner: str | None
    consistent: bool
    a_label: str = ""
    b_label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"evaluation_id": self.evaluation_id, "judge": self.judge, "time": self.time,
                "prompt_index": self.prompt_index, "a": self.a, "b": self.b, "a_label": self.a_label,
                "b_label": self.b_label, "winner": self.winner, "consistent": self.consistent}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> LeaderboardEntry:
        if not isinstance(d, Mapping):
            raise FormatError(f"{where}: expected an object, got {type(d).__name__}")
        a, b = require(d, "a", str, where), require(d, "b", str, where)
        winner = d.get("winner")
        if winner is not None and winner not in (a, b):
            raise FormatError(f"{where}: winner {winner!r} is neither {a!r} nor {b!r}")
        return cls(evaluation_id=require(d, "evaluation_id", str, where), judge=str(d.get("judge", "")),
                   time=float(require(d, "time", (int, float), where)),
                   prompt_index=require(d, "prompt_index", int, where), a=a, b=b, winner=winner,
                   consistent=require(d, "consistent", bool, where), a_label=str(d.get("a_label", "")),
                   b_label=str(d.get("b_label", "")))


@dataclass(frozen=True)
class LeaderboardRating:
    """A model's rating on the board (tunesmith.evaluator.elo.Rating, keyed by reference)."""

    model: str
    label: str
    rating: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "label": self.label, "rating": self.rating, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "wins": self.wins, "losses": self.losses, "ties": self.ties}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> LeaderboardRating:
        if not isinstance(d, Mapping):
            raise FormatError(f"{where}: expected an object, got {type(d).__name__}")
        num = (int, float)
        return cls(model=require(d, "model", str, where), label=str(d.get("label", "")),
                   rating=float(require(d, "rating", num, where)), ci_low=float(require(d, "ci_low", num, where)),
                   ci_high=float(require(d, "ci_high", num, where)), wins=require(d, "wins", int, where),
                   losses=require(d, "losses", int, where), ties=require(d, "ties", int, where))


@dataclass(frozen=True)
class Leaderboard:
    name: str
    entries: tuple[LeaderboardEntry, ...] = ()
    ratings: tuple[LeaderboardRating, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    updated_at: float = 0.0
    version: str = VERSION

    def rating(self, model: str) -> LeaderboardRating:
        """The rating of a model reference; KeyError if it is not on the board."""
        for r in self.ratings:
            if r.model == model:
                return r
        raise KeyError(model)

    def to_dict(self) -> dict[str, Any]:
        return {**stamp(FORMAT, self.version), "name": self.name, "updated_at": self.updated_at,
                "labels": dict(self.labels), "entries": [e.to_dict() for e in self.entries],
                "ratings": [r.to_dict() for r in self.ratings]}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Leaderboard:
        check(d, fmt=FORMAT, version=VERSION, where=where)
        labels = require(d, "labels", dict, where)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise FormatError(f"{where}: 'labels' must map model references to labels (strings)")
        entries = tuple(LeaderboardEntry.from_dict(e, f"{where}: entries[{i}]")
                        for i, e in enumerate(require(d, "entries", list, where)))
        ratings = tuple(LeaderboardRating.from_dict(r, f"{where}: ratings[{i}]")
                        for i, r in enumerate(require(d, "ratings", list, where)))
        for e in entries:
            for ref in (e.a, e.b):
                if ref not in labels:
                    raise FormatError(f"{where}: an entry names model {ref!r}, which 'labels' lacks")
        return cls(name=require(d, "name", str, where), entries=entries, ratings=ratings, labels=dict(labels),
                   updated_at=float(require(d, "updated_at", (int, float), where)), version=str(d["version"]))


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidArgument(f"bad leaderboard name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting "
                              "with a letter or digit", field="leaderboard")
    return name


def board_key(name: str) -> str:
    return f"{PREFIX}/{validate_name(name)}.json"


def read_leaderboard(storage, name: str) -> Leaderboard:
    """The board `name`; NotFound(field="leaderboard") if there is none, FormatError if the file
    is not a leaderboard this version reads."""
    key = board_key(name)
    board = Leaderboard.from_dict(read_key(storage, key, "leaderboard"), key)
    if board.name != name:
        raise FormatError(f"{key}: holds leaderboard {board.name!r}, not {name!r}")
    return board


def compute_ratings(entries: Sequence[LeaderboardEntry], labels: Mapping[str, str]) -> tuple[LeaderboardRating, ...]:
    """Bradley-Terry ratings of every model in `labels` over `entries` (see the module docstring)."""
    from tunesmith.evaluator.elo import bradley_terry
    from tunesmith.evaluator.judging import PairResult

    prompts: dict[tuple[str, int], int] = {}
    results = [PairResult(prompts.setdefault((e.evaluation_id, e.prompt_index), len(prompts)), e.a, e.b, e.winner,
                          e.consistent) for e in entries]
    ratings = bradley_terry(results, list(labels), resamples=RESAMPLES, seed=SEED)
    return tuple(LeaderboardRating(r.label, labels[r.label], r.rating, r.ci_low, r.ci_high, r.wins, r.losses, r.ties)
                 for r in ratings)


def _board_lock(storage, name: str):
    return file_lock(storage.path(f"{PREFIX}/.{name}.lock"))


def update_leaderboard(storage, name: str, results: Sequence[Any], models: Mapping[str, str], *,
                       evaluation_id: str, judge: str) -> Leaderboard:
    """Append the PairResults of one evaluation to the board `name` (created when missing) and
    recompute its ratings over every entry; returns the board as written.

    models: label -> model reference for every label the results name. A result between two
    labels with the same reference is left out (it says nothing about how models rank).
    A ValueError or InvalidArgument is raised before anything is written."""
    validate_name(name)
    if not isinstance(evaluation_id, str) or not evaluation_id:
        raise InvalidArgument("a leaderboard entry needs an evaluation id", field="evaluation_id")
    if not isinstance(judge, str):
        raise InvalidArgument("judge must be a name", field="judge")
    for label, ref in models.items():
        if not isinstance(label, str) or not isinstance(ref, str) or not ref:
            raise ValueError(f"models must map labels to model references (strings): {label!r} -> {ref!r}")
    key = board_key(name)
    with _board_lock(storage, name):
        try:
            old = read_leaderboard(storage, name)
        except NotFound:  # a new board (a corrupt one is a FormatError, never overwritten)
            old = Leaderboard(name)
        now = time.time()
        new_entries = []
        for r in results:
            for label in (r.a, r.b):
                if label not in models:
                    raise ValueError(f"result on prompt {r.prompt_index} names {label!r}, which `models` lacks")
            if r.winner is not None and r.winner not in (r.a, r.b):
                raise ValueError(f"result on prompt {r.prompt_index}: winner {r.winner!r} is neither side")
            a, b = models[r.a], models[r.b]
            if a == b:
                continue
            new_entries.append(LeaderboardEntry(
                evaluation_id=evaluation_id, judge=judge, time=now, prompt_index=int(r.prompt_index), a=a, b=b,
                winner=None if r.winner is None else models[r.winner], consistent=bool(r.consistent),
                a_label=r.a, b_label=r.b))
        labels = dict(old.labels)
        used = {label for r in results for label in (r.a, r.b)}
        labels.update({models[label]: label for label in models if label in used})
        entries = old.entries + tuple(new_entries)
        board = Leaderboard(name=name, entries=entries, ratings=compute_ratings(entries, labels), labels=labels,
                            updated_at=now)
        data = json.dumps(board.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False).encode()
        storage.write_bytes(key, data + b"\n")
    return board
