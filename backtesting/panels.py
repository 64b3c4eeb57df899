"""What a backtest's admin page shows: its equity beside buy-and-hold, and its drawdown, over the data's dates.
Its trades have a page of their own (backtesting/trades.py), linked from it."""

from __future__ import annotations

from operations.charts import DRAWDOWN_COLOUR, finite, readable_time, time_chart

# What the page loads of a backtest's result (beside its summary's keys): the curves' few hundred points,
# never its trades.
READS = ("equity_curve", "buy_and_hold_curve", "drawdown_curve", "first_bar", "last_bar")


def below_zero(points: object) -> list:
    """The drawdown curve (fractions below the peak, as the metrics' max_drawdown) drawn downwards."""
    if not isinstance(points, list):
        return []
    return [[point[0], -value if (value := finite(point[1])) is not None else None]
            for point in points if isinstance(point, list) and len(point) == 2]


def backtest_panel(operation, result: dict) -> dict:
    curve = result.get("equity_curve")
    if not curve:
        return {}
    # A result written before the runner added buy-and-hold and the drawdown: the equity alone.
    equity = time_chart("Equity", {"strategy": curve, "buy and hold": result.get("buy_and_hold_curve")},
                        unit="money", y_label="equity")
    if equity is None:
        raise ValueError("no point of equity_curve has a time and a value")
    drawdown = time_chart("Drawdown", {"drawdown": below_zero(result.get("drawdown_curve"))}, unit="drawdown",
                          y_label="below the peak", styles={"drawdown": {"colour": DRAWDOWN_COLOUR, "fill": True}},
                          height=200)
    span = (f" ({readable_time(result['first_bar'])} to {readable_time(result.get('last_bar'))})"
            if result.get("first_bar") else "")
    return {"charts": [chart for chart in (equity, drawdown) if chart], "charts_title": f"Equity curve{span}"}
