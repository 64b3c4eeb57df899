"""Reads of the operations core, shared by the API, the CLI and the admin."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.db import connection
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast


from operations.exceptions import OperationNotFound
from operations.models import (
    LIVE_WORKER_STATUSES,
    RESUMABLE_STATUSES,
    Operation,
    OperationStatus,
    Worker,
    WorkerType,
)


def operation_list(
    *,
    user=None,
    status: str | None = None,
    operation_type: str | None = None,
    resumable: bool | None = None,
) -> QuerySet[Operation]:
    """Operations newest first; a non-staff user sees only their own (None: the command line, all).

    `checkpoint` is the reverse relation the checkpoint store adds; resumable
    means CANCELLED or FAILED with a checkpoint.
    """
    operations = Operation.objects.select_related("owner", "checkpoint")
    if user is not None:
        operations = operations.visible_to(user)
    if status:
        operations = operations.filter(status=status)
    if operation_type:
        operations = operations.filter(operation_type=operation_type)
    if resumable is not None:
        condition = Q(status__in=RESUMABLE_STATUSES, checkpoint__isnull=False)
        operations = operations.filter(condition) if resumable else operations.exclude(condition)
    return operations.order_by("-created_at", "-operation_id")


def without_results(operations: QuerySet[Operation]) -> QuerySet[Operation]:
    """The operations without their results: a list never reads a backtest's trades or a training's history
    (megabytes each, which the database would decompress to read any part of them); each has its `summary`."""
    return operations.defer("result")


def result_parts(operation_id: str, keys: Iterable[str]) -> dict | None:
    """The named top-level keys of an operation's result (those it has, without nulls), for a page that shows a
    few of them: {} for a result that is not an object or has none of them, None while there is no result.

    PostgreSQL keeps a large result compressed out of line (TOAST) and decompresses the whole of it for every
    `result -> 'key'` of a query: 30 ms each for a backtest of 100,000 trades. The subquery decompresses it once
    (`|| '{}'` hands on the decompressed value, and OFFSET 0 keeps the planner from copying the expression into
    each reference); the keys are then taken from memory. Elsewhere (SQLite) the result is read whole.
    """
    keys = sorted(set(keys))
    if connection.vendor != "postgresql" or not keys:
        result = Operation.objects.filter(pk=operation_id).values_list("result", flat=True).first()
        if result is None:
            return None
        return {key: result[key] for key in keys if result.get(key) is not None} if isinstance(result, dict) else {}
    picked = ", ".join("%s::text, whole -> %s::text" for _ in keys)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT jsonb_typeof(whole), jsonb_build_object({picked}) FROM "
            f"(SELECT result || '{{}}'::jsonb AS whole FROM {Operation._meta.db_table} "
            "WHERE operation_id = %s OFFSET 0) AS one",
            [value for key in keys for value in (key, key)] + [operation_id],
        )
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    kind, parts = row
    # `|| '{}'` makes any other JSON value an array: only an object gives keys.
    if kind != "object":
        return {}
    parts = json.loads(parts) if isinstance(parts, str) else parts
    return {key: value for key, value in parts.items() if value is not None}


def raw_result(operation_id: str) -> str | None:
    """An operation's result as the database holds it, as JSON text (never parsed here: it may be megabytes)."""
    return (Operation.objects.filter(pk=operation_id, result__isnull=False)
            .annotate(text=Cast("result", output_field=TextField())).values_list("text", flat=True).first())


def operation_get(*, operation_id: str, user=None) -> Operation:
    """One operation; another user's is reported missing, exactly like a missing one."""
    operations = Operation.objects.select_related("owner", "checkpoint")
    if user is not None:
        operations = operations.visible_to(user)
    operation = operations.filter(pk=operation_id).first()
    if operation is None:
        raise OperationNotFound(operation_id)
    return operation


def operations_awaiting_reconciliation() -> int:
    return Operation.objects.filter(status=OperationStatus.PENDING_RECONCILIATION).count()


def resumable_count(operations: QuerySet[Operation]) -> int:
    return operations.filter(status__in=RESUMABLE_STATUSES, checkpoint__isnull=False).count()


def workers_available(*, since) -> bool:
    """Whether a worker of a cluster is alive (idle or busy, seen since `since`) to take work from the broker."""
    return Worker.objects.filter(
        worker_type=WorkerType.QCLUSTER, status__in=LIVE_WORKER_STATUSES, last_seen_at__gte=since
    ).exists()
