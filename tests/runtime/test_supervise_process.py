"""The control loop as a user runs it: a real `supervise` process, workers over real HTTP."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest

from operations.models import Operation
from operations.models import OperationStatus as S
from operations.services.credentials import credential_create
from operations.services.lifecycle import operation_claim, operation_create
from tests.support.processes import ManagedProcess, child_env, wait_for

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

SHORT_INTERVALS = {
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "WORKER_STALE_SECONDS": "2",
    "ORPHAN_TIMEOUT_SECONDS": "4",
    "ORPHAN_CHECK_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "30",
}


@pytest.fixture
def supervise(tmp_path):
    started: list[ManagedProcess] = []

    def start(**overrides: str) -> ManagedProcess:
        process = ManagedProcess(
            ["supervise"], child_env(**{**SHORT_INTERVALS, **overrides}), tmp_path / f"supervise-{len(started)}.log"
        )
        started.append(process)
        wait_for(lambda: "Startup reconciliation" in process.output, timeout=30, what="supervise to start")
        return process

    yield start
    for process in started:
        process.stop()


class WorkerClient:
    """A worker that reaches the control plane only through the HTTP API, with its machine's credential."""

    def __init__(self, base_url: str, authorization: str, worker_id: str) -> None:
        self.base_url = base_url
        self.authorization = authorization
        self.worker_id = worker_id

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": self.authorization, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def register(self, operation_id: str) -> dict:
        return self.post(
            "workers/register/",
            {"worker_id": self.worker_id, "current_operation_id": operation_id, "current_attempt": 1},
        )

    def heartbeat(self, operation_id: str) -> dict:
        return self.post(f"workers/{self.worker_id}/heartbeat/", {"operation_id": operation_id, "attempt": 1})

    def start(self) -> str:
        """An operation this worker claimed (its first run), as its cluster would: what it then reports over HTTP
        (an operation the database does not know is not adopted over the API)."""
        self.post("workers/register/", {"worker_id": self.worker_id})
        operation_id = operation_create(operation_type="training", params={}, actor="test", enqueue=False).pk
        assert operation_claim(operation_id=operation_id, worker_id=self.worker_id) == 1
        assert self.register(operation_id)["action"] == "continue"
        return operation_id


@pytest.fixture
def api_worker(live_server):
    def worker(worker_id: str) -> WorkerClient:
        key = credential_create(host=worker_id.split(":")[0], actor="test")[1]
        return WorkerClient(live_server.url, f"Worker {key}", worker_id)

    return worker


def status_of(operation_id: str) -> str:
    return Operation.objects.values_list("status", flat=True).get(pk=operation_id)


def test_silent_worker_is_reconciled_then_failed(supervise, api_worker):
    supervise()
    worker = api_worker("silent-host:resilient:101")
    operation_id = worker.start()
    assert status_of(operation_id) == S.RUNNING

    wait_for(lambda: status_of(operation_id) == S.PENDING_RECONCILIATION, timeout=10, what="PENDING_RECONCILIATION")
    wait_for(lambda: status_of(operation_id) == S.FAILED, timeout=10, what="FAILED")
    operation = Operation.objects.get(pk=operation_id)
    assert operation.error_message == "Worker silent-host:resilient:101 became unavailable"
    assert operation.presumed_orphan


def test_worker_heartbeating_again_in_time_is_running_again(supervise, api_worker):
    supervise()
    worker = api_worker("flaky-host:resilient:102")
    operation_id = worker.start()
    wait_for(lambda: status_of(operation_id) == S.PENDING_RECONCILIATION, timeout=10, what="PENDING_RECONCILIATION")

    reply = worker.heartbeat(operation_id)
    assert reply["action"] == "continue" and reply["operation"]["status"] == S.RUNNING
    # It keeps heart-beating: the running control loop leaves it RUNNING well past the orphan timeout.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert worker.heartbeat(operation_id)["action"] == "continue"
        assert status_of(operation_id) == S.RUNNING
        time.sleep(0.5)


def test_worker_presumed_dead_that_reports_completion_wins(supervise, api_worker):
    supervise()
    worker = api_worker("late-host:resilient:103")
    operation_id = worker.start()
    wait_for(lambda: status_of(operation_id) == S.FAILED, timeout=15, what="FAILED by the sweep")

    body = {
        "worker_id": worker.worker_id,
        "completed_operations": [
            {"operation_id": operation_id, "status": "COMPLETED", "attempt": 1, "result": {"best_val_loss": 0.42}}
        ],
    }
    assert worker.post("workers/register/", body)["completed_operations"] == [
        {"operation_id": operation_id, "applied": True}
    ]
    assert worker.post("workers/register/", body)["completed_operations"] == [
        {"operation_id": operation_id, "applied": False}
    ]
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.result) == (S.COMPLETED, {"best_val_loss": 0.42})


def test_restart_reconciles_running_operations(supervise, api_worker):
    """Restarting supervise: RUNNING worker operations await their worker; a live one comes back."""
    first = supervise(WORKER_STALE_SECONDS="60", ORPHAN_TIMEOUT_SECONDS="120")
    worker = api_worker("steady-host:resilient:104")
    operation_id = worker.start()
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=10) == 0
    assert status_of(operation_id) == S.RUNNING

    supervise(WORKER_STALE_SECONDS="60", ORPHAN_TIMEOUT_SECONDS="120")
    assert status_of(operation_id) == S.PENDING_RECONCILIATION
    assert worker.heartbeat(operation_id)["action"] == "continue"
    assert status_of(operation_id) == S.RUNNING


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_loop_cleanly(supervise, signum):
    process = supervise()
    started = time.monotonic()
    process.signal(signum)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "Control loop stopped." in process.output
    assert "Traceback" not in process.output
