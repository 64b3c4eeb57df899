"""The checkpoint store (docs/checkpoints.md): crash-safe save with the row as commit point, fencing, validated
load, policy, delete, cleanup by age, orphan sweep and stats, checked on the rows and on the files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from checkpoints import services
from checkpoints.exceptions import CheckpointCorrupted, CheckpointNotFound
from checkpoints.models import Checkpoint
from checkpoints.policy import CheckpointPolicy
from checkpoints.services import (
    Fence,
    checkpoint_cleanup,
    checkpoint_delete,
    checkpoint_get,
    checkpoint_load,
    checkpoint_maintenance,
    checkpoint_save,
    checkpoint_stats,
    checkpoint_sweep_orphans,
    checkpoint_validate,
    checkpoints_expired,
)
from operations import registry
from operations.ids import new_operation_id
from operations.models import Operation, OperationStatus as S
from tests.support.commits import CommitFailure

ARTIFACTS = {
    "model.pt": b"model weights " * 1000,
    "optimizer.pt": os.urandom(4096),
    "rng_state.bin": b"",
}


def fence_of(operation: Operation) -> Fence:
    return Fence(worker_id=operation.worker_id, attempt=operation.attempt)


def save(operation: Operation, state: dict, artifacts: dict[str, bytes] | None = None, **kwargs):
    kwargs.setdefault("checkpoint_type", "periodic")
    kwargs.setdefault("fence", fence_of(operation) if operation.worker_id else None)
    return checkpoint_save(
        operation_id=operation.operation_id,
        state=state,
        artifacts=ARTIFACTS if artifacts is None else artifacts,
        **kwargs,
    )


def entries(folder: Path) -> list[str]:
    """The names in a folder, sorted; [] when the folder does not exist."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def all_files(root: Path) -> list[str]:
    """Every file and folder under root, relative to it."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")) if root.exists() else []


def age(path: Path, seconds: float) -> None:
    """Make a file or folder look `seconds` old (as a crashed save's leftovers would)."""
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


@pytest.fixture
def running(running_operation_factory, checkpoint_dir):
    return running_operation_factory()


# --- save


def test_first_save_creates_the_row_and_one_file_per_artifact(running, checkpoint_dir):
    state = {"epoch": 3, "losses": [0.9, 0.5, 0.25], "note": "ünïcode"}

    result = save(running, state)

    assert result.saved is True
    assert result.error == ""
    row = Checkpoint.objects.get(operation_id=running.operation_id)
    assert row.version == 1
    assert row.checkpoint_type == "periodic"
    assert row.state == state
    operation_folder = checkpoint_dir / running.operation_id
    assert entries(operation_folder) == [Path(row.artifacts_path).name]
    assert row.artifacts_path == f"{running.operation_id}/{Path(row.artifacts_path).name}"
    save_folder = checkpoint_dir / row.artifacts_path
    assert entries(save_folder) == sorted(ARTIFACTS)
    for name, data in ARTIFACTS.items():
        assert (save_folder / name).read_bytes() == data
    assert sorted(row.manifest, key=lambda entry: entry["name"]) == [
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in sorted(ARTIFACTS.items())
    ]
    assert row.artifacts_size_bytes == sum(len(data) for data in ARTIFACTS.values())
    assert row.state_size_bytes == len(json.dumps(state).encode())
    assert result.checkpoint == row


def test_second_save_replaces_the_first(running, checkpoint_dir):
    first = save(running, {"epoch": 1})
    first_folder = checkpoint_dir / first.checkpoint.artifacts_path

    second = save(running, {"epoch": 2}, {"model.pt": b"second model"}, checkpoint_type="cancellation")

    assert second.saved is True
    assert Checkpoint.objects.filter(operation_id=running.operation_id).count() == 1
    row = Checkpoint.objects.get(operation_id=running.operation_id)
    assert row.version == 2
    assert row.checkpoint_type == "cancellation"
    assert row.state == {"epoch": 2}
    assert row.artifacts_path != first.checkpoint.artifacts_path
    assert not first_folder.exists()
    assert entries(checkpoint_dir / running.operation_id) == [Path(row.artifacts_path).name]
    assert entries(checkpoint_dir / row.artifacts_path) == ["model.pt"]
    loaded = checkpoint_load(running.operation_id)
    assert loaded.state == {"epoch": 2}
    assert loaded.artifacts == {"model.pt": b"second model"}


def test_versions_count_every_save(running):
    for epoch in range(1, 6):
        assert save(running, {"epoch": epoch}, {"model.pt": bytes([epoch])}).saved
    row = Checkpoint.objects.get(operation_id=running.operation_id)
    assert row.version == 5
    assert row.state == {"epoch": 5}


def test_a_save_with_no_artifacts_keeps_only_the_state(running):
    result = save(running, {"phase": "design"}, {})

    assert result.saved is True
    loaded = checkpoint_load(running.operation_id)
    assert loaded.state == {"phase": "design"}
    assert loaded.artifacts == {}
    assert loaded.checkpoint.artifacts_size_bytes == 0


def test_an_unknown_checkpoint_type_is_refused(running, checkpoint_dir):
    result = save(running, {"epoch": 1}, checkpoint_type="whenever")

    assert result.saved is False
    assert "whenever" in result.error
    assert not Checkpoint.objects.exists()
    assert all_files(checkpoint_dir) == []


def test_a_save_for_an_operation_that_does_not_exist_writes_nothing(checkpoint_dir, db):
    operation_id = new_operation_id("training")

    result = checkpoint_save(operation_id=operation_id, checkpoint_type="periodic", state={}, artifacts=ARTIFACTS)

    assert result.saved is False
    assert operation_id in result.error
    assert not Checkpoint.objects.exists()
    assert all_files(checkpoint_dir) == []


@pytest.mark.parametrize("operation_id", ["../escape", "not-an-id", "op_training_20240101_000000_abcdef12/../x"])
def test_a_save_under_a_name_that_is_not_an_operation_id_writes_nothing(checkpoint_dir, db, operation_id):
    result = checkpoint_save(operation_id=operation_id, checkpoint_type="periodic", state={}, artifacts=ARTIFACTS)

    assert result.saved is False
    assert "not an operation id" in result.error
    assert all_files(checkpoint_dir.parent) == []


# --- fencing


def test_the_fenced_run_saves(running):
    result = save(running, {"epoch": 1}, fence=Fence(running.worker_id, running.attempt))

    assert result.saved is True
    assert checkpoint_get(running.operation_id).state == {"epoch": 1}


def test_a_worker_whose_operation_waits_for_reconciliation_still_saves(running):
    # PENDING_RECONCILIATION only means its heartbeat is late; the live worker wins.
    Operation.objects.filter(pk=running.pk).update(status=S.PENDING_RECONCILIATION)

    assert save(running, {"epoch": 1}).saved is True


def make_other_worker_own_it(operation, worker_factory):
    Operation.objects.filter(pk=operation.pk).update(worker=worker_factory(), attempt=operation.attempt + 1)


def make_newer_attempt(operation, worker_factory):
    # Resumed and claimed again by the same worker: the old run's writes are stale.
    Operation.objects.filter(pk=operation.pk).update(attempt=operation.attempt + 1)


def make_cancelled(operation, worker_factory):
    Operation.objects.filter(pk=operation.pk).update(status=S.CANCELLED)


def make_completed(operation, worker_factory):
    Operation.objects.filter(pk=operation.pk).update(status=S.COMPLETED)


def make_failed(operation, worker_factory):
    Operation.objects.filter(pk=operation.pk).update(status=S.FAILED, presumed_orphan=True)


FENCED_OUT = [make_other_worker_own_it, make_newer_attempt, make_cancelled, make_completed, make_failed]


@pytest.mark.parametrize("fenced_out", FENCED_OUT)
def test_a_fenced_out_save_leaves_the_previous_checkpoint_and_no_files(
    running, checkpoint_dir, worker_factory, fenced_out
):
    previous = save(running, {"epoch": 4}).checkpoint
    files_before = all_files(checkpoint_dir)
    fenced_out(running, worker_factory)

    result = save(running, {"epoch": 5}, {"model.pt": b"stale run"}, fence=Fence(running.worker_id, running.attempt))

    assert result.saved is False
    assert "fenced" in result.error
    assert all_files(checkpoint_dir) == files_before
    row = Checkpoint.objects.get(operation_id=running.operation_id)
    assert (row.version, row.artifacts_path, row.state) == (1, previous.artifacts_path, {"epoch": 4})
    assert checkpoint_load(running.operation_id).artifacts == ARTIFACTS


@pytest.mark.parametrize("fenced_out", FENCED_OUT)
def test_a_fenced_out_first_save_leaves_no_row_and_no_folder(running, checkpoint_dir, worker_factory, fenced_out):
    fenced_out(running, worker_factory)

    result = save(running, {"epoch": 1}, fence=Fence(running.worker_id, running.attempt))

    assert result.saved is False
    assert not Checkpoint.objects.exists()
    assert all_files(checkpoint_dir) == []


def test_the_new_run_saves_after_the_old_one_is_fenced_out(running, worker_factory):
    old_fence = fence_of(running)
    save(running, {"epoch": 4})
    new_worker = worker_factory()
    Operation.objects.filter(pk=running.pk).update(worker=new_worker, attempt=running.attempt + 1)
    new_fence = Fence(new_worker.worker_id, running.attempt + 1)

    assert save(running, {"epoch": 5, "run": "new"}, fence=new_fence).saved is True
    assert save(running, {"epoch": 9, "run": "old"}, fence=old_fence).saved is False
    assert checkpoint_load(running.operation_id).state == {"epoch": 5, "run": "new"}


# --- a database failure after the files were written


@pytest.fixture
def refuse_checkpoint_updates(db):
    """A PostgreSQL trigger that makes every UPDATE of a checkpoint row fail, as a full disk or a
    lost connection would, after the new files are on disk."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_refuse_checkpoint_update() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'checkpoint table is read-only for this test'; END;
            $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_refuse_checkpoint_update BEFORE UPDATE ON checkpoints_checkpoint
            FOR EACH ROW EXECUTE FUNCTION test_refuse_checkpoint_update();
            """
        )
    # Both live in the test's transaction, which is rolled back at its end.


