"""What the commands that start an operation share (`train`, `backtest`): errors named by option, then
print the new operation's id or body, or follow it until it ends."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from rest_framework import serializers

from operations import selectors
from operations.api.serializers import OperationDetailSerializer
from operations.exceptions import ServiceError
from operations.management.follow import follow
from operations.management.results import outcome_lines
from operations.models import Operation


def given_options(options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The request fields a command's options give (those not left out), for the start service; with the
    options every such command takes (add_follow_arguments)."""
    return {name: options[name] for name in (*names, "max_restarts") if options.get(name) is not None}


def add_follow_arguments(parser) -> None:
    """The options every command that starts an operation takes last."""
    parser.add_argument(
        "--max-restarts", metavar="N",
        help="Automatic resumes allowed after a lost worker or a transient error; 0: none (default: MAX_RESTARTS).",
    )
    parser.add_argument("--follow", action="store_true", help="Show progress until it ends; Ctrl+C cancels.")
    parser.add_argument("--json", action="store_true", help="Print the operation's API body.")


def option_errors(detail: Any, option_names: dict[str, str] | None = None) -> str:
    """A ValidationError's detail as one line per option (`--batch-size: ...`)."""
    if not isinstance(detail, dict):
        return "; ".join(error_messages(detail))
    parts = []
    for field, messages in detail.items():
        text = "; ".join(error_messages(messages))
        option = (option_names or {}).get(field, f"--{field.replace('_', '-')}")
        parts.append(f"{option}: {text}")
    return "\n".join(parts)


def error_messages(detail: Any) -> list[str]:
    """Flat messages of one field; a list's errors come keyed by index ({0: [...]}), shown as "value 1: ..."."""
    if isinstance(detail, dict):
        return [
            f"value {key + 1}: {message}" if isinstance(key, int) else f"{key}: {message}"
            for key, value in detail.items()
            for message in error_messages(value)
        ]
    if isinstance(detail, list):
        return [message for item in detail for message in error_messages(item)]
    return [str(detail)]


def start_operation(
    command: BaseCommand,
    start: Callable[[], Operation],
    *,
    label: str,
    options: dict[str, Any],
    option_names: dict[str, str] | None = None,
) -> None:
    """Start through the domain's service; without --follow print the id (or, with --json, the body)."""
    try:
        operation = start()
    except serializers.ValidationError as exc:
        raise CommandError(option_errors(exc.detail, option_names)) from None
    except ServiceError as exc:
        raise CommandError(f"{exc.code}: {exc.detail}") from None
    if not options["follow"]:
        if options["json"]:
            command.stdout.write(json.dumps(OperationDetailSerializer(operation).data, indent=2, default=str))
        else:
            command.stdout.write(operation.operation_id)
        return
    if not options["json"]:
        command.stdout.write(f"{label} {operation.operation_id}")
    finished = follow(command, operation.operation_id, quiet=options["json"])
    if options["json"]:
        body = OperationDetailSerializer(selectors.operation_get(operation_id=finished.operation_id)).data
        command.stdout.write(json.dumps(body, indent=2, default=str))
    else:
        command.stdout.write("\n".join(outcome_lines(finished)))
