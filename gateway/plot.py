"""Line plots as inline SVG, drawn on the gateway: no script, no CDN, a few kB
a plot, readable on a phone in the rain. Pure: numbers in, SVG text out.

Reference lines (a river's four stages, the snow-removal amount) are dashed
horizontals with their names, always inside the drawn range so a technician
sees how far the water is from each."""

from __future__ import annotations

import math
import time
from html import escape

SERIES_COLOURS = ("#1864ab", "#d9480f", "#5f3dc4", "#2b8a3e")
LINE_COLOURS = {"standby": "#2f9e44", "caution": "#e6b800", "evacuation": "#e03131", "danger": "#862e9c",
                "removal": "#1971c2"}

Series = dict[str, list[tuple[float, float]]]  # name -> (epoch seconds, value), oldest first


def _range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or max(abs(high) * 0.1, 0.1)
    return low - pad, high + pad


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(count + 2) if first + i * step <= high]


def thin(points: list[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    """At most `most` points: consecutive points averaged in equal runs (a 640-pixel plot shows no more)."""
    if len(points) <= most:
        return points
    size = -(-len(points) // most)
    runs = [points[i:i + size] for i in range(0, len(points), size)]
    return [(run[-1][0], round(sum(v for _, v in run) / len(run), 6)) for run in runs[:-1]] + [points[-1]]


def line_plot(series: Series, *, start: float, end: float, unit: str = "", lines: list[tuple[str, float]] = (),
              title: str = "", width: int = 640, height: int = 220) -> str:
    left, right, top, bottom = 52, 96, 22, 26
    series = {name: thin(points, width // 2) for name, points in series.items()}
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for points in series.values() for _, v in points] + [v for _, v in lines]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
           f'width="100%" role="img" aria-label="{escape(title)}">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#adb5bd"/>']
    if title:
        out.append(f'<text x="{left}" y="15" font-size="13">{escape(title)}</text>')
    if not values:
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" fill="#868e96" '
                   'font-size="13">no readings in the last 24 h yet</text></svg>')
        return "".join(out)
    low, high = _range(values)

    def x(t: float) -> float:
        return round(left + (t - start) / (end - start) * plot_w, 1)

    def y(v: float) -> float:
        return round(top + (high - v) / (high - low) * plot_h, 1)

    for tick in _ticks(low, high):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick)}" y2="{y(tick)}" stroke="#f1f3f5"/>'
                   f'<text x="{left - 4}" y="{y(tick) + 4}" text-anchor="end" font-size="11">{tick:g}</text>')
    if unit:
        out.append(f'<text x="4" y="{top + 10}" font-size="11">{escape(unit)}</text>')
    hours = 6 if end - start > 6 * 3600 else 1
    t = math.ceil(start / (hours * 3600)) * hours * 3600
    while t <= end:
        label = time.strftime("%H:%M", time.gmtime(t))
        out.append(f'<text x="{x(t)}" y="{height - 8}" text-anchor="middle" font-size="11">{label}</text>')
        t += hours * 3600
    out.append(f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="11" fill="#868e96">'
               'UTC</text>' if hours == 1 else "")
    for name, value in lines:
        colour = LINE_COLOURS.get(name, "#495057")
        out.append(f'<g class="stage" data-stage="{escape(name)}" data-value="{value:g}">'
                   f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value)}" y2="{y(value)}" stroke="{colour}" '
                   f'stroke-width="2" stroke-dasharray="6 4"/>'
                   f'<text x="{left + plot_w + 4}" y="{y(value) + 4}" font-size="11" fill="{colour}">'
                   f'{escape(name)} {value:g}</text></g>')
    for i, (name, points) in enumerate(series.items()):
        if not points:
            continue
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        path = " ".join(f"{x(t)},{y(v)}" for t, v in points)
        last_t, last_v = points[-1]
        out.append(f'<g class="series" data-series="{escape(name)}" data-last="{last_v:g}" data-points="{len(points)}">'
                   f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
                   f'<circle cx="{x(last_t)}" cy="{y(last_v)}" r="3" fill="{colour}"/>'
                   f'<text x="{left + 8 + 130 * i}" y="{top + 14}" font-size="11" fill="{colour}">'
                   f'{escape(name)}</text></g>')
    out.append("</svg>")
    return "".join(out)
