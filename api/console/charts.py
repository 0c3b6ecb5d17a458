"""Charts as inline SVG, drawn on the server from the ledger's buckets
(identity/ledger/activity.py): no script, no network, and the numbers are in the page."""

from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 170, 52, 22, 12


@dataclass(frozen=True)
class Series:
    label: str
    css: str  # the class that colours it (console.css)
    values: list[float | None]  # one per bucket; None: nothing to show there


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def line_chart(title: str, unit: str, starts: list[datetime], series: list[Series]) -> Markup:
    """A chart of `series` over buckets starting at `starts`, each series a polyline."""
    peak = max((v for s in series for v in s.values if v is not None), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(starts) - 1, 1)

    def point(i: int, value: float) -> str:
        return f"{LEFT + i * step:.1f},{TOP + plot_h - value / peak * plot_h:.1f}"

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" '
        f'y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{_number(peak)}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for i in sorted({0, len(starts) // 2, len(starts) - 1}):
        anchor = "start" if i == 0 else "end" if i == len(starts) - 1 else "middle"
        label = starts[i].astimezone(UTC).strftime("%H:%M")
        parts.append(
            f'<text class="tick" x="{LEFT + i * step:.1f}" y="{HEIGHT - 6}" '
            f'text-anchor="{anchor}">{label}</text>'
        )
    for s in series:
        runs: list[list[str]] = [[]]
        for i, value in enumerate(s.values):
            if value is None:
                runs.append([])
            else:
                runs[-1].append(point(i, value))
        for run in runs:
            if len(run) == 1:  # a lone bucket: a dot, which a line of one point would not draw
                x, y = run[0].split(",")
                parts.append(f'<circle class="{s.css}" cx="{x}" cy="{y}" r="2.5"/>')
            elif run:
                parts.append(f'<polyline class="{s.css}" points="{" ".join(run)}"/>')
    legend = "".join(f'<span class="key {s.css}">{escape(s.label)}</span>' for s in series)
    parts.append("</svg>")
    return Markup(
        f"<figure><figcaption>{escape(title)} {legend}</figcaption>{''.join(parts)}</figure>"
    )
