"""Bad input never yields a 500: every refusal is a JSON 400 naming the field; health, schema, docs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from operations.models import ControlLoop, Operation, OperationEvent, OperationStatus, Worker
from operations.services.reconciliation import sweep_orphans

pytestmark = pytest.mark.django_db

S = OperationStatus
REGISTER_URL = "/api/v1/workers/register/"
WORKER_ID = "box:resilient:77"
OPERATION_ID = "op_training_20240301_090000_00c0ffee"
HUGE = "x" * 1_000_000


def heartbeat_url(worker_id: str = WORKER_ID) -> str:
    return f"/api/v1/workers/{worker_id}/heartbeat/"


def report(**fields) -> dict:
    """One entry of completed_operations, valid unless a field is overridden."""
    return {"operation_id": OPERATION_ID, "status": "COMPLETED", "attempt": 1, **fields}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def running_here(running_operation_factory) -> Operation:
    """OPERATION_ID, RUNNING on WORKER_ID in its first run: bad values reach the writes, not just a lookup."""
    return running_operation_factory(operation_id=OPERATION_ID, worker__worker_id=WORKER_ID, attempt=1)


def case_ids(table: list[tuple[dict, str]]) -> list[str]:
    return [f"{field}-{index}" for index, (_, field) in enumerate(table)]


def assert_refused(response, field: str | None) -> None:
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert isinstance(body["details"], dict)
    if field is not None:
        assert body["detail"].startswith(f"Invalid value for field '{field}':"), body["detail"]


# --- bodies that are not a JSON object


@pytest.mark.parametrize(
    "raw",
    [
        b'{"worker_id": ',
        b"{'worker_id': 'box:resilient:77'}",
        b'{"worker_id": "box:resilient:77",}',
        b'{"worker_id": NaN}',
        b'{"progress": {"percent": Infinity}}',
        b"\xff\xfe\x00garbage",
        b"1" * 5000,  # beyond Python's limit on digits in an integer
        nested(100_000).encode(),
        b'{"capabilities": ' + nested(100_000).encode() + b"}",
    ],
    ids=[
        "truncated",
        "single-quotes",
        "trailing-comma",
        "nan",
        "infinity",
        "not-utf8",
        "too-many-digits",
        "deeply-nested",
        "deeply-nested-field",
    ],
)
@pytest.mark.parametrize("url", [REGISTER_URL, heartbeat_url()])
def test_malformed_json_is_a_400(worker_client, url, raw):
    response = worker_client.post(url, raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert response.json()["detail"].startswith("Malformed request body")
    assert Worker.objects.count() == 0


@pytest.mark.parametrize("payload", [[], [{"worker_id": WORKER_ID}], "box:resilient:77", 42, True, None])
@pytest.mark.parametrize("url", [REGISTER_URL, heartbeat_url()])
def test_a_json_value_that_is_not_an_object_is_a_400(worker_client, url, payload):
    response = worker_client.post(url, json.dumps(payload), content_type="application/json")

    assert_refused(response, field=None)
    assert response.json()["detail"].startswith("Invalid input")
    assert Worker.objects.count() == 0


def test_an_unsupported_content_type_is_a_415(worker_client):
    response = worker_client.post(REGISTER_URL, "worker_id: box:resilient:77", content_type="text/yaml")

    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"


# --- register: every field with a wrong value

REGISTER_BAD_BODIES = [
    ({}, "worker_id"),
    ({"worker_id": None}, "worker_id"),
    ({"worker_id": 12345}, "worker_id"),
    ({"worker_id": ["box:resilient:77"]}, "worker_id"),
    ({"worker_id": "box:resilient"}, "worker_id"),
    ({"worker_id": "box:resilient:-1"}, "worker_id"),
    ({"worker_id": "box:resilient:9999999999"}, "worker_id"),  # a pid no process has
    ({"worker_id": "bad host:resilient:1"}, "worker_id"),
    ({"worker_id": HUGE}, "worker_id"),
    ({"worker_type": ["api"]}, "worker_type"),
    ({"worker_type": {"kind": "api"}}, "worker_type"),
    ({"worker_type": "x" * 33}, "worker_type"),
    ({"worker_type": HUGE}, "worker_type"),
    ({"worker_type": "api\u0000"}, "worker_type"),
    ({"capabilities": ["cuda", "cpu"]}, "capabilities"),
    ({"capabilities": "cuda"}, "capabilities"),
    ({"capabilities": 8}, "capabilities"),
    ({"capabilities": {"device": "cuda\u0000"}}, "capabilities"),
    ({"capabilities": {"dev\u0000ice": "cuda"}}, "capabilities"),
    ({"capabilities": {"gpus": json.loads(nested(500))}}, "capabilities"),  # parses, but too deep to show again
    ({"current_operation_id": "op_42"}, "current_operation_id"),
    ({"current_operation_id": 42}, "current_operation_id"),
    ({"current_operation_id": {"id": OPERATION_ID}}, "current_operation_id"),
    ({"current_operation_id": OPERATION_ID.upper()}, "current_operation_id"),
    ({"current_operation_id": "op_training_20240230_090000_00c0ffee"}, "current_operation_id"),
    ({"current_operation_id": HUGE}, "current_operation_id"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": "first"}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": -1}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": 0}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": 1.5}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": True}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": [1]}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": 10**12}, "current_attempt"),
    ({"current_operation_id": OPERATION_ID, "current_attempt": 10**4000}, "current_attempt"),
    ({"completed_operations": "all of them"}, "completed_operations"),
    ({"completed_operations": {"operation_id": OPERATION_ID}}, "completed_operations"),
    ({"completed_operations": [OPERATION_ID]}, "completed_operations[0]"),
    ({"completed_operations": [report(), None]}, "completed_operations[1]"),
    ({"completed_operations": [report(status="RUNNING")]}, "completed_operations[0].status"),
    ({"completed_operations": [report(status="completed")]}, "completed_operations[0].status"),
    ({"completed_operations": [report(status=None)]}, "completed_operations[0].status"),
    ({"completed_operations": [report(), report(status="DONE")]}, "completed_operations[1].status"),
    ({"completed_operations": [{"status": "COMPLETED"}]}, "completed_operations[0].operation_id"),
    ({"completed_operations": [report(operation_id="op_nope")]}, "completed_operations[0].operation_id"),
    ({"completed_operations": [report(operation_id=HUGE)]}, "completed_operations[0].operation_id"),
    ({"completed_operations": [report(attempt="second")]}, "completed_operations[0].attempt"),
    ({"completed_operations": [report(attempt=-3)]}, "completed_operations[0].attempt"),
    ({"completed_operations": [report(attempt=10**12)]}, "completed_operations[0].attempt"),
    ({"completed_operations": [report(error_message=["boom"])]}, "completed_operations[0].error_message"),
    ({"completed_operations": [report(error_message=HUGE)]}, "completed_operations[0].error_message"),
    ({"completed_operations": [report(completed_at="yesterday")]}, "completed_operations[0].completed_at"),
    ({"completed_operations": [report(completed_at=1700000000)]}, "completed_operations[0].completed_at"),
    (
        {"completed_operations": [report(completed_at="9999-12-31T23:59:59-14:00")]},
        "completed_operations[0].completed_at",
    ),
    ({"completed_operations": [report(result={"note": "\u0000"})]}, "completed_operations[0].result"),
    ({"completed_operations": [report(result=json.loads(nested(500)))]}, "completed_operations[0].result"),
]


@pytest.mark.parametrize(
    ("body", "field"), REGISTER_BAD_BODIES, ids=case_ids(REGISTER_BAD_BODIES)
)
def test_register_with_a_bad_field_is_a_400_naming_it(worker_client, running_here, body, field):
    body = {"worker_id": WORKER_ID, **body} if "worker_id" not in body and body else body
    before = list(Operation.objects.values())
    events_before = OperationEvent.objects.count()

    response = worker_client.post(REGISTER_URL, body, format="json")

    assert_refused(response, field)
    assert list(Operation.objects.values()) == before
    assert OperationEvent.objects.count() == events_before


# --- heartbeat: every field with a wrong value

HEARTBEAT_BAD_BODIES = [
    ({"operation_id": "op_42"}, "operation_id"),
    ({"operation_id": 42}, "operation_id"),
    ({"operation_id": [OPERATION_ID]}, "operation_id"),
    ({"operation_id": HUGE}, "operation_id"),
    ({"operation_id": OPERATION_ID, "attempt": "one"}, "attempt"),
    ({"operation_id": OPERATION_ID, "attempt": -1}, "attempt"),
    ({"operation_id": OPERATION_ID, "attempt": 0}, "attempt"),
    ({"operation_id": OPERATION_ID, "attempt": 2.5}, "attempt"),
    ({"operation_id": OPERATION_ID, "attempt": 10**12}, "attempt"),
    ({"operation_id": OPERATION_ID, "progress": [1, 10]}, "progress"),
    ({"operation_id": OPERATION_ID, "progress": "half"}, "progress"),
    ({"operation_id": OPERATION_ID, "progress": 50}, "progress"),
    ({"operation_id": OPERATION_ID, "progress": {"current": "three"}}, "progress.current"),
    ({"operation_id": OPERATION_ID, "progress": {"current": -1}}, "progress.current"),
    ({"operation_id": OPERATION_ID, "progress": {"current": 3.7}}, "progress.current"),
    ({"operation_id": OPERATION_ID, "progress": {"current": None}}, "progress.current"),
    ({"operation_id": OPERATION_ID, "progress": {"current": 10**30}}, "progress.current"),
    ({"operation_id": OPERATION_ID, "progress": {"total": "ten"}}, "progress.total"),
    ({"operation_id": OPERATION_ID, "progress": {"total": -10}}, "progress.total"),
    ({"operation_id": OPERATION_ID, "progress": {"total": 10**30}}, "progress.total"),
    ({"operation_id": OPERATION_ID, "progress": {"unit": ["epochs"]}}, "progress.unit"),
    ({"operation_id": OPERATION_ID, "progress": {"unit": "x" * 33}}, "progress.unit"),
    ({"operation_id": OPERATION_ID, "progress": {"percent": 150}}, "progress.percent"),
    ({"operation_id": OPERATION_ID, "progress": {"percent": -0.5}}, "progress.percent"),
    ({"operation_id": OPERATION_ID, "progress": {"percent": "most"}}, "progress.percent"),
    ({"operation_id": OPERATION_ID, "progress": {"percent": "NaN"}}, "progress.percent"),
    ({"operation_id": OPERATION_ID, "progress": {"percent": "inf"}}, "progress.percent"),
    ({"operation_id": OPERATION_ID, "progress": {"percent": 10**400}}, "progress.percent"),
    ({"operation_id": OPERATION_ID, "progress": {"message": {"text": "hi"}}}, "progress.message"),
    ({"operation_id": OPERATION_ID, "progress": {"message": HUGE}}, "progress.message"),
    ({"operation_id": OPERATION_ID, "progress": {"message": "nul\u0000"}}, "progress.message"),
]


@pytest.mark.parametrize(
    ("body", "field"), HEARTBEAT_BAD_BODIES, ids=case_ids(HEARTBEAT_BAD_BODIES)
)
def test_heartbeat_with_a_bad_field_is_a_400_naming_it(worker_client, running_here, body, field):
    before = list(Operation.objects.values())
    seen = Worker.objects.get(pk=WORKER_ID).last_seen_at

    response = worker_client.post(heartbeat_url(), body, format="json")

    assert_refused(response, field)
    assert list(Operation.objects.values()) == before
    assert Worker.objects.get(pk=WORKER_ID).last_seen_at == seen


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        (
            REGISTER_URL,
            {"worker_id": WORKER_ID, "current_operation_id": OPERATION_ID, "current_attempt": 2**31},
            "current_attempt",
        ),
        (heartbeat_url(), {"operation_id": OPERATION_ID, "attempt": 2**31}, "attempt"),
    ],
)
def test_an_attempt_too_large_to_store_is_refused_before_an_unknown_operation_is_recorded(
    worker_client, url, body, field
):
    response = worker_client.post(url, body, format="json")

    assert_refused(response, field)
    assert not Operation.objects.exists()


def test_largest_values_that_fit_are_accepted(worker_client, running_operation_factory):
    worker_id = "box:resilient:2147483647"
    running_operation_factory(operation_id=OPERATION_ID, worker__worker_id=worker_id, attempt=2**31 - 1)

    response = worker_client.post(
        REGISTER_URL,
        {"worker_id": worker_id, "current_operation_id": OPERATION_ID, "current_attempt": 2**31 - 1},
        format="json",
    )
    beat = worker_client.post(
        heartbeat_url(worker_id),
        {"operation_id": OPERATION_ID, "attempt": 2**31 - 1, "progress": {"current": 2**63 - 1, "total": 2**63 - 1}},
        format="json",
    )

    assert response.status_code == 200
    assert beat.status_code == 200
    assert beat.json()["action"] == "continue"
    row = Operation.objects.get(pk=OPERATION_ID)
    assert (row.attempt, row.progress_current, row.progress_total) == (2**31 - 1, 2**63 - 1, 2**63 - 1)
    assert Worker.objects.get(pk=worker_id).pid == 2**31 - 1


def test_heartbeat_progress_at_the_limits_is_accepted(worker_client, running_here):
    response = worker_client.post(
        heartbeat_url(),
        {
            "operation_id": OPERATION_ID,
            "attempt": 1,
            "progress": {"current": 0, "total": None, "unit": "", "percent": 100, "message": ""},
        },
        format="json",
    )

    assert response.status_code == 200
    row = Operation.objects.get(pk=OPERATION_ID)
    assert (row.progress_current, row.progress_total, row.progress_percent) == (0, None, 100.0)


def test_the_detail_names_the_field_in_words(worker_client, running_here):
    response = worker_client.post(
        heartbeat_url(), {"operation_id": OPERATION_ID, "progress": {"percent": 150}}, format="json"
    )

    body = response.json()
    assert body["detail"] == (
        "Invalid value for field 'progress.percent': Ensure this value is less than or equal to 100."
    )
    assert body["details"] == {"progress": {"percent": ["Ensure this value is less than or equal to 100."]}}


# --- not found, and no 500 from an odd URL


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nothing-here/",
        "/api/v1/operations/op_training_20240301_090000_00c0ffee/results/",
        "/api/v2/operations/",
    ],
)
def test_unknown_api_url_is_a_json_404(user_client, path):
    response = user_client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "NOT_FOUND"
    assert path in response.json()["detail"]


def test_wrong_method_is_a_json_405(worker_client):
    response = worker_client.get(REGISTER_URL)

    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


# --- health


def test_health_needs_no_credential_and_reports_the_database(anonymous_client):
    response = anonymous_client.get("/api/v1/health/")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "control_loop_started_at": None,
        "last_orphan_sweep_at": None,
        "operations_pending_reconciliation": 0,
    }


def test_health_ignores_a_bad_token(anonymous_client):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    assert anonymous_client.get("/api/v1/health/").status_code == 200


def test_health_reports_the_last_sweep_and_operations_awaiting_reconciliation(
    anonymous_client, running_operation_factory
):
    silent_since = timezone.now() - timedelta(seconds=45)  # stale, not yet orphaned
    stale = [running_operation_factory(last_heartbeat_at=silent_since) for _ in range(2)]
    running_operation_factory()  # alive
    sweep_orphans()

    body = anonymous_client.get("/api/v1/health/").json()

    assert Operation.objects.filter(status=S.PENDING_RECONCILIATION).count() == len(stale)
    assert body["operations_pending_reconciliation"] == 2
    assert body["last_orphan_sweep_at"] is not None
    assert parse_datetime(body["last_orphan_sweep_at"]) == ControlLoop.objects.get().last_sweep_at


# --- schema and docs


def test_schema_is_an_openapi_3_document(anonymous_client):
    response = anonymous_client.get("/api/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Resilient operations API"
    for path in [
        "/api/v1/operations/",
        "/api/v1/operations/{operation_id}/",
        "/api/v1/operations/{operation_id}/cancel/",
        "/api/v1/workers/",
        "/api/v1/workers/register/",
        "/api/v1/workers/{worker_id}/heartbeat/",
        "/api/v1/health/",
    ]:
        assert path in schema["paths"], path


def test_schema_defaults_to_yaml(anonymous_client):
    response = anonymous_client.get("/api/v1/schema/")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_docs_are_an_html_page(anonymous_client):
    response = anonymous_client.get("/api/v1/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()