def test_a_database_failure_on_update_removes_the_new_files(running, checkpoint_dir, refuse_checkpoint_updates):
    first = save(running, {"epoch": 1})  # an INSERT: the trigger lets it through
    assert first.saved is True
    files_before = all_files(checkpoint_dir)

    result = save(running, {"epoch": 2}, {"model.pt": b"never committed"})

    assert result.saved is False
    assert "read-only for this test" in result.error
    assert all_files(checkpoint_dir) == files_before
    loaded = checkpoint_load(running.operation_id)
    assert loaded.checkpoint.version == 1
    assert loaded.state == {"epoch": 1}
    assert loaded.artifacts == ARTIFACTS
    # The operation goes on: the next save, once the database accepts it again, works.
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_refuse_checkpoint_update ON checkpoints_checkpoint")
    assert save(running, {"epoch": 3}).saved is True
    assert checkpoint_get(running.operation_id).version == 2


@pytest.fixture
def commits(transactional_db):
    refusal = CommitFailure()
    yield refusal
    refusal.disarm()  # a transactional test commits for real: leave no trigger to the next test


@pytest.mark.django_db(transaction=True)
def test_a_failing_commit_removes_the_new_files(running_operation_factory, checkpoint_dir, commits):
    operation = running_operation_factory()
    commits.arm()

    first = save(operation, {"epoch": 1})

    assert first.saved is False
    assert "commit refused for this test" in first.error
    assert not Checkpoint.objects.exists()
    assert all_files(checkpoint_dir) == []

    commits.disarm()
    assert save(operation, {"epoch": 1}).saved is True
    files_before = all_files(checkpoint_dir)
    commits.arm()

    second = save(operation, {"epoch": 2}, {"model.pt": b"never committed"})

    assert second.saved is False
    assert "commit refused for this test" in second.error
    assert all_files(checkpoint_dir) == files_before
    loaded = checkpoint_load(operation.operation_id)
    assert (loaded.checkpoint.version, loaded.state, loaded.artifacts) == (1, {"epoch": 1}, ARTIFACTS)


