"""A self-contained HTML evaluation report: render_html(ReportView) -> str.

The page has no external resources: CSS is inline, every figure is an inline SVG drawn here, and
there is no JavaScript (collapsible parts are <details>), so it reads the same offline, from a
file, in a mail attachment or printed. All text is escaped with html.escape.

The evaluator service builds a ReportView from its protobuf report (tunesmith.evaluator.
report_view); these dataclasses are the whole interface. Sections, in order, each present only
when it has data (the header lists those that were not run):

- header: title, dataset, split, rows, created.
- scores (#scores, figure svg#fig-scores): one block per (benchmark, metric), one bar per model
  with its confidence interval as whiskers; each block has its own scale ([0, 1] when every
  value and bound lies in it), with "↑"/"↓" for higher/lower is better. A table repeats the
  numbers.
- comparisons (#comparisons): baseline vs candidate delta, p-value, test, significance.
- regression gate (#gate): a PASS/FAIL badge, the tolerance, and one table row per check.
- Elo (#elo, svg#fig-elo): rating with interval whiskers per model, and a table with W/L/T.
- error analysis (#errors): a category x model table of counts (and share of rows), then per
  model the example rows of each category.
- confusion matrices (#confusion, svg#fig-confusion-<i>, i = 0, 1, ... in the dict's order, with
  data-model set to the model label): rows are references, columns predictions; diagonal cells
  are blue, off-diagonal red, shaded by the share of the reference row; counts are printed in
  the cells. With more than MAX_CONFUSION_LABELS labels (e.g. 77 intents) only the
  MAX_CONFUSION_LABELS labels most involved in mistakes (off-diagonal count of their row plus
  their column; ties in label order) are drawn, in label order, plus a "(rest)" column holding
  the predictions of the labels not shown, so every drawn row still sums to its total; the
  caption says how many labels are shown. A label named "(other)" (predictions that are no
  label, as tunesmith.evaluator.errors.confusion_matrix makes) is always kept, last.
- training loss (#loss, svg#fig-loss): train and validation loss against the step.
- samples (#samples): a few rows with every model's output.

Every figure is `<svg class="figure" id="fig-...">`.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

#: Most labels a confusion-matrix figure draws (see the module docstring).
MAX_CONFUSION_LABELS = 25
#: Characters of a prompt, reference or answer shown in a table cell before it is cut.
MAX_CELL_CHARS = 600
#: Points of one loss series drawn at most (longer series are thinned evenly, ends kept).
MAX_CURVE_POINTS = 2000

OTHER = "(other)"
REST = "(rest)"
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")


# --- the view ----------------------------------------------------------------------------------
@dataclass
class MetricView:
    benchmark: str
    metric: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    higher_is_better: bool = True


@dataclass
class ScoreView:
    label: str                      # the model's label in the evaluation ("base", "tuned")
    model: str                      # what it is (model id, adapter, ...)
    metrics: list[MetricView] = field(default_factory=list)


@dataclass
class ComparisonView:
    baseline: str
    candidate: str
    metric: str
    delta: float                    # candidate - baseline
    p_value: float | None
    significant: bool
    test: str                       # "mcnemar", "permutation", "paired_bootstrap", ...
    higher_is_better: bool = True


class GateRow(NamedTuple):
    suite: str
    metric: str
    baseline: float
    candidate: float
    delta: float
    p_value: float | None
    passed: bool


@dataclass
class GateView:
    passed: bool
    tolerance: float
    rows: list[GateRow] = field(default_factory=list)   # plain 7-tuples in this order also do


@dataclass
class EloView:
    label: str
    rating: float
    ci_low: float | None = None
    ci_high: float | None = None
    wins: int = 0
    losses: int = 0
    ties: int = 0


@dataclass
class ExampleView:
    row: int
    prompt: str
    reference: str
    prediction: str


@dataclass
class ErrorAnalysisView:
    counts: dict[str, int] = field(default_factory=dict)                  # category -> rows
    examples: dict[str, list[ExampleView]] = field(default_factory=dict)  # category -> examples
    descriptions: dict[str, str] = field(default_factory=dict)            # category -> text (optional)


@dataclass
class ConfusionView:
    labels: list[str]               # row and column order (may end with "(other)")
    counts: list[list[int]]         # counts[reference][prediction], len(labels) x len(labels)


@dataclass
class CurveView:
    train: list[tuple[float, float]] = field(default_factory=list)       # (step, loss)
    validation: list[tuple[float, float]] = field(default_factory=list)  # (step, loss)


class SampleView(NamedTuple):
    row: int
    prompt: str
    reference: str
    outputs: dict[str, str]         # model label -> answer


@dataclass
class ReportView:
    title: str
    dataset: str = ""
    split: str = ""
    rows: int = 0
    created: str = ""
    scores: list[ScoreView] = field(default_factory=list)
    comparisons: list[ComparisonView] = field(default_factory=list)
    gate: GateView | None = None
    elo: list[EloView] = field(default_factory=list)
    errors: dict[str, ErrorAnalysisView] = field(default_factory=dict)    # model label -> analysis
    confusion: dict[str, ConfusionView] = field(default_factory=dict)     # model label -> matrix
    loss_curve: CurveView | None = None
    samples: list[SampleView] = field(default_factory=list)               # plain 4-tuples also do


# --- formatting --------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any) -> str:
    if not _finite(value):
        return "—"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def _delta(value: Any) -> str:
    if not _finite(value):
        return "—"
    return f"{value:+.4g}"


def _p(value: Any) -> str:
    if not _finite(value):
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _cut(text: Any, limit: int = MAX_CELL_CHARS) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return _e(text)
    return f'{_e(text[:limit])}<span class="more">… ({len(text) - limit:,} more characters)</span>'


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _f(x: float) -> str:
    """An SVG coordinate."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not (_finite(lo) and _finite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _scale(lo: float, hi: float, x0: float, x1: float):
    span = hi - lo if hi > lo else 1.0
    return lambda v: x0 + (v - lo) / span * (x1 - x0)


