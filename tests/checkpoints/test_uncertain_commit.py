"""A checkpoint save whose commit's outcome is unknown: the connection broke at COMMIT.

The save keeps the new folder (the row may point at it) and says so; the
folder is forgotten once the row has moved on. A commit the server refused
with an answer is not uncertain: its files are removed at once.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from django.db import OperationalError, transaction

from checkpoints import services
from checkpoints.models import Checkpoint
from checkpoints.services import (
    Fence,
    checkpoint_delete,
    checkpoint_forget_folder,
    checkpoint_load,
    checkpoint_save,
    checkpoint_sweep_orphans,
)
from operations.models import Operation
from runtime import context as context_module
from runtime.context import RunContext
from tests.support.commits import CommitFailure

pytestmark = pytest.mark.django_db(transaction=True)  # the commits must really happen

ARTIFACTS = {"model.pt": b"weights " * 100, "rng.json": b"[3, 1, 4]"}
LOST = "server closed the connection unexpectedly"


def save(operation: Operation, state: dict, artifacts: dict[str, bytes] | None = None):
    return checkpoint_save(
        operation_id=operation.operation_id,
        checkpoint_type="periodic",
        state=state,
        artifacts=ARTIFACTS if artifacts is None else artifacts,
        fence=Fence(operation.worker_id, operation.attempt),
    )


def save_folders(checkpoint_dir: Path, operation: Operation) -> list[str]:
    """The save folders of an operation, as `<operation id>/<name>`, sorted."""
    folder = checkpoint_dir / operation.operation_id
    return sorted(f"{operation.operation_id}/{path.name}" for path in folder.iterdir()) if folder.exists() else []


def row_folder(operation: Operation) -> str | None:
    return Checkpoint.objects.filter(pk=operation.pk).values_list("artifacts_path", flat=True).first()


@contextmanager
def reply_to_commit_lost():
    """The COMMIT reaches the database, but the caller sees the connection break: an on_commit hook
    registered inside the save's transaction runs right after the real COMMIT and raises."""
    real_commit = services._commit

    def commit_then_lose_the_reply(*args, **kwargs):
        value = real_commit(*args, **kwargs)

        def lose_the_reply():
            raise OperationalError(LOST)

        transaction.on_commit(lose_the_reply)
        return value

    with mock.patch.object(services, "_commit", commit_then_lose_the_reply):
        yield


@pytest.fixture
def connection_lost_at_commit():
    """The commit did NOT happen, and the caller cannot tell: a connection-level error at COMMIT."""
    failure = CommitFailure(errcode="08006")
    yield failure
    failure.disarm()  # a transactional test commits for real: leave no trigger to the next test


@pytest.fixture
def commit_refused():
    failure = CommitFailure()
    yield failure
    failure.disarm()


@pytest.fixture
def running(running_operation_factory, checkpoint_dir):
    return running_operation_factory()


def context_of(operation: Operation) -> RunContext:
    return RunContext(
        operation_id=operation.operation_id, operation_type=operation.operation_type, params={},
        worker_id=operation.worker_id, attempt=operation.attempt, resume_from=None,
    )


# --- the save


def test_a_commit_whose_reply_was_lost_keeps_the_folder_and_says_it_is_uncertain(running, checkpoint_dir):
    with reply_to_commit_lost():
        result = save(running, {"epoch": 1})

    assert result.saved is False
    assert result.uncertain_folder
    assert LOST in result.error and "commit outcome unknown" in result.error
    assert save_folders(checkpoint_dir, running) == [result.uncertain_folder]
    # It did commit: the row points at the folder and the checkpoint loads whole.
    assert row_folder(running) == result.uncertain_folder
    loaded = checkpoint_load(running.operation_id)
    assert (loaded.state, loaded.artifacts) == ({"epoch": 1}, ARTIFACTS)


def test_the_next_save_after_an_uncertain_commit_replaces_its_folder(running, checkpoint_dir):
    with reply_to_commit_lost():
        uncertain = save(running, {"epoch": 1})

    after = save(running, {"epoch": 2}, {"model.pt": b"second"})

    assert after.saved is True
    assert not (checkpoint_dir / uncertain.uncertain_folder).exists()
    assert save_folders(checkpoint_dir, running) == [after.checkpoint.artifacts_path]
    loaded = checkpoint_load(running.operation_id)
    assert (loaded.checkpoint.version, loaded.state, loaded.artifacts) == (2, {"epoch": 2}, {"model.pt": b"second"})


