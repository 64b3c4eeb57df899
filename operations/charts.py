"""Charts of the operations admin, as data: the page hands each to operations/static/operations/charts.js, which
draws it with uPlot (served as a static file, never from a CDN).

A chart is a plain dict, embedded in the page with Django's `json_script` (escaped for a <script> element: a
forged result cannot inject markup or code). Values that are not finite numbers become gaps; points whose time
cannot be read are left out; a chart with nothing to draw is None.

    {"title": "Equity", "x": {"kind": "time" | "number", "label": "..."},
     "y": {"unit": "money" | "loss" | "fraction" | "drawdown" | "number", "label": "..."},
     "data": [[x, ...], [y of series 1, ...], ...],   # uPlot's columns; time in seconds since 1970 (UTC)
     "series": [{"label": "...", "colour": "#417690", "fill": false}, ...],
     "markers": [{"x": 12, "label": "best epoch 12"}],    # a dashed vertical line, labelled
     "height": 300}                                          # CSS pixels; the width is the page's
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

COLOURS = ("#417690", "#e07a2e", "#5a9e4b", "#b04a9a")
DRAWDOWN_COLOUR = "#c0392b"
Y_UNITS = ("money", "loss", "fraction", "drawdown", "number")


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: object) -> float | None:
    return float(value) if is_number(value) and math.isfinite(value) else None


def seconds(moment: object) -> int | None:
    """An ISO 8601 time of a result ("2015-01-01T00:00:00Z") in seconds since 1970; naive means UTC."""
    if not isinstance(moment, str):
        return None
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


def readable_time(moment: object) -> str:
    """A time of a result as people read it: "2015-01-01T00:00:00Z" -> "2015-01-01 00:00 UTC"."""
    at = seconds(moment)
    if at is None:
        return str(moment)
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def timed_values(points: object) -> dict[int, float | None]:
    """[[time, value], ...] of a result as {seconds: value}; points of another shape are left out."""
    if not isinstance(points, list):
        return {}
    read = {}
    for point in points:
        if isinstance(point, (list, tuple)) and len(point) == 2 and (at := seconds(point[0])) is not None:
            read[at] = finite(point[1])
    return read


def _chart(title: str, x: dict, unit: str, y_label: str, xs: list, columns: Sequence[tuple[str, list, dict]],
           markers: Sequence[dict], height: int) -> dict[str, Any] | None:
    assert unit in Y_UNITS, unit
    columns = [(label, values, style) for label, values, style in columns if any(v is not None for v in values)]
    if not xs or not columns:
        return None
    return {
        "title": title,
        "x": x,
        "y": {"unit": unit, "label": y_label},
        "data": [xs, *(values for _, values, _ in columns)],
        "series": [{"label": label, "colour": style.get("colour", COLOURS[index % len(COLOURS)]),
                    "fill": bool(style.get("fill"))} for index, (label, _, style) in enumerate(columns)],
        "markers": [marker for marker in markers if finite(marker.get("x")) is not None],
        "height": height,
    }


def time_chart(title: str, curves: Mapping[str, object], *, unit: str, y_label: str = "",
               styles: Mapping[str, dict] | None = None, height: int = 300) -> dict[str, Any] | None:
    """Curves of [[time, value], ...] on one time axis (the union of their times, in order)."""
    read = {label: timed_values(points) for label, points in curves.items()}
    xs = sorted({at for values in read.values() for at in values})
    columns = [(label, [values.get(at) for at in xs], (styles or {}).get(label, {})) for label, values in read.items()]
    return _chart(title, {"kind": "time", "label": ""}, unit, y_label, xs, columns, [], height)


def number_chart(title: str, xs: Sequence[object], series: Mapping[str, Sequence[object]], *, x_label: str,
                 unit: str, y_label: str = "", markers: Sequence[dict] = (),
                 height: int = 300) -> dict[str, Any] | None:
    """Series over a numbered axis (epochs): the rows whose x is not a number are left out."""
    kept = [index for index, x in enumerate(xs) if finite(x) is not None]
    order = sorted(kept, key=lambda index: xs[index])
    columns = [(label, [finite(values[index]) if index < len(values) else None for index in order], {})
               for label, values in series.items()]
    return _chart(title, {"kind": "number", "label": x_label}, unit, y_label, [finite(xs[i]) for i in order],
                  columns, markers, height)
