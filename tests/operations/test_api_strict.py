"""A strict API: a field it does not know is a 400 naming it (nothing is created, nothing runs with defaults);
a request and its operation's `params` use the same names, so a response's params post back as they are; a
date range with no bars, or too few for what the request asks, is a 400 at submit naming the field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from django.conf import settings

from marketdata import series
from marketdata.series import bars_between, generate_bars, times_path, write_series
from operations.models import Operation, OperationEvent
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory, WorkerFactory
from training.features import FeatureSpec

pytestmark = pytest.mark.django_db

TRAINING, BACKTESTS, SESSIONS = "/api/v1/training/", "/api/v1/backtests/", "/api/v1/agents/sessions/"
BARS = 1000  # hourly from 2015-01-01 00:00 to 2015-02-11 15:00


@pytest.fixture
def market(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.MODELS_DIR = tmp_path / "models"
    write_series(generate_bars(bars=BARS, timeframe="1h", seed=5), "SYN", "1h")


def post(client, url: str, body: dict, capture):
    with capture(execute=True):
        return client.post(url, body, format="json")


def assert_refused(response, field: str, *phrases: str, operations_before: int = 0) -> None:
    """A 400 whose detail names the field and says why; and nothing was recorded or queued."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert f"'{field}'" in body["detail"], body["detail"]
    for phrase in phrases:
        assert phrase in body["detail"], body["detail"]
    assert Operation.objects.count() == operations_before and not OperationEvent.objects.exists()
    assert queued_operation_ids() == []


# --- unknown fields

@pytest.mark.parametrize(("url", "body", "field", "hint"), [
    (TRAINING, {"symbol": "SYN", "timeframe": "1h", "epochz": 3}, "epochz", "Did you mean epochs?"),
    (TRAINING, {"symbol": "SYN", "timeframe": "1h", "features": {"rsi_windw": 7}}, "features.rsi_windw",
     "Did you mean rsi_window?"),
    (BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "params": {"fast": 5}}, "params",
     "Unknown field 'params'. It is now called strategy_params."),
    (BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "comission": 0.001}, "comission", "Did you mean commission?"),
    (SESSIONS, {"seed": 3, "thresholds": {"min_sharp": 1}}, "thresholds.min_sharp", "Did you mean min_sharpe?"),
    (SESSIONS, {"sead": 3}, "sead", "Did you mean seed?"),
])
def test_an_unknown_field_is_a_400_naming_it_and_nothing_runs(market, user_client, url, body, field, hint,
                                                                 django_capture_on_commit_callbacks):
    response = post(user_client, url, body, django_capture_on_commit_callbacks)
    assert_refused(response, field, "Unknown field", hint)
    assert response.json()["details"]


def test_several_unknown_fields_are_all_named(market, user_client, django_capture_on_commit_callbacks):
    response = post(user_client, TRAINING, {"symbol": "SYN", "timeframe": "1h", "epochz": 3, "sed": 1},
                    django_capture_on_commit_callbacks)
    assert_refused(response, "epochz", "Unknown fields: 'epochz', 'sed'.", "The fields are: ")
    assert set(response.json()["details"]) == {"epochz", "sed"}


def test_an_unknown_strategy_parameter_is_a_400_naming_it(market, user_client, django_capture_on_commit_callbacks):
    response = post(user_client, BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "strategy_params": {"fats": 5}},
                    django_capture_on_commit_callbacks)
    assert_refused(response, "strategy_params.fats", "Unknown parameter of sma_cross (it takes fast, slow, allow_short)")


def test_unknown_filters_of_a_list_are_refused_but_its_pages_are_not(user_client):
    refused = user_client.get("/api/v1/operations/", {"statuss": "FAILED"})
    assert refused.status_code == 400 and "'statuss'" in refused.json()["detail"]
    assert "Did you mean status?" in refused.json()["detail"]
    assert user_client.get("/api/v1/operations/", {"page": 1, "page_size": 5, "status": "FAILED"}).status_code == 200
    refused = user_client.get("/api/v1/checkpoints/", {"older_than": 3})
    assert refused.status_code == 400 and "'older_than'" in refused.json()["detail"]


def test_the_worker_and_checkpoint_endpoints_refuse_unknown_fields(worker_client, staff_client):
    worker = WorkerFactory(worker_id="box:resilient:42")
    register = worker_client.post("/api/v1/workers/register/", {"worker_id": worker.pk, "capabilitys": {}},
                                  format="json")
    assert register.status_code == 400 and "'capabilitys'" in register.json()["detail"]
    heartbeat = worker_client.post(f"/api/v1/workers/{worker.pk}/heartbeat/",
                                   {"progress": {"current": 3, "percentt": 2}}, format="json")
    assert heartbeat.status_code == 400 and "'progress.percentt'" in heartbeat.json()["detail"]
    cleanup = staff_client.post("/api/v1/checkpoints/cleanup/", {"max_age": 3}, format="json")
    assert cleanup.status_code == 400 and "'max_age'" in cleanup.json()["detail"]


# --- the same names in and out: a response's params post back as they are

def trained_model(owner) -> str:
    training = OperationFactory(operation_type="training", status="COMPLETED", owner=owner)
    folder = Path(settings.MODELS_DIR) / training.pk
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"stand-in")
    (folder / "feature_spec.json").write_text(json.dumps(
        {"feature_spec": FeatureSpec().as_dict(), "hidden_sizes": [8], "inputs": FeatureSpec().count}))
    return training.pk


