"""The django-q2 task that executes an operation."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from checkpoints.exceptions import CheckpointCorrupted
from checkpoints.models import Checkpoint, CheckpointType
from checkpoints.services import checkpoint_delete, checkpoint_load
from operations import registry
from operations.models import Operation, OperationStatus
from operations.restarts import EndCause
from operations.exceptions import WorkerNotFound
from operations.services.lifecycle import Claim, operation_claim_run, operation_finish
from operations.services.workers import CompletedReport
from runtime.context import (
    OperationAbandoned,
    OperationCancelled,
    OperationShutdown,
    RunContext,
    Runner,
)
from runtime.heartbeat import Heartbeat
from runtime.outbox import outbox_write
from runtime.shutdown import (
    GRACEFUL_SHUTDOWN_MESSAGE,
    GRACEFUL_SHUTDOWN_NO_CHECKPOINT,
    shutdown_requested,
)
from runtime.worker import (
    DATABASE_UNREACHABLE,
    GaveUp,
    current_worker_id,
    database_lost,
    needs_registration,
    register,
    until_reachable,
)

logger = logging.getLogger(__name__)

S = OperationStatus

# The path every queued task names (domain apps register it as their executor's task). Moving the function
# needs a forwarding module at the old path for tasks already queued, as operations/runtime/tasks.py is.
RUN_OPERATION_TASK = "runtime.tasks.run_operation"


def run_operation(operation_id: str) -> str:
    """Execute one operation; safe to deliver more than once.

    1. Register this worker process (its first task, or outcomes waiting in
       this machine's outbox); claim the operation, registering first if the
       worker's row is gone (nothing to claim: a duplicate or late delivery,
       return).
    2. Start the heartbeat thread, so that a slow start is not taken for a
       dead worker; load the checkpoint if it is being resumed (corrupted:
       FAILED) and build the domain's runner (it cannot start: FAILED, the
       checkpoint kept).
    3. Run it.
    4. Record the outcome, fenced on this run: COMPLETED (its checkpoint
       deleted, if it resumed from one or began a save),
       CANCELLED with a cancellation checkpoint, or FAILED with a failure
       checkpoint; told to stop, write nothing.
    The database may go away at any point: registration, claim and outcome
    wait for it (an outcome through the outbox, see runtime/outbox.py),
    the heartbeat retries, and the run itself does not need it.
    """
    if shutdown_requested.is_set():
        return "not claimed: shutting down"  # left PENDING; the sweep re-enqueues it for another worker
    worker_id = current_worker_id()
    try:
        # A worker needs no prior contact from the control plane: it registers itself, and waits
        # for the database if it is down (reporting what this machine's outbox holds).
        if needs_registration(worker_id):
            until_reachable(lambda: register(worker_id), what=f"Registration of {worker_id}",
                            stop=shutdown_requested)
        claim = until_reachable(lambda: _claim(operation_id, worker_id), what=f"Claim of {operation_id}",
                                stop=shutdown_requested)
        if claim is None:
            return "not claimed"
    except GaveUp:
        return "not claimed: shutting down"  # claimed or not, the sweep deals with it
    attempt = claim.attempt
    finish = _Finisher(operation_id, worker_id, attempt)

    executor = registry.get_executor(claim.operation_type)
    if executor is None or executor.runner is None:
        finish.failed(f"No runner is registered for {claim.operation_type} operations")
        return finish.outcome("failed")
    context = RunContext(
        operation_id=operation_id,
        operation_type=claim.operation_type,
        params=claim.params,
        worker_id=worker_id,
        attempt=attempt,
        resume_from=None,
    )
    # Beat from the claim on: reading the checkpoint and loading the data can take longer than
    # WORKER_STALE_SECONDS, and the sweep must not take a worker still starting its run for a dead one.
    heartbeat = Heartbeat(context)
    heartbeat.start()
    runner = None
    try:
        resuming = claim.previous_status == S.RESUMING  # claimed from RESUMING: a checkpoint must be there
        runner = _start_runner(context, executor.runner, finish, resuming=resuming)
        if runner is None:
            return finish.outcome("failed")
        result = runner.run()
    except OperationAbandoned:
        context.flush_checkpoint()
        logger.warning("Abandoned %s: the control plane gave it to another run", operation_id)
        return "abandoned"
    except OperationShutdown:
        saved = _save_payload(context, runner, CheckpointType.SHUTDOWN)
        message = GRACEFUL_SHUTDOWN_MESSAGE if saved else GRACEFUL_SHUTDOWN_NO_CHECKPOINT
        finish.done(S.CANCELLED, error=message, reason=message, cause=EndCause.SHUTDOWN)
        return finish.outcome("shut down")
    except OperationCancelled:
        saved = _save_payload(context, runner, CheckpointType.CANCELLATION)
        finish.done(S.CANCELLED, reason="Cancelled by request" + (" - checkpoint saved" if saved else ""),
                    cause=EndCause.CANCELLED)
        return finish.outcome("cancelled")
    except Exception as exc:
        logger.exception("Operation %s failed", operation_id)
        _save_payload(context, runner, CheckpointType.FAILURE)
        finish.failed(f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(),
                      cause=cause_of(claim.operation_type, exc))
        return finish.outcome("failed")
    finally:
        context.close()  # no save may commit after the outcome (or after the checkpoint's deletion)
        heartbeat.stop()
    if finish.done(S.COMPLETED, result=result, reason="Completed"):
        if context.resume_from is None and not context.saves_begun:
            _after_completion(runner, operation_id)  # no checkpoint: none was there, and this run began none
            return finish.outcome("completed")
        try:
            until_reachable(lambda: checkpoint_delete(operation_id), what=f"Deleting the checkpoint of {operation_id}",
                            stop=shutdown_requested)
        except GaveUp:
            logger.warning("The checkpoint of completed %s is left for the cleanup", operation_id)
        else:
            context.forget_uncertain_folders()
        _after_completion(runner, operation_id)
    return finish.outcome("completed")


def _claim(operation_id: str, worker_id: str) -> Claim | None:
    """Claim the operation; a worker whose row is gone (deleted, or never written) registers and claims again."""
    try:
        return operation_claim_run(operation_id=operation_id, worker_id=worker_id)
    except WorkerNotFound:
        register(worker_id)
        return operation_claim_run(operation_id=operation_id, worker_id=worker_id)


def _start_runner(context: RunContext, runner_path: str, finish: _Finisher, *, resuming: bool) -> Runner | None:
    """Load the checkpoint to resume from, if any, and build the runner.

    None when the run cannot start, recorded as FAILED with any checkpoint kept
    for a retry: a corrupted checkpoint, or a runner that raises while it
    prepares (its market data missing, a range too short). Uncaught, the
    latter left the operation RUNNING until the sweep blamed a live worker.
    """
    try:
        context.resume_from = until_reachable(
            lambda: checkpoint_load(context.operation_id)
            if Checkpoint.objects.filter(pk=context.operation_id).exists() else None,
            what=f"Loading the checkpoint of {context.operation_id}", stop=shutdown_requested,
        )
    except GaveUp:
        raise OperationShutdown(context.operation_id) from None
    except CheckpointCorrupted as exc:
        finish.failed(f"{exc.code}: {exc.detail}")
        return None
    if resuming and context.resume_from is None:
        # Starting over would silently redo all the work the user asked to resume.
        finish.failed("CHECKPOINT_NOT_FOUND: the checkpoint was deleted before the resume could load it")
        return None
    try:
        return import_string(runner_path)(context)
    except Exception as exc:
        logger.exception("Operation %s could not start", context.operation_id)
        finish.failed(f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(),
                      cause=cause_of(context.operation_type, exc))
        return None


def cause_of(operation_type: str, error: BaseException) -> str:
    """An error that ended a run: transient if its type marks it so (the restart policy resumes it), else final."""
    return EndCause.TRANSIENT_ERROR if registry.is_transient(operation_type, error) else EndCause.ERROR


def _after_completion(runner: Runner, operation_id: str) -> None:
    """The runner's own clean-up once its COMPLETED outcome is recorded (never for a run that lost)."""
    completed = getattr(runner, "completed", None)
    if completed is None:
        return
    try:
        completed()
    except Exception:  # what is left behind is garbage, not a reason to fail a completed operation
        logger.exception("Clean-up after %s completed failed", operation_id)


