"""Backtest checkpoints committed by the child process (CHECKPOINT_COMMITTER=process), as on a real worker.

In-process tests commit from a thread (their data lives in a transaction no other process sees); these
tests commit for real, so that a child process reads and writes the same database.
"""

from __future__ import annotations

import json
import os
import signal
from functools import partial

import numpy as np
import pytest

from backtesting.runner import BacktestRunner
from checkpoints.models import Checkpoint
from operations.models import Operation
from operations.models import OperationStatus as S
from runtime import committer as committer_module
from runtime.committer import Committer
from runtime.resume import operation_resume
from runtime.tasks import run_operation
from tests.backtesting.conftest import generate, start_backtest, without_rest

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = {"strategy": "sma_cross", "strategy_params": {"fast": 3, "slow": 8, "allow_short": True}, "checkpoint_every": 500}


@pytest.fixture
def child_commits(settings, backtest_dirs):
    settings.CHECKPOINT_COMMITTER = "process"
    generate(6000, seed=7)
    yield
    for kept in list(committer_module._kept.values()):  # the next test has folders of its own
        kept.close()
    committer_module._kept.clear()


@pytest.fixture
def committers(monkeypatch) -> list[Committer]:
    """Every committer the runs start, to look at their processes."""
    started: list[Committer] = []
    start = Committer.start

    def recording(self):
        if self not in started:
            started.append(self)
        start(self)

    monkeypatch.setattr(Committer, "start", recording)
    return started


@pytest.fixture
def slow_loop(monkeypatch):
    """A loop slower than a commit (the real one is far faster), so that periodic checkpoints are taken: a chunk
    per checkpoint due (500 bars), 80 ms each, and no rest after a checkpoint."""
    without_rest(monkeypatch, chunk_bars=500, seconds_per_chunk=0.08)


def result_of(operation_id: str) -> dict:
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.COMPLETED, operation.error_message
    return operation.result


def same(first: dict, second: dict) -> None:
    assert first["trades"] == second["trades"] and first["metrics"] == second["metrics"]
    assert np.array_equal(np.load(first["equity_curve_path"]), np.load(second["equity_curve_path"]))


def test_periodic_checkpoints_are_committed_by_a_child_kept_for_the_next_run(child_commits, committers, slow_loop,
                                                                            monkeypatch):
    seen = []
    record = BacktestRunner.run

    def watching(self):
        original = self.context._record

        def recorded(result):
            seen.append(result)
            return original(result)

        self.context._record = recorded
        return record(self)

    monkeypatch.setattr(BacktestRunner, "run", watching)
    first, second = start_backtest(**REQUEST), start_backtest(**REQUEST)

    assert run_operation(first) == "completed"
    assert run_operation(second) == "completed"

    # The first run's first save waits for the child to start (half a second, more on a busy machine), so
    # it may skip the checkpoints due meanwhile; the second run finds the child ready and takes several.
    assert result_of(first)["timings"]["periodic_checkpoints"] >= 1
    assert result_of(second)["timings"]["periodic_checkpoints"] >= 2
    assert seen and all(found.saved and found.appended for found in seen)  # answers of the child
    assert len(committers) == 1  # one child, for both runs
    child = committers[0].process
    assert child.poll() is None and not committers[0].in_use
    committer_module.release(committers[0], broken=True)  # as when its worker exits: its pipe closes
    assert child.poll() == 0


def test_a_run_cancelled_and_resumed_with_the_child_equals_a_straight_run(child_commits, slow_loop, monkeypatch):
    straight = start_backtest(**REQUEST)
    assert run_operation(straight) == "completed"
    interrupted = start_backtest(**REQUEST)
    report = BacktestRunner._report_progress

    def cancel_at_3000(self):
        report(self)
        if self.engine.state.next_bar >= 3000 and self.context.attempt == 1:
            self.context.cancel_requested.set()

    monkeypatch.setattr(BacktestRunner, "_report_progress", cancel_at_3000)
    assert run_operation(interrupted) == "cancelled"
    assert Checkpoint.objects.get(pk=interrupted).state["bar_index"] >= 3000
    operation_resume(operation_id=interrupted, actor="test")
    assert run_operation(interrupted) == "completed"

    same(result_of(interrupted), result_of(straight))


def test_a_child_that_dies_is_replaced_by_a_thread_and_the_run_completes(child_commits, committers, slow_loop,
                                                                         monkeypatch, caplog):
    straight_id = start_backtest(**REQUEST)
    assert run_operation(straight_id) == "completed"
    report = BacktestRunner._report_progress
    killed = []

    def kill_the_child_at_2000(self):
        report(self)
        child = committers[-1].process if committers and committers[-1].process else None
        if self.engine.state.next_bar >= 2000 and child is not None and child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            killed.append(self.engine.state.next_bar)

    monkeypatch.setattr(BacktestRunner, "_report_progress", kill_the_child_at_2000)
    operation_id = start_backtest(**REQUEST)

    assert run_operation(operation_id) == "completed"

    result = result_of(operation_id)
    same(result, result_of(straight_id))
    assert killed, "the child was never killed: the test proves nothing"
    assert "saving in a thread" in caplog.text or "saving in threads" in caplog.text
    checkpoint_bars = [record.getMessage() for record in caplog.records]
    assert result["timings"]["periodic_checkpoints"] * 500 > killed[0], checkpoint_bars[-3:]  # went on after it


def test_the_child_answers_a_fenced_out_request_without_saving(child_commits, running_operation_factory):
    operation = running_operation_factory()
    child = Committer()
    try:
        child.submit(operation.pk, "periodic", partial(json.loads, '{"bar_index": 1}'),
                     ("someone:else:1", operation.attempt))
        answer = child.result()
        assert answer.saved is False and "fenced" in answer.error
        child.submit(operation.pk, "periodic", partial(json.loads, '{"bar_index": 2}'),
                     (operation.worker_id, operation.attempt))
        assert child.result().saved is True
    finally:
        child.close()
    assert Checkpoint.objects.get(pk=operation.pk).state == {"bar_index": 2}


def test_a_state_that_cannot_be_made_is_answered_unsaved_and_the_child_goes_on(child_commits,
                                                                             running_operation_factory):
    operation = running_operation_factory()
    child = Committer()
    fence = (operation.worker_id, operation.attempt)
    try:
        child.submit(operation.pk, "periodic", partial(json.loads, "not json"), fence)
        answer = child.result()
        assert answer.saved is False and "could not be made" in answer.error and answer.appended is None
        child.submit(operation.pk, "periodic", partial(json.loads, '{"bar_index": 3}'), fence)
        assert child.result().saved is True
    finally:
        child.close()
    assert Checkpoint.objects.get(pk=operation.pk).state == {"bar_index": 3}


def test_the_child_uses_the_database_of_the_process_that_starts_it(child_commits):
    from django.db import connection

    url = committer_module._database_url(connection.settings_dict)
    assert url.endswith(f"/{connection.settings_dict['NAME']}")
