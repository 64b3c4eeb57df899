"""Retention: `operations purge --older-than DAYS` (and the control loop's daily purge) deletes the operations that
ended long ago with their events and their files, a batch at a time; what a later resume needs stays."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.design import Verdict
from agents.models import Assessment
from agents.services import assessment_record
from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from operations import registry
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from operations.services.retention import operations_purge, purge_by_setting
from tests.factories import OperationFactory
from tests.support.commands import command_output as run

pytestmark = pytest.mark.django_db


@pytest.fixture
def folders(settings, tmp_path, checkpoint_dir):
    settings.MODELS_DIR = tmp_path / "models"
    settings.RESULTS_DIR = tmp_path / "results"
    return {"checkpoints": checkpoint_dir, "models": settings.MODELS_DIR, "results": settings.RESULTS_DIR}


def ended(days_ago: float, status: str = S.COMPLETED, operation_type: str = "training", **fields) -> Operation:
    operation = OperationFactory(operation_type=operation_type, status=status,
                                 completed_at=timezone.now() - timedelta(days=days_ago), **fields)
    for reason in ("Claimed", "Completed"):
        OperationEvent.objects.create(operation=operation, from_status=S.RUNNING, to_status=status, reason=reason,
                                      actor="test")
    return operation


def with_files(operation: Operation, folders: dict[str, Path]) -> Operation:
    """A checkpoint (row and folder), and the folder its type keeps: a training's model, a backtest's results."""
    saved = checkpoint_save(operation_id=operation.pk, checkpoint_type="cancellation", state={"epoch": 1},
                            artifacts={"model.pt": b"weights"})
    assert saved.saved, saved.error
    kind = "models" if operation.operation_type == "training" else "results"
    (folders[kind] / operation.pk).mkdir(parents=True)
    (folders[kind] / operation.pk / "file").write_bytes(b"data")
    return operation


def exists(operation: Operation) -> bool:
    return Operation.objects.filter(pk=operation.pk).exists()


def test_ended_operations_older_than_the_days_go_with_their_events_and_files(folders):
    old_training = with_files(ended(40, S.CANCELLED), folders)
    old_backtest = with_files(ended(31, S.FAILED, "backtesting"), folders)
    young = ended(5)
    running = OperationFactory(status=S.RUNNING)
    planned = ended(60, S.FAILED, restart_due_at=timezone.now() + timedelta(minutes=1))  # resumed automatically

    report = operations_purge(older_than_days=30)

    assert sorted(report.operations) == sorted([old_training.pk, old_backtest.pk]) and report.events == 4
    assert not exists(old_training) and not exists(old_backtest)
    assert not OperationEvent.objects.filter(operation_id__in=[old_training.pk, old_backtest.pk]).exists()
    assert not Checkpoint.objects.exists()
    for folder in folders.values():
        assert not any(folder.iterdir()), list(folder.iterdir())
    assert exists(young) and exists(running) and exists(planned)
    assert OperationEvent.objects.filter(operation=young).count() == 2


def test_status_and_type_choose_what_goes_and_sessions_stay_unless_asked_for():
    completed, failed = ended(40), ended(40, S.FAILED)
    backtest = ended(40, operation_type="backtesting")
    session = ended(40, operation_type="agent_research")
    child = ended(41, parent=session)
    assessment_record(session=session, configuration={"epochs": 5}, metrics={}, verdict=Verdict(True, 0.1, []))

    assert operations_purge(older_than_days=30, statuses=[S.FAILED]).operations == [failed.pk]
    assert operations_purge(older_than_days=30, operation_types=["backtesting"]).operations == [backtest.pk]
    assert operations_purge(older_than_days=30).operations == [completed.pk]  # not the session's child
    assert exists(session) and exists(child) and Assessment.objects.exists()

    assert sorted(operations_purge(older_than_days=30, operation_types=["agent_research"]).operations) == sorted(
        [session.pk, child.pk])  # a session goes with its children, and its assessment
    assert not Assessment.objects.exists()


def test_a_session_with_a_child_not_ended_stays_whole():
    session = ended(40, S.CANCELLED, operation_type="agent_research")
    running_child = OperationFactory(status=S.RUNNING, parent=session)
    report = operations_purge(older_than_days=30, operation_types=["agent_research"])
    assert report.operations == [] and sorted(report.kept_with_sessions) == sorted([session.pk, running_child.pk])


def test_a_model_a_backtest_may_still_resume_on_stays_until_that_backtest_completes():
    model = ended(40)
    legacy_model = ended(40)
    spent_model = ended(40)
    resumable = OperationFactory(operation_type="backtesting", status=S.CANCELLED, params={"model": model.pk})
    OperationFactory(operation_type="backtesting", status=S.FAILED,  # stored before API 2.0
                     params={"strategy_params": {"model_operation_id": legacy_model.pk}})
    OperationFactory(operation_type="backtesting", status=S.COMPLETED, params={"model": spent_model.pk})

    report = operations_purge(older_than_days=30)

    assert report.operations == [spent_model.pk]
    assert sorted(report.kept_as_models) == sorted([model.pk, legacy_model.pk])
    Operation.objects.filter(pk=resumable.pk).update(status=S.COMPLETED)
    assert operations_purge(older_than_days=30).operations == [model.pk]


def test_a_dry_run_names_what_would_go_and_deletes_nothing(folders):
    old = with_files(ended(40), folders)
    report = operations_purge(older_than_days=30, dry_run=True)
    assert report.operations == [old.pk] and report.events == 2 and report.dry_run
    assert exists(old) and Checkpoint.objects.filter(pk=old.pk).exists() and (folders["models"] / old.pk).exists()


def test_it_deletes_a_batch_at_a_time(folders):
    """Each batch: its own short transaction, a DELETE of its events and of its rows; the next batch starts
    after the last candidate the previous one read."""
    old = [ended(40 + index).pk for index in range(7)]
    with CaptureQueriesContext(connection) as queries:
        report = operations_purge(older_than_days=30, batch=3)
    assert sorted(report.operations) == sorted(old) and not Operation.objects.exists()
    deletes = [query["sql"] for query in queries.captured_queries
               if query["sql"].startswith('DELETE FROM "operations_operation"')]
    assert len(deletes) == 3  # 3 + 3 + 1
    assert all(delete.count("%s") <= 3 or delete.count("'op_") <= 3 for delete in deletes)
    savepoints = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 3  # one transaction a batch (a savepoint inside the test's own)


def test_the_command_says_what_it_deleted_and_what_it_kept(folders):
    model = ended(40)
    OperationFactory(operation_type="backtesting", status=S.CANCELLED, params={"model": model.pk})
    old = ended(50)

    dry = run("operations", "purge", "--older-than", "30", "--dry-run").splitlines()
    assert dry == ["Would delete 1 operation and 2 events, with their files.",
                   f"Kept 1 training(s) whose model a backtest not completed needs: {model.pk}"]
    body = json.loads(run("operations", "purge", "--older-than", "30", "--json"))
    assert body == {"dry_run": False, "operations": [old.pk], "count": 1, "events": 2, "kept_as_models": [model.pk],
                    "kept_with_sessions": []}
    assert not exists(old)


@pytest.mark.parametrize("days", ["-1", "nan", "40000"])
def test_the_command_refuses_a_bad_age_by_name(days):
    ended(40)
    with pytest.raises(CommandError, match="--older-than must be from 0 to 36,500 days."):
        run("operations", "purge", "--older-than", days)
    assert Operation.objects.count() == 1


def test_the_control_loop_purges_once_a_day_when_a_retention_is_set(settings, folders):
    old = ended(40)
    assert "operations purge" in [task.name for task in registry.maintenance_tasks()]
    task = next(task for task in registry.maintenance_tasks() if task.name == "operations purge")
    assert task.interval_seconds() == 24 * 3600
    settings.OPERATIONS_RETENTION_DAYS = 0
    assert purge_by_setting() is None and exists(old)
    settings.OPERATIONS_RETENTION_DAYS = 30
    assert purge_by_setting().operations == [old.pk] and not exists(old)
