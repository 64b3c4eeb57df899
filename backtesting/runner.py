"""A backtest as the runtime executes it, resumable at any bar with an identical result.

On start (and on resume) the bars are loaded and the strategy's decisions
computed over the whole range; a resumed run then takes the engine's state
from its checkpoint and the fills so far from the spool the checkpoint names
(the trades and the equity curve rebuilt from them), and continues at the
next bar without processing earlier bars again.
The loop runs in chunks: between two chunks it reports progress, checks for
cancel and shutdown, and saves a periodic checkpoint when due (in the
background: the engine state is copied, the new fills written and the row
committed beside the next chunk).
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

import numpy as np
from django.conf import settings

from backtesting.checkpoint import checkpoint_state, iso
from backtesting.engine import Costs, Engine, EngineState, equity_from_fills, metrics
from backtesting.spool import Spool, equity_curve_file, results_dir
from backtesting.strategies import strategy_for
from checkpoints.models import CheckpointType
from checkpoints.policy import policy_for
from marketdata.series import TIMEFRAMES, load_bars
from runtime.context import RunContext

CHUNK_BARS = 4096  # bars between two checks for cancel and shutdown
SAVING_CHUNK_BARS = 256  # the same while a checkpoint is being saved beside the loop
CHART_POINTS = 500


def chart_points(bars: int) -> np.ndarray:
    """The bars a result's curves are drawn at: at most CHART_POINTS, evenly spread, the first and the last
    among them."""
    return np.unique(np.linspace(0, bars - 1, min(bars, CHART_POINTS)).round().astype(int))


def deepest_drawdowns(equity: np.ndarray, initial_cash: float, picked: np.ndarray) -> np.ndarray:
    """At each picked bar, the deepest drawdown (1 - equity / its peak so far, the peak counting the initial
    cash, as the metrics count it) since the previous picked bar: a chart of a few hundred points that still
    reaches the deepest fall between them, where a curve read only at the points could miss it."""
    peaks = np.maximum.accumulate(np.concatenate([[initial_cash], equity]))[1:]
    drawdown = 1.0 - equity / peaks
    return np.maximum.reduceat(drawdown, np.concatenate([[0], picked[:-1] + 1]))


class BacktestRunner:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        p = self.params = context.params
        self.policy = policy_for(p, settings.BACKTEST_CHECKPOINT_EVERY_BARS)
        if self.policy.enabled and (self.policy.every_units > 0 or self.policy.every_seconds is not None):
            context.start_committer()  # its start-up (half a second) overlaps the loading below
        bars = load_bars(p["symbol"], p["timeframe"], start=p.get("start"), end=p.get("end"))
        if len(bars) < 2:
            raise ValueError(f"too little data to backtest: {len(bars)} bar(s) in the range")
        decisions = strategy_for(p).decisions(bars)
        self.times = bars["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]")
        self.times_ns = self.times.view("i8")
        self.engine = Engine(
            opens=bars["open"].astype("float64").tolist(),
            closes=bars["close"].astype("float64").tolist(),
            times=self.times,
            targets=decisions.tolist(),
            costs=Costs(commission=p["commission"], slippage=p["slippage"]),
            initial_cash=p["initial_cash"],
        )
        self.engine_seconds_before = 0.0
        self.spool = Spool(context.operation_id, context.attempt)
        if context.resume_from is not None:
            state = context.resume_from.state
            self.engine.state = EngineState.from_dict(state["engine"])
            self.engine.replay(Spool.read(context.operation_id, state))  # the trades, from the fills
            self.engine.equity = equity_from_fills(bars["close"].to_numpy(dtype="float64"), self.engine.fill_log,
                                                   self.engine.state.next_bar, p["initial_cash"])
            self.engine_seconds_before = state.get("engine_seconds", 0.0)
            self.policy.saved(self.engine.state.next_bar)
        self.spool.start(self.engine)
        self.first_bar = self.engine.state.next_bar
        self.engine_seconds = 0.0
        self.periodic_checkpoints = 0
        self.checkpoint_seconds_before = context.checkpoint_seconds

    # --- the loop
    def run(self) -> dict[str, Any]:
        engine, state = self.engine, self.engine.state
        bars, every = engine.bars, self.policy.every_units
        while state.next_bar < bars:
            self.context.raise_if_stopping()
            chunk = CHUNK_BARS
            if self.context.saving_in_thread():
                # A save in a thread needs the GIL between its I/O waits; this loop would hold it for
                # whole switch intervals (5 ms) at a time. Small chunks and a yield let it finish within
                # a few thousand bars instead of tens of thousands. (A committer process needs none.)
                chunk = SAVING_CHUNK_BARS
                time.sleep(0)
            stop = min(bars, state.next_bar + chunk)
            if every > 0 and not self.context.resting():  # a checkpoint may be taken at the next multiple
                stop = min(stop, (state.next_bar // every + 1) * every)
            started = time.perf_counter()
            engine.run(stop)
            self.engine_seconds += time.perf_counter() - started
            self._report_progress()
            # Due, and the saver free (and rested): a loop faster than the saves skips a checkpoint rather than wait.
            if state.next_bar < bars and self.policy.due(state.next_bar) and not self.context.saving():
                self._flush()
                started = time.perf_counter()
                appends, spooled = self.spool.appends(engine)
                try:
                    self.context.commit_in_background(CheckpointType.PERIODIC, self._state(spooled), appends)
                finally:
                    self.spool.release(appends)
                self.periodic_checkpoints += 1
                self.policy.saved(state.next_bar)
                self.context.handed_over(time.perf_counter() - started)
        engine.close_at_end()
        self._flush()
        return self._finish()

    def _flush(self) -> None:
        """Wait for the save in flight, and take note of what it wrote into the spool."""
        self.context.flush_checkpoint()
        saved = self.context.last_save
        self.spool.confirm(saved.appended if saved else None)

    def _report_progress(self) -> None:
        """The bar and PnL now; the message is made only when the heartbeat takes it (not at every chunk)."""
        next_bar = self.engine.state.next_bar
        pnl = self.engine.equity[-1] - self.engine.initial_cash
        self.context.report_progress(current=next_bar, total=self.engine.bars, unit="bars",
                                     message=partial(self._progress_message, next_bar, pnl))

    def _progress_message(self, next_bar: int, pnl: float) -> str:
        when = np.datetime_as_string(self.times[next_bar - 1], unit="m").replace("T", " ")
        return f"bar {next_bar}/{self.engine.bars} {when} PnL {pnl:+,.2f}"

    # --- checkpoints: the engine state, and where the spool's fills end (the spool written first)
    def _state(self, spooled: tuple) -> partial:
        """The checkpoint's state, as plain values and the function that makes it: the saver calls it,
        beside the loop (a few microseconds of the loop's time less at each checkpoint)."""
        state = self.engine.state
        last = state.next_bar - 1
        bar_ns = int(self.times_ns[last]) if last >= 0 else None
        return partial(checkpoint_state, state.values(), self.engine.bars, bar_ns,
                       self.engine_seconds_before + self.engine_seconds, spooled)

    def checkpoint_payload(self) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        self._flush()
        return self._state(self.spool.write_new(self.engine))(), {}

    # --- the result
    def _finish(self) -> dict[str, Any]:
        engine = self.engine
        folder = results_dir(self.context.operation_id)
        folder.mkdir(parents=True, exist_ok=True)
        equity = np.array(engine.equity, dtype=np.float64)  # a copy: the engine's array stays resizable
        equity_path = equity_curve_file(self.context.operation_id)
        temporary = folder / f".equity.{os.getpid()}.npy"
        np.save(temporary, equity)
        os.replace(temporary, equity_path)
        picked = chart_points(len(equity))
        moments = [f"{moment}Z" for moment in np.datetime_as_string(self.times[picked], unit="s").tolist()]  # as iso()
        closes = np.asarray(engine.closes[:len(equity)], dtype=np.float64)
        processed = engine.state.next_bar - self.first_bar
        trades = engine.trades
        result = {
            "strategy": self.params["strategy"],
            "strategy_params": self.params["strategy_params"],
            "bars": engine.bars,
            "first_bar": iso(self.times[0]),
            "last_bar": iso(self.times[-1]),
            "metrics": metrics(engine, TIMEFRAMES[self.params["timeframe"]], trades),
            "trades": trades,
            "equity_curve_path": str(equity_path),  # for people to read; code uses spool.equity_curve_file
            "equity_curve": [[at, value] for at, value in zip(moments, equity[picked].tolist())],
            # Beside it on the chart, at the same points: the initial cash held in the asset from the first close
            # (the metrics' buy-and-hold return), and the drawdown (the metrics' max_drawdown is its deepest).
            "buy_and_hold_curve": [[at, value] for at, value in
                                   zip(moments, (engine.initial_cash * closes[picked] / closes[0]).tolist())],
            "drawdown_curve": [[at, value] for at, value in
                               zip(moments, deepest_drawdowns(equity, engine.initial_cash, picked).tolist())],
            "timings": {
                "engine_seconds": round(self.engine_seconds_before + self.engine_seconds, 4),
                "bars_per_second": round(processed / self.engine_seconds) if self.engine_seconds > 0 else None,
                "bars_processed": processed,
                "checkpoint_seconds": round(self.context.checkpoint_seconds - self.checkpoint_seconds_before, 4),
                "periodic_checkpoints": self.periodic_checkpoints,
            },
        }
        self.spool.close()
        return result

    def completed(self) -> None:
        """The outcome is recorded: the spools of this run and the earlier ones are no longer needed. (Not
        before: a run that finishes after it was given up on must not remove what its resume reads.)"""
        self.spool.remove_earlier_runs(self.context.operation_id)
