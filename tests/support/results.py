"""Results of the shape the runners write, built directly (a backtest of 100,000 trades in a second, not a run of
hours), for the pages that show them."""

from __future__ import annotations

import numpy as np

from backtesting.checkpoint import iso
from backtesting.runner import chart_points, deepest_drawdowns

INITIAL_CASH = 100_000.0


def backtest_result(*, trades: int, start: str = "2015-01-01T00:00:00", timeframe_seconds: int = 900,
                    seed: int = 7) -> dict:
    """A completed backtest's result: `trades` trades of one to eight bars, on a random walk of four bars a
    trade, with the curves, metrics and timings its runner writes."""
    rng = np.random.default_rng(seed)
    bars = max(2, trades * 4)
    times = np.datetime64(start, "s") + np.arange(bars) * np.timedelta64(timeframe_seconds, "s")
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.000002, 0.0015, bars)))
    entries = np.arange(trades) * 4 + 1
    exits = np.minimum(entries + rng.integers(1, 4, trades), bars - 1)
    # A small edge: the side guesses the next move a little more often than not.
    moves = np.sign(closes[exits] - closes[entries])
    sides = np.where(rng.random(trades) < 0.53, moves, -moves)
    sides[sides == 0] = 1.0
    quantities = np.round(rng.uniform(0.1, 0.3, trades) * INITIAL_CASH / closes[entries], 6)
    pnls = sides * quantities * (closes[exits] - closes[entries]) - 0.00002 * quantities * closes[entries]
    equity = INITIAL_CASH + np.concatenate([[0.0], np.cumsum(np.bincount(exits, weights=pnls, minlength=bars))[:-1]])
    rows = []
    for number in range(trades):
        entry, exit_, quantity = int(entries[number]), int(exits[number]), float(quantities[number])
        pnl = float(pnls[number])
        rows.append({
            "entry_time": iso(times[entry]), "exit_time": iso(times[exit_]),
            "side": "long" if sides[number] > 0 else "short", "quantity": quantity,
            "entry_price": float(closes[entry]), "exit_price": float(closes[exit_]), "pnl": pnl,
            "return": pnl / (quantity * float(closes[entry])), "commission": 0.00002 * quantity * float(closes[entry]),
            "entry_bar": entry, "exit_bar": exit_, "closed_at_end": False,
        })
    picked = chart_points(bars)
    drawdowns = deepest_drawdowns(equity, INITIAL_CASH, picked)
    final = float(equity[-1])
    return {
        "strategy": "sma_cross",
        "strategy_params": {"fast": 3, "slow": 8, "allow_short": True},
        "bars": bars,
        "first_bar": iso(times[0]),
        "last_bar": iso(times[-1]),
        "metrics": {
            "initial_cash": INITIAL_CASH, "final_equity": final, "total_return": final / INITIAL_CASH - 1,
            "annualised_return": 0.0123, "sharpe": -0.8335994209353337,
            "max_drawdown": float(deepest_drawdowns(equity, INITIAL_CASH, np.arange(bars)).max()),
            "win_rate": float((pnls > 0).mean()) if trades else None, "number_of_trades": trades,
            "exposure": float((exits - entries).sum() / bars), "buy_and_hold_return": float(closes[-1] / closes[0] - 1),
            "bars": bars,
        },
        "trades": rows,
        "equity_curve_path": "/var/results/equity.npy",
        "equity_curve": [[iso(times[i]), float(equity[i])] for i in picked],
        "buy_and_hold_curve": [[iso(times[i]), float(INITIAL_CASH * closes[i] / closes[0])] for i in picked],
        "drawdown_curve": [[iso(times[i]), float(value)] for i, value in zip(picked, drawdowns)],
        "timings": {"engine_seconds": 1.5, "bars_per_second": bars / 1.5, "bars_processed": bars,
                    "checkpoint_seconds": 0.1, "periodic_checkpoints": 3},
    }


def training_result(*, epochs: int = 40, best_epoch: int = 27, start: str = "2023-06-01T00:00:00+00:00") -> dict:
    """A completed training's result: the losses falling, the validation loss turning up after `best_epoch` (the
    result names the epoch of its lowest)."""
    history = []
    for epoch in range(1, epochs + 1):
        train_loss = 0.69 - 0.25 * (1 - np.exp(-epoch / 10))
        val_loss = 0.70 - 0.18 * (1 - np.exp(-epoch / 9)) + 0.0009 * max(0, epoch - best_epoch) ** 1.5
        history.append({"epoch": epoch, "train_loss": float(train_loss),
                        "train_accuracy": float(0.5 + 0.3 * (0.69 - train_loss)), "val_loss": float(val_loss),
                        "val_accuracy": float(0.5 + 0.25 * (0.70 - val_loss)), "learning_rate": 0.003 * 0.95 ** epoch})
    best = min(history, key=lambda row: row["val_loss"])
    return {
        "model_path": "/var/models/model.pt", "best_model_path": "/var/models/best.pt",
        "feature_spec_path": "/var/models/features.json",
        "epochs_completed": epochs, "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
        "best_val_accuracy": best["val_accuracy"], "final_val_loss": history[-1]["val_loss"],
        "final_val_accuracy": history[-1]["val_accuracy"], "history": history,
        "samples": {"train": 8000, "validation": 2000}, "validation_start": start,
        "timings": {"train_seconds": 734.2, "checkpoint_seconds": 3.1},
    }

