"""The control plane under fire: kill -9 of `supervise`, and fifty users resuming one operation at once."""

from __future__ import annotations

from collections import Counter

import pytest
from rest_framework.authtoken.models import Token

from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_cancel
from tests.factories import StaffFactory
from tests.resilience.conftest import runs
from tests.resilience.fire import (
    assert_healed,
    assert_settled,
    checkpoint_version,
    executing_pid,
    kill,
    pause,
    seeded,
    wait_for_checkpoint_after,
    wait_for_status,
)
from tests.resilience.jobs import JOBS, start_training, training_cluster
from tests.support.race import race_posts
from tests.training.cluster import ORPHAN_TIMEOUT_SECONDS, wait_until_completed

pytestmark = [pytest.mark.process, pytest.mark.resilience, pytest.mark.django_db(transaction=True)]

RESUMES = 50


@pytest.mark.scenario("kill -9 of supervise")
@runs(1)
def test_kill_supervise(children, folders, request, run):
    """While `supervise` is dead the runs go on; a worker that dies meanwhile is found by the next one."""
    rng = seeded(request)
    supervise = children.supervise()
    training_cluster(children)
    survivor, victim = start_training(), start_training()
    executing_pid(survivor)
    victim_pid = executing_pid(victim)
    wait_for_checkpoint_after(victim)
    pause(rng, 0, 1.0)
    kill(supervise.process.pid)
    supervise.wait(timeout=10)

    pause(rng, 0, 1.0)
    kill(victim_pid)  # nobody is watching
    pause(rng, ORPHAN_TIMEOUT_SECONDS, ORPHAN_TIMEOUT_SECONDS + 2)  # longer than the sweep would have waited
    assert Operation.objects.get(pk=survivor).status in (S.RUNNING, S.COMPLETED)

    # Its cluster saw the worker process gone and failed its run as a lost worker; the restart policy's resume
    # waits for a control loop.
    failed = Operation.objects.get(pk=victim)
    assert (failed.status, failed.error_message) == (S.FAILED, f"Worker {failed.worker_id} exited while running it "
                                                                "(killed?)")
    children.supervise()
    completed = JOBS["training"].assert_ends_as_straight(victim, folders)
    assert_healed(victim, completed, lost=1)
    JOBS["training"].assert_same(completed, wait_until_completed(survivor), folders)
    # The restart's reconciliation asks every run to show itself (PENDING_RECONCILIATION); the live one did.
    statuses = set(OperationEvent.objects.filter(operation_id=survivor).values_list("to_status", flat=True))
    assert S.FAILED not in statuses and Operation.objects.get(pk=survivor).attempt == 1, statuses
    assert_settled([survivor, victim])


@pytest.mark.scenario("50 concurrent resumes")
@runs(1)
def test_fifty_concurrent_resumes(children, folders, live_server, run):
    """A run cancelled on a real cluster; fifty resumes over HTTP at once; one wins, and its run completes."""
    children.supervise()
    training_cluster(children)
    operation_id = start_training()
    wait_for_checkpoint_after(operation_id)
    operation_cancel(operation_id=operation_id, actor="test")
    wait_for_status(operation_id, S.CANCELLED)
    assert checkpoint_version(operation_id)

    staff = StaffFactory(username="racer")  # an operator: sees and resumes everyone's operations
    token = Token.objects.create(user=staff).key
    url = f"{live_server.url}/api/v1/operations/{operation_id}/resume/"
    replies = race_posts(url, token, RESUMES)
    assert Counter(status for status, _body in replies) == {202: 1, 409: RESUMES - 1}
    assert {body["code"] for status, body in replies if status == 409} <= {"RESUME_CONFLICT", "OPERATION_NOT_RESUMABLE"}

    completed = wait_until_completed(operation_id)
    assert completed.attempt == 2
    assert OperationEvent.objects.filter(operation_id=operation_id, to_status=S.RESUMING).count() == 1
    JOBS["training"].assert_ends_as_straight(operation_id, folders)
