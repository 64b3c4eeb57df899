"""A SIGKILL at any moment of a save leaves the latest committed checkpoint loadable.

A real process (tests/checkpoints/save_loop.py) saves checkpoints of a few
megabytes in a loop and is killed with SIGKILL at a random moment, again and
again, on the same operation.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from django.db import connection

from checkpoints.services import checkpoint_load, checkpoint_sweep_orphans
from tests.checkpoints.save_loop import artifacts_for
from tests.support.processes import ROOT, child_env, wait_for

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

RUNS = 15
LONGEST_WAIT_BEFORE_KILL = 0.6  # seconds after the first save of a run; a save takes a few tens of ms


def saved_epochs(log: Path) -> list[int]:
    return [int(epoch) for epoch in re.findall(r"^saved (\d+)$", log.read_text(), re.MULTILINE)]


def kill_during_saves(operation, env: dict[str, str], folder: Path, run: int, rng: random.Random) -> list[int]:
    """Start the save loop, SIGKILL it at a random moment after its first save; return the epochs it printed."""
    stdout, stderr = folder / f"save_loop-{run}.out", folder / f"save_loop-{run}.err"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.checkpoints.save_loop", operation.operation_id, operation.worker_id,
             str(operation.attempt)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            wait_for(lambda: saved_epochs(stdout) or process.poll() is not None, timeout=30, what="a first save")
            assert process.poll() is None, f"the save loop exited: {stderr.read_text()}"
            time.sleep(rng.uniform(0, LONGEST_WAIT_BEFORE_KILL))
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    assert "not saved" not in stderr.read_text(), stderr.read_text()
    wait_for(killed_backend_gone, timeout=10, what="the killed process's database session to end")
    return saved_epochs(stdout)


def killed_backend_gone() -> bool:
    """A COMMIT the killed process had already sent is still applied by its server session; once
    that session has ended, the database says what was committed. (The sweep below runs with no
    grace period, which a real deployment never does.)"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0] == 0


def test_sigkill_at_any_moment_of_a_save_leaves_the_last_committed_checkpoint(
    running_operation_factory, checkpoint_dir, tmp_path
):
    operation = running_operation_factory()
    env = child_env(CHECKPOINT_DIR=str(checkpoint_dir))
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    operation_folder = checkpoint_dir / operation.operation_id
    last_version = 0
    swept_per_run: list[int] = []
    started = time.monotonic()

    for run in range(RUNS):
        printed = kill_during_saves(operation, env, tmp_path, run, rng)

        assert printed, f"run {run} (seed {seed}) printed no save"
        loaded = checkpoint_load(operation.operation_id)  # checks every size and sha256
        epoch = loaded.state["epoch"]
        # A kill between the commit and the print loses the line, never the save.
        assert epoch >= printed[-1], f"run {run} (seed {seed}): committed epoch {epoch}, printed {printed[-1]}"
        assert loaded.artifacts == artifacts_for(epoch)
        # Epochs start at 1 and each committed save is the next one: the version counts them all.
        assert loaded.checkpoint.version == epoch
        assert loaded.checkpoint.version > last_version
        last_version = loaded.checkpoint.version

        committed = Path(loaded.checkpoint.artifacts_path).name
        leftovers = sorted(name for name in os.listdir(operation_folder) if name != committed)
        swept = checkpoint_sweep_orphans(grace_seconds=0)
        assert sorted(swept) == [f"{operation.operation_id}/{name}" for name in leftovers]
        assert os.listdir(checkpoint_dir) == [operation.operation_id]
        assert os.listdir(operation_folder) == [committed]
        assert checkpoint_load(operation.operation_id).artifacts == artifacts_for(epoch)
        swept_per_run.append(len(swept))

    # Most kills land inside a save (it is where the loop spends its time): prove some did.
    assert any(swept_per_run), f"no kill left a partial save behind (seed {seed})"
    print(
        f"\ncrash safety: {RUNS} runs, {RUNS} SIGKILLs, {last_version} committed saves, "
        f"leftovers swept per run {swept_per_run} (max {max(swept_per_run)}, "
        f"{sum(1 for count in swept_per_run if count)} kills mid-save), "
        f"{time.monotonic() - started:.1f} s, seed {seed}"
    )
