"""What every scenario of the resilience suite must leave true, as a list of sentences (empty when all holds).

1. No operation RUNNING without a live worker process executing it, none PENDING or RESUMING without its
   task in the queue, none left waiting for reconciliation.
2. No lost outcome: a COMPLETED operation has its result, a FAILED one its message, and no outcome waits
   unreported in a worker's outbox.
3. The latest checkpoint of every operation that has one is loadable: each artifact there, of its size and
   checksum.
4. Exactly one winner: every run (attempt) was claimed once, and an operation completed at most once, last.

It reads through the ORM of whichever database Django is set up with, so a scenario on a server of its own
runs it in a child: `manage.py shell -c "from tests.resilience.invariants import report; report([...])"`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from checkpoints.exceptions import CheckpointCorrupted, CheckpointNotFound
from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_load
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from runtime.outbox import outbox_dir

CLAIMED_FROM = (S.PENDING, S.RESUMING)


def violations(operation_ids: Iterable[str]) -> list[str]:
    operation_ids = list(operation_ids)
    found: list[str] = []
    operations = {operation.pk: operation for operation in
                  Operation.objects.select_related("worker").filter(pk__in=operation_ids)}
    found += [f"{operation_id}: missing" for operation_id in operation_ids if operation_id not in operations]
    queued = _queued()
    for operation in operations.values():
        found += [f"{operation.pk}: {problem}" for problem in _problems(operation, queued)]
    found += [f"{entry}: an outcome left in the outbox" for entry in _outbox(operation_ids)]
    return found


def report(operation_ids: Iterable[str]) -> None:
    """Print the violations as JSON (for a scenario whose database only a child can reach)."""
    print(json.dumps(violations(operation_ids)))


def _problems(operation: Operation, queued: set[str]) -> list[str]:
    problems: list[str] = []
    status = operation.status
    if status == S.RUNNING:
        worker = operation.worker
        if worker is None or not _alive(worker.pid):
            problems.append(f"RUNNING on {operation.worker_id}, whose process is not alive")
        elif worker.current_operation_id != operation.pk:
            problems.append(f"RUNNING on {operation.worker_id}, which says it executes {worker.current_operation_id}")
    elif status in CLAIMED_FROM and operation.pk not in queued:
        problems.append(f"{status} with no task in the queue")
    elif status == S.PENDING_RECONCILIATION:
        problems.append("left waiting for reconciliation")
    elif status == S.COMPLETED and operation.result is None:
        problems.append("COMPLETED without a result")
    elif status == S.FAILED and not operation.error_message:
        problems.append("FAILED without a message")

    checkpoint = Checkpoint.objects.filter(pk=operation.pk).first()
    if checkpoint is not None:
        if status == S.COMPLETED:
            problems.append("COMPLETED, and its checkpoint is still there")
        try:
            checkpoint_load(operation.pk)
        except CheckpointNotFound:
            pass  # deleted since it was read (its operation completed)
        except CheckpointCorrupted as exc:
            problems.append(f"its checkpoint is not loadable: {exc}")

    events = list(OperationEvent.objects.filter(operation_id=operation.pk).order_by("at", "id")
                  .values_list("from_status", "to_status"))
    claims = sum(1 for before, after in events if after == S.RUNNING and before in CLAIMED_FROM)
    if claims != operation.attempt:
        problems.append(f"claimed {claims} times for {operation.attempt} run(s)")
    completions = [index for index, (_before, after) in enumerate(events) if after == S.COMPLETED]
    if len(completions) > 1 or (completions and completions[-1] != len(events) - 1):
        problems.append(f"completed {len(completions)} times, or changed after completing: {events}")
    return problems


def _alive(pid: int) -> bool:
    """A process of this machine that runs: neither gone, nor a zombie, nor stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X", "T", "t")


def _queued() -> set[str]:
    from django_q.models import OrmQ

    if settings.Q_CLUSTER.get("orm") is None:
        return set()
    return {message.task["args"][0] for message in OrmQ.objects.all()}


def _outbox(operation_ids: list[str]) -> list[str]:
    folder = outbox_dir()
    if not folder.exists():
        return []
    entries = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    return [entry["operation_id"] for entry in entries if entry["operation_id"] in operation_ids]
