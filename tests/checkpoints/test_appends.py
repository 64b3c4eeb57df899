"""Appends carried by a checkpoint save (checkpoints.services.Append): bytes a run keeps in files of its own,
written at their offsets before the row commits, with the running CRC-32 of each file's prefix recorded in
the saved state, so that a reader can tell whether a file holds what its checkpoint says."""

from __future__ import annotations

import errno
import json
import zlib
from array import array
from pathlib import Path

import pytest

from checkpoints import services
from checkpoints.models import Checkpoint
from checkpoints.services import Append, Fence, checkpoint_save, write_appends
from operations.models import Operation
from tests.support.commits import CommitFailure

PREFIX = b"entries already in the file;"


@pytest.fixture
def running(running_operation_factory, checkpoint_dir):
    return running_operation_factory()


@pytest.fixture
def logs(tmp_path) -> Path:
    """The folder of the run's own files (a backtest's spool), apart from the checkpoint storage."""
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


def save(operation: Operation, state: dict, appends, **kwargs):
    kwargs.setdefault("fence", Fence(operation.worker_id, operation.attempt))
    return checkpoint_save(operation_id=operation.operation_id, checkpoint_type="periodic", state=state,
                           artifacts={}, appends=appends, **kwargs)


def row(operation: Operation) -> tuple:
    checkpoint = Checkpoint.objects.get(pk=operation.pk)
    return checkpoint.version, checkpoint.state


# --- written, then committed


def test_appends_are_on_disk_at_their_offsets_before_the_row_commits(running, logs, monkeypatch):
    fills, trades = logs / "fills.bin", logs / "trades.bin"
    fills.write_bytes(PREFIX)  # trades.bin does not exist yet: its first append creates it
    numbers = array("d", [1.5, -2.25, 3.0])
    seen_at_commit = {}
    commit = services._commit

    def committing(*args, **kwargs):
        seen_at_commit.update(fills=fills.read_bytes(), trades=trades.read_bytes())
        return commit(*args, **kwargs)

    monkeypatch.setattr(services, "_commit", committing)

    result = save(running, {"bar_index": 7}, [
        Append(str(fills), len(PREFIX), b"new fills", zlib.crc32(PREFIX), "fills_crc32"),
        Append(str(trades), 0, memoryview(numbers), 0, "trades_crc32"),  # as the spool sends them: views of arrays
    ])

    assert result.saved is True
    assert seen_at_commit == {"fills": PREFIX + b"new fills", "trades": numbers.tobytes()}
    assert fills.read_bytes() == PREFIX + b"new fills"


def test_the_saved_state_and_the_result_hold_the_crc32_of_each_file_prefix(running, logs):
    fills, trades = logs / "fills.bin", logs / "trades.bin"
    fills.write_bytes(PREFIX)
    state = {"bar_index": 7}

    result = save(running, state, [
        Append(str(fills), len(PREFIX), b"new fills", zlib.crc32(PREFIX), "fills_crc32"),
        Append(str(trades), 0, b"first trades", 0, "trades_crc32"),
    ])

    crcs = {"fills_crc32": zlib.crc32(fills.read_bytes()), "trades_crc32": zlib.crc32(trades.read_bytes())}
    assert result.saved is True and result.appended == crcs
    assert row(running) == (1, {"bar_index": 7, **crcs})
    assert state == {"bar_index": 7, **crcs}  # the caller's dictionary is the one saved
    assert Checkpoint.objects.get(pk=running.pk).state_size_bytes == len(json.dumps(state).encode())


def test_a_file_a_failed_save_wrote_past_keeps_its_tail_and_the_crc_covers_only_the_named_prefix(running, logs):
    # A save whose commit failed wrote further; the next one writes the same offsets again.
    path = logs / "fills.bin"
    path.write_bytes(PREFIX + b"AAAA" + b"tail of a failed save")

    result = save(running, {}, [Append(str(path), len(PREFIX), b"BBBB", zlib.crc32(PREFIX), "fills_crc32")])

    assert path.read_bytes() == PREFIX + b"BBBB" + b"tail of a failed save"  # written in place, not truncated
    assert result.appended == {"fills_crc32": zlib.crc32(PREFIX + b"BBBB")}


def test_writing_the_same_append_twice_leaves_the_same_file_and_crc(logs):
    path = logs / "fills.bin"
    path.write_bytes(PREFIX)
    append = Append(str(path), len(PREFIX), b"new fills", zlib.crc32(PREFIX), "fills_crc32")

    first = write_appends([append])
    after_first = path.read_bytes()
    second = write_appends([append])

    assert first == second == {"fills_crc32": zlib.crc32(PREFIX + b"new fills")}
    assert path.read_bytes() == after_first == PREFIX + b"new fills"


