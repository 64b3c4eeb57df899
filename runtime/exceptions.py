"""Errors of resume; each carries its API code and HTTP status (the checkpoint's own: checkpoints.exceptions)."""

from __future__ import annotations

from operations.exceptions import ServiceError
from operations.models import RESUMABLE_STATUSES


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
