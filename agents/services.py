"""The assessments the designer learns from, and recording a session's assessment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.design import Assessed, Verdict, configuration_key
from agents.models import Assessment
from agents.params import SessionParamsSerializer
from operations.api.shared import operation_start
from operations.models import Operation


def earlier_assessments(owner_id: int | None) -> list[Assessed]:
    """The owner's assessments so far, as the designer takes them (oldest first: the order does not change a
    proposal); None: those of the sessions started from the command line."""
    return [Assessed(configuration=row["configuration"], score=row["score"])
            for row in Assessment.objects.filter(owner_id=owner_id).order_by("created_at")
            .values("configuration", "score")]


def assessment_record(*, session: Operation, configuration: Mapping[str, Any], metrics: Mapping[str, Any],
                      verdict: Verdict) -> Assessment:
    """The session's assessment; recording it again (a resumed session that had recorded it) changes nothing."""
    assessment, _ = Assessment.objects.get_or_create(
        session=session,
        defaults={"owner_id": session.owner_id, "configuration": dict(configuration),
                  "configuration_key": configuration_key(configuration),
                  "metrics": dict(metrics), "verdict": verdict.verdict, "score": verdict.score,
                  "reasons": list(verdict.reasons)},
    )
    return assessment


def session_start(*, data: dict, actor: str, owner=None) -> Operation:
    """Validate a session request and record the session, PENDING: the control loop (`supervise`) runs it.

    Raises rest_framework's ValidationError naming the field (the API's 400, the command's error).
    """
    return operation_start(SessionParamsSerializer(data=data), operation_type="agent_research", actor=actor,
                           owner=owner, is_backend_local=True)
