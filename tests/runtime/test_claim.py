"""The claim of a run: one transaction that returns what the run needs; a worker process registers with its
first task (or when its row is gone, or outcomes wait in the outbox), not with every task; a run that had no
checkpoint and began none leaves the checkpoint store alone."""

from __future__ import annotations

import pytest
from django.db import connection

from checkpoints.models import Checkpoint
from operations.exceptions import WorkerNotFound
from operations.models import Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.lifecycle import Claim, operation_claim_run, operation_create
from operations.services.workers import CompletedReport
from runtime.outbox import outbox_entries, outbox_waiting, outbox_write
from runtime.resume import operation_resume
from runtime.tasks import current_worker_id, run_operation
from tests.conftest import replaced_executor
from tests.runtime.counting import straight_total
from tests.support.processes import run_and_cancel_at

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counting(settings, checkpoint_dir, tmp_path):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    settings.WORKER_STATE_DIR = str(tmp_path / "worker-state")  # an outbox of the test's own
    with replaced_executor("training", runner="tests.runtime.counting.CountingRunner"):
        yield


def create(**params) -> str:
    return operation_create(operation_type="training", params=params, actor="test", enqueue=False).pk


def statements(call) -> list[str]:
    seen: list[str] = []

    def record(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        call()
    return seen


def test_the_claim_returns_what_the_run_needs_with_its_event(worker_factory):
    worker = worker_factory()
    operation_id = create(steps=3)

    claim = operation_claim_run(operation_id=operation_id, worker_id=worker.pk)

    assert claim == Claim(attempt=1, operation_type="training", params={"steps": 3}, previous_status=S.PENDING)
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.worker_id, operation.attempt) == (S.RUNNING, worker.pk, 1)
    assert list(operation.events.values_list("from_status", "to_status")) == [(S.PENDING, S.RUNNING), ("", S.PENDING)]
    worker.refresh_from_db()
    assert (worker.status, worker.current_operation_id) == (WorkerStatus.BUSY, operation_id)
    assert operation_claim_run(operation_id=operation_id, worker_id=worker.pk) is None  # a second delivery


def test_a_claim_by_a_worker_with_no_row_claims_nothing():
    operation_id = create(steps=3)
    with pytest.raises(WorkerNotFound):
        operation_claim_run(operation_id=operation_id, worker_id="gone:resilient:4242")
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.worker_id, operation.attempt) == (S.PENDING, None, 0)
    assert not OperationEvent.objects.filter(operation_id=operation_id, to_status=S.RUNNING).exists()


def test_a_worker_process_registers_with_its_first_task_only(counting):
    assert run_operation(create(steps=2)) == "completed"
    registered_at = Worker.objects.get(pk=current_worker_id()).registered_at

    second = create(steps=2)
    seen = statements(lambda: run_operation(second))

    assert Operation.objects.get(pk=second).status == S.COMPLETED
    assert Worker.objects.get(pk=current_worker_id()).registered_at == registered_at  # not registered again
    assert not [sql for sql in seen if sql.startswith('INSERT INTO "operations_worker"')]
    assert len([sql for sql in seen if sql.startswith('SELECT "operations_worker"')]) == 0


def test_a_worker_whose_row_is_gone_registers_again_and_runs(counting):
    assert run_operation(create(steps=2)) == "completed"
    Worker.objects.filter(pk=current_worker_id()).delete()

    operation_id = create(steps=4)
    assert run_operation(operation_id) == "completed"

    worker = Worker.objects.get(pk=current_worker_id())
    assert worker.capabilities["device"] in ("cpu", "cuda") and worker.status == WorkerStatus.IDLE
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.result) == (S.COMPLETED, {"steps": 4, "total": straight_total(4)})


def test_outcomes_in_the_outbox_are_reported_before_the_next_claim(counting):
    assert run_operation(create(steps=2)) == "completed"
    waiting = create(steps=5)
    assert operation_claim_run(operation_id=waiting, worker_id=current_worker_id()).attempt == 1
    outbox_write(CompletedReport(operation_id=waiting, worker_id=current_worker_id(), attempt=1,
                                 status=S.COMPLETED, result={"from": "the outbox"}))
    assert outbox_waiting()

    assert run_operation(create(steps=2)) == "completed"

    assert not outbox_entries()
    assert Operation.objects.get(pk=waiting).result == {"from": "the outbox"}


def test_a_run_without_checkpoints_leaves_the_store_alone(counting):
    operation_id = create(steps=3, checkpoint_every=0)
    seen = statements(lambda: run_operation(operation_id))
    assert Operation.objects.get(pk=operation_id).status == S.COMPLETED
    # The one look at the start (is there a checkpoint to resume from?), no deletion at the end.
    assert len([sql for sql in seen if '"checkpoints_checkpoint"' in sql]) == 1


def test_a_run_that_saved_or_resumed_deletes_its_checkpoint(counting):
    operation_id = create(steps=60, step_seconds=0.01, checkpoint_every=5)
    assert run_and_cancel_at(operation_id, 10, timeout=10) == "cancelled"
    assert Checkpoint.objects.filter(pk=operation_id).exists()

    operation_resume(operation_id=operation_id, actor="user:test")
    assert run_operation(operation_id) == "completed"
    assert not Checkpoint.objects.filter(pk=operation_id).exists()

    saved = create(steps=12, checkpoint_every=5)  # periodic checkpoints, no resume
    assert run_operation(saved) == "completed"
    assert not Checkpoint.objects.filter(pk=saved).exists()
