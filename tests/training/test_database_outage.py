"""A database outage at the end of a training run: its outcome waits in the outbox (docs/restarts-and-crashes.md).

(A restart in the middle of a run is a scenario of the resilience suite: tests/resilience/test_database.py.)

Every process here (qcluster, supervise, the commands) talks to a PostgreSQL
server of the test's own, started on a free port and stopped for at least
OUTAGE_SECONDS while the operation runs. The orphan intervals are shorter than
the outage, so only the worker's re-registration and the control loop's
fresh watch after the outage keep the operation from being failed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.deployment import Deployment
from tests.support.processes import wait_for

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


@pytest.fixture
def deployment(server, tmp_path):
    if not server.is_running():
        server.start()  # a previous test failed while the server was down
    deployed = Deployment(server, tmp_path, INTERVALS)
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
