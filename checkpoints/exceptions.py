from __future__ import annotations

from typing import Any

from operations.exceptions import ServiceError
from operations.models import RESUMABLE_STATUSES

CHECKPOINT_NOT_FOUND_REASONS = [
    "the operation completed (its checkpoint is deleted on completion)",
    "the checkpoint expired and was removed by cleanup, or was deleted",
    "the operation failed or was cancelled before its first checkpoint",
    "checkpointing was disabled for this operation",
]


class CheckpointNotFound(ServiceError):
    code = "CHECKPOINT_NOT_FOUND"
    status_code = 404

    def __init__(self, operation_id: str) -> None:
        super().__init__(
            f"Operation {operation_id} has no checkpoint.",
            {"operation_id": operation_id, "possible_reasons": CHECKPOINT_NOT_FOUND_REASONS},
        )


class CheckpointInUse(ServiceError):
    code = "CHECKPOINT_IN_USE"
    status_code = 409

    def __init__(self, operation_id: str) -> None:
        super().__init__(
            f"The checkpoint of {operation_id} is about to be used by its resume; it cannot be deleted now.",
            {"operation_id": operation_id, "current_status": "RESUMING"},
        )


class CheckpointCorrupted(ServiceError):
    code = "CHECKPOINT_CORRUPTED"
    status_code = 422

    def __init__(self, operation_id: str, problems: list[dict[str, Any]]) -> None:
        names = ", ".join(f"{problem['name']} ({problem['problem']})" for problem in problems)
        super().__init__(
            f"The checkpoint of {operation_id} is corrupted: {names}.",
            {"operation_id": operation_id, "artifacts": problems},
        )
        self.problems = problems


class OperationNotResumable(ServiceError):
    code = "OPERATION_NOT_RESUMABLE"
    status_code = 409

    def __init__(self, operation_id: str, status: str) -> None:
        super().__init__(
            f"Operation {operation_id} is {status}; only {' or '.join(RESUMABLE_STATUSES)} operations can be resumed.",
            {"operation_id": operation_id, "current_status": status, "resumable_statuses": list(RESUMABLE_STATUSES)},
        )


class ResumeConflict(ServiceError):
    code = "RESUME_CONFLICT"
    status_code = 409

    def __init__(self, operation_id: str) -> None:
        super().__init__(
            f"Operation {operation_id} changed while it was being resumed (another resume won).",
            {"operation_id": operation_id},
        )


class ResumeEnqueueFailed(ServiceError):
    code = "RESUME_ENQUEUE_FAILED"
    status_code = 503

    def __init__(self, operation_id: str, error: str) -> None:
        super().__init__(
            f"Operation {operation_id} could not be handed to the workers ({error}); its status was put back.",
            {"operation_id": operation_id, "error": error},
        )
