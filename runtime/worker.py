"""A worker process: its identity, its registration, and how it waits out a database outage
(docs/restarts-and-crashes.md).

A worker that loses the database keeps computing. Each call it cannot do
without the database (registration, claim, outcome) is retried with a
backoff that starts at half a second and doubles up to
HEARTBEAT_INTERVAL_SECONDS, so the worker is back within one heartbeat
interval of the database's return.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from operations.models import WorkerType
from operations.services.workers import CurrentOperation, WorkerReply, worker_register, worker_report_outcomes
from runtime.outbox import outbox_entries, outbox_remove, outbox_waiting

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The database is down, restarting or unreachable (and SQLite's "database is locked"): worth waiting for.
DATABASE_UNREACHABLE = (OperationalError, InterfaceError)
FIRST_RETRY_SECONDS = 0.5


class GaveUp(Exception):
    """The wait for the database ended because the worker is stopping."""


# What this process is to the fleet: a worker process of a cluster, unless `supervise` says it is the control
# loop (it runs research sessions in its threads, and shows as the control loop, not as a worker).
_role = WorkerType.QCLUSTER


def act_as_control_loop() -> None:
    global _role
    _role = WorkerType.CONTROL_LOOP


def current_worker_type() -> str:
    return _role


def current_worker_id(pid: int | None = None) -> str:
    """<host>:<cluster>:<pid> of this process (or of `pid`, a worker process of this cluster); the control
    loop's cluster part is `supervise`."""
    from django_q.conf import Conf

    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in settings.WORKER_HOST) or "host"
    name = "supervise" if _role == WorkerType.CONTROL_LOOP else str(Conf.CLUSTER_NAME)
    cluster = "".join(c if c.isalnum() or c in "._-" else "-" for c in name) or "cluster"
    return f"{host}:{cluster}:{pid or os.getpid()}"


def capabilities() -> dict[str, Any]:
    capabilities: dict[str, Any] = {"cpu_count": os.cpu_count(), "device": "cpu", "gpu": None}
    try:
        import torch

        if torch.cuda.is_available():
            capabilities.update(device="cuda", gpu=torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return capabilities


class Backoff:
    """Waits between retries: FIRST_RETRY_SECONDS, doubling, never longer than HEARTBEAT_INTERVAL_SECONDS."""

    def __init__(self) -> None:
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; return how long to wait before the next try."""
        self.failures += 1
        cap = settings.HEARTBEAT_INTERVAL_SECONDS
        return min(cap, FIRST_RETRY_SECONDS * 2 ** min(self.failures - 1, 30))

    def succeeded(self) -> int:
        """Forget the failures; return how many there were."""
        failures, self.failures = self.failures, 0
        return failures


def database_lost(what: str, exc: Exception, failures: int) -> None:
    """Log a failed call (the first one, then every tenth) and drop this thread's broken connection."""
    if failures == 1 or failures % 10 == 0:
        logger.warning("%s: the database is unreachable (failure %d), retrying: %s", what, failures, exc)
    connection.close()


def until_reachable(call: Callable[[], T], *, what: str, stop: threading.Event) -> T:
    """Call until the database answers, backing off between tries; GaveUp once `stop` is set."""
    backoff = Backoff()
    while True:
        try:
            value = call()
        except DATABASE_UNREACHABLE as exc:
            wait = backoff.failed()
            database_lost(what, exc, backoff.failures)
            if stop.wait(wait):
                raise GaveUp(what) from exc
            continue
        failures = backoff.succeeded()
        if failures:
            logger.warning("%s: the database is back after %d failed tries", what, failures)
        return value


_registered: set[str] = set()  # the worker ids this process has registered (its own, once it has run a task)


def needs_registration(worker_id: str) -> bool:
    """Whether a task must register its worker before it claims: the first task of the process, or outcomes
    wait in this machine's outbox. (A row deleted since is found by the claim, which registers then; a row the
    sweep marked UNAVAILABLE the claim makes BUSY again.)"""
    return worker_id not in _registered or outbox_waiting()


def register(worker_id: str, current_operation: CurrentOperation | None = None) -> WorkerReply:
    """Register this worker, reporting every outcome waiting in this machine's outbox, then empty it.

    Each entry is fenced on the process and run that produced it, so an entry
    another process reports first, or one reported twice, changes nothing.
    """
    entries = outbox_entries()
    reply = worker_register(
        worker_id=worker_id,
        worker_type=_role,
        capabilities=capabilities(),
        current_operation=current_operation,
        completed_operations=[entry.report for entry in entries],
    )
    _reported(entries, reply.completed)
    _registered.add(worker_id)
    return reply


def outbox_report() -> dict[str, bool]:
    """Report the outbox without registering (a cluster starting on this machine); operation id → applied."""
    entries = outbox_entries()
    if not entries:
        return {}
    applied = worker_report_outcomes([entry.report for entry in entries])
    _reported(entries, applied)
    return applied


def _reported(entries, applied: dict[str, bool]) -> None:
    for entry in entries:
        logger.warning(
            "Reported the %s outcome of %s from the outbox (%s)", entry.report.status, entry.report.operation_id,
            "recorded" if applied.get(entry.report.operation_id) else "already known, nothing changed",
        )
    outbox_remove(entries)
