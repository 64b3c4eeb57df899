"""`manage.py marketdata generate|import|list`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketdata.options import add_symbol_and_timeframe
from marketdata.series import (
    MAX_AUTOCORRELATION,
    MAX_BARS,
    MarketDataError,
    SeriesInfo,
    generate_bars,
    list_series,
    parse_csv,
    series_path,
    symbol_of,
)
from marketdata.services import SavedSeries, series_save


def series_body(info: SeriesInfo) -> dict[str, Any]:
    return {**asdict(info), "path": str(info.path)}


class Command(BaseCommand):
    help = "Generate, import and list OHLCV market data (CSV files under DATA_DIR)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{generate,import,list}")

        generate = actions.add_parser(
            "generate", help="Write a reproducible synthetic series: the same options always give the same bars."
        )
        add_symbol_and_timeframe(generate)
        generate.add_argument("--bars", type=int, required=True, help=f"How many bars, 2 to {MAX_BARS:,}.")
        generate.add_argument("--seed", type=int, default=42, help="The random seed: the same seed, the same bars "
                                                                   "(default 42).")
        generate.add_argument("--start", help="First bar's date (YYYY-MM-DD), default 2015-01-01.")
        generate.add_argument(
            "--autocorrelation", type=float, default=0.0, metavar="A",
            help=f"Structure a model can learn: each bar's random shock carries A times the previous bar's, so the "
                 f"returns' lag-one autocorrelation is A (within a volatility regime) at the same volatility. "
                 f"Positive: short-term momentum; negative: short-term reversal; from -{MAX_AUTOCORRELATION} to "
                 f"{MAX_AUTOCORRELATION}. Default 0: none, no bar's direction can be told from the bars before it. "
                 f"Real markets show a few hundredths at most.",
        )
        self.add_write_arguments(generate)

        load = actions.add_parser("import", help="Validate a CSV and import it; nothing is written if a line is bad.")
        load.add_argument("file", help="A CSV file with the columns timestamp, open, high, low, close, volume.")
        add_symbol_and_timeframe(load)
        self.add_write_arguments(load)

        listing = actions.add_parser("list", help="List the series available.")
        listing.add_argument("--json", action="store_true", help="Print the series as JSON.")

    @staticmethod
    def add_write_arguments(parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true",
                            help="Overwrite the series even though operations used it (their resumes would read "
                                 "the new bars).")
        parser.add_argument("--json", action="store_true", help="Print the series written as JSON.")

    def handle(self, *args, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except MarketDataError as exc:
            raise CommandError(str(exc)) from None

    def handle_generate(self, *, symbol: str, timeframe: str, bars: int, seed: int, start: str | None,
                        autocorrelation: float, force: bool, json: bool, **_: Any) -> None:
        symbol = symbol_of(symbol)
        series_path(symbol, timeframe)  # validates both before anything else
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
        saved = series_save(frame, symbol, timeframe, force=force)
        structure = f", autocorrelation {autocorrelation:g}" if autocorrelation else ""
        self.report(saved, symbol, timeframe, json=json,
                    text=f"Generated {bars:,} {timeframe} bars of {symbol} (seed {seed}{structure}): {saved.path} "
                         f"({frame['timestamp'].iloc[0]:%Y-%m-%d} .. {frame['timestamp'].iloc[-1]:%Y-%m-%d})")

    def handle_import(self, *, file: str, symbol: str, timeframe: str, force: bool, json: bool, **_: Any) -> None:
        symbol = symbol_of(symbol)
        target = series_path(symbol, timeframe)  # validates both before reading anything
        frame = parse_csv(Path(file))
        saved = series_save(frame, symbol, timeframe, force=force)
        self.report(saved, symbol, timeframe, json=json,
                    text=f"Imported {len(frame):,} bars of {symbol} {timeframe} into {target}")

    def report(self, saved: SavedSeries, symbol: str, timeframe: str, *, json: bool, text: str) -> None:
        if saved.overwritten_use is not None:
            self.stderr.write(self.style.WARNING(
                f"Overwrote {symbol} {timeframe}, used by {saved.overwritten_use} (--force): their resumes read the "
                "new bars."))
        if json:
            info = next(info for info in list_series() if (info.symbol, info.timeframe) == (symbol, timeframe))
            self.write_json(series_body(info))
        else:
            self.stdout.write(text)

    def handle_list(self, *, json: bool, **_: Any) -> None:
        series = list_series()
        if json:
            self.write_json({"count": len(series), "results": [series_body(info) for info in series]})
            return
        self.stdout.write(f"{'SYMBOL':<12} {'TIMEFRAME':<9} {'BARS':>10}  {'FROM':<20}  {'TO':<20}  SIZE")
        for info in series:
            self.stdout.write(
                f"{info.symbol:<12} {info.timeframe:<9} {info.bars:>10,}  {info.start:<20}  {info.end:<20}  "
                f"{info.size_bytes / 1_048_576:.1f} MB"
            )
        self.stdout.write(f"Total: {len(series)} series")

    def write_json(self, body: Any) -> None:
        self.stdout.write(json.dumps(body, indent=2))
