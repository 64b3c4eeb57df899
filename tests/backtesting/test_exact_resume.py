"""A backtest stopped at any bar and resumed gives exactly the result of a run that never stopped.

Runs go through the runtime in-process (`run_operation`). To stop at an exact
bar, the runner's chunks are made small (`CHUNK_BARS`, the bars between two
checks for cancel) and its cancel (or abandon) event is set as soon as the
engine has reached the chosen bar; the runtime then saves its checkpoint as it
would after a cancel request read by the heartbeat.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings

from backtesting import runner as runner_module
from backtesting.engine import HOLD, Engine
from backtesting.spool import Spool
from backtesting.strategies import SmaCross
from checkpoints.models import Checkpoint
from marketdata.series import load_bars
from operations.models import Operation
from operations.models import OperationStatus as S
from runtime.resume import operation_resume
from runtime.tasks import run_operation
from tests.backtesting.conftest import Stopper, generate, start_backtest
from tests.support.processes import run_and_cancel_at

pytestmark = pytest.mark.django_db(transaction=True)

BARS = 5000
SEED = 7
REQUEST: dict[str, Any] = {"strategy": "sma_cross", "strategy_params": {"fast": 3, "slow": 8, "allow_short": True}}


@pytest.fixture
def market(backtest_dirs):
    generate(BARS, seed=SEED)
    return backtest_dirs


_straight: dict[str, Any] = {}


@pytest.fixture
def straight(market) -> dict[str, Any]:
    """The result of one uninterrupted run with the default chunks and checkpoints (computed once: it is
    deterministic), with its whole equity curve."""
    if not _straight:
        operation_id = start_backtest(**REQUEST)
        assert run_operation(operation_id) == "completed"
        result = Operation.objects.get(pk=operation_id).result
        _straight.update(result=result, equity=np.load(result["equity_curve_path"]))
        assert len(result["trades"]) > 400  # many trades: many states to cut through
    return _straight


def decisions() -> list[int]:
    return SmaCross(REQUEST["strategy_params"]).decisions(load_bars("SYN", "1h")).tolist()


def result_of(operation_id: str) -> dict[str, Any]:
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.COMPLETED, (operation.status, operation.error_message)
    return operation.result


def assert_same_result(resumed: dict[str, Any], straight: dict[str, Any]) -> None:
    """Trades, whole equity curve (bit for bit), metrics and chart points identical; timings aside."""
    expected = straight["result"]
    assert resumed["trades"] == expected["trades"]
    equity = np.load(resumed["equity_curve_path"])
    assert equity.dtype == np.float64 and len(equity) == BARS
    assert np.array_equal(equity, straight["equity"]) and equity.tobytes() == straight["equity"].tobytes()
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["equity_curve"] == expected["equity_curve"]
    ignored = ("timings", "equity_curve_path")
    assert {k: v for k, v in resumed.items() if k not in ignored} == {
        k: v for k, v in expected.items() if k not in ignored
    }


def assert_cleaned_up(operation_id: str) -> None:
    """Completed: the checkpoint is gone and of the results only the equity curve remains (no spools)."""
    assert not Checkpoint.objects.filter(pk=operation_id).exists()
    assert not (Path(settings.CHECKPOINT_DIR) / operation_id).exists()
    assert [p.name for p in (Path(settings.RESULTS_DIR) / operation_id).iterdir()] == ["equity.npy"]


def cancel_at(stopper: Stopper, operation_id: str, bar: int, chunk: int = 1) -> Checkpoint:
    assert stopper.run(operation_id, bar, chunk=chunk) == "cancelled"
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.CANCELLED
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "cancellation"
    if chunk == 1:
        assert checkpoint.state["bar_index"] == bar
    else:
        assert bar <= checkpoint.state["bar_index"] < bar + chunk
    return checkpoint


def resume(operation_id: str, checkpoint: Checkpoint) -> None:
    resumed = operation_resume(operation_id=operation_id, actor="test")
    assert resumed.status == S.RESUMING
    assert resumed.resumed_from["bar_index"] == checkpoint.state["bar_index"]
    assert resumed.resumed_from["checkpoint_type"] == checkpoint.checkpoint_type


def finish(stopper: Stopper, operation_id: str, from_bar: int) -> dict[str, Any]:
    """Run the resumed operation to the end (default chunks); it starts at the checkpoint's bar."""
    assert stopper.run(operation_id) == "completed"
    result = result_of(operation_id)
    assert stopper.chunks and stopper.chunks[0][0] == from_bar  # bars before the checkpoint are not processed again
    assert result["timings"]["bars_processed"] == BARS - from_bar
    return result


# --- cancel at a bar, resume: identical


def random_cases() -> list[tuple[tuple[int, ...], int, int | None]]:
    """25 seeded cases: (cut bars, chunk size, checkpoint_every); every fifth is cut twice (resumed twice in a row)."""
    rng = random.Random(20_240_611)
    cases = []
    for index in range(25):
        chunk = rng.choice([1, 1, 1, 7, 97])
        every = rng.choice([None, None, 250, 1000])
        last = BARS - chunk  # a cut must leave a chunk boundary before the end
        first = rng.randrange(2, last)
        cuts = (first, rng.randrange(first + 1, last + 1)) if index % 5 == 0 else (first,)
        cases.append((cuts, chunk, every))
    return cases


EDGE_CASES = [
    ((0,), 1, None),  # cancelled before its first bar
    ((1,), 1, None),
    ((BARS - 1,), 1, None),  # one bar left
    ((1, 2, BARS - 1), 1, None),  # resumed three times
    ((1500,), 1, 500),  # on a periodic checkpoint's bar
    ((1501,), 1, 500),
]
CASES = EDGE_CASES + random_cases()


@pytest.mark.parametrize(
    ("cuts", "chunk", "every"),
    CASES,
    ids=[f"cuts={'+'.join(map(str, c))}-chunk={k}-every={e}" for c, k, e in CASES],
)
def test_cancel_and_resume_at_a_bar_gives_the_straight_result(straight, stopper, cuts, chunk, every):
    operation_id = start_backtest(**REQUEST, **({"checkpoint_every": every} if every else {}))
    at = 0
    for bar in cuts:
        if bar <= at:
            continue
        checkpoint = cancel_at(stopper, operation_id, bar, chunk)
        at = checkpoint.state["bar_index"]
        resume(operation_id, checkpoint)
    result = finish(stopper, operation_id, at)

    assert_same_result(result, straight)
    assert_cleaned_up(operation_id)


def test_cancel_with_an_order_waiting_to_fill(straight, stopper):
    targets = decisions()
    # After a bar whose decision changes the direction an order waits for the next open.
    bar = next(t for t in range(2500, BARS) if targets[t] != HOLD)
    operation_id = start_backtest(**REQUEST)

    checkpoint = cancel_at(stopper, operation_id, bar + 1)
    engine = checkpoint.state["engine"]
    assert engine["pending"] == targets[bar] and engine["pending"] != engine["direction"]
    assert engine["open_trade"] is not None  # and a position still open, to be reversed by that order

    resume(operation_id, checkpoint)
    result = finish(stopper, operation_id, bar + 1)
    assert_same_result(result, straight)
    reversed_at = [trade for trade in result["trades"] if trade["exit_bar"] == bar + 1]
    assert len(reversed_at) == 1


def test_a_cancel_requested_through_the_service_resumes_to_the_straight_result(straight, settings, monkeypatch):
    """The real path: cancel_requested_at read by the heartbeat, on a run slowed to last about a second."""
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    walk = Engine.run

    def slowly(self, stop):
        import time

        time.sleep((stop - self.state.next_bar) * 0.0002)
        return walk(self, stop)

    monkeypatch.setattr(Engine, "run", slowly)
    monkeypatch.setattr(runner_module, "CHUNK_BARS", 50)
    operation_id = start_backtest(**REQUEST)

    assert run_and_cancel_at(operation_id, 1000) == "cancelled"
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    bar = checkpoint.state["bar_index"]
    assert checkpoint.checkpoint_type == "cancellation" and 1000 <= bar < BARS and bar % 50 == 0

    monkeypatch.setattr(runner_module, "CHUNK_BARS", 4096)
    monkeypatch.setattr(Engine, "run", walk)
    operation_resume(operation_id=operation_id, actor="test")
    assert run_operation(operation_id) == "completed"
    result = result_of(operation_id)
    assert result["timings"]["bars_processed"] == BARS - bar
    assert_same_result(result, straight)
    assert_cleaned_up(operation_id)


# --- other checkpoints: a failure's, and a periodic one after the sweep failed the run


def test_resume_from_a_failure_checkpoint(straight, stopper, monkeypatch):
    walk = Engine.run
    failures = []

    def failing_once(self, stop):
        if self.state.next_bar == 3210 and not failures:
            failures.append(stop)
            raise RuntimeError("data feed hiccup")
        return walk(self, stop)

    monkeypatch.setattr(Engine, "run", failing_once)
    operation_id = start_backtest(**REQUEST)
    assert stopper.run(operation_id, chunk=1) == "failed"
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.error_message) == (S.FAILED, "RuntimeError: data feed hiccup")
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert (checkpoint.checkpoint_type, checkpoint.state["bar_index"]) == ("failure", 3210)

    resume(operation_id, checkpoint)
    assert_same_result(finish(stopper, operation_id, 3210), straight)
    assert_cleaned_up(operation_id)


def test_resume_from_a_periodic_checkpoint_after_the_sweep_failed_the_run(straight, stopper):
    operation_id = start_backtest(**REQUEST, checkpoint_every=500)
    # The worker vanishes at bar 1700: nothing more is written (no cancel or failure checkpoint).
    assert stopper.run(operation_id, 1700, chunk=1, how="abandon") == "abandoned"
    assert Operation.objects.get(pk=operation_id).status == S.RUNNING
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    bar = checkpoint.state["bar_index"]
    # The latest periodic checkpoint committed (a loop faster than a save may skip one while it is in flight).
    assert checkpoint.checkpoint_type == "periodic" and bar in (500, 1000, 1500)

    # What the control loop's sweep does to a run whose worker stopped beating.
    assert Operation.objects.transition(
        operation_id, from_statuses=[S.RUNNING], to_status=S.FAILED, actor="control-loop",
        reason="Worker unavailable", error_message="Worker unavailable", presumed_orphan=True,
    )
    resume(operation_id, checkpoint)
    result = finish(stopper, operation_id, bar)
    assert_same_result(result, straight)
    assert_cleaned_up(operation_id)


# --- what a checkpoint holds, and what it costs


def test_the_checkpoint_state(straight, stopper):
    targets = decisions()
    operation_id = start_backtest(**REQUEST)
    checkpoint = cancel_at(stopper, operation_id, 500)
    state = checkpoint.state
    bars = load_bars("SYN", "1h")

    assert state["bar_index"] == 500 and checkpoint.position == {"bar_index": 500}
    assert state["bar_time"] == bars["timestamp"][499].strftime("%Y-%m-%dT%H:%M:%SZ")  # the last bar processed
    assert state["bars"] == BARS
    assert set(state["engine"]) == {"next_bar", "cash", "position", "direction", "pending", "open_trade",
                                    "closed_at_end"}
    assert state["engine"]["next_bar"] == 500 and state["engine"]["open_trade"] is not None
    assert state["engine"]["pending"] == (targets[499] if targets[499] not in (HOLD, state["engine"]["direction"])
                                          else None)
    fills = Spool.read(operation_id, state)  # the fills the checkpoint names: all before bar 500
    assert state["fills_count"] == len(fills) // 3 and max(fills[0::3]) < 500
    closed = sum(1 for trade in straight["result"]["trades"] if trade["exit_bar"] < 500)
    assert state["trades_count"] == closed > 10
    assert state["spool"] == "run-1" and state["engine_seconds"] >= 0
    # Small values only: the series (equity curve, trades) are in the run's spool, not in the row.
    assert all(not isinstance(value, (list, dict)) for key, value in state.items() if key != "engine")
    assert all(not isinstance(value, list) for value in state["engine"].values())
    spool = Path(settings.RESULTS_DIR) / operation_id / "run-1"
    assert spool.is_dir() and any(path.stat().st_size > 0 for path in spool.iterdir())


def test_a_checkpoint_does_not_grow_with_the_bar_index(market, stopper):
    sizes = {}
    for bar in (500, 4500):
        operation_id = start_backtest(**REQUEST, checkpoint_every=250)
        checkpoint = cancel_at(stopper, operation_id, bar)
        assert checkpoint.state["trades_count"] > (40 if bar == 500 else 400)
        sizes[bar] = (len(json.dumps(checkpoint.state)), checkpoint.state_size_bytes)
    early, late = sizes[500], sizes[4500]
    assert late[0] < early[0] + 50, sizes  # a few more digits, never the series
    assert late[1] < early[1] + 50 and late[1] < 2000, sizes


def test_spools_are_kept_while_resumable_and_removed_when_completed(straight, stopper):
    operation_id = start_backtest(**REQUEST)
    results = Path(settings.RESULTS_DIR) / operation_id

    resume(operation_id, cancel_at(stopper, operation_id, 1000))
    assert sorted(p.name for p in results.iterdir()) == ["run-1"]
    resume(operation_id, cancel_at(stopper, operation_id, 2000))
    assert sorted(p.name for p in results.iterdir()) == ["run-1", "run-2"]
    assert Checkpoint.objects.get(pk=operation_id).state["spool"] == "run-2"

    result = finish(stopper, operation_id, 2000)
    assert_same_result(result, straight)
    assert result["equity_curve_path"] == str(results / "equity.npy")
    assert_cleaned_up(operation_id)
