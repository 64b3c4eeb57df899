from __future__ import annotations

from operations.models import Operation
from operations.services.lifecycle import operation_create
from marketdata.params import require_series

from training.params import TrainingParamsSerializer


def training_start(*, data: dict, actor: str, owner=None, parent: Operation | None = None) -> Operation:
    """Validate a training request, check its market data exists, and enqueue a new operation.

    Raises rest_framework's ValidationError naming the field (the API's 400, the command's error).
    """
    request = TrainingParamsSerializer(data=data)
    request.is_valid(raise_exception=True)
    params = request.to_params()
    require_series(params)
    return operation_create(operation_type="training", params=params, actor=actor, owner=owner, parent=parent)
