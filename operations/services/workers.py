"""Worker registration and heartbeats: the rules below (docs/restarts-and-crashes.md), each idempotent.

A worker registers when it starts, whenever its row is missing or marked
UNAVAILABLE, and after it regains the database. A heartbeat applies the same
"current operation" rule as a registration, so a worker presumed dead that
heart-beats again is reconciled by the heartbeat itself.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection
from django.db.models import Case, F, Q, Value, When

from operations.clock import db_now
from operations.exceptions import WorkerNotFound
from operations.ids import parse_operation_id, parse_worker_id
from operations.models import (
    Operation,
    OperationStatus,
    Worker,
    WorkerCredential,
    WorkerStatus,
    WorkerType,
    unless_stopping,
)
from operations.restarts import POLICY_FIELDS, EndCause, planned
from operations.services.credentials import LAST_USED_PRECISION, key_digest
from operations.services.lifecycle import operation_finish
from operations.transitions import worker_actor
from operations.updates import fetch_prepared

logger = logging.getLogger(__name__)

S = OperationStatus


class Action(str, enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class Progress:
    current: int | None = None
    total: int | None = None
    unit: str | None = None
    percent: float | None = None
    message: str | None = None

    def as_fields(self) -> dict[str, Any]:
        fields = {
            "progress_current": self.current,
            "progress_total": self.total,
            "progress_unit": self.unit,
            "progress_percent": self.percent,
            "progress_message": self.message,
        }
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True)
class CurrentOperation:
    operation_id: str
    attempt: int | None = None  # the run the worker claimed; None from a client that does not track it
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompletedReport:
    operation_id: str
    status: str
    attempt: int | None = None
    # The worker process that ran it, when it is not the one reporting: an outcome left in its
    # machine's outbox by a process that ended before the database came back (in-process only).
    worker_id: str | None = None
    result: Any = None
    error_message: str = ""
    completed_at: datetime | None = None
    cause: str = ""  # why a FAILED or CANCELLED run ended (REPORTED_CAUSES); the restart policy reads it


# The causes a worker may report for its own run's end (a lost worker is the control plane's finding).
REPORTED_CAUSES = (EndCause.SHUTDOWN, EndCause.TRANSIENT_ERROR, EndCause.ERROR, EndCause.CANCELLED)


@dataclass(frozen=True)
class Instruction:
    """What the worker is told about its current operation."""

    operation_id: str
    action: Action
    status: str | None
    attempt: int | None = None
    cancel_requested_at: datetime | None = None
    reason: str = ""

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None


@dataclass(frozen=True)
class WorkerReply:
    worker: Worker
    instruction: Instruction | None
    completed: dict[str, bool] = field(default_factory=dict)  # operation id → applied now

    @property
    def action(self) -> Action:
        return self.instruction.action if self.instruction else Action.CONTINUE


def worker_register(
    *,
    worker_id: str,
    worker_type: str = WorkerType.QCLUSTER,
    capabilities: dict[str, Any] | None = None,
    current_operation: CurrentOperation | None = None,
    completed_operations: list[CompletedReport] | tuple[CompletedReport, ...] = (),
    principal: str = "",
    adopt: bool = True,
) -> WorkerReply:
    """Register (or re-register) a worker.

    1. Upsert the worker row (host and pid come from the worker id).
    2. Apply each completed report (rule 1), fenced on this worker and its run.
    3. Reconcile the current operation (rule 2) and say continue or stop.

    `principal` (who authenticated an API caller) goes into the events; `adopt` False refuses to record an
    operation the database does not know (an API caller cannot prove its worker started that run).
    """
    host, _cluster, pid = parse_worker_id(worker_id)
    now = db_now()
    Worker.objects.update_or_create(
        worker_id=worker_id,
        defaults={
            "worker_type": worker_type,
            "host": host,
            "pid": pid,
            "capabilities": capabilities or {},  # its status: below (a STOPPING one stays so)
            "current_operation": None,
            "registered_at": now,
            "last_seen_at": now,
        },
    )
    completed = worker_report_outcomes(completed_operations, reporter=worker_id, principal=principal)
    instruction = (
        _apply_current(worker_id, current_operation, None, now, principal=principal, adopt=adopt)
        if current_operation else None
    )
    worker = _record_worker_state(worker_id, instruction, now)
    return WorkerReply(worker=worker, instruction=instruction, completed=completed)


def worker_heartbeat(
    *,
    worker_id: str,
    current_operation: CurrentOperation | None = None,
    progress: Progress | None = None,
    principal: str = "",
    adopt: bool = True,
) -> WorkerReply:
    """Refresh a worker's liveness and its operation's heartbeat and progress.

    A heartbeat from a worker whose row is gone (deleted by hand) recreates it;
    one marked UNAVAILABLE becomes available again, and its operation, if the
    sweep had moved it to PENDING_RECONCILIATION or presumed it orphaned, is
    RUNNING again (the live worker wins). `principal` and `adopt`: as for worker_register.
    """
    if current_operation is not None and current_operation.attempt is not None:
        usual = _heartbeat_running(worker_id, current_operation, progress)
        if usual is not None:
            return usual
    host, _cluster, pid = parse_worker_id(worker_id)
    now = db_now()
    Worker.objects.get_or_create(
        worker_id=worker_id, defaults={"host": host, "pid": pid, "registered_at": now, "last_seen_at": now}
    )
    instruction = (
        _apply_current(worker_id, current_operation, progress, now, principal=principal, adopt=adopt)
        if current_operation else None
    )
    worker = _record_worker_state(worker_id, instruction, now)
    return WorkerReply(worker=worker, instruction=instruction)


# The usual heartbeat in one statement (PostgreSQL's data-modifying WITH): the operation's heartbeat and progress
# if it is RUNNING on this worker and run, then the worker seen and busy with it (STOPPING stays STOPPING), both
# rows returned. Nothing it writes is in an index, so PostgreSQL updates both rows in place (HOT). Over HTTP the
# worker credential is checked by the same statement ({credential}): its key's digest, live, for the worker id's
# host, its use written at most once a minute; the operation is touched only if the credential matched.
_RUNNING_BEAT = """
WITH {credential}beat AS (
    UPDATE {operation} SET {changes}
    WHERE operation_id = %s AND status = %s AND worker_id = %s AND attempt = %s{authenticated}
    RETURNING operation_id, status, attempt, cancel_requested_at
), seen AS (
    UPDATE {worker} SET last_seen_at = statement_timestamp(),
        status = CASE WHEN status = %s THEN status ELSE %s END, current_operation_id = %s
    WHERE worker_id = %s AND EXISTS (SELECT FROM beat)
    RETURNING {worker_columns}
)
SELECT {selected}beat.status, beat.attempt, beat.cancel_requested_at, seen.* FROM {source}
"""
_CREDENTIAL_CHECK = """credential AS (
    SELECT id FROM {table} WHERE digest = %s AND revoked_at IS NULL AND host = %s
), used AS (
    UPDATE {table} SET last_used_at = statement_timestamp()
    WHERE id = (SELECT id FROM credential) AND (last_used_at IS NULL OR last_used_at < statement_timestamp() - %s)
), """
_WORKER_FIELDS = ("worker_id", "worker_type", "host", "pid", "capabilities", "status", "current_operation",
                  "registered_at", "last_seen_at")


class CredentialRefused(Exception):
    """The worker credential of a heartbeat is unknown, revoked or of another host (the full path says which)."""


def _heartbeat_running(worker_id: str, report: CurrentOperation, progress: Progress | None,
                       credential: tuple[str, str] | None = None) -> WorkerReply | None:
    """The usual heartbeat (rule 2's "RUNNING on this worker and run") in one statement; None for anything else
    (or on a database other than PostgreSQL), which the full path answers. A heartbeat that finds its operation
    moved writes nothing here: the statement's condition is the row's own, checked as it is taken.

    `credential` (its key's digest, the worker id's host): the same statement checks it first, and raises
    CredentialRefused if it does not hold."""
    if connection.vendor != "postgresql":
        return None
    quote = connection.ops.quote_name
    fields = {"last_heartbeat_at": None, **(progress.as_fields() if progress else {})}
    changes = ", ".join(f"{quote(name)} = statement_timestamp()" if name == "last_heartbeat_at" else
                        f"{quote(name)} = %s" for name in fields)
    columns = [Worker._meta.get_field(name).column for name in _WORKER_FIELDS]
    checked = credential is not None
    sql = _RUNNING_BEAT.format(
        operation=quote(Operation._meta.db_table), worker=quote(Worker._meta.db_table), changes=changes,
        worker_columns=", ".join(quote(column) for column in columns),
        credential=_CREDENTIAL_CHECK.format(table=quote(WorkerCredential._meta.db_table)) if checked else "",
        authenticated=" AND EXISTS (SELECT FROM credential)" if checked else "",
        selected="credential.id, " if checked else "",
        source="credential LEFT JOIN (beat CROSS JOIN seen) ON true" if checked else "beat CROSS JOIN seen",
    )
    params = [*(value for name, value in fields.items() if name != "last_heartbeat_at"),
              report.operation_id, S.RUNNING, worker_id, report.attempt,
              WorkerStatus.STOPPING, WorkerStatus.BUSY, report.operation_id, worker_id]
    if checked:
        params = [*credential, LAST_USED_PRECISION, *params]
    row = fetch_prepared(sql, params)
    if checked:
        if row is None:
            raise CredentialRefused
        row = row[1:]
    if row is None or row[0] is None:
        return None
    status, attempt, cancel_requested_at, *seen = row
    values = dict(zip(columns, seen))
    if isinstance(values["capabilities"], str):  # jsonb through a plain cursor
        values["capabilities"] = json.loads(values["capabilities"])
    worker = Worker(**values)
    worker._state.adding, worker._state.db = False, connection.alias
    instruction = Instruction(operation_id=report.operation_id, action=Action.CONTINUE, status=status,
                              attempt=attempt, cancel_requested_at=cancel_requested_at, reason="Running on this worker")
    return WorkerReply(worker=worker, instruction=instruction)


def worker_heartbeat_running(*, key: str, worker_id: str, current_operation: CurrentOperation,
                             progress: Progress | None = None) -> WorkerReply | None:
    """The usual heartbeat over HTTP, the worker credential `key` checked by its one statement: the reply, or
    None when the operation is not RUNNING on this worker and run (worker_heartbeat answers that, after the
    full check of the credential). Raises CredentialRefused (nothing written) if the key is not a live
    credential of the worker id's host."""
    host, _cluster, _pid = parse_worker_id(worker_id)
    return _heartbeat_running(worker_id, current_operation, progress, credential=(key_digest(key), host))


def worker_report_outcomes(
    reports: list[CompletedReport] | tuple[CompletedReport, ...], *, reporter: str | None = None, principal: str = ""
) -> dict[str, bool]:
    """Rule 1 for each report, fenced on the worker process that ran it; operation id → applied now.

    A registration reports its worker's own outcomes; a cluster starting on a
    machine reports those its earlier processes left in the outbox.
    """
    applied = {}
    for report in reports:
        runner = report.worker_id or reporter
        if runner is None:
            raise ValueError(f"the report for {report.operation_id} names no worker")
        applied[report.operation_id] = _apply_completed(runner, report, principal)
    return applied


def cluster_beat(
    *, cluster_id: str, live: Iterable[str], gone: Iterable[str] = (), stopping: bool = False,
    capabilities: dict[str, Any] | None = None,
) -> list[str]:
    """A cluster's heartbeat for its worker processes, busy or idle (runtime/fleet.py).

    1. Each live worker process is registered if it is not yet (IDLE) and seen now; one marked UNAVAILABLE or
       STOPPED is alive after all (IDLE, or BUSY if it has an operation); `stopping`: every one is STOPPING
       (its cluster is shutting down and takes no new work).
    2. Each process that exited is STOPPED; an operation it was running can never finish: FAILED at once as
       a lost worker (the restart policy plans its resume), rather than after the sweep's timeouts.
    Returns the operations failed in 2. `cluster_id` (the cluster's main process, <host>:<cluster>:<pid>) is
    the actor of their events.
    """
    now = db_now()
    live, gone = sorted(set(live)), sorted(set(gone))
    if live:
        Worker.objects.bulk_create(
            [Worker(worker_id=worker_id, worker_type=WorkerType.QCLUSTER, host=parse_worker_id(worker_id)[0],
                    pid=parse_worker_id(worker_id)[2], capabilities=capabilities or {}, status=WorkerStatus.IDLE,
                    registered_at=now, last_seen_at=now) for worker_id in live],
            ignore_conflicts=True,
        )
        revived = Q(status__in=[WorkerStatus.UNAVAILABLE, WorkerStatus.STOPPED])
        Worker.objects.filter(pk__in=live).update(
            last_seen_at=now,
            status=Value(WorkerStatus.STOPPING) if stopping else Case(
                When(revived & Q(current_operation__isnull=True), then=Value(WorkerStatus.IDLE)),
                When(revived, then=Value(WorkerStatus.BUSY)),
                default=F("status"),
            ),
        )
    if not gone:
        return []
    Worker.objects.filter(pk__in=gone).update(status=WorkerStatus.STOPPED, current_operation=None)
    return _fail_runs_of_exited(gone, cluster_id, now)


def cluster_stopped(worker_ids: Iterable[str]) -> int:
    """A cluster stopped cleanly: its worker processes are STOPPED."""
    return Worker.objects.filter(pk__in=list(worker_ids)).update(status=WorkerStatus.STOPPED, current_operation=None)


def _fail_runs_of_exited(worker_ids: list[str], cluster_id: str, now: datetime) -> list[str]:
    failed = []
    runs = Operation.objects.filter(
        worker_id__in=worker_ids, status__in=[S.RUNNING, S.PENDING_RECONCILIATION], is_backend_local=False
    ).values("pk", "status", "version", "worker_id", *POLICY_FIELDS)
    for run in runs:
        operation_id, worker_id = run.pop("pk"), run.pop("worker_id")
        status, version = run.pop("status"), run.pop("version")
        message = f"Worker {worker_id} exited while running it (killed?)"
        if Operation.objects.transition(
            operation_id, from_statuses=[status], to_status=S.FAILED, actor=worker_actor(cluster_id),
            reason=message, version=version, error_message=message, completed_at=now, presumed_orphan=True,
            orphan_clock_from=None, **planned(EndCause.WORKER_LOST, now=now, **run),
        ):
            failed.append(operation_id)
            logger.warning("%s: %s", operation_id, message)
    return failed


def worker_get(worker_id: str) -> Worker:
    try:
        return Worker.objects.select_related("current_operation").get(pk=worker_id)
    except Worker.DoesNotExist:
        raise WorkerNotFound(worker_id) from None


def _record_worker_state(worker_id: str, instruction: Instruction | None, now: datetime) -> Worker:
    busy = instruction is not None and instruction.action is Action.CONTINUE
    Worker.objects.filter(pk=worker_id).update(
        status=unless_stopping(WorkerStatus.BUSY if busy else WorkerStatus.IDLE),
        current_operation_id=instruction.operation_id if busy else None,
        last_seen_at=now,
    )
    return Worker.objects.get(pk=worker_id)


def _apply_completed(worker_id: str, report: CompletedReport, principal: str) -> bool:
    """Rule 1: record an outcome the worker could not report at the time; only for the run it names."""
    if report.attempt is None:
        logger.warning("Completed report for %s from %s names no run (attempt): refused", report.operation_id,
                       worker_id)
        return False
    applied = operation_finish(
        operation_id=report.operation_id,
        worker_id=worker_id,
        attempt=report.attempt,
        status=report.status,
        result=report.result,
        error_message=report.error_message,
        reason=f"Reported {report.status.lower()} by its worker after reconnecting",
        completed_at=report.completed_at,
        principal=principal,
        cause=report.cause,
    )
    if not applied:
        logger.info("Completed report for %s from %s changed nothing", report.operation_id, worker_id)
    return applied


def _apply_current(
    worker_id: str, report: CurrentOperation, progress: Progress | None, now: datetime, *, principal: str,
    adopt: bool,
) -> Instruction:
    """Rule 2: reconcile the operation the worker says it is executing (the run it names: its attempt).

    - unknown → create it, RUNNING on this worker (unless `adopt` is False: then stop);
    - COMPLETED or CANCELLED → stop (the worker abandons without writing);
    - PENDING_RECONCILIATION, or FAILED presumed orphaned, with this worker
      and run recorded → RUNNING again (the live worker wins);
    - RUNNING on this worker and run → refresh its heartbeat (and progress);
    - anything else (RESUMING, RUNNING elsewhere, a later run) → stop.
    Each branch is a conditional write; if the row moved under us, look again.
    """
    for _ in range(5):
        operation = Operation.objects.filter(pk=report.operation_id).first()
        if operation is None:
            if not adopt:
                return Instruction(
                    operation_id=report.operation_id, action=Action.STOP, status=None,
                    reason="Unknown operation: not recorded (only a worker process of this deployment may adopt "
                           "one)",
                )
            created = _create_reported(worker_id, report, now, principal)
            if created is not None:
                return created
            continue
        mine = operation.worker_id == worker_id and report.attempt == operation.attempt
        fence = {"fence_worker_id": worker_id, "fence_attempt": operation.attempt}
        if operation.status == S.RUNNING and mine:
            fields = {"last_heartbeat_at": now, **(progress.as_fields() if progress else {})}
            if Operation.objects.filter(
                pk=operation.pk, status=S.RUNNING, worker_id=worker_id, attempt=operation.attempt
            ).update(**fields):
                return _instruction(operation.pk, Action.CONTINUE, "Running on this worker")
            continue
        if mine and (
            operation.status == S.PENDING_RECONCILIATION
            or (operation.status == S.FAILED and operation.presumed_orphan)
        ):
            if Operation.objects.transition(
                operation.pk,
                from_statuses=[operation.status],
                to_status=S.RUNNING,
                actor=worker_actor(worker_id),
                reason="Its worker is alive again",
                version=operation.version,
                principal=principal,
                **fence,
                last_heartbeat_at=now,
                orphan_clock_from=None,
                presumed_orphan=False,
                error_message="",
                completed_at=None,
                **(progress.as_fields() if progress else {}),
            ):
                return _instruction(operation.pk, Action.CONTINUE, "Reconciled: running on this worker again")
            continue
        if operation.status == S.RUNNING and operation.worker_id != worker_id:
            reason = "It is running on another worker"
        elif operation.status == S.RUNNING:
            reason = f"It is running as a later run (attempt {operation.attempt})"
        elif operation.status == S.RESUMING:
            reason = "It is being resumed elsewhere"
        else:
            reason = f"It is {operation.status}"
        return Instruction(
            operation_id=operation.pk, action=Action.STOP, status=operation.status, attempt=operation.attempt,
            reason=reason,
        )
    # Five lost races in a row: say stop, the safe answer; the worker asks again.
    return Instruction(operation_id=report.operation_id, action=Action.STOP, status=None, reason="Contended")


def _instruction(operation_id: str, action: Action, reason: str) -> Instruction:
    status, attempt, cancel_requested_at = Operation.objects.values_list(
        "status", "attempt", "cancel_requested_at"
    ).get(pk=operation_id)
    return Instruction(
        operation_id=operation_id,
        action=action,
        status=status,
        attempt=attempt,
        cancel_requested_at=cancel_requested_at,
        reason=reason,
    )


def _create_reported(worker_id: str, report: CurrentOperation, now: datetime, principal: str) -> Instruction | None:
    """An operation the database does not know (lost with a restored backup, say): adopt it."""
    operation_type = parse_operation_id(report.operation_id)
    try:
        Operation.objects.enter(
            S.RUNNING,
            actor=worker_actor(worker_id),
            reason="Unknown operation reported by its worker: recorded as running",
            principal=principal,
            operation_id=report.operation_id,
            operation_type=operation_type,
            worker_id=worker_id,
            attempt=report.attempt or 1,
            params=report.params,
            created_at=now,
            started_at=now,
            last_heartbeat_at=now,
        )
    except IntegrityError:
        return None  # created concurrently by a replay: look again
    return _instruction(report.operation_id, Action.CONTINUE, "Recorded as running on this worker")
