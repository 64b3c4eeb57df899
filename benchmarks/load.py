#!/usr/bin/env python
"""`make bench`, part three: the control plane under load, on PostgreSQL, through the real web server.

1. Heartbeats over HTTP: the app under gunicorn (gthread, 3 processes × 4 threads: a process per core and one
   more, as PostgreSQL shares the two cores; threads to overlap a request's ten database round trips; and
   keep-alive, which sync workers do not do, so each worker keeps its connection). N simulated workers
   registered through the API (`POST workers/register/`), each given a RUNNING operation (created and claimed
   as a django-q2 worker claims it), each POSTing `workers/<id>/heartbeat/` with its progress every second
   (ten times the default HEARTBEAT_INTERVAL_SECONDS) from a load generator of its own (benchmarks/loadgen.py,
   in BENCH_GENERATORS processes). N steps up, each step held for a window (a failed step is run once more;
   no step starts after BENCH_LOAD_BUDGET seconds): latency percentiles, errors, the generator's own lag,
   and where the CPU went. The answer is the largest N sustained with p99 < 50 ms and no error.
2. The orphan sweep (`sweep_orphans`, what `supervise` runs every ORPHAN_CHECK_INTERVAL_SECONDS) over
   100,000 operations: passes that act on a realistic mix (stale RUNNING, expired reconciliations, lost
   queue messages), each on the same state restored, and passes that find nothing (the usual case).
   EXPLAIN of every query a pass makes. Then a mass failure beside them: BENCH_SWEEP_MASS operations (5,000)
   whose workers all died together, the pass that finds them silent and the pass that fails them after the
   orphan timeout, timed with their statements counted; and, at the end of the bench, the pass that finds
   nothing again over BENCH_SWEEP_ROWS operations (1,000,000: the 100,000 and copies of their ended ones, `grow`).
   Each beside its goal: a pass acting on 5,000 in under 1 s, one finding nothing in under 20 ms.
3. The operations list at BENCH_PAGES_ROWS operations (1,000,000: the 100,000 and copies of their ended ones
   with their events, three each, `grow`), through the same gunicorn: `GET /api/v1/operations/` (as staff, and
   as a user owning a tenth of them; newest first, filtered by status, by type, by both) and the admin
   changelist (newest first, filtered by status and by type, and sorted by each column it offers a sort for,
   each way). Median, p99 and max of each, beside the goal (p99 under 50 ms); EXPLAIN of their queries.

BENCH_LOAD_PARTS (heartbeats,sweep,pages) runs only the parts named: `BENCH_LOAD_PARTS=sweep` needs no gunicorn.

The database is the bench's own (`bench_load_<pid>_<hex>`, created on the PostgreSQL server of
BENCH_DATABASE_URL, else of DATABASE_URL, else 127.0.0.1:5432), migrated, and dropped at the end, as are
gunicorn, the generators and the throwaway folder, on Ctrl+C or an error too.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from datetime import datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path

from goals import record
from workspace import ROOT, prepare

STEPS = [int(n) for n in os.environ.get("BENCH_LOAD_STEPS", "50,100,200,400,600,800,1000,1200,1500").split(",")]
WINDOW = float(os.environ.get("BENCH_LOAD_WINDOW", "15"))  # seconds measured per step
HEARTBEAT_BUDGET = float(os.environ.get("BENCH_LOAD_BUDGET", "200"))  # seconds: no new step starts after this
WARMUP = 2.0  # seconds of each step not measured (connections opened, caches warmed)
INTERVAL = 1.0  # each simulated worker's heartbeat interval
P99_TARGET = 0.050
GENERATORS = int(os.environ.get("BENCH_GENERATORS", "2"))
GUNICORN_CLASS = os.environ.get("BENCH_GUNICORN_CLASS", "gthread")
GUNICORN_WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "3"))
GUNICORN_THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", "4"))
GUNICORN_EXTRA = os.environ.get("BENCH_GUNICORN_EXTRA", "").split()  # more gunicorn options, an experiment
PAGE_REQUESTS = int(os.environ.get("BENCH_PAGE_REQUESTS", "100"))
ADMIN_REQUESTS = int(os.environ.get("BENCH_ADMIN_REQUESTS", "100"))
PAGES_ROWS = int(os.environ.get("BENCH_PAGES_ROWS", "1000000"))  # operations the list pages are measured over
# Opt-in experiments, none by default: persistent database connections in gunicorn (seconds; the app's is 0),
# and indexes dropped from the bench's database only (comma-separated names) to see what they cost.
# gunicorn's DATABASE_CONN_MAX_AGE: 60, as the configuration guide advises for the web (0: a connect per request)
CONN_MAX_AGE = os.environ.get("BENCH_CONN_MAX_AGE", "60")
DROP_INDEXES = [name for name in os.environ.get("BENCH_DROP_INDEXES", "").split(",") if name]
SWEEP_PASSES = int(os.environ.get("BENCH_SWEEP_PASSES", "5"))
MASS = int(os.environ.get("BENCH_SWEEP_MASS", "5000"))  # operations whose workers die at once (0: not measured)
MASS_PASSES = int(os.environ.get("BENCH_SWEEP_MASS_PASSES", "3"))
SWEEP_ROWS = int(os.environ.get("BENCH_SWEEP_ROWS", "1000000"))  # the empty pass again at this size (0: not)
SWEEP_ACTING_GOAL = 1.0  # seconds: a pass acting on 5,000 operations (and their workers)
SWEEP_IDLE_GOAL = 0.020  # seconds: a pass that finds nothing, at a million operations
PARTS = {part.strip() for part in os.environ.get("BENCH_LOAD_PARTS", "heartbeats,sweep,pages").split(",")}
FULL_RESULT_DAYS = 5  # operations finished this recently carry full-size results; older ones compact ones

# The 100,000 operations: kind → count. A kind fixes the status and how old the heartbeat or queue entry is;
# ages keep 20 s from the next threshold, so a pass that finds nothing finds nothing for a while.
MIX = {
    "COMPLETED": 85_825,
    "FAILED": 4_500,
    "FAILED_ORPHAN": 500,  # failed by the sweep earlier
    "CANCELLED": 5_000,
    "RUNNING_FRESH": 1_000,  # heartbeat 0-10 s old: left alone
    "RUNNING_STALE": 150,  # 32-40 s: → PENDING_RECONCILIATION
    "RUNNING_LOST": 50,  # 65-600 s: → PENDING_RECONCILIATION, then FAILED in the same pass
    "RECONCILING": 100,  # orphan clock 32-40 s: left alone
    "RECONCILING_EXPIRED": 50,  # 70-600 s: → FAILED
    "PENDING": 2_400,  # queued 0-100 s ago: left alone
    "PENDING_LOST": 100,  # queued 130 s-1 h ago: re-enqueued
    "RESUMING": 300,
    "RESUMING_LOST": 25,
}
TERMINAL_KINDS = {"COMPLETED": "COMPLETED", "FAILED": "FAILED", "FAILED_ORPHAN": "FAILED", "CANCELLED": "CANCELLED"}
USER_SHARE = 0.10  # of the operations owned by the ordinary user measured in part 3

SETTINGS_ENV = {  # the defaults, whatever this shell exports
    "DJANGO_SETTINGS_MODULE": "config.settings.base", "DJANGO_DEBUG": "false", "LOG_LEVEL": "error",
    "Q_BROKER": "orm", "HEARTBEAT_INTERVAL_SECONDS": "10", "WORKER_STALE_SECONDS": "30",
    "ORPHAN_TIMEOUT_SECONDS": "60", "ORPHAN_CHECK_INTERVAL_SECONDS": "15", "REQUEUE_AFTER_SECONDS": "120",
}


def log(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


# --- what the bench starts, and stops whatever happens

class Resources:
    """The bench's database, processes and folder; `close()` undoes them all (idempotent)."""

    def __init__(self) -> None:
        self.server_url = server_url()
        self.database = f"bench_load_{os.getpid()}_{secrets.token_hex(3)}"
        self.processes: list[subprocess.Popen] = []
        self.work: Path | None = None
        self.created = False

    def database_url(self) -> str:
        return urllib.parse.urlparse(self.server_url)._replace(path=f"/{self.database}").geturl()

    def admin(self, statement: str) -> None:
        import psycopg

        maintenance = urllib.parse.urlparse(self.server_url)._replace(path="/postgres").geturl()
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as connection:
            connection.execute(statement)

    def create_database(self) -> None:
        self.admin(f'CREATE DATABASE "{self.database}"')
        self.created = True

    def start(self, command: list[str], **kwargs) -> subprocess.Popen:
        # A session of its own: Ctrl+C reaches this script only, which then stops it in order.
        process = subprocess.Popen(command, start_new_session=True, **kwargs)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen, grace: float = 10.0) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in list(self.processes):
            self.stop(process)
        if self.created:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # Django may not be set up yet
                pass
            self.admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self.created = False
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None


def server_url() -> str:
    for name in ("BENCH_DATABASE_URL", "DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgres://", "postgresql://")):
            return url
    return "postgres://postgres@127.0.0.1:5432/postgres"


def raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)


# --- the 100,000 operations

