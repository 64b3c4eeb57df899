"""Starting and showing backtests: POST /api/v1/backtests/, `manage.py backtest`, `operations resume`
of a cancelled backtest, the admin page (equity chart, trades, metrics) and the OpenAPI schema."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.admin.utils import quote
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from checkpoints.models import Checkpoint
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from runtime.tasks import run_operation
from tests.backtesting.conftest import generate, start_backtest
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory
from tests.support.pages import chart_data
from tests.support.commands import assert_refused_by_name
from training.features import FeatureSpec

UNKNOWN_MODEL = "op_training_20261204_101500_0badc0de"  # fixed: the test ids must not change between runs

URL = "/api/v1/backtests/"
DEFAULT_PARAMS = {
    "symbol": "SYN",
    "timeframe": "1h",
    "start": None,
    "end": None,
    "strategy": "sma_cross",
    "model": None,
    "initial_cash": 100_000.0,
    "commission": 0.0005,
    "slippage": 0.0002,
    "checkpoint_every": None,
    "checkpoint_seconds": None,
    "checkpoints_enabled": True,
    "strategy_params": {"fast": 10, "slow": 30, "allow_short": False},
}


@pytest.fixture
def market(backtest_dirs):
    generate(300)
    return backtest_dirs


def model_files(operation: Operation, *, files: tuple[str, ...] = ("model.pt", "feature_spec.json")) -> dict:
    """Files standing in for a trained model, where its id says (the request checks they exist, and reads the
    feature spec for the bars its windows need); the result's path fields, as a training writes them."""
    folder = Path(settings.MODELS_DIR) / operation.pk
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"stand-in")
    if "feature_spec.json" in files:
        (folder / "feature_spec.json").write_text(json.dumps(
            {"feature_spec": FeatureSpec().as_dict(), "hidden_sizes": [8], "inputs": FeatureSpec().count}))
    return {"model_path": str(folder / "model.pt"), "feature_spec_path": str(folder / "feature_spec.json")}


def training(owner=None, status=S.COMPLETED, with_files: bool = True) -> Operation:
    operation = OperationFactory(operation_type="training", status=status, owner=owner)
    if with_files:
        Operation.objects.filter(pk=operation.pk).update(result=model_files(operation))
    return operation


def assert_nothing_created() -> None:
    assert not Operation.objects.filter(operation_type="backtesting").exists()
    assert not OperationEvent.objects.filter(operation__operation_type="backtesting").exists()
    assert queued_operation_ids() == []


def post(client, body, capture):
    with capture(execute=True):
        return client.post(URL, body, format="json")


# --- POST /api/v1/backtests/


@pytest.mark.django_db
def test_post_creates_a_pending_backtest_with_defaults_owned_by_the_user(
    market, user, user_client, django_capture_on_commit_callbacks
):
    response = post(user_client, {"symbol": "SYN", "timeframe": "1h"}, django_capture_on_commit_callbacks)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["operation_type"] == "backtesting"
    assert body["status"] == "PENDING"
    assert body["owner"] == user.username
    assert body["params"] == DEFAULT_PARAMS
    assert body["checkpoint"] is None and body["resumable"] is False
    assert {"operation_id", "created_at", "progress", "result", "recent_events"} <= set(body)
    operation = Operation.objects.get(pk=body["operation_id"])
    assert operation.status == S.PENDING and operation.owner == user and operation.params == DEFAULT_PARAMS
    assert queued_operation_ids() == [operation.pk]
    assert user_client.get(f"/api/v1/operations/{operation.pk}/").json()["params"] == DEFAULT_PARAMS


