"""The orphan sweep, startup reconciliation, and the lease that lets one control loop run them
(docs/restarts-and-crashes.md).

One control loop acts at a time: the process holding the control loop's row
as a lease (`control_loop_take`). A second `supervise` waits as a standby;
`reconcile` and `supervise --once` refuse unless forced. The passes are still
conditional writes, so an operation whose worker heart-beats in between is
left alone (the sweep's UPDATE checks the heartbeat again on the row it
takes; reconciliation's, the version), and a pass run twice changes nothing
more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import ClassVar

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Q, TextField, Value, When
from django.db.models.functions import Coalesce, Concat
from django.db.models.lookups import LessThan

from operations import registry
from operations.clock import db_now
from operations.models import (
    LIVE_WORKER_STATUSES,
    QUEUED_STATUSES,
    SAME_STATUS,
    ControlLoop,
    ControlLoopLease,
    Operation,
    OperationEvent,
    OperationStatus,
    Worker,
    WorkerStatus,
)
from operations.restarts import POLICY_FIELDS, EndCause, planned, planned_in_sql
from operations.transitions import CONTROL_LOOP
from operations.updates import update_returning

logger = logging.getLogger(__name__)

S = OperationStatus

NO_WORKER_MESSAGE = "Operation was RUNNING but no worker claimed it"
BACKEND_RESTART_WITH_CHECKPOINT = "Backend restarted - checkpoint available for resume"
BACKEND_RESTART_WITHOUT_CHECKPOINT = "Backend restarted - no checkpoint available"


def worker_unavailable_message(worker_id: str) -> str:
    return f"Worker {worker_id} became unavailable"


def _orphan_message() -> Case:
    """The message of an operation the sweep presumes orphaned, in SQL, each row's own: worker_unavailable_message()
    of its worker (the same words), or NO_WORKER_MESSAGE without one."""
    return Case(
        When(Q(worker__isnull=True) | Q(worker_id=""), then=Value(NO_WORKER_MESSAGE)),
        default=Concat(Value("Worker "), "worker_id", Value(" became unavailable")),
        output_field=TextField(),
    )


@dataclass
class PassReport:
    """What one pass of the control loop did: the ids it acted on, by what it did to them. A subclass names in
    `unchanged` the lists that record no change (what it only found waiting)."""

    unchanged: ClassVar[tuple[str, ...]] = ()

    @property
    def changed(self) -> bool:
        return any(ids for name, ids in asdict(self).items() if name not in self.unchanged)

    def as_dict(self) -> dict[str, list[str]]:
        return asdict(self)


@dataclass
class SweepReport(PassReport):
    pending_reconciliation: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    workers_unavailable: list[str] = field(default_factory=list)


@dataclass
class ReconcileReport(PassReport):
    failed_backend_local: list[str] = field(default_factory=list)
    pending_reconciliation: list[str] = field(default_factory=list)


def _heartbeat_anchor():
    # A NULL heartbeat counts from started_at (and from created_at if even
    # that is missing): no row escapes the sweep.
    return Coalesce("last_heartbeat_at", "started_at", "created_at")


def sweep_orphans(*, now: datetime | None = None) -> SweepReport:
    """One pass of the orphan sweep.

    1. RUNNING worker operations with a heartbeat older than WORKER_STALE_SECONDS
       → PENDING_RECONCILIATION; their worker → UNAVAILABLE (step 4).
    2. PENDING_RECONCILIATION older than ORPHAN_TIMEOUT_SECONDS → FAILED
       (presumed orphan; the checkpoint stays).
    3. PENDING or RESUMING unclaimed for REQUEUE_AFTER_SECONDS → enqueued again.
    4. Workers silent for WORKER_STALE_SECONDS → UNAVAILABLE.
    Backend-local operations are left to startup reconciliation. Steps 1, 2
    and 4 judge only silences the control loop watched whole: after it
    started, or got the database back from an outage, a silence counts from
    then (a worker cannot heartbeat into a database that is down).

    Each step is set-based: one conditional UPDATE over all the rows it acts
    on, and their events in one INSERT (Operation.objects.transition_many),
    so a pass makes as many statements for 5,000 operations as for one; only
    the re-enqueues call the broker once per operation.
    """
    now = now or db_now()
    report = SweepReport()
    watching_since = ControlLoop.objects.filter(pk=1).values_list("watching_since", flat=True).first()
    stale_cutoff = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    watched_long_enough = watching_since is None or watching_since <= stale_cutoff
    if watched_long_enough:
        _mark_stale_running(now, report)
    if watching_since is None or watching_since <= now - timedelta(seconds=settings.ORPHAN_TIMEOUT_SECONDS):
        _fail_expired_reconciliation(now, report)
    _requeue_unclaimed(now, report)
    if watched_long_enough:
        _mark_stale_workers(stale_cutoff, report)
    record = {"last_sweep_at": now, "last_sweep_summary": report.as_dict()}
    if not ControlLoop.objects.filter(pk=1).update(**record):  # the row is there once a control loop took the lease
        ControlLoop.objects.update_or_create(pk=1, defaults=record)
    if report.changed:
        logger.info("Orphan sweep: %s", report.as_dict())
    return report


def control_loop_regained_database() -> datetime:
    """The control loop could not reach the database for a while: watch afresh from now (see sweep_orphans)."""
    now = db_now()
    ControlLoop.objects.update_or_create(pk=1, defaults={"watching_since": now})
    logger.warning(
        "The database is back: silences from before %s are not held against workers or operations", now.isoformat()
    )
    return now


def _mark_stale_workers(cutoff: datetime, report: SweepReport) -> None:
    """Every worker silent since `cutoff` → UNAVAILABLE, in one UPDATE: the workers of the operations step 1 found
    stale among them (a worker of a stale operation that was itself seen since, another thread of it, is not)."""
    # STOPPING too: a cluster killed while it stopped never marks its workers STOPPED.
    silent = Worker.objects.filter(
        status__in=[*LIVE_WORKER_STATUSES, WorkerStatus.STOPPING], last_seen_at__lt=cutoff
    )
    marked = update_returning(silent, status=WorkerStatus.UNAVAILABLE)
    report.workers_unavailable.extend(sorted(row["pk"] for row in marked))


def _mark_stale_running(now: datetime, report: SweepReport) -> None:
    cutoff = now - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    stale = Operation.objects.filter(LessThan(_heartbeat_anchor(), cutoff), is_backend_local=False)

    def reason(row: dict) -> str:
        silence = (now - row["orphan_clock_from"]).total_seconds()
        return f"No heartbeat from worker {row['worker_id'] or '(none)'} for {silence:.0f}s"

    moved = stale.transition_many(
        from_statuses=[S.RUNNING],
        to_status=S.PENDING_RECONCILIATION,
        actor=CONTROL_LOOP,
        reason=reason,
        returning=["worker_id", "orphan_clock_from"],
        orphan_clock_from=_heartbeat_anchor(),  # the silence it was judged on, each row's own
    )
    report.pending_reconciliation.extend(row["pk"] for row in moved)


def _fail_expired_reconciliation(now: datetime, report: SweepReport) -> None:
    cutoff = now - timedelta(seconds=settings.ORPHAN_TIMEOUT_SECONDS)
    expired = Operation.objects.filter(
        LessThan(Coalesce("orphan_clock_from", _heartbeat_anchor()), cutoff), is_backend_local=False
    )
    # Each row's message, and the restart policy's plan from its own counts, computed by the UPDATE itself.
    moved = expired.transition_many(
        from_statuses=[S.PENDING_RECONCILIATION],
        to_status=S.FAILED,
        actor=CONTROL_LOOP,
        reason=lambda row: row["error_message"],
        returning=["error_message"],
        error_message=_orphan_message(),
        completed_at=now,
        presumed_orphan=True,
        **planned_in_sql(EndCause.WORKER_LOST, now=now),
    )
    report.failed.extend(row["pk"] for row in moved)


def _fail(operation_id: str, from_status: str, version: int, message: str, now: datetime, **changes) -> bool:
    """The control loop's FAILED: conditional on the version it read, the message as error and reason."""
    return Operation.objects.transition(
        operation_id,
        from_statuses=[from_status],
        to_status=S.FAILED,
        actor=CONTROL_LOOP,
        reason=message,
        version=version,
        error_message=message,
        completed_at=now,
        **changes,
    )


