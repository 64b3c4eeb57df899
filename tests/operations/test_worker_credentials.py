"""A worker machine's credential: made and revoked by a command and in the admin, shown once, kept as a digest,
and good only for the worker ids of its host and the runs they hold."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from operations.models import Operation, OperationEvent, Worker, WorkerCredential
from operations.models import OperationStatus as S
from operations.services.credentials import credential_create
from tests.factories import OperationFactory, UserFactory
from tests.support.commands import assert_refused_by_name, command_output

pytestmark = pytest.mark.django_db

HOST = "gpu-box-1"
MINE = f"{HOST}:resilient:4242"
OTHER_HOSTS = "gpu-box-2:resilient:4242"
REGISTER = "/api/v1/workers/register/"


def heartbeat(worker_id: str) -> str:
    return f"/api/v1/workers/{worker_id}/heartbeat/"


def machine(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Worker {key}")
    return client


@pytest.fixture
def key() -> str:
    return credential_create(host=HOST, actor="test")[1]


def running_on(worker_id: str, attempt: int = 2) -> Operation:
    operation = OperationFactory(status=S.RUNNING, attempt=attempt)
    Worker.objects.create(worker_id=worker_id, host=worker_id.split(":")[0], pid=int(worker_id.split(":")[2]))
    Operation.objects.filter(pk=operation.pk).update(worker_id=worker_id)
    return Operation.objects.get(pk=operation.pk)


def report(operation: Operation, attempt: int, status: str = "COMPLETED") -> dict:
    return {"operation_id": operation.pk, "status": status, "attempt": attempt, "result": {"forged": True}}


# --- bound to its host

def test_a_credential_acts_for_the_worker_ids_of_its_host(key):
    response = machine(key).post(REGISTER, {"worker_id": MINE}, format="json")

    assert response.status_code == 200
    assert machine(key).post(heartbeat(MINE), {}, format="json").status_code == 200
    assert Worker.objects.get(pk=MINE).host == HOST


def test_a_credential_is_refused_for_another_hosts_worker_id(key):
    theirs = running_on(OTHER_HOSTS)
    before = list(Operation.objects.values())

    refused = [
        machine(key).post(REGISTER, {"worker_id": OTHER_HOSTS, "completed_operations": [report(theirs, 2)]},
                          format="json"),
        machine(key).post(heartbeat(OTHER_HOSTS), {"operation_id": theirs.pk, "attempt": 2}, format="json"),
    ]

    assert [response.status_code for response in refused] == [403, 403]
    assert {response.json()["code"] for response in refused} == {"WORKER_OF_ANOTHER_HOST"}
    assert HOST in refused[0].json()["detail"] and OTHER_HOSTS in refused[0].json()["detail"]
    assert list(Operation.objects.values()) == before


def test_a_report_for_a_run_this_worker_does_not_hold_changes_nothing(key):
    elsewhere = running_on(f"{HOST}:resilient:1")  # another process of the same host
    mine = running_on(MINE, attempt=2)
    before = list(Operation.objects.values())

    response = machine(key).post(
        REGISTER, {"worker_id": MINE, "completed_operations": [report(elsewhere, 2), report(mine, 1)]},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["completed_operations"] == [
        {"operation_id": elsewhere.pk, "applied": False}, {"operation_id": mine.pk, "applied": False},
    ]
    assert list(Operation.objects.values()) == before


def test_a_report_without_its_attempt_is_refused_naming_the_field(key):
    mine = running_on(MINE)
    body = {"operation_id": mine.pk, "status": "COMPLETED", "result": {}}

    response = machine(key).post(REGISTER, {"worker_id": MINE, "completed_operations": [body]}, format="json")
    beat = machine(key).post(heartbeat(MINE), {"operation_id": mine.pk}, format="json")

    assert response.status_code == beat.status_code == 400
    assert "completed_operations[0].attempt" in response.json()["detail"]
    assert "'attempt'" in beat.json()["detail"]
    assert Operation.objects.get(pk=mine.pk).status == S.RUNNING


def test_a_heartbeat_for_an_unknown_operation_creates_nothing(key):
    unknown = "op_training_20261204_101500_0badc0de"

    response = machine(key).post(heartbeat(MINE), {"operation_id": unknown, "attempt": 1}, format="json")

    assert response.status_code == 200 and response.json()["action"] == "stop"
    assert not Operation.objects.filter(pk=unknown).exists()


def test_every_event_names_the_credential_as_well_as_the_worker(key):
    mine = running_on(MINE)
    credential = WorkerCredential.objects.get()

    response = machine(key).post(REGISTER, {"worker_id": MINE, "completed_operations": [report(mine, 2)]},
                                 format="json")

    assert response.json()["completed_operations"] == [{"operation_id": mine.pk, "applied": True}]
    event = OperationEvent.objects.filter(operation_id=mine.pk, to_status=S.COMPLETED).get()
    assert (event.actor, event.principal) == (f"worker:{MINE}", f"credential:{credential.prefix}@{HOST}")


def test_a_user_acting_as_a_worker_is_named_in_the_events(worker_client, worker_account):
    mine = running_on(MINE)

    worker_client.post(REGISTER, {"worker_id": MINE, "completed_operations": [report(mine, 2)]}, format="json")

    event = OperationEvent.objects.filter(operation_id=mine.pk, to_status=S.COMPLETED).get()
    assert event.principal == f"user:{worker_account.username}"


# --- a credential is for the worker endpoints only

def test_a_worker_credential_reaches_nothing_but_the_worker_endpoints(key):
    OperationFactory(owner=UserFactory())

    for path in ("/api/v1/operations/", "/api/v1/checkpoints/", "/api/v1/training/", "/api/v1/agents/assessments/"):
        response = machine(key).get(path)
        assert response.status_code == 401, path


def test_an_unknown_or_revoked_key_is_refused(key):
    prefix = WorkerCredential.objects.get().prefix
    command_output("workercredentials", "revoke", prefix)

    for client in (machine(key), machine(key[:-2] + "xx"), machine("not-a-key")):
        response = client.post(REGISTER, {"worker_id": MINE}, format="json")
        assert response.status_code == 401
        assert response.json()["code"] == "AUTHENTICATION_FAILED"
    assert not Worker.objects.exists()


# --- made, listed and revoked

def test_the_command_prints_the_key_once_and_keeps_only_its_digest():
    key = command_output("workercredentials", "create", "--host", HOST, "--description", "rack 3").strip()
    credential = WorkerCredential.objects.get()

    assert key.startswith("wk_") and len(key) > 40 and key.startswith(credential.prefix)
    assert key not in str(list(WorkerCredential.objects.values()))
    listing = command_output("workercredentials", "list")
    assert credential.prefix in listing and HOST in listing and "rack 3" in listing and key not in listing
    assert machine(key).post(REGISTER, {"worker_id": MINE}, format="json").status_code == 200


@pytest.mark.parametrize("host", ["gpu box", "a:b", "", "../x"])
def test_a_bad_host_is_refused_naming_the_option(host):
    assert_refused_by_name(lambda: command_output("workercredentials", "create", "--host", host), "--host")
    assert not WorkerCredential.objects.exists()


def test_revoking_an_unknown_prefix_is_a_clear_error():
    with pytest.raises(CommandError, match="WORKER_CREDENTIAL_NOT_FOUND"):
        command_output("workercredentials", "revoke", "wk_nothing1")


def test_the_admin_makes_a_credential_and_shows_its_key_once(admin_client):
    response = admin_client.post(reverse("admin:operations_workercredential_add"),
                                 {"host": HOST, "description": "from the admin"}, follow=True)

    credential = WorkerCredential.objects.get()
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) >= 1 and credential.prefix in shown[0]
    key = shown[0].rsplit(" ", 1)[1]
    assert machine(key).post(REGISTER, {"worker_id": MINE}, format="json").status_code == 200
    again = admin_client.get(reverse("admin:operations_workercredential_change", args=[credential.pk]))
    assert key not in again.content.decode()


def test_the_admin_revokes_with_the_change_permission_only(key):
    credential = WorkerCredential.objects.get()
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workercredential"))
    client = Client()
    client.force_login(viewer)
    changelist = reverse("admin:operations_workercredential_changelist")

    client.post(changelist, {"action": "revoke", "_selected_action": [credential.pk]})
    assert WorkerCredential.objects.get().revoked_at is None

    root = Client()
    root.force_login(UserFactory(is_staff=True, is_superuser=True))
    root.post(changelist, {"action": "revoke", "_selected_action": [credential.pk]})
    assert WorkerCredential.objects.get().revoked_at is not None
    assert machine(key).post(REGISTER, {"worker_id": MINE}, format="json").status_code == 401
