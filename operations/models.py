"""Operations, their history, the workers that execute them, and the control loop's record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from operations import permissions, transitions
from operations import restarts as restarts_policy
from operations.ids import HOST_RE
from operations.transitions import (  # noqa: F401  (the statuses are the models' too)
    QUEUED_STATUSES,
    RESUMABLE_STATUSES,
    TERMINAL_STATUSES,
    OperationStatus,
)
from operations.updates import update_returning


class OperationType(models.TextChoices):
    TRAINING = "training", "Training"
    BACKTESTING = "backtesting", "Backtesting"
    AGENT_RESEARCH = "agent_research", "Agent research"


class _Unset:
    pass


UNSET: Any = _Unset()


class _SameStatus:
    def __repr__(self) -> str:
        return "SAME_STATUS"


# transition_many()'s `to_status` for a change that leaves each row in its own status (a re-enqueue).
SAME_STATUS: Any = _SameStatus()


class OperationQuerySet(models.QuerySet):
    def transition(
        self,
        operation_id: str,
        *,
        from_statuses: Iterable[str],
        to_status: str,
        actor: str,
        reason: str = "",
        version: int | None = None,
        fence_worker_id: Any = UNSET,
        fence_attempt: int | None = None,
        extra_filter: Q | None = None,
        at: datetime | None = None,
        principal: str = "",
        **changes: Any,
    ) -> bool:
        """Move one operation to `to_status` if it is still as expected; return whether it moved.

        Only a change the transition table allows (operations/transitions.py) for this actor: any other raises
        TransitionNotAllowed, before anything is written. One conditional UPDATE (the status, the table's guard,
        and optionally the version, and the worker and run that fence a worker's writes) with version + 1: two
        callers racing for the same transition cannot both win, whatever the isolation level. The winner writes
        the event (at `at`, or now) in the same transaction, so history and state never disagree. `principal`
        is who authenticated the request behind the change, when it is not the actor itself (a worker's
        credential).
        """
        from_statuses = list(from_statuses)
        conditions = Q(pk=operation_id) & transitions.moving(from_statuses, to_status, actor)
        if version is not None:
            conditions &= Q(version=version)
        if fence_worker_id is not UNSET:
            conditions &= Q(worker_id=fence_worker_id)
        if fence_attempt is not None:
            conditions &= Q(attempt=fence_attempt)
        if extra_filter is not None:
            conditions &= extra_filter
        # previous_status is the status before the last change of status: a move to the same status (a cancel
        # request, a re-enqueue) leaves it, so the worker that claimed a resume still sees it came from RESUMING.
        if from_statuses != [to_status]:
            changes["previous_status"] = F("status")
        # An automatic resume stays planned only through the change that plans it: any other (a resume by hand,
        # the worker back, a cancel) drops it.
        changes.setdefault("restart_due_at", None)
        with transaction.atomic():
            won = self.filter(conditions).update(status=to_status, version=F("version") + 1, **changes)
            if won:
                if len(set(from_statuses)) == 1:
                    previous = from_statuses[0]
                else:
                    previous = self.filter(pk=operation_id).values_list("previous_status", flat=True).get()
                OperationEvent.objects.create(
                    operation_id=operation_id,
                    from_status=previous,
                    to_status=to_status,
                    reason=reason,
                    actor=actor,
                    principal=principal,
                    **({"at": at} if at is not None else {}),
                )
        return won == 1

    def transition_many(
        self,
        *,
        from_statuses: Iterable[str],
        to_status: str,
        actor: str,
        reason: str | Callable[[dict[str, Any]], str] = "",
        returning: Sequence[str] = (),
        at: datetime | None = None,
        principal: str = "",
        **changes: Any,
    ) -> list[dict[str, Any]]:
        """Move every operation of this queryset that is still as expected to `to_status` at once: what
        transition() is for one row, for a set of rows in a number of statements that does not grow with it.
        Returns the moved ones, by id: each its "pk" and its `returning` fields as written.

        The same table check: TransitionNotAllowed before anything is written. One conditional UPDATE … RETURNING
        (operations/updates.py) of the queryset's rows that are in one of `from_statuses` with the table's guard,
        version + 1: its whole condition, the queryset's included, is checked again on each row as the UPDATE
        takes it, so a row another writer moved, or changed so that it no longer matches (a heartbeat that made
        it fresh), is left alone, and of callers racing for the same rows each row moves once. The moved rows'
        events in one INSERT in the same transaction, each with its own reason when `reason` is a function of
        the moved row (its returned fields). A change may be an expression over the row's own columns (F,
        Coalesce, Case), so each row gets its own values from the one statement. `to_status` SAME_STATUS leaves
        each row in the status it is in (the table must allow each of `from_statuses` to itself). The queryset
        must filter on the table's own columns (no join).
        """
        from_statuses = list(from_statuses)
        same = to_status is SAME_STATUS
        several = len(set(from_statuses)) > 1
        if same:
            rows = self.filter(transitions.staying(from_statuses, actor))
        else:
            rows = self.filter(transitions.moving(from_statuses, to_status, actor))
            changes["status"] = to_status
            if from_statuses != [to_status]:  # as in transition()
                changes["previous_status"] = F("status")
        changes.setdefault("restart_due_at", None)
        # The status each row left: a change from several wrote it as previous_status (or kept it, SAME_STATUS).
        left = "status" if same else "previous_status" if several else None
        fields = list(dict.fromkeys([*returning, *([left] if left else [])]))
        at = at if at is not None else timezone.now()
        # Inside a caller's transaction, part of it (no savepoint: the caller's whole block fails with it).
        with transaction.atomic(using=self.db, savepoint=False):
            moved = update_returning(rows, fields, version=F("version") + 1, **changes)
            moved.sort(key=lambda row: row["pk"])
            OperationEvent.objects.using(self.db).bulk_create(
                OperationEvent(
                    operation_id=row["pk"],
                    from_status=row[left] if left else from_statuses[0],
                    to_status=row["status"] if same else to_status,
                    reason=reason(row) if callable(reason) else reason,
                    actor=actor,
                    principal=principal,
                    at=at,
                )
                for row in moved
            )
        return moved

    def enter(self, to_status: str, *, actor: str, reason: str, principal: str = "", **fields: Any) -> "Operation":
        """Create an operation in `to_status` with its first event, in one transaction: the transition table's
        change from no status (created PENDING, or adopted RUNNING from a worker's report)."""
        transitions.allowed(None, to_status, actor)
        with transaction.atomic():
            operation = self.create(status=to_status, **fields)
            OperationEvent.objects.create(
                operation=operation, from_status="", to_status=to_status, reason=reason, actor=actor,
                principal=principal, at=operation.created_at,
            )
        return operation

    def visible_to(self, user) -> "OperationQuerySet":
        """Everyone's with the view-all permission (a superuser's), else the user's own."""
        if permissions.sees_all(user):
            return self
        return self.filter(owner=user) if user.is_authenticated else self.none()


class Operation(models.Model):
    operation_id = models.CharField(max_length=64, primary_key=True)
    operation_type = models.CharField(max_length=32, choices=OperationType.choices)
    status = models.CharField(max_length=32, choices=OperationStatus.choices, default=OperationStatus.PENDING)
    previous_status = models.CharField(max_length=32, choices=OperationStatus.choices, blank=True)
    version = models.PositiveIntegerField(default=0, help_text="Incremented by every transition (optimistic lock).")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    worker = models.ForeignKey(
        "operations.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    attempt = models.PositiveIntegerField(
        default=0, help_text="Number of the run: incremented by each claim; workers' writes are fenced on it."
    )
    is_backend_local = models.BooleanField(default=False)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )

    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    summary = models.JSONField(
        default=dict, blank=True, editable=False,
        help_text="The result's headline figures by name (operations/summaries.py), written with it: what a list "
                  "shows, without reading a result that may hold megabytes of trades.",
    )
    error_message = models.TextField(blank=True)
    presumed_orphan = models.BooleanField(
        default=False, help_text="FAILED by the orphan sweep, not by the operation itself."
    )

    progress_percent = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=500, blank=True)
    progress_current = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_unit = models.CharField(max_length=32, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time it was handed to the broker (lost-task re-enqueue)."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    orphan_clock_from = models.DateTimeField(
        null=True,
        blank=True,
        help_text="While PENDING_RECONCILIATION: when the orphan timeout began to count.",
    )

    # The restart policy (operations/restarts.py, docs/self-healing.md).
    max_restarts = models.PositiveIntegerField(
        default=0, help_text="Automatic resumes allowed after a lost worker or a transient error (0: none)."
    )
    restarts = models.PositiveIntegerField(default=0, help_text="Automatic resumes counted against max_restarts.")
    end_cause = models.CharField(
        max_length=32, choices=restarts_policy.EndCause.choices, blank=True,
        help_text="Why its last run ended short of completion.",
    )
    restart_due_at = models.DateTimeField(
        null=True, blank=True, help_text="When the control loop resumes it automatically (planned when it ended)."
    )
    restart_from = models.JSONField(
        null=True, blank=True, help_text="The checkpoint position its last automatic resume started from."
    )
    stalls = models.PositiveSmallIntegerField(
        default=0, help_text="Automatic resumes in a row that failed again without progress (a crash loop at 2)."
    )

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # orphan sweep: the few RUNNING and PENDING_RECONCILIATION operations, whose heartbeat's age it then
            # reads. No index holds a column a heartbeat writes (last_heartbeat_at, the progress), so PostgreSQL
            # updates a heart-beating row in place (HOT) instead of writing every index of the table again.
            models.Index(fields=["status"], name="op_live_status_idx",
                         condition=Q(status__in=["RUNNING", "PENDING_RECONCILIATION"])),
            # lost-task re-enqueue: PENDING / RESUMING by enqueue age
            models.Index(fields=["status", "queued_at"], name="op_status_queued_idx"),
            # the sweep's re-enqueue: only the queued operations a worker might claim, by how long they have
            # waited (its expression), so its UPDATE reads the few past REQUEUE_AFTER_SECONDS however deep the
            # queue. Nothing a heartbeat writes is in it.
            models.Index(Coalesce("queued_at", "created_at"), name="op_unclaimed_idx",
                         condition=Q(status__in=QUEUED_STATUSES, is_backend_local=False)),
            # The list pages (the API's and the admin's), newest or oldest first, for staff and for one owner,
            # filtered by status or by type, and the admin's sort by status: each read in order and left at the
            # end of its page, the ties broken by id as the lists break them (the admin in the sort's direction,
            # OperationChangeList). A sort the admin offers has its index here; none holds a column a heartbeat
            # writes (tests/operations/test_list_indexes.py).
            # The other filter's columns ride along (include): a page's count reads the index alone.
            models.Index(fields=["created_at", "operation_id"], name="op_created_id_idx"),
            models.Index(fields=["owner", "created_at", "operation_id"], include=["status", "operation_type"],
                         name="op_owner_created_id_idx"),
            models.Index(fields=["status", "created_at", "operation_id"], include=["operation_type", "owner"],
                         name="op_status_created_id_idx"),
            models.Index(fields=["operation_type", "created_at", "operation_id"], include=["status", "owner"],
                         name="op_type_created_id_idx"),
            # the restart pass: the few ended operations with an automatic resume planned
            models.Index(fields=["restart_due_at"], condition=Q(restart_due_at__isnull=False),
                         name="op_restart_due_idx"),
        ]
        permissions = [
            ("view_all_operations", "Can see every user's operations"),
            ("cancel_operation", "Can cancel another user's operations"),
            ("resume_operation", "Can resume another user's operations"),
        ]

    def __str__(self) -> str:
        return self.operation_id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def resumable(self) -> bool:
        """CANCELLED or FAILED with a checkpoint (the `checkpoint` relation of the checkpoint store)."""
        return self.status in RESUMABLE_STATUSES and hasattr(self, "checkpoint")


