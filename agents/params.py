"""The request of a research session: which series to research, the designer's seed, the assessment's thresholds."""

from __future__ import annotations

import math

from rest_framework import serializers

from agents.design import OUT_OF_SAMPLE, SEARCH_SPACE, Thresholds
from marketdata.params import SeriesRangeSerializer
from marketdata.series import TIMEFRAMES, list_series
from operations.api.serializers import StrictSerializer
from training.features import FeatureSpec
from training.params import DEFAULT_FEATURES

DEFAULT = Thresholds()


class ThresholdsSerializer(StrictSerializer):
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

    def min_bars(self, data: dict) -> tuple[int, str]:
        """Whatever configuration the designer proposes, its training runs and the backtest of its model over the
        validation period (from its first whole day) has bars to trade on."""
        warmup = max(FeatureSpec.from_dict({**DEFAULT_FEATURES, "sma_windows": sma, "rsi_window": rsi}).warmup
                     for sma in SEARCH_SPACE["sma_windows"] for rsi in SEARCH_SPACE["rsi_window"])
        backtest = warmup + 2 + math.ceil(86_400 / TIMEFRAMES[data["timeframe"]])
        needed = warmup + 1 + math.ceil(backtest / OUT_OF_SAMPLE)
        return needed, (f"a research session on {data['timeframe']} bars needs at least {needed:,}: its model's "
                        f"backtest covers the last {OUT_OF_SAMPLE:.0%} of them and needs {backtest:,} (a warm-up of "
                        f"{warmup} for the largest feature windows it may try, a day, and two more)")

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