def populate(users: list, bench_user, rng: random.Random) -> tuple[datetime, dict[str, int]]:
    """COPY the mix of MIX, with their workers, events and checkpoints, in one transaction; then VACUUM ANALYZE.
    Returns the moment the ages are counted from, and the count of each status.

    Owners: a tenth to `bench_user`, a twentieth to nobody (the command line), the rest spread over `users`.
    Results: full size (training history, a backtest's 500 chart points and trades) for operations finished in
    the last FULL_RESULT_DAYS (the first pages of every list), compact ones for older operations.
    """
    from django.db import connection, transaction

    from operations import registry
    from operations.clock import db_now
    from operations.summaries import figures_dict

    began = time.perf_counter()
    now = db_now()
    full_results = {kind: [full_result(kind, rng) for _ in range(20)] for kind in ("training", "backtesting")}
    ids: set[str] = set()
    operations, events, checkpoints, workers = [], [], [], []
    history_workers = [f"gpu-{i % 40}:resilient:{10_000 + i}" for i in range(300)]
    for worker_id in history_workers:
        seen = now - timedelta(days=rng.uniform(1, 90))
        workers.append(worker_row(worker_id, "UNAVAILABLE", None, seen - timedelta(hours=6), seen))

    def seconds_ago(low: float, high: float) -> datetime:
        return now - timedelta(seconds=rng.uniform(low, high))

    for kind, count in MIX.items():
        for _ in range(count):
            live = kind not in TERMINAL_KINDS
            if live:
                operation_type = "training" if rng.random() < 0.55 else "backtesting"
            else:
                operation_type = rng.choices(["training", "backtesting", "agent_research"], [50, 45, 5])[0]
            local = operation_type == "agent_research"
            created = seconds_ago(600, 90 * 86_400) if not live else seconds_ago(60, 6 * 3600)
            status = TERMINAL_KINDS.get(kind) or kind.split("_")[0].replace("RECONCILING", "PENDING_RECONCILIATION")
            params = params_of(operation_type, rng)
            row = {
                "operation_id": unique_id(operation_type, created, rng, ids), "operation_type": operation_type,
                "status": status, "previous_status": "", "version": 0, "owner_id": None, "worker_id": None,
                "attempt": 0, "is_backend_local": local, "parent_id": None,
                "params": json.dumps(params), "result": None, "summary": "{}", "error_message": "",
                "presumed_orphan": False, "progress_percent": 0.0, "progress_message": "", "progress_current": 0,
                "progress_total": 50 if operation_type == "training" else 200_000,
                "progress_unit": "epochs" if operation_type == "training" else "bars",
                "created_at": created, "queued_at": None if local else created, "started_at": None,
                "completed_at": None, "last_heartbeat_at": None, "cancel_requested_at": None,
                "orphan_clock_from": None, "max_restarts": 0, "restarts": 0, "end_cause": "", "restart_due_at": None,
                "restart_from": None, "stalls": 0,
            }
            draw = rng.random()
            owner = bench_user if draw < USER_SHARE else None if draw < USER_SHARE + 0.05 else rng.choice(users)
            row["owner_id"] = owner.pk if owner else None
            actor = f"user:{owner.username}" if owner else "cli"
            events.append((row["operation_id"], "", "PENDING", "Created", actor, created))
            if kind.startswith("PENDING"):
                if kind == "PENDING_LOST":
                    row["queued_at"] = seconds_ago(130, 3600)
                else:
                    row["created_at"] = row["queued_at"] = seconds_ago(0, 100)
                    events[-1] = (*events[-1][:5], row["created_at"])
            else:
                start_running(row, now, rng, live, history_workers, workers, events, kind)
            if kind.startswith("RESUMING"):
                row["queued_at"] = seconds_ago(130, 3600) if kind == "RESUMING_LOST" else seconds_ago(0, 100)
                row.update(status="RESUMING", previous_status="CANCELLED", version=row["version"] + 1)
                events.append((row["operation_id"], "CANCELLED", "RESUMING", "Resume requested", actor,
                               row["queued_at"]))
            if status == "COMPLETED":
                fresh = row["completed_at"] > now - timedelta(days=FULL_RESULT_DAYS)
                result = (rng.choice(full_results[operation_type]) if fresh and not local
                          else compact_result(operation_type, rng))
                row["result"] = json.dumps(result)
                row["summary"] = json.dumps(figures_dict(registry.result_summary(operation_type, result, params)))
            if (status in ("FAILED", "CANCELLED", "RESUMING") and rng.random() < 0.6) or (
                    status == "RUNNING" and rng.random() < 0.5):
                checkpoints.append(checkpoint_row(row, rng))
            operations.append(row)

    log(f"rows built in {time.perf_counter() - began:.1f} s; copying {len(operations):,} operations, "
        f"{len(events):,} events, {len(checkpoints):,} checkpoints, {len(workers):,} workers")
    connection.ensure_connection()
    raw = connection.connection  # psycopg's own, for COPY
    with transaction.atomic(), raw.cursor() as cursor:
        copy_rows(cursor, "operations_worker", workers)
        copy_rows(cursor, "operations_operation", operations)
        with cursor.copy("COPY operations_operationevent (operation_id, from_status, to_status, reason, actor, at, "
                         "principal) FROM STDIN") as copy:
            for event in events:
                copy.write_row((*event, ""))
        copy_rows(cursor, "checkpoints_checkpoint", checkpoints)
    log(f"copied at {time.perf_counter() - began:.1f} s; VACUUM ANALYZE")
    with connection.cursor() as cursor:
        for table in ("operations_operation", "operations_operationevent", "operations_worker",
                      "checkpoints_checkpoint"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    counts: dict[str, int] = {}
    for row in operations:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return now, counts


def copy_rows(cursor, table: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[column] for column in columns])


def unique_id(operation_type: str, created: datetime, rng: random.Random, ids: set[str]) -> str:
    while True:
        operation_id = f"op_{operation_type}_{created:%Y%m%d_%H%M%S}_{rng.getrandbits(32):08x}"
        if operation_id not in ids:
            ids.add(operation_id)
            return operation_id


def worker_row(worker_id: str, status: str, operation_id: str | None, registered: datetime,
               seen: datetime) -> dict:
    host, _cluster, pid = worker_id.split(":")
    return {"worker_id": worker_id, "worker_type": "qcluster", "host": host, "pid": int(pid),
            "capabilities": json.dumps({"device": "cuda", "cpu_count": 16, "gpu": "A10"}), "status": status,
            "current_operation_id": operation_id, "registered_at": registered, "last_seen_at": seen}


def start_running(row: dict, now: datetime, rng: random.Random, live: bool, history_workers: list[str],
                  workers: list[dict], events: list[tuple], kind: str) -> None:
    """The part of an operation's life after its claim: who ran it, its heartbeat, its end."""
    operation_id, local = row["operation_id"], row["is_backend_local"]
    started = row["created_at"] + timedelta(seconds=rng.uniform(0.5, 30))
    row.update(attempt=1, version=1, previous_status="PENDING", started_at=started)
    if local:
        worker_id, actor = None, "control-loop"
    elif live and kind != "RESUMING" and kind != "RESUMING_LOST":
        worker_id = f"node-{len(workers) % 97}:resilient:{20_000 + len(workers)}"
        actor = f"worker:{worker_id}"
    else:
        worker_id = rng.choice(history_workers)
        actor = f"worker:{worker_id}"
    row["worker_id"] = worker_id
    events.append((operation_id, "PENDING", "RUNNING", "Claimed by worker", actor, started))
    total = row["progress_total"]
    if kind.startswith("RUNNING") or kind.startswith("RECONCILING"):
        beat = {"RUNNING_FRESH": (0, 10), "RUNNING_STALE": (32, 40), "RUNNING_LOST": (65, 600),
                "RECONCILING": (32, 40), "RECONCILING_EXPIRED": (70, 600)}[kind]
        heartbeat = max(started, now - timedelta(seconds=rng.uniform(*beat)))
        done = rng.uniform(0.05, 0.95)
        row.update(last_heartbeat_at=heartbeat, progress_percent=round(100 * done, 1),
                   progress_current=int(done * total), progress_message=f"{int(done * total)} of {total}")
        if kind.startswith("RECONCILING"):
            row.update(status="PENDING_RECONCILIATION", previous_status="RUNNING", version=2,
                       orphan_clock_from=heartbeat)
            events.append((operation_id, "RUNNING", "PENDING_RECONCILIATION",
                           f"No heartbeat from worker {worker_id} for 31s", "control-loop",
                           heartbeat + timedelta(seconds=31)))
        status = "UNAVAILABLE" if kind.startswith("RECONCILING") else "BUSY"
        workers.append(worker_row(worker_id, status, operation_id if status == "BUSY" else None,
                                  started - timedelta(seconds=5), heartbeat))
        return
    finished = started + timedelta(seconds=rng.uniform(60, 4 * 3600))
    row["last_heartbeat_at"] = finished - timedelta(seconds=rng.uniform(0, 10))
    status = TERMINAL_KINDS.get(kind, "CANCELLED")  # RESUMING ones were cancelled first
    done = 1.0 if status == "COMPLETED" else rng.uniform(0.05, 0.95)
    row.update(status=status, previous_status="RUNNING", version=2, completed_at=finished,
               progress_percent=round(100 * done, 1), progress_current=int(done * total),
               progress_message=f"{int(done * total)} of {total}")
    reason = {"COMPLETED": "Completed", "CANCELLED": "Cancelled by request", "FAILED": "ValueError: loss is NaN"}
    if kind == "FAILED_ORPHAN":
        row.update(previous_status="PENDING_RECONCILIATION", version=3, presumed_orphan=True,
                   error_message=f"Worker {worker_id} became unavailable")
        reason["FAILED"] = row["error_message"]
    elif status == "FAILED":
        row["error_message"] = "ValueError: loss is NaN at epoch 17"
    events.append((operation_id, "RUNNING", status, reason[status], actor, finished))


