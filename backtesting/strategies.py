"""Strategies: from bars to one decision per bar, computed over the whole range at once.

A strategy sees the whole series and returns, for each bar t, the direction
it wants from the open of bar t+1 (LONG, SHORT, FLAT) or HOLD; it may only
use bars up to t to decide at t. Computing the decisions over the whole range
is what makes a resumed backtest identical: the indicators are recomputed
from the same bars, whatever the bar the run stopped at.

To add a strategy, subclass `Strategy` in any installed app, give it a
`name`, a `Params` serializer and `decisions()`, and decorate it with
`@register_strategy`; `--strategy <name>` and the API accept it at once.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from rest_framework import serializers

from backtesting.engine import FLAT, HOLD, LONG, SHORT
from training.artifacts import model_files
from training.features import FeatureSpec, raw_features, standardise

STRATEGIES: dict[str, type["Strategy"]] = {}


def register_strategy(cls: type["Strategy"]) -> type["Strategy"]:
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type["Strategy"]:
    return STRATEGIES[name]


def strategy_for(request: dict[str, Any]) -> "Strategy":
    """The strategy a backtest's request (its operation's params) asks for, with its parameters."""
    return get_strategy(request["strategy"])(request["strategy_params"], request)


def parameters_text() -> str:
    """Every strategy's parameters with their defaults, for the help of `--param`."""
    def default(field) -> str:
        return str(field.default).lower() if isinstance(field.default, bool) else str(field.default)

    return "; ".join(f"{name}: " + ", ".join(f"{field}={default(params)}" for field, params in
                                             STRATEGIES[name].Params().fields.items())
                     for name in sorted(STRATEGIES))


class Strategy:
    name: ClassVar[str]
    Params: ClassVar[type[serializers.Serializer]]

    def __init__(self, params: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        self.params = params
        self.request = request or {}  # the whole backtest request: the model strategy's model is there

    @classmethod
    def validate_params(cls, data: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        """The strategy's params, validated (ValidationError naming each bad one)."""
        unknown = sorted(set(data) - set(cls.Params().fields))
        if unknown:
            known = ", ".join(cls.Params().fields)
            raise serializers.ValidationError({name: f"Unknown parameter of {cls.name} (it takes {known})."
                                               for name in unknown})
        serializer = cls.Params(data=data, context={"request_params": request})
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def decisions(self, bars: pd.DataFrame) -> np.ndarray:
        """int8 per bar: LONG, SHORT, FLAT or HOLD, decided at the bar's close."""
        raise NotImplementedError

    def min_bars(self) -> tuple[int, str]:
        """The fewest bars a backtest of it can trade on, and what needs them (a request with fewer is refused)."""
        return 2, "a backtest needs at least 2: one to decide at, the next to fill at"


class SmaCrossParams(serializers.Serializer):
    fast = serializers.IntegerField(min_value=1, max_value=100_000, default=10)
    slow = serializers.IntegerField(min_value=2, max_value=100_000, default=30)
    allow_short = serializers.BooleanField(default=False)

    def validate(self, data):
        if data["fast"] >= data["slow"]:
            raise serializers.ValidationError({"slow": "slow must be longer than fast."})
        return data


@register_strategy
class SmaCross(Strategy):
    """Long when the fast SMA of close crosses above the slow one (fast[t-1] < slow[t-1] and
    fast[t] > slow[t]); short, or flat without allow_short, on the opposite cross."""

    name = "sma_cross"
    Params = SmaCrossParams

    def decisions(self, bars: pd.DataFrame) -> np.ndarray:
        close = bars["close"]
        fast = close.rolling(self.params["fast"]).mean().to_numpy()
        slow = close.rolling(self.params["slow"]).mean().to_numpy()
        previous_fast, previous_slow = np.roll(fast, 1), np.roll(slow, 1)
        previous_fast[0] = previous_slow[0] = np.nan  # comparisons with NaN are False: no cross at bar 0
        up = (previous_fast < previous_slow) & (fast > slow)
        down = (previous_fast > previous_slow) & (fast < slow)
        decisions = np.full(len(bars), HOLD, dtype=np.int8)
        decisions[up] = LONG
        decisions[down] = SHORT if self.params["allow_short"] else FLAT
        return decisions

    def min_bars(self) -> tuple[int, str]:
        slow = self.params["slow"]
        return slow + 2, (f"sma_cross with slow={slow} needs at least {slow + 2:,}: {slow} for its slow average, "
                          "one more to see a cross, and the next to fill at")


class ModelParams(serializers.Serializer):
    threshold = serializers.FloatField(
        min_value=0.5, max_value=1.0, default=0.55,
        help_text="Long when the model's probability of a higher close is at least this; short (with "
        "allow_short) or flat when it is at most 1 - threshold.",
    )
    allow_short = serializers.BooleanField(default=False)


@register_strategy
class ModelStrategy(Strategy):
    """Trades on a completed training operation's model, with the features computed exactly as in training."""

    name = "model"
    Params = ModelParams

    @property
    def model_operation_id(self) -> str:
        # A backtest stored before API 2.0 kept the model's id among its strategy parameters.
        return self.request.get("model") or self.params["model_operation_id"]

    def feature_spec(self) -> dict[str, Any]:
        """What the model was trained with: its features (`feature_spec`), `hidden_sizes` and `inputs`."""
        return json.loads(model_files(self.model_operation_id).feature_spec.read_text())

    def min_bars(self) -> tuple[int, str]:
        warmup = FeatureSpec.from_dict(self.feature_spec()["feature_spec"]).warmup
        return warmup + 2, (f"the model of {self.model_operation_id} needs at least {warmup + 2:,}: {warmup} for its "
                            "features' warm-up, one to decide at, the next to fill at")

    def decisions(self, bars: pd.DataFrame) -> np.ndarray:
        # torch (about 0.8 s and 200 MB to import) is loaded by the model strategy only, not by every backtest.
        import torch

        from training.model import DirectionClassifier

        files = model_files(self.model_operation_id)  # from the id, never a path from data
        saved = self.feature_spec()
        spec = FeatureSpec.from_dict(saved["feature_spec"])
        model = DirectionClassifier(saved["inputs"], list(saved["hidden_sizes"]))
        model.load_state_dict(torch.load(files.model, weights_only=True))
        model.eval()
        features = raw_features(bars, spec)
        usable = features.notna().all(axis=1).to_numpy()
        x = torch.from_numpy(standardise(spec, features[usable]))
        with torch.no_grad():
            up = torch.softmax(model(x), dim=1)[:, 1].numpy() if len(x) else np.empty(0)
        threshold = self.params["threshold"]
        chosen = np.full(len(up), FLAT, dtype=np.int8)
        chosen[up >= threshold] = LONG
        if self.params["allow_short"]:
            chosen[up <= 1.0 - threshold] = SHORT
        decisions = np.full(len(bars), HOLD, dtype=np.int8)
        decisions[usable] = chosen
        return decisions