def test_a_save_sent_again_with_the_same_append_commits_the_same_crc(running, logs):
    path = logs / "fills.bin"
    append = Append(str(path), 0, b"new fills", 0, "fills_crc32")

    first = save(running, {"bar_index": 1}, [append])
    second = save(running, {"bar_index": 1}, [append])

    assert first.saved and second.saved
    assert first.appended == second.appended == {"fills_crc32": zlib.crc32(b"new fills")}
    assert path.read_bytes() == b"new fills"
    assert row(running) == (2, {"bar_index": 1, "fills_crc32": zlib.crc32(b"new fills")})


def test_a_save_without_appends_reports_nothing_appended(running):
    result = save(running, {"bar_index": 1}, [])

    assert result.saved is True and result.appended is None
    assert row(running) == (1, {"bar_index": 1})


# --- not written: nothing saved, nothing reported


def test_an_append_into_a_missing_folder_saves_nothing_and_reports_nothing_appended(running, logs):
    assert save(running, {"bar_index": 1}, [Append(str(logs / "fills.bin"), 0, b"one", 0, "fills_crc32")]).saved
    before = row(running)
    state = {"bar_index": 2}

    result = save(running, state, [Append(str(logs / "gone" / "fills.bin"), 3, b"two", zlib.crc32(b"one"),
                                          "fills_crc32")])

    assert result.saved is False and result.appended is None
    assert "No such file" in result.error
    assert row(running) == before
    assert state == {"bar_index": 2}  # no CRC-32 of a file that was not written


def test_appends_written_only_in_part_report_nothing_appended(running, logs):
    # The first file was written, the second was not: the spool must send both again.
    written = logs / "fills.bin"

    result = save(running, {"bar_index": 1}, [
        Append(str(written), 0, b"fills", 0, "fills_crc32"),
        Append(str(logs / "gone" / "trades.bin"), 0, b"trades", 0, "trades_crc32"),
    ])

    assert result.saved is False and result.appended is None
    assert written.read_bytes() == b"fills"
    assert not Checkpoint.objects.filter(pk=running.pk).exists()


def test_a_full_disk_while_writing_the_appends_saves_nothing(running, logs, monkeypatch):
    assert save(running, {"bar_index": 1}, []).saved
    before = row(running)

    def disk_full(appends):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(services, "write_appends", disk_full)

    result = save(running, {"bar_index": 2}, [Append(str(logs / "fills.bin"), 0, b"new", 0, "fills_crc32")])

    assert result.saved is False and result.appended is None
    assert "No space left" in result.error
    assert row(running) == before


# --- written, but the commit did not happen: the file holds them, the row does not


def test_a_fenced_out_save_reports_the_appends_it_wrote_but_is_not_saved(running, logs, worker_factory):
    assert save(running, {"bar_index": 1}, []).saved
    before = row(running)
    Operation.objects.filter(pk=running.pk).update(worker=worker_factory(), attempt=running.attempt + 1)
    path = logs / "fills.bin"

    result = save(running, {"bar_index": 2}, [Append(str(path), 0, b"stale run", 0, "fills_crc32")],
                  fence=Fence(running.worker_id, running.attempt))

    assert result.saved is False and "fenced" in result.error
    assert result.appended == {"fills_crc32": zlib.crc32(b"stale run")}
    assert path.read_bytes() == b"stale run"
    assert row(running) == before


@pytest.fixture
def commit_failure(transactional_db):
    failures: list[CommitFailure] = []

    def arm(errcode: str | None) -> None:
        failure = CommitFailure(errcode)
        failures.append(failure)
        failure.arm()

    yield arm
    for failure in failures:  # a transactional test commits for real: leave no trigger to the next test
        failure.disarm()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("errcode", [None, "08006"], ids=["refused", "outcome-unknown"])
def test_a_commit_that_fails_at_commit_still_reports_the_appends_it_wrote(
    running_operation_factory, checkpoint_dir, logs, commit_failure, errcode
):
    operation = running_operation_factory()
    commit_failure(errcode)
    path = logs / "fills.bin"

    result = save(operation, {"bar_index": 1}, [Append(str(path), 0, b"written", 0, "fills_crc32")])

    assert result.saved is False
    assert result.appended == {"fills_crc32": zlib.crc32(b"written")}
    assert path.read_bytes() == b"written"
    assert bool(result.uncertain_folder) == (errcode == "08006")
