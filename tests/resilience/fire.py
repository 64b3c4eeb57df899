"""What the scenarios do to the processes, and how they wait for the outcome."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from checkpoints.models import Checkpoint
from operations.models import Operation
from operations.models import OperationStatus as S
from runtime.resume import operation_resume
from tests.resilience.invariants import violations
from tests.support.processes import wait_for
from tests.training.cluster import automatic, resumed_by_hand

SETTLE_TIMEOUT = 30


def seeded(request) -> random.Random:
    """The run's random moments: RESILIENCE_SEED replays a failed run (its seed is printed)."""
    seed = int(os.environ.get("RESILIENCE_SEED") or random.SystemRandom().randrange(10**9))
    print(f"{request.node.nodeid}: RESILIENCE_SEED={seed}")
    return random.Random(seed)


def assert_settled(operation_ids, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until the invariants hold (a kill needs the sweep to notice it); fail naming what does not."""
    try:
        wait_for(lambda: not violations(operation_ids), timeout=timeout, interval=0.2, what="the invariants")
    except AssertionError:
        raise AssertionError("\n".join(violations(operation_ids))) from None


def executing_pid(operation_id: str) -> int:
    """The pid of the worker process that runs the operation now."""
    def running() -> int | None:
        operation = Operation.objects.select_related("worker").get(pk=operation_id)
        assert operation.status in (S.PENDING, S.RESUMING, S.RUNNING), (operation.status, operation.error_message)
        return operation.worker.pid if operation.status == S.RUNNING and operation.worker else None

    return wait_for(running, timeout=60, interval=0.02, what=f"{operation_id} to run")


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def kill(pid: int, *, with_children: bool = False) -> None:
    """kill -9 of the process (and of its children at the same moment: a worker with its committer)."""
    for victim in [pid, *descendants(pid)] if with_children else [pid]:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_status(operation_id: str, *statuses: str, timeout: float = 60) -> Operation:
    wait_for(lambda: Operation.objects.filter(pk=operation_id, status__in=statuses).exists(), timeout=timeout,
             interval=0.05, what=f"{operation_id} to be {' or '.join(statuses)}")
    return Operation.objects.get(pk=operation_id)


def checkpoint_version(operation_id: str) -> int:
    """The version of the operation's checkpoint; 0 when it has none."""
    return Checkpoint.objects.filter(pk=operation_id).values_list("version", flat=True).first() or 0


def wait_for_checkpoint_after(operation_id: str, version: int = 0, timeout: float = 60) -> Checkpoint:
    """The operation's checkpoint, once one newer than `version` is committed."""
    wait_for(lambda: Checkpoint.objects.filter(pk=operation_id, version__gt=version).exists(), timeout=timeout,
             interval=0.01, what=f"a checkpoint of {operation_id} after version {version}")
    return Checkpoint.objects.get(pk=operation_id)


def wait_for_checkpoint_or_end(operation_id: str, version: int, timeout: float = 60) -> None:
    """Until a checkpoint newer than `version` is committed, or the operation completed (a resumed run near its end
    may finish before its next periodic checkpoint; completing deletes the checkpoint)."""
    wait_for(lambda: Checkpoint.objects.filter(pk=operation_id, version__gt=version).exists()
             or Operation.objects.filter(pk=operation_id, status=S.COMPLETED).exists(),
             timeout=timeout, interval=0.01, what=f"a checkpoint of {operation_id} after version {version}, or its end")


def next_run(operation_id: str, attempt: int, timeout: float = 60) -> Operation:
    """The operation once a run after `attempt` has been claimed (the restart policy resumed it on its own), or
    once it completed; fails at once if it ended with no automatic resume planned."""
    def resumed() -> Operation | None:
        operation = Operation.objects.get(pk=operation_id)
        if operation.status == S.COMPLETED or (operation.attempt > attempt and operation.status == S.RUNNING):
            return operation
        assert operation.status not in (S.FAILED, S.CANCELLED) or operation.restart_due_at is not None, (
            f"{operation_id} ended {operation.status} with no automatic resume planned: {operation.error_message}")
        return None

    return wait_for(resumed, timeout=timeout, interval=0.02, what=f"a run of {operation_id} after attempt {attempt}")


def assert_healed(operation_id: str, completed: Operation, *, lost: int) -> None:
    """Completed with no resume by hand; `lost` runs counted against max_restarts (a shutdown's are not)."""
    assert not resumed_by_hand(operation_id)
    assert completed.restarts == lost, (completed.restarts, lost)
    assert completed.attempt == 1 + len([change for change in automatic(operation_id)
                                         if change[1] in (S.RESUMING, S.PENDING)])


def resume(operation_id: str) -> None:
    operation_resume(operation_id=operation_id, actor="resilience")


def pause(rng: random.Random, low: float, high: float) -> float:
    seconds = rng.uniform(low, high)
    time.sleep(seconds)
    return seconds
