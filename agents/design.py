"""What a research session tries: a configuration from a declared search space, and how it is judged.

The designer is deterministic: the same seed and the same earlier assessments
give the same proposal. With no assessment yet, it takes the configurations
in an order the seed shuffles; afterwards it looks next to the best one
assessed so far (the configurations that differ from it in one dimension, in
the seed's order), and falls back on the seed's order when those are all
taken. It never proposes a configuration already assessed, nor one that is
taken by a session still running (`taken`).

The assessment compares a backtest's metrics with thresholds and with
buy-and-hold over the same bars, and says why.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# One choice per dimension makes a configuration. Indicator windows and the hidden sizes are lists.
SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "sma_windows": ([5, 20], [10, 30], [20, 50], [10, 50, 100]),  # the model's moving-average features
    "rsi_window": (7, 14, 21),
    "threshold": (0.52, 0.55, 0.6),  # the model strategy's signal threshold
    "hidden_sizes": ([32], [64, 32], [128, 64]),
    "learning_rate": (0.0003, 0.001, 0.003),
    "epochs": (5, 10, 20),
}


OUT_OF_SAMPLE = 0.2  # the training's validation split: the model's backtest covers that period, not trained on


class SearchSpaceExhausted(Exception):
    """Every configuration of the search space has been assessed (or is being assessed)."""


def configuration_key(configuration: Mapping[str, Any]) -> str:
    """A configuration's identity: the same choices give the same key, whatever their order."""
    return hashlib.sha256(json.dumps(dict(configuration), sort_keys=True).encode()).hexdigest()[:32]


def all_configurations(space: Mapping[str, tuple[Any, ...]] = SEARCH_SPACE) -> list[dict[str, Any]]:
    names = list(space)
    return [dict(zip(names, choice)) for choice in itertools.product(*(space[name] for name in names))]


@dataclass(frozen=True)
class Assessed:
    """An earlier session's configuration and its score (higher is better)."""

    configuration: dict[str, Any]
    score: float


def propose(seed: int, assessed: Iterable[Assessed], taken: Iterable[Mapping[str, Any]] = (),
            space: Mapping[str, tuple[Any, ...]] = SEARCH_SPACE) -> dict[str, Any]:
    """The next configuration to try (see the module's docstring); SearchSpaceExhausted when none is left."""
    assessed = list(assessed)
    excluded = {configuration_key(item.configuration) for item in assessed}
    excluded |= {configuration_key(configuration) for configuration in taken}
    order = all_configurations(space)
    random.Random(seed).shuffle(order)
    rank = {configuration_key(configuration): index for index, configuration in enumerate(order)}
    if assessed:
        best = max(assessed, key=lambda item: (item.score, -rank.get(configuration_key(item.configuration), 0)))
        neighbours = [configuration for configuration in order
                      if sum(configuration[name] != best.configuration.get(name) for name in space) == 1]
        for configuration in neighbours:
            if configuration_key(configuration) not in excluded:
                return configuration
    for configuration in order:
        if configuration_key(configuration) not in excluded:
            return configuration
    raise SearchSpaceExhausted(f"all {len(order)} configurations of the search space have been assessed")


# --- judging a backtest

@dataclass(frozen=True)
class Thresholds:
    min_sharpe: float = 0.5
    max_drawdown: float = 0.3
    min_trades: int = 10
    beat_buy_and_hold: bool = True


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    score: float
    reasons: list[str]

    @property
    def verdict(self) -> str:
        return "accepted" if self.accepted else "rejected"


def assess(metrics: Mapping[str, Any], thresholds: Thresholds = Thresholds()) -> Verdict:
    """Accepted when every check passes; the reasons say each check's outcome with its numbers. The score
    (to rank configurations) is the total return in excess of buy-and-hold."""
    total, hold = metrics["total_return"], metrics["buy_and_hold_return"]
    sharpe, drawdown, trades = metrics.get("sharpe"), metrics["max_drawdown"], metrics["number_of_trades"]
    checks = [
        (sharpe is not None and sharpe >= thresholds.min_sharpe,
         f"Sharpe {_number(sharpe)} {'≥' if sharpe is not None and sharpe >= thresholds.min_sharpe else '<'} "
         f"{thresholds.min_sharpe:g}"),
        (drawdown <= thresholds.max_drawdown,
         f"maximum drawdown {drawdown:.1%} {'≤' if drawdown <= thresholds.max_drawdown else '>'} "
         f"{thresholds.max_drawdown:.0%}"),
        (trades >= thresholds.min_trades,
         f"{trades} trades {'≥' if trades >= thresholds.min_trades else '<'} {thresholds.min_trades}"),
    ]
    if thresholds.beat_buy_and_hold:
        checks.append((total > hold, f"total return {total:+.1%} {'>' if total > hold else '≤'} buy-and-hold "
                                     f"{hold:+.1%}"))
    return Verdict(accepted=all(passed for passed, _ in checks), score=float(total - hold),
                   reasons=[("passed: " if passed else "failed: ") + reason for passed, reason in checks])


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"
