"""The resilience suite: real processes under fire, each scenario run several times, and a table at the end.

Every module here is marked `process` and `resilience` (`make test-resilience` runs them alone), and every
test carries `@pytest.mark.scenario("…")`; its parameter `run` repeats it (RESILIENCE_RUNS
multiplies every scenario's runs, for a longer soak). At the end of the session the suite prints, for
each scenario, how many runs there were and how many failed (tests/conftest.py: the hooks must be seen by
pytest-xdist's controlling process, which loads only the top conftest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command

SOAK = int(os.environ.get("RESILIENCE_RUNS", "1"))


def runs(count: int):
    """Parametrize a scenario's test over `count` × RESILIENCE_RUNS runs."""
    return pytest.mark.parametrize("run", range(1, count * SOAK + 1), ids=lambda run: f"run{run}")


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
