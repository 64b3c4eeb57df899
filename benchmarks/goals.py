#!/usr/bin/env python
"""The figures of one `make bench` run beside their goals, last.

Each part records what it measured against a goal with `record()`, one JSON line each in BENCH_REPORT (the Makefile
gives a fresh file per run); run as a script, this prints them as one table, in the order recorded, with whether
each goal was met. A part that did not run (or failed before recording) leaves its lines out: the table says which
goals have no figure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPORT = os.environ.get("BENCH_REPORT", "")

# Every goal a part records, in the order the table lists them when a figure is missing.
GOALS = [
    "heartbeats sustained over HTTP (p99 < 50 ms, no error)",
    "statements of a heartbeat over HTTP (credential check included)",
    "statements of an in-process heartbeat",
    "HOT share of heartbeat row updates",
    "sweep pass acting on 5,000 stale operations",
    "statements of that pass (not growing with the count)",
    "sweep pass finding nothing at 1,000,000 operations",
    "operations list pages at 1,000,000 operations, worst p99",
    "platform overhead per tiny backtest (submit to COMPLETED)",
]


def record(goal: str, measured: float, target: float, unit: str, *, higher_is_better: bool = False,
           note: str = "") -> None:
    """Append one figure beside its goal (`target`, in `unit`) to BENCH_REPORT; nothing without it."""
    if not REPORT:
        return
    met = measured >= target if higher_is_better else measured <= target
    line = {"goal": goal, "measured": measured, "target": target, "unit": unit, "met": met,
            "at_least": higher_is_better, "note": note}
    with open(REPORT, "a") as report:
        report.write(json.dumps(line) + "\n")


def figure(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0f} %"
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"


def main() -> int:
    path = Path(REPORT) if REPORT else None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path and path.exists() \
        else []
    print("\n== make bench: each figure beside its goal (this run) ==")
    width = max(len(goal) for goal in GOALS + [line["goal"] for line in lines])
    print(f"{'goal':<{width}}  {'measured':>12}  {'target':>14}  verdict")
    for line in lines:
        bound = "≥" if line["at_least"] else "≤"
        print(f"{line['goal']:<{width}}  {figure(line['measured'], line['unit']):>12}  "
              f"{bound + ' ' + figure(line['target'], line['unit']):>14}  {'met' if line['met'] else 'NOT met'}"
              + (f"  ({line['note']})" if line["note"] else ""))
    missing = [goal for goal in GOALS if goal not in {line["goal"] for line in lines}]
    for goal in missing:
        print(f"{goal:<{width}}  {'no figure':>12}  {'':>14}  (its part did not run or did not finish)")
    met = sum(line["met"] for line in lines)
    print(f"{met} of {len(lines)} figures meet their goal" + (f"; {len(missing)} without a figure" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
