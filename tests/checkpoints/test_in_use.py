"""A checkpoint that a resume is about to load cannot be deleted by hand (it would start over)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from operations.models import OperationStatus as S

pytestmark = pytest.mark.django_db


@pytest.fixture
def resuming(operation_factory, staff, checkpoint_dir):
    operation = operation_factory(status=S.RESUMING, owner=staff)
    assert checkpoint_save(
        operation_id=operation.pk, checkpoint_type="cancellation", state={"epoch": 4}, artifacts={"model.pt": b"w"}
    ).saved
    return operation


def test_api_refuses_with_409(staff_client, resuming):
    response = staff_client.delete(f"/api/v1/checkpoints/{resuming.pk}/")
    assert response.status_code == 409
    assert response.json()["code"] == "CHECKPOINT_IN_USE"
    assert Checkpoint.objects.filter(pk=resuming.pk).exists()


def test_cli_refuses(resuming):
    with pytest.raises(CommandError, match="CHECKPOINT_IN_USE"):
        call_command("checkpoints", "delete", resuming.pk, "--force", stdout=StringIO(), stderr=StringIO())
    assert Checkpoint.objects.filter(pk=resuming.pk).exists()


def test_deletable_once_no_longer_resuming(staff_client, resuming):
    resuming.__class__.objects.filter(pk=resuming.pk).update(status=S.CANCELLED)
    assert staff_client.delete(f"/api/v1/checkpoints/{resuming.pk}/").status_code == 204
    assert not Checkpoint.objects.filter(pk=resuming.pk).exists()