class OperationEvent(models.Model):
    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=32, blank=True)
    to_status = models.CharField(max_length=32)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=255)
    # Who authenticated the request behind it, when not the actor itself: the credential a worker used over the
    # API (credential:<prefix>@<host>), or the user who acted as a worker (user:<name>).
    principal = models.CharField(max_length=255, blank=True, default="")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["operation", "-at"], name="event_operation_at_idx")]

    def __str__(self) -> str:
        return f"{self.operation_id}: {self.from_status or '∅'} → {self.to_status}"


class WorkerStatus(models.TextChoices):
    """IDLE and BUSY: alive (it or its cluster heart-beats). STOPPING: its cluster is shutting down and takes no
    new work; STOPPED: it exited cleanly, or its cluster saw it exit. UNAVAILABLE: silent for
    WORKER_STALE_SECONDS (the sweep)."""

    IDLE = "IDLE", "Idle"
    BUSY = "BUSY", "Busy"
    STOPPING = "STOPPING", "Stopping"
    STOPPED = "STOPPED", "Stopped"
    UNAVAILABLE = "UNAVAILABLE", "Unavailable"


LIVE_WORKER_STATUSES = (WorkerStatus.IDLE, WorkerStatus.BUSY)


def unless_stopping(status: str) -> Case:
    """A worker's new status in an UPDATE, unless its cluster is shutting down: STOPPING holds until STOPPED (a
    run it ends meanwhile must not make it look ready for work)."""
    return Case(When(status=WorkerStatus.STOPPING, then=Value(WorkerStatus.STOPPING)), default=Value(status))


