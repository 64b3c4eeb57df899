from __future__ import annotations

from operations.api.shared import operation_start
from operations.models import Operation
from training.params import TrainingParamsSerializer


def training_start(*, data: dict, actor: str, owner=None, parent: Operation | None = None) -> Operation:
    """Validate a training request, check its market data exists, and enqueue a new operation.

    Raises rest_framework's ValidationError naming the field (the API's 400, the command's error).
    """
    return operation_start(TrainingParamsSerializer(data=data), operation_type="training", actor=actor,
                           owner=owner, parent=parent)
