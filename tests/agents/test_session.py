"""A research session run by the runtime in-process, its children executed by worker threads beside it."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pandas as pd
import pytest
from django.core.management import call_command
from django.db import connection

from agents import session as session_module
from agents.models import Assessment
from agents.services import session_start
from checkpoints.models import Checkpoint
from marketdata.series import generate_bars, write_series
from operations import registry
from operations.api.serializers import OperationDetailSerializer
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_cancel
from runtime.resume import operation_resume
from runtime.tasks import run_operation
from tests.support.processes import run_operation_in_thread, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def research(settings, tmp_path, checkpoint_dir, monkeypatch):
    """A series to research; children run by threads as soon as they are enqueued (a worker beside the test)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.MODELS_DIR = tmp_path / "models"
    settings.RESULTS_DIR = tmp_path / "results"
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    write_series(generate_bars(bars=2500, timeframe="1h", seed=5), "SYN", "1h")
    monkeypatch.setattr(session_module, "POLL_SECONDS", 0.05)
    workers: list[threading.Thread] = []

    def enqueue(operation_id: str, operation_type: str) -> str:
        thread, _ = run_operation_in_thread(operation_id)
        workers.append(thread)
        return operation_id

    monkeypatch.setattr(registry, "enqueue_operation", enqueue)
    yield workers
    for thread in workers:
        thread.join(timeout=60)


def children_of(session_id: str) -> dict[str, list[Operation]]:
    found: dict[str, list[Operation]] = {}
    for child in Operation.objects.filter(parent_id=session_id).order_by("created_at"):
        found.setdefault(child.operation_type, []).append(child)
    return found


def test_a_session_designs_trains_backtests_and_assesses(research):
    session = session_start(data={"symbol": "SYN", "timeframe": "1h", "seed": 3}, actor="test")
    assert session.is_backend_local and session.status == S.PENDING

    assert run_operation(session.pk) == "completed"

    session.refresh_from_db()
    children = children_of(session.pk)
    assert [len(children[kind]) for kind in ("training", "backtesting")] == [1, 1]
    training, backtest = children["training"][0], children["backtesting"][0]
    assert training.status == backtest.status == S.COMPLETED
    assert backtest.params["strategy"] == "model" and backtest.params["model"] == training.pk
    first = pd.Timestamp(training.result["validation_start"])  # the first bar the model was not trained on
    whole_day = first.normalize() + pd.Timedelta(days=0 if first == first.normalize() else 1)
    assert backtest.params["start"] == whole_day.date().isoformat()  # no bar it was trained on
    configuration = session.result["configuration"]
    assert training.params["epochs"] == configuration["epochs"]
    assert training.params["features"]["sma_windows"] == configuration["sma_windows"]
    assert backtest.params["strategy_params"]["threshold"] == configuration["threshold"]
    assert session.result["children"] == {"training": training.pk, "backtesting": backtest.pk}
    assessment = Assessment.objects.get(session=session)
    assert session.result["verdict"] == assessment.verdict in ("accepted", "rejected")
    assert assessment.metrics == backtest.result["metrics"] and len(assessment.reasons) == 4
    assert not Checkpoint.objects.filter(pk=session.pk).exists()  # deleted on completion
    body = OperationDetailSerializer(session).data  # what the API and `operations status` show of it
    assert [(child["operation_id"], child["status"]) for child in body["children"]] == [
        (training.pk, S.COMPLETED), (backtest.pk, S.COMPLETED)]
    assert body["result"]["verdict"] == assessment.verdict and body["result"]["reasons"] == assessment.reasons

    second = session_start(data={"symbol": "SYN", "timeframe": "1h", "seed": 3}, actor="test")
    assert run_operation(second.pk) == "completed"
    second.refresh_from_db()
    assert second.result["configuration"] != configuration  # the same seed, but the first one is assessed


