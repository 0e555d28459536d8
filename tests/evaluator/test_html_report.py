"""The HTML report (tunesmith.evaluator.html_report): every section filled, rendered offline in
headless Chromium; the figures must be drawn, not an empty page.

The Chromium part needs Debian's chromium (/usr/bin/chromium: `apt-get install -y chromium`) and
skips without it. The DOM is dumped from an instrumented copy of the page (a script appended at
the end records each figure's box in the page; the report itself has no script), and the
screenshot, taken at the page's full height, is checked inside those boxes.
"""
from __future__ import annotations

import html.parser
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from tunesmith.evaluator.html_report import (
    MAX_CONFUSION_LABELS,
    ComparisonView,
    ConfusionView,
    CurveView,
    EloView,
    ErrorAnalysisView,
    ExampleView,
    GateRow,
    GateView,
    MetricView,
    ReportView,
    SampleView,
    ScoreView,
    render_html,
)

CHROMIUM = "/usr/bin/chromium"
SHAPES = ("rect", "line", "circle", "polyline", "path", "polygon", "ellipse")


def intent_labels(n: int = 77) -> list[str]:
    words = ["card", "transfer", "top_up", "cash", "pin", "account", "fee", "exchange", "refund", "payment",
             "atm", "balance"]
    out = []
    for i in range(n):
        out.append(f"{words[i % len(words)]}_{['arrival', 'failed', 'pending', 'limits', 'charge', 'issue', 'request'][i % 7]}_{i}")
    return out


def confusion(labels: list[str], seed: int, other: bool = True) -> ConfusionView:
    rng = random.Random(seed)
    order = labels + (["(other)"] if other else [])
    n = len(order)
    counts = [[0] * n for _ in range(n)]
    for r in range(len(labels)):
        counts[r][r] = rng.randint(5, 40)
        for _ in range(rng.randint(0, 3)):
            counts[r][rng.randrange(n)] += rng.randint(1, 6)
    return ConfusionView(labels=order, counts=counts)


def full_view() -> ReportView:
    labels = intent_labels(77)
    ex = ExampleView(row=12, prompt="Classify: <b>my card</b> & \"PIN\" 日本語 " + "long " * 300,
                     reference="card_arrival", prediction="card_arival\n<script>alert(1)</script>")
    train = [(s, 2.5 * math.exp(-s / 120) + 0.4 + 0.05 * math.sin(s / 3)) for s in range(1, 501)]
    validation = [(s, 2.4 * math.exp(-s / 130) + 0.55) for s in range(50, 501, 50)]
    return ReportView(
        title="Banking77 <base> vs tuned & co",
        dataset="banking77", split="test", rows=3080, created="2025-01-02T03:04:05Z",
        scores=[
            ScoreView("base", "SmolLM2-135M-Instruct", [
                MetricView("accuracy", "accuracy", 0.412, 0.395, 0.430),
                MetricView("macro_f1", "macro_f1", 0.35, 0.33, 0.37),
                MetricView("perplexity", "perplexity", 12.4, 11.9, 13.1, higher_is_better=False),
                MetricView("rouge", "rougeL", 0.21, None, None),
            ]),
            ScoreView("tuned", "adapter lora-7 (r=16)", [
                MetricView("accuracy", "accuracy", 0.873, 0.861, 0.884),
                MetricView("macro_f1", "macro_f1", 0.86, 0.845, 0.875),
                MetricView("perplexity", "perplexity", 4.1, 3.9, 4.4, higher_is_better=False),
                MetricView("rouge", "rougeL", float("nan")),
            ]),
        ],
        comparisons=[
            ComparisonView("base", "tuned", "accuracy", 0.461, 1e-9, True, "mcnemar"),
            ComparisonView("base", "tuned", "perplexity", -8.3, 0.0004, True, "paired_bootstrap",
                           higher_is_better=False),
            ComparisonView("base", "tuned", "rougeL", 0.001, 0.62, False, "permutation"),
        ],
        gate=GateView(passed=False, tolerance=0.01, rows=[
            GateRow("banking77", "accuracy", 0.412, 0.873, 0.461, 1e-9, True),
            ("general", "rougeL", 0.30, 0.25, -0.05, 0.01, False),  # a plain tuple also does
        ]),
        elo=[EloView("base", 912.5, 890.1, 935.0, 40, 120, 12), EloView("tuned", 1087.5, 1064.0, 1110.2, 120, 40, 12)],
        errors={
            "base": ErrorAnalysisView(
                counts={"empty_answer": 14, "invalid_label.near_miss": 120, "invalid_label.invented": 800,
                        "repetition": 0},
                examples={"invalid_label.near_miss": [ex, ex], "empty_answer": [
                    ExampleView(3, "Classify: hi", "card_arrival", "")]},
                descriptions={"empty_answer": "the answer is empty or whitespace only"}),
            "tuned": ErrorAnalysisView(counts={"empty_answer": 0, "invalid_label.near_miss": 9,
                                               "invalid_label.invented": 2, "repetition": 1},
                                       examples={"repetition": [ExampleView(7, "p", "r", "ha" * 40)]}),
        },
        confusion={"base": confusion(labels, 1), "tuned": confusion(labels[:12], 2, other=False)},
        loss_curve=CurveView(train=train, validation=validation),
        samples=[SampleView(0, "Classify: where is my card?", "card_arrival",
                            {"base": "The card will arrive", "tuned": "card_arrival"}),
                 (1, "Classify: <PIN>", "change_pin", {"base": "", "tuned": "change_pin"})],
    )


