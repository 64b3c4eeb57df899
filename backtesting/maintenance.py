"""Spools no checkpoint needs any more, removed by the control loop with the checkpoint cleanup.

A backtest's spool (RESULTS_DIR/<id>/run-<attempt>/) is removed when the run
completes. A checkpoint deleted by hand or by the cleanup, or an operation
deleted, leaves its spool behind: nothing can resume from it any more.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings

from checkpoints.models import Checkpoint
from checkpoints.services import ACTIVE_STATUSES
from operations.models import Operation

logger = logging.getLogger(__name__)


def spool_sweep() -> list[str]:
    """Remove the spools of operations that are neither running nor resumable from a checkpoint."""
    root = Path(settings.RESULTS_DIR)
    candidates = {folder.name for folder in root.iterdir() if any(folder.glob("run-*"))} if root.exists() else set()
    if not candidates:
        return []
    needed = set(Checkpoint.objects.filter(operation_id__in=candidates).values_list("operation_id", flat=True))
    needed |= set(Operation.objects.filter(pk__in=candidates, status__in=ACTIVE_STATUSES).values_list("pk", flat=True))
    removed = []
    for operation_id in sorted(candidates - needed):
        for folder in (root / operation_id).glob("run-*"):
            shutil.rmtree(folder, ignore_errors=True)
        removed.append(operation_id)
    if removed:
        logger.info("Removed the backtest spools of %d operation(s) nothing can resume: %s", len(removed), removed)
    return removed
