"""The restart policy and the fleet as an operator sees them in the admin: the counter in the operations list, the
decision on an operation's page, a planned resume called off with the cancel action, and every worker's state."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from operations.models import Operation, WorkerStatus, WorkerType
from operations.models import OperationStatus as S
from tests.browser.conftest import log_in, shot
from tests.factories import OperationFactory, WorkerFactory

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

def test_the_admin_shows_the_restart_policy_and_calls_a_planned_resume_off(page: Page, console_errors, admin_user):
    due = timezone.now() + timedelta(minutes=5)
    planned = OperationFactory(status=S.FAILED, max_restarts=3, restarts=1, end_cause="worker_lost",
                               restart_due_at=due, error_message="Worker box:resilient:7 became unavailable",
                               presumed_orphan=True)
    looping = OperationFactory(status=S.FAILED, max_restarts=3, restarts=2, end_cause="crash_loop",
                               error_message="Crash loop at epoch 4: it failed again from that checkpoint after 2 "
                                             "automatic resumes in a row without progress")
    log_in(page, admin_user)

    page.goto("/admin/operations/operation/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    planned_row, looping_row = rows.filter(has_text=planned.pk), rows.filter(has_text=looping.pk)
    expect(planned_row.locator("td.field-restarts_counter")).to_have_text("1/3 ⟳")
    assert planned_row.locator("td.field-restarts_counter span").get_attribute("title").startswith(
        "Automatic resume 2/3 due at ")
    expect(looping_row.locator("td.field-restarts_counter")).to_have_text("2/3")
    shot(page, "admin-restarts-operations-list")

    page.get_by_role("link", name=planned.pk).click()
    decision = page.locator(".field-restart_decision .readonly")
    expect(decision).to_contain_text("Automatic resume 2/3 due at ")
    expect(decision).to_contain_text("after a lost worker, once a worker is available")
    expect(page.locator(".field-end_cause .readonly")).to_have_text("lost worker")
    shot(page, "admin-restarts-planned-operation")

    # The cancel action calls the planned resume off.
    page.goto("/admin/operations/operation/")
    planned_row.locator("input.action-select").check()
    page.locator('select[name="action"]').select_option("cancel_operations")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("ul.messagelist li.success")).to_have_text("1 cancelled.")
    cancelled = Operation.objects.get(pk=planned.pk)
    assert (cancelled.status, cancelled.restart_due_at, cancelled.end_cause) == (S.CANCELLED, None, "cancelled")

    page.get_by_role("link", name=looping.pk).click()
    expect(page.locator(".field-restart_decision .readonly")).to_have_text(
        "No automatic resume: it is crash-looping (see the error)")
    assert console_errors == []


def test_the_admin_lists_every_worker_with_its_state(page: Page, console_errors, admin_user):
    busy_on = OperationFactory(status=S.RUNNING)
    for pid, status in enumerate(WorkerStatus.values, start=10):
        WorkerFactory(worker_id=f"gpu-box:resilient:{pid}", host="gpu-box", pid=pid, status=status,
                      current_operation=busy_on if status == WorkerStatus.BUSY else None)
    WorkerFactory(worker_id="control:supervise:99", host="control", pid=99, worker_type=WorkerType.CONTROL_LOOP)
    log_in(page, admin_user)

    page.goto("/admin/operations/worker/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(len(WorkerStatus.values) + 1)
    for pid, status in enumerate(WorkerStatus.values, start=10):
        expect(rows.filter(has_text=f"gpu-box:resilient:{pid}").locator("td.field-status")).to_have_text(
            WorkerStatus(status).label)
    expect(rows.filter(has_text="control:supervise:99").locator("td.field-worker_type")).to_have_text("control loop")
    page.locator('#changelist-filter details[data-filter-title="status"]').get_by_role("link", name="Idle").click()
    expect(page).to_have_url(re.compile(r"[?&]status__exact=IDLE"))
    shot(page, "admin-restarts-workers")
    assert console_errors == []
