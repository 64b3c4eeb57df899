"""What a research session's admin page shows: its phase and configuration, its children, its assessment."""

from __future__ import annotations

from django.contrib.admin.utils import quote
from django.template.loader import render_to_string
from django.urls import reverse

from agents.models import Assessment
from checkpoints.models import Checkpoint


def session_panel(operation, result: dict) -> dict:
    saved = Checkpoint.objects.filter(pk=operation.pk).values_list("state", flat=True).first() or {}
    assessment = Assessment.objects.filter(session=operation).first()
    configuration = (assessment.configuration if assessment else None) or saved.get("configuration") or {}
    return {
        "panel_html": render_to_string("admin/agents/session.html", {
            "phase": "done" if assessment else saved.get("phase"),
            "configuration": sorted(configuration.items()),
            "children": [(child, reverse("admin:operations_operation_change", args=[quote(child.pk)]))
                         for child in operation.children.defer("result").order_by("created_at")],
            "assessment": assessment,
        }),
    }
