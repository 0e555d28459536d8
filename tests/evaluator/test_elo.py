"""Bradley-Terry ratings on the Elo scale (and classic online Elo) from pairwise results."""
from __future__ import annotations

import itertools
import math
import random

import pytest

from tunesmith.evaluator.elo import Rating, bradley_terry, online_elo
from tunesmith.evaluator.judging import Outcome, PairResult

MLE_GAP_3_OF_4 = 400 * math.log10(3)  # 190.85: a strength ratio of 3 on the Elo scale


def _record(wins_a: int, wins_b: int, ties: int = 0, a: str = "A", b: str = "B") -> list[PairResult]:
    winners = [a] * wins_a + [b] * wins_b + [None] * ties
    return [PairResult(i, a, b, w) for i, w in enumerate(winners)]


def _by_label(ratings: list[Rating]) -> dict[str, Rating]:
    return {r.label: r for r in ratings}


def test_three_wins_in_four_is_a_strength_ratio_of_three():
    # the plain maximum likelihood fit: exactly 400*log10(3) apart, centred on `initial`
    r = _by_label(bradley_terry(_record(3, 1), ["A", "B"], prior=0, resamples=0))
    assert r["A"].rating - r["B"].rating == pytest.approx(MLE_GAP_3_OF_4, abs=1e-6)
    assert (r["A"].rating + r["B"].rating) / 2 == pytest.approx(1000.0)
    assert (r["A"].wins, r["A"].losses, r["A"].ties) == (3, 1, 0) and (r["B"].wins, r["B"].losses) == (1, 3)
    # the default prior (0.1 virtual tied games per model) pulls the gap in by a few points only,
    # and less as games accumulate
    def gap(rs):
        return _by_label(rs)["A"].rating - _by_label(rs)["B"].rating

    small = gap(bradley_terry(_record(3, 1), ["A", "B"], resamples=0))
    large = gap(bradley_terry(_record(30, 10), ["A", "B"], resamples=0))
    assert MLE_GAP_3_OF_4 - 5 < small < MLE_GAP_3_OF_4
    assert small < large < MLE_GAP_3_OF_4 and MLE_GAP_3_OF_4 - large < 0.5


def test_scale_and_initial():
    r = _by_label(bradley_terry(_record(3, 1), ["A", "B"], prior=0, resamples=0, initial=1500, scale=200))
    assert r["A"].rating - r["B"].rating == pytest.approx(200 * math.log10(3))
    assert r["A"].rating + r["B"].rating == pytest.approx(3000.0)


def test_ties_count_half_a_win_each():
    even = _by_label(bradley_terry(_record(1, 1, ties=4), ["A", "B"], resamples=0))
    assert even["A"].rating == pytest.approx(even["B"].rating) and even["A"].ties == 4
    # 2 wins + 2 ties against 2 losses + 2 ties: a 3:1 score, as in 3 wins of 4
    r = _by_label(bradley_terry(_record(2, 0, ties=2), ["A", "B"], prior=0, resamples=0))
    assert r["A"].rating - r["B"].rating == pytest.approx(MLE_GAP_3_OF_4)


def test_outcomes_rate_like_the_pair_results_they_make():
    outcomes = [Outcome(0, "A", "B", "A"), Outcome(1, "B", "A", "B"), Outcome(2, "A", "B", "A"),
                Outcome(3, "B", "A", "A")]  # A wins 3, B wins 1
    from_outcomes = _by_label(bradley_terry(outcomes, ["A", "B"], prior=0, resamples=0))
    assert from_outcomes["A"].rating - from_outcomes["B"].rating == pytest.approx(MLE_GAP_3_OF_4)


def _simulate(true: dict[str, float], prompts: int, seed: int) -> list[PairResult]:
    """Every pair once per prompt, won with the Bradley-Terry probability of the true ratings."""
    rng = random.Random(seed)
    results = []
    for i in range(prompts):
        for a, b in itertools.combinations(true, 2):
            p_a = 1 / (1 + 10 ** ((true[b] - true[a]) / 400))
            results.append(PairResult(i, a, b, a if rng.random() < p_a else b))
    return results


def test_a_simulated_bradley_terry_process_is_recovered():
    true = {"d": 850.0, "b": 1050.0, "a": 1150.0, "c": 950.0}  # mean 1000
    ratings = bradley_terry(_simulate(true, 300, seed=7), list(true), resamples=100, seed=3)
    assert [r.label for r in ratings] == ["a", "b", "c", "d"]
    for r in ratings:
        assert abs(r.rating - true[r.label]) < 40, (r.label, r.rating)
        assert r.ci_low <= r.rating <= r.ci_high
        assert r.ci_low - 40 < true[r.label] < r.ci_high + 40
    assert sum(r.rating for r in ratings) / 4 == pytest.approx(1000.0)


