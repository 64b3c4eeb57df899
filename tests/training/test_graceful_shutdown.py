"""SIGTERM to `qcluster` (docker stop, Kubernetes): shutdown checkpoint, CANCELLED, every process gone, in time."""

from __future__ import annotations

import signal
import time

import pytest

from checkpoints.models import Checkpoint
from operations.models import OperationStatus as S
from runtime.resume import operation_resume
from runtime.shutdown import GRACEFUL_SHUTDOWN_MESSAGE, descendants
from tests.support.processes import wait_for
from tests.training.cluster import (
    REQUEST,
    assert_checkpoint_on_disk,
    assert_same_model,
    train,
    wait_for_progress,
    wait_until_checkpoint_gone,
    wait_until_completed,
)

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

SHUTDOWN_TIMEOUT_SECONDS = 25


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_checkpoints_cancels_and_exits_then_resume_matches_a_straight_run(children, folders, signum):
    cluster = children.cluster(workers=2)
    interrupted = train()
    wait_for_progress(interrupted, 8)
    processes = [cluster.process.pid, *descendants(cluster.process.pid)]

    sent = time.monotonic()
    cluster.signal(signum)
    assert cluster.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS) == 0
    took = time.monotonic() - sent
    print(f"{signal.Signals(signum).name}: cluster exited after {took:.2f}s")
    assert took < SHUTDOWN_TIMEOUT_SECONDS
    wait_for(lambda: not [pid for pid in processes if _alive(pid)], timeout=5, what="every cluster process gone")

    operation = Checkpoint.objects.select_related("operation").get(pk=interrupted).operation
    assert operation.status == S.CANCELLED
    assert operation.error_message == GRACEFUL_SHUTDOWN_MESSAGE
    assert operation.events.get(to_status=S.CANCELLED).reason == GRACEFUL_SHUTDOWN_MESSAGE
    assert operation.checkpoint.checkpoint_type == "shutdown" and operation.checkpoint.state["epoch"] >= 8
    assert_checkpoint_on_disk(folders, operation.checkpoint)

    children.cluster(workers=2)  # a new cluster: the straight run, and the resume
    straight = train()
    operation_resume(operation_id=interrupted, actor="test")
    resumed = wait_until_completed(interrupted)
    straight_run = wait_until_completed(straight)
    wait_until_checkpoint_gone(folders, interrupted)
    assert resumed.attempt == 2
    assert_same_model(resumed, straight_run, folders)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# A cluster started with these settings has its worker processes stuck in one training batch once the
# trigger file exists: a batch longer than the shutdown budget (test only; product code unchanged).
STUCK_SETTINGS = '''\
import os
import time

from config.settings.base import *  # noqa: F401,F403
from training import model as _model

_forward = _model.DirectionClassifier.forward


def _forward_or_stuck(self, features):
    if self.training and os.path.exists(os.environ["STUCK_TRIGGER_FILE"]):
        time.sleep(120)
    return _forward(self, features)


_model.DirectionClassifier.forward = _forward_or_stuck
'''


def test_a_batch_longer_than_the_budget_is_killed_in_time_and_failed_by_its_cluster(children, folders, tmp_path):
    trigger = tmp_path / "stuck-now"
    children.supervise()
    cluster = children.cluster_with_settings(
        "stuck_settings", STUCK_SETTINGS, SHUTDOWN_TIMEOUT_SECONDS="3", STUCK_TRIGGER_FILE=str(trigger)
    )
    operation_id = train()
    wait_for_progress(operation_id, 6)
    trigger.touch()
    time.sleep(1)  # into the stuck batch
    processes = [cluster.process.pid, *descendants(cluster.process.pid)]

    sent = time.monotonic()
    cluster.signal(signal.SIGTERM)
    exit_code = cluster.wait(timeout=15)
    took = time.monotonic() - sent
    print(f"stuck cluster exited with {exit_code} after {took:.2f}s (budget 3s)")
    assert exit_code == 1 and took < 3 + 2
    wait_for(lambda: not [pid for pid in processes if _alive(pid)], timeout=5, what="every cluster process gone")

    # Nothing could checkpoint it: its cluster, having killed the worker, failed the run before it exited (a lost
    # worker, its resume left to the restart policy, off here); its periodic checkpoint stays.
    operation = Checkpoint.objects.select_related("operation").get(pk=operation_id).operation
    assert operation.status == S.FAILED
    assert operation.error_message == f"Worker {operation.worker_id} exited while running it (killed?)"
    # The last periodic one before the stuck batch: progress is reported at heartbeats, so epoch 6 may have been
    # seen a few epochs late, and the batch that got stuck may be in a later epoch.
    epoch = operation.checkpoint.state["epoch"]
    assert operation.checkpoint.checkpoint_type == "periodic"
    assert epoch % REQUEST["checkpoint_every"] == 0 and 5 <= epoch <= operation.progress_current, epoch