def _save_payload(context: RunContext, runner, checkpoint_type: str) -> bool:
    if runner is None:  # it failed before it had any state
        return False
    if not context.params.get("checkpoints_enabled", True):  # the request asked for no checkpoint at all
        return False
    try:
        payload = runner.checkpoint_payload()
    except Exception:
        logger.exception("Could not take the %s checkpoint state of %s", checkpoint_type, context.operation_id)
        return False
    if payload is None:
        return False
    state, artifacts = payload
    return context.save_checkpoint(checkpoint_type, state, artifacts).saved


class _Finisher:
    """Records the outcome of a run, fenced on it, through the outbox when the database is unreachable."""

    def __init__(self, operation_id: str, worker_id: str, attempt: int) -> None:
        self.operation_id, self.worker_id, self.attempt = operation_id, worker_id, attempt
        self.in_outbox = False

    def done(self, status: str, *, result: Any = None, error: str = "", reason: str = "", cause: str = "") -> bool:
        """Whether this run's outcome is the one recorded."""
        won = None
        for attempt in (1, 2):  # the first failure may only be a connection the database closed long ago
            try:
                won = operation_finish(
                    operation_id=self.operation_id,
                    worker_id=self.worker_id,
                    attempt=self.attempt,
                    status=status,
                    result=result,
                    error_message=error,
                    reason=reason,
                    cause=cause,
                )
                break
            except DATABASE_UNREACHABLE as exc:
                database_lost(f"Outcome {status} of {self.operation_id}", exc, attempt)
        if won is None:
            won = self._through_outbox(status, result, error, cause)
        if not won:
            logger.warning("Outcome %s of %s not recorded: no longer this run's", status, self.operation_id)
        return won

    def failed(self, error: str, trace: str = "", cause: str = EndCause.ERROR) -> bool:
        logger.error("Operation %s failed (%s): %s\n%s", self.operation_id, cause, error, trace)
        return self.done(S.FAILED, error=error[:10_000], reason=error[:500], cause=cause)

    def outcome(self, name: str) -> str:
        return f"{name} (left in the outbox)" if self.in_outbox else name

    def _through_outbox(self, status: str, result: Any, error: str, cause: str) -> bool:
        """Keep the outcome on disk, then wait for the database and report it with a registration.

        The outbox entry outlives this process: if the worker is stopped before
        the database is back, the next worker or cluster on this machine reports it.
        """
        report = CompletedReport(
            operation_id=self.operation_id, worker_id=self.worker_id, attempt=self.attempt, status=status,
            result=result, error_message=error[:10_000], completed_at=timezone.now(), cause=cause,
        )
        outbox_write(report)
        try:
            until_reachable(lambda: register(self.worker_id), what=f"Reporting {self.operation_id}",
                            stop=shutdown_requested)
        except GaveUp:
            self.in_outbox = True
            return False
        # Applied now, or already recorded by a first try whose reply was lost: either way it is ours.
        return Operation.objects.filter(
            pk=self.operation_id, status=status, worker_id=self.worker_id, attempt=self.attempt
        ).exists()
