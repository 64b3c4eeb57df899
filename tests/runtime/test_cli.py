"""`manage.py operations list|status|cancel`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.db import connections
from django.utils import timezone

from operations.ids import OPERATION_ID_FORMAT, new_operation_id
from operations.models import Operation, OperationStatus
from operations.services.lifecycle import operation_claim, operation_create
from tests.factories import OperationFactory, RunningOperationFactory, WorkerFactory
from tests.support.commands import command_output as run
from tests.support.processes import child_env

S = OperationStatus
MANAGE_PY = Path(settings.BASE_DIR) / "manage.py"


def field(output: str, label: str) -> str:
    """The value of one `Label:   value` line of `operations status`."""
    for line in output.splitlines():
        if line.startswith(f"{label}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in:\n{output}")


def total_line(output: str) -> str:
    return [line for line in output.splitlines() if line.startswith("Total:")][-1]


# --- operations list

@pytest.fixture
def three_operations(db):
    return {
        "pending": OperationFactory(operation_type="training"),
        "running": RunningOperationFactory(operation_type="backtesting", progress_percent=42.5),
        "completed": OperationFactory(operation_type="training", status=S.COMPLETED, progress_percent=100),
    }


def test_list_prints_a_row_per_operation_and_the_total(three_operations):
    output = run("operations", "list")

    lines = output.splitlines()
    assert lines[0].split()[:4] == ["OPERATION", "TYPE", "STATUS", "PROGRESS"]
    for operation in three_operations.values():
        row = next(line for line in lines if line.startswith(operation.operation_id))
        assert operation.operation_type in row.split()
        assert operation.status in row.split()
    running = three_operations["running"]
    running_row = next(line for line in lines if line.startswith(running.operation_id))
    assert "42.5%" in running_row
    assert running.worker_id in running_row
    assert total_line(output).startswith("Total: 3 operations")


def test_list_is_newest_first(db):
    old = OperationFactory(created_at=timezone.now() - timedelta(hours=1))
    new = OperationFactory()

    rows = [line.split()[0] for line in run("operations", "list").splitlines()[1:-1]]

    assert rows == [new.operation_id, old.operation_id]


def test_list_with_no_operations_says_total_zero(db):
    output = run("operations", "list")

    assert total_line(output).startswith("Total: 0 operations")


def test_list_filters_by_status(three_operations):
    output = run("operations", "list", "--status", "RUNNING")

    assert three_operations["running"].operation_id in output
    assert three_operations["pending"].operation_id not in output
    assert three_operations["completed"].operation_id not in output
    assert total_line(output).startswith("Total: 1 operations")


def test_list_filters_by_type(three_operations):
    output = run("operations", "list", "--type", "training")

    assert three_operations["pending"].operation_id in output
    assert three_operations["completed"].operation_id in output
    assert three_operations["running"].operation_id not in output
    assert total_line(output).startswith("Total: 2 operations")


def test_list_combines_status_and_type_filters(three_operations):
    output = run("operations", "list", "--status", "COMPLETED", "--type", "training")

    assert three_operations["completed"].operation_id in output
    assert total_line(output).startswith("Total: 1 operations")


def test_list_rejects_an_unknown_status(db):
    with pytest.raises(CommandError, match="invalid choice"):
        run("operations", "list", "--status", "SLEEPING")


def test_list_limit_shows_fewer_rows_but_the_full_total(db):
    for _ in range(3):
        OperationFactory()

    output = run("operations", "list", "--limit", "2")

    assert len([line for line in output.splitlines() if line.startswith("op_")]) == 2
    assert total_line(output).startswith("Total: 3 operations")


def test_list_json_is_the_api_list_body(three_operations, staff_client):
    body = json.loads(run("operations", "list", "--json"))

    assert set(body) == {"count", "results"}
    assert body["count"] == 3
    api = staff_client.get("/api/v1/operations/").json()
    assert body["count"] == api["count"]
    assert body["results"] == api["results"]


def test_list_json_applies_the_filters(three_operations, staff_client):
    body = json.loads(run("operations", "list", "--status", "PENDING", "--json"))

    assert body["count"] == 1
    assert [row["operation_id"] for row in body["results"]] == [three_operations["pending"].operation_id]
    assert body["results"][0]["status"] == "PENDING"
    api = staff_client.get("/api/v1/operations/", {"status": "PENDING"}).json()
    assert body["results"] == api["results"]


# --- operations status

@pytest.fixture
def claimed_operation(db):
    """A RUNNING operation with a real history: created, then claimed by a worker."""
    worker = WorkerFactory()
    operation = operation_create(operation_type="training", params={"symbol": "SYN"}, actor="cli", enqueue=False)
    assert operation_claim(operation_id=operation.operation_id, worker_id=worker.worker_id) == 1
    Operation.objects.filter(pk=operation.pk).update(
        progress_percent=25.0, progress_current=5, progress_total=20, progress_unit="epochs",
        progress_message="epoch 5/20",
    )
    return Operation.objects.get(pk=operation.pk)


def test_status_prints_the_operation_and_its_events(claimed_operation):
    output = run("operations", "status", claimed_operation.operation_id)

    assert field(output, "Operation") == claimed_operation.operation_id
    assert field(output, "Type") == "training"
    assert field(output, "Status") == "RUNNING"
    assert "25.0%" in field(output, "Progress")
    assert "5/20 epochs" in field(output, "Progress")
    assert "epoch 5/20" in field(output, "Progress")
    assert claimed_operation.worker_id in field(output, "Worker")
    events = output.split("Events:", 1)[1]
    assert "Created" in events
    assert "Claimed by worker" in events
    # newest first, like the API's recent_events
    assert events.index("Claimed by worker") < events.index("Created")


def test_status_shows_the_error_of_a_failed_operation(db):
    operation = OperationFactory(status=S.FAILED, error_message="Worker h:c:1 became unavailable")

    output = run("operations", "status", operation.operation_id)

    assert field(output, "Status") == "FAILED"
    assert field(output, "Error") == "Worker h:c:1 became unavailable"


def test_status_json_is_the_api_detail_body(claimed_operation, staff_client):
    body = json.loads(run("operations", "status", claimed_operation.operation_id, "--json"))

    assert body["operation_id"] == claimed_operation.operation_id
    assert body["status"] == "RUNNING"
    assert body["progress"] == {"current": 5, "total": 20, "unit": "epochs"}
    assert [event["reason"] for event in body["recent_events"]] == ["Claimed by worker", "Created"]
    assert body["recent_events"][0]["from_status"] == "PENDING"
    assert body["recent_events"][0]["to_status"] == "RUNNING"
    api = staff_client.get(f"/api/v1/operations/{claimed_operation.operation_id}/").json()
    assert body == api


def test_status_of_an_unknown_operation_is_not_found(db):
    with pytest.raises(CommandError, match="OPERATION_NOT_FOUND"):
        run("operations", "status", new_operation_id("training"))


def test_status_of_a_malformed_id_names_the_expected_format(db):
    with pytest.raises(CommandError) as error:
        run("operations", "status", "op_bad")

    assert "op_bad" in str(error.value)
    assert OPERATION_ID_FORMAT in str(error.value)


# --- operations cancel

def test_cancel_of_a_pending_operation_cancels_it_at_once(db):
    operation = OperationFactory(status=S.PENDING)

    output = run("operations", "cancel", operation.operation_id)

    assert "cancelled" in output
    operation.refresh_from_db()
    assert operation.status == S.CANCELLED
    assert operation.completed_at is not None
    event = operation.events.first()
    assert (event.from_status, event.to_status, event.actor) == ("PENDING", "CANCELLED", "cli")


def test_cancel_of_a_resuming_operation_cancels_it_at_once(db):
    operation = OperationFactory(status=S.RESUMING)

    run("operations", "cancel", operation.operation_id)

    operation.refresh_from_db()
    assert operation.status == S.CANCELLED


def test_cancel_of_a_running_operation_requests_cancel_and_leaves_it_running(db):
    operation = RunningOperationFactory()

    output = run("operations", "cancel", operation.operation_id)

    assert "Cancel requested" in output
    operation.refresh_from_db()
    assert operation.status == S.RUNNING
    assert operation.cancel_requested_at is not None
    assert operation.events.first().reason == "Cancel requested"


def test_cancel_twice_of_a_running_operation_says_it_was_already_requested(db):
    operation = RunningOperationFactory()
    run("operations", "cancel", operation.operation_id)
    first_request = Operation.objects.get(pk=operation.pk).cancel_requested_at

    output = run("operations", "cancel", operation.operation_id)

    assert "already requested" in output
    operation.refresh_from_db()
    assert operation.cancel_requested_at == first_request
    assert operation.events.filter(reason="Cancel requested").count() == 1


@pytest.mark.parametrize("status", [S.COMPLETED, S.FAILED, S.CANCELLED])
def test_cancel_of_a_terminal_operation_is_refused_and_changes_nothing(db, status):
    operation = OperationFactory(status=status)

    with pytest.raises(CommandError, match="OPERATION_NOT_CANCELLABLE"):
        run("operations", "cancel", operation.operation_id)

    operation.refresh_from_db()
    assert operation.status == status
    assert operation.version == 0
    assert not operation.events.exists()


def test_cancel_of_an_unknown_operation_is_not_found(db):
    with pytest.raises(CommandError, match="OPERATION_NOT_FOUND"):
        run("operations", "cancel", new_operation_id("backtesting"))


@pytest.mark.parametrize(
    "bad_id",
    ["op_bad", "op_training_20250101_120000_XYZ12345", "op_training_20251399_120000_0123abcd", "../../etc/passwd"],
)
def test_cancel_of_a_malformed_id_names_the_expected_format(db, bad_id):
    with pytest.raises(CommandError) as error:
        run("operations", "cancel", bad_id)

    assert "not an operation id" in str(error.value)


def test_cancel_of_a_malformed_id_shows_the_format(db):
    with pytest.raises(CommandError) as error:
        run("operations", "cancel", "op_bad")

    assert OPERATION_ID_FORMAT in str(error.value)


def test_cancel_json_prints_the_detail_body(db):
    operation = RunningOperationFactory()

    body = json.loads(run("operations", "cancel", operation.operation_id, "--json"))

    assert body["operation_id"] == operation.operation_id
    assert body["status"] == "RUNNING"
    assert body["cancel_requested_at"] is not None
    assert body["recent_events"][0]["reason"] == "Cancel requested"


def test_cancel_follow_of_a_pending_operation_returns_at_once(db):
    operation = OperationFactory(status=S.PENDING)

    started = time.monotonic()
    run("operations", "cancel", operation.operation_id, "--follow")

    assert time.monotonic() - started < 2
    assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED


def test_cancel_follow_waits_until_the_worker_acknowledges(transactional_db):
    operation = RunningOperationFactory()
    delay = 1.2

    def worker_acknowledges() -> None:
        try:
            time.sleep(delay)
            assert Operation.objects.transition(
                operation.operation_id,
                from_statuses=[S.RUNNING],
                to_status=S.CANCELLED,
                actor=f"worker:{operation.worker_id}",
                reason="Cancelled - checkpoint saved",
                completed_at=timezone.now(),
            )
        finally:
            connections.close_all()

    acknowledger = threading.Thread(target=worker_acknowledges)
    acknowledger.start()
    started = time.monotonic()
    try:
        output = run("operations", "cancel", operation.operation_id, "--follow")
    finally:
        acknowledger.join(timeout=10)
    elapsed = time.monotonic() - started

    assert elapsed >= delay  # it waited for the acknowledgement ...
    assert elapsed < delay + 5  # ... and returned soon after it
    assert "Cancel requested" in output
    assert output.splitlines()[-2:] == [f"{operation.operation_id}: RUNNING", f"{operation.operation_id} CANCELLED"]
    assert f"{operation.operation_id}: RUNNING" in output
    assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED


# --- real processes: exit status and stderr

def manage(*args: str) -> subprocess.CompletedProcess:
    """Run manage.py against the test database (its rows must be committed: transactional_db)."""
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), *args],
        cwd=MANAGE_PY.parent,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_process_status_of_a_malformed_id_exits_1_with_a_message(transactional_db):
    process = manage("operations", "status", "op_bad")

    assert process.returncode == 1
    assert "op_bad" in process.stderr
    assert OPERATION_ID_FORMAT in process.stderr
    assert "Traceback" not in process.stderr
    assert process.stdout == ""


def test_process_status_of_an_unknown_id_exits_1(transactional_db):
    process = manage("operations", "status", new_operation_id("training"))

    assert process.returncode == 1
    assert "OPERATION_NOT_FOUND" in process.stderr
    assert "Traceback" not in process.stderr


def test_process_cancel_of_a_terminal_operation_exits_1_and_changes_nothing(transactional_db):
    operation = OperationFactory(status=S.COMPLETED)

    process = manage("operations", "cancel", operation.operation_id)

    assert process.returncode == 1
    assert "OPERATION_NOT_CANCELLABLE" in process.stderr
    assert operation.operation_id in process.stderr
    assert "Traceback" not in process.stderr
    assert Operation.objects.get(pk=operation.pk).status == S.COMPLETED


def test_process_status_json_and_cancel_succeed_with_exit_0(transactional_db):
    operation = OperationFactory(status=S.PENDING)

    status = manage("operations", "status", operation.operation_id, "--json")
    cancel = manage("operations", "cancel", operation.operation_id)

    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "PENDING"
    assert cancel.returncode == 0, cancel.stderr
    assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED
