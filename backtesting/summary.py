"""A backtest's result in figures: return beside buy-and-hold, Sharpe, drawdown, trades."""

from __future__ import annotations

from operations.summaries import Figure, Unit, number


# What its figures read of a backtest's result (an admin page loads these): not its trades or its equity curve.
READS = ("metrics", "bars", "first_bar", "last_bar")


def backtest_summary(result: dict, params: dict) -> list[Figure]:
    metrics = result["metrics"]
    return [
        Figure("total_return", "Total return", number(metrics.get("total_return")), Unit.RETURN),
        Figure("buy_and_hold_return", "Buy-and-hold return", number(metrics.get("buy_and_hold_return")), Unit.RETURN),
        Figure("annualised_return", "Annualised return", number(metrics.get("annualised_return")), Unit.RETURN),
        Figure("sharpe", "Sharpe ratio", number(metrics.get("sharpe")), Unit.RATIO, "(annualised)"),
        Figure("max_drawdown", "Maximum drawdown", number(metrics.get("max_drawdown")), Unit.FRACTION),
        Figure("number_of_trades", "Trades", number(metrics.get("number_of_trades")), Unit.COUNT),
        Figure("win_rate", "Win rate", number(metrics.get("win_rate")), Unit.FRACTION),
        Figure("exposure", "Exposure", number(metrics.get("exposure")), Unit.FRACTION, "of the bars in a position"),
        Figure("final_equity", "Final equity", number(metrics.get("final_equity")), Unit.MONEY,
               f"from {metrics['initial_cash']:,.2f}" if number(metrics.get("initial_cash")) else ""),
        Figure("bars", "Bars", number(result.get("bars")), Unit.COUNT,
               f"({moment(result['first_bar'])} to {moment(result['last_bar'])} UTC)" if result.get("first_bar") else ""),
    ]


def moment(iso: object) -> str:
    """A bar's time as people read it (2017-09-28 00:00), from the result's ISO 8601 (2017-09-28T00:00:00Z)."""
    text = str(iso)
    return text[:16].replace("T", " ") if len(text) >= 16 and text[10:11] == "T" else text
