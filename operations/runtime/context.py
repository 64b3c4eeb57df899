"""What a runner sees of its run: its parameters, the checkpoint to resume from, progress and stop requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.db import connection

from checkpoints.services import Fence, LoadedCheckpoint, SaveResult, checkpoint_forget_folder, checkpoint_save
from operations.runtime.committer import Committer, CommitterGone
from operations.runtime.shutdown import shutdown_requested
from operations.services.workers import Progress


logger = logging.getLogger(__name__)


class OperationStopped(Exception):
    """Raised inside a runner at a safe point when the run must end early."""


class OperationCancelled(OperationStopped):
    pass


class OperationShutdown(OperationStopped):
    """The worker's cluster is shutting down (SIGTERM): checkpoint and stop."""


class OperationAbandoned(OperationStopped):
    """The control plane says this run is no longer ours: stop without writing anything."""


class Runner(Protocol):
    """The domain side of an operation (a training run, a backtest)."""

    def run(self) -> dict[str, Any]:
        """Do the work from the context's checkpoint, if any; return the result. Call
        `context.raise_if_stopping()` at safe points (between batches or bars)."""

    def checkpoint_payload(self) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """State and artifacts of the last consistent point (None before the first).

        A runner may also define `completed()`: its clean-up once the COMPLETED outcome is recorded."""


@dataclass
class StopFlags:
    cancel: threading.Event
    abandon: threading.Event