REQUEUED = "Re-enqueued: "  # how a re-enqueue's event reason begins


def _requeue_unclaimed(now: datetime, report: SweepReport) -> None:
    """A lost broker message must not leave an operation waiting forever.

    The status stays; the move is conditional on the old `queued_at` (the
    UPDATE checks each row is still unclaimed for long enough as it takes
    it), so two control loops cannot both re-enqueue; the claim makes a
    duplicate delivery harmless anyway. One UPDATE for all the rows; the
    broker is then called once per operation, after the commit (_enqueue).
    An operation keeps only its latest re-enqueue event: one waiting a week
    for a worker would otherwise gather thousands.
    """
    cutoff = now - timedelta(seconds=settings.REQUEUE_AFTER_SECONDS)
    # What op_unclaimed_idx serves. The statuses are transition_many()'s own condition: repeated, as another
    # condition on the status, they made PostgreSQL's planner misjudge how many rows each reads, and pass it by.
    unclaimed = Operation.objects.filter(LessThan(Coalesce("queued_at", "created_at"), cutoff), is_backend_local=False)
    executable = registry.executable_types()
    for operation_id, operation_type in unclaimed.filter(status__in=QUEUED_STATUSES).exclude(
        operation_type__in=executable
    ).values_list("pk", "operation_type"):
        logger.warning("Cannot re-enqueue %s: no executor for %s operations", operation_id, operation_type)
    with transaction.atomic():
        moved = unclaimed.filter(operation_type__in=executable).transition_many(
            from_statuses=QUEUED_STATUSES,
            to_status=SAME_STATUS,
            actor=CONTROL_LOOP,
            reason=f"{REQUEUED}no worker claimed it for {settings.REQUEUE_AFTER_SECONDS:g}s",
            returning=["operation_type"],
            at=now,
            queued_at=now,
        )
        if moved:
            OperationEvent.objects.filter(operation_id__in=[row["pk"] for row in moved], actor=CONTROL_LOOP,
                                          reason__startswith=REQUEUED, at__lt=now).delete()
            transaction.on_commit(partial(_enqueue, [(row["pk"], row["operation_type"]) for row in moved]))
    report.requeued.extend(row["pk"] for row in moved)


