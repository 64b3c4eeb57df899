"""Starting research sessions (API, command line), listing assessments (API, admin)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.admin.utils import quote
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from agents.design import assess, propose
from agents.models import Assessment
from agents.services import assessment_record
from marketdata.series import generate_bars, write_series
from operations.models import Operation
from operations.models import OperationStatus as S
from tests.conftest import queued_operation_ids

URL = "/api/v1/agents/sessions/"
THRESHOLDS = {"min_sharpe": 0.5, "max_drawdown": 0.3, "min_trades": 10, "beat_buy_and_hold": True}
METRICS = {"total_return": 0.25, "buy_and_hold_return": 0.10, "sharpe": 1.2, "max_drawdown": 0.12,
           "number_of_trades": 40}


@pytest.fixture
def market(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    write_series(generate_bars(bars=800, timeframe="1h", seed=5), "SYN", "1h")


@pytest.mark.django_db
def test_post_records_a_backend_local_session_owned_by_the_user_and_enqueues_nothing(
        market, user, user_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(URL, {}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["operation_type"], body["status"], body["owner"]) == ("agent_research", "PENDING", user.username)
    assert body["params"] == {"symbol": "SYN", "timeframe": "1h", "start": None, "end": None, "seed": 0,
                              "thresholds": THRESHOLDS}  # the only series there is
    operation = Operation.objects.get(pk=body["operation_id"])
    assert operation.is_backend_local and operation.status == S.PENDING
    assert queued_operation_ids() == []  # supervise runs it, not a worker


@pytest.mark.django_db
def test_post_stores_the_values_given(market, user_client):
    request = {"symbol": "SYN", "timeframe": "1h", "seed": 12, "thresholds": {"min_sharpe": 1.0, "min_trades": 3}}

    response = user_client.post(URL, request, format="json")

    assert response.status_code == 201, response.content
    assert Operation.objects.get(pk=response.json()["operation_id"]).params["thresholds"] == {
        **THRESHOLDS, "min_sharpe": 1.0, "min_trades": 3}


BAD_BODIES = [
    ({"seed": -1}, "seed"),
    ({"seed": "x"}, "seed"),
    ({"symbol": "SYN"}, "timeframe"),
    ({"symbol": "NODATA", "timeframe": "1h"}, "symbol"),
    ({"thresholds": {"max_drawdown": 2}}, "thresholds.max_drawdown"),
    ({"thresholds": {"min_trades": "many"}}, "thresholds.min_trades"),
    ({"start": "2015-02-01", "end": "2015-01-01"}, "end"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[field for _, field in BAD_BODIES])
def test_a_bad_body_is_a_400_naming_the_field_and_creates_nothing(market, user_client, body, field):
    response = user_client.post(URL, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert response.json()["detail"].startswith(f"Invalid value for field '{field}':"), response.json()["detail"]
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_with_several_series_the_symbol_must_be_chosen(market, user_client):
    write_series(generate_bars(bars=300, timeframe="1d", seed=5), "SYN", "1d")

    response = user_client.post(URL, {}, format="json")

    assert response.status_code == 400
    assert "2 series are there (SYN 1d, SYN 1h): choose one with symbol and timeframe" in response.json()["detail"]


@pytest.mark.django_db
def test_anonymous_is_refused(market, anonymous_client):
    assert anonymous_client.post(URL, {}, format="json").status_code in (401, 403)
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_agent_start_prints_the_new_id_and_with_json_the_body(market):
    out = StringIO()
    call_command("agent", "start", "--seed", "5", stdout=out)
    operation = Operation.objects.get(pk=out.getvalue().strip())
    assert operation.operation_type == "agent_research" and operation.params["seed"] == 5

    out = StringIO()
    call_command("agent", "start", "--json", stdout=out)
    body = json.loads(out.getvalue())
    assert body["operation_type"] == "agent_research" and body["status"] == "PENDING"


@pytest.mark.django_db
def test_agent_start_names_a_bad_option(market):
    with pytest.raises(CommandError, match="--seed: "):
        call_command("agent", "start", "--seed", "minus one")
    assert not Operation.objects.exists()


@pytest.mark.django_db
def test_assessments_are_listed_newest_first_to_their_owner_and_to_staff(operation_factory, user, user_client,
                                                                         staff_client):
    mine = operation_factory(operation_type="agent_research", is_backend_local=True, owner=user)
    other = operation_factory(operation_type="agent_research", is_backend_local=True)
    for session, seed in ((mine, 1), (other, 2)):
        assessment_record(session=session, configuration=propose(seed=seed, assessed=[]), metrics=METRICS,
                          verdict=assess(METRICS))

    own = user_client.get("/api/v1/agents/assessments/").json()
    every = staff_client.get("/api/v1/agents/assessments/").json()

    assert [row["session_id"] for row in own["results"]] == [mine.pk]
    assert [row["session_id"] for row in every["results"]] == [other.pk, mine.pk]
    row = own["results"][0]
    assert row["verdict"] == "accepted" and row["reasons"][0] == "passed: Sharpe 1.20 ≥ 0.5"
    assert row["configuration"] == Assessment.objects.get(session=mine).configuration


@pytest.mark.django_db
def test_the_admin_lists_assessments_and_shows_one(operation_factory, admin_client):
    session = operation_factory(operation_type="agent_research", is_backend_local=True)
    assessment_record(session=session, configuration=propose(seed=0, assessed=[]), metrics=METRICS,
                      verdict=assess(METRICS))

    listing = admin_client.get("/admin/agents/assessment/")
    # quote(): the admin unquotes ids in its URLs ("_22", "_40"... of an operation id would decode to '"', '@')
    page = admin_client.get(reverse("admin:agents_assessment_change", args=[quote(session.pk)]))

    assert listing.status_code == 200 and session.pk in listing.content.decode()
    assert page.status_code == 200
    assert "passed: total return +25.0% &gt; buy-and-hold +10.0%" in page.content.decode()


@pytest.mark.django_db
def test_a_session_admin_page_shows_its_phase_children_and_assessment(operation_factory, admin_client):
    from checkpoints.services import checkpoint_save

    session = operation_factory(operation_type="agent_research", is_backend_local=True)
    configuration = propose(seed=0, assessed=[])
    child = operation_factory(operation_type="training", parent=session)
    assert checkpoint_save(operation_id=session.pk, checkpoint_type="periodic", artifacts={},
                           state={"phase": "TRAINING", "configuration": configuration,
                                  "children": {"training": child.pk}}).saved
    url = reverse("admin:operations_operation_change", args=[quote(session.pk)])

    running = admin_client.get(url).content.decode()

    assert "Research session: TRAINING" in running
    assert reverse("admin:operations_operation_change", args=[quote(child.pk)]) in running
    assert f"<th>epochs</th><td>{configuration['epochs']}</td>" in running
    assessment_record(session=session, configuration=configuration, metrics=METRICS, verdict=assess(METRICS))
    done = admin_client.get(url).content.decode()
    assert "Assessment: accepted" in done and "passed: 40 trades ≥ 10" in done
