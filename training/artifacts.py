"""A training's files (MODELS_DIR/<operation id>/), found from its id: never from its result."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from operations.artifacts import artifact_file, artifact_folder


@dataclass(frozen=True)
class ModelFiles:
    model: Path  # the weights after the last epoch
    best_model: Path  # the weights of the epoch with the lowest validation loss
    feature_spec: Path  # the features, their scaling and the network's sizes, as trained

    def missing(self) -> list[str]:
        return [name for name in ("model", "feature_spec") if not getattr(self, name).is_file()]


def model_folder(operation_id: str) -> Path:
    return artifact_folder(settings.MODELS_DIR, operation_id)


def model_files(operation_id: str) -> ModelFiles:
    return ModelFiles(
        model=artifact_file(settings.MODELS_DIR, operation_id, "model.pt"),
        best_model=artifact_file(settings.MODELS_DIR, operation_id, "best_model.pt"),
        feature_spec=artifact_file(settings.MODELS_DIR, operation_id, "feature_spec.json"),
    )


def models_remove(operation_ids: list[str]) -> None:
    """The model folders of operations being purged (operations/services/retention.py)."""
    for operation_id in operation_ids:
        shutil.rmtree(model_folder(operation_id), ignore_errors=True)
