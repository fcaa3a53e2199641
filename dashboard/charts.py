"""The overview's charts as SVG, drawn on the server: nothing is fetched by the browser, and the
colours come from the admin's CSS variables where they can, so the light and dark themes both apply.
Each chart carries a text summary (`aria-label`) and every bar a tooltip (`<title>`)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.html import escape

WIDTH = 900
HEIGHT = 220
LEFT = 44
BOTTOM = 28
TOP = 10


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    colour: str


def stacked_bars(
    title: str,
    columns: list[tuple[str, str, dict[str, int]]],
    series: list[Series],
    tick_every: int,
) -> str:
    """A stacked bar chart: `columns` are (tick label, tooltip label, {series key: count})."""
    peak = max((sum(counts.get(s.key, 0) for s in series) for _, _, counts in columns), default=0)
    top = _nice(peak)
    plot_w = WIDTH - LEFT - 8
    plot_h = HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(columns), 1)
    bar = max(step * 0.8, 1.0)
    parts = [
        f'<svg class="cw-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(_summary(title, columns, series))}" preserveAspectRatio="none">'
    ]
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="cw-grid" x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="cw-axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{top * fraction:g}</text>"
        )
    for index, (tick, tooltip, counts) in enumerate(columns):
        x = LEFT + index * step + (step - bar) / 2
        base = TOP + plot_h
        total = sum(counts.get(s.key, 0) for s in series)
        text = escape(f"{tooltip}: " + ", ".join(f"{counts.get(s.key, 0)} {s.label.lower()}" for s in series))
        parts.append(f"<g><title>{text}</title>")
        if total == 0:
            # An empty column still has its tooltip over the whole height.
            parts.append(f'<rect class="cw-hit" x="{x:.1f}" y="{TOP}" width="{bar:.1f}" height="{plot_h}"/>')
        for one in series:
            count = counts.get(one.key, 0)
            if not count:
                continue
            height = plot_h * count / top if top else 0
            base -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'style="fill:{one.colour}"/>'
            )
        parts.append("</g>")
        if tick and index % tick_every == 0:
            parts.append(
                f'<text class="cw-axis" x="{x + bar / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(tick)}</text>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="cw-key"><span class="cw-swatch" style="background:{s.colour}"></span>'
        f"{escape(s.label)}</span>"
        for s in series
    )
    caption = f"<figcaption>{escape(title)} {legend}</figcaption>"
    return f'<figure class="cw-figure">{caption}{"".join(parts)}</figure>'


def _nice(peak: int) -> int:
    """The axis' top: the peak rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    if peak <= 1:
        return 1
    magnitude = 1
    while magnitude * 10 < peak:
        magnitude *= 10
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= peak:
            return factor * magnitude
    return 10 * magnitude


def _summary(title: str, columns, series: list[Series]) -> str:
    totals = {s.key: sum(counts.get(s.key, 0) for _, _, counts in columns) for s in series}
    return f"{title}: " + ", ".join(f"{totals[s.key]} {s.label.lower()} in all" for s in series)
