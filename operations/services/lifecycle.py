"""Creating, claiming, cancelling and finishing operations (docs/state-machine.md)."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce

from operations import registry
from operations.clock import db_now
from operations.exceptions import (
    ExecutorNotRegistered,
    OperationNotCancellable,
    OperationNotFound,
    TooManyActiveOperations,
    WorkerNotFound,
)
from operations.ids import new_operation_id, parse_operation_id
from operations.models import (
    QUEUED_STATUSES,
    TERMINAL_STATUSES,
    Operation,
    OperationStatus,
    Worker,
    WorkerStatus,
    unless_stopping,
)
from operations.restarts import CAUSES_OF, POLICY_FIELDS, EndCause, planned
from operations.summaries import figures_dict
from operations.transitions import worker_actor

logger = logging.getLogger(__name__)

S = OperationStatus


def operation_create(
    *,
    operation_type: str,
    params: dict[str, Any],
    actor: str,
    owner=None,
    is_backend_local: bool = False,
    parent: Operation | None = None,
    enqueue: bool = True,
    active_limit: int | None = None,
    max_restarts: int | None = None,
) -> Operation:
    """Record a new PENDING operation and, after commit, hand it to the broker.

    Backend-local operations (agent sessions) are run by the control loop and
    are never enqueued. With `active_limit`, refused (TooManyActiveOperations) when the owner already has that
    many operations not ended; the owner's row is locked meanwhile, so that racing requests cannot both pass.
    `max_restarts`: automatic resumes allowed (the restart policy), MAX_RESTARTS unless given.
    """
    enqueue = enqueue and not is_backend_local
    if enqueue and registry.get_executor(operation_type) is None:
        raise ExecutorNotRegistered(operation_type)
    now = db_now()
    with transaction.atomic():
        if active_limit and owner is not None:
            list(get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk", flat=True))
            if Operation.objects.filter(owner=owner).exclude(status__in=TERMINAL_STATUSES).count() >= active_limit:
                raise TooManyActiveOperations(active_limit)
        operation = Operation.objects.enter(
            S.PENDING,
            actor=actor,
            reason="Created",
            operation_id=new_operation_id(operation_type, now),
            operation_type=operation_type,
            params=params,
            owner=owner,
            is_backend_local=is_backend_local,
            parent=parent,
            created_at=now,
            queued_at=now if enqueue else None,
            max_restarts=settings.MAX_RESTARTS if max_restarts is None else max_restarts,
        )
        if enqueue:
            transaction.on_commit(lambda: registry.enqueue_operation(operation.operation_id, operation_type))
    return operation


@dataclass(frozen=True)
class Claim:
    """A run a worker has claimed: what it needs of its operation to start."""

    attempt: int  # the run's number, which fences every later write of the worker
    operation_type: str
    params: dict[str, Any]
    previous_status: str  # RESUMING: a checkpoint must be there to resume from


def operation_claim_run(*, operation_id: str, worker_id: str) -> Claim | None:
    """Start executing: PENDING or RESUMING → RUNNING on this worker, the worker BUSY with it.

    One transaction: the conditional UPDATE … RETURNING of the operation (what the run needs of it comes back
    with it), its event, and the worker's row. None when there was nothing to claim (a duplicate or late
    delivery): the caller then returns without doing anything. WorkerNotFound, with nothing claimed, when the
    worker has no row (deleted, or never registered): the caller registers and claims again.
    """
    now = db_now()
    with transaction.atomic():
        moved = Operation.objects.filter(pk=operation_id).transition_many(
            from_statuses=QUEUED_STATUSES,
            to_status=S.RUNNING,
            actor=worker_actor(worker_id),
            reason="Claimed by worker",
            at=now,
            returning=("attempt", "operation_type", "params", "previous_status"),
            worker_id=worker_id,
            attempt=F("attempt") + 1,
            started_at=Coalesce("started_at", now),
            last_heartbeat_at=now,
            cancel_requested_at=None,
            completed_at=None,
            orphan_clock_from=None,
            presumed_orphan=False,
            error_message="",
            end_cause="",
        )
        if not moved:
            logger.info("Claim of %s by %s found nothing to claim", operation_id, worker_id)
            return None
        if not Worker.objects.filter(pk=worker_id).update(
            status=unless_stopping(WorkerStatus.BUSY), current_operation_id=operation_id, last_seen_at=now
        ):
            raise WorkerNotFound(worker_id)  # the claim is rolled back with it
    row = moved[0]
    return Claim(attempt=row["attempt"], operation_type=row["operation_type"], params=row["params"],
                 previous_status=row["previous_status"])


def operation_claim(*, operation_id: str, worker_id: str) -> int | None:
    """operation_claim_run()'s attempt number, or None when there was nothing to claim."""
    claim = operation_claim_run(operation_id=operation_id, worker_id=worker_id)
    return claim.attempt if claim else None


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"  # it was not executing: cancelled at once
    REQUESTED = "cancel_requested"  # RUNNING: its worker will checkpoint and acknowledge
    ALREADY_REQUESTED = "already_requested"