def test_a_state_postgresql_cannot_store_removes_the_new_files(running, checkpoint_dir):
    save(running, {"epoch": 1})
    files_before = all_files(checkpoint_dir)

    # Valid JSON, but jsonb refuses the NUL character: the INSERT/UPDATE fails in the database.
    result = save(running, {"epoch": 2, "note": "nul \u0000 byte"}, {"model.pt": b"never committed"})

    assert result.saved is False
    assert result.error
    assert all_files(checkpoint_dir) == files_before
    assert checkpoint_load(running.operation_id).state == {"epoch": 1}


def test_a_state_postgresql_cannot_store_on_the_first_save_leaves_nothing(running, checkpoint_dir):
    result = save(running, {"note": "\u0000"})

    assert result.saved is False
    assert not Checkpoint.objects.exists()
    assert all_files(checkpoint_dir) == []


def test_a_failure_after_the_row_was_moved_rolls_it_back_and_removes_the_new_files(running, checkpoint_dir):
    save(running, {"epoch": 1})
    files_before = all_files(checkpoint_dir)
    real_commit = services._commit

    def commit_then_fail(*args, **kwargs):
        real_commit(*args, **kwargs)  # the row now points at the new folder, inside the transaction
        raise DatabaseError("connection lost before COMMIT")

    with mock.patch.object(services, "_commit", commit_then_fail):
        result = save(running, {"epoch": 2}, {"model.pt": b"never committed"})

    assert result.saved is False
    assert result.error == "connection lost before COMMIT"
    assert all_files(checkpoint_dir) == files_before
    loaded = checkpoint_load(running.operation_id)
    assert (loaded.checkpoint.version, loaded.state, loaded.artifacts) == (1, {"epoch": 1}, ARTIFACTS)


