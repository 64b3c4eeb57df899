"""An event-driven backtest over bars, resumable at any bar with an identical result.

The strategy has already turned the bars into one decision per bar (a target
direction: long, short, flat, or HOLD for no change), computed over the whole
range at once (see strategies.py). The engine then walks the bars one by one:

- at the open of bar t, an order decided at the close of bar t-1 fills
  (slippage moves the price against the trade, commission is a fraction of
  the notional); a reversal closes the position and opens the other side;
- at the close of bar t, the equity (cash + position × close) is recorded and
  the decision of bar t becomes an order for the open of bar t+1.

Everything the walk carries from one bar to the next is in `EngineState`
(JSON-ready, floats kept exactly), so a run stopped after any bar, an order
waiting to fill included, continues from its state and produces the same
trades, equity curve and metrics as a run that never stopped.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LONG, FLAT, SHORT = 1, 0, -1
HOLD = 2  # no decision at this bar: keep what is held
# A fill in the fill log, and a closed trade in the trade log: these numbers, one float64 each (a flat array
# costs nothing to copy or to write beside the loop; the trades as dictionaries are made once, for the result).
# A checkpoint keeps the fills only: the trades are made again from them (Engine.replay).
FILL_FIELDS = ("bar", "cash", "position")  # after each fill: what the equity of the following bars is made of
TRADE_FIELDS = ("entry_bar", "exit_bar", "side", "quantity", "entry_price", "exit_price", "pnl", "commission",
                "closed_at_end")


@dataclass(frozen=True)
class Costs:
    commission: float = 0.0005  # fraction of each fill's notional
    slippage: float = 0.0002  # fraction of the open price, against the trade


@dataclass
class EngineState:
    next_bar: int = 0
    cash: float = 0.0
    position: float = 0.0  # signed quantity
    direction: int = FLAT
    pending: int | None = None  # target decided at the close of next_bar - 1, filled at the open of next_bar
    open_trade: dict[str, Any] | None = None
    closed_at_end: bool = False  # the last fill closed the position at the last close (close_at_end)

    def values(self) -> tuple:
        """Its fields at once, cheaply (at every checkpoint of a fast loop). The engine replaces
        open_trade, never changes it, so the tuple stays a snapshot as the walk goes on."""
        return (self.next_bar, self.cash, self.position, self.direction, self.pending, self.open_trade,
                self.closed_at_end)

    @classmethod
    def dict_of(cls, values: tuple) -> dict[str, Any]:
        """Those values as a JSON-ready dictionary (floats kept exactly), the open trade copied."""
        data = dict(zip(cls.__dataclass_fields__, values))
        data["open_trade"] = dict(data["open_trade"]) if data["open_trade"] else None
        return data

    def as_dict(self) -> dict[str, Any]:
        return self.dict_of(self.values())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineState":
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass
class Engine:
    """The walk over the bars. `equity` and `trade_log` grow as it goes; `state` is all it carries."""

    opens: list[float]
    closes: list[float]
    times: np.ndarray  # datetime64[ns], for the trades' times
    targets: list[int]
    costs: Costs
    initial_cash: float
    state: EngineState = field(default_factory=EngineState)
    equity: array = field(default_factory=lambda: array("d"))  # one point per processed bar
    trade_log: array = field(default_factory=lambda: array("d"))  # len(TRADE_FIELDS) numbers per closed trade
    fill_log: array = field(default_factory=lambda: array("d"))  # len(FILL_FIELDS) numbers per fill

    def __post_init__(self) -> None:
        if self.state.next_bar == 0 and not len(self.equity):
            self.state.cash = self.initial_cash

    @property
    def bars(self) -> int:
        return len(self.closes)

    def run(self, stop: int) -> None:
        """Process bars from `state.next_bar` up to (not including) `stop`.

        All or nothing: if anything raises in the middle, the logs and the state are put back as they
        were, so that a failure checkpoint taken next describes the last whole chunk.
        """
        state = self.state
        closes, targets = self.closes, self.targets
        cash, position, direction, pending = state.cash, state.position, state.direction, state.pending
        before = (len(self.equity), len(self.fill_log), len(self.trade_log), state.open_trade)
        record = self.equity.append
        try:
            for t in range(state.next_bar, stop):
                if pending is not None:
                    cash, position, direction = self._fill(t, pending, cash, position, direction)
                    pending = None
                record(cash + position * closes[t])
                decision = targets[t]
                if decision != HOLD and decision != direction:
                    pending = decision
        except BaseException:
            *lengths, state.open_trade = before
            for log, length in zip((self.equity, self.fill_log, self.trade_log), lengths):
                if len(log) > length:  # a log a view pins refuses even an empty cut (and cannot have grown)
                    del log[length:]
            raise
        state.next_bar = max(state.next_bar, stop)
        state.cash, state.position, state.direction, state.pending = cash, position, direction, pending

    def _fill(self, t: int, target: int, cash: float, position: float, direction: int) -> tuple[float, float, int]:
        """Fill at the open of bar t: close what is held, then open `target` with all the cash."""
        costs = self.costs
        if direction != FLAT:
            price = self.opens[t] * (1.0 - costs.slippage if position > 0 else 1.0 + costs.slippage)
            commission = abs(position) * price * costs.commission
            cash += position * price - commission
            self._close_trade(t, price, commission)
            position, direction = 0.0, FLAT
        if target != FLAT:
            price = self.opens[t] * (1.0 + costs.slippage if target == LONG else 1.0 - costs.slippage)
            quantity = cash / (price * (1.0 + costs.commission))
            commission = quantity * price * costs.commission
            position = target * quantity
            cash -= position * price + commission
            direction = target
            self.state.open_trade = {
                "entry_bar": t,
                "side": "long" if target == LONG else "short",
                "quantity": quantity,
                "entry_price": price,
                "entry_commission": commission,
            }
        self.fill_log.extend((t, cash, position))
        return cash, position, direction

    def _close_trade(self, t: int, price: float, commission: float, *, at_end: bool = False) -> None:
        trade = self.state.open_trade
        sign = 1.0 if trade["side"] == "long" else -1.0
        gross = sign * trade["quantity"] * (price - trade["entry_price"])
        pnl = gross - trade["entry_commission"] - commission
        self.trade_log.extend((trade["entry_bar"], t, sign, trade["quantity"], trade["entry_price"], price, pnl,
                               trade["entry_commission"] + commission, 1.0 if at_end else 0.0))
        self.state.open_trade = None

    @property
    def trades(self) -> list[dict[str, Any]]:
        """The closed trades: entry and exit time, side, quantity, prices, pnl, return, commission."""
        width = len(TRADE_FIELDS)
        rows = np.frombuffer(self.trade_log, dtype=np.float64).reshape(-1, width) if len(self.trade_log) else (
            np.empty((0, width)))
        entry_bars = rows[:, 0].astype(np.int64)
        exit_bars = rows[:, 1].astype(np.int64)
        entry_times = np.datetime_as_string(self.times[entry_bars], unit="s")
        exit_times = np.datetime_as_string(self.times[np.minimum(exit_bars, self.bars - 1)], unit="s")
        trades = []
        for row, entry_bar, exit_bar, entry_time, exit_time in zip(
            rows.tolist(), entry_bars.tolist(), exit_bars.tolist(), entry_times.tolist(), exit_times.tolist()
        ):
            _, _, sign, quantity, entry_price, exit_price, pnl, commission, at_end = row
            trades.append({
                "entry_time": entry_time + "Z",
                "exit_time": exit_time + "Z",
                "side": "long" if sign > 0 else "short",
                "quantity": quantity,
                "entry_price": entry_price,
                "exit_price": exit_price,
                "pnl": pnl,
                "return": pnl / (quantity * entry_price),
                "commission": commission,
                "entry_bar": entry_bar,
                "exit_bar": exit_bar,
                "closed_at_end": bool(at_end),
            })
        return trades

    def close_at_end(self) -> None:
        """After the last bar: a position still held is closed at the last close (costs included), so
        that its trade counts; the last equity point becomes the cash that closing leaves."""
        state = self.state
        if state.direction == FLAT or state.next_bar < self.bars:
            return
        state.cash, state.position, state.direction = self._close_at_end(state.cash, state.position)
        state.pending, state.closed_at_end = None, True
        self.equity[-1] = state.cash

    def _close_at_end(self, cash: float, position: float) -> tuple[float, float, int]:
        costs = self.costs
        last = self.bars - 1
        price = self.closes[last] * (1.0 - costs.slippage if position > 0 else 1.0 + costs.slippage)
        commission = abs(position) * price * costs.commission
        cash += position * price - commission
        self._close_trade(self.bars, price, commission, at_end=True)
        self.fill_log.extend((last, cash, 0.0))
        return cash, 0.0, FLAT

    def replay(self, fills: array) -> None:
        """Rebuild the fill and trade logs, and the open trade, from the fills a checkpoint names, by
        filling again (each fill's target is the decision of the bar before it): the same arithmetic,
        so the same trades, bit for bit. A checkpoint need not carry the trades, only the fills; and each
        fill's recorded cash and position are checked on the way.

        Call it with `state` already taken from the checkpoint (its open trade and `closed_at_end`).
        """
        state = self.state
        expected_open_trade = state.open_trade
        self.fill_log, self.trade_log = array("d"), array("d")
        cash, position, direction = self.initial_cash, 0.0, FLAT
        width = len(FILL_FIELDS)
        count, recorded = len(fills) // width, fills.tolist()
        for index in range(count):
            bar, recorded_cash, recorded_position = recorded[index * width:(index + 1) * width]
            t = int(bar) if math.isfinite(bar) and bar.is_integer() else -1
            if not 0 < t < self.bars:
                raise ValueError(f"fill {index + 1} of {count} is at bar {bar:g}, outside the series")
            if index == count - 1 and state.closed_at_end:
                if t != self.bars - 1 or direction == FLAT:
                    raise ValueError(f"fill {index + 1} of {count} (bar {t}) is not the close at the end the "
                                     "checkpoint says: " + ("nothing is held then" if t == self.bars - 1 else
                                                            f"the last bar is {self.bars - 1}"))
                cash, position, direction = self._close_at_end(cash, position)
            else:
                cash, position, direction = self._fill(t, self.targets[t - 1], cash, position, direction)
            if cash != recorded_cash or position != recorded_position:
                raise ValueError(f"fill {index + 1} of {count} (bar {t}) does not replay: recorded cash "
                                 f"{recorded_cash!r} and position {recorded_position!r}, replayed {cash!r} and "
                                 f"{position!r} (the data or the strategy's decisions differ from the run's)")
        if (cash, position, direction, state.open_trade) != (state.cash, state.position, state.direction,
                                                              expected_open_trade):
            raise ValueError("the fills do not replay to the checkpoint's cash, position and open trade (the data "
                             "or the strategy's decisions differ from the run's)")


def equity_from_fills(closes: np.ndarray, fill_log: array, bars: int, initial_cash: float) -> array:
    """The equity curve of the first `bars` bars, rebuilt from the fills: at bar t, the cash and position
    the last fill at or before t left, times that bar's close. The same arithmetic as the loop's
    (a product, then a sum, each rounded once), so the same numbers, bit for bit."""
    fills = np.frombuffer(fill_log, dtype=np.float64).reshape(-1, len(FILL_FIELDS)) if len(fill_log) else (
        np.empty((0, len(FILL_FIELDS))))
    starts = np.concatenate([[0], fills[:, 0].astype(np.int64), [bars]])
    lengths = np.diff(starts)
    cash = np.repeat(np.concatenate([[initial_cash], fills[:, 1]]), lengths)
    position = np.repeat(np.concatenate([[0.0], fills[:, 2]]), lengths)
    equity = array("d")
    equity.frombytes((cash + position * np.asarray(closes[:bars], dtype=np.float64)).tobytes())
    return equity


def metrics(engine: Engine, bar_seconds: float, trades: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The result's metrics (README, Backtests), from the whole equity curve and trade list (computed once, at the
    end)."""
    equity = np.frombuffer(engine.equity, dtype=np.float64) if len(engine.equity) else np.empty(0)
    closes = engine.closes
    bars = len(equity)
    initial = engine.initial_cash
    final = float(equity[-1]) if bars else initial
    span_years = (engine.times[-1] - engine.times[0]) / np.timedelta64(1, "s") / (365.25 * 86400) if bars > 1 else 0
    span_years = float(span_years) or bars * bar_seconds / (365.25 * 86400)
    returns = np.diff(np.concatenate([[initial], equity])) / np.concatenate([[initial], equity[:-1]])
    periods_per_year = bars / span_years if span_years > 0 else 0.0
    deviation = float(returns.std(ddof=1)) if bars > 1 else 0.0
    peaks = np.maximum.accumulate(np.concatenate([[initial], equity]))
    drawdown = float(np.max(1.0 - np.concatenate([[initial], equity]) / peaks)) if bars else 0.0
    trades = engine.trades if trades is None else trades
    wins = sum(1 for trade in trades if trade["pnl"] > 0)
    exposed = sum(trade["exit_bar"] - trade["entry_bar"] for trade in trades)
    total_return = final / initial - 1.0
    return {
        "initial_cash": initial,
        "final_equity": final,
        "total_return": total_return,
        "annualised_return": _annualised(final / initial, span_years),
        "sharpe": (
            float(returns.mean()) / deviation * math.sqrt(periods_per_year) if deviation > 0 else None
        ),
        "max_drawdown": drawdown,
        "win_rate": wins / len(trades) if trades else None,
        "number_of_trades": len(trades),
        "exposure": exposed / bars if bars else 0.0,
        "buy_and_hold_return": closes[-1] / closes[0] - 1.0 if bars > 1 else 0.0,
        "bars": bars,
    }


def _annualised(growth: float, years: float) -> float | None:
    """The yearly rate of a growth over `years`; None where it means nothing (no time, a wipe-out) or
    exceeds a float (a short run's large gain, compounded over a year)."""
    if years <= 0 or growth <= 0:
        return None
    try:
        return growth ** (1.0 / years) - 1.0
    except OverflowError:
        return None
