"""Training as a user runs it: a real `qcluster` executes it, a real `supervise` watches over it.

Cancel and resume, kill -9 of the whole cluster and resume on a new one, and a
failure inside an epoch: each ends with the database, the checkpoint store and
the final model as a user would find them, and every resumed model is
bit-identical to a straight run of the same request.
"""


from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_sweep_orphans
from operations.models import Operation, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_cancel
from runtime.resume import operation_resume
from tests.support.processes import wait_for
from tests.training.cluster import (
    ORPHAN_CHECK_SECONDS,
    ORPHAN_TIMEOUT_SECONDS,
    REQUEST,
    RUN_TIMEOUT,
    assert_checkpoint_on_disk,
    assert_same_model,
    save_folders,
    status_of,
    train,
    transitions,
    wait_for_progress,
    wait_until_checkpoint_gone,
    wait_until_completed,
    wait_until_terminal,
)

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


# A cluster started with these settings fails inside an epoch, once, when the test creates the
# trigger file: fault injection in the worker process, product code unchanged. (No input of a
# training request makes the runner raise in the middle of an epoch.)
FAULT_SETTINGS = '''\
"""Test only: the worker processes of this cluster raise inside a training batch when FAULT_TRIGGER_FILE appears."""
import os

from config.settings.base import *  # noqa: F401,F403
from training import model as _model

_forward = _model.DirectionClassifier.forward


def _forward_or_fault(self, features):
    if self.training:
        try:
            os.remove(os.environ["FAULT_TRIGGER_FILE"])  # the one process that removes it fails, once
        except FileNotFoundError:
            pass
        else:
            raise RuntimeError("injected fault inside an epoch")
    return _forward(self, features)


_model.DirectionClassifier.forward = _forward_or_fault
'''



# --- the acceptance criteria

def test_cancel_near_epoch_12_then_resume_gives_the_straight_model(children, folders):
    children.supervise()
    children.cluster(workers=2)
    started = time.monotonic()
    straight = train()
    interrupted = train()

    wait_for_progress(interrupted, 12)
    operation_cancel(operation_id=interrupted, actor="test")
    cancelled = wait_until_terminal(interrupted, timeout=30)
    print(f"cancel acknowledged {time.monotonic() - started:.1f}s after the start")
    assert cancelled.status == S.CANCELLED
    assert cancelled.events.get(to_status=S.CANCELLED).reason == "Cancelled by request - checkpoint saved"
    checkpoint = Checkpoint.objects.get(pk=interrupted)
    assert checkpoint.checkpoint_type == "cancellation"
    assert 12 <= checkpoint.state["epoch"] < REQUEST["epochs"]
    assert_checkpoint_on_disk(folders, checkpoint)
    assert cancelled.resumable

    resumed_at = time.monotonic()
    operation_resume(operation_id=interrupted, actor="test")
    resumed = wait_until_completed(interrupted)
    straight_run = wait_until_completed(straight)
    print(f"resumed from epoch {checkpoint.state['epoch']}, completed in {time.monotonic() - resumed_at:.1f}s; "
          f"straight run train_seconds {straight_run.result['timings']['train_seconds']}")

    wait_until_checkpoint_gone(folders, interrupted)
    assert_same_model(resumed, straight_run, folders)
    assert resumed.attempt == 2
    assert transitions(interrupted) == [
        ("", S.PENDING), (S.PENDING, S.RUNNING), (S.RUNNING, S.CANCELLED),
        (S.CANCELLED, S.RESUMING), (S.RESUMING, S.RUNNING), (S.RUNNING, S.COMPLETED),
    ]


