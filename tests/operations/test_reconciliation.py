"""Orphan sweep and startup reconciliation (docs/restarts-and-crashes.md): one test per rule, each pass run twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from checkpoints.services import checkpoint_save
from operations import registry
from operations.models import ControlLoop, Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.reconciliation import (
    BACKEND_RESTART_WITH_CHECKPOINT,
    BACKEND_RESTART_WITHOUT_CHECKPOINT,
    NO_WORKER_MESSAGE,
    reconcile_startup,
    sweep_orphans,
)
from operations.services.workers import CurrentOperation, Progress, worker_heartbeat
from tests.conftest import queued_operation_ids

pytestmark = pytest.mark.django_db


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


class TestStaleRunning:
    def test_stale_heartbeat_becomes_pending_reconciliation(self, running_operation_factory, short_intervals):
        operation = running_operation_factory(last_heartbeat_at=ago(4), worker__last_seen_at=ago(4))
        fresh = running_operation_factory(last_heartbeat_at=ago(1))
        report = sweep_orphans()
        assert report.pending_reconciliation == [operation.pk]
        assert report.workers_unavailable == [operation.worker_id]  # reported, though marked with its operation
        operation.refresh_from_db()
        assert operation.status == S.PENDING_RECONCILIATION
        assert operation.orphan_clock_from == operation.last_heartbeat_at
        assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.UNAVAILABLE
        fresh.refresh_from_db()
        assert fresh.status == S.RUNNING
        assert sweep_orphans().pending_reconciliation == []  # a second pass changes nothing

    def test_null_heartbeat_counts_from_started_at(self, running_operation_factory, short_intervals):
        stale = running_operation_factory(last_heartbeat_at=None, started_at=ago(5))
        young = running_operation_factory(last_heartbeat_at=None, started_at=ago(1))
        assert sweep_orphans().pending_reconciliation == [stale.pk]
        young.refresh_from_db()
        assert young.status == S.RUNNING

    def test_null_heartbeat_and_start_counts_from_creation(self, operation_factory, short_intervals):
        operation = operation_factory(status=S.RUNNING, created_at=ago(5))
        assert sweep_orphans().pending_reconciliation == [operation.pk]

    def test_backend_local_is_not_swept(self, operation_factory, short_intervals):
        session = operation_factory(
            operation_type="agent_research", is_backend_local=True, status=S.RUNNING, last_heartbeat_at=ago(600)
        )
        sweep_orphans()
        session.refresh_from_db()
        assert session.status == S.RUNNING

    def test_a_live_worker_is_not_marked_unavailable(self, running_operation_factory, short_intervals):
        """The operation's heartbeat is stale but the worker itself was seen just now (another thread of it)."""
        operation = running_operation_factory(last_heartbeat_at=ago(4))
        Worker.objects.filter(pk=operation.worker_id).update(last_seen_at=timezone.now())
        sweep_orphans()
        assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.BUSY