@pytest.mark.parametrize(("url", "body"), [
    (TRAINING, {"symbol": "SYN", "timeframe": "1h", "epochs": 3, "features": {"rsi_window": 7}}),
    (BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "strategy_params": {"fast": 5, "slow": 20}, "end": "2015-02-01"}),
    (BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "strategy_params": {"threshold": 0.6}}),
    (SESSIONS, {"seed": 3, "thresholds": {"min_sharpe": 1.5}}),
])
def test_a_responses_params_post_back_as_they_are(market, user, user_client, url, body,
                                                 django_capture_on_commit_callbacks):
    if body.get("strategy") == "model":
        body = {**body, "model": trained_model(user)}
    first = post(user_client, url, body, django_capture_on_commit_callbacks)
    assert first.status_code == 201, first.content
    params = first.json()["params"]
    for name, value in body.items():  # what was given, under its own name
        assert params[name] == value or (isinstance(value, dict) and value.items() <= params[name].items()), name

    again = post(user_client, url, params, django_capture_on_commit_callbacks)
    assert again.status_code == 201, again.content
    assert again.json()["params"] == params


def test_a_model_backtest_keeps_its_model_beside_its_strategy_params(market, user, user_client,
                                                                     django_capture_on_commit_callbacks):
    model = trained_model(user)
    response = post(user_client, BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "strategy": "model",
                                             "model": model}, django_capture_on_commit_callbacks)
    assert response.json()["params"]["model"] == model
    assert response.json()["params"]["strategy_params"] == {"threshold": 0.55, "allow_short": False}


# --- a range with no bars, or too few for the request

@pytest.mark.parametrize(("url", "body", "field", "phrase"), [
    (BACKTESTS, {"start": "2030-01-01"}, "start", "No bars of SYN 1h from 2030-01-01 to its last bar: the series "
                                                  "covers 2015-01-01T00:00:00Z to 2015-02-11T15:00:00Z."),
    (BACKTESTS, {"end": "2014-12-31"}, "end", "No bars of SYN 1h from its first bar to 2014-12-31"),
    (TRAINING, {"start": "2016-01-01", "end": "2016-02-01"}, "start", "No bars of SYN 1h from 2016-01-01 to 2016-02-01"),
    (BACKTESTS, {"start": "2015-01-01", "end": "2015-01-02", "strategy_params": {"fast": 10, "slow": 50}}, "start",
     "Only 48 bars of SYN 1h from 2015-01-01 to 2015-01-02 (the series covers 2015-01-01T00:00:00Z to "
     "2015-02-11T15:00:00Z); sma_cross with slow=50 needs at least 52"),
    (TRAINING, {"start": "2015-01-01", "end": "2015-01-02"}, "start",
     "Only 48 bars of SYN 1h from 2015-01-01 to 2015-01-02 (the series covers 2015-01-01T00:00:00Z to "
     "2015-02-11T15:00:00Z); a training with these feature windows needs at least 52: 31 for its features' warm-up, "
     "20 to train and validate on, and one more for the last label"),
    (BACKTESTS, {"strategy_params": {"fast": 10, "slow": 2000}}, "symbol",
     "Only 1,000 bars of SYN 1h from its first bar to its last bar"),
    (SESSIONS, {"end": "2015-01-20"}, "end", "a research session on 1h bars needs at least 737"),
])
def test_a_range_without_enough_bars_is_a_400_at_submit(market, user_client, url, body, field, phrase,
                                                        django_capture_on_commit_callbacks):
    request = {"symbol": "SYN", "timeframe": "1h", **body}
    assert_refused(post(user_client, url, request, django_capture_on_commit_callbacks), field, phrase)


def test_a_model_backtest_needs_the_bars_of_its_models_feature_windows(market, user, user_client,
                                                                      django_capture_on_commit_callbacks):
    model = trained_model(user)
    response = post(user_client, BACKTESTS, {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": model,
                                             "start": "2015-01-01", "end": "2015-01-01"},
                    django_capture_on_commit_callbacks)
    assert_refused(response, "start", "Only 24 bars", f"the model of {model} needs at least 33: 31 for its features'",
                   operations_before=1)


def test_just_enough_bars_are_accepted(market, user_client, django_capture_on_commit_callbacks):
    request = {"symbol": "SYN", "timeframe": "1h", "start": "2015-01-01", "end": "2015-01-02",
               "strategy_params": {"fast": 10, "slow": 46}}  # 48 bars: exactly 46 + 2
    assert post(user_client, BACKTESTS, request, django_capture_on_commit_callbacks).status_code == 201


# --- the bars' times beside each series: known at once, read again when the file changed

def test_a_series_changed_by_other_means_is_counted_again(market):
    path = Path(settings.DATA_DIR) / "SYN_1h.csv"
    assert bars_between("SYN", "1h").bars == BARS and times_path(path).exists()
    frame = pd.read_csv(path).head(100)
    time.sleep(0.01)
    frame.to_csv(path, index=False)  # by hand: the times beside it are now stale
    assert bars_between("SYN", "1h").bars == 100
    assert bars_between("SYN", "1h", "2015-01-02", "2015-01-03").bars == 48
    assert bars_between("SYN", "1h", "2015-01-05").bars == 4


def test_a_series_in_a_folder_that_cannot_be_written_is_still_counted(market, monkeypatch):
    path = Path(settings.DATA_DIR) / "SYN_1h.csv"
    times_path(path).unlink()

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(series.tempfile, "mkstemp", refused)  # a shared volume mounted read-only for the web
    assert bars_between("SYN", "1h").bars == BARS
    assert not times_path(path).exists()
    assert [entry.name for entry in Path(settings.DATA_DIR).iterdir()] == ["SYN_1h.csv"]
