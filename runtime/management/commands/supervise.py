"""The control loop: startup reconciliation, then the orphan sweep on its interval, and the backend-local
operations (agent sessions), each run by the runtime's task in a thread of this process.

One control loop acts at a time: the one holding the control loop's lease (operations.services.reconciliation).
A `supervise` started while another holds it waits as a standby, and takes over (reconciling first) when that
one releases it on a graceful stop, or when its claim expires: WORKER_STALE_SECONDS after its last renewal
(kill -9, a lost machine). A holder that finds its claim taken stops, with exit status 1.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connection

from operations import registry
from operations.management.base import one_shot_control_loop
from operations.models import QUEUED_STATUSES, ControlLoopLease, Operation
from operations.services.reconciliation import (
    control_loop_holder,
    control_loop_lease_seconds,
    control_loop_regained_database,
    control_loop_release,
    control_loop_renew,
    control_loop_take,
    reconcile_startup,
    sweep_orphans,
)
from runtime.restarts import restart_due
from runtime.shutdown import shutdown_requested
from runtime.tasks import run_operation
from runtime.worker import act_as_control_loop

logger = logging.getLogger("runtime.supervise")


class Command(BaseCommand):
    help = (
        "Run the control loop: reconcile once at start, then sweep orphans every ORPHAN_CHECK_INTERVAL_SECONDS, "
        "carry out the restart policy's automatic resumes as they fall due, and run checkpoint cleanup every "
        "CHECKPOINT_CLEANUP_INTERVAL_HOURS. One control loop acts at a time: started while another one "
        "runs, it waits as a standby and takes over when that one stops (at most WORKER_STALE_SECONDS "
        "after it was killed). SIGTERM or SIGINT stops it cleanly."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--once", action="store_true",
            help="Reconcile, sweep and run due maintenance once, then exit; refused while a supervise runs.",
        )
        parser.add_argument(
            "--force", action="store_true",
            help="With --once: run even though a supervise holds the control loop, taking it from that one "
                 "(a live one stops). For a supervise you know is gone, whose claim has not lapsed yet.",
        )

    def handle(self, *args, once: bool = False, force: bool = False, **options) -> None:
        if force and not once:
            raise CommandError("--force goes with --once: a supervise without it waits for the running one.")
        act_as_control_loop()  # the sessions it runs name it as the control loop, not as a cluster's worker
        self.prepare()
        if once:
            self.run_once(force=force)
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        while not self.stopping.is_set():
            close_old_connections()
            found = self.run_pass()
            if not found:
                self.stopping.wait(self.sleep_seconds())
        self.stop_sessions()
        self.release_control_loop()
        self.stdout.write("Control loop stopped.")
        if self.lost:
            raise CommandError(self.lost)

    def run_once(self, *, force: bool) -> None:
        """`--once`: the units of one pass, holding the control loop meanwhile, so that no `supervise` starts
        acting beside it; refused while one holds it."""
        with one_shot_control_loop(self, force=force):
            self.write_started()
            self.reconcile_once()
            self.sweep_if_due()
            self.restarts_due()
            self.maintenance_if_due()
        self.stdout.write("Control loop stopped.")

    def prepare(self) -> None:
        """The loop's state before its first pass."""
        self.stopping = threading.Event()
        self.lease: ControlLoopLease | None = None  # ours while we hold the control loop
        self.next_renewal_at = 0.0
        self.waiting_for: ControlLoopLease | None = None  # the holder a standby last reported
        self.lost = ""  # why this process stopped holding the control loop before it was asked to stop
        # Until then a standby leaves a lapsed claim alone: it could not see the database, nor could the
        # holder renew its claim meanwhile (an outage is no evidence of a dead holder).
        self.patient_until = 0.0
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
            if not self.hold_control_loop():
                return False
            if self.blind and self.reconciled:
                control_loop_regained_database()
                self.stdout.write("Database reachable again: watching heartbeats afresh.")
            self.blind = False
            found = (self.reconcile_once() | self.sweep_if_due() | self.restarts_due() | self.maintenance_if_due()
                     | self.run_sessions())
        except DatabaseError as exc:
            # Keep the loop alive and try again. If the database itself was unreachable, the workers
            # could not heartbeat either: their silence is not held against them once it is back.
            self.failed_passes += 1
            if self.failed_passes == 1 or self.failed_passes % 20 == 0:
                logger.warning("Control loop pass failed (%d in a row), will retry: %s", self.failed_passes, exc)
            unreachable = not database_answers()
            self.blind = self.blind or unreachable
            if unreachable:  # nor could the holder renew its claim: a standby gives it a whole claim's time
                self.patient_until = time.monotonic() + control_loop_lease_seconds()
            self.stopping.wait(min(5.0, settings.ORPHAN_CHECK_INTERVAL_SECONDS))
            return False
        if self.failed_passes:
            self.stdout.write(f"Control loop passes succeed again after {self.failed_passes} failed.")
            self.failed_passes = 0
        return found

    def hold_control_loop(self) -> bool:
        """Whether this process may act: it holds the control loop, renewed when due. A standby tries to take it
        on each pass; a holder whose claim was taken meanwhile stops (it stalled or lost the database for
        longer than the claim, and another took over: two must not act)."""
        if self.lease is None:
            self.lease, holder = control_loop_take(expired=time.monotonic() >= self.patient_until)
            if self.lease is None:
                self.report_standby(holder)
                return False
            if self.waiting_for is not None:
                self.stdout.write(f"Taking over the control loop from {self.waiting_for}.")
            self.next_renewal_at = time.monotonic() + control_loop_lease_seconds() / 3
            self.write_started()
            return True
        if time.monotonic() < self.next_renewal_at:
            return True
        if control_loop_renew(self.lease):
            self.next_renewal_at = time.monotonic() + control_loop_lease_seconds() / 3
            return True
        self.lease = None
        self.stopping.set()
        try:
            holder = control_loop_holder()
        except DatabaseError:
            holder = None
        self.lost = (
            f"Lost the control loop to {holder or 'another process'}: this process did not renew its claim "
            f"within WORKER_STALE_SECONDS ({control_loop_lease_seconds():g}s), or it was taken with --force. "
            "Stopping, so that only one control loop acts."
        )
        logger.error(self.lost)
        return False

    def report_standby(self, holder: ControlLoopLease | None) -> None:
        if holder is None or holder == self.waiting_for:  # None: it changed hands under us, try again next pass
            return
        self.waiting_for = holder
        self.stdout.write(
            f"Standby: {holder} holds the control loop. Taking over when it stops, or at most "
            f"WORKER_STALE_SECONDS ({control_loop_lease_seconds():g}s) after its last renewal if it was killed."
        )

    def write_started(self) -> None:
        self.stdout.write(f"Control loop started (sweep every {settings.ORPHAN_CHECK_INTERVAL_SECONDS:g}s).")

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

    def restarts_due(self) -> bool:
        """The restart policy's automatic resumes that are due, at every pass (about once a second): one indexed
        query when there are none, and a resume goes out within a second of its backoff."""
        if not self.reconciled:
            return False
        report = restart_due()
        if report.changed:
            self.stdout.write(f"Restarts: {report.as_dict()}")
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
        """Start a thread for each backend-local operation waiting to run (PENDING, or RESUMING after a resume),
        at most SUPERVISE_MAX_SESSIONS at a time; the runtime's task claims it, so a second control loop starting
        the same one is harmless."""
        if not self.reconciled:  # sessions left RUNNING by a previous process are failed first
            return False
        for operation_id, thread in list(self.sessions.items()):
            if not thread.is_alive():
                del self.sessions[operation_id]
        free = settings.SUPERVISE_MAX_SESSIONS - len(self.sessions)  # a bounded pool: the rest wait, oldest first
        waiting = list(
            Operation.objects.filter(is_backend_local=True, status__in=QUEUED_STATUSES)
            .exclude(pk__in=list(self.sessions)).order_by("created_at").values_list("pk", flat=True)[:max(0, free)]
        )
        for operation_id in waiting:
            thread = threading.Thread(target=_run_backend_local, args=(operation_id,), name=f"session-{operation_id}",
                                      daemon=True)
            self.sessions[operation_id] = thread
            thread.start()
        return False

    def stop_sessions(self) -> None:
        """Stopping: the sessions save a shutdown checkpoint and end CANCELLED, within SHUTDOWN_TIMEOUT_SECONDS.
        The claim is renewed meanwhile: the budget may outlast it, and a standby taking over now would fail the
        sessions still saving their checkpoint."""
        running = [thread for thread in self.sessions.values() if thread.is_alive()]
        if not running:
            return
        shutdown_requested.set()
        deadline = time.monotonic() + settings.SHUTDOWN_TIMEOUT_SECONDS
        renew_every = control_loop_lease_seconds() / 3
        while (alive := [thread for thread in running if thread.is_alive()]) and time.monotonic() < deadline:
            alive[0].join(max(0.0, min(renew_every, deadline - time.monotonic())))
            if self.lease is not None and time.monotonic() >= self.next_renewal_at:
                self.renew_while_stopping()
        left = [thread.name for thread in running if thread.is_alive()]
        if left:
            logger.warning("Sessions still running at the end of the shutdown budget: %s", left)

    def renew_while_stopping(self) -> None:
        try:
            renewed = control_loop_renew(self.lease)
        except DatabaseError as exc:
            logger.warning("Could not renew the control loop's claim while stopping: %s", exc)
            return
        self.next_renewal_at = time.monotonic() + control_loop_lease_seconds() / 3
        if not renewed:
            logger.warning("Another process took the control loop while this one was stopping")
            self.lease = None

    def release_control_loop(self) -> None:
        """A graceful stop gives the control loop up: a standby takes over at once rather than on expiry."""
        if self.lease is None:
            return
        try:
            control_loop_release(self.lease)
        except DatabaseError as exc:
            logger.warning(
                "Could not release the control loop (%s): another supervise takes over when the claim lapses, "
                "WORKER_STALE_SECONDS after its last renewal", exc,
            )
        self.lease = None

    def sleep_seconds(self) -> float:
        if self.lease is None:  # a standby: look for a free control loop about once a second
            return min(1.0, settings.ORPHAN_CHECK_INTERVAL_SECONDS)
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
