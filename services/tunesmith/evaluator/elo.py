"""Ratings on the Elo scale from pairwise judgements.

bradley_terry() (the default) fits the Bradley-Terry model P(i beats j) = p_i / (p_i + p_j) by
maximum likelihood and reports rating_i = initial + scale * log10(p_i), shifted so that the mean
rating of `labels` is `initial`. With scale 400 a strength ratio of 3 (i wins 3 of 4 against j)
is 400 * log10(3) = 190.8 points, as in chess Elo. A tie counts half a win to each side.

The prior. Without one, a model that never loses (or never wins) has no finite maximum
likelihood rating. Every model therefore also plays `prior` virtual games against a fixed
reference player of strength 1 (rating `initial` before the mean is re-anchored), and those
virtual games are all ties. This is a maximum a posteriori fit: each rating is pulled gently
towards the reference. With the default prior=0.1 (a tenth of one tied game per model) the
pull is small: two models of which one wins 3 of 4 come out 187.8 points apart instead of the
MLE's 190.8, 190.5 apart after 30 wins in 40 games, and the difference keeps shrinking as real
games accumulate. An undefeated model gets a large but finite rating (10 wins out of 10: about
940 points above its opponent). prior=0 is the plain MLE; it is a
ValueError when the MLE does not exist (some models cannot be ordered against the rest: Ford's
condition, the "beats or ties" graph is not strongly connected).

The fit is Newton's method on the log-strengths, with step halving; the objective is concave
(strictly so with prior > 0), so it converges in a few dozen steps whatever the data.

Intervals: percentile bootstrap over prompts. Each resample draws the prompts with replacement
and keeps every judgement of a drawn prompt together (the pairs judged on one prompt are not
independent), refits, and re-anchors; ci_low and ci_high are the (1-level)/2 and (1+level)/2
quantiles, widened to include the point rating where the percentile interval misses it (which
can happen with a handful of prompts). With prior=0, resamples whose MLE does not exist are
skipped.

online_elo() is classic sequential Elo (each judgement moves both ratings by k times the
surprise). It depends on the order of the results and has no intervals (ci_low = ci_high =
rating); it is what JudgeConfig.elo_k > 0 asks for, not the default.

Results are PairResults (winner label or None for a tie; inconsistent pairs are ties) or
Outcomes (each judged order on its own: verdict "A" = first wins), or a mix, from
tunesmith.evaluator.judging. A result naming a label not in `labels` is a ValueError.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tunesmith.evaluator.judging import Outcome, PairResult

_MAX_STEPS = 200
_TOL = 1e-10


@dataclass(frozen=True)
class Rating:
    label: str
    rating: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int


# One judgement: (prompt group, index of one side, index of the other, score of the first side).
_Game = tuple[int, int, int, float]


def _games(results: Iterable[PairResult | Outcome], index: dict[str, int]) -> list[_Game]:
    games = []
    for r in results:
        if isinstance(r, PairResult):
            a, b, winner = r.a, r.b, r.winner
        elif isinstance(r, Outcome):
            a, b, winner = r.first, r.second, r.winner
        else:
            raise TypeError(f"expected PairResult or Outcome results, got {type(r).__name__}")
        for label in (a, b):
            if label not in index:
                raise ValueError(f"result on prompt {r.prompt_index} names {label!r}, which is not among the labels")
        if a == b:
            raise ValueError(f"result on prompt {r.prompt_index} compares {a!r} with itself")
        if winner is not None and winner not in (a, b):
            raise ValueError(f"result on prompt {r.prompt_index}: winner {winner!r} is neither {a!r} nor {b!r}")
        score = 0.5 if winner is None else 1.0 if winner == a else 0.0
        games.append((r.prompt_index, index[a], index[b], score))
    return games


def _tally(games: Iterable[_Game], n: int) -> tuple[list[list[float]], list[list[float]]]:
    """(w, g): w[i][j] = score of i against j (ties half), g[i][j] = games between i and j."""
    w = [[0.0] * n for _ in range(n)]
    g = [[0.0] * n for _ in range(n)]
    for _, i, j, s in games:
        w[i][j] += s
        w[j][i] += 1.0 - s
        g[i][j] += 1.0
        g[j][i] += 1.0
    return w, g


def _strongly_connected(w: list[list[float]]) -> bool:
    n = len(w)
    if n <= 1:
        return True

    def reach(forward: bool) -> int:
        seen, stack = {0}, [0]
        while stack:
            i = stack.pop()
            for j in range(n):
                edge = w[i][j] if forward else w[j][i]
                if j not in seen and edge > 0:
                    seen.add(j)
                    stack.append(j)
        return len(seen)

    return reach(True) == n and reach(False) == n


def _solve(h: list[list[float]], g: list[float]) -> list[float]:
    """x with h x = g (Gaussian elimination, partial pivoting)."""
    n = len(g)
    m = [row[:] + [g[i]] for i, row in enumerate(h)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-300:
            raise ArithmeticError("singular Hessian")
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            if f:
                for k in range(c, n + 1):
                    m[r][k] -= f * m[c][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][k] * x[k] for k in range(r + 1, n))) / m[r][r]
    return x


def _log1pexp(x: float) -> float:
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _fit(w: list[list[float]], g: list[list[float]], prior: float) -> list[float]:
    """Log-strengths (natural log) maximising the Bradley-Terry log-likelihood plus the prior.

    With prior 0 the last model's log-strength is held at 0 (the likelihood only sees
    differences); the caller re-anchors anyway."""
    n = len(w)
    if n == 0:
        return []
    if prior <= 0 and not _strongly_connected(w):
        raise ValueError("the Bradley-Terry MLE does not exist: some models never lose (or never win) against the "
                         "rest; use prior > 0")
    free = n if prior > 0 else n - 1
    score = [sum(row) for row in w]

    def objective(t: list[float]) -> float:
        total = 0.0
        for i in range(n):
            total += score[i] * t[i] + prior * (0.5 * t[i] - _log1pexp(t[i]))
            for j in range(i + 1, n):
                if g[i][j]:
                    total -= g[i][j] * (max(t[i], t[j]) + _log1pexp(-abs(t[i] - t[j])))
        return total

    theta = [0.0] * n
    value = objective(theta)
    for _ in range(_MAX_STEPS):
        grad = [score[i] + prior * (0.5 - _sigmoid(theta[i])) for i in range(n)]
        hess = [[0.0] * n for _ in range(n)]
        for i in range(n):
            si = _sigmoid(theta[i])
            hess[i][i] -= prior * si * (1.0 - si)
            for j in range(n):
                if j != i and g[i][j]:
                    s = _sigmoid(theta[i] - theta[j])
                    grad[i] -= g[i][j] * s
                    hess[i][i] -= g[i][j] * s * (1.0 - s)
                    hess[i][j] += g[i][j] * s * (1.0 - s)
        if max(abs(x) for x in grad[:free]) < _TOL:
            break
        step = _solve([row[:free] for row in hess[:free]], grad[:free])  # H d = g; Newton moves by -d
        scale = 1.0
        while True:
            trial = [theta[i] - scale * step[i] if i < free else theta[i] for i in range(n)]
            trial_value = objective(trial)
            if trial_value >= value - 1e-12 or scale < 1e-8:
                break
            scale /= 2
        moved = max(abs(a - b) for a, b in zip(trial, theta, strict=True))
        theta, value = trial, trial_value
        if moved < _TOL:
            break
    return theta


def _ratings(theta: list[float], initial: float, scale: float) -> list[float]:
    elo = [scale * t / math.log(10) for t in theta]
    shift = initial - sum(elo) / len(elo) if elo else 0.0
    return [r + shift for r in elo]


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _index(labels: Sequence[str]) -> dict[str, int]:
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {labels}")
    return {label: i for i, label in enumerate(labels)}


def _counts(games: list[_Game], n: int) -> list[list[int]]:
    counts = [[0, 0, 0] for _ in range(n)]  # wins, losses, ties
    for _, i, j, s in games:
        if s == 0.5:
            counts[i][2] += 1
            counts[j][2] += 1
        else:
            win, lose = (i, j) if s == 1.0 else (j, i)
            counts[win][0] += 1
            counts[lose][1] += 1
    return counts


def _ranked(ratings: Sequence[Rating]) -> list[Rating]:
    return sorted(ratings, key=lambda r: (-r.rating, r.label))


def bradley_terry(results: Iterable[PairResult | Outcome], labels: Sequence[str], *, initial: float = 1000.0,
                  scale: float = 400.0, resamples: int = 200, level: float = 0.95, seed: int = 0,
                  prior: float = 0.1) -> list[Rating]:
    """Bradley-Terry ratings of `labels` on the Elo scale, best first (see the module docstring).

    resamples: bootstrap resamples over prompts (0: no intervals, ci_low = ci_high = rating).
    level: the interval's coverage. seed: the bootstrap's random seed. prior: virtual tied games
    per model against a reference player (>= 0)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if prior < 0 or resamples < 0 or scale <= 0:
        raise ValueError("prior and resamples must be >= 0 and scale > 0")
    index = _index(labels)
    n = len(index)
    games = _games(results, index)
    point = _ratings(_fit(*_tally(games, n), prior), initial, scale)

    draws: list[list[float]] = [[] for _ in range(n)]
    if resamples and games:
        by_prompt: dict[int, list[_Game]] = {}
        for game in games:
            by_prompt.setdefault(game[0], []).append(game)
        groups = [by_prompt[k] for k in sorted(by_prompt)]
        rng = random.Random(seed)
        for _ in range(resamples):
            picked = [groups[rng.randrange(len(groups))] for _ in groups]
            try:
                theta = _fit(*_tally((game for group in picked for game in group), n), prior)
            except ValueError:  # prior 0 and this resample has no MLE
                continue
            for i, r in enumerate(_ratings(theta, initial, scale)):
                draws[i].append(r)
    alpha = (1.0 - level) / 2
    counts = _counts(games, n)
    out = []
    for label, i in index.items():
        values = sorted(draws[i])
        lo = min(_quantile(values, alpha), point[i]) if values else point[i]
        hi = max(_quantile(values, 1 - alpha), point[i]) if values else point[i]
        out.append(Rating(label, point[i], lo, hi, *counts[i]))
    return _ranked(out)


def online_elo(results: Iterable[PairResult | Outcome], labels: Sequence[str], *, k: float = 32.0,
               initial: float = 1000.0, scale: float = 400.0) -> list[Rating]:
    """Classic sequential Elo over `results` in the order given (order-dependent; no intervals:
    ci_low = ci_high = rating), best first. Every label starts at `initial`."""
    if k <= 0 or scale <= 0:
        raise ValueError("k and scale must be > 0")
    index = _index(labels)
    games = _games(results, index)
    rating = [float(initial)] * len(index)
    for _, i, j, s in games:
        expected = 1.0 / (1.0 + 10 ** ((rating[j] - rating[i]) / scale))
        delta = k * (s - expected)
        rating[i] += delta
        rating[j] -= delta
    counts = _counts(games, len(index))
    return _ranked([Rating(label, rating[i], rating[i], rating[i], *counts[i])
                            for label, i in index.items()])