class TestOrphanTimeout:
    def test_expired_reconciliation_fails_naming_the_worker(self, running_operation_factory, short_intervals):
        operation = running_operation_factory(
            status=S.PENDING_RECONCILIATION, last_heartbeat_at=ago(7), orphan_clock_from=ago(7)
        )
        waiting = running_operation_factory(
            status=S.PENDING_RECONCILIATION, last_heartbeat_at=ago(4), orphan_clock_from=ago(4)
        )
        assert sweep_orphans().failed == [operation.pk]
        operation.refresh_from_db()
        assert operation.status == S.FAILED and operation.presumed_orphan
        assert operation.error_message == f"Worker {operation.worker_id} became unavailable"
        waiting.refresh_from_db()
        assert waiting.status == S.PENDING_RECONCILIATION
        assert sweep_orphans().failed == []

    def test_without_worker_says_no_worker_claimed_it(self, operation_factory, short_intervals):
        operation = operation_factory(status=S.PENDING_RECONCILIATION, started_at=ago(10))
        sweep_orphans()
        operation.refresh_from_db()
        assert (operation.status, operation.error_message) == (S.FAILED, NO_WORKER_MESSAGE)

    def test_stale_then_failed_across_passes(self, running_operation_factory, short_intervals):
        operation = running_operation_factory(last_heartbeat_at=ago(4))
        now = timezone.now()
        sweep_orphans(now=now)
        assert sweep_orphans(now=now + timedelta(seconds=1)).failed == []
        assert sweep_orphans(now=now + timedelta(seconds=3)).failed == [operation.pk]

    def test_heartbeat_in_time_wins(self, running_operation_factory, short_intervals):
        operation = running_operation_factory(last_heartbeat_at=ago(4))
        sweep_orphans()
        worker_heartbeat(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        sweep_orphans()
        operation.refresh_from_db()
        assert operation.status == S.RUNNING


class TestRequeue:
    def test_unclaimed_is_enqueued_again(
        self, operation_factory, training_executor, short_intervals, django_capture_on_commit_callbacks
    ):
        lost = operation_factory(status=S.PENDING, queued_at=ago(11))
        resuming = operation_factory(status=S.RESUMING, queued_at=ago(11))
        recent = operation_factory(status=S.PENDING, queued_at=ago(2))
        with django_capture_on_commit_callbacks(execute=True):
            report = sweep_orphans()
        assert sorted(report.requeued) == sorted([lost.pk, resuming.pk])
        assert sorted(queued_operation_ids()) == sorted([lost.pk, resuming.pk])
        lost.refresh_from_db()
        assert lost.status == S.PENDING and lost.queued_at > ago(2)
        assert lost.events.get().reason.startswith("Re-enqueued")
        with django_capture_on_commit_callbacks(execute=True):
            assert sweep_orphans().requeued == []  # just re-enqueued: not again
        recent.refresh_from_db()
        assert recent.events.count() == 0

    def test_type_without_executor_is_left_waiting(self, operation_factory, short_intervals, monkeypatch):
        monkeypatch.delitem(registry._executors, "agent_research")  # an app that registered none
        operation = operation_factory(operation_type="agent_research", status=S.PENDING, queued_at=ago(60))
        assert sweep_orphans().requeued == []
        assert queued_operation_ids() == []
        operation.refresh_from_db()
        assert operation.status == S.PENDING


class TestWorkers:
    def test_silent_workers_become_unavailable(self, worker_factory, short_intervals):
        silent = worker_factory(last_seen_at=ago(10))
        alive = worker_factory(last_seen_at=ago(1))
        assert sweep_orphans().workers_unavailable == [silent.pk]
        alive.refresh_from_db()
        assert alive.status == WorkerStatus.IDLE

    def test_sweep_records_its_time_for_health(self, short_intervals):
        sweep_orphans()
        assert ControlLoop.objects.get(pk=1).last_sweep_at is not None


class TestStartupReconciliation:
    def test_running_worker_operations_await_their_worker(self, running_operation_factory, short_intervals):
        operation = running_operation_factory(last_heartbeat_at=ago(3600))
        report = reconcile_startup()
        assert report.pending_reconciliation == [operation.pk]
        operation.refresh_from_db()
        assert operation.status == S.PENDING_RECONCILIATION
        # the orphan timeout counts from the control loop's start, not from the old heartbeat
        assert sweep_orphans().failed == []
        assert sweep_orphans(now=timezone.now() + timedelta(seconds=7)).failed == [operation.pk]

    def test_live_worker_heartbeat_restores_running(self, running_operation_factory):
        operation = running_operation_factory()
        reconcile_startup()
        worker_heartbeat(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
        operation.refresh_from_db()
        assert operation.status == S.RUNNING

    def test_backend_local_without_checkpoint_fails(self, operation_factory):
        session = operation_factory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING)
        assert reconcile_startup().failed_backend_local == [session.pk]
        session.refresh_from_db()
        assert (session.status, session.error_message) == (S.FAILED, BACKEND_RESTART_WITHOUT_CHECKPOINT)

    def test_backend_local_with_checkpoint_says_resumable(self, operation_factory, checkpoint_dir):
        session = operation_factory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING)
        assert checkpoint_save(
            operation_id=session.pk, checkpoint_type="periodic", state={"phase": "TRAINING"}, artifacts={}
        ).saved
        reconcile_startup()
        session.refresh_from_db()
        assert session.error_message == BACKEND_RESTART_WITH_CHECKPOINT

    def test_second_pass_changes_nothing(self, running_operation_factory, operation_factory):
        running_operation_factory()
        operation_factory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING)
        reconcile_startup()
        versions = dict(Operation.objects.values_list("pk", "version"))
        assert not reconcile_startup().changed
        assert dict(Operation.objects.values_list("pk", "version")) == versions

    @pytest.mark.parametrize("status", [S.PENDING, S.COMPLETED, S.FAILED, S.CANCELLED, S.RESUMING])
    def test_other_statuses_untouched(self, operation_factory, status):
        operation = operation_factory(status=status)
        reconcile_startup()
        operation.refresh_from_db()
        assert operation.status == status and operation.version == 0


def test_an_operation_waiting_long_for_a_worker_keeps_only_its_latest_re_enqueue_event(settings, training_executor,
                                                                                      operation_factory):
    """Re-enqueued at every pass after REQUEUE_AFTER_SECONDS: its history does not grow by an event each time."""
    settings.REQUEUE_AFTER_SECONDS = 60
    waiting = operation_factory(status=S.PENDING, queued_at=timezone.now() - timedelta(minutes=5))
    OperationEvent.objects.create(operation=waiting, from_status="", to_status=S.PENDING, reason="Created",
                                  actor="test")
    start = timezone.now()
    for minute in range(5):
        report = sweep_orphans(now=start + timedelta(minutes=2 * minute))
        assert report.requeued == [waiting.pk]
    reasons = list(waiting.events.order_by("at", "id").values_list("reason", "at"))
    assert [reason for reason, _ in reasons] == ["Created", "Re-enqueued: no worker claimed it for 60s"]
    assert reasons[-1][1] == start + timedelta(minutes=8)


def test_heartbeats_write_no_event(running_operation_factory):
    """A running operation's heartbeat refreshes its row: a run of days writes no history by being alive."""
    running = running_operation_factory()
    before = OperationEvent.objects.filter(operation=running).count()
    for beat in range(20):
        reply = worker_heartbeat(worker_id=running.worker_id,
                                 current_operation=CurrentOperation(operation_id=running.pk, attempt=running.attempt),
                                 progress=Progress(current=beat, total=20, unit="epochs", percent=beat * 5.0))
        assert reply.instruction.action.value == "continue"
    assert OperationEvent.objects.filter(operation=running).count() == before
