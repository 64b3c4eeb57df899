#!/usr/bin/env python
"""`make bench`, part two: the backtest engine's speed, and what its checkpoints cost, measured in one run.

1. `sma_cross` over 1M one-minute bars through the runtime's backtest runner:
   bars per second in the engine loop, and the loop's wall time with no
   checkpoint and with a checkpoint due every 10,000 bars, saved as a worker
   saves them (the new fills and the row by the committer process; the loop
   skips a due checkpoint while the saver is busy or resting, or while its
   own share of time on checkpoints is spent), and again with no rest at all.
   Each round runs every configuration once, in a shuffled order; the
   figures are the fastest run, the lower quartile and the median of each,
   against the same figure with no checkpoint. A control measures the plain
   run a second time, to show what the machine's noise alone makes of a
   comparison.
2. For scale, a bare Python loop over the same decisions (position and
   equity only: no costs, no trades, no checks).
3. The same checkpoints with the engine slowed to half a million bars a
   second (a busy wait after each chunk), the speed the target was set for:
   how many of the due checkpoints are taken then, and what they add.

The bars are read once (the loop is what is measured, not the CSV parser).
Runs on a throwaway SQLite database and folder (BENCH_DATABASE_URL: an empty
PostgreSQL database to use instead); prints the figures.
"""

from __future__ import annotations

import functools
import os
import random
import statistics
import time

from workspace import prepare

