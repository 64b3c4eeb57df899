"""`manage.py train`: enqueue a training run; with --follow, watch it (Ctrl+C cancels with a checkpoint)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from marketdata.options import add_series_arguments
from operations.management.starting import add_follow_arguments, given_options, start_operation
from training.services import training_start

OPTION_NAMES = {
    "hidden_sizes": "--hidden-sizes",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "checkpoint_every": "--checkpoint-every",
}


class Command(BaseCommand):
    help = "Train a direction classifier on a market data series, as a durable, resumable operation."

    def add_arguments(self, parser: CommandParser) -> None:
        add_series_arguments(parser)
        parser.add_argument("--epochs", help="Default 30.")
        parser.add_argument("--batch-size", help="Default 256.")
        parser.add_argument("--hidden-sizes", help="Comma-separated, default 256,128.")
        parser.add_argument("--learning-rate", help="Default 0.001.")
        parser.add_argument("--seed", help="Default 42.")
        parser.add_argument("--checkpoint-every", help="Epochs between checkpoints; 0: no periodic checkpoints.")
        add_follow_arguments(parser)

    def handle(self, *args, **options: Any) -> None:
        data = given_options(options, ("symbol", "timeframe", "start", "end", "epochs", "batch_size", "learning_rate",
                                       "seed", "checkpoint_every"))
        if options["hidden_sizes"] is not None:
            data["hidden_sizes"] = [size.strip() for size in options["hidden_sizes"].split(",")]
        start_operation(self, lambda: training_start(data=data, actor="cli"), label="Training", options=options,
                        option_names=OPTION_NAMES)
