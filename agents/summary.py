"""A research session's result in figures: its verdict, the reasons for it, and the score that ranks it."""

from __future__ import annotations

from operations.summaries import Figure, Unit, number


READS = ("verdict", "reasons", "score", "metrics")


def session_summary(result: dict, params: dict) -> list[Figure]:
    reasons = [str(reason) for reason in result.get("reasons") or []] or None
    metrics = result.get("metrics") or {}
    return [
        Figure("verdict", "Verdict", result["verdict"], Unit.TEXT),
        Figure("reasons", "Reasons", reasons, Unit.TEXT),
        Figure("score", "Score", number(result.get("score")), Unit.RETURN, "(return in excess of buy-and-hold)"),
        Figure("total_return", "Total return", number(metrics.get("total_return")), Unit.RETURN),
        Figure("sharpe", "Sharpe ratio", number(metrics.get("sharpe")), Unit.RATIO),
        Figure("max_drawdown", "Maximum drawdown", number(metrics.get("max_drawdown")), Unit.FRACTION),
        Figure("number_of_trades", "Trades", number(metrics.get("number_of_trades")), Unit.COUNT),
    ]