BARS = int(os.environ.get("BENCH_BARS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "25"))
PACE = 500_000  # bars a second: the speed the checkpoint target was set for
PACED_ROUNDS = int(os.environ.get("BENCH_PACED_ROUNDS", "5"))


def main() -> None:
    prepare("bench-backtest-")
    from django.core.management import call_command

    call_command("marketdata", "generate", "--symbol", "BENCH", "--timeframe", "1m", "--bars", str(BARS), "--seed", "1",
                 stdout=open(os.devnull, "w"))

    from django.db import connection

    from backtesting import runner as runner_module
    from backtesting.engine import HOLD, Engine
    from backtesting.params import BacktestParamsSerializer
    from backtesting.runner import BacktestRunner
    from operations.services.lifecycle import operation_claim, operation_create
    from operations.services.workers import worker_register
    from runtime.context import RunContext

    worker_register(worker_id="bench:bench:1")
    runner_module.load_bars = functools.lru_cache(maxsize=None)(runner_module.load_bars)  # it only reads them

    def params(every: int) -> dict:
        request = BacktestParamsSerializer(data={
            "symbol": "BENCH", "timeframe": "1m", "strategy": "sma_cross",
            "strategy_params": {"fast": 10, "slow": 30, "allow_short": True}, "checkpoint_every": every,
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
    from runtime import context as runtime_context

    def eager(every: int):
        """A run with no rest after a checkpoint (neither the saver's nor the loop's): the next due checkpoint is
        taken as soon as the previous one is in."""
        rests = runtime_context.SAVER_DUTY, runtime_context.LOOP_SHARE
        runtime_context.SAVER_DUTY = runtime_context.LOOP_SHARE = 1.0
        try:
            return backtest(every)
        finally:
            runtime_context.SAVER_DUTY, runtime_context.LOOP_SHARE = rests

    first_seconds, expected, runner = backtest(0)
    def measure(configurations: dict, rounds: int) -> dict[str, list[tuple[float, dict]]]:
        """(loop seconds, timings) of each configuration's runs: every configuration once a round, in a
        shuffled order; each run's trades and metrics checked against the first run's."""
        order = random.Random(0)
        runs = {name: [] for name in configurations}
        for _ in range(rounds):
            for name in order.sample(list(configurations), len(configurations)):
                seconds, result, _ = configurations[name]()
                assert result["trades"] == expected["trades"] and result["metrics"] == expected["metrics"], name
                runs[name].append((seconds, result["timings"]))
        if os.environ.get("BENCH_VERBOSE"):
            for name, measured in runs.items():
                print(f"  {name:8s}", " ".join(f"{seconds * 1e3:.0f}" for seconds, _ in measured))
        return runs

    def paced(every: int):
        """A run whose engine is slowed to PACE bars a second (a busy wait after each chunk), as a strategy
        doing more work per bar would be."""
        run = Engine.run

        def slower(self, stop):
            started, first = time.perf_counter(), self.state.next_bar
            run(self, stop)
            until = started + (stop - first) / PACE
            while time.perf_counter() < until:
                pass

        Engine.run = slower
        try:
            return backtest(every)
        finally:
            Engine.run = run

    runs = measure({"plain": lambda: backtest(0), "saved": lambda: backtest(10_000),
                    "eager": lambda: eager(10_000), "control": lambda: backtest(0)}, ROUNDS)
    paced_runs = measure({"plain": lambda: paced(0), "saved": lambda: paced(10_000)}, PACED_ROUNDS)
    engine_speed = max(BARS / timings["engine_seconds"] for _, timings in runs["plain"])
    median = statistics.median

    def statistics_of(name: str, measured: dict | None = None) -> list[float]:
        """The fastest, the lower quartile and the median of a configuration's loop times."""
        seconds = sorted(seconds for seconds, _ in (measured or runs)[name])
        return [seconds[0], statistics.quantiles(seconds, n=4)[0], median(seconds)]

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

    plain = statistics_of("plain")
    taken = [timings["periodic_checkpoints"] for _, timings in runs["saved"]]
    spent = median(timings["checkpoint_seconds"] for _, timings in runs["saved"])
    eager_taken = median(timings["periodic_checkpoints"] for _, timings in runs["eager"])
    print(f"Backtest, sma_cross over {BARS:,} one-minute bars ({len(expected['trades']):,} trades), "
          f"{ROUNDS} rounds ({connection.vendor}):")
    print(f"  engine loop, no checkpoints      {engine_speed:12,.0f} bars/s (best run; target: at least 500,000)")
    print("  loop wall time, in ms                              fastest  lower quartile  median")
    rows = (("plain", "no checkpoints"), ("saved", "a checkpoint due every 10k bars"),
            ("eager", "the same, taken with no rest"), ("control", "no checkpoints again (control)"))
    for name, label in rows:
        print(f"    {label:46s}" + "".join(f"{value * 1e3:10.1f}" for value in statistics_of(name)))
    print("  against no checkpoints, in %                       fastest  lower quartile  median")
    for name, label in rows[1:]:
        print(f"    {label:46s}" + "".join(f"{100 * (value / base - 1):+10.2f}"
                                           for value, base in zip(statistics_of(name), plain)))
    print("    (target: checkpoints every 10k bars add at most 3 %; the control shows what this machine's noise alone\n"
          "    makes of a comparison; noise only ever adds time, so the fastest runs say the most)")
    print(f"  checkpoints taken                {median(taken):10.0f}   of {BARS // 10_000 - 1} due (median; "
          f"{min(taken)} to {max(taken)}; {eager_taken:.0f} with no rest)")
    print(f"  loop time on checkpoints         {spent * 1e3:10.2f} ms  (median: taking them, "
          f"{100 * spent / plain[2]:.2f} % of the loop)")
    print(f"  bare Python loop, same decisions {BARS / bare:12,.0f} bars/s "
          f"(engine at {bare * engine_speed / BARS:.2f} x its speed)")
    paced_plain, paced_saved = statistics_of("plain", paced_runs), statistics_of("saved", paced_runs)
    paced_taken = [timings["periodic_checkpoints"] for _, timings in paced_runs["saved"]]
    print(f"  the engine slowed to {PACE:,} bars/s ({PACED_ROUNDS} rounds): a checkpoint due every 10k bars adds "
          + ", ".join(f"{100 * (value / base - 1):+.2f} %" for value, base in zip(paced_saved, paced_plain))
          + f" (fastest, lower quartile, median); {median(paced_taken):.0f} of {BARS // 10_000 - 1} due taken "
          f"({min(paced_taken)} to {max(paced_taken)})")


if __name__ == "__main__":
    main()
