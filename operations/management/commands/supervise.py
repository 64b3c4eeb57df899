"""The control loop: startup reconciliation, then the orphan sweep on its interval, and the backend-local
operations (agent sessions), each run by the runtime's task in a thread of this process."""

from __future__ import annotations

import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections, connection

from operations import registry
from operations.models import QUEUED_STATUSES, Operation
from operations.runtime.shutdown import shutdown_requested
from operations.runtime.tasks import run_operation
from operations.services.reconciliation import control_loop_regained_database, reconcile_startup, sweep_orphans

logger = logging.getLogger("operations.supervise")


class Command(BaseCommand):
    help = (
        "Run the control loop: reconcile once at start, then sweep orphans every "
        "ORPHAN_CHECK_INTERVAL_SECONDS and run checkpoint cleanup every "
        "CHECKPOINT_CLEANUP_INTERVAL_HOURS. SIGTERM or SIGINT stops it cleanly."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Reconcile, sweep and run due maintenance once, then exit."
        )

    def handle(self, *args, once: bool = False, **options) -> None:
        self.prepare()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        self.stdout.write(f"Control loop started (sweep every {settings.ORPHAN_CHECK_INTERVAL_SECONDS:g}s).")
        if once:
            self.reconcile_once()
            self.sweep_if_due()
            self.maintenance_if_due()
        while not once and not self.stopping.is_set():
            close_old_connections()
            found = self.run_pass()
            if not found:
                self.stopping.wait(self.sleep_seconds())
        self.stop_sessions()
        self.stdout.write("Control loop stopped.")

    def prepare(self) -> None:
        """The loop's state before its first pass."""
        self.stopping = threading.Event()
        self.next_sweep_at = 0.0
        self.next_maintenance_at: dict[str, float] = {}
        self.reconciled = False
        self.failed_passes = 0  # in a row
        self.blind = False  # the database was unreachable: watch afresh once it is back
        self.sessions: dict[str, threading.Thread] = {}  # backend-local operations this process runs

    def request_stop(self, signum, frame) -> None:
        logger.info("Received %s: stopping", signal.Signals(signum).name)
        self.stopping.set()

    def run_pass(self) -> bool:
        """One pass over the units of work; returns whether any of them found work."""
        try:
            if self.blind and self.reconciled:
                control_loop_regained_database()
                self.stdout.write("Database reachable again: watching heartbeats afresh.")
            self.blind = False
            found = self.reconcile_once() | self.sweep_if_due() | self.maintenance_if_due() | self.run_sessions()
        except DatabaseError as exc:
            # Keep the loop alive and try again. If the database itself was unreachable, the workers
            # could not heartbeat either: their silence is not held against them once it is back.
            self.failed_passes += 1
            if self.failed_passes == 1 or self.failed_passes % 20 == 0:
                logger.warning("Control loop pass failed (%d in a row), will retry: %s", self.failed_passes, exc)
            self.blind = self.blind or not database_answers()
            self.stopping.wait(min(5.0, settings.ORPHAN_CHECK_INTERVAL_SECONDS))
            return False
        if self.failed_passes:
            self.stdout.write(f"Control loop passes succeed again after {self.failed_passes} failed.")
            self.failed_passes = 0
        return found

    def reconcile_once(self) -> bool:
        if self.reconciled:
            return False
        report = reconcile_startup()
        self.reconciled = True
        self.stdout.write(f"Startup reconciliation: {report.as_dict()}")
        return False

    def sweep_if_due(self) -> bool:
        if time.monotonic() < self.next_sweep_at:
            return False
        report = sweep_orphans()
        self.next_sweep_at = time.monotonic() + settings.ORPHAN_CHECK_INTERVAL_SECONDS
        if report.changed:
            self.stdout.write(f"Sweep: {report.as_dict()}")
        return False

    def maintenance_if_due(self) -> bool:
        """Periodic work registered by the layers above (checkpoint cleanup), each on its interval."""
        for task in registry.maintenance_tasks():
            if time.monotonic() < self.next_maintenance_at.get(task.name, 0.0):
                continue
            try:
                outcome = task.run()
            except DatabaseError:
                raise
            except Exception:  # one failing task must not stop the control loop
                logger.exception("Maintenance %r failed", task.name)
                outcome = None
            self.next_maintenance_at[task.name] = time.monotonic() + task.interval_seconds()
            if outcome and any(outcome.values() if isinstance(outcome, dict) else [outcome]):
                self.stdout.write(f"{task.name.capitalize()}: {outcome}")
        return False

    def run_sessions(self) -> bool:
        """Start a thread for each backend-local operation waiting to run (PENDING, or RESUMING after a resume);
        the runtime's task claims it, so a second control loop starting the same one is harmless."""
        if not self.reconciled:  # sessions left RUNNING by a previous process are failed first
            return False
        for operation_id, thread in list(self.sessions.items()):
            if not thread.is_alive():
                del self.sessions[operation_id]
        waiting = list(
            Operation.objects.filter(is_backend_local=True, status__in=QUEUED_STATUSES)
            .exclude(pk__in=list(self.sessions)).order_by("created_at").values_list("pk", flat=True)
        )
        for operation_id in waiting:
            thread = threading.Thread(target=_run_backend_local, args=(operation_id,), name=f"session-{operation_id}",
                                      daemon=True)
            self.sessions[operation_id] = thread
            thread.start()
        return False

    def stop_sessions(self) -> None:
        """Stopping: the sessions save a shutdown checkpoint and end CANCELLED, within SHUTDOWN_TIMEOUT_SECONDS."""
        running = [thread for thread in self.sessions.values() if thread.is_alive()]
        if not running:
            return
        shutdown_requested.set()
        deadline = time.monotonic() + settings.SHUTDOWN_TIMEOUT_SECONDS
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [thread.name for thread in running if thread.is_alive()]
        if left:
            logger.warning("Sessions still running at the end of the shutdown budget: %s", left)

    def sleep_seconds(self) -> float:
        return max(0.05, min(1.0, self.next_sweep_at - time.monotonic()))


def _run_backend_local(operation_id: str) -> None:
    try:
        run_operation(operation_id)
    except Exception:  # the task records its own outcome; this thread must not take the loop down
        logger.exception("Backend-local operation %s ended with an error", operation_id)
    finally:
        connection.close()


def database_answers() -> bool:
    """Whether the database is reachable now (a failed pass may be a query error with the database up)."""
    close_old_connections()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        connection.close()
        return False
