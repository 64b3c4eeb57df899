#!/usr/bin/env python
"""`make bench`, part two: the backtest engine's speed, and what its checkpoints cost, measured in one run.

1. `sma_cross` over 1M one-minute bars through the runtime's backtest runner:
   bars per second in the engine loop, with no checkpoint and with a
   checkpoint due every 10,000 bars (saved as a worker saves them: the
   spool's new entries and the row by the committer process, the loop
   skipping a due checkpoint while the saver is busy or resting); the
   overhead is the loop's wall time with checkpoints against without, the
   median of ROUNDS runs of each, taken in turns.
2. For scale, a bare Python loop over the same decisions (position and
   equity only: no costs, no trades, no checks).

Runs on a throwaway SQLite database and folder (BENCH_DATABASE_URL: an empty
PostgreSQL database to use instead); prints the figures.
"""

from __future__ import annotations

import os
import time

from workspace import prepare

BARS = int(os.environ.get("BENCH_BARS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))


def main() -> None:
    prepare("bench-backtest-")
    from django.core.management import call_command

    call_command("marketdata", "generate", "--symbol", "BENCH", "--timeframe", "1m", "--bars", str(BARS), "--seed", "1",
                 stdout=open(os.devnull, "w"))

    from django.db import connection

    from backtesting.engine import HOLD
    from backtesting.params import BacktestParamsSerializer
    from backtesting.runner import BacktestRunner
    from operations.runtime.context import RunContext
    from operations.services.lifecycle import operation_claim, operation_create
    from operations.services.workers import worker_register

    worker_register(worker_id="bench:bench:1")

    def params(every: int) -> dict:
        request = BacktestParamsSerializer(data={
            "symbol": "BENCH", "timeframe": "1m", "strategy": "sma_cross",
            "params": {"fast": 10, "slow": 30, "allow_short": True}, "checkpoint_every": every,
            "checkpoint_seconds": 10**6,
        })
        request.is_valid(raise_exception=True)
        return request.to_params()

    def backtest(every: int) -> tuple[float, dict, BacktestRunner]:
        """The loop's wall time (engine, checks, progress, checkpoint waits; not the final result)."""
        operation = operation_create(operation_type="backtesting", params=params(every), actor="bench", enqueue=False)
        attempt = operation_claim(operation_id=operation.pk, worker_id="bench:bench:1")
        context = RunContext(operation_id=operation.pk, operation_type="backtesting", params=operation.params,
                             worker_id="bench:bench:1", attempt=attempt, resume_from=None)
        runner = BacktestRunner(context)
        finish = runner._finish
        loop_end = {}

        def timed_finish():
            loop_end["at"] = time.perf_counter()
            return finish()

        runner._finish = timed_finish
        started = time.perf_counter()
        result = runner.run()
        context.close()  # as the runtime does after each run: the committer is kept for the next one
        return loop_end["at"] - started, result, runner

    backtest(0)  # warm-up; and the worker's committer process started, as on a worker that ran a backtest before
    backtest(10_000)
    from operations.runtime import context as runtime_context

    def eager(every: int):
        """A run whose saver never rests: the next due checkpoint is taken as soon as the previous is in."""
        duty, runtime_context.SAVER_DUTY = runtime_context.SAVER_DUTY, 1.0
        try:
            return backtest(every)
        finally:
            runtime_context.SAVER_DUTY = duty

    rounds = [(backtest(0), backtest(10_000), eager(10_000), backtest(0)) for _ in range(ROUNDS)]
    plain = sorted((r[0] for r in rounds), key=lambda run: run[0])
    saved = sorted((r[1] for r in rounds), key=lambda run: run[0])
    eagerly = sorted((r[2] for r in rounds), key=lambda run: run[0])
    control = sorted((r[3] for r in rounds), key=lambda run: run[0])  # the same as `plain`: the noise
    plain_seconds, plain_result, runner = plain[len(plain) // 2]
    saved_seconds, saved_result, _ = saved[len(saved) // 2]
    assert all(run[1]["trades"] == plain_result["trades"] and run[1]["metrics"] == plain_result["metrics"]
               for run in plain + saved + eagerly)
    engine_speed = max(BARS / run[1]["timings"]["engine_seconds"] for run in plain)

    decisions, closes = runner.engine.targets, runner.engine.closes
    bare_times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        direction, pending, equity = 0, None, []
        record = equity.append
        for t in range(len(closes)):
            if pending is not None:
                direction, pending = pending, None
            record(direction * closes[t])
            decision = decisions[t]
            if decision != HOLD and decision != direction:
                pending = decision
        bare_times.append(time.perf_counter() - started)
    bare = min(bare_times)

    taken = sorted(run[1]["timings"]["periodic_checkpoints"] for run in saved)
    checkpoints = taken[len(taken) // 2]
    print(f"Backtest, sma_cross over {BARS:,} one-minute bars ({len(plain_result['trades']):,} trades), "
          f"{ROUNDS} runs of each ({connection.vendor}):")
    print(f"  engine loop, no checkpoints      {engine_speed:12,.0f} bars/s (best run; target: at least 500,000)")
    print(f"  loop wall time, no checkpoints   {plain_seconds:10.3f} s "
          f"(median; {plain[0][0]:.3f} to {plain[-1][0]:.3f})")
    print(f"  loop wall time, every 10k bars   {saved_seconds:10.3f} s "
          f"(median; {saved[0][0]:.3f} to {saved[-1][0]:.3f})")
    print(f"  checkpoints taken                {checkpoints:10d}   of {BARS // 10_000 - 1} due (median; "
          f"{taken[0]} to {taken[-1]}: one at a time, the saver working {runtime_context.SAVER_DUTY:.0%} of the time "
          f"at most)")
    print(f"  checkpoint overhead              {100 * (saved_seconds / plain_seconds - 1):10.2f} %   "
          f"(medians; target: at most 3 %)")
    print(f"  checkpoint overhead, best runs   {100 * (saved[0][0] / plain[0][0] - 1):10.2f} %")
    spent = saved_result["timings"]["checkpoint_seconds"]
    print(f"  loop time on checkpoints         {spent * 1e3:10.2f} ms  (the median run's own: taking them, "
          f"{100 * spent / saved_seconds:.2f} % of its loop)")
    eager_seconds, eager_result, _ = eagerly[len(eagerly) // 2]
    eager_taken = sorted(run[1]["timings"]["periodic_checkpoints"] for run in eagerly)[len(eagerly) // 2]
    print(f"  the same, the saver never resting {100 * (eager_seconds / plain_seconds - 1):9.2f} %   "
          f"({eager_taken} checkpoints taken; {(eager_seconds - plain_seconds) / max(1, eager_taken) * 1e6:.0f} us "
          f"of loop time each)")
    print(f"  control: no checkpoints again   {100 * (control[len(control) // 2][0] / plain_seconds - 1):10.2f} %   "
          f"(the same runs measured twice: what this machine's noise alone makes of the comparison)")
    print(f"  bare Python loop, same decisions {BARS / bare:12,.0f} bars/s "
          f"(engine at {bare * engine_speed / BARS:.2f} x its speed)")


if __name__ == "__main__":
    main()
