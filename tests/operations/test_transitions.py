"""The state machine (docs/state-machine.md): conditional transitions, the claim, cancel; raced on PostgreSQL."""

from __future__ import annotations

import pytest

from operations.exceptions import OperationNotCancellable, OperationNotFound
from operations.ids import new_operation_id
from operations.models import SAME_STATUS, Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.lifecycle import (
    CancelOutcome,
    operation_cancel,
    operation_claim,
    operation_create,
    operation_finish,
)
from operations.services.workers import worker_register
from operations.transitions import TransitionNotAllowed, worker_actor
from tests.conftest import queued_operation_ids
from tests.support.race import race

THREADS = 20


@pytest.mark.django_db
class TestTransition:
    def test_moves_increments_version_and_writes_event(self, operation_factory):
        operation = operation_factory()
        assert Operation.objects.transition(
            operation.pk, from_statuses=[S.PENDING], to_status=S.CANCELLED, actor="test", reason="why"
        )
        operation.refresh_from_db()
        assert (operation.status, operation.previous_status, operation.version) == (S.CANCELLED, S.PENDING, 1)
        event = operation.events.get()
        assert (event.from_status, event.to_status, event.reason, event.actor) == (S.PENDING, S.CANCELLED, "why", "test")

    def test_refuses_from_other_status_and_changes_nothing(self, operation_factory):
        operation = operation_factory(status=S.COMPLETED)
        assert not Operation.objects.transition(
            operation.pk, from_statuses=[S.PENDING, S.RESUMING], to_status=S.CANCELLED, actor="test"
        )
        operation.refresh_from_db()
        assert (operation.status, operation.version) == (S.COMPLETED, 0)
        assert not operation.events.exists()

    def test_refuses_stale_version(self, operation_factory):
        operation = operation_factory(status=S.CANCELLED, version=3)
        assert not Operation.objects.transition(
            operation.pk, from_statuses=[S.CANCELLED], to_status=S.RESUMING, actor="test", version=2
        )
        assert Operation.objects.transition(
            operation.pk, from_statuses=[S.CANCELLED], to_status=S.RESUMING, actor="test", version=3
        )

    def test_fenced_on_worker_and_attempt(self, running_operation_factory, worker_factory):
        operation = running_operation_factory(attempt=2)
        other = worker_factory()
        assert not Operation.objects.transition(
            operation.pk, from_statuses=[S.RUNNING], to_status=S.FAILED, actor=worker_actor(other.pk),
            fence_worker_id=other.pk,
        )
        assert not Operation.objects.transition(
            operation.pk, from_statuses=[S.RUNNING], to_status=S.FAILED,
            actor=worker_actor(operation.worker_id), fence_worker_id=operation.worker_id, fence_attempt=1,
        )
        assert Operation.objects.transition(
            operation.pk, from_statuses=[S.RUNNING], to_status=S.FAILED,
            actor=worker_actor(operation.worker_id), fence_worker_id=operation.worker_id, fence_attempt=2,
        )


