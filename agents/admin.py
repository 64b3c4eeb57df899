from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from agents.models import Assessment


@admin.register(Assessment)
class AssessmentAdmin(admin.ModelAdmin):
    list_display = ["session", "verdict", "score", "configuration_text", "created_at"]
    list_filter = ["verdict"]
    search_fields = ["session__operation_id"]
    ordering = ["-created_at"]
    readonly_fields = ["session", "verdict", "score", "configuration_text", "reasons_list", "metrics_pretty",
                       "created_at"]
    exclude = ["configuration", "configuration_key", "reasons", "metrics"]

    @admin.display(description="Configuration")
    def configuration_text(self, assessment: Assessment) -> str:
        return ", ".join(f"{name} {value}" for name, value in assessment.configuration.items())

    @admin.display(description="Reasons")
    def reasons_list(self, assessment: Assessment) -> str:
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((r,) for r in assessment.reasons)))

    @admin.display(description="Metrics")
    def metrics_pretty(self, assessment: Assessment) -> str:
        return format_html("<pre>{}</pre>", json.dumps(assessment.metrics, indent=2))

    def has_add_permission(self, request) -> bool:
        return False