def test_a_cancelled_session_cancels_its_child_and_its_resume_resumes_the_child(research, monkeypatch):
    session = session_start(data={"symbol": "SYN", "timeframe": "1h", "seed": 4}, actor="test")
    thread, outcome = run_operation_in_thread(session.pk)
    wait_for(lambda: Operation.objects.filter(parent_id=session.pk, operation_type="training",
                                              progress_current__gte=1).exists(),
             timeout=60, interval=0.02, what="the training child's first epoch")

    operation_cancel(operation_id=session.pk, actor="test")
    thread.join(timeout=60)

    assert outcome == ["cancelled"]
    session.refresh_from_db()
    assert session.status == S.CANCELLED
    state = Checkpoint.objects.get(pk=session.pk).state
    assert state["phase"] == "TRAINING" and state["configuration"]
    assert OperationDetailSerializer(session).data["checkpoint"]["state_summary"] == {"phase": "TRAINING"}
    training = children_of(session.pk)["training"][0]
    assert state["children"] == {"training": training.pk}
    wait_for(lambda: Operation.objects.get(pk=training.pk).status == S.CANCELLED, timeout=60,
             what="the training child to be cancelled")
    cancelled_at = Checkpoint.objects.get(pk=training.pk).state["epoch"]

    operation_resume(operation_id=session.pk, actor="test")
    assert run_operation(session.pk) == "completed"

    children = children_of(session.pk)
    assert len(children["training"]) == len(children["backtesting"]) == 1  # no child started twice
    training = children["training"][0]
    assert training.status == S.COMPLETED and training.attempt == 2  # resumed, not started again
    assert cancelled_at >= 1 and OperationEvent.objects.filter(
        operation_id=training.pk, to_status=S.RESUMING, reason="Resume from the cancellation checkpoint").count() == 1
    session.refresh_from_db()
    assert session.status == S.COMPLETED and session.result["children"]["training"] == training.pk


def test_a_child_that_fails_fails_the_session_with_its_message(research, monkeypatch):
    from training import runner as training_runner

    def broken(self):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(training_runner.TrainingRunner, "run", broken)
    session = session_start(data={"symbol": "SYN", "timeframe": "1h"}, actor="test")

    assert run_operation(session.pk) == "failed"

    session.refresh_from_db()
    training = children_of(session.pk)["training"][0]
    assert session.error_message.startswith(f"ChildFailed: the training child {training.pk} ended FAILED: ")
    assert "the GPU caught fire" in session.error_message
    assert Checkpoint.objects.get(pk=session.pk).state["phase"] == "TRAINING"


def test_agent_start_follow_shows_the_phases_until_the_session_ends(research, monkeypatch):
    from training import runner as training_runner

    train = training_runner.TrainingRunner.run

    def slowly(self):  # long enough for the follow to see the session wait on its training child
        time.sleep(1.5)
        return train(self)

    monkeypatch.setattr(training_runner.TrainingRunner, "run", slowly)

    def control_loop() -> None:  # what supervise does: run the session once it is recorded
        try:
            wait_for(lambda: Operation.objects.filter(operation_type="agent_research").exists(), timeout=30,
                     interval=0.01, what="the session")
            run_operation(Operation.objects.get(operation_type="agent_research").pk)
        finally:
            connection.close()

    loop = threading.Thread(target=control_loop)
    loop.start()
    out = StringIO()

    call_command("agent", "start", "--seed", "2", "--follow", stdout=out)

    loop.join(timeout=60)
    session = Operation.objects.get(operation_type="agent_research")
    lines = out.getvalue().splitlines()
    assert lines[0] == f"Session {session.pk}"
    ended = lines.index(f"{session.pk} COMPLETED")  # then its verdict and the reasons for it
    assert lines[ended + 1] == "Result:"
    assert lines[ended + 2] == f"  Verdict:          {session.result['verdict']}"
    assert lines[ended + 3] == "  Reasons:" and lines[ended + 4] == f"    {session.result['reasons'][0]}"
    assert any(line.startswith("RUNNING ") and "TRAINING: training child" in line for line in lines), lines


def test_sessions_designing_at_the_same_time_never_take_the_same_configuration(research, monkeypatch):
    from agents.design import configuration_key

    proposed = session_module.propose

    def slowly(*args, **kwargs):  # a wide window between reading what is taken and saving the proposal
        configuration = proposed(*args, **kwargs)
        time.sleep(0.2)
        return configuration

    def stop_after_designing(self):
        raise RuntimeError("designed")

    monkeypatch.setattr(session_module, "propose", slowly)
    monkeypatch.setattr(session_module.SessionRunner, "_train", stop_after_designing)
    sessions = [session_start(data={"symbol": "SYN", "timeframe": "1h", "seed": 7}, actor="test").pk
                for _ in range(4)]

    runs = [run_operation_in_thread(session) for session in sessions]
    for thread, _ in runs:
        thread.join(timeout=60)

    assert [outcome for _, outcome in runs] == [["failed"]] * 4
    configurations = [Checkpoint.objects.get(pk=session).state["configuration"] for session in sessions]
    assert len({configuration_key(configuration) for configuration in configurations}) == 4