def _enqueue(operations: list[tuple[str, str]]) -> None:
    """Hand each operation to the broker, once the re-enqueue is committed: one call each.

    In one transaction: outside any, django-q2's ORM broker calls close_old_connections() before each enqueue,
    which with DATABASE_CONN_MAX_AGE 0 closes the connection, and each call connected again (6.6 ms a call
    where it takes 0.3 ms). With the Redis broker the transaction holds nothing.
    """
    with transaction.atomic():
        for operation_id, operation_type in operations:
            registry.enqueue_operation(operation_id, operation_type)


def reconcile_startup(*, now: datetime | None = None) -> ReconcileReport:
    """What the control loop does when it starts (once it holds the lease, see control_loop_take).

    1. RUNNING backend-local operations died with the previous control loop:
       FAILED, saying whether a checkpoint can resume them.
    2. RUNNING worker operations → PENDING_RECONCILIATION; a live worker's next
       heartbeat makes them RUNNING again, otherwise the sweep fails them
       ORPHAN_TIMEOUT_SECONDS after this moment.
    """
    now = now or db_now()
    report = ReconcileReport()
    running = Operation.objects.filter(status=S.RUNNING).values("pk", "version", "is_backend_local", *POLICY_FIELDS)
    for row in running:
        operation_id, version, is_backend_local = row.pop("pk"), row.pop("version"), row.pop("is_backend_local")
        if is_backend_local:
            message = (
                BACKEND_RESTART_WITH_CHECKPOINT
                if registry.has_checkpoint(operation_id)
                else BACKEND_RESTART_WITHOUT_CHECKPOINT
            )
            if _fail(operation_id, S.RUNNING, version, message, now, **planned(EndCause.WORKER_LOST, now=now, **row)):
                report.failed_backend_local.append(operation_id)
        elif Operation.objects.transition(
            operation_id,
            from_statuses=[S.RUNNING],
            to_status=S.PENDING_RECONCILIATION,
            actor=CONTROL_LOOP,
            reason="Control loop restarted: waiting for the worker's heartbeat",
            version=version,
            orphan_clock_from=now,
        ):
            report.pending_reconciliation.append(operation_id)
    ControlLoop.objects.update_or_create(pk=1, defaults={"last_reconcile_at": now, "watching_since": now})
    logger.info("Startup reconciliation: %s", report.as_dict())
    return report


