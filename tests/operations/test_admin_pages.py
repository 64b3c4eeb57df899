"""An operation's admin page made for reading: the result's figures with their units at the top, charts, the
parameters in a table, the raw result only behind a link; the page loads only the part of a result it shows.
The operations list: times to the second, the error of a failed run, and never a result."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from tests.factories import OperationFactory, UserFactory, ViewOnlyStaffFactory
from tests.support.pages import chart_data
from tests.support.results import backtest_result, training_result

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:operations_operation_changelist")
BACKTEST_PARAMS = {"symbol": "SYN", "timeframe": "1h", "start": None, "strategy": "sma_cross",
                   "strategy_params": {"fast": 3, "slow": 8, "allow_short": True}, "initial_cash": 100_000.0,
                   "commission": 0.00002}


def change_url(operation: Operation) -> str:
    return reverse("admin:operations_operation_change", args=[quote(operation.pk)])


def raw_url(operation: Operation) -> str:
    return reverse("admin:operations_operation_raw_result", args=[quote(operation.pk)])


def completed(operation_type: str, result: object, **fields) -> Operation:
    return OperationFactory(operation_type=operation_type, status=S.COMPLETED, result=result, **fields)


def figures(body: str) -> dict[str, str]:
    """The result's figures as the page shows them: {label: text}."""
    return dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", body))


def whole_result_reads(queries) -> list[str]:
    """The queries that load the whole result column into Python (the admin's own rows never should)."""
    return [query["sql"] for query in queries.captured_queries if '"operations_operation"."result"' in query["sql"]]


# --- the result at the top

def test_a_backtests_page_shows_its_figures_with_their_units_and_not_its_raw_result(admin_client):
    result = backtest_result(trades=300)
    operation = completed("backtesting", result, params=BACKTEST_PARAMS)

    body = admin_client.get(change_url(operation)).content.decode()

    shown = figures(body)
    metrics = result["metrics"]
    assert shown["Sharpe ratio"] == "-0.83 (annualised)"
    assert shown["Total return"] == f"{metrics['total_return'] * 100:+,.2f} %"
    assert shown["Maximum drawdown"] == f"{metrics['max_drawdown'] * 100:,.2f} %"
    assert shown["Trades"] == "300"
    assert "-0.8335994209353337" not in body  # no raw float
    assert result["trades"][0]["entry_time"] not in body and '"trades"' not in body  # no trades, no JSON wall
    assert f'href="{raw_url(operation)}"' in body
    assert "/result/trades/" in body
    assert body.index("<dt>Total return</dt>") < body.index("Equity curve") < body.index("Operation id")


def test_a_trainings_page_names_its_best_epoch_and_shows_no_history_wall(admin_client):
    result = training_result(epochs=40)
    operation = completed("training", result, params={"symbol": "SYN", "epochs": 40})

    body = admin_client.get(change_url(operation)).content.decode()

    assert figures(body)["Best epoch"] == str(result["best_epoch"])
    assert figures(body)["Epochs"] == "40 of 40"
    assert figures(body)["Best validation loss"] == f"{result['best_val_loss']:.4f}"
    loss = chart_data(body)[0]
    assert loss["markers"] == [{"x": result["best_epoch"], "label": f"best epoch {result['best_epoch']}"}]
    assert '"history"' not in body and "train_accuracy" not in body


def test_the_parameters_read_as_a_table(admin_client):
    operation = completed("backtesting", backtest_result(trades=3), params=BACKTEST_PARAMS)

    body = admin_client.get(change_url(operation)).content.decode()

    table = re.search(r'<table class="op-params">(.*?)</table>', body, re.S).group(1)
    assert "<tr><th>symbol</th><td>SYN</td></tr>" in table
    assert "<tr><th>start</th><td>-</td></tr>" in table
    assert "<tr><th>strategy_params</th><td>fast=3, slow=8, allow_short=true</td></tr>" in table
    assert "<tr><th>initial_cash</th><td>100000.0</td></tr>" in table
    assert "<tr><th>commission</th><td>0.00002</td></tr>" in table  # never 2e-05


def test_forged_parameters_are_shown_escaped(admin_client):
    operation = completed("training", {"history": []}, params={"<b>name</b>": "<script>alert(1)</script>"})

    body = admin_client.get(change_url(operation)).content.decode()

    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<b>name</b>" not in body


def test_a_result_of_another_shape_says_so_and_links_to_the_raw_result(admin_client):
    operation = completed("backtesting", 42)

    body = admin_client.get(change_url(operation)).content.decode()

    assert "This result has none of the figures this version writes" in body
    assert f'href="{raw_url(operation)}"' in body
    assert json.loads(admin_client.get(raw_url(operation)).content) == 42


