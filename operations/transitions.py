"""The statuses of an operation and every change between them: the one table that `transition()` obeys.

Each row says from which status to which an operation may move, who may move it (a user, its worker, the
control loop: the kind of the event's actor), when that happens, and, for some, a guard on the row that the
move's conditional UPDATE includes (an operation FAILED moves on only if the sweep merely presumed it orphaned).
A change the table does not list is a bug in its caller, not a lost race: `transition()` raises
TransitionNotAllowed and writes nothing. Creation is the change from no status (`None`).

docs/state-machine.md shows this table; a test holds the two together, and walks the table against the state
machine the product promises.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce

from django.db import models
from django.db.models import Q


class OperationStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    RESUMING = "RESUMING", "Resuming"
    PENDING_RECONCILIATION = "PENDING_RECONCILIATION", "Pending reconciliation"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


S = OperationStatus
TERMINAL_STATUSES = (S.COMPLETED, S.FAILED, S.CANCELLED)
QUEUED_STATUSES = (S.PENDING, S.RESUMING)
RESUMABLE_STATUSES = (S.CANCELLED, S.FAILED)


class By(enum.Enum):
    """Who makes a transition: the kind of the actor its event names."""

    USER = "user"  # a person (`user:<name>` in the API, `admin:<name>`, `cli`), or what acts for one (`session:<id>`)
    WORKER = "worker"  # `worker:<worker id>`: the process executing the operation
    CONTROL_LOOP = "control loop"  # `control-loop`: reconciliation and the orphan sweep


CONTROL_LOOP = "control-loop"  # the actor the control loop's events name


def worker_actor(worker_id: str) -> str:
    return f"worker:{worker_id}"


def actor_kind(actor: str) -> By:
    if actor.startswith("worker:"):
        return By.WORKER
    if actor == CONTROL_LOOP:
        return By.CONTROL_LOOP
    return By.USER


@dataclass(frozen=True)
class Guard:
    """A condition on the operation's row, part of the move's conditional UPDATE."""

    condition: Q
    description: str


@dataclass(frozen=True)
class Transition:
    from_status: str | None  # None: the operation is created
    to_status: str
    by: By
    when: str
    only_if: Guard | None = None


# An operation FAILED by the sweep (its worker presumed dead) is the worker's still: its report or its return wins.
PRESUMED_ORPHAN = Guard(Q(presumed_orphan=True), "the sweep presumed it orphaned (not failed by its run)")
NOT_YET_REQUESTED = Guard(Q(cancel_requested_at__isnull=True), "no cancel requested yet")
# The restart policy planned an automatic resume (operations/restarts.py): only then may the control loop act on
# an ended operation, and a user's cancel call it off.
RESTART_PLANNED = Guard(Q(restart_due_at__isnull=False), "the restart policy planned an automatic resume")

TRANSITIONS: tuple[Transition, ...] = (
    # created
    Transition(None, S.PENDING, By.USER,
               "created: through the API or the command line, or a research session starts a child"),
    Transition(None, S.RUNNING, By.WORKER,
               "adopted: its worker process reports an operation the database does not know (never over the API)"),
    # waiting for a worker
    Transition(S.PENDING, S.PENDING, By.CONTROL_LOOP,
               "re-enqueued: no worker claimed it for REQUEUE_AFTER_SECONDS"),
    Transition(S.PENDING, S.RUNNING, By.WORKER,
               "claimed: a worker starts executing it"),
    Transition(S.PENDING, S.CANCELLED, By.USER,
               "cancelled before it ran"),
    Transition(S.RESUMING, S.RESUMING, By.CONTROL_LOOP,
               "re-enqueued: no worker claimed the resume for REQUEUE_AFTER_SECONDS"),
    Transition(S.RESUMING, S.RUNNING, By.WORKER,
               "claimed: a worker continues it from its checkpoint"),
    Transition(S.RESUMING, S.CANCELLED, By.USER,
               "cancelled before the resume ran; or the resume could not be enqueued and its status is put back"),
    Transition(S.RESUMING, S.FAILED, By.USER,
               "the resume could not be enqueued: its status is put back"),
    # running
    Transition(S.RUNNING, S.RUNNING, By.USER,
               "cancel requested: its worker saves a cancellation checkpoint and acknowledges",
               only_if=NOT_YET_REQUESTED),
    Transition(S.RUNNING, S.COMPLETED, By.WORKER,
               "completed (its checkpoint deleted)"),
    Transition(S.RUNNING, S.CANCELLED, By.WORKER,
               "cancel acknowledged (cancellation checkpoint), or a graceful shutdown (shutdown checkpoint)"),
    Transition(S.RUNNING, S.FAILED, By.WORKER,
               "failed with an error (failure checkpoint where there is state)"),
    Transition(S.RUNNING, S.FAILED, By.CONTROL_LOOP,
               "a research session when the control loop restarts (startup reconciliation): it died with the "
               "previous one"),
    Transition(S.RUNNING, S.PENDING_RECONCILIATION, By.CONTROL_LOOP,
               "no heartbeat for WORKER_STALE_SECONDS (orphan sweep), or the control loop restarted (startup "
               "reconciliation)"),
    # its worker silent
    Transition(S.PENDING_RECONCILIATION, S.RUNNING, By.WORKER,
               "its worker heart-beats or registers again"),
    Transition(S.PENDING_RECONCILIATION, S.COMPLETED, By.WORKER,
               "its worker reports the outcome"),
    Transition(S.PENDING_RECONCILIATION, S.CANCELLED, By.WORKER,
               "its worker reports the outcome"),
    Transition(S.PENDING_RECONCILIATION, S.FAILED, By.WORKER,
               "its worker reports the outcome"),
    Transition(S.PENDING_RECONCILIATION, S.FAILED, By.CONTROL_LOOP,
               "still silent after ORPHAN_TIMEOUT_SECONDS: presumed orphaned (its checkpoint kept)"),
    Transition(S.PENDING_RECONCILIATION, S.CANCELLED, By.USER,
               "cancelled while its worker was unreachable"),
    # ended (COMPLETED is final)
    Transition(S.FAILED, S.RUNNING, By.WORKER,
               "its own worker heart-beats or registers again", only_if=PRESUMED_ORPHAN),
    Transition(S.FAILED, S.COMPLETED, By.WORKER,
               "its worker reports the outcome", only_if=PRESUMED_ORPHAN),
    Transition(S.FAILED, S.CANCELLED, By.WORKER,
               "its worker reports the outcome", only_if=PRESUMED_ORPHAN),
    Transition(S.FAILED, S.FAILED, By.WORKER,
               "its worker reports the outcome", only_if=PRESUMED_ORPHAN),
    Transition(S.FAILED, S.RESUMING, By.USER,
               "resumed from its checkpoint"),
    Transition(S.CANCELLED, S.RESUMING, By.USER,
               "resumed from its checkpoint"),
    # the restart policy (docs/self-healing.md): an automatic resume planned when the run ended
    Transition(S.FAILED, S.RESUMING, By.CONTROL_LOOP,
               "resumed automatically from its checkpoint: its worker was lost, or a transient error",
               only_if=RESTART_PLANNED),
    Transition(S.CANCELLED, S.RESUMING, By.CONTROL_LOOP,
               "resumed automatically from its checkpoint after a graceful shutdown, once a worker is available",
               only_if=RESTART_PLANNED),
    Transition(S.FAILED, S.PENDING, By.CONTROL_LOOP,
               "restarted automatically from the beginning: no checkpoint, and its type allows it",
               only_if=RESTART_PLANNED),
    Transition(S.CANCELLED, S.PENDING, By.CONTROL_LOOP,
               "restarted automatically from the beginning after a graceful shutdown that saved no checkpoint",
               only_if=RESTART_PLANNED),
    Transition(S.FAILED, S.FAILED, By.CONTROL_LOOP,
               "automatic resume given up: a crash loop (no progress between restarts), or no usable checkpoint",
               only_if=RESTART_PLANNED),
    Transition(S.CANCELLED, S.CANCELLED, By.CONTROL_LOOP,
               "automatic resume after a shutdown given up: no usable checkpoint", only_if=RESTART_PLANNED),
    Transition(S.FAILED, S.CANCELLED, By.USER,
               "cancelled while an automatic resume was planned: it is called off", only_if=RESTART_PLANNED),
    Transition(S.CANCELLED, S.CANCELLED, By.USER,
               "cancelled while an automatic resume was planned: it is called off", only_if=RESTART_PLANNED),
)

_TABLE: dict[tuple[str | None, str, By], Transition] = {
    (row.from_status, row.to_status, row.by): row for row in TRANSITIONS
}


class TransitionNotAllowed(ValueError):
    def __init__(self, from_status: str | None, to_status: str, actor: str) -> None:
        super().__init__(
            f"{from_status or '(new)'} -> {to_status} by {actor_kind(actor).value} ({actor}) is not in the transition "
            "table (operations/transitions.py)"
        )


def allowed(from_status: str | None, to_status: str, actor: str) -> Transition:
    """The table's row for this change by this actor; TransitionNotAllowed if there is none."""
    row = _TABLE.get((from_status, to_status, actor_kind(actor)))
    if row is None:
        raise TransitionNotAllowed(from_status, to_status, actor)
    return row


