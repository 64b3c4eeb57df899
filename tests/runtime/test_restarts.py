"""The control loop's side of the restart policy (runtime/restarts.py): restart_due() waits for a worker, resumes
with the same id, counts, stops a crash loop, gives up without a usable checkpoint, and leaves an operation that
moved meanwhile alone; and the runtime's task naming the cause of a failed run (runtime/tasks.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
from django.apps import apps
from django.db import InterfaceError, OperationalError
from django.db.models import F
from django.utils import timezone

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from operations import registry
from operations.models import Operation, OperationEvent, WorkerStatus, WorkerType
from operations.models import OperationStatus as S
from operations.restarts import EndCause, restart_summary
from operations.services.lifecycle import operation_claim, operation_create, operation_finish
from operations.transitions import CONTROL_LOOP
from runtime import restarts as restarts_module
from runtime.restarts import restart_due
from runtime.resume import operation_resume
from runtime.tasks import RUN_OPERATION_TASK, cause_of, run_operation
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory, WorkerFactory

pytestmark = pytest.mark.django_db

POSITION_KEY = {"training": "epoch", "backtesting": "bar_index", "agent_research": "phase"}


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def app_executors():
    """The executors exactly as the apps register them (a test elsewhere may have put one back without its
    restart policy), and whatever was registered before, after the test."""
    saved = dict(registry._executors)
    for app in ("training", "backtesting", "agents"):
        apps.get_app_config(app).ready()
    yield
    registry._executors.clear()
    registry._executors.update(saved)


@pytest.fixture
def live_worker(db):
    return WorkerFactory(worker_type=WorkerType.QCLUSTER, status=WorkerStatus.IDLE, last_seen_at=timezone.now())


def save_checkpoint(operation_id: str, position, checkpoint_type: str = "failure") -> Checkpoint:
    operation_type = Operation.objects.values_list("operation_type", flat=True).get(pk=operation_id)
    saved = checkpoint_save(
        operation_id=operation_id,
        checkpoint_type=checkpoint_type,
        state={POSITION_KEY[operation_type]: position, "loss": [0.5]},
        artifacts={"model.pt": bytes(range(256)) * 8},
    )
    assert saved.saved, saved.error
    return Checkpoint.objects.get(pk=operation_id)


def ended(
    operation_type: str = "training",
    *,
    cause: str = EndCause.WORKER_LOST,
    position=4,
    checkpoint_type: str = "failure",
    **fields,
) -> Operation:
    """An operation that ended short of completion with an automatic resume due (and a checkpoint at
    `position`, unless None)."""
    fields = {
        "status": S.CANCELLED if cause == EndCause.SHUTDOWN else S.FAILED,
        "max_restarts": 3,
        "restart_due_at": ago(1),
        "error_message": "Worker w became unavailable",
        "version": 5,
        **fields,
    }
    operation = OperationFactory(
        operation_type=operation_type, end_cause=cause, is_backend_local=operation_type == "agent_research", **fields
    )
    if position is not None:
        save_checkpoint(operation.pk, position, checkpoint_type)
    return operation


def last_event(operation_id: str) -> OperationEvent:
    return OperationEvent.objects.filter(operation_id=operation_id).order_by("pk").last()


def unchanged(operation: Operation) -> bool:
    fresh = Operation.objects.get(pk=operation.pk)
    return (fresh.status, fresh.version, fresh.restart_due_at, fresh.restarts) == (
        operation.status,
        operation.version,
        operation.restart_due_at,
        operation.restarts,
    )


# --- waiting for a worker


@pytest.mark.parametrize(
    "worker",
    [
        None,
        {"status": WorkerStatus.IDLE, "last_seen_at": 120},  # stale: silent for longer than WORKER_STALE_SECONDS
        {"status": WorkerStatus.STOPPING, "last_seen_at": 0},  # its cluster is shutting down: takes no new work
        {"status": WorkerStatus.STOPPED, "last_seen_at": 0},
        {"status": WorkerStatus.UNAVAILABLE, "last_seen_at": 0},
        {"status": WorkerStatus.IDLE, "last_seen_at": 0, "worker_type": WorkerType.API},  # not fed by the broker
        {"status": WorkerStatus.IDLE, "last_seen_at": 0, "worker_type": WorkerType.CONTROL_LOOP},
    ],
    ids=["none", "idle-but-stale", "stopping", "stopped", "unavailable", "api-worker", "control-loop"],
)
def test_a_worker_operation_waits_while_no_cluster_worker_is_alive(worker, checkpoint_dir):
    if worker is not None:
        WorkerFactory(
            worker_type=worker.get("worker_type", WorkerType.QCLUSTER),
            status=worker["status"],
            last_seen_at=ago(worker["last_seen_at"]),
        )
    operation = ended()
    report = restart_due()
    assert report.waiting_for_worker == [operation.pk]
    assert report.resumed == report.given_up == [] and not report.changed
    assert unchanged(operation)  # still planned: resumed once a worker is there
    assert queued_operation_ids() == []


@pytest.mark.parametrize("status", [WorkerStatus.IDLE, WorkerStatus.BUSY])
def test_a_worker_operation_is_resumed_once_a_live_cluster_worker_is_there(status, checkpoint_dir):
    operation = ended()
    assert restart_due().waiting_for_worker == [operation.pk]
    WorkerFactory(worker_type=WorkerType.QCLUSTER, status=status, last_seen_at=ago(2))
    report = restart_due()
    assert (report.resumed, report.waiting_for_worker) == ([operation.pk], [])
    assert Operation.objects.get(pk=operation.pk).status == S.RESUMING


def test_a_research_session_does_not_wait_for_a_cluster_worker(checkpoint_dir):
    """Its worker is the control loop itself: resumed at once, and not enqueued (the control loop runs it)."""
    session = ended("agent_research", position="TRAINING")
    report = restart_due()
    assert (report.resumed, report.waiting_for_worker) == ([session.pk], [])
    session.refresh_from_db()
    assert (session.status, session.restarts, session.restart_from) == (S.RESUMING, 1, {"phase": "TRAINING"})
    assert queued_operation_ids() == []


def test_a_research_session_is_not_starved_by_worker_operations_waiting_for_a_worker(checkpoint_dir, monkeypatch):
    monkeypatch.setattr(restarts_module, "DUE_PER_PASS", 2)
    waiting = [ended(restart_due_at=ago(60)), ended(restart_due_at=ago(50))]
    session = ended("agent_research", position="TRAINING", restart_due_at=ago(1))
    report = restart_due()
    assert report.waiting_for_worker == [operation.pk for operation in waiting]
    assert report.resumed == [session.pk]


def test_nothing_is_done_before_it_is_due(live_worker, checkpoint_dir):
    operation = ended(restart_due_at=timezone.now() + timedelta(seconds=5))
    assert not restart_due().changed
    assert unchanged(operation)
    assert restart_due(now=timezone.now() + timedelta(seconds=6)).resumed == [operation.pk]


# --- the resume


def test_resume_keeps_the_id_counts_and_remembers_where_it_started(live_worker, checkpoint_dir):
    operation = ended(error_message="Worker x exited while running it (killed?)")
    count = Operation.objects.count()
    report = restart_due()
    assert report.resumed == [operation.pk] and report.restarted_from_scratch == []
    operation.refresh_from_db()
    assert Operation.objects.count() == count  # the same operation continues, no new one
    assert (operation.status, operation.restarts, operation.restart_from, operation.stalls) == (
        S.RESUMING,
        1,
        {"epoch": 4},
        0,
    )
    assert operation.restart_due_at is None and operation.queued_at is not None
    assert operation.version == 6
    event = last_event(operation.pk)
    assert (event.from_status, event.to_status, event.actor) == (S.FAILED, S.RESUMING, CONTROL_LOOP)
    assert event.reason == "Automatic resume 1/3 after a lost worker, from the failure checkpoint at epoch 4"
    assert queued_operation_ids() == [operation.pk]
    assert restart_summary(operation)["state"] == "none"


def test_a_transient_error_resume_is_counted(live_worker, checkpoint_dir):
    operation = ended(cause=EndCause.TRANSIENT_ERROR, restarts=2, position=9)
    restart_due()
    operation.refresh_from_db()
    assert (operation.status, operation.restarts) == (S.RESUMING, 3)
    assert last_event(operation.pk).reason.startswith("Automatic resume 3/3 after a transient error, from the ")


def test_a_shutdown_resume_is_not_counted(live_worker, checkpoint_dir):
    operation = ended(cause=EndCause.SHUTDOWN, restarts=3, checkpoint_type="shutdown")
    report = restart_due()
    assert report.resumed == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.restarts, operation.restart_from) == (S.RESUMING, 3, {"epoch": 4})
    event = last_event(operation.pk)
    assert (event.from_status, event.to_status) == (S.CANCELLED, S.RESUMING)
    assert event.reason.startswith("Automatic resume (not counted) after a graceful shutdown")
    assert queued_operation_ids() == [operation.pk]


def test_a_broker_refusing_the_message_leaves_it_resuming_for_the_sweep(live_worker, checkpoint_dir, monkeypatch):
    def refuse(operation_id, operation_type):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(registry, "enqueue_operation", refuse)
    operation = ended()
    assert restart_due().resumed == [operation.pk]
    assert Operation.objects.get(pk=operation.pk).status == S.RESUMING


# --- crash loops


@pytest.fixture
def no_backoff(settings):
    settings.RESTART_BACKOFF_SECONDS = 0
    settings.RESTART_BACKOFF_MAX_SECONDS = 0


def fail_again(operation_id: str, worker_id: str, *, progress_to=None) -> None:
    """A worker claims the resume and its run fails with a transient error (after saving a checkpoint further
    on, with `progress_to`)."""
    attempt = operation_claim(operation_id=operation_id, worker_id=worker_id)
    assert attempt is not None
    if progress_to is not None:
        save_checkpoint(operation_id, progress_to)
    assert operation_finish(
        operation_id=operation_id,
        worker_id=worker_id,
        attempt=attempt,
        status=S.FAILED,
        error_message="OperationalError: the database went away",
        cause=EndCause.TRANSIENT_ERROR,
    )


def test_failing_twice_in_a_row_from_the_same_checkpoint_is_a_crash_loop(live_worker, checkpoint_dir, no_backoff):
    operation = ended(max_restarts=5)
    assert restart_due().resumed == [operation.pk]  # 1st: from epoch 4
    fail_again(operation.pk, live_worker.pk)
    assert restart_due().resumed == [operation.pk]  # 2nd: from epoch 4 again, no progress (1)
    operation.refresh_from_db()
    assert (operation.restarts, operation.stalls, operation.restart_from) == (2, 1, {"epoch": 4})
    fail_again(operation.pk, live_worker.pk)

    report = restart_due()  # from epoch 4 a third time: no progress twice in a row
    assert (report.given_up, report.resumed) == ([operation.pk], [])
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.FAILED, EndCause.CRASH_LOOP, None)
    assert operation.error_message.startswith("Crash loop at epoch 4")
    assert "OperationalError: the database went away" in operation.error_message  # the last error too
    assert operation.restarts == 2
    event = last_event(operation.pk)
    assert (event.from_status, event.to_status, event.actor) == (S.FAILED, S.FAILED, CONTROL_LOOP)
    assert event.reason == operation.error_message
    assert restart_summary(operation)["state"] == "crash_loop"
    assert not restart_due().changed  # stopped for good


def test_progress_between_restarts_resets_the_stalls(live_worker, checkpoint_dir, no_backoff):
    operation = ended(max_restarts=5)
    restart_due()
    fail_again(operation.pk, live_worker.pk)
    restart_due()
    operation.refresh_from_db()
    assert operation.stalls == 1
    fail_again(operation.pk, live_worker.pk, progress_to=6)  # it got further this time
    assert restart_due().resumed == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.stalls, operation.restart_from, operation.restarts) == (
        S.RESUMING,
        0,
        {"epoch": 6},
        3,
    )


def test_a_crash_loop_is_judged_on_the_recorded_start(live_worker, checkpoint_dir):
    looping = ended(restart_from={"epoch": 4}, stalls=1)
    progressed = ended(restart_from={"epoch": 4}, stalls=1, position=5)
    report = restart_due()
    assert report.given_up == [looping.pk] and report.resumed == [progressed.pk]
    assert Operation.objects.get(pk=looping.pk).error_message.startswith("Crash loop at epoch 4")
    assert Operation.objects.get(pk=progressed.pk).stalls == 0


def test_a_shutdown_is_never_taken_for_a_crash_loop(live_worker, checkpoint_dir):
    operation = ended(cause=EndCause.SHUTDOWN, restart_from={"epoch": 4}, stalls=1)
    assert restart_due().resumed == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.stalls) == (S.RESUMING, 1)


def test_a_crash_loop_without_a_checkpoint_says_so(live_worker):
    operation = ended("backtesting", position=None, restart_from={}, stalls=1)
    assert restart_due().given_up == [operation.pk]
    operation.refresh_from_db()
    assert operation.end_cause == EndCause.CRASH_LOOP
    assert operation.error_message.startswith("Crash loop at its beginning (no checkpoint)")


# --- no usable checkpoint


def flip_a_byte(checkpoint_dir: Path, checkpoint: Checkpoint) -> None:
    path = checkpoint_dir / checkpoint.artifacts_path / "model.pt"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_gives_the_resume_up(live_worker, checkpoint_dir):
    operation = ended()
    flip_a_byte(checkpoint_dir, Checkpoint.objects.get(pk=operation.pk))
    report = restart_due()
    assert (report.given_up, report.resumed) == ([operation.pk], [])
    operation.refresh_from_db()
    assert (operation.status, operation.restart_due_at, operation.restarts) == (S.FAILED, None, 0)
    assert operation.error_message.startswith("Automatic resume given up: CHECKPOINT_CORRUPTED")
    assert "It had ended: Worker w became unavailable" in operation.error_message
    assert operation.end_cause == EndCause.UNRESUMABLE
    assert last_event(operation.pk).actor == CONTROL_LOOP
    assert queued_operation_ids() == []
    assert not restart_due().changed


def test_a_corrupted_checkpoint_after_a_shutdown_gives_up_too(live_worker, checkpoint_dir):
    operation = ended(cause=EndCause.SHUTDOWN)
    flip_a_byte(checkpoint_dir, Checkpoint.objects.get(pk=operation.pk))
    assert restart_due().given_up == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.restart_due_at) == (S.CANCELLED, None)
    assert "CHECKPOINT_CORRUPTED" in operation.error_message


def test_a_backtest_without_a_checkpoint_restarts_from_the_beginning(live_worker):
    operation = ended("backtesting", position=None)
    report = restart_due()
    assert (report.restarted_from_scratch, report.resumed) == ([operation.pk], [])
    operation.refresh_from_db()
    assert (operation.status, operation.restarts, operation.restart_from) == (S.PENDING, 1, {})
    event = last_event(operation.pk)
    assert (event.from_status, event.to_status, event.actor) == (S.FAILED, S.PENDING, CONTROL_LOOP)
    assert event.reason == "Automatic restart 1/3 after a lost worker, from the beginning: it has no checkpoint"
    assert queued_operation_ids() == [operation.pk]


def test_a_training_without_a_checkpoint_restarts_from_the_beginning_by_default(live_worker, settings):
    settings.TRAINING_RESTART_FROM_SCRATCH = True
    operation = ended("training", position=None)
    assert restart_due().restarted_from_scratch == [operation.pk]
    assert Operation.objects.get(pk=operation.pk).status == S.PENDING


def test_a_training_without_a_checkpoint_is_given_up_when_the_setting_says_so(live_worker, settings):
    settings.TRAINING_RESTART_FROM_SCRATCH = False
    operation = ended("training", position=None)
    assert restart_due().given_up == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.restart_due_at) == (S.FAILED, None)
    assert operation.error_message.startswith(
        "Automatic resume given up: no checkpoint to resume from, and an operation of type training is not "
        "restarted from the beginning"
    )
    assert queued_operation_ids() == []


def test_a_research_session_without_a_checkpoint_is_given_up():
    """It would start new children: never restarted from the beginning."""
    session = ended("agent_research", position=None)
    assert restart_due().given_up == [session.pk]
    session.refresh_from_db()
    assert (session.status, session.restart_due_at) == (S.FAILED, None)
    assert "of type agent_research is not restarted from the beginning" in session.error_message


# --- losing to another change


def test_an_operation_that_moved_between_read_and_write_is_left_alone(live_worker, checkpoint_dir, monkeypatch):
    operation = ended()
    real_validate = restarts_module.checkpoint_validate

    def validate_while_it_moves(checkpoint):
        real_validate(checkpoint)
        Operation.objects.filter(pk=checkpoint.operation_id).update(version=F("version") + 1)

    monkeypatch.setattr(restarts_module, "checkpoint_validate", validate_while_it_moves)
    events = OperationEvent.objects.filter(operation_id=operation.pk).count()
    report = restart_due()
    assert report.as_dict() == {"resumed": [], "restarted_from_scratch": [], "waiting_for_worker": [], "given_up": []}
    fresh = Operation.objects.get(pk=operation.pk)
    assert (fresh.status, fresh.restarts, fresh.restart_from, fresh.version) == (S.FAILED, 0, None, 6)
    assert OperationEvent.objects.filter(operation_id=operation.pk).count() == events
    assert queued_operation_ids() == []


def test_giving_up_on_an_operation_that_moved_meanwhile_changes_nothing(live_worker, checkpoint_dir, monkeypatch):
    operation = ended()
    flip_a_byte(checkpoint_dir, Checkpoint.objects.get(pk=operation.pk))
    real_validate = restarts_module.checkpoint_validate

    def validate_while_it_moves(checkpoint):
        Operation.objects.filter(pk=checkpoint.operation_id).update(version=F("version") + 1)
        real_validate(checkpoint)

    monkeypatch.setattr(restarts_module, "checkpoint_validate", validate_while_it_moves)
    assert restart_due().given_up == []
    fresh = Operation.objects.get(pk=operation.pk)
    assert fresh.error_message == "Worker w became unavailable" and fresh.restart_due_at is not None


def test_a_manual_resume_starts_the_policy_afresh(checkpoint_dir):
    operation = ended(restarts=2, stalls=1, restart_from={"epoch": 3})
    operation_resume(operation_id=operation.pk, actor="user:alice")
    operation.refresh_from_db()
    assert (
        operation.status,
        operation.restarts,
        operation.stalls,
        operation.restart_from,
        operation.restart_due_at,
    ) == (S.RESUMING, 0, 0, None, None)
    assert last_event(operation.pk).actor == "user:alice"


# --- the runtime's task names the cause of a failed run


class RaisingRunner:
    """Fails at once with the error its params name."""

    def __init__(self, context) -> None:
        self.context = context

    def run(self):
        error = self.context.params["error"]
        if error == "operational":
            raise OperationalError("server closed the connection unexpectedly")
        if error == "memory":
            raise MemoryError()
        raise ValueError("learning_rate must be positive")

    def checkpoint_payload(self):
        return None


def test_the_apps_mark_database_and_memory_errors_transient():
    for operation_type in ("training", "backtesting", "agent_research"):
        for error in (OperationalError("gone"), InterfaceError("closed"), MemoryError()):
            assert cause_of(operation_type, error) == EndCause.TRANSIENT_ERROR, (operation_type, error)
        assert cause_of(operation_type, ValueError("bad")) == EndCause.ERROR
        assert cause_of(operation_type, RuntimeError("bug")) == EndCause.ERROR
    assert cause_of("training", torch.OutOfMemoryError("CUDA out of memory")) == EndCause.TRANSIENT_ERROR
    assert cause_of("backtesting", torch.OutOfMemoryError("CUDA out of memory")) == EndCause.ERROR
    assert registry.may_restart_from_scratch("backtesting") and not registry.may_restart_from_scratch("agent_research")


@pytest.fixture
def raising_runner(settings, checkpoint_dir):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    settings.RESTART_BACKOFF_SECONDS = 10
    settings.MAX_RESTARTS = 3
    registry.register_executor(
        "training",
        RUN_OPERATION_TASK,
        runner=f"{__name__}.RaisingRunner",
        transient_errors=registry.DATABASE_AND_MEMORY_ERRORS,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("error", ["operational", "memory"])
def test_a_run_raising_a_transient_error_fails_with_a_resume_planned(raising_runner, error):
    operation_id = operation_create(operation_type="training", params={"error": error}, actor="test", enqueue=False).pk
    assert run_operation(operation_id) == "failed"
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.end_cause) == (S.FAILED, EndCause.TRANSIENT_ERROR)
    assert operation.error_message.startswith(
        "OperationalError: server closed" if error == "operational" else "MemoryError"
    )
    assert operation.restart_due_at - operation.completed_at == timedelta(seconds=10)
    assert restart_summary(operation)["state"] == "planned"


@pytest.mark.django_db(transaction=True)
def test_a_run_raising_any_other_error_fails_for_good(raising_runner):
    operation_id = operation_create(
        operation_type="training", params={"error": "value"}, actor="test", enqueue=False
    ).pk
    assert run_operation(operation_id) == "failed"
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.FAILED, EndCause.ERROR, None)
    assert operation.error_message == "ValueError: learning_rate must be positive"
    assert restart_summary(operation)["state"] == "not_restartable"


@pytest.mark.django_db(transaction=True)
def test_a_runner_that_cannot_start_names_the_cause_too(settings, checkpoint_dir):
    settings.RESTART_BACKOFF_SECONDS = 10
    registry.register_executor(
        "training",
        RUN_OPERATION_TASK,
        runner=f"{__name__}.DatabaseGoneAtStart",
        transient_errors=registry.DATABASE_AND_MEMORY_ERRORS,
    )
    operation_id = operation_create(
        operation_type="training", params={}, actor="test", enqueue=False, max_restarts=2
    ).pk
    assert run_operation(operation_id) == "failed"
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.end_cause, operation.restart_due_at is not None) == (EndCause.TRANSIENT_ERROR, True)


class DatabaseGoneAtStart:
    def __init__(self, context) -> None:
        raise OperationalError("could not connect to server")
