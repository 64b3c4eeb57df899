from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from operations import registry
from runtime.tasks import RUN_OPERATION_TASK
from tests.factories import (
    OperationFactory,
    RunningOperationFactory,
    StaffFactory,
    UserFactory,
    WorkerFactory,
    WorkerUserFactory,
)

# --- the session: process tests in one test process, and the resilience suite's table

def pytest_collection_modifyitems(items):
    """With pytest-xdist (`make test`: -n 2 --dist loadgroup) the tests that start real processes run in one
    test process, one after the other, as they would alone: their timings hold; the rest run beside them."""
    for item in items:
        if item.get_closest_marker("process"):
            item.add_marker(pytest.mark.xdist_group("processes"))


_scenario_runs: dict[str, list[bool]] = defaultdict(list)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    marker = item.get_closest_marker("scenario")  # a run of a resilience scenario (tests/resilience)
    if marker:
        report.user_properties.append(("scenario", marker.args[0]))  # travels to xdist's controller
    return report


def pytest_runtest_logreport(report):
    """One entry per scenario run: its call, or its setup when that failed (the run never started)."""
    scenario = dict(report.user_properties).get("scenario")
    if scenario and (report.when == "call" or (report.when == "setup" and report.failed)):
        _scenario_runs[scenario].append(report.failed)


def pytest_terminal_summary(terminalreporter):
    if not _scenario_runs:
        return
    width = max(len(name) for name in _scenario_runs)
    lines = [f"{'scenario':<{width}}  runs  failures", f"{'-' * width}  ----  --------"]
    lines += [f"{name:<{width}}  {len(outcomes):>4}  {sum(outcomes):>8}" for name, outcomes in _scenario_runs.items()]
    total = [outcome for outcomes in _scenario_runs.values() for outcome in outcomes]
    lines.append(f"{'all scenarios':<{width}}  {len(total):>4}  {sum(total):>8}")
    terminalreporter.write_sep("=", "resilience suite")
    for line in lines:
        terminalreporter.write_line(line)


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


@contextmanager
def replaced_executor(operation_type: str, task: str = RUN_OPERATION_TASK, runner: str | None = None):
    """Register an executor for the test, then put back whatever the apps had registered."""
    previous = registry.get_executor(operation_type)
    registry.register_executor(operation_type, task, runner=runner)
    try:
        yield
    finally:
        if previous is None:
            registry.unregister_executor(operation_type)
        else:
            registry.register_executor(previous.operation_type, previous.task, runner=previous.runner,
                                       transient_errors=previous.transient_errors,
                                       restart_from_scratch=previous.restart_from_scratch)


@pytest.fixture
def training_executor():
    """Register a real executor for `training` (a no-op task): enqueues land in django-q2's ORM queue."""
    with replaced_executor("training", "tests.tasks.noop"):
        yield


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


@pytest.fixture
def admin_user(db):
    return StaffFactory(is_superuser=True)


@pytest.fixture
def admin_client(admin_user) -> Client:
    """The Django test client, logged in to the admin as a superuser."""
    client = Client()
    assert client.login(username=admin_user.username, password="secret-pass")
    return client


@pytest.fixture
def children(tmp_path, folders):
    """Real `qcluster` and `supervise` processes of the test (tests/training/cluster.py), all stopped at the end;
    `folders` is the test module's own fixture (its data, models, results and checkpoint folders)."""
    from tests.training.cluster import Children

    started = Children(tmp_path, folders)
    yield started
    started.stop_all()


@pytest.fixture
def short_intervals(settings):
    """The reconciliation intervals of the sweep tests: seconds, not minutes."""
    settings.HEARTBEAT_INTERVAL_SECONDS = 1
    settings.WORKER_STALE_SECONDS = 3
    settings.ORPHAN_TIMEOUT_SECONDS = 6
    settings.REQUEUE_AFTER_SECONDS = 10
    settings.ORPHAN_CHECK_INTERVAL_SECONDS = 0.01
    return settings


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server of the test module's own (tests/support/postgres.py), to stop and start at will."""
    from tests.support.postgres import ThrowawayPostgres

    postgres = ThrowawayPostgres()
    postgres.start()
    yield postgres
    postgres.destroy()
