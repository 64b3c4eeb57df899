from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from operations import registry
from tests.factories import OperationFactory, RunningOperationFactory, StaffFactory, UserFactory, WorkerFactory, WorkerUserFactory


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return StaffFactory()


@pytest.fixture
def worker_account(db):
    return WorkerUserFactory()


def token_client(account) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=account)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user_client(user) -> APIClient:
    return token_client(user)


@pytest.fixture
def staff_client(staff) -> APIClient:
    return token_client(staff)


@pytest.fixture
def worker_client(worker_account) -> APIClient:
    return token_client(worker_account)


@pytest.fixture
def operation_factory(db):
    return OperationFactory


@pytest.fixture
def running_operation_factory(db):
    return RunningOperationFactory


@pytest.fixture
def worker_factory(db):
    return WorkerFactory


@pytest.fixture
def training_executor():
    """Register a real executor for `training` (a no-op task): enqueues land in django-q2's ORM queue."""
    registry.register_executor("training", "tests.tasks.noop")
    yield
    registry.unregister_executor("training")


def queued_operation_ids() -> list[str]:
    """The operation ids waiting in django-q2's ORM broker queue, oldest first."""
    from django_q.models import OrmQ

    return [message.task["args"][0] for message in OrmQ.objects.order_by("id")]


@pytest.fixture
def checkpoint_dir(tmp_path, settings):
    """A checkpoint storage of the test's own, in a temporary folder."""
    folder = tmp_path / "checkpoints"
    settings.CHECKPOINT_DIR = folder
    settings.STORAGES = {
        **settings.STORAGES,
        "checkpoints": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder
