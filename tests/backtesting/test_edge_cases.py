"""Edge cases of backtests, each once a bug: a short run's large gain, a spool write that fails, an exception
inside the engine, checkpoints turned off, a misspelt parameter, a spool nothing can use any more, and a
run given up on that completes after its resume was queued."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.conf import settings

from backtesting.engine import HOLD, LONG, Costs, Engine, metrics
from backtesting.maintenance import spool_sweep
from backtesting.runner import BacktestRunner
from backtesting.spool import Spool
from backtesting.strategies import SmaCross
from checkpoints import services
from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_discard
from marketdata.series import write_series
from operations.models import Operation
from operations.models import OperationStatus as S
from runtime.resume import operation_resume
from runtime.tasks import run_operation
from tests.backtesting.conftest import generate, start_backtest
from tests.support.processes import run_operation_in_thread, wait_for

REQUEST = {"strategy": "sma_cross", "strategy_params": {"fast": 3, "slow": 8, "allow_short": True}}


def straight_result() -> dict:
    operation_id = start_backtest(**REQUEST)
    assert run_operation(operation_id) == "completed"
    return Operation.objects.get(pk=operation_id).result


def same_result(first: dict, second: dict) -> bool:
    ignored = ("timings", "equity_curve_path")
    return ({k: v for k, v in first.items() if k not in ignored} == {k: v for k, v in second.items() if k not in ignored}
            and np.load(first["equity_curve_path"]).tobytes() == np.load(second["equity_curve_path"]).tobytes())


# --- 1. annualised_return overflows on a short span with a large gain: the whole backtest FAILS


def test_metrics_of_a_short_run_with_a_large_gain_do_not_crash():
    times = (np.datetime64("2020-01-01T00:00") + np.arange(3) * np.timedelta64(1, "h")).astype("datetime64[ns]")
    walk = Engine(opens=[100.0, 100.0, 150.0], closes=[100.0, 120.0, 200.0], times=times, targets=[LONG, HOLD, HOLD],
                  costs=Costs(0.0, 0.0), initial_cash=1000.0)
    walk.run(3)
    walk.close_at_end()
    found = metrics(walk, 3600)  # OverflowError: (2.0) ** (1 / (2 hours in years)) in Python floats
    assert found["total_return"] == pytest.approx(1.0)


@pytest.mark.django_db(transaction=True)
def test_a_short_backtest_with_a_large_gain_completes(backtest_dirs):
    """Valid input (24 one-minute bars rising 50%) must not fail the operation."""
    closes = [100.0, 99.0, 100.0] + [100.0 * 1.02 ** i for i in range(1, 22)]
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2015-01-01", periods=len(closes), freq="min", tz="UTC"),
        "open": closes, "high": [c * 1.01 for c in closes], "low": [c * 0.99 for c in closes], "close": closes,
        "volume": [1000.0] * len(closes),
    })
    write_series(frame, "SYN", "1m")
    operation_id = start_backtest(timeframe="1m", strategy="sma_cross", strategy_params={"fast": 1, "slow": 2})
    assert SmaCross({"fast": 1, "slow": 2, "allow_short": False}).decisions(frame)[2] == LONG

    outcome = run_operation(operation_id)

    operation = Operation.objects.get(pk=operation_id)
    assert (outcome, operation.status) == ("completed", S.COMPLETED), operation.error_message


# --- 2. a spool write that fails during a periodic checkpoint kills the run (it must not: a checkpoint failure
# never kills the operation)


@pytest.mark.django_db(transaction=True)
def test_a_failed_periodic_spool_write_does_not_kill_the_backtest(backtest_dirs, no_rest, monkeypatch):
    generate(5000, seed=7)
    expected = straight_result()
    write_appends = services.write_appends
    calls = {"n": 0}

    def disk_full_once(appends):
        calls["n"] += 1
        if calls["n"] == 1:  # the first periodic checkpoint's appends (the spool's start writes its own)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_appends(appends)

    monkeypatch.setattr(services, "write_appends", disk_full_once)
    operation_id = start_backtest(**REQUEST, checkpoint_every=1000)

    outcome = run_operation(operation_id)

    operation = Operation.objects.get(pk=operation_id)
    assert calls["n"] >= 2
    assert (outcome, operation.status) == ("completed", S.COMPLETED), operation.error_message
    assert same_result(operation.result, expected)


@pytest.mark.django_db(transaction=True)
def test_entries_a_failed_spool_write_missed_are_written_with_the_next_checkpoint(backtest_dirs, no_rest,
                                                                                 monkeypatch):
    generate(20000, seed=7)
    expected = straight_result()
    write_appends = services.write_appends
    failed = []

    def disk_full_once(appends):
        if not failed:
            failed.append([append.offset for append in appends])
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_appends(appends)

    monkeypatch.setattr(services, "write_appends", disk_full_once)
    # No cancel checkpoint (the save in flight is waited for, as always): the last periodic one is what a
    # resume continues from.
    monkeypatch.setattr(BacktestRunner, "checkpoint_payload", lambda self: self._flush())
    report = BacktestRunner._report_progress

    def cancel_after_a_saved_checkpoint(self):
        report(self)
        if failed and self.context.last_save is not None and self.context.last_save.saved:
            self.context.cancel_requested.set()

    monkeypatch.setattr(BacktestRunner, "_report_progress", cancel_after_a_saved_checkpoint)
    operation_id = start_backtest(**REQUEST, checkpoint_every=1000)
    assert run_operation(operation_id) == "cancelled"
    monkeypatch.undo()

    state = Checkpoint.objects.get(pk=operation_id).state
    assert failed and all(offset == 0 for offset in failed[0])  # the first periodic checkpoint's appends failed
    assert state["bar_index"] > 1000  # a periodic checkpoint after the failed one
    fills = Spool.read(operation_id, state)  # its CRC-32 matches: the missed fills were written with it
    assert len(fills) == state["fills_count"] * 3 and state["fills_count"] > 0

    operation_resume(operation_id=operation_id, actor="test")
    assert run_operation(operation_id) == "completed"
    assert same_result(Operation.objects.get(pk=operation_id).result, expected)


# --- 3. an exception inside Engine.run leaves a failure checkpoint that does not match its own state


@pytest.mark.django_db(transaction=True)
def test_resume_after_an_exception_inside_the_engine_gives_the_straight_result(backtest_dirs, monkeypatch):
    generate(5000, seed=7)
    expected = straight_result()
    fill_bar = next(t["exit_bar"] for t in expected["trades"] if t["exit_bar"] > 1000)  # a fill mid-chunk
    fill = Engine._fill
    raised = []

    def failing_once(self, t, *args):
        if t == fill_bar and not raised:
            raised.append(t)
            raise MemoryError("cannot grow the equity array")
        return fill(self, t, *args)

    monkeypatch.setattr(Engine, "_fill", failing_once)
    operation_id = start_backtest(**REQUEST)
    assert run_operation(operation_id) == "failed"
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "failure"

    operation_resume(operation_id=operation_id, actor="test")
    outcome = run_operation(operation_id)

    operation = Operation.objects.get(pk=operation_id)
    assert (outcome, operation.status) == ("completed", S.COMPLETED), operation.error_message
    assert same_result(operation.result, expected)


# --- 4. checkpoints_enabled=false ("no checkpoint at all") still saves a cancellation checkpoint


@pytest.mark.django_db(transaction=True)
def test_no_checkpoint_at_all_when_checkpoints_are_disabled(backtest_dirs, stopper):
    generate(1000)
    operation_id = start_backtest(checkpoints_enabled=False)
    assert stopper.run(operation_id, 500, chunk=1) == "cancelled"
    assert not Checkpoint.objects.filter(pk=operation_id).exists()


# --- 5. a misspelt strategy parameter is silently ignored (the default is used instead)


def test_an_unknown_strategy_parameter_is_refused():
    from rest_framework import serializers

    with pytest.raises(serializers.ValidationError):
        SmaCross.validate_params({"fsat": 5, "slow": 40}, {})  # → {"fast": 10, ...}: the typo is dropped


# --- 6. deleting a cancelled backtest's checkpoint leaves its spool behind forever


@pytest.mark.django_db(transaction=True)
def test_deleting_the_checkpoint_removes_the_spool(backtest_dirs, stopper):
    generate(1000)
    operation_id = start_backtest()
    assert stopper.run(operation_id, 500, chunk=1) == "cancelled"
    spools = Path(settings.RESULTS_DIR) / operation_id
    assert list(spools.glob("run-*"))

    checkpoint_discard(operation_id)
    assert list(spools.glob("run-*"))  # until the control loop's maintenance sweeps it

    assert spool_sweep() == [operation_id]
    assert not list(spools.glob("run-*")), "the spool can never be used again"


# --- 7. a worker presumed dead that completes removes the spool a queued resume needs


@pytest.mark.django_db(transaction=True)
def test_a_zombie_run_that_completes_does_not_break_the_resume(backtest_dirs, monkeypatch):
    generate(5000, seed=7)
    expected = straight_result()
    walk = Engine.run
    at_bar_3000, go_on = threading.Event(), threading.Event()

    def pausing(self, stop):
        if self.state.next_bar >= 3000 and not go_on.is_set():
            at_bar_3000.set()
            go_on.wait(30)
        return walk(self, stop)

    monkeypatch.setattr(Engine, "run", pausing)
    operation_id = start_backtest(**REQUEST, checkpoint_every=1000)
    zombie, outcome = run_operation_in_thread(operation_id)  # attempt 1: its worker stops beating
    assert at_bar_3000.wait(30)
    wait_for(lambda: Checkpoint.objects.filter(pk=operation_id).exists(), timeout=10, what="a periodic checkpoint")

    # The sweep fails it as orphaned; the user resumes it; before a worker claims the resume, the zombie ends.
    assert Operation.objects.transition(operation_id, from_statuses=[S.RUNNING], to_status=S.FAILED,
                                        actor="control-loop", reason="Worker unavailable", presumed_orphan=True)
    operation_resume(operation_id=operation_id, actor="test")
    go_on.set()
    zombie.join(30)
    assert Operation.objects.get(pk=operation_id).status == S.RESUMING  # its outcome was not recorded

    result = run_operation(operation_id)  # attempt 2, from the periodic checkpoint of attempt 1

    operation = Operation.objects.get(pk=operation_id)
    assert (result, operation.status) == ("completed", S.COMPLETED), operation.error_message
    assert same_result(operation.result, expected)