def moving(from_statuses: Iterable[str], to_status: str, actor: str) -> Q:
    """The rows this change may move: in one of `from_statuses`, each with its row's guard. Raises
    TransitionNotAllowed (before anything is written) if the table lacks one of them."""
    from_statuses = list(from_statuses)
    if not from_statuses:
        raise ValueError(f"a transition to {to_status} needs a status to move from")
    return _in_statuses({status: allowed(status, to_status, actor).only_if for status in from_statuses})


def staying(statuses: Iterable[str], actor: str) -> Q:
    """The rows a change that leaves each in its own status may move (a re-enqueue): in one of `statuses`, each
    with its row's guard for the change to itself. Raises TransitionNotAllowed if the table lacks one of them."""
    statuses = list(statuses)
    if not statuses:
        raise ValueError("a change that keeps the status needs a status to keep")
    return _in_statuses({status: allowed(status, status, actor).only_if for status in statuses})


def _in_statuses(guards: dict[str, Guard | None]) -> Q:
    # The statuses without a guard in one IN: one condition for PostgreSQL's planner to estimate, where an OR of
    # equalities beside the caller's own conditions made it misjudge how many rows a set-based UPDATE reads.
    plain = [status for status, guard in guards.items() if guard is None]
    conditions = [Q(status__in=plain)] if plain else []
    conditions += [Q(status=status) & guard.condition for status, guard in guards.items() if guard is not None]
    return reduce(operator.or_, conditions)
