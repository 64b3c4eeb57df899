"""The curves a backtest's result carries for its chart: the equity, buy-and-hold and the drawdown at the same
few hundred bars, agreeing with the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from backtesting.runner import CHART_POINTS, chart_points, deepest_drawdowns
from operations.models import Operation
from tests.backtesting.conftest import generate, start_backtest


def test_the_drawdown_at_a_point_is_the_deepest_since_the_point_before():
    equity = np.array([100.0, 120.0, 90.0, 110.0, 60.0, 130.0, 125.0])
    picked = np.array([0, 3, 6])

    drawdowns = deepest_drawdowns(equity, 100.0, picked)

    # Peaks 100, 120, 120, 120, 120, 130, 130: bar 2 (90/120) is deepest up to bar 3, bar 4 (60/120) after it.
    assert drawdowns.tolist() == pytest.approx([0.0, 0.25, 0.5])


def test_the_initial_cash_counts_as_the_first_peak():
    assert deepest_drawdowns(np.array([80.0, 90.0]), 100.0, np.array([0, 1])).tolist() == pytest.approx([0.2, 0.1])


def test_chart_points_are_at_most_chart_points_with_the_first_and_last_bar():
    picked = chart_points(100_000)
    assert len(picked) == CHART_POINTS and picked[0] == 0 and picked[-1] == 99_999
    assert chart_points(3).tolist() == [0, 1, 2]


@pytest.fixture
def market(backtest_dirs):
    generate(3_000)
    return backtest_dirs


@pytest.mark.django_db(transaction=True)
def test_a_result_carries_buy_and_hold_and_drawdown_beside_its_equity(market, stopper):
    operation_id = start_backtest(strategy_params={"fast": 3, "slow": 8, "allow_short": True})
    assert stopper.run(operation_id) == "completed"
    result = Operation.objects.get(pk=operation_id).result
    metrics = result["metrics"]

    times = [at for at, _ in result["equity_curve"]]
    assert len(times) == CHART_POINTS
    assert [at for at, _ in result["buy_and_hold_curve"]] == times == [at for at, _ in result["drawdown_curve"]]
    assert times[0] == result["first_bar"] and times[-1] == result["last_bar"]
    held = [value for _, value in result["buy_and_hold_curve"]]
    assert held[0] == metrics["initial_cash"]
    assert held[-1] == pytest.approx(metrics["initial_cash"] * (1 + metrics["buy_and_hold_return"]))
    drawdowns = [value for _, value in result["drawdown_curve"]]
    assert min(drawdowns) >= 0 and max(drawdowns) == pytest.approx(metrics["max_drawdown"])
