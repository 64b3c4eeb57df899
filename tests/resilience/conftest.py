"""The resilience suite: real processes under fire, each scenario run several times, and a table at the end.

Every module here is marked `process` and `resilience` (`make test-resilience` runs them alone), and every
test carries `@pytest.mark.scenario("…")`; its parameter `run` repeats it (RESILIENCE_RUNS
multiplies every scenario's runs, for a longer soak). At the end of the session the suite prints, for
each scenario, how many runs there were and how many failed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
from django.core.management import call_command

SOAK = int(os.environ.get("RESILIENCE_RUNS", "1"))
_runs: dict[str, list[bool]] = defaultdict(list)


def runs(count: int):
    """Parametrize a scenario's test over `count` × RESILIENCE_RUNS runs."""
    return pytest.mark.parametrize("run", range(1, count * SOAK + 1), ids=lambda run: f"run{run}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    marker = item.get_closest_marker("scenario")
    # One entry per run: its call, or its setup when that failed (the run never started).
    if marker and (report.when == "call" or (report.when == "setup" and report.failed)):
        _runs[marker.args[0]].append(report.failed)
    return report


def pytest_terminal_summary(terminalreporter):
    if not _runs:
        return
    width = max(len(name) for name in _runs)
    lines = [f"{'scenario':<{width}}  runs  failures", f"{'-' * width}  ----  --------"]
    lines += [f"{name:<{width}}  {len(outcomes):>4}  {sum(outcomes):>8}" for name, outcomes in _runs.items()]
    total = [outcome for outcomes in _runs.values() for outcome in outcomes]
    lines.append(f"{'all scenarios':<{width}}  {len(total):>4}  {sum(total):>8}")
    terminalreporter.write_sep("=", "resilience suite")
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture
def folders(tmp_path, settings, checkpoint_dir) -> dict[str, Path]:
    """The run's own folders, shared with its children, and the two series its operations read."""
    found = {
        "DATA_DIR": tmp_path / "data",
        "MODELS_DIR": tmp_path / "models",
        "RESULTS_DIR": tmp_path / "results",
        "WORKER_STATE_DIR": tmp_path / "worker-state",
        "CHECKPOINT_DIR": checkpoint_dir,
    }
    for name, folder in found.items():
        if name != "CHECKPOINT_DIR":
            setattr(settings, name, folder)
    call_command("marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "3000", "--seed", "5")
    call_command("marketdata", "generate", "--symbol", "LONG", "--timeframe", "1h", "--bars", "200000", "--seed", "9")
    return found
