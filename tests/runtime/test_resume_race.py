"""Fifty users press "resume" at once over real HTTP: exactly one wins."""

from __future__ import annotations

from collections import Counter

import pytest
from rest_framework.authtoken.models import Token

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory
from tests.support.race import race_posts

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

REQUESTS = 50


def test_fifty_concurrent_resumes_one_wins(live_server, user, checkpoint_dir, training_executor):
    operation = OperationFactory(owner=user, status=S.CANCELLED, progress_percent=30.0)
    assert checkpoint_save(
        operation_id=operation.pk,
        checkpoint_type="cancellation",
        state={"epoch": 12},
        artifacts={"model.pt": b"weights" * 1000},
    ).saved
    token = Token.objects.create(user=user).key
    url = f"{live_server.url}/api/v1/operations/{operation.pk}/resume/"
    replies = race_posts(url, token, REQUESTS)
    statuses = Counter(status for status, _body in replies)
    assert statuses == {202: 1, 409: REQUESTS - 1}, statuses
    [winner] = [body for status, body in replies if status == 202]
    assert winner["operation_id"] == operation.pk
    assert winner["status"] == "RESUMING"
    assert winner["resumed_from"]["epoch"] == 12
    losers = {body["code"] for status, body in replies if status == 409}
    assert losers <= {"RESUME_CONFLICT", "OPERATION_NOT_RESUMABLE"}

    assert Operation.objects.get(pk=operation.pk).status == S.RESUMING
    assert OperationEvent.objects.filter(operation_id=operation.pk, to_status=S.RESUMING).count() == 1
    assert queued_operation_ids() == [operation.pk]
    assert Checkpoint.objects.filter(operation_id=operation.pk).exists()
