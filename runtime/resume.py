"""Resume a cancelled or failed operation from its checkpoint (docs/cancel-and-resume.md).

The API, the command line and the admin are three thin callers of
`operation_resume`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from checkpoints.services import checkpoint_get, checkpoint_validate
from operations import registry
from operations.clock import db_now
from operations.exceptions import ExecutorNotRegistered, OperationNotFound
from operations.models import RESUMABLE_STATUSES, Operation, OperationStatus
from runtime.exceptions import OperationNotResumable, ResumeConflict, ResumeEnqueueFailed

logger = logging.getLogger(__name__)

S = OperationStatus


@dataclass(frozen=True)
class ResumeResult:
    operation_id: str
    status: str
    resumed_from: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"operation_id": self.operation_id, "status": self.status, "resumed_from": self.resumed_from}


def operation_resume(*, operation_id: str, actor: str) -> ResumeResult:
    """Resume an operation; the same id continues, on any worker.

    1. missing → OperationNotFound (404);
    2. not CANCELLED or FAILED → OperationNotResumable (409);
    3. no checkpoint → CheckpointNotFound (404);
    4. an artifact missing or wrong → CheckpointCorrupted (422);
    5. CANCELLED/FAILED → RESUMING, conditional on the version read in 1;
       lost the race → ResumeConflict (409);
    6. enqueue, once the transition is committed (so call this outside a
       transaction); backend-local operations are picked up by the control loop
       instead. If enqueueing fails, put the status back and raise
       ResumeEnqueueFailed (503).
    """
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise OperationNotFound(operation_id)
    if operation.status not in RESUMABLE_STATUSES:
        raise OperationNotResumable(operation_id, operation.status)
    checkpoint = checkpoint_get(operation_id)
    checkpoint_validate(checkpoint)
    if not operation.is_backend_local and registry.get_executor(operation.operation_type) is None:
        raise ExecutorNotRegistered(operation.operation_type)

    now = db_now()
    won = Operation.objects.transition(
        operation_id,
        from_statuses=[operation.status],
        to_status=S.RESUMING,
        actor=actor,
        reason=f"Resume from the {checkpoint.checkpoint_type} checkpoint",
        version=operation.version,
        queued_at=now,
        cancel_requested_at=None,
        # resumed by hand: the restart policy starts afresh (its counter, and the crash-loop watch)
        restarts=0,
        stalls=0,
        restart_from=None,
    )
    if not won:
        raise ResumeConflict(operation_id)

    if not operation.is_backend_local:
        try:
            registry.enqueue_operation(operation_id, operation.operation_type)
        except Exception as exc:
            logger.exception("Enqueueing the resume of %s failed", operation_id)
            Operation.objects.transition(
                operation_id,
                from_statuses=[S.RESUMING],
                to_status=operation.status,
                actor=actor,
                reason=f"Resume could not be enqueued: {exc}",
                version=operation.version + 1,
            )
            raise ResumeEnqueueFailed(operation_id, str(exc) or type(exc).__name__) from None

    resumed_from = {
        "checkpoint_type": checkpoint.checkpoint_type,
        "created_at": checkpoint.created_at,
        **checkpoint.position,
        "progress_percent": operation.progress_percent,
    }
    return ResumeResult(operation_id=operation_id, status=S.RESUMING, resumed_from=resumed_from)
