"""PostgreSQL restarted in the middle of a training and of a backtest: the runs go on and complete.

Every process talks to a server of the test's own (tests/support/postgres.py), stopped at a random moment
of the run for a random 5-10 s: longer than WORKER_STALE_SECONDS and ORPHAN_TIMEOUT_SECONDS, so only the
workers' re-registration and the control loop's fresh watch keep the runs from being failed.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.resilience.conftest import runs
from tests.resilience.fire import pause, seeded
from tests.support.backtests import SLOW_SETTINGS
from tests.support.deployment import Deployment
from tests.support.processes import wait_for

pytestmark = [pytest.mark.process, pytest.mark.resilience]

INTERVALS = {
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "WORKER_STALE_SECONDS": "4",
    "ORPHAN_TIMEOUT_SECONDS": "5",
    "ORPHAN_CHECK_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "120",
    "CHECKPOINT_TIME_INTERVAL_SECONDS": "1",  # periodic saves keep being attempted through the outage
    "OMP_NUM_THREADS": "1",
    "Q_WORKERS": "1",
}
BACKTEST = ["--symbol", "LONG", "--timeframe", "1h", "--strategy", "sma_cross", "--param", "fast=10",
            "--param", "slow=40", "--param", "allow_short=true", "--checkpoint-every", "20000"]


@pytest.fixture
def deployment(server, tmp_path):
    if not server.is_running():
        server.start()  # a previous run failed while the server was down
    deployed = Deployment(server, tmp_path, INTERVALS, series=(("SYN", 3000, 5), ("LONG", 200_000, 9)))
    yield deployed
    deployed.stop_all()
    if not server.is_running():
        server.start()


def slow_cluster(deployment: Deployment, seconds_per_bar: str):
    folder = deployment.tmp_path / "slow-settings"
    folder.mkdir(exist_ok=True)
    (folder / "slow_backtest_settings.py").write_text(SLOW_SETTINGS)
    return deployment.start("qcluster", "running.", DJANGO_SETTINGS_MODULE="slow_backtest_settings",
                            PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
                            SLOW_SECONDS_PER_BAR=seconds_per_bar)


def restart_during(deployment: Deployment, operation_id: str, rng) -> int:
    """Stop the server at a random moment after the run's first checkpoint, for 5-10 s. The run's checkpoint
    folders are counted meanwhile: a save that cannot commit must leave nothing behind, so there are never
    more than two (the committed one and one in flight); the most seen is returned."""
    wait_for(lambda: deployment.server.query(
        deployment.database, "SELECT 1 FROM checkpoints_checkpoint WHERE operation_id = %s", operation_id),
        timeout=60, interval=0.05, what="a first checkpoint")
    pause(rng, 0, 2)
    assert deployment.row(operation_id)["status"] == "RUNNING"
    deployment.server.stop()
    down_at, outage = time.monotonic(), rng.uniform(5, 10)
    most = 0
    while time.monotonic() - down_at < outage:
        most = max(most, len(deployment.checkpoint_folders(operation_id)))
        time.sleep(0.2)
    deployment.server.start()
    print(f"database down for {time.monotonic() - down_at:.1f}s")
    return most


def outcome(deployment: Deployment, operation_id: str) -> dict:
    return wait_for(lambda: (row := deployment.row(operation_id))["status"] not in ("PENDING", "RUNNING") and row,
                    timeout=300, interval=0.2, what=f"{operation_id} to end")


def assert_settled(deployment: Deployment, operation_ids: list[str]) -> None:
    try:
        wait_for(lambda: not deployment.violations(operation_ids), timeout=30, interval=1, what="the invariants")
    except AssertionError:
        raise AssertionError("\n".join(deployment.violations(operation_ids))) from None


def assert_never_failed(deployment: Deployment, operation_id: str) -> None:
    statuses = deployment.statuses(operation_id)
    assert "FAILED" not in statuses and "PENDING_RECONCILIATION" not in statuses, statuses


@pytest.mark.scenario("PostgreSQL restart mid-training")
@runs(1)
def test_postgresql_restart_mid_training(deployment, request, run):
    rng = seeded(request)
    deployment.start("qcluster", "running.")
    deployment.start("supervise", "Startup reconciliation")
    operation_id = deployment.train(120)
    assert restart_during(deployment, operation_id, rng) <= 2

    final = outcome(deployment, operation_id)
    assert final["status"] == "COMPLETED", final
    assert final["result"]["epochs_completed"] == 120
    assert_never_failed(deployment, operation_id)
    logs = deployment.logs()
    assert "the database is unreachable" in logs
    assert "not saved" in logs, "no periodic checkpoint was attempted during the outage"
    assert_settled(deployment, [operation_id])
    wait_for(lambda: not deployment.checkpoint_folders(operation_id), timeout=10, what="the checkpoint deleted")


@pytest.mark.scenario("PostgreSQL restart mid-backtest")
@runs(1)
def test_postgresql_restart_mid_backtest(deployment, request, run):
    rng = seeded(request)
    cluster = slow_cluster(deployment, "100e-6")  # about 10,000 bars a second: a run of some 20 s
    deployment.start("supervise", "Startup reconciliation")
    operation_id = deployment.backtest(*BACKTEST)
    assert restart_during(deployment, operation_id, rng) <= 2

    final = outcome(deployment, operation_id)
    assert final["status"] == "COMPLETED", final
    assert_never_failed(deployment, operation_id)
    assert "the database is unreachable" in deployment.logs()

    cluster.stop()
    slow_cluster(deployment, "0")
    straight = outcome(deployment, deployment.backtest(*BACKTEST))
    assert straight["status"] == "COMPLETED", straight
    for field in ("trades", "metrics", "equity_curve"):
        assert final["result"][field] == straight["result"][field], field
    assert_settled(deployment, [operation_id])