def operation_cancel(*, operation_id: str, actor: str) -> CancelOutcome:
    """Cancel an operation.

    1. PENDING, RESUMING or PENDING_RECONCILIATION (nothing is known to be
       executing it) → CANCELLED at once; a worker that comes back is told to stop.
    2. RUNNING → record `cancel_requested_at`; the worker sees it within one
       heartbeat, saves a cancellation checkpoint and acknowledges.
    3. FAILED or CANCELLED with an automatic resume planned → CANCELLED, the resume called off.
    4. Otherwise terminal → OperationNotCancellable.
    Each step is conditional; if the status moved under us, look again.
    """
    for _ in range(5):
        current = (Operation.objects.filter(pk=operation_id)
                   .values("status", "cancel_requested_at", "restart_due_at").first())
        if current is None:
            raise OperationNotFound(operation_id)
        status = current["status"]
        now = db_now()
        if status in TERMINAL_STATUSES and current["restart_due_at"] is not None:
            if Operation.objects.transition(  # only while it is planned: the table's guard
                operation_id, from_statuses=[status], to_status=S.CANCELLED, actor=actor,
                reason="Cancelled: its automatic resume is called off", end_cause=EndCause.CANCELLED,
            ):
                return CancelOutcome.CANCELLED
            continue
        if status in TERMINAL_STATUSES:
            raise OperationNotCancellable(operation_id, status)
        if status == S.RUNNING:
            if current["cancel_requested_at"] is not None:
                return CancelOutcome.ALREADY_REQUESTED
            if Operation.objects.transition(  # only while none is requested: the table's guard
                operation_id, from_statuses=[S.RUNNING], to_status=S.RUNNING, actor=actor, reason="Cancel requested",
                at=now, cancel_requested_at=now,
            ):
                return CancelOutcome.REQUESTED
            continue
        if Operation.objects.transition(
            operation_id,
            from_statuses=[status],
            to_status=S.CANCELLED,
            actor=actor,
            reason="Cancelled before it was executing" if status != S.PENDING_RECONCILIATION
            else "Cancelled while its worker was unreachable",
            cancel_requested_at=now,
            completed_at=now,
            end_cause=EndCause.CANCELLED,
        ):
            return CancelOutcome.CANCELLED
    raise OperationNotCancellable(operation_id, "changing too fast")


def operation_finish(
    *,
    operation_id: str,
    worker_id: str,
    attempt: int | None,
    status: str,
    result: Any = None,
    error_message: str = "",
    reason: str = "",
    completed_at=None,
    principal: str = "",
    cause: str = "",
) -> bool:
    """Record the outcome a worker reports for its run (COMPLETED, FAILED or CANCELLED).

    `cause` says why a FAILED or CANCELLED run ended (operations/restarts.py; an error, or a user's cancel,
    unless given): the restart policy plans an automatic resume from it in the same UPDATE.

    Fenced: it applies only while the operation is still this worker's run, and
    only if the operation is not terminal, or FAILED merely presumed orphaned
    (a completed report after the sweep gave up on the worker). A repeated
    report finds the operation terminal and changes nothing.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status} is not a terminal status")
    now = db_now()
    changes: dict[str, Any] = {
        "completed_at": completed_at or now,
        "presumed_orphan": False,
        "orphan_clock_from": None,
        "error_message": error_message,
    }
    if status != S.COMPLETED:
        if cause not in CAUSES_OF[status]:  # none given, or one that does not go with the status
            cause = CAUSES_OF[status][0]
        policy = Operation.objects.filter(pk=operation_id).values(*POLICY_FIELDS).first()
        if policy is not None:  # (its run fences the UPDATE: the counts cannot change before it)
            changes.update(planned(cause, now=now, **policy))
    else:
        changes["end_cause"] = ""
        changes["result"] = result
        # Its headline figures beside it, once: a list reads these, never the result.
        changes["summary"] = figures_dict(registry.result_summary(parse_operation_id(operation_id), result))
        changes["progress_percent"] = 100.0
        changes["progress_current"] = Coalesce(F("progress_total"), F("progress_current"))
        changes["progress_message"] = "Completed"
    fence = {"worker_id": worker_id, **({"attempt": attempt} if attempt is not None else {})}
    # One transaction: the conditional UPDATE … RETURNING (the status it left comes back with it, no read
    # after it), its event, and the worker's row.
    with transaction.atomic():
        won = bool(Operation.objects.filter(pk=operation_id, **fence).transition_many(
            from_statuses=[S.RUNNING, S.PENDING_RECONCILIATION, S.FAILED],
            to_status=status,
            actor=worker_actor(worker_id),
            reason=reason or f"Reported {status.lower()} by its worker",
            principal=principal,  # FAILED only if presumed orphaned: the table's guard
            **changes,
        ))
        if won:
            Worker.objects.filter(pk=worker_id, current_operation_id=operation_id).update(
                status=unless_stopping(WorkerStatus.IDLE), current_operation=None, last_seen_at=now
            )
    return won
