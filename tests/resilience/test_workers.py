"""Workers under fire: kill -9 at random moments and in the middle of a checkpoint save, SIGTERM to the
cluster, the same task delivered several times, and a worker presumed dead that comes back (fencing).

Nobody resumes anything by hand where the restart policy applies (a lost worker, a graceful shutdown): each
scenario ends with the run COMPLETED as a straight run, resumed by the control loop alone."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from django_q.models import Task
from django_q.tasks import async_task

from operations.models import Operation
from operations.models import OperationStatus as S
from operations.restarts import restart_summary
from operations.services.lifecycle import operation_cancel, operation_create
from runtime.shutdown import GRACEFUL_SHUTDOWN_MESSAGE
from runtime.tasks import RUN_OPERATION_TASK
from tests.resilience.conftest import runs
from tests.resilience.fire import (
    assert_healed,
    assert_settled,
    checkpoint_version,
    executing_pid,
    kill,
    next_run,
    pause,
    resume,
    seeded,
    wait_for_checkpoint_after,
    wait_for_checkpoint_or_end,
    wait_for_status,
)
from tests.resilience.jobs import JOBS, start_training, training_cluster
from tests.support.processes import wait_for
from tests.training.cluster import REQUEST, automatic, save_folders, wait_until_completed
from training.params import TrainingParamsSerializer

pytestmark = [pytest.mark.process, pytest.mark.resilience, pytest.mark.django_db(transaction=True)]

KILLS = 3


def outcomes(operation_id: str) -> Counter:
    """What each delivery of the operation's task returned (django-q keeps one result per task)."""
    return Counter(Task.objects.filter(name=operation_id).values_list("result", flat=True))


@pytest.mark.parametrize("kind", JOBS)
@pytest.mark.scenario("kill -9 of a worker at random moments")
@runs(2)
def test_kill_a_worker_at_random_moments(children, folders, request, kind, run):
    rng, job = seeded(request), JOBS[kind]
    children.supervise()
    # The backtest at half the usual speed (8 s straight): three kills, each after a save, fit in before its end.
    job.cluster(children, SLOW_SECONDS_PER_BAR="40e-6")
    operation_id = job.start()
    kills = 0
    while kills < KILLS:
        pid = executing_pid(operation_id)
        # A save of this run: its resume then starts further on (no progress between kills is a crash loop).
        wait_for_checkpoint_or_end(operation_id, checkpoint_version(operation_id))
        pause(rng, 0, 0.8)
        operation = Operation.objects.get(pk=operation_id)
        if operation.status != S.RUNNING:
            break  # it ended first
        kill(pid)
        kills += 1
        # Its cluster sees the process gone: FAILED as a lost worker, then resumed by the control loop.
        after = next_run(operation_id, operation.attempt)
        if after.status == S.COMPLETED and after.attempt == operation.attempt:
            break  # the kill came after the outcome was recorded
        assert_settled([operation_id])
    print(f"{kind}: {kills} kills")
    assert kills >= 2, "the run ended before the kills: make it longer"

    completed = job.assert_ends_as_straight(operation_id, folders)
    assert_healed(operation_id, completed, lost=kills)


@pytest.mark.scenario("kill -9 of a worker during a checkpoint save")
@runs(1)
def test_kill_a_worker_during_a_checkpoint_save(children, folders, run):
    """A save in flight is a second folder beside the one the row points at: the worker (and any child of
    it) is killed the moment one is seen, while its files are written or its commit is on its way."""
    children.supervise()
    training_cluster(children)
    operation_id = start_training(epochs=60, checkpoint_every=1)
    for _ in range(2):
        pid = executing_pid(operation_id)
        attempt = Operation.objects.get(pk=operation_id).attempt
        wait_for_checkpoint_after(operation_id, checkpoint_version(operation_id))  # this run's: progress made
        wait_for(lambda: len(save_folders(folders, operation_id)) >= 2, timeout=60, interval=0.001,
                 what="a save in flight")
        kill(pid, with_children=True)
        next_run(operation_id, attempt)
        assert_settled([operation_id])

    completed = JOBS["training"].assert_ends_as_straight(operation_id, folders, epochs=60, checkpoint_every=1)
    assert_healed(operation_id, completed, lost=2)


