"""The part of a request that names a market data series and a date range (training, backtests)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import serializers

from marketdata.series import SYMBOL_RE, TIMEFRAMES, MarketDataError, series_path

if TYPE_CHECKING:
    from operations.models import Operation


class SeriesRangeSerializer(serializers.Serializer):
    symbol = serializers.RegexField(
        SYMBOL_RE, max_length=32, error_messages={"invalid": "Use 1-32 of A-Z, 0-9, '.', '_', '-'."}
    )
    timeframe = serializers.ChoiceField(choices=list(TIMEFRAMES))
    start = serializers.DateField(required=False, allow_null=True, default=None)
    end = serializers.DateField(required=False, allow_null=True, default=None)

    def validate(self, data):
        if data["start"] and data["end"] and data["start"] > data["end"]:
            raise serializers.ValidationError({"end": "The end date is before the start date."})
        return data

    def to_params(self) -> dict:
        """JSON-ready params (dates as ISO strings)."""
        data = dict(self.validated_data)
        for key in ("start", "end"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


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


def series_operation_start(request: SeriesRangeSerializer, *, operation_type: str, actor: str, owner=None,
                           **create) -> Operation:
    """Validate a request over a series (ValidationError naming the field), check its data exists, and record
    the operation (`create`: the rest of operation_create's arguments, a parent or is_backend_local)."""
    from operations.services.lifecycle import operation_create

    request.is_valid(raise_exception=True)
    params = request.to_params()
    require_series(params)
    return operation_create(operation_type=operation_type, params=params, actor=actor, owner=owner, **create)
