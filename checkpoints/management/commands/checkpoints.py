"""`manage.py checkpoints list|show|delete|cleanup|stats`: thin callers of checkpoints.services."""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Any

from django.core.management.base import CommandError, CommandParser

from checkpoints.api import CheckpointSerializer, StatsSerializer, cleanup_reply
from checkpoints.models import Checkpoint
from checkpoints.services import (
    MAX_AGE_DAYS,
    checkpoint_discard,
    checkpoint_get,
    checkpoint_maintenance,
    checkpoint_stats,
    checkpoints_expired,
)
from operations import registry
from operations.management.base import ActionCommand, operation_id_argument
from operations.management.results import figure_lines, resume_hint


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class Command(ActionCommand):
    help = "List, inspect, delete and clean up checkpoints."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,delete,cleanup,stats}")

        listing = actions.add_parser("list", help="List checkpoints, oldest first.")
        listing.add_argument("--older-than-days", type=float, help="Only those older than this.")
        listing.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        show = actions.add_parser("show", help="Show one operation's checkpoint, its metrics so far, and how to "
                                               "resume from it.")
        show.add_argument("operation_id", help="The operation whose checkpoint to show.")
        show.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        delete = actions.add_parser("delete", help="Delete one operation's checkpoint (asks first).")
        delete.add_argument("operation_id", help="The operation whose checkpoint goes.")
        delete.add_argument("--force", action="store_true", help="Do not ask for confirmation.")
        delete.add_argument("--json", action="store_true",
                            help="Print what was deleted as JSON (asks no question: give --force).")

        cleanup = actions.add_parser(
            "cleanup", help="Delete checkpoints older than the maximum age, and artifact folders no checkpoint "
                            "points at (older than CHECKPOINT_ORPHAN_GRACE_SECONDS).")
        cleanup.add_argument("--max-age-days", type=float, help="Default: CHECKPOINT_MAX_AGE_DAYS.")
        cleanup.add_argument("--dry-run", action="store_true", help="Only say what would be deleted.")
        cleanup.add_argument("--json", action="store_true", help="Print the API's JSON body.")

        stats = actions.add_parser("stats", help="Count and size of all checkpoints.")
        stats.add_argument("--json", action="store_true", help="Print the API's JSON body.")

    def handle_list(self, *, older_than_days: float | None, json: bool, **_: Any) -> None:
        age_in_range("--older-than-days", older_than_days)
        checkpoints = Checkpoint.objects.select_related("operation").order_by("created_at")
        if older_than_days is not None:
            checkpoints = checkpoints.filter(pk__in=checkpoints_expired(older_than_days).values("pk"))
        rows = list(checkpoints)
        if json:
            self.write_json({"count": len(rows), "results": CheckpointSerializer(rows, many=True).data})
            return
        self.stdout.write(f"{'OPERATION':<48} {'TYPE':<13} {'CREATED':<20} {'SIZE':>10}  {'STATE':<16} RESUMABLE")
        for checkpoint in rows:
            summary = checkpoint.position_text or "-"
            self.stdout.write(
                f"{checkpoint.operation_id:<48} {checkpoint.checkpoint_type:<13} "
                f"{checkpoint.created_at:%Y-%m-%d %H:%M:%S}  {human_size(checkpoint.total_size_bytes):>10}  "
                f"{summary:<16} {'yes' if checkpoint.operation.resumable else 'no'}"
            )
        self.stdout.write(f"Total: {plural(len(rows), 'checkpoint')}")

    def handle_show(self, *, operation_id: str, json: bool, **_: Any) -> None:
        checkpoint = checkpoint_get(operation_id_argument(operation_id))
        body = CheckpointSerializer(checkpoint).data
        if json:
            self.write_json(body)
            return
        lines = [
            f"Operation:   {checkpoint.operation_id} ({checkpoint.operation.operation_type}, {checkpoint.operation.status})",
            f"Type:        {checkpoint.checkpoint_type}",
            f"Created:     {body['created_at']} ({body['age_seconds']:.0f}s ago)",
            f"Version:     {checkpoint.version}",
            f"Resumable:   {'yes' if checkpoint.operation.resumable else 'no'}",
            f"State:       {jsonlib.dumps(checkpoint.summary()['state_summary'])} ({human_size(checkpoint.state_size_bytes)})",
            f"Artifacts:   {checkpoint.artifacts_path} ({human_size(checkpoint.artifacts_size_bytes)})",
        ]
        for artifact in checkpoint.manifest:
            lines.append(f"  {artifact['name']:<24} {human_size(artifact['size']):>10}  sha256 {artifact['sha256']}")
        operation = checkpoint.operation
        lines += figure_lines("Metrics so far:", registry.checkpoint_summary(operation.operation_type,
                                                                             checkpoint.state, operation.params))
        if operation.resumable:
            lines.append(f"Resume with: {resume_hint(operation.operation_id)}")
        self.stdout.write("\n".join(lines))

    def handle_delete(self, *, operation_id: str, force: bool, json: bool, **_: Any) -> None:
        checkpoint = checkpoint_get(operation_id_argument(operation_id))
        if json and not force:
            raise CommandError("--json asks no question: give --force too.")
        if checkpoint.operation.resumable:
            self.stderr.write(
                self.style.WARNING(
                    f"Warning: {operation_id} is {checkpoint.operation.status} and resumable; "
                    "without its checkpoint it can no longer be resumed."
                )
            )
        if not force:
            answer = input(f"Delete the checkpoint of {operation_id}? [y/N] ") if self.interactive() else ""
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Not deleted (confirm with 'y', or pass --force).")
        body = CheckpointSerializer(checkpoint).data
        checkpoint_discard(operation_id)
        if json:
            self.write_json({"deleted": body})
            return
        self.stdout.write(f"Deleted the checkpoint of {operation_id}.")

    def interactive(self) -> bool:
        return sys.stdin is not None and sys.stdin.isatty()

    def handle_cleanup(self, *, max_age_days: float | None, dry_run: bool, json: bool, **_: Any) -> None:
        age_in_range("--max-age-days", max_age_days)
        report = checkpoint_maintenance(max_age_days=max_age_days, dry_run=dry_run)
        if json:
            self.write_json(cleanup_reply(report, dry_run=dry_run))
            return
        verb = "Would delete" if dry_run else "Deleted"
        for operation_id in report["expired"]:
            self.stdout.write(f"{verb} the checkpoint of {operation_id}")
        for folder in report["orphan_folders"]:
            self.stdout.write(f"{verb} the orphan folder {folder} (no checkpoint points at it)")
        expired, orphans = len(report["expired"]), len(report["orphan_folders"])
        self.stdout.write(f"{verb} {plural(expired, 'checkpoint')} and {plural(orphans, 'orphan folder')}.")

    def handle_stats(self, *, json: bool, **_: Any) -> None:
        stats = StatsSerializer(checkpoint_stats()).data
        if json:
            self.write_json(stats)
            return
        self.stdout.write(f"Checkpoints: {stats['total_checkpoints']}")
        self.stdout.write(f"Total size:  {human_size(stats['total_size_bytes'])} ({stats['total_size_bytes']} bytes)")
        self.stdout.write(f"Oldest:      {stats['oldest_checkpoint'] or '-'}")
        for kind, count in stats["by_type"].items():
            self.stdout.write(f"  {kind:<13} {count}")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def age_in_range(option: str, days: float | None) -> None:
    if days is None:
        return
    if days < 0:
        raise CommandError(f"{option} must not be negative.")
    if not days <= MAX_AGE_DAYS:  # NaN too
        raise CommandError(f"{option} must be at most {MAX_AGE_DAYS} (a century).")
