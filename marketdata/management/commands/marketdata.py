"""`manage.py marketdata generate|import|list`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata.series import (
    MAX_AUTOCORRELATION,
    MAX_BARS,
    TIMEFRAMES,
    MarketDataError,
    generate_bars,
    list_series,
    parse_csv,
    series_path,
    validate_symbol,
    validate_timeframe,
    write_series,
)


class Command(BaseCommand):
    help = "Generate, import and list OHLCV market data (CSV files under DATA_DIR)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{generate,import,list}")

        generate = actions.add_parser(
            "generate", help="Write a reproducible synthetic series: the same options always give the same bars."
        )
        generate.add_argument("--symbol", required=True)
        generate.add_argument("--timeframe", required=True, help=f"one of {', '.join(TIMEFRAMES)}")
        generate.add_argument("--bars", type=int, required=True)
        generate.add_argument("--seed", type=int, default=42)
        generate.add_argument("--start", help="First bar's date (YYYY-MM-DD), default 2015-01-01.")
        generate.add_argument(
            "--autocorrelation", type=float, default=0.0, metavar="A",
            help=f"Structure a model can learn: each bar's random shock carries A times the previous bar's, so the "
                 f"returns' lag-one autocorrelation is A (within a volatility regime) at the same volatility. "
                 f"Positive: short-term momentum; negative: short-term reversal; from -{MAX_AUTOCORRELATION} to "
                 f"{MAX_AUTOCORRELATION}. Default 0: none, no bar's direction can be told from the bars before it. "
                 f"Real markets show a few hundredths at most.",
        )

        load = actions.add_parser("import", help="Validate a CSV and import it; nothing is written if a line is bad.")
        load.add_argument("file")
        load.add_argument("--symbol", required=True)
        load.add_argument("--timeframe", required=True, help=f"one of {', '.join(TIMEFRAMES)}")

        actions.add_parser("list", help="List the series available.")

    def handle(self, *args, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except MarketDataError as exc:
            raise CommandError(str(exc)) from None

    def handle_generate(self, *, symbol: str, timeframe: str, bars: int, seed: int, start: str | None,
                        autocorrelation: float, **_: Any) -> None:
        validate_symbol(symbol)
        validate_timeframe(timeframe)
        if bars < 2 or bars > MAX_BARS:
            raise CommandError(f"--bars must be between 2 and {MAX_BARS:,}.")
        if seed < 0:
            raise CommandError("--seed must not be negative.")  # numpy's generator refuses it
        if not -MAX_AUTOCORRELATION <= autocorrelation <= MAX_AUTOCORRELATION:  # NaN fails both comparisons
            raise CommandError(f"--autocorrelation {autocorrelation:g} is invalid: use a number from "
                               f"-{MAX_AUTOCORRELATION} to {MAX_AUTOCORRELATION} (0: none).")
        first = None
        if start:
            try:
                first = datetime.fromisoformat(start)
            except ValueError:
                raise CommandError(f"--start {start!r} is not a date (YYYY-MM-DD).") from None
            first = first.astimezone(timezone.utc) if first.tzinfo else first.replace(tzinfo=timezone.utc)
        frame = generate_bars(bars=bars, timeframe=timeframe, seed=seed, start=first, autocorrelation=autocorrelation)
        path = write_series(frame, symbol, timeframe)
        structure = f", autocorrelation {autocorrelation:g}" if autocorrelation else ""
        self.stdout.write(
            f"Generated {bars:,} {timeframe} bars of {symbol} (seed {seed}{structure}): {path} "
            f"({frame['timestamp'].iloc[0]:%Y-%m-%d} .. {frame['timestamp'].iloc[-1]:%Y-%m-%d})"
        )

    def handle_import(self, *, file: str, symbol: str, timeframe: str, **_: Any) -> None:
        target = series_path(symbol, timeframe)  # validates both before reading anything
        frame = parse_csv(Path(file))
        write_series(frame, symbol, timeframe)
        self.stdout.write(f"Imported {len(frame):,} bars of {symbol} {timeframe} into {target}")

    def handle_list(self, **_: Any) -> None:
        series = list_series()
        self.stdout.write(f"{'SYMBOL':<12} {'TIMEFRAME':<9} {'BARS':>10}  {'FROM':<20}  {'TO':<20}  SIZE")
        for info in series:
            self.stdout.write(
                f"{info.symbol:<12} {info.timeframe:<9} {info.bars:>10,}  {info.start:<20}  {info.end:<20}  "
                f"{info.size_bytes / 1_048_576:.1f} MB"
            )
        self.stdout.write(f"Total: {len(series)} series")
