"""Resume (docs/cancel-and-resume.md): every outcome through the service, the API and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.db import connection, connections
from django.utils.dateparse import parse_datetime

from checkpoints.exceptions import CheckpointCorrupted, CheckpointNotFound
from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_load, checkpoint_save
from operations import registry
from operations.exceptions import ExecutorNotRegistered, OperationNotFound
from operations.ids import new_operation_id
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_cancel, operation_claim, operation_finish
from runtime import resume as resume_module
from runtime.exceptions import OperationNotResumable, ResumeConflict, ResumeEnqueueFailed
from runtime.resume import operation_resume
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory, WorkerFactory
from tests.support.commands import command_output as run
from tests.support.processes import ROOT, child_env

MODEL_BYTES = bytes(range(256)) * 64
OPTIMIZER_BYTES = b"optimizer state " * 100
NOT_RESUMABLE = [S.PENDING, S.RUNNING, S.RESUMING, S.PENDING_RECONCILIATION, S.COMPLETED]


def resume_url(operation_id: str) -> str:
    return f"/api/v1/operations/{operation_id}/resume/"


def stopped_operation(
    *, status: str = S.CANCELLED, owner=None, operation_type: str = "training", state: dict | None = None, **fields
) -> Operation:
    """A CANCELLED (or FAILED) operation with a valid checkpoint, as a worker leaves it."""
    operation = OperationFactory(
        operation_type=operation_type, status=status, owner=owner, progress_percent=40.0, version=3, **fields
    )
    saved = checkpoint_save(
        operation_id=operation.operation_id,
        checkpoint_type="cancellation" if status == S.CANCELLED else "failure",
        state={"epoch": 12, "train_loss": [0.9, 0.7]} if state is None else state,
        artifacts={"model.pt": MODEL_BYTES, "optimizer.pt": OPTIMIZER_BYTES},
    )
    assert saved.saved, saved.error
    return operation


def artifact_file(checkpoint_dir: Path, operation_id: str, name: str) -> Path:
    checkpoint = Checkpoint.objects.get(operation_id=operation_id)
    return checkpoint_dir / checkpoint.artifacts_path / name


def flip_one_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def snapshot(operation_id: str) -> dict:
    """What a refused resume must leave alone."""
    operation = Operation.objects.get(pk=operation_id)
    checkpoint = Checkpoint.objects.filter(operation_id=operation_id).values("version", "artifacts_path").first()
    return {
        "status": operation.status,
        "version": operation.version,
        "events": OperationEvent.objects.filter(operation_id=operation_id).count(),
        "queued": queued_operation_ids(),
        "checkpoint": checkpoint,
    }


def resuming_events(operation_id: str) -> list[OperationEvent]:
    return list(OperationEvent.objects.filter(operation_id=operation_id, to_status=S.RESUMING))


@pytest.fixture
def executors():
    """Set (a task path) or remove (None) executors for this test only; the registrations come back after.

    Restored in place (not by swapping the dict), so fixtures that also register executors stack with it.
    """
    saved = dict(registry._executors)

    class Executors:
        def __setitem__(self, operation_type: str, task: str | None) -> None:
            if task is None:
                registry.unregister_executor(operation_type)
            else:
                registry.register_executor(operation_type, task)

    yield Executors()
    registry._executors.clear()
    registry._executors.update(saved)


def refuse_message(operation_id: str, operation_type: str) -> str:
    raise ConnectionError("broker unreachable")


@pytest.fixture
def failing_broker(monkeypatch):
    """The broker refuses the message (the broker itself is not under test here)."""
    monkeypatch.setattr(registry, "enqueue_operation", refuse_message)


@pytest.fixture
def rival_resumes_first(monkeypatch):
    """Another resume of the same operation wins between our read (step 1) and our update (step 5).

    `then_cancel`: the winner's run is cancelled again at once, so the status is
    CANCELLED again when our update runs, only the version differs.
    """

    def arm(*, then_cancel: bool = False) -> None:
        real_validate = resume_module.checkpoint_validate
        raced = []

        def validate_then_lose_the_race(checkpoint) -> None:
            real_validate(checkpoint)
            if raced:
                return
            raced.append(True)
            operation_resume(operation_id=checkpoint.operation_id, actor="user:rival")
            if then_cancel:
                operation_cancel(operation_id=checkpoint.operation_id, actor="user:rival")

        monkeypatch.setattr(resume_module, "checkpoint_validate", validate_then_lose_the_race)

    return arm


# --- the service

@pytest.mark.django_db
@pytest.mark.usefixtures("checkpoint_dir", "training_executor")
class TestService:
    def test_missing_operation_is_operation_not_found(self):
        with pytest.raises(OperationNotFound) as raised:
            operation_resume(operation_id=new_operation_id("training"), actor="test")

        assert raised.value.code == "OPERATION_NOT_FOUND"
        assert raised.value.status_code == 404

    @pytest.mark.parametrize("status", NOT_RESUMABLE)
    def test_operation_neither_cancelled_nor_failed_is_not_resumable(self, status):
        operation = stopped_operation()
        Operation.objects.filter(pk=operation.pk).update(status=status)
        before = snapshot(operation.pk)

        with pytest.raises(OperationNotResumable) as raised:
            operation_resume(operation_id=operation.pk, actor="test")

        assert raised.value.code == "OPERATION_NOT_RESUMABLE"
        assert raised.value.status_code == 409
        assert raised.value.details["current_status"] == status
        assert raised.value.details["resumable_statuses"] == ["CANCELLED", "FAILED"]
        assert snapshot(operation.pk) == before

    def test_operation_without_checkpoint_is_checkpoint_not_found(self):
        operation = OperationFactory(status=S.FAILED)
        before = snapshot(operation.pk)

        with pytest.raises(CheckpointNotFound) as raised:
            operation_resume(operation_id=operation.pk, actor="test")

        assert raised.value.code == "CHECKPOINT_NOT_FOUND"
        assert raised.value.status_code == 404
        reasons = " ".join(raised.value.details["possible_reasons"])
        assert "completed" in reasons and "expired" in reasons and "first checkpoint" in reasons
        assert snapshot(operation.pk) == before

    def test_one_flipped_byte_is_checkpoint_corrupted_naming_the_artifact(self, checkpoint_dir):
        operation = stopped_operation()
        flip_one_byte(artifact_file(checkpoint_dir, operation.pk, "optimizer.pt"))
        before = snapshot(operation.pk)

        with pytest.raises(CheckpointCorrupted) as raised:
            operation_resume(operation_id=operation.pk, actor="test")

        assert raised.value.code == "CHECKPOINT_CORRUPTED"
        assert raised.value.status_code == 422
        assert raised.value.details["artifacts"] == [{"name": "optimizer.pt", "problem": "sha256 mismatch"}]
        assert "optimizer.pt" in raised.value.detail
        assert snapshot(operation.pk) == before

    def test_missing_and_truncated_artifacts_are_all_named(self, checkpoint_dir):
        operation = stopped_operation()
        artifact_file(checkpoint_dir, operation.pk, "model.pt").unlink()
        optimizer = artifact_file(checkpoint_dir, operation.pk, "optimizer.pt")
        optimizer.write_bytes(OPTIMIZER_BYTES[:-10])

        with pytest.raises(CheckpointCorrupted) as raised:
            operation_resume(operation_id=operation.pk, actor="test")

        problems = {artifact["name"]: artifact["problem"] for artifact in raised.value.details["artifacts"]}
        assert problems["model.pt"] == "missing"
        assert problems["optimizer.pt"] == f"size {len(OPTIMIZER_BYTES) - 10} bytes, expected {len(OPTIMIZER_BYTES)}"
        assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED
        assert queued_operation_ids() == []

    @pytest.mark.parametrize("then_cancel", [False, True], ids=["rival-resuming", "rival-cancelled-again"])
    def test_losing_the_race_is_resume_conflict(self, then_cancel, rival_resumes_first):
        operation = stopped_operation()
        rival_resumes_first(then_cancel=then_cancel)

        with pytest.raises(ResumeConflict) as raised:
            operation_resume(operation_id=operation.pk, actor="user:loser")

        assert raised.value.code == "RESUME_CONFLICT"
        assert raised.value.status_code == 409
        assert Operation.objects.get(pk=operation.pk).status == (S.CANCELLED if then_cancel else S.RESUMING)
        assert [event.actor for event in resuming_events(operation.pk)] == ["user:rival"]
        assert queued_operation_ids() == [operation.pk]  # the winner's message only

    @pytest.mark.parametrize("status", [S.CANCELLED, S.FAILED])
    def test_resume_moves_to_resuming_enqueues_and_keeps_the_checkpoint(self, status, checkpoint_dir):
        operation = stopped_operation(status=status)
        checkpoint = Checkpoint.objects.get(operation_id=operation.pk)

        result = operation_resume(operation_id=operation.pk, actor="user:someone")

        assert result.operation_id == operation.pk
        assert result.status == S.RESUMING
        assert result.resumed_from == {
            "checkpoint_type": checkpoint.checkpoint_type,
            "created_at": checkpoint.created_at,
            "epoch": 12,
            "progress_percent": 40.0,
        }
        operation.refresh_from_db()
        assert operation.status == S.RESUMING
        assert operation.version == 4
        assert operation.queued_at is not None
        [event] = resuming_events(operation.pk)
        assert (event.from_status, event.actor) == (status, "user:someone")
        assert queued_operation_ids() == [operation.pk]
        assert Checkpoint.objects.get(operation_id=operation.pk).version == checkpoint.version
        assert artifact_file(checkpoint_dir, operation.pk, "model.pt").read_bytes() == MODEL_BYTES

    def test_any_worker_claims_the_resumed_operation_and_loads_its_checkpoint(self):
        operation = stopped_operation()
        operation_resume(operation_id=operation.pk, actor="test")
        other_worker = WorkerFactory()

        attempt = operation_claim(operation_id=operation.pk, worker_id=other_worker.worker_id)

        assert attempt is not None
        assert Operation.objects.get(pk=operation.pk).status == S.RUNNING
        loaded = checkpoint_load(operation.pk)
        assert loaded.state["epoch"] == 12
        assert loaded.artifacts == {"model.pt": MODEL_BYTES, "optimizer.pt": OPTIMIZER_BYTES}

    def test_backtest_resumes_from_its_bar_index(self, executors):
        executors["backtesting"] = "tests.tasks.noop"
        operation = stopped_operation(operation_type="backtesting", state={"bar_index": 20000, "cash": 1000.0})

        result = operation_resume(operation_id=operation.pk, actor="test")

        assert result.resumed_from["bar_index"] == 20000
        assert "epoch" not in result.resumed_from
        assert queued_operation_ids() == [operation.pk]

    def test_backend_local_session_resumes_from_its_phase_without_a_message(self):
        operation = stopped_operation(
            operation_type="agent_research", is_backend_local=True, state={"phase": "BACKTESTING"}
        )

        result = operation_resume(operation_id=operation.pk, actor="test")

        assert result.resumed_from["phase"] == "BACKTESTING"
        assert Operation.objects.get(pk=operation.pk).status == S.RESUMING
        assert queued_operation_ids() == []  # the control loop picks it up, not a worker

    def test_without_an_executor_nothing_changes(self, executors):
        executors["training"] = None
        operation = stopped_operation()
        before = snapshot(operation.pk)

        with pytest.raises(ExecutorNotRegistered) as raised:
            operation_resume(operation_id=operation.pk, actor="test")

        assert raised.value.status_code == 503
        assert snapshot(operation.pk) == before

    @pytest.mark.parametrize("status", [S.CANCELLED, S.FAILED])
    def test_enqueue_failure_puts_the_status_back(self, status, failing_broker):
        operation = stopped_operation(status=status)

        with pytest.raises(ResumeEnqueueFailed) as raised:
            operation_resume(operation_id=operation.pk, actor="test")

        assert raised.value.code == "RESUME_ENQUEUE_FAILED"
        assert raised.value.status_code == 503
        assert "broker unreachable" in raised.value.detail
        operation.refresh_from_db()
        assert operation.status == status
        events = list(OperationEvent.objects.filter(operation_id=operation.pk).order_by("at", "id"))
        assert [(event.from_status, event.to_status) for event in events[-2:]] == [
            (status, S.RESUMING),
            (S.RESUMING, status),
        ]
        assert "could not be enqueued" in events[-1].reason
        assert queued_operation_ids() == []
        assert Checkpoint.objects.filter(operation_id=operation.pk).exists()

    def test_a_failed_resume_can_be_retried(self, monkeypatch):
        operation = stopped_operation()
        with monkeypatch.context() as broker_down:
            broker_down.setattr(registry, "enqueue_operation", refuse_message)
            with pytest.raises(ResumeEnqueueFailed):
                operation_resume(operation_id=operation.pk, actor="test")

        result = operation_resume(operation_id=operation.pk, actor="test")

        assert result.status == S.RESUMING
        assert Operation.objects.get(pk=operation.pk).status == S.RESUMING
        assert queued_operation_ids() == [operation.pk]


def test_broker_table_gone_for_real_is_enqueue_failed_and_status_put_back(
    transactional_db, checkpoint_dir, training_executor
):
    operation = stopped_operation()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE django_q_ormq RENAME TO django_q_ormq_gone")
    try:
        with pytest.raises(ResumeEnqueueFailed):
            operation_resume(operation_id=operation.pk, actor="test")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE django_q_ormq_gone RENAME TO django_q_ormq")

    assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED
    put_back = OperationEvent.objects.filter(operation_id=operation.pk, from_status=S.RESUMING, to_status=S.CANCELLED)
    assert put_back.count() == 1
    assert queued_operation_ids() == []
    assert operation_resume(operation_id=operation.pk, actor="test").status == S.RESUMING


# --- the API

@pytest.mark.django_db
@pytest.mark.usefixtures("checkpoint_dir", "training_executor")
class TestAPI:
    def test_missing_operation_is_404(self, user_client):
        missing = new_operation_id("training")

        response = user_client.post(resume_url(missing))

        assert response.status_code == 404
        body = response.json()
        assert body["code"] == "OPERATION_NOT_FOUND"
        assert missing in body["detail"]
        assert body["details"]["operation_id"] == missing

    def test_malformed_id_is_400_naming_the_field(self, user_client):
        response = user_client.post(resume_url("op_nonsense"))

        assert response.status_code == 400
        assert response.json()["code"] == "VALIDATION_ERROR"
        assert "operation_id" in response.json()["detail"]

    def test_another_users_operation_is_404_and_untouched(self, user_client, other_user):
        operation = stopped_operation(owner=other_user)
        before = snapshot(operation.pk)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 404
        assert response.json()["code"] == "OPERATION_NOT_FOUND"
        assert snapshot(operation.pk) == before

    def test_no_credential_is_401(self, anonymous_client, user):
        operation = stopped_operation(owner=user)

        response = anonymous_client.post(resume_url(operation.pk))

        assert response.status_code == 401
        assert response.json()["code"] == "NOT_AUTHENTICATED"
        assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED

    @pytest.mark.parametrize("status", NOT_RESUMABLE)
    def test_not_cancelled_or_failed_is_409_with_statuses(self, status, user, user_client):
        operation = stopped_operation(owner=user)
        Operation.objects.filter(pk=operation.pk).update(status=status)
        before = snapshot(operation.pk)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 409
        body = response.json()
        assert body["code"] == "OPERATION_NOT_RESUMABLE"
        assert status in body["detail"]
        assert body["details"]["current_status"] == status
        assert body["details"]["resumable_statuses"] == ["CANCELLED", "FAILED"]
        assert snapshot(operation.pk) == before

    def test_no_checkpoint_is_404_with_possible_reasons(self, user, user_client):
        operation = OperationFactory(owner=user, status=S.CANCELLED)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 404
        body = response.json()
        assert body["code"] == "CHECKPOINT_NOT_FOUND"
        assert operation.pk in body["detail"]
        assert len(body["details"]["possible_reasons"]) >= 3
        assert any("completed" in reason for reason in body["details"]["possible_reasons"])
        assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED

    def test_one_flipped_byte_is_422_naming_the_artifact_and_nothing_changes(self, user, user_client, checkpoint_dir):
        operation = stopped_operation(owner=user)
        flip_one_byte(artifact_file(checkpoint_dir, operation.pk, "model.pt"))
        before = snapshot(operation.pk)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "CHECKPOINT_CORRUPTED"
        assert "model.pt" in body["detail"]
        assert "optimizer.pt" not in body["detail"]
        assert body["details"]["artifacts"] == [{"name": "model.pt", "problem": "sha256 mismatch"}]
        assert snapshot(operation.pk) == before

    def test_lost_race_is_409_resume_conflict(self, user, user_client, rival_resumes_first):
        operation = stopped_operation(owner=user)
        rival_resumes_first(then_cancel=True)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 409
        assert response.json()["code"] == "RESUME_CONFLICT"
        assert response.json()["details"]["operation_id"] == operation.pk
        assert [event.actor for event in resuming_events(operation.pk)] == ["user:rival"]

    def test_resume_is_202_with_where_it_resumes_from(self, user, user_client):
        operation = stopped_operation(owner=user)
        checkpoint = Checkpoint.objects.get(operation_id=operation.pk)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 202
        body = response.json()
        assert body["operation_id"] == operation.pk
        assert body["status"] == "RESUMING"
        resumed_from = body["resumed_from"]
        assert resumed_from["checkpoint_type"] == "cancellation"
        assert parse_datetime(resumed_from["created_at"]) == checkpoint.created_at
        assert resumed_from["epoch"] == 12
        assert resumed_from["progress_percent"] == 40.0
        assert Operation.objects.get(pk=operation.pk).status == S.RESUMING
        [event] = resuming_events(operation.pk)
        assert event.actor == f"user:{user.username}"
        assert queued_operation_ids() == [operation.pk]
        assert Checkpoint.objects.filter(operation_id=operation.pk).exists()
        # The same operation continues: no new one was created.
        assert Operation.objects.count() == 1

    def test_operation_body_after_resume_is_resuming_and_no_longer_resumable(self, user, user_client):
        operation = stopped_operation(owner=user)
        user_client.post(resume_url(operation.pk))

        body = user_client.get(f"/api/v1/operations/{operation.pk}/").json()

        assert body["status"] == "RESUMING"
        assert body["resumable"] is False
        assert body["checkpoint"]["checkpoint_type"] == "cancellation"  # kept while resuming
        assert body["recent_events"][0]["to_status"] == "RESUMING"

    def test_second_resume_is_409_not_resumable(self, user, user_client):
        operation = stopped_operation(owner=user)
        assert user_client.post(resume_url(operation.pk)).status_code == 202

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 409
        assert response.json()["details"]["current_status"] == "RESUMING"
        assert queued_operation_ids() == [operation.pk]

    def test_staff_resumes_another_users_operation(self, staff_client, other_user):
        operation = stopped_operation(owner=other_user, status=S.FAILED)

        response = staff_client.post(resume_url(operation.pk))

        assert response.status_code == 202
        assert response.json()["resumed_from"]["checkpoint_type"] == "failure"
        assert Operation.objects.get(pk=operation.pk).status == S.RESUMING

    def test_enqueue_failure_is_503_and_the_status_is_put_back(self, user, user_client, failing_broker):
        operation = stopped_operation(owner=user, status=S.FAILED)

        response = user_client.post(resume_url(operation.pk))

        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "RESUME_ENQUEUE_FAILED"
        assert "put back" in body["detail"]
        assert Operation.objects.get(pk=operation.pk).status == S.FAILED
        put_back = OperationEvent.objects.filter(operation_id=operation.pk, from_status=S.RESUMING, to_status=S.FAILED)
        assert put_back.exists()
        assert queued_operation_ids() == []


# --- the command line

@pytest.mark.django_db
@pytest.mark.usefixtures("checkpoint_dir", "training_executor")
class TestCommand:
    def test_missing_operation(self):
        missing = new_operation_id("training")
        with pytest.raises(CommandError, match=f"OPERATION_NOT_FOUND: Operation {missing} not found"):
            run("operations", "resume", missing)

    def test_malformed_id(self):
        with pytest.raises(CommandError, match="not an operation id"):
            run("operations", "resume", "op_../../etc")

    def test_not_resumable(self):
        operation = stopped_operation()
        Operation.objects.filter(pk=operation.pk).update(status=S.COMPLETED)

        with pytest.raises(CommandError, match="OPERATION_NOT_RESUMABLE: .* is COMPLETED"):
            run("operations", "resume", operation.pk)

    def test_no_checkpoint(self):
        operation = OperationFactory(status=S.CANCELLED)
        with pytest.raises(CommandError, match="CHECKPOINT_NOT_FOUND"):
            run("operations", "resume", operation.pk)

    def test_corrupted(self, checkpoint_dir):
        operation = stopped_operation()
        flip_one_byte(artifact_file(checkpoint_dir, operation.pk, "model.pt"))

        with pytest.raises(CommandError, match=r"CHECKPOINT_CORRUPTED: .*model\.pt \(sha256 mismatch\)"):
            run("operations", "resume", operation.pk)
        assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED

    def test_conflict(self, rival_resumes_first):
        operation = stopped_operation()
        rival_resumes_first()
        with pytest.raises(CommandError, match="RESUME_CONFLICT"):
            run("operations", "resume", operation.pk)

    def test_enqueue_failure(self, failing_broker):
        operation = stopped_operation()
        with pytest.raises(CommandError, match="RESUME_ENQUEUE_FAILED"):
            run("operations", "resume", operation.pk)
        assert Operation.objects.get(pk=operation.pk).status == S.CANCELLED

    def test_resume_says_where_it_resumes_from(self):
        operation = stopped_operation()

        output = run("operations", "resume", operation.pk)

        assert output.strip() == f"Operation {operation.pk} is RESUMING from its cancellation checkpoint (epoch 12)."
        assert Operation.objects.get(pk=operation.pk).status == S.RESUMING
        assert [event.actor for event in resuming_events(operation.pk)] == ["cli"]
        assert queued_operation_ids() == [operation.pk]

    def test_resume_json_is_the_operation_body_with_resumed_from(self, staff_client):
        operation = stopped_operation()

        body = json.loads(run("operations", "resume", operation.pk, "--json"))

        api_body = staff_client.get(f"/api/v1/operations/{operation.pk}/").json()
        assert {key: value for key, value in body.items() if key != "resumed_from"} == api_body
        assert body["status"] == "RESUMING"
        checkpoint = Checkpoint.objects.get(operation_id=operation.pk)
        assert body["resumed_from"] == {
            "checkpoint_type": "cancellation",
            "created_at": api_body["checkpoint"]["created_at"],  # the API's format, as the API would reply
            "epoch": 12,
            "progress_percent": 40.0,
        }
        assert parse_datetime(body["resumed_from"]["created_at"]) == checkpoint.created_at

    def test_resume_is_listed_in_the_help(self):
        from runtime.management.commands.operations import Command

        assert "resume" in Command().create_parser("manage.py", "operations").format_usage()


def test_resume_follow_waits_until_the_operation_ends(transactional_db, checkpoint_dir, training_executor):
    operation = stopped_operation()
    worker = WorkerFactory()

    def worker_runs_it() -> None:
        try:
            time.sleep(0.8)
            attempt = operation_claim(operation_id=operation.pk, worker_id=worker.worker_id)
            time.sleep(0.8)
            operation_finish(
                operation_id=operation.pk, worker_id=worker.worker_id, attempt=attempt, status=S.COMPLETED, result={}
            )
        finally:
            connections.close_all()

    runner = threading.Thread(target=worker_runs_it)
    runner.start()
    try:
        output = run("operations", "resume", operation.pk, "--follow")
    finally:
        runner.join(timeout=10)

    lines = output.splitlines()
    assert lines[0].startswith(f"Operation {operation.pk} is RESUMING")
    assert lines[1].startswith("RESUMING")  # progress lines (no terminal here: no bar)
    assert any(line.startswith("RUNNING") for line in lines)
    assert lines[-2].startswith("COMPLETED 100.0%")
    assert lines[-1] == f"{operation.pk} COMPLETED"  # how it ended (its empty result has no figures to show)


# --- the command line as a real process

def manage(checkpoint_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """manage.py against the test database (rows must be committed: transactional_db) and this test's checkpoints."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(CHECKPOINT_DIR=str(checkpoint_dir)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_process_resume_of_a_corrupted_checkpoint_exits_1_naming_the_artifact(transactional_db, checkpoint_dir):
    operation = stopped_operation()
    flip_one_byte(artifact_file(checkpoint_dir, operation.pk, "optimizer.pt"))
    before = snapshot(operation.pk)

    process = manage(checkpoint_dir, "operations", "resume", operation.pk)

    assert process.returncode == 1
    assert process.stdout == ""
    assert "CHECKPOINT_CORRUPTED" in process.stderr
    assert f"The checkpoint of {operation.pk} is corrupted: optimizer.pt (sha256 mismatch)." in process.stderr
    assert "model.pt" not in process.stderr
    assert "Traceback" not in process.stderr
    assert snapshot(operation.pk) == before


def test_process_resume_without_checkpoint_exits_1(transactional_db, checkpoint_dir):
    operation = OperationFactory(status=S.FAILED)

    process = manage(checkpoint_dir, "operations", "resume", operation.pk)

    assert process.returncode == 1
    assert f"CHECKPOINT_NOT_FOUND: Operation {operation.pk} has no checkpoint." in process.stderr
    assert "Traceback" not in process.stderr
    assert Operation.objects.get(pk=operation.pk).status == S.FAILED
