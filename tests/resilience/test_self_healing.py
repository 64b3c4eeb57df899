"""The restart policy on real processes: a rolling restart nobody notices, a crash loop stopped, a user's cancel
respected, max_restarts 0 as before, and two hosts on the Redis broker, one of which dies whole.

The scenarios that lose a worker or stop a cluster once (kill -9 at random moments, SIGTERM) are in
test_workers.py and end without a manual resume too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from operations.models import Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.restarts import restart_summary
from operations.services.lifecycle import operation_cancel
from tests.resilience.conftest import runs
from tests.resilience.fire import (
    assert_healed,
    assert_settled,
    executing_pid,
    kill,
    resume,
    wait_for_checkpoint_after,
    wait_for_status,
)
from tests.resilience.jobs import JOBS, slow_cluster, start_backtest, start_training, training_cluster
from tests.support.backtests import SLOW_SETTINGS
from tests.support.processes import ROOT, child_env, wait_for
from tests.training.cluster import automatic, resumed_by_hand, wait_until_completed

pytestmark = [pytest.mark.process, pytest.mark.resilience, pytest.mark.django_db(transaction=True)]

# A training whose every run fails at the same epoch with an error its type marks transient (the database gone):
# an app of the test's own patches the runner once the apps are ready.
CRASHING_APP = '''\
"""Test only: a training that loses the database at the validation of epoch CRASH_AT_EPOCH, every time."""
import os

from django.apps import AppConfig


class CrashInjection(AppConfig):
    name = "crash_injection"

    def ready(self):
        from django.db import OperationalError

        from training import runner

        evaluate, crash_at = runner.TrainingRunner._evaluate, int(os.environ["CRASH_AT_EPOCH"])

        def crashing(runner_self):
            if runner_self.epoch + 1 >= crash_at:
                raise OperationalError("server closed the connection unexpectedly (injected)")
            return evaluate(runner_self)

        runner.TrainingRunner._evaluate = crashing
'''
# A host whose training epochs take longer (a slower machine): its runs are still under way when it dies.
SLOW_TRAINING_APP = '''\
"""Test only: each training epoch sleeps SLOW_SECONDS_PER_EPOCH before its validation."""
import os
import time

from django.apps import AppConfig


class SlowTraining(AppConfig):
    name = "slow_training"

    def ready(self):
        from training import runner

        evaluate, per_epoch = runner.TrainingRunner._evaluate, float(os.environ["SLOW_SECONDS_PER_EPOCH"])

        def slowly(runner_self):
            time.sleep(per_epoch)
            return evaluate(runner_self)

        runner.TrainingRunner._evaluate = slowly
'''
CRASHING_SETTINGS = '''\
"""Test only: the settings with the crash injected (crash_injection.py beside this file)."""
from config.settings.base import *  # noqa: F401,F403

INSTALLED_APPS = [*INSTALLED_APPS, "crash_injection.CrashInjection"]  # noqa: F405
'''


@pytest.mark.scenario("rolling restart of two clusters")
@runs(1)
def test_a_rolling_restart_of_two_clusters_ends_every_run_completed_with_no_resume_by_hand(children, folders, run):
    """Three runs over two clusters; each cluster SIGTERMed and started again, one after the other, as a deploy
    does. Every run is cancelled by a shutdown at least once and resumed by the control loop on the other
    cluster; each ends as a straight run, none counted against max_restarts."""
    children.env["REQUEUE_AFTER_SECONDS"] = "5"  # a task a stopping cluster had taken is enqueued again soon
    children.supervise()
    first = slow_cluster(children, workers=3, SLOW_SECONDS_PER_BAR="100e-6")
    second = slow_cluster(children, workers=3, SLOW_SECONDS_PER_BAR="100e-6")
    requests = [("training", {"epochs": 100}), ("training", {"epochs": 100, "seed": 12}), ("backtest", {})]
    started = [(kind, overrides, JOBS[kind].start(**overrides)) for kind, overrides in requests]
    operation_ids = [operation_id for _kind, _overrides, operation_id in started]
    for operation_id in operation_ids:
        executing_pid(operation_id)
        wait_for_checkpoint_after(operation_id)

    for old in (first, second):
        old.signal(signal.SIGTERM)
        assert old.wait(timeout=40) == 0
        slow_cluster(children, workers=3, SLOW_SECONDS_PER_BAR="100e-6")

    straight = [JOBS[kind].start(**overrides) for kind, overrides, _operation_id in started]  # all at once
    for (kind, _overrides, operation_id), reference in zip(started, straight):
        completed = wait_until_completed(operation_id)
        JOBS[kind].assert_same(completed, wait_until_completed(reference), folders)
        assert_healed(operation_id, completed, lost=0)
        shutdowns = [change for change in automatic(operation_id) if change[:2] == (S.CANCELLED, S.RESUMING)]
        assert shutdowns, f"{operation_id} was never stopped by the deploy"
    assert_settled([*operation_ids, *straight])


@pytest.mark.scenario("a crash loop is stopped")
@runs(1)
def test_a_run_that_fails_the_same_way_after_every_resume_is_stopped_as_a_crash_loop(children, folders, tmp_path,
                                                                                     run):
    children.supervise()
    (tmp_path / "crashing_settings-settings").mkdir()
    (tmp_path / "crashing_settings-settings" / "crash_injection.py").write_text(CRASHING_APP)
    children.cluster_with_settings("crashing_settings", CRASHING_SETTINGS, workers=1, CRASH_AT_EPOCH="5")
    operation_id = start_training(epochs=20, checkpoint_every=2)

    failed = wait_for(
        lambda: Operation.objects.filter(pk=operation_id, status=S.FAILED, restart_due_at__isnull=True).first(),
        timeout=60, interval=0.05, what="the crash loop to be stopped")

    assert failed.end_cause == "crash_loop"
    assert failed.error_message.startswith(
        "Crash loop at epoch 4: it failed again from that checkpoint after 2 automatic resumes in a row without "
        "progress, and is not resumed again.")
    assert "OperationalError: server closed the connection unexpectedly (injected)" in failed.error_message
    assert (failed.attempt, failed.restarts, failed.max_restarts) == (3, 2, 3)  # stopped before the third
    assert restart_summary(failed)["state"] == "crash_loop"
    time.sleep(2)  # several passes of the control loop: nothing more happens
    assert Operation.objects.get(pk=operation_id).version == failed.version
    assert not resumed_by_hand(operation_id)
    assert_settled([operation_id])


@pytest.mark.scenario("a user's cancel is never resumed")
@runs(1)
def test_a_cancel_by_a_user_is_never_resumed_automatically(children, folders, run):
    """A run cancelled while it runs; and one whose automatic resume was planned (its worker killed, a long
    backoff), cancelled before it was due: neither comes back."""
    children.supervise()
    training_cluster(children, RESTART_BACKOFF_SECONDS="30")
    running, lost = start_training(epochs=60), start_training(epochs=60, seed=12)
    for operation_id in (running, lost):
        executing_pid(operation_id)
        wait_for_checkpoint_after(operation_id)

    operation_cancel(operation_id=running, actor="user:alice")
    kill(executing_pid(lost))
    planned = wait_for(lambda: Operation.objects.filter(pk=lost, status=S.FAILED, restart_due_at__isnull=False)
                       .first(), timeout=30, what="the lost run's resume to be planned")
    assert restart_summary(planned)["text"].startswith("Automatic resume 1/3 due at")
    operation_cancel(operation_id=lost, actor="user:alice")

    time.sleep(3)  # six passes of the control loop
    for operation_id in (running, lost):
        operation = Operation.objects.get(pk=operation_id)
        assert (operation.status, operation.end_cause, operation.restart_due_at) == (S.CANCELLED, "cancelled", None)
        assert not [change for change in automatic(operation_id) if change[1] in (S.RESUMING, S.PENDING)]
    assert_settled([running, lost])


@pytest.mark.scenario("max_restarts 0 keeps the manual resume")
@runs(1)
def test_with_max_restarts_0_a_lost_worker_leaves_the_run_failed_until_resumed_by_hand(children, folders, run):
    children.supervise()
    training_cluster(children)
    operation_id = start_training(max_restarts=0)
    pid = executing_pid(operation_id)
    wait_for_checkpoint_after(operation_id)
    kill(pid)

    failed = wait_for_status(operation_id, S.FAILED, timeout=30)
    time.sleep(2)  # the control loop's passes leave it alone
    failed = Operation.objects.get(pk=operation_id)
    assert failed.status == S.FAILED and failed.restart_due_at is None
    assert failed.error_message == f"Worker {failed.worker_id} exited while running it (killed?)"
    assert restart_summary(failed)["text"] == "Automatic restarts are off for it (max_restarts 0)"
    assert_settled([operation_id])

    resume(operation_id)
    completed = JOBS["training"].assert_ends_as_straight(operation_id, folders, max_restarts=0)
    assert completed.attempt == 2 and resumed_by_hand(operation_id) == ["resilience"]


@pytest.mark.scenario("restart from the beginning without a checkpoint")
@runs(1)
def test_a_backtest_without_any_checkpoint_is_restarted_from_its_first_bar(children, folders, run):
    """No periodic checkpoints (checkpoint_every 0): killed mid-run it has nothing to resume from, and a backtest
    may start over; it does, as the same operation, and ends trade for trade as a straight run."""
    children.supervise()
    slow_cluster(children)
    operation_id = start_backtest(checkpoint_every=0)
    pid = executing_pid(operation_id)
    wait_for(lambda: Operation.objects.get(pk=operation_id).progress_current > 20_000, timeout=60, interval=0.02,
             what="the backtest under way")
    kill(pid)

    completed = JOBS["backtest"].assert_ends_as_straight(operation_id, folders, checkpoint_every=0)
    assert_healed(operation_id, completed, lost=1)
    assert automatic(operation_id)[-1] == (S.FAILED, S.PENDING, "Automatic restart 1/3 after a lost worker, from "
                                                                "the beginning: it has no checkpoint")


# --- two hosts on the Redis broker


def redis_unreachable() -> str | None:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"no Redis server on 127.0.0.1:6379 ({exc})"
    return None


class Hosts:
    """Two "hosts" (clusters with their own host names and worker state folders) and a control loop, on one
    database and one checkpoint folder, with the Redis broker (a queue of the test's own)."""

    def __init__(self, children, folders: dict[str, Path], tmp_path: Path) -> None:
        self.children = children
        self.queue = f"hosts-{uuid.uuid4().hex[:8]}"
        children.env.update(Q_BROKER="redis", REDIS_URL="redis://127.0.0.1:6379/0", Q_CLUSTER_NAME=self.queue,
                            REQUEUE_AFTER_SECONDS="5", SLOW_SECONDS_PER_BAR="40e-6")
        self.folders, self.tmp_path = folders, tmp_path

    def host(self, name: str, workers: int = 2, **overrides: str):
        return slow_cluster(self.children, workers=workers, WORKER_HOST=name,
                            WORKER_STATE_DIR=str(self.tmp_path / f"{name}-state"), **overrides)

    def slow_host(self, name: str, workers: int = 2):
        """A host four times slower than the others at backtests, and at about half a second a training epoch."""
        folder = self.tmp_path / "slow_host_settings-settings"
        folder.mkdir(exist_ok=True)
        (folder / "slow_training.py").write_text(SLOW_TRAINING_APP)
        source = SLOW_SETTINGS + 'INSTALLED_APPS = [*INSTALLED_APPS, "slow_training.SlowTraining"]  # noqa: F405\n'
        return self.children.cluster_with_settings(
            "slow_host_settings", source, workers=workers, WORKER_HOST=name,
            WORKER_STATE_DIR=str(self.tmp_path / f"{name}-state"), SLOW_SECONDS_PER_BAR="160e-6",
            SLOW_SECONDS_PER_EPOCH="0.5")

    def manage(self, *args: str) -> str:
        """A command run with the hosts' environment (it enqueues to their Redis queue)."""
        completed = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT,
                                   env=child_env(**self.children.env), capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, f"manage.py {' '.join(args)}:\n{completed.stdout}\n{completed.stderr}"
        return completed.stdout

    def start_training(self, **request) -> str:
        body = json.loads(self.manage(
            "train", "--symbol", "SYN", "--timeframe", "1h", "--epochs", str(request.get("epochs", 60)),
            "--batch-size", "8", "--hidden-sizes", "32,16", "--learning-rate", "0.003", "--seed", "11",
            "--checkpoint-every", "2", "--max-restarts", "3", "--json"))
        return body["operation_id"]

    def start_backtest(self) -> str:
        body = json.loads(self.manage(
            "backtest", "--symbol", "LONG", "--timeframe", "1h", "--strategy", "sma_cross", "--param", "fast=10",
            "--param", "slow=40", "--param", "allow_short=true", "--checkpoint-every", "20000", "--max-restarts",
            "3", "--json"))
        return body["operation_id"]

    def running_on(self, operation_id: str, host: str) -> bool:
        operation = Operation.objects.select_related("worker").get(pk=operation_id)
        return operation.status == S.RUNNING and operation.worker is not None and operation.worker.host == host


@pytest.mark.scenario("two hosts, one killed whole (Redis broker)")
@runs(1)
def test_a_host_killed_whole_has_its_runs_finished_by_the_other_host(children, folders, tmp_path, run):
    """kill -9 of every process of host-a (its process group) while it runs a training and a backtest: the sweep
    finds them silent, the restart policy resumes them, and host-b finishes them, tensor for tensor and trade
    for trade as straight runs, with nobody's help."""
    if reason := redis_unreachable():
        pytest.skip(reason)
    hosts = Hosts(children, folders, tmp_path)
    children.supervise()
    # host-a is slower than host-b: its runs must still be under way when it dies, however long host-b takes to
    # start on a loaded machine.
    host_a = hosts.slow_host("host-a")
    training, backtest = hosts.start_training(), hosts.start_backtest()
    for operation_id in (training, backtest):
        wait_for(lambda: hosts.running_on(operation_id, "host-a"), timeout=60, interval=0.05,
                 what=f"{operation_id} to run on host-a")
        wait_for_checkpoint_after(operation_id)
    hosts.host("host-b")
    wait_for(lambda: Worker.objects.filter(host="host-b", status=WorkerStatus.IDLE).count() == 2, timeout=30,
             what="host-b's two idle workers")
    attempts = {operation_id: Operation.objects.get(pk=operation_id).attempt for operation_id in (training, backtest)}
    for operation_id in (training, backtest):
        assert hosts.running_on(operation_id, "host-a"), f"{operation_id} ended before host-a was killed"

    killed_at = time.monotonic()
    os.killpg(host_a.process.pid, signal.SIGKILL)
    host_a.process.wait(timeout=10)
    training_again = {}
    for operation_id in (training, backtest):
        wait_for(lambda: hosts.running_on(operation_id, "host-b")
                 or Operation.objects.get(pk=operation_id).status == S.COMPLETED, timeout=60, interval=0.02,
                 what=f"{operation_id} to run on host-b")
        training_again[operation_id] = time.monotonic() - killed_at
    print(f"from kill -9 of host-a to running again on host-b: {training_again}")

    straight_training = hosts.start_training()
    straight_backtest = hosts.start_backtest()
    JOBS["training"].assert_same(wait_until_completed(training), wait_until_completed(straight_training), folders)
    JOBS["backtest"].assert_same(wait_until_completed(backtest), wait_until_completed(straight_backtest), folders)
    for operation_id in (training, backtest):
        completed = Operation.objects.select_related("worker").get(pk=operation_id)
        assert completed.worker.host == "host-b" and completed.attempt == attempts[operation_id] + 1
        assert_healed(operation_id, completed, lost=1)
        assert automatic(operation_id)[-2][2] == f"Worker {host_a_worker(operation_id)} became unavailable"
    assert Worker.objects.filter(host="host-a").exclude(status=WorkerStatus.UNAVAILABLE).count() == 0
    assert_settled([training, backtest, straight_training, straight_backtest])


def host_a_worker(operation_id: str) -> str:
    """The worker that ran its first run (the one killed): the claim of attempt 1 names it."""
    claim = OperationEvent.objects.filter(operation_id=operation_id, to_status=S.RUNNING).order_by("at", "id").first()
    return claim.actor.removeprefix("worker:")
