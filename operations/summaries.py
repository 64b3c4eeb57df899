"""An operation's result in a few figures, each with its unit: what the API's lists, `operations status`, the
end of `--follow` and the admin's result panel show instead of the whole result.

Each domain app registers, in its `AppConfig.ready()`, how to read its result into figures
(`registry.register_result_summary`); this module says how a figure reads. One place, so the CLI, the admin and
the API never round or label the same number two ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Unit(str, Enum):
    RETURN = "return"  # a fraction shown as a signed percentage: 0.1234 -> +12.34 %
    FRACTION = "fraction"  # a fraction shown as a percentage: 0.5312 -> 53.12 %
    RATIO = "ratio"  # a plain ratio (a Sharpe): 1.2345 -> 1.23
    LOSS = "loss"  # a loss: 0.69312 -> 0.6931
    COUNT = "count"  # 12345 -> 12,345
    MONEY = "money"  # 101234.5 -> 101,234.50
    PRICE = "price"  # a price or a quantity: 1234.567891 -> 1,234.5679
    SECONDS = "seconds"  # 3725.4 -> 1 h 02 min
    TEXT = "text"  # as it is


@dataclass(frozen=True)
class Figure:
    """One figure of a result: its API name (`key`), its label for people, its value and how it reads."""

    key: str
    label: str
    value: Any
    unit: Unit = Unit.TEXT
    note: str = ""  # said after the value: "(epoch 12)", "(buy-and-hold +3.10 %)"

    @property
    def text(self) -> str:
        shown = format_value(self.value, self.unit)
        return f"{shown} {self.note}" if self.note and self.value is not None else shown


def format_value(value: Any, unit: Unit) -> str:
    """A value as people read it; none (a Sharpe of a flat equity curve) reads as a dash."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    if unit is Unit.TEXT or isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if unit is Unit.RETURN:
        return f"{value * 100:+,.2f} %"
    if unit is Unit.FRACTION:
        return f"{value * 100:,.2f} %"
    if unit is Unit.RATIO:
        return f"{value:,.2f}"
    if unit is Unit.LOSS:
        return f"{value:.4f}"
    if unit is Unit.COUNT:
        return f"{value:,.0f}"
    if unit is Unit.MONEY:
        return f"{value:,.2f}"
    if unit is Unit.PRICE:
        return f"{value:,.4f}"
    if unit is Unit.SECONDS:
        return duration(value)
    return str(value)


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def figures_dict(figures: list[Figure]) -> dict[str, Any]:
    """The figures as the API gives them: {key: value}."""
    return {figure.key: figure.value for figure in figures}


def number(value: Any) -> float | int | None:
    """A number of a result, or None for anything else (a result of another shape reads as missing figures)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if not isinstance(value, float) or math.isfinite(value) else None
