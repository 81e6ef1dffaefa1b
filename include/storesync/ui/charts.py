"""Charts as inline SVG, drawn on the server: no chart library, no script, nothing to fetch.

Each chart is a bar chart (stacked, grouped or plain) with a y axis of round numbers, x labels
thinned to fit, a legend, and a ``<title>`` on every bar (the exact numbers on hover). Colours
follow the meaning: green for done, blue/grey for waiting, amber for held, red for dead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

STATE_COLOURS = {
    "accepted": "#2f9e44", "suppressed": "#8ce99a", "superseded": "#adb5bd", "staged": "#d0ebff",
    "planned": "#74c0fc", "sending": "#1c7ed6", "retry": "#9775fa", "unknown": "#f59f00", "dead": "#e03131",
}
PALETTE = ("#1c7ed6", "#f59f00", "#2f9e44", "#e03131", "#9775fa", "#0ca678", "#d6336c", "#5c7cfa",
           "#fd7e14", "#868e96")
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 44


def nice_max(value: float, *, whole: bool = True) -> float:
    """The top of a y axis with four gridlines at round steps (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k)
    at or above ``value``; ``whole``: steps of at least 1 (counts)."""
    if value <= 0:
        return 4 if whole else 1
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next((m * power for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * power >= raw), 10 * power)
    return 4 * (max(step, 1) if whole else step)


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _frame(title: str, top: float, labels: Sequence[str], *, unit: str = "") -> list[str]:
    """The SVG's opening, y grid with values, and x labels (thinned to about 12)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f'{escape(_fmt(value))}{escape(unit)}</text>')
    step = max(1, math.ceil(len(labels) / 12))
    slot = plot_w / max(1, len(labels))
    for i, label in enumerate(labels):
        if i % step == 0:
            x = LEFT + slot * (i + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" class="axis" text-anchor="middle">'
                         f'{escape(label)}</text>')
    return parts


def _legend(names: Sequence[str], colours: dict[str, str]) -> str:
    x, items = LEFT, []
    for name in names:
        items.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colours[name]}"/>'
                     f'<text x="{x + 14}" y="{HEIGHT - 5}" class="legend">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(items)


def stacked_bars(title: str, labels: Sequence[str], series: dict[str, Sequence[int]],
                 colours: dict[str, str] | None = None) -> str:
    """One bar per label, stacked by series; series that are all zero are left out."""
    shown = {name: list(values) for name, values in series.items() if any(values)}
    colours = {**{n: PALETTE[i % len(PALETTE)] for i, n in enumerate(shown)}, **(colours or {})}
    totals = [sum(values[i] for values in shown.values()) for i in range(len(labels))]
    top = nice_max(max(totals, default=0))
    parts = _frame(title, top, labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    for i, label in enumerate(labels):
        y = TOP + plot_h
        for name, values in shown.items():
            if not values[i]:
                continue
            h = plot_h * values[i] / top
            y -= h
            parts.append(f'<rect x="{LEFT + slot * i + slot * 0.15:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                         f'height="{h:.1f}" fill="{colours[name]}"><title>{escape(label)}: {escape(name)} '
                         f'{values[i]:,}</title></rect>')
    if not shown:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="empty" text-anchor="middle">nothing yet</text>')
    parts.append(_legend(list(shown), colours))
    parts.append("</svg>")
    return "".join(parts)


def bars_with_limit(title: str, labels: Sequence[str], values: Sequence[int], limit: float | None,
                    *, colour: str = "#1c7ed6") -> str:
    """Bars against a dashed limit line (a budget per minute): bars over it turn red."""
    top = nice_max(max([*values, limit or 0], default=0) * (1.1 if limit else 1))
    parts = _frame(title, top, labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if not value:
            continue
        h = plot_h * value / top
        fill = "#e03131" if limit and value > limit else colour
        parts.append(f'<rect x="{LEFT + slot * i + slot * 0.1:.1f}" y="{TOP + plot_h - h:.1f}" '
                     f'width="{slot * 0.8:.1f}" height="{h:.1f}" fill="{fill}"><title>{escape(label)}: '
                     f'{value:,}</title></rect>')
    names, colours = ["sent per minute"], {"sent per minute": colour}
    if limit:
        y = TOP + plot_h - plot_h * limit / top
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="limit">'
                     f'<title>budget {limit:,.0f} per minute</title></line>')
        names.append(f"budget {limit:,.0f}/min")
        colours[names[-1]] = "#e03131"
    parts.append(_legend(names, colours))
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]],
                 *, unit: str = "") -> str:
    """Bars side by side per label (historic against predicted, say); None is no bar."""
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    top = nice_max(max((v for values in series.values() for v in values if v is not None), default=0), whole=False)
    parts = _frame(title, top, labels, unit=unit)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    width = slot * 0.8 / max(1, len(series))
    for i, label in enumerate(labels):
        for j, (name, values) in enumerate(series.items()):
            value = values[i]
            if value is None:
                continue
            h = plot_h * value / top
            parts.append(f'<rect x="{LEFT + slot * i + slot * 0.1 + width * j:.1f}" y="{TOP + plot_h - h:.1f}" '
                         f'width="{width:.1f}" height="{h:.1f}" fill="{colours[name]}"><title>{escape(label)}: '
                         f'{escape(name)} {_fmt(value)}{escape(unit)}</title></rect>')
    if not labels:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="empty" text-anchor="middle">nothing yet</text>')
    parts.append(_legend(list(series), colours))
    parts.append("</svg>")
    return "".join(parts)
