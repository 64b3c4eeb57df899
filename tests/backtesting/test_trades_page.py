"""A backtest's trades on their own admin page: a hundred a page, sorted by any column from the query string, read
by the database a page at a time; a bad page or column is a 400 that says why; only those who may see the
operation see its trades."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from backtesting import trades as trades_module
from backtesting.trades import BY_KEY, PER_PAGE, trades_page
from operations.models import Operation
from operations.models import OperationStatus as S
from tests.factories import OperationFactory, StaffFactory, UserFactory, ViewOnlyStaffFactory
from tests.support.processes import ROOT
from tests.support.results import backtest_result

pytestmark = pytest.mark.django_db

TRADES = 250


def trades_url(operation: Operation) -> str:
    return reverse("admin:operations_operation_result_page", args=[quote(operation.pk), "trades"])


def completed_backtest(trades: int = TRADES, **fields) -> Operation:
    return OperationFactory(operation_type="backtesting", status=S.COMPLETED,
                            result=backtest_result(trades=trades), **fields)


def numbers_shown(body: str) -> list[int]:
    """The trades' numbers (the first column) of the page's table, top to bottom."""
    rows = re.findall(r"<tr><td class=\"op-numeric\">([\d,]+)</td>", body)
    return [int(number.replace(",", "")) for number in rows]


@pytest.fixture
def backtest() -> Operation:
    return completed_backtest()


# --- pages and order

def test_the_first_page_lists_the_first_hundred_trades_in_the_order_they_closed(admin_client, backtest):
    answer = admin_client.get(trades_url(backtest))

    body = answer.content.decode()
    assert answer.status_code == 200
    assert numbers_shown(body) == list(range(1, PER_PAGE + 1))
    assert f"Trades 1–100 of {TRADES}, sorted by #." in body
    assert "page 1 of 3" in body
    first = backtest.result["trades"][0]
    assert first["entry_time"].replace("T", " ").removesuffix("Z") in body


def test_the_last_page_holds_the_rest(admin_client, backtest):
    body = admin_client.get(trades_url(backtest), {"page": 3}).content.decode()

    assert numbers_shown(body) == list(range(201, TRADES + 1))
    assert "page 3 of 3" in body and "Trades 201–250 of 250" in body


def test_sorted_by_pnl_descending_across_pages(admin_client, backtest):
    trades = backtest.result["trades"]
    by_pnl = sorted(range(1, TRADES + 1), key=lambda number: -trades[number - 1]["pnl"])

    first = admin_client.get(trades_url(backtest), {"sort": "-pnl"}).content.decode()
    second = admin_client.get(trades_url(backtest), {"sort": "-pnl", "page": 2}).content.decode()

    assert numbers_shown(first) + numbers_shown(second) == by_pnl[:200]
    assert 'class="op-numeric sorted descending"' in first
    assert "?sort=pnl&amp;page=1" in first  # its heading sorts the other way
    assert "?sort=-pnl&amp;page=2" in first  # the next page keeps the order


@pytest.mark.parametrize("sort", ["entry_time", "-exit_time", "side", "quantity", "-return", "commission",
                                  "-bars_held", "-number"])
def test_every_column_sorts(admin_client, backtest, sort):
    answer = admin_client.get(trades_url(backtest), {"sort": sort})

    assert answer.status_code == 200 and len(numbers_shown(answer.content.decode())) == PER_PAGE


def test_the_database_and_python_pages_agree_on_every_column_and_on_trades_of_another_shape():
    """PostgreSQL pages in SQL; other databases (SQLite) read the list and sort it here: the same pages."""
    result = backtest_result(trades=30)
    result["trades"][3] = {"pnl": "high", "entry_time": 5, "side": None}
    result["trades"][7] = "not a trade"
    result["trades"][9] = None
    result["trades"][11]["pnl"] = result["trades"][12]["pnl"]  # a tie: the earlier first
    operation = OperationFactory(operation_type="backtesting", status=S.COMPLETED, result=result)
    for key in BY_KEY:
        for descending in (False, True):
            for offset in (0, 5, 25, 40):  # the first page, one inside, the last (part of one), past the last
                in_sql = trades_page(operation.pk, sort=key, descending=descending, offset=offset, limit=20)
                in_python = trades_module._python_page(operation.pk, key, descending, offset, 20)
                assert in_sql.total == in_python.total == 30
                assert [n for n, _ in in_sql.rows] == [n for n, _ in in_python.rows], (key, descending, offset)
                assert [trade for _, trade in in_sql.rows] == [trade for _, trade in in_python.rows]
                assert len(in_sql.rows) == max(0, min(20, 30 - offset))


def test_trades_without_a_value_sort_last_both_ways():
    result = backtest_result(trades=5)
    del result["trades"][1]["pnl"]
    operation = OperationFactory(operation_type="backtesting", status=S.COMPLETED, result=result)

    for descending in (False, True):
        page = trades_page(operation.pk, sort="pnl", descending=descending)
        assert [n for n, _ in page.rows][-1] == 2


# --- what the page costs

def test_a_page_reads_a_hundred_trades_whatever_the_page_in_the_same_queries(admin_client, backtest):
    def queries(**query) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(trades_url(backtest), query).status_code == 200
        return [entry["sql"] for entry in captured.captured_queries]

    first, last, sorted_ = queries(), queries(page=3), queries(sort="-pnl", page=2)

    assert len(first) == len(last) == len(sorted_)
    # The admin's own row of the operation never carries its result; only the page's query reads it, in SQL.
    assert not [sql for sql in first if '"operations_operation"."result"' in sql]


def test_a_backtest_of_a_hundred_thousand_trades_pages_in_well_under_a_second(admin_client):
    operation = completed_backtest(trades=100_000)
    admin_client.get(trades_url(operation))  # the first request of a test client builds its templates

    for query in ({}, {"sort": "-pnl", "page": 500}, {"page": 1000}):
        started = time.perf_counter()
        answer = admin_client.get(trades_url(operation), query)
        elapsed = time.perf_counter() - started
        print(f"trades page {query}: {elapsed * 1000:.0f} ms, {len(answer.content):,} bytes")
        assert answer.status_code == 200 and elapsed < 1.0
        assert len(answer.content) < 150_000


# --- bad requests: a 400 that names the parameter, never a 500

@pytest.mark.parametrize(("query", "said"), [
    ({"page": "abc"}, "page: 'abc' is not a page number"),
    ({"page": "0"}, "page: '0' is not a page number"),
    ({"page": "-1"}, "page: '-1' is not a page number"),
    ({"page": "1.5"}, "page: '1.5' is not a page number"),
    ({"page": "9" * 40}, "is not a page number"),
    ({"page": "4"}, "page: 4 is past the last page, 3 (250 trades, 100 a page)."),
    ({"sort": "bogus"}, "sort: 'bogus' is not a column of the trades; use one of number, entry_time"),
    ({"sort": "--pnl"}, "sort: '--pnl' is not a column"),
    ({"sort": "trades'; DROP TABLE x; --"}, "is not a column of the trades"),
])
def test_a_page_or_column_that_does_not_exist_is_a_400_that_says_why(admin_client, backtest, query, said):
    answer = admin_client.get(trades_url(backtest), query)

    assert answer.status_code == 400
    assert said in answer.content.decode().replace("&#x27;", "'")
    assert Operation.objects.filter(pk=backtest.pk).exists()


def test_a_forged_column_name_is_shown_escaped(admin_client, backtest):
    body = admin_client.get(trades_url(backtest), {"sort": "<script>alert(1)</script>"}).content.decode()

    assert "<script>alert(1)" not in body and "&lt;script&gt;" in body


@pytest.mark.parametrize("trades", ["many", [None], [1, "x", {"pnl": "high", "side": "<b>long</b>"}], {"a": 1}])
def test_trades_of_another_shape_list_what_they_can(admin_client, trades):
    operation = OperationFactory(operation_type="backtesting", status=S.COMPLETED, result={"trades": trades})

    answer = admin_client.get(trades_url(operation))

    assert answer.status_code == 200
    assert "<b>long</b>" not in answer.content.decode()


def test_a_result_without_trades_says_so(admin_client):
    operation = OperationFactory(operation_type="backtesting", status=S.COMPLETED, result={"metrics": {}})

    answer = admin_client.get(trades_url(operation))

    assert answer.status_code == 200 and "This backtest closed no trades." in answer.content.decode()


def test_a_training_has_no_trades_page(admin_client):
    operation = OperationFactory(operation_type="training", status=S.COMPLETED, result={"history": []})

    assert admin_client.get(trades_url(operation)).status_code == 404


def test_an_unknown_operation_has_no_trades_page(admin_client):
    url = reverse("admin:operations_operation_result_page", args=["op_backtesting_20260101_000000_deadbeef", "trades"])

    assert admin_client.get(url).status_code == 404


# --- who sees them

def logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password="secret-pass")
    return client


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(backtest):
    for client in (Client(), logged_in(UserFactory())):
        answer = client.get(trades_url(backtest))
        assert answer.status_code == 302 and answer["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_view_permission_are_refused(backtest):
    staff = UserFactory(is_staff=True)

    assert logged_in(staff).get(trades_url(backtest)).status_code == 403


def test_another_users_backtest_is_missing_to_a_viewer_who_sees_only_their_own(backtest):
    viewer = ViewOnlyStaffFactory()
    own = completed_backtest(trades=3, owner=viewer)
    client = logged_in(viewer)

    assert client.get(trades_url(backtest)).status_code == 404
    assert client.get(trades_url(own)).status_code == 200


def test_operators_see_everyones_trades(backtest):
    assert logged_in(StaffFactory()).get(trades_url(backtest)).status_code == 200


def test_the_view_permission_alone_is_enough_for_ones_own(backtest):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_operation"))
    own = completed_backtest(trades=3, owner=staff)

    assert logged_in(staff).get(trades_url(own)).status_code == 200


SQLITE_AGREES = """
import django, json, sys
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from backtesting import trades as trades_module
from backtesting.trades import BY_KEY, trades_page
from tests.factories import OperationFactory
from tests.support.results import backtest_result

