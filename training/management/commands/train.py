"""`manage.py train`: enqueue a training run; with --follow, watch it (Ctrl+C cancels with a checkpoint)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework import serializers

from operations import selectors
from operations.api.serializers import OperationDetailSerializer
from operations.exceptions import ServiceError
from operations.management.follow import follow, summary_line
from training.services import training_start

OPTION_NAMES = {
    "hidden_sizes": "--hidden-sizes",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "checkpoint_every": "--checkpoint-every",
}


def option_errors(detail: Any) -> str:
    if not isinstance(detail, dict):
        return "; ".join(error_messages(detail))
    parts = []
    for field, messages in detail.items():
        text = "; ".join(error_messages(messages))
        option = OPTION_NAMES.get(field, f"--{field.replace('_', '-')}")
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


class Command(BaseCommand):
    help = "Train a direction classifier on a market data series, as a durable, resumable operation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", required=True)
        parser.add_argument("--timeframe", required=True)
        parser.add_argument("--start", help="First date (YYYY-MM-DD).")
        parser.add_argument("--end", help="Last date (YYYY-MM-DD).")
        parser.add_argument("--epochs", help="Default 30.")
        parser.add_argument("--batch-size", help="Default 256.")
        parser.add_argument("--hidden-sizes", help="Comma-separated, default 256,128.")
        parser.add_argument("--learning-rate", help="Default 0.001.")
        parser.add_argument("--seed", help="Default 42.")
        parser.add_argument("--checkpoint-every", help="Epochs between checkpoints; 0: no periodic checkpoints.")
        parser.add_argument("--follow", action="store_true", help="Show progress until it ends; Ctrl+C cancels.")
        parser.add_argument("--json", action="store_true", help="Print the operation's API body.")

    def handle(self, *args, **options: Any) -> None:
        data = {
            key: options[key]
            for key in ("symbol", "timeframe", "start", "end", "epochs", "batch_size", "learning_rate", "seed",
                        "checkpoint_every")
            if options[key] is not None
        }
        if options["hidden_sizes"] is not None:
            data["hidden_sizes"] = [size.strip() for size in options["hidden_sizes"].split(",")]
        try:
            operation = training_start(data=data, actor="cli")
        except serializers.ValidationError as exc:
            raise CommandError(option_errors(exc.detail)) from None
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        if not options["follow"]:
            if options["json"]:
                self.stdout.write(json.dumps(OperationDetailSerializer(operation).data, indent=2, default=str))
            else:
                self.stdout.write(operation.operation_id)
            return
        if not options["json"]:
            self.stdout.write(f"Training {operation.operation_id}")
        finished = follow(self, operation.operation_id, quiet=options["json"])
        if options["json"]:
            body = OperationDetailSerializer(selectors.operation_get(operation_id=finished.operation_id)).data
            self.stdout.write(json.dumps(body, indent=2, default=str))
        else:
            self.stdout.write(summary_line(finished))
