"""The committer process kept from one run to the next (runtime/committer.py), its shared memory,
its idle connection, and the saver's duty limit and lazy progress of RunContext.

The child reads and writes the same database as the test, so these tests commit for real."""

from __future__ import annotations

import json
import os
import signal
import time
import zlib
from array import array
from functools import partial

import pytest
from django.db import connection, transaction

from checkpoints.models import Checkpoint
from checkpoints.services import Append, SaveResult
from operations.models import Operation
from runtime import committer as committers
from runtime import context as context_module
from runtime.committer import Committer, Mailbox
from runtime.context import RunContext
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def close_kept() -> None:
    for kept in list(committers._kept.values()):
        kept.close()
    committers._kept.clear()


@pytest.fixture
def started(settings, checkpoint_dir, monkeypatch) -> list[Committer]:
    """Committers in child processes; every one the test starts is stopped at its end, kept or not."""
    settings.CHECKPOINT_COMMITTER = "process"
    close_kept()  # one an earlier test kept would be reused
    found: list[Committer] = []
    start = Committer.start

    def recording(self):
        if not any(self is known for known in found):
            found.append(self)
        start(self)

    monkeypatch.setattr(Committer, "start", recording)
    yield found
    for committer in found:
        committer.close()
    close_kept()


def save_through(committer: Committer, operation: Operation, bar: int, appends=()) -> SaveResult:
    committer.submit(operation.pk, "periodic", partial(json.loads, json.dumps({"bar_index": bar})),
                     (operation.worker_id, operation.attempt), appends)
    return committer.result()


def alive(committer: Committer) -> bool:
    return committer.process is not None and committer.process.poll() is None


# --- one committer per process, kept for the next run


def test_a_released_committer_is_the_one_the_next_run_acquires(started, running_operation_factory):
    operation = running_operation_factory()
    first = committers.acquire()
    pid = first.process.pid
    committers.release(first)
    assert alive(first)  # kept, not stopped

    second = committers.acquire()

    assert second is first and second.process.pid == pid and second.in_use
    assert save_through(second, operation, 1).saved  # the kept child serves the next run
    assert len(started) == 1


def test_a_second_run_at_the_same_time_gets_a_child_of_its_own_stopped_on_release(started):
    kept = committers.acquire()
    private = committers.acquire()
    private_process = private.process

    assert private is not kept and private_process.pid != kept.process.pid
    committers.release(private)

    assert private_process.poll() is not None  # stopped, and reaped
    assert alive(kept) and committers._kept[os.getpid()] is kept
    committers.release(kept)
    assert alive(kept) and committers.acquire() is kept


def test_a_changed_checkpoint_folder_gets_a_new_child_and_stops_the_old(started, settings, tmp_path):
    first = committers.acquire()
    old_process = first.process
    committers.release(first)
    elsewhere = tmp_path / "elsewhere"
    settings.STORAGES = {**settings.STORAGES, "checkpoints": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(elsewhere)}}}

    second = committers.acquire()

    assert second is not first and second.process.pid != old_process.pid
    assert second.environment["CHECKPOINT_DIR"] == str(elsewhere)
    assert old_process.poll() is not None
    assert committers._kept[os.getpid()] is second


def test_a_kept_child_that_died_is_replaced_on_acquire(started, running_operation_factory):
    operation = running_operation_factory()
    first = committers.acquire()
    dead = first.process
    committers.release(first)
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait(timeout=10)

    second = committers.acquire()

    assert second is not first and alive(second) and second.process.pid != dead.pid
    assert save_through(second, operation, 1).saved


# --- the shared memory


