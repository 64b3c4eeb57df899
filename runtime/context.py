"""What a runner sees of its run: its parameters, the checkpoint to resume from, progress and stop requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from django.conf import settings
from django.db import connection

from checkpoints.services import Append, Fence, LoadedCheckpoint, SaveResult, checkpoint_forget_folder, checkpoint_save
from operations.services.workers import Progress
from runtime import committer as committers
from runtime.committer import Committer, CommitterGone
from runtime.shutdown import shutdown_requested

logger = logging.getLogger(__name__)


# The share of the time a background saver may work. A loop that checkpoints faster (a backtest runs
# 10,000 bars in a couple of milliseconds) skips checkpoints until the saver has rested three times as long
# as its last save took: its saves then take a quarter of a core and of the database at most, and a crash
# loses no more than four saves' time of work.
SAVER_DUTY = 0.25
# The share of its own time a loop may spend on periodic checkpoints (handing them over, taking the saver's
# answers). Each costs a fast loop a tenth of a millisecond or so, mostly memory its loop had pushed out of the
# caches; after one that cost t, the next is not taken before t / LOOP_SHARE. (The saves themselves slow the
# loop about as much again, from the other core: checkpoints add about twice this share in all.)
LOOP_SHARE = 0.005


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
        self.saves_begun = False  # whether this run has begun a checkpoint save (its row may exist)
        self._in_flight: threading.Thread | None = None
        self.last_save: SaveResult | None = None
        self._uncertain_folders: list[str] = []  # saves whose commit's outcome is unknown (connection lost)
        self._committer: Committer | None | bool = None  # False: unusable, save in threads
        self._commit_in_process = settings.CHECKPOINT_COMMITTER == "process"
        self._saver_started_at = self._saver_free_at = self._loop_free_at = 0.0
        self._spent_before_last_handover = 0.0  # checkpoint_seconds when the last periodic checkpoint was handed over
        self._progress_lock = threading.Lock()
        self._progress: Progress | None = None

    @property
    def fence(self) -> Fence:
        return Fence(worker_id=self.worker_id, attempt=self.attempt)

    # --- progress: kept in memory, written by the heartbeat thread (never per batch)
    def report_progress(
        self, *, current: int, total: int | None, unit: str, message: str | Callable[[], str] = "",
        percent: float | None = None,
    ) -> None:
        """The progress now. `message` may be a function, called only when the progress is taken (a fast
        loop reports often and should not format a message each time)."""
        if percent is None and total:
            percent = min(100.0, 100.0 * current / total)
        with self._progress_lock:
            self._progress = Progress(current=current, total=total, unit=unit, percent=percent, message=message)

    def take_progress(self) -> Progress | None:
        with self._progress_lock:
            if self._progress is not None and callable(self._progress.message):
                self._progress = replace(self._progress, message=self._progress.message())
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
        self.saves_begun = True
        result = self._save(checkpoint_type, state, artifacts)
        self.checkpoint_seconds += result.seconds
        return result

    def save_checkpoint_in_background(
        self, checkpoint_type: str, payload: Callable[[], tuple[dict[str, Any], dict[str, bytes]]],
        appends: Sequence[Append] = (),
    ) -> None:
        """Serialise and save a periodic checkpoint beside the run; one save in flight at most.

        `payload` must read only a snapshot the runner no longer changes. The
        commit-point rules hold as in any save: the row moves only once the files
        are complete. The previous save is waited for first.
        """
        self.flush_checkpoint()
        self.saves_begun = True
        self._saver_started_at = time.monotonic()
        self._in_flight = threading.Thread(
            target=self._save_in_background, args=(checkpoint_type, payload, appends),
            name=f"checkpoint-{self.operation_id}", daemon=True,
        )
        self._in_flight.start()

    def start_committer(self) -> None:
        """Start the committer process now (it takes about half a second), if checkpoints will use it."""
        if self._commit_in_process and self._committer is None:
            try:
                self._committer = committers.acquire()
            except OSError as exc:
                logger.warning("Checkpoint committer of %s not started, saving in threads: %s", self.operation_id, exc)
                self._committer = False

    def commit_in_background(self, checkpoint_type: str, state: partial,
                             appends: Sequence[Append] = ()) -> None:
        """A checkpoint of state and appends (no artifacts), saved beside the run; one save in flight at most.

        With CHECKPOINT_COMMITTER=process (the default) a child process writes
        the appends and commits (runtime/committer.py), so the run's
        loop keeps the GIL; with `thread`, or if the child cannot be used, a
        thread does. `state` makes the state when the saver calls it: a partial
        of a module's function with positional arguments. `last_save` is
        the save's result once flushed (None if it was lost with the child).
        The appends' data is copied before this returns: it need only be valid
        during the call.
        """
        self.flush_checkpoint()
        self.saves_begun = True
        self.last_save = None
        self._saver_started_at = time.monotonic()
        if self._commit_in_process and self._committer is not False:
            try:
                self._committer = self._committer or committers.acquire()
                self._committer.submit(self.operation_id, checkpoint_type, state, (self.worker_id, self.attempt),
                                       appends)
                return
            except (CommitterGone, OSError) as exc:
                logger.warning("Checkpoint committer of %s unusable, saving in a thread: %s", self.operation_id, exc)
                self._drop_committer()
        copies = [append._replace(data=bytes(append.data)) for append in appends]
        self.save_checkpoint_in_background(checkpoint_type, lambda: (state(), {}), copies)

    def saving_in_thread(self) -> bool:
        return self._in_flight is not None and self._in_flight.is_alive()

    def saving(self) -> bool:
        """Whether the background saver is busy: a save in flight, or the rest after it (a saver works at
        most SAVER_DUTY of the time, a loop spends at most LOOP_SHARE of its own on checkpoints). A fast loop
        skips a checkpoint then, rather than wait."""
        if self.saving_in_thread():
            return True
        if self._committer and self._committer.pending:
            if not self._committer.ready():
                return True
            self.flush_checkpoint()  # its answer is in: take it, with how long the save took
        return self.resting()

    def resting(self) -> bool:
        """Whether the saver or the loop is still resting after the last periodic checkpoint (a save in flight
        aside): a loop need not stop at a bar where one is due until then."""
        return time.monotonic() < max(self._saver_free_at, self._loop_free_at)

    def handed_over(self, seconds: float) -> None:
        """A periodic checkpoint was handed to the saver in `seconds` of the loop's time: the loop's share
        (LOOP_SHARE) counts that, and what it spent on checkpoints since the previous one (the answer)."""
        self.checkpoint_seconds += seconds
        spent = self.checkpoint_seconds - self._spent_before_last_handover
        self._spent_before_last_handover = self.checkpoint_seconds
        self._loop_free_at = time.monotonic() + spent / LOOP_SHARE

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
        """The run is over: wait for the save in flight; the committer is kept for the process's next run."""
        self.flush_checkpoint()
        if self._committer:
            committers.release(self._committer)
            self._committer = None

    def _drop_committer(self) -> None:
        """The child is gone or unusable: reap it; threads save from now on."""
        if self._committer:
            committers.release(self._committer, broken=True)
        self._committer = False

    def _save_in_background(self, checkpoint_type: str, payload, appends: Sequence[Append]) -> None:
        try:
            state, artifacts = payload()
            self.last_save = self._save(checkpoint_type, state, artifacts, appends)
        except Exception:  # a checkpoint failure never kills the operation
            logger.exception("Background checkpoint of %s failed", self.operation_id)
        finally:
            connection.close()  # this thread's own connection

    def _save(self, checkpoint_type: str, state: dict[str, Any], artifacts: dict[str, bytes],
              appends: Sequence[Append] = ()) -> SaveResult:
        result = checkpoint_save(
            operation_id=self.operation_id,
            checkpoint_type=checkpoint_type,
            state=state,
            artifacts=artifacts,
            fence=self.fence,
            appends=appends,
        )
        return self._record(result)

    def _record(self, result: SaveResult) -> SaveResult:
        self.last_save = result
        self._saver_free_at = self._saver_started_at + result.seconds / SAVER_DUTY
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
