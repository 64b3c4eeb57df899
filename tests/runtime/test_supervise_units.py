"""The control loop's units of work, called in-process (`supervise --once`)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from operations.models import ControlLoop
from operations.models import OperationStatus as S

pytestmark = pytest.mark.django_db(transaction=True)


def run_once() -> str:
    out = StringIO()
    call_command("supervise", "--once", stdout=out)
    return out.getvalue()


def test_once_reconciles_sweeps_and_records_it(running_operation_factory):
    operation = running_operation_factory()
    output = run_once()
    operation.refresh_from_db()
    assert operation.status == S.PENDING_RECONCILIATION
    loop = ControlLoop.objects.get(pk=1)
    assert loop.started_at is not None and loop.last_sweep_at is not None
    assert "Control loop stopped." in output


def test_runs_checkpoint_cleanup_and_orphan_sweep(operation_factory, checkpoint_dir, settings):
    settings.CHECKPOINT_MAX_AGE_DAYS = 30
    settings.CHECKPOINT_ORPHAN_GRACE_SECONDS = 0.001
    expired = operation_factory(status=S.CANCELLED)
    kept = operation_factory(status=S.FAILED)
    for operation in (expired, kept):
        assert checkpoint_save(
            operation_id=operation.pk, checkpoint_type="cancellation", state={"epoch": 3}, artifacts={"a.bin": b"x" * 10}
        ).saved
    Checkpoint.objects.filter(operation=expired).update(created_at=timezone.now() - timedelta(days=31))
    leftover = checkpoint_dir / kept.pk / "20260101T000000000000-deadbeef"
    leftover.mkdir()
    (leftover / "a.bin").write_bytes(b"partial")

    output = run_once()

    assert list(Checkpoint.objects.values_list("operation_id", flat=True)) == [kept.pk]
    assert not (checkpoint_dir / expired.pk).exists()
    assert not leftover.exists()
    assert [p.name for p in (checkpoint_dir / kept.pk).iterdir()] == [
        Checkpoint.objects.get(pk=kept.pk).artifacts_path.split("/")[1]
    ]
    assert "Checkpoint cleanup" in output
