"""Exactly one control loop acts at a time: the control loop's row as a lease (take, renew, expire, release),
`supervise` waiting as a standby, `reconcile` and `supervise --once` refused beside a live one, and two real
`supervise` processes, the first killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError
from django.db import OperationalError, connection

from operations.management.commands import reconcile
from operations.models import ControlLoop, ControlLoopLease, Operation, OperationEvent
from operations.models import OperationStatus as S
from operations.services.reconciliation import (
    BACKEND_RESTART_WITHOUT_CHECKPOINT,
    control_loop_holder,
    control_loop_release,
    control_loop_renew,
    control_loop_take,
)
from operations.services.workers import CurrentOperation, worker_heartbeat
from runtime.management.commands import supervise
from tests.support.commands import command_output as run
from tests.support.processes import ManagedProcess, child_env, wait_for
from tests.support.race import race


def take(pid: int, **options) -> ControlLoopLease:
    lease, holder = control_loop_take(host="control-host", pid=pid, **options)
    assert lease is not None, f"held by {holder}"
    return lease


def expire(lease: ControlLoopLease) -> None:
    """As if its holder had been killed WORKER_STALE_SECONDS ago."""
    ControlLoop.objects.filter(pk=1).update(lease_expires_at=lease.since - timedelta(seconds=1))


def expires_at() -> datetime | None:
    return ControlLoop.objects.values_list("lease_expires_at", flat=True).get(pk=1)


# --- the lease


@pytest.mark.django_db
def test_a_free_control_loop_is_taken_for_worker_stale_seconds(settings):
    settings.WORKER_STALE_SECONDS = 30

    lease = take(101)

    row = ControlLoop.objects.get(pk=1)
    assert (row.host, row.pid, row.started_at) == ("control-host", 101, lease.since)
    assert row.lease_expires_at == lease.expires_at == lease.since + timedelta(seconds=30)
    assert control_loop_holder() == lease


@pytest.mark.django_db
def test_a_held_control_loop_is_not_taken_and_its_holder_is_named():
    first = take(101)

    lease, holder = control_loop_take(host="other-host", pid=202)

    assert lease is None and holder == first
    assert ControlLoop.objects.values_list("host", "pid").get(pk=1) == ("control-host", 101)


@pytest.mark.django_db
def test_renewing_extends_the_claim_only_for_its_holder():
    lease = take(101)
    before = expires_at()

    assert control_loop_renew(lease)
    assert expires_at() > before
    impostor = ControlLoopLease(lease.host, lease.pid, lease.since + timedelta(microseconds=1))  # same pid, later
    assert not control_loop_renew(impostor)


@pytest.mark.django_db
def test_an_expired_claim_is_taken_and_its_old_holder_cannot_renew_it():
    killed = take(101)
    expire(killed)
    assert control_loop_holder() is None

    successor, holder = control_loop_take(host="other-host", pid=202)

    assert successor is not None and holder is None
    assert not control_loop_renew(killed)
    assert control_loop_holder() == successor


@pytest.mark.django_db
def test_an_expired_claim_nobody_took_is_renewed_by_its_holder():
    """A database outage longer than the claim: nobody else could take it either, the holder goes on."""
    lease = take(101)
    expire(lease)

    assert control_loop_renew(lease)
    assert control_loop_holder() == lease


@pytest.mark.django_db
def test_a_lapsed_claim_can_be_left_alone_and_a_released_one_still_taken():
    lease = take(101)
    expire(lease)

    assert control_loop_take(host="other-host", pid=202, expired=False) == (None, None)
    assert control_loop_renew(lease)
    control_loop_release(lease)
    assert take(202, expired=False).pid == 202


@pytest.mark.django_db
def test_a_released_claim_is_taken_at_once_and_cannot_be_renewed():
    first = take(101)

    assert control_loop_release(first)

    assert control_loop_holder() is None
    assert not control_loop_renew(first)
    assert take(202).pid == 202
    assert not control_loop_release(first)  # no longer its to give up
    assert control_loop_holder().pid == 202


@pytest.mark.django_db
def test_force_takes_a_held_claim_and_names_the_displaced_holder():
    first = take(101)

    lease, displaced = control_loop_take(host="other-host", pid=202, force=True)

    assert lease is not None and displaced == first
    assert not control_loop_renew(first)


@pytest.mark.django_db(transaction=True)
def test_of_many_processes_taking_it_at_once_exactly_one_wins():
    assert connection.vendor == "postgresql"
    outcomes = race(lambda index: control_loop_take(host=f"host-{index}", pid=1000 + index), 16)
    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)], outcomes

    winners = [lease for lease, _ in outcomes if lease is not None]
    assert len(winners) == 1
    assert all(holder == winners[0] for lease, holder in outcomes if lease is None)
    assert ControlLoop.objects.values_list("host", "pid").get(pk=1) == (winners[0].host, winners[0].pid)


# --- one-shot commands beside a live control loop


@pytest.fixture
def running_rows(running_operation_factory, operation_factory):
    """A worker's RUNNING operation and a RUNNING research session: what a startup reconciliation changes."""
    return (
        running_operation_factory(),
        operation_factory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING),
    )


