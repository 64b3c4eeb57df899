"""Checkpoint rows committed by a process of their own, so that a fast loop does not share its GIL.

A thread beside a CPU-bound Python loop runs only when the loop lets go of
the GIL, and the Python side of a commit (the ORM's queries, a few
milliseconds) is taken from the loop. A backtest checkpoints every few
milliseconds of its loop, so its rows are committed by a child process
instead. At a checkpoint the loop only copies the appends (its spool's new
entries) into memory it shares with the child and writes a few hundred bytes
into a pipe: the name of the function that makes the state and its plain
arguments. The child makes the state, runs `checkpoint_save` (the appends
written first, then the same commit point and fence) and answers. One
request is in flight at most, so each request reuses the shared memory from
its start.

The child looks at the pipe every half millisecond while requests come (a
blocked reader would have to be woken by the loop), runs as a batch task
with a lower priority, and on PostgreSQL commits without waiting for the
disk (`_without_waiting_for_the_disk`); with the saver's duty limit
(context.SAVER_DUTY), its saves take a bounded share of the machine.

A worker process keeps its committer from one run to the next (`acquire`,
`release`): a child takes half a second to start, longer than a whole
backtest of a million bars. The child reads requests until its pipe closes
(its worker exited or died), and ignores SIGINT and SIGTERM: a stop checkpoint is always
saved by the worker itself.
"""

from __future__ import annotations

import importlib
import mmap
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, BinaryIO

from django.conf import settings
from django.db import connection

from checkpoints.services import Append, Fence, SaveResult, checkpoint_save

HEADER = struct.Struct("!I")
CHILD = "import django, sys; django.setup(); from runtime.committer import serve; serve(int(sys.argv[1]))"


class CommitterGone(Exception):
    pass


class Mailbox:
    """Memory the child shares (a memfd it inherits): each request's appends are copied to its start."""

    # Its first size (a backtest's logs grow by 300 KB between two checkpoints of a fast loop); it grows
    # when a request's appends do not fit, doubling.
    GROWTH = 4 << 20

    def __init__(self) -> None:
        self.descriptor = os.memfd_create("checkpoint-appends")
        self.size = 0
        self.mapping: mmap.mmap | None = None
        self._grow(self.GROWTH)

    def _grow(self, size: int) -> None:
        self.size = size
        os.ftruncate(self.descriptor, size)
        if self.mapping is not None:
            self.mapping.close()
        self.mapping = mmap.mmap(self.descriptor, size)
        self.mapping.write(bytes(size))  # its pages allocated now, not at a checkpoint

    def put(self, appends: Sequence[Append]) -> list[tuple]:
        """Copy the appends' bytes in; return them as the child finds them (path, offset, crc, crc_field,
        where they are in the mailbox, length)."""
        lengths = [memoryview(append.data).nbytes for append in appends]
        if sum(lengths) > self.size:
            self._grow(max(sum(lengths), 2 * self.size))
        placed, at = [], 0
        for append, length in zip(appends, lengths):
            with memoryview(append.data) as data:
                self.mapping[at:at + length] = data.cast("B")
            placed.append((append.path, append.offset, append.crc, append.crc_field, at, length))
            at += length
        return placed

    def close(self) -> None:
        if self.mapping is not None:
            self.mapping.close()
        os.close(self.descriptor)


class Committer:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.mailbox: Mailbox | None = None
        self.environment: dict[str, str] = {}
        self.pending = False
        self.in_use = False

    def start(self) -> None:
        if self.process is None:
            self.mailbox = Mailbox()
            self.environment = _child_environment()
            self.process = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(self.mailbox.descriptor)], pass_fds=(self.mailbox.descriptor,),
                cwd=settings.BASE_DIR, env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )

    def submit(self, operation_id: str, checkpoint_type: str, state: partial, fence: tuple[str, int],
               appends: Sequence[Append] = ()) -> None:
        """Send one save request: the state as a function of a module and its arguments, which the child
        calls (a partial), and the appends through the shared memory."""
        try:
            self.start()
            # Plain values only (an enum member, such as a CheckpointType, is pickled by reference: slowly).
            _send(self.process.stdin, (operation_id, str(checkpoint_type), state.func.__module__,
                                       state.func.__qualname__, state.args, fence, self.mailbox.put(appends),
                                       self.mailbox.size))
        except (BrokenPipeError, OSError) as exc:
            raise CommitterGone(str(exc)) from None
        self.pending = True

    def ready(self) -> bool:
        """Whether the answer to the request in flight has arrived (or nothing is in flight)."""
        if not self.pending:
            return True
        readable, _, _ = select.select([self.process.stdout], [], [], 0)
        return bool(readable)

    def result(self) -> SaveResult:
        """Wait for the answer to the request in flight."""
        self.pending = False
        answer = _receive(self.process.stdout)
        if answer is None:
            raise CommitterGone(f"the committer exited ({self.process.poll()})")
        saved, error, seconds, uncertain_folder, previous_folder, appended = answer
        return SaveResult(saved=saved, error=error, seconds=seconds, uncertain_folder=uncertain_folder,
                          previous_folder=previous_folder, appended=appended)

    def close(self) -> None:
        if self.process is None:
            return
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        self.mailbox.close()
        self.mailbox = None


_kept: dict[int, Committer] = {}  # by process id: a forked process does not use its parent's