@pytest.mark.parametrize("group", [False, True], ids=["main-process", "process-group"])
@pytest.mark.parametrize("kind", JOBS)
@pytest.mark.scenario("SIGTERM to the cluster")
@runs(1)
def test_sigterm_to_the_cluster(children, folders, request, kind, group, run):
    """To its main process (docker stop, Kubernetes), or to every process of it at once (systemd's default
    KillMode, `kill -TERM -<pgid>`): either way the run checkpoints, ends CANCELLED, and resumes."""
    rng, job = seeded(request), JOBS[kind]
    children.supervise()
    cluster = job.cluster(children, workers=1)
    operation_id = job.start()
    executing_pid(operation_id)
    wait_for_checkpoint_after(operation_id)  # the run is under way (a stop while it loads its data saves nothing)
    pause(rng, 0, 1.0)
    if group:
        os.killpg(cluster.process.pid, signal.SIGTERM)  # a session of its own: its pid is its group's
    else:
        cluster.signal(signal.SIGTERM)
    assert cluster.wait(timeout=40) == 0
    cancelled = wait_for_status(operation_id, S.CANCELLED, timeout=10)
    assert cancelled.error_message == GRACEFUL_SHUTDOWN_MESSAGE
    assert_settled([operation_id])
    assert restart_summary(cancelled)["state"] == "planned"  # waiting for a worker: no cluster is up
    assert Operation.objects.get(pk=operation_id).status == S.CANCELLED

    job.cluster(children)  # the restart policy resumes it on the new cluster
    completed = job.assert_ends_as_straight(operation_id, folders)
    assert_healed(operation_id, completed, lost=0)
    assert automatic(operation_id)[-1][:2] == (S.CANCELLED, S.RESUMING)


@pytest.mark.scenario("duplicate task deliveries")
@runs(1)
def test_duplicate_task_deliveries(children, folders, run):
    """Each run's task delivered three times at once (a broker's redelivery, a double enqueue): one wins."""
    children.supervise()
    training_cluster(children, workers=3)
    request = TrainingParamsSerializer(data={**REQUEST, "epochs": 40, "checkpoint_every": 2})
    request.is_valid(raise_exception=True)
    operation_id = operation_create(
        operation_type="training", params=request.to_params(), actor="test", enqueue=False
    ).pk
    for _ in range(3):
        async_task(RUN_OPERATION_TASK, operation_id, task_name=operation_id)
    wait_for_checkpoint_after(operation_id)
    operation_cancel(operation_id=operation_id, actor="test")
    wait_for_status(operation_id, S.CANCELLED)
    wait_for(lambda: sum(outcomes(operation_id).values()) == 3, timeout=30, what="the three deliveries' results")
    assert outcomes(operation_id) == {"cancelled": 1, "not claimed": 2}

    resume(operation_id)  # the resume's own delivery, and two more
    for _ in range(2):
        async_task(RUN_OPERATION_TASK, operation_id, task_name=operation_id)
    completed = wait_until_completed(operation_id)
    wait_for(lambda: sum(outcomes(operation_id).values()) == 6, timeout=30, what="the six deliveries' results")
    assert outcomes(operation_id) == {"cancelled": 1, "completed": 1, "not claimed": 4}
    assert completed.attempt == 2
    assert_settled([operation_id])


@pytest.mark.scenario("a worker presumed dead comes back (fencing)")
@runs(1)
def test_a_worker_presumed_dead_comes_back_after_its_run_was_resumed_elsewhere(children, folders, run):
    """SIGSTOP freezes the worker (heartbeats included) until the sweep fails its run; the run is resumed on
    another worker; SIGCONT then wakes the first one in the middle of its old run, which must change nothing."""
    children.supervise()
    training_cluster(children)
    operation_id = start_training(epochs=60, checkpoint_every=1)
    frozen = executing_pid(operation_id)
    frozen_worker = Operation.objects.get(pk=operation_id).worker_id
    wait_for_checkpoint_after(operation_id)
    os.kill(frozen, signal.SIGSTOP)
    try:
        first_version = checkpoint_version(operation_id)
        next_run(operation_id, 1)  # presumed orphaned by the sweep (its cluster sees it alive), then resumed
        assert automatic(operation_id)[-2] == (S.PENDING_RECONCILIATION, S.FAILED,
                                               f"Worker {frozen_worker} became unavailable")
        assert executing_pid(operation_id) != frozen
        wait_for_checkpoint_after(operation_id, first_version)  # the second run saves before the first wakes
    finally:
        os.kill(frozen, signal.SIGCONT)
    # Woken, the first run is told to stop at its next heartbeat; its saves and its outcome are fenced off.
    wait_for(lambda: outcomes(operation_id).get("abandoned"), timeout=30, what="the first run to give up")
    completed = wait_until_completed(operation_id)
    assert completed.attempt == 2 and completed.worker.pid != frozen
    wait_for(lambda: sum(outcomes(operation_id).values()) == 2, timeout=30, what="both runs' results")
    assert outcomes(operation_id) == {"abandoned": 1, "completed": 1}

    JOBS["training"].assert_ends_as_straight(operation_id, folders, epochs=60, checkpoint_every=1)