@pytest.mark.django_db
class TestTransitionMany:
    def test_moves_the_matching_rows_each_with_its_event_and_reason(self, operation_factory):
        waiting = [operation_factory(params={"n": n}) for n in range(3)]
        running = operation_factory(status=S.RUNNING)
        moved = Operation.objects.filter(pk__in=[o.pk for o in [*waiting, running]]).transition_many(
            from_statuses=[S.PENDING], to_status=S.CANCELLED, actor="test",
            reason=lambda row: f"n={row['params']['n']}", returning=["params"], error_message="gone",
        )
        assert [row["pk"] for row in moved] == sorted(o.pk for o in waiting)
        for operation in waiting:
            operation.refresh_from_db()
            assert (operation.status, operation.previous_status, operation.version, operation.error_message) == (
                S.CANCELLED, S.PENDING, 1, "gone")
            event = operation.events.get()
            assert (event.from_status, event.to_status, event.reason, event.actor) == (
                S.PENDING, S.CANCELLED, f"n={operation.params['n']}", "test")
        running.refresh_from_db()
        assert (running.status, running.version) == (S.RUNNING, 0)
        assert not running.events.exists()

    def test_from_several_statuses_each_event_names_the_one_its_row_left(self, operation_factory):
        cancelled, failed = operation_factory(status=S.CANCELLED), operation_factory(status=S.FAILED)
        moved = Operation.objects.transition_many(
            from_statuses=[S.CANCELLED, S.FAILED], to_status=S.RESUMING, actor="test", reason="again"
        )
        assert sorted(row["pk"] for row in moved) == sorted([cancelled.pk, failed.pk])
        assert dict(OperationEvent.objects.values_list("operation_id", "from_status")) == {
            cancelled.pk: S.CANCELLED, failed.pk: S.FAILED}

    def test_same_status_leaves_each_row_in_its_own(self, operation_factory):
        """A re-enqueue: PENDING stays PENDING, RESUMING stays RESUMING, each event says so."""
        pending = operation_factory(status=S.PENDING)
        resuming = operation_factory(status=S.RESUMING, previous_status=S.CANCELLED)
        moved = Operation.objects.transition_many(
            from_statuses=[S.PENDING, S.RESUMING], to_status=SAME_STATUS, actor="control-loop", reason="again")
        assert sorted(row["pk"] for row in moved) == sorted([pending.pk, resuming.pk])
        assert dict(Operation.objects.values_list("pk", "status")) == {pending.pk: S.PENDING,
                                                                      resuming.pk: S.RESUMING}
        resuming.refresh_from_db()
        assert (resuming.previous_status, resuming.version) == (S.CANCELLED, 1)  # where the resume came from
        assert set(OperationEvent.objects.values_list("operation_id", "from_status", "to_status")) == {
            (pending.pk, S.PENDING, S.PENDING), (resuming.pk, S.RESUMING, S.RESUMING)}
        with pytest.raises(TransitionNotAllowed):  # COMPLETED is final, even to itself
            Operation.objects.transition_many(from_statuses=[S.COMPLETED], to_status=SAME_STATUS,
                                              actor="control-loop")

    def test_a_change_the_table_lacks_writes_nothing(self, operation_factory):
        operation = operation_factory()
        with pytest.raises(TransitionNotAllowed):
            Operation.objects.transition_many(from_statuses=[S.PENDING], to_status=S.COMPLETED, actor="test")
        operation.refresh_from_db()
        assert (operation.status, operation.version) == (S.PENDING, 0)

    def test_the_tables_guard_is_part_of_the_update(self, operation_factory):
        """FAILED → RUNNING by a worker only if the sweep presumed it orphaned."""
        orphan = operation_factory(status=S.FAILED, presumed_orphan=True)
        genuine = operation_factory(status=S.FAILED)
        moved = Operation.objects.transition_many(
            from_statuses=[S.FAILED], to_status=S.RUNNING, actor=worker_actor("h:resilient:1"))
        assert [row["pk"] for row in moved] == [orphan.pk]
        genuine.refresh_from_db()
        assert genuine.status == S.FAILED

    def test_nothing_to_move_writes_no_event(self, operation_factory):
        operation_factory(status=S.COMPLETED)
        assert Operation.objects.transition_many(from_statuses=[S.PENDING], to_status=S.CANCELLED, actor="t") == []
        assert not OperationEvent.objects.exists()

    def test_an_update_over_a_join_is_refused(self, operation_factory):
        """A condition on another table would make Django filter by a subquery of ids, which PostgreSQL does not
        check again on the rows it takes."""
        with pytest.raises(ValueError):
            Operation.objects.filter(worker__status="BUSY").transition_many(
                from_statuses=[S.RUNNING], to_status=S.PENDING_RECONCILIATION, actor="control-loop")


