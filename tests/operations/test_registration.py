"""Registration and heartbeat rules (operations/services/workers.py), each tested and each replayed to show it is
idempotent."""

from __future__ import annotations

import pytest
from django.forms.models import model_to_dict

from operations.ids import new_operation_id
from operations.models import Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_cancel
from operations.services.workers import (
    Action,
    CompletedReport,
    CurrentOperation,
    Progress,
    worker_heartbeat,
    worker_register,
)

pytestmark = pytest.mark.django_db


def snapshot(operation_id: str) -> tuple[dict, int]:
    """What a replay must leave untouched: the row and its history."""
    operation = Operation.objects.get(pk=operation_id)
    row = model_to_dict(operation)
    row.pop("last_heartbeat_at", None)  # a heartbeat refresh is the one thing a replay may move
    return row, OperationEvent.objects.filter(operation_id=operation_id).count()


def orphaned(running_operation_factory, **kwargs) -> Operation:
    """An operation the sweep gave up on: FAILED, presumed orphaned, its worker recorded."""
    return running_operation_factory(
        status=S.FAILED, presumed_orphan=True, error_message="Worker x became unavailable", **kwargs
    )


class TestRegistration:
    def test_creates_worker_from_its_id(self):
        reply = worker_register(worker_id="gpu-box.lan:resilient:4242", capabilities={"device": "cpu"})
        worker = Worker.objects.get(pk="gpu-box.lan:resilient:4242")
        assert (worker.host, worker.pid, worker.status) == ("gpu-box.lan", 4242, WorkerStatus.IDLE)
        assert worker.capabilities == {"device": "cpu"}
        assert reply.instruction is None and reply.action is Action.CONTINUE

    def test_unavailable_worker_becomes_available(self, worker_factory):
        worker = worker_factory(status=WorkerStatus.UNAVAILABLE)
        worker_register(worker_id=worker.pk)
        worker.refresh_from_db()
        assert worker.status == WorkerStatus.IDLE


class TestRuleCompletedReports:
    """Rule 1: set the reported outcome if not terminal, or FAILED only as a presumed orphan."""

    def test_outcome_of_presumed_orphan_is_recorded_once(self, running_operation_factory):
        operation = orphaned(running_operation_factory)
        report = CompletedReport(operation.pk, S.COMPLETED, attempt=1, result={"best_val_loss": 0.5})
        first = worker_register(worker_id=operation.worker_id, completed_operations=[report])
        assert first.completed == {operation.pk: True}
        operation.refresh_from_db()
        assert (operation.status, operation.result, operation.error_message) == (S.COMPLETED, {"best_val_loss": 0.5}, "")
        assert not operation.presumed_orphan and operation.completed_at is not None
        before = snapshot(operation.pk)
        second = worker_register(worker_id=operation.worker_id, completed_operations=[report])
        assert second.completed == {operation.pk: False}
        assert snapshot(operation.pk) == before

    @pytest.mark.parametrize("status", [S.RUNNING, S.PENDING_RECONCILIATION])
    def test_outcome_of_non_terminal_is_recorded(self, running_operation_factory, status):
        operation = running_operation_factory(status=status)
        report = CompletedReport(operation.pk, S.FAILED, attempt=1, error_message="CUDA out of memory")
        worker_register(worker_id=operation.worker_id, completed_operations=[report])
        operation.refresh_from_db()
        assert (operation.status, operation.error_message) == (S.FAILED, "CUDA out of memory")

    @pytest.mark.parametrize("status", [S.COMPLETED, S.CANCELLED])
    def test_terminal_is_ignored(self, running_operation_factory, status):
        operation = running_operation_factory(status=status)
        before = snapshot(operation.pk)
        reply = worker_register(
            worker_id=operation.worker_id, completed_operations=[CompletedReport(operation.pk, S.FAILED, attempt=1)]
        )
        assert reply.completed == {operation.pk: False}
        assert snapshot(operation.pk) == before

    def test_genuine_failure_is_ignored(self, running_operation_factory):
        operation = running_operation_factory(status=S.FAILED, error_message="ValueError")
        worker_register(
            worker_id=operation.worker_id, completed_operations=[CompletedReport(operation.pk, S.COMPLETED, attempt=1)]
        )
        operation.refresh_from_db()
        assert operation.status == S.FAILED

    def test_fenced_report_from_an_earlier_run_is_ignored(self, running_operation_factory):
        """The operation was resumed and claimed again by the same worker id (a later attempt)."""
        operation = running_operation_factory(attempt=2)
        reply = worker_register(
            worker_id=operation.worker_id, completed_operations=[CompletedReport(operation.pk, S.COMPLETED, attempt=1)]
        )
        assert reply.completed == {operation.pk: False}
        operation.refresh_from_db()
        assert operation.status == S.RUNNING

    def test_fenced_report_from_another_worker_is_ignored(self, running_operation_factory, worker_factory):
        operation = orphaned(running_operation_factory)
        stranger = worker_factory()
        worker_register(
            worker_id=stranger.pk, completed_operations=[CompletedReport(operation.pk, S.COMPLETED, attempt=1)]
        )
        operation.refresh_from_db()
        assert operation.status == S.FAILED