def statuses(*operations: Operation) -> list[str]:
    return [Operation.objects.get(pk=operation.pk).status for operation in operations]


@pytest.mark.parametrize("command", [["reconcile"], ["supervise", "--once"]])
def test_reconciling_by_hand_beside_a_live_control_loop_is_refused_naming_it(running_rows, command):
    holder = take(4242)

    with pytest.raises(CommandError) as refused:
        run(*command)

    message = str(refused.value)
    assert "pid 4242 on control-host" in message and holder.since.isoformat(timespec="seconds") in message
    assert "--force" in message
    assert statuses(*running_rows) == [S.RUNNING, S.RUNNING]
    assert control_loop_holder() == holder


@pytest.mark.parametrize("command", [["reconcile"], ["supervise", "--once"]])
def test_forced_it_takes_the_control_loop_reconciles_and_gives_it_up(running_rows, command):
    holder = take(4242)

    run(*command, "--force")

    assert statuses(*running_rows) == [S.PENDING_RECONCILIATION, S.FAILED]
    assert not control_loop_renew(holder)  # a live one finds out at its next renewal, and stops
    assert control_loop_holder() is None


@pytest.mark.parametrize("command", [["reconcile"], ["supervise", "--once"]])
def test_with_no_control_loop_running_it_holds_it_while_it_reconciles(running_rows, command, monkeypatch):
    module = supervise if command[0] == "supervise" else reconcile
    real = module.reconcile_startup
    seen = []

    def watched():
        seen.append(control_loop_holder())
        return real()

    monkeypatch.setattr(module, "reconcile_startup", watched)

    run(*command)

    assert seen[0] is not None and seen[0].pid == os.getpid()
    assert statuses(*running_rows) == [S.PENDING_RECONCILIATION, S.FAILED]
    assert control_loop_holder() is None


@pytest.mark.django_db
def test_force_without_once_is_refused():
    with pytest.raises(CommandError, match="--force goes with --once"):
        run("supervise", "--force")


# --- the supervise loop's passes


def control_loop() -> supervise.Command:
    command = supervise.Command(stdout=StringIO(), stderr=StringIO())
    command.prepare()
    return command


def output(command: supervise.Command) -> str:
    return command.stdout._out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_standby_does_not_act_until_the_holder_releases_the_control_loop(running_rows, checkpoint_dir):
    holder = take(4242)
    standby = control_loop()

    for _ in range(3):
        assert standby.run_pass() is False

    assert statuses(*running_rows) == [S.RUNNING, S.RUNNING]
    assert not standby.reconciled
    assert output(standby).count("Standby: pid 4242 on control-host") == 1
    assert standby.sleep_seconds() <= 1.0

    control_loop_release(holder)
    standby.run_pass()

    assert standby.reconciled
    assert statuses(*running_rows) == [S.PENDING_RECONCILIATION, S.FAILED]
    assert control_loop_holder() == standby.lease and standby.lease.pid == os.getpid()
    assert "Taking over the control loop from pid 4242 on control-host" in output(standby)
    assert "Startup reconciliation" in output(standby)


@pytest.mark.django_db(transaction=True)
def test_a_standby_takes_over_once_the_claim_of_a_killed_holder_expires(running_rows, checkpoint_dir):
    killed = take(4242)
    standby = control_loop()
    standby.run_pass()
    assert not standby.reconciled

    expire(killed)
    standby.run_pass()

    assert standby.reconciled
    assert statuses(*running_rows) == [S.PENDING_RECONCILIATION, S.FAILED]


