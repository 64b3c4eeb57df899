"""The control loop's side of the restart policy: carry out the automatic resumes planned when runs ended
(operations/restarts.py plans them; docs/self-healing.md).

Each pass takes the operations whose planned resume is due and, for each:

1. a worker operation waits while no worker of a cluster is alive (idle or busy, seen within
   WORKER_STALE_SECONDS): after a deploy's SIGTERM it is resumed once a new cluster is up, not handed to nobody;
2. a counted restart (a lost worker, a transient error) that failed again from the very checkpoint its last
   automatic resume started from has made no progress: the second time in a row, it is a crash loop, stopped
   FAILED with a message naming the epoch, bar or phase;
3. its checkpoint is validated (corrupted: the resume is given up, saying why); without one, it is restarted
   from the beginning if its type allows it, else given up;
4. otherwise it moves to RESUMING (or PENDING, from the beginning) with the same operation id, conditional on
   the version read, and is enqueued: any worker continues it from the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F

from checkpoints.exceptions import CheckpointCorrupted
from checkpoints.models import Checkpoint, position_text
from checkpoints.services import checkpoint_validate
from operations import registry
from operations.clock import db_now
from operations.models import RESUMABLE_STATUSES, Operation, OperationStatus
from operations.restarts import COUNTED_CAUSES, CRASH_LOOP_STALLS, EndCause
from operations.selectors import workers_available
from operations.services.reconciliation import PassReport
from operations.transitions import CONTROL_LOOP

logger = logging.getLogger(__name__)

S = OperationStatus

DUE_PER_PASS = 100  # the oldest first; the rest at the next pass


@dataclass
class RestartReport(PassReport):
    unchanged = ("waiting_for_worker",)

    resumed: list[str] = field(default_factory=list)
    restarted_from_scratch: list[str] = field(default_factory=list)
    waiting_for_worker: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)


FIELDS = ("pk", "operation_type", "status", "version", "is_backend_local", "end_cause", "restarts", "max_restarts",
          "restart_from", "stalls", "error_message")


def restart_due(*, now: datetime | None = None) -> RestartReport:
    """One pass: every operation whose planned automatic resume is due (see the module's docstring)."""
    now = now or db_now()
    report = RestartReport()
    due = Operation.objects.filter(restart_due_at__lte=now, status__in=RESUMABLE_STATUSES).order_by("restart_due_at")
    if not due.exists():
        return report
    if not workers_available(since=now - timedelta(seconds=settings.WORKER_STALE_SECONDS)):
        # A research session's worker is this control loop: only the others wait.
        report.waiting_for_worker = list(due.filter(is_backend_local=False).values_list("pk", flat=True)[:DUE_PER_PASS])
        due = due.filter(is_backend_local=True)
    for row in due.values(*FIELDS)[:DUE_PER_PASS]:
        _restart(row, now, report)
    if report.changed:
        logger.info("Restart policy: %s", report.as_dict())
    return report


def _restart(row: dict[str, Any], now: datetime, report: RestartReport) -> None:
    operation_id, operation_type = row["pk"], row["operation_type"]
    checkpoint = Checkpoint.objects.filter(pk=operation_id).first()
    position = checkpoint.position if checkpoint is not None else {}
    counted = row["end_cause"] in COUNTED_CAUSES
    stalls = row["stalls"]
    if counted:
        no_progress = row["restart_from"] is not None and position == row["restart_from"]
        stalls = stalls + 1 if no_progress else 0
        if stalls >= CRASH_LOOP_STALLS:
            where = position_text(position) or "its beginning (no checkpoint)"
            then = ("resume it by hand" if checkpoint is not None
                    else "start it again (there is no checkpoint to resume it from)")
            _give_up(row, report, end_cause=EndCause.CRASH_LOOP, message=(
                f"Crash loop at {where}: it failed again from that checkpoint after {stalls} automatic resumes "
                f"in a row without progress, and is not resumed again. Fix the cause, then {then}. "
                f"Last error: {row['error_message'] or 'none'}"
            ))
            return
    if checkpoint is not None:
        try:
            checkpoint_validate(checkpoint)
        except CheckpointCorrupted as exc:
            _give_up(row, report, end_cause=EndCause.UNRESUMABLE,
                     message=f"Automatic resume given up: {exc.code}: {exc.detail}. "
                             f"It had ended: {row['error_message'] or row['end_cause']}")
            return
    elif not registry.may_restart_from_scratch(operation_type):
        _give_up(row, report, end_cause=EndCause.UNRESUMABLE,
                 message=f"Automatic resume given up: no checkpoint to resume from, and an operation of type "
                         f"{operation_type} is not restarted from the beginning. "
                         f"It had ended: {row['error_message'] or row['end_cause']}")
        return

    number = f"{row['restarts'] + 1}/{row['max_restarts']}" if counted else "(not counted)"
    cause = EndCause(row["end_cause"]).label
    if checkpoint is not None:
        to_status = S.RESUMING
        reason = (f"Automatic resume {number} after a {cause}, from the {checkpoint.checkpoint_type} checkpoint"
                  f" at {checkpoint.position_text or 'its start'}")
    else:
        to_status = S.PENDING
        reason = f"Automatic restart {number} after a {cause}, from the beginning: it has no checkpoint"
    if not Operation.objects.transition(
        operation_id,
        from_statuses=[row["status"]],
        to_status=to_status,
        actor=CONTROL_LOOP,
        reason=reason,
        version=row["version"],
        restarts=F("restarts") + 1 if counted else F("restarts"),
        restart_from=position,
        stalls=stalls,
        queued_at=now,
        cancel_requested_at=None,
    ):
        return  # a user resumed or cancelled it meanwhile, or its worker came back: theirs
    (report.resumed if checkpoint is not None else report.restarted_from_scratch).append(operation_id)
    if row["is_backend_local"]:
        return  # the control loop's own session runner picks it up
    try:
        registry.enqueue_operation(operation_id, operation_type)
    except Exception:  # the broker is away: the sweep enqueues it again after REQUEUE_AFTER_SECONDS
        logger.exception("Enqueueing the automatic resume of %s failed; the sweep will enqueue it again",
                         operation_id)


def _give_up(row: dict[str, Any], report: RestartReport, *, message: str, end_cause: str) -> None:
    """No automatic resume after all: the plan is dropped, the operation keeps its status and says why."""
    if Operation.objects.transition(
        row["pk"],
        from_statuses=[row["status"]],
        to_status=row["status"],
        actor=CONTROL_LOOP,
        reason=message,
        version=row["version"],
        error_message=message,
        end_cause=end_cause,
    ):
        report.given_up.append(row["pk"])
        logger.warning("%s: %s", row["pk"], message)
