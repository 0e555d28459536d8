"""The leaderboard format: judged pairs appended per evaluation, ratings recomputed over all of
them, atomic replacement, locking, and clear errors for unknown, bad or corrupt boards."""
from __future__ import annotations

import json
import threading

import pytest

import tunesmith.core.storage as storage_mod
from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.core.formats import FormatError
from tunesmith.evaluator.leaderboard import (
    FORMAT,
    Leaderboard,
    board_key,
    compute_ratings,
    read_leaderboard,
    update_leaderboard,
)
from tunesmith.evaluator.elo import bradley_terry
from tunesmith.evaluator.judging import PairResult

V1, V2, V3 = "tiny-base", "tiny-base+artifact://adapter/" + "1" * 64, "tiny-base+artifact://adapter/" + "2" * 64


def _results(a: str, b: str, a_wins: int, b_wins: int, ties: int = 0) -> list[PairResult]:
    winners = [a] * a_wins + [b] * b_wins + [None] * ties
    return [PairResult(i, a, b, w, w is not None) for i, w in enumerate(winners)]


def _first_update(storage):
    return update_leaderboard(storage, "tiny-board", _results("base", "tuned", 1, 3), {"base": V1, "tuned": V2},
                              evaluation_id="ev-1", judge="shorter")


def test_two_updates_with_a_new_version_joining(storage):
    first = _first_update(storage)
    assert [r.model for r in first.ratings] == [V2, V1]  # the tuned version won 3 of 4
    assert first.labels == {V1: "base", V2: "tuned"} and len(first.entries) == 4
    assert first.rating(V2).rating - first.rating(V1).rating > 150
    assert read_leaderboard(storage, "tiny-board") == first

    # a second evaluation: the old "tuned" version is now called "v2" and meets a new v3
    second = update_leaderboard(storage, "tiny-board", _results("v2", "v3", 1, 4, ties=1), {"v2": V2, "v3": V3},
                                evaluation_id="ev-2", judge="shorter")
    assert len(second.entries) == 4 + 6 and second.entries[:4] == first.entries
    assert second.labels == {V1: "base", V2: "v2", V3: "v3"}  # shown by its latest label
    assert [r.model for r in second.ratings] == [V3, V2, V1]
    assert [r.label for r in second.ratings] == ["v3", "v2", "base"]
    v2 = second.rating(V2)
    assert (v2.wins, v2.losses, v2.ties) == (3 + 1, 1 + 4, 1)  # counted over both evaluations
    # recomputed over every entry, the prompts of each evaluation kept apart
    all_results = [PairResult(i, V1, V2, [V1, V2, V2, V2][i]) for i in range(4)] + \
        [PairResult(4 + i, V2, V3, w, w is not None) for i, w in enumerate([V2, V3, V3, V3, V3, None])]
    expected = bradley_terry(all_results, [V1, V2, V3], seed=0)
    assert [(r.model, r.rating, r.ci_low, r.ci_high) for r in second.ratings] == \
        [(r.label, r.rating, r.ci_low, r.ci_high) for r in expected]
    assert compute_ratings(second.entries, second.labels) == second.ratings
    assert read_leaderboard(storage, "tiny-board") == second
    entry = second.entries[-1]
    assert (entry.evaluation_id, entry.judge, entry.a_label, entry.b_label, entry.winner, entry.consistent) == \
        ("ev-2", "shorter", "v2", "v3", None, False)

    stored = json.loads(storage.read_bytes(board_key("tiny-board")))
    assert stored["format"] == FORMAT and stored["version"] == "1.0" and stored["name"] == "tiny-board"


def test_a_pair_of_one_model_under_two_labels_is_left_out(storage):
    board = update_leaderboard(storage, "same", _results("x", "y", 2, 0) + [PairResult(9, "x", "z", "x")],
                               {"x": V1, "y": V1, "z": V2}, evaluation_id="ev", judge="rule")
    assert len(board.entries) == 1 and board.entries[0].winner == V1


def test_unknown_and_bad_names(storage):
    with pytest.raises(NotFound):
        read_leaderboard(storage, "nobody")
    for bad in ("", "../x", "a/b", "has space", ".hidden", "x" * 65):
        with pytest.raises(InvalidArgument):
            read_leaderboard(storage, bad)
        with pytest.raises(InvalidArgument):
            update_leaderboard(storage, bad, [], {}, evaluation_id="ev", judge="rule")
    good = update_leaderboard(storage, "ok.name_1-2", _results("p", "q", 1, 0), {"p": V1, "q": V2},
                              evaluation_id="ev", judge="rule")
    assert read_leaderboard(storage, "ok.name_1-2") == good


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b"[]", "expected a JSON object"),
    (json.dumps({"format": "tunesmith.report", "version": "1.0"}).encode(), "not 'tunesmith.leaderboard'"),
    (json.dumps({"format": FORMAT, "version": "2.0"}).encode(), "version 2.0 is not supported"),
    (json.dumps({"format": FORMAT, "version": "1.0", "name": "b", "updated_at": 0, "labels": {},
                 "entries": [{"a": "m"}], "ratings": []}).encode(), "entries[0]"),
])
def test_a_corrupt_board_is_a_clear_format_error(storage, content, message):
    storage.write_bytes(board_key("b"), content)
    with pytest.raises(FormatError, match="leaderboards/b.json") as err:
        read_leaderboard(storage, "b")
    assert message in str(err.value)
    # and an update refuses to overwrite it
    with pytest.raises(FormatError):
        update_leaderboard(storage, "b", _results("p", "q", 1, 0), {"p": V1, "q": V2}, evaluation_id="e", judge="j")
    assert storage.read_bytes(board_key("b")) == content


def test_a_failed_update_leaves_the_old_board_intact(storage, monkeypatch):
    _first_update(storage)
    before = storage.read_bytes(board_key("tiny-board"))

    # results that cannot be stored: a label without a model reference, an index that is no number
    with pytest.raises(ValueError, match="lacks"):
        update_leaderboard(storage, "tiny-board", _results("base", "ghost", 1, 0), {"base": V1},
                           evaluation_id="ev-2", judge="shorter")
    with pytest.raises(TypeError):
        update_leaderboard(storage, "tiny-board", [PairResult(object(), "base", "tuned", None)],  # type: ignore[arg-type]
                           {"base": V1, "tuned": V2}, evaluation_id="ev-2", judge="shorter")
    assert storage.read_bytes(board_key("tiny-board")) == before

    # a crash at the moment the new document would replace the old one
    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(storage_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        update_leaderboard(storage, "tiny-board", _results("tuned", "v3", 0, 2), {"tuned": V2, "v3": V3},
                           evaluation_id="ev-3", judge="shorter")
    monkeypatch.undo()
    assert storage.read_bytes(board_key("tiny-board")) == before
    assert len(read_leaderboard(storage, "tiny-board").entries) == 4


def test_concurrent_updaters_lose_no_entries(storage):
    errors = []

    def update(k: int) -> None:
        try:
            update_leaderboard(storage, "busy", _results("a", "b", 1, 1), {"a": V1, "b": V2},
                               evaluation_id=f"ev-{k}", judge="rule")
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=update, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    board = read_leaderboard(storage, "busy")
    assert len(board.entries) == 12
    assert {e.evaluation_id for e in board.entries} == {f"ev-{k}" for k in range(6)}
    assert board.rating(V1).wins == board.rating(V2).wins == 6


def test_round_trip_through_dicts():
    board = Leaderboard(name="x")
    assert Leaderboard.from_dict(board.to_dict(), "x") == board
