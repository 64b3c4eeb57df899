"""A worker through a database outage (docs/restarts-and-crashes.md), in-process: the outbox on disk, the backoff,
the wait for the database, outcomes reported from the outbox on registration, the outcome's fallback to the
outbox, a run whose registration waits for the database, and the heartbeat's re-registration."""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from datetime import timezone as dt_timezone

import pytest
from django.db import IntegrityError, InterfaceError, OperationalError, connection

from checkpoints.models import Checkpoint
from operations.models import Operation, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_create
from operations.services.workers import CompletedReport, worker_report_outcomes
from runtime import heartbeat as heartbeat_module
from runtime import tasks
from runtime.context import RunContext
from runtime.heartbeat import Heartbeat
from runtime.outbox import outbox_entries, outbox_remove, outbox_write
from runtime.shutdown import shutdown_requested
from runtime.worker import Backoff, GaveUp, register, until_reachable
from tests.conftest import replaced_executor
from tests.runtime.counting import straight_total
from tests.support.processes import run_operation_in_thread

REPORTER = "thishost:resilient:4242"  # a later worker process on the same machine
LOST = "server closed the connection unexpectedly"


@pytest.fixture
def outbox(settings, tmp_path):
    """A worker state folder of the test's own; the outbox folder inside it."""
    settings.WORKER_STATE_DIR = tmp_path / "worker-state"
    return settings.WORKER_STATE_DIR / "outbox"


@pytest.fixture
def fast_retries(settings):
    """Retries capped at 50 ms, so that a test waits out an outage in no time."""
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    return settings


@pytest.fixture
def no_shutdown():
    shutdown_requested.clear()
    yield shutdown_requested
    shutdown_requested.clear()  # a module-level event: never leak it into the next test


def failing(times: int, real=None, error: Exception | None = None):
    """A stand-in that raises `error` (a lost connection) for its first `times` calls, then calls `real`."""
    calls: list[tuple] = []

    def call(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= times:
            raise error or OperationalError(LOST)
        return real(*args, **kwargs) if real else None

    call.calls = calls
    return call


def completed_report(operation: Operation, **changes) -> CompletedReport:
    fields = dict(
        operation_id=operation.operation_id,
        worker_id=operation.worker_id,
        attempt=operation.attempt,
        status=S.COMPLETED,
        result={"total": 42, "losses": [0.5, 0.25]},
        completed_at=datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=dt_timezone.utc),
    )
    fields.update(changes)
    return CompletedReport(**fields)


@contextmanager
def database_down():
    """Every query of this thread's connection fails as if the server were gone."""

    def refuse(execute, sql, params, many, context):
        raise OperationalError(LOST)

    with connection.execute_wrapper(refuse):
        yield


def outbox_files(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


# --- the outbox on disk


def test_an_outcome_written_to_the_outbox_reads_back_whole(outbox, running_operation_factory):
    operation = running_operation_factory()
    report = completed_report(operation, status=S.FAILED, result=None, error_message="RuntimeError: ünïcode boom")

    path = outbox_write(report)

    assert path == outbox / f"{operation.operation_id}.1.json"
    assert outbox_files(outbox) == [path.name]  # the temporary file was renamed, none is left
    [entry] = outbox_entries()
    assert entry.path == path
    assert entry.report == report
    assert entry.report.completed_at == datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=dt_timezone.utc)


def test_a_result_and_the_completion_time_survive_the_round_trip(outbox, running_operation_factory):
    report = completed_report(running_operation_factory())

    outbox_write(report)

    [entry] = outbox_entries()
    assert entry.report.result == {"total": 42, "losses": [0.5, 0.25]}
    assert entry.report.completed_at == report.completed_at
    assert (entry.report.worker_id, entry.report.attempt) == (report.worker_id, 1)


def test_one_file_per_run(outbox, running_operation_factory):
    operation = running_operation_factory()

    outbox_write(completed_report(operation, result={"first": True}))
    outbox_write(completed_report(operation, result={"second": True}))
    outbox_write(completed_report(operation, attempt=2))

    assert outbox_files(outbox) == [f"{operation.operation_id}.1.json", f"{operation.operation_id}.2.json"]
    assert {entry.report.attempt: entry.report.result for entry in outbox_entries()}[1] == {"second": True}


