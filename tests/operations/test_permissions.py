"""Django permissions decide, in the API and the admin alike; `is_staff` only opens the admin's door.

An owner acts on their own operations without any permission; seeing others' needs view_all_operations, and
acting on them needs the permission of the act (cancel, resume, delete checkpoint). A superuser holds all.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse

from checkpoints.models import Checkpoint, CheckpointType
from operations.models import Operation
from operations.models import OperationStatus as S
from operations.permissions import CANCEL, DELETE_CHECKPOINT, RESUME, VIEW_ALL
from tests.conftest import token_client
from tests.factories import OperationFactory, UserFactory, ViewOnlyStaffFactory, WorkerFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:operations_operation_changelist")
ACTIONS = {"cancel_operations", "resume_operations", "delete_checkpoints"}


def grant(user, *names: str):
    for name in names:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return type(user).objects.get(pk=user.pk)  # permissions are cached on the instance


def cancelled_with_checkpoint(owner) -> Operation:
    operation = OperationFactory(owner=owner, status=S.CANCELLED)
    Checkpoint.objects.create(operation=operation, checkpoint_type=CheckpointType.CANCELLATION, state={"epoch": 3},
                              artifacts_path=f"{operation.pk}/save-1", manifest=[])
    return operation


def offered(user) -> set[str]:
    """The actions the admin's changelist offers the user (no form at all when it offers none)."""
    form = admin_client(user).get(CHANGELIST).context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer():
    return ViewOnlyStaffFactory()


# --- the API

def test_a_staff_user_without_permissions_sees_only_their_own_operations(viewer):
    own, theirs = OperationFactory(owner=viewer), OperationFactory(owner=UserFactory())
    client = token_client(viewer)

    listed = {row["operation_id"] for row in client.get("/api/v1/operations/").json()["results"]}

    assert listed == {own.pk}
    assert client.get(f"/api/v1/operations/{theirs.pk}/").status_code == 404
    for action in ("cancel", "resume"):
        response = client.post(f"/api/v1/operations/{theirs.pk}/{action}/")
        assert response.status_code == 404, action
    assert client.delete(f"/api/v1/checkpoints/{theirs.pk}/").status_code == 404


def test_seeing_everyone_is_not_acting_on_everyone(viewer):
    viewer = grant(viewer, VIEW_ALL)
    theirs = cancelled_with_checkpoint(UserFactory())
    running = OperationFactory(owner=UserFactory(), status=S.PENDING)
    client = token_client(viewer)

    assert client.get(f"/api/v1/operations/{theirs.pk}/").status_code == 200
    refused = [
        client.post(f"/api/v1/operations/{running.pk}/cancel/"),
        client.post(f"/api/v1/operations/{theirs.pk}/resume/"),
        client.delete(f"/api/v1/checkpoints/{theirs.pk}/"),
    ]

    assert [response.status_code for response in refused] == [403, 403, 403]
    assert {response.json()["code"] for response in refused} == {"PERMISSION_DENIED"}
    assert CANCEL in refused[0].json()["detail"] and RESUME in refused[1].json()["detail"]
    assert DELETE_CHECKPOINT in refused[2].json()["detail"]
    assert Operation.objects.get(pk=running.pk).status == S.PENDING  # nothing changed
    assert Operation.objects.get(pk=theirs.pk).status == S.CANCELLED and Checkpoint.objects.filter(pk=theirs.pk)


def test_each_permission_allows_its_act_on_others_operations(viewer, django_capture_on_commit_callbacks):
    viewer = grant(viewer, VIEW_ALL, CANCEL, RESUME, DELETE_CHECKPOINT)
    client = token_client(viewer)
    pending = OperationFactory(owner=UserFactory(), status=S.PENDING)
    to_resume, to_discard = cancelled_with_checkpoint(UserFactory()), cancelled_with_checkpoint(UserFactory())

    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(f"/api/v1/operations/{pending.pk}/cancel/").status_code == 200
        assert client.post(f"/api/v1/operations/{to_resume.pk}/resume/").status_code == 202
    assert client.delete(f"/api/v1/checkpoints/{to_discard.pk}/").status_code == 204


def test_an_owner_needs_no_permission_to_act_on_their_own(user, django_capture_on_commit_callbacks):
    client = token_client(user)
    pending = OperationFactory(owner=user, status=S.PENDING)
    to_resume, to_discard = cancelled_with_checkpoint(user), cancelled_with_checkpoint(user)

    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(f"/api/v1/operations/{pending.pk}/cancel/").status_code == 200
        assert client.post(f"/api/v1/operations/{to_resume.pk}/resume/").status_code == 202
    assert client.delete(f"/api/v1/checkpoints/{to_discard.pk}/").status_code == 204


