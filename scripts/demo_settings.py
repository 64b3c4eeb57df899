"""The demo's worker settings: the base settings, with the backtest engine slowed to about 200,000 bars a
second, so that a cancel requested from outside lands in the middle of a backtest of a million bars
(the engine's real speed, millions of bars a second, is what `make bench` measures). Demo only."""

import time

from config.settings.base import *  # noqa: F401,F403
from backtesting import engine as _engine

_run = _engine.Engine.run


def _slowly(self, stop):
    time.sleep(max(0, stop - self.state.next_bar) * 5e-6)
    _run(self, stop)


_engine.Engine.run = _slowly
