"""The request of a training run: validated once, stored as the operation's params, read back by the runner."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from marketdata.params import SeriesRangeSerializer
from operations.api.serializers import StrictSerializer
from training.features import MIN_SAMPLES, FeatureSpec
from training.sizes import parameter_count, training_memory_bytes


def _windows(minimum: int, default: tuple[int, ...]) -> serializers.ListField:
    return serializers.ListField(child=serializers.IntegerField(min_value=minimum, max_value=10_000), min_length=1,
                                 max_length=8, default=list(default))


class FeatureWindowsSerializer(StrictSerializer):
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
    batch_size = serializers.IntegerField(
        min_value=1, max_value=1_000_000, default=256,
        help_text=f"Samples per step. With the network, about {settings.TRAINING_MAX_MEMORY_MB:,} MB at most "
                  "(TRAINING_MAX_MEMORY_MB): 4 bytes x 6 per sample and unit of every layer, plus the weights.",
    )
    hidden_sizes = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=65_536), min_length=1, max_length=16, default=[256, 128],
        help_text=f"Units of each hidden layer. The network may have at most {settings.TRAINING_MAX_PARAMETERS:,} "
                  "weights and biases (TRAINING_MAX_PARAMETERS), counting the features in and the two outputs.",
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

    def min_bars(self, data: dict) -> tuple[int, str]:
        spec = FeatureSpec.from_dict(data["features"])
        return spec.min_bars, (f"a training with these feature windows needs at least {spec.min_bars:,}: "
                               f"{spec.warmup} for its features' warm-up, {MIN_SAMPLES} to train and validate on, "
                               "and one more for the last label")

    def validate(self, data):
        """A network a worker can train: its size and the memory it needs, named by the field to change."""
        data = super().validate(data)
        inputs = FeatureSpec.from_dict(data["features"]).count
        sizes, batch = data["hidden_sizes"], data["batch_size"]
        parameters, limit = parameter_count(inputs, sizes), settings.TRAINING_MAX_PARAMETERS
        if parameters > limit:
            raise serializers.ValidationError({"hidden_sizes": (
                f"This network has {parameters:,} weights and biases; at most {limit:,} (TRAINING_MAX_PARAMETERS)."
            )})
        needed, allowed = training_memory_bytes(inputs, sizes, batch), settings.TRAINING_MAX_MEMORY_MB * 2**20
        if needed > allowed:
            field = "batch_size" if training_memory_bytes(inputs, sizes, 1) * 2 <= allowed else "hidden_sizes"
            raise serializers.ValidationError({field: (
                f"Training this network with batches of {batch:,} needs about {needed / 2**20:,.0f} MB; at most "
                f"{settings.TRAINING_MAX_MEMORY_MB:,} MB (TRAINING_MAX_MEMORY_MB)."
            )})
        return data
