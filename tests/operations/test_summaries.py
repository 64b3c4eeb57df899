"""An operation's result in figures: each unit reads one way, each type's figures come from its result, and a
result of another shape gives no figures (whoever shows them falls back on the raw result)."""

from __future__ import annotations

import math

import pytest

from operations import registry
from operations.summaries import Figure, Unit, duration, figures_dict, format_value


@pytest.mark.parametrize(("value", "unit", "text"), [
    (0.12345, Unit.RETURN, "+12.35 %"),
    (-0.8335994209353337, Unit.RETURN, "-83.36 %"),
    (0.53125, Unit.FRACTION, "53.12 %"),
    (1.23456, Unit.RATIO, "1.23"),
    (0.693147, Unit.LOSS, "0.6931"),
    (5703, Unit.COUNT, "5,703"),
    (133_456.789, Unit.MONEY, "133,456.79"),
    (12.34, Unit.SECONDS, "12.3 s"),
    (245, Unit.SECONDS, "4 min 05 s"),
    (3725, Unit.SECONDS, "1 h 02 min"),
    (None, Unit.RATIO, "-"),
    (math.inf, Unit.RATIO, "inf"),
    ("accepted", Unit.TEXT, "accepted"),
])
def test_a_value_reads_with_its_unit_and_a_sensible_precision(value, unit, text):
    assert format_value(value, unit) == text


def test_a_note_follows_a_value_but_not_a_missing_one():
    assert Figure("sharpe", "Sharpe ratio", 1.5, Unit.RATIO, "(annualised)").text == "1.50 (annualised)"
    assert Figure("sharpe", "Sharpe ratio", None, Unit.RATIO, "(annualised)").text == "-"
    assert duration(59.96) == "60.0 s"


TRAINING = {
    "epochs_completed": 3, "best_epoch": 2, "best_val_loss": 0.61234, "final_val_loss": 0.62,
    "final_val_accuracy": 0.655,
    "history": [{"epoch": 1, "val_loss": 0.7, "val_accuracy": 0.5}, {"epoch": 2, "val_loss": 0.61234,
                                                                      "val_accuracy": 0.66},
                {"epoch": 3, "val_loss": 0.62, "val_accuracy": 0.655}],
    "timings": {"train_seconds": 12.5},
}


def test_a_training_reads_as_its_epochs_and_its_best_and_final_validation_figures():
    shown = texts("training", {**TRAINING, "history": None, "best_val_accuracy": 0.66}, {"epochs": 3})
    assert shown["Validation accuracy at the best epoch"] == "66.00 %"
    assert shown["Epochs"] == "3 of 3" and shown["Best validation loss"] == "0.6123"
BACKTEST = {
    "bars": 1000, "first_bar": "2015-01-01T00:00:00Z", "last_bar": "2015-02-11T15:00:00Z",
    "metrics": {"total_return": 0.1, "buy_and_hold_return": 0.05, "annualised_return": None, "sharpe": 1.234,
                "max_drawdown": 0.2, "number_of_trades": 42, "win_rate": 0.5, "exposure": 0.9,
                "final_equity": 110_000.0, "initial_cash": 100_000.0},
}
SESSION = {"verdict": "rejected", "score": -0.02, "reasons": ["passed: Sharpe 1.20 ≥ 0.5", "failed: 3 trades < 10"],
           "metrics": {"total_return": 0.01, "sharpe": 1.2, "max_drawdown": 0.1, "number_of_trades": 3}}


def texts(operation_type: str, result, params=None) -> dict[str, str]:
    return {figure.label: figure.text for figure in registry.result_summary(operation_type, result, params)}


def test_a_training_written_before_it_carried_its_best_accuracy_reads_it_from_its_history():
    shown = texts("training", TRAINING, {"epochs": 3})
    assert shown == {
        "Epochs": "3 of 3", "Best epoch": "2", "Best validation loss": "0.6123",
        "Validation accuracy at the best epoch": "66.00 %", "Final validation loss": "0.6200",
        "Final validation accuracy": "65.50 %", "Training time": "12.5 s",
    }


def test_a_backtest_reads_as_its_return_beside_buy_and_hold_its_sharpe_drawdown_and_trades():
    shown = texts("backtesting", BACKTEST)
    assert shown["Total return"] == "+10.00 %" and shown["Buy-and-hold return"] == "+5.00 %"
    assert shown["Sharpe ratio"] == "1.23 (annualised)" and shown["Maximum drawdown"] == "20.00 %"
    assert shown["Trades"] == "42" and shown["Annualised return"] == "-"
    assert shown["Final equity"] == "110,000.00 from 100,000.00"
    assert figures_dict(registry.result_summary("backtesting", BACKTEST))["sharpe"] == 1.234


def test_a_research_session_reads_as_its_verdict_and_its_reasons():
    shown = texts("agent_research", SESSION)
    assert shown["Verdict"] == "rejected"
    assert shown["Reasons"] == "passed: Sharpe 1.20 ≥ 0.5; failed: 3 trades < 10"
    assert shown["Score"] == "-2.00 % (return in excess of buy-and-hold)"


@pytest.mark.parametrize("operation_type", ["training", "backtesting", "agent_research"])
@pytest.mark.parametrize("result", [None, {}, [], "text", {"metrics": "x", "verdict": None, "history": 3},
                                    {"metrics": {"total_return": "lots"}, "verdict": "accepted"}])
def test_a_result_of_another_shape_gives_no_figures_or_figures_without_its_values(operation_type, result):
    figures = registry.result_summary(operation_type, result)
    assert all(isinstance(figure.text, str) for figure in figures)
    assert all(figure.value is None or isinstance(figure.value, (int, float, str)) for figure in figures)
