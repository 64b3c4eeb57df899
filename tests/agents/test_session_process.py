"""Research sessions run by a real `supervise`, their children by a real `qcluster`: kill -9 of `supervise`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from django.core.management import call_command

from agents.services import session_start
from checkpoints.models import Checkpoint
from operations.models import Operation
from operations.models import OperationStatus as S
from operations.services.reconciliation import BACKEND_RESTART_WITH_CHECKPOINT
from tests.support.processes import wait_for
from tests.training.cluster import (
    Children,
    automatic,
    resumed_by_hand,
    status_of,
    wait_until_completed,
)

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

REQUEST = {"symbol": "SYN", "timeframe": "1h", "seed": 1, "max_restarts": 3}


@pytest.fixture
def folders(tmp_path, settings, checkpoint_dir) -> dict[str, Path]:
    """The test's own folders (shared with its children), and a series long enough for a training of seconds."""
    found = {name: tmp_path / name.split("_")[0].lower() for name in ("DATA_DIR", "RESULTS_DIR", "MODELS_DIR")}
    found["WORKER_STATE_DIR"] = tmp_path / "worker-state"
    for name, folder in found.items():
        setattr(settings, name, folder)
    call_command("marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "20000", "--seed", "3")
    return {**found, "CHECKPOINT_DIR": checkpoint_dir}


def phase_of(session_id: str) -> str | None:
    state = Checkpoint.objects.filter(pk=session_id).values_list("state", flat=True).first()
    return (state or {}).get("phase")


def test_a_session_killed_with_supervise_during_training_resumes_to_a_verdict_with_its_child_run_once(
        children: Children, folders):
    children.cluster(workers=2)
    supervise = children.supervise()
    session = session_start(data=REQUEST, actor="test").pk
    wait_for(lambda: phase_of(session) == "TRAINING" and Operation.objects.filter(
        parent_id=session, operation_type="training", status=S.RUNNING).exists(),
             timeout=120, interval=0.05, what="the session's training child to run")

    os.killpg(supervise.process.pid, signal.SIGKILL)
    supervise.process.wait(timeout=10)
    assert status_of(session) == S.RUNNING  # nothing executes it any more, and nothing knows yet

    children.supervise()  # it fails the session it finds RUNNING, and the restart policy resumes it
    done = wait_until_completed(session)
    (failed, resumed) = automatic(session)
    assert failed == (S.RUNNING, S.FAILED, BACKEND_RESTART_WITH_CHECKPOINT)
    assert resumed[:2] == (S.FAILED, S.RESUMING) and resumed[2].startswith("Automatic resume 1/3 after a lost worker")
    assert not resumed_by_hand(session) and done.restarts == 1

    assert done.result["verdict"] in ("accepted", "rejected") and len(done.result["reasons"]) == 4
    trainings = list(Operation.objects.filter(parent_id=session, operation_type="training"))
    backtests = list(Operation.objects.filter(parent_id=session, operation_type="backtesting"))
    assert len(trainings) == len(backtests) == 1  # no child started twice
    training = trainings[0]
    assert (training.status, training.attempt) == (S.COMPLETED, 1)  # awaited through the restart, never restarted
    assert done.result["children"] == {"training": training.pk, "backtesting": backtests[0].pk}

    second = session_start(data=REQUEST, actor="test").pk  # the same seed
    assert wait_until_completed(second).result["configuration"] != done.result["configuration"]


def test_sigterm_to_supervise_cancels_a_session_with_a_checkpoint_and_leaves_its_child_running(children, folders):
    children.cluster(workers=2)
    supervise = children.supervise()
    session = session_start(data=REQUEST, actor="test").pk
    wait_for(lambda: phase_of(session) == "TRAINING", timeout=120, interval=0.05, what="the session's training")

    supervise.process.send_signal(signal.SIGTERM)
    supervise.process.wait(timeout=30)

    wait_for(lambda: status_of(session) == S.CANCELLED, timeout=10, what="the session to be cancelled")
    cancelled = Operation.objects.get(pk=session)  # until a control loop resumes it (a deploy)
    assert (cancelled.status, cancelled.error_message) == (S.CANCELLED, "Graceful shutdown - checkpoint saved")
    assert phase_of(session) == "TRAINING"
    training = Operation.objects.get(parent_id=session, operation_type="training")
    assert training.status not in (S.CANCELLED, S.FAILED)  # a worker's operation: it goes on

    children.supervise()  # the next control loop resumes it on its own (a deploy is not counted)
    done = wait_until_completed(session)
    assert automatic(session)[-1][:2] == (S.CANCELLED, S.RESUMING)
    assert not resumed_by_hand(session) and done.restarts == 0
    assert done.result["children"]["training"] == training.pk
    assert Operation.objects.filter(parent_id=session, operation_type="training").count() == 1
