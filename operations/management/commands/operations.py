"""`manage.py operations list|status|cancel`: thin callers of the selectors and services."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from operations import selectors
from operations.api.serializers import OperationDetailSerializer, OperationSerializer
from operations.exceptions import ServiceError
from operations.ids import InvalidIdentifier, parse_operation_id
from operations.models import TERMINAL_STATUSES, OperationStatus, OperationType
from operations.services.lifecycle import CancelOutcome, operation_cancel

CLI_ACTOR = "cli"


def operation_id_argument(value: str) -> str:
    try:
        parse_operation_id(value)
    except InvalidIdentifier as exc:
        raise CommandError(str(exc)) from None
    return value


class Command(BaseCommand):
    help = "List, inspect and cancel operations."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,status,cancel}")

        listing = actions.add_parser("list", help="List operations, newest first.")
        listing.add_argument("--status", choices=OperationStatus.values)
        listing.add_argument("--type", dest="operation_type", choices=OperationType.values)
        listing.add_argument("--limit", type=int, default=50, help="At most this many rows (default 50).")
        listing.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        status = actions.add_parser("status", help="Show one operation and its recent events.")
        status.add_argument("operation_id")
        status.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        cancel = actions.add_parser("cancel", help="Cancel an operation.")
        cancel.add_argument("operation_id")
        cancel.add_argument("--follow", action="store_true", help="Wait until the operation has stopped.")
        cancel.add_argument("--json", action="store_true", help="Print the API's JSON body.")

    def handle(self, *args, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        except DatabaseError as exc:
            raise CommandError(f"The database cannot be reached or is not migrated: {exc}".strip()) from None

    # --- list
    def handle_list(self, *, status: str | None, operation_type: str | None, limit: int, json: bool, **_: Any) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        operations = selectors.operation_list(status=status, operation_type=operation_type)
        total = operations.count()
        rows = list(operations[:limit])
        if json:
            self.write_json({"count": total, "results": OperationSerializer(rows, many=True).data})
            return
        header = f"{'OPERATION':<48} {'TYPE':<15} {'STATUS':<23} {'PROGRESS':>8}  WORKER"
        self.stdout.write(header)
        for operation in rows:
            self.stdout.write(
                f"{operation.operation_id:<48} {operation.operation_type:<15} {operation.status:<23} "
                f"{operation.progress_percent:>7.1f}%  {operation.worker_id or '-'}"
            )
        shown = f" (showing {len(rows)})" if len(rows) < total else ""
        self.stdout.write(f"Total: {total} operations{shown}")

    # --- status
    def handle_status(self, *, operation_id: str, json: bool, **_: Any) -> None:
        operation = selectors.operation_get(operation_id=operation_id_argument(operation_id))
        body = OperationDetailSerializer(operation).data
        if json:
            self.write_json(body)
            return
        progress = body["progress"]
        total = progress["total"] if progress["total"] is not None else "?"
        lines = [
            f"Operation:  {operation.operation_id}",
            f"Type:       {operation.operation_type}",
            f"Status:     {operation.status}",
            f"Progress:   {operation.progress_percent:.1f}% ({progress['current']}/{total} {progress['unit']})"
            + (f" - {operation.progress_message}" if operation.progress_message else ""),
            f"Worker:     {operation.worker_id or '-'} (attempt {operation.attempt})",
            f"Created:    {body['created_at']}",
            f"Started:    {body['started_at'] or '-'}",
            f"Completed:  {body['completed_at'] or '-'}",
            f"Heartbeat:  {body['last_heartbeat_at'] or '-'}",
        ]
        if operation.cancel_requested_at:
            lines.append(f"Cancel requested: {body['cancel_requested_at']}")
        if operation.error_message:
            lines.append(f"Error:      {operation.error_message}")
        lines.append("Events:")
        for event in body["recent_events"][:10]:
            lines.append(
                f"  {event['at']}  {event['from_status'] or '-':>22} -> {event['to_status']:<22} "
                f"{event['reason']} ({event['actor']})"
            )
        self.stdout.write("\n".join(lines))

    # --- cancel
    def handle_cancel(self, *, operation_id: str, follow: bool, json: bool, **_: Any) -> None:
        operation_id = operation_id_argument(operation_id)
        outcome = operation_cancel(operation_id=operation_id, actor=CLI_ACTOR)
        if not json:
            self.stdout.write(
                {
                    CancelOutcome.CANCELLED: f"Operation {operation_id} cancelled.",
                    CancelOutcome.REQUESTED: f"Cancel requested for {operation_id}; its worker will checkpoint and stop.",
                    CancelOutcome.ALREADY_REQUESTED: f"Cancel was already requested for {operation_id}.",
                }[outcome]
            )
        if follow and outcome is not CancelOutcome.CANCELLED:
            self.wait_until_stopped(operation_id, quiet=json)
        if json:
            self.write_json(OperationDetailSerializer(selectors.operation_get(operation_id=operation_id)).data)

    def wait_until_stopped(self, operation_id: str, *, quiet: bool, poll_seconds: float = 0.5) -> None:
        last = None
        while True:
            operation = selectors.operation_get(operation_id=operation_id)
            if operation.status != last and not quiet:
                self.stdout.write(f"{operation_id}: {operation.status}")
                last = operation.status
            if operation.status in TERMINAL_STATUSES:
                return
            time.sleep(poll_seconds)

    def write_json(self, body: Any) -> None:
        self.stdout.write(json.dumps(body, indent=2, default=str))
