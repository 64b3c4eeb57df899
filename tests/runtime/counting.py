"""A small deterministic runner for runtime tests: it counts steps, sums a seeded series, and checkpoints."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from checkpoints.models import CheckpointType
from checkpoints.policy import CheckpointPolicy
from runtime.context import RunContext


class CountingRunner:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        params = context.params
        self.steps = int(params.get("steps", 20))
        self.step_seconds = float(params.get("step_seconds", 0.0))
        self.fail_at = params.get("fail_at")
        self.policy = CheckpointPolicy(every_units=int(params.get("checkpoint_every", 5)))
        self.step = 0
        self.total = 0
        self.rng = random.Random(params.get("seed", 7))
        self._last_consistent: tuple[dict[str, Any], dict[str, bytes]] | None = None
        if context.resume_from is not None:
            state = context.resume_from.state
            self.step, self.total = state["step"], state["total"]
            self.rng.setstate(_decode_rng(context.resume_from.artifacts["rng.json"]))
            self.policy.saved(self.step)
            self._remember()

    def run(self) -> dict[str, Any]:
        while self.step < self.steps:
            self.context.raise_if_stopping()
            if self.fail_at is not None and self.step + 1 == self.fail_at and not self.context.resume_from:
                raise RuntimeError(f"boom at step {self.fail_at}")
            time.sleep(self.step_seconds)
            self.total += self.rng.randint(1, 1000)
            self.step += 1
            self._remember()
            self.context.report_progress(current=self.step, total=self.steps, unit="steps")
            if self.policy.due(self.step):
                self.context.save_checkpoint(CheckpointType.PERIODIC, *self._last_consistent)
                self.policy.saved(self.step)
        return {"steps": self.step, "total": self.total}

    def checkpoint_payload(self):
        return self._last_consistent

    def _remember(self) -> None:
        self._last_consistent = (
            {"step": self.step, "total": self.total},
            {"rng.json": json.dumps(_encode_rng(self.rng.getstate())).encode()},
        )


def _encode_rng(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_rng(data: bytes):
    version, internal, gauss = json.loads(data)
    return (version, tuple(internal), gauss)


def straight_total(steps: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    return sum(rng.randint(1, 1000) for _ in range(steps))
