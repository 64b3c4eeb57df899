"""Limits: what one request, one user, one client address or one worker report may ask of the deployment."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from operations.api.serializers import MAX_REPORTS
from operations.models import Operation
from operations.models import OperationStatus as S
from runtime.management.commands import supervise
from tests.conftest import token_client
from tests.factories import OperationFactory
from tests.support.race import race
from tests.training.conftest import folders  # noqa: F401  (the fixture: market data and folders of the test's own)
from training.features import FeatureSpec
from training.model import DirectionClassifier
from training.services import training_start
from training.sizes import parameter_count

TRAINING = "/api/v1/training/"
REQUEST = {"symbol": "SYN", "timeframe": "1h", "epochs": 2}


@pytest.fixture(autouse=True)
def fresh_counts():
    cache.clear()  # the throttles' counts
    yield
    cache.clear()


# --- one request: a network a worker can train

@pytest.mark.parametrize("hidden_sizes", [[1], [256, 128], [64, 64, 64, 7]])
def test_the_parameter_count_is_the_networks(hidden_sizes):
    inputs = FeatureSpec().count
    model = DirectionClassifier(inputs, hidden_sizes)

    assert parameter_count(inputs, hidden_sizes) == sum(weights.numel() for weights in model.parameters())


@pytest.mark.django_db
def test_an_oversized_network_is_refused_naming_the_field(folders, user):  # noqa: F811
    response = token_client(user).post(TRAINING, {**REQUEST, "hidden_sizes": [65_536] * 16}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Invalid value for field 'hidden_sizes': This network has ")
    assert "TRAINING_MAX_PARAMETERS" in response.json()["detail"]
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_a_batch_too_large_for_the_memory_is_refused_naming_the_batch_size(folders, user):  # noqa: F811
    response = token_client(user).post(TRAINING, {**REQUEST, "batch_size": 1_000_000}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Invalid value for field 'batch_size': Training this network")
    assert "TRAINING_MAX_MEMORY_MB" in response.json()["detail"]
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_the_bounds_are_in_the_schema(user):
    schema = token_client(user).get("/api/v1/schema/", {"format": "json"}).json()
    fields = schema["components"]["schemas"]["TrainingParamsRequest"]["properties"]

    assert "TRAINING_MAX_PARAMETERS" in fields["hidden_sizes"]["description"]
    assert "TRAINING_MAX_MEMORY_MB" in fields["batch_size"]["description"]
    assert fields["epochs"]["maximum"] == 100_000 and fields["hidden_sizes"]["maxItems"] == 16


@pytest.mark.django_db
def test_an_oversized_body_is_a_json_error(user):
    response = token_client(user).post(TRAINING, b'{"symbol": "' + b"A" * 3_000_000 + b'"}',
                                       content_type="application/json")

    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "REQUEST_TOO_LARGE"
    assert not Operation.objects.exists()


# --- one user: active operations

@pytest.mark.django_db
def test_a_user_at_the_cap_is_refused_until_one_ends(settings, folders, user, other_user,  # noqa: F811
                                                     django_capture_on_commit_callbacks):
    settings.MAX_ACTIVE_OPERATIONS_PER_USER = 2
    client = token_client(user)
    with django_capture_on_commit_callbacks(execute=False):
        created = [client.post(TRAINING, REQUEST, format="json") for _ in range(2)]
        refused = client.post(TRAINING, REQUEST, format="json")
        others = token_client(other_user).post(TRAINING, REQUEST, format="json")

    assert [response.status_code for response in created] == [201, 201] and others.status_code == 201
    assert refused.status_code == 409
    assert refused.json()["code"] == "TOO_MANY_ACTIVE_OPERATIONS" and "MAX_ACTIVE_OPERATIONS_PER_USER" in \
        refused.json()["detail"]
    assert Operation.objects.filter(owner=user).count() == 2

    Operation.objects.filter(pk=created[0].json()["operation_id"]).update(status=S.CANCELLED)
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(TRAINING, REQUEST, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_racing_submissions_stop_exactly_at_the_cap(settings, folders, user):  # noqa: F811
    settings.MAX_ACTIVE_OPERATIONS_PER_USER = 3
    OperationFactory(owner=user, status=S.COMPLETED)  # ended: not counted

    outcomes = race(lambda _: training_start(data=dict(REQUEST), actor="test", owner=user).pk, threads=12)

    created = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert len(created) == 3, outcomes
    assert {type(outcome).__name__ for outcome in outcomes if not isinstance(outcome, str)} == {
        "TooManyActiveOperations"}
    assert Operation.objects.filter(owner=user).exclude(status=S.COMPLETED).count() == 3


# --- one client: request rates

@pytest.mark.django_db
def test_submissions_are_throttled_per_user(settings, folders, user, other_user,  # noqa: F811
                                            django_capture_on_commit_callbacks):
    settings.API_RATES = {**settings.API_RATES, "submit": "3/minute"}
    client = token_client(user)
    with django_capture_on_commit_callbacks(execute=False):
        answers = [client.post(TRAINING, REQUEST, format="json") for _ in range(4)]
        others = token_client(other_user).post(TRAINING, REQUEST, format="json")

    assert [response.status_code for response in answers] == [201, 201, 201, 429]
    assert answers[-1].json()["code"] == "THROTTLED" and int(answers[-1]["Retry-After"]) > 0
    assert others.status_code == 201
    assert client.get("/api/v1/operations/").status_code == 200  # reading is not a submission
    assert Operation.objects.filter(owner=user).count() == 3


@pytest.mark.django_db
def test_every_request_of_a_user_is_throttled_and_anonymous_ones_per_address(settings, user):
    settings.API_RATES = {**settings.API_RATES, "user": "2/minute", "anon": "1/minute"}
    client = token_client(user)

    assert [client.get("/api/v1/operations/").status_code for _ in range(3)] == [200, 200, 429]
    # Anonymous requests are counted where they are allowed at all (elsewhere a 401 comes first).
    anonymous = [Client().get("/api/v1/health/", REMOTE_ADDR="10.0.0.9").status_code for _ in range(2)]
    assert anonymous == [200, 429]
    assert Client().get("/api/v1/health/", REMOTE_ADDR="10.0.0.10").status_code == 200  # another address


@pytest.mark.django_db
def test_admin_logins_are_throttled_per_address(settings, user):
    settings.API_RATES = {**settings.API_RATES, "login": "2/minute"}
    login = reverse("admin:login")
    attempts = [Client().post(login, {"username": user.username, "password": "wrong"}) for _ in range(3)]

    assert [response.status_code for response in attempts] == [200, 200, 429]
    assert "Too many login attempts" in attempts[-1].content.decode() and attempts[-1]["Retry-After"]
    assert Client().get(login).status_code == 200  # the page itself is not an attempt


# --- one worker report

@pytest.mark.django_db
def test_a_registration_reports_a_bounded_number_of_outcomes(worker_client):
    report = {"operation_id": "op_training_20261204_101500_0badc0de", "status": "COMPLETED", "attempt": 1}

    response = worker_client.post("/api/v1/workers/register/",
                                  {"worker_id": "h:resilient:1", "completed_operations": [report] * (MAX_REPORTS + 1)},
                                  format="json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Invalid value for field 'completed_operations':")


# --- the control loop: research sessions in a bounded pool

@pytest.mark.django_db
def test_supervise_runs_at_most_its_pool_of_sessions_at_once(settings, monkeypatch):
    settings.SUPERVISE_MAX_SESSIONS = 2
    released, started = threading.Event(), []
    monkeypatch.setattr(supervise, "_run_backend_local", lambda operation_id: (started.append(operation_id),
                                                                               released.wait(10)))
    first = timezone.now()
    waiting = [OperationFactory(operation_type="agent_research", is_backend_local=True, status=S.PENDING,
                                created_at=first + timedelta(seconds=index)).pk for index in range(5)]
    loop = supervise.Command()
    loop.prepare()
    loop.reconciled = True

    loop.run_sessions()
    loop.run_sessions()  # nothing new while the pool is full
    assert sorted(loop.sessions) == sorted(waiting[:2]) and len(started) == 2

    released.set()
    for thread in list(loop.sessions.values()):
        thread.join(10)
    Operation.objects.filter(pk__in=waiting[:2]).update(status=S.COMPLETED)  # what their runs would have done
    loop.run_sessions()
    assert sorted(loop.sessions) == sorted(waiting[2:4])  # the next two, oldest first
    for thread in list(loop.sessions.values()):
        thread.join(10)
