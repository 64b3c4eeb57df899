"""Starting and stopping the project's real processes from tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """The URL of the database pytest-django created, for child processes."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({name: str(value) for name, value in overrides.items()})
    return env


class ManagedProcess:
    """A `manage.py` child whose output is kept in a file, for assertions and for failure reports."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def run_and_cancel_at(operation_id: str, current: int, *, timeout: float = 30) -> str:
    """Run the operation in a thread, cancel it through the service once its progress reaches `current`
    (as a user would), and return the run's outcome."""
    from operations.models import Operation
    from operations.services.lifecycle import operation_cancel

    thread, outcome = run_operation_in_thread(operation_id)
    wait_for(lambda: Operation.objects.get(pk=operation_id).progress_current >= current, timeout=timeout,
             what=f"progress {current}")
    operation_cancel(operation_id=operation_id, actor="test")
    thread.join(timeout=timeout)
    return outcome[0] if outcome else "still running"


def run_operation_in_thread(operation_id: str) -> tuple[threading.Thread, list[str]]:
    """The runtime task in a thread of its own (a worker beside the test); its outcome lands in the list."""
    from runtime.tasks import run_operation

    outcome: list[str] = []

    def target() -> None:
        try:
            outcome.append(run_operation(operation_id))
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def wait_for(condition: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
