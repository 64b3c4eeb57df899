"""Strategies: sma_cross exactly as specified, its params, the model strategy's features and
decisions against training's own, and strategies registered by other code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rest_framework import serializers

from backtesting.engine import FLAT, HOLD, LONG, SHORT
from backtesting.params import BacktestParamsSerializer
from backtesting.services import backtest_start
from backtesting.strategies import STRATEGIES, ModelStrategy, SmaCross, Strategy, get_strategy, register_strategy
from marketdata.series import generate_bars, load_bars
from operations.models import Operation
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_create
from runtime.context import RunContext
from runtime.tasks import run_operation
from tests.backtesting.conftest import generate
from training.features import FeatureSpec, fit, labels, raw_features, standardise
from training.model import DirectionClassifier
from training.runner import TrainingRunner

# --- sma_cross


def naive_sma(values: list[float], window: int) -> list[float | None]:
    return [math.fsum(values[t - window + 1 : t + 1]) / window if t >= window - 1 else None for t in range(len(values))]


def naive_sma_cross(closes: list[float], fast: int, slow: int, allow_short: bool) -> list[int]:
    """The rule, word for word: long when fast[t-1] < slow[t-1] and fast[t] > slow[t]; short (or flat) on the
    opposite cross; no decision (HOLD) otherwise or while an average is not defined yet."""
    f, s = naive_sma(closes, fast), naive_sma(closes, slow)
    decisions = []
    for t in range(len(closes)):
        if t == 0 or None in (f[t - 1], s[t - 1], f[t], s[t]):
            decisions.append(HOLD)
        elif f[t - 1] < s[t - 1] and f[t] > s[t]:
            decisions.append(LONG)
        elif f[t - 1] > s[t - 1] and f[t] < s[t]:
            decisions.append(SHORT if allow_short else FLAT)
        else:
            decisions.append(HOLD)
    return decisions


@pytest.mark.parametrize(
    ("fast", "slow", "allow_short", "seed"),
    [(3, 8, True, 1), (10, 30, False, 2), (1, 2, True, 3), (5, 6, False, 4), (20, 100, True, 5)],
)
def test_sma_cross_is_the_spec_definition(fast, slow, allow_short, seed):
    bars = generate_bars(bars=3000, timeframe="1h", seed=seed)
    decisions = SmaCross({"fast": fast, "slow": slow, "allow_short": allow_short}).decisions(bars)

    assert decisions.dtype == np.int8 and len(decisions) == len(bars)
    expected = naive_sma_cross(bars["close"].tolist(), fast, slow, allow_short)
    assert decisions.tolist() == expected
    assert set(expected) == ({LONG, SHORT, HOLD} if allow_short else {LONG, FLAT, HOLD})
    # Warm-up: the slow average exists from bar slow-1, a cross needs the bar before too.
    assert set(decisions[:slow].tolist()) == {HOLD}


def test_sma_cross_never_decides_at_bar_0_even_with_windows_of_one_and_two():
    bars = generate_bars(bars=50, timeframe="1h", seed=1)
    for fast, slow in [(1, 2), (1, 3)]:
        decisions = SmaCross({"fast": fast, "slow": slow, "allow_short": True}).decisions(bars)
        assert decisions[0] == HOLD
        assert set(decisions[: slow].tolist()) == {HOLD}


def test_sma_cross_uses_only_bars_up_to_t():
    bars = generate_bars(bars=600, timeframe="1h", seed=7)
    strategy = SmaCross({"fast": 4, "slow": 12, "allow_short": True})
    whole = strategy.decisions(bars)
    for end in (30, 200, 437):
        assert strategy.decisions(bars.iloc[:end].reset_index(drop=True)).tolist() == whole[:end].tolist()


# --- params


def sma_errors(data: dict) -> dict:
    with pytest.raises(serializers.ValidationError) as refused:
        SmaCross.validate_params(data, {})
    return refused.value.detail


def test_sma_cross_params_defaults_and_conversions():
    assert SmaCross.validate_params({}, {}) == {"fast": 10, "slow": 30, "allow_short": False}
    assert SmaCross.validate_params({"fast": "5", "slow": "7", "allow_short": "true"}, {}) == {
        "fast": 5, "slow": 7, "allow_short": True,
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"fast": 30, "slow": 10}, "slow"),
        ({"fast": 20, "slow": 20}, "slow"),
        ({"fast": 31}, "slow"),  # longer than the default slow
        ({"fast": 0}, "fast"),
        ({"fast": "x"}, "fast"),
        ({"fast": 2.5}, "fast"),
        ({"slow": 1}, "slow"),
        ({"slow": None}, "slow"),
        ({"allow_short": "maybe"}, "allow_short"),
    ],
)
def test_bad_sma_cross_params_are_named(data, field):
    errors = sma_errors(data)
    assert set(errors) == {field}, errors


@pytest.mark.parametrize(("data", "field"), [({"threshold": 0.4}, "threshold"), ({"threshold": 1.5}, "threshold"),
                                             ({"threshold": "high"}, "threshold"), ({"allow_short": "x"}, "allow_short")])
def test_bad_model_params_are_named(data, field):
    with pytest.raises(serializers.ValidationError) as refused:
        ModelStrategy.validate_params(data, {})
    assert set(refused.value.detail) == {field}


@pytest.mark.parametrize(
    ("request_data", "path"),
    [
        ({"strategy": "nope"}, ["strategy"]),
        ({"strategy_params": {"fast": "x"}}, ["strategy_params", "fast"]),
        ({"strategy_params": {"fast": 30, "slow": 10}}, ["strategy_params", "slow"]),
        ({"strategy_params": "fast=3"}, ["strategy_params"]),
        ({"strategy": "model", "strategy_params": {"threshold": 0.2}, "model": None}, ["strategy_params", "threshold"]),
    ],
)
def test_the_request_serializer_nests_strategy_errors_under_params(request_data, path):
    serializer = BacktestParamsSerializer(data={"symbol": "SYN", "timeframe": "1h", **request_data})
    assert not serializer.is_valid()
    errors = serializer.errors
    for key in path:
        assert key in errors, serializer.errors
        errors = errors[key]


def test_strategy_choices_list_the_registered_strategies():
    assert {"sma_cross", "model"} <= set(STRATEGIES)
    assert get_strategy("sma_cross") is SmaCross and get_strategy("model") is ModelStrategy
    assert set(BacktestParamsSerializer().fields["strategy"].choices) == set(STRATEGIES)


# --- a strategy registered by other code


class AlwaysLongParams(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0)


@pytest.fixture
def always_long():
    """A strategy registered the way another app would; removed again afterwards."""
    assert "always_long" not in STRATEGIES

    @register_strategy
    class AlwaysLong(Strategy):
        name = "always_long"
        Params = AlwaysLongParams

        def decisions(self, bars):
            decisions = np.full(len(bars), HOLD, dtype=np.int8)
            decisions[self.params["after"]] = LONG
            return decisions

    try:
        yield AlwaysLong
    finally:
        STRATEGIES.pop("always_long", None)


@pytest.mark.django_db(transaction=True)
def test_a_registered_strategy_is_accepted_and_runs(backtest_dirs, always_long):
    generate(300)
    operation = backtest_start(
        data={"symbol": "SYN", "timeframe": "1h", "strategy": "always_long", "strategy_params": {"after": 10}}, actor="test"
    )
    assert operation.params["strategy"] == "always_long"
    assert operation.params["strategy_params"] == {"after": 10}

    assert run_operation(operation.pk) == "completed"
    result = Operation.objects.get(pk=operation.pk).result
    assert result["strategy"] == "always_long"
    (trade,) = result["trades"]
    assert (trade["entry_bar"], trade["exit_bar"], trade["closed_at_end"]) == (11, 300, True)

    with pytest.raises(serializers.ValidationError) as refused:
        backtest_start(data={"symbol": "SYN", "timeframe": "1h", "strategy": "always_long", "strategy_params": {"after": -1}},
                       actor="test")
    assert "after" in refused.value.detail["strategy_params"]


def test_an_unregistered_strategy_is_refused_again_after_teardown():
    assert "always_long" not in STRATEGIES
    serializer = BacktestParamsSerializer(data={"symbol": "SYN", "timeframe": "1h", "strategy": "always_long"})
    assert not serializer.is_valid() and "strategy" in serializer.errors


# --- the model strategy

TRAINING = {
    "symbol": "SYN",
    "timeframe": "1h",
    "start": None,
    "end": None,
    "epochs": 2,
    "batch_size": 128,
    "hidden_sizes": [8],
    "learning_rate": 0.01,
    "seed": 3,
    "validation_split": 0.2,
    "checkpoint_every": 0,
    "checkpoint_seconds": None,
    "checkpoints_enabled": True,
}


@pytest.fixture
def trained(backtest_dirs) -> Operation:
    """A tiny training run, completed in-process."""
    generate(1500, seed=11)
    operation = operation_create(operation_type="training", params=TRAINING, actor="test", enqueue=False)
    assert run_operation(operation.pk) == "completed"
    return Operation.objects.get(pk=operation.pk)


def model_probabilities(result: dict, x: torch.Tensor) -> np.ndarray:
    saved = json.loads(Path(result["feature_spec_path"]).read_text())
    model = DirectionClassifier(saved["inputs"], saved["hidden_sizes"])
    model.load_state_dict(torch.load(result["model_path"], weights_only=True))
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[:, 1].numpy()


@pytest.mark.django_db(transaction=True)
def test_model_decisions_use_the_features_of_training(trained, monkeypatch):
    result = trained.result
    bars = load_bars("SYN", "1h")

    # The features training fed its model, from training's own runner over the same data.
    context = RunContext(operation_id=trained.pk, operation_type="training", params=trained.params, worker_id="w",
                         attempt=1, resume_from=None)
    training = TrainingRunner(context)
    training_x = torch.cat([training.x_train, training.x_val])

    # The same, computed independently from training.features: standardisation fitted on the training split.
    spec = FeatureSpec()
    features = raw_features(bars, spec)
    usable = features.notna().all(axis=1).to_numpy()
    labelled = usable & labels(bars).notna().to_numpy()
    split = int(labelled.sum() * (1 - TRAINING["validation_split"]))
    fitted = fit(spec, features[labelled].iloc[:split])
    saved_spec = FeatureSpec.from_dict(json.loads(Path(result["feature_spec_path"]).read_text())["feature_spec"])
    assert saved_spec == fitted == training.spec
    x = torch.from_numpy(standardise(fitted, features[usable]))
    assert torch.equal(x[:-1], training_x)  # the last bar has no label in training, a decision in a backtest

    # What the strategy feeds the model.
    seen: list[torch.Tensor] = []
    forward = DirectionClassifier.forward

    def recording_forward(self, features):
        seen.append(features.clone())
        return forward(self, features)

    monkeypatch.setattr(DirectionClassifier, "forward", recording_forward)
    up = model_probabilities(result, x)
    distance = np.abs(up - 0.5)
    threshold = 0.5 + float(np.quantile(distance, 0.5))  # half the bars decide a side, half stay flat
    request = {"model": trained.pk}  # its files are found from the id

    seen.clear()
    decisions = ModelStrategy({"threshold": threshold, "allow_short": True}, request).decisions(bars)
    assert len(seen) == 1 and torch.equal(seen[0], x)

    warmup = spec.warmup
    assert usable.tolist() == [False] * warmup + [True] * (len(bars) - warmup)
    expected = np.full(len(bars), HOLD, dtype=np.int8)
    expected[warmup:] = np.where(up >= threshold, LONG, np.where(up <= 1 - threshold, SHORT, FLAT))
    assert decisions.tolist() == expected.tolist()
    assert set(decisions[:warmup].tolist()) == {HOLD} and HOLD not in decisions[warmup:].tolist()
    assert {LONG, SHORT, FLAT} <= set(decisions.tolist())

    # As a backtest stored before API 2.0 has it: the model's id among the strategy's parameters.
    long_only = ModelStrategy({"threshold": threshold, "allow_short": False,
                               "model_operation_id": trained.pk}).decisions(bars)
    assert SHORT not in long_only.tolist()
    assert long_only.tolist() == [FLAT if d == SHORT else d for d in decisions.tolist()]


@pytest.mark.django_db(transaction=True)
def test_a_model_backtest_runs_on_a_completed_training(trained):
    operation = backtest_start(
        data={"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": trained.pk,
              "strategy_params": {"threshold": 0.5, "allow_short": True}},
        actor="test",
    )
    strategy_params = operation.params["strategy_params"]
    assert strategy_params == {"threshold": 0.5, "allow_short": True}
    assert operation.params["model"] == trained.pk
    assert run_operation(operation.pk) == "completed"
    result = Operation.objects.get(pk=operation.pk).result
    assert Operation.objects.get(pk=operation.pk).status == S.COMPLETED
    assert result["strategy"] == "model" and result["metrics"]["bars"] == 1500
    first_entry = min(trade["entry_bar"] for trade in result["trades"])
    assert first_entry > FeatureSpec().warmup  # nothing decided during the warm-up
