"""What the project's commands share: sub-commands (`operations`, `checkpoints`), operation ids as arguments,
the report of a reconciliation pass (`reconcile`, `sweep_orphans`), and holding the control loop for a one-shot
pass (`reconcile`, `supervise --once`)."""

from __future__ import annotations

import json as json_module
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from operations.exceptions import ServiceError
from operations.ids import InvalidIdentifier, parse_operation_id
from operations.services.reconciliation import ControlLoopBusy, control_loop_held


class ActionCommand(BaseCommand):
    """Dispatches `manage.py <command> <action>` to `handle_<action>`; a service's refusal or an
    unreachable database is a one-line error (exit 1), never a traceback."""

    def handle(self, *args, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        except DatabaseError as exc:
            raise CommandError(f"The database cannot be reached or is not migrated: {exc}".strip()) from None

    def write_json(self, body: Any) -> None:
        self.stdout.write(json_module.dumps(body, indent=2, default=str))


def operation_id_argument(value: str) -> str:
    """An operation id given on the command line; a malformed one is a one-line error naming the format."""
    try:
        parse_operation_id(value)
    except InvalidIdentifier as exc:
        raise CommandError(str(exc)) from None
    return value


def write_report(command: BaseCommand, changes: dict[str, list[str]], *, nothing: str, verbosity: int = 1,
                 json: bool = False) -> None:
    if json:
        command.stdout.write(json_module.dumps(changes, indent=2))
        return
    if verbosity == 0:
        return
    if not any(changes.values()):
        command.stdout.write(nothing)
        return
    for kind, items in changes.items():
        for item in items:
            command.stdout.write(f"{kind.replace('_', ' ')}: {item}")
    summary = ", ".join(f"{len(items)} {kind.replace('_', ' ')}" for kind, items in changes.items() if items)
    command.stdout.write(command.style.SUCCESS(summary))


@contextmanager
def one_shot_control_loop(command: BaseCommand, *, force: bool) -> Iterator[None]:
    """Hold the control loop for one pass: refused with a one-line error (exit 1) while a `supervise` holds it,
    unless forced, and then say whom it was taken from."""
    try:
        with control_loop_held(force=force) as displaced:
            if displaced is not None:
                command.stderr.write(command.style.WARNING(f"Took the control loop from {displaced} (--force)."))
            yield
    except ControlLoopBusy as busy:
        raise CommandError(str(busy)) from None
