#!/usr/bin/env python
"""`make bench`, part four: how long a training stands still after its worker dies, until the restart policy has
it training again, with nobody's help (docs/self-healing.md).

Two "hosts" (two `qcluster`s with their own WORKER_HOST and worker state folders) and a `supervise`, on one
PostgreSQL database of the bench's own and the Redis broker (ORM if no Redis answers on 127.0.0.1:6379), run
a small training. Two failures, each measured under the default settings and under the short intervals the
tests use, side by side:

- a worker process killed (kill -9 of the process running the training; its cluster lives on and sees it go);
- a whole host killed (kill -9 of host-a's process group while the training runs there; host-b is idle).

Each row gives the seconds from the kill to the training RUNNING again (claimed by a live worker), and the
moments of the steps between, read from the operation's events: the run failed (by its cluster at once, or by
the sweep after WORKER_STALE_SECONDS and ORPHAN_TIMEOUT_SECONDS), the automatic resume (after
RESTART_BACKOFF_SECONDS, at the control loop's next pass), the claim.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from load import Resources, raise_exit
from workspace import ROOT

SHORT = {
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "WORKER_STALE_SECONDS": "2",
    "ORPHAN_TIMEOUT_SECONDS": "4",
    "ORPHAN_CHECK_INTERVAL_SECONDS": "0.5",
    "RESTART_BACKOFF_SECONDS": "0.5",
}
SETTINGS = {"default settings": {}, "short intervals (tests)": SHORT}
TRAIN = ["--symbol", "SYN", "--timeframe", "1h", "--epochs", "2000", "--batch-size", "8", "--hidden-sizes", "32,16",
         "--seed", "11", "--checkpoint-every", "2", "--json"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping())
    except Exception:
        return False


class Deployment:
    """The bench's database, folder and processes for one measurement."""

    def __init__(self, resources: Resources, intervals: dict[str, str], broker: str) -> None:
        self.resources = resources
        resources.database = f"bench_failover_{os.getpid()}_{secrets.token_hex(3)}"
        resources.create_database()
        resources.work = Path(f"/tmp/bench-failover-{resources.database}")
        resources.work.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base", "DATABASE_URL": resources.database_url(),
            "VAR_DIR": str(resources.work), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "warning",
            "Q_BROKER": broker, "Q_CLUSTER_NAME": resources.database, "REDIS_URL": "redis://127.0.0.1:6379/0",
            **intervals,
        }
        self.manage("migrate", "--noinput")
        self.manage("marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "3000", "--seed", "5")
        self.query_connection = None

    def manage(self, *args: str) -> str:
        completed = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                   text=True, timeout=300)
        if completed.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)}: {completed.stderr[-2000:]}")
        return completed.stdout

    def start(self, command: str, name: str, **env: str) -> subprocess.Popen:
        log_file = open(self.resources.work / f"{name}.log", "w")
        return self.resources.start([sys.executable, "manage.py", command], cwd=ROOT, env={**self.env, **env},
                                    stdout=log_file, stderr=subprocess.STDOUT)

    def host(self, name: str) -> subprocess.Popen:
        process = self.start("qcluster", name, WORKER_HOST=name, Q_WORKERS="2",
                             WORKER_STATE_DIR=str(self.resources.work / f"{name}-state"))
        self.wait(lambda: self.one("SELECT count(*) FROM operations_worker WHERE host = %s AND status = 'IDLE'",
                                   name)[0] == 2, f"{name}'s two idle workers", timeout=120)
        return process

    def one(self, sql: str, *params) -> tuple:
        import psycopg

        if self.query_connection is None:
            self.query_connection = psycopg.connect(self.resources.database_url(), autocommit=True)
        return self.query_connection.execute(sql, params).fetchone()

    def running_on(self, operation_id: str) -> tuple[str | None, int, int | None]:
        """(host, attempt, pid) of the worker running it, host None when it is not RUNNING."""
        status, host, attempt, pid = self.one(
            "SELECT o.status, w.host, o.attempt, w.pid FROM operations_operation o "
            "LEFT JOIN operations_worker w ON w.worker_id = o.worker_id WHERE o.operation_id = %s", operation_id)
        return (host if status == "RUNNING" else None), attempt, pid

    def events(self, operation_id: str) -> list[tuple[str, str, datetime, str]]:
        import psycopg

        with psycopg.connect(self.resources.database_url(), autocommit=True) as connection:
            return connection.execute(
                "SELECT from_status, to_status, at, reason FROM operations_operationevent WHERE operation_id = %s "
                "ORDER BY at, id", (operation_id,)).fetchall()

    def now(self) -> datetime:
        return self.one("SELECT now()")[0]

    @staticmethod
    def wait(condition, what: str, timeout: float = 600, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise RuntimeError(f"timed out waiting for {what}")

    def close(self) -> None:
        if self.query_connection is not None:
            self.query_connection.close()
        self.resources.close()


def measure(intervals: dict[str, str], broker: str, whole_host: bool) -> dict:
    deployment = Deployment(Resources(), intervals, broker)
    try:
        deployment.start("supervise", "supervise")
        host_a = deployment.host("host-a")
        operation_id = json.loads(deployment.manage("train", *TRAIN))["operation_id"]
        deployment.wait(lambda: deployment.running_on(operation_id)[0] == "host-a", "the training on host-a")
        deployment.wait(lambda: deployment.one("SELECT count(*) FROM checkpoints_checkpoint WHERE operation_id = %s",
                                               operation_id)[0], "its first checkpoint")
        if whole_host:
            deployment.host("host-b")
        _host, attempt, pid = deployment.running_on(operation_id)
        killed_at, killed_wall = time.monotonic(), deployment.now()
        if whole_host:
            os.killpg(host_a.pid, signal.SIGKILL)
            host_a.wait()
        else:
            os.kill(pid, signal.SIGKILL)
        deployment.wait(lambda: deployment.running_on(operation_id)[1] > attempt
                        and deployment.running_on(operation_id)[0] is not None, "the training running again",
                        interval=0.02)
        again = time.monotonic() - killed_at
        steps = {}
        for before, after, at, reason in deployment.events(operation_id):
            if at < killed_wall:
                continue
            name = {"FAILED": "failed", "RESUMING": "resumed", "RUNNING": "claimed"}.get(after)
            if name and name not in steps:
                steps[name] = (at - killed_wall).total_seconds()
            if after == "FAILED":
                steps["failed by"] = "its cluster" if "exited" in reason else "the sweep"
        return {"again": again, **steps, "host": deployment.running_on(operation_id)[0]}
    finally:
        deployment.close()


def main() -> None:
    signal.signal(signal.SIGTERM, raise_exit)
    broker = "redis" if redis_answers() else "orm"
    log(f"failover: broker {broker}; each measurement takes its own database, supervise and two clusters")
    rows = []
    for failure, whole_host in (("worker process killed", False), ("whole host killed", True)):
        for name, intervals in SETTINGS.items():
            log(f"  {failure}, {name} ...")
            rows.append((failure, name, measure(intervals, broker, whole_host)))
    print("\n== Failover: from kill -9 to the training running again, with nobody's help ==")
    print(f"broker: {broker}; short intervals: " + ", ".join(f"{k}={v}" for k, v in SHORT.items()))
    print(f"{'failure':<24} {'settings':<26} {'failed by':<12} {'failed':>8} {'resumed':>8} {'claimed':>8} "
          f"{'running again':>14}")
    for failure, name, row in rows:
        print(f"{failure:<24} {name:<26} {row.get('failed by', '-'):<12} {row.get('failed', 0):>7.1f}s "
              f"{row.get('resumed', 0):>7.1f}s {row.get('claimed', 0):>7.1f}s {row['again']:>13.1f}s")
    defaults = [row for _failure, name, row in rows if name == "default settings"]
    shorts = [row for _failure, name, row in rows if name != "default settings"]
    for (failure, _name, _row), default, short in zip(rows[::2], defaults, shorts):
        print(f"  {failure}: default settings take {default['again'] / short['again']:.0f}x the short intervals'")


if __name__ == "__main__":
    main()
