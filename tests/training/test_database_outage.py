"""A PostgreSQL restart in the middle of a training run does not kill it (SPEC §5, database outage).

Every process here (qcluster, supervise, the commands) talks to a PostgreSQL
server of the test's own, started on a free port and stopped for at least
OUTAGE_SECONDS while the operation runs. The orphan intervals are shorter than
the outage, so only the worker's re-registration and the control loop's
fresh watch after the outage keep the operation from being failed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.postgres import ThrowawayPostgres
from tests.support.processes import ROOT, ManagedProcess, child_env, wait_for

pytestmark = [pytest.mark.process]

OUTAGE_SECONDS = 16
HEARTBEAT_SECONDS = 1.0
INTERVALS = {
    "HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_SECONDS),
    "WORKER_STALE_SECONDS": "4",
    "ORPHAN_TIMEOUT_SECONDS": "8",
    "ORPHAN_CHECK_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "120",
    "CHECKPOINT_TIME_INTERVAL_SECONDS": "1",  # periodic saves keep being attempted through the outage
    "OMP_NUM_THREADS": "1",
    "Q_WORKERS": "1",
}
TRAIN = ["--symbol", "SYN", "--timeframe", "1h", "--batch-size", "8", "--hidden-sizes", "32,16",
         "--learning-rate", "0.003", "--seed", "11", "--checkpoint-every", "1000"]


@pytest.fixture(scope="module")
def server():
    postgres = ThrowawayPostgres()
    postgres.start()
    yield postgres
    postgres.destroy()


class Deployment:
    """A database on the throwaway server, folders, and the project's processes pointed at both."""

    def __init__(self, server: ThrowawayPostgres, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.database = f"outage_{tmp_path.name.lower().replace('-', '_')}"[:60]
        url = server.create_database(self.database)
        self.folders = {name: tmp_path / name.lower() for name in ("DATA_DIR", "MODELS_DIR", "CHECKPOINT_DIR",
                                                                   "WORKER_STATE_DIR", "VAR_DIR")}
        self.env = child_env(DATABASE_URL=url, **INTERVALS, **{name: str(path) for name, path in self.folders.items()})
        self.processes: list[ManagedProcess] = []
        self.manage("migrate", "--noinput")
        self.manage("marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "3000", "--seed", "5")

    def manage(self, *args: str) -> str:
        completed = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, f"manage.py {' '.join(args)}:\n{completed.stdout}\n{completed.stderr}"
        return completed.stdout

    def start(self, command: str, ready: str) -> ManagedProcess:
        process = ManagedProcess([command], self.env, self.tmp_path / f"{command}.log")
        self.processes.append(process)
        wait_for(lambda: ready in process.output or process.process.poll() is not None, timeout=60,
                 what=f"{command} to start")
        assert process.process.poll() is None, f"{command} exited:\n{process.output}"
        return process

    def train(self, epochs: int) -> str:
        return json.loads(self.manage("train", *TRAIN, "--epochs", str(epochs), "--json"))["operation_id"]

    def row(self, operation_id: str) -> dict:
        rows = self.server.query(
            self.database,
            "SELECT status, progress_current, result, error_message FROM operations_operation WHERE operation_id = %s",
            operation_id,
        )
        status, progress, result, error = rows[0]
        return {"status": status, "epoch": progress or 0, "result": result, "error": error}

    def statuses(self, operation_id: str) -> list[str]:
        rows = self.server.query(self.database, "SELECT to_status FROM operations_operationevent"
                                 " WHERE operation_id = %s ORDER BY at, id", operation_id)
        return [status for (status,) in rows]

    def checkpoint_epoch(self, operation_id: str) -> int | None:
        rows = self.server.query(self.database, "SELECT state FROM checkpoints_checkpoint WHERE operation_id = %s",
                                 operation_id)
        return rows[0][0]["epoch"] if rows else None

    def checkpoint_folders(self, operation_id: str) -> list[str]:
        folder = self.folders["CHECKPOINT_DIR"] / operation_id
        return sorted(path.name for path in folder.iterdir()) if folder.exists() else []

    def outbox(self) -> list[dict]:
        folder = self.folders["WORKER_STATE_DIR"] / "outbox"
        return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.exists() else []

    def logs(self) -> str:
        return "\n".join(process.output for process in self.processes)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
            tail = process.log_path.read_text().splitlines()[-30:]
            print(f"--- {process.log_path.name} (last lines)\n" + "\n".join(tail))


@pytest.fixture
def deployment(server, tmp_path):
    if not server.is_running():
        server.start()  # a previous test failed while the server was down
    deployed = Deployment(server, tmp_path)
    yield deployed
    deployed.stop_all()
    if not server.is_running():
        server.start()


def wait_for_epoch(deployment: Deployment, operation_id: str, epoch: int) -> None:
    def reached() -> bool:
        row = deployment.row(operation_id)
        assert row["status"] in ("PENDING", "RUNNING"), row
        return row["epoch"] >= epoch

    wait_for(reached, timeout=120, interval=0.1, what=f"epoch {epoch}")


def wait_for_outcome(deployment: Deployment, operation_id: str, timeout: float) -> dict:
    return wait_for(lambda: (row := deployment.row(operation_id))["status"] not in ("PENDING", "RUNNING") and row,
                    timeout=timeout, interval=0.1, what=f"{operation_id} to end")


def test_a_restart_mid_training_is_survived_and_the_run_completes(deployment):
    deployment.start("qcluster", "running.")
    deployment.start("supervise", "Startup reconciliation")
    operation_id = deployment.train(epochs=250)
    wait_for_epoch(deployment, operation_id, 5)
    wait_for(lambda: deployment.checkpoint_epoch(operation_id), timeout=30, what="a first periodic checkpoint")

    deployment.server.stop()
    down_at = time.monotonic()
    seen_during_outage: list[list[str]] = []
    while time.monotonic() - down_at < OUTAGE_SECONDS:
        seen_during_outage.append(deployment.checkpoint_folders(operation_id))
        time.sleep(0.5)
    assert deployment.outbox() == [], "the run ended during the outage: make it longer"
    deployment.server.start()
    print(f"database down for {time.monotonic() - down_at:.1f}s")
    print(f"epoch {deployment.row(operation_id)['epoch']} when the database came back")
    epoch_before = deployment.checkpoint_epoch(operation_id)

    # The worker went on computing: its next periodic checkpoint lands once the database is back.
    row = deployment.row(operation_id)
    assert row["status"] == "RUNNING", row
    wait_for(lambda: (deployment.checkpoint_epoch(operation_id) or 0) > epoch_before, timeout=30,
             what="a periodic checkpoint after the outage")

    final = wait_for_outcome(deployment, operation_id, timeout=300)
    print(f"ended {time.monotonic() - down_at:.1f}s after the outage began")
    assert final["status"] == "COMPLETED", final
    assert final["result"]["epochs_completed"] == 250
    statuses = deployment.statuses(operation_id)
    assert "FAILED" not in statuses and "PENDING_RECONCILIATION" not in statuses, statuses
    logs = deployment.logs()
    assert "the database is unreachable" in logs
    assert "not saved" in logs, "no periodic checkpoint was attempted during the outage"
    # A save that could not commit left nothing behind: at most one save in flight beside the committed one.
    assert max(len(folders) for folders in seen_during_outage) <= 2
    wait_for(lambda: deployment.checkpoint_folders(operation_id) == [], timeout=10, what="the checkpoint deleted")
    assert not (deployment.folders["CHECKPOINT_DIR"] / operation_id).exists()


def test_a_run_that_ends_while_the_database_is_down_is_reported_from_the_outbox(deployment):
    deployment.start("qcluster", "running.")
    deployment.start("supervise", "Startup reconciliation")
    operation_id = deployment.train(epochs=40)
    wait_for_epoch(deployment, operation_id, 30)

    deployment.server.stop()
    down_at = time.monotonic()
    entries = wait_for(deployment.outbox, timeout=OUTAGE_SECONDS, interval=0.1, what="the outcome in the outbox")
    assert [(entry["operation_id"], entry["status"]) for entry in entries] == [(operation_id, "COMPLETED")]
    assert entries[0]["result"]["epochs_completed"] == 40
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    deployment.server.start()
    back_at = time.monotonic()
    print(f"database down for {back_at - down_at:.1f}s")

    final = wait_for_outcome(deployment, operation_id, timeout=30)
    reported_after = time.monotonic() - back_at
    print(f"outcome reported {reported_after:.2f}s after the database came back")
    assert final["status"] == "COMPLETED", final
    assert final["result"] == entries[0]["result"]
    assert reported_after < HEARTBEAT_SECONDS + 5  # one backoff step (capped at the interval), plus a connect
    wait_for(lambda: deployment.outbox() == [], timeout=5, what="the outbox emptied once reported")
    statuses = deployment.statuses(operation_id)
    assert "FAILED" not in statuses, statuses
    wait_for(lambda: deployment.checkpoint_folders(operation_id) == [], timeout=10, what="the checkpoint deleted")


def test_an_outcome_left_in_the_outbox_by_a_killed_worker_is_reported_by_the_next_cluster(deployment):
    cluster = deployment.start("qcluster", "running.")
    operation_id = deployment.train(epochs=40)
    wait_for_epoch(deployment, operation_id, 30)
    deployment.server.stop()
    wait_for(deployment.outbox, timeout=OUTAGE_SECONDS, interval=0.1, what="the outcome in the outbox")
    os.killpg(cluster.process.pid, signal.SIGKILL)  # the worker dies before the database is back
    cluster.wait(timeout=10)
    deployment.server.start()
    assert deployment.row(operation_id)["status"] == "RUNNING"  # nobody has reported it yet

    deployment.start("qcluster", "running.")
    final = wait_for_outcome(deployment, operation_id, timeout=30)
    assert final["status"] == "COMPLETED", final
    assert final["result"]["epochs_completed"] == 40
    assert deployment.outbox() == []
    assert "Reported 1 outcome(s) from the outbox." in deployment.logs()