def test_intervals_contain_the_point_narrow_with_data_and_are_seeded():
    true = {"x": 1100.0, "y": 1000.0, "z": 900.0}
    few = bradley_terry(_simulate(true, 20, seed=1), list(true), resamples=200, seed=0)
    many = bradley_terry(_simulate(true, 400, seed=1), list(true), resamples=200, seed=0)
    for r in few + many:
        assert r.ci_low <= r.rating <= r.ci_high and r.ci_low < r.ci_high
    def width(rs):
        return sum(r.ci_high - r.ci_low for r in rs)

    assert width(many) < width(few) / 2
    again = bradley_terry(_simulate(true, 20, seed=1), list(true), resamples=200, seed=0)
    assert again == few
    other_seed = bradley_terry(_simulate(true, 20, seed=1), list(true), resamples=200, seed=5)
    assert [(r.label, r.rating) for r in other_seed] == [(r.label, r.rating) for r in few]  # same point
    assert [r.ci_low for r in other_seed] != [r.ci_low for r in few]
    assert [r.ci_low for r in bradley_terry(_simulate(true, 20, seed=1), list(true), resamples=0)] == \
        [r.rating for r in bradley_terry(_simulate(true, 20, seed=1), list(true), resamples=0)]


def test_an_undefeated_model_gets_a_finite_rating():
    results = _record(10, 0) + [PairResult(10 + i, "B", "C", "B") for i in range(5)] + \
        [PairResult(20 + i, "B", "C", "C") for i in range(5)]
    ratings = _by_label(bradley_terry(results, ["A", "B", "C"]))
    assert all(math.isfinite(r.rating) and math.isfinite(r.ci_low) and math.isfinite(r.ci_high)
               for r in ratings.values())
    assert ratings["A"].rating > ratings["B"].rating + 400
    # B and C split their games, but B also lost ten to A: the fit puts B a little below C
    assert ratings["C"].rating - 10 < ratings["B"].rating < ratings["C"].rating
    # without the prior the maximum likelihood rating does not exist
    with pytest.raises(ValueError, match="does not exist"):
        bradley_terry(results, ["A", "B", "C"], prior=0)


def test_a_model_without_games_sits_at_the_reference():
    ratings = _by_label(bradley_terry(_record(3, 1), ["A", "B", "idle"], resamples=20))
    assert ratings["idle"].wins == ratings["idle"].losses == ratings["idle"].ties == 0
    assert ratings["B"].rating < ratings["idle"].rating < ratings["A"].rating
    assert bradley_terry([], ["p", "q"])[0].rating == pytest.approx(1000.0)


def test_sorted_best_first_and_bad_input_refused():
    ratings = bradley_terry(_record(1, 3), ["A", "B"], resamples=0)
    assert [r.label for r in ratings] == ["B", "A"]
    with pytest.raises(ValueError, match="not among the labels"):
        bradley_terry(_record(1, 1), ["A"])
    with pytest.raises(ValueError, match="repeat"):
        bradley_terry([], ["A", "A"])
    with pytest.raises(ValueError, match="neither"):
        bradley_terry([PairResult(0, "A", "B", "C")], ["A", "B", "C"])
    with pytest.raises(ValueError, match="level"):
        bradley_terry([], ["A"], level=1.5)


def test_online_elo_is_the_classic_sequential_update():
    one = _by_label(online_elo([PairResult(0, "A", "B", "A")], ["A", "B"], k=32))
    assert one["A"].rating == pytest.approx(1016.0) and one["B"].rating == pytest.approx(984.0)
    assert one["A"].ci_low == one["A"].ci_high == one["A"].rating
    # order-dependent: the same two results in the other order give other ratings
    results = [PairResult(0, "A", "B", "A"), PairResult(1, "A", "B", "B")]
    forward = _by_label(online_elo(results, ["A", "B"], k=32))
    backward = _by_label(online_elo(results[::-1], ["A", "B"], k=32))
    assert forward["A"].rating < 1000 < backward["A"].rating
    assert sum(r.rating for r in forward.values()) == pytest.approx(2000.0)
    with pytest.raises(ValueError):
        online_elo(results, ["A", "B"], k=0)