def test_an_uncertain_commit_over_an_earlier_checkpoint_keeps_both_and_names_both(running, checkpoint_dir):
    earlier = save(running, {"epoch": 1}).checkpoint.artifacts_path
    with reply_to_commit_lost():
        uncertain = save(running, {"epoch": 2})
    # The save could not know the row had moved: it removed neither folder, and names both.
    assert save_folders(checkpoint_dir, running) == sorted([earlier, uncertain.uncertain_folder])
    assert uncertain.previous_folder == earlier
    assert row_folder(running) == uncertain.uncertain_folder

    latest = save(running, {"epoch": 3}).checkpoint.artifacts_path

    # A bare save leaves the earlier folder to the orphan sweep; a run forgets it (next test).
    assert save_folders(checkpoint_dir, running) == sorted([earlier, latest])
    assert checkpoint_sweep_orphans(grace_seconds=0) == [earlier]
    assert save_folders(checkpoint_dir, running) == [latest]
    assert checkpoint_load(running.operation_id).state == {"epoch": 3}


def test_a_run_forgets_both_folders_of_an_uncertain_commit_after_its_next_save(running, checkpoint_dir):
    context = context_of(running)
    context.save_checkpoint("periodic", {"step": 1}, ARTIFACTS)
    with reply_to_commit_lost():
        assert context.save_checkpoint("periodic", {"step": 2}, ARTIFACTS).uncertain_folder

    after = context.save_checkpoint("periodic", {"step": 3}, ARTIFACTS)

    assert after.saved is True
    assert save_folders(checkpoint_dir, running) == [row_folder(running)] == [after.checkpoint.artifacts_path]


def test_a_connection_lost_at_a_commit_that_did_not_happen_keeps_the_folder(
    running, checkpoint_dir, connection_lost_at_commit
):
    earlier = save(running, {"epoch": 1}).checkpoint.artifacts_path
    connection_lost_at_commit.arm()

    result = save(running, {"epoch": 2}, {"model.pt": b"never committed"})

    assert result.saved is False
    assert result.uncertain_folder and result.uncertain_folder != earlier
    assert save_folders(checkpoint_dir, running) == sorted([earlier, result.uncertain_folder])
    connection_lost_at_commit.disarm()
    assert row_folder(running) == earlier
    assert checkpoint_load(running.operation_id).state == {"epoch": 1}


def test_a_commit_refused_by_the_server_removes_the_new_files(running, checkpoint_dir, commit_refused):
    earlier = save(running, {"epoch": 1}).checkpoint.artifacts_path
    commit_refused.arm()

    result = save(running, {"epoch": 2}, {"model.pt": b"never committed"})

    assert result.saved is False
    assert result.uncertain_folder == ""
    assert "commit refused for this test" in result.error
    assert save_folders(checkpoint_dir, running) == [earlier]
    commit_refused.disarm()
    loaded = checkpoint_load(running.operation_id)
    assert (loaded.checkpoint.version, loaded.state, loaded.artifacts) == (1, {"epoch": 1}, ARTIFACTS)


def test_a_refused_first_save_leaves_no_folder(running, checkpoint_dir, commit_refused):
    commit_refused.arm()

    result = save(running, {"epoch": 1})

    assert (result.saved, result.uncertain_folder) == (False, "")
    assert not (checkpoint_dir / running.operation_id).exists()
    commit_refused.disarm()
    assert not Checkpoint.objects.exists()


# --- forgetting an uncertain folder


def test_forgetting_a_folder_no_row_points_at_removes_it(running, checkpoint_dir):
    kept = save(running, {"epoch": 1}).checkpoint.artifacts_path
    leftover = f"{running.operation_id}/20990101T000000000000-deadbeef"
    (checkpoint_dir / leftover).mkdir()
    (checkpoint_dir / leftover / "model.pt").write_bytes(b"never committed")

    assert checkpoint_forget_folder(running.operation_id, leftover) is True

    assert save_folders(checkpoint_dir, running) == [kept]
    assert checkpoint_load(running.operation_id).artifacts == ARTIFACTS