class RunContext:
    def __init__(
        self,
        *,
        operation_id: str,
        operation_type: str,
        params: dict[str, Any],
        worker_id: str,
        attempt: int,
        resume_from: LoadedCheckpoint | None,
    ) -> None:
        self.operation_id = operation_id
        self.operation_type = operation_type
        self.params = params
        self.worker_id = worker_id
        self.attempt = attempt
        self.resume_from = resume_from
        self.cancel_requested = threading.Event()
        self.abandoned = threading.Event()
        self.checkpoint_seconds = 0.0  # time the runner waited on checkpointing
        self._in_flight: threading.Thread | None = None
        self.last_save: SaveResult | None = None
        self._uncertain_folders: list[str] = []  # saves whose commit's outcome is unknown (connection lost)
        self._committer: Committer | None | bool = None  # False: unusable, save in threads
        self._progress_lock = threading.Lock()
        self._progress: Progress | None = None

    @property
    def fence(self) -> Fence:
        return Fence(worker_id=self.worker_id, attempt=self.attempt)

    # --- progress: kept in memory, written by the heartbeat thread (never per batch)
    def report_progress(
        self, *, current: int, total: int | None, unit: str, message: str = "", percent: float | None = None
    ) -> None:
        if percent is None and total:
            percent = min(100.0, 100.0 * current / total)
        with self._progress_lock:
            self._progress = Progress(current=current, total=total, unit=unit, percent=percent, message=message)

    def take_progress(self) -> Progress | None:
        with self._progress_lock:
            return self._progress

    # --- stopping
    def raise_if_stopping(self) -> None:
        if self.abandoned.is_set():
            raise OperationAbandoned(self.operation_id)
        if self.cancel_requested.is_set():
            raise OperationCancelled(self.operation_id)
        if shutdown_requested.is_set():
            raise OperationShutdown(self.operation_id)

    # --- checkpoints, fenced on this run
    def save_checkpoint(self, checkpoint_type: str, state: dict[str, Any], artifacts: dict[str, bytes]) -> SaveResult:
        """Save now (cancel, failure and shutdown checkpoints), after any save still in flight."""
        self.flush_checkpoint()
        result = self._save(checkpoint_type, state, artifacts)
        self.checkpoint_seconds += result.seconds
        return result

    def save_checkpoint_in_background(
        self, checkpoint_type: str, payload: Callable[[], tuple[dict[str, Any], dict[str, bytes]]]
    ) -> None:
        """Serialise and save a periodic checkpoint beside the run; one save in flight at most.

        `payload` must read only a snapshot the runner no longer changes. The
        commit-point rules hold as in any save: the row moves only once the files
        are complete. The previous save is waited for first.
        """
        self.flush_checkpoint()
        self._in_flight = threading.Thread(
            target=self._save_in_background, args=(checkpoint_type, payload), name=f"checkpoint-{self.operation_id}",
            daemon=True,
        )
        self._in_flight.start()

    def start_committer(self) -> None:
        """Start the committer process now (it takes about half a second), if checkpoints will use it."""
        if settings.CHECKPOINT_COMMITTER == "process" and self._committer is None:
            try:
                self._committer = Committer()
                self._committer.start()
            except OSError as exc:
                logger.warning("Checkpoint committer of %s not started, saving in threads: %s", self.operation_id, exc)
                self._committer = False

    def commit_in_background(self, checkpoint_type: str, state: dict[str, Any]) -> None:
        """A checkpoint of state alone (no artifacts), committed beside the run; one save in flight at most.

        With CHECKPOINT_COMMITTER=process (the default) a child process commits
        it (operations/runtime/committer.py), so the run's loop keeps the GIL;
        with `thread`, or if the child cannot be used, a thread does.
        """
        self.flush_checkpoint()
        if settings.CHECKPOINT_COMMITTER == "process" and self._committer is not False:
            try:
                self._committer = self._committer or Committer()
                self._committer.submit({"operation_id": self.operation_id, "checkpoint_type": checkpoint_type,
                                        "state": state, "artifacts": {}, "fence": (self.worker_id, self.attempt)})
                return
            except CommitterGone as exc:
                logger.warning("Checkpoint committer of %s unusable, saving in a thread: %s", self.operation_id, exc)
                self._drop_committer()
        self.save_checkpoint_in_background(checkpoint_type, lambda: (state, {}))

    def saving_in_thread(self) -> bool:
        return self._in_flight is not None and self._in_flight.is_alive()

    def saving(self) -> bool:
        """Whether a background save is still in flight (a fast loop may rather skip a checkpoint than wait)."""
        return self.saving_in_thread() or (bool(self._committer) and not self._committer.ready())

    def flush_checkpoint(self) -> None:
        """Wait for the save in flight, if any (before the next save, a stop checkpoint, and the end)."""
        started = time.monotonic()
        if self._in_flight is not None:
            self._in_flight.join()
            self._in_flight = None
        elif self._committer and self._committer.pending:
            try:
                self._record(self._committer.result())
            except CommitterGone as exc:
                logger.warning("Checkpoint committer of %s exited, saving in threads: %s", self.operation_id, exc)
                self._drop_committer()
        else:
            return
        self.checkpoint_seconds += time.monotonic() - started

    def close(self) -> None:
        """The run is over: wait for the save in flight, stop the committer."""
        self.flush_checkpoint()
        if self._committer:
            self._committer.close()

    def _drop_committer(self) -> None:
        """The child is gone or unusable: reap it; threads save from now on."""
        if self._committer:
            self._committer.close()
        self._committer = False

    def _save_in_background(self, checkpoint_type: str, payload) -> None:
        try:
            state, artifacts = payload()
            self.last_save = self._save(checkpoint_type, state, artifacts)
        except Exception:  # a checkpoint failure never kills the operation
            logger.exception("Background checkpoint of %s failed", self.operation_id)
        finally:
            connection.close()  # this thread's own connection

    def _save(self, checkpoint_type: str, state: dict[str, Any], artifacts: dict[str, bytes]) -> SaveResult:
        result = checkpoint_save(
            operation_id=self.operation_id,
            checkpoint_type=checkpoint_type,
            state=state,
            artifacts=artifacts,
            fence=self.fence,
        )
        return self._record(result)

    def _record(self, result: SaveResult) -> SaveResult:
        self.last_save = result
        if result.uncertain_folder:
            self._uncertain_folders += [f for f in (result.uncertain_folder, result.previous_folder) if f]
        elif result.saved:
            self.forget_uncertain_folders()
        return result

    def forget_uncertain_folders(self) -> None:
        """Once a save committed (or the checkpoint was deleted), the folders of uncertain commits are garbage."""
        for folder in list(self._uncertain_folders):
            try:
                checkpoint_forget_folder(self.operation_id, folder)
                self._uncertain_folders.remove(folder)
            except Exception:  # the database is still away: try again after the next save; the sweep is the backstop
                logger.warning("Could not check the uncertain checkpoint folder %s yet", folder, exc_info=True)
