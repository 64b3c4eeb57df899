"""The restart policy (operations/restarts.py, docs/self-healing.md): what an ending run plans, who plans it (a
worker's outcome, the sweep, startup reconciliation), what drops a plan, cancelling an operation whose automatic
resume is planned (and racing the control loop for it), the default max_restarts, and what the policy says of an
operation."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from checkpoints.services import checkpoint_save
from operations import registry
from operations.api.shared import OperationRequestSerializer, operation_start
from operations.exceptions import OperationNotCancellable
from operations.models import Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.restarts import (
    COUNTED_CAUSES,
    RESTARTABLE_CAUSES,
    EndCause,
    backoff_seconds,
    planned,
    planned_in_sql,
    restart_summary,
)
from operations.services.lifecycle import CancelOutcome, operation_cancel, operation_create, operation_finish
from operations.services.reconciliation import (
    BACKEND_RESTART_WITHOUT_CHECKPOINT,
    reconcile_startup,
    sweep_orphans,
)
from operations.services.workers import CurrentOperation, cluster_beat, worker_heartbeat
from operations.transitions import CONTROL_LOOP, TransitionNotAllowed
from runtime.restarts import restart_due
from runtime.resume import operation_resume
from tests.factories import OperationFactory, RunningOperationFactory, WorkerFactory
from tests.support.race import race

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def backoff(settings):
    settings.RESTART_BACKOFF_SECONDS = 10
    settings.RESTART_BACKOFF_MAX_SECONDS = 600
    return settings


def save_checkpoint(operation_id: str, epoch: int = 4, checkpoint_type: str = "failure") -> None:
    saved = checkpoint_save(
        operation_id=operation_id,
        checkpoint_type=checkpoint_type,
        state={"epoch": epoch, "train_loss": [0.9]},
        artifacts={"model.pt": b"weights" * 50},
    )
    assert saved.saved, saved.error


def events_of(operation_id: str) -> list[tuple[str, str, str]]:
    return list(
        OperationEvent.objects.filter(operation_id=operation_id)
        .order_by("pk")
        .values_list("from_status", "to_status", "actor")
    )


# --- planned(): each cause × max_restarts 0 / restarts left / exhausted


ALL_CAUSES = list(EndCause)


@pytest.mark.parametrize("cause", ALL_CAUSES, ids=[cause.value for cause in ALL_CAUSES])
def test_with_max_restarts_0_nothing_is_ever_planned(cause, backoff):
    for restarts in (0, 1, 5):
        assert planned(cause, restarts=restarts, max_restarts=0, now=NOW) == {
            "end_cause": cause,
            "restart_due_at": None,
        }


@pytest.mark.parametrize("cause", COUNTED_CAUSES, ids=[cause.value for cause in COUNTED_CAUSES])
def test_a_counted_cause_with_restarts_left_is_planned_after_the_backoff(cause, backoff):
    assert planned(cause, restarts=0, max_restarts=3, now=NOW) == {
        "end_cause": cause,
        "restart_due_at": NOW + timedelta(seconds=10),
    }
    assert planned(cause, restarts=2, max_restarts=3, now=NOW) == {
        "end_cause": cause,
        "restart_due_at": NOW + timedelta(seconds=40),
    }


@pytest.mark.parametrize("cause", COUNTED_CAUSES, ids=[cause.value for cause in COUNTED_CAUSES])
def test_a_counted_cause_with_every_restart_used_is_not_planned(cause, backoff):
    assert planned(cause, restarts=3, max_restarts=3, now=NOW) == {"end_cause": cause, "restart_due_at": None}
    assert planned(cause, restarts=4, max_restarts=3, now=NOW)["restart_due_at"] is None


def test_a_shutdown_is_not_counted_and_is_due_at_once(backoff):
    for restarts in (0, 2, 3, 10):  # even with every restart used: a deploy is not a failure
        assert planned(EndCause.SHUTDOWN, restarts=restarts, max_restarts=3, now=NOW) == {
            "end_cause": EndCause.SHUTDOWN,
            "restart_due_at": NOW,
        }


@pytest.mark.parametrize(
    "cause", [EndCause.ERROR, EndCause.CANCELLED, EndCause.CRASH_LOOP], ids=["error", "cancelled", "crash_loop"]
)
def test_an_error_a_cancel_or_a_crash_loop_is_never_planned(cause, backoff):
    for restarts, max_restarts in ((0, 3), (2, 3), (3, 3), (0, 100)):
        assert planned(cause, restarts=restarts, max_restarts=max_restarts, now=NOW) == {
            "end_cause": cause,
            "restart_due_at": None,
        }


def test_causes_are_classified_as_documented():
    assert set(RESTARTABLE_CAUSES) == {EndCause.WORKER_LOST, EndCause.TRANSIENT_ERROR, EndCause.SHUTDOWN}
    assert set(COUNTED_CAUSES) == {EndCause.WORKER_LOST, EndCause.TRANSIENT_ERROR}


# --- backoff


def test_backoff_doubles_with_each_restart_made_up_to_the_cap(backoff):
    assert [backoff_seconds(n) for n in range(8)] == [10, 20, 40, 80, 160, 320, 600, 600]


def test_backoff_follows_the_settings(settings):
    settings.RESTART_BACKOFF_SECONDS = 3
    settings.RESTART_BACKOFF_MAX_SECONDS = 50
    assert [backoff_seconds(n) for n in range(6)] == [3, 6, 12, 24, 48, 50]


def test_backoff_of_a_huge_count_is_the_cap_without_overflow(backoff):
    assert backoff_seconds(10_000) == 600
    assert planned(EndCause.WORKER_LOST, restarts=10_000, max_restarts=100_000, now=NOW)["restart_due_at"] == (
        NOW + timedelta(seconds=600)
    )


# --- planned() in SQL, for an UPDATE that ends many runs at once (the sweep)

@pytest.mark.parametrize("cause", list(EndCause))
@pytest.mark.parametrize("base, cap", [(10, 600), (3, 50), (0, 0), (1, 2 ** 40)])
def test_planned_in_sql_gives_each_row_what_planned_gives_it(cause, base, cap, settings):
    """Every restart count up to past the cap (and a huge one), with and without restarts left, with and without a
    cancel requested: the UPDATE writes what planned() says, row by row."""
    settings.RESTART_BACKOFF_SECONDS, settings.RESTART_BACKOFF_MAX_SECONDS = base, cap
    counts = [(restarts, max_restarts) for restarts in [*range(0, 12), 35, 10_000]
              for max_restarts in (0, restarts, restarts + 1, 100_000)]
    rows = {}
    for restarts, max_restarts in counts:
        for cancel in (None, NOW - timedelta(seconds=5)):
            operation = OperationFactory(status=S.FAILED, restarts=restarts, max_restarts=max_restarts,
                                         cancel_requested_at=cancel)
            rows[operation.pk] = planned(cause, restarts=restarts, max_restarts=max_restarts, now=NOW,
                                         cancel_requested_at=cancel)
    Operation.objects.filter(pk__in=rows).update(**planned_in_sql(cause, now=NOW))
    written = {pk: {"end_cause": end_cause, "restart_due_at": due} for pk, end_cause, due in
               Operation.objects.filter(pk__in=rows).values_list("pk", "end_cause", "restart_due_at")}
    assert written == rows


# --- operation_finish: a worker's outcome names its cause


def running(**fields) -> Operation:
    return RunningOperationFactory(max_restarts=3, **fields)


def finish(operation: Operation, status: str, **kwargs) -> bool:
    return operation_finish(
        operation_id=operation.pk, worker_id=operation.worker_id, attempt=operation.attempt, status=status, **kwargs
    )


@pytest.mark.parametrize(
    ("status", "cause", "backoff_for", "planned_at_all"),
    [
        (S.FAILED, EndCause.TRANSIENT_ERROR, 1, True),
        (S.FAILED, EndCause.ERROR, None, False),
        (S.CANCELLED, EndCause.SHUTDOWN, 0, True),
        (S.CANCELLED, EndCause.CANCELLED, None, False),
    ],
    ids=["transient_error", "error", "shutdown", "cancelled"],
)
def test_finish_writes_the_cause_and_the_plan(backoff, status, cause, backoff_for, planned_at_all):
    operation = running(restarts=1)
    assert finish(operation, status, error_message="it ended", cause=cause)
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause) == (status, cause)
    if not planned_at_all:
        assert operation.restart_due_at is None
    elif cause == EndCause.SHUTDOWN:
        assert operation.restart_due_at == operation.completed_at  # due now
    else:
        assert operation.restart_due_at - operation.completed_at == timedelta(seconds=20)  # the 2nd: doubled
    assert operation.restarts == 1  # planning counts nothing: the resume does
    assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.IDLE


def test_finish_without_a_cause_is_an_error_or_a_users_cancel(backoff):
    failed, cancelled = running(), running()
    finish(failed, S.FAILED, error_message="ValueError: bad")
    finish(cancelled, S.CANCELLED)
    failed.refresh_from_db()
    cancelled.refresh_from_db()
    assert (failed.end_cause, failed.restart_due_at) == (EndCause.ERROR, None)
    assert (cancelled.end_cause, cancelled.restart_due_at) == (EndCause.CANCELLED, None)


def test_transient_error_with_every_restart_used_plans_nothing(backoff):
    operation = running(restarts=3)
    finish(operation, S.FAILED, cause=EndCause.TRANSIENT_ERROR)
    operation.refresh_from_db()
    assert (operation.end_cause, operation.restart_due_at) == (EndCause.TRANSIENT_ERROR, None)


def test_completed_clears_the_cause_and_the_plan_the_sweep_left(backoff, short_intervals):
    """The sweep presumed its worker dead and planned a resume; the worker reports it completed after all."""
    operation = running(status=S.PENDING_RECONCILIATION, last_heartbeat_at=ago(7), orphan_clock_from=ago(7))
    sweep_orphans()
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause) == (S.FAILED, EndCause.WORKER_LOST)
    assert operation.restart_due_at is not None

    assert finish(operation, S.COMPLETED, result={"accuracy": 0.6})
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.COMPLETED, "", None)
    assert restart_due(now=timezone.now() + timedelta(hours=1)).as_dict() == {
        "resumed": [],
        "restarted_from_scratch": [],
        "waiting_for_worker": [],
        "given_up": [],
    }


def test_a_fenced_out_report_plans_nothing(backoff):
    operation = running()
    assert not operation_finish(
        operation_id=operation.pk,
        worker_id=operation.worker_id,
        attempt=7,
        status=S.FAILED,
        cause=EndCause.TRANSIENT_ERROR,
    )
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.RUNNING, "", None)


# --- the sweep and startup reconciliation plan a worker_lost resume


def expired_reconciliation(**fields) -> Operation:
    return RunningOperationFactory(
        status=S.PENDING_RECONCILIATION, last_heartbeat_at=ago(7), orphan_clock_from=ago(7), **fields
    )


@pytest.mark.parametrize(("restarts", "wait"), [(0, 10), (1, 20), (2, 40)])
def test_sweep_failing_an_expired_reconciliation_plans_a_resume_with_the_backoff(
    backoff, short_intervals, restarts, wait
):
    operation = expired_reconciliation(max_restarts=3, restarts=restarts)
    now = timezone.now()
    assert sweep_orphans(now=now).failed == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.presumed_orphan, operation.end_cause) == (S.FAILED, True, EndCause.WORKER_LOST)
    assert operation.restart_due_at == now + timedelta(seconds=wait)
    assert operation.restarts == restarts


@pytest.mark.parametrize(
    ("restarts", "max_restarts"), [(0, 0), (3, 3), (5, 3)], ids=["max_restarts-0", "used-up", "over"]
)
def test_sweep_plans_nothing_when_restarts_are_off_or_used_up(backoff, short_intervals, restarts, max_restarts):
    operation = expired_reconciliation(max_restarts=max_restarts, restarts=restarts)
    assert sweep_orphans().failed == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.FAILED, EndCause.WORKER_LOST, None)


def test_startup_reconciliation_of_a_running_session_plans_a_resume(backoff):
    session = OperationFactory(
        operation_type="agent_research", is_backend_local=True, status=S.RUNNING, max_restarts=2, restarts=1
    )
    off = OperationFactory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING, max_restarts=0)
    worker_run = running()
    now = timezone.now()
    report = reconcile_startup(now=now)
    assert sorted(report.failed_backend_local) == sorted([session.pk, off.pk])
    session.refresh_from_db()
    assert (session.status, session.error_message, session.end_cause) == (
        S.FAILED,
        BACKEND_RESTART_WITHOUT_CHECKPOINT,
        EndCause.WORKER_LOST,
    )
    assert session.restart_due_at == now + timedelta(seconds=20)
    off.refresh_from_db()
    assert (off.status, off.end_cause, off.restart_due_at) == (S.FAILED, EndCause.WORKER_LOST, None)
    worker_run.refresh_from_db()  # a worker's run waits for its heartbeat instead: nothing planned
    assert (worker_run.status, worker_run.restart_due_at) == (S.PENDING_RECONCILIATION, None)


# --- any other transition drops a planned restart


def presumed_orphan_with_plan() -> Operation:
    operation = expired_reconciliation(max_restarts=3)
    sweep_orphans()
    operation.refresh_from_db()
    assert operation.status == S.FAILED and operation.restart_due_at is not None
    return operation


def test_the_worker_coming_back_drops_the_plan(backoff, short_intervals):
    operation = presumed_orphan_with_plan()
    reply = worker_heartbeat(worker_id=operation.worker_id, current_operation=CurrentOperation(operation.pk, 1))
    assert reply.action.value == "continue"
    operation.refresh_from_db()
    assert (operation.status, operation.restart_due_at, operation.presumed_orphan) == (S.RUNNING, None, False)
    assert restart_summary(operation)["state"] == "none"


def test_a_manual_resume_drops_the_plan(backoff, short_intervals, checkpoint_dir):
    operation = presumed_orphan_with_plan()
    save_checkpoint(operation.pk)
    operation_resume(operation_id=operation.pk, actor="user:someone")
    operation.refresh_from_db()
    assert (operation.status, operation.restart_due_at) == (S.RESUMING, None)


def test_a_requested_cancel_of_a_running_op_keeps_no_plan(backoff):
    """Even a change to the same status (a cancel request) leaves no plan behind (one set by hand here)."""
    operation = running()
    Operation.objects.filter(pk=operation.pk).update(restart_due_at=timezone.now())
    assert operation_cancel(operation_id=operation.pk, actor="user:x") is CancelOutcome.REQUESTED
    operation.refresh_from_db()
    assert operation.restart_due_at is None


def test_the_control_loop_may_not_move_an_ended_operation_without_a_plan():
    operation = OperationFactory(status=S.FAILED, end_cause=EndCause.ERROR, max_restarts=3)
    for to_status in (S.RESUMING, S.PENDING, S.FAILED):
        assert not Operation.objects.transition(
            operation.pk, from_statuses=[S.FAILED], to_status=to_status, actor=CONTROL_LOOP, reason="no plan"
        )
    operation.refresh_from_db()
    assert (operation.status, operation.version) == (S.FAILED, 0)
    with pytest.raises(TransitionNotAllowed):  # a user may not restart from the beginning, planned or not
        Operation.objects.transition(operation.pk, from_statuses=[S.FAILED], to_status=S.PENDING, actor="user:x")


# --- operation_cancel of an operation whose automatic resume is planned


def test_cancelling_a_failed_op_with_a_plan_calls_it_off(backoff, short_intervals):
    operation = presumed_orphan_with_plan()
    assert operation_cancel(operation_id=operation.pk, actor="user:alice") is CancelOutcome.CANCELLED
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.CANCELLED, EndCause.CANCELLED, None)
    event = operation.events.order_by("pk").last()
    assert (event.from_status, event.to_status, event.actor) == (S.FAILED, S.CANCELLED, "user:alice")
    assert "called off" in event.reason
    assert restart_summary(operation)["state"] == "not_restartable"
    with pytest.raises(OperationNotCancellable):  # nothing planned any more: a second cancel is refused
        operation_cancel(operation_id=operation.pk, actor="user:alice")


def test_cancelling_a_shut_down_op_with_a_plan_calls_it_off(backoff):
    operation = running()
    finish(operation, S.CANCELLED, cause=EndCause.SHUTDOWN)
    assert operation_cancel(operation_id=operation.pk, actor="user:bob") is CancelOutcome.CANCELLED
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.CANCELLED, EndCause.CANCELLED, None)
    assert events_of(operation.pk)[-1] == (S.CANCELLED, S.CANCELLED, "user:bob")


@pytest.mark.parametrize("status", [S.FAILED, S.CANCELLED, S.COMPLETED])
def test_cancelling_an_ended_op_without_a_plan_is_still_refused(status):
    operation = OperationFactory(status=status, max_restarts=3, end_cause="" if status == S.COMPLETED else "error")
    before = Operation.objects.filter(pk=operation.pk).values().get()
    with pytest.raises(OperationNotCancellable):
        operation_cancel(operation_id=operation.pk, actor="user:x")
    assert Operation.objects.filter(pk=operation.pk).values().get() == before


# --- the race: users cancelling while the control loop resumes the same due operation


@pytest.mark.django_db(transaction=True)
def test_cancels_racing_the_control_loop_leave_one_consistent_outcome(backoff, checkpoint_dir, monkeypatch):
    WorkerFactory(last_seen_at=timezone.now() + timedelta(hours=1))  # a live cluster worker throughout
    enqueued: list[str] = []
    monkeypatch.setattr(registry, "enqueue_operation", lambda operation_id, kind: enqueued.append(operation_id))
    outcomes = set()
    # The cancels start later and later: the control loop (which validates the checkpoint first) loses the
    # first rounds, and wins the last ones before the cancels arrive (then they cancel its resume).
    for head_start in (0, 0, 0.005, 0.02, 0.2, 0.5):
        operation = OperationFactory(
            status=S.FAILED, end_cause=EndCause.WORKER_LOST, max_restarts=3, restart_due_at=ago(1), presumed_orphan=True
        )
        save_checkpoint(operation.pk)
        enqueued.clear()

        def call(index: int, operation_id=operation.pk, head_start=head_start):
            if index == 0:
                return restart_due()
            time.sleep(head_start)
            return operation_cancel(operation_id=operation_id, actor=f"user:u{index}")

        results = race(call, threads=8)
        report, cancels = results[0], results[1:]
        assert not isinstance(report, Exception), report
        assert [r for r in cancels if r is CancelOutcome.CANCELLED] == [CancelOutcome.CANCELLED], cancels
        assert all(r is CancelOutcome.CANCELLED or isinstance(r, OperationNotCancellable) for r in cancels), cancels

        operation.refresh_from_db()
        assert (operation.status, operation.end_cause, operation.restart_due_at) == (
            S.CANCELLED,
            EndCause.CANCELLED,
            None,
        )
        out_of_failed = [event for event in events_of(operation.pk) if event[0] == S.FAILED]
        assert len(out_of_failed) == 1, events_of(operation.pk)  # exactly one of them won
        if out_of_failed[0][1] == S.RESUMING:  # the control loop first; a cancel then cancelled the resume
            outcomes.add("resumed")
            assert report.resumed == [operation.pk]
            assert operation.restarts == 1 and enqueued == [operation.pk]
            assert events_of(operation.pk)[-2:] == [
                (S.FAILED, S.RESUMING, CONTROL_LOOP),
                (S.RESUMING, S.CANCELLED, events_of(operation.pk)[-1][2]),
            ]
        else:  # a cancel first: the control loop found nothing to do
            outcomes.add("cancelled")
            assert out_of_failed[0][1] == S.CANCELLED
            assert report.resumed == [] and operation.restarts == 0 and enqueued == []
        assert operation.version == len(events_of(operation.pk))  # every change wrote its event, no other
    assert outcomes <= {"resumed", "cancelled"} and outcomes  # (both, unless the scheduler is odd)


# --- operation_create's max_restarts


def test_create_takes_max_restarts_from_the_setting_unless_given(settings):
    settings.MAX_RESTARTS = 7
    default = operation_create(operation_type="training", params={}, actor="test", enqueue=False)
    none = operation_create(operation_type="training", params={}, actor="test", enqueue=False, max_restarts=0)
    five = operation_create(operation_type="training", params={}, actor="test", enqueue=False, max_restarts=5)
    assert [Operation.objects.get(pk=o.pk).max_restarts for o in (default, none, five)] == [7, 0, 5]
    assert [Operation.objects.get(pk=o.pk).restarts for o in (default, none, five)] == [0, 0, 0]


# --- restart_summary


def summary(**fields) -> dict:
    fields = {"status": S.FAILED, "restarts": 0, "max_restarts": 3, **fields}
    return restart_summary(Operation(**fields))


def test_summary_of_a_planned_counted_resume(backoff):
    due = timezone.now()
    result = summary(restarts=1, end_cause=EndCause.WORKER_LOST, restart_due_at=due)
    assert result == {
        "restarts": 1,
        "max_restarts": 3,
        "counter": "1/3",
        "state": "planned",
        "next_at": due,
        "cause": EndCause.WORKER_LOST,
        "text": f"Automatic resume 2/3 due at {due.isoformat(timespec='seconds')}, after a lost worker, once a "
        "worker is available",
    }
    assert summary(end_cause=EndCause.TRANSIENT_ERROR, restart_due_at=due)["text"].startswith(
        "Automatic resume 1/3 due at "
    )


def test_summary_of_a_planned_shutdown_resume_says_it_is_not_counted():
    result = summary(status=S.CANCELLED, restarts=3, end_cause=EndCause.SHUTDOWN, restart_due_at=NOW)
    assert (result["state"], result["counter"]) == ("planned", "3/3")
    assert result["text"] == (
        "Automatic resume after a graceful shutdown, once a worker is available (not counted against max_restarts)"
    )


def test_summary_when_every_restart_is_used():
    result = summary(restarts=3, end_cause=EndCause.TRANSIENT_ERROR)
    assert (result["state"], result["counter"], result["next_at"]) == ("exhausted", "3/3", None)
    assert result["text"] == "No automatic resume: all 3 restarts used (restarts 3/3)"


def test_summary_of_a_crash_loop():
    result = summary(restarts=2, end_cause=EndCause.CRASH_LOOP)
    assert (result["state"], result["counter"]) == ("crash_loop", "2/3")
    assert result["text"] == "No automatic resume: it is crash-looping (see the error)"


def test_summary_when_restarts_are_off():
    for cause in (EndCause.WORKER_LOST, EndCause.ERROR):
        result = summary(max_restarts=0, end_cause=cause)
        assert (result["state"], result["counter"]) == ("off", "0/0")
        assert result["text"] == "Automatic restarts are off for it (max_restarts 0)"


def test_summary_after_an_error_or_a_cancel():
    error = summary(end_cause=EndCause.ERROR)
    cancelled = summary(status=S.CANCELLED, end_cause=EndCause.CANCELLED)
    assert error["state"] == cancelled["state"] == "not_restartable"
    assert error["text"] == "No automatic resume: it failed with an error its type does not mark transient"
    assert cancelled["text"] == "No automatic resume: a user cancelled it"


@pytest.mark.parametrize(
    "fields",
    [
        {"status": S.RUNNING, "end_cause": ""},
        {"status": S.COMPLETED, "end_cause": ""},
        {"status": S.PENDING, "end_cause": ""},
        {"status": S.FAILED, "end_cause": ""},  # failed before the policy existed: no cause recorded
        {"status": S.RUNNING, "end_cause": EndCause.WORKER_LOST},  # its worker came back
    ],
    ids=["running", "completed", "pending", "failed-without-cause", "running-after-loss"],
)
def test_summary_says_nothing_of_an_operation_that_did_not_end_short(fields):
    result = summary(restarts=1, **fields)
    assert (result["state"], result["text"], result["counter"], result["next_at"]) == ("none", "", "1/3", None)


def test_summary_of_a_resume_given_up_with_restarts_left_does_not_claim_they_are_used():
    session = OperationFactory(
        operation_type="agent_research",
        is_backend_local=True,
        status=S.FAILED,
        end_cause=EndCause.WORKER_LOST,
        max_restarts=3,
        restart_due_at=ago(1),
    )
    assert restart_due().given_up == [session.pk]  # no checkpoint, and a session is not restarted from scratch
    session.refresh_from_db()
    assert session.restarts == 0
    assert "all 3 restarts used" not in restart_summary(session)["text"]


# --- a user's cancel request outlives the worker that could not acknowledge it


def test_a_run_whose_cancel_was_requested_is_not_resumed_when_the_sweep_finds_its_worker_gone(
    backoff, short_intervals
):
    operation = expired_reconciliation(max_restarts=3, cancel_requested_at=ago(8))
    assert sweep_orphans().failed == [operation.pk]
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.FAILED, EndCause.CANCELLED, None)
    assert restart_summary(operation)["text"] == "No automatic resume: a user cancelled it"


def test_a_run_whose_cancel_was_requested_is_not_resumed_when_its_cluster_sees_its_worker_exit(backoff):
    operation = running(cancel_requested_at=timezone.now())
    cluster_beat(cluster_id="host:resilient:1", live=[], gone=[operation.worker_id])
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.FAILED, EndCause.CANCELLED, None)


def test_a_transient_failure_racing_a_cancel_request_is_not_resumed(backoff):
    operation = running(cancel_requested_at=timezone.now())
    assert finish(operation, S.FAILED, error_message="OperationalError: gone", cause=EndCause.TRANSIENT_ERROR)
    operation.refresh_from_db()
    assert (operation.end_cause, operation.restart_due_at) == (EndCause.CANCELLED, None)


def test_a_cause_that_does_not_go_with_the_status_is_the_status_default(backoff):
    operation = running()
    assert finish(operation, S.FAILED, error_message="boom", cause=EndCause.SHUTDOWN)  # not a free resume
    operation.refresh_from_db()
    assert (operation.end_cause, operation.restart_due_at) == (EndCause.ERROR, None)


def test_a_research_sessions_children_follow_its_max_restarts_unless_they_say(settings):
    settings.MAX_RESTARTS = 3
    session = OperationFactory(operation_type="agent_research", max_restarts=0)
    child = operation_start(OperationRequestSerializer(data={}), operation_type="training", actor="session:x",
                            parent=session, enqueue=False)
    own = operation_start(OperationRequestSerializer(data={"max_restarts": 2}), operation_type="training",
                          actor="session:x", parent=session, enqueue=False)
    alone = operation_start(OperationRequestSerializer(data={}), operation_type="training", actor="cli",
                            enqueue=False)
    assert (child.max_restarts, own.max_restarts, alone.max_restarts) == (0, 2, 3)