@pytest.mark.django_db
class TestCreateAndClaim:
    def test_create_enqueues_after_commit(self, training_executor, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            operation = operation_create(operation_type="training", params={"epochs": 3}, actor="cli")
            assert queued_operation_ids() == []  # nothing is sent before the commit
        for callback in callbacks:
            callback()
        assert queued_operation_ids() == [operation.pk]
        assert operation.status == S.PENDING and operation.queued_at is not None
        assert operation.events.get().to_status == S.PENDING

    def test_backend_local_is_never_enqueued(self, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            operation = operation_create(
                operation_type="agent_research", params={}, actor="cli", is_backend_local=True
            )
        assert queued_operation_ids() == []
        assert operation.queued_at is None

    def test_claim_sets_worker_attempt_and_busy(self, operation_factory, worker_factory):
        operation = operation_factory()
        worker = worker_factory()
        assert operation_claim(operation_id=operation.pk, worker_id=worker.pk) == 1
        operation.refresh_from_db()
        worker.refresh_from_db()
        assert (operation.status, operation.worker_id, operation.attempt) == (S.RUNNING, worker.pk, 1)
        assert operation.started_at is not None and operation.last_heartbeat_at is not None
        assert (worker.status, worker.current_operation_id) == (WorkerStatus.BUSY, operation.pk)

    def test_second_delivery_claims_nothing(self, operation_factory, worker_factory):
        operation = operation_factory()
        first, second = worker_factory(), worker_factory()
        assert operation_claim(operation_id=operation.pk, worker_id=first.pk) == 1
        assert operation_claim(operation_id=operation.pk, worker_id=second.pk) is None
        operation.refresh_from_db()
        assert (operation.worker_id, operation.attempt, operation.version) == (first.pk, 1, 1)

    def test_claim_of_resuming_starts_a_new_run(self, operation_factory, worker_factory):
        worker = worker_factory()
        operation = operation_factory(status=S.RESUMING, attempt=1, error_message="old failure")
        assert operation_claim(operation_id=operation.pk, worker_id=worker.pk) == 2
        operation.refresh_from_db()
        assert operation.error_message == "" and operation.cancel_requested_at is None

    @pytest.mark.parametrize("status", [S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED, S.PENDING_RECONCILIATION])
    def test_nothing_else_is_claimable(self, operation_factory, worker_factory, status):
        operation = operation_factory(status=status)
        assert operation_claim(operation_id=operation.pk, worker_id=worker_factory().pk) is None


@pytest.mark.django_db
class TestCancel:
    @pytest.mark.parametrize("status", [S.PENDING, S.RESUMING, S.PENDING_RECONCILIATION])
    def test_not_executing_is_cancelled_at_once(self, operation_factory, status):
        operation = operation_factory(status=status)
        assert operation_cancel(operation_id=operation.pk, actor="user:a") is CancelOutcome.CANCELLED
        operation.refresh_from_db()
        assert operation.status == S.CANCELLED and operation.completed_at is not None
        assert operation.events.get().actor == "user:a"

    def test_running_records_request_for_its_worker(self, running_operation_factory):
        operation = running_operation_factory()
        assert operation_cancel(operation_id=operation.pk, actor="user:a") is CancelOutcome.REQUESTED
        operation.refresh_from_db()
        assert operation.status == S.RUNNING and operation.cancel_requested_at is not None
        version = operation.version
        assert operation_cancel(operation_id=operation.pk, actor="user:a") is CancelOutcome.ALREADY_REQUESTED
        operation.refresh_from_db()
        assert operation.version == version and operation.events.count() == 1

    def test_acknowledged_by_the_worker(self, running_operation_factory):
        operation = running_operation_factory()
        operation_cancel(operation_id=operation.pk, actor="user:a")
        assert operation_finish(
            operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.CANCELLED
        )
        operation.refresh_from_db()
        assert operation.status == S.CANCELLED

    @pytest.mark.parametrize("status", [S.COMPLETED, S.FAILED, S.CANCELLED])
    def test_terminal_is_refused(self, operation_factory, status):
        operation = operation_factory(status=status)
        with pytest.raises(OperationNotCancellable) as refused:
            operation_cancel(operation_id=operation.pk, actor="user:a")
        assert refused.value.details["current_status"] == status
        operation.refresh_from_db()
        assert operation.status == status and operation.version == 0

    def test_missing(self, db):
        with pytest.raises(OperationNotFound):
            operation_cancel(operation_id=new_operation_id("training"), actor="user:a")


@pytest.mark.django_db
class TestFinish:
    def test_completed_stores_result(self, running_operation_factory):
        operation = running_operation_factory()
        assert operation_finish(
            operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.COMPLETED,
            result={"epochs_completed": 3},
        )
        operation.refresh_from_db()
        assert operation.result == {"epochs_completed": 3} and operation.progress_percent == 100.0
        assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.IDLE

    def test_completed_is_final(self, running_operation_factory):
        operation = running_operation_factory()
        assert operation_finish(operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.COMPLETED)
        assert not operation_finish(
            operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.FAILED, error_message="x"
        )
        operation.refresh_from_db()
        assert operation.status == S.COMPLETED and operation.error_message == ""

    def test_genuinely_failed_is_not_overwritten(self, running_operation_factory):
        operation = running_operation_factory()
        operation_finish(
            operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.FAILED, error_message="boom"
        )
        assert not operation_finish(
            operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.COMPLETED
        )


# --- races: 20 threads, one row, exactly one winner

@pytest.mark.django_db(transaction=True)
class TestRaces:
    def test_twenty_claims_one_winner(self, operation_factory, worker_factory):
        operation = operation_factory()
        workers = [worker_factory() for _ in range(THREADS)]
        results = race(lambda i: operation_claim(operation_id=operation.pk, worker_id=workers[i].pk), THREADS)
        assert not [r for r in results if isinstance(r, Exception)], results
        winners = [i for i, attempt in enumerate(results) if attempt is not None]
        assert len(winners) == 1
        operation.refresh_from_db()
        assert operation.worker_id == workers[winners[0]].pk
        assert (operation.status, operation.attempt, operation.version) == (S.RUNNING, 1, 1)
        assert operation.events.filter(to_status=S.RUNNING).count() == 1

    def test_twenty_versioned_transitions_one_winner(self, operation_factory):
        operation = operation_factory(status=S.CANCELLED, version=7)
        results = race(
            lambda i: Operation.objects.transition(
                operation.pk, from_statuses=[S.CANCELLED, S.FAILED], to_status=S.RESUMING,
                actor=f"racer-{i}", version=7,
            ),
            THREADS,
        )
        assert results.count(True) == 1 and results.count(False) == THREADS - 1
        operation.refresh_from_db()
        assert (operation.status, operation.version) == (S.RESUMING, 8)
        assert OperationEvent.objects.filter(operation=operation).count() == 1

    def test_cancel_against_claim(self, operation_factory, worker_factory):
        """Half the threads cancel, half claim: the operation ends in exactly one consistent state."""
        operation = operation_factory()
        workers = [worker_factory() for _ in range(THREADS)]

        def act(i: int):
            if i % 2:
                return operation_claim(operation_id=operation.pk, worker_id=workers[i].pk)
            try:
                return operation_cancel(operation_id=operation.pk, actor=f"user:{i}")
            except OperationNotCancellable:
                return "refused"

        results = race(act, THREADS)
        assert not [r for r in results if isinstance(r, Exception)], results
        operation.refresh_from_db()
        claims = [r for i, r in enumerate(results) if i % 2 and r is not None]
        cancelled_at_once = results.count(CancelOutcome.CANCELLED)
        assert len(claims) + cancelled_at_once == 1
        if claims:
            assert operation.status == S.RUNNING
            assert operation.cancel_requested_at is not None or CancelOutcome.REQUESTED not in results
        else:
            assert operation.status == S.CANCELLED

    def test_twenty_set_transitions_over_the_same_rows_move_each_once(self, operation_factory):
        operations = [operation_factory(status=S.CANCELLED).pk for _ in range(50)]
        results = race(
            lambda i: [row["pk"] for row in Operation.objects.filter(pk__in=operations).transition_many(
                from_statuses=[S.CANCELLED], to_status=S.RESUMING, actor=f"racer-{i}")],
            THREADS,
        )
        assert not [r for r in results if isinstance(r, Exception)], results
        assert sorted(pk for moved in results for pk in moved) == sorted(operations)
        assert set(Operation.objects.values_list("status", "version")) == {(S.RESUMING, 1)}
        assert OperationEvent.objects.count() == 50

    def test_twenty_completed_reports_apply_once(self, running_operation_factory):
        operation = running_operation_factory()
        results = race(
            lambda i: operation_finish(
                operation_id=operation.pk, worker_id=operation.worker_id, attempt=1, status=S.COMPLETED,
                result={"racer": i},
            ),
            THREADS,
        )
        assert results.count(True) == 1
        operation.refresh_from_db()
        assert operation.result == {"racer": results.index(True)}
        assert operation.events.filter(to_status=S.COMPLETED).count() == 1

    def test_twenty_registrations_adopt_unknown_operation_once(self, db):
        operation_id = new_operation_id("training")
        worker_register(worker_id="racehost:resilient:1")
        from operations.services.workers import CurrentOperation

        results = race(
            lambda i: worker_register(
                worker_id="racehost:resilient:1", current_operation=CurrentOperation(operation_id, attempt=1)
            ).action.value,
            THREADS,
        )
        assert results == ["continue"] * THREADS
        assert Operation.objects.filter(pk=operation_id, status=S.RUNNING).count() == 1
        assert OperationEvent.objects.filter(operation_id=operation_id).count() == 1
