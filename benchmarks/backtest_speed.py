#!/usr/bin/env python
"""`make bench`, part two: the backtest engine's speed, and what its checkpoints cost, measured in one run.

1. `sma_cross` over 1M one-minute bars through the runtime's backtest runner:
   bars per second in the engine loop, with no checkpoint and with a
   checkpoint every 10,000 bars (saved as the runtime saves them: the spool
   segment and the row in the background); the overhead is the loop's wall
   time with checkpoints against without.
2. For scale, a bare Python loop over the same decisions (position and
   equity only: no costs, no trades, no checks).

Runs on a throwaway SQLite database and folder; prints the figures.
"""

from __future__ import annotations

import os
import time

from workspace import prepare

BARS = int(os.environ.get("BENCH_BARS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def main() -> None:
    prepare("bench-backtest-")
    from django.core.management import call_command

    call_command("marketdata", "generate", "--symbol", "BENCH", "--timeframe", "1m", "--bars", str(BARS), "--seed", "1",
                 stdout=open(os.devnull, "w"))

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
        return loop_end["at"] - started, result, runner

    backtest(0)  # warm-up
    rounds = [(backtest(0), backtest(10_000)) for _ in range(ROUNDS)]
    plain_seconds, plain_result, runner = min((r[0] for r in rounds), key=lambda run: run[0])
    saved_seconds, saved_result, _ = min((r[1] for r in rounds), key=lambda run: run[0])
    assert plain_result["trades"] == saved_result["trades"] and plain_result["metrics"] == saved_result["metrics"]

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

    checkpoints = saved_result["timings"]["periodic_checkpoints"]
    print(f"Backtest, sma_cross over {BARS:,} one-minute bars ({len(plain_result['trades']):,} trades), "
          f"best of {ROUNDS}:")
    print(f"  engine loop, no checkpoints      {BARS / plain_result['timings']['engine_seconds']:12,.0f} bars/s "
          f"(target: at least 500,000)")
    print(f"  loop wall time, no checkpoints   {plain_seconds:10.3f} s")
    print(f"  loop wall time, every 10k bars   {saved_seconds:10.3f} s ({checkpoints} checkpoints of {BARS // 10_000 - 1} due, "
          f"waited {saved_result['timings']['checkpoint_seconds']:.3f} s on them)")
    print(f"  checkpoint overhead              {100 * (saved_seconds / plain_seconds - 1):10.2f} %   "
          f"(target: at most 3 %)")
    per_checkpoint = (saved_seconds - plain_seconds) / max(1, checkpoints)
    print(f"  loop time per checkpoint taken   {per_checkpoint * 1e6:10.0f} us "
          f"(every 10,000 bars of a 500,000 bars/s loop: {100 * per_checkpoint / (10_000 / 500_000):.2f} %)")
    print(f"  bare Python loop, same decisions {BARS / bare:12,.0f} bars/s "
          f"(engine at {bare / plain_result['timings']['engine_seconds']:.2f} x its speed)")


if __name__ == "__main__":
    main()