def test_a_failure_removing_the_previous_folder_keeps_the_new_checkpoint(running, checkpoint_dir):
    # After the commit the row points at the new folder: whatever fails next must not remove it.
    first = save(running, {"epoch": 1}).checkpoint
    real_delete_tree = services.delete_tree

    def delete_tree_failing_for_the_previous_folder(storage, path):
        if path == first.artifacts_path:
            raise PermissionError(f"cannot remove {path}")
        real_delete_tree(storage, path)

    with mock.patch.object(services, "delete_tree", delete_tree_failing_for_the_previous_folder):
        result = save(running, {"epoch": 2}, {"model.pt": b"second"})

    row = Checkpoint.objects.get(operation_id=running.operation_id)
    assert row.version == 2
    assert result.saved is True
    assert checkpoint_load(running.operation_id).artifacts == {"model.pt": b"second"}
    # The previous folder is left for the orphan sweep.
    assert (checkpoint_dir / first.artifacts_path).exists()
    assert checkpoint_sweep_orphans(grace_seconds=0) == [first.artifacts_path]
    assert entries(checkpoint_dir / running.operation_id) == [Path(row.artifacts_path).name]


# --- invalid input


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "/abs", "x\n", "a" * 101, "spaced name"])
def test_an_invalid_artifact_name_saves_nothing(running, checkpoint_dir, name):
    save(running, {"epoch": 1})
    files_before = all_files(checkpoint_dir.parent)
    # A valid artifact before the bad one: it was already written when the bad name is found.
    artifacts = {"model.pt": b"good", name: b"bad"}

    result = save(running, {"epoch": 2}, artifacts)

    assert result.saved is False
    assert "invalid artifact name" in result.error
    assert all_files(checkpoint_dir.parent) == files_before
    assert checkpoint_get(running.operation_id).state == {"epoch": 1}


@pytest.mark.parametrize(
    "state",
    [{"loss": math.nan}, {"loss": math.inf}, {"seen": {1, 2}}, {"when": timezone.now()}, {"blob": b"raw"}],
    ids=["nan", "inf", "set", "datetime", "bytes"],
)
def test_a_state_that_is_not_json_saves_nothing(running, checkpoint_dir, state):
    save(running, {"epoch": 1})
    files_before = all_files(checkpoint_dir)

    result = save(running, state)

    assert result.saved is False
    assert result.error
    assert all_files(checkpoint_dir) == files_before
    assert checkpoint_get(running.operation_id).state == {"epoch": 1}


def test_a_non_json_state_on_the_first_save_leaves_nothing(running, checkpoint_dir):
    assert save(running, {"loss": math.nan}).saved is False
    assert not Checkpoint.objects.exists()
    assert all_files(checkpoint_dir) == []


# --- load and validation


def test_load_returns_the_state_and_the_artifacts(running):
    save(running, {"epoch": 7, "losses": [1.5, 0.75]})

    loaded = checkpoint_load(running.operation_id)

    assert loaded.state == {"epoch": 7, "losses": [1.5, 0.75]}
    assert loaded.artifacts == ARTIFACTS
    assert loaded.checkpoint.operation_id == running.operation_id
    checkpoint_validate(loaded.checkpoint)  # raises nothing


def test_load_of_an_operation_without_checkpoint_raises_not_found(running):
    with pytest.raises(CheckpointNotFound) as raised:
        checkpoint_load(running.operation_id)
    assert raised.value.code == "CHECKPOINT_NOT_FOUND"
    assert raised.value.details["operation_id"] == running.operation_id
    with pytest.raises(CheckpointNotFound):
        checkpoint_get(running.operation_id)


