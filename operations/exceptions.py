"""Errors of the operations services; each carries its API code (the body's `code`) and HTTP status."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code = "ERROR"
    status_code = 400

    def __init__(self, detail: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.details = details or {}


class OperationNotFound(ServiceError):
    code = "OPERATION_NOT_FOUND"
    status_code = 404

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"Operation {operation_id} not found.", {"operation_id": operation_id})


class OperationNotCancellable(ServiceError):
    code = "OPERATION_NOT_CANCELLABLE"
    status_code = 409

    def __init__(self, operation_id: str, status: str) -> None:
        super().__init__(
            f"Operation {operation_id} is {status} and cannot be cancelled.",
            {"operation_id": operation_id, "current_status": status},
        )


class WorkerNotFound(ServiceError):
    code = "WORKER_NOT_FOUND"
    status_code = 404

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"Worker {worker_id} not found.", {"worker_id": worker_id})


class ExecutorNotRegistered(ServiceError):
    code = "EXECUTOR_NOT_REGISTERED"
    status_code = 503

    def __init__(self, operation_type: str) -> None:
        super().__init__(
            f"No executor is registered for {operation_type} operations.",
            {"operation_type": operation_type},
        )


class TooManyActiveOperations(ServiceError):
    code = "TOO_MANY_ACTIVE_OPERATIONS"
    status_code = 409

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You have {limit} operations that have not ended, the most a user may have "
            "(MAX_ACTIVE_OPERATIONS_PER_USER): wait for one to end, or cancel one.",
            {"limit": limit},
        )


class WorkerCredentialNotFound(ServiceError):
    code = "WORKER_CREDENTIAL_NOT_FOUND"
    status_code = 404

    def __init__(self, prefix: str) -> None:
        super().__init__(f"No worker credential starts with {prefix!r}.", {"prefix": prefix})


class WorkerOfAnotherHost(ServiceError):
    """A worker credential used for a worker id of another host."""

    code = "WORKER_OF_ANOTHER_HOST"
    status_code = 403

    def __init__(self, worker_id: str, host: str) -> None:
        super().__init__(
            f"This credential acts for the workers of host {host!r} only, not for {worker_id}.",
            {"worker_id": worker_id, "credential_host": host},
        )