def test_forgetting_the_folder_the_row_points_at_keeps_it(running, checkpoint_dir):
    kept = save(running, {"epoch": 1}).checkpoint.artifacts_path

    assert checkpoint_forget_folder(running.operation_id, kept) is False

    assert save_folders(checkpoint_dir, running) == [kept]
    assert checkpoint_load(running.operation_id).state == {"epoch": 1}


def test_forgetting_the_only_folder_of_an_operation_without_a_checkpoint_removes_its_folder_too(
    running, checkpoint_dir, connection_lost_at_commit
):
    connection_lost_at_commit.arm()
    result = save(running, {"epoch": 1})
    connection_lost_at_commit.disarm()
    assert result.uncertain_folder and not Checkpoint.objects.exists()

    assert checkpoint_forget_folder(running.operation_id, result.uncertain_folder) is True

    assert not (checkpoint_dir / running.operation_id).exists()


def test_forgetting_a_folder_that_is_already_gone_is_harmless(running, checkpoint_dir):
    kept = save(running, {"epoch": 1}).checkpoint.artifacts_path

    assert checkpoint_forget_folder(running.operation_id, f"{running.operation_id}/20990101T000000000000-00000000")

    assert save_folders(checkpoint_dir, running) == [kept]


# --- a run remembers its uncertain folders


def test_a_run_forgets_an_uncertain_folder_that_committed_after_its_next_save(running, checkpoint_dir):
    context = context_of(running)
    with reply_to_commit_lost():
        uncertain = context.save_checkpoint("periodic", {"step": 5}, ARTIFACTS)
    assert uncertain.uncertain_folder

    after = context.save_checkpoint("periodic", {"step": 10}, ARTIFACTS)

    assert after.saved is True
    assert save_folders(checkpoint_dir, running) == [row_folder(running)] == [after.checkpoint.artifacts_path]


def test_a_run_forgets_an_uncertain_folder_that_did_not_commit_after_its_next_save(
    running, checkpoint_dir, connection_lost_at_commit
):
    context = context_of(running)
    earlier = context.save_checkpoint("periodic", {"step": 5}, ARTIFACTS).checkpoint.artifacts_path
    connection_lost_at_commit.arm()
    uncertain = context.save_checkpoint("periodic", {"step": 10}, ARTIFACTS)
    connection_lost_at_commit.disarm()
    assert uncertain.uncertain_folder
    assert save_folders(checkpoint_dir, running) == sorted([earlier, uncertain.uncertain_folder])

    after = context.save_checkpoint("periodic", {"step": 15}, ARTIFACTS)

    assert after.saved is True
    assert save_folders(checkpoint_dir, running) == [row_folder(running)] == [after.checkpoint.artifacts_path]
    assert checkpoint_load(running.operation_id).state == {"step": 15}


def test_a_run_keeps_trying_to_forget_while_the_database_is_away(running, checkpoint_dir, connection_lost_at_commit):
    context = context_of(running)
    connection_lost_at_commit.arm()
    uncertain = context.save_checkpoint("periodic", {"step": 5}, ARTIFACTS).uncertain_folder
    connection_lost_at_commit.disarm()
    real_forget = context_module.checkpoint_forget_folder
    calls = []

    def forget_once_unreachable(*args):
        calls.append(args)
        if len(calls) == 1:
            raise OperationalError(LOST)
        return real_forget(*args)

    with mock.patch.object(context_module, "checkpoint_forget_folder", forget_once_unreachable):
        first = context.save_checkpoint("periodic", {"step": 10}, ARTIFACTS)
        assert (checkpoint_dir / uncertain).exists()  # not checked yet: kept for the next save
        second = context.save_checkpoint("periodic", {"step": 15}, ARTIFACTS)

    assert first.saved and second.saved
    assert len(calls) == 2
    assert save_folders(checkpoint_dir, running) == [second.checkpoint.artifacts_path]


def test_a_run_forgets_its_uncertain_folders_once_the_checkpoint_is_deleted(
    running, checkpoint_dir, connection_lost_at_commit
):
    context = context_of(running)
    context.save_checkpoint("periodic", {"step": 5}, ARTIFACTS)
    connection_lost_at_commit.arm()
    assert context.save_checkpoint("periodic", {"step": 10}, ARTIFACTS).uncertain_folder
    connection_lost_at_commit.disarm()

    assert checkpoint_delete(running.operation_id) is True  # what a completed run does
    context.forget_uncertain_folders()

    assert not (checkpoint_dir / running.operation_id).exists()
