"""Errors of the checkpoint store; each carries its API code and HTTP status."""

from __future__ import annotations

from typing import Any

from operations.exceptions import ServiceError

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