def test_a_write_interrupted_before_the_rename_leaves_the_previous_entry_whole(
    outbox, running_operation_factory, monkeypatch
):
    operation = running_operation_factory()
    outbox_write(completed_report(operation, result={"kept": True}))

    def crash(source, destination):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed before the rename"):
        outbox_write(completed_report(operation, result={"lost": True}))
    monkeypatch.undo()

    [entry] = outbox_entries()  # the half-done temporary file is never read as an entry
    assert entry.report.result == {"kept": True}
    assert json.loads(entry.path.read_text())["result"] == {"kept": True}


def test_removing_entries_deletes_their_files_only(outbox, running_operation_factory):
    first, second = running_operation_factory(), running_operation_factory()
    outbox_write(completed_report(first))
    outbox_write(completed_report(second))

    outbox_remove([entry for entry in outbox_entries() if entry.report.operation_id == first.operation_id])

    assert [entry.report.operation_id for entry in outbox_entries()] == [second.operation_id]
    outbox_remove(outbox_entries())
    assert outbox_files(outbox) == []


def test_an_outbox_that_was_never_created_is_empty(outbox, db):
    assert not outbox.exists()
    assert outbox_entries() == []


def valid_body(operation_id: str) -> dict:
    return {
        "operation_id": operation_id,
        "worker_id": "deadhost:resilient:77",
        "attempt": 1,
        "status": "COMPLETED",
        "result": {"total": 1},
        "error_message": "",
        "completed_at": "2026-03-04T05:06:07.123Z",
    }


INVALID = {
    "not_json": lambda body: "{ not json",
    "not_an_object": lambda body: "[1, 2, 3]",
    "status_not_terminal": lambda body: json.dumps({**body, "status": "RUNNING"}),
    "status_missing": lambda body: json.dumps({k: v for k, v in body.items() if k != "status"}),
    "bad_operation_id": lambda body: json.dumps({**body, "operation_id": "../../etc/passwd"}),
    "bad_worker_id": lambda body: json.dumps({**body, "worker_id": "no colons here"}),
    "null_worker_id": lambda body: json.dumps({**body, "worker_id": None}),
    "bad_completed_at": lambda body: json.dumps({**body, "completed_at": "yesterday"}),
}


@pytest.mark.parametrize("content", INVALID.values(), ids=INVALID.keys())
def test_an_unreadable_file_is_skipped_logged_by_name_and_left_in_place(
    outbox, running_operation_factory, caplog, content
):
    good = running_operation_factory()
    outbox_write(completed_report(good))
    bad = outbox / "op_training_20260101_000000_0badf11e.1.json"
    bad.write_text(content(valid_body("op_training_20260101_000000_0badf11e")))

    entries = outbox_entries()

    assert [entry.report.operation_id for entry in entries] == [good.operation_id]
    assert bad.exists()
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and str(bad) in errors[0].getMessage()


def test_registration_reports_the_readable_entries_and_leaves_the_unreadable_one(
    outbox, running_operation_factory, caplog
):
    good = running_operation_factory()
    outbox_write(completed_report(good))
    bad = outbox / "broken.json"
    bad.write_text("{")

    reply = register(REPORTER)

    assert reply.completed == {good.operation_id: True}
    assert outbox_files(outbox) == ["broken.json"]
    assert str(bad) in caplog.text


# --- the backoff and the wait for the database