def remove(path: Path) -> None:
    path.unlink()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def extend(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (remove, "missing"),
        (truncate, "size 4086 bytes, expected 4096"),
        (extend, "size 4097 bytes, expected 4096"),
        (flip_one_byte, "sha256 mismatch"),
    ],
)
def test_a_damaged_artifact_is_named_in_checkpoint_corrupted(running, checkpoint_dir, damage, problem):
    row = save(running, {"epoch": 1}).checkpoint
    damage(checkpoint_dir / row.artifacts_path / "optimizer.pt")

    with pytest.raises(CheckpointCorrupted) as raised:
        checkpoint_load(running.operation_id)

    error = raised.value
    assert error.code == "CHECKPOINT_CORRUPTED"
    assert error.status_code == 422
    assert error.details == {
        "operation_id": running.operation_id,
        "artifacts": [{"name": "optimizer.pt", "problem": problem}],
    }
    assert "optimizer.pt" in str(error)
    with pytest.raises(CheckpointCorrupted):
        checkpoint_validate(checkpoint_get(running.operation_id))


def test_every_damaged_artifact_is_named_and_only_those(running, checkpoint_dir):
    artifacts = {"a.bin": b"a" * 100, "b.bin": b"b" * 100, "c.bin": b"c" * 100, "d.bin": b"d" * 100}
    folder = checkpoint_dir / save(running, {"epoch": 1}, artifacts).checkpoint.artifacts_path
    (folder / "a.bin").unlink()
    (folder / "b.bin").write_bytes(b"b" * 99)
    (folder / "d.bin").write_bytes(b"d" * 99 + b"D")

    with pytest.raises(CheckpointCorrupted) as raised:
        checkpoint_load(running.operation_id)

    assert sorted(raised.value.details["artifacts"], key=lambda problem: problem["name"]) == [
        {"name": "a.bin", "problem": "missing"},
        {"name": "b.bin", "problem": "size 99 bytes, expected 100"},
        {"name": "d.bin", "problem": "sha256 mismatch"},
    ]


def test_a_missing_save_folder_names_every_artifact(running, checkpoint_dir):
    folder = checkpoint_dir / save(running, {"epoch": 1}).checkpoint.artifacts_path
    shutil.rmtree(folder)

    with pytest.raises(CheckpointCorrupted) as raised:
        checkpoint_load(running.operation_id)

    assert sorted(raised.value.details["artifacts"], key=lambda problem: problem["name"]) == [
        {"name": name, "problem": "missing"} for name in sorted(ARTIFACTS)
    ]


def test_get_reads_no_artifact(running, checkpoint_dir):
    row = save(running, {"epoch": 12, "bar_index": 3400}).checkpoint
    shutil.rmtree(checkpoint_dir)

    checkpoint = checkpoint_get(running.operation_id)

    assert checkpoint.state == {"epoch": 12, "bar_index": 3400}
    assert checkpoint.version == row.version
    assert checkpoint.summary()["state_summary"] == {"epoch": 12, "bar_index": 3400}
    assert checkpoint.summary()["artifacts"] == [entry["name"] for entry in row.manifest]


# --- policy


def test_policy_is_due_at_every_n_units_and_not_before():
    policy = CheckpointPolicy(every_units=10, every_seconds=None, last_time=0.0)

    assert not policy.due(9, now=0.0)
    assert policy.due(10, now=0.0)
    policy.saved(10, now=0.0)
    assert not policy.due(19, now=0.0)
    assert policy.due(20, now=0.0)
    policy.saved(20, now=0.0)
    assert not policy.due(29, now=0.0)
    assert policy.due(30, now=0.0)


def test_policy_is_due_after_t_seconds_and_not_before():
    policy = CheckpointPolicy(every_units=0, every_seconds=300, last_time=1000.0)

    assert not policy.due(1, now=1000.0)
    assert not policy.due(1, now=1299.999)
    assert policy.due(1, now=1300.0)
    policy.saved(1, now=1300.0)
    assert not policy.due(2, now=1599.0)
    assert policy.due(2, now=1600.0)


