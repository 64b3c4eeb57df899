"""Checkpoint rows committed by a process of their own, so that a fast loop does not share its GIL.

A thread beside a CPU-bound Python loop runs only when the loop lets go of
the GIL, and the Python side of a commit (the ORM's queries, a few
milliseconds) is taken from the loop. A backtest checkpoints every few
milliseconds of its loop, so its rows are committed by a child process
instead: the loop writes its spool itself, sends the checkpoint's small state
through a pipe and goes on; the committer runs `checkpoint_save` (same
commit point, same fence) and answers. One request is in flight at most.

The child is started on the first request, reads requests until its pipe
closes (the run ended, or its worker died), and ignores Ctrl+C: a stop
checkpoint is always saved by the worker itself.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from typing import Any, BinaryIO

from django.conf import settings
from django.db import connection

from checkpoints.services import SaveResult

HEADER = struct.Struct("!I")
CHILD = "import django; django.setup(); from operations.runtime.committer import serve; serve()"


class CommitterGone(Exception):
    pass


class Committer:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.pending = False

    def start(self) -> None:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CHILD],
                cwd=settings.BASE_DIR, env=_child_environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )

    def submit(self, request: dict[str, Any]) -> None:
        """Send one save request (the keyword arguments of checkpoint_save, fence as a tuple)."""
        self.start()
        try:
            _send(self.process.stdin, request)
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
        return SaveResult(**answer)

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


def serve() -> None:
    """The child (Django set up): commit each request with checkpoint_save and answer, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the answers
    requests = sys.stdin.buffer
    from django.db import connections

    from checkpoints.services import Fence, checkpoint_save

    while (request := _receive(requests)) is not None:
        request["fence"] = Fence(*request["fence"]) if request.get("fence") else None
        started = time.monotonic()
        result = checkpoint_save(**request)
        if not result.saved:
            connections.close_all()  # the database may be away: the next request connects afresh
        _send(answers, {"saved": result.saved, "error": result.error, "seconds": time.monotonic() - started,
                        "uncertain_folder": result.uncertain_folder, "previous_folder": result.previous_folder})


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


def _send(stream: BinaryIO, message: dict[str, Any]) -> None:
    body = pickle.dumps(message, protocol=5)
    data = HEADER.pack(len(body)) + body
    descriptor = stream.fileno()
    while data:  # the raw pipe: one system call for a request of a few hundred bytes
        data = data[os.write(descriptor, data):]


def _receive(stream: BinaryIO) -> dict[str, Any] | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    body = stream.read(length)
    return pickle.loads(body) if len(body) == length else None