def test_an_operation_without_a_result_has_no_result_section(admin_client):
    operation = OperationFactory(status=S.RUNNING)

    body = admin_client.get(change_url(operation)).content.decode()

    assert "op-result" not in body and raw_url(operation) not in body


# --- what the page costs

def test_the_page_of_a_backtest_of_a_hundred_thousand_trades_is_small_and_quick_and_never_loads_its_trades(
        admin_client):
    operation = completed("backtesting", backtest_result(trades=100_000), params=BACKTEST_PARAMS)
    admin_client.get(change_url(operation))  # the first request of a test client builds its templates

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        answer = admin_client.get(change_url(operation))
        elapsed = time.perf_counter() - started

    print(f"the page of a backtest of 100,000 trades: {elapsed * 1000:.0f} ms, {len(answer.content):,} bytes, "
          f"{len(queries)} queries")
    assert answer.status_code == 200
    assert len(answer.content) < 150_000
    assert elapsed < 1.0
    assert whole_result_reads(queries) == []


def test_the_pages_queries_do_not_grow_with_the_trades(admin_client):
    def queries(operation: Operation) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(change_url(operation)).status_code == 200
        return len(captured)

    small = completed("backtesting", backtest_result(trades=10), params=BACKTEST_PARAMS)
    large = completed("backtesting", backtest_result(trades=10_000), params=BACKTEST_PARAMS)

    assert queries(small) == queries(large)


# --- the raw result, behind its link

def test_the_raw_result_is_the_stored_json(admin_client):
    result = backtest_result(trades=50)
    operation = completed("backtesting", result)

    answer = admin_client.get(raw_url(operation))

    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/json"
    assert answer["Content-Disposition"] == f'inline; filename="{operation.pk}-result.json"'
    assert answer["X-Content-Type-Options"] == "nosniff"  # never sniffed into HTML, whatever a result holds
    assert json.loads(answer.content) == result


def test_no_result_yet_is_a_404(admin_client):
    assert admin_client.get(raw_url(OperationFactory(status=S.RUNNING))).status_code == 404


def logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password="secret-pass")
    return client


def test_the_raw_result_follows_the_admins_permissions():
    theirs = completed("training", training_result(epochs=3))
    viewer = ViewOnlyStaffFactory()
    own = completed("training", training_result(epochs=3), owner=viewer)

    assert logged_in(viewer).get(raw_url(theirs)).status_code == 404  # another user's: missing
    assert logged_in(viewer).get(raw_url(own)).status_code == 200
    assert logged_in(UserFactory(is_staff=True)).get(raw_url(own)).status_code == 403  # no view permission
    anonymous = Client().get(raw_url(own))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))


# --- the list

def test_the_list_shows_a_failed_runs_error_its_start_in_the_column_all_of_it_on_hover(admin_client):
    error = "ValueError: too little data to backtest: 1 bar(s) in the range; " + "import more bars. " * 10
    OperationFactory(status=S.FAILED, error_message=error)

    body = admin_client.get(CHANGELIST).content.decode()

    cell = re.search(r'<td class="field-error"><span class="op-error" title="([^"]*)">([^<]*)</span></td>', body)
    assert cell is not None
    assert cell.group(1) == error
    assert cell.group(2).startswith("ValueError: too little data") and cell.group(2).endswith("…")
    assert len(cell.group(2)) <= 90


def test_the_list_and_the_events_show_times_to_the_second(admin_client):
    at = datetime(2026, 11, 27, 14, 4, 7, tzinfo=timezone.utc)
    operation = OperationFactory(created_at=at)
    for second in (7, 8, 9):
        OperationEvent.objects.create(operation=operation, from_status=S.PENDING, to_status=S.PENDING,
                                      reason=f"event {second}", actor="test", at=at.replace(second=second))

    listing = admin_client.get(CHANGELIST).content.decode()
    page = admin_client.get(change_url(operation)).content.decode()

    assert "2026-11-27 14:04:07" in listing
    assert all(f"2026-11-27 14:04:0{second}" in page for second in (7, 8, 9))
    assert "p.m." not in listing + page


def test_the_list_never_loads_a_result(admin_client):
    completed("backtesting", backtest_result(trades=2_000))
    completed("training", training_result())

    with CaptureQueriesContext(connection) as queries:
        body = admin_client.get(CHANGELIST).content.decode()

    assert whole_result_reads(queries) == []
    assert len(body) < 60_000


def test_the_list_gives_its_columns_the_width_of_the_navigation_sidebar(admin_client):
    OperationFactory()

    body = admin_client.get(CHANGELIST).content.decode()

    assert 'id="nav-sidebar"' not in body
    assert 'id="nav-sidebar"' in admin_client.get(reverse("admin:operations_worker_changelist")).content.decode()
