"""Engine.replay: the trades, the fill log and the open trade rebuilt from the fills a checkpoint names, by filling
again, so that a run resumed from any bar (an order waiting, a position open, after the close at the end) ends
bit for bit as a run that never stopped; and fills that do not replay (other data, other decisions, a damaged
log) are refused with the fill and bar that differ."""

from __future__ import annotations

import json
import math
import random
import re
from array import array

import numpy as np
import pytest

from backtesting.engine import FILL_FIELDS, FLAT, HOLD, LONG, SHORT, Costs, Engine, EngineState, equity_from_fills

BARS = 300
CASH = 123_456.789
COSTS = Costs(commission=0.0007, slippage=0.0003)  # not round: every fill's cash is rounded
WIDTH = len(FILL_FIELDS)

# Long, held, reversed to short, flattened, flat decisions repeated, long again, a decision equal to the
# direction, a reversal straight back: all that a strategy's decisions do.
PATTERN = [LONG, HOLD, HOLD, HOLD, SHORT, HOLD, HOLD, FLAT, HOLD, FLAT, HOLD, SHORT, HOLD, LONG, LONG, HOLD,
           SHORT, LONG, HOLD, FLAT, HOLD, HOLD, LONG, HOLD]


def prices(count: int = BARS, seed: int = 11) -> tuple[list[float], list[float]]:
    """A random walk of opens and closes (seeded), never round numbers."""
    rng = random.Random(seed)
    opens, closes, close = [], [], 100.0 + rng.random()
    for _ in range(count):
        open_ = close * (1.0 + rng.gauss(0.0, 0.002))
        close = open_ * (1.0 + rng.gauss(0.0, 0.01))
        opens.append(open_)
        closes.append(close)
    return opens, closes


def realistic(count: int = BARS) -> list[int]:
    targets = [PATTERN[i % len(PATTERN)] for i in range(count)]
    targets[-30:] = [LONG] + [HOLD] * 29  # a position still open at the end: close_at_end closes it
    return targets


