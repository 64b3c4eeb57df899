"""A deployment of the project's processes on a PostgreSQL server of the test's own (tests/support/postgres.py).

Everything the test reads back goes through the server itself (`row`, `query`), or through a `manage.py`
child pointed at it: the test's own Django connection is to the shared server's test database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.postgres import ThrowawayPostgres
from tests.support.processes import ROOT, ManagedProcess, child_env, wait_for

TRAIN = ["--symbol", "SYN", "--timeframe", "1h", "--batch-size", "8", "--hidden-sizes", "32,16",
         "--learning-rate", "0.003", "--seed", "11", "--checkpoint-every", "1000"]


class Deployment:
    """A database on the throwaway server, folders, and the project's processes pointed at both."""

    def __init__(self, server: ThrowawayPostgres, tmp_path: Path, intervals: dict[str, str],
                 series: tuple[tuple[str, int, int], ...] = (("SYN", 3000, 5),)) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.database = f"outage_{tmp_path.name.lower().replace('-', '_')}"[:60]
        url = server.create_database(self.database)
        self.folders = {name: tmp_path / name.lower() for name in ("DATA_DIR", "MODELS_DIR", "CHECKPOINT_DIR",
                                                                   "WORKER_STATE_DIR", "VAR_DIR", "RESULTS_DIR")}
        self.env = child_env(DATABASE_URL=url, **intervals, **{name: str(path) for name, path in self.folders.items()})
        self.processes: list[ManagedProcess] = []
        self.manage("migrate", "--noinput")
        for symbol, bars, seed in series:
            self.manage("marketdata", "generate", "--symbol", symbol, "--timeframe", "1h", "--bars", str(bars),
                        "--seed", str(seed))

    def manage(self, *args: str) -> str:
        completed = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, f"manage.py {' '.join(args)}:\n{completed.stdout}\n{completed.stderr}"
        return completed.stdout

    def start(self, command: str, ready: str, **overrides: str) -> ManagedProcess:
        process = ManagedProcess([command], {**self.env, **overrides},
                                 self.tmp_path / f"{command}-{len(self.processes)}.log")
        self.processes.append(process)
        wait_for(lambda: ready in process.output or process.process.poll() is not None, timeout=60,
                 what=f"{command} to start")
        assert process.process.poll() is None, f"{command} exited:\n{process.output}"
        return process

    def train(self, epochs: int, *args: str) -> str:
        return json.loads(self.manage("train", *TRAIN, "--epochs", str(epochs), *args, "--json"))["operation_id"]

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

    def backtest(self, *args: str) -> str:
        return json.loads(self.manage("backtest", *args, "--json"))["operation_id"]

    def violations(self, operation_ids: list[str]) -> list[str]:
        """The resilience suite's invariants (tests/resilience/invariants.py), read by a child on this database."""
        output = self.manage("shell", "-c", "from tests.resilience.invariants import report; "
                             f"report({list(operation_ids)!r})")
        return json.loads(output.strip().splitlines()[-1])