def test_checkpoint_cleanup_needs_its_permission(viewer, user):
    old = cancelled_with_checkpoint(UserFactory())
    for account in (viewer, user):
        response = token_client(account).post("/api/v1/checkpoints/cleanup/", {"max_age_days": 0}, format="json")
        assert response.status_code == 403
        assert "checkpoints.cleanup_checkpoints" in response.json()["detail"]
    assert Checkpoint.objects.filter(pk=old.pk).exists()

    allowed = grant(viewer, "checkpoints.cleanup_checkpoints")
    response = token_client(allowed).post("/api/v1/checkpoints/cleanup/", {"max_age_days": 0}, format="json")

    assert response.status_code == 200 and response.json()["deleted"] == [old.pk]


def test_the_workers_need_a_worker_or_a_fleet_permission(viewer, user):
    worker = WorkerFactory()
    plain_staff = UserFactory(is_staff=True)

    for account in (user, plain_staff):
        assert token_client(account).get("/api/v1/workers/").status_code == 403
    assert token_client(viewer).get("/api/v1/workers/").json()["count"] == 1  # view_worker
    refused = token_client(viewer).post("/api/v1/workers/register/", {"worker_id": worker.worker_id}, format="json")
    assert refused.status_code == 403 and "operations.act_as_worker" in refused.json()["detail"]


def test_a_superuser_holds_every_permission(django_capture_on_commit_callbacks):
    root = UserFactory(is_staff=True, is_superuser=True)
    theirs = cancelled_with_checkpoint(UserFactory())

    with django_capture_on_commit_callbacks(execute=False):
        assert token_client(root).post(f"/api/v1/operations/{theirs.pk}/resume/").status_code == 202


# --- the admin

def test_the_admin_does_not_offer_actions_a_view_only_user_lacks(viewer):
    own = cancelled_with_checkpoint(viewer)
    OperationFactory(owner=UserFactory())

    response = admin_client(viewer).get(CHANGELIST)

    assert response.status_code == 200
    assert not offered(viewer) & ACTIONS
    assert {operation.pk for operation in response.context["cl"].result_list} == {own.pk}  # the API's rule


def test_a_view_only_user_posting_an_action_anyway_changes_nothing(viewer):
    own = cancelled_with_checkpoint(viewer)
    client = admin_client(viewer)

    for action in ACTIONS:
        response = client.post(CHANGELIST, {"action": action, "_selected_action": [own.pk]}, follow=True)
        assert response.status_code == 200

    assert Operation.objects.get(pk=own.pk).status == S.CANCELLED
    assert Checkpoint.objects.filter(pk=own.pk).exists()


def test_the_admin_offers_each_action_with_its_permission(viewer):
    assert offered(grant(viewer, CANCEL)) & ACTIONS == {"cancel_operations"}
    assert offered(grant(viewer, RESUME, DELETE_CHECKPOINT)) & ACTIONS == ACTIONS


def test_a_view_only_user_cannot_open_another_users_operation_in_the_admin(viewer):
    theirs = OperationFactory(owner=UserFactory())

    response = admin_client(viewer).get(reverse("admin:operations_operation_change", args=[quote(theirs.pk)]))

    assert response.status_code == 302  # the admin's "does not exist" redirect to the index


# --- the upgrade

@pytest.mark.django_db(transaction=True)
def test_the_upgrade_keeps_what_existing_staff_could_do():
    """Staff made before permissions decided are put in the Operators group, which holds what they did."""
    before = [("checkpoints", "0002_checkpoint_cleanup_permission")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    old.get_model("auth", "Group").objects.filter(name="Operators").delete()
    User = old.get_model("auth", "User")
    staff = User.objects.create(username="old-staff", is_staff=True)
    plain = User.objects.create(username="old-user")
    root = User.objects.create(username="old-root", is_staff=True, is_superuser=True)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    users = get_user_model().objects.in_bulk([staff.pk, plain.pk, root.pk])
    assert set(users[staff.pk].groups.values_list("name", flat=True)) == {"Operators"}
    assert users[staff.pk].has_perms([VIEW_ALL, CANCEL, RESUME, DELETE_CHECKPOINT, "checkpoints.cleanup_checkpoints",
                                      "operations.act_as_worker", "operations.view_worker"])
    assert not users[plain.pk].groups.exists() and not users[plain.pk].has_perm(VIEW_ALL)
    assert not users[root.pk].groups.exists() and users[root.pk].has_perm(VIEW_ALL)


def test_the_checkpoint_admin_and_api_list_only_the_checkpoints_of_visible_operations(viewer):
    own, theirs = cancelled_with_checkpoint(viewer), cancelled_with_checkpoint(UserFactory())

    page = admin_client(viewer).get(reverse("admin:checkpoints_checkpoint_changelist"))
    listed = token_client(viewer).get("/api/v1/checkpoints/").json()["results"]

    assert {checkpoint.pk for checkpoint in page.context["cl"].result_list} == {own.pk}
    assert [row["operation_id"] for row in listed] == [own.pk]
    everyone = grant(viewer, VIEW_ALL)
    page = admin_client(everyone).get(reverse("admin:checkpoints_checkpoint_changelist"))
    assert {checkpoint.pk for checkpoint in page.context["cl"].result_list} == {own.pk, theirs.pk}
