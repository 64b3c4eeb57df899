#!/usr/bin/env python
"""`make bench`, part five: the platform's cost per operation. BENCH_THROUGHPUT_OPERATIONS (1,000) tiny backtests
submitted over the API (`POST /api/v1/backtests/`, gunicorn) and run by a `qcluster` of two worker processes on
the Redis broker (the ORM broker if no Redis answers on 127.0.0.1:6379), from the first submit to the last
COMPLETED; beside the same engine calls in a plain loop (load the bars, compute the strategy's decisions, run the
engine, compute the metrics), in one process. The difference, per operation and per worker process, is what the
platform adds: the request, the row and its events, the broker, the claim, the heartbeat thread, the checkpoint
policy, the result written. Goal: under 50 ms an operation.

The database is the bench's own (a PostgreSQL database created on the server of BENCH_DATABASE_URL, else
DATABASE_URL, else 127.0.0.1:5432), dropped at the end with the processes and the folder.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from failover import redis_answers
from load import Resources, free_port, raise_exit
from workspace import ROOT

OPERATIONS = int(os.environ.get("BENCH_THROUGHPUT_OPERATIONS", "1000"))
WORKERS = 2
BARS = 2_000  # a tiny backtest: a few milliseconds of engine work
GOAL_MS = 50.0
REQUEST = {"symbol": "TINY", "timeframe": "1h", "strategy": "sma_cross",
           "strategy_params": {"fast": 5, "slow": 20, "allow_short": True}, "checkpoints_enabled": False}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def start_web(resources: Resources, env: dict[str, str]) -> int:
    port = free_port()
    resources.start([sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
                     "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--log-level", "warning"],
                    cwd=ROOT, env=env, stdout=open(resources.work / "gunicorn.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/v1/health/")
            if connection.getresponse().status == 200:
                return port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


def plain_loop(env: dict[str, str]) -> float:
    """Seconds per backtest of the same engine calls in a plain loop (a child process, on the same series)."""
    script = f"""
import json, time
import django
django.setup()
from backtesting.engine import Costs, Engine, metrics
from backtesting.strategies import strategy_for
from marketdata.series import TIMEFRAMES, load_bars
request = {{**{REQUEST!r}, "initial_cash": 100000.0, "commission": 0.0005, "slippage": 0.0002}}
started = time.perf_counter()
for _ in range({OPERATIONS}):
    bars = load_bars(request["symbol"], request["timeframe"])
    decisions = strategy_for(request).decisions(bars)
    times = bars["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]")
    engine = Engine(opens=bars["open"].astype("float64").tolist(), closes=bars["close"].astype("float64").tolist(),
                    times=times, targets=decisions.tolist(),
                    costs=Costs(commission=request["commission"], slippage=request["slippage"]),
                    initial_cash=request["initial_cash"])
    engine.run(engine.bars)
    engine.close_at_end()
    figures = metrics(engine, TIMEFRAMES[request["timeframe"]], engine.trades)
print(json.dumps((time.perf_counter() - started) / {OPERATIONS}))
"""
    return json.loads(subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                     check=True, timeout=3600).stdout)


def submit_all(port: int, token: str) -> tuple[list[str], float]:
    """Every backtest POSTed on one keep-alive connection; their ids and the moment of the first."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    body = json.dumps({**REQUEST, "max_restarts": 0})
    ids, first = [], None
    for _ in range(OPERATIONS):
        connection.request("POST", "/api/v1/backtests/", body=body, headers=headers)
        answer = connection.getresponse()
        payload = answer.read()
        first = first or time.monotonic()
        if answer.status != 201:
            raise RuntimeError(f"POST backtests/ answered {answer.status}: {payload[:500]!r}")
        ids.append(json.loads(payload)["operation_id"])
    return ids, first


def main() -> None:
    signal.signal(signal.SIGTERM, raise_exit)
    broker = "redis" if redis_answers() else "orm"
    resources = Resources()
    resources.database = resources.database.replace("bench_load_", "bench_throughput_")
    try:
        resources.create_database()
        resources.work = Path(f"/tmp/{resources.database}")
        resources.work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base",
               "DATABASE_URL": resources.database_url(), "VAR_DIR": str(resources.work), "OMP_NUM_THREADS": "1",
               "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "warning", "Q_BROKER": broker,
               "Q_CLUSTER_NAME": resources.database, "REDIS_URL": "redis://127.0.0.1:6379/0",
               "MAX_ACTIVE_OPERATIONS_PER_USER": str(OPERATIONS + 10), "API_RATE_SUBMIT": "1000000/minute",
               "API_RATE_USER": "1000000/minute"}
        log(f"throughput: {OPERATIONS:,} backtests of {BARS:,} bars, {WORKERS} worker processes, broker {broker}")
        manage(env, "migrate", "--noinput")
        manage(env, "marketdata", "generate", "--symbol", "TINY", "--timeframe", "1h", "--bars", str(BARS))
        token = manage(env, "shell", "--no-imports", "-c", (
            "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
            "u = get_user_model().objects.create_user('bench', password='bench-pass-1234'); "
            "print(Token.objects.create(user=u).key)")).strip().splitlines()[-1]
        log("  the same engine calls in a plain loop ...")
        plain = plain_loop(env)
        port = start_web(resources, env)
        cluster = resources.start([sys.executable, "manage.py", "qcluster"], cwd=ROOT,
                                  env={**env, "Q_WORKERS": str(WORKERS)},
                                  stdout=open(resources.work / "qcluster.log", "w"), stderr=subprocess.STDOUT)
        log("  submitting over the API and waiting for every one to complete ...")
        import psycopg

        with psycopg.connect(resources.database_url(), autocommit=True) as watch:
            while not watch.execute("SELECT count(*) FROM operations_worker WHERE status = 'IDLE'").fetchone()[0]:
                if cluster.poll() is not None:
                    raise RuntimeError(f"qcluster exited: see {resources.work / 'qcluster.log'}")
                time.sleep(0.2)
            ids, first = submit_all(port, token)
            submitted = time.monotonic() - first
            while True:
                done, failed = watch.execute(
                    "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status IN "
                    "('FAILED', 'CANCELLED')) FROM operations_operation").fetchone()
                if done + failed >= OPERATIONS:
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - first
            # Inside a worker process: from its claim (started_at) to its result written (completed_at).
            in_task = watch.execute("SELECT avg(extract(epoch FROM completed_at - started_at)) "
                                    "FROM operations_operation").fetchone()[0]
        per_operation = elapsed / OPERATIONS
        per_worker = per_operation * WORKERS  # each worker process's time per operation
        overhead_ms = (per_worker - plain) * 1000
        print("\n== Throughput: tiny backtests over the API, submit to COMPLETED ==")
        print(f"operations: {OPERATIONS:,} ({done:,} completed, {failed:,} failed); broker {broker}; "
              f"{WORKERS} worker processes; submitting took {submitted:.1f} s")
        print(f"  platform:   {OPERATIONS / elapsed:8.1f} operations/s, {per_worker * 1000:7.1f} ms an operation "
              f"per worker process")
        print(f"  plain loop: {1 / plain:8.1f} operations/s, {plain * 1000:7.1f} ms an operation (one process)")
        print(f"  of which from its claim to its result written: {float(in_task or 0) * 1000:.1f} ms; "
              f"submitting: {submitted / OPERATIONS * 1000:.1f} ms a request, one after the other")
        print(f"  platform overhead: {overhead_ms:.1f} ms an operation (goal < {GOAL_MS:.0f} ms): "
              f"{'met' if overhead_ms < GOAL_MS else 'NOT met'}")
    finally:
        resources.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
