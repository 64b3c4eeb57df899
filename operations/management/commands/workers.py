"""`manage.py workers`: the fleet, every worker process with its host, state, operation and last heartbeat, and the
control loop."""

from __future__ import annotations

import json as json_module
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from operations.api.serializers import WorkerSerializer
from operations.clock import db_now
from operations.models import ControlLoop, Operation, OperationStatus, Worker, WorkerStatus, WorkerType


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


class Command(BaseCommand):
    help = (
        "List the worker processes of every cluster (idle or busy; stopping, stopped, or unavailable when silent "
        "for WORKER_STALE_SECONDS) with their host, current operation and last heartbeat, and the control loop."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--state", choices=[status.lower() for status in WorkerStatus.values],
                            help="Only the workers in this state.")
        parser.add_argument("--host", help="Only the workers of this host.")
        parser.add_argument("--json", action="store_true",
                            help="Print the workers as GET workers/ does (the control loop left out, as here).")

    def handle(self, *args, state: str | None = None, host: str | None = None, json: bool = False,
               **options: Any) -> None:
        workers = Worker.objects.exclude(worker_type=WorkerType.CONTROL_LOOP).order_by("host", "worker_id")
        if state:
            workers = workers.filter(status=state.upper())
        if host:
            workers = workers.filter(host=host)
        rows = list(workers)
        if json:
            body = {"count": len(rows), "results": WorkerSerializer(rows, many=True).data}
            self.stdout.write(json_module.dumps(body, cls=DjangoJSONEncoder, indent=2))
            return
        now = db_now()
        self.stdout.write(f"{'WORKER':<44} {'HOST':<20} {'STATE':<12} {'OPERATION':<48} LAST SEEN")
        for worker in rows:
            self.stdout.write(
                f"{worker.worker_id:<44} {worker.host:<20} {worker.status:<12} "
                f"{worker.current_operation_id or '-':<48} {ago(worker.last_seen_at, now)}"
            )
        counts = {status: sum(worker.status == status for worker in rows) for status in WorkerStatus.values}
        states = ", ".join(f"{count} {status.lower()}" for status, count in counts.items() if count)
        self.stdout.write(f"Total: {len(rows)} worker{'' if len(rows) == 1 else 's'}" + (f" ({states})" if states else ""))
        self.stdout.write(self.control_loop(now))

    def control_loop(self, now: datetime) -> str:
        loop = ControlLoop.objects.filter(pk=1).first()
        if loop is None or loop.pid is None:
            return "Control loop: never started (python manage.py supervise)"
        running = loop.lease_expires_at is not None and loop.lease_expires_at > now
        state = "running" if running else "stopped"
        sessions = Operation.objects.filter(is_backend_local=True, status=OperationStatus.RUNNING).count()
        return (f"Control loop: {state}, pid {loop.pid} on {loop.host} since {loop.started_at:%Y-%m-%d %H:%M:%S}; "
                f"last sweep {ago(loop.last_sweep_at, now)}; {sessions} research session(s) running in it")

