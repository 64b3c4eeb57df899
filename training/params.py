"""The request of a training run: validated once, stored as the operation's params, read back by the runner."""

from __future__ import annotations

from rest_framework import serializers

from marketdata.series import TIMEFRAMES, SYMBOL_RE


class TrainingParamsSerializer(serializers.Serializer):
    symbol = serializers.RegexField(SYMBOL_RE, max_length=32, error_messages={"invalid": "Use 1-32 of A-Z, 0-9, '.', '_', '-'."})
    timeframe = serializers.ChoiceField(choices=list(TIMEFRAMES))
    start = serializers.DateField(required=False, allow_null=True, default=None)
    end = serializers.DateField(required=False, allow_null=True, default=None)
    epochs = serializers.IntegerField(min_value=1, max_value=100_000, default=30)
    batch_size = serializers.IntegerField(min_value=1, max_value=1_000_000, default=256)
    hidden_sizes = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=65_536), min_length=1, max_length=16, default=[256, 128]
    )
    learning_rate = serializers.FloatField(min_value=1e-8, max_value=10.0, default=1e-3)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=42)
    validation_split = serializers.FloatField(min_value=0.05, max_value=0.5, default=0.2)
    checkpoint_every = serializers.IntegerField(
        min_value=0, max_value=100_000, required=False, allow_null=True, default=None,
        help_text="Epochs between periodic checkpoints; 0: none; default TRAINING_CHECKPOINT_EVERY_EPOCHS.",
    )
    checkpoint_seconds = serializers.FloatField(
        min_value=1, required=False, allow_null=True, default=None,
        help_text="Seconds between periodic checkpoints; default CHECKPOINT_TIME_INTERVAL_SECONDS.",
    )
    checkpoints_enabled = serializers.BooleanField(default=True, help_text="False: no checkpoint at all.")

    def validate(self, data):
        if data["start"] and data["end"] and data["start"] > data["end"]:
            raise serializers.ValidationError({"end": "The end date is before the start date."})
        return data

    def to_params(self) -> dict:
        """JSON-ready params (dates as ISO strings)."""
        data = dict(self.validated_data)
        for key in ("start", "end"):
            data[key] = data[key].isoformat() if data[key] else None
        return data
