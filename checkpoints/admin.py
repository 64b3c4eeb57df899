from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_discard
from operations.exceptions import ServiceError


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["operation", "operation_type", "checkpoint_type", "age", "size", "state_summary", "resumable"]
    list_filter = ["checkpoint_type", "operation__operation_type", "operation__status"]
    search_fields = ["operation__operation_id"]
    list_select_related = ["operation"]
    ordering = ["created_at"]
    readonly_fields = [
        "operation", "checkpoint_type", "created_at", "version", "state_pretty", "artifacts_path", "manifest_table",
        "state_size_bytes", "artifacts_size_bytes",
    ]
    exclude = ["state", "manifest"]

    @admin.display(description="Type", ordering="operation__operation_type")
    def operation_type(self, checkpoint: Checkpoint) -> str:
        return checkpoint.operation.operation_type

    @admin.display(description="Age", ordering="created_at")
    def age(self, checkpoint: Checkpoint) -> str:
        seconds = (timezone.now() - checkpoint.created_at).total_seconds()
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return f"{seconds / size:.1f} {unit}"
        return f"{seconds:.0f} s"

    @admin.display(description="Size", ordering="artifacts_size_bytes")
    def size(self, checkpoint: Checkpoint) -> str:
        return f"{checkpoint.total_size_bytes / 1_048_576:.2f} MB"

    @admin.display(description="State")
    def state_summary(self, checkpoint: Checkpoint) -> str:
        return checkpoint.position_text or "-"

    @admin.display(description="Resumable", boolean=True)
    def resumable(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.operation.resumable

    @admin.display(description="State")
    def state_pretty(self, checkpoint: Checkpoint) -> str:
        return format_html("<pre>{}</pre>", json.dumps(checkpoint.state, indent=2)[:20_000])

    @admin.display(description="Artifacts")
    def manifest_table(self, checkpoint: Checkpoint) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            ((a["name"], f"{a['size']:,}", a["sha256"]) for a in checkpoint.manifest),
        )
        return format_html("<table><tr><th>name</th><th>bytes</th><th>sha256</th></tr>{}</table>", rows)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Checkpoint]:
        return super().get_queryset(request).visible_to(request.user)  # the API's rule

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    # Deleting through the admin (the delete action or page) removes the files too.
    def delete_model(self, request: HttpRequest, checkpoint: Checkpoint) -> None:
        self.delete_queryset(request, Checkpoint.objects.filter(pk=checkpoint.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        for operation_id in queryset.values_list("operation_id", flat=True):
            try:
                checkpoint_discard(operation_id)
            except ServiceError as exc:
                self.message_user(request, exc.detail, messages.WARNING)