def _svg(fig_id: str, width: float, height: float, body: list[str], label: str, extra: str = "") -> str:
    return (f'<svg class="figure" id="{_e(fig_id)}" role="img" '
            f'aria-label="{_e(label)}" width="{_f(width)}" height="{_f(height)}" '
            f'viewBox="0 0 {_f(width)} {_f(height)}"{extra}>' + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "", extra: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{c}{extra}>{_e(text)}</text>'


# --- scores ------------------------------------------------------------------------------------
def _metric_keys(scores: Sequence[ScoreView]) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for s in scores:
        for m in s.metrics:
            if (m.benchmark, m.metric) not in keys:
                keys.append((m.benchmark, m.metric))
    return keys


def _metric_name(benchmark: str, metric: str) -> str:
    return metric if not benchmark or benchmark == metric else f"{benchmark} / {metric}"


def _colors(view: ReportView) -> dict[str, str]:
    """Model label -> its colour, the same in every figure (order of first mention)."""
    labels: list[str] = []
    for label in ([s.label for s in view.scores] + [e.label for e in view.elo] + list(view.errors)
                  + list(view.confusion)):
        if label not in labels:
            labels.append(label)
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _scores_figure(scores: Sequence[ScoreView], colors: dict[str, str]) -> str:
    keys = _metric_keys(scores)
    width, left, right = 980.0, 200.0, 790.0
    bar_h, gap = 14.0, 4.0
    lookup = {(s.label, m.benchmark, m.metric): m for s in scores for m in s.metrics}
    body: list[str] = []
    y = 8.0
    for benchmark, metric in keys:
        ms = [lookup.get((s.label, benchmark, metric)) for s in scores]
        present = [m for m in ms if m is not None]
        higher = present[0].higher_is_better if present else True
        points = [v for m in present for v in (m.value, m.ci_low, m.ci_high) if _finite(v)]
        lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
        if 0.0 <= lo and hi <= 1.0:
            lo, hi = 0.0, 1.0
        else:
            lo = min(lo, 0.0) if lo >= 0 else lo - 0.05 * (hi - lo or 1)
            hi = hi + 0.05 * (hi - lo or 1)
        x = _scale(lo, hi, left, right)
        arrow = "↑ higher is better" if higher else "↓ lower is better"
        body.append(_text(8, y + 12, _metric_name(benchmark, metric), cls="metric"))
        body.append(_text(right, y + 12, arrow, anchor="end", cls="muted"))
        y += 20
        top = y
        base = x(0.0) if lo <= 0.0 <= hi else x(lo)
        for s, m in zip(scores, ms):
            color = colors.get(s.label, PALETTE[0])
            body.append(_text(left - 8, y + bar_h - 3, _short(s.label, 28), anchor="end"))
            if m is not None and _finite(m.value):
                x0, x1 = sorted((base, x(m.value)))
                body.append(f'<rect class="bar" x="{_f(x0)}" y="{_f(y)}" width="{_f(max(x1 - x0, 1.0))}" '
                            f'height="{_f(bar_h)}" fill="{color}" fill-opacity="0.8"><title>{_e(s.label)}: '
                            f'{_e(_num(m.value))}</title></rect>')
                if _finite(m.ci_low) and _finite(m.ci_high):
                    a, b, mid = x(m.ci_low), x(m.ci_high), y + bar_h / 2
                    body.append(f'<line class="ci" x1="{_f(a)}" y1="{_f(mid)}" x2="{_f(b)}" y2="{_f(mid)}"/>')
                    for cap in (a, b):
                        body.append(f'<line class="ci" x1="{_f(cap)}" y1="{_f(y + 2)}" x2="{_f(cap)}" '
                                    f'y2="{_f(y + bar_h - 2)}"/>')
                ci = (f" [{_num(m.ci_low)}, {_num(m.ci_high)}]"
                      if _finite(m.ci_low) and _finite(m.ci_high) else "")
                body.append(_text(right + 8, y + bar_h - 3, _num(m.value) + ci, cls="value"))
            else:
                body.append(_text(right + 8, y + bar_h - 3, "—", cls="value"))
            y += bar_h + gap
        # axis: baseline and three ticks
        body.append(f'<line class="axis" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(right)}" y2="{_f(y)}"/>')
        body.append(f'<line class="axis" x1="{_f(base)}" y1="{_f(top - 2)}" x2="{_f(base)}" y2="{_f(y)}"/>')
        for t in _nice_ticks(lo, hi, 4):
            body.append(f'<line class="axis" x1="{_f(x(t))}" y1="{_f(y)}" x2="{_f(x(t))}" y2="{_f(y + 4)}"/>')
            body.append(_text(x(t), y + 15, _num(t), anchor="middle", cls="tick"))
        y += 30
    return _svg("fig-scores", width, y, body, "scores with confidence intervals per model")


def _scores_section(view: ReportView) -> str:
    keys = _metric_keys(view.scores)
    lookup = {(s.label, m.benchmark, m.metric): m for s in view.scores for m in s.metrics}
    colors = _colors(view)
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{colors[s.label]}"></span>'
        f'{_e(s.label)}{" — " + _e(s.model) if s.model and s.model != s.label else ""}</span>'
        for s in view.scores)
    head = "".join(f"<th>{_e(s.label)}</th>" for s in view.scores)
    rows = []
    for benchmark, metric in keys:
        cells = []
        for s in view.scores:
            m = lookup.get((s.label, benchmark, metric))
            if m is None:
                cells.append("<td>—</td>")
                continue
            ci = (f' <span class="muted">[{_num(m.ci_low)}, {_num(m.ci_high)}]</span>'
                  if _finite(m.ci_low) and _finite(m.ci_high) else "")
            cells.append(f'<td class="num">{_num(m.value)}{ci}</td>')
        rows.append(f"<tr><th>{_e(_metric_name(benchmark, metric))}</th>{''.join(cells)}</tr>")
    return (f'<section id="scores"><h2>Scores</h2><p class="legend">{legend}</p>'
            f'<p class="muted">Bars are the scores on all rows; whiskers are the 95% confidence intervals.</p>'
            f'<div class="fig">{_scores_figure(view.scores, colors)}</div>'
            f'<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


# --- comparisons and gate ----------------------------------------------------------------------
def _comparisons_section(view: ReportView) -> str:
    rows = []
    for c in view.comparisons:
        better = _finite(c.delta) and ((c.delta > 0) == c.higher_is_better) and c.delta != 0
        cls = ("better" if better else "worse") if c.significant and _finite(c.delta) and c.delta != 0 else ""
        rows.append(f'<tr class="{cls}"><td>{_e(c.baseline)}</td><td>{_e(c.candidate)}</td><td>{_e(c.metric)}</td>'
                    f'<td class="num">{_delta(c.delta)}</td><td class="num">{_p(c.p_value)}</td>'
                    f'<td>{_e(c.test)}</td><td>{"yes" if c.significant else "no"}</td></tr>')
    return ('<section id="comparisons"><h2>Baseline vs candidate</h2>'
            '<p class="muted">delta = candidate − baseline; significant rows are green when the candidate is '
            'better and red when it is worse.</p>'
            '<table><thead><tr><th>baseline</th><th>candidate</th><th>metric</th><th>delta</th><th>p-value</th>'
            f'<th>test</th><th>significant</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _gate_section(gate: GateView) -> str:
    badge = '<span class="badge pass">PASS</span>' if gate.passed else '<span class="badge fail">FAIL</span>'
    rows = []
    for suite, metric, baseline, candidate, delta, p_value, passed in gate.rows:
        rows.append(f'<tr class="{"" if passed else "worse"}"><td>{_e(suite)}</td><td>{_e(metric)}</td>'
                    f'<td class="num">{_num(baseline)}</td><td class="num">{_num(candidate)}</td>'
                    f'<td class="num">{_delta(delta)}</td><td class="num">{_p(p_value)}</td>'
                    f'<td>{"pass" if passed else "FAIL"}</td></tr>')
    table = ('<table><thead><tr><th>suite</th><th>metric</th><th>baseline</th><th>candidate</th><th>delta</th>'
             f'<th>p-value</th><th>result</th></tr></thead><tbody>{"".join(rows)}</tbody></table>') if rows else ""
    return (f'<section id="gate"><h2>Regression gate {badge}</h2>'
            f'<p>Tolerance: {_num(gate.tolerance)}</p>{table}</section>')


# --- Elo ---------------------------------------------------------------------------------------
def _elo_figure(elo: Sequence[EloView], colors: dict[str, str]) -> str:
    width, left, right, row_h = 960.0, 200.0, 900.0, 26.0
    points = [v for e in elo for v in (e.rating, e.ci_low, e.ci_high) if _finite(v)]
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    pad = 0.08 * (hi - lo) if hi > lo else 50.0
    lo, hi = lo - pad, hi + pad
    x = _scale(lo, hi, left, right)
    body: list[str] = []
    top = 10.0
    for t in _nice_ticks(lo, hi, 6):
        body.append(f'<line class="grid" x1="{_f(x(t))}" y1="{_f(top)}" x2="{_f(x(t))}" '
                    f'y2="{_f(top + row_h * len(elo))}"/>')
        body.append(_text(x(t), top + row_h * len(elo) + 16, _num(t), anchor="middle", cls="tick"))
    for i, e in enumerate(elo):
        y = top + row_h * i + row_h / 2
        color = colors.get(e.label, PALETTE[0])
        body.append(_text(left - 10, y + 4, _short(e.label, 28), anchor="end"))
        if _finite(e.ci_low) and _finite(e.ci_high):
            a, b = x(e.ci_low), x(e.ci_high)
            body.append(f'<line class="ci" x1="{_f(a)}" y1="{_f(y)}" x2="{_f(b)}" y2="{_f(y)}"/>')
            for cap in (a, b):
                body.append(f'<line class="ci" x1="{_f(cap)}" y1="{_f(y - 6)}" x2="{_f(cap)}" y2="{_f(y + 6)}"/>')
        if _finite(e.rating):
            body.append(f'<circle class="point" cx="{_f(x(e.rating))}" cy="{_f(y)}" r="6" fill="{color}">'
                        f'<title>{_e(e.label)}: {_e(_num(e.rating))}</title></circle>')
    body.append(f'<line class="axis" x1="{_f(left)}" y1="{_f(top + row_h * len(elo))}" x2="{_f(right)}" '
                f'y2="{_f(top + row_h * len(elo))}"/>')
    return _svg("fig-elo", width, top + row_h * len(elo) + 26, body, "Elo ratings with confidence intervals")


def _elo_section(elo: Sequence[EloView], colors: dict[str, str]) -> str:
    ranked = sorted(elo, key=lambda e: -e.rating if _finite(e.rating) else math.inf)
    rows = "".join(
        f'<tr><td>{_e(e.label)}</td><td class="num">{_num(e.rating)}</td>'
        f'<td class="num">{_num(e.ci_low)} – {_num(e.ci_high)}</td><td class="num">{_num(e.wins)}</td>'
        f'<td class="num">{_num(e.losses)}</td><td class="num">{_num(e.ties)}</td></tr>' for e in ranked)
    return ('<section id="elo"><h2>Pairwise judging: Elo</h2>'
            f'<div class="fig">{_elo_figure(ranked, colors)}</div>'
            '<table><thead><tr><th>model</th><th>rating</th><th>95% interval</th><th>wins</th><th>losses</th>'
            f'<th>ties</th></tr></thead><tbody>{rows}</tbody></table></section>')


# --- error analysis ----------------------------------------------------------------------------
def _errors_section(view: ReportView) -> str:
    labels = list(view.errors)
    categories: list[str] = []
    descriptions: dict[str, str] = {}
    for analysis in view.errors.values():
        for category in list(analysis.counts) + list(analysis.examples):
            if category not in categories:
                categories.append(category)
        for category, text in analysis.descriptions.items():
            descriptions.setdefault(category, text)
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    rows = []
    for category in categories:
        cells = []
        for label in labels:
            n = view.errors[label].counts.get(category, 0)
            share = ""
            if view.rows and n:
                share = f' <span class="muted">({n / view.rows:.1%})</span>' if n / view.rows >= 0.001 else \
                    ' <span class="muted">(&lt;0.1%)</span>'
            cells.append(f'<td class="num{" zero" if not n else ""}">{_num(n)}{share}</td>')
        desc = f'<div class="muted">{_e(descriptions[category])}</div>' if category in descriptions else ""
        rows.append(f"<tr><th>{_e(category)}{desc}</th>{''.join(cells)}</tr>")
    parts = [(f'<section id="errors"><h2>Error analysis</h2>'
              f'<p class="muted">Rows per category ({_num(view.rows)} rows per model); a row can fall in '
              f'several categories.</p><table><thead><tr><th>category</th>{head}</tr></thead>'
              f'<tbody>{"".join(rows)}</tbody></table>')]
    for label in labels:
        analysis = view.errors[label]
        blocks = []
        for category, examples in analysis.examples.items():
            if not examples:
                continue
            ex_rows = "".join(
                f'<tr><td class="num">{_e(ex.row)}</td><td class="text">{_cut(ex.prompt)}</td>'
                f'<td class="text">{_cut(ex.reference)}</td><td class="text">{_cut(ex.prediction)}</td></tr>'
                for ex in examples)
            blocks.append(f'<h4>{_e(category)} <span class="muted">({_num(analysis.counts.get(category, len(examples)))} '
                          f'rows)</span></h4><table class="examples"><thead><tr><th>row</th><th>prompt</th>'
                          f'<th>reference</th><th>prediction</th></tr></thead><tbody>{ex_rows}</tbody></table>')
        if blocks:
            parts.append(f'<details open><summary>Examples: {_e(label)}</summary>{"".join(blocks)}</details>')
    parts.append("</section>")
    return "".join(parts)


# --- confusion matrix --------------------------------------------------------------------------
def _confusion_subset(matrix: ConfusionView, limit: int) -> tuple[list[str], list[str], list[list[int]], int]:
    """(row labels, column labels, counts, labels in the full matrix) after keeping the `limit`
    labels most involved in mistakes (module docstring)."""
    labels = list(matrix.labels)
    n = len(labels)
    counts = [[int(matrix.counts[r][c]) if r < len(matrix.counts) and c < len(matrix.counts[r]) else 0
               for c in range(n)] for r in range(n)]
    real = [i for i, label in enumerate(labels) if label != OTHER]
    other = [i for i, label in enumerate(labels) if label == OTHER]
    if len(real) <= limit:
        keep = real
    else:
        def involvement(i: int) -> int:
            return (sum(counts[i][c] for c in range(n) if c != i) + sum(counts[r][i] for r in range(n) if r != i))
        ranked = sorted(real, key=lambda i: (-involvement(i), i))
        keep = sorted(ranked[:limit])
    dropped = [i for i in real if i not in set(keep)]
    rows = keep + [i for i in other if any(counts[i])]
    cols = keep + other
    col_labels = [labels[c] for c in cols] + ([REST] if dropped else [])
    out = []
    for r in rows:
        line = [counts[r][c] for c in cols]
        if dropped:
            line.append(sum(counts[r][c] for c in dropped))
        out.append(line)
    return [labels[r] for r in rows], col_labels, out, len(real)


def _confusion_figure(index: int, model: str, matrix: ConfusionView) -> tuple[str, str]:
    row_labels, col_labels, counts, total_labels = _confusion_subset(matrix, MAX_CONFUSION_LABELS)
    ncols, nrows = len(col_labels), len(row_labels)
    cell = max(14.0, min(40.0, 640.0 / max(ncols, 1)))
    left = 12 + 7.0 * min(26, max((len(label) for label in row_labels), default=4))
    top = 30 + 6.2 * min(26, max((len(label) for label in col_labels), default=4))
    body: list[str] = []
    body.append(_text(left + cell * ncols / 2, 14, "prediction →", anchor="middle", cls="axis-title"))
    for c, label in enumerate(col_labels):
        cx, cy = left + cell * c + cell / 2, top - 6
        body.append(f'<text class="collabel" x="{_f(cx)}" y="{_f(cy)}" text-anchor="start" '
                    f'transform="rotate(-60 {_f(cx)} {_f(cy)})">{_e(_short(label, 26))}<title>{_e(label)}</title></text>')
    for r, label in enumerate(row_labels):
        total = sum(counts[r]) or 1
        y = top + cell * r
        body.append(_text(left - 6, y + cell / 2 + 4, _short(label, 26), anchor="end", cls="rowlabel"))
        for c, n in enumerate(counts[r]):
            x = left + cell * c
            diagonal = col_labels[c] == label and label != REST
            share = n / total
            if n == 0:
                fill = "#eeeeee"
            elif diagonal:
                fill = f"rgba(33,102,172,{0.15 + 0.85 * share:.3f})"
            else:
                fill = f"rgba(214,39,40,{0.2 + 0.8 * share:.3f})"
            body.append(f'<rect class="cell" x="{_f(x)}" y="{_f(y)}" width="{_f(cell - 1)}" height="{_f(cell - 1)}" '
                        f'fill="{fill}"><title>{_e(label)} → {_e(col_labels[c])}: {n}</title></rect>')
            if n and cell >= 16:
                dark = share > 0.55
                size = min(12.0, cell * 0.45)
                body.append(f'<text class="cellcount" x="{_f(x + (cell - 1) / 2)}" y="{_f(y + cell / 2 + size / 3)}" '
                            f'text-anchor="middle" font-size="{_f(size)}" fill="{"#fff" if dark else "#222"}">'
                            f'{n}</text>')
    body.append(f'<text class="axis-title" x="12" y="{_f(top + cell * nrows / 2)}" text-anchor="middle" '
                f'transform="rotate(-90 12 {_f(top + cell * nrows / 2)})">reference →</text>')
    # rotated column labels run up and to the right: 11px text, cos(60°) of its width
    reach = max((left + cell * c + cell / 2 + 3.4 * len(_short(label, 26)) for c, label in enumerate(col_labels)),
                default=0.0)
    width = max(left + cell * ncols, reach) + 16
    height = top + cell * nrows + 10
    svg = _svg(f"fig-confusion-{index}", width, height, body, f"confusion matrix of {model}",
               extra=f' data-model="{_e(model)}"')
    shown = len([label for label in row_labels if label != OTHER])
    caption = (f"Showing the {shown} of {total_labels} labels most involved in mistakes; {REST} counts "
               f"predictions of the labels not shown." if shown < total_labels else
               f"All {total_labels} labels.")
    return svg, caption


def _confusion_section(view: ReportView) -> str:
    parts = [('<section id="confusion"><h2>Confusion matrices</h2>'
              '<p class="muted">Rows: reference; columns: prediction. Blue: right, red: mistakes; shade = share of '
              'the reference row. "(other)": answers that are no label.</p>')]
    for i, (model, matrix) in enumerate(view.confusion.items()):
        if not matrix.labels:
            continue
        svg, caption = _confusion_figure(i, model, matrix)
        heading = f"<h3>{_e(model)}</h3>" if model else ""
        parts.append(f'{heading}<p class="muted">{_e(caption)}</p><div class="fig">{svg}</div>')
    parts.append("</section>")
    return "".join(parts)


# --- loss curve --------------------------------------------------------------------------------
def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    clean = sorted((float(s), float(v)) for s, v in points if _finite(s) and _finite(v))
    if len(clean) <= MAX_CURVE_POINTS:
        return clean
    step = (len(clean) - 1) / (MAX_CURVE_POINTS - 1)
    return [clean[round(i * step)] for i in range(MAX_CURVE_POINTS)]


def _loss_figure(curve: CurveView) -> str:
    series = [("train", _thin(curve.train), PALETTE[0]), ("validation", _thin(curve.validation), PALETTE[1])]
    everything = [p for _, pts, _ in series for p in pts]
    width, height = 960.0, 360.0
    left, right, top, bottom = 70.0, 940.0, 36.0, 310.0
    steps = [s for s, _ in everything]
    losses = [v for _, v in everything]
    s_lo, s_hi = (min(steps), max(steps)) if steps else (0.0, 1.0)
    if s_hi <= s_lo:
        s_lo, s_hi = s_lo - 1, s_hi + 1
    l_lo, l_hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
    pad = 0.05 * (l_hi - l_lo) if l_hi > l_lo else max(abs(l_hi) * 0.1, 0.1)
    l_lo, l_hi = max(0.0, l_lo - pad) if l_lo >= 0 else l_lo - pad, l_hi + pad
    x = _scale(s_lo, s_hi, left, right)

    def y(v: float) -> float:
        return bottom - (v - l_lo) / (l_hi - l_lo) * (bottom - top)

    body: list[str] = []
    for t in _nice_ticks(l_lo, l_hi, 6):
        body.append(f'<line class="grid" x1="{_f(left)}" y1="{_f(y(t))}" x2="{_f(right)}" y2="{_f(y(t))}"/>')
        body.append(_text(left - 8, y(t) + 4, _num(t), anchor="end", cls="tick"))
    for t in _nice_ticks(s_lo, s_hi, 8):
        body.append(f'<line class="axis" x1="{_f(x(t))}" y1="{_f(bottom)}" x2="{_f(x(t))}" y2="{_f(bottom + 5)}"/>')
        body.append(_text(x(t), bottom + 18, _num(t), anchor="middle", cls="tick"))
    body.append(f'<line class="axis" x1="{_f(left)}" y1="{_f(bottom)}" x2="{_f(right)}" y2="{_f(bottom)}"/>')
    body.append(f'<line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(bottom)}"/>')
    body.append(_text((left + right) / 2, height - 8, "step", anchor="middle", cls="axis-title"))
    body.append(f'<text class="axis-title" x="16" y="{_f((top + bottom) / 2)}" text-anchor="middle" '
                f'transform="rotate(-90 16 {_f((top + bottom) / 2)})">loss</text>')
    lx = left + 10
    for name, pts, color in series:
        if not pts:
            continue
        line = " ".join(f"{_f(x(s))},{_f(y(v))}" for s, v in pts)
        body.append(f'<polyline class="series" data-series="{name}" points="{line}" fill="none" stroke="{color}" '
                    f'stroke-width="2"/>')
        if len(pts) <= 60:
            body.extend(f'<circle cx="{_f(x(s))}" cy="{_f(y(v))}" r="3" fill="{color}"><title>{name} step '
                        f'{_num(s)}: {_num(v)}</title></circle>' for s, v in pts)
        body.append(f'<line x1="{_f(lx)}" y1="18" x2="{_f(lx + 24)}" y2="18" stroke="{color}" stroke-width="3"/>')
        body.append(_text(lx + 30, 22, name))
        lx += 130
    return _svg("fig-loss", width, height, body, "training and validation loss by step")


def _loss_section(curve: CurveView) -> str:
    return f'<section id="loss"><h2>Training loss</h2><div class="fig">{_loss_figure(curve)}</div></section>'


# --- samples -----------------------------------------------------------------------------------
def _samples_section(samples: Sequence[SampleView]) -> str:
    models: list[str] = []
    for _, _, _, outputs in samples:
        for label in outputs:
            if label not in models:
                models.append(label)
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = []
    for row, prompt, reference, outputs in samples:
        cells = "".join(f'<td class="text">{_cut(outputs.get(m, ""), 400)}</td>' for m in models)
        rows.append(f'<tr><td class="num">{_e(row)}</td><td class="text">{_cut(prompt, 400)}</td>'
                    f'<td class="text">{_cut(reference, 400)}</td>{cells}</tr>')
    return ('<section id="samples"><h2>Samples</h2><table class="examples"><thead><tr><th>row</th><th>prompt</th>'
            f'<th>reference</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


# --- page --------------------------------------------------------------------------------------
CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #222;
       background: #fff; margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 4px; }
h4 { font-size: 14px; margin: 12px 0 4px; }
.meta { color: #555; margin: 0 0 6px; }
nav a { margin-right: 12px; color: #1f5fa8; }
.muted { color: #666; font-weight: normal; }
table { border-collapse: collapse; margin: 8px 0 12px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.zero { color: #aaa; }
td.text { white-space: pre-wrap; word-break: break-word; max-width: 360px; font-family: "DejaVu Sans Mono",
          Menlo, Consolas, monospace; font-size: 12px; }
table.examples { width: 100%; }
.more { color: #888; font-style: italic; }
tr.better td { background: #e8f5e9; }
tr.worse td { background: #fdecea; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-size: 14px;
         vertical-align: middle; }
.badge.pass { background: #2e7d32; }
.badge.fail { background: #c62828; }
.legend .key { margin-right: 16px; white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 5px; vertical-align: -1px;
          border-radius: 2px; }
.fig { overflow-x: auto; }
svg.figure { display: block; margin: 8px 0; background: #fff; }
svg.figure text { font-family: system-ui, "DejaVu Sans", Arial, sans-serif; font-size: 12px; fill: #222; }
svg.figure text.metric { font-weight: 600; font-size: 13px; }
svg.figure text.muted, svg.figure text.tick { fill: #666; font-size: 11px; }
svg.figure text.value { font-variant-numeric: tabular-nums; }
svg.figure text.axis-title { font-size: 12px; fill: #444; font-weight: 600; }
svg.figure text.collabel, svg.figure text.rowlabel { font-size: 11px; }
svg.figure .axis { stroke: #888; stroke-width: 1; }
svg.figure .grid { stroke: #e5e5e5; stroke-width: 1; }
svg.figure .ci { stroke: #222; stroke-width: 1.5; }
details { margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
"""

_SECTIONS = (("scores", "Scores"), ("comparisons", "Comparisons"), ("gate", "Regression gate"),
             ("elo", "Elo"), ("errors", "Error analysis"), ("confusion", "Confusion"),
             ("loss", "Training loss"), ("samples", "Samples"))


def render_html(view: ReportView) -> str:
    """The whole report as one HTML document (UTF-8 text). None is accepted for any list or dict
    field (no data), and a single ConfusionView for `confusion` (drawn without a model name)."""
    if isinstance(view.confusion, ConfusionView):
        view = replace(view, confusion={"": view.confusion})
    view = replace(view, **{name: value for name, value in (
        ("scores", []), ("comparisons", []), ("elo", []), ("errors", {}), ("confusion", {}), ("samples", []))
        if getattr(view, name) is None})
    parts: dict[str, str] = {}
    if view.scores and _metric_keys(view.scores):
        parts["scores"] = _scores_section(view)
    if view.comparisons:
        parts["comparisons"] = _comparisons_section(view)
    if view.gate is not None:
        parts["gate"] = _gate_section(view.gate)
    if view.elo:
        parts["elo"] = _elo_section(view.elo, _colors(view))
    if view.errors:
        parts["errors"] = _errors_section(view)
    if view.confusion and any(m.labels for m in view.confusion.values()):
        parts["confusion"] = _confusion_section(view)
    if view.loss_curve is not None and (view.loss_curve.train or view.loss_curve.validation):
        parts["loss"] = _loss_section(view.loss_curve)
    if view.samples:
        parts["samples"] = _samples_section(view.samples)

    nav = "".join(f'<a href="#{key}">{_e(name)}</a>' for key, name in _SECTIONS if key in parts)
    missing = [name for key, name in _SECTIONS if key not in parts]
    not_run = f'<p class="muted">Not in this report: {_e(", ".join(missing))}.</p>' if missing else ""
    meta = " · ".join(_e(v) for v in (
        f"dataset {view.dataset}" if view.dataset else "", f"split {view.split}" if view.split else "",
        f"{_num(view.rows)} rows" if view.rows else "", view.created) if v)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><title>{_e(view.title)}</title><style>{CSS}</style></head><body><main>'
            f'<header><h1>{_e(view.title)}</h1><p class="meta">{meta}</p><nav>{nav}</nav>{not_run}</header>'
            + "".join(parts[key] for key, _ in _SECTIONS if key in parts)
            + "</main></body></html>\n")