def acquire() -> Committer:
    """This process's committer for a run (started, or still running from an earlier run). A second run
    at the same time, or one whose database or checkpoint folder differs (tests), gets one of its own."""
    kept = _kept.get(os.getpid())
    if kept is not None and not kept.in_use and kept.process is not None:
        if kept.process.poll() is None and kept.environment == _child_environment():
            kept.in_use = True
            return kept
        kept.close()
    committer = Committer()
    committer.in_use = True
    committer.start()
    if kept is None or not kept.in_use:
        _kept[os.getpid()] = committer
    return committer


def release(committer: Committer, *, broken: bool = False) -> None:
    """The run is over (its last save flushed): keep the committer for the next run, or stop it."""
    committer.in_use = False
    if broken or _kept.get(os.getpid()) is not committer:
        committer.close()


def serve(mailbox: int) -> None:
    """The child (Django set up): commit each request with checkpoint_save and answer, until the pipe closes."""
    # A stop signal to the whole process group is its worker's to handle; the child ends with its pipe.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    _yield_to_the_run()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the answers
    requests = sys.stdin.buffer
    from django.db import connections
    from django.db.backends.signals import connection_created

    connection_created.connect(_without_waiting_for_the_disk)
    shared = None
    while (request := _receive(requests, poll=True)) is not None:
        operation_id, checkpoint_type, module, function, arguments, fence, placed, size = request
        if placed and (shared is None or len(shared) < size):
            if shared is not None:
                shared.close()
            shared = mmap.mmap(mailbox, size, access=mmap.ACCESS_READ)
        views = [memoryview(shared)[at:at + length] for _, _, _, _, at, length in placed]
        _connect(connections["default"])  # a save's time, which sets the saver's rest, is not a reconnection's
        started = time.monotonic()
        try:
            state = getattr(importlib.import_module(module), function)(*arguments)
        except Exception as exc:  # the run's own state function: its error is the run's, this child goes on
            result = SaveResult(saved=False, error=f"the checkpoint state could not be made: {exc!r}")
        else:
            result = checkpoint_save(
                operation_id=operation_id, checkpoint_type=checkpoint_type, state=state, artifacts={},
                fence=Fence(*fence), appends=[Append(path, offset, view, crc, crc_field)
                                              for (path, offset, crc, crc_field, _, _), view in zip(placed, views)],
            )
        finally:
            for view in views:
                view.release()
        if not result.saved:
            connections.close_all()  # the database may be away: the next request connects afresh
        _send(answers, (result.saved, result.error, time.monotonic() - started, result.uncertain_folder,
                        result.previous_folder, result.appended))


def _connect(connection) -> None:
    try:
        connection.ensure_connection()
    except Exception:  # the database is away: the save reports it
        pass


def _yield_to_the_run() -> None:
    """The committer yields the CPU to the loop it serves: a batch task (it never preempts on waking up)
    with a lower priority. Under load its saves take longer, and the loop takes fewer of them."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        os.nice(10)
    except (AttributeError, OSError):  # not Linux: the ordinary priority
        pass


def _without_waiting_for_the_disk(sender, connection, **kwargs) -> None:
    """On PostgreSQL, periodic commits do not wait for the disk (synchronous_commit): a fast loop
    checkpoints many times a second, and flushing the log at each commit costs the machine more than the
    commit itself. A crash of the database server may lose the last fraction of a second of them, which
    leaves the checkpoint before them; it never leaves a torn one. (SQLite in WAL mode, the embedded
    default, does not flush at each commit already.) Stop checkpoints are committed by the worker, waiting
    for the disk as always."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")


def _child_environment() -> dict[str, str]:
    """This process's environment, with the database and checkpoint folder it actually uses (a test
    process points them elsewhere than its environment says)."""
    environment = dict(os.environ)
    environment["DATABASE_URL"] = _database_url(connection.settings_dict)
    location = settings.STORAGES.get("checkpoints", {}).get("OPTIONS", {}).get("location")
    if location:
        environment["CHECKPOINT_DIR"] = str(location)
    return environment


def _database_url(database: dict[str, Any]) -> str:
    if "sqlite" in database["ENGINE"]:
        return f"sqlite:///{database['NAME']}"
    credentials = database.get("USER") or ""
    if database.get("PASSWORD"):
        credentials += f":{database['PASSWORD']}"
    host = f"{database.get('HOST') or '127.0.0.1'}:{database.get('PORT') or 5432}"
    return f"postgres://{credentials + '@' if credentials else ''}{host}/{database['NAME']}"


POLL_SECONDS = 0.0005
POLL_FOR_SECONDS = 0.1


def _wait_polling(stream: BinaryIO) -> None:
    """Wait for the next request. A process blocked on the pipe must be woken by the writer, which costs
    the writer's loop tens of microseconds (and may put this process on the loop's CPU); so, shortly
    after a request, the pipe is looked at every half millisecond instead, and only then waited on,
    without a database connection (an idle committer holds none). The pipe's file is what is looked at:
    nothing waits in the reader's buffer, as one request is in flight at a time."""
    from django.db import connections

    until = time.monotonic() + POLL_FOR_SECONDS
    while not select.select([stream], [], [], 0)[0]:
        if time.monotonic() > until:
            connections.close_all()
            select.select([stream], [], [])
            return
        time.sleep(POLL_SECONDS)


def _send(stream: BinaryIO, message: tuple) -> None:
    body = pickle.dumps(message, protocol=5)
    data = HEADER.pack(len(body)) + body
    descriptor = stream.fileno()
    while data:  # the raw pipe: one system call for a request of a few hundred bytes
        data = data[os.write(descriptor, data):]


def _receive(stream: BinaryIO, *, poll: bool = False) -> tuple | None:
    if poll:
        _wait_polling(stream)
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    body = stream.read(length)
    return pickle.loads(body) if len(body) == length else None
