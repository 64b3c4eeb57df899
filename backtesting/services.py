from __future__ import annotations

from backtesting.params import BacktestParamsSerializer
from marketdata.params import require_series
from operations.models import Operation
from operations.services.lifecycle import operation_create


def backtest_start(*, data: dict, actor: str, owner=None, parent: Operation | None = None) -> Operation:
    """Validate a backtest request, check its market data (and model) exist, and enqueue a new operation.

    Raises rest_framework's ValidationError naming the field (the API's 400, the command's error).
    """
    request = BacktestParamsSerializer(data=data, context={"owner": owner})
    request.is_valid(raise_exception=True)
    params = request.to_params()
    require_series(params)
    return operation_create(operation_type="backtesting", params=params, actor=actor, owner=owner, parent=parent)
