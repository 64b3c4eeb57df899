"""A worker that does nothing but save checkpoints, forever, for the crash-safety test to SIGKILL.

    python -m tests.checkpoints.save_loop <operation_id> <worker_id> <attempt>

Each save has the state {"epoch": n} and the artifacts `artifacts_for(n)`, so
the test can recompute what any committed checkpoint must hold. It continues
from the epoch after the operation's current checkpoint and prints
"saved n" after each committed save.
"""

from __future__ import annotations

import random
import sys

ARTIFACT_NAMES = ("model.pt", "optimizer.pt", "scheduler.pt", "rng_state.bin")
MIN_SIZE = 200_000
MAX_SIZE = 3_000_000


def artifacts_for(epoch: int) -> dict[str, bytes]:
    """Two to four artifacts of 0.2 to 3 MB whose names, sizes and bytes derive from the epoch."""
    rng = random.Random(epoch)
    names = ARTIFACT_NAMES[: rng.randint(2, len(ARTIFACT_NAMES))]
    return {name: _content(f"{epoch}:{name}", rng.randint(MIN_SIZE, MAX_SIZE)) for name in names}


def _content(seed: str, size: int) -> bytes:
    # A random block repeated: cheap to make, so the loop spends its time saving, where the kills should land.
    block = random.Random(seed).randbytes(65_536)
    return (block * (size // len(block) + 1))[:size]


def main(operation_id: str, worker_id: str, attempt: int) -> None:
    import django

    django.setup()

    from checkpoints.exceptions import CheckpointNotFound
    from checkpoints.services import Fence, checkpoint_get, checkpoint_save

    fence = Fence(worker_id=worker_id, attempt=attempt)
    try:
        epoch = checkpoint_get(operation_id).state["epoch"] + 1
    except CheckpointNotFound:
        epoch = 1
    while True:
        result = checkpoint_save(
            operation_id=operation_id,
            checkpoint_type="periodic",
            state={"epoch": epoch},
            artifacts=artifacts_for(epoch),
            fence=fence,
        )
        if result.saved:
            print(f"saved {epoch}", flush=True)
            epoch += 1
        else:
            print(f"not saved {epoch}: {result.error}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