def test_cluster_killed_is_failed_by_the_sweep_and_resumes_on_a_new_cluster(children, folders):
    children.supervise()
    first_cluster = children.cluster(workers=1)
    operation_id = train()

    wait_for(
        lambda: Checkpoint.objects.filter(pk=operation_id, state__epoch__gte=10).exists(),
        timeout=RUN_TIMEOUT, interval=0.05, what="the periodic checkpoint of epoch 10",
    )
    killed_at = time.monotonic()
    os.killpg(first_cluster.process.pid, signal.SIGKILL)  # started in a session of its own: pid == pgid
    first_cluster.wait(timeout=10)

    wait_for(lambda: status_of(operation_id) == S.PENDING_RECONCILIATION, timeout=15, interval=0.05,
             what="PENDING_RECONCILIATION")
    reconciling_after = time.monotonic() - killed_at
    wait_for(lambda: status_of(operation_id) != S.PENDING_RECONCILIATION, timeout=15, interval=0.05,
             what="the orphan timeout")
    failed_after = time.monotonic() - killed_at
    operation = Operation.objects.get(pk=operation_id)
    print(f"kill -9 → PENDING_RECONCILIATION after {reconciling_after:.2f}s, → {operation.status} after "
          f"{failed_after:.2f}s (last heartbeat → FAILED: "
          f"{(operation.completed_at - operation.last_heartbeat_at).total_seconds():.2f}s)")
    assert operation.status == S.FAILED
    assert failed_after <= ORPHAN_TIMEOUT_SECONDS + ORPHAN_CHECK_SECONDS + 1.0
    assert operation.error_message == f"Worker {operation.worker_id} became unavailable"
    assert Worker.objects.get(pk=operation.worker_id).status == WorkerStatus.UNAVAILABLE
    assert transitions(operation_id)[-3:] == [
        (S.PENDING, S.RUNNING), (S.RUNNING, S.PENDING_RECONCILIATION), (S.PENDING_RECONCILIATION, S.FAILED)
    ]
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "periodic"
    assert checkpoint.state["epoch"] >= 10 and checkpoint.state["epoch"] % REQUEST["checkpoint_every"] == 0
    assert_checkpoint_on_disk(folders, checkpoint)
    # The kill may have come between a save's commit and the removal of the folder it replaced:
    # such a folder has no row, is never loaded, and the checkpoint orphan sweep removes it.
    uncommitted = save_folders(folders, operation_id) - {Path(checkpoint.artifacts_path).name}
    print(f"kept: periodic checkpoint of epoch {checkpoint.state['epoch']}; folders without a row: {len(uncommitted)}")

    children.cluster(workers=2)
    operation_resume(operation_id=operation_id, actor="test")
    straight = train()
    resumed = wait_until_completed(operation_id)
    assert_same_model(resumed, wait_until_completed(straight), folders)
    assert resumed.worker_id != operation.worker_id  # a worker of the new cluster
    wait_until_checkpoint_gone(folders, straight)
    wait_for(
        lambda: not Checkpoint.objects.filter(pk=operation_id).exists()
        and save_folders(folders, operation_id) <= uncommitted,
        timeout=10, interval=0.05, what="the resumed run's checkpoint to be deleted",
    )
    assert checkpoint_sweep_orphans(grace_seconds=0) == sorted(f"{operation_id}/{name}" for name in uncommitted)
    wait_until_checkpoint_gone(folders, operation_id)


def test_failure_inside_an_epoch_fails_with_a_checkpoint_that_resumes(children, folders, tmp_path):
    trigger = tmp_path / "fail-now"
    children.supervise()
    children.cluster_with_settings("fault_settings", FAULT_SETTINGS, workers=2, FAULT_TRIGGER_FILE=str(trigger))
    operation_id = train()

    wait_for_progress(operation_id, 7)
    trigger.touch()
    failed = wait_until_terminal(operation_id, timeout=30)
    assert (failed.status, failed.error_message) == (S.FAILED, "RuntimeError: injected fault inside an epoch")
    assert not trigger.exists()
    checkpoint = Checkpoint.objects.get(pk=operation_id)
    assert checkpoint.checkpoint_type == "failure"
    assert 7 <= checkpoint.state["epoch"] < REQUEST["epochs"]
    assert_checkpoint_on_disk(folders, checkpoint)
    assert failed.resumable

    # A resume on a worker that lacks the market data fails at once, and keeps the checkpoint for a retry.
    data_file = folders["DATA_DIR"] / "SYN_1h.csv"
    data_file.rename(data_file.with_name("elsewhere.csv"))
    asked = time.monotonic()
    operation_resume(operation_id=operation_id, actor="test")
    without_data = wait_until_terminal(operation_id, timeout=15)
    print(f"resume without market data FAILED after {time.monotonic() - asked:.2f}s")
    assert without_data.status == S.FAILED
    assert without_data.error_message.startswith("MarketDataError: no market data for SYN 1h")
    assert Checkpoint.objects.get(pk=operation_id).version == checkpoint.version
    assert_checkpoint_on_disk(folders, checkpoint)

    data_file.with_name("elsewhere.csv").rename(data_file)
    operation_resume(operation_id=operation_id, actor="test")
    straight = train()
    resumed = wait_until_completed(operation_id)
    wait_until_checkpoint_gone(folders, operation_id)
    assert_same_model(resumed, wait_until_completed(straight), folders)
    assert transitions(operation_id)[-7:] == [
        (S.RUNNING, S.FAILED),
        (S.FAILED, S.RESUMING), (S.RESUMING, S.RUNNING), (S.RUNNING, S.FAILED),
        (S.FAILED, S.RESUMING), (S.RESUMING, S.RUNNING), (S.RUNNING, S.COMPLETED),
    ]
