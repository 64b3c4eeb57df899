"""GET/POST /api/v1/operations/…: listing, filters, visibility, detail and cancel over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from operations.models import Operation, OperationEvent, OperationStatus

pytestmark = pytest.mark.django_db

S = OperationStatus
LIST_URL = "/api/v1/operations/"
# Well formed, but no such operation.
MISSING_ID = "op_training_20240101_120000_0123abcd"


def detail_url(operation_id: str) -> str:
    return f"/api/v1/operations/{operation_id}/"


def cancel_url(operation_id: str) -> str:
    return f"/api/v1/operations/{operation_id}/cancel/"


def db_row(operation_id: str) -> dict:
    """Everything a refusal must leave alone."""
    return Operation.objects.filter(pk=operation_id).values().get()


def event_count(operation_id: str) -> int:
    return OperationEvent.objects.filter(operation_id=operation_id).count()


# --- list: pagination


def test_list_is_paginated_newest_first(user, user_client, operation_factory):
    base = timezone.now() - timedelta(hours=1)
    created = [operation_factory(owner=user, created_at=base + timedelta(minutes=i)) for i in range(5)]
    newest_first = [operation.operation_id for operation in reversed(created)]

    first = user_client.get(LIST_URL, {"page_size": 2})
    second = user_client.get(LIST_URL, {"page_size": 2, "page": 2})
    last = user_client.get(LIST_URL, {"page_size": 2, "page": 3})

    assert first.status_code == 200
    assert first.json()["count"] == 5
    assert [op["operation_id"] for op in first.json()["results"]] == newest_first[:2]
    assert first.json()["previous"] is None
    assert "page=2" in first.json()["next"]
    assert [op["operation_id"] for op in second.json()["results"]] == newest_first[2:4]
    assert [op["operation_id"] for op in last.json()["results"]] == newest_first[4:]
    assert last.json()["next"] is None


def test_list_page_past_the_end_is_a_json_404(user, user_client, operation_factory):
    operation_factory(owner=user)

    response = user_client.get(LIST_URL, {"page": 9})

    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_list_item_carries_the_operation_fields(user, user_client, operation_factory):
    operation = operation_factory(owner=user, progress_current=2, progress_total=10, progress_unit="epochs")

    item = user_client.get(LIST_URL).json()["results"][0]

    assert item["operation_id"] == operation.operation_id
    assert item["operation_type"] == "training"
    assert item["status"] == "PENDING"
    assert item["owner"] == user.username
    assert item["params"] == {"symbol": "SYN", "timeframe": "1h"}
    assert item["progress"] == {"current": 2, "total": 10, "unit": "epochs"}


# --- list: filters


def test_list_filters_by_status(user, user_client, operation_factory, running_operation_factory):
    pending = operation_factory(owner=user)
    running = running_operation_factory(owner=user)
    operation_factory(owner=user, status=S.COMPLETED)

    running_only = user_client.get(LIST_URL, {"status": "RUNNING"})
    pending_only = user_client.get(LIST_URL, {"status": "PENDING"})

    assert running_only.status_code == 200
    assert [op["operation_id"] for op in running_only.json()["results"]] == [running.operation_id]
    assert [op["operation_id"] for op in pending_only.json()["results"]] == [pending.operation_id]


def test_list_filters_by_type(user, user_client, operation_factory):
    training = operation_factory(owner=user, operation_type="training")
    backtest = operation_factory(owner=user, operation_type="backtesting")

    response = user_client.get(LIST_URL, {"type": "backtesting"})

    assert response.status_code == 200
    assert [op["operation_id"] for op in response.json()["results"]] == [backtest.operation_id]
    assert training.operation_id not in str(response.json())


def test_list_combines_status_and_type(user, user_client, operation_factory):
    wanted = operation_factory(owner=user, operation_type="backtesting", status=S.FAILED)
    operation_factory(owner=user, operation_type="training", status=S.FAILED)
    operation_factory(owner=user, operation_type="backtesting", status=S.PENDING)

    response = user_client.get(LIST_URL, {"type": "backtesting", "status": "FAILED"})

    assert [op["operation_id"] for op in response.json()["results"]] == [wanted.operation_id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "EXPLODED"}, "status"),
        ({"status": "running"}, "status"),
        ({"type": "mining"}, "type"),
        ({"type": "x" * 5000}, "type"),
    ],
)
def test_list_invalid_filter_is_a_400_naming_the_field(user_client, params, field):
    response = user_client.get(LIST_URL, params)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert f"'{field}'" in body["detail"]
    assert field in body["details"]


# --- visibility


def test_owner_sees_only_their_own_operations(user, other_user, user_client, operation_factory):
    mine = operation_factory(owner=user)
    operation_factory(owner=other_user)
    operation_factory(owner=None)  # made from the command line

    response = user_client.get(LIST_URL)

    assert response.json()["count"] == 1
    assert [op["operation_id"] for op in response.json()["results"]] == [mine.operation_id]


def test_staff_see_every_operation(user, other_user, staff_client, operation_factory):
    operations = [operation_factory(owner=user), operation_factory(owner=other_user), operation_factory(owner=None)]

    listing = staff_client.get(LIST_URL)

    assert listing.json()["count"] == 3
    assert {op["operation_id"] for op in listing.json()["results"]} == {op.operation_id for op in operations}
    for operation in operations:
        assert staff_client.get(detail_url(operation.operation_id)).status_code == 200


def test_another_users_operation_is_a_404_on_detail(other_user, user_client, operation_factory):
    theirs = operation_factory(owner=other_user)

    response = user_client.get(detail_url(theirs.operation_id))

    assert response.status_code == 404
    assert response.json()["code"] == "OPERATION_NOT_FOUND"
    # Indistinguishable from an operation that does not exist at all.
    missing = user_client.get(detail_url(MISSING_ID))
    assert missing.status_code == 404
    assert missing.json()["code"] == "OPERATION_NOT_FOUND"


def test_another_users_operation_is_a_404_on_cancel_and_stays_as_it_was(
    other_user, user_client, operation_factory
):
    theirs = operation_factory(owner=other_user)
    before = db_row(theirs.operation_id)

    response = user_client.post(cancel_url(theirs.operation_id))

    assert response.status_code == 404
    assert response.json()["code"] == "OPERATION_NOT_FOUND"
    assert db_row(theirs.operation_id) == before
    assert event_count(theirs.operation_id) == 0


def test_cancel_of_an_operation_that_does_not_exist_is_a_404(user_client):
    response = user_client.post(cancel_url(MISSING_ID))

    assert response.status_code == 404
    assert response.json()["code"] == "OPERATION_NOT_FOUND"
    assert not Operation.objects.filter(pk=MISSING_ID).exists()


def test_staff_can_cancel_another_users_operation(user, staff_client, operation_factory):
    operation = operation_factory(owner=user)

    response = staff_client.post(cancel_url(operation.operation_id))

    assert response.status_code == 200
    assert Operation.objects.get(pk=operation.operation_id).status == S.CANCELLED


# --- detail


def test_detail_has_progress_and_recent_events(user, user_client, running_operation_factory):
    operation = running_operation_factory(
        owner=user, progress_current=3, progress_total=20, progress_unit="epochs", progress_percent=15.0
    )
    OperationEvent.objects.create(
        operation=operation, from_status="", to_status=S.PENDING, reason="Created", actor="user:x",
        at=timezone.now() - timedelta(minutes=2),
    )
    OperationEvent.objects.create(
        operation=operation, from_status=S.PENDING, to_status=S.RUNNING, reason="Claimed by worker",
        actor="worker:w", at=timezone.now() - timedelta(minutes=1),
    )

    response = user_client.get(detail_url(operation.operation_id))

    assert response.status_code == 200
    body = response.json()
    assert body["operation_id"] == operation.operation_id
    assert body["status"] == "RUNNING"
    assert body["worker"] == operation.worker_id
    assert body["progress"] == {"current": 3, "total": 20, "unit": "epochs"}
    assert body["progress_percent"] == 15.0
    # Newest first.
    assert [(e["from_status"], e["to_status"]) for e in body["recent_events"]] == [
        ("PENDING", "RUNNING"),
        ("", "PENDING"),
    ]
    assert body["recent_events"][0]["reason"] == "Claimed by worker"
    assert body["recent_events"][0]["actor"] == "worker:w"


def test_detail_of_a_new_operation_has_empty_progress(user, user_client, operation_factory):
    operation = operation_factory(owner=user)

    body = user_client.get(detail_url(operation.operation_id)).json()

    assert body["progress"] == {"current": 0, "total": None, "unit": ""}
    assert body["recent_events"] == []


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-an-id",
        "op_mining_20240101_120000_0123abcd",  # unknown type
        "op_training_20241399_120000_0123abcd",  # impossible date
        "op_training_20240101_120000_0123ABCD",  # upper-case hex
        "op_training_20240101_120000_0123abcd0",  # one character too many
        "x" * 3000,
    ],
)
def test_invalid_operation_id_in_the_url_is_a_400_naming_it(user_client, bad_id):
    for response in (user_client.get(detail_url(bad_id)), user_client.post(cancel_url(bad_id))):
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "VALIDATION_ERROR"
        assert "'operation_id'" in body["detail"]
        assert "operation_id" in body["details"]


# --- cancel


def test_cancel_pending_is_immediate(user, user_client, operation_factory):
    operation = operation_factory(owner=user)

    response = user_client.post(cancel_url(operation.operation_id))

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "CANCELLED"
    assert body["recent_events"][0]["from_status"] == "PENDING"
    assert body["recent_events"][0]["to_status"] == "CANCELLED"
    assert body["recent_events"][0]["actor"] == f"user:{user.username}"
    row = Operation.objects.get(pk=operation.operation_id)
    assert row.status == S.CANCELLED
    assert row.completed_at is not None
    assert row.version == operation.version + 1
    assert OperationEvent.objects.filter(
        operation_id=operation.operation_id, from_status=S.PENDING, to_status=S.CANCELLED
    ).count() == 1


def test_cancel_resuming_is_immediate(user, user_client, operation_factory):
    operation = operation_factory(owner=user, status=S.RESUMING)

    response = user_client.post(cancel_url(operation.operation_id))

    assert response.status_code == 200
    assert Operation.objects.get(pk=operation.operation_id).status == S.CANCELLED


def test_cancel_running_is_a_request_its_worker_acknowledges(user, user_client, running_operation_factory):
    operation = running_operation_factory(owner=user)

    response = user_client.post(cancel_url(operation.operation_id))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "RUNNING"
    assert body["cancel_requested_at"] is not None
    row = Operation.objects.get(pk=operation.operation_id)
    assert row.status == S.RUNNING
    assert row.cancel_requested_at is not None
    assert row.worker_id == operation.worker_id
    assert OperationEvent.objects.filter(operation_id=operation.operation_id, reason="Cancel requested").count() == 1


def test_second_cancel_of_a_running_operation_changes_nothing(user, user_client, running_operation_factory):
    operation = running_operation_factory(owner=user)
    user_client.post(cancel_url(operation.operation_id))
    after_first = db_row(operation.operation_id)
    events_after_first = event_count(operation.operation_id)

    response = user_client.post(cancel_url(operation.operation_id))

    assert response.status_code == 202
    assert response.json()["status"] == "RUNNING"
    assert db_row(operation.operation_id) == after_first
    assert event_count(operation.operation_id) == events_after_first


@pytest.mark.parametrize("terminal", [S.COMPLETED, S.FAILED, S.CANCELLED])
def test_cancel_of_a_terminal_operation_is_a_409_and_changes_nothing(
    user, user_client, operation_factory, terminal
):
    operation = operation_factory(owner=user, status=terminal, completed_at=timezone.now())
    before = db_row(operation.operation_id)

    response = user_client.post(cancel_url(operation.operation_id))

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "OPERATION_NOT_CANCELLABLE"
    assert terminal in body["detail"]
    assert body["details"] == {"operation_id": operation.operation_id, "current_status": terminal}
    assert db_row(operation.operation_id) == before
    assert event_count(operation.operation_id) == 0


def test_cancel_is_post_only(user, user_client, operation_factory):
    operation = operation_factory(owner=user)

    response = user_client.get(cancel_url(operation.operation_id))

    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert Operation.objects.get(pk=operation.operation_id).status == S.PENDING


# --- authentication


def test_no_credential_is_a_401(anonymous_client, user, operation_factory):
    operation = operation_factory(owner=user)
    before = db_row(operation.operation_id)

    responses = [
        anonymous_client.get(LIST_URL),
        anonymous_client.get(detail_url(operation.operation_id)),
        anonymous_client.post(cancel_url(operation.operation_id)),
    ]

    for response in responses:
        assert response.status_code == 401
        assert response.json()["code"] == "NOT_AUTHENTICATED"
    assert db_row(operation.operation_id) == before


def test_a_bad_token_is_a_401(user, operation_factory):
    operation_factory(owner=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(LIST_URL)

    assert response.status_code == 401
    assert response.json()["code"] == "AUTHENTICATION_FAILED"


def test_session_auth_with_force_login(user, other_user, operation_factory):
    mine = operation_factory(owner=user)
    operation_factory(owner=other_user)
    client = APIClient()
    client.force_login(user)

    listing = client.get(LIST_URL)
    cancel = client.post(cancel_url(mine.operation_id))

    assert listing.status_code == 200
    assert [op["operation_id"] for op in listing.json()["results"]] == [mine.operation_id]
    assert cancel.status_code == 200
    assert Operation.objects.get(pk=mine.operation_id).status == S.CANCELLED


def test_session_auth_with_password_login(user, operation_factory):
    mine = operation_factory(owner=user)
    client = APIClient()
    assert client.login(username=user.username, password="secret-pass")

    response = client.get(detail_url(mine.operation_id))

    assert response.status_code == 200
    assert response.json()["operation_id"] == mine.operation_id
