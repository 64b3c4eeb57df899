"""What research sessions found: one assessment per session, kept and listed."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from operations.models import Operation


class Verdict(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Assessment(models.Model):
    """A session's configuration, the metrics of its backtest, and the verdict with its reasons.

    Each owner has a search of their own (a session started from the command line: the owner-less one): a
    configuration is assessed once per owner, and the designer proposes from the owner's assessments only, so
    one user's results neither reveal nor use up another's.
    """

    session = models.OneToOneField(
        Operation, primary_key=True, on_delete=models.CASCADE, related_name="assessment"
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="+", help_text="The session's owner: whose search it belongs to.")
    configuration = models.JSONField(help_text="One choice per dimension of the search space.")
    configuration_key = models.CharField(max_length=32)
    metrics = models.JSONField(help_text="The backtest's metrics (its result's `metrics`).")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    score = models.FloatField(help_text="Total return in excess of buy-and-hold: how configurations are ranked.")
    reasons = models.JSONField(default=list, help_text="Each check, passed or failed, with its numbers.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "configuration_key"], name="assessment_owner_configuration"),
            models.UniqueConstraint(fields=["configuration_key"], condition=models.Q(owner__isnull=True),
                                    name="assessment_ownerless_configuration"),
        ]

    def __str__(self) -> str:
        return f"{self.verdict} assessment of {self.session_id}"