result = backtest_result(trades=30)
result["trades"][3] = {"pnl": "high", "entry_time": 5, "side": None}
result["trades"][7] = "not a trade"
result["trades"][9] = None
result["trades"][11]["pnl"] = result["trades"][12]["pnl"]
operation = OperationFactory(operation_type="backtesting", status="COMPLETED", result=result)
checked = 0
for key in BY_KEY:
    for descending in (False, True):
        for offset in (0, 5, 25, 40):
            in_sql = trades_page(operation.pk, sort=key, descending=descending, offset=offset, limit=20)
            in_python = trades_module._python_page(operation.pk, key, descending, offset, 20)
            assert in_sql.total == in_python.total == 30, (key, in_sql.total)
            assert in_sql.rows == in_python.rows, (key, descending, offset, in_sql.rows, in_python.rows)
            checked += 1
empty = OperationFactory(operation_type="backtesting", status="COMPLETED", result={"trades": "none"})
assert trades_page(empty.pk).total == 0 and trades_page("op_backtesting_20240101_120000_0123abcd") is None
print(f"agreed on {checked} pages")
"""


@pytest.mark.process
def test_on_sqlite_the_database_and_python_pages_agree_too(tmp_path):
    """`make run`'s default database pages in SQLite's JSON functions: the same pages as the Python reading."""
    script = tmp_path / "agree.py"
    script.write_text(SQLITE_AGREES)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base", "VAR_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"agreed on {len(BY_KEY) * 2 * 4} pages"
