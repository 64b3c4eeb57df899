"""The request of a research session: which series to research, the designer's seed, the assessment's thresholds."""

from __future__ import annotations

from rest_framework import serializers

from agents.design import Thresholds
from marketdata.params import SeriesRangeSerializer

DEFAULT = Thresholds()


class ThresholdsSerializer(serializers.Serializer):
    min_sharpe = serializers.FloatField(min_value=-100, max_value=100, default=DEFAULT.min_sharpe)
    max_drawdown = serializers.FloatField(min_value=0, max_value=1, default=DEFAULT.max_drawdown)
    min_trades = serializers.IntegerField(min_value=0, max_value=10**9, default=DEFAULT.min_trades)
    beat_buy_and_hold = serializers.BooleanField(default=DEFAULT.beat_buy_and_hold)


class SessionParamsSerializer(SeriesRangeSerializer):
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0,
                                    help_text="The designer's seed (and the training's).")
    thresholds = ThresholdsSerializer(required=False, help_text="What a backtest must reach to be accepted.")

    def to_params(self) -> dict:
        params = super().to_params()
        params["thresholds"] = dict(params.get("thresholds") or ThresholdsSerializer(DEFAULT).data)
        return params
