"""What research sessions found: one assessment per session, kept and listed."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from operations.models import Operation


class Verdict(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Assessment(models.Model):
    """A session's configuration, the metrics of its backtest, and the verdict with its reasons.

    A configuration is assessed once (`configuration_key` is unique): the designer never proposes one
    that has an assessment.
    """

    session = models.OneToOneField(
        Operation, primary_key=True, on_delete=models.CASCADE, related_name="assessment"
    )
    configuration = models.JSONField(help_text="One choice per dimension of the search space.")
    configuration_key = models.CharField(max_length=32, unique=True)
    metrics = models.JSONField(help_text="The backtest's metrics (its result's `metrics`).")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    score = models.FloatField(help_text="Total return in excess of buy-and-hold: how configurations are ranked.")
    reasons = models.JSONField(default=list, help_text="Each check, passed or failed, with its numbers.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.verdict} assessment of {self.session_id}"
