"""The fleet (runtime/fleet.py, operations/services/workers.py): a cluster's heartbeat for its worker processes,
idle or busy; STOPPING holding until STOPPED; a worker process that exited mid-run failing that run at once as a
lost worker; the sweep and the fleet agreeing; and FleetWatch reading its worker processes from their pid files.
No real cluster: the cluster's calls are made here, and its "workers" are child processes of this test."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from operations.models import Operation, OperationEvent, Worker, WorkerStatus, WorkerType
from operations.models import OperationStatus as S
from operations.restarts import EndCause
from operations.services.lifecycle import operation_claim, operation_finish
from operations.services.reconciliation import sweep_orphans
from operations.services.workers import (
    CurrentOperation,
    cluster_beat,
    cluster_stopped,
    worker_heartbeat,
    worker_register,
)
from runtime import fleet
from runtime.fleet import FleetWatch
from runtime.shutdown import worker_pids_dir
from runtime.worker import current_worker_id
from tests.factories import OperationFactory, RunningOperationFactory, WorkerFactory

pytestmark = pytest.mark.django_db

CLUSTER = "box-1:resilient:500"
W1, W2, W3 = "box-1:resilient:501", "box-1:resilient:502", "box-1:resilient:503"


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def status_of(worker_id: str) -> str:
    return Worker.objects.values_list("status", flat=True).get(pk=worker_id)


@pytest.fixture
def backoff(settings):
    settings.RESTART_BACKOFF_SECONDS = 10
    settings.RESTART_BACKOFF_MAX_SECONDS = 600


# --- cluster_beat: live workers


def test_unknown_live_workers_are_registered_idle_from_their_ids():
    before = timezone.now()
    assert cluster_beat(cluster_id=CLUSTER, live=[W1, W2, W1], capabilities={"device": "cpu"}) == []
    workers = {worker.pk: worker for worker in Worker.objects.all()}
    assert set(workers) == {W1, W2}
    for worker_id, pid in ((W1, 501), (W2, 502)):
        worker = workers[worker_id]
        assert (worker.worker_type, worker.status, worker.host, worker.pid) == (
            WorkerType.QCLUSTER,
            WorkerStatus.IDLE,
            "box-1",
            pid,
        )
        assert worker.capabilities == {"device": "cpu"}
        assert worker.current_operation_id is None
        assert worker.registered_at >= before and worker.last_seen_at >= before


def test_a_beat_refreshes_last_seen_and_keeps_idle_and_busy_as_they_are():
    idle = WorkerFactory(worker_id=W1, last_seen_at=ago(25))
    busy_run = RunningOperationFactory(worker__worker_id=W2, worker__last_seen_at=ago(25))
    before = timezone.now()
    cluster_beat(cluster_id=CLUSTER, live=[W1, W2])
    idle.refresh_from_db()
    assert idle.status == WorkerStatus.IDLE and idle.last_seen_at >= before
    busy = Worker.objects.get(pk=W2)
    assert (busy.status, busy.current_operation_id) == (WorkerStatus.BUSY, busy_run.pk)
    assert busy.last_seen_at >= before
    assert Worker.objects.get(pk=W1).registered_at == idle.registered_at  # not registered again


@pytest.mark.parametrize("status", [WorkerStatus.UNAVAILABLE, WorkerStatus.STOPPED])
def test_a_worker_marked_gone_that_is_alive_after_all_is_revived(status):
    WorkerFactory(worker_id=W1, status=status, last_seen_at=ago(300))
    run = RunningOperationFactory(worker__worker_id=W2, worker__status=status, worker__last_seen_at=ago(300))
    cluster_beat(cluster_id=CLUSTER, live=[W1, W2])
    assert status_of(W1) == WorkerStatus.IDLE
    assert status_of(W2) == WorkerStatus.BUSY  # it has a current operation
    assert Worker.objects.get(pk=W2).current_operation_id == run.pk


# --- STOPPING holds until STOPPED


def test_stopping_marks_every_live_worker_stopping():
    WorkerFactory(worker_id=W1)
    RunningOperationFactory(worker__worker_id=W2)
    cluster_beat(cluster_id=CLUSTER, live=[W1, W2, W3], stopping=True)
    assert {status_of(w) for w in (W1, W2, W3)} == {WorkerStatus.STOPPING}
    cluster_beat(cluster_id=CLUSTER, live=[W1, W2, W3])  # a later beat without the flag: still stopping
    assert {status_of(w) for w in (W1, W2, W3)} == {WorkerStatus.STOPPING}


def test_a_stopping_worker_is_not_made_ready_again_by_its_run(backoff):
    run = RunningOperationFactory(worker__worker_id=W1, max_restarts=3)
    cluster_beat(cluster_id=CLUSTER, live=[W1], stopping=True)

    reply = worker_heartbeat(worker_id=W1, current_operation=CurrentOperation(run.pk, 1))
    assert reply.action.value == "continue"
    assert reply.worker.status == WorkerStatus.STOPPING
    assert operation_finish(operation_id=run.pk, worker_id=W1, attempt=1, status=S.CANCELLED, cause=EndCause.SHUTDOWN)
    worker = Worker.objects.get(pk=W1)
    assert (worker.status, worker.current_operation_id) == (WorkerStatus.STOPPING, None)
    worker_heartbeat(worker_id=W1)
    worker_register(worker_id=W1)
    assert status_of(W1) == WorkerStatus.STOPPING
    queued = OperationFactory(status=S.PENDING)
    assert operation_claim(operation_id=queued.pk, worker_id=W1) == 1  # (a delivery already on its way)
    assert status_of(W1) == WorkerStatus.STOPPING


def test_cluster_stopped_marks_its_workers_stopped():
    WorkerFactory(worker_id=W1, status=WorkerStatus.STOPPING)
    RunningOperationFactory(worker__worker_id=W2, worker__status=WorkerStatus.STOPPING)
    other = WorkerFactory()
    assert cluster_stopped([W1, W2]) == 2
    for worker_id in (W1, W2):
        worker = Worker.objects.get(pk=worker_id)
        assert (worker.status, worker.current_operation_id) == (WorkerStatus.STOPPED, None)
    assert status_of(other.pk) == WorkerStatus.IDLE


def test_a_stopped_worker_comes_back_idle_on_the_next_start():
    WorkerFactory(worker_id=W1, status=WorkerStatus.STOPPED)
    cluster_beat(cluster_id=CLUSTER, live=[W1])
    assert status_of(W1) == WorkerStatus.IDLE


# --- gone workers: their runs fail at once as a lost worker


@pytest.mark.parametrize("status", [S.RUNNING, S.PENDING_RECONCILIATION])
def test_a_worker_that_exited_mid_run_fails_the_run_with_a_resume_planned(backoff, status):
    run = RunningOperationFactory(worker__worker_id=W1, status=status, max_restarts=3, restarts=1)
    alive = RunningOperationFactory(worker__worker_id=W2, max_restarts=3)
    before = timezone.now()
    failed = cluster_beat(cluster_id=CLUSTER, live=[W2], gone=[W1])
    assert failed == [run.pk]

    run.refresh_from_db()
    message = f"Worker {W1} exited while running it (killed?)"
    assert (run.status, run.error_message, run.end_cause, run.presumed_orphan) == (
        S.FAILED,
        message,
        EndCause.WORKER_LOST,
        True,
    )
    assert run.completed_at >= before and run.orphan_clock_from is None
    assert run.restart_due_at - run.completed_at == timedelta(seconds=20)  # the 2nd restart's backoff
    event = OperationEvent.objects.filter(operation=run).order_by("pk").last()
    assert (event.from_status, event.to_status, event.actor, event.reason) == (
        status,
        S.FAILED,
        f"worker:{CLUSTER}",
        message,
    )
    worker = Worker.objects.get(pk=W1)
    assert (worker.status, worker.current_operation_id) == (WorkerStatus.STOPPED, None)

    alive.refresh_from_db()
    assert alive.status == S.RUNNING and status_of(W2) == WorkerStatus.BUSY
    assert cluster_beat(cluster_id=CLUSTER, live=[W2], gone=[W1]) == []  # reported twice: nothing more


def test_an_exited_worker_with_no_restarts_left_fails_its_run_without_a_plan(backoff):
    run = RunningOperationFactory(worker__worker_id=W1, max_restarts=0)
    assert cluster_beat(cluster_id=CLUSTER, live=[], gone=[W1]) == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.end_cause, run.restart_due_at) == (S.FAILED, EndCause.WORKER_LOST, None)


def test_an_exited_idle_worker_is_just_stopped():
    WorkerFactory(worker_id=W1)
    ended = OperationFactory(status=S.COMPLETED, worker=Worker.objects.get(pk=W1))
    assert cluster_beat(cluster_id=CLUSTER, live=[], gone=[W1, W2]) == []  # W2: never seen, nothing to do
    assert status_of(W1) == WorkerStatus.STOPPED
    assert not Worker.objects.filter(pk=W2).exists()
    assert Operation.objects.get(pk=ended.pk).status == S.COMPLETED


def test_the_run_of_a_later_worker_is_not_failed_for_an_earlier_ones_exit():
    run = RunningOperationFactory(worker__worker_id=W2)
    WorkerFactory(worker_id=W1)
    assert cluster_beat(cluster_id=CLUSTER, live=[W2], gone=[W1]) == []
    assert Operation.objects.get(pk=run.pk).status == S.RUNNING


# --- the sweep and the fleet agree


def test_the_sweep_leaves_idle_workers_the_cluster_beats_for(short_intervals):
    WorkerFactory(worker_id=W1, last_seen_at=ago(10))
    WorkerFactory(worker_id=W2, last_seen_at=ago(10))
    cluster_beat(cluster_id=CLUSTER, live=[W1])  # W2: no beat
    report = sweep_orphans()
    assert report.workers_unavailable == [W2]
    assert status_of(W1) == WorkerStatus.IDLE
    assert status_of(W2) == WorkerStatus.UNAVAILABLE


def test_the_sweep_marks_a_silent_stopping_worker_unavailable(short_intervals):
    """A cluster killed while it stopped never marks its workers STOPPED."""
    WorkerFactory(worker_id=W1, status=WorkerStatus.STOPPING, last_seen_at=ago(10))
    WorkerFactory(worker_id=W2, status=WorkerStatus.STOPPING, last_seen_at=ago(1))
    WorkerFactory(worker_id=W3, status=WorkerStatus.STOPPED, last_seen_at=ago(100))
    assert sweep_orphans().workers_unavailable == [W1]
    assert (status_of(W1), status_of(W2), status_of(W3)) == (
        WorkerStatus.UNAVAILABLE,
        WorkerStatus.STOPPING,
        WorkerStatus.STOPPED,
    )


# --- FleetWatch: the cluster's worker processes from their pid files


@pytest.fixture
def pid_folder(settings, tmp_path) -> Path:
    settings.WORKER_STATE_DIR = tmp_path
    folder = worker_pids_dir(os.getpid())
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []

    def start(*command: str) -> subprocess.Popen:
        process = subprocess.Popen(list(command) or ["sleep", "30"])
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def dead_pid() -> int:
    """The pid of a child that exited and was reaped: no such process any more."""
    process = subprocess.Popen(["true"])
    process.wait(timeout=10)
    return process.pid


def wait_until_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not exit")


def test_processes_are_the_recorded_pids_split_into_alive_and_exited(pid_folder, children):
    first, second = children(), children()
    zombie = children("true")  # exited, not reaped yet (a killed worker its sentinel has not reaped)
    wait_until_zombie(zombie.pid)
    gone = dead_pid()
    not_ours = 1  # alive, but not a process of this cluster
    for pid in (first.pid, second.pid, zombie.pid, gone, not_ours):
        (pid_folder / str(pid)).touch()
    (pid_folder / "README").touch()  # not a pid: ignored

    alive, exited = FleetWatch(os.getpid()).processes()
    assert sorted(alive) == sorted([first.pid, second.pid])
    assert exited == sorted([zombie.pid, gone, not_ours])
    assert fleet.running(first.pid) and not fleet.running(zombie.pid) and not fleet.running(gone)


def test_processes_of_a_cluster_without_a_pid_folder_are_none(settings, tmp_path):
    settings.WORKER_STATE_DIR = tmp_path
    assert FleetWatch(os.getpid()).processes() == ([], [])


def test_a_beat_registers_the_live_workers_and_stops_the_exited_ones(pid_folder, children, backoff, settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 7
    worker = children()
    gone = dead_pid()
    (pid_folder / str(worker.pid)).touch()
    (pid_folder / str(gone)).touch()
    gone_id = current_worker_id(gone)
    run = RunningOperationFactory(worker__worker_id=gone_id, max_restarts=3)
    watch = FleetWatch(os.getpid())

    assert watch.beat() == 7
    live_id = current_worker_id(worker.pid)
    assert Worker.objects.get(pk=live_id).status == WorkerStatus.IDLE
    assert status_of(gone_id) == WorkerStatus.STOPPED
    run.refresh_from_db()
    assert (run.status, run.end_cause) == (S.FAILED, EndCause.WORKER_LOST)
    assert OperationEvent.objects.filter(operation=run).last().actor == f"worker:{watch.cluster_id}"
    assert sorted(path.name for path in pid_folder.iterdir()) == [str(worker.pid)]  # reported: forgotten
    assert watch.seen == {live_id, gone_id}

    watch.shutting_down()
    watch.beat()
    assert status_of(live_id) == WorkerStatus.STOPPING
