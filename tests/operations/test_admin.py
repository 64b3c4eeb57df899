"""The operations admin: staff only, filters, search, progress bar, history, cancel action."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from operations.models import Operation, OperationEvent, OperationStatus, Worker, WorkerStatus
from operations.services.lifecycle import operation_claim, operation_create
from tests.factories import OperationFactory, RunningOperationFactory, StaffFactory, UserFactory, WorkerFactory

S = OperationStatus
CHANGELIST = reverse("admin:operations_operation_changelist")
WORKERS = reverse("admin:operations_worker_changelist")


def change_url(operation: Operation) -> str:
    # quote(): the admin reads "_22", "_40"... in a URL as escapes, and ids hold such runs (22:00-23:59).
    return reverse("admin:operations_operation_change", args=[quote(operation.pk)])


def rows_shown(response) -> set[str]:
    """The operation ids listed in the changelist's result table."""
    return {operation.pk for operation in response.context["cl"].result_list}


# --- access

def test_anonymous_is_sent_to_the_login_page(db):
    response = Client().get(CHANGELIST)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_user_is_sent_to_the_login_page(db):
    user = UserFactory()
    client = Client()
    assert client.login(username=user.username, password="secret-pass")

    for url in (CHANGELIST, WORKERS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_staff_with_only_the_view_permission_sees_the_changelist(db):
    staff = StaffFactory()
    staff.user_permissions.add(Permission.objects.get(codename="view_operation"))
    operation = OperationFactory()
    client = Client()
    assert client.login(username=staff.username, password="secret-pass")

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert operation.operation_id in response.content.decode()


# --- operations changelist

@pytest.fixture
def mixed_operations(db):
    worker = WorkerFactory()
    return {
        "pending": OperationFactory(operation_type="training"),
        "running": RunningOperationFactory(operation_type="backtesting", worker=worker, progress_percent=42.0),
        "failed": OperationFactory(operation_type="training", status=S.FAILED),
        "worker": worker,
    }


def test_changelist_lists_operations_with_filters(admin_client, mixed_operations):
    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    for key in ("pending", "running", "failed"):
        assert mixed_operations[key].operation_id in html
    assert "By status" in html
    assert "By operation type" in html
    assert "By worker" in html
    assert mixed_operations["worker"].worker_id in html


def test_changelist_filters_by_status(admin_client, mixed_operations):
    response = admin_client.get(CHANGELIST, {"status__exact": "RUNNING"})

    assert response.status_code == 200
    assert rows_shown(response) == {mixed_operations["running"].pk}


def test_changelist_filters_by_operation_type(admin_client, mixed_operations):
    response = admin_client.get(CHANGELIST, {"operation_type__exact": "training"})

    assert rows_shown(response) == {mixed_operations["pending"].pk, mixed_operations["failed"].pk}


def test_changelist_filters_by_worker(admin_client, mixed_operations):
    RunningOperationFactory()  # on another worker

    response = admin_client.get(CHANGELIST, {"worker__worker_id__exact": mixed_operations["worker"].worker_id})

    assert rows_shown(response) == {mixed_operations["running"].pk}


def worker_choices(response) -> list[str]:
    """The workers the worker filter offers (none: the filter is not shown)."""
    specs = [spec for spec in response.context["cl"].filter_specs if spec.title == "worker"]
    return [value for spec in specs for value, _label in spec.lookup_choices]


def test_the_worker_filter_lists_the_live_workers_while_they_are_few(admin_client, mixed_operations):
    stopped = WorkerFactory(status=WorkerStatus.STOPPED)

    assert worker_choices(admin_client.get(CHANGELIST)) == [mixed_operations["worker"].worker_id]
    chosen = admin_client.get(CHANGELIST, {"worker__worker_id__exact": stopped.worker_id})
    assert worker_choices(chosen) == [mixed_operations["worker"].worker_id, stopped.worker_id]

    WorkerFactory.create_batch(20)  # a fleet: 21 live
    assert worker_choices(admin_client.get(CHANGELIST)) == []
    assert worker_choices(admin_client.get(CHANGELIST, {"worker__worker_id__exact": stopped.worker_id})) == [
        stopped.worker_id]


def test_changelist_searches_by_id(admin_client, mixed_operations):
    wanted = mixed_operations["failed"]

    response = admin_client.get(CHANGELIST, {"q": wanted.operation_id})

    assert rows_shown(response) == {wanted.pk}


def test_changelist_search_with_no_match_shows_nothing(admin_client, mixed_operations):
    response = admin_client.get(CHANGELIST, {"q": "op_training_19990101_000000_deadbeef"})

    assert response.status_code == 200
    assert rows_shown(response) == set()


def test_changelist_shows_a_progress_bar(admin_client, mixed_operations):
    html = admin_client.get(CHANGELIST).content.decode()

    assert 'class="op-progress"' in html
    assert 'class="op-progress-bar op-status-running" style="width: 42.0%"' in html
    assert ">42%<" in html
    assert "operations/admin.css" in html


def test_progress_bar_is_clamped_to_0_100(admin_client, db):
    OperationFactory(progress_percent=250.0)

    html = admin_client.get(CHANGELIST).content.decode()

    assert 'style="width: 100.0%"' in html


def changelist_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert response.status_code == 200
    return len(queries)


def make_operations(count: int) -> None:
    """Operations each with their own owner, worker and parent: every relation an N+1 would touch."""
    for _ in range(count):
        RunningOperationFactory(owner=UserFactory(), parent=OperationFactory(), progress_percent=10.0)


def test_changelist_queries_do_not_grow_with_the_number_of_operations(
    admin_client, db, django_assert_max_num_queries
):
    make_operations(5)
    with_five = changelist_queries(admin_client)
    make_operations(45)

    with django_assert_max_num_queries(with_five):
        response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert response.context["cl"].result_count == 100  # 50 running + their 50 parents


def test_workers_changelist_queries_do_not_grow_with_the_number_of_workers(
    admin_client, db, django_assert_max_num_queries
):
    make_operations(5)
    with CaptureQueriesContext(connection) as with_five:
        assert admin_client.get(WORKERS).status_code == 200
    make_operations(45)

    with django_assert_max_num_queries(len(with_five)):
        assert admin_client.get(WORKERS).status_code == 200


# --- operation page

def test_change_page_shows_the_event_history(admin_client, db):
    worker = WorkerFactory()
    operation = operation_create(operation_type="training", params={"symbol": "SYN"}, actor="cli", enqueue=False)
    operation_claim(operation_id=operation.operation_id, worker_id=worker.worker_id)

    response = admin_client.get(change_url(operation))

    assert response.status_code == 200
    html = response.content.decode()
    assert operation.operation_id in html
    assert "Claimed by worker" in html
    assert "Created" in html
    assert f"worker:{worker.worker_id}" in html
    assert html.index("Claimed by worker") < html.index(">Created<")  # newest first
    assert 'class="op-progress"' in html


def test_change_page_is_read_only(admin_client, db):
    operation = OperationFactory()

    response = admin_client.post(change_url(operation), {"status": "COMPLETED"})

    assert response.status_code == 403
    assert Operation.objects.get(pk=operation.pk).status == S.PENDING


# --- cancel action

def cancel_action(client: Client, *operations: Operation):
    return client.post(
        CHANGELIST,
        {"action": "cancel_operations", "index": "0", "_selected_action": [op.pk for op in operations]},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_cancel_action_cancels_a_pending_operation(admin_client, admin_user, db):
    pending = OperationFactory(status=S.PENDING)

    response = cancel_action(admin_client, pending)

    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == S.CANCELLED
    assert pending.events.first().actor == f"admin:{admin_user.username}"
    assert "1 cancelled." in messages_of(response)


def test_cancel_action_requests_cancel_of_a_running_operation(admin_client, db):
    running = RunningOperationFactory()

    response = cancel_action(admin_client, running)

    running.refresh_from_db()
    assert running.status == S.RUNNING
    assert running.cancel_requested_at is not None
    assert any("Cancel requested for 1 running" in message for message in messages_of(response))


def test_cancel_action_reports_a_terminal_operation_without_changing_it(admin_client, db):
    completed = OperationFactory(status=S.COMPLETED)

    response = cancel_action(admin_client, completed)

    completed.refresh_from_db()
    assert completed.status == S.COMPLETED
    assert completed.version == 0
    assert not OperationEvent.objects.filter(operation=completed).exists()
    assert messages_of(response) == [f"Operation {completed.operation_id} is COMPLETED and cannot be cancelled."]


def test_cancel_action_on_a_mixed_selection(admin_client, db):
    pending = OperationFactory(status=S.PENDING)
    running = RunningOperationFactory()
    failed = OperationFactory(status=S.FAILED)

    response = cancel_action(admin_client, pending, running, failed)

    assert Operation.objects.get(pk=pending.pk).status == S.CANCELLED
    assert Operation.objects.get(pk=running.pk).status == S.RUNNING
    assert Operation.objects.get(pk=running.pk).cancel_requested_at is not None
    assert Operation.objects.get(pk=failed.pk).status == S.FAILED
    messages = messages_of(response)
    assert "1 cancelled." in messages
    assert any("Cancel requested for 1 running" in message for message in messages)
    assert any(failed.operation_id in message and "cannot be cancelled" in message for message in messages)


# --- workers

def test_workers_changelist_renders(admin_client, db):
    idle = WorkerFactory()
    gone = WorkerFactory(status=WorkerStatus.UNAVAILABLE)
    running = RunningOperationFactory()
    busy = running.worker
    Worker.objects.filter(pk=busy.pk).update(current_operation=running)

    response = admin_client.get(WORKERS)

    assert response.status_code == 200
    html = response.content.decode()
    for worker in (idle, gone, busy):
        assert worker.worker_id in html
    assert "By status" in html
    assert running.operation_id in html  # the busy worker's current operation


def test_workers_changelist_filters_by_status(admin_client, db):
    WorkerFactory()
    gone = WorkerFactory(status=WorkerStatus.UNAVAILABLE)

    response = admin_client.get(WORKERS, {"status__exact": "UNAVAILABLE"})

    assert {worker.pk for worker in response.context["cl"].result_list} == {gone.pk}


def test_worker_page_renders(admin_client, db):
    worker = WorkerFactory(capabilities={"device": "cpu", "cpu_count": 8})

    response = admin_client.get(reverse("admin:operations_worker_change", args=[worker.pk]))

    assert response.status_code == 200
    assert worker.worker_id in response.content.decode()


def test_a_rows_checkbox_is_the_admins_own(admin_user):
    """Written out for speed, it is what Django's widget draws (the actions' script finds rows by it)."""
    from django.contrib import admin as django_admin

    operation = OperationFactory()
    site_admin = django_admin.site._registry[Operation]

    assert site_admin.action_checkbox(operation) == django_admin.ModelAdmin.action_checkbox(site_admin, operation)
