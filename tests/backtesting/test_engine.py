"""The backtest engine and its metrics on tiny hand-made bars: fills, costs, trades, metrics, and a
walk that continues from its JSON state exactly as if it had never stopped."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import statistics
from array import array

import numpy as np
import pytest

from backtesting.engine import FLAT, HOLD, LONG, SHORT, Costs, Engine, EngineState, equity_from_fills, metrics
from backtesting.strategies import SmaCross
from marketdata.series import generate_bars

COSTS = Costs(commission=0.001, slippage=0.01)
CASH = 10_000.0
OPENS = [100.0, 102.0, 104.0, 106.0, 108.0]
CLOSES = [101.0, 103.0, 105.0, 107.0, 109.0]


def times(count: int, step: str = "h") -> np.ndarray:
    start = np.datetime64("2020-01-01T00:00:00")
    return np.array([start + np.timedelta64(i, step) for i in range(count)]).astype("datetime64[ns]")


def engine(targets, *, opens=OPENS, closes=CLOSES, costs=COSTS, cash=CASH, step="h") -> Engine:
    return Engine(opens=list(opens), closes=list(closes), times=times(len(closes), step), targets=list(targets),
                  costs=costs, initial_cash=cash)


def approx(value: float):
    return pytest.approx(value, rel=1e-12, abs=1e-9)


def long_entry(open_price: float, cash: float = CASH) -> tuple[float, float, float, float]:
    """(price, quantity, commission, cash left) of going long with all the cash at this open."""
    price = open_price * (1 + 0.01)
    quantity = cash / (price * (1 + 0.001))
    commission = quantity * price * 0.001
    return price, quantity, commission, cash - quantity * price - commission


# --- fills


def test_an_order_decided_at_the_close_of_t_fills_at_the_open_of_t_plus_1():
    walk = engine([LONG, HOLD, HOLD, HOLD, HOLD])

    walk.run(1)
    assert list(walk.equity) == [CASH]  # nothing filled at bar 0, although LONG was decided there
    assert (walk.state.position, walk.state.direction, walk.state.pending) == (0.0, FLAT, LONG)
    assert walk.state.cash == CASH and walk.state.open_trade is None

    walk.run(2)
    price, quantity, commission, cash = long_entry(OPENS[1])
    assert price == approx(103.02)  # bar 1's open, slipped up against the buyer
    assert walk.state.position == approx(quantity) and walk.state.direction == LONG and walk.state.pending is None
    assert walk.state.cash == approx(cash) and cash == approx(0.0)  # all the cash, commission included
    assert walk.state.open_trade == {
        "entry_bar": 1, "side": "long", "quantity": walk.state.position, "entry_price": price,
        "entry_commission": approx(commission),
    }
    assert walk.equity[1] == approx(cash + quantity * CLOSES[1])  # marked at bar 1's close


def test_a_short_sells_below_the_open_and_loses_as_prices_rise():
    walk = engine([SHORT, HOLD, HOLD, HOLD, HOLD])
    walk.run(5)

    price = OPENS[1] * (1 - 0.01)
    quantity = CASH / (price * 1.001)
    cash = CASH + quantity * price - quantity * price * 0.001
    assert walk.state.open_trade["entry_price"] == approx(price) and walk.state.open_trade["side"] == "short"
    assert walk.state.position == approx(-quantity) and walk.state.direction == SHORT
    assert walk.state.cash == approx(cash)
    assert list(walk.equity) == [CASH] + [approx(cash - quantity * close) for close in CLOSES[1:]]
    assert walk.equity[-1] < CASH


def test_a_reversal_closes_and_reopens_in_one_fill():
    walk = engine([LONG, HOLD, SHORT, HOLD, HOLD])
    walk.run(5)

    _, long_quantity, long_commission, cash = long_entry(OPENS[1])
    exit_price = OPENS[3] * (1 - 0.01)  # selling the long: slipped down
    exit_commission = long_quantity * exit_price * 0.001
    cash += long_quantity * exit_price - exit_commission
    short_price = OPENS[3] * (1 - 0.01)  # selling short: slipped down too
    short_quantity = cash / (short_price * 1.001)
    cash += short_quantity * short_price - short_quantity * short_price * 0.001

    assert len(walk.trades) == 1
    closed = walk.trades[0]
    assert (closed["side"], closed["entry_bar"], closed["exit_bar"]) == ("long", 1, 3)
    assert closed["exit_price"] == approx(exit_price)
    assert closed["commission"] == approx(long_commission + exit_commission)
    assert walk.state.open_trade["side"] == "short" and walk.state.open_trade["entry_bar"] == 3
    assert walk.state.position == approx(-short_quantity) and walk.state.direction == SHORT
    assert walk.state.cash == approx(cash)
    assert walk.equity[3] == approx(cash - short_quantity * CLOSES[3])
    assert len(walk.trades) == 1


def test_a_flat_decision_closes_the_position():
    walk = engine([LONG, FLAT, HOLD, HOLD, HOLD])
    walk.run(5)

    _, quantity, _, cash = long_entry(OPENS[1])
    exit_price = OPENS[2] * 0.99
    cash += quantity * exit_price - quantity * exit_price * 0.001
    assert (walk.state.position, walk.state.direction, walk.state.open_trade) == (0.0, FLAT, None)
    assert walk.state.cash == approx(cash)
    assert list(walk.equity[2:]) == [walk.state.cash] * 3
    assert [(t["entry_bar"], t["exit_bar"], t["exit_price"]) for t in walk.trades] == [(1, 2, approx(exit_price))]


def test_hold_keeps_what_is_held():
    walk = engine([LONG, HOLD, HOLD, HOLD, HOLD])
    walk.run(5)

    _, quantity, _, cash = long_entry(OPENS[1])
    assert walk.state.position == approx(quantity) and walk.trades == []
    assert list(walk.equity[1:]) == [approx(cash + quantity * close) for close in CLOSES[1:]]


def test_a_decision_equal_to_the_direction_does_nothing():
    repeated = engine([LONG, LONG, LONG, HOLD, LONG])
    once = engine([LONG, HOLD, HOLD, HOLD, HOLD])
    for stop in range(1, 6):
        repeated.run(stop)
        once.run(stop)
        assert repeated.state == once.state
        assert repeated.state.pending == (LONG if stop == 1 else None)
    assert list(repeated.equity) == list(once.equity) and repeated.trades == once.trades == []

    flat = engine([FLAT, FLAT, HOLD, FLAT, FLAT])
    flat.run(5)
    assert flat.state == EngineState(next_bar=5, cash=CASH) and list(flat.equity) == [CASH] * 5


def test_a_decision_on_the_last_bar_never_fills():
    walk = engine([HOLD, HOLD, HOLD, HOLD, LONG])
    walk.run(5)
    assert walk.state.pending == LONG and walk.state.position == 0.0

    walk.close_at_end()
    assert walk.trades == [] and list(walk.equity) == [CASH] * 5
    found = metrics(walk, 3600)
    assert found["number_of_trades"] == 0 and found["exposure"] == 0.0 and found["total_return"] == 0.0
    assert found["win_rate"] is None and found["sharpe"] is None


@pytest.mark.parametrize("side", ["long", "short"])
def test_close_at_end_closes_at_the_last_close_with_costs(side):
    walk = engine([LONG if side == "long" else SHORT, HOLD, HOLD, HOLD, HOLD])
    walk.run(4)
    walk.close_at_end()  # not at the end yet: nothing happens
    assert walk.trades == [] and walk.state.direction != FLAT
    walk.run(5)
    entry = dict(walk.state.open_trade)
    cash_before = walk.state.cash

    walk.close_at_end()

    sign = 1.0 if side == "long" else -1.0
    quantity = entry["quantity"]
    exit_price = CLOSES[-1] * (1 - sign * 0.01)  # against the trade: a sale below, a buy-back above
    exit_commission = quantity * exit_price * 0.001
    pnl = sign * quantity * (exit_price - entry["entry_price"]) - entry["entry_commission"] - exit_commission
    assert walk.trades == [
        {
            "entry_time": "2020-01-01T01:00:00Z",
            "exit_time": "2020-01-01T04:00:00Z",  # the last bar's close
            "side": side,
            "quantity": quantity,
            "entry_price": entry["entry_price"],
            "exit_price": approx(exit_price),
            "pnl": approx(pnl),
            "return": approx(pnl / (quantity * entry["entry_price"])),
            "commission": approx(entry["entry_commission"] + exit_commission),
            "entry_bar": 1,
            "exit_bar": 5,
            "closed_at_end": True,
        }
    ]
    assert walk.state.cash == approx(cash_before + sign * quantity * exit_price - exit_commission)
    assert walk.equity[-1] == walk.state.cash and len(walk.equity) == 5
    assert (walk.state.position, walk.state.direction, walk.state.pending, walk.state.open_trade) == (0.0, FLAT, None, None)


def test_trade_fields_of_a_closed_trade():
    walk = engine([LONG, HOLD, FLAT, HOLD, HOLD])
    walk.run(5)
    walk.close_at_end()  # flat already: no second trade

    price, quantity, commission, _ = long_entry(OPENS[1])
    exit_price = OPENS[3] * 0.99
    exit_commission = quantity * exit_price * 0.001
    pnl = quantity * (exit_price - price) - commission - exit_commission
    (trade,) = walk.trades
    assert trade == {
        "entry_time": "2020-01-01T01:00:00Z",
        "exit_time": "2020-01-01T03:00:00Z",
        "side": "long",
        "quantity": approx(quantity),
        "entry_price": approx(price),
        "exit_price": approx(exit_price),
        "pnl": approx(pnl),
        "return": approx(pnl / (quantity * price)),
        "commission": approx(commission + exit_commission),
        "entry_bar": 1,
        "exit_bar": 3,
        "closed_at_end": False,
    }
    assert pnl > 0 and json.loads(json.dumps(trade)) == trade


# --- metrics


def test_metrics_of_a_hand_computed_run():
    # No costs, whole numbers: long 10 @ 10 → 20 (+100), long 20 @ 10 → 8 (-40).
    walk = engine(
        [LONG, HOLD, FLAT, LONG, FLAT, HOLD],
        opens=[10.0, 10.0, 20.0, 20.0, 10.0, 8.0],
        closes=[10.0, 20.0, 20.0, 10.0, 5.0, 20.0],
        costs=Costs(commission=0.0, slippage=0.0),
        cash=100.0,
        step="D",
    )
    walk.run(6)
    walk.close_at_end()
    assert list(walk.equity) == [100.0, 200.0, 200.0, 200.0, 100.0, 160.0]
    assert [(t["pnl"], t["return"]) for t in walk.trades] == [(100.0, 1.0), (-40.0, -0.2)]

    found = metrics(walk, 86400)

    span_years = 5 / 365.25
    returns = [0.0, 1.0, 0.0, 0.0, -0.5, 0.6]
    assert found["initial_cash"] == 100.0 and found["final_equity"] == 160.0 and found["bars"] == 6
    assert found["total_return"] == approx(0.6)
    assert found["max_drawdown"] == approx(0.5)  # 200 → 100
    assert found["win_rate"] == 0.5
    assert found["number_of_trades"] == 2
    assert found["exposure"] == approx(3 / 6)  # held over bars 1-2 and 4
    assert found["buy_and_hold_return"] == approx(1.0)  # close 10 → 20
    assert found["annualised_return"] == pytest.approx(1.6 ** (1 / span_years) - 1, rel=1e-9)
    expected_sharpe = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(6 / span_years)
    assert found["sharpe"] == pytest.approx(expected_sharpe, rel=1e-9)


def test_sharpe_is_none_when_always_flat():
    walk = engine([HOLD, FLAT, HOLD, HOLD, HOLD])
    walk.run(5)
    walk.close_at_end()
    found = metrics(walk, 3600)
    assert found["sharpe"] is None and found["max_drawdown"] == 0.0 and found["exposure"] == 0.0
    assert found["buy_and_hold_return"] == approx(CLOSES[-1] / CLOSES[0] - 1)


def test_close_at_end_counts_in_the_metrics():
    walk = engine([LONG, HOLD, HOLD, HOLD, HOLD])
    walk.run(5)
    walk.close_at_end()
    found = metrics(walk, 3600)
    assert found["number_of_trades"] == 1 and found["exposure"] == approx(4 / 5)
    assert found["final_equity"] == walk.state.cash == walk.equity[-1]
    assert found["win_rate"] == 1.0  # 103.02 → 107.91 beats the costs


# --- the state: JSON-ready, exact, and enough to continue


def random_targets(count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.choice([LONG, SHORT, FLAT, HOLD, HOLD, HOLD, HOLD], size=count)]


def generated(count: int = 400, seed: int = 3, targets: list[int] | None = None) -> Engine:
    bars = generate_bars(bars=count, timeframe="1h", seed=seed)
    if targets is None:
        targets = SmaCross({"fast": 3, "slow": 8, "allow_short": True}).decisions(bars).tolist()
    return Engine(
        opens=bars["open"].astype("float64").tolist(),
        closes=bars["close"].astype("float64").tolist(),
        times=bars["timestamp"].dt.tz_convert(None).to_numpy(),
        targets=targets,
        costs=Costs(commission=0.0007, slippage=0.0003),
        initial_cash=123_456.789,
    )


SERIES = [f.name for f in dataclasses.fields(Engine)
          if f.name not in ("opens", "closes", "times", "targets", "costs", "initial_cash", "state")]


def through_json(walk: Engine) -> Engine:
    """A new engine over the same bars with the old one's series and the JSON of its state."""
    fresh = generated(len(walk.closes), targets=list(walk.targets))
    for name in SERIES:  # the equity curve and the logs: kept outside the checkpoint state
        setattr(fresh, name, copy.deepcopy(getattr(walk, name)))
    fresh.state = EngineState.from_dict(json.loads(json.dumps(walk.state.as_dict())))
    return fresh


