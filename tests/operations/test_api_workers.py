"""/api/v1/workers/…: registration, heartbeats and the worker listing over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from operations.models import Operation, OperationEvent, OperationStatus, Worker, WorkerStatus
from operations.services.reconciliation import sweep_orphans, worker_unavailable_message

pytestmark = pytest.mark.django_db

S = OperationStatus
REGISTER_URL = "/api/v1/workers/register/"
LIST_URL = "/api/v1/workers/"
WORKER_ID = "gpu-box.lan:resilient:4242"
UNKNOWN_OPERATION_ID = "op_training_20240301_090000_00c0ffee"


def heartbeat_url(worker_id: str) -> str:
    return f"/api/v1/workers/{worker_id}/heartbeat/"


def worker_url(worker_id: str) -> str:
    return f"/api/v1/workers/{worker_id}/"


def operation_rows() -> list[dict]:
    """Every operation row, without the liveness timestamps a replay legitimately refreshes."""
    rows = Operation.objects.order_by("pk").values()
    return [{k: v for k, v in row.items() if k != "last_heartbeat_at"} for row in rows]


def event_rows() -> list[tuple]:
    return list(OperationEvent.objects.order_by("pk").values_list("operation_id", "from_status", "to_status"))


def presumed_orphan(running_operation_factory, **kwargs) -> Operation:
    """An operation the real orphan sweep gave up on: its worker went silent ten minutes ago."""
    silent_since = timezone.now() - timedelta(minutes=10)
    operation = running_operation_factory(last_heartbeat_at=silent_since, **kwargs)
    Worker.objects.filter(pk=operation.worker_id).update(last_seen_at=silent_since)
    sweep_orphans()
    operation.refresh_from_db()
    assert operation.status == S.FAILED
    assert operation.presumed_orphan
    return operation


# --- who may call the worker endpoints


@pytest.mark.parametrize("client_fixture", ["worker_client", "staff_client"])
def test_worker_or_staff_credential_may_register_and_heartbeat(request, client_fixture):
    client = request.getfixturevalue(client_fixture)

    registered = client.post(REGISTER_URL, {"worker_id": WORKER_ID}, format="json")
    heartbeat = client.post(heartbeat_url(WORKER_ID), {}, format="json")

    assert registered.status_code == 200
    assert heartbeat.status_code == 200
    assert registered.json()["worker"]["worker_id"] == WORKER_ID
    worker = Worker.objects.get(pk=WORKER_ID)
    assert (worker.host, worker.pid, worker.status) == ("gpu-box.lan", 4242, WorkerStatus.IDLE)


def test_a_plain_user_is_refused_with_403(user_client, worker_factory):
    worker = worker_factory()

    responses = [
        user_client.post(REGISTER_URL, {"worker_id": WORKER_ID}, format="json"),
        user_client.post(heartbeat_url(worker.worker_id), {}, format="json"),
        user_client.get(LIST_URL),
        user_client.get(worker_url(worker.worker_id)),
    ]

    for response in responses:
        assert response.status_code == 403
        assert response.json()["code"] == "PERMISSION_DENIED"
    assert not Worker.objects.filter(pk=WORKER_ID).exists()


def test_no_credential_is_a_401(anonymous_client, worker_factory):
    worker = worker_factory()
    seen = worker.last_seen_at

    responses = [
        anonymous_client.post(REGISTER_URL, {"worker_id": WORKER_ID}, format="json"),
        anonymous_client.post(heartbeat_url(worker.worker_id), {}, format="json"),
        anonymous_client.get(LIST_URL),
        anonymous_client.get(worker_url(worker.worker_id)),
    ]

    for response in responses:
        assert response.status_code == 401
        assert response.json()["code"] == "NOT_AUTHENTICATED"
    assert not Worker.objects.filter(pk=WORKER_ID).exists()
    assert Worker.objects.get(pk=worker.worker_id).last_seen_at == seen


# --- registration


def test_register_with_an_unknown_current_operation_is_told_to_stop_and_nothing_is_created(worker_client):
    """Over the API a caller cannot prove its worker started a run the database has no record of: no adoption
    (a worker process of the deployment adopts it: tests/operations/test_registration.py)."""
    response = worker_client.post(
        REGISTER_URL,
        {
            "worker_id": WORKER_ID,
            "capabilities": {"device": "cuda", "cpu_count": 16},
            "current_operation_id": UNKNOWN_OPERATION_ID,
            "current_attempt": 1,
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["action"] == "stop"
    assert body["operation"]["operation_id"] == UNKNOWN_OPERATION_ID
    assert body["operation"]["status"] is None
    assert "Unknown operation: not recorded" in body["operation"]["reason"]
    assert body["worker"]["status"] == "IDLE"
    assert body["worker"]["capabilities"] == {"device": "cuda", "cpu_count": 16}
    assert not Operation.objects.filter(pk=UNKNOWN_OPERATION_ID).exists()


def test_replaying_a_registration_changes_nothing_the_second_time(worker_client, running_operation_factory):
    finished = running_operation_factory(worker__worker_id=WORKER_ID)
    body = {
        "worker_id": WORKER_ID,
        "worker_type": "api",
        "current_operation_id": UNKNOWN_OPERATION_ID,
        "current_attempt": 1,
        "completed_operations": [
            {"operation_id": finished.operation_id, "status": "COMPLETED", "attempt": finished.attempt,
             "result": {"accuracy": 0.61}},
        ],
    }

    first = worker_client.post(REGISTER_URL, body, format="json")
    rows_after_first, events_after_first = operation_rows(), event_rows()
    second = worker_client.post(REGISTER_URL, body, format="json")

    assert first.status_code == second.status_code == 200
    assert first.json()["completed_operations"] == [{"operation_id": finished.operation_id, "applied": True}]
    assert second.json()["completed_operations"] == [{"operation_id": finished.operation_id, "applied": False}]
    assert second.json()["action"] == "stop"  # the unknown operation: not adopted over the API
    assert operation_rows() == rows_after_first
    assert event_rows() == events_after_first
    assert Operation.objects.count() == 1
    assert Operation.objects.get(pk=finished.operation_id).result == {"accuracy": 0.61}


def test_completed_report_recovers_an_operation_the_sweep_presumed_orphaned(worker_client, running_operation_factory):
    operation = presumed_orphan(running_operation_factory, worker__worker_id=WORKER_ID)
    assert operation.error_message == worker_unavailable_message(WORKER_ID)
    report = {
        "worker_id": WORKER_ID,
        "completed_operations": [
            {
                "operation_id": operation.operation_id,
                "status": "COMPLETED",
                "attempt": operation.attempt,
                "result": {"model_path": "models/m.pt", "val_loss": 0.12},
            }
        ],
    }

    first = worker_client.post(REGISTER_URL, report, format="json")
    row = Operation.objects.get(pk=operation.operation_id)
    events_after_first = event_rows()
    second = worker_client.post(REGISTER_URL, report, format="json")

    assert first.status_code == 200
    assert first.json()["completed_operations"] == [{"operation_id": operation.operation_id, "applied": True}]
    assert row.status == S.COMPLETED
    assert row.result == {"model_path": "models/m.pt", "val_loss": 0.12}
    assert row.presumed_orphan is False
    assert row.error_message == ""
    assert row.completed_at is not None
    assert row.events.first().from_status == S.FAILED
    assert row.events.first().to_status == S.COMPLETED

    assert second.status_code == 200
    assert second.json()["completed_operations"] == [{"operation_id": operation.operation_id, "applied": False}]
    again = Operation.objects.get(pk=operation.operation_id)
    assert (again.status, again.version, again.result, again.completed_at) == (
        row.status, row.version, row.result, row.completed_at,
    )
    assert event_rows() == events_after_first


def test_completed_report_from_another_worker_is_not_applied(worker_client, running_operation_factory):
    operation = presumed_orphan(running_operation_factory)  # on some other worker
    before = Operation.objects.filter(pk=operation.operation_id).values().get()

    response = worker_client.post(
        REGISTER_URL,
        {
            "worker_id": WORKER_ID,
            "completed_operations": [{"operation_id": operation.operation_id, "status": "COMPLETED",
                                      "attempt": operation.attempt, "result": {}}],
        },
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["completed_operations"] == [{"operation_id": operation.operation_id, "applied": False}]
    assert Operation.objects.filter(pk=operation.operation_id).values().get() == before


def test_completed_report_does_not_overwrite_a_genuine_failure(worker_client, running_operation_factory):
    operation = running_operation_factory(worker__worker_id=WORKER_ID, status=S.FAILED, error_message="boom")

    response = worker_client.post(
        REGISTER_URL,
        {
            "worker_id": WORKER_ID,
            "completed_operations": [{"operation_id": operation.operation_id, "status": "COMPLETED",
                                      "attempt": operation.attempt}],
        },
        format="json",
    )

    assert response.json()["completed_operations"] == [{"operation_id": operation.operation_id, "applied": False}]
    row = Operation.objects.get(pk=operation.operation_id)
    assert (row.status, row.error_message) == (S.FAILED, "boom")


def test_register_tells_the_worker_to_stop_a_cancelled_operation(worker_client, running_operation_factory):
    operation = running_operation_factory(worker__worker_id=WORKER_ID, status=S.CANCELLED)

    response = worker_client.post(
        REGISTER_URL,
        {"worker_id": WORKER_ID, "current_operation_id": operation.operation_id, "current_attempt": operation.attempt},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["action"] == "stop"
    assert response.json()["operation"]["status"] == "CANCELLED"
    assert response.json()["worker"]["status"] == "IDLE"
    assert Operation.objects.get(pk=operation.operation_id).status == S.CANCELLED


def test_register_brings_back_an_operation_pending_reconciliation(worker_client, running_operation_factory):
    operation = running_operation_factory(worker__worker_id=WORKER_ID, status=S.PENDING_RECONCILIATION)

    response = worker_client.post(
        REGISTER_URL,
        {"worker_id": WORKER_ID, "current_operation_id": operation.operation_id, "current_attempt": 1},
        format="json",
    )

    assert response.json()["action"] == "continue"
    assert Operation.objects.get(pk=operation.operation_id).status == S.RUNNING


# --- heartbeats


def test_heartbeat_says_continue_and_later_carries_the_cancel_request(
    user, user_client, worker_client, running_operation_factory
):
    operation = running_operation_factory(owner=user, worker__worker_id=WORKER_ID)
    beat = {"operation_id": operation.operation_id, "attempt": operation.attempt}

    before_cancel = worker_client.post(heartbeat_url(WORKER_ID), beat, format="json")
    assert user_client.post(f"/api/v1/operations/{operation.operation_id}/cancel/").status_code == 202
    after_cancel = worker_client.post(heartbeat_url(WORKER_ID), beat, format="json")

    assert before_cancel.status_code == 200
    assert before_cancel.json()["action"] == "continue"
    assert before_cancel.json()["operation"]["cancel_requested"] is False
    assert before_cancel.json()["operation"]["cancel_requested_at"] is None
    assert after_cancel.status_code == 200
    # It keeps running until the worker has saved its checkpoint and acknowledged.
    assert after_cancel.json()["action"] == "continue"
    assert after_cancel.json()["operation"]["cancel_requested"] is True
    assert after_cancel.json()["operation"]["cancel_requested_at"] is not None
    assert Operation.objects.get(pk=operation.operation_id).status == S.RUNNING


def test_heartbeat_says_stop_when_the_operation_was_resumed_elsewhere(
    worker_client, running_operation_factory, worker_factory
):
    operation = running_operation_factory(worker__worker_id=WORKER_ID)
    elsewhere = worker_factory()
    Operation.objects.filter(pk=operation.pk).update(worker=elsewhere, attempt=2)
    before = Operation.objects.filter(pk=operation.pk).values().get()

    response = worker_client.post(
        heartbeat_url(WORKER_ID),
        {"operation_id": operation.operation_id, "attempt": 1, "progress": {"current": 99}},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["action"] == "stop"
    assert response.json()["operation"]["action"] == "stop"
    assert response.json()["worker"]["status"] == "IDLE"
    assert Operation.objects.filter(pk=operation.pk).values().get() == before


def test_heartbeat_with_a_stale_attempt_is_fenced_out(worker_client, running_operation_factory):
    operation = running_operation_factory(worker__worker_id=WORKER_ID, attempt=3)
    before = Operation.objects.filter(pk=operation.pk).values().get()

    response = worker_client.post(
        heartbeat_url(WORKER_ID),
        {"operation_id": operation.operation_id, "attempt": 2, "progress": {"current": 7}},
        format="json",
    )

    assert response.json()["action"] == "stop"
    assert Operation.objects.filter(pk=operation.pk).values().get() == before


def test_heartbeat_with_progress_updates_the_operation(user, user_client, worker_client, running_operation_factory):
    operation = running_operation_factory(owner=user, worker__worker_id=WORKER_ID)
    old_heartbeat = operation.last_heartbeat_at

    response = worker_client.post(
        heartbeat_url(WORKER_ID),
        {
            "operation_id": operation.operation_id,
            "attempt": 1,
            "progress": {"current": 4, "total": 10, "unit": "epochs", "percent": 40, "message": "Epoch 4/10"},
        },
        format="json",
    )

    assert response.status_code == 200
    row = Operation.objects.get(pk=operation.operation_id)
    assert (row.progress_current, row.progress_total, row.progress_unit) == (4, 10, "epochs")
    assert (row.progress_percent, row.progress_message) == (40.0, "Epoch 4/10")
    assert row.last_heartbeat_at > old_heartbeat
    detail = user_client.get(f"/api/v1/operations/{operation.operation_id}/").json()
    assert detail["progress"] == {"current": 4, "total": 10, "unit": "epochs"}
    assert detail["progress_percent"] == 40.0
    assert detail["progress_message"] == "Epoch 4/10"


def test_heartbeat_with_partial_progress_leaves_the_rest(worker_client, running_operation_factory):
    operation = running_operation_factory(
        worker__worker_id=WORKER_ID, progress_current=1, progress_total=10, progress_unit="epochs"
    )

    worker_client.post(
        heartbeat_url(WORKER_ID),
        {"operation_id": operation.operation_id, "attempt": operation.attempt, "progress": {"current": 2}},
        format="json",
    )

    row = Operation.objects.get(pk=operation.operation_id)
    assert (row.progress_current, row.progress_total, row.progress_unit) == (2, 10, "epochs")


def test_heartbeat_revives_an_operation_pending_reconciliation(worker_client, running_operation_factory):
    operation = running_operation_factory(worker__worker_id=WORKER_ID, status=S.PENDING_RECONCILIATION)
    Worker.objects.filter(pk=WORKER_ID).update(status=WorkerStatus.UNAVAILABLE)

    response = worker_client.post(
        heartbeat_url(WORKER_ID), {"operation_id": operation.operation_id, "attempt": 1}, format="json"
    )

    assert response.json()["action"] == "continue"
    assert Operation.objects.get(pk=operation.operation_id).status == S.RUNNING
    worker = Worker.objects.get(pk=WORKER_ID)
    assert (worker.status, worker.current_operation_id) == (WorkerStatus.BUSY, operation.operation_id)


def test_heartbeat_without_an_operation_refreshes_the_worker(worker_client, worker_factory):
    worker = worker_factory(last_seen_at=timezone.now() - timedelta(minutes=5))

    response = worker_client.post(heartbeat_url(worker.worker_id), {}, format="json")

    assert response.status_code == 200
    assert response.json()["action"] == "continue"
    assert response.json()["operation"] is None
    assert Worker.objects.get(pk=worker.worker_id).last_seen_at > worker.last_seen_at


# --- reading workers


def test_worker_list_and_detail(worker_client, staff_client, worker_factory, running_operation_factory):
    idle = worker_factory(worker_id="a-host:resilient:1", capabilities={"device": "cpu"})
    busy_operation = running_operation_factory(worker__worker_id="b-host:resilient:2")
    Worker.objects.filter(pk="b-host:resilient:2").update(current_operation=busy_operation)

    listing = worker_client.get(LIST_URL)
    detail = staff_client.get(worker_url("b-host:resilient:2"))

    assert listing.status_code == 200
    assert [w["worker_id"] for w in listing.json()["results"]] == [idle.worker_id, "b-host:resilient:2"]
    assert listing.json()["results"][0]["capabilities"] == {"device": "cpu"}
    assert detail.status_code == 200
    assert detail.json()["worker_id"] == "b-host:resilient:2"
    assert detail.json()["host"] == "b-host"
    assert detail.json()["pid"] == 2
    assert detail.json()["status"] == "BUSY"
    assert detail.json()["current_operation"] == busy_operation.operation_id


def test_unknown_worker_is_a_404(worker_client):
    response = worker_client.get(worker_url("nowhere:resilient:1"))

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "WORKER_NOT_FOUND"
    assert body["details"] == {"worker_id": "nowhere:resilient:1"}


@pytest.mark.parametrize("bad_id", ["not-a-worker", "host:cluster", "host:cluster:pid", "a b:c:1", "h:c:1:2"])
def test_malformed_worker_id_is_a_400_naming_it(worker_client, bad_id):
    responses = [worker_client.get(worker_url(bad_id)), worker_client.post(heartbeat_url(bad_id), {}, format="json")]
    for response in responses:
        assert response.status_code == 400
        assert response.json()["code"] == "VALIDATION_ERROR"
        assert "'worker_id'" in response.json()["detail"]
    assert Worker.objects.count() == 0
