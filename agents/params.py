"""The request of a research session: which series to research, the designer's seed, the assessment's thresholds."""

from __future__ import annotations

from rest_framework import serializers

from agents.design import Thresholds
from marketdata.params import SeriesRangeSerializer
from marketdata.series import list_series

DEFAULT = Thresholds()


class ThresholdsSerializer(serializers.Serializer):
    min_sharpe = serializers.FloatField(min_value=-100, max_value=100, default=DEFAULT.min_sharpe)
    max_drawdown = serializers.FloatField(min_value=0, max_value=1, default=DEFAULT.max_drawdown)
    min_trades = serializers.IntegerField(min_value=0, max_value=10**9, default=DEFAULT.min_trades)
    beat_buy_and_hold = serializers.BooleanField(default=DEFAULT.beat_buy_and_hold)


class SessionParamsSerializer(SeriesRangeSerializer):
    """The series to research (default: the only one there is), the designer's seed, the thresholds."""

    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0,
                                    help_text="The designer's seed (and the training's).")
    thresholds = ThresholdsSerializer(default=lambda: dict(ThresholdsSerializer(DEFAULT).data),
                                      help_text="What a backtest must reach to be accepted.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("symbol", "timeframe"):
            self.fields[name].required = False

    def validate(self, data):
        if not data.get("symbol") and not data.get("timeframe"):
            series = list_series()
            if len(series) != 1:
                raise serializers.ValidationError({"symbol": (
                    "No market data yet: generate a series with `python manage.py marketdata generate`."
                    if not series else
                    f"{len(series)} series are there ({', '.join(f'{s.symbol} {s.timeframe}' for s in series)}): "
                    "choose one with symbol and timeframe.")})
            data["symbol"], data["timeframe"] = series[0].symbol, series[0].timeframe
        for name in ("symbol", "timeframe"):
            if not data.get(name):
                raise serializers.ValidationError({name: "This field is required with the other one."})
        return super().validate(data)