def params_of(operation_type: str, rng: random.Random) -> dict:
    if operation_type == "training":
        return {"symbol": "BTCUSD", "timeframe": "1h", "start": None, "end": None, "epochs": 50, "batch_size": 256,
                "hidden_sizes": [256, 128], "learning_rate": 0.001, "seed": rng.randrange(10_000),
                "checkpoint_every": 10, "features": {"return_windows": [1, 5, 20], "sma_windows": [10, 30],
                                                      "volatility_windows": [20], "rsi_window": 14,
                                                      "volume_windows": [20]}}
    if operation_type == "backtesting":
        return {"symbol": "BTCUSD", "timeframe": "1m", "start": None, "end": None, "strategy": "sma_cross",
                "strategy_params": {"fast": rng.choice([5, 10, 20]), "slow": rng.choice([30, 50, 100]),
                                    "allow_short": True}, "model": None, "initial_cash": 10_000.0,
                "commission": 0.001, "slippage": 0.0005, "checkpoint_every": 10_000}
    return {"symbol": "BTCUSD", "timeframe": "1h", "seed": rng.randrange(10_000)}


def compact_result(operation_type: str, rng: random.Random) -> dict:
    if operation_type == "training":
        return {"epochs_completed": 50, "best_val_loss": rng.uniform(0.5, 0.7), "best_epoch": rng.randrange(50),
                "final_val_accuracy": rng.uniform(0.45, 0.6)}
    if operation_type == "backtesting":
        return {"metrics": {"total_return": rng.uniform(-0.3, 0.5), "sharpe": rng.uniform(-1, 2),
                            "max_drawdown": rng.uniform(0, 0.4), "trades": rng.randrange(500)}}
    return {"verdict": rng.choice(["accepted", "rejected"]), "phase": "ASSESSED"}


def full_result(operation_type: str, rng: random.Random) -> dict:
    """The shape the runners write (training: 50 epochs of history; a backtest: metrics, 60 trades, 500 chart
    points)."""
    if operation_type == "training":
        history = [{"epoch": e, "train_loss": rng.random(), "val_loss": rng.random(), "val_accuracy": rng.random(),
                    "learning_rate": 0.001, "seconds": rng.uniform(1, 9), "checkpoint": e % 10 == 0}
                   for e in range(1, 51)]
        return {"model_path": "/var/models/x/model.pt", "best_model_path": "/var/models/x/best_model.pt",
                "feature_spec_path": "/var/models/x/feature_spec.json", "epochs_completed": 50,
                "best_val_loss": 0.61, "best_epoch": 37, "final_val_loss": 0.63, "final_val_accuracy": 0.55,
                "history": history, "samples": {"train": 40_000, "validation": 10_000},
                "validation_start": "2024-03-01T00:00:00Z", "timings": {"train_seconds": 180.2,
                                                                         "checkpoint_seconds": 1.9}}
    start = datetime(2024, 1, 1)
    trades = [{"entry_time": f"{start + timedelta(minutes=300 * i):%Y-%m-%dT%H:%M:%S}Z",
               "exit_time": f"{start + timedelta(minutes=300 * i + 120):%Y-%m-%dT%H:%M:%S}Z",
               "side": rng.choice(["long", "short"]), "quantity": rng.uniform(0.1, 2),
               "entry_price": rng.uniform(1e4, 6e4),
               "exit_price": rng.uniform(1e4, 6e4), "pnl": rng.uniform(-200, 200), "return": rng.uniform(-0.02, 0.02),
               "commission": rng.uniform(1, 20), "entry_bar": 300 * i, "exit_bar": 300 * i + 120,
               "closed_at_end": False} for i in range(60)]
    equity = [[f"{start + timedelta(minutes=400 * i):%Y-%m-%dT%H:%M:%S}Z", 10_000 + rng.uniform(-500, 900)]
              for i in range(500)]
    return {"strategy": "sma_cross", "strategy_params": {"fast": 10, "slow": 30, "allow_short": True},
            "bars": 200_000, "first_bar": "2024-01-01T00:00:00Z", "last_bar": "2024-05-19T21:19:00Z",
            "metrics": {"total_return": 0.12, "annualised_return": 0.31, "sharpe": 1.1, "max_drawdown": 0.08,
                        "win_rate": 0.52, "trades": 60, "exposure": 0.7, "buy_and_hold_return": 0.2},
            "trades": trades, "equity_curve_path": "/var/results/x/equity.npy", "equity_curve": equity,
            "timings": {"engine_seconds": 0.3, "bars_per_second": 666_000, "bars_processed": 200_000,
                        "checkpoint_seconds": 0.01, "periodic_checkpoints": 19}}


def checkpoint_row(row: dict, rng: random.Random) -> dict:
    training = row["operation_type"] == "training"
    state = {"epoch": rng.randrange(1, 50)} if training else {"bar_index": rng.randrange(200_000)}
    if row["operation_type"] == "agent_research":
        state = {"phase": "TRAINING"}
    kinds = {"RUNNING": "periodic", "FAILED": "failure"}
    names = ["model.pt", "optimizer.pt", "best_model.pt", "rng.pt", "scheduler.pt"]
    return {"operation_id": row["operation_id"], "checkpoint_type": kinds.get(row["status"], "cancellation"),
            "created_at": row["last_heartbeat_at"] or row["created_at"],
            "state": json.dumps({**state, "best_val_loss": 0.6}), "artifacts_path": f"{row['operation_id']}/save-1",
            "manifest": json.dumps([{"name": name, "size": 4_000_000, "sha256": secrets.token_hex(32)}
                                    for name in names]),
            "state_size_bytes": 300, "artifacts_size_bytes": 20_000_000, "version": 1}


# --- the million

COPY_AGE = 90  # days: each round of copies of the ended operations is this much older than the one before


