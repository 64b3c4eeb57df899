"""Outcomes a worker could not report, kept on its machine until the database takes them (docs/restarts-and-crashes.md).

When an operation ends while the database is unreachable, its worker writes
the outcome here, one JSON file per run, atomically (a temporary file, fsync,
rename). The next registration from this machine reports every entry, each
fenced on the worker process and run that produced it, and removes it: the
worker itself once the database is back, or any worker process or cluster
started later on this machine if that worker died first. Reporting twice
changes nothing (the operation is terminal after the first report).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.dateparse import parse_datetime

from operations.ids import is_operation_id, parse_worker_id
from operations.models import TERMINAL_STATUSES
from operations.services.workers import REPORTED_CAUSES, CompletedReport

logger = logging.getLogger(__name__)

FIELDS = ("operation_id", "worker_id", "attempt", "status", "result", "error_message", "completed_at", "cause")


@dataclass(frozen=True)
class OutboxEntry:
    path: Path
    report: CompletedReport


def outbox_dir() -> Path:
    return Path(settings.WORKER_STATE_DIR) / "outbox"


def outbox_write(report: CompletedReport) -> Path:
    """Keep an outcome on disk, durably, until it is reported; return its file."""
    folder = outbox_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report.operation_id}.{report.attempt or 0}.json"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = {name: getattr(report, name) for name in FIELDS}
    with open(temporary, "w") as handle:
        json.dump(body, handle, cls=DjangoJSONEncoder)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(folder)
    logger.warning("Outcome %s of %s kept in the outbox until the database is back: %s",
                   report.status, report.operation_id, path)
    return path


def outbox_entries() -> list[OutboxEntry]:
    """Every outcome waiting to be reported; an unreadable file is logged and left for a person to look at."""
    folder = outbox_dir()
    entries = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            entries.append(OutboxEntry(path, _report(json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.error("Outbox file %s cannot be read, left in place: %s", path, exc)
    return entries


def outbox_waiting() -> bool:
    """Whether any outcome waits in the outbox (a look at the folder, no file read)."""
    folder = outbox_dir()
    return folder.exists() and any(folder.glob("*.json"))


def outbox_remove(entries: list[OutboxEntry]) -> None:
    for entry in entries:
        entry.path.unlink(missing_ok=True)
    if entries:
        _fsync_dir(entries[0].path.parent)


def _report(body: dict[str, Any]) -> CompletedReport:
    if body["status"] not in TERMINAL_STATUSES:
        raise ValueError(f"status {body['status']!r} is not terminal")
    if not is_operation_id(body["operation_id"]):
        raise ValueError(f"{body['operation_id']!r} is not an operation id")
    parse_worker_id(body["worker_id"])
    completed_at = body.get("completed_at")
    parsed: datetime | None = parse_datetime(completed_at) if completed_at else None
    if completed_at and parsed is None:
        raise ValueError(f"completed_at {completed_at!r} is not a date and time")
    return CompletedReport(
        operation_id=body["operation_id"],
        worker_id=body["worker_id"],
        attempt=body.get("attempt"),
        status=body["status"],
        result=body.get("result"),
        error_message=body.get("error_message") or "",
        completed_at=parsed,
        cause=body.get("cause") if body.get("cause") in REPORTED_CAUSES else "",
    )


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
