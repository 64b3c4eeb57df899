"""`manage.py backtest`: enqueue a backtest; with --follow, watch it (Ctrl+C cancels with a checkpoint)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backtesting.services import backtest_start
from backtesting.strategies import STRATEGIES, parameters_text
from marketdata.options import add_series_arguments
from operations.management.starting import add_follow_arguments, given_options, start_operation

OPTION_NAMES = {
    "strategy_params": "--param",
    "initial_cash": "--initial-cash",
    "checkpoint_every": "--checkpoint-every",
}


def parse_param(text: str) -> tuple[str, Any]:
    """NAME=VALUE; the strategy's serializer converts the value ("10", "true")."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise CommandError(f"--param: {text!r} is not NAME=VALUE (for example --param fast=10)")
    return name.strip(), value.strip()


class Command(BaseCommand):
    help = "Backtest a strategy over a market data series, as a durable, resumable operation."

    def add_arguments(self, parser: CommandParser) -> None:
        add_series_arguments(parser)
        parser.add_argument("--strategy", help=f"One of {', '.join(sorted(STRATEGIES))}; default sma_cross.")
        parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                            help="A strategy parameter, repeatable: --param fast=10 --param slow=30. The parameters "
                                 f"and their defaults: {parameters_text()}.")
        parser.add_argument("--model", help="For --strategy model: the id of a COMPLETED training operation.")
        parser.add_argument("--initial-cash", help="Default 100000.")
        parser.add_argument("--commission", help="Fraction of each fill's notional, default 0.0005.")
        parser.add_argument("--slippage", help="Fraction of the open price, default 0.0002.")
        parser.add_argument("--checkpoint-every", help="Bars between checkpoints; 0: no periodic checkpoints.")
        add_follow_arguments(parser)

    def handle(self, *args, **options: Any) -> None:
        data = given_options(options, ("symbol", "timeframe", "start", "end", "strategy", "model", "initial_cash",
                                       "commission", "slippage", "checkpoint_every"))
        if options["param"]:
            data["strategy_params"] = dict(parse_param(text) for text in options["param"])
        start_operation(self, lambda: backtest_start(data=data, actor="cli"), label="Backtest", options=options,
                        option_names=OPTION_NAMES)
