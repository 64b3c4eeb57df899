"""What a backtest checkpoint holds, made by whoever saves it (the run's loop only hands over plain values).

Kept apart from the runner so that a committer process can make it without
importing the strategies (and torch with them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backtesting.engine import EngineState
from backtesting.spool import Spool


def checkpoint_state(engine: tuple, bars: int, bar_ns: int | None, engine_seconds: float, spooled: tuple,
                     ) -> dict[str, Any]:
    """A backtest checkpoint's state (JSON): the engine's state after a bar (`EngineState.values()`), and
    what the spool holds then (`Spool.record`'s arguments)."""
    engine_state = EngineState.dict_of(engine)
    return {
        "bar_index": engine_state["next_bar"],
        "bar_time": iso(np.datetime64(bar_ns, "ns")) if bar_ns is not None else None,
        "bars": bars,
        "engine": engine_state,
        "engine_seconds": engine_seconds,
        **Spool.record(*spooled),
    }


def iso(moment) -> str:
    return np.datetime_as_string(moment, unit="s") + "Z"

