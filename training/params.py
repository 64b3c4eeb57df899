"""The request of a training run: validated once, stored as the operation's params, read back by the runner."""

from __future__ import annotations

from rest_framework import serializers

from marketdata.params import SeriesRangeSerializer


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
