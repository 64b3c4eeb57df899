"""The latest checkpoint of an operation: small state in the row, large artifacts as files."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from operations import permissions
from operations.models import Operation

# The keys of a state that say how far the operation had come, per kind of operation.
PROGRESS_KEYS = ("epoch", "bar_index", "phase")


def position_text(position: dict[str, Any]) -> str:
    """"epoch 12", "bar_index 40000", "phase TRAINING" (empty when unknown)."""
    return ", ".join(f"{key} {position[key]}" for key in PROGRESS_KEYS if key in position)


class CheckpointType(models.TextChoices):
    PERIODIC = "periodic", "Periodic"
    CANCELLATION = "cancellation", "Cancellation"
    FAILURE = "failure", "Failure"
    SHUTDOWN = "shutdown", "Shutdown"


class CheckpointQuerySet(models.QuerySet):
    def visible_to(self, user) -> "CheckpointQuerySet":
        """The checkpoints of the operations the user sees (Operation.objects.visible_to's rule)."""
        if permissions.sees_all(user):
            return self
        return self.filter(operation__owner=user) if user.is_authenticated else self.none()


class Checkpoint(models.Model):
    """At most one per operation; the row is the commit point of a save.

    It always points at a complete artifact folder whose files match the
    manifest: a save writes a new folder first and moves the row to it in one
    transaction; the previous folder is removed only after that commit.
    """

    operation = models.OneToOneField(
        Operation, primary_key=True, on_delete=models.CASCADE, related_name="checkpoint"
    )
    checkpoint_type = models.CharField(max_length=16, choices=CheckpointType.choices)
    created_at = models.DateTimeField(default=timezone.now)
    state = models.JSONField(default=dict)
    artifacts_path = models.CharField(max_length=300, help_text="Folder of the artifacts in the checkpoint storage.")
    manifest = models.JSONField(default=list, help_text="For each artifact: name, size, sha256.")
    state_size_bytes = models.BigIntegerField(default=0)
    artifacts_size_bytes = models.BigIntegerField(default=0)
    version = models.PositiveIntegerField(default=1, help_text="Incremented by every save.")

    objects = CheckpointQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["created_at"], name="checkpoint_created_idx")]
        permissions = [("cleanup_checkpoints", "Can delete every user's checkpoints older than an age")]

    def __str__(self) -> str:
        return f"{self.checkpoint_type} checkpoint of {self.operation_id}"

    @property
    def total_size_bytes(self) -> int:
        return self.state_size_bytes + self.artifacts_size_bytes

    @property
    def position(self) -> dict[str, Any]:
        """How far the operation had come: its epoch, bar index or phase."""
        return {key: self.state[key] for key in PROGRESS_KEYS if key in self.state}

    @property
    def position_text(self) -> str:
        return position_text(self.position)

    def summary(self) -> dict[str, Any]:
        """What an operation body shows of its checkpoint, without reading any artifact."""
        return {
            "checkpoint_type": self.checkpoint_type,
            "created_at": self.created_at,
            "version": self.version,
            "state_summary": self.position,
            "state_size_bytes": self.state_size_bytes,
            "artifacts_size_bytes": self.artifacts_size_bytes,
            "artifacts": [artifact["name"] for artifact in self.manifest],
        }
