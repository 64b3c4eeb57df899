"""Real `qcluster` and `supervise` children for training process tests, and what a user reads back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch

from checkpoints.models import Checkpoint
from operations.models import TERMINAL_STATUSES, Operation, OperationEvent
from operations.models import OperationStatus as S
from tests.support.processes import ManagedProcess, child_env, wait_for
from training.services import training_start

HEARTBEAT_SECONDS = 0.5
ORPHAN_TIMEOUT_SECONDS = 4.0
ORPHAN_CHECK_SECONDS = 0.5
INTERVALS = {
    "HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_SECONDS),
    "WORKER_STALE_SECONDS": "2",
    "ORPHAN_TIMEOUT_SECONDS": str(ORPHAN_TIMEOUT_SECONDS),
    "ORPHAN_CHECK_INTERVAL_SECONDS": str(ORPHAN_CHECK_SECONDS),
    "REQUEUE_AFTER_SECONDS": "60",
    "RESTART_BACKOFF_SECONDS": "0.5",
    # One torch thread per worker process: two workers on a small machine do not fight over cores.
    "OMP_NUM_THREADS": "1",
}
# Small enough for an epoch of about 0.1-0.3 s on one CPU thread.
REQUEST = {
    "symbol": "SYN",
    "timeframe": "1h",
    "epochs": 30,
    "batch_size": 8,
    "hidden_sizes": [32, 16],
    "learning_rate": 0.003,
    "seed": 11,
    "checkpoint_every": 5,
    # These runs are resumed by hand, as before the restart policy: it is off for them (max_restarts 0). The
    # resilience suite and tests/resilience/test_self_healing.py turn it on.
    "max_restarts": 0,
}
RUN_TIMEOUT = 120  # a 30-epoch run takes a few seconds; generous for a loaded machine


class Children:
    """The test's `qcluster` and `supervise` processes; all of them are stopped at teardown."""

    def __init__(self, tmp_path: Path, folders: dict[str, Path]) -> None:
        self.tmp_path = tmp_path
        self.env = {**INTERVALS, **{name: str(path) for name, path in folders.items()}}
        self.started: list[ManagedProcess] = []

    def start(self, command: str, ready: str, **overrides: str) -> ManagedProcess:
        process = ManagedProcess(
            [command],
            child_env(**{**self.env, **overrides}),
            self.tmp_path / f"{command}-{len(self.started)}.log",
        )
        self.started.append(process)
        wait_for(
            lambda: ready in process.output or process.process.poll() is not None,
            timeout=60,
            what=f"{command} to start",
        )
        assert process.process.poll() is None, f"{command} exited:\n{process.output}"
        return process

    def cluster(self, workers: int = 2, **overrides: str) -> ManagedProcess:
        return self.start("qcluster", "running.", Q_WORKERS=str(workers), **overrides)

    def cluster_with_settings(self, module: str, source: str, workers: int = 1, **overrides: str) -> ManagedProcess:
        """A cluster whose worker processes run a settings module of the test's own (fault injection)."""
        folder = self.tmp_path / f"{module}-settings"
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(source)
        return self.cluster(
            workers=workers,
            DJANGO_SETTINGS_MODULE=module,
            PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
            **overrides,
        )

    def supervise(self) -> ManagedProcess:
        return self.start("supervise", "Startup reconciliation")

    def stop_all(self) -> None:
        for process in reversed(self.started):
            try:
                process.stop()
            except Exception as exc:  # go on: every child must be stopped
                print(f"stopping {process.args}: {exc!r}")
            try:  # whatever is left in its process group (a worker of a cluster that did not stop)
                os.killpg(process.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            tail = process.log_path.read_text().splitlines()[-25:]
            print(f"--- {process.log_path.name} (last lines)\n" + "\n".join(tail))


def train(**overrides) -> str:
    return training_start(data={**REQUEST, **overrides}, actor="test").pk


def status_of(operation_id: str) -> str:
    return Operation.objects.values_list("status", flat=True).get(pk=operation_id)


def wait_until_terminal(operation_id: str, timeout: float = RUN_TIMEOUT) -> Operation:
    """The operation once it has ended: terminal, and no automatic resume planned (the restart policy's)."""
    wait_for(lambda: Operation.objects.filter(pk=operation_id, status__in=TERMINAL_STATUSES,
                                              restart_due_at__isnull=True).exists(),
             timeout=timeout, interval=0.05, what=f"{operation_id} to end")
    return Operation.objects.get(pk=operation_id)


def wait_until_completed(operation_id: str) -> Operation:
    operation = wait_until_terminal(operation_id)
    assert operation.status == S.COMPLETED, (operation.status, operation.error_message)
    return operation


def wait_for_progress(operation_id: str, epochs: int) -> None:
    def reached() -> bool:
        status, current = Operation.objects.values_list("status", "progress_current").get(pk=operation_id)
        assert status not in TERMINAL_STATUSES, f"{operation_id} ended ({status}) before epoch {epochs}"
        return current >= epochs

    wait_for(reached, timeout=RUN_TIMEOUT, interval=0.05, what=f"epoch {epochs} of {operation_id}")


def automatic(operation_id: str) -> list[tuple[str, str, str]]:
    """The status changes the control loop made on its own (from, to, reason), oldest first."""
    events = OperationEvent.objects.filter(operation_id=operation_id, actor="control-loop").order_by("at", "id")
    return [(event.from_status, event.to_status, event.reason) for event in events
            if event.from_status != event.to_status]


def resumed_by_hand(operation_id: str) -> list[str]:
    """Who resumed it other than the restart policy (the actors of those resumes)."""
    return list(OperationEvent.objects.filter(operation_id=operation_id, to_status=S.RESUMING)
                .exclude(actor="control-loop").values_list("actor", flat=True))


def transitions(operation_id: str) -> list[tuple[str, str]]:
    """The status changes in the operation's history (a cancel request, RUNNING → RUNNING, left out)."""
    events = OperationEvent.objects.filter(operation_id=operation_id).order_by("at", "id")
    return [(event.from_status, event.to_status) for event in events if event.from_status != event.to_status]


def checkpoint_files(folders: dict[str, Path], checkpoint: Checkpoint) -> dict[str, int]:
    folder = folders["CHECKPOINT_DIR"] / checkpoint.artifacts_path
    return {path.name: path.stat().st_size for path in folder.iterdir()}


def assert_checkpoint_on_disk(folders: dict[str, Path], checkpoint: Checkpoint) -> None:
    assert checkpoint_files(folders, checkpoint) == {entry["name"]: entry["size"] for entry in checkpoint.manifest}


def save_folders(folders: dict[str, Path], operation_id: str) -> set[str]:
    folder = folders["CHECKPOINT_DIR"] / operation_id
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def wait_until_checkpoint_gone(folders: dict[str, Path], operation_id: str) -> None:
    """Completion deletes the row, then the files: just after COMPLETED they may still be on their way out."""
    def gone() -> bool:
        # The row, then the save folders, then the operation's own (empty) folder: each a moment after the last.
        return (not Checkpoint.objects.filter(pk=operation_id).exists()
                and not (folders["CHECKPOINT_DIR"] / operation_id).exists())

    try:
        wait_for(gone, timeout=10, interval=0.05, what=f"the checkpoint of {operation_id} to be deleted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still there: {sorted(save_folders(folders, operation_id))}") from None


def final_weights(operation: Operation, folders: dict[str, Path]) -> dict[str, torch.Tensor]:
    model_path = Path(operation.result["model_path"])
    assert model_path.parent == folders["MODELS_DIR"] / operation.pk
    return torch.load(model_path, weights_only=True)


def assert_same_model(resumed: Operation, straight: Operation, folders: dict[str, Path]) -> None:
    first, second = final_weights(resumed, folders), final_weights(straight, folders)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert resumed.result["epochs_completed"] == straight.result["epochs_completed"] == REQUEST["epochs"]
    assert resumed.result["history"] == straight.result["history"]