def test_appends_larger_than_the_mailbox_arrive_intact(started, running_operation_factory, tmp_path):
    operation = running_operation_factory()
    fills, trades = tmp_path / "fills.f64", tmp_path / "trades.f64"
    first = os.urandom(1000)
    numbers = array("d")
    first_size = Mailbox.GROWTH
    numbers.frombytes(os.urandom(2 * first_size))  # a log as the spool sends it: a view of a float64 array
    trades_data = os.urandom(first_size + first_size // 2)
    last = os.urandom(5 * first_size)
    committer = committers.acquire()

    small = save_through(committer, operation, 1, [Append(str(fills), 0, first, 0, "fills_crc32")])
    assert committer.mailbox.size == first_size  # the first request fits its first size
    big = save_through(committer, operation, 2, [
        Append(str(fills), len(first), memoryview(numbers), zlib.crc32(first), "fills_crc32"),
        Append(str(trades), 0, trades_data, 0, "trades_crc32"),
    ])
    grown = committer.mailbox.size
    bigger = save_through(committer, operation, 3, [
        Append(str(fills), len(first) + len(numbers) * 8, last, big.appended["fills_crc32"], "fills_crc32"),
    ])

    assert small.saved and big.saved and bigger.saved
    assert grown == 3.5 * first_size and committer.mailbox.size == 2 * grown  # grown to fit, then doubled
    assert fills.read_bytes() == first + numbers.tobytes() + last
    assert trades.read_bytes() == trades_data
    assert big.appended["trades_crc32"] == zlib.crc32(trades_data)
    assert bigger.appended == {"fills_crc32": zlib.crc32(fills.read_bytes())}
    state = Checkpoint.objects.get(pk=operation.pk).state
    assert state["fills_crc32"] == zlib.crc32(fills.read_bytes()) and state["bar_index"] == 3


# --- the idle child holds no database connection


def others_connected() -> int:
    """Backends connected to the test database, this test's own excepted."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction it would show the first look
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def test_the_idle_child_closes_its_database_connection(started, running_operation_factory):
    operation = running_operation_factory()
    committer = committers.acquire()
    wait_for(lambda: others_connected() == 0, timeout=10, what="no other backend on the test database")

    with transaction.atomic():
        # The child's commit waits for this row lock: it is connected, for sure, while we look.
        Operation.objects.select_for_update().get(pk=operation.pk)
        committer.submit(operation.pk, "periodic", partial(json.loads, '{"bar_index": 1}'),
                         (operation.worker_id, operation.attempt))
        wait_for(lambda: others_connected() == 1, timeout=30, interval=0.02, what="the child's connection")
    assert committer.result().saved

    wait_for(lambda: others_connected() == 0, timeout=5, interval=0.05, what="the idle child to disconnect")
    assert alive(committer)
    assert save_through(committer, operation, 2).saved  # and it connects again for the next request


# --- RunContext: the saver's duty limit, and the progress message made only when taken


def context() -> RunContext:
    return RunContext(operation_id="op_backtesting_20240101_000000_0123abcd", operation_type="backtesting",
                      params={}, worker_id="host:cluster:1", attempt=1, resume_from=None)


def test_after_a_save_of_d_seconds_the_saver_rests_until_d_over_its_duty_after_the_start(settings, monkeypatch):
    settings.CHECKPOINT_COMMITTER = "thread"
    monkeypatch.setattr(context_module, "checkpoint_save", lambda **kwargs: SaveResult(saved=True, seconds=0.05))
    run = context()
    rest = 0.05 / context_module.SAVER_DUTY  # 0.2 s from the save's start

    before = time.monotonic()
    run.commit_in_background("periodic", partial(json.loads, '{"bar_index": 1}'))
    assert run.saving()
    free = wait_for(lambda: not run.saving() and time.monotonic(), timeout=5, interval=0.002,
                    what="the saver's rest to end")

    assert rest <= free - before < rest + 0.5
    assert run.last_save.saved is True and not run.saving()


def test_a_save_that_took_no_time_leaves_the_saver_free_once_done(settings, monkeypatch):
    settings.CHECKPOINT_COMMITTER = "thread"
    monkeypatch.setattr(context_module, "checkpoint_save", lambda **kwargs: SaveResult(saved=True, seconds=0.0))
    run = context()

    run.commit_in_background("periodic", partial(json.loads, "{}"))
    run.flush_checkpoint()

    assert run.saving() is False


def test_a_progress_message_given_as_a_function_is_made_only_when_taken(settings):
    settings.CHECKPOINT_COMMITTER = "thread"
    run = context()
    made: list[str] = []

    def message(text: str) -> str:
        made.append(text)
        return text

    run.report_progress(current=5, total=10, unit="bars", message=partial(message, "bar 5/10"))
    run.report_progress(current=8, total=10, unit="bars", message=partial(message, "bar 8/10"))
    assert made == []  # reporting costs the loop no formatting

    progress = run.take_progress()
    again = run.take_progress()

    assert made == ["bar 8/10"]  # the last one only, and once
    assert progress.message == again.message == "bar 8/10" and progress.percent == 80.0
    run.report_progress(current=9, total=10, unit="bars", message="a plain string")
    assert run.take_progress().message == "a plain string"