def grow(rows: int) -> int:
    """Copies of the mix's ended operations until there are `rows` operations, in rounds, each round COPY_AGE days
    older than the one before (every time of a copy moved back, its id made from its new creation time): a history
    of years behind the recent 100,000, with the same owners, types and statuses. Each copy has its original's
    events (three: created, claimed, ended), moved back alike; no result (a list never reads one) nor checkpoint.
    Then VACUUM ANALYZE, as autovacuum would after such growth. Returns how many were added."""
    from django.db import connection

    from operations.models import Operation

    before = Operation.objects.count()
    if rows <= before:
        return 0
    started = time.perf_counter()
    ended = Operation.objects.filter(status__in=["COMPLETED", "FAILED", "CANCELLED"]).count()
    columns = [field.column for field in Operation._meta.concrete_fields]
    moved = {field.column for field in Operation._meta.concrete_fields if field.get_internal_type() == "DateTimeField"}
    values = {"operation_id": "c.operation_id", "result": "NULL",
              **{column: f"o.{column} - c.round * interval '{COPY_AGE} days'" for column in moved}}
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_copies AS "
            "SELECT o.operation_id AS source, g AS round, 'op_' || o.operation_type || '_' "
            f"|| to_char(o.created_at - g * interval '{COPY_AGE} days', 'YYYYMMDD_HH24MISS') || '_' "
            "|| substr(md5(o.operation_id || g), 1, 8) AS operation_id "
            "FROM generate_series(1, %(rounds)s) g CROSS JOIN operations_operation o "
            "WHERE o.status IN ('COMPLETED', 'FAILED', 'CANCELLED') ORDER BY g, o.operation_id LIMIT %(more)s",
            {"rounds": math.ceil((rows - before) / max(1, ended)), "more": rows - before})
        cursor.execute(
            f"INSERT INTO operations_operation ({', '.join(columns)}) "
            f"SELECT {', '.join(values.get(column, f'o.{column}') for column in columns)} "
            "FROM bench_copies c JOIN operations_operation o ON o.operation_id = c.source")
        added = cursor.rowcount
        cursor.execute(
            "INSERT INTO operations_operationevent (operation_id, from_status, to_status, reason, actor, principal, at) "
            "SELECT c.operation_id, e.from_status, e.to_status, e.reason, e.actor, e.principal, "
            f"e.at - c.round * interval '{COPY_AGE} days' "
            "FROM bench_copies c JOIN operations_operationevent e ON e.operation_id = c.source")
        events = cursor.rowcount
        cursor.execute("DROP TABLE bench_copies")
        log(f"{added:,} operations and {events:,} events copied in {time.perf_counter() - started:.0f} s; "
            "VACUUM ANALYZE")
        for table in ("operations_operation", "operations_operationevent"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    log(f"{before + added:,} operations after {time.perf_counter() - started:.0f} s")
    return added


# --- EXPLAIN

class QueryLog:
    """Every query run through Django's connection while installed (`connection.execute_wrapper`)."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, tuple]] = []

    def __call__(self, execute, sql, params, many, context):
        self.queries.append((sql, params))
        return execute(sql, params, many, context)


def explain(queries: list[tuple[str, tuple]], indent: str = "    ", analyse_writes: bool = False) -> list[str]:
    """One line per distinct statement: how often it ran, its scans, and (SELECTs, by EXPLAIN ANALYZE) its time;
    with `analyse_writes`, the time of its writes too, each run in a transaction rolled back.

    A sequential scan of a table over 10,000 rows is flagged: that is where an index would help."""
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r'")
        sizes = dict(cursor.fetchall())
    seen: dict[str, tuple] = {}
    runs: dict[str, int] = {}
    for sql, params in queries:
        runs[sql] = runs.get(sql, 0) + 1
        seen.setdefault(sql, params)
    lines = []
    others = 0
    for sql, params in seen.items():
        verb = sql.lstrip().split(" ", 1)[0].upper()
        if verb not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
            continue
        if not re.search(r"operations_operation|operations_worker|checkpoints_checkpoint|statement_timestamp", sql):
            others += runs[sql]  # sessions, users, permissions: by primary key or tiny tables
            continue
        analyse = verb == "SELECT" or analyse_writes
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(("EXPLAIN (ANALYZE) " if analyse else "EXPLAIN ") + sql, params)
            plan = [line for (line,) in cursor.fetchall()]
            transaction.set_rollback(True)  # what a write's ANALYZE changed
        scans = []
        for line in plan:
            text = line.strip().removeprefix("->").strip()
            node = text.split("  (")[0]
            match = re.match(r"(?:Parallel )?(Seq Scan|Index Only Scan(?: Backward)?|Index Scan(?: Backward)?|"
                             r"Bitmap Index Scan)(?: using (\S+))?(?: on (\S+))?", node)
            if match:
                kind, index, table = match.groups()
                flag = ""
                if kind == "Seq Scan" and sizes.get(table, 0) > 10_000:
                    flag = f" !! SEQUENTIAL SCAN of {sizes[table]:,} rows"
                scans.append(f"{kind} {index or table}{flag}")
            elif node in ("Sort", "Incremental Sort", "HashAggregate", "Unique"):
                scans.append(node)
            elif text.startswith("Sort Method:") and scans:
                scans[-1] += f" ({text.split('  ')[0].removeprefix('Sort Method: ')})"
        took = next((line for line in plan if line.startswith("Execution Time")), "")
        took = f"{float(took.split(':')[1].split()[0]):7.2f} ms" if took else "     (plan)"
        lines.append(f"{indent}{took} ×{runs[sql]:<4} {short_sql(sql)}")
        lines.append(f"{indent}{'':15}{'; '.join(dict.fromkeys(scans)) or 'no table scan'}")
    if others:
        lines.append(f"{indent}(and {others} queries on sessions, users and permissions)")
    return lines


def short_sql(sql: str) -> str:
    """The statement without its column list, on one line."""
    text = " ".join(sql.split())
    text = re.sub(r"^SELECT (DISTINCT )?.*? FROM", lambda m: f"SELECT {m.group(1) or ''}… FROM", text, count=1)
    text = re.sub(r"^UPDATE (\S+) SET .*? WHERE", r"UPDATE \1 SET … WHERE", text, count=1)
    text = re.sub(r"^INSERT INTO (\S+) .*", r"INSERT INTO \1 …", text, count=1)
    return text if len(text) <= 150 else text[:147] + "…"


# --- 2. the sweep

SNAPSHOT_SQL = """
CREATE TABLE bench_sweep_snapshot AS
SELECT operation_id, status, previous_status, version, error_message, presumed_orphan,
       %(reference)s - last_heartbeat_at AS heartbeat_age, %(reference)s - started_at AS started_age,
       %(reference)s - queued_at AS queued_age, %(reference)s - orphan_clock_from AS orphan_age
FROM operations_operation WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED');
CREATE TABLE bench_sweep_workers AS
SELECT worker_id, status, current_operation_id, %(reference)s - last_seen_at AS seen_age FROM operations_worker;
"""
RESET_SQL = """
UPDATE operations_operation o SET status = s.status, previous_status = s.previous_status, version = s.version,
    error_message = s.error_message, presumed_orphan = s.presumed_orphan, completed_at = NULL,
    last_heartbeat_at = statement_timestamp() - s.heartbeat_age, started_at = statement_timestamp() - s.started_age,
    queued_at = statement_timestamp() - s.queued_age, orphan_clock_from = statement_timestamp() - s.orphan_age
FROM bench_sweep_snapshot s WHERE o.operation_id = s.operation_id;
UPDATE operations_worker w SET status = s.status, current_operation_id = s.current_operation_id,
    last_seen_at = statement_timestamp() - s.seen_age
FROM bench_sweep_workers s WHERE w.worker_id = s.worker_id;
DELETE FROM operations_operationevent WHERE id > %(last_event)s;
DELETE FROM django_q_ormq;
DELETE FROM operations_controlloop;
"""


def sweep_bench(reference: datetime) -> dict[str, float | int]:
    """Passes of `sweep_orphans` on the mix (each on the same state, restored with the ages it had at `reference`,
    the population's "now", so every pass finds the same work), each followed by a pass that finds nothing; and
    EXPLAIN of the queries."""
    from django.db import connection

    from operations.models import QUEUED_STATUSES, Operation, OperationEvent
    from operations.services.reconciliation import sweep_orphans

    last_event = OperationEvent.objects.order_by("-id").values_list("id", flat=True).first()
    with connection.cursor() as cursor:
        cursor.execute(SNAPSHOT_SQL, {"reference": reference})

    def reset() -> None:
        with connection.cursor() as cursor:
            cursor.execute(RESET_SQL, {"last_event": last_event})

    from operations.models import Worker

    acting, idle, acted, idle_acted = [], [], [], 0
    unavailable = []
    queries, idle_queries = QueryLog(), QueryLog()
    for index in range(SWEEP_PASSES):
        reset()
        unavailable_before = Worker.objects.filter(status="UNAVAILABLE").count()
        started = time.perf_counter()
        with connection.execute_wrapper(queries if index == 0 else QueryLog()):
            report = sweep_orphans()
        acting.append(time.perf_counter() - started)
        unavailable.append(Worker.objects.filter(status="UNAVAILABLE").count() - unavailable_before)
        acted.append({name: len(ids) for name, ids in report.as_dict().items()})
        for _ in range(2):
            started = time.perf_counter()
            with connection.execute_wrapper(idle_queries if index == 0 else QueryLog()):
                again = sweep_orphans()
            idle.append(time.perf_counter() - started)
            idle_acted += sum(len(ids) for ids in again.as_dict().values())
        log(f"sweep pass {index + 1}: {ms(acting[-1])} ms acting, then {ms(idle[-2])} and {ms(idle[-1])} ms")
    reset()  # the state the first pass found, for EXPLAIN
    session_queries = QueryLog()
    session_times = []
    for _ in range(20):  # what supervise's run_sessions asks every pass (about once a second)
        started = time.perf_counter()
        with connection.execute_wrapper(session_queries):
            list(Operation.objects.filter(is_backend_local=True, status__in=QUEUED_STATUSES)
                 .exclude(pk__in=[]).order_by("created_at").values_list("pk", flat=True))
        session_times.append(time.perf_counter() - started)

    counts = acted[0]
    work = (counts["pending_reconciliation"] + counts["failed"] + counts["requeued"])
    lines = [
        f"  one pass acting on the mix ({SWEEP_PASSES} passes, each on the same state):"
        f" median {ms(statistics.median(acting))} ms, max {ms(max(acting))} ms",
        f"    acted on {work} operations per pass: {counts['pending_reconciliation']} RUNNING → "
        f"PENDING_RECONCILIATION, {counts['failed']} → FAILED, {counts['requeued']} re-enqueued; "
        f"{unavailable[0]} workers → UNAVAILABLE"
        + ("" if unavailable[0] == counts["workers_unavailable"]
           else f" (the pass's report lists {counts['workers_unavailable']})")
        + ("" if all(a == counts for a in acted) else f" (passes differed: {acted})"),
        f"    that is {1e3 * statistics.median(acting) / max(1, work):.2f} ms per operation acted on "
        f"({len(queries.queries)} queries in the pass)",
        f"  one pass finding nothing (the usual one, every 15 s; {len(idle)} passes): median "
        f"{ms(statistics.median(idle))} ms, max {ms(max(idle))} ms ({len(idle_queries.queries) // 2} queries"
        + (f"; they acted on {idle_acted} operations in all)" if idle_acted else ")"),
        f"  supervise's per-pass query for agent sessions to start: median "
        f"{ms(statistics.median(session_times))} ms",
        "  EXPLAIN of each distinct statement of an acting pass (× how often it ran; SELECTs timed by ANALYZE):",
        *explain(queries.queries),
        "  EXPLAIN of supervise's per-pass session query:",
        *explain(session_queries.queries[:1]),
    ]
    for line in lines:
        print(line, flush=True)
    return {"acting_median": statistics.median(acting), "acting_max": max(acting), "acted": work,
            "idle_median": statistics.median(idle), "idle_max": max(idle)}


# --- 2, continued: a mass failure, and the pass that finds nothing at a million operations

MASS_PREFIX = "op_training_mass_"  # the mass failure's operations; their workers' ids begin with "mass-"
LIVE_STATUSES = "('RUNNING', 'PENDING_RECONCILIATION', 'PENDING', 'RESUMING')"
FLEET_ALIVE_SQL = f"""
UPDATE operations_operation SET last_heartbeat_at = statement_timestamp(), queued_at = statement_timestamp(),
    orphan_clock_from = CASE WHEN orphan_clock_from IS NULL THEN NULL ELSE statement_timestamp() END
WHERE status IN {LIVE_STATUSES} AND operation_id NOT LIKE %(operations)s;
UPDATE operations_worker SET last_seen_at = statement_timestamp()
WHERE status IN ('IDLE', 'BUSY', 'STOPPING') AND worker_id NOT LIKE %(workers)s;
"""
MASS_STALE_SQL = """
UPDATE operations_operation o SET status = 'RUNNING', previous_status = 'PENDING', version = 1, error_message = '',
    presumed_orphan = false, completed_at = NULL, end_cause = '', restart_due_at = NULL, orphan_clock_from = NULL,
    last_heartbeat_at = statement_timestamp() - m.silent
FROM bench_mass m WHERE o.operation_id = m.operation_id;
UPDATE operations_worker w SET status = 'BUSY', current_operation_id = m.operation_id,
    last_seen_at = statement_timestamp() - m.silent
FROM bench_mass m WHERE w.worker_id = m.worker_id;
DELETE FROM operations_operationevent WHERE operation_id IN (SELECT operation_id FROM bench_mass);
"""
MASS_EXPIRED_SQL = """
UPDATE operations_operation o SET status = 'PENDING_RECONCILIATION', previous_status = 'RUNNING', version = 2,
    error_message = '', presumed_orphan = false, completed_at = NULL, end_cause = '', restart_due_at = NULL,
    orphan_clock_from = statement_timestamp() - m.expired, last_heartbeat_at = statement_timestamp() - m.expired
FROM bench_mass m WHERE o.operation_id = m.operation_id;
UPDATE operations_worker w SET status = 'UNAVAILABLE', current_operation_id = NULL,
    last_seen_at = statement_timestamp() - m.expired
FROM bench_mass m WHERE w.worker_id = m.worker_id;
DELETE FROM operations_operationevent WHERE operation_id IN (SELECT operation_id FROM bench_mass);
"""
MASS_DELETE_SQL = """
DELETE FROM operations_operationevent WHERE operation_id IN (SELECT operation_id FROM bench_mass);
DELETE FROM operations_operation WHERE operation_id IN (SELECT operation_id FROM bench_mass);
DELETE FROM operations_worker WHERE worker_id IN (SELECT worker_id FROM bench_mass);
DROP TABLE bench_mass;
"""


def fleet_alive() -> None:
    """Every live operation and worker but the mass failure's heart-beats now: a pass finds nothing else to do."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(FLEET_ALIVE_SQL, {"operations": f"{MASS_PREFIX}%", "workers": "mass-%"})


def timed_sweep() -> tuple[float, int, dict[str, int], list[tuple[str, tuple]]]:
    """One pass of sweep_orphans: its time, its statements, how many it acted on by what it did, and its queries."""
    from django.db import connection

    from operations.models import OperationEvent
    from operations.services.reconciliation import sweep_orphans

    queries = QueryLog()
    events = OperationEvent.objects.count()
    started = time.perf_counter()
    with connection.execute_wrapper(queries):
        report = sweep_orphans()
    took = time.perf_counter() - started
    acted = {name: len(ids) for name, ids in report.as_dict().items()}
    acted["events"] = OperationEvent.objects.count() - events
    return took, len(queries.queries), acted, queries.queries


def mass_failure_bench() -> dict[str, float | int]:
    """MASS operations beside the 100,000, each on a worker of its own, all silent for 32-40 s (their workers died
    together), the rest of the fleet alive: the pass that finds them (→ PENDING_RECONCILIATION, their workers →
    UNAVAILABLE), then, restored as reconciliations 70-600 s old, the pass that fails them (presumed orphans,
    half of them with restarts left, so the restart policy plans a resume for those). Each MASS_PASSES times on
    the same state restored, followed by a pass that finds nothing; then the MASS operations are deleted."""
    from django.db import connection, transaction

    from operations.clock import db_now
    from operations.models import ControlLoop

    rng = random.Random(11)
    now = db_now()
    operations, workers, ages = [], [], []
    for index in range(MASS):
        operation_id, worker_id = f"{MASS_PREFIX}{index:06d}", f"mass-{index // 8}:resilient:{30_000 + index}"
        silent, expired = rng.uniform(32, 40), rng.uniform(70, 600)
        started = now - timedelta(seconds=rng.uniform(600, 6 * 3600))
        max_restarts = 3 if index % 2 else 0
        operations.append({
            "operation_id": operation_id, "operation_type": "training", "status": "RUNNING",
            "previous_status": "PENDING", "version": 1, "owner_id": None, "worker_id": worker_id, "attempt": 1,
            "is_backend_local": False, "parent_id": None, "params": json.dumps(params_of("training", rng)),
            "result": None, "summary": "{}", "error_message": "", "presumed_orphan": False,
            "progress_percent": 50.0, "progress_message": "25 of 50", "progress_current": 25, "progress_total": 50,
            "progress_unit": "epochs", "created_at": started - timedelta(seconds=5), "queued_at": started,
            "started_at": started, "completed_at": None, "last_heartbeat_at": now - timedelta(seconds=silent),
            "cancel_requested_at": None, "orphan_clock_from": None, "max_restarts": max_restarts,
            "restarts": index % 4 if max_restarts else 0, "end_cause": "", "restart_due_at": None,
            "restart_from": None, "stalls": 0,
        })
        workers.append(worker_row(worker_id, "BUSY", operation_id, started - timedelta(seconds=5),
                                  now - timedelta(seconds=silent)))
        ages.append((operation_id, worker_id, timedelta(seconds=silent), timedelta(seconds=expired)))
    connection.ensure_connection()
    with transaction.atomic(), connection.connection.cursor() as cursor:
        copy_rows(cursor, "operations_worker", workers)
        copy_rows(cursor, "operations_operation", operations)
        cursor.execute("CREATE TABLE bench_mass (operation_id text PRIMARY KEY, worker_id text, silent interval, "
                       "expired interval)")
        with cursor.copy("COPY bench_mass FROM STDIN") as copy:
            for row in ages:
                copy.write_row(row)
    with connection.cursor() as cursor:
        for table in ("operations_operation", "operations_worker", "bench_mass"):
            cursor.execute(f"VACUUM ANALYZE {table}")

    ControlLoop.objects.get_or_create(pk=1)  # there once a control loop took the lease (restoring deleted it)
    results: dict[str, list] = {}
    for kind, setup in (("stale", MASS_STALE_SQL), ("expired", MASS_EXPIRED_SQL)):
        for index in range(MASS_PASSES):
            with connection.cursor() as cursor:
                cursor.execute(setup)
            fleet_alive()
            acting = timed_sweep()
            idle = timed_sweep()
            results.setdefault(kind, []).append((acting, idle))
            log(f"mass failure, {kind} pass {index + 1}: {ms(acting[0])} ms, {acting[1]} statements "
                f"(acted on {acting[2]}); then {ms(idle[0])} ms, {idle[1]} statements")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(MASS_DELETE_SQL)
    with connection.cursor() as cursor:
        for table in ("operations_operation", "operations_worker", "operations_operationevent"):
            cursor.execute(f"VACUUM ANALYZE {table}")

    figures: dict[str, float | int] = {}
    lines = [f"  a mass failure beside them: {MASS:,} operations whose workers died together, the rest alive "
             f"({MASS_PASSES} passes of each kind, each on the same state; goal: under {SWEEP_ACTING_GOAL:g} s)"]
    labels = {"stale": f"the pass finding them silent 32-40 s (→ PENDING_RECONCILIATION, workers → UNAVAILABLE)",
              "expired": "the pass failing them after the orphan timeout (→ FAILED, restarts planned for half)"}
    for kind, runs in results.items():
        times = [acting[0] for acting, _idle in runs]
        statements = {acting[1] for acting, _idle in runs}
        acted = runs[0][0][2]
        moved = acted["pending_reconciliation"] if kind == "stale" else acted["failed"]
        verdict = "meets the goal" if statistics.median(times) < SWEEP_ACTING_GOAL else "MISSES the goal"
        lines += [
            f"    {labels[kind]}: median {ms(statistics.median(times))} ms, max {ms(max(times))} ms, "
            f"{'/'.join(str(count) for count in sorted(statements))} statements; {verdict}",
            f"      acted on {moved:,} operations ({acted['events']:,} events), {acted['workers_unavailable']:,} "
            f"workers → UNAVAILABLE"
            + ("" if all(acting[2] == acted for acting, _idle in runs) else
               f" (passes differed: {[acting[2] for acting, _idle in runs]})"),
            f"      the pass after it, finding nothing: median {ms(statistics.median(idle[0] for _a, idle in runs))} "
            f"ms, {runs[0][1][1]} statements",
        ]
        figures[f"{kind}_median"] = statistics.median(times)
        figures[f"{kind}_statements"] = max(statements)
        figures[f"{kind}_acted"] = moved
    explained = results["stale"][0][0][3]
    lines += ["  statements of the pass finding them silent (× how often each ran):",
              *(f"    ×{count:<5} {short_sql(sql)}" for sql, count in
                Counter(sql for sql, _params in explained).most_common(8))]
    for line in lines:
        print(line, flush=True)
    return figures


def million_bench(rows: int) -> dict[str, float | int]:
    """The pass that finds nothing (every live operation and worker heart-beating) over `rows` operations: the
    bench's, and as many more ended ones (`grow`, unless part three grew them already); EXPLAIN ANALYZE of each
    statement."""
    from operations.models import Operation

    grow(rows)
    total = Operation.objects.count()
    fleet_alive()
    timed_sweep()  # whatever the parts before left to do
    fleet_alive()
    times, statements, acted, queries = [], set(), 0, []
    for _ in range(20):
        took, count, report, queries = timed_sweep()
        times.append(took)
        statements.add(count)
        acted += sum(report.values())
    verdict = "meets the goal" if statistics.median(times) < SWEEP_IDLE_GOAL else "MISSES the goal"
    lines = [f"\n[2] The orphan sweep at {total:,} operations (the mix and copies of its ended ones): a "
             f"pass finding nothing, 20 passes: median {ms(statistics.median(times))} ms, max {ms(max(times))} ms, "
             f"{'/'.join(str(count) for count in sorted(statements))} statements"
             + (f" (they acted on {acted})" if acted else "")
             + f"; goal under {SWEEP_IDLE_GOAL * 1e3:g} ms: {verdict}",
             "  EXPLAIN ANALYZE of each statement (writes in a transaction rolled back):",
             *explain(queries, analyse_writes=True)]
    for line in lines:
        print(line, flush=True)
    return {"rows": total, "idle_median": statistics.median(times), "idle_max": max(times),
            "idle_statements": max(statements)}


# --- gunicorn

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(resources: Resources, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
               "--workers", str(GUNICORN_WORKERS), "--worker-class", GUNICORN_CLASS, "--log-level", "warning",
               "--error-logfile", str(log_path)]
    if GUNICORN_CLASS == "gthread":
        command += ["--threads", str(GUNICORN_THREADS)]
    command += GUNICORN_EXTRA
    output = open(log_path.with_suffix(".out"), "w")
    process = resources.start(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: see {log_path}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/v1/health/")
            if connection.getresponse().status == 200:
                connection.close()
                return process, port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


def cpu_ticks(pids: list[int]) -> float:
    """CPU seconds used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds of PostgreSQL so far: its live processes, and (key 0) the backends that have exited."""
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {}
    seconds = {0: (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")}
    for pid in children_of(postmaster):
        seconds[pid] = cpu_ticks([pid])
    return seconds


def postgres_share(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds PostgreSQL used between two readings (a process gone meanwhile is counted at its exit)."""
    used = after.get(0, 0.0) - before.get(0, 0.0)
    used += sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items() if pid)
    return used - sum(seconds for pid, seconds in before.items() if pid and pid not in after)


def children_of(pid: int) -> list[int]:
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --- 1. heartbeats

def run_generators(resources: Resources, jobs: list[dict]) -> tuple[list[dict], dict]:
    """Run one generator process per job; return their reports, and the CPU use of the measured window."""
    processes = [resources.start([sys.executable, str(Path(__file__).with_name("loadgen.py"))],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in jobs]
    for process, job in zip(processes, jobs):
        process.stdin.write(json.dumps(job))
        process.stdin.close()
    usage = {}
    if jobs[0]["mode"] == "heartbeat":
        start_at = jobs[0]["start_at"]
        time.sleep(max(0.0, start_at + WARMUP - time.time()))
        gunicorn_pids = children_of(jobs[0]["gunicorn_pid"])
        postmaster = jobs[0]["postmaster_pid"]
        before = machine_busy(), cpu_ticks(gunicorn_pids), time.monotonic(), postgres_cpu(postmaster)
        time.sleep(max(0.0, start_at + WARMUP + WINDOW - time.time()))
        after = machine_busy(), cpu_ticks(gunicorn_pids), time.monotonic(), postgres_cpu(postmaster)
        cores = os.cpu_count() or 1
        elapsed = after[2] - before[2]
        usage = {"machine": (after[0][0] - before[0][0]) / max(1, after[0][1] - before[0][1]) * 100,
                 "gunicorn": (after[1] - before[1]) / elapsed / cores * 100,
                 "postgres": postgres_share(before[3], after[3]) / elapsed / cores * 100}
    reports = []
    for process in processes:
        output = process.stdout.read()
        process.wait()
        resources.processes.remove(process)
        if process.returncode != 0:
            raise RuntimeError(f"load generator failed ({process.returncode})")
        reports.append(json.loads(output))
    return reports, usage


def settled(read):
    """What `read()` returns once two reads a second apart agree (at most ten more): PostgreSQL's statistics, which
    each backend reports at most once a second and when it exits."""
    value = read()
    for _ in range(10):
        time.sleep(1.1)
        again = read()
        if again == value:
            break
        value = again
    return value


def update_counts() -> dict[str, tuple[int, int]]:
    """Row updates so far, and how many of them were HOT (no index touched), of the two tables heartbeats write."""
    from django.db import connection

    def read() -> dict[str, tuple[int, int]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                           "WHERE relname IN ('operations_operation', 'operations_worker')")
            return {name: (updates, hot) for name, updates, hot in cursor.fetchall()}

    counts = settled(read)
    if os.environ.get("BENCH_VERBOSE"):
        log(f"update counts: {counts}")
    return counts


def heartbeat_queries(worker: dict) -> list[tuple[str, tuple]]:
    """The queries of one heartbeat, made in-process with the same body."""
    from django.db import connection
    from django.test import Client

    queries = QueryLog()
    body = {"operation_id": worker["operation_id"], "attempt": worker["attempt"],
            "progress": {"current": 1, "total": 100_000, "unit": "epochs", "percent": 0.0, "message": "epoch 1"}}
    with connection.execute_wrapper(queries):
        response = Client(HTTP_AUTHORIZATION=worker["authorization"]).post(
            f"/api/v1/workers/{worker['worker_id']}/heartbeat/", body, content_type="application/json")
    assert response.status_code == 200 and response.json()["action"] == "continue", response.content
    return queries.queries


def postmaster_pid() -> int:
    """PostgreSQL's main process: the parent of this connection's backend (0 if the server is not local)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    try:
        return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def heartbeat_step(resources: Resources, port: int, gunicorn_pid: int, token: str, fleet: list[dict],
                   n: int) -> tuple[bool, str]:
    """All N workers heartbeat for WARMUP + WINDOW seconds; returns whether the step passed, and its table row."""
    for index, worker in enumerate(fleet):
        worker["phase"] = index / n
    start_at = time.time() + 0.5
    jobs = [{"mode": "heartbeat", "host": "127.0.0.1", "port": port, "token": token, "interval": INTERVAL,
             "warmup": WARMUP, "window": WINDOW, "start_at": start_at, "gunicorn_pid": gunicorn_pid,
             "postmaster_pid": postmaster_pid(), "workers": fleet[g::GENERATORS]} for g in range(GENERATORS)]
    reports, usage = run_generators(resources, jobs)
    latencies = [sample[1] for report in reports for sample in report["samples"]]
    lags = [sample[2] for report in reports for sample in report["samples"] if sample[2] >= 0]
    ticks = [tick for report in reports for tick in report["ticks"]]
    errors: dict[str, int] = {}
    for report in reports:
        for kind, count in report["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    late = sum(report["late_behind_reply"] for report in reports)
    cores = os.cpu_count() or 1
    generator_cpu = sum(report["cpu_seconds"] / report["wall_seconds"] for report in reports) / cores
    rate = len(latencies) / WINDOW
    per_request = usage["gunicorn"] / 100 * cores / max(rate, 1e-9)
    p99 = percentile(latencies, 99)
    ok = p99 < P99_TARGET and not errors
    verdict = "ok" if ok else f"errors: {errors}" if errors else f"p99 ≥ {P99_TARGET * 1e3:.0f} ms"
    for worker in fleet:
        worker["last_beat"] = next(r["last_beats"][worker["operation_id"]] for r in reports
                                   if worker["operation_id"] in r["last_beats"])
    row = (f"  {n:5d} {rate:6.0f} {ms(percentile(latencies, 50)):>6} {ms(percentile(latencies, 95)):>6} "
           f"{ms(p99):>6} {ms(max(latencies)):>7} {sum(errors.values()):6d} {late:5d} {ms(percentile(lags, 99)):>8} "
           f"{ms(percentile(ticks, 99)):>9} {100 * generator_cpu:6.1f}% {usage['gunicorn']:7.1f}% "
           f"{per_request * 1e3:6.1f} {usage['postgres']:7.1f}% {usage['machine']:6.1f}%  {verdict}")
    return ok, row


def heartbeat_bench(resources: Resources, port: int, gunicorn_pid: int, token: str) -> int:
    """Step N up; each new worker is registered over HTTP and given a RUNNING operation (created, then claimed
    as a django-q2 worker claims it); then all N heartbeat every second for the window. A step that fails is
    run once more (this machine is shared): N is sustained if either run passed; the climb stops at the second
    failure."""
    from operations.models import Operation
    from operations.services.credentials import credential_create
    from operations.services.lifecycle import operation_claim, operation_create

    fleet: list[dict] = []
    keys: dict[str, str] = {}
    steps_run: list[str] = []
    sustained = 0
    print("\n[1] Heartbeats over HTTP, one a second from each simulated worker "
          f"(gunicorn {GUNICORN_CLASS}, {GUNICORN_WORKERS} workers"
          + (f" × {GUNICORN_THREADS} threads" if GUNICORN_CLASS == "gthread" else "")
          + f"; {GENERATORS} generator processes; {WINDOW:g} s measured per step after {WARMUP:g} s warm-up)")
    print("  latencies in ms. late: heartbeats sent late because the previous reply had not come back. gen lag: how\n"
          "  late an idle worker's heartbeat left (p99); loop lag: a 10 ms ticker's oversleep in the generator (p99).\n"
          "  CPU in % of all cores over the window; ms/req: gunicorn's CPU per request; postgres: the whole server\n"
          "  (every database on it); machine: everything", flush=True)
    print(f"  {'N':>5} {'req/s':>6} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>7} {'errors':>6} {'late':>5} "
          f"{'gen lag':>8} {'loop lag':>9} {'gen CPU':>7} {'gunicorn':>8} {'ms/req':>6} {'postgres':>8} {'machine':>7}"
          "  verdict",
          flush=True)
    before = update_counts()
    began = time.monotonic()
    for n in STEPS:
        if time.monotonic() - began > HEARTBEAT_BUDGET:
            print(f"  (time budget of {HEARTBEAT_BUDGET:g} s spent: no larger step)")
            break
        # A worker credential per machine of 50 workers, as a deployment gives each worker machine its own.
        new = [{"worker_id": f"bench-{i // 50}:api:{100_000 + i}"} for i in range(len(fleet), n)]
        for worker in new:
            host = worker["worker_id"].split(":")[0]
            if host not in keys:
                keys[host] = credential_create(host=host, actor="bench")[1]
            worker["authorization"] = f"Worker {keys[host]}"
        reports, _ = run_generators(resources, [{"mode": "register", "host": "127.0.0.1", "port": port,
                                                 "token": token, "workers": new}])
        if reports[0]["failures"]:
            raise RuntimeError(f"registration failed: {reports[0]['failures']}")
        for worker in new:
            operation = operation_create(operation_type="training", params={"symbol": "BTCUSD", "epochs": 100_000},
                                         actor="bench", enqueue=False)
            worker["operation_id"] = operation.pk
            worker["attempt"] = operation_claim(operation_id=operation.pk, worker_id=worker["worker_id"])
        fleet += new
        ok, row = heartbeat_step(resources, port, gunicorn_pid, token, fleet, n)
        print(row, flush=True)
        if not ok:
            ok, row = heartbeat_step(resources, port, gunicorn_pid, token, fleet, n)
            print(row + " (run again)", flush=True)
        steps_run.append(str(n))
        if not ok:
            break
        sustained = n
    after = update_counts()
    running = Operation.objects.filter(pk__in=[w["operation_id"] for w in fleet], status="RUNNING")
    last_beats = {worker["operation_id"]: worker["last_beat"] for worker in fleet}
    reported = sum(1 for pk, current in running.values_list("pk", "progress_current") if current == last_beats[pk])
    queries = heartbeat_queries(fleet[0])
    over_http = commits_per_heartbeat(port, fleet[0])
    in_process = in_process_statements(fleet[0])
    hot = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in after}
    print(f"  largest N sustained (p99 < {P99_TARGET * 1e3:.0f} ms, no error): {sustained or 'none'} "
          f"(steps run: {', '.join(steps_run)})")
    print(f"  after the last step: {running.count()} of {len(fleet)} operations RUNNING, {reported} holding the "
          "progress of their last heartbeat that got a reply")
    connection_note = (f"a connection kept {CONN_MAX_AGE} s (the experiment)" if CONN_MAX_AGE
                       else "a new database connection (the app's CONN_MAX_AGE is 0)")
    print(f"  one heartbeat is {len(queries)} queries over {connection_note}; "
          "its row updates were HOT (no index written) for "
          + ", ".join(f"{name} {100 * h / max(1, u):.0f} % of {u:,}" for name, (u, h) in sorted(hot.items())))
    print(f"  PostgreSQL counted {over_http:.2f} statements (transactions) per heartbeat over HTTP, "
          f"{HEARTBEATS_COUNTED} sent one after the other through gunicorn (whatever else committed in the bench's "
          f"database meanwhile counts too: autovacuum, say); in-process, a heartbeat is {in_process} statement(s)")
    print("  its statements:")
    for line in explain(queries):
        print(line)
    updates = sum(u for u, _ in hot.values())
    record("heartbeats sustained over HTTP (p99 < 50 ms, no error)", sustained, 1000, "/s", higher_is_better=True)
    record("statements of a heartbeat over HTTP (credential check included)", over_http, 2, "")
    record("statements of an in-process heartbeat", in_process, 1, "")
    record("HOT share of heartbeat row updates", 100 * sum(h for _, h in hot.values()) / max(1, updates), 70, "%",
           higher_is_better=True, note=f"of {updates:,} row updates")
    return sustained


HEARTBEATS_COUNTED = 500


def database_commits(database: str) -> int:
    """Transactions committed in `database` so far, as PostgreSQL counts them, read from the maintenance database
    (so reading adds none)."""
    import psycopg

    maintenance = urllib.parse.urlparse(server_url())._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as connection:
        def read() -> int:
            connection.execute("SELECT pg_stat_clear_snapshot()")
            return connection.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                      [database]).fetchone()[0]

        return settled(read)


def commits_per_heartbeat(port: int, worker: dict) -> float:
    """Statements a heartbeat costs the database through the real server: HEARTBEATS_COUNTED heartbeats, one after
    the other over one connection, against the transactions PostgreSQL counted meanwhile in the bench's database
    (each of the heartbeat's statements commits on its own; nothing else runs there meanwhile)."""
    from django.db import connection as own

    database = own.settings_dict["NAME"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": worker["authorization"], "Content-Type": "application/json"}
    path = f"/api/v1/workers/{worker['worker_id']}/heartbeat/"
    before = database_commits(database)
    for current in range(HEARTBEATS_COUNTED):
        body = {"operation_id": worker["operation_id"], "attempt": worker["attempt"],
                "progress": {"current": current, "total": 100_000, "unit": "epochs"}}
        connection.request("POST", path, body=json.dumps(body), headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"heartbeat answered {answer.status}")
    connection.close()
    return (database_commits(database) - before) / HEARTBEATS_COUNTED


def in_process_statements(worker: dict) -> int:
    """The statements of one heartbeat made as a django-q2 worker makes it (the service, no HTTP)."""
    from django.db import connection

    from operations.services.workers import CurrentOperation, Progress, worker_heartbeat

    queries = QueryLog()
    with connection.execute_wrapper(queries):
        worker_heartbeat(worker_id=worker["worker_id"], progress=Progress(current=2, total=100_000, unit="epochs"),
                         current_operation=CurrentOperation(operation_id=worker["operation_id"],
                                                            attempt=worker["attempt"]))
    return len(queries.queries)


# --- 3. pages

def timed_gets(port: int, path: str, headers: dict[str, str], count: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, statuses, size, body = [], {}, 0, b""
    for index in range(count + 3):  # three not timed: a worker process's first request
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if index >= 3:
            times.append(elapsed)
            size = len(body)
    connection.close()
    matched = None
    if body.startswith(b"{"):
        matched = json.loads(body).get("count")
    else:
        found = re.search(rb"(\d[\d,]*) operations?</", body) or re.search(rb"(\d+) results?", body)
        matched = int(found.group(1).replace(b",", b"")) if found else None
    return {"times": times, "statuses": statuses, "bytes": size, "count": matched}


def admin_cookie(port: int, username: str, password: str) -> str:
    """Log in through the admin's form, as a browser does."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/admin/login/?next=/admin/")
    response = connection.getresponse()
    page = response.read().decode()
    cookies = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    csrf = cookies["csrftoken"].value
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                                                                    page).group(1),
                                   "username": username, "password": password, "next": "/admin/"})
    connection.request("POST", "/admin/login/?next=/admin/", body=form,
                       headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={csrf}"})
    response = connection.getresponse()
    response.read()
    for header in response.headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    connection.close()
    if response.status != 302 or "sessionid" not in cookies:
        raise RuntimeError(f"admin login failed: HTTP {response.status}")
    return f"csrftoken={csrf}; sessionid={cookies['sessionid'].value}"


def admin_rows_note() -> str:
    """What loading a page of the changelist's rows costs in-process, as the admin loads them (every column, the JSON
    ones decoded though no column shows them) and without `params` and `result`."""
    from operations.admin import OperationAdmin
    from operations.models import Operation

    related, rows = OperationAdmin.list_select_related, OperationAdmin.list_per_page
    timings = {}
    for label, defer in (("every column", ()), ("params and result deferred", ("params", "result"))):
        times = []
        for _ in range(20):
            started = time.perf_counter()
            list(Operation.objects.select_related(*related).defer(*defer).order_by("-created_at", "-pk")[:rows])
            times.append(time.perf_counter() - started)
        timings[label] = statistics.median(times)
    return (f"  the changelist's {rows} rows fetched in-process (median of 20): "
            + ", ".join(f"{label} {ms(value)} ms" for label, value in timings.items()))


API_PAGES = [
    ("default page (50 newest)", "/api/v1/operations/"),
    ("status=FAILED", "/api/v1/operations/?status=FAILED"),
    ("type=backtesting", "/api/v1/operations/?type=backtesting"),
    ("type=backtesting&status=COMPLETED", "/api/v1/operations/?type=backtesting&status=COMPLETED"),
    ("resumable=true (beside the goal)", "/api/v1/operations/?resumable=true"),
]
ADMIN_PAGES = [
    ("changelist (newest first)", "/admin/operations/operation/"),
    ("status filter: FAILED", "/admin/operations/operation/?status__exact=FAILED"),
    ("type filter: backtesting", "/admin/operations/operation/?operation_type__exact=backtesting"),
]


def admin_sorts(staff) -> list[tuple[str, str]]:
    """A page per sort the operations changelist offers, each way: read from its column headers, as it renders
    them (a column made sortable is measured without a change here)."""
    from django.contrib import admin
    from django.contrib.admin.templatetags.admin_list import result_headers
    from django.test import RequestFactory

    from operations.models import Operation

    request = RequestFactory().get("/admin/operations/operation/")
    request.user = staff
    changelist = admin.site._registry[Operation].get_changelist_instance(request)
    pages = []
    for index, header in enumerate(result_headers(changelist)):
        if header["sortable"]:
            name = re.sub(r"<[^>]+>", "", str(header["text"])).strip().lower()
            pages += [(f"sorted by {name}, ascending", f"/admin/operations/operation/?o={index}"),
                      (f"sorted by {name}, descending", f"/admin/operations/operation/?o=-{index}")]
    return pages


def pages_bench(port: int, staff, staff_password: str, staff_token: str, user_token: str) -> dict[str, dict]:
    """Each page PAGE_REQUESTS times in a row over one keep-alive connection (ADMIN_REQUESTS for the admin),
    printed as measured beside the goal (p99 under P99_TARGET); then the same request in-process for its queries,
    and EXPLAIN of them. Returns each page's median, p99 and max."""
    from django.db import connection
    from django.test import Client

    print(f"  {'page':48} {'as':5} {'rows':>9} {'KB':>5} {'median':>7} {'p99':>7} {'max':>7}  "
          f"p99 < {P99_TARGET * 1e3:g} ms  HTTP", flush=True)
    explained: list[str] = []
    figures: dict[str, dict] = {}
    cookie = admin_cookie(port, staff.username, staff_password)
    runs = [(f"api: {label}", path, "staff", {"Authorization": f"Token {staff_token}", "Accept": "application/json"})
            for label, path in API_PAGES]
    runs += [(f"api: {label}", path, "user", {"Authorization": f"Token {user_token}", "Accept": "application/json"})
             for label, path in API_PAGES]
    runs += [(f"admin: {label}", path, "staff", {"Cookie": cookie}) for label, path in ADMIN_PAGES + admin_sorts(staff)]
    for label, path, who, headers in runs:
        measured = timed_gets(port, path, headers, ADMIN_REQUESTS if "Cookie" in headers else PAGE_REQUESTS)
        times = measured["times"]
        figures[f"{label} ({who})"] = {"median": statistics.median(times), "p99": percentile(times, 99),
                                       "max": max(times)}
        rows = f"{measured['count']:,}" if measured["count"] is not None else "?"
        verdict = "met" if percentile(times, 99) < P99_TARGET else "NOT met"
        print(f"  {label:48} {who:5} {rows:>9} {measured['bytes'] / 1024:5.0f} {ms(statistics.median(times)):>7} "
              f"{ms(percentile(times, 99)):>7} {ms(max(times)):>7}  {verdict:12} {measured['statuses']}", flush=True)
        client = Client(HTTP_AUTHORIZATION=headers.get("Authorization", ""))
        if "Cookie" in headers:
            client.force_login(staff)
        queries = QueryLog()
        with connection.execute_wrapper(queries):
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        explained += [f"  {label} as {who}: {len(queries.queries)} queries", *explain(queries.queries)]
    print(admin_rows_note())
    print("  EXPLAIN of each page's queries (the same request in-process):")
    for line in explained:
        print(line)
    return figures


# --- main

def main() -> None:
    # Ctrl+C raises KeyboardInterrupt even where SIGINT came in ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_exit)
    signal.signal(signal.SIGHUP, raise_exit)
    resources = Resources()
    began = time.monotonic()
    try:
        run(resources)
    finally:
        log("cleaning up (gunicorn, generators, database, folder)")
        resources.close()
        log(f"part three took {time.monotonic() - began:.0f} s")


def run(resources: Resources) -> None:
    os.environ.update(SETTINGS_ENV)
    resources.create_database()
    os.environ["BENCH_DATABASE_URL"] = resources.database_url()
    log(f"database {resources.database} created; migrating")
    resources.work = prepare("bench-load-")

    from django.contrib.auth.models import Permission, User
    from rest_framework.authtoken.models import Token

    from operations.models import Operation

    rng = random.Random(7)
    password = secrets.token_urlsafe(12)
    staff = User.objects.create_user("bench-staff", password=password, is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_operation", "view_all_operations",
                                                                        "view_worker", "view_checkpoint"]))
    worker_account = User.objects.create_user("bench-worker")
    worker_account.user_permissions.add(Permission.objects.get(codename="act_as_worker"))
    user = User.objects.create_user("bench-user")
    others = [User.objects.create_user(f"researcher-{i}") for i in range(19)]
    tokens = {account.username: Token.objects.create(user=account).key for account in (staff, worker_account, user)}

    from django.db import connection

    for index in DROP_INDEXES:  # an experiment on the bench's own database: the models still declare them
        with connection.cursor() as cursor:
            cursor.execute(f'DROP INDEX "{index}"')
    cores = os.cpu_count()
    load = os.getloadavg()
    print(f"\nControl plane under load (PostgreSQL, database {resources.database}; machine: {cores} vCPUs, "
          f"load generator and PostgreSQL on the same machine; load average at start {load[0]:.2f})", flush=True)
    experiments = [f"indexes dropped: {', '.join(DROP_INDEXES)}"] if DROP_INDEXES else []
    if experiments:
        print(f"  EXPERIMENT, not the app as it is: {'; '.join(experiments)}")
    started = time.perf_counter()
    reference, counts = populate(others, user, rng)
    print(f"\n  populated {sum(counts.values()):,} operations in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{status} {count:,}" for status, count in sorted(counts.items(), key=lambda kv: -kv[1]))
          + f"; a tenth owned by {user.username}", flush=True)

    if "sweep" in PARTS:
        print("\n[2] The orphan sweep over 100,000 operations (sweep_orphans, in-process as supervise runs it)",
              flush=True)
        sweep = sweep_bench(reference)
        mass = mass_failure_bench() if MASS else {}

    if PARTS & {"heartbeats", "pages"}:
        env = {**os.environ, "DATABASE_URL": resources.database_url(), "VAR_DIR": str(resources.work),
               "DATABASE_CONN_MAX_AGE": CONN_MAX_AGE}
        env.pop("BENCH_DATABASE_URL", None)
        print(f"\n  gunicorn: {GUNICORN_CLASS}, {GUNICORN_WORKERS} processes x {GUNICORN_THREADS} threads, "
              f"DATABASE_CONN_MAX_AGE={CONN_MAX_AGE}", flush=True)
        gunicorn, port = start_gunicorn(resources, env, resources.work / "gunicorn.log")
    if "heartbeats" in PARTS:
        sustained = heartbeat_bench(resources, port, gunicorn.pid, tokens["bench-worker"])
        time.sleep(2)  # the server drains what the last step left queued

    if "pages" in PARTS:
        print(f"\n[3] Pages of the operations list at {PAGES_ROWS:,} operations", flush=True)
        started = time.perf_counter()
        added = grow(PAGES_ROWS)
        print(f"  {added:,} copies of ended operations added, with their events, and VACUUM ANALYZE, in "
              f"{time.perf_counter() - started:.0f} s; {Operation.objects.count():,} operations. Through the same "
              f"gunicorn: {PAGE_REQUESTS} sequential requests a page ({ADMIN_REQUESTS} for the admin's) over one "
              "connection, latencies in ms", flush=True)
        pages = pages_bench(port, staff, password, tokens["bench-staff"], tokens["bench-user"])
    if PARTS & {"heartbeats", "pages"}:
        errors = [line for line in (resources.work / "gunicorn.log").read_text().splitlines()
                  if "ERROR" in line or "Traceback" in line]
        print(f"\n  gunicorn's error log: {len(errors)} error lines" + (f"; the first: {errors[0]}" if errors else ""))
    if "sweep" in PARTS and SWEEP_ROWS:
        million = million_bench(SWEEP_ROWS)
    print(f"\nSummary ({cores} vCPUs, generator on the same machine; load average "
          f"{load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end):")
    if "heartbeats" in PARTS:
        print(f"  [1] heartbeats: largest N sustained at 1 heartbeat/s each with p99 < 50 ms and no error: "
              f"{sustained or 'none'}")
    if "sweep" in PARTS:
        print(f"  [2] sweep over 100k: acting pass median {ms(sweep['acting_median'])} ms (max "
              f"{ms(sweep['acting_max'])} ms, {sweep['acted']} operations acted on); idle pass median "
              f"{ms(sweep['idle_median'])} ms (max {ms(sweep['idle_max'])} ms)")
        if mass:
            print(f"      a pass acting on {mass['stale_acted']:,} stale operations and their workers: median "
                  f"{ms(mass['stale_median'])} ms in {mass['stale_statements']} statements (goal: under "
                  f"{SWEEP_ACTING_GOAL * 1e3:g} ms, statements not growing with the count); failing "
                  f"{mass['expired_acted']:,} after the orphan timeout: {ms(mass['expired_median'])} ms in "
                  f"{mass['expired_statements']} statements")
        if SWEEP_ROWS:
            print(f"      a pass finding nothing at {million['rows']:,} operations: median "
                  f"{ms(million['idle_median'])} ms (max {ms(million['idle_max'])} ms) in "
                  f"{million['idle_statements']} statements (goal: under {SWEEP_IDLE_GOAL * 1e3:g} ms)")
        if mass:
            record("sweep pass acting on 5,000 stale operations", mass["stale_median"] * 1e3, SWEEP_ACTING_GOAL * 1e3,
                   "ms", note=f"{mass['stale_acted']:,} acted on; failing them later: "
                              f"{ms(mass['expired_median'])} ms")
            record("statements of that pass (not growing with the count)", mass["stale_statements"], 9, "",
                   note="the count tests/operations/test_sweep_at_scale.py pins for 10 and for 200")
        if SWEEP_ROWS:
            record("sweep pass finding nothing at 1,000,000 operations", million["idle_median"] * 1e3,
                   SWEEP_IDLE_GOAL * 1e3, "ms", note=f"at {million['rows']:,} operations")
    if "pages" in PARTS:
        goal = {label: figures for label, figures in pages.items() if "beside the goal" not in label}
        worst = max(goal, key=lambda label: goal[label]["p99"])
        verdict = "met" if goal[worst]["p99"] < P99_TARGET else "NOT met"
        print(f"  [3] list pages at {PAGES_ROWS:,} operations ({len(goal)} pages, API and admin): worst p99 "
              f"{ms(goal[worst]['p99'])} ms ({worst}; median {ms(goal[worst]['median'])} ms); goal p99 under "
              f"{P99_TARGET * 1e3:g} ms: {verdict}")
        met = sum(figures["p99"] < P99_TARGET for figures in goal.values())
        record("operations list pages at 1,000,000 operations, worst p99", goal[worst]["p99"] * 1e3,
               P99_TARGET * 1e3, "ms", note=f"{worst}; {met} of {len(goal)} pages under the goal")


if __name__ == "__main__":
    main()