class WorkerType(models.TextChoices):
    QCLUSTER = "qcluster", "cluster worker"  # a worker process of a `qcluster`: takes tasks from the broker
    API = "api", "API worker"  # a worker outside the deployment, reporting over the API
    CONTROL_LOOP = "control_loop", "control loop"  # `supervise`, running research sessions in its threads


class Worker(models.Model):
    worker_id = models.CharField(max_length=320, primary_key=True)
    worker_type = models.CharField(max_length=32, choices=WorkerType.choices, default=WorkerType.QCLUSTER)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    capabilities = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=WorkerStatus.choices, default=WorkerStatus.IDLE)
    current_operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    registered_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["worker_id"]
        # Not last_seen_at, which heartbeats write: a worker's row is then updated in place (HOT).
        indexes = [models.Index(fields=["status"], name="worker_status_idx")]
        permissions = [("act_as_worker", "Can register and send heartbeats as a worker")]

    def __str__(self) -> str:
        return self.worker_id


class WorkerCredential(models.Model):
    """The credential of one worker machine over the API: it acts only for worker ids of its host.

    The key is shown once, when it is made; only its SHA-256 is kept (a random key of 256 bits needs no slow
    hash), and its first characters, to recognise it in lists.
    """

    host = models.CharField(
        max_length=200, validators=[RegexValidator(HOST_RE, "Letters, digits, dots, dashes and underscores.")],
        help_text="The host name of the worker ids it may act for (the <host> of <host>:<cluster>:<pid>).",
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=255, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["host", "-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.host}{', revoked' if self.revoked_at else ''})"

    @property
    def principal(self) -> str:
        return f"credential:{self.prefix}@{self.host}"


@dataclass(frozen=True)
class ControlLoopLease:
    """A claim on the control loop: the process (host, pid) that took it at `since`; the three name the claim,
    so a later process with the same pid (a restarted container) is another holder."""

    host: str
    pid: int
    since: datetime
    expires_at: datetime | None = field(default=None, compare=False)  # unless renewed before

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host or '?'} (since {self.since.isoformat(timespec='seconds')})"


class ControlLoopManager(models.Manager):
    """The control loop's row as a lease: whoever holds it is the one control loop that acts.

    Every change is one conditional UPDATE of the row, so of processes racing for it exactly one wins:
    PostgreSQL re-checks a waiting UPDATE's condition on the row its winner wrote, SQLite writes one at a
    time. A claim is free when released (`lease_expires_at` NULL) or expired; its holder renews it, even
    after it expired, as long as nobody else took it.
    """

    def holder(self, *, now: datetime) -> ControlLoopLease | None:
        row = (
            self.filter(pk=1, lease_expires_at__gt=now)
            .values_list("host", "pid", "started_at", "lease_expires_at")
            .first()
        )
        return ControlLoopLease(*row) if row else None

    def take(
        self, *, host: str, pid: int, now: datetime, expires_at: datetime, expired: bool = True, force: bool = False
    ) -> bool:
        """Claim a released lease, or (`expired`) one that lapsed, or (`force`) whichever; whether it won."""
        self.bulk_create([self.model(pk=1)], ignore_conflicts=True)  # the first take ever: a row to claim
        free = Q(lease_expires_at__isnull=True)
        if expired:
            free |= Q(lease_expires_at__lte=now)
        rows = self.filter(pk=1) if force else self.filter(free, pk=1)
        return rows.update(host=host, pid=pid, started_at=now, lease_expires_at=expires_at) == 1

    def renew(self, lease: ControlLoopLease, *, expires_at: datetime) -> bool:
        return self._held_by(lease).update(lease_expires_at=expires_at) == 1

    def release(self, lease: ControlLoopLease) -> bool:
        return self._held_by(lease).update(lease_expires_at=None) == 1

    def _held_by(self, lease: ControlLoopLease) -> models.QuerySet:
        return self.filter(
            pk=1, host=lease.host, pid=lease.pid, started_at=lease.since, lease_expires_at__isnull=False
        )


class ControlLoop(models.Model):
    """The control loop's own record (one row): who holds it, when it started and last swept."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    # The holder (or the last one): the process that took the control loop, and when.
    host = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Until when the holder's claim stands unless it renews it; NULL once released (a graceful stop).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_reconcile_at = models.DateTimeField(null=True, blank=True)
    last_sweep_at = models.DateTimeField(null=True, blank=True)
    last_sweep_summary = models.JSONField(default=dict, blank=True)
    # Since when the control loop has seen the database without a break. Heartbeats missing from
    # before then are no evidence of a dead worker: nobody could write them (a database outage).
    watching_since = models.DateTimeField(null=True, blank=True)

    objects = ControlLoopManager()

    class Meta:
        verbose_name = "control loop"

    def __str__(self) -> str:
        return f"control loop on {self.host or '?'}:{self.pid or '?'}"
