"""`manage.py operations list|status|cancel|resume`: thin callers of the core's selectors and services, and of
resume (which joins the checkpoint store and the core, hence this command's place in the runtime)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from checkpoints.models import position_text
from operations import selectors
from operations.api.serializers import OperationDetailSerializer, OperationSerializer
from operations.management.base import ActionCommand, operation_id_argument
from operations.exceptions import OperationNotCancellable
from operations.management.follow import follow as follow_operation
from operations.management.results import outcome_lines, resume_hint, result_lines
from operations.models import TERMINAL_STATUSES, OperationStatus, OperationType
from operations.services.lifecycle import CancelOutcome, operation_cancel
from operations.services.retention import DEFAULT_TYPES, MAX_DAYS, operations_purge
from runtime.api import ResumedFromSerializer
from runtime.resume import operation_resume

CLI_ACTOR = "cli"
# Wide enough for "cancellation bar_index 12345678" and "cancellation phase BACKTESTING".
CHECKPOINT_COLUMN = 32


def checkpoint_cell(operation) -> str:
    checkpoint = getattr(operation, "checkpoint", None)  # the checkpoint store's reverse relation
    if checkpoint is None:
        return "-"
    return f"{checkpoint.checkpoint_type} {checkpoint.position_text}".strip()[:CHECKPOINT_COLUMN]


class Command(ActionCommand):
    help = "List, inspect, cancel and resume operations."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,status,cancel,resume,purge}")

        listing = actions.add_parser("list", help="List operations, newest first.")
        listing.add_argument("--status", choices=OperationStatus.values, help="Only the operations in this status.")
        listing.add_argument("--type", dest="operation_type", choices=OperationType.values,
                             help="Only the operations of this type.")
        listing.add_argument("--resumable", action="store_true", help="Only CANCELLED or FAILED with a checkpoint.")
        listing.add_argument("--limit", type=int, default=50, help="At most this many rows (default 50).")
        listing.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        status = actions.add_parser("status", help="Show one operation and its recent events.")
        status.add_argument("operation_id", help="The operation to show (op_<type>_<YYYYMMDD>_<HHMMSS>_<8 hex>).")
        status.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        cancel = actions.add_parser("cancel", help="Cancel an operation.")
        cancel.add_argument("operation_id", help="The operation to cancel (op_<type>_<YYYYMMDD>_<HHMMSS>_<8 hex>).")
        cancel.add_argument("--follow", action="store_true", help="Wait until the operation has stopped.")
        cancel.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        resume = actions.add_parser("resume", help="Resume a CANCELLED or FAILED operation from its checkpoint.")
        resume.add_argument("operation_id", help="The operation to resume (op_<type>_<YYYYMMDD>_<HHMMSS>_<8 hex>).")
        resume.add_argument("--follow", action="store_true", help="Wait until the operation has ended.")
        resume.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        purge = actions.add_parser(
            "purge", help="Delete the operations that ended more than DAYS ago, with their events and files, in "
                          "batches (trainings a backtest still needs and sessions with a child not ended stay).")
        purge.add_argument("--older-than", dest="older_than", type=float, required=True, metavar="DAYS",
                           help="Only those completed, failed or cancelled more than DAYS ago (fractions allowed).")
        purge.add_argument("--status", dest="statuses", action="append", choices=[s.value for s in TERMINAL_STATUSES],
                           help="Only those that ended so; repeatable (default: all three).")
        purge.add_argument("--type", dest="types", action="append", choices=OperationType.values,
                           help="Only those of this type; repeatable (default: training and backtesting). "
                                "agent_research deletes the sessions' assessments too: the designer forgets them.")
        purge.add_argument("--dry-run", action="store_true", help="Only say what would be deleted.")
        purge.add_argument("--json", action="store_true", help="Print what was deleted and kept as JSON.")

    # --- list
    def handle_list(
        self, *, status: str | None, operation_type: str | None, resumable: bool, limit: int, json: bool, **_: Any
    ) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        operations = selectors.operation_list(
            status=status, operation_type=operation_type, resumable=True if resumable else None
        )
        total = operations.count()
        rows = list(selectors.without_results(operations)[:limit])
        if json:
            self.write_json({"count": total, "results": OperationSerializer(rows, many=True).data})
            return
        width = CHECKPOINT_COLUMN
        header = (f"{'OPERATION':<48} {'TYPE':<15} {'STATUS':<23} {'PROGRESS':>8}  {'CHECKPOINT':<{width}} "
                  f"{'RESTARTS':<9} WORKER")
        self.stdout.write(header)
        for operation in rows:
            restarts = f"{operation.restarts}/{operation.max_restarts}" + ("*" if operation.restart_due_at else "")
            self.stdout.write(
                f"{operation.operation_id:<48} {operation.operation_type:<15} {operation.status:<23} "
                f"{operation.progress_percent:>7.1f}%  {checkpoint_cell(operation):<{width}} {restarts:<9} "
                f"{operation.worker_id or '-'}"
            )
        shown = f", showing {len(rows)}" if len(rows) < total else ""
        self.stdout.write(
            f"Total: {total} operations ({selectors.resumable_count(operations)} resumable{shown})"
        )
        if any(operation.restart_due_at for operation in rows):
            self.stdout.write("*: an automatic resume is planned (operations status ID says when)")

    # --- status
    def handle_status(self, *, operation_id: str, json: bool, **_: Any) -> None:
        operation = selectors.operation_get(operation_id=operation_id_argument(operation_id))
        body = OperationDetailSerializer(operation).data
        if json:
            self.write_json(body)
            return
        progress = body["progress"]
        counted = (f" ({progress['current']:,}/{progress['total']:,} {progress['unit']})"
                   if progress["total"] is not None else "")
        lines = [
            f"Operation:  {operation.operation_id}",
            f"Type:       {operation.operation_type}",
            f"Status:     {operation.status}",
            f"Progress:   {operation.progress_percent:.1f}%{counted}"
            + (f" - {operation.progress_message}" if operation.progress_message else ""),
            f"Worker:     {operation.worker_id or '-'} (attempt {operation.attempt})",
            f"Created:    {body['created_at']}",
            f"Started:    {body['started_at'] or '-'}",
            f"Completed:  {body['completed_at'] or '-'}",
            f"Heartbeat:  {body['last_heartbeat_at'] or '-'}",
        ]
        if operation.cancel_requested_at:
            late = " (it completed before its worker acted on it)" if operation.status == OperationStatus.COMPLETED else ""
            lines.append(f"Cancel requested: {body['cancel_requested_at']}{late}")
        if operation.error_message:
            lines.append(f"Error:      {operation.error_message}")
        restart = body["restart"]
        lines.append(f"Restarts:   {restart['counter']}" + (f" - {restart['text']}" if restart["text"] else ""))
        checkpoint = body["checkpoint"]
        if checkpoint:
            summary = operation.checkpoint.position_text
            size = checkpoint["state_size_bytes"] + checkpoint["artifacts_size_bytes"]
            lines.append(
                f"Checkpoint: {checkpoint['checkpoint_type']} at {checkpoint['created_at']}"
                f"{' (' + summary + ')' if summary else ''}, {size:,} bytes"
            )
        else:
            lines.append("Checkpoint: none")
        if operation.resumable:
            lines.append(f"Resumable:  yes ({resume_hint(operation.operation_id)})")
        lines += result_lines(operation)
        lines.append("Events:")
        for event in body["recent_events"][:10]:
            lines.append(
                f"  {event['at']}  {event['from_status'] or '-':>22} -> {event['to_status']:<22} "
                f"{event['reason']} ({event['actor']}{', via ' + event['principal'] if event['principal'] else ''})"
            )
        self.stdout.write("\n".join(lines))

    # --- cancel
    def handle_cancel(self, *, operation_id: str, follow: bool, json: bool, **_: Any) -> None:
        operation_id = operation_id_argument(operation_id)
        try:
            outcome = operation_cancel(operation_id=operation_id, actor=CLI_ACTOR)
        except OperationNotCancellable:
            operation = selectors.operation_get(operation_id=operation_id)
            if operation.status != OperationStatus.COMPLETED:
                raise
            if not json:
                self.stdout.write("\n".join(result_lines(operation)))
            when = f" (at {operation.completed_at:%Y-%m-%d %H:%M:%S})" if operation.completed_at else ""
            raise CommandError(f"OPERATION_NOT_CANCELLABLE: {operation_id} had already completed{when}, before the "
                               "cancel arrived.") from None
        if not json:
            self.stdout.write(
                {
                    CancelOutcome.CANCELLED: f"Operation {operation_id} cancelled.",
                    CancelOutcome.REQUESTED: f"Cancel requested for {operation_id}; its worker will checkpoint and stop "
                                             f"within a heartbeat ({settings.HEARTBEAT_INTERVAL_SECONDS:g} s).",
                    CancelOutcome.ALREADY_REQUESTED: f"Cancel was already requested for {operation_id}.",
                }[outcome]
            )
        if follow and outcome is not CancelOutcome.CANCELLED:
            self.wait_until_stopped(operation_id, quiet=json)
        operation = selectors.operation_get(operation_id=operation_id)
        if json:
            self.write_json(OperationDetailSerializer(operation).data)
        elif follow and outcome is not CancelOutcome.CANCELLED:
            self.stdout.write("\n".join(outcome_lines(operation)))
        elif operation.resumable:
            self.stdout.write(f"Resume with: {resume_hint(operation_id)}")
        elif operation.status not in TERMINAL_STATUSES:
            self.stdout.write(f"Its outcome: python manage.py operations status {operation_id} (--follow waits "
                              "for it).")

    # --- resume
    def handle_resume(self, *, operation_id: str, follow: bool, json: bool, **_: Any) -> None:
        operation_id = operation_id_argument(operation_id)
        result = operation_resume(operation_id=operation_id, actor=CLI_ACTOR)
        if not json:
            origin = result.resumed_from
            where = position_text(origin)
            self.stdout.write(
                f"Operation {operation_id} is RESUMING from its {origin['checkpoint_type']} checkpoint"
                f"{' (' + where + ')' if where else ''}."
            )
        if follow:
            finished = follow_operation(self, operation_id, quiet=json)
            if not json:
                self.stdout.write("\n".join(outcome_lines(finished)))
        if json:
            body = OperationDetailSerializer(selectors.operation_get(operation_id=operation_id)).data
            resumed_from = ResumedFromSerializer(result.resumed_from).data  # the API's formats (dates)
            self.write_json({**body, "resumed_from": resumed_from} if not follow else body)

    def wait_until_stopped(self, operation_id: str, *, quiet: bool, poll_seconds: float = 0.5) -> None:
        last = None
        while True:
            operation = selectors.operation_get(operation_id=operation_id)
            if operation.status in TERMINAL_STATUSES:
                return  # how it ended: the caller says
            if operation.status != last and not quiet:
                self.stdout.write(f"{operation_id}: {operation.status}")
                last = operation.status
            time.sleep(poll_seconds)

    # --- purge
    def handle_purge(self, *, older_than: float, statuses: list[str] | None, types: list[str] | None, dry_run: bool,
                     json: bool, **_: Any) -> None:
        if not 0 <= older_than <= MAX_DAYS:  # NaN too
            raise CommandError(f"--older-than must be from 0 to {MAX_DAYS:,} days.")
        report = operations_purge(older_than_days=older_than, statuses=statuses or TERMINAL_STATUSES,
                                  operation_types=types or DEFAULT_TYPES, dry_run=dry_run)
        if json:
            self.write_json(report.as_dict())
            return
        verb = "Would delete" if dry_run else "Deleted"
        count = len(report.operations)
        self.stdout.write(f"{verb} {count} operation{'' if count == 1 else 's'} and {report.events:,} "
                          f"event{'' if report.events == 1 else 's'}, with their files.")
        if report.kept_as_models:
            self.stdout.write(f"Kept {len(report.kept_as_models)} training(s) whose model a backtest not completed "
                              f"needs: {', '.join(report.kept_as_models)}")
        if report.kept_with_sessions:
            self.stdout.write(f"Kept {len(report.kept_with_sessions)} operation(s) of research sessions with a child "
                              f"not ended: {', '.join(report.kept_with_sessions)}")
