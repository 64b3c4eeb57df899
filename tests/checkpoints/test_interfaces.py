"""Checkpoints as users see them (docs/checkpoints.md): the API, `manage.py checkpoints`, `operations list`,
operation bodies and the admin."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from operations.models import Operation, OperationEvent, OperationStatus as S
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory, RunningOperationFactory
from tests.support.processes import ROOT, child_env

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/checkpoints/"
CLEANUP_URL = "/api/v1/checkpoints/cleanup/"
STATS_URL = "/api/v1/checkpoints/stats/"
OPERATIONS_URL = "/api/v1/operations/"
OPERATIONS_ADMIN = reverse("admin:operations_operation_changelist")
CHECKPOINTS_ADMIN = reverse("admin:checkpoints_checkpoint_changelist")
ARTIFACTS = {"model.pt": b"m" * 3000, "optimizer.pt": b"o" * 1000}


def detail_url(operation_id: str) -> str:
    return f"/api/v1/checkpoints/{operation_id}/"


def with_checkpoint(
    operation: Operation, checkpoint_type: str, state: dict, *, age_days: float = 0, artifacts=None
) -> Operation:
    saved = checkpoint_save(
        operation_id=operation.pk, checkpoint_type=checkpoint_type, state=state, artifacts=artifacts or ARTIFACTS
    )
    assert saved.saved, saved.error
    if age_days:
        Checkpoint.objects.filter(operation_id=operation.pk).update(
            created_at=timezone.now() - timedelta(days=age_days)
        )
    return operation


@dataclass
class Scene:
    mine: Operation  # CANCELLED, cancellation checkpoint at epoch 12, fresh
    mine_old: Operation  # FAILED, failure checkpoint, 40 days old
    running: Operation  # RUNNING, periodic checkpoint, fresh: not resumable
    bare: Operation  # CANCELLED before its first checkpoint
    theirs: Operation  # another user's: a backtest, CANCELLED, 45 days old

    def checkpointed(self) -> list[Operation]:
        return [self.mine, self.mine_old, self.running, self.theirs]


@pytest.fixture
def scene(user, other_user, checkpoint_dir) -> Scene:
    return Scene(
        mine=with_checkpoint(
            OperationFactory(owner=user, status=S.CANCELLED, progress_percent=12.0), "cancellation", {"epoch": 12}
        ),
        mine_old=with_checkpoint(
            OperationFactory(owner=user, status=S.FAILED), "failure", {"epoch": 3}, age_days=40
        ),
        running=with_checkpoint(RunningOperationFactory(owner=user), "periodic", {"epoch": 20}),
        bare=OperationFactory(owner=user, status=S.CANCELLED),
        theirs=with_checkpoint(
            OperationFactory(owner=other_user, operation_type="backtesting", status=S.CANCELLED),
            "cancellation",
            {"bar_index": 5000, "cash": 990.5},
            age_days=45,
        ),
    )


def ids(results: list[dict]) -> list[str]:
    return [item["operation_id"] for item in results]


def folder_of(checkpoint_dir: Path, operation: Operation) -> Path:
    return checkpoint_dir / operation.pk


def has_checkpoint(operation: Operation) -> bool:
    return Checkpoint.objects.filter(operation_id=operation.pk).exists()


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def without_age(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "age_seconds"}


# --- API: list and filters

def test_list_shows_a_user_their_own_checkpoints_oldest_first(user_client, scene):
    response = user_client.get(LIST_URL)

    assert response.status_code == 200
    assert response.json()["count"] == 3
    assert ids(response.json()["results"]) == [scene.mine_old.pk, scene.mine.pk, scene.running.pk]


def test_list_item_describes_the_checkpoint(user_client, scene):
    [item] = user_client.get(LIST_URL, {"operation_id": scene.mine.pk}).json()["results"]

    checkpoint = Checkpoint.objects.get(operation_id=scene.mine.pk)
    assert item["operation_type"] == "training"
    assert item["operation_status"] == "CANCELLED"
    assert item["resumable"] is True
    assert item["checkpoint_type"] == "cancellation"
    assert parse_datetime(item["created_at"]) == checkpoint.created_at
    assert 0 <= item["age_seconds"] < 60
    assert item["state_summary"] == {"epoch": 12}
    assert item["state"] == {"epoch": 12}
    assert [artifact["name"] for artifact in item["manifest"]] == ["model.pt", "optimizer.pt"]
    assert item["artifacts_size_bytes"] == 4000
    assert item["state_size_bytes"] == len(json.dumps({"epoch": 12}))
    assert item["total_size_bytes"] == 4000 + item["state_size_bytes"]


def test_staff_lists_everyones_checkpoints(staff_client, scene):
    response = staff_client.get(LIST_URL)

    assert ids(response.json()["results"]) == [scene.theirs.pk, scene.mine_old.pk, scene.mine.pk, scene.running.pk]


def test_list_filters_by_operation(user_client, scene):
    response = user_client.get(LIST_URL, {"operation_id": scene.mine_old.pk})

    assert ids(response.json()["results"]) == [scene.mine_old.pk]


def test_list_filter_on_another_users_operation_is_empty(user_client, scene):
    response = user_client.get(LIST_URL, {"operation_id": scene.theirs.pk})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_list_filters_by_age(user_client, staff_client, scene):
    assert ids(user_client.get(LIST_URL, {"older_than_days": 30}).json()["results"]) == [scene.mine_old.pk]
    assert ids(staff_client.get(LIST_URL, {"older_than_days": 30}).json()["results"]) == [
        scene.theirs.pk,
        scene.mine_old.pk,
    ]
    assert ids(staff_client.get(LIST_URL, {"older_than_days": 42}).json()["results"]) == [scene.theirs.pk]
    assert staff_client.get(LIST_URL, {"older_than_days": 50}).json()["results"] == []


@pytest.mark.parametrize(
    "query, field",
    [({"operation_id": "op_nonsense"}, "operation_id"), ({"older_than_days": "-1"}, "older_than_days"),
     ({"older_than_days": "soon"}, "older_than_days")],
)
def test_list_bad_filter_is_400_naming_it(user_client, scene, query, field):
    response = user_client.get(LIST_URL, query)

    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert field in response.json()["detail"]


def test_checkpoint_endpoints_need_a_credential(anonymous_client, scene):
    for response in (
        anonymous_client.get(LIST_URL),
        anonymous_client.get(STATS_URL),
        anonymous_client.get(detail_url(scene.mine.pk)),
        anonymous_client.delete(detail_url(scene.mine.pk)),
        anonymous_client.post(CLEANUP_URL, {}, format="json"),
    ):
        assert response.status_code == 401
    assert has_checkpoint(scene.mine)


# --- API: detail and delete

def test_detail_of_own_checkpoint(user_client, scene):
    response = user_client.get(detail_url(scene.mine.pk))

    assert response.status_code == 200
    assert response.json()["operation_id"] == scene.mine.pk
    assert response.json()["state_summary"] == {"epoch": 12}


def test_detail_of_another_users_checkpoint_is_404_for_a_user_not_for_staff(user_client, staff_client, scene):
    response = user_client.get(detail_url(scene.theirs.pk))

    assert response.status_code == 404
    assert response.json()["code"] == "OPERATION_NOT_FOUND"
    staff_view = staff_client.get(detail_url(scene.theirs.pk))
    assert staff_view.status_code == 200
    assert staff_view.json()["state_summary"] == {"bar_index": 5000}


def test_detail_of_an_operation_without_checkpoint_is_checkpoint_not_found(user_client, scene):
    response = user_client.get(detail_url(scene.bare.pk))

    assert response.status_code == 404
    assert response.json()["code"] == "CHECKPOINT_NOT_FOUND"
    assert response.json()["details"]["possible_reasons"]


def test_delete_removes_the_row_and_the_folder(user_client, scene, checkpoint_dir):
    assert folder_of(checkpoint_dir, scene.mine).is_dir()

    response = user_client.delete(detail_url(scene.mine.pk))

    assert response.status_code == 204
    assert not has_checkpoint(scene.mine)
    assert not folder_of(checkpoint_dir, scene.mine).exists()
    assert folder_of(checkpoint_dir, scene.mine_old).is_dir()  # only that one
    body = user_client.get(f"{OPERATIONS_URL}{scene.mine.pk}/").json()
    assert body["checkpoint"] is None
    assert body["resumable"] is False
    again = user_client.delete(detail_url(scene.mine.pk))
    assert again.status_code == 404
    assert again.json()["code"] == "CHECKPOINT_NOT_FOUND"


def test_user_cannot_delete_another_users_checkpoint(user_client, scene, checkpoint_dir):
    response = user_client.delete(detail_url(scene.theirs.pk))

    assert response.status_code == 404
    assert has_checkpoint(scene.theirs)
    assert folder_of(checkpoint_dir, scene.theirs).is_dir()


def test_staff_deletes_another_users_checkpoint(staff_client, scene, checkpoint_dir):
    response = staff_client.delete(detail_url(scene.theirs.pk))

    assert response.status_code == 204
    assert not has_checkpoint(scene.theirs)
    assert not folder_of(checkpoint_dir, scene.theirs).exists()


# --- API: cleanup and stats

def test_cleanup_is_staff_only(user_client, scene):
    response = user_client.post(CLEANUP_URL, {"max_age_days": 0}, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "PERMISSION_DENIED"
    assert Checkpoint.objects.count() == 4


def test_cleanup_dry_run_names_the_expired_and_deletes_nothing(staff_client, scene, checkpoint_dir):
    response = staff_client.post(CLEANUP_URL, {"dry_run": True}, format="json")

    assert response.status_code == 200
    assert response.json() == {"dry_run": True, "deleted": [scene.theirs.pk, scene.mine_old.pk], "count": 2,
                               "orphan_folders": []}
    assert Checkpoint.objects.count() == 4
    assert all(folder_of(checkpoint_dir, operation).is_dir() for operation in scene.checkpointed())


def test_cleanup_deletes_exactly_the_expired(staff_client, scene, checkpoint_dir):
    response = staff_client.post(CLEANUP_URL, {}, format="json")  # CHECKPOINT_MAX_AGE_DAYS: 30

    assert response.json() == {"dry_run": False, "deleted": [scene.theirs.pk, scene.mine_old.pk], "count": 2,
                               "orphan_folders": []}
    assert set(Checkpoint.objects.values_list("operation_id", flat=True)) == {scene.mine.pk, scene.running.pk}
    assert not folder_of(checkpoint_dir, scene.theirs).exists()
    assert not folder_of(checkpoint_dir, scene.mine_old).exists()
    assert folder_of(checkpoint_dir, scene.mine).is_dir()


def test_cleanup_takes_a_maximum_age(staff_client, scene):
    response = staff_client.post(CLEANUP_URL, {"max_age_days": 42}, format="json")

    assert response.json()["deleted"] == [scene.theirs.pk]
    assert has_checkpoint(scene.mine_old)


def test_cleanup_keeps_an_old_checkpoint_of_an_operation_being_resumed(staff_client, user, checkpoint_dir):
    resuming = with_checkpoint(
        OperationFactory(owner=user, status=S.RESUMING), "cancellation", {"epoch": 5}, age_days=90
    )

    response = staff_client.post(CLEANUP_URL, {"max_age_days": 1}, format="json")

    assert response.json()["deleted"] == []
    assert has_checkpoint(resuming)


def test_cleanup_rejects_a_negative_age(staff_client, scene):
    response = staff_client.post(CLEANUP_URL, {"max_age_days": -1}, format="json")

    assert response.status_code == 400
    assert "max_age_days" in response.json()["detail"]
    assert Checkpoint.objects.count() == 4


def test_stats_for_staff_cover_every_checkpoint(staff_client, scene):
    body = staff_client.get(STATS_URL).json()

    checkpoints = Checkpoint.objects.all()
    assert body["total_checkpoints"] == 4
    assert body["total_size_bytes"] == sum(c.state_size_bytes + c.artifacts_size_bytes for c in checkpoints)
    assert parse_datetime(body["oldest_checkpoint"]) == checkpoints.get(operation_id=scene.theirs.pk).created_at
    assert body["by_type"] == {"periodic": 1, "cancellation": 2, "failure": 1, "shutdown": 0}


def test_stats_for_a_user_cover_their_own(user_client, scene):
    body = user_client.get(STATS_URL).json()

    assert body["total_checkpoints"] == 3
    oldest = Checkpoint.objects.get(operation_id=scene.mine_old.pk)
    assert parse_datetime(body["oldest_checkpoint"]) == oldest.created_at
    assert body["by_type"] == {"periodic": 1, "cancellation": 1, "failure": 1, "shutdown": 0}


def test_stats_without_checkpoints(user_client, checkpoint_dir):
    body = user_client.get(STATS_URL).json()

    assert body == {
        "total_checkpoints": 0,
        "total_size_bytes": 0,
        "oldest_checkpoint": None,
        "by_type": {"periodic": 0, "cancellation": 0, "failure": 0, "shutdown": 0},
    }


def test_cli_stats_json_equals_the_api_for_staff(staff_client, scene):
    output, _ = run("checkpoints", "stats", "--json")

    assert json.loads(output) == staff_client.get(STATS_URL).json()


# --- manage.py checkpoints

def test_cli_list_prints_every_checkpoint_and_a_total(scene):
    output, _ = run("checkpoints", "list")

    lines = output.splitlines()
    assert lines[0].split() == ["OPERATION", "TYPE", "CREATED", "SIZE", "STATE", "RESUMABLE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == [scene.theirs.pk, scene.mine_old.pk, scene.mine.pk, scene.running.pk]
    assert "cancellation" in rows[scene.mine.pk] and "epoch 12" in rows[scene.mine.pk]
    assert rows[scene.mine.pk].endswith("yes")
    assert rows[scene.running.pk].endswith("no")
    assert "bar_index 5000" in rows[scene.theirs.pk]
    assert "3.9 KB" in rows[scene.mine.pk]
    assert lines[-1] == "Total: 4 checkpoints"


def test_cli_list_older_than_days(scene):
    output, _ = run("checkpoints", "list", "--older-than-days", "30")

    listed = [line.split()[0] for line in output.splitlines()[1:-1]]
    assert listed == [scene.theirs.pk, scene.mine_old.pk]
    assert output.splitlines()[-1] == "Total: 2 checkpoints"


def test_cli_list_json_is_the_api_list(staff_client, scene):
    output, _ = run("checkpoints", "list", "--json")

    body = json.loads(output)
    api = staff_client.get(LIST_URL).json()
    assert body["count"] == api["count"] == 4
    assert [without_age(item) for item in body["results"]] == [without_age(item) for item in api["results"]]


def test_cli_show(scene):
    output, _ = run("checkpoints", "show", scene.mine.pk)

    checkpoint = Checkpoint.objects.get(operation_id=scene.mine.pk)
    assert f"Operation:   {scene.mine.pk} (training, CANCELLED)" in output
    assert "Type:        cancellation" in output
    assert "Resumable:   yes" in output
    assert 'State:       {"epoch": 12}' in output
    for artifact in checkpoint.manifest:
        assert artifact["name"] in output
        assert artifact["sha256"] in output


def test_cli_show_json_is_the_api_detail(staff_client, scene):
    output, _ = run("checkpoints", "show", scene.theirs.pk, "--json")

    assert without_age(json.loads(output)) == without_age(staff_client.get(detail_url(scene.theirs.pk)).json())


def test_cli_show_without_checkpoint(scene):
    with pytest.raises(CommandError, match=f"CHECKPOINT_NOT_FOUND: Operation {scene.bare.pk} has no checkpoint"):
        run("checkpoints", "show", scene.bare.pk)


def test_cli_show_malformed_id(scene):
    with pytest.raises(CommandError, match="not an operation id"):
        run("checkpoints", "show", "../etc/passwd")


def test_cli_delete_force_deletes_and_warns_when_resumable(scene, checkpoint_dir):
    output, errors = run("checkpoints", "delete", scene.mine.pk, "--force")

    assert output.strip() == f"Deleted the checkpoint of {scene.mine.pk}."
    assert "Warning" in errors and "resumable" in errors and scene.mine.pk in errors
    assert not has_checkpoint(scene.mine)
    assert not folder_of(checkpoint_dir, scene.mine).exists()
    assert has_checkpoint(scene.mine_old)


def test_cli_delete_of_a_not_resumable_operation_does_not_warn(scene, checkpoint_dir):
    output, errors = run("checkpoints", "delete", scene.running.pk, "--force")

    assert errors == ""
    assert not has_checkpoint(scene.running)


def test_cli_delete_without_force_and_without_a_terminal_refuses(scene, checkpoint_dir):
    with pytest.raises(CommandError, match="Not deleted"):
        run("checkpoints", "delete", scene.mine.pk)

    assert has_checkpoint(scene.mine)
    assert folder_of(checkpoint_dir, scene.mine).is_dir()


def test_cli_delete_of_an_operation_without_checkpoint(scene):
    with pytest.raises(CommandError, match="CHECKPOINT_NOT_FOUND"):
        run("checkpoints", "delete", scene.bare.pk, "--force")


def test_cli_cleanup_dry_run_deletes_nothing(scene, checkpoint_dir):
    output, _ = run("checkpoints", "cleanup", "--dry-run")

    assert output.splitlines() == [
        f"Would delete the checkpoint of {scene.theirs.pk}",
        f"Would delete the checkpoint of {scene.mine_old.pk}",
        "Would delete 2 checkpoints and 0 orphan folders.",
    ]
    assert Checkpoint.objects.count() == 4
    assert all(folder_of(checkpoint_dir, operation).is_dir() for operation in scene.checkpointed())


def test_cli_cleanup_deletes_exactly_the_expired(scene, checkpoint_dir):
    output, _ = run("checkpoints", "cleanup")

    assert output.splitlines()[-1] == "Deleted 2 checkpoints and 0 orphan folders."
    assert set(Checkpoint.objects.values_list("operation_id", flat=True)) == {scene.mine.pk, scene.running.pk}
    assert not folder_of(checkpoint_dir, scene.theirs).exists()
    assert not folder_of(checkpoint_dir, scene.mine_old).exists()
    assert folder_of(checkpoint_dir, scene.mine).is_dir()
    assert folder_of(checkpoint_dir, scene.running).is_dir()


def test_cli_cleanup_max_age_days(scene):
    output, _ = run("checkpoints", "cleanup", "--max-age-days", "42")

    assert output.splitlines() == [f"Deleted the checkpoint of {scene.theirs.pk}", "Deleted 1 checkpoint and 0 orphan folders."]
    assert has_checkpoint(scene.mine_old)


def test_cli_cleanup_rejects_a_negative_age(scene):
    with pytest.raises(CommandError, match="--max-age-days must not be negative"):
        run("checkpoints", "cleanup", "--max-age-days", "-1")
    assert Checkpoint.objects.count() == 4


@pytest.mark.parametrize("action, option", [("cleanup", "--max-age-days"), ("list", "--older-than-days")])
@pytest.mark.parametrize("days", ["36501", "999999", "1e308", "inf", "nan"])
def test_cli_rejects_an_age_beyond_a_century(scene, action, option, days):
    with pytest.raises(CommandError, match=f"{option} must be at most 36500"):
        run("checkpoints", action, option, days)
    assert Checkpoint.objects.count() == 4


def test_cli_stats(scene):
    output, _ = run("checkpoints", "stats")

    assert "Checkpoints: 4" in output.splitlines()
    assert "  cancellation  2" in output.splitlines()


# --- manage.py checkpoints delete as a real process: the confirmation

def manage(checkpoint_dir: Path, *args: str, stdin=subprocess.DEVNULL, input_text: str | None = None):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(CHECKPOINT_DIR=str(checkpoint_dir)),
        stdin=stdin,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_process_delete_without_a_terminal_refuses_and_deletes_nothing(transactional_db, user, checkpoint_dir):
    operation = with_checkpoint(OperationFactory(owner=user, status=S.CANCELLED), "cancellation", {"epoch": 1})

    process = manage(checkpoint_dir, "checkpoints", "delete", operation.pk)

    assert process.returncode == 1
    assert "Not deleted" in process.stderr
    assert "resumable" in process.stderr  # the warning came first
    assert "Traceback" not in process.stderr
    assert has_checkpoint(operation)
    assert folder_of(checkpoint_dir, operation).is_dir()


@pytest.mark.parametrize("answer, deleted", [("y", True), ("n", False)])
def test_process_delete_on_a_terminal_asks_first(transactional_db, user, checkpoint_dir, answer, deleted):
    operation = with_checkpoint(OperationFactory(owner=user, status=S.FAILED), "failure", {"epoch": 1})
    controller, terminal = pty.openpty()
    try:
        os.write(controller, f"{answer}\n".encode())
        process = manage(checkpoint_dir, "checkpoints", "delete", operation.pk, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)

    assert (process.returncode == 0) is deleted, process.stderr
    assert has_checkpoint(operation) is not deleted
    assert folder_of(checkpoint_dir, operation).exists() is not deleted


# --- manage.py operations: the checkpoint column, --resumable, the summary line

def rows_of(output: str) -> dict[str, str]:
    return {line.split()[0]: line for line in output.splitlines()[1:-1]}


def test_operations_list_has_a_checkpoint_column_and_counts_resumable(scene):
    output, _ = run("operations", "list")

    lines = output.splitlines()
    assert "CHECKPOINT" in lines[0].split()
    rows = rows_of(output)
    assert "cancellation epoch 12" in rows[scene.mine.pk]
    assert "failure epoch 3" in rows[scene.mine_old.pk]
    assert "periodic epoch 20" in rows[scene.running.pk]
    assert "cancellation bar_index 5000" in rows[scene.theirs.pk]
    assert rows[scene.bare.pk].split()[4] == "-"
    assert lines[-1] == "Total: 5 operations (3 resumable)"


def test_operations_list_checkpoint_column_shows_where_a_long_run_stopped(checkpoint_dir):
    backtest = with_checkpoint(
        OperationFactory(operation_type="backtesting", status=S.CANCELLED), "cancellation", {"bar_index": 12345678}
    )
    session = with_checkpoint(
        OperationFactory(operation_type="agent_research", status=S.FAILED), "failure", {"phase": "BACKTESTING"}
    )

    output, _ = run("operations", "list")

    rows = rows_of(output)
    assert "cancellation bar_index 12345678" in rows[backtest.pk]
    assert "failure phase BACKTESTING" in rows[session.pk]


def test_operations_list_resumable_only(scene):
    output, _ = run("operations", "list", "--resumable")

    assert set(rows_of(output)) == {scene.mine.pk, scene.mine_old.pk, scene.theirs.pk}
    assert output.splitlines()[-1] == "Total: 3 operations (3 resumable)"


def test_operations_list_by_status_counts_resumable_among_them(scene):
    output, _ = run("operations", "list", "--status", "CANCELLED")

    assert set(rows_of(output)) == {scene.mine.pk, scene.bare.pk, scene.theirs.pk}
    assert output.splitlines()[-1] == "Total: 3 operations (2 resumable)"


def test_operations_list_json_carries_checkpoint_and_resumable(scene):
    output, _ = run("operations", "list", "--resumable", "--json")

    body = json.loads(output)
    assert body["count"] == 3
    assert {item["operation_id"] for item in body["results"]} == {scene.mine.pk, scene.mine_old.pk, scene.theirs.pk}
    assert all(item["resumable"] is True for item in body["results"])
    mine = next(item for item in body["results"] if item["operation_id"] == scene.mine.pk)
    assert mine["checkpoint"]["state_summary"] == {"epoch": 12}


def test_operations_status_shows_the_checkpoint_and_how_to_resume(scene):
    output, _ = run("operations", "status", scene.mine.pk)

    checkpoint_line = next(line for line in output.splitlines() if line.startswith("Checkpoint:"))
    assert "cancellation" in checkpoint_line and "(epoch 12)" in checkpoint_line
    assert f"Resumable:  yes (python manage.py operations resume {scene.mine.pk})" in output.splitlines()
    bare, _ = run("operations", "status", scene.bare.pk)
    assert "Checkpoint: none" in bare.splitlines()
    assert "Resumable" not in bare


# --- operation bodies in the API

def test_operation_body_carries_the_checkpoint_summary(user_client, scene):
    body = user_client.get(f"{OPERATIONS_URL}{scene.mine.pk}/").json()

    checkpoint = Checkpoint.objects.get(operation_id=scene.mine.pk)
    summary = body["checkpoint"]
    assert summary["checkpoint_type"] == "cancellation"
    assert parse_datetime(summary["created_at"]) == checkpoint.created_at
    assert summary["state_summary"] == {"epoch": 12}
    assert summary["state_size_bytes"] == checkpoint.state_size_bytes > 0
    assert summary["artifacts_size_bytes"] == 4000
    assert body["resumable"] is True


def test_operation_body_of_a_backtest_summarises_its_bar_index(staff_client, scene):
    body = staff_client.get(f"{OPERATIONS_URL}{scene.theirs.pk}/").json()

    assert body["checkpoint"]["state_summary"] == {"bar_index": 5000}  # not the cash: a summary


def test_running_operation_with_a_checkpoint_is_not_resumable(user_client, scene):
    body = user_client.get(f"{OPERATIONS_URL}{scene.running.pk}/").json()

    assert body["checkpoint"]["checkpoint_type"] == "periodic"
    assert body["resumable"] is False


def test_operation_without_checkpoint(user_client, scene):
    body = user_client.get(f"{OPERATIONS_URL}{scene.bare.pk}/").json()

    assert body["checkpoint"] is None
    assert body["resumable"] is False


def test_operation_list_filters_resumable(user_client, staff_client, scene):
    resumable = user_client.get(OPERATIONS_URL, {"resumable": "true"}).json()
    not_resumable = user_client.get(OPERATIONS_URL, {"resumable": "false"}).json()
    everyone = staff_client.get(OPERATIONS_URL, {"resumable": "true"}).json()

    assert set(ids(resumable["results"])) == {scene.mine.pk, scene.mine_old.pk}
    assert all(item["resumable"] for item in resumable["results"])
    assert set(ids(not_resumable["results"])) == {scene.running.pk, scene.bare.pk}
    assert set(ids(everyone["results"])) == {scene.mine.pk, scene.mine_old.pk, scene.theirs.pk}


def test_operation_list_rejects_a_bad_resumable_value(user_client, scene):
    response = user_client.get(OPERATIONS_URL, {"resumable": "perhaps"})

    assert response.status_code == 400
    assert "resumable" in response.json()["detail"]


# --- admin

def admin_url(name: str, operation: Operation) -> str:
    # quote(): the admin unquotes ids in its URLs, and "_22", "_24"... in an operation id would decode to '"', '$'...
    return reverse(f"admin:{name}", args=[quote(operation.pk)])


def rows_shown(response) -> set[str]:
    return {row.pk for row in response.context["cl"].result_list}


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def admin_action(client: Client, url: str, action: str, *pks: str):
    return client.post(url, {"action": action, "index": "0", "_selected_action": list(pks)}, follow=True)


def test_admin_resumable_filter(admin_client, scene):
    page = admin_client.get(OPERATIONS_ADMIN)
    assert "By resumable" in page.content.decode()

    assert rows_shown(admin_client.get(OPERATIONS_ADMIN, {"resumable": "yes"})) == {
        scene.mine.pk, scene.mine_old.pk, scene.theirs.pk,
    }
    assert rows_shown(admin_client.get(OPERATIONS_ADMIN, {"resumable": "no"})) == {scene.running.pk, scene.bare.pk}


def test_admin_operations_show_the_checkpoint_summary(admin_client, scene):
    html = admin_client.get(OPERATIONS_ADMIN).content.decode()

    assert "cancellation · epoch 12 · 0.0 MB · resumable" in html
    assert "periodic · epoch 20 · 0.0 MB" in html
    assert "periodic · epoch 20 · 0.0 MB · resumable" not in html
    detail = admin_client.get(admin_url("operations_operation_change", scene.mine)).content.decode()
    assert "cancellation · epoch 12" in detail


def test_admin_link_to_an_operation_whose_id_looks_quoted_opens_it(admin_client, checkpoint_dir):
    # Made at 22:15 UTC, random part starting with 24: "_22" and "_24" are the admin's quotes of '"' and '$'.
    operation = with_checkpoint(
        OperationFactory(operation_id="op_training_20240101_221500_24abcdef", status=S.CANCELLED),
        "cancellation",
        {"epoch": 4},
    )
    changelist = admin_client.get(OPERATIONS_ADMIN).content.decode()
    link = admin_url("operations_operation_change", operation)
    assert f'href="{link}"' in changelist

    page = admin_client.get(link)

    assert page.status_code == 200
    assert "cancellation · epoch 4" in page.content.decode()


def test_admin_operations_changelist_does_not_query_per_checkpoint(admin_client, user, checkpoint_dir):
    with_checkpoint(OperationFactory(owner=user, status=S.CANCELLED), "cancellation", {"epoch": 1})
    with CaptureQueriesContext(connection) as one:
        admin_client.get(OPERATIONS_ADMIN)
    for epoch in range(2, 6):
        with_checkpoint(OperationFactory(owner=user, status=S.CANCELLED), "cancellation", {"epoch": epoch})
    with CaptureQueriesContext(connection) as five:
        admin_client.get(OPERATIONS_ADMIN)

    assert len(five) == len(one)


def test_admin_resume_action(admin_client, admin_user, scene, training_executor):
    response = admin_action(admin_client, OPERATIONS_ADMIN, "resume_operations", scene.mine.pk, scene.running.pk)

    assert response.status_code == 200
    assert Operation.objects.get(pk=scene.mine.pk).status == S.RESUMING
    assert Operation.objects.get(pk=scene.running.pk).status == S.RUNNING
    event = OperationEvent.objects.get(operation_id=scene.mine.pk, to_status=S.RESUMING)
    assert event.actor == f"admin:{admin_user.username}"
    assert queued_operation_ids() == [scene.mine.pk]
    messages = messages_of(response)
    assert f"1 resuming: {scene.mine.pk}." in messages
    assert any(message.startswith("OPERATION_NOT_RESUMABLE") and scene.running.pk in message for message in messages)


def test_admin_resume_action_reports_a_corrupted_checkpoint(admin_client, scene, checkpoint_dir, training_executor):
    checkpoint = Checkpoint.objects.get(operation_id=scene.mine.pk)
    (checkpoint_dir / checkpoint.artifacts_path / "model.pt").write_bytes(b"garbage")

    response = admin_action(admin_client, OPERATIONS_ADMIN, "resume_operations", scene.mine.pk)

    assert any("CHECKPOINT_CORRUPTED" in message and "model.pt" in message for message in messages_of(response))
    assert Operation.objects.get(pk=scene.mine.pk).status == S.CANCELLED
    assert queued_operation_ids() == []


def test_admin_delete_checkpoints_action(admin_client, scene, checkpoint_dir):
    response = admin_action(
        admin_client, OPERATIONS_ADMIN, "delete_checkpoints", scene.mine.pk, scene.theirs.pk, scene.bare.pk
    )

    assert "Deleted 2 checkpoint(s)." in messages_of(response)
    assert not has_checkpoint(scene.mine) and not has_checkpoint(scene.theirs)
    assert not folder_of(checkpoint_dir, scene.mine).exists()
    assert not folder_of(checkpoint_dir, scene.theirs).exists()
    assert has_checkpoint(scene.mine_old)
    assert Operation.objects.filter(pk__in=[scene.mine.pk, scene.theirs.pk]).count() == 2  # operations stay


def test_admin_checkpoints_changelist_shows_age_size_and_state(admin_client, user, checkpoint_dir):
    big = with_checkpoint(
        OperationFactory(owner=user, status=S.CANCELLED),
        "cancellation",
        {"epoch": 7},
        artifacts={"model.pt": b"x" * (5 * 524_288)},
        age_days=40,
    )

    response = admin_client.get(CHECKPOINTS_ADMIN)

    assert response.status_code == 200
    html = response.content.decode()
    assert big.pk in html
    assert "40.0 d" in html
    assert "2.50 MB" in html
    assert "epoch 7" in html


def test_admin_checkpoints_changelist_does_not_query_per_row(admin_client, user, checkpoint_dir):
    with_checkpoint(OperationFactory(owner=user, status=S.CANCELLED), "cancellation", {"epoch": 1})
    with CaptureQueriesContext(connection) as one:
        admin_client.get(CHECKPOINTS_ADMIN)
    for epoch in range(2, 6):
        with_checkpoint(OperationFactory(owner=user, status=S.FAILED), "failure", {"epoch": epoch})
    with CaptureQueriesContext(connection) as five:
        admin_client.get(CHECKPOINTS_ADMIN)

    assert len(five) == len(one)


def test_admin_checkpoint_page_shows_the_manifest(admin_client, scene):
    response = admin_client.get(admin_url("checkpoints_checkpoint_change", scene.mine))

    assert response.status_code == 200
    html = response.content.decode()
    for artifact in Checkpoint.objects.get(operation_id=scene.mine.pk).manifest:
        assert artifact["sha256"] in html
    assert "&quot;epoch&quot;: 12" in html


def test_admin_deleting_a_checkpoint_removes_its_folder(admin_client, scene, checkpoint_dir):
    url = admin_url("checkpoints_checkpoint_delete", scene.mine)

    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not has_checkpoint(scene.mine)
    assert not folder_of(checkpoint_dir, scene.mine).exists()
    assert Operation.objects.filter(pk=scene.mine.pk).exists()


def test_admin_bulk_delete_of_checkpoints_removes_their_folders(admin_client, scene, checkpoint_dir):
    response = admin_client.post(
        CHECKPOINTS_ADMIN,
        {"action": "delete_selected", "_selected_action": [scene.mine.pk, scene.theirs.pk], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert set(Checkpoint.objects.values_list("operation_id", flat=True)) == {scene.mine_old.pk, scene.running.pk}
    assert not folder_of(checkpoint_dir, scene.mine).exists()
    assert not folder_of(checkpoint_dir, scene.theirs).exists()


def test_admin_checkpoints_are_staff_only(user, scene):
    client = Client()
    assert client.login(username=user.username, password="secret-pass")

    response = client.get(CHECKPOINTS_ADMIN)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
