"""The part of a request that names a market data series and a date range (training, backtests, sessions)."""

from __future__ import annotations

from rest_framework import serializers

from marketdata.series import MAX_BARS, SYMBOL_RE, TIMEFRAMES, MarketDataError, bars_between, series_path
from operations.api.shared import OperationRequestSerializer


class SymbolField(serializers.RegexField):
    """A series' symbol; case-insensitive (`syn` is SYN), kept in capitals as the series' file is named."""

    def to_internal_value(self, data):
        return super().to_internal_value(data.upper() if isinstance(data, str) else data)


class SeriesRangeSerializer(OperationRequestSerializer):
    """A series and a date range; valid only once the series has data, and enough of it in the range for what the
    request asks (checked last, after the whole request: `min_bars` may read any of it)."""

    symbol = SymbolField(
        SYMBOL_RE, max_length=32, error_messages={"invalid": "Use 1-32 of A-Z, 0-9, '.', '_', '-'."},
        help_text=f"A series of market data (manage.py marketdata list), case-insensitive; one holds at most "
                  f"{MAX_BARS:,} bars, so a request reads at most that many.",
    )
    timeframe = serializers.ChoiceField(
        choices=list(TIMEFRAMES),
        error_messages={"invalid_choice": f'"{{input}}" is not a timeframe: use one of {", ".join(TIMEFRAMES)}.'},
    )
    start = serializers.DateField(required=False, allow_null=True, default=None,
                                  help_text="The first day (YYYY-MM-DD, from 00:00 UTC); default the series' first.")
    end = serializers.DateField(required=False, allow_null=True, default=None,
                                help_text="The last day (YYYY-MM-DD, to 24:00 UTC); default the series' last.")

    def validate(self, data):
        if data["start"] and data["end"] and data["start"] > data["end"]:
            raise serializers.ValidationError({"end": "The end date is before the start date."})
        return data

    def run_validation(self, data=serializers.empty):
        value = super().run_validation(data)  # the fields, then every validate() of the request's serializers
        require_series(value)
        require_bars(value, *self.min_bars(value))
        return value

    def min_bars(self, data: dict) -> tuple[int, str]:
        """The fewest bars in the range the request can run on, and what needs them (the error says it)."""
        return 2, "a run needs at least 2"


def require_bars(params: dict, minimum: int, needs: str) -> None:
    """ValidationError naming the range (or the series, for a whole series) when it holds fewer bars than
    `minimum`: refused at once, not hours later by a worker."""
    symbol, timeframe, start, end = params["symbol"], params["timeframe"], params.get("start"), params.get("end")
    try:
        found = bars_between(symbol, timeframe, start and str(start), end and str(end))
    except (MarketDataError, ValueError, OSError) as exc:
        raise serializers.ValidationError({"symbol": f"The market data of {symbol} {timeframe} cannot be read: "
                                                     f"{exc}"}) from None
    if found.bars >= minimum:
        return
    field = "start" if start else "end" if end else "symbol"
    covers = (f"the series covers {found.series_start} to {found.series_end}" if found.series_bars
              else "the series has no bars")
    between = f"from {start or 'its first bar'} to {end or 'its last bar'}"
    if found.bars == 0:
        message = f"No bars of {symbol} {timeframe} {between}: {covers}."
    else:
        message = f"Only {found.bars:,} bars of {symbol} {timeframe} {between} ({covers}); {needs}."
    raise serializers.ValidationError({field: message})

def require_series(params: dict) -> None:
    """ValidationError on `symbol` when the series has no data file, saying how to make one."""
    symbol, timeframe = params["symbol"], params["timeframe"]
    try:
        path = series_path(symbol, timeframe)
    except MarketDataError as exc:
        raise serializers.ValidationError({"symbol": str(exc)}) from None
    if not path.exists():
        raise serializers.ValidationError(
            {
                "symbol": f"No market data for {symbol} {timeframe}: generate it with "
                f"`python manage.py marketdata generate --symbol {symbol} --timeframe {timeframe} "
                f"--bars N`, or import a CSV with `python manage.py marketdata import FILE --symbol {symbol} "
                f"--timeframe {timeframe}`."
            }
        )
