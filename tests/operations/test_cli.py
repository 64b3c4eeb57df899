"""`manage.py sweep_orphans` and `reconcile` (docs/restarts-and-crashes.md)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from operations.models import Operation, OperationEvent, OperationStatus, WorkerStatus
from operations.services.reconciliation import BACKEND_RESTART_WITHOUT_CHECKPOINT, worker_unavailable_message
from tests.factories import OperationFactory, RunningOperationFactory, WorkerFactory
from tests.support.commands import command_output as run

S = OperationStatus


def long_ago(seconds: float = 600):
    return timezone.now() - timedelta(seconds=seconds)


# --- sweep_orphans

def test_sweep_orphans_prints_what_it_changed(db, settings):
    settings.WORKER_STALE_SECONDS = 30
    settings.ORPHAN_TIMEOUT_SECONDS = 60
    # silent longer than WORKER_STALE_SECONDS but not ORPHAN_TIMEOUT_SECONDS
    stale = RunningOperationFactory(last_heartbeat_at=long_ago(45), worker__last_seen_at=long_ago(45))
    expired = RunningOperationFactory(
        status=S.PENDING_RECONCILIATION, last_heartbeat_at=long_ago(), orphan_clock_from=long_ago(),
        worker__last_seen_at=long_ago(), worker__status=WorkerStatus.UNAVAILABLE,
    )
    healthy = RunningOperationFactory()
    silent_worker = WorkerFactory(last_seen_at=long_ago())

    output = run("sweep_orphans")

    assert f"pending reconciliation: {stale.operation_id}" in output
    assert f"failed: {expired.operation_id}" in output
    assert f"workers unavailable: {silent_worker.worker_id}" in output
    assert healthy.operation_id not in output
    stale.refresh_from_db()
    expired.refresh_from_db()
    healthy.refresh_from_db()
    assert stale.status == S.PENDING_RECONCILIATION
    assert stale.worker.status == WorkerStatus.UNAVAILABLE
    assert expired.status == S.FAILED
    assert expired.error_message == worker_unavailable_message(expired.worker_id)
    assert healthy.status == S.RUNNING
    silent_worker.refresh_from_db()
    assert silent_worker.status == WorkerStatus.UNAVAILABLE


def test_sweep_orphans_prints_requeued_operations(db, training_executor, settings):
    settings.REQUEUE_AFTER_SECONDS = 120
    lost = OperationFactory(status=S.PENDING, created_at=long_ago(), queued_at=long_ago())

    output = run("sweep_orphans")

    assert f"requeued: {lost.operation_id}" in output
    assert Operation.objects.get(pk=lost.pk).status == S.PENDING


def test_sweep_orphans_with_nothing_to_do_says_so(db):
    healthy = RunningOperationFactory()
    OperationFactory(status=S.COMPLETED, created_at=long_ago())

    output = run("sweep_orphans")

    assert "nothing to change" in output
    assert Operation.objects.get(pk=healthy.pk).status == S.RUNNING


def test_sweep_orphans_on_an_empty_database_says_nothing_to_change(db):
    assert "nothing to change" in run("sweep_orphans")


# --- reconcile

def test_reconcile_prints_what_it_changed(db):
    worker_run = RunningOperationFactory()
    agent_session = RunningOperationFactory(operation_type="agent_research", is_backend_local=True, worker=None)
    pending = OperationFactory(status=S.PENDING)

    output = run("reconcile")

    assert f"pending reconciliation: {worker_run.operation_id}" in output
    assert f"failed backend local: {agent_session.operation_id}" in output
    assert pending.operation_id not in output
    worker_run.refresh_from_db()
    agent_session.refresh_from_db()
    assert worker_run.status == S.PENDING_RECONCILIATION
    assert agent_session.status == S.FAILED
    assert agent_session.error_message == BACKEND_RESTART_WITHOUT_CHECKPOINT
    assert Operation.objects.get(pk=pending.pk).status == S.PENDING
    assert OperationEvent.objects.filter(operation=worker_run, to_status=S.PENDING_RECONCILIATION).count() == 1


def test_reconcile_with_nothing_running_says_so(db):
    OperationFactory(status=S.PENDING)
    OperationFactory(status=S.COMPLETED)

    output = run("reconcile")

    assert "nothing was running" in output
    assert not Operation.objects.filter(status=S.PENDING_RECONCILIATION).exists()


def test_reconcile_a_second_time_changes_nothing(db):
    RunningOperationFactory()
    run("reconcile")

    assert "nothing was running" in run("reconcile")