class DatabaseDown:
    """Every query of this thread's connection fails as if the server were gone, while installed."""

    def __init__(self) -> None:
        connection.execute_wrappers.append(self)

    def __call__(self, execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    def __enter__(self) -> DatabaseDown:
        return self

    def __exit__(self, *exc_info) -> None:
        connection.execute_wrappers.remove(self)


@pytest.mark.django_db(transaction=True)
def test_after_an_outage_a_standby_gives_the_holder_a_whole_claim_to_renew(running_rows, checkpoint_dir, settings):
    """The holder could not renew while the database was away: its lapsed claim is no sign that it died."""
    settings.WORKER_STALE_SECONDS = 30
    settings.ORPHAN_CHECK_INTERVAL_SECONDS = 0.01  # the failed pass's retry wait
    holder = take(4242)
    standby = control_loop()
    standby.run_pass()
    with DatabaseDown():
        assert standby.run_pass() is False
    expire(holder)  # the outage outlasted the claim

    standby.run_pass()

    assert standby.lease is None and not standby.reconciled
    assert control_loop_renew(holder)  # the holder is back, and keeps the control loop
    standby.patient_until = 0.0  # a whole claim later, the holder silent: it is gone
    expire(holder)
    standby.run_pass()
    assert standby.reconciled
    assert statuses(*running_rows) == [S.PENDING_RECONCILIATION, S.FAILED]


@pytest.mark.django_db(transaction=True)
def test_a_holder_whose_claim_was_taken_stops_without_acting(running_operation_factory, checkpoint_dir):
    command = control_loop()
    command.run_pass()
    assert command.lease is not None
    take(4242, force=True)
    operation = running_operation_factory()
    command.next_renewal_at = 0.0  # its renewal is due
    command.next_sweep_at = 0.0

    assert command.run_pass() is False

    assert command.stopping.is_set() and command.lease is None
    assert "Lost the control loop to pid 4242 on control-host" in command.lost
    assert Operation.objects.get(pk=operation.pk).status == S.RUNNING
    command.release_control_loop()
    assert control_loop_holder().pid == 4242  # not its to give up


@pytest.mark.django_db(transaction=True)
def test_the_holder_renews_its_claim_on_its_passes(settings, checkpoint_dir):
    settings.WORKER_STALE_SECONDS = 30
    command = control_loop()
    command.run_pass()
    first = expires_at()
    command.next_renewal_at = 0.0

    command.run_pass()

    assert expires_at() > first
    assert command.next_renewal_at - time.monotonic() == pytest.approx(10, abs=1)  # a third of the claim
    command.release_control_loop()
    assert control_loop_holder() is None


# --- two real supervise processes

STALE_SECONDS = 2.0
INTERVALS = {
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "WORKER_STALE_SECONDS": str(STALE_SECONDS),
    "ORPHAN_TIMEOUT_SECONDS": "60",
    "ORPHAN_CHECK_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "60",
}


class LiveWorker:
    """A worker beside the test, heart-beating its RUNNING operation."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat)
        self.thread.start()

    def beat(self) -> None:
        try:
            while not self.stop.wait(0.25):
                worker_heartbeat(
                    worker_id=self.operation.worker_id,
                    current_operation=CurrentOperation(self.operation.pk, self.operation.attempt),
                )
        finally:
            connection.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def reconciled_events(operation: Operation) -> int:
    return OperationEvent.objects.filter(operation_id=operation.pk, to_status=S.PENDING_RECONCILIATION).count()


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_a_second_supervise_waits_while_the_first_lives_and_takes_over_after_it_is_killed(
    tmp_path, running_operation_factory, operation_factory
):
    started: list[ManagedProcess] = []

    def start(ready: str) -> ManagedProcess:
        process = ManagedProcess(["supervise"], child_env(**INTERVALS), tmp_path / f"supervise-{len(started)}.log")
        started.append(process)
        wait_for(lambda: ready in process.output or process.process.poll() is not None, timeout=30,
                 what=f"supervise to print {ready!r}")
        assert process.process.poll() is None, process.output
        return process

    worker = None
    try:
        first = start("Startup reconciliation")
        # Started after the first one's reconciliation: only a second reconciliation would change them.
        operation = running_operation_factory()
        session = operation_factory(operation_type="agent_research", is_backend_local=True, status=S.RUNNING)
        worker = LiveWorker(operation)

        second = start(f"Standby: pid {first.process.pid} on ")
        time.sleep(3 * STALE_SECONDS)  # several renewals of the first, many polls of the second

        assert "Startup reconciliation" not in second.output
        assert statuses(operation, session) == [S.RUNNING, S.RUNNING]
        assert reconciled_events(operation) == 0

        os.killpg(first.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.process.wait(timeout=10)
        wait_for(lambda: "Startup reconciliation" in second.output, timeout=STALE_SECONDS + 10,
                 interval=0.05, what="the standby to take over")
        took = time.monotonic() - killed_at
        print(f"the standby took over {took:.2f}s after the kill (claim: {STALE_SECONDS:g}s, polled every 0.5s)")
        assert took <= STALE_SECONDS + 3  # the claim, a poll, and a loaded machine's slack

        failed = Operation.objects.get(pk=session.pk)
        assert (failed.status, failed.error_message) == (S.FAILED, BACKEND_RESTART_WITHOUT_CHECKPOINT)
        assert reconciled_events(operation) == 1
        wait_for(lambda: statuses(operation) == [S.RUNNING], timeout=5, what="the live worker's operation back")
        assert ControlLoop.objects.values_list("pid", flat=True).get(pk=1) == second.process.pid

        second.signal(signal.SIGTERM)  # a graceful stop gives the control loop up: the next one need not wait
        assert second.wait(timeout=10) == 0
        assert control_loop_holder() is None
        assert ControlLoop.objects.values_list("lease_expires_at", flat=True).get(pk=1) is None
        assert "Traceback" not in second.output
    finally:
        if worker is not None:
            worker.close()
        for process in started:
            process.stop()
