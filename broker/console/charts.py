"""Server-rendered charts: inline SVG bar and line charts, no JavaScript and no chart library.

Each chart carries a ``<title>`` and ``<desc>`` (read by screen readers) and is drawn next to the
table of the same figures, so nothing is only in the picture. Suppressed values (``None``) are not
drawn: a bar reads "fewer than k" and a line has a gap. Colours come with text labels, so the
charts do not rely on colour alone. Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#1f5fa8", "#b3541e", "#3c7d3a", "#6b4c9a")
WIDTH = 640
BAR_ROW = 26
MARGIN_LEFT = 190
MARGIN_RIGHT = 70
FONT = "font-family='system-ui, sans-serif' font-size='12'"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[int | None]  # None: fewer than k; negative: hidden (secondary suppression)


def _text(x: float, y: float, text: str, *, anchor: str = "start", extra: str = "") -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {FONT} fill='#1b1b1b'{extra}>"
        f"{escape(text)}</text>"
    )


def _open(chart_id: str, title: str, desc: str, height: float) -> list[str]:
    cid = escape(chart_id)
    return [
        f"<svg xmlns='http://www.w3.org/2000/svg' class='chart' id='{cid}' role='img'"
        f" width='{WIDTH}' height='{height:.0f}' viewBox='0 0 {WIDTH} {height:.0f}'"
        f" aria-labelledby='{cid}-title {cid}-desc'>",
        f"<title id='{cid}-title'>{escape(title)}</title>",
        f"<desc id='{cid}-desc'>{escape(desc)}</desc>",
    ]


def bar_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    k: int,
) -> Markup:
    """Horizontal grouped bars: one group per category, one bar per series."""
    if not categories or not series:
        return Markup("<p class='empty'>No data in this period.</p>")
    drawn = [v for s in series for v in s.values if v is not None and v >= 0]
    top = max([1, *drawn])
    legend_h = 24
    group_h = BAR_ROW * len(series) + 10
    height = legend_h + group_h * len(categories) + 10
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    parts = _open(
        chart_id,
        title,
        f"{title}: {', '.join(s.name for s in series)} per category; counts below {k} are "
        "not shown.",
        height,
    )
    for i, s in enumerate(series):
        x = MARGIN_LEFT + i * 150
        parts.append(
            f"<rect x='{x}' y='6' width='12' height='12' fill='{PALETTE[i % len(PALETTE)]}'/>"
        )
        parts.append(_text(x + 18, 16, s.name))
    for c, category in enumerate(categories):
        y0 = legend_h + c * group_h
        parts.append(_text(MARGIN_LEFT - 8, y0 + group_h / 2, category, anchor="end"))
        for i, s in enumerate(series):
            y = y0 + i * BAR_ROW + 4
            value = s.values[c]
            if value is None or value < 0:
                note = f"fewer than {k}" if value is None else "hidden"
                parts.append(
                    _text(MARGIN_LEFT + 4, y + 15, f"{s.name}: {note}", extra=" class='s'")
                )
                continue
            w = plot_w * value / top
            fill = PALETTE[i % len(PALETTE)]
            parts.append(
                f"<rect x='{MARGIN_LEFT}' y='{y}' width='{w:.1f}' height='{BAR_ROW - 6}'"
                f" fill='{fill}'><title>{escape(f'{category}, {s.name}: {value}')}</title></rect>"
            )
            parts.append(_text(MARGIN_LEFT + w + 4, y + 15, str(value)))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in parts was escaped


def line_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float | None]],
    *,
    k: int,
    y_label: str = "hit rate",
) -> Markup:
    """A line over days with values in [0, 1] (drawn as percentages); None leaves a gap."""
    if not points:
        return Markup("<p class='empty'>No data in this period.</p>")
    height = 260
    left, right, top, bottom = 56, 20, 24, 48
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    parts = _open(
        chart_id,
        title,
        f"{title}, per day, as a percentage; days with fewer than {k} answers or fewer than {k} "
        "hits are not shown.",
        height,
    )
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(
            f"<line x1='{left}' x2='{WIDTH - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#d0d0d0'/>"
        )
        parts.append(_text(left - 6, y + 4, f"{tick:.0%}", anchor="end"))
    parts.append(_text(left, top - 4, y_label, extra=" class='axis'"))
    step = plot_w / max(1, len(points) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + (i * step if len(points) > 1 else plot_w / 2), top + plot_h * (1 - v)

    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (_, v) in enumerate(points):
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        x, y = xy(i, v)
        segment.append(f"{x:.1f},{y:.1f}")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            parts.append(
                f"<polyline points='{' '.join(seg)}' fill='none' stroke='{PALETTE[0]}'"
                " stroke-width='2'/>"
            )
    for i, (label, v) in enumerate(points):
        if v is not None:
            x, y = xy(i, v)
            parts.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{PALETTE[0]}'>"
                f"<title>{escape(f'{label}: {v:.0%}')}</title></circle>"
            )
    every = max(1, len(points) // 8)
    for i, (label, _) in enumerate(points):
        if i % every == 0 or i == len(points) - 1:
            x, _ = xy(i, 0)
            parts.append(_text(x, height - bottom + 18, label[5:], anchor="middle"))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in parts was escaped