# --- static checks (no browser) -----------------------------------------------------------------
class FigureParser(html.parser.HTMLParser):
    """Each svg.figure's id -> {shape tag: count}; also every tag seen and text of <title>."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, dict[str, int]] = {}
        self.current: str | None = None
        self.depth = 0
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg" and "figure" in (a.get("class") or "").split():
            self.current, self.depth = a.get("id", ""), 0
            self.figures[self.current] = {}
        elif self.current is not None:
            if tag == "svg":
                self.depth += 1
            if tag in SHAPES:
                self.figures[self.current][tag] = self.figures[self.current].get(tag, 0) + 1

    def handle_endtag(self, tag):
        if tag == "svg" and self.current is not None:
            if self.depth == 0:
                self.current = None
            else:
                self.depth -= 1


def parse(page: str) -> FigureParser:
    p = FigureParser()
    p.feed(page)
    return p


def expected_figures() -> set[str]:
    return {"fig-scores", "fig-elo", "fig-loss", "fig-confusion-0", "fig-confusion-1"}


def test_every_section_and_figure_is_there():
    page = render_html(full_view())
    for section in ("scores", "comparisons", "gate", "elo", "errors", "confusion", "loss", "samples"):
        assert f'<section id="{section}">' in page
    figures = parse(page).figures
    assert set(figures) == expected_figures()
    assert "Not in this report" not in page
    assert 'class="badge fail">FAIL' in page


def test_the_page_is_offline_and_escaped():
    page = render_html(full_view())
    assert not re.search(r"https?://", page), "the report must not reference any http(s) resource"
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", page), "only in-page links"
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "<script" not in page  # no JS at all, and the example's <script> is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>Banking77 &lt;base&gt; vs tuned &amp; co</title>" in page
    assert "<b>my card</b>" not in page


def test_the_77_label_confusion_matrix_is_cut_to_the_most_confused_labels():
    view = full_view()
    page = render_html(view)
    shapes = parse(page).figures
    cells = shapes["fig-confusion-0"]["rect"]
    # at most MAX labels + (other) rows, and MAX labels + (other) + (rest) columns
    assert cells <= (MAX_CONFUSION_LABELS + 1) * (MAX_CONFUSION_LABELS + 2)
    assert cells >= MAX_CONFUSION_LABELS * MAX_CONFUSION_LABELS
    assert f"Showing the {MAX_CONFUSION_LABELS} of 77 labels most involved in mistakes" in page
    assert shapes["fig-confusion-1"]["rect"] == 12 * 12  # small: every label, no (other) row/column
    assert "All 12 labels." in page
    # the most confused label is drawn
    matrix = view.confusion["base"]
    n = len(matrix.labels) - 1
    involvement = [sum(matrix.counts[i]) - matrix.counts[i][i] + sum(matrix.counts[r][i] for r in range(n + 1))
                   - matrix.counts[i][i] for i in range(n)]
    top = matrix.labels[max(range(n), key=lambda i: (involvement[i], -i))]
    figure = page.split('id="fig-confusion-0"', 1)[1].split("</svg>", 1)[0]
    assert f">{top}<" in figure or f">{top[:25]}" in figure


def test_empty_sections_are_left_out():
    page = render_html(ReportView(title="nothing yet", dataset="d", split="test", rows=0))
    assert "<section" not in page and "<svg" not in page
    assert "Not in this report: Scores, Comparisons, Regression gate, Elo, Error analysis, Confusion, " \
           "Training loss, Samples." in page
    page = render_html(ReportView(title="t", gate=GateView(passed=True, tolerance=0.0),
                                  loss_curve=CurveView(train=[(1, 2.0)]),
                                  confusion={"m": ConfusionView(labels=[], counts=[])}))
    assert '<section id="gate">' in page and 'class="badge pass">PASS' in page
    assert '<section id="loss">' in page and '<section id="confusion">' not in page


def test_none_fields_and_a_single_confusion_matrix_are_accepted():
    view = ReportView(title="t", scores=None, comparisons=None, elo=None, errors=None, samples=None,
                      confusion=ConfusionView(labels=["a", "b"], counts=[[3, 1], [0, 2]]))
    page = render_html(view)
    assert set(parse(page).figures) == {"fig-confusion-0"}
    assert isinstance(view.confusion, ConfusionView)  # the caller's view is left alone


# --- in a browser ------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)")

PROBE = """<script>
(function () {
  var out = {height: document.documentElement.scrollHeight, figures: {}};
  document.querySelectorAll("svg.figure").forEach(function (svg) {
    var r = svg.getBoundingClientRect();
    out.figures[svg.id] = [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];
  });
  var pre = document.createElement("pre");
  pre.id = "probe"; pre.style.display = "none"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def chromium(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
               f"--user-data-dir={profile}", *args, url]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(tmp)})


