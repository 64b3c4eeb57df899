from __future__ import annotations

from backtesting.params import BacktestParamsSerializer
from operations.api.shared import operation_start
from operations.models import Operation


def backtest_start(*, data: dict, actor: str, owner=None, parent: Operation | None = None) -> Operation:
    """Validate a backtest request, check its market data (and model) exist, and enqueue a new operation.

    Raises rest_framework's ValidationError naming the field (the API's 400, the command's error).
    """
    return operation_start(BacktestParamsSerializer(data=data, context={"owner": owner}),
                           operation_type="backtesting", actor=actor, owner=owner, parent=parent)
