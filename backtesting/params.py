"""The request of a backtest: validated once, stored as the operation's params, read back by the runner."""

from __future__ import annotations

from rest_framework import serializers

from backtesting.strategies import STRATEGIES, get_strategy, strategy_for
from marketdata.params import SeriesRangeSerializer
from operations.api.serializers import OperationIdField
from operations.models import Operation, OperationStatus
from training.artifacts import model_files


class BacktestParamsSerializer(SeriesRangeSerializer):
    renamed = {"params": "strategy_params"}  # its name before API 2.0

    strategy = serializers.ChoiceField(choices=[], default="sma_cross")
    strategy_params = serializers.DictField(
        required=False, default=dict,
        help_text="The strategy's parameters, e.g. {\"fast\": 10, \"slow\": 30, \"allow_short\": true} for sma_cross "
                  "(sma_cross: fast, slow, allow_short; model: threshold, allow_short); those left out take their "
                  "defaults, and the operation's params show them all.",
    )
    model = OperationIdField(
        required=False, allow_null=True, default=None,
        help_text="For the model strategy: the id of a COMPLETED training operation.",
    )
    initial_cash = serializers.FloatField(min_value=1.0, max_value=1e15, default=100_000.0)
    commission = serializers.FloatField(min_value=0.0, max_value=0.1, default=0.0005,
                                        help_text="Fraction of each fill's notional.")
    slippage = serializers.FloatField(min_value=0.0, max_value=0.1, default=0.0002,
                                      help_text="Fraction of the open price, against each fill.")
    checkpoint_every = serializers.IntegerField(
        min_value=0, max_value=10**9, required=False, allow_null=True, default=None,
        help_text="Bars between periodic checkpoints; 0: none; default BACKTEST_CHECKPOINT_EVERY_BARS.",
    )
    checkpoint_seconds = serializers.FloatField(
        min_value=1, required=False, allow_null=True, default=None,
        help_text="Seconds between periodic checkpoints; default CHECKPOINT_TIME_INTERVAL_SECONDS.",
    )
    checkpoints_enabled = serializers.BooleanField(default=True, help_text="False: no checkpoint at all.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["strategy"].choices = sorted(STRATEGIES)
        self.fields["strategy"].error_messages["invalid_choice"] = (
            f'"{{input}}" is not a strategy: use one of {", ".join(sorted(STRATEGIES))}.')

    def validate(self, data):
        data = super().validate(data)
        strategy = get_strategy(data["strategy"])
        try:
            data["strategy_params"] = strategy.validate_params(data["strategy_params"], data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"strategy_params": exc.detail}) from None
        if data["strategy"] == "model":
            self._check_model(data.get("model"))
        elif data.get("model"):
            raise serializers.ValidationError({"model": "Only the model strategy uses a model."})
        return data

    def min_bars(self, data: dict) -> tuple[int, str]:
        try:
            return strategy_for(data).min_bars()
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the model's feature spec, unreadable
            raise serializers.ValidationError({"model": f"The feature spec of training operation {data['model']} "
                                                        f"cannot be read: {exc}."}) from None

    def _check_model(self, operation_id: str | None) -> None:
        if not operation_id:
            raise serializers.ValidationError(
                {"model": "The model strategy needs a model: the id of a COMPLETED training operation."}
            )
        owner = self.context.get("owner")
        operations = Operation.objects.filter(pk=operation_id, operation_type="training")
        if owner is not None:  # the command line: anyone's
            operations = operations.visible_to(owner)
        training = operations.first()
        if training is None:
            raise serializers.ValidationError({"model": f"No training operation {operation_id}."})
        if training.status != OperationStatus.COMPLETED:
            raise serializers.ValidationError(
                {"model": f"Training operation {operation_id} is {training.status}; its model is ready once it is "
                          "COMPLETED."}
            )
        try:
            missing = model_files(operation_id).missing()
        except ValueError as exc:
            raise serializers.ValidationError({"model": f"The files of training operation {operation_id}: {exc}."})
        if missing:
            raise serializers.ValidationError(
                {"model": f"The files of training operation {operation_id} are missing ({', '.join(missing)})."}
            )
