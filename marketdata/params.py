"""The part of a request that names a market data series and a date range (training, backtests, sessions)."""

from __future__ import annotations

from rest_framework import serializers

from marketdata.series import MAX_BARS, SYMBOL_RE, TIMEFRAMES, MarketDataError, series_path
from operations.api.shared import OperationRequestSerializer


class SeriesRangeSerializer(OperationRequestSerializer):
    """A series and a date range; valid only once the series has data (checked last, after the whole request)."""

    symbol = serializers.RegexField(
        SYMBOL_RE, max_length=32, error_messages={"invalid": "Use 1-32 of A-Z, 0-9, '.', '_', '-'."},
        help_text=f"A series of market data (manage.py marketdata list); one holds at most {MAX_BARS:,} bars, so a "
                  "request reads at most that many.",
    )
    timeframe = serializers.ChoiceField(choices=list(TIMEFRAMES))
    start = serializers.DateField(required=False, allow_null=True, default=None)
    end = serializers.DateField(required=False, allow_null=True, default=None)

    def validate(self, data):
        if data["start"] and data["end"] and data["start"] > data["end"]:
            raise serializers.ValidationError({"end": "The end date is before the start date."})
        return data

    def run_validation(self, data=serializers.empty):
        value = super().run_validation(data)  # the fields, then every validate() of the request's serializers
        require_series(value)
        return value


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
