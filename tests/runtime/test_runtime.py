"""The runtime task in-process: claim, heartbeat, cancel, failure, completion, fencing."""

from __future__ import annotations

import pytest
from django.db import connection

from checkpoints.models import Checkpoint
from operations.models import Operation, Worker
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_create
from runtime.resume import operation_resume
from runtime.tasks import current_worker_id, run_operation
from tests.conftest import queued_operation_ids, replaced_executor
from tests.runtime.counting import straight_total
from tests.support.processes import run_and_cancel_at, run_operation_in_thread, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counting(settings, checkpoint_dir):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    with replaced_executor("training", runner="tests.runtime.counting.CountingRunner"):
        yield


def create(**params) -> str:
    return operation_create(operation_type="training", params=params, actor="test", enqueue=False).pk


def test_completes_with_result_and_deletes_checkpoint(counting):
    operation_id = create(steps=12, checkpoint_every=5)
    assert run_operation(operation_id) == "completed"
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.COMPLETED
    assert operation.result == {"steps": 12, "total": straight_total(12)}
    assert operation.worker_id == current_worker_id()
    assert not Checkpoint.objects.filter(pk=operation_id).exists()
    assert Worker.objects.get(pk=current_worker_id()).capabilities["device"] in ("cpu", "cuda")


def test_second_delivery_runs_nothing(counting):
    operation_id = create(steps=3)
    assert run_operation(operation_id) == "completed"
    assert run_operation(operation_id) == "not claimed"
    assert Operation.objects.get(pk=operation_id).events.filter(to_status=S.RUNNING).count() == 1


def test_progress_is_coalesced_into_heartbeats(counting):
    """The runner's own thread writes nothing per step: only its checkpoints and the final outcome."""
    operation_id = create(steps=200, step_seconds=0.002, checkpoint_every=0)
    queries: list[str] = []

    def record(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert run_operation(operation_id) == "completed"
    updates_of_operation = [q for q in queries if q.startswith('UPDATE "operations_operation"')]
    assert len(updates_of_operation) <= 3  # claim and finish, nothing per step
    operation = Operation.objects.get(pk=operation_id)
    assert operation.last_heartbeat_at > operation.started_at  # the heartbeat thread did write


def test_cancel_saves_checkpoint_and_resume_gives_the_same_result(counting):
    operation_id = create(steps=60, step_seconds=0.01, checkpoint_every=5)
    assert run_and_cancel_at(operation_id, 10, timeout=10) == "cancelled"
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.CANCELLED
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "cancellation" and 10 <= checkpoint.state["step"] < 60

    operation_resume(operation_id=operation_id, actor="user:test")
    assert queued_operation_ids()[-1] == operation_id
    assert run_operation(operation_id) == "completed"
    operation.refresh_from_db()
    assert operation.result == {"steps": 60, "total": straight_total(60)}
    assert operation.attempt == 2


def test_failure_saves_failure_checkpoint_and_resumes(counting):
    operation_id = create(steps=20, checkpoint_every=5, fail_at=13)
    assert run_operation(operation_id) == "failed"
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.error_message) == (S.FAILED, "RuntimeError: boom at step 13")
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert (checkpoint.checkpoint_type, checkpoint.state["step"]) == ("failure", 12)

    operation_resume(operation_id=operation_id, actor="user:test")
    assert queued_operation_ids()[-1] == operation_id
    assert run_operation(operation_id) == "completed"
    operation.refresh_from_db()
    assert operation.result == {"steps": 20, "total": straight_total(20)}


def test_run_taken_over_elsewhere_is_abandoned_without_writes(counting, worker_factory):
    operation_id = create(steps=500, step_seconds=0.01, checkpoint_every=1000)
    thread, outcome = run_operation_in_thread(operation_id)
    wait_for(lambda: Operation.objects.get(pk=operation_id).progress_current >= 3, timeout=10, what="progress")
    other = worker_factory()
    # The sweep presumed it dead and it was resumed and claimed elsewhere: a later run on another worker.
    Operation.objects.filter(pk=operation_id).update(worker=other, attempt=2)
    thread.join(timeout=10)
    assert outcome == ["abandoned"]
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.worker_id, operation.attempt) == (S.RUNNING, other.pk, 2)
    assert operation.result is None


def test_resume_whose_checkpoint_vanished_fails_instead_of_starting_over(counting):
    operation_id = create(steps=20, checkpoint_every=5, fail_at=8)
    assert run_operation(operation_id) == "failed"
    operation_resume(operation_id=operation_id, actor="user:test")
    Checkpoint.objects.filter(pk=operation_id).delete()  # removed behind the resume's back
    assert run_operation(operation_id) == "failed"
    operation = Operation.objects.get(pk=operation_id)
    assert operation.status == S.FAILED and operation.error_message.startswith("CHECKPOINT_NOT_FOUND")
    assert operation.result is None
