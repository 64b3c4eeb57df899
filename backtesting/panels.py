"""What a backtest's admin page shows: its equity curve and its trades."""

from __future__ import annotations

from django.template.loader import render_to_string

from operations.charts import line_chart

TRADES_SHOWN = 200


def backtest_panel(operation) -> dict:
    result = operation.result or {}
    curve = result.get("equity_curve")
    if not curve:
        return {}
    trades = result.get("trades") or []
    metrics = result.get("metrics") or {}
    return {
        "chart": line_chart({"equity": [value for _, value in curve]}, title="Equity", x_label="points"),
        "chart_title": f"Equity curve ({curve[0][0]} to {curve[-1][0]})",
        "panel_html": render_to_string(
            "admin/backtesting/trades.html",
            {"trades": trades[:TRADES_SHOWN], "total": len(trades), "shown": min(len(trades), TRADES_SHOWN),
             "metrics": sorted(metrics.items())},
        ),
    }