def as_resumed(walk: Engine) -> Engine:
    """A new engine as a resumed run builds it: the logs as the spool's bytes, the JSON state, and the equity
    curve rebuilt from the fills."""
    fresh = generated(len(walk.closes), targets=list(walk.targets))
    for name in ("fill_log", "trade_log"):
        log = array("d")
        log.frombytes(getattr(walk, name).tobytes())
        setattr(fresh, name, log)
    fresh.state = EngineState.from_dict(json.loads(json.dumps(walk.state.as_dict())))
    fresh.equity = equity_from_fills(np.asarray(walk.closes), fresh.fill_log, fresh.state.next_bar, walk.initial_cash)
    return fresh


def test_the_state_round_trips_through_json_exactly():
    walk = generated()
    for stop in (37, 123, 250):
        walk.run(stop)
        if walk.state.open_trade:
            break
    data = walk.state.as_dict()
    assert data["open_trade"] is not None and data["position"] != round(data["position"], 6)  # floats worth keeping exactly
    restored = EngineState.from_dict(json.loads(json.dumps(data)))
    assert restored == walk.state
    assert restored.as_dict() == data
    assert isinstance(restored.cash, float) and restored.cash.hex() == walk.state.cash.hex()
    assert restored.position.hex() == walk.state.position.hex()


