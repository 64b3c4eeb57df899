"""The usual heartbeat over HTTP is answered without DRF (operations/api/heartbeat.py), in one statement that checks
the worker credential too; everything else falls through to the DRF view. Both paths must answer alike: the same
bodies accepted, the same values stored, the same reply."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from operations.api import views
from operations.api.heartbeat import worker_body
from operations.api.serializers import WorkerSerializer
from operations.api.throttling import CredentialCalls
from operations.models import Operation, Worker, WorkerCredential, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.credentials import credential_create, credential_revoke
from tests.operations.test_heartbeat_cost import HOST, WORKER
from tests.operations.test_heartbeat_cost import running as running  # a fixture

pytestmark = pytest.mark.django_db

PATH = f"/api/v1/workers/{WORKER}/heartbeat/"
PROGRESS_FIELDS = ("progress_current", "progress_total", "progress_unit", "progress_percent", "progress_message")


@pytest.fixture(autouse=True)
def fresh_counts():
    cache.clear()  # the throttles' counts
    yield
    cache.clear()


@pytest.fixture
def key() -> str:
    return credential_create(host=HOST, actor="test")[1]


@pytest.fixture
def client(key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Worker {key}")
    return client


@pytest.fixture
def lean_calls(monkeypatch) -> list:
    """The lean path's answers: a response, or None where it left the request to the view."""
    answers = []
    lean = views.lean_heartbeat

    def counted(request, worker_id):
        answers.append(lean(request, worker_id))
        return answers[-1]

    monkeypatch.setattr(views, "lean_heartbeat", counted)
    return answers