class TestRuleCurrentOperation:
    """Rule 2, one test per branch, each replayed."""

    def test_unknown_is_created_running_on_this_worker(self):
        operation_id = new_operation_id("backtesting")
        reply = worker_register(worker_id="h:c:1", current_operation=CurrentOperation(operation_id, attempt=1))
        assert reply.action is Action.CONTINUE
        operation = Operation.objects.get(pk=operation_id)
        assert (operation.status, operation.worker_id, operation.operation_type) == (S.RUNNING, "h:c:1", "backtesting")
        assert Worker.objects.get(pk="h:c:1").current_operation_id == operation_id
        before = snapshot(operation_id)
        assert worker_register(worker_id="h:c:1", current_operation=CurrentOperation(operation_id, attempt=1)).action is Action.CONTINUE
        assert snapshot(operation_id) == before

    @pytest.mark.parametrize("status", [S.COMPLETED, S.CANCELLED])
    def test_completed_or_cancelled_tells_worker_to_stop(self, running_operation_factory, status):
        operation = running_operation_factory(status=status)
        before = snapshot(operation.pk)
        for _ in range(2):
            reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
            assert reply.action is Action.STOP
            assert reply.worker.status == WorkerStatus.IDLE and reply.worker.current_operation_id is None
        assert snapshot(operation.pk) == before

    def test_pending_reconciliation_with_this_worker_runs_again(self, running_operation_factory):
        operation = running_operation_factory(status=S.PENDING_RECONCILIATION)
        reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.CONTINUE
        operation.refresh_from_db()
        assert operation.status == S.RUNNING and operation.orphan_clock_from is None
        before = snapshot(operation.pk)
        worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert snapshot(operation.pk) == before

    def test_presumed_orphan_with_this_worker_runs_again(self, running_operation_factory):
        operation = orphaned(running_operation_factory)
        reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.CONTINUE
        operation.refresh_from_db()
        assert (operation.status, operation.error_message, operation.presumed_orphan) == (S.RUNNING, "", False)
        assert operation.completed_at is None

    def test_genuinely_failed_tells_worker_to_stop(self, running_operation_factory):
        operation = running_operation_factory(status=S.FAILED, error_message="boom")
        reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.STOP
        operation.refresh_from_db()
        assert operation.status == S.FAILED

    def test_running_on_this_worker_refreshes_heartbeat(self, running_operation_factory):
        operation = running_operation_factory()
        before = operation.last_heartbeat_at
        reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.CONTINUE
        operation.refresh_from_db()
        assert operation.last_heartbeat_at > before and operation.version == 0

    def test_resuming_tells_worker_to_stop(self, running_operation_factory):
        operation = running_operation_factory(status=S.RESUMING)
        reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.STOP
        operation.refresh_from_db()
        assert operation.status == S.RESUMING

    def test_running_on_another_worker_tells_this_one_to_stop(self, running_operation_factory, worker_factory):
        """Fencing: the worker presumed dead comes back after its operation was resumed elsewhere."""
        old_worker = worker_factory()
        operation = running_operation_factory(attempt=2)  # the new run, on its own worker
        before = snapshot(operation.pk)
        for _ in range(2):
            reply = worker_register(worker_id=old_worker.pk, current_operation=CurrentOperation(operation.pk, 1))
            assert reply.action is Action.STOP
            heartbeat = worker_heartbeat(
                worker_id=old_worker.pk,
                current_operation=CurrentOperation(operation.pk, 1),
                progress=Progress(current=1, percent=1.0, message="stale"),
            )
            assert heartbeat.action is Action.STOP
        assert snapshot(operation.pk) == before

    def test_an_earlier_run_of_the_same_worker_id_is_told_to_stop(self, running_operation_factory):
        operation = running_operation_factory(attempt=3)
        reply = worker_register(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 2))
        assert reply.action is Action.STOP


class TestHeartbeat:
    def test_writes_progress_and_reads_back_cancel(self, running_operation_factory):
        operation = running_operation_factory()
        progress = Progress(current=4, total=30, unit="epochs", percent=13.3, message="epoch 4/30")
        reply = worker_heartbeat(
            worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1), progress=progress
        )
        assert reply.action is Action.CONTINUE and not reply.instruction.cancel_requested
        operation.refresh_from_db()
        assert (operation.progress_current, operation.progress_total, operation.progress_unit) == (4, 30, "epochs")
        assert operation.progress_message == "epoch 4/30"
        operation_cancel(operation_id=operation.pk, actor="user:a")
        reply = worker_heartbeat(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.CONTINUE and reply.instruction.cancel_requested

    def test_heartbeat_back_in_time_makes_it_running_again(self, running_operation_factory):
        operation = running_operation_factory(status=S.PENDING_RECONCILIATION)
        Worker.objects.filter(pk=operation.worker_id).update(status=WorkerStatus.UNAVAILABLE)
        reply = worker_heartbeat(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert reply.action is Action.CONTINUE
        operation.refresh_from_db()
        assert operation.status == S.RUNNING
        assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.BUSY

    def test_missing_worker_row_is_recreated(self, running_operation_factory):
        operation = running_operation_factory()
        worker_id = operation.worker_id
        Worker.objects.filter(pk=worker_id).delete()  # SET_NULL clears the operation's worker too
        reply = worker_heartbeat(worker_id=worker_id, current_operation=CurrentOperation(operation.pk, 1))
        assert Worker.objects.filter(pk=worker_id).exists()
        assert reply.action is Action.STOP  # the operation no longer names it: never adopt another's run

    def test_idle_heartbeat_keeps_worker_available(self, worker_factory):
        worker = worker_factory(status=WorkerStatus.UNAVAILABLE)
        reply = worker_heartbeat(worker_id=worker.pk)
        assert reply.instruction is None and reply.worker.status == WorkerStatus.IDLE
