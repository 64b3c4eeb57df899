"""Lists carry a summary, never a whole result: the detail and `operations/<id>/result/` carry it. Fifty completed
backtests of 2,000 trades each list in under 100 KB, and the list's query does not even read their results."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from operations.models import Operation, OperationStatus
from tests.factories import OperationFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/operations/"
TRADES = 2_000


def backtest_result(index: int) -> dict:
    trade = {"entry_time": "2015-01-01T00:00:00Z", "exit_time": "2015-01-01T05:00:00Z", "side": "long",
             "quantity": 10.123456, "entry_price": 100.123456, "exit_price": 101.654321, "pnl": 15.5,
             "entry_bar": 1, "exit_bar": 6}
    return {
        "strategy": "sma_cross", "strategy_params": {"fast": 10, "slow": 30, "allow_short": True},
        "bars": 100_000, "first_bar": "2015-01-01T00:00:00Z", "last_bar": "2026-05-29T15:00:00Z",
        "metrics": {"total_return": 0.1 + index / 1000, "buy_and_hold_return": 0.05, "annualised_return": 0.01,
                    "sharpe": 0.8335994209353337, "max_drawdown": 0.2, "number_of_trades": TRADES,
                    "win_rate": 0.5, "exposure": 0.9, "final_equity": 110_000.0, "initial_cash": 100_000.0,
                    "bars": 100_000},
        "trades": [trade] * TRADES,
        "equity_curve": [["2015-01-01T00:00:00Z", 100_000.0 + i] for i in range(500)],
        "timings": {"engine_seconds": 1.0},
    }


def completed_backtest(owner, index: int = 0):
    return OperationFactory(operation_type="backtesting", status=OperationStatus.COMPLETED, owner=owner,
                            result=backtest_result(index))


def test_a_list_of_fifty_completed_backtests_is_small_and_carries_their_figures_not_their_results(user, user_client):
    for index in range(50):
        completed_backtest(user, index)
    assert len(json.dumps(backtest_result(0))) > 200_000  # each result alone: its trades make it large

    with CaptureQueriesContext(connection) as queries:
        answer = user_client.get(LIST_URL, {"page_size": 50})
    assert answer.status_code == 200
    assert len(answer.content) < 100_000, len(answer.content)
    body = answer.json()
    assert len(body["results"]) == 50
    first = body["results"][0]
    assert "result" not in first
    assert first["summary"]["number_of_trades"] == TRADES
    assert first["summary"]["sharpe"] == pytest.approx(0.8335994209353337)
    assert first["summary"]["total_return"] == pytest.approx(0.149)
    # The results stay in the database: the list reads their metrics, not their trades.
    listing = next(query["sql"] for query in queries.captured_queries if "LIMIT" in query["sql"])
    assert '"operations_operation"."result",' not in listing and "trades" not in listing


def test_the_detail_and_the_result_endpoint_carry_the_whole_result(user, user_client):
    operation = completed_backtest(user)
    detail = user_client.get(f"{LIST_URL}{operation.pk}/").json()
    assert len(detail["result"]["trades"]) == TRADES and detail["summary"]["number_of_trades"] == TRADES

    answer = user_client.get(f"{LIST_URL}{operation.pk}/result/")
    assert answer.status_code == 200
    assert answer.json() == {"operation_id": operation.pk, "operation_type": "backtesting", "status": "COMPLETED",
                             "result": backtest_result(0)}


def test_an_operation_without_a_result_has_an_empty_summary_in_the_list_and_a_null_result(user, user_client):
    running = OperationFactory(owner=user, operation_type="training", status=OperationStatus.RUNNING)
    assert user_client.get(LIST_URL).json()["results"][0]["summary"] == {}
    assert user_client.get(f"{LIST_URL}{running.pk}/result/").json()["result"] is None


def test_a_training_lists_its_best_and_final_validation_figures(user, user_client):
    OperationFactory(owner=user, operation_type="training", status=OperationStatus.COMPLETED, params={"epochs": 2},
                     result={"epochs_completed": 2, "best_epoch": 1, "best_val_loss": 0.6, "best_val_accuracy": 0.6,
                             "final_val_loss": 0.61, "final_val_accuracy": 0.58, "timings": {"train_seconds": 3.0},
                             "history": [{"epoch": 1}, {"epoch": 2}]})
    summary = user_client.get(LIST_URL).json()["results"][0]["summary"]
    assert summary == {"epochs_completed": 2, "best_epoch": 1, "best_val_loss": 0.6, "best_val_accuracy": 0.6,
                       "final_val_loss": 0.61, "final_val_accuracy": 0.58, "train_seconds": 3.0}


def test_another_users_result_is_a_404_and_a_bad_id_a_400(user_client, other_user):
    theirs = completed_backtest(other_user)
    assert user_client.get(f"{LIST_URL}{theirs.pk}/result/").json()["code"] == "OPERATION_NOT_FOUND"
    bad = user_client.get(f"{LIST_URL}not-an-id/result/")
    assert bad.status_code == 400 and "operation_id" in bad.json()["detail"]


def test_a_result_of_another_shape_lists_with_an_empty_summary(user, user_client):
    OperationFactory(owner=user, operation_type="backtesting", status=OperationStatus.COMPLETED,
                     result={"metrics": "not an object", "trades": 3})
    answer = user_client.get(LIST_URL)
    assert answer.status_code == 200 and answer.json()["results"][0]["summary"] == {}


# --- the figures kept beside the result

@pytest.mark.django_db(transaction=True)
def test_a_completed_runs_figures_are_written_with_its_result(worker_factory):
    from operations.services.lifecycle import operation_claim, operation_finish

    operation = OperationFactory(operation_type="backtesting")
    worker = worker_factory()
    attempt = operation_claim(operation_id=operation.pk, worker_id=worker.pk)
    assert operation_finish(operation_id=operation.pk, worker_id=worker.pk, attempt=attempt, status="COMPLETED",
                            result=backtest_result(3))
    summary = Operation.objects.values_list("summary", flat=True).get(pk=operation.pk)
    assert summary["number_of_trades"] == TRADES and summary["total_return"] == pytest.approx(0.103)


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_writes_the_figures_of_the_results_written_before():
    from django.db.migrations.executor import MigrationExecutor

    before = [("operations", "0006_restart_policy_and_fleet")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("operations", "Operation")
    completed = old.objects.create(operation_id="op_backtesting_20240101_120000_0123abcd",
                                   operation_type="backtesting", status="COMPLETED", result=backtest_result(1))
    old.objects.create(operation_id="op_training_20240101_120000_0123abcd", operation_type="training",
                       status="RUNNING")
    old.objects.create(operation_id="op_training_20240101_120000_0123abce", operation_type="training",
                       status="COMPLETED", result=["not", "an", "object"])

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    summaries = dict(Operation.objects.values_list("pk", "summary"))
    assert summaries[completed.pk]["number_of_trades"] == TRADES
    assert summaries["op_training_20240101_120000_0123abcd"] == {}
    assert summaries["op_training_20240101_120000_0123abce"] == {}
