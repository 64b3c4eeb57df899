"""The restart policy and the fleet as users and workers see them: the API (operation bodies, max_restarts on the
requests that start one, the schema, a worker reporting its cause and its type), the command line (`operations
status|list`, `train --max-restarts`, `workers`), the outbox keeping a cause, and a research session waiting for a
child whose automatic resume is planned."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, ManagementUtility
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents import session as session_module
from agents.session import ChildFailed, SessionRunner
from marketdata.series import generate_bars, write_series
from operations.ids import new_operation_id
from operations.models import ControlLoop, Operation, OperationEvent, Worker, WorkerStatus, WorkerType
from operations.models import OperationStatus as S
from operations.restarts import EndCause
from operations.services.workers import CompletedReport
from runtime.outbox import outbox_dir, outbox_entries, outbox_write
from runtime.worker import register
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory, RunningOperationFactory, WorkerFactory
from tests.support.commands import assert_refused_by_name
from tests.support.commands import command_output as run

pytestmark = pytest.mark.django_db

REGISTER_URL = "/api/v1/workers/register/"
WORKER_ID = "gpu-box.lan:resilient:4242"


def planned_operation(**fields) -> Operation:
    """FAILED with its worker lost, one automatic resume made, the second planned."""
    fields = {
        "status": S.FAILED,
        "end_cause": EndCause.WORKER_LOST,
        "restarts": 1,
        "max_restarts": 3,
        "restart_due_at": timezone.now() + timedelta(seconds=20),
        "error_message": "Worker w became unavailable",
        **fields,
    }
    return OperationFactory(**fields)


def assert_nothing_created() -> None:
    assert Operation.objects.count() == 0
    assert OperationEvent.objects.count() == 0
    assert queued_operation_ids() == []


# --- API: operation bodies


def test_an_operation_body_has_the_policys_counter_and_decision(user, user_client):
    operation = planned_operation(owner=user)
    due = Operation.objects.get(pk=operation.pk).restart_due_at
    body = user_client.get(f"/api/v1/operations/{operation.pk}/").json()
    assert (body["max_restarts"], body["restarts"]) == (3, 1)
    restart = body["restart"]
    assert set(restart) == {"restarts", "max_restarts", "counter", "state", "next_at", "cause", "text"}
    assert (restart["restarts"], restart["max_restarts"], restart["counter"], restart["state"], restart["cause"]) == (
        1,
        3,
        "1/3",
        "planned",
        "worker_lost",
    )
    assert parse_datetime(restart["next_at"]) == due
    assert restart["text"] == (
        f"Automatic resume 2/3 due at {due.isoformat(timespec='seconds')}, after a lost "
        "worker, once a worker is available"
    )
    listed = user_client.get("/api/v1/operations/").json()["results"][0]
    assert listed["restart"] == restart and listed["max_restarts"] == 3


def test_a_running_operations_restart_says_nothing(user, user_client):
    operation = RunningOperationFactory(owner=user, max_restarts=2)
    restart = user_client.get(f"/api/v1/operations/{operation.pk}/").json()["restart"]
    assert restart == {
        "restarts": 0,
        "max_restarts": 2,
        "counter": "0/2",
        "state": "none",
        "next_at": None,
        "cause": "",
        "text": "",
    }


# --- API: max_restarts on the requests that start an operation


@pytest.fixture
def market(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.RESULTS_DIR = tmp_path / "results"
    settings.MODELS_DIR = tmp_path / "models"
    write_series(generate_bars(bars=300, timeframe="1h", seed=5), "SYN", "1h")


START_URLS = ["/api/v1/training/", "/api/v1/backtests/"]


@pytest.mark.parametrize("url", START_URLS)
@pytest.mark.parametrize("max_restarts", [0, 5, 100])
def test_a_start_request_stores_max_restarts(market, user_client, url, max_restarts):
    response = user_client.post(url, {"symbol": "SYN", "timeframe": "1h", "max_restarts": max_restarts}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    operation = Operation.objects.get(pk=body["operation_id"])
    assert operation.max_restarts == body["max_restarts"] == max_restarts
    assert body["restart"]["counter"] == f"0/{max_restarts}"
    assert "max_restarts" not in operation.params  # the policy's, not the run's


@pytest.mark.parametrize("url", START_URLS)
def test_without_max_restarts_a_start_request_takes_the_setting(market, user_client, settings, url):
    settings.MAX_RESTARTS = 4
    response = user_client.post(url, {"symbol": "SYN", "timeframe": "1h"}, format="json")
    assert response.status_code == 201, response.content
    assert Operation.objects.get(pk=response.json()["operation_id"]).max_restarts == 4


@pytest.mark.parametrize("url", START_URLS)
@pytest.mark.parametrize("value", [-1, 101, "x", True, None, 2.5], ids=["-1", "101", "x", "true", "null", "2.5"])
def test_a_bad_max_restarts_is_a_400_naming_it_and_creates_nothing(
    market, user_client, django_capture_on_commit_callbacks, url, value
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = user_client.post(url, {"symbol": "SYN", "timeframe": "1h", "max_restarts": value}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["detail"].startswith("Invalid value for field 'max_restarts':"), body["detail"]
    assert set(body["details"]) == {"max_restarts"}
    assert callbacks == []
    assert_nothing_created()


def test_the_schema_documents_max_restarts_and_restart(anonymous_client):
    schema = anonymous_client.get("/api/v1/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]

    def request_schema(path: str) -> dict:
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        return components[ref.rsplit("/", 1)[1]]

    for path in START_URLS:
        field = request_schema(path)["properties"]["max_restarts"]
        assert (field["type"], field["minimum"], field["maximum"]) == ("integer", 0, 100), path
        assert "MAX_RESTARTS" in field["description"]
    for name in ("Operation", "OperationDetail"):
        properties = components[name]["properties"]
        assert properties["max_restarts"]["type"] == properties["restarts"]["type"] == "integer"
        assert properties["restart"]["allOf"][0]["$ref"] == "#/components/schemas/Restart"
    restart = components["Restart"]
    assert set(restart["properties"]) == {"restarts", "max_restarts", "counter", "state", "next_at", "cause", "text"}
    assert restart["properties"]["next_at"].get("nullable") is True
    state_enum = components[restart["properties"]["state"]["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert set(state_enum) == {"none", "planned", "exhausted", "crash_loop", "off", "not_restartable"}
    cause = components["CompletedReportInputRequest"]["properties"]["cause"]  # a cause, or blank: none given
    cause_enums = [components[choice["$ref"].rsplit("/", 1)[1]]["enum"] for choice in cause["oneOf"]]
    assert sorted(map(set, cause_enums), key=len) == [{""}, {"shutdown", "transient_error", "error", "cancelled"}]
    worker_type = components["WorkerRegisterInputRequest"]["properties"]["worker_type"]
    assert set(components[worker_type["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"]) == {"api"}


# --- API: a worker reports its cause and its type


def report_body(operation: Operation, **report) -> dict:
    return {
        "worker_id": WORKER_ID,
        "completed_operations": [{"operation_id": operation.pk, "attempt": operation.attempt, **report}],
    }


def test_a_reported_shutdown_plans_a_resume(worker_client, settings):
    settings.RESTART_BACKOFF_SECONDS = 10
    operation = RunningOperationFactory(worker__worker_id=WORKER_ID, max_restarts=3, restarts=3)
    response = worker_client.post(
        REGISTER_URL,
        report_body(operation, status="CANCELLED", cause="shutdown", error_message="Graceful shutdown"),
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["completed_operations"] == [{"operation_id": operation.pk, "applied": True}]
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restarts) == (S.CANCELLED, EndCause.SHUTDOWN, 3)
    assert operation.restart_due_at == operation.completed_at  # due at once, not counted


def test_a_reported_transient_error_plans_a_resume_after_the_backoff(worker_client, settings):
    settings.RESTART_BACKOFF_SECONDS = 10
    operation = RunningOperationFactory(worker__worker_id=WORKER_ID, max_restarts=3)
    response = worker_client.post(
        REGISTER_URL, report_body(operation, status="FAILED", cause="transient_error"), format="json"
    )
    assert response.status_code == 200, response.content
    operation.refresh_from_db()
    assert operation.end_cause == EndCause.TRANSIENT_ERROR
    assert operation.restart_due_at - operation.completed_at == timedelta(seconds=10)


def test_a_report_without_a_cause_is_an_error_and_plans_nothing(worker_client):
    operation = RunningOperationFactory(worker__worker_id=WORKER_ID, max_restarts=3)
    worker_client.post(REGISTER_URL, report_body(operation, status="FAILED"), format="json")
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.FAILED, EndCause.ERROR, None)


@pytest.mark.parametrize("cause", ["worker_lost", "crash_loop", "reboot"])
def test_a_cause_a_worker_may_not_report_is_a_400_naming_cause(worker_client, cause):
    operation = RunningOperationFactory(worker__worker_id=WORKER_ID, max_restarts=3)
    before = Operation.objects.filter(pk=operation.pk).values().get()
    response = worker_client.post(REGISTER_URL, report_body(operation, status="FAILED", cause=cause), format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert "cause" in body["detail"] and "completed_operations" in body["detail"], body["detail"]
    assert Operation.objects.filter(pk=operation.pk).values().get() == before


@pytest.mark.parametrize("worker_type", ["control_loop", "qcluster", "gpu", ""])
def test_a_worker_type_other_than_api_is_a_400_naming_it(worker_client, worker_type):
    response = worker_client.post(REGISTER_URL, {"worker_id": WORKER_ID, "worker_type": worker_type}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["detail"].startswith("Invalid value for field 'worker_type':"), body["detail"]
    assert not Worker.objects.exists()


@pytest.mark.parametrize(("given", "stored"), [({}, "api"), ({"worker_type": "api"}, "api")])
def test_a_registered_worker_type_is_stored(worker_client, given, stored):
    response = worker_client.post(REGISTER_URL, {"worker_id": WORKER_ID, **given}, format="json")
    assert response.status_code == 200, response.content
    assert Worker.objects.get(pk=WORKER_ID).worker_type == stored


# --- CLI: operations status and list


def status_line(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"{label}:"))


def test_status_prints_the_planned_resume():
    operation = planned_operation()
    due = Operation.objects.get(pk=operation.pk).restart_due_at
    output = run("operations", "status", operation.pk)
    assert status_line(output, "Restarts") == (
        f"Restarts:   1/3 - Automatic resume 2/3 due at {due.isoformat(timespec='seconds')}, after a lost worker, "
        "once a worker is available"
    )


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"status": S.RUNNING, "restarts": 0}, "Restarts:   0/3"),
        (
            {"status": S.FAILED, "end_cause": EndCause.TRANSIENT_ERROR, "restarts": 3},
            "Restarts:   3/3 - No automatic resume: all 3 restarts used (restarts 3/3)",
        ),
        (
            {"status": S.FAILED, "end_cause": EndCause.CRASH_LOOP, "restarts": 2},
            "Restarts:   2/3 - No automatic resume: it is crash-looping (see the error)",
        ),
        (
            {"status": S.FAILED, "end_cause": EndCause.WORKER_LOST, "max_restarts": 0},
            "Restarts:   0/0 - Automatic restarts are off for it (max_restarts 0)",
        ),
    ],
    ids=["running", "exhausted", "crash-loop", "off"],
)
def test_status_prints_the_policys_decision(fields, line):
    operation = OperationFactory(**{"max_restarts": 3, **fields})
    assert status_line(run("operations", "status", operation.pk), "Restarts") == line


def test_list_shows_the_restarts_column_and_marks_a_planned_resume():
    planned = planned_operation()
    plain = OperationFactory(status=S.FAILED, end_cause=EndCause.ERROR, max_restarts=3)
    output = run("operations", "list")
    lines = output.splitlines()
    assert "RESTARTS" in lines[0].split()
    column = lines[0].index("RESTARTS")
    rows = {line.split()[0]: line for line in lines[1:] if line.startswith("op_")}
    assert rows[planned.pk][column:].split()[0] == "1/3*"
    assert rows[plain.pk][column:].split()[0] == "0/3"
    assert lines[-1] == "*: an automatic resume is planned (operations status ID says when)"


def test_list_without_a_planned_resume_has_no_note():
    OperationFactory(status=S.FAILED, end_cause=EndCause.ERROR, max_restarts=3)
    output = run("operations", "list")
    assert "RESTARTS" in output.splitlines()[0]
    assert "*" not in output


# --- CLI: train --max-restarts


def test_train_stores_max_restarts(market):
    assert run("train", "--symbol", "SYN", "--timeframe", "1h", "--max-restarts", "0").strip() == (
        Operation.objects.get().pk
    )
    assert Operation.objects.get().max_restarts == 0
    run("train", "--symbol", "SYN", "--timeframe", "1h", "--max-restarts", "7")
    assert sorted(Operation.objects.values_list("max_restarts", flat=True)) == [0, 7]


def test_train_without_max_restarts_takes_the_setting(market, settings):
    settings.MAX_RESTARTS = 2
    run("train", "--symbol", "SYN", "--timeframe", "1h")
    assert Operation.objects.get().max_restarts == 2


@pytest.mark.parametrize("value", ["-1", "101", "x"])
def test_train_refuses_a_bad_max_restarts_by_name(market, value):
    assert_refused_by_name(
        lambda: run("train", "--symbol", "SYN", "--timeframe", "1h", "--max-restarts", value), "--max-restarts"
    )
    assert_nothing_created()


# --- CLI: workers


@pytest.fixture
def fleet(db):
    now = timezone.now()
    busy_run = RunningOperationFactory(worker__worker_id="alpha:resilient:11", worker__last_seen_at=now)
    workers = {
        "idle": WorkerFactory(worker_id="alpha:resilient:10", last_seen_at=now),
        "busy": Worker.objects.get(pk="alpha:resilient:11"),
        "stopping": WorkerFactory(worker_id="beta:resilient:20", status=WorkerStatus.STOPPING, last_seen_at=now),
        "unavailable": WorkerFactory(
            worker_id="beta:resilient:21", status=WorkerStatus.UNAVAILABLE, last_seen_at=now - timedelta(minutes=5)
        ),
        "api": WorkerFactory(worker_id="gamma:resilient:30", worker_type=WorkerType.API, last_seen_at=now),
    }
    WorkerFactory(worker_id="alpha:supervise:99", worker_type=WorkerType.CONTROL_LOOP, last_seen_at=now)
    return {"workers": workers, "busy_run": busy_run}


def table(output: str) -> dict[str, list[str]]:
    return {
        line.split()[0]: line.split()
        for line in output.splitlines()[1:]
        if line.count(":") >= 2 and not line.startswith(("Total:", "Control loop:"))
    }


def test_workers_lists_every_worker_but_the_control_loop(fleet):
    output = run("workers")
    lines = output.splitlines()
    assert lines[0].split() == ["WORKER", "HOST", "STATE", "OPERATION", "LAST", "SEEN"]
    rows = table(output)
    assert set(rows) == {worker.pk for worker in fleet["workers"].values()}  # not alpha:supervise:99
    assert rows["alpha:resilient:10"][1:4] == ["alpha", "IDLE", "-"]
    assert rows["alpha:resilient:11"][1:4] == ["alpha", "BUSY", fleet["busy_run"].pk]
    assert rows["beta:resilient:20"][2] == "STOPPING"
    assert rows["beta:resilient:21"][2:] == ["UNAVAILABLE", "-", "5m", "ago"]
    assert [line.split()[0] for line in lines[1:6]] == sorted(rows, key=lambda w: (w.split(":")[0], w))
    total = next(line for line in lines if line.startswith("Total:"))
    assert total == "Total: 5 workers (2 idle, 1 busy, 1 stopping, 1 unavailable)"
    assert lines[-1] == "Control loop: never started (python manage.py supervise)"


def test_workers_by_state_and_by_host(fleet):
    assert set(table(run("workers", "--state", "idle"))) == {"alpha:resilient:10", "gamma:resilient:30"}
    assert set(table(run("workers", "--state", "busy"))) == {"alpha:resilient:11"}
    assert set(table(run("workers", "--host", "beta"))) == {"beta:resilient:20", "beta:resilient:21"}
    assert set(table(run("workers", "--host", "alpha", "--state", "busy"))) == {"alpha:resilient:11"}
    assert table(run("workers", "--state", "stopped")) == {}
    with pytest.raises(CommandError, match="invalid choice"):
        run("workers", "--state", "asleep")


def test_workers_json_is_the_apis_body(fleet, staff_client):
    body = json.loads(run("workers", "--json"))
    assert body["count"] == 5 == len(body["results"])
    for row in body["results"]:
        assert row == staff_client.get(f"/api/v1/workers/{row['worker_id']}/").json()
    busy = next(row for row in body["results"] if row["worker_id"] == "alpha:resilient:11")
    assert (busy["status"], busy["current_operation"], busy["worker_type"]) == (
        "BUSY",
        fleet["busy_run"].pk,
        "qcluster",
    )
    assert json.loads(run("workers", "--json", "--state", "stopping"))["count"] == 1


def test_workers_says_how_the_control_loop_is(fleet):
    now = timezone.now()
    OperationFactory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING)
    ControlLoop.objects.create(
        pk=1,
        host="ctl-host",
        pid=4321,
        started_at=now - timedelta(hours=1),
        lease_expires_at=now + timedelta(seconds=30),
        last_sweep_at=now - timedelta(seconds=5),
    )
    line = run("workers").splitlines()[-1]
    assert line.startswith("Control loop: running, pid 4321 on ctl-host since "), line
    assert line.endswith("; 1 research session(s) running in it"), line
    assert "last sweep " in line and "s ago" in line
    ControlLoop.objects.filter(pk=1).update(lease_expires_at=now - timedelta(seconds=1))
    assert run("workers").splitlines()[-1].startswith("Control loop: stopped, pid 4321 on ctl-host")


def test_workers_help(capsys):
    with pytest.raises(SystemExit) as exited:
        ManagementUtility(["manage.py", "workers", "--help"]).execute()
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "usage: manage.py workers" in text
    for option in ("--state", "--host", "--json"):
        assert option in text
    assert "idle" in text and "stopping" in text and "control loop" in text


# --- the outbox keeps the cause


@pytest.fixture
def outbox(settings, tmp_path):
    settings.WORKER_STATE_DIR = tmp_path


def test_an_outbox_entry_keeps_its_cause(outbox):
    report = CompletedReport(
        operation_id=new_operation_id("training"),
        worker_id="box:resilient:7",
        attempt=2,
        status=S.CANCELLED,
        error_message="Graceful shutdown",
        cause=EndCause.SHUTDOWN,
        completed_at=timezone.now().replace(microsecond=123000),
    )
    outbox_write(report)
    [entry] = outbox_entries()
    assert entry.report == report
    assert entry.report.cause == "shutdown"


@pytest.mark.parametrize("cause", ["worker_lost", "crash_loop", "bogus", 7, None, "__missing__"])
def test_an_outbox_cause_a_worker_may_not_report_reads_as_none(outbox, cause):
    body = {
        "operation_id": new_operation_id("training"),
        "worker_id": "box:resilient:7",
        "attempt": 1,
        "status": "FAILED",
        "error_message": "x",
    }
    if cause != "__missing__":  # an entry written by an earlier version has no cause
        body["cause"] = cause
    outbox_dir().mkdir(parents=True)
    (outbox_dir() / f"{body['operation_id']}.1.json").write_text(json.dumps(body))
    [entry] = outbox_entries()
    assert (entry.report.status, entry.report.cause) == ("FAILED", "")


def test_a_shutdown_left_in_the_outbox_plans_a_resume_when_reported(outbox, settings):
    settings.RESTART_BACKOFF_SECONDS = 10
    operation = RunningOperationFactory(max_restarts=3)
    outbox_write(
        CompletedReport(
            operation_id=operation.pk,
            worker_id=operation.worker_id,
            attempt=1,
            status=S.CANCELLED,
            cause=EndCause.SHUTDOWN,
        )
    )
    register("box:resilient:99")  # any process of this machine, later
    operation.refresh_from_db()
    assert (operation.status, operation.end_cause) == (S.CANCELLED, EndCause.SHUTDOWN)
    assert operation.restart_due_at is not None
    assert outbox_entries() == []


# --- a research session waits for a child whose automatic resume is planned


class FakeContext:
    """What SessionRunner._await uses of its RunContext; each poll may change the child (`on_poll`)."""

    def __init__(self, on_poll=None) -> None:
        import threading

        self.cancel_requested = threading.Event()
        self.polls: list[str] = []
        self.on_poll = on_poll

    def raise_if_stopping(self) -> None:
        pass

    def report_progress(self, **progress) -> None:
        self.polls.append(progress["message"])
        if self.on_poll:
            self.on_poll(len(self.polls))


def awaiting(context: FakeContext) -> SessionRunner:
    runner = SessionRunner.__new__(SessionRunner)
    runner.context = context
    runner.state = {"phase": "TRAINING", "configuration": {}, "children": {}}
    return runner


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(session_module, "POLL_SECONDS", 0.001)


@pytest.mark.parametrize("cause", [EndCause.WORKER_LOST, EndCause.SHUTDOWN])
def test_a_session_keeps_waiting_for_a_child_whose_resume_is_planned(fast_polls, cause):
    child = OperationFactory(
        status=S.CANCELLED if cause == EndCause.SHUTDOWN else S.FAILED,
        end_cause=cause,
        max_restarts=3,
        restart_due_at=timezone.now(),
    )

    def the_child_comes_back(polls: int) -> None:
        if polls == 2:  # the control loop resumes it
            Operation.objects.filter(pk=child.pk).update(status=S.RESUMING, restart_due_at=None)
        elif polls == 4:  # and a worker completes it
            Operation.objects.filter(pk=child.pk).update(status=S.COMPLETED, result={"ok": True})

    context = FakeContext(the_child_comes_back)
    done = awaiting(context)._await(child.pk)
    assert (done.pk, done.status, done.result) == (child.pk, S.COMPLETED, {"ok": True})
    assert len(context.polls) == 4
    assert child.status in context.polls[0] and "RESUMING" in context.polls[2]


def test_a_session_gives_up_on_a_child_that_ended_with_nothing_planned(fast_polls):
    child = OperationFactory(status=S.FAILED, end_cause=EndCause.ERROR, error_message="ValueError: bad", max_restarts=3)
    context = FakeContext()
    with pytest.raises(ChildFailed, match="ended FAILED: ValueError: bad"):
        awaiting(context)._await(child.pk)
    assert context.polls == []


def test_a_session_gives_up_once_the_childs_resume_is_called_off(fast_polls):
    child = OperationFactory(
        status=S.FAILED,
        end_cause=EndCause.WORKER_LOST,
        max_restarts=3,
        restart_due_at=timezone.now(),
        error_message="Worker w became unavailable",
    )

    def crash_loop(polls: int) -> None:
        if polls == 3:  # the control loop found it crash-looping: no resume after all
            Operation.objects.filter(pk=child.pk).update(
                restart_due_at=None, end_cause=EndCause.CRASH_LOOP, error_message="Crash loop at epoch 4: ..."
            )

    context = FakeContext(crash_loop)
    with pytest.raises(ChildFailed, match="Crash loop at epoch 4"):
        awaiting(context)._await(child.pk)
    assert len(context.polls) == 3


def test_train_json_output_includes_the_policy(market):
    body = json.loads(run("train", "--symbol", "SYN", "--timeframe", "1h", "--max-restarts", "5", "--json"))
    assert (body["max_restarts"], body["restarts"], body["restart"]["counter"]) == (5, 0, "0/5")
