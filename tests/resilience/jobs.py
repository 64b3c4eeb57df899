"""The two kinds of job the scenarios put under fire, each with the cluster that runs it and its straight-run check.

A training of a few seconds, and a backtest of 200,000 bars on a cluster whose engine is slowed to about
50,000 bars a second (the engine is far faster than any signal could land in the middle of). A job's run,
however often it was killed, stopped or resumed, must end with exactly a straight run's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from backtesting.services import backtest_start
from operations.models import Operation
from tests.resilience.fire import assert_settled
from tests.support.backtests import SLOW_SETTINGS
from tests.support.backtests import assert_same_backtest as assert_backtests_equal
from tests.training.cluster import Children, final_weights, train, wait_until_completed

BACKTEST = {
    "symbol": "LONG",
    "timeframe": "1h",
    "strategy": "sma_cross",
    "strategy_params": {"fast": 10, "slow": 40, "allow_short": True},
    "checkpoint_every": 20_000,
    "max_restarts": 3,
}


@dataclass(frozen=True)
class Job:
    kind: str
    start: Callable[[], str]
    cluster: Callable[..., object]
    assert_same: Callable[[Operation, Operation, dict[str, Path]], None]

    def assert_ends_as_straight(self, operation_id: str, folders: dict[str, Path], **overrides) -> Operation:
        """The operation completes with exactly the result of a straight run of its request (started now, with
        the same overrides), and the invariants hold for both."""
        straight = self.start(**overrides)
        completed = wait_until_completed(operation_id)
        self.assert_same(completed, wait_until_completed(straight), folders)
        assert_settled([operation_id, straight])
        return completed


def training_cluster(children: Children, workers: int = 2, **overrides: str):
    return children.cluster(workers=workers, **overrides)


def slow_cluster(children: Children, workers: int = 2, **overrides: str):
    return children.cluster_with_settings("slow_backtest_settings", SLOW_SETTINGS, workers=workers, **overrides)


def start_training(**overrides) -> str:
    return train(**{"epochs": 40, "checkpoint_every": 2, "max_restarts": 3, **overrides})


def start_backtest(**overrides) -> str:
    return backtest_start(data={**BACKTEST, **overrides}, actor="test").pk


def assert_same_training(resumed: Operation, straight: Operation, folders: dict[str, Path]) -> None:
    first, second = final_weights(resumed, folders), final_weights(straight, folders)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert resumed.result["history"] == straight.result["history"]
    assert resumed.result["epochs_completed"] == straight.result["epochs_completed"] == resumed.params["epochs"]


def assert_same_backtest(resumed: Operation, straight: Operation, folders: dict[str, Path]) -> None:
    assert_backtests_equal(resumed, straight)


JOBS = {
    "training": Job("training", start_training, training_cluster, assert_same_training),
    "backtest": Job("backtest", start_backtest, slow_cluster, assert_same_backtest),
}
