"""The heartbeat thread of a running operation."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, connection

from operations.runtime.context import RunContext
from operations.services.workers import Action, CurrentOperation, worker_heartbeat

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Every HEARTBEAT_INTERVAL_SECONDS: write liveness and the latest progress, read back cancel and stop.

    Progress is coalesced: the runner only updates memory; this thread is the
    only writer, once per interval, however fast the runner's loop.
    """

    def __init__(self, context: RunContext) -> None:
        super().__init__(name=f"heartbeat-{context.operation_id}", daemon=True)
        self.context = context
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.HEARTBEAT_INTERVAL_SECONDS):
                self.beat()
        finally:
            connection.close()  # this thread's own connection

    def beat(self) -> None:
        context = self.context
        try:
            reply = worker_heartbeat(
                worker_id=context.worker_id,
                current_operation=CurrentOperation(context.operation_id, context.attempt),
                progress=context.take_progress(),
            )
        except DatabaseError as exc:
            logger.warning("Heartbeat of %s failed, will retry: %s", context.operation_id, exc)
            connection.close()
            return
        instruction = reply.instruction
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