def assert_same_walk(first: Engine, second: Engine) -> None:
    assert first.state == second.state
    assert first.trades == second.trades
    assert np.array(first.equity).tobytes() == np.array(second.equity).tobytes()  # bit for bit
    assert metrics(first, 3600) == metrics(second, 3600)


@pytest.mark.parametrize("targets", ["sma_cross", "random"])
def test_running_in_pieces_equals_one_run(targets):
    chosen = None if targets == "sma_cross" else random_targets(400, seed=8)
    whole = generated(targets=chosen)
    whole.run(len(whole.closes))
    whole.close_at_end()
    assert len(whole.trades) > 10

    pieces = generated(targets=chosen)
    for stop in (5, 9, 9, 200, len(pieces.closes)):
        pieces.run(stop)
    pieces.close_at_end()
    assert_same_walk(whole, pieces)


@pytest.mark.parametrize("rebuild", [through_json, as_resumed], ids=["through_json", "as_resumed"])
@pytest.mark.parametrize("targets", ["sma_cross", "random"])
def test_a_walk_continued_from_json_at_every_bar_equals_one_run(targets, rebuild):
    chosen = None if targets == "sma_cross" else random_targets(300, seed=9)
    whole = generated(300, targets=chosen)
    whole.run(300)
    whole.close_at_end()

    pending_cuts = 0
    for cut in range(0, 301):
        first = generated(300, targets=chosen)
        first.run(cut)
        pending_cuts += first.state.pending is not None
        second = rebuild(first)
        assert list(second.equity) == list(first.equity)
        second.run(300)
        second.close_at_end()
        assert_same_walk(whole, second)
    assert pending_cuts > 5  # cuts with an order waiting to fill were among them


def test_pieces_through_json_with_an_order_pending_at_a_boundary():
    walk = generated()
    decisions = walk.targets
    # The first bar whose decision changes the direction: right after it an order waits to fill.
    pending_bar = next(t for t in range(20, len(decisions)) if decisions[t] != HOLD) + 1

    whole = generated()
    whole.run(len(whole.closes))
    whole.close_at_end()

    piece = generated()
    for index, stop in enumerate((5, 9, pending_bar, pending_bar + 1, 250, len(piece.closes))):
        piece.run(stop)
        if stop == pending_bar:
            assert piece.state.pending is not None and piece.state.pending != piece.state.direction
        piece = (through_json, as_resumed)[index % 2](piece)
    piece.close_at_end()
    assert_same_walk(whole, piece)


def test_running_to_a_bar_already_passed_changes_nothing():
    walk = generated()
    walk.run(100)
    before = (walk.state.as_dict(), list(walk.equity), walk.trades)
    walk.run(50)
    walk.run(100)
    assert (walk.state.as_dict(), list(walk.equity), walk.trades) == before
