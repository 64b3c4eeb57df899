"""Ctrl+C during `train --follow`: the operation is cancelled, the command waits for the checkpoint and says how to resume."""

from __future__ import annotations

import os
import signal
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from checkpoints.services import checkpoint_save
from marketdata.series import generate_bars, write_series
from operations.models import Operation, OperationStatus as S
from operations.services.lifecycle import operation_claim, operation_finish
from operations.services.workers import CurrentOperation, Progress, worker_heartbeat
from tests.factories import WorkerFactory
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def market(settings, tmp_path, checkpoint_dir):
    settings.DATA_DIR = tmp_path / "data"
    write_series(generate_bars(bars=500, timeframe="1h", seed=3), "SYN", "1h")


def test_ctrl_c_cancels_waits_for_the_checkpoint_and_prints_the_resume_command(market, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    worker = WorkerFactory()
    out = StringIO()

    def worker_and_user() -> None:
        """A worker runs the operation; the user presses Ctrl+C; the worker honours the cancel."""
        try:
            operation = wait_for(lambda: Operation.objects.first(), timeout=10, what="the operation")
            attempt = operation_claim(operation_id=operation.pk, worker_id=worker.pk)
            progress = Progress(current=3, total=10, unit="epochs", percent=30.0, message="epoch 3/10")
            worker_heartbeat(worker_id=worker.pk, current_operation=CurrentOperation(operation.pk, attempt), progress=progress)
            wait_for(lambda: "RUNNING 30.0%" in out.getvalue(), timeout=10, what="progress shown")
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C, delivered to the command in the main thread
            wait_for(
                lambda: Operation.objects.get(pk=operation.pk).cancel_requested_at is not None,
                timeout=10, what="the cancel request",
            )
            assert checkpoint_save(
                operation_id=operation.pk, checkpoint_type="cancellation", state={"epoch": 3}, artifacts={"m.pt": b"w"}
            ).saved
            operation_finish(operation_id=operation.pk, worker_id=worker.pk, attempt=attempt, status=S.CANCELLED)
        finally:
            connection.close()

    helper = threading.Thread(target=worker_and_user)
    helper.start()
    try:
        call_command("train", "--symbol", "SYN", "--timeframe", "1h", "--epochs", "10", "--follow", stdout=out)
    finally:
        helper.join(timeout=30)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    operation = Operation.objects.get()
    lines = out.getvalue().splitlines()
    assert operation.status == S.CANCELLED
    assert any(line.startswith(f"Cancelling {operation.pk}") for line in lines)
    assert f"{operation.pk} CANCELLED at epoch 3" in lines
    assert f"Resume with: python manage.py operations resume {operation.pk}" in lines
    assert operation.events.filter(reason="Cancel requested", actor="cli").exists()