@pytest.mark.django_db
def test_post_stores_the_values_given(market, user_client, django_capture_on_commit_callbacks):
    request = {
        "symbol": "SYN",
        "timeframe": "1h",
        "start": "2015-01-03",
        "end": "2015-01-10",
        "strategy": "sma_cross",
        "strategy_params": {"fast": "5", "slow": 12, "allow_short": "true"},
        "initial_cash": 5000,
        "commission": 0.001,
        "slippage": 0,
        "checkpoint_every": 0,
    }
    response = post(user_client, request, django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.content
    params = Operation.objects.get(pk=response.json()["operation_id"]).params
    assert params == {
        **DEFAULT_PARAMS, "start": "2015-01-03", "end": "2015-01-10", "initial_cash": 5000.0, "commission": 0.001,
        "slippage": 0.0, "checkpoint_every": 0, "strategy_params": {"fast": 5, "slow": 12, "allow_short": True},
    }


BAD_BODIES = [
    ({"strategy": "nope"}, "strategy"),
    ({"strategy": None}, "strategy"),
    ({"strategy_params": {"fast": "x"}}, "strategy_params.fast"),
    ({"strategy_params": {"fast": 0}}, "strategy_params.fast"),
    ({"strategy_params": {"fast": 2.5}}, "strategy_params.fast"),
    ({"strategy_params": {"fast": 30, "slow": 10}}, "strategy_params.slow"),
    ({"strategy_params": {"fast": 10, "slow": 10}}, "strategy_params.slow"),
    ({"strategy_params": {"slow": 1}}, "strategy_params.slow"),
    ({"strategy_params": {"allow_short": "maybe"}}, "strategy_params.allow_short"),
    ({"strategy_params": "fast=3"}, "strategy_params"),
    ({"strategy_params": [3, 8]}, "strategy_params"),
    ({"strategy": "model"}, "model"),  # the model strategy needs a model
    ({"strategy": "model", "strategy_params": {"threshold": 0.3}}, "strategy_params.threshold"),
    ({"model": UNKNOWN_MODEL}, "model"),  # sma_cross uses no model
    ({"strategy": "model", "model": "not-an-id"}, "model"),
    ({"strategy": "model", "model": UNKNOWN_MODEL}, "model"),  # no such operation
    ({"initial_cash": 0}, "initial_cash"),
    ({"initial_cash": "lots"}, "initial_cash"),
    ({"commission": -0.1}, "commission"),
    ({"slippage": 0.5}, "slippage"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
    ({"checkpoint_every": "often"}, "checkpoint_every"),
    ({"start": "yesterday"}, "start"),
    ({"end": "2015-13-01"}, "end"),
    ({"start": "2015-02-01", "end": "2015-01-01"}, "end"),
    ({"timeframe": "7h"}, "timeframe"),
    ({"symbol": "bad symbol"}, "symbol"),
    ({"symbol": "NODATA"}, "symbol"),  # a valid name, but no series was generated for it
    ({"timeframe": "1d"}, "symbol"),  # SYN exists in 1h only
]


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field"), BAD_BODIES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_BODIES)])
def test_bad_body_is_a_400_naming_the_field_and_creates_nothing(
    market, user_client, django_capture_on_commit_callbacks, change, field
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = user_client.post(URL, {"symbol": "SYN", "timeframe": "1h", **change}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["detail"].startswith(f"Invalid value for field '{field}':"), body["detail"]
    details = body["details"]
    for key in field.split("."):
        assert key in details, body["details"]
        details = details[key]
    assert callbacks == []
    assert_nothing_created()


@pytest.mark.django_db
def test_missing_fields_are_named(market, user_client):
    response = user_client.post(URL, {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"symbol", "timeframe"}
    assert_nothing_created()


@pytest.mark.django_db
def test_no_data_error_says_how_to_generate_it(market, user_client):
    response = user_client.post(URL, {"symbol": "NODATA", "timeframe": "4h"}, format="json")
    assert response.status_code == 400
    assert "python manage.py marketdata generate --symbol NODATA --timeframe 4h" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("status", [S.PENDING, S.RUNNING, S.FAILED, S.CANCELLED])
def test_a_model_not_completed_is_refused(market, user, user_client, status):
    model = training(owner=user, status=status, with_files=status != S.PENDING)
    response = user_client.post(URL, {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": model.pk},
                                format="json")
    assert response.status_code == 400
    detail = response.json()["details"]["model"][0]
    assert f"is {status}" in detail and "COMPLETED" in detail
    assert_nothing_created()


@pytest.mark.django_db
def test_a_model_whose_files_are_gone_is_refused(market, user, user_client):
    model = training(owner=user, with_files=False)
    model_files(model, files=("feature_spec.json",))
    response = user_client.post(URL, {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": model.pk},
                                format="json")
    assert response.status_code == 400
    assert "missing (model)" in response.json()["details"]["model"][0]


@pytest.mark.django_db
def test_the_model_files_are_found_from_the_id_never_from_the_result(market, user, user_client, other_user,
                                                                     django_capture_on_commit_callbacks):
    """A forged result pointing at another user's model: the paths are not even looked at."""
    theirs = training(owner=other_user)
    mine = training(owner=user, with_files=False)
    Operation.objects.filter(pk=mine.pk).update(result=Operation.objects.get(pk=theirs.pk).result)
    body = {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": mine.pk}

    refused = user_client.post(URL, body, format="json")

    assert refused.status_code == 400
    assert "missing (model, feature_spec)" in refused.json()["details"]["model"][0]
    assert_nothing_created()
    model_files(mine)
    accepted = post(user_client, body, django_capture_on_commit_callbacks)
    assert accepted.status_code == 201
    assert accepted.json()["params"]["model"] == mine.pk
    assert accepted.json()["params"]["strategy_params"] == {"threshold": 0.55, "allow_short": False}


@pytest.mark.django_db
def test_a_backtest_is_not_a_model(market, user, user_client):
    other = OperationFactory(operation_type="backtesting", status=S.COMPLETED, owner=user)
    response = user_client.post(URL, {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": other.pk},
                                format="json")
    assert response.status_code == 400
    assert response.json()["details"]["model"] == [f"No training operation {other.pk}."]


@pytest.mark.django_db
def test_the_model_of_a_completed_training_is_used(
    market, user, user_client, django_capture_on_commit_callbacks
):
    model = training(owner=user)
    response = post(user_client, {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": model.pk,
                                  "strategy_params": {"threshold": 0.6}}, django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.content
    assert response.json()["params"]["model"] == model.pk
    assert response.json()["params"]["strategy_params"] == {"threshold": 0.6, "allow_short": False}


@pytest.mark.django_db
def test_a_user_cannot_backtest_another_users_model_but_staff_can(
    market, user_client, other_user, staff_client, django_capture_on_commit_callbacks
):
    model = training(owner=other_user)
    body = {"symbol": "SYN", "timeframe": "1h", "strategy": "model", "model": model.pk}

    refused = user_client.post(URL, body, format="json")
    assert refused.status_code == 400
    assert refused.json()["details"]["model"] == [f"No training operation {model.pk}."]  # not even its existence
    assert_nothing_created()

    accepted = post(staff_client, body, django_capture_on_commit_callbacks)
    assert accepted.status_code == 201, accepted.content


@pytest.mark.django_db
def test_anonymous_is_refused(market, anonymous_client):
    response = anonymous_client.post(URL, {"symbol": "SYN", "timeframe": "1h"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "NOT_AUTHENTICATED"
    assert_nothing_created()


@pytest.mark.django_db
def test_a_backtest_is_seen_by_its_owner_only(market, user_client, other_user, django_capture_on_commit_callbacks):
    from tests.conftest import token_client

    operation_id = post(user_client, {"symbol": "SYN", "timeframe": "1h"}, django_capture_on_commit_callbacks).json()[
        "operation_id"
    ]
    assert user_client.get(f"/api/v1/operations/{operation_id}/").status_code == 200
    assert token_client(other_user).get(f"/api/v1/operations/{operation_id}/").status_code == 404


# --- manage.py backtest


def backtest(*args: str) -> str:
    out = StringIO()
    call_command("backtest", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_backtest_prints_just_the_new_id(market, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = backtest("--symbol", "SYN", "--timeframe", "1h")
    operation = Operation.objects.get(operation_type="backtesting")
    assert output == f"{operation.pk}\n"
    assert operation.status == S.PENDING and operation.owner is None
    assert operation.params == DEFAULT_PARAMS
    assert queued_operation_ids() == [operation.pk]


@pytest.mark.django_db
def test_backtest_parses_params_and_options(market, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        backtest("--symbol", "SYN", "--timeframe", "1h", "--strategy", "sma_cross", "--param", "fast=10",
                 "--param", "slow=30", "--param", "allow_short=true", "--initial-cash", "2500.5",
                 "--commission", "0.001", "--slippage", "0", "--checkpoint-every", "0", "--start", "2015-01-02",
                 "--end", "2015-01-09")
    operation = Operation.objects.get(operation_type="backtesting")
    assert operation.params == {
        **DEFAULT_PARAMS, "start": "2015-01-02", "end": "2015-01-09", "initial_cash": 2500.5, "commission": 0.001,
        "slippage": 0.0, "checkpoint_every": 0, "strategy_params": {"fast": 10, "slow": 30, "allow_short": True},
    }


@pytest.mark.django_db
def test_backtest_json_prints_the_api_body(market, staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = backtest("--symbol", "SYN", "--timeframe", "1h", "--param", "fast=4", "--param", "slow=9", "--json")
    body = json.loads(output)
    operation = Operation.objects.get(operation_type="backtesting")
    assert body["operation_id"] == operation.pk and body["status"] == "PENDING"
    assert body["params"]["strategy_params"] == {"fast": 4, "slow": 9, "allow_short": False}
    assert body == staff_client.get(f"/api/v1/operations/{operation.pk}/").json()


BAD_OPTIONS = [
    (["--param", "x"], "--param"),
    (["--param", "=3"], "--param"),
    (["--param", "fast=x"], "--param"),
    (["--param", "fast=0"], "--param"),
    (["--param", "fast=30", "--param", "slow=10"], "--param"),
    (["--param", "allow_short=perhaps"], "--param"),
    (["--strategy", "nope"], "--strategy"),
    (["--strategy", "model"], "--model"),
    (["--model", UNKNOWN_MODEL], "--model"),
    (["--initial-cash", "-5"], "--initial-cash"),
    (["--initial-cash", "lots"], "--initial-cash"),
    (["--commission", "x"], "--commission"),
    (["--slippage", "1"], "--slippage"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--timeframe", "7h"], "--timeframe"),
    (["--symbol", "bad symbol"], "--symbol"),
    (["--start", "yesterday"], "--start"),
    (["--start", "2015-02-01", "--end", "2015-01-01"], "--end"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_backtest_refuses_bad_options_by_name(market, options, named):
    assert_refused_by_name(lambda: backtest("--symbol", "SYN", "--timeframe", "1h", *options), named)
    assert_nothing_created()


@pytest.mark.django_db
def test_a_bad_param_names_the_parameter(market):
    with pytest.raises(CommandError) as refused:
        backtest("--symbol", "SYN", "--timeframe", "1h", "--param", "fast=30", "--param", "slow=10")
    assert str(refused.value) == "--param: slow: slow must be longer than fast."
    with pytest.raises(CommandError) as refused:
        backtest("--symbol", "SYN", "--timeframe", "1h", "--param", "x")
    assert "NAME=VALUE" in str(refused.value)


@pytest.mark.django_db
def test_backtest_without_data_names_the_symbol_and_how_to_generate_it(market):
    with pytest.raises(CommandError) as refused:
        backtest("--symbol", "NODATA", "--timeframe", "1h")
    message = str(refused.value)
    assert message.startswith("--symbol: ")
    assert "python manage.py marketdata generate --symbol NODATA --timeframe 1h" in message
    assert_nothing_created()


# --- operations resume, on a cancelled backtest


@pytest.mark.django_db(transaction=True)
def test_operations_resume_continues_a_cancelled_backtest(market, stopper):
    straight = start_backtest(strategy_params={"fast": 3, "slow": 8, "allow_short": True})
    assert stopper.run(straight) == "completed"
    operation_id = start_backtest(strategy_params={"fast": 3, "slow": 8, "allow_short": True})
    assert stopper.run(operation_id, 120, chunk=1) == "cancelled"
    assert Operation.objects.get(pk=operation_id).status == S.CANCELLED

    out = StringIO()
    call_command("operations", "resume", operation_id, stdout=out)
    assert out.getvalue() == f"Operation {operation_id} is RESUMING from its cancellation checkpoint (bar_index 120).\n"
    assert Operation.objects.get(pk=operation_id).status == S.RESUMING

    assert run_operation(operation_id) == "completed"
    resumed, expected = Operation.objects.get(pk=operation_id).result, Operation.objects.get(pk=straight).result
    assert resumed["trades"] == expected["trades"] and resumed["metrics"] == expected["metrics"]
    assert resumed["timings"]["bars_processed"] == 300 - 120


@pytest.mark.django_db(transaction=True)
def test_operations_resume_json_says_where_it_resumes_from(market, stopper):
    operation_id = start_backtest()
    assert stopper.run(operation_id, 77, chunk=1) == "cancelled"
    out = StringIO()
    call_command("operations", "resume", operation_id, "--json", stdout=out)
    body = json.loads(out.getvalue())
    assert body["status"] == "RESUMING"
    assert body["resumed_from"]["checkpoint_type"] == "cancellation" and body["resumed_from"]["bar_index"] == 77
    assert body["checkpoint"]["state_summary"] == {"bar_index": 77}


# --- admin


def change_url(operation: Operation) -> str:
    return reverse("admin:operations_operation_change", args=[quote(operation.pk)])


def trades_url(operation: Operation) -> str:
    return reverse("admin:operations_operation_result_page", args=[quote(operation.pk), "trades"])


@pytest.mark.django_db(transaction=True)
def test_admin_page_of_a_completed_backtest_shows_its_figures_charts_and_a_link_to_its_trades(
        market, stopper, admin_client):
    operation_id = start_backtest(strategy_params={"fast": 3, "slow": 8, "allow_short": True})
    assert stopper.run(operation_id) == "completed"
    operation = Operation.objects.get(pk=operation_id)
    result = operation.result

    page = admin_client.get(change_url(operation))
    body = page.content.decode()
    assert page.status_code == 200
    equity, drawdown = chart_data(body)
    assert [series["label"] for series in equity["series"]] == ["strategy", "buy and hold"]
    assert len(equity["data"][0]) == len(result["equity_curve"]) == len(result["buy_and_hold_curve"])
    assert equity["data"][1] == [value for _, value in result["equity_curve"]]
    assert equity["data"][2][0] == pytest.approx(result["metrics"]["initial_cash"])
    assert equity["data"][2][-1] == pytest.approx(
        result["metrics"]["initial_cash"] * (1 + result["metrics"]["buy_and_hold_return"]))
    assert drawdown["title"] == "Drawdown"
    assert -min(drawdown["data"][1]) == pytest.approx(result["metrics"]["max_drawdown"])
    assert "Equity curve (2015-01-01 00:00 UTC to " in body
    for figure in ("Total return", "Buy-and-hold return", "Sharpe ratio", "Maximum drawdown", "Trades", "Win rate"):
        assert f"<dt>{figure}</dt>" in body, figure
    trades = result["trades"]
    assert len(trades) > 10 and trades_url(operation) in body
    assert trades[0]["entry_time"] not in body  # the trades are on their own page

    listed = admin_client.get(trades_url(operation)).content.decode()
    assert f"of {len(trades):,}" in listed and trades[0]["entry_time"].replace("T", " ").removesuffix("Z") in listed


@pytest.mark.django_db
def test_admin_page_of_a_backtest_without_trades(admin_client):
    operation = OperationFactory(
        operation_type="backtesting", status=S.COMPLETED,
        result={"equity_curve": [["2015-01-01T00:00:00Z", 100.0], ["2015-01-01T01:00:00Z", 100.0]], "trades": [],
                "metrics": {"number_of_trades": 0, "sharpe": None}},
    )
    body = admin_client.get(change_url(operation)).content.decode()
    assert len(chart_data(body)) == 1  # a result written before the drawdown was: the equity alone
    listed = admin_client.get(trades_url(operation)).content.decode()
    assert "This backtest closed no trades." in listed and "No trades." in listed


@pytest.mark.django_db
def test_admin_page_of_a_pending_backtest_has_no_chart(admin_client):
    operation = OperationFactory(operation_type="backtesting", status=S.PENDING)
    page = admin_client.get(change_url(operation))
    assert page.status_code == 200
    assert chart_data(page.content.decode()) == [] and "Equity curve" not in page.content.decode()
    assert trades_url(operation) not in page.content.decode()  # no result, no trades


@pytest.mark.django_db
def test_admin_page_of_a_training_still_shows_its_loss_curves(admin_client):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in range(1, 6)]
    operation = OperationFactory(operation_type="training", status=S.COMPLETED, result={"history": history})
    body = admin_client.get(change_url(operation)).content.decode()
    (loss,) = chart_data(body)
    assert loss["title"] == "Loss per epoch"
    assert [series["label"] for series in loss["series"]] == ["train loss", "validation loss"]
    assert "Equity curve" not in body and "/result/trades/" not in body


@pytest.mark.django_db(transaction=True)
def test_admin_page_of_a_cancelled_backtest_shows_its_checkpoint(market, stopper, admin_client):
    operation_id = start_backtest()
    assert stopper.run(operation_id, 150, chunk=1) == "cancelled"
    assert Checkpoint.objects.filter(pk=operation_id).exists()
    body = admin_client.get(change_url(Operation.objects.get(pk=operation_id))).content.decode()
    assert "cancellation · bar_index 150" in body and "resumable" in body


# --- OpenAPI


@pytest.mark.django_db
def test_the_schema_documents_post_backtests(anonymous_client):
    response = anonymous_client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert "/api/v1/backtests/" in schema["paths"]
    post_operation = schema["paths"]["/api/v1/backtests/"]["post"]
    assert "201" in post_operation["responses"] and "400" in post_operation["responses"]
    reference = post_operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert {"symbol", "timeframe", "strategy", "strategy_params", "model", "initial_cash", "commission", "slippage",
            "checkpoint_every"} <= set(request["properties"])
    strategy = request["properties"]["strategy"]
    enum = strategy["allOf"][0]["$ref"].rsplit("/", 1)[1] if "allOf" in strategy else None
    choices = schema["components"]["schemas"][enum]["enum"] if enum else strategy["enum"]
    assert {"sma_cross", "model"} <= set(choices)


@pytest.mark.django_db
def test_the_201_body_is_the_operation_as_read_back_without_looking_for_a_checkpoint_or_children(
    market, user_client, django_capture_on_commit_callbacks
):
    with CaptureQueriesContext(connection) as queries:
        response = post(user_client, {"symbol": "SYN", "timeframe": "1h"}, django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.content
    assert not [q["sql"] for q in queries if '"checkpoints_checkpoint"' in q["sql"] or '"parent_id" =' in q["sql"]]
    body = response.json()
    read_back = user_client.get(f"/api/v1/operations/{body['operation_id']}/").json()
    assert body == read_back
    assert body["checkpoint"] is None and body["children"] == [] and len(body["recent_events"]) == 1
