"""The control loop after a database outage (docs/restarts-and-crashes.md): silences it did not watch are not held
against workers or operations; it watches afresh from the database's return, and logs an outage sparingly."""

from __future__ import annotations

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from operations.clock import db_now
from operations.models import ControlLoop, Operation, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.reconciliation import control_loop_regained_database, reconcile_startup, sweep_orphans
from runtime.management.commands import supervise
from tests.conftest import queued_operation_ids

LOST = "server closed the connection unexpectedly"


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def watching_since(moment) -> None:
    ControlLoop.objects.update_or_create(pk=1, defaults={"watching_since": moment})


def watched_from():
    return ControlLoop.objects.get(pk=1).watching_since


# --- the sweep while the control loop watches afresh


@pytest.mark.django_db
class TestStaleRunningAfterAnOutage:
    def test_a_heartbeat_missed_during_the_outage_is_not_held_against_the_run(
        self, running_operation_factory, short_intervals
    ):
        operation = running_operation_factory(last_heartbeat_at=ago(60), worker__last_seen_at=ago(60))
        watching_since(ago(1))

        report = sweep_orphans()

        assert report.pending_reconciliation == [] and report.workers_unavailable == []
        operation.refresh_from_db()
        assert (operation.status, operation.version) == (S.RUNNING, 0)
        assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.BUSY

    def test_a_run_still_silent_a_full_stale_period_after_the_return_is_presumed_orphaned(
        self, running_operation_factory, short_intervals
    ):
        operation = running_operation_factory(last_heartbeat_at=ago(60), worker__last_seen_at=ago(60))
        returned = ago(1)
        watching_since(returned)
        assert sweep_orphans(now=returned + timedelta(seconds=2.9)).pending_reconciliation == []

        report = sweep_orphans(now=returned + timedelta(seconds=3))

        assert report.pending_reconciliation == [operation.pk]
        operation.refresh_from_db()
        assert operation.status == S.PENDING_RECONCILIATION
        assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.UNAVAILABLE

    def test_a_run_silent_since_before_a_long_watch_is_presumed_orphaned(
        self, running_operation_factory, short_intervals
    ):
        operation = running_operation_factory(last_heartbeat_at=ago(60), worker__last_seen_at=ago(60))
        watching_since(ago(4))

        assert sweep_orphans().pending_reconciliation == [operation.pk]

    def test_a_run_that_heart_beats_after_the_return_stays_running(self, running_operation_factory, short_intervals):
        operation = running_operation_factory(last_heartbeat_at=ago(60))
        returned = ago(1)
        watching_since(returned)
        Operation.objects.filter(pk=operation.pk).update(last_heartbeat_at=returned + timedelta(seconds=1))

        assert sweep_orphans(now=returned + timedelta(seconds=3.5)).pending_reconciliation == []
        operation.refresh_from_db()
        assert operation.status == S.RUNNING


@pytest.mark.django_db
class TestOrphanTimeoutAfterAnOutage:
    def test_waiting_reconciliation_is_not_failed_while_the_watch_is_younger_than_the_timeout(
        self, running_operation_factory, short_intervals
    ):
        operation = running_operation_factory(
            status=S.PENDING_RECONCILIATION, last_heartbeat_at=ago(60), orphan_clock_from=ago(60)
        )
        watching_since(ago(4))  # long enough to mark stale runs, not to give up on them

        assert sweep_orphans().failed == []
        operation.refresh_from_db()
        assert (operation.status, operation.presumed_orphan) == (S.PENDING_RECONCILIATION, False)

    def test_waiting_reconciliation_fails_once_the_watch_is_older_than_the_timeout(
        self, running_operation_factory, short_intervals
    ):
        operation = running_operation_factory(
            status=S.PENDING_RECONCILIATION, last_heartbeat_at=ago(60), orphan_clock_from=ago(60)
        )
        returned = ago(4)
        watching_since(returned)
        assert sweep_orphans(now=returned + timedelta(seconds=5.9)).failed == []

        assert sweep_orphans(now=returned + timedelta(seconds=6)).failed == [operation.pk]

        operation.refresh_from_db()
        assert (operation.status, operation.presumed_orphan) == (S.FAILED, True)
        assert operation.error_message == f"Worker {operation.worker_id} became unavailable"

    def test_a_stale_run_goes_through_the_whole_timeout_after_the_return(
        self, running_operation_factory, short_intervals
    ):
        operation = running_operation_factory(last_heartbeat_at=ago(600), worker__last_seen_at=ago(600))
        returned = timezone.now()
        watching_since(returned)

        assert not sweep_orphans(now=returned + timedelta(seconds=1)).changed
        assert sweep_orphans(now=returned + timedelta(seconds=3)).pending_reconciliation == [operation.pk]
        assert sweep_orphans(now=returned + timedelta(seconds=5)).failed == []
        assert sweep_orphans(now=returned + timedelta(seconds=6)).failed == [operation.pk]