def test_policy_is_due_at_whichever_comes_first():
    by_units = CheckpointPolicy(every_units=10, every_seconds=300, last_time=0.0)
    assert by_units.due(10, now=5.0)

    by_time = CheckpointPolicy(every_units=10, every_seconds=300, last_time=0.0)
    assert not by_time.due(3, now=299.0)
    assert by_time.due(3, now=300.0)


def test_saved_resets_both_clocks():
    policy = CheckpointPolicy(every_units=10, every_seconds=300, last_time=0.0)
    assert policy.due(10, now=300.0)

    policy.saved(10, now=300.0)

    assert (policy.last_unit, policy.last_time) == (10, 300.0)
    assert not policy.due(10, now=300.0)
    assert not policy.due(19, now=599.0)
    assert policy.due(20, now=599.0)
    assert policy.due(19, now=600.0)


def test_policy_without_intervals_is_never_periodic_but_can_be_forced():
    policy = CheckpointPolicy(every_units=0, every_seconds=None, last_time=0.0)

    assert not policy.due(10**9, now=10.0**9)
    assert policy.due(1, now=0.0, force=True)


def test_force_ignores_the_intervals():
    policy = CheckpointPolicy(every_units=10, every_seconds=300, last_time=0.0)
    policy.saved(10, now=0.0)

    assert policy.due(11, now=1.0, force=True)


def test_a_disabled_policy_refuses_even_a_forced_checkpoint():
    policy = CheckpointPolicy(every_units=1, every_seconds=1, enabled=False, last_time=0.0)

    assert not policy.due(100, now=1000.0)
    assert not policy.due(100, now=1000.0, force=True)


def test_policy_uses_the_monotonic_clock_by_default():
    policy = CheckpointPolicy(every_units=0, every_seconds=3600)

    assert not policy.due(1)
    policy.last_time -= 3600
    assert policy.due(1)


# --- delete


def test_delete_removes_the_row_and_the_folder(running, checkpoint_dir):
    save(running, {"epoch": 1})

    assert checkpoint_delete(running.operation_id) is True

    assert not Checkpoint.objects.filter(operation_id=running.operation_id).exists()
    assert not (checkpoint_dir / running.operation_id).exists()
    assert all_files(checkpoint_dir) == []
    assert checkpoint_delete(running.operation_id) is False
    assert Operation.objects.filter(pk=running.pk).exists()


def test_delete_of_one_operation_leaves_the_others(running_operation_factory, checkpoint_dir):
    kept, deleted = running_operation_factory(), running_operation_factory()
    kept_path = save(kept, {"epoch": 1}).checkpoint.artifacts_path
    save(deleted, {"epoch": 1})

    checkpoint_delete(deleted.operation_id)

    assert list(Checkpoint.objects.values_list("operation_id", flat=True)) == [kept.operation_id]
    assert entries(checkpoint_dir) == [kept.operation_id]
    assert checkpoint_load(kept.operation_id).artifacts == ARTIFACTS
    assert (checkpoint_dir / kept_path).exists()


def test_the_reconcile_probe_sees_saves_and_deletes(running):
    assert registry.has_checkpoint(running.operation_id) is False
    save(running, {"epoch": 1})
    assert registry.has_checkpoint(running.operation_id) is True
    checkpoint_delete(running.operation_id)
    assert registry.has_checkpoint(running.operation_id) is False


# --- cleanup by age


def checkpointed(operation_factory, status, days_old):
    """An operation in `status` with a checkpoint made `days_old` days ago."""
    operation = operation_factory(status=status)
    result = checkpoint_save(
        operation_id=operation.operation_id,
        checkpoint_type="periodic",
        state={"status": status},
        artifacts={"model.pt": status.encode()},
    )
    assert result.saved
    Checkpoint.objects.filter(pk=operation.pk).update(created_at=timezone.now() - timedelta(days=days_old))
    return operation.operation_id


@pytest.fixture
def aged_checkpoints(operation_factory, checkpoint_dir):
    expired = [
        checkpointed(operation_factory, S.CANCELLED, 45),
        checkpointed(operation_factory, S.FAILED, 40),
        checkpointed(operation_factory, S.COMPLETED, 31),
    ]
    kept = [
        checkpointed(operation_factory, S.RUNNING, 90),
        checkpointed(operation_factory, S.RESUMING, 90),
        checkpointed(operation_factory, S.PENDING, 90),
        checkpointed(operation_factory, S.PENDING_RECONCILIATION, 90),
        checkpointed(operation_factory, S.CANCELLED, 29),
        checkpointed(operation_factory, S.FAILED, 0),
    ]
    return expired, kept


