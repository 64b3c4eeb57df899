from __future__ import annotations

from operations.models import Operation
from operations.services.lifecycle import operation_create
from marketdata.series import MarketDataError, series_path
from rest_framework import serializers

from training.params import TrainingParamsSerializer


def training_start(*, data: dict, actor: str, owner=None) -> Operation:
    """Validate a training request, check its market data exists, and enqueue a new operation.

    Raises rest_framework's ValidationError naming the field (the API's 400, the command's error).
    """
    request = TrainingParamsSerializer(data=data)
    request.is_valid(raise_exception=True)
    params = request.to_params()
    try:
        path = series_path(params["symbol"], params["timeframe"])
    except MarketDataError as exc:
        raise serializers.ValidationError({"symbol": str(exc)}) from None
    if not path.exists():
        raise serializers.ValidationError(
            {
                "symbol": f"No market data for {params['symbol']} {params['timeframe']}: generate it with "
                f"`python manage.py marketdata generate --symbol {params['symbol']} --timeframe {params['timeframe']} "
                f"--bars N`, or import a CSV with `python manage.py marketdata import FILE --symbol {params['symbol']} "
                f"--timeframe {params['timeframe']}`."
            }
        )
    return operation_create(operation_type="training", params=params, actor=actor, owner=owner)
