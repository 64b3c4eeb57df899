"""When to save a periodic checkpoint: every N units or every T seconds, whichever comes first."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class CheckpointPolicy:
    every_units: int = 0  # 0: no periodic checkpoints by units
    every_seconds: float | None = None  # None: none by time
    enabled: bool = True  # False: no checkpoint at all, forced ones included
    last_unit: int = 0
    last_time: float = field(default_factory=time.monotonic)

    def due(self, unit: int, *, now: float | None = None, force: bool = False) -> bool:
        """Whether a checkpoint is due after completing `unit` (epochs, bars) at `now`.

        `force` (cancel, failure, shutdown) ignores the intervals, not `enabled`.
        """
        if not self.enabled:
            return False
        if force:
            return True
        now = time.monotonic() if now is None else now
        if self.every_units > 0 and unit - self.last_unit >= self.every_units:
            return True
        return self.every_seconds is not None and now - self.last_time >= self.every_seconds

    def saved(self, unit: int, *, now: float | None = None) -> None:
        self.last_unit = unit
        self.last_time = time.monotonic() if now is None else now


def policy_for(params: dict, every_units_default: int) -> CheckpointPolicy:
    """The policy a run's request asks for: `checkpoint_every` units (None: the setting's default, 0: none
    periodic), `checkpoint_seconds` (None: CHECKPOINT_TIME_INTERVAL_SECONDS), `checkpoints_enabled`."""
    from django.conf import settings

    every = params.get("checkpoint_every")
    every = every_units_default if every is None else every
    return CheckpointPolicy(
        every_units=every,
        every_seconds=None if every == 0 else (params.get("checkpoint_seconds")
                                               or settings.CHECKPOINT_TIME_INTERVAL_SECONDS),
        enabled=params.get("checkpoints_enabled", True),
    )