def test_backoff_doubles_from_half_a_second_up_to_the_heartbeat_interval(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 5
    backoff = Backoff()

    assert [backoff.failed() for _ in range(6)] == [0.5, 1, 2, 4, 5, 5]
    assert backoff.succeeded() == 6
    assert backoff.failed() == 0.5  # a new outage starts from the beginning


def test_backoff_stays_at_the_interval_however_long_the_outage(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 10
    backoff = Backoff()

    waits = [backoff.failed() for _ in range(200)]

    assert max(waits) == 10 and waits[-1] == 10
    assert backoff.succeeded() == 200


def test_backoff_under_a_short_interval_never_waits_longer_than_it(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.3

    backoff = Backoff()

    assert [backoff.failed() for _ in range(3)] == [0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    "error", [OperationalError(LOST), InterfaceError("connection already closed")], ids=["operational", "interface"]
)
def test_until_reachable_retries_a_lost_database_then_returns_the_answer(fast_retries, error):
    call = failing(3, real=lambda: "answer", error=error)

    assert until_reachable(call, what="test call", stop=threading.Event()) == "answer"
    assert len(call.calls) == 4


def test_until_reachable_does_not_retry_an_error_that_is_not_an_outage(fast_retries):
    call = failing(1, error=IntegrityError("duplicate key"))

    with pytest.raises(IntegrityError):
        until_reachable(call, what="test call", stop=threading.Event())
    assert len(call.calls) == 1


def test_until_reachable_gives_up_when_the_worker_is_stopping(fast_retries):
    stop = threading.Event()
    stop.set()
    call = failing(1000)

    with pytest.raises(GaveUp) as raised:
        until_reachable(call, what="test call", stop=stop)

    assert len(call.calls) == 1
    assert isinstance(raised.value.__cause__, OperationalError)


def test_a_stop_request_interrupts_the_wait_at_once(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 30  # waits of 0.5 s, 1 s, 2 s...
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()

    with pytest.raises(GaveUp):
        until_reachable(failing(1000), what="test call", stop=stop)

    assert time.monotonic() - started < 1.0  # not the end of the backoff's wait


def test_until_reachable_logs_the_first_failure_and_every_tenth(settings, caplog):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.01
    until_reachable(failing(25, real=lambda: None), what="Counting", stop=threading.Event())

    failures = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert [message.split("(")[1].split(")")[0] for message in failures] == ["failure 1", "failure 10", "failure 20"]
    assert "Counting: the database is back after 25 failed tries" in caplog.text


# --- reporting the outbox: rule 1, fenced on the worker process that ran it


@pytest.mark.django_db
def test_registration_reports_entries_of_other_worker_processes_and_empties_the_outbox(
    outbox, running_operation_factory
):
    finished = running_operation_factory()
    taken_over = running_operation_factory()
    later_run = running_operation_factory(attempt=2)
    outbox_write(completed_report(finished))
    outbox_write(completed_report(taken_over, worker_id="otherhost:resilient:9"))  # not the run's worker
    outbox_write(completed_report(later_run, attempt=1))  # an earlier run's outcome
    versions = dict(Operation.objects.values_list("pk", "version"))

    reply = register(REPORTER)

    assert reply.completed == {finished.pk: True, taken_over.pk: False, later_run.pk: False}
    finished.refresh_from_db()
    assert finished.status == S.COMPLETED
    assert finished.result == {"total": 42, "losses": [0.5, 0.25]}
    assert finished.completed_at == datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=dt_timezone.utc)
    assert finished.worker_id != REPORTER  # recorded for the process that ran it
    assert finished.events.first().actor.endswith(finished.worker_id)
    for unchanged in (taken_over, later_run):
        unchanged.refresh_from_db()
        assert unchanged.status == S.RUNNING and unchanged.result is None
        assert unchanged.version == versions[unchanged.pk]
    assert outbox_files(outbox) == []
    assert Worker.objects.get(pk=REPORTER).status == WorkerStatus.IDLE


@pytest.mark.django_db
def test_registration_with_an_empty_outbox_reports_nothing(outbox):
    reply = register(REPORTER)

    assert reply.completed == {}
    assert Worker.objects.filter(pk=REPORTER).exists()


@pytest.mark.django_db
def test_a_report_is_idempotent(running_operation_factory):
    operation = running_operation_factory()
    report = completed_report(operation)

    assert worker_report_outcomes([report], reporter=REPORTER) == {operation.pk: True}
    operation.refresh_from_db()
    version, events = operation.version, operation.events.count()

    assert worker_report_outcomes([report], reporter=REPORTER) == {operation.pk: False}
    assert worker_report_outcomes([completed_report(operation, status=S.FAILED)], reporter=REPORTER) == {
        operation.pk: False
    }
    operation.refresh_from_db()
    assert (operation.status, operation.version, operation.events.count()) == (S.COMPLETED, version, events)
    assert operation.result == report.result


@pytest.mark.django_db
def test_a_report_without_a_worker_is_fenced_on_the_reporter(running_operation_factory):
    mine, theirs = running_operation_factory(), running_operation_factory()
    reports = [completed_report(operation, worker_id=None) for operation in (mine, theirs)]

    assert worker_report_outcomes(reports, reporter=mine.worker_id) == {mine.pk: True, theirs.pk: False}
    with pytest.raises(ValueError, match="names no worker"):
        worker_report_outcomes([completed_report(theirs, worker_id=None)])


@pytest.mark.django_db
def test_an_outcome_reported_after_the_sweep_gave_up_on_the_worker_still_lands(outbox, running_operation_factory):
    operation = running_operation_factory(status=S.FAILED, presumed_orphan=True)
    outbox_write(completed_report(operation))

    assert register(REPORTER).completed == {operation.pk: True}
    operation.refresh_from_db()
    assert (operation.status, operation.presumed_orphan, operation.error_message) == (S.COMPLETED, False, "")


# --- the outcome of a run when the database is away


@pytest.mark.django_db(transaction=True)
def test_an_outcome_that_cannot_be_written_goes_through_the_outbox(
    outbox, fast_retries, no_shutdown, running_operation_factory, monkeypatch
):
    operation = running_operation_factory()
    finish_directly = failing(2, real=tasks.operation_finish)
    monkeypatch.setattr(tasks, "operation_finish", finish_directly)
    finish = tasks._Finisher(operation.pk, operation.worker_id, operation.attempt)

    assert finish.done(S.COMPLETED, result={"total": 7}, reason="Completed") is True

    assert len(finish_directly.calls) == 2  # then it was the registration that recorded it
    operation.refresh_from_db()
    assert (operation.status, operation.result, operation.worker_id) == (S.COMPLETED, {"total": 7}, finish.worker_id)
    assert operation.events.first().reason == "Reported completed by its worker after reconnecting"
    assert outbox_files(outbox) == []
    assert finish.outcome("completed") == "completed"


@pytest.mark.django_db(transaction=True)
def test_an_outcome_through_the_outbox_that_is_no_longer_the_runs_is_dropped(
    outbox, fast_retries, no_shutdown, running_operation_factory, worker_factory, monkeypatch
):
    operation = running_operation_factory()
    finish = tasks._Finisher(operation.pk, operation.worker_id, operation.attempt)
    # While the database was away the sweep gave up on the run and another worker resumed it.
    Operation.objects.filter(pk=operation.pk).update(worker=worker_factory(), attempt=2)
    monkeypatch.setattr(tasks, "operation_finish", failing(2))

    assert finish.done(S.COMPLETED, result={"total": 7}) is False

    operation.refresh_from_db()
    assert (operation.status, operation.attempt, operation.result) == (S.RUNNING, 2, None)
    assert outbox_files(outbox) == []
    assert finish.outcome("completed") == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_worker_stopping_during_the_outage_leaves_its_outcome_in_the_outbox(
    outbox, fast_retries, no_shutdown, running_operation_factory, monkeypatch
):
    operation = running_operation_factory()
    monkeypatch.setattr(tasks, "operation_finish", failing(1000))
    registration = failing(1000)
    monkeypatch.setattr(tasks, "register", registration)
    no_shutdown.set()
    finish = tasks._Finisher(operation.pk, operation.worker_id, operation.attempt)

    assert finish.done(S.COMPLETED, result={"total": 7}, reason="Completed") is False

    assert finish.outcome("completed") == "completed (left in the outbox)"
    assert len(registration.calls) == 1
    [entry] = outbox_entries()
    assert entry.report.operation_id == operation.pk
    assert (entry.report.worker_id, entry.report.attempt) == (operation.worker_id, operation.attempt)
    assert (entry.report.status, entry.report.result) == (S.COMPLETED, {"total": 7})
    operation.refresh_from_db()
    assert operation.status == S.RUNNING

    # The next worker process started on this machine, once the database is back, reports it.
    monkeypatch.undo()
    no_shutdown.clear()
    assert register(REPORTER).completed == {operation.pk: True}
    operation.refresh_from_db()
    assert (operation.status, operation.result) == (S.COMPLETED, {"total": 7})
    assert outbox_files(outbox) == []


# --- a whole run


@pytest.fixture
def counting(fast_retries, checkpoint_dir, outbox, no_shutdown):
    with replaced_executor("training", runner="tests.runtime.counting.CountingRunner"):
        yield


def create(**params) -> str:
    return operation_create(operation_type="training", params=params, actor="test", enqueue=False).pk


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_registration_waits_for_the_database_completes(
    counting, outbox, running_operation_factory, monkeypatch
):
    operation_id = create(steps=12, checkpoint_every=5)
    left_by_a_dead_process = running_operation_factory()
    outbox_write(completed_report(left_by_a_dead_process))
    registration = failing(2, real=tasks.register)
    monkeypatch.setattr(tasks, "register", registration)

    thread, outcome = run_operation_in_thread(operation_id)
    thread.join(timeout=30)

    assert outcome == ["completed"]
    assert len(registration.calls) == 3
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.COMPLETED
    assert operation.result == {"steps": 12, "total": straight_total(12)}
    assert Worker.objects.filter(pk=operation.worker_id).exists()
    # Its registration reported what the machine's outbox held.
    left_by_a_dead_process.refresh_from_db()
    assert left_by_a_dead_process.status == S.COMPLETED
    assert outbox_files(outbox) == []


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_outcome_cannot_be_written_completes_through_the_outbox(counting, outbox, monkeypatch):
    operation_id = create(steps=12, checkpoint_every=5)
    monkeypatch.setattr(tasks, "operation_finish", failing(2, real=tasks.operation_finish))

    thread, outcome = run_operation_in_thread(operation_id)
    thread.join(timeout=30)

    assert outcome == ["completed"]
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.result) == (S.COMPLETED, {"steps": 12, "total": straight_total(12)})
    assert not Checkpoint.objects.filter(pk=operation_id).exists()
    assert outbox_files(outbox) == []


# --- the heartbeat through an outage


@pytest.mark.django_db(transaction=True)
def test_heartbeat_backs_off_then_re_registers_and_reports_the_outbox(
    outbox, settings, running_operation_factory, monkeypatch
):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.8
    operation = running_operation_factory()
    left_by_a_dead_process = running_operation_factory()
    outbox_write(completed_report(left_by_a_dead_process))
    Worker.objects.filter(pk=operation.worker_id).update(status=WorkerStatus.UNAVAILABLE)
    heartbeat_before = operation.last_heartbeat_at
    context = RunContext(
        operation_id=operation.pk, operation_type="training", params={}, worker_id=operation.worker_id,
        attempt=operation.attempt, resume_from=None,
    )
    context.report_progress(current=3, total=10, unit="steps")
    registrations = failing(0, real=heartbeat_module.register)
    monkeypatch.setattr(heartbeat_module, "register", registrations)
    heartbeat = Heartbeat(context)  # never started: each beat is called here

    with database_down():
        assert [heartbeat.beat() for _ in range(3)] == [0.5, 0.8, 0.8]
    assert len(registrations.calls) == 2  # the beats after a failure try to re-register first
    assert len(outbox_entries()) == 1  # nothing reached the database yet

    assert heartbeat.beat() == 0.8

    worker = Worker.objects.get(pk=operation.worker_id)
    assert (worker.status, worker.current_operation_id) == (WorkerStatus.BUSY, operation.pk)
    operation.refresh_from_db()
    assert operation.status == S.RUNNING
    assert operation.last_heartbeat_at > heartbeat_before
    assert (operation.progress_current, operation.progress_total) == (3, 10)
    left_by_a_dead_process.refresh_from_db()
    assert left_by_a_dead_process.status == S.COMPLETED
    assert outbox_files(outbox) == []
    assert not context.abandoned.is_set()
    assert heartbeat.backoff.failures == 0


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_that_never_failed_does_not_re_register(outbox, settings, running_operation_factory, monkeypatch):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.8
    operation = running_operation_factory()
    registrations = failing(0)
    monkeypatch.setattr(heartbeat_module, "register", registrations)
    context = RunContext(
        operation_id=operation.pk, operation_type="training", params={}, worker_id=operation.worker_id,
        attempt=operation.attempt, resume_from=None,
    )

    assert Heartbeat(context).beat() == 0.8
    assert registrations.calls == []
