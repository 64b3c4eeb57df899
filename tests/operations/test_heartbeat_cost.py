"""What a heartbeat costs the database: the usual one (its operation RUNNING on this worker and run) is one
statement, in-process and over HTTP with a worker credential (the same statement checks it); and it leaves
every index alone, so PostgreSQL updates the rows in place (HOT)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from operations.models import Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.credentials import credential_create
from operations.services.workers import Action, CurrentOperation, Progress, worker_heartbeat
from tests.factories import OperationFactory

pytestmark = pytest.mark.django_db

HOST = "gpu-box-1"
WORKER = f"{HOST}:resilient:4242"


@pytest.fixture
def running() -> Operation:
    Worker.objects.create(worker_id=WORKER, host=HOST, pid=4242, status=WorkerStatus.BUSY)
    operation = OperationFactory(status=S.RUNNING, attempt=3, worker_id=WORKER, progress_total=30)
    Worker.objects.filter(pk=WORKER).update(current_operation=operation)
    return operation


def statements(run) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        value = run()
    return value, [query["sql"] for query in queries.captured_queries
                   if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


def test_an_in_process_heartbeat_is_one_statement(running):
    reply, sent = statements(lambda: worker_heartbeat(
        worker_id=WORKER, current_operation=CurrentOperation(operation_id=running.pk, attempt=3),
        progress=Progress(current=7, total=30, unit="epochs", percent=23.3, message="epoch 7/30")))
    assert len(sent) == 1, "\n".join(sent)
    assert reply.instruction.action is Action.CONTINUE and reply.instruction.attempt == 3
    assert reply.worker.status == WorkerStatus.BUSY and reply.worker.current_operation_id == running.pk
    operation = Operation.objects.get(pk=running.pk)
    assert (operation.progress_current, operation.progress_percent, operation.progress_message) == (
        7, 23.3, "epoch 7/30")
    assert operation.last_heartbeat_at is not None and operation.version == running.version
    assert Worker.objects.get(pk=WORKER).last_seen_at == operation.last_heartbeat_at


def test_a_heartbeat_over_http_with_a_worker_credential_is_one_statement(running):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Worker {credential_create(host=HOST, actor='test')[1]}")
    body = {"operation_id": running.pk, "attempt": 3, "progress": {"current": 8, "total": 30, "percent": 26.7}}
    client.post(f"/api/v1/workers/{WORKER}/heartbeat/", body, format="json")  # its first use writes last_used_at

    answer, sent = statements(lambda: client.post(f"/api/v1/workers/{WORKER}/heartbeat/", body, format="json"))
    assert answer.status_code == 200, answer.content
    assert len(sent) == 1, "\n".join(sent)
    assert answer.json()["action"] == "continue" and answer.json()["operation"]["cancel_requested"] is False
    assert answer.json()["worker"]["status"] == "BUSY"
    assert Operation.objects.get(pk=running.pk).progress_current == 8


def test_a_cancel_request_reaches_the_worker_through_the_usual_heartbeat(running):
    Operation.objects.filter(pk=running.pk).update(cancel_requested_at=running.created_at)
    reply = worker_heartbeat(worker_id=WORKER, current_operation=CurrentOperation(operation_id=running.pk, attempt=3))
    assert reply.instruction.cancel_requested and reply.instruction.action is Action.CONTINUE


def test_a_stopping_worker_stays_stopping(running):
    Worker.objects.filter(pk=WORKER).update(status=WorkerStatus.STOPPING)
    reply = worker_heartbeat(worker_id=WORKER, current_operation=CurrentOperation(operation_id=running.pk, attempt=3))
    assert reply.worker.status == WorkerStatus.STOPPING


@pytest.mark.parametrize("case", ["earlier run", "another worker", "not running"])
def test_anything_but_the_usual_takes_the_full_path_and_is_answered_as_before(running, case):
    attempt = 3
    if case == "earlier run":
        attempt = 2
    elif case == "another worker":
        Worker.objects.create(worker_id="other:resilient:1", host="other", pid=1)
        Operation.objects.filter(pk=running.pk).update(worker_id="other:resilient:1")
    else:
        Operation.objects.filter(pk=running.pk).update(status=S.CANCELLED)
    reply = worker_heartbeat(worker_id=WORKER,
                             current_operation=CurrentOperation(operation_id=running.pk, attempt=attempt))
    assert reply.instruction.action is Action.STOP
    assert reply.worker.status == WorkerStatus.IDLE and reply.worker.current_operation_id is None
    assert not OperationEvent.objects.filter(operation=running).exists()


def test_a_worker_whose_row_was_deleted_is_registered_again_by_its_heartbeat(running):
    Worker.objects.filter(pk=WORKER).delete()  # (its operation's worker is then unset: the full path answers)
    reply = worker_heartbeat(worker_id=WORKER, current_operation=CurrentOperation(operation_id=running.pk, attempt=3))
    assert reply.instruction.action is Action.STOP and Worker.objects.filter(pk=WORKER).exists()


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_on_a_connection_the_server_dropped_connects_again(running):
    """No health check before the heartbeat's statement (a round trip each request): the statement is the check,
    and a kept connection found dead is replaced and the statement run again."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])
    reply, sent = statements(lambda: worker_heartbeat(
        worker_id=WORKER, current_operation=CurrentOperation(operation_id=running.pk, attempt=3),
        progress=Progress(current=11)))
    assert reply.instruction.action is Action.CONTINUE
    assert Operation.objects.get(pk=running.pk).progress_current == 11
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != backend
