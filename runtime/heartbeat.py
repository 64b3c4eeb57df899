"""The heartbeat thread of a running operation."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection

from operations.services.workers import Action, CurrentOperation, Instruction, worker_heartbeat
from runtime.context import RunContext
from runtime.worker import DATABASE_UNREACHABLE, Backoff, database_lost, register

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Every HEARTBEAT_INTERVAL_SECONDS: write liveness and the latest progress, read back cancel and stop.

    Progress is coalesced: the runner only updates memory; this thread is the
    only writer, once per interval, however fast the runner's loop. While the
    database is unreachable the run goes on: a failed beat is retried with a
    backoff capped at the interval, and the first beat that gets through
    re-registers the worker (with its operation and this machine's outbox)
    before it writes the progress kept in memory.
    """

    def __init__(self, context: RunContext) -> None:
        super().__init__(name=f"heartbeat-{context.operation_id}", daemon=True)
        self.context = context
        self.stopped = threading.Event()
        self.backoff = Backoff()

    def run(self) -> None:
        try:
            wait = settings.HEARTBEAT_INTERVAL_SECONDS
            while not self.stopped.wait(wait):
                wait = self.beat()
        finally:
            connection.close()  # this thread's own connection

    def beat(self) -> float:
        """One beat; return how long to wait before the next."""
        context = self.context
        current = CurrentOperation(context.operation_id, context.attempt)
        try:
            if self.backoff.failures:
                register(context.worker_id, current_operation=current)
            reply = worker_heartbeat(worker_id=context.worker_id, current_operation=current,
                                     progress=context.take_progress())
        except DATABASE_UNREACHABLE as exc:
            wait = self.backoff.failed()
            database_lost(f"Heartbeat of {context.operation_id}", exc, self.backoff.failures)
            return wait
        except Exception:  # the thread must outlive any error, or the sweep would take a live run for dead
            logger.exception("Heartbeat of %s failed", context.operation_id)
            connection.close()
            return settings.HEARTBEAT_INTERVAL_SECONDS
        failures = self.backoff.succeeded()
        if failures:
            logger.warning("Worker %s re-registered after %d failed heartbeats", context.worker_id, failures)
        self.obey(reply.instruction)
        return settings.HEARTBEAT_INTERVAL_SECONDS

    def obey(self, instruction: Instruction | None) -> None:
        context = self.context
        if instruction is None:
            return
        if instruction.action is Action.STOP:
            logger.warning("Told to stop %s: %s", context.operation_id, instruction.reason)
            context.abandoned.set()
        elif instruction.cancel_requested:
            context.cancel_requested.set()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=settings.HEARTBEAT_INTERVAL_SECONDS + 5)