def read_png(path: Path) -> tuple[int, int, Callable[[tuple[int, int, int, int]], list[int]]]:
    """(width, height, gray(box) -> histogram of 256 luminance counts). PIL when installed, else a
    small zlib decoder (8-bit RGB/RGBA/gray, non-interlaced: what Chromium writes)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        image = Image.open(path).convert("L")

        def histogram(box):
            return image.crop(box).histogram()
        return image.width, image.height, histogram

    width, height, pixels = decode_png(path.read_bytes())

    def histogram(box):
        left, top, right, bottom = box
        counts = [0] * 256
        for y in range(max(0, top), min(height, bottom)):
            line = pixels[y]
            for x in range(max(0, left), min(width, right)):
                counts[line[x]] += 1
        return counts
    return width, height, histogram


def decode_png(data: bytes) -> tuple[int, int, list[list[int]]]:
    """A minimal PNG decoder: rows of luminance values (0..255)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = color = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    assert depth == 8 and channels and not interlace, f"unsupported PNG (depth {depth}, color {color})"
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        previous = line
        if channels <= 2:
            rows.append(list(line[::channels]))
        else:
            rows.append([(299 * line[i] + 587 * line[i + 1] + 114 * line[i + 2]) // 1000
                         for i in range(0, stride, channels)])
    return width, height, rows


def test_the_small_png_decoder_agrees_with_pil(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = random.Random(3)
    image = Image.new("RGB", (37, 23))
    image.putdata([(rng.randrange(256), rng.randrange(256), (x * 7) % 256) for x in range(37 * 23)])
    image.save(tmp_path / "a.png")
    width, height, rows = decode_png((tmp_path / "a.png").read_bytes())
    gray = image.convert("L")
    assert (width, height) == (37, 23)
    assert all(abs(rows[y][x] - gray.getpixel((x, y))) <= 1 for y in range(23) for x in range(37))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("html_report")
    page = render_html(full_view())
    (tmp / "report.html").write_text(page, encoding="utf-8")
    probe = tmp / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp, probe.as_uri(), "--window-size=1280,4000", "--dump-dom")
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-3000:]
    layout = json.loads(html.unescape(re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom.stdout, re.DOTALL).group(1)))
    height = min(int(layout["height"]) + 20, 16000)
    shot = tmp / "report.png"
    done = chromium(tmp, (tmp / "report.html").as_uri(), f"--window-size=1280,{height}", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-3000:]
    keep = os.environ.get("TUNESMITH_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    return {"page": page, "dom": dom.stdout, "layout": layout, "screenshot": shot, "height": height}


@needs_chromium
def test_chromium_draws_every_figure_with_shapes(rendered):
    figures = parse(rendered["dom"]).figures
    assert set(figures) == expected_figures()
    least = {"fig-scores": 20, "fig-elo": 6, "fig-loss": 20, "fig-confusion-0": 600, "fig-confusion-1": 144}
    for fig, shapes in figures.items():
        assert sum(shapes.values()) >= least[fig], (fig, shapes)
    assert figures["fig-loss"].get("polyline", 0) == 2  # train and validation
    for fig, (left, top, width, height) in rendered["layout"]["figures"].items():
        assert width > 200 and height > 80, (fig, width, height)  # laid out, not collapsed


@needs_chromium
def test_the_screenshot_shows_the_figures(rendered):
    width, height, histogram = read_png(rendered["screenshot"])
    assert width == 1280 and height == rendered["height"]
    whole = histogram((0, 0, width, height))
    assert sum(whole[:200]) / sum(whole) > 0.01, "the page looks empty"
    # non-background share needed inside each figure's box (the loss chart is mostly thin lines)
    least = {"fig-scores": 0.05, "fig-elo": 0.02, "fig-loss": 0.02, "fig-confusion-0": 0.15, "fig-confusion-1": 0.15}
    for fig, (left, top, w, h) in rendered["layout"]["figures"].items():
        box = (int(left), int(top), int(left + w), int(top + h))
        assert box[3] <= height, f"{fig} lies below the screenshot"
        counts = histogram(box)
        drawn = sum(counts[:245]) / max(1, sum(counts))
        assert drawn >= least[fig], f"{fig}: only {drawn:.1%} of its box is drawn"