@pytest.mark.django_db
class TestWorkersAfterAnOutage:
    def test_a_silent_worker_is_not_marked_unavailable_during_the_fresh_watch(self, worker_factory, short_intervals):
        silent = worker_factory(last_seen_at=ago(60))
        watching_since(ago(1))

        assert sweep_orphans().workers_unavailable == []
        silent.refresh_from_db()
        assert silent.status == WorkerStatus.IDLE

    def test_a_worker_still_silent_after_the_fresh_watch_is_marked_unavailable(self, worker_factory, short_intervals):
        silent = worker_factory(last_seen_at=ago(60))
        back = worker_factory(last_seen_at=ago(60))
        returned = ago(1)
        watching_since(returned)
        Worker.objects.filter(pk=back.pk).update(last_seen_at=returned + timedelta(seconds=0.5))

        report = sweep_orphans(now=returned + timedelta(seconds=3))

        assert report.workers_unavailable == [silent.pk]
        back.refresh_from_db()
        assert back.status == WorkerStatus.IDLE


@pytest.mark.django_db
def test_requeue_goes_on_during_the_fresh_watch(
    operation_factory, training_executor, short_intervals, django_capture_on_commit_callbacks
):
    lost = operation_factory(status=S.PENDING, queued_at=ago(11))
    watching_since(timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        report = sweep_orphans()

    assert report.requeued == [lost.pk]
    assert queued_operation_ids() == [lost.pk]


@pytest.mark.django_db
def test_without_a_record_of_the_watch_the_sweep_judges_every_silence(running_operation_factory, short_intervals):
    operation = running_operation_factory(last_heartbeat_at=ago(4), worker__last_seen_at=ago(4))
    assert not ControlLoop.objects.exists()

    assert sweep_orphans().pending_reconciliation == [operation.pk]


@pytest.mark.django_db
def test_the_sweep_keeps_the_watch_it_found(short_intervals):
    returned = ago(1)
    watching_since(returned)

    sweep_orphans()

    assert watched_from() == returned


# --- when the watch starts


@pytest.mark.django_db
def test_startup_reconciliation_starts_the_watch(worker_factory, short_intervals):
    silent = worker_factory(last_seen_at=ago(60))
    watching_since(ago(3600))
    before = db_now()

    reconcile_startup()

    assert before <= watched_from() <= db_now()
    assert sweep_orphans().workers_unavailable == []
    assert sweep_orphans(now=watched_from() + timedelta(seconds=3)).workers_unavailable == [silent.pk]


@pytest.mark.django_db
def test_startup_reconciliation_at_a_given_moment_watches_from_it(short_intervals):
    moment = ago(30)

    reconcile_startup(now=moment)

    assert watched_from() == moment


@pytest.mark.django_db
def test_regaining_the_database_watches_afresh_from_the_database_clock(short_intervals, caplog):
    watching_since(ago(3600))
    before = db_now()

    returned = control_loop_regained_database()

    assert before <= returned <= db_now()
    assert watched_from() == returned
    assert "The database is back" in caplog.text


@pytest.mark.django_db
def test_regaining_the_database_creates_the_record_if_it_is_missing(short_intervals):
    returned = control_loop_regained_database()

    assert ControlLoop.objects.get(pk=1).watching_since == returned


# --- the supervise command's passes


def control_loop() -> supervise.Command:
    """The command as `handle` leaves it before its first pass (no signal handlers, no loop)."""
    command = supervise.Command(stdout=StringIO(), stderr=StringIO())
    command.prepare()
    return command


def run_pass(command: supervise.Command) -> bool:
    command.next_sweep_at = 0.0  # every pass sweeps
    return command.run_pass()


def failing_once(real):
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OperationalError(LOST)
        return real(*args, **kwargs)

    call.calls = calls
    return call


class DatabaseDown:
    """Every query of this thread's connection fails as if the server were gone, until `back()`."""

    def __init__(self) -> None:
        self.down = False
        connection.execute_wrappers.append(self)

    def __call__(self, execute, sql, params, many, context):
        if self.down:
            raise OperationalError(LOST)
        return execute(sql, params, many, context)

    def back(self) -> None:
        self.down = False

    def remove(self) -> None:
        connection.execute_wrappers.remove(self)


@pytest.fixture
def database():
    outage = DatabaseDown()
    yield outage
    outage.remove()


def output(command: supervise.Command) -> str:
    return command.stdout._out.getvalue()


def supervise_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runtime.supervise" and r.levelno == logging.WARNING]


@pytest.mark.django_db(transaction=True)
def test_a_good_pass_after_a_failed_one_watches_afresh(short_intervals, checkpoint_dir, database, caplog):
    command = control_loop()
    run_pass(command)  # reconciles: the watch starts
    database.down = True

    assert run_pass(command) is False
    database.back()
    assert command.failed_passes == 1
    assert supervise_warnings(caplog) == [f"Control loop pass failed (1 in a row), will retry: {LOST}"]
    watching_since(ago(3600))
    before = db_now()

    run_pass(command)

    assert command.failed_passes == 0
    assert before <= watched_from() <= db_now()
    assert "Database reachable again: watching heartbeats afresh." in output(command)
    assert "Control loop passes succeed again after 1 failed." in output(command)


@pytest.mark.django_db(transaction=True)
def test_a_run_silent_through_the_outage_survives_the_first_sweeps_after_it(
    short_intervals, checkpoint_dir, running_operation_factory, database
):
    command = control_loop()
    run_pass(command)
    watching_since(ago(3600))  # the loop has been watching for an hour when the database goes away
    operation = running_operation_factory(last_heartbeat_at=ago(60), worker__last_seen_at=ago(60))
    database.down = True
    run_pass(command)
    database.back()

    run_pass(command)
    run_pass(command)

    operation.refresh_from_db()
    assert operation.status == S.RUNNING
    assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.BUSY
    assert sweep_orphans(now=watched_from() + timedelta(seconds=3)).pending_reconciliation == [operation.pk]


@pytest.mark.django_db(transaction=True)
def test_without_an_outage_the_pass_keeps_the_watch(short_intervals, checkpoint_dir, running_operation_factory):
    command = control_loop()
    run_pass(command)
    watching_since(ago(3600))
    operation = running_operation_factory(last_heartbeat_at=ago(4), worker__last_seen_at=ago(4))

    run_pass(command)

    assert watched_from() < ago(3000)
    operation.refresh_from_db()
    assert operation.status == S.PENDING_RECONCILIATION
    assert "Database reachable again" not in output(command)


@pytest.mark.django_db(transaction=True)
def test_a_long_outage_is_logged_on_the_first_failed_pass_and_every_twentieth(
    short_intervals, checkpoint_dir, database, caplog
):
    command = control_loop()
    run_pass(command)
    database.down = True

    for _ in range(25):
        assert run_pass(command) is False

    assert command.failed_passes == 25
    warnings = supervise_warnings(caplog)
    assert len(warnings) == 2
    assert "(1 in a row)" in warnings[0] and "(20 in a row)" in warnings[1]
    assert all(LOST in warning for warning in warnings)

    database.back()
    before = db_now()
    run_pass(command)

    assert command.failed_passes == 0
    assert before <= watched_from() <= db_now()
    assert "Database reachable again: watching heartbeats afresh." in output(command)
    assert "Control loop passes succeed again after 25 failed." in output(command)
    assert len(supervise_warnings(caplog)) == 2


@pytest.mark.django_db(transaction=True)
def test_an_outage_before_the_first_reconciliation_ends_with_the_reconciliation(
    short_intervals, checkpoint_dir, database, running_operation_factory
):
    operation = running_operation_factory(last_heartbeat_at=ago(60))
    command = control_loop()
    database.down = True
    run_pass(command)
    run_pass(command)
    assert not command.reconciled

    database.back()
    before = db_now()
    run_pass(command)

    assert command.reconciled
    assert before <= watched_from() <= db_now()
    operation.refresh_from_db()
    assert operation.status == S.PENDING_RECONCILIATION  # awaiting its worker, not failed
    assert "Database reachable again" not in output(command)  # the reconciliation started the watch itself


@pytest.mark.django_db(transaction=True)
def test_a_failing_pass_with_the_database_up_does_not_stop_the_watch(
    short_intervals, checkpoint_dir, running_operation_factory, monkeypatch, caplog
):
    """A query error (a lock timeout, say) is not an outage: silences are still judged, the log rate-limited."""
    command = control_loop()
    run_pass(command)
    watching_since(ago(3600))
    monkeypatch.setattr(supervise.Command, "maintenance_if_due", lambda self: (_ for _ in ()).throw(
        OperationalError("canceling statement due to lock timeout")))
    operation = running_operation_factory(last_heartbeat_at=ago(4), worker__last_seen_at=ago(4))

    for _ in range(25):
        run_pass(command)

    operation.refresh_from_db()
    assert operation.status == S.PENDING_RECONCILIATION
    assert watched_from() < ago(3000)
    assert len(supervise_warnings(caplog)) == 2
    assert "Database reachable again" not in output(command)
