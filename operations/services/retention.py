"""Retention: operations that ended long ago are deleted with their events and their files, in batches.

A deployment that runs for years accumulates operations and their history without end; nothing else ever removes
them. The purge takes ended operations (COMPLETED, FAILED or CANCELLED, with no automatic resume planned) whose
`completed_at` is older than a number of days, a batch at a time: first the files the layers above keep for
them (each registers how, `registry.register_artifact_remover`: checkpoints, a training's model, a backtest's
equity curve and spools), then, in one short transaction per batch, their events and their rows. No lock is
held longer than a batch's DELETE.

What is never purged, whatever its age:
- a training whose model a backtest still needs (one not COMPLETED names it as its model: it may be resumed);
- a research session's children apart from it: they go with their session (the session's page lists them, and a
  resumed session re-attaches to them), and a session goes only with all its children ended;
- research sessions unless asked for (`agent_research` among the types): a session's assessment, the
  designer's memory of what was tried, goes with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from operations import registry
from operations.clock import db_now
from operations.models import TERMINAL_STATUSES, Operation, OperationEvent, OperationStatus, OperationType

logger = logging.getLogger(__name__)

BATCH = 500  # operations a batch deletes: one short transaction each
MAX_DAYS = 36_500  # a century: further back than any operation, and a cutoff that can still be computed
DEFAULT_TYPES = (OperationType.TRAINING, OperationType.BACKTESTING)


@dataclass
class PurgeReport:
    operations: list[str] = field(default_factory=list)  # deleted (with --dry-run: would be)
    events: int = 0
    kept_as_models: list[str] = field(default_factory=list)  # trainings a backtest not yet completed needs
    kept_with_sessions: list[str] = field(default_factory=list)  # sessions with a child not ended, and their children
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "operations": self.operations, "count": len(self.operations),
                "events": self.events, "kept_as_models": self.kept_as_models,
                "kept_with_sessions": self.kept_with_sessions}


def purge_candidates(*, older_than_days: float, statuses: Iterable[str] = TERMINAL_STATUSES,
                     operation_types: Iterable[str] = DEFAULT_TYPES):
    """Ended operations of these statuses and types completed more than `older_than_days` ago, oldest first."""
    statuses = [status for status in statuses if status in TERMINAL_STATUSES]
    cutoff = db_now() - timedelta(days=older_than_days)
    return (Operation.objects.filter(status__in=statuses, operation_type__in=list(operation_types),
                                     completed_at__lt=cutoff, restart_due_at__isnull=True, parent__isnull=True)
            .order_by("completed_at", "operation_id"))


def purge_by_setting() -> PurgeReport | None:
    """The control loop's daily purge: ended trainings and backtests older than OPERATIONS_RETENTION_DAYS (0: none)."""
    if not settings.OPERATIONS_RETENTION_DAYS:
        return None
    return operations_purge(older_than_days=settings.OPERATIONS_RETENTION_DAYS)


def operations_purge(*, older_than_days: float, statuses: Iterable[str] = TERMINAL_STATUSES,
                     operation_types: Iterable[str] = DEFAULT_TYPES, dry_run: bool = False,
                     batch: int = BATCH) -> PurgeReport:
    """Delete the candidates a batch at a time (see the module's docstring); return what went, and what was
    kept and why."""
    report = PurgeReport(dry_run=dry_run)
    candidates = purge_candidates(older_than_days=older_than_days, statuses=statuses,
                                  operation_types=operation_types)
    after = None  # (completed_at, operation_id) of the last candidate looked at: keyset pagination
    while True:
        page = candidates
        if after is not None:
            page = page.filter(Q(completed_at__gt=after[0]) | Q(completed_at=after[0], operation_id__gt=after[1]))
        rows = list(page.values_list("completed_at", "operation_id", "operation_type")[:batch])
        if not rows:
            break
        after = rows[-1][:2]
        doomed = _doomed(rows, report)
        if not doomed:
            continue
        report.events += OperationEvent.objects.filter(operation_id__in=doomed).count()
        report.operations += doomed
        if not dry_run:
            _delete(doomed)
    if report.operations and not dry_run:
        logger.info("Purged %d operation(s) and %d event(s)", len(report.operations), report.events)
    return report


def _doomed(rows: list[tuple], report: PurgeReport) -> list[str]:
    """The batch's operations and their children, less what must stay: a session with a child not ended (and its
    children), and trainings a backtest not completed still needs."""
    ids = [operation_id for _, operation_id, _ in rows]
    children: dict[str, list[tuple[str, str, str, bool]]] = {}
    for parent, child, kind, status, planned in (
            Operation.objects.filter(parent_id__in=ids)
            .values_list("parent_id", "operation_id", "operation_type", "status", "restart_due_at")):
        children.setdefault(parent, []).append((child, kind, status, planned is None))
    doomed, kinds = [], {}
    for _, operation_id, kind in rows:
        family = children.get(operation_id, [])
        if any(status not in TERMINAL_STATUSES or not ended for _, _, status, ended in family):
            report.kept_with_sessions += [operation_id, *(child for child, *_ in family)]
            continue
        doomed += [operation_id, *(child for child, *_ in family)]
        kinds.update({operation_id: kind, **{child: child_kind for child, child_kind, *_ in family}})
    trainings = [operation_id for operation_id in doomed if kinds[operation_id] == OperationType.TRAINING]
    if trainings:
        # A backtest names its model in `model` (in `strategy_params.model_operation_id` before API 2.0); one
        # that has not completed may still be resumed, and reads the model's files again.
        users = Operation.objects.exclude(status=OperationStatus.COMPLETED).exclude(pk__in=doomed).filter(
            Q(params__model__in=trainings) | Q(params__strategy_params__model_operation_id__in=trainings))
        needed = {value for pair in users.values_list("params__model", "params__strategy_params__model_operation_id")
                  for value in pair if value in trainings}
        report.kept_as_models += sorted(needed)
        doomed = [operation_id for operation_id in doomed if operation_id not in needed]
    return doomed


def _delete(operation_ids: list[str]) -> None:
    """Their files first (a row without files is harmless; files without a row would be orphans), then their events
    and rows in one transaction."""
    registry.remove_artifacts(operation_ids)
    with transaction.atomic():
        OperationEvent.objects.filter(operation_id__in=operation_ids).delete()
        Operation.objects.filter(pk__in=operation_ids).delete()
