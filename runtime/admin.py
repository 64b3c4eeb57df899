"""The operations admin as it is served: the core's, with the actions that need the checkpoint store and the
runtime (resume, delete checkpoint)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from checkpoints.services import checkpoint_discard
from operations import admin as core_admin
from operations import permissions
from operations.exceptions import ServiceError
from operations.models import Operation
from runtime.resume import operation_resume

admin.site.unregister(Operation)


@admin.register(Operation)
class OperationAdmin(core_admin.OperationAdmin):
    actions = [*core_admin.OperationAdmin.actions, "resume_operations", "delete_checkpoints"]

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(permissions.RESUME)

    def has_delete_checkpoint_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(permissions.DELETE_CHECKPOINT)

    @admin.action(description="Resume selected operations from their checkpoints", permissions=["resume"])
    def resume_operations(self, request: HttpRequest, queryset: QuerySet[Operation]) -> None:
        resumed = []
        for operation_id in queryset.values_list("pk", flat=True):
            try:
                operation_resume(operation_id=operation_id, actor=f"admin:{request.user.get_username()}")
                resumed.append(operation_id)
            except ServiceError as exc:
                self.message_user(request, f"{exc.code}: {exc.detail}", messages.WARNING)
        if resumed:
            self.message_user(request, f"{len(resumed)} resuming: {', '.join(resumed)}.", messages.SUCCESS)

    @admin.action(description="Delete the checkpoints of selected operations", permissions=["delete_checkpoint"])
    def delete_checkpoints(self, request: HttpRequest, queryset: QuerySet[Operation]) -> None:
        deleted = 0
        for operation_id in queryset.filter(checkpoint__isnull=False).values_list("pk", flat=True):
            try:
                checkpoint_discard(operation_id)
                deleted += 1
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.WARNING)
        self.message_user(request, f"Deleted {deleted} checkpoint(s).", messages.SUCCESS)