def post(client: APIClient, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(PATH, data, content_type="application/json", **extra)


def test_the_usual_heartbeat_is_one_statement_credential_and_all(running, client, lean_calls):
    body = {"operation_id": running.pk, "attempt": 3, "progress": {"current": 8, "total": 30, "percent": 26.7}}
    with CaptureQueriesContext(connection) as queries:
        answer = post(client, body)
    assert answer.status_code == 200, answer.content
    assert lean_calls[-1] is answer
    assert len(queries.captured_queries) == 1, queries.captured_queries
    operation = Operation.objects.get(pk=running.pk)
    assert (operation.progress_current, operation.progress_total, operation.progress_percent) == (8, 30, 26.7)
    assert WorkerCredential.objects.get().last_used_at is not None


def test_both_paths_reply_alike(running, client, monkeypatch):
    body = {"operation_id": running.pk, "attempt": 3, "progress": {"current": 4, "unit": "epochs"}}
    lean = post(client, body)
    monkeypatch.setattr(views, "lean_heartbeat", lambda request, worker_id: None)
    full = post(client, body)
    assert lean.status_code == full.status_code == 200
    for header in ("Content-Type", "Vary", "Allow"):
        assert lean[header] == full[header], header
    lean_body, full_body = lean.json(), full.json()
    assert lean_body["worker"].pop("last_seen_at") <= full_body["worker"].pop("last_seen_at")
    assert lean_body == full_body


def test_the_reply_shows_a_worker_as_the_worker_endpoints_do(running):
    worker = Worker.objects.get(pk=WORKER)
    worker.capabilities = {"device": "cpu", "cpus": 2, "gpu": None}
    assert worker_body(worker) == WorkerSerializer(worker).data


# Bodies the lean path must judge as the view's serializer does: taken and stored alike, or refused alike.
BODIES = [
    {"progress": {"current": 5}},
    {"progress": {"current": 5, "total": None, "unit": "", "percent": 0, "message": ""}},
    {"progress": {"current": 30, "total": 30, "unit": "epochs", "percent": 100, "message": "done – ✓"}},
    {"progress": {"percent": 12.5}},
    {"progress": {}},
    {},
    {"progress": {"current": "5"}},
    {"progress": {"current": 5.0}},
    {"progress": {"current": True}},
    {"progress": {"current": -1}},
    {"progress": {"current": 2 ** 63}},
    {"progress": {"percent": 100.5}},
    {"progress": {"percent": "50"}},
    {"progress": {"unit": " epochs "}},
    {"progress": {"unit": "x" * 33}},
    {"progress": {"message": "line\nbreak"}},
    {"progress": {"message": "nul\x00"}},
    {"progress": {"message": "m" * 501}},
    {"progress": {"message": None}},
    {"progress": {"curent": 5}},
    {"progres": {"current": 5}},
    {"progress": [5]},
    {"progress": None},
    {"attempt": "3"},
    {"attempt": 2},
    {"attempt": None},
    {"attempt": 0},
    {"attempt": 2 ** 40},
    {"operation_id": None},
    {"operation_id": "op_nothing_20260101_000000_00000000"},
    {"operation_id": 12},
]


@pytest.mark.parametrize("change", BODIES, ids=[json.dumps(body, ensure_ascii=False)[:60] for body in BODIES])
def test_the_lean_path_takes_only_what_the_view_takes_and_stores_the_same(running, client, monkeypatch, change):
    body = {"operation_id": running.pk, "attempt": 3, **change}
    if "progress" in change and change["progress"] is None:
        body["progress"] = None
    initial = {name: getattr(running, name) for name in PROGRESS_FIELDS}

    def outcome():
        answer = post(client, body)
        operation = Operation.objects.get(pk=running.pk)
        stored = {name: getattr(operation, name) for name in PROGRESS_FIELDS}
        Operation.objects.filter(pk=running.pk).update(status=S.RUNNING, worker_id=WORKER, **initial)
        Worker.objects.filter(pk=WORKER).update(status=WorkerStatus.BUSY, current_operation=running)
        reply = answer.json()
        if isinstance(reply.get("worker"), dict):
            reply["worker"].pop("last_seen_at")
        return answer.status_code, stored, reply

    lean = outcome()
    monkeypatch.setattr(views, "lean_heartbeat", lambda request, worker_id: None)
    assert outcome() == lean


@pytest.mark.parametrize("raw", [b'{"operation_id": "x", "attempt": NaN}', b"[1, 2]", b"not json", b"",
                                 b'{"attempt": 3, "attempt": 3}', b'{"progress": {"percent": Infinity}}'])
def test_bodies_that_are_not_plain_json_objects_go_to_the_view(running, client, lean_calls, raw):
    answer = post(client, raw)
    assert lean_calls == [None]  # never taken as plainly valid: the view judged it
    assert answer.status_code in (200, 400), answer.content


def test_a_credential_of_another_host_is_refused_and_writes_nothing(running, lean_calls):
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Worker {credential_create(host='other-box', actor='test')[1]}")
    answer = post(other, {"operation_id": running.pk, "attempt": 3, "progress": {"current": 9}})
    assert answer.status_code == 403, answer.content
    assert lean_calls == [None]
    operation = Operation.objects.get(pk=running.pk)
    assert operation.last_heartbeat_at == running.last_heartbeat_at and operation.progress_current != 9


@pytest.mark.parametrize("how", ["revoked", "unknown", "malformed"])
def test_a_refused_key_writes_nothing_and_gets_the_views_401(running, client, key, lean_calls, how):
    if how == "revoked":
        credential_revoke(prefix=WorkerCredential.objects.get().prefix)
    else:
        client.credentials(HTTP_AUTHORIZATION="Worker " + ("wk_" + "A" * 43 if how == "unknown" else f"{key} more"))
    answer = post(client, {"operation_id": running.pk, "attempt": 3, "progress": {"current": 9}})
    assert answer.status_code == 401, answer.content
    assert lean_calls == [None]
    assert Operation.objects.get(pk=running.pk).last_heartbeat_at == running.last_heartbeat_at


def test_a_credentials_use_is_written_at_most_once_a_minute(running, client):
    body = {"operation_id": running.pk, "attempt": 3}
    post(client, body)
    first = WorkerCredential.objects.get().last_used_at
    post(client, body)
    assert WorkerCredential.objects.get().last_used_at == first
    WorkerCredential.objects.update(last_used_at=timezone.now() - timedelta(minutes=2))
    post(client, body)
    assert WorkerCredential.objects.get().last_used_at > first


def test_the_throttle_counts_both_paths_as_one_credential(settings, running, client, lean_calls):
    settings.API_RATES = {**settings.API_RATES, "worker": "3/minute"}
    body = {"operation_id": running.pk, "attempt": 3}
    assert post(client, body).status_code == 200
    assert post(client, body).status_code == 200
    register = client.post("/api/v1/workers/register/", {"worker_id": WORKER, "worker_type": "api"}, format="json")
    assert register.status_code == 200, register.content  # the view, the same count: the third
    throttled = post(client, body)
    assert throttled.status_code == 429 and "Retry-After" in throttled
    assert lean_calls[0] is not None and lean_calls[1] is not None  # the first two: the lean path
    assert lean_calls[-1] is None  # refused by the count: the view answered 429


def test_anything_else_is_the_views_as_before(running, client, lean_calls):
    Operation.objects.filter(pk=running.pk).update(status=S.CANCELLED)
    answer = post(client, {"operation_id": running.pk, "attempt": 3})
    assert answer.status_code == 200 and answer.json()["action"] == "stop"
    assert lean_calls == [None]
    assert Worker.objects.get(pk=WORKER).status == WorkerStatus.IDLE


def test_a_user_acting_as_a_worker_is_answered_by_the_view(running, worker_client, lean_calls):
    answer = post(worker_client, {"operation_id": running.pk, "attempt": 3, "progress": {"current": 2}})
    assert answer.status_code == 200, answer.content
    assert lean_calls == [None]
    assert Operation.objects.get(pk=running.pk).progress_current == 2


def test_a_credentials_count_starts_again_with_each_window(settings, monkeypatch):
    settings.API_RATES = {**settings.API_RATES, "worker": "2/minute"}
    now = [120.0]
    monkeypatch.setattr(CredentialCalls, "timer", lambda self: now[0])
    calls = [CredentialCalls("d" * 64).allow_request(None, None) for _ in range(3)]
    assert calls == [True, True, False]
    throttle = CredentialCalls("d" * 64)
    assert throttle.allow_request(None, None) is False and throttle.wait() == 60
    assert CredentialCalls("e" * 64).allow_request(None, None)  # another credential: its own count
    now[0] = 180.5
    assert CredentialCalls("d" * 64).allow_request(None, None)


def test_a_kept_connection_plans_the_heartbeat_once(running, client):
    body = {"operation_id": running.pk, "attempt": 3, "progress": {"current": 1}}
    for current in range(3):
        body["progress"]["current"] = current
        assert post(client, body).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", ["%WITH credential%"])
        assert len(cursor.fetchall()) == 1


def test_a_body_over_the_request_limit_is_the_views_413(settings, running, client, lean_calls):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"operation_id": running.pk, "attempt": 3, "progress": {"message": "m" * 2000}}
    assert post(client, body).status_code == 413
    assert lean_calls == [None]
    assert Operation.objects.get(pk=running.pk).last_heartbeat_at == running.last_heartbeat_at