def test_cleanup_deletes_exactly_the_expired_checkpoints_of_finished_operations(
    aged_checkpoints, checkpoint_dir, settings
):
    settings.CHECKPOINT_MAX_AGE_DAYS = 30
    expired, kept = aged_checkpoints

    deleted = checkpoint_cleanup()

    assert deleted == expired  # oldest first
    assert sorted(Checkpoint.objects.values_list("operation_id", flat=True)) == sorted(kept)
    assert entries(checkpoint_dir) == sorted(kept)
    for operation_id in kept:
        checkpoint_validate(checkpoint_get(operation_id))
    assert Operation.objects.count() == len(expired) + len(kept)


def test_cleanup_dry_run_deletes_nothing_and_lists_the_same(aged_checkpoints, checkpoint_dir, settings):
    settings.CHECKPOINT_MAX_AGE_DAYS = 30
    expired, kept = aged_checkpoints
    files_before = all_files(checkpoint_dir)

    listed = checkpoint_cleanup(dry_run=True)

    assert listed == expired
    assert Checkpoint.objects.count() == len(expired) + len(kept)
    assert all_files(checkpoint_dir) == files_before
    assert checkpoint_cleanup() == listed


def test_cleanup_takes_an_explicit_age(aged_checkpoints):
    expired, kept = aged_checkpoints

    assert checkpoint_cleanup(max_age_days=42) == [expired[0]]
    assert checkpoint_cleanup(max_age_days=42) == []


def test_expired_query_excludes_active_operations(aged_checkpoints):
    expired, kept = aged_checkpoints

    assert sorted(checkpoints_expired(30).values_list("operation_id", flat=True)) == sorted(expired)
    assert sorted(checkpoints_expired(0.5).values_list("operation_id", flat=True)) == sorted(
        expired + [kept[4]]
    )


# --- orphan sweep


@pytest.fixture
def checkpoint_tree(running_operation_factory, checkpoint_dir):
    """A checkpoint folder as crashes and failed deletes leave it, every leftover an hour old."""
    committed_op = running_operation_factory()
    committed = save(committed_op, {"epoch": 2}).checkpoint.artifacts_path
    root = checkpoint_dir
    op_folder = root / committed_op.operation_id
    layout = {"committed": committed}

    def make_folder(relative: str, files: dict[str, bytes], seconds_old: float) -> str:
        folder = root / relative
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
            age(folder / name, seconds_old)
        age(folder, seconds_old)
        return relative

    layout["stale_previous"] = make_folder(
        f"{committed_op.operation_id}/20200101T000000000000-aaaaaaaa", {"model.pt": b"old"}, 3600
    )
    layout["partial_new"] = make_folder(
        f"{committed_op.operation_id}/20200101T000001000000-bbbbbbbb", {"model.pt": b"hal"}, 3600
    )
    (op_folder / "loose.tmp").write_bytes(b"loose")
    age(op_folder / "loose.tmp", 3600)
    layout["loose_file"] = f"{committed_op.operation_id}/loose.tmp"
    layout["young"] = make_folder(f"{committed_op.operation_id}/20990101T000000000000-cccccccc", {"m": b"1"}, 30)

    no_row = new_operation_id("backtesting")
    layout["no_row"] = make_folder(f"{no_row}/20200101T000000000000-dddddddd", {"state.bin": b"x"}, 3600)
    age(root / no_row, 3600)
    layout["no_row_operation"] = no_row
    empty = new_operation_id("agent_research")
    (root / empty).mkdir()
    age(root / empty, 3600)
    layout["empty_operation"] = empty

    # Not operation ids: never touched, however old.
    make_folder("lost+found", {"keep": b"1"}, 3600)
    make_folder("op_training_not_an_id", {"keep": b"1"}, 3600)
    make_folder("op_training_20241399_000000_abcdef12", {"keep": b"1"}, 3600)  # impossible date
    (root / "README.txt").write_bytes(b"keep")
    age(root / "README.txt", 3600)
    age(op_folder, 3600)
    layout["foreign"] = ["README.txt", "lost+found", "op_training_20241399_000000_abcdef12", "op_training_not_an_id"]
    layout["operation"] = committed_op.operation_id
    return layout


