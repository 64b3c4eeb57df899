"""The command-line options every command over a market data series takes (`train`, `backtest`, `agent start`,
`marketdata`): a symbol in any case, a timeframe, a date range. Their values are checked where the request is
(an error names the option and exits 1, listing the timeframes there are)."""

from __future__ import annotations

from marketdata.series import TIMEFRAMES


def add_symbol_and_timeframe(parser, *, required: bool = True) -> None:
    default = "" if required else " Default: the only series there is."
    parser.add_argument("--symbol", required=required,
                        help="The series' symbol, in any case (manage.py marketdata list shows them)." + default)
    parser.add_argument("--timeframe", required=required,
                        help=f"The series' bar length: one of {', '.join(TIMEFRAMES)}." + default)


def add_series_arguments(parser, *, required: bool = True) -> None:
    """The options every command that starts a run over a market data series takes first (not `required`: the
    only series there is, by default)."""
    add_symbol_and_timeframe(parser, required=required)
    parser.add_argument("--start", help="The first day (YYYY-MM-DD); default the series' first.")
    parser.add_argument("--end", help="The last day (YYYY-MM-DD), included; default the series' last.")
