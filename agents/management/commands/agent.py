"""`manage.py agent start`: start a research session (the control loop runs it); with --follow, watch it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from agents.services import session_start
from marketdata.options import add_series_arguments
from operations.management.starting import add_follow_arguments, given_options, start_operation


class Command(BaseCommand):
    help = ("Start an agent research session: it designs a configuration, trains a model, backtests it and "
            "assesses it. `supervise` runs it.")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="start")
        start = actions.add_parser("start", help=self.help, description=self.help)
        add_series_arguments(start, required=False)
        start.add_argument("--seed", help="The designer's seed, default 0.")
        add_follow_arguments(start)

    def handle(self, *args, **options: Any) -> None:
        data = given_options(options, ("symbol", "timeframe", "start", "end", "seed"))
        start_operation(self, lambda: session_start(data=data, actor="cli"), label="Session", options=options)