def seeded(count: int = BARS, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    targets = [rng.choice([LONG, SHORT, FLAT, HOLD, HOLD, HOLD]) for _ in range(count)]
    targets[-30:] = [SHORT] + [HOLD] * 29
    return targets


TARGETS = {"realistic": realistic, "random": seeded}


def make(targets: list[int], state: dict | None = None) -> Engine:
    """An engine over the walk; with `state`, a fresh one as a resume makes it (the state's JSON)."""
    opens, closes = prices(len(targets))
    start = np.datetime64("2022-03-01T00:00:00", "ns")
    times = np.array([start + np.timedelta64(i, "h") for i in range(len(targets))])
    engine = Engine(opens=opens, closes=closes, times=times, targets=list(targets), costs=COSTS, initial_cash=CASH)
    if state is not None:
        engine.state = EngineState.from_dict(json.loads(json.dumps(state)))
    return engine


def straight(targets: list[int]) -> Engine:
    engine = make(targets)
    engine.run(len(targets))
    engine.close_at_end()
    return engine


def copied(log: array) -> array:
    """The log as a spool gives it back: its bytes, in a new array."""
    copy = array("d")
    copy.frombytes(log.tobytes())
    return copy


def resumed(checkpoint: Engine, fills: array | None = None, targets: list[int] | None = None) -> Engine:
    """A fresh engine with the checkpoint's state, the fills replayed and the equity rebuilt from them."""
    engine = make(checkpoint.targets if targets is None else targets, checkpoint.state.as_dict())
    engine.replay(copied(checkpoint.fill_log) if fills is None else fills)
    engine.equity = equity_from_fills(np.asarray(engine.closes), engine.fill_log, engine.state.next_bar, CASH)
    return engine


def assert_same_logs(first: Engine, second: Engine) -> None:
    assert first.fill_log.tobytes() == second.fill_log.tobytes()
    assert first.trade_log.tobytes() == second.trade_log.tobytes()
    assert first.equity.tobytes() == second.equity.tobytes()
    assert first.trades == second.trades
    assert first.state == second.state


def fills_of(engine: Engine) -> list[tuple[float, float, float]]:
    log = engine.fill_log.tolist()
    return [tuple(log[i:i + WIDTH]) for i in range(0, len(log), WIDTH)]


# --- a run resumed from any bar


@pytest.mark.parametrize("kind", TARGETS)
def test_a_run_resumed_from_any_bar_by_replaying_its_fills_equals_one_run(kind):
    targets = TARGETS[kind]()
    whole = straight(targets)
    assert len(whole.trades) > 40 and whole.trades[-1]["closed_at_end"]
    assert {trade["side"] for trade in whole.trades} == {"long", "short"}

    pending_cuts = open_cuts = flat_cuts = 0
    for cut in range(0, BARS + 1):
        first = make(targets)
        first.run(cut)
        pending_cuts += first.state.pending is not None
        open_cuts += first.state.open_trade is not None
        flat_cuts += first.state.open_trade is None and len(first.fill_log) > 0

        second = resumed(first)

        assert second.fill_log.tobytes() == first.fill_log.tobytes()  # what the checkpoint knew, rebuilt
        assert second.trade_log.tobytes() == first.trade_log.tobytes()
        assert second.state.open_trade == first.state.open_trade
        assert second.equity.tobytes() == first.equity.tobytes()
        second.run(BARS)
        second.close_at_end()
        assert_same_logs(whole, second)
    assert pending_cuts > 20 and open_cuts > 100 and flat_cuts > 5


@pytest.mark.parametrize("kind", TARGETS)
def test_a_checkpoint_with_an_order_waiting_and_a_position_open_resumes_exactly(kind):
    targets = TARGETS[kind]()
    whole = straight(targets)
    # A bar right after a reversal decision: a position is open and the order to reverse it waits to fill.
    cut = next(t + 1 for t in range(10, BARS - 1)
               if targets[t] in (LONG, SHORT) and whole.trade_log and _held_before(whole, t + 1) == -targets[t])
    first = make(targets)
    first.run(cut)
    assert first.state.pending == -first.state.direction and first.state.open_trade is not None

    second = resumed(first)
    assert second.state.open_trade == first.state.open_trade and second.state.pending == first.state.pending
    second.run(BARS)
    second.close_at_end()

    assert_same_logs(whole, second)


def _held_before(engine: Engine, bar: int) -> int:
    """The direction held at the open of `bar` (after the fills of earlier bars)."""
    position = 0.0
    for fill_bar, _, fill_position in fills_of(engine):
        if fill_bar < bar:
            position = fill_position
    return (position > 0) - (position < 0)


# --- the close at the end


@pytest.mark.parametrize("kind", TARGETS)
def test_a_checkpoint_after_the_close_at_the_end_replays_it(kind):
    targets = TARGETS[kind]()
    whole = make(targets)
    whole.run(BARS)
    assert whole.state.direction != FLAT  # a position for close_at_end to close
    whole.close_at_end()
    assert whole.state.closed_at_end
    last_bar, last_cash, last_position = fills_of(whole)[-1]
    assert (last_bar, last_cash, last_position) == (BARS - 1, whole.state.cash, 0.0)

    second = resumed(whole)

    assert_same_logs(whole, second)
    assert second.trades[-1]["closed_at_end"] and second.trades[-1]["exit_bar"] == BARS
    assert not any(trade["closed_at_end"] for trade in second.trades[:-1])
    before = (second.fill_log.tobytes(), second.trade_log.tobytes(), second.equity.tobytes(), second.state.as_dict())
    second.close_at_end()  # closed already: nothing more
    second.run(BARS)
    assert (second.fill_log.tobytes(), second.trade_log.tobytes(), second.equity.tobytes(),
            second.state.as_dict()) == before


def tail(last_decision: int, held: int) -> list[int]:
    """Targets holding `held` (or flat) until the decision of bar BARS - 2, filled at the last bar's open."""
    targets = realistic()
    targets[-30:] = [held] + [HOLD] * 29
    targets[BARS - 2] = last_decision
    return targets


@pytest.mark.parametrize("held, last_decision, closes_at_end, fills_at_last_bar", [
    (LONG, FLAT, False, 1),  # a regular fill at the last bar flattens: nothing left to close
    (SHORT, FLAT, False, 1),
    (LONG, SHORT, True, 2),  # a reversal at the last bar, closed at the last close
    (FLAT, LONG, True, 2),  # an entry at the last bar's open, closed at its close
    (SHORT, HOLD, True, 1),  # no fill at the last bar: only the close at the end
], ids=["long-flattened", "short-flattened", "reversed", "entered", "held"])
def test_a_fill_at_the_last_bar_and_the_close_at_the_end_replay(held, last_decision, closes_at_end, fills_at_last_bar):
    targets = tail(last_decision, held)
    whole = make(targets)
    whole.run(BARS)
    before_close = make(targets, whole.state.as_dict())  # a checkpoint at the end, before close_at_end
    before_close.fill_log = copied(whole.fill_log)
    whole.close_at_end()

    assert whole.state.closed_at_end is closes_at_end
    assert [bar for bar, _, _ in fills_of(whole)].count(BARS - 1) == fills_at_last_bar
    assert fills_of(whole)[-1][2] == 0.0 and whole.state.direction == FLAT
    if last_decision == FLAT:
        assert whole.trades[-1]["exit_bar"] == BARS - 1 and not whole.trades[-1]["closed_at_end"]
    else:
        assert whole.trades[-1]["exit_bar"] == BARS and whole.trades[-1]["closed_at_end"]

    after = resumed(whole)  # a checkpoint after close_at_end
    assert_same_logs(whole, after)
    after.close_at_end()
    assert_same_logs(whole, after)

    before = resumed(before_close)  # a checkpoint before close_at_end, which the resumed run then does
    assert not before.state.closed_at_end
    before.close_at_end()
    assert_same_logs(whole, before)


# --- fills that do not replay


@pytest.fixture(scope="module")
def checkpoint() -> Engine:
    """A run stopped with a position open (and the state a checkpoint there saves)."""
    targets = realistic()
    cut = next(bar for bar in range(200, BARS) if _open_after(targets, bar))
    engine = make(targets)
    engine.run(cut)
    assert engine.state.open_trade is not None and engine.state.pending is None
    return engine


def _open_after(targets: list[int], bar: int) -> bool:
    engine = make(targets)
    engine.run(bar)
    return engine.state.open_trade is not None and engine.state.pending is None


def replay_error(checkpoint: Engine, fills: array, targets: list[int] | None = None) -> str:
    engine = make(checkpoint.targets if targets is None else targets, checkpoint.state.as_dict())
    with pytest.raises(ValueError) as raised:
        engine.replay(fills)
    return str(raised.value)


def changed(log: array, index: int, field: str, value) -> array:
    fills = copied(log)
    fills[index * WIDTH + FILL_FIELDS.index(field)] = value(fills[index * WIDTH + FILL_FIELDS.index(field)])
    return fills


@pytest.mark.parametrize("which", ["first", "middle", "last"])
@pytest.mark.parametrize("field, value", [
    ("cash", lambda cash: math.nextafter(cash, math.inf)),
    ("cash", lambda cash: math.nextafter(cash, -math.inf)),
    ("position", lambda position: math.nextafter(position, math.inf)),
    ("position", lambda position: -position if position else 1.0),
], ids=["cash-up-one-ulp", "cash-down-one-ulp", "position-up-one-ulp", "position-other-side"])
def test_a_fill_whose_cash_or_position_differs_is_refused_naming_it(checkpoint, which, field, value):
    count = len(checkpoint.fill_log) // WIDTH
    index = {"first": 0, "middle": count // 2, "last": count - 1}[which]
    bar = int(checkpoint.fill_log[index * WIDTH])
    fills = changed(checkpoint.fill_log, index, field, value)
    assert fills != checkpoint.fill_log

    message = replay_error(checkpoint, fills)

    assert message.startswith(f"fill {index + 1} of {count} (bar {bar}) does not replay")


def test_a_close_at_the_end_whose_cash_differs_is_refused():
    whole = straight(realistic())
    count = len(whole.fill_log) // WIDTH
    fills = changed(whole.fill_log, count - 1, "cash", lambda cash: math.nextafter(cash, math.inf))

    message = replay_error(whole, fills)

    assert message.startswith(f"fill {count} of {count} (bar {BARS - 1}) does not replay")


@pytest.mark.parametrize("bar", [0, -1, BARS, BARS + 5])
@pytest.mark.parametrize("which", ["first", "middle"])
def test_a_fill_outside_the_series_is_refused(checkpoint, bar, which):
    count = len(checkpoint.fill_log) // WIDTH
    index = 0 if which == "first" else count // 2
    fills = changed(checkpoint.fill_log, index, "bar", lambda _: float(bar))

    message = replay_error(checkpoint, fills)

    assert message == f"fill {index + 1} of {count} is at bar {bar}, outside the series"


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_fills_replayed_on_other_decisions_are_refused(checkpoint, which):
    count = len(checkpoint.fill_log) // WIDTH
    index = {"first": 0, "middle": count // 2, "last": count - 1}[which]
    bar = int(checkpoint.fill_log[index * WIDTH])
    for other in (LONG, SHORT, FLAT, HOLD):
        if other == checkpoint.targets[bar - 1]:
            continue
        targets = list(checkpoint.targets)
        targets[bar - 1] = other  # the decision that made this fill, changed

        message = replay_error(checkpoint, copied(checkpoint.fill_log), targets)

        assert message.startswith(f"fill {index + 1} of {count} (bar {bar}) does not replay"), other


def test_fills_replayed_on_other_prices_are_refused(checkpoint):
    count = len(checkpoint.fill_log) // WIDTH
    index = count // 2
    bar = int(checkpoint.fill_log[index * WIDTH])
    engine = make(checkpoint.targets, checkpoint.state.as_dict())
    engine.opens[bar] = math.nextafter(engine.opens[bar], math.inf)

    with pytest.raises(ValueError, match=re.escape(f"fill {index + 1} of {count} (bar {bar}) does not replay")):
        engine.replay(copied(checkpoint.fill_log))


@pytest.mark.parametrize("dropped", [1, 2, 5])
def test_fills_that_stop_short_of_the_checkpoint_are_refused(checkpoint, dropped):
    fills = copied(checkpoint.fill_log)
    del fills[-dropped * WIDTH:]

    message = replay_error(checkpoint, fills)

    assert message.startswith("the fills do not replay to the checkpoint's cash, position and open trade")


def test_fills_that_go_past_the_checkpoint_are_refused():
    targets = realistic()
    later = make(targets)
    later.run(250)
    earlier = make(targets)
    earlier.run(200)
    assert len(later.fill_log) > len(earlier.fill_log)

    message = replay_error(earlier, copied(later.fill_log))

    assert message.startswith("the fills do not replay to the checkpoint's cash, position and open trade")


def test_fills_of_the_same_cash_and_position_but_another_open_trade_are_refused(checkpoint):
    state = checkpoint.state.as_dict()
    state["open_trade"] = {**state["open_trade"], "entry_commission": math.nextafter(
        state["open_trade"]["entry_commission"], math.inf)}
    engine = make(checkpoint.targets, state)

    with pytest.raises(ValueError, match="the fills do not replay to the checkpoint's cash, position and open trade"):
        engine.replay(copied(checkpoint.fill_log))


# --- the close at the end


@pytest.mark.parametrize("bar", [0, 5, BARS])
def test_a_close_at_the_end_recorded_at_another_bar_is_refused(bar):
    whole = straight(realistic())
    count = len(whole.fill_log) // WIDTH
    fills = changed(whole.fill_log, count - 1, "bar", lambda _: float(bar))

    message = replay_error(whole, fills)

    assert message == (f"fill {count} of {count} is at bar {bar}, outside the series" if bar in (0, BARS) else
                       f"fill {count} of {count} (bar {bar}) is not the close at the end the checkpoint says: "
                       f"the last bar is {BARS - 1}")


def test_a_close_at_the_end_with_nothing_to_close_is_refused_as_not_replaying():
    whole = straight(realistic())

    message = replay_error(whole, copied(whole.fill_log)[-WIDTH:])  # only the close's fill

    assert message == (f"fill 1 of 1 (bar {BARS - 1}) is not the close at the end the checkpoint says: "
                       "nothing is held then")


@pytest.mark.parametrize("bar", [2.5, math.inf, math.nan])
def test_a_fill_at_a_bar_that_is_not_a_whole_number_is_refused(checkpoint, bar):
    count = len(checkpoint.fill_log) // WIDTH
    fills = changed(checkpoint.fill_log, 0, "bar", lambda _: bar)

    assert replay_error(checkpoint, fills) == f"fill 1 of {count} is at bar {bar:g}, outside the series"


# --- no fills


@pytest.mark.parametrize("kind", TARGETS)
def test_replaying_no_fills_leaves_empty_logs_and_the_initial_cash(kind):
    targets = TARGETS[kind]()
    whole = straight(targets)
    first_fill = int(whole.fill_log[0])
    for cut in sorted({0, first_fill // 2, first_fill}):  # bars before any fill
        first = make(targets)
        first.run(cut)
        assert first.fill_log == array("d")
        assert cut < first_fill or first.state.pending in (LONG, SHORT)  # at the last, an order waits to fill
        engine = make(targets, first.state.as_dict())
        engine.fill_log, engine.trade_log = array("d", [1.0, 2.0, 3.0]), array("d", [4.0])  # whatever was there

        engine.replay(array("d"))

        assert engine.fill_log == array("d") and engine.trade_log == array("d") and engine.trades == []
        assert engine.state.cash == CASH and engine.state.position == 0.0 and engine.state.open_trade is None
        assert engine.state == first.state
        engine.equity = equity_from_fills(np.asarray(engine.closes), engine.fill_log, cut, CASH)
        assert list(engine.equity) == [CASH] * cut
        engine.run(BARS)
        engine.close_at_end()
        assert_same_logs(whole, engine)
