"""The restart policy: which ended runs the control loop resumes on its own, when, and what a user is told
(docs/self-healing.md).

When a run ends short of completion, whoever records the end (its worker, the sweep, startup reconciliation)
names its cause, and in the same UPDATE the policy plans an automatic resume (`restart_due_at`) if the cause is
one a restart can cure and the operation has restarts left:

- `worker_lost`: the sweep presumed its worker dead, its process was seen to exit mid-run, or the control loop
  running it restarted. Counted against `max_restarts`, with an exponential backoff.
- `transient_error`: it raised an error its type marks as transient (the database went away, out of memory).
  Counted, with the backoff.
- `shutdown`: a graceful shutdown (SIGTERM of its cluster, a deploy). Not counted, no backoff: resumed as soon as
  a worker is available.

A run a user cancelled, or that failed with any other error (a bad parameter, a bug), is never resumed
automatically. The control loop carries the plan out (runtime/restarts.py): it checks for a crash loop, then
resumes from the latest checkpoint with the same operation id.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, CharField, DateTimeField, F, Q, Value, When

# A run that fails again from the very checkpoint its automatic resume started from this many times in a row
# is crash-looping: the control loop stops it.
CRASH_LOOP_STALLS = 2


class EndCause(models.TextChoices):
    WORKER_LOST = "worker_lost", "lost worker"
    SHUTDOWN = "shutdown", "graceful shutdown"
    TRANSIENT_ERROR = "transient_error", "transient error"
    ERROR = "error", "error"
    CANCELLED = "cancelled", "cancelled by a user"
    CRASH_LOOP = "crash_loop", "crash loop"  # the control loop stopped its automatic resumes
    UNRESUMABLE = "unresumable", "no usable checkpoint"  # the control loop could not resume it after all


RESTARTABLE_CAUSES = (EndCause.WORKER_LOST, EndCause.TRANSIENT_ERROR, EndCause.SHUTDOWN)
# Causes whose automatic resume counts against max_restarts (a deploy's does not).
COUNTED_CAUSES = (EndCause.WORKER_LOST, EndCause.TRANSIENT_ERROR)
# The causes a run's own end may have, by the status it ended in (the first of each: when none is given).
CAUSES_OF = {
    "FAILED": (EndCause.ERROR, EndCause.TRANSIENT_ERROR, EndCause.WORKER_LOST),
    "CANCELLED": (EndCause.CANCELLED, EndCause.SHUTDOWN),
}
NOT_RESTARTABLE_TEXT = {
    EndCause.ERROR: "it failed with an error its type does not mark transient",
    EndCause.CANCELLED: "a user cancelled it",
    EndCause.UNRESUMABLE: "it has no usable checkpoint (see the error)",
    EndCause.CRASH_LOOP: "it is crash-looping (see the error)",
}


def backoff_seconds(restarts: int) -> float:
    """The wait before automatic resume number `restarts + 1`: RESTART_BACKOFF_SECONDS doubling with each one
    already made, never more than RESTART_BACKOFF_MAX_SECONDS."""
    return min(settings.RESTART_BACKOFF_MAX_SECONDS, settings.RESTART_BACKOFF_SECONDS * 2 ** min(restarts, 30))


# What planned() reads of the operation's row, read with the version (or fenced run) its UPDATE is conditional on.
POLICY_FIELDS = ("restarts", "max_restarts", "cancel_requested_at")


def planned(cause: str, *, restarts: int, max_restarts: int, now: datetime,
            cancel_requested_at: datetime | None = None) -> dict[str, Any]:
    """The fields an ending run's UPDATE writes: its cause, and the automatic resume planned, if any.

    A run a user had asked to cancel is never resumed, whatever ended it (its worker died before it could
    acknowledge the cancel): its cause is the user's cancel.
    """
    if cancel_requested_at is not None:
        return {"end_cause": EndCause.CANCELLED, "restart_due_at": None}
    due = None
    if max_restarts and cause == EndCause.SHUTDOWN:
        due = now
    elif max_restarts and cause in COUNTED_CAUSES and restarts < max_restarts:
        due = now + timedelta(seconds=backoff_seconds(restarts))
    return {"end_cause": cause, "restart_due_at": due}


def planned_in_sql(cause: str, *, now: datetime) -> dict[str, Any]:
    """planned() as SQL expressions over each row's own restart counts and cancel request: what an UPDATE that
    ends many runs at once writes, each row getting what planned() gives it (a test holds the two together).

    The backoff is a CASE over the restart count, each value computed by backoff_seconds(): one branch per count
    until the backoff stops growing (at RESTART_BACKOFF_MAX_SECONDS, a handful of counts), one for the rest.
    """
    not_cancelled = Q(cancel_requested_at__isnull=True)
    end_cause = Case(When(not_cancelled, then=Value(cause)), default=Value(EndCause.CANCELLED),
                     output_field=CharField())
    due: list[When] = []
    if cause == EndCause.SHUTDOWN:
        due = [When(not_cancelled & Q(max_restarts__gt=0), then=Value(now))]
    elif cause in COUNTED_CAUSES:
        steady = next((count for count in range(30) if backoff_seconds(count) == backoff_seconds(count + 1)), 30)
        due = [When(not_cancelled & Q(restarts=count, max_restarts__gt=count),
                    then=Value(now + timedelta(seconds=backoff_seconds(count)))) for count in range(steady)]
        due.append(When(not_cancelled & Q(restarts__gte=steady, restarts__lt=F("max_restarts")),
                        then=Value(now + timedelta(seconds=backoff_seconds(steady)))))
    restart_due_at = Case(*due, default=None, output_field=DateTimeField()) if due else None
    return {"end_cause": end_cause, "restart_due_at": restart_due_at}


def restart_summary(operation) -> dict[str, Any]:
    """What the policy says of an operation, for the API, the CLI and the admin.

    `counter` is `restarts/max_restarts`; `state` one of: none, planned, exhausted, crash_loop, off,
    not_restartable; `text` a sentence saying why and when.
    """
    used, allowed = operation.restarts, operation.max_restarts
    counter = f"{used}/{allowed}"
    cause = operation.end_cause
    label = EndCause(cause).label if cause in EndCause.values else ""
    if operation.restart_due_at is not None:
        state = "planned"
        when = operation.restart_due_at.isoformat(timespec="seconds")
        if cause == EndCause.SHUTDOWN:
            text = f"Automatic resume after a {label}, once a worker is available (not counted against max_restarts)"
        else:
            text = f"Automatic resume {used + 1}/{allowed} due at {when}, after a {label}, once a worker is available"
    elif operation.status not in ("FAILED", "CANCELLED") or not cause:
        state, text = "none", ""
    elif cause == EndCause.CRASH_LOOP:
        state, text = "crash_loop", f"No automatic resume: {NOT_RESTARTABLE_TEXT[cause]}"
    elif not allowed:
        state, text = "off", "Automatic restarts are off for it (max_restarts 0)"
    elif cause in RESTARTABLE_CAUSES:
        state, text = "exhausted", f"No automatic resume: all {allowed} restarts used (restarts {counter})"
    else:
        state, text = "not_restartable", f"No automatic resume: {NOT_RESTARTABLE_TEXT.get(cause, label)}"
    return {"restarts": used, "max_restarts": allowed, "counter": counter, "state": state,
            "next_at": operation.restart_due_at, "cause": cause, "text": text}