# --- the lease: one control loop at a time


def control_loop_lease_seconds() -> float:
    """How long a claim on the control loop stands unless renewed: WORKER_STALE_SECONDS, the silence after
    which a worker, too, is taken for gone. Its holder renews it every third of that."""
    return settings.WORKER_STALE_SECONDS


def control_loop_holder() -> ControlLoopLease | None:
    """The process holding the control loop now (a claim neither released nor expired), if any."""
    return ControlLoop.objects.holder(now=db_now())


def control_loop_take(
    *, expired: bool = True, force: bool = False, host: str | None = None, pid: int | None = None
) -> tuple[ControlLoopLease | None, ControlLoopLease | None]:
    """Take the control loop for this process: (our lease or None, the live holder found).

    1. Read who holds it; held, and not forced: (None, the holder).
    2. Take it with one conditional UPDATE: released, or lapsed (unless `expired` is False: after an outage
       of our own, a lapse proves nothing, its holder could not renew either), or, forced, whichever.
       Of many racing, one wins.
    3. Lost the race: read again, the winner is the holder now.
    Forced, the holder found is the one displaced: it stops at its next renewal.
    """
    host = host if host is not None else settings.WORKER_HOST
    pid = pid if pid is not None else os.getpid()
    holder = None
    for _ in range(3):  # a holder may release it between our read and our write: then take it
        now = db_now()
        holder = ControlLoop.objects.holder(now=now)
        if holder is not None and not force:
            return None, holder
        expires_at = now + timedelta(seconds=control_loop_lease_seconds())
        if ControlLoop.objects.take(host=host, pid=pid, now=now, expires_at=expires_at, expired=expired, force=force):
            lease = ControlLoopLease(host, pid, now, expires_at)
            if holder is not None:
                logger.warning("Took the control loop from %s by force", holder)
            return lease, holder
        if not expired:  # a lapsed claim left alone on purpose (or one just taken: seen at the next try)
            return None, None
    return None, holder


def control_loop_renew(lease: ControlLoopLease) -> bool:
    """Extend our claim for another control_loop_lease_seconds(); False: it is not ours any more (it expired
    and another process took it, or one took it by force)."""
    return ControlLoop.objects.renew(lease, expires_at=db_now() + timedelta(seconds=control_loop_lease_seconds()))


def control_loop_release(lease: ControlLoopLease) -> bool:
    """Give the control loop up (a graceful stop): a standby takes it at once instead of waiting for expiry."""
    return ControlLoop.objects.release(lease)


class ControlLoopBusy(Exception):
    """A live control loop holds the lease: a one-shot reconciliation would act beside it."""

    def __init__(self, holder: ControlLoopLease | None) -> None:
        self.holder = holder
        who = "another process holds it"
        if holder is not None:
            until = holder.expires_at.isoformat(timespec="seconds")
            who = f"{holder} holds it (its claim runs until {until} unless renewed)"
        super().__init__(
            f"A control loop is running: {who}. Reconciling beside it would fail the research sessions it runs. "
            f"Stop it first; if it is gone (killed), wait for its claim to lapse (at most WORKER_STALE_SECONDS, "
            f"{control_loop_lease_seconds():g}s, after its last renewal) or pass --force to take the control loop "
            "from it (a live one then stops)."
        )


@contextmanager
def control_loop_held(*, force: bool = False) -> Iterator[ControlLoopLease | None]:
    """Hold the control loop for a one-shot pass (`reconcile`, `supervise --once`), releasing it after.

    Raises ControlLoopBusy if a live control loop holds it and `force` is not given; yields the holder
    displaced by force, if any.
    """
    lease, holder = control_loop_take(force=force)
    if lease is None:
        raise ControlLoopBusy(holder)
    try:
        yield holder
    finally:
        control_loop_release(lease)