def test_the_sweep_removes_exactly_the_orphans(checkpoint_tree, checkpoint_dir):
    tree = checkpoint_tree

    removed = checkpoint_sweep_orphans(grace_seconds=60)

    assert sorted(removed) == sorted(
        [tree["stale_previous"], tree["partial_new"], tree["loose_file"], tree["no_row"]]
    )
    assert entries(checkpoint_dir) == sorted([*tree["foreign"], tree["operation"]])
    assert entries(checkpoint_dir / tree["operation"]) == sorted(
        [Path(tree["committed"]).name, Path(tree["young"]).name]
    )
    for foreign in ["lost+found", "op_training_not_an_id", "op_training_20241399_000000_abcdef12"]:
        assert entries(checkpoint_dir / foreign) == ["keep"]
    assert checkpoint_load(tree["operation"]).artifacts == ARTIFACTS
    assert checkpoint_sweep_orphans(grace_seconds=60) == []


def test_the_grace_period_protects_a_save_in_progress(checkpoint_tree, checkpoint_dir):
    tree = checkpoint_tree
    checkpoint_sweep_orphans(grace_seconds=60)

    assert checkpoint_sweep_orphans(grace_seconds=25) == [tree["young"]]
    assert entries(checkpoint_dir / tree["operation"]) == [Path(tree["committed"]).name]


def test_the_sweep_grace_period_defaults_to_the_setting(checkpoint_tree, checkpoint_dir, settings):
    settings.CHECKPOINT_ORPHAN_GRACE_SECONDS = 7200

    assert checkpoint_sweep_orphans() == []

    settings.CHECKPOINT_ORPHAN_GRACE_SECONDS = 60
    assert len(checkpoint_sweep_orphans()) == 4


def test_the_sweep_dry_run_removes_nothing(checkpoint_tree, checkpoint_dir):
    files_before = all_files(checkpoint_dir)

    listed = checkpoint_sweep_orphans(grace_seconds=60, dry_run=True)

    assert all_files(checkpoint_dir) == files_before
    assert sorted(listed) == sorted(checkpoint_sweep_orphans(grace_seconds=60))


def test_the_sweep_of_a_missing_checkpoint_folder_finds_nothing(checkpoint_dir, db):
    assert not checkpoint_dir.exists()
    assert checkpoint_sweep_orphans(grace_seconds=0) == []


def test_maintenance_runs_cleanup_then_the_sweep(aged_checkpoints, checkpoint_dir, settings):
    settings.CHECKPOINT_MAX_AGE_DAYS = 30
    settings.CHECKPOINT_ORPHAN_GRACE_SECONDS = 60
    expired, kept = aged_checkpoints
    orphan = checkpoint_dir / kept[0] / "20200101T000000000000-eeeeeeee"
    orphan.mkdir()
    age(orphan, 3600)

    report = checkpoint_maintenance()

    assert report == {"expired": expired, "orphan_folders": [f"{kept[0]}/{orphan.name}"]}
    assert entries(checkpoint_dir) == sorted(kept)
    assert len(entries(checkpoint_dir / kept[0])) == 1


# --- stats


def test_stats_are_exact(operation_factory, checkpoint_dir):
    sizes = {"periodic": [10, 20], "cancellation": [300], "failure": [4000]}
    expected_size = 0
    for kind, artifact_sizes in sizes.items():
        for size in artifact_sizes:
            state = {"kind": kind, "size": size}
            operation = operation_factory(status=S.CANCELLED)
            checkpoint_save(
                operation_id=operation.operation_id,
                checkpoint_type=kind,
                state=state,
                artifacts={"a.bin": b"a" * size, "b.bin": b"b"},
            )
            expected_size += len(json.dumps(state).encode()) + size + 1
    oldest = timezone.now() - timedelta(days=3)
    Checkpoint.objects.filter(checkpoint_type="failure").update(created_at=oldest)

    stats = checkpoint_stats()

    assert stats == {
        "total_checkpoints": 4,
        "total_size_bytes": expected_size,
        "oldest_checkpoint": oldest,
        "by_type": {"periodic": 2, "cancellation": 1, "failure": 1, "shutdown": 0},
    }
    assert checkpoint_stats(Checkpoint.objects.filter(checkpoint_type="periodic"))["total_checkpoints"] == 2


def test_stats_of_no_checkpoint(db):
    assert checkpoint_stats() == {
        "total_checkpoints": 0,
        "total_size_bytes": 0,
        "oldest_checkpoint": None,
        "by_type": {"periodic": 0, "cancellation": 0, "failure": 0, "shutdown": 0},
    }
