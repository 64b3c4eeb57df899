"""Small server-side SVG line charts for the admin (no JavaScript, no CDN)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

COLOURS = ("#417690", "#e07a2e", "#5a9e4b", "#b04a9a")


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def line_chart(
    series: Mapping[str, Sequence[float]], *, title: str, x_label: str, width: int = 720, height: int = 260
) -> SafeString:
    """One SVG with a polyline per named series, sharing the axes."""
    clean = {name: [v for v in values if is_number(v) and math.isfinite(v)] for name, values in series.items()}
    clean = {name: values for name, values in clean.items() if values}
    if not clean:
        return SafeString("")
    pad_left, pad_right, pad_top, pad_bottom = 60, 20, 30, 40
    longest = max(len(values) for values in clean.values())
    low = min(min(values) for values in clean.values())
    high = max(max(values) for values in clean.values())
    if high == low:
        high, low = high + 1e-9, low - 1e-9
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom

    def point(index: int, value: float) -> str:
        x = pad_left + (plot_w * index / max(1, longest - 1))
        y = pad_top + plot_h * (1 - (value - low) / (high - low))
        return f"{x:.1f},{y:.1f}"

    lines = format_html_join(
        "",
        '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title></polyline>',
        (
            (COLOURS[i % len(COLOURS)], " ".join(point(j, v) for j, v in enumerate(values)), name)
            for i, (name, values) in enumerate(clean.items())
        ),
    )
    legend = format_html_join(
        "",
        '<text x="{}" y="18" fill="{}" font-size="12">■ {}</text>',
        ((pad_left + 150 * i, COLOURS[i % len(COLOURS)], name) for i, name in enumerate(clean)),
    )
    return format_html(
        '<svg class="op-chart" role="img" aria-label="{title}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<rect x="{pl}" y="{pt}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>'
        '<text x="{pl}" y="{yb}" font-size="11" fill="#666">{low}</text>'
        '<text x="{pl}" y="{yt}" font-size="11" fill="#666">{high}</text>'
        '<text x="{xl}" y="{yl}" font-size="11" fill="#666" text-anchor="end">{x_label} ({n})</text>'
        "{legend}{lines}</svg>",
        title=title, w=width, h=height, pl=pad_left, pt=pad_top, pw=plot_w, ph=plot_h,
        yb=pad_top + plot_h + 14, yt=pad_top - 4, low=f"{low:.4g}", high=f"{high:.4g}",
        xl=pad_left + plot_w, yl=pad_top + plot_h + 28, x_label=x_label, n=longest, legend=legend, lines=lines,
    )
