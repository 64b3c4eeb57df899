"""Reads of the operations core, shared by the API, the CLI and the admin."""

from __future__ import annotations

from django.db.models import QuerySet

from operations.exceptions import OperationNotFound
from operations.models import Operation, OperationStatus


def operation_list(*, user=None, status: str | None = None, operation_type: str | None = None) -> QuerySet[Operation]:
    """Operations newest first; a non-staff user sees only their own (None: the command line, all)."""
    operations = Operation.objects.select_related("owner")
    if user is not None:
        operations = operations.visible_to(user)
    if status:
        operations = operations.filter(status=status)
    if operation_type:
        operations = operations.filter(operation_type=operation_type)
    return operations.order_by("-created_at", "-operation_id")


def operation_get(*, operation_id: str, user=None) -> Operation:
    """One operation; another user's is reported missing, exactly like a missing one."""
    operations = Operation.objects.select_related("owner")
    if user is not None:
        operations = operations.visible_to(user)
    operation = operations.filter(pk=operation_id).first()
    if operation is None:
        raise OperationNotFound(operation_id)
    return operation


def operations_awaiting_reconciliation() -> int:
    return Operation.objects.filter(status=OperationStatus.PENDING_RECONCILIATION).count()
