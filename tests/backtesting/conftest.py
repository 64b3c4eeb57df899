"""Fixtures and helpers of the backtesting tests: data, results and checkpoints in the test's own folders."""

from __future__ import annotations

import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from backtesting.services import backtest_start

REQUEST: dict[str, Any] = {"symbol": "SYN", "timeframe": "1h"}


def generate(bars: int, seed: int = 5, symbol: str = "SYN", timeframe: str = "1h") -> Path:
    """A synthetic series in DATA_DIR, as a user would make it."""
    call_command(
        "marketdata", "generate", "--symbol", symbol, "--timeframe", timeframe, "--bars", str(bars), "--seed", str(seed),
        stdout=StringIO(),
    )
    return Path(settings.DATA_DIR) / f"{symbol}_{timeframe}.csv"


def start_backtest(**request: Any) -> str:
    """A new PENDING backtest through the service (the API's and the command's path); its id."""
    return backtest_start(data={**REQUEST, **request}, actor="test").operation_id


@pytest.fixture
def backtest_dirs(tmp_path, settings, checkpoint_dir) -> dict[str, Path]:
    """Data, results, models and checkpoints of the test's own."""
    found = {
        "DATA_DIR": tmp_path / "data",
        "RESULTS_DIR": tmp_path / "results",
        "MODELS_DIR": tmp_path / "models",
        "WORKER_STATE_DIR": tmp_path / "worker-state",
        "CHECKPOINT_DIR": checkpoint_dir,
    }
    for name, folder in found.items():
        if name != "CHECKPOINT_DIR":
            setattr(settings, name, folder)
    return found


class Stopper:
    """Runs an operation in-process (the runtime's task) and stops it once the engine has processed `bar` bars.

    The runner checks for cancel between chunks; with chunks of `chunk` bars (1: every bar) and the run's
    cancel event set as soon as the engine reaches `bar`, the cancellation checkpoint lands exactly there
    (or at the first chunk boundary after it), as after a cancel request the heartbeat had read.
    `how="abandon"` plays a worker told it lost its run: it stops without writing anything.
    """

    def __init__(self) -> None:
        self.bar: int | None = None
        self.how = "cancel"
        self.chunks: list[tuple[int, int]] = []  # (first bar, stop) of each Engine.run of the last run

    def run(self, operation_id: str, bar: int | None = None, *, chunk: int | None = None, how: str = "cancel") -> str:
        from backtesting import runner as runner_module
        from runtime.tasks import run_operation

        names = [name for name in ("CHUNK_BARS", "SAVING_CHUNK_BARS") if hasattr(runner_module, name)]
        previous = {name: getattr(runner_module, name) for name in names}
        if chunk is not None:
            for name in names:
                setattr(runner_module, name, chunk)
        self.bar, self.how, self.chunks = bar, how, []
        try:
            return run_operation(operation_id)
        finally:
            for name, value in previous.items():
                setattr(runner_module, name, value)
            self.bar = None

    def maybe_stop(self, runner) -> None:
        if self.bar is not None and runner.engine.state.next_bar >= self.bar:
            (runner.context.cancel_requested if self.how == "cancel" else runner.context.abandoned).set()


@pytest.fixture
def stopper(monkeypatch) -> Stopper:
    from backtesting import runner as runner_module
    from backtesting.engine import Engine

    stopper = Stopper()
    run, report, engine_run = (runner_module.BacktestRunner.run, runner_module.BacktestRunner._report_progress,
                               Engine.run)

    def running(self):
        stopper.maybe_stop(self)  # a stop at bar 0: before the first chunk
        return run(self)

    def reporting(self):
        report(self)
        stopper.maybe_stop(self)

    def walking(self, stop):
        stopper.chunks.append((self.state.next_bar, stop))
        return engine_run(self, stop)

    monkeypatch.setattr(runner_module.BacktestRunner, "run", running)
    monkeypatch.setattr(runner_module.BacktestRunner, "_report_progress", reporting)
    monkeypatch.setattr(Engine, "run", walking)
    return stopper


def without_rest(monkeypatch, *, chunk_bars: int, seconds_per_chunk: float) -> None:
    """Periodic checkpoints taken whenever due and the saver is free: no rest for the saver (SAVER_DUTY) nor
    for the loop (LOOP_SHARE) after one, and a loop slower than a save (the real loop runs 10,000 bars in
    under 2 ms, faster than a first save connects to the database)."""
    from backtesting import engine, runner
    from runtime import context

    monkeypatch.setattr(context, "SAVER_DUTY", 1.0)
    monkeypatch.setattr(context, "LOOP_SHARE", 1.0)
    monkeypatch.setattr(runner, "CHUNK_BARS", chunk_bars)
    run = engine.Engine.run

    def slowly(self, stop):
        time.sleep(seconds_per_chunk)
        run(self, stop)

    monkeypatch.setattr(engine.Engine, "run", slowly)


@pytest.fixture
def no_rest(monkeypatch) -> None:
    """Tests of what each checkpoint does need several in a short run: chunks of 250 bars, 5 ms each."""
    without_rest(monkeypatch, chunk_bars=250, seconds_per_chunk=0.005)
