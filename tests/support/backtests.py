"""Backtests that real clusters run slowly enough for a signal to land in their middle, and their comparison.

The engine is far faster than a heartbeat (millions of bars per second): a cluster started with SLOW_SETTINGS
(`Children.cluster_with_settings`) sleeps in proportion to each chunk's bars, SLOW_SECONDS_PER_BAR a bar
(20 µs, about 50,000 bars a second, unless its environment says otherwise). Product code is unchanged.
"""

from __future__ import annotations

import numpy as np

from operations.models import Operation

SLOW_SETTINGS = '''\
"""Test only: the engine slowed by a sleep proportional to each chunk's bars (SLOW_SECONDS_PER_BAR)."""
import os
import time

from config.settings.base import *  # noqa: F401,F403
from backtesting import engine as _engine

_run = _engine.Engine.run
_per_bar = float(os.environ.get("SLOW_SECONDS_PER_BAR", "20e-6"))


def _slowly(self, stop):
    time.sleep(max(0, stop - self.state.next_bar) * _per_bar)
    _run(self, stop)


_engine.Engine.run = _slowly
'''


def assert_same_backtest(resumed: Operation, straight: Operation) -> None:
    """Trade for trade and point for point, the equity curve's file included."""
    first, second = resumed.result, straight.result
    assert first["trades"] == second["trades"]
    assert first["metrics"] == second["metrics"]
    assert first["equity_curve"] == second["equity_curve"]
    assert np.array_equal(np.load(first["equity_curve_path"]), np.load(second["equity_curve_path"]))
    assert len(first["trades"]) > 100
