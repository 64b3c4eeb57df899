"""The request of a training run: validated once, stored as the operation's params, read back by the runner."""

from __future__ import annotations

from rest_framework import serializers

from marketdata.params import SeriesRangeSerializer
from training.features import FeatureSpec


def _windows(minimum: int, default: tuple[int, ...]) -> serializers.ListField:
    return serializers.ListField(child=serializers.IntegerField(min_value=minimum, max_value=10_000), min_length=1,
                                 max_length=8, default=list(default))


class FeatureWindowsSerializer(serializers.Serializer):
    """The windows (in bars) of the features the model sees (training/features.py); the defaults are FeatureSpec's."""

    return_windows = _windows(1, FeatureSpec.return_windows)
    sma_windows = _windows(2, FeatureSpec.sma_windows)
    rsi_window = serializers.IntegerField(min_value=2, max_value=10_000, default=FeatureSpec.rsi_window)
    volatility_windows = _windows(2, FeatureSpec.volatility_windows)
    volume_window = serializers.IntegerField(min_value=2, max_value=10_000, default=FeatureSpec.volume_window)

    def validate(self, data):
        for name in ("return_windows", "sma_windows", "volatility_windows"):
            if len(set(data[name])) != len(data[name]):
                raise serializers.ValidationError({name: "Each window once."})
        return data


DEFAULT_FEATURES = {name: list(value) if isinstance(value, tuple) else value
                    for name, value in FeatureSpec().as_dict().items() if name in FeatureWindowsSerializer().fields}


class TrainingParamsSerializer(SeriesRangeSerializer):
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
    features = FeatureWindowsSerializer(default=lambda: dict(DEFAULT_FEATURES),
                                        help_text="Feature windows, in bars; default the usual ones.")
