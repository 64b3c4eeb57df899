"""Backtests on a real `qcluster`: cancel and resume at random bars, and kill -9, give a straight run's result.

The engine is far faster than a heartbeat (millions of bars per second), so
the clusters here run a settings module that slows it to about 50k bars per
second (a sleep proportional to the bars of each chunk): a run then lasts a
few seconds and a cancel or a kill lands in its middle. Product code is
unchanged.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from backtesting.services import backtest_start
from checkpoints.models import Checkpoint
from operations.models import Operation
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_cancel
from runtime.resume import operation_resume
from tests.support.backtests import SLOW_SETTINGS, assert_same_backtest
from tests.support.processes import wait_for
from tests.training.cluster import Children, status_of, transitions, wait_until_terminal

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

BARS = 200_000
REQUEST = {
    "symbol": "SYN",
    "timeframe": "1h",
    "strategy": "sma_cross",
    "strategy_params": {"fast": 10, "slow": 40, "allow_short": True},
    "checkpoint_every": 20_000,
    "max_restarts": 0,  # resumed by hand here (the restart policy's own tests: tests/resilience)
}


@pytest.fixture
def folders(backtest_dirs) -> dict[str, Path]:
    """The test's own folders (shared with its children), and a series long enough to cancel in."""
    call_command("marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", str(BARS), "--seed", "9")
    return backtest_dirs


def slow_cluster(children: Children, workers: int = 1):
    return children.cluster_with_settings("slow_backtest_settings", SLOW_SETTINGS, workers=workers)


def backtest() -> str:
    return backtest_start(data=REQUEST, actor="test").pk


def wait_for_bar(operation_id: str, bar: int) -> None:
    def reached() -> bool:
        status, current = Operation.objects.values_list("status", "progress_current").get(pk=operation_id)
        assert status in (S.PENDING, S.RUNNING), f"{operation_id} is {status} before bar {bar}"
        return (current or 0) >= bar

    wait_for(reached, timeout=120, interval=0.02, what=f"bar {bar} of {operation_id}")


def completed(operation_id: str) -> Operation:
    operation = wait_until_terminal(operation_id, timeout=180)
    assert operation.status == S.COMPLETED, (operation.status, operation.error_message)
    return operation


def test_cancel_and_resume_at_random_bars_gives_the_straight_result(children, folders):
    slow_cluster(children, workers=2)
    straight = backtest()
    interrupted = backtest()
    # A cancel lands up to about a second (two heartbeats, ~50k slowed bars) after it is asked for:
    # cuts early enough that both land before the end.
    cuts = sorted(random.Random().sample(range(5_000, 80_000), 2))
    print(f"cancel requested at bars >= {cuts}")
    landed = []
    for round_, cut in enumerate(cuts):
        wait_for_bar(interrupted, cut)
        operation_cancel(operation_id=interrupted, actor="test")
        cancelled = wait_until_terminal(interrupted, timeout=60)
        assert cancelled.status == S.CANCELLED, (cancelled.status, cancelled.error_message)
        checkpoint = Checkpoint.objects.get(pk=interrupted)
        assert checkpoint.checkpoint_type == "cancellation"
        landed.append(checkpoint.state["bar_index"])
        assert checkpoint.state["bar_index"] >= cut
        operation_resume(operation_id=interrupted, actor="test")
        if round_ == 0:
            wait_for(lambda: status_of(interrupted) == S.RUNNING, timeout=60, what="the resume to start")
    print(f"cancelled at bars {landed}")
    resumed = completed(interrupted)
    assert resumed.attempt == 3
    assert resumed.result["timings"]["bars_processed"] == BARS - landed[-1]
    assert_same_backtest(resumed, completed(straight))
    assert not Checkpoint.objects.filter(pk=interrupted).exists()
    assert sorted(p.name for p in (folders["RESULTS_DIR"] / interrupted).iterdir()) == ["equity.npy"]


def test_a_killed_backtest_is_failed_by_the_sweep_and_resumes_to_the_straight_result(children, folders):
    children.supervise()
    cluster = slow_cluster(children)
    operation_id = backtest()
    wait_for(lambda: Checkpoint.objects.filter(pk=operation_id, state__bar_index__gte=40_000).exists(),
             timeout=120, interval=0.05, what="a periodic checkpoint at bar 40000 or later")
    os.killpg(cluster.process.pid, signal.SIGKILL)
    cluster.wait(timeout=10)
    killed_at = time.monotonic()

    failed = wait_until_terminal(operation_id, timeout=30)
    print(f"kill -9 → {failed.status} after {time.monotonic() - killed_at:.2f}s")
    assert failed.status == S.FAILED
    assert failed.error_message == f"Worker {failed.worker_id} became unavailable"
    assert transitions(operation_id)[-2:] == [(S.RUNNING, S.PENDING_RECONCILIATION), (S.PENDING_RECONCILIATION, S.FAILED)]
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "periodic" and checkpoint.state["bar_index"] >= 40_000

    slow_cluster(children, workers=2)
    operation_resume(operation_id=operation_id, actor="test")
    straight = backtest()
    resumed = completed(operation_id)
    assert resumed.result["timings"]["bars_processed"] == BARS - checkpoint.state["bar_index"]
    assert_same_backtest(resumed, completed(straight))


def test_sigterm_to_the_cluster_checkpoints_the_backtest_and_the_resume_gives_the_straight_result(children, folders):
    cluster = slow_cluster(children)
    operation_id = backtest()
    wait_for_bar(operation_id, 30_000)
    sent = time.monotonic()
    cluster.signal(signal.SIGTERM)
    assert cluster.wait(timeout=25) == 0
    print(f"SIGTERM: cluster exited after {time.monotonic() - sent:.2f}s")

    stopped = Operation.objects.get(pk=operation_id)
    assert stopped.status == S.CANCELLED
    assert stopped.error_message == "Graceful shutdown - checkpoint saved"
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "shutdown" and checkpoint.state["bar_index"] >= 30_000

    slow_cluster(children, workers=2)
    straight = backtest()
    operation_resume(operation_id=operation_id, actor="test")
    resumed = completed(operation_id)
    assert resumed.result["timings"]["bars_processed"] == BARS - checkpoint.state["bar_index"]
    assert_same_backtest(resumed, completed(straight))
