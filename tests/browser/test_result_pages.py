"""The result pages as Chromium shows them under `make run`'s configuration (scripts/run.sh: collectstatic, DEBUG
off, WhiteNoise): a backtest of 100,000 trades whose page loads in under a second, its equity beside buy-and-hold
and its drawdown drawn over the data's dates, its trades a page at a time; a training's loss with its best epoch
marked; the operations list at 1400 px with a failed run's error. Each page leaves a screenshot in
var/test-artifacts/screenshots/ (result-*.png)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.utils import timezone
from playwright.sync_api import Locator, Page, expect

from checkpoints.models import Checkpoint, CheckpointType
from operations.models import Operation, OperationEvent
from operations.models import OperationStatus as S
from tests.browser.charts import drawn
from tests.browser.conftest import collect_errors, log_in, shot
from tests.factories import OperationFactory, WorkerFactory
from tests.support.results import backtest_result, training_result

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

TRADES = 100_000
LOAD_BUDGET_MS = 1000
ERROR = ("ValueError: too little data to train: 12 bar(s) in the range 2024-01-01 to 2024-01-02 after the features' "
         "warm-up of 50 bars; import more bars with manage.py marketdata import FILE --symbol SYN --timeframe 1h, "
         "or widen --start and --end")
DATE_TICK = re.compile(r"^(\d{4}|[A-Z][a-z]{2} \d{4}|\d{4}-\d{2}-\d{2}( \d{2}:\d{2})?)$")


@pytest.fixture
def admin_password(admin_user):
    """Hashed as the base settings hash (the test settings' fast hasher is unknown to make run's processes)."""
    hasher = PBKDF2PasswordHasher()
    admin_user.password = hasher.encode("secret-pass", hasher.salt())
    admin_user.save(update_fields=["password"])
    return admin_user


def admin_path(operation: Operation, *tail: str) -> str:
    return "/admin/operations/operation/" + "/".join([quote(operation.pk), *tail]) + "/"


def navigation(page: Page) -> dict[str, float]:
    """The last navigation as the browser timed it (ms from its start) and sized it (bytes)."""
    return page.evaluate("""() => {
        const entry = performance.getEntriesByType("navigation")[0];
        return {server: entry.responseStart - entry.requestStart, response_end: entry.responseEnd - entry.startTime,
                dom_ready: entry.domContentLoadedEventEnd - entry.startTime, load: entry.loadEventEnd - entry.startTime,
                transferred: entry.transferSize, body: entry.decodedBodySize};
    }""")


def open_timed(page: Page, path: str) -> dict[str, float]:
    page.goto(path, wait_until="load")
    timing = navigation(page)
    print(f"{path}: server {timing['server']:.0f} ms, load event {timing['load']:.0f} ms, "
          f"page {timing['body']:,} bytes ({timing['transferred']:,} transferred)")
    return timing


def figure(page: Page, label: str) -> Locator:
    """A figure of the result summary, by its label."""
    return page.locator(".op-figure").filter(has=page.locator("dt").get_by_text(label, exact=True))


def assert_date_ticks(ticks: list[str], first_year: int, last_year: int) -> None:
    assert len(ticks) >= 3, ticks
    for tick in ticks:
        assert DATE_TICK.match(tick), tick
        assert first_year <= int(re.search(r"\d{4}", tick).group()) <= last_year, tick


@pytest.fixture
def backtest(admin_password) -> Operation:
    return OperationFactory(
        operation_type="backtesting", status=S.COMPLETED, owner=admin_password, progress_percent=100.0,
        result=backtest_result(trades=TRADES),
        params={"symbol": "SYN", "timeframe": "15m", "start": None, "end": None, "strategy": "sma_cross",
                "strategy_params": {"fast": 3, "slow": 8, "allow_short": True}, "initial_cash": 100_000.0,
                "commission": 0.00002, "slippage": 0.0001},
        started_at=timezone.now() - timedelta(minutes=3), completed_at=timezone.now(),
    )


def test_a_backtest_of_a_hundred_thousand_trades_reads_in_under_a_second(make_run, make_run_page, backtest):
    page, result = make_run_page, backtest.result
    errors = collect_errors(page, make_run.url)
    log_in(page, backtest.owner)

    timing = open_timed(page, admin_path(backtest, "change"))
    assert timing["load"] < LOAD_BUDGET_MS, timing
    assert timing["body"] < 150_000, timing

    # The figures first, with their units; the raw result only behind its link.
    expect(figure(page, "Trades").locator("dd")).to_have_text("100,000")
    expect(figure(page, "Sharpe ratio").locator("dd")).to_have_text("-0.83 (annualised)")
    expect(page.locator("#content")).not_to_contain_text("-0.8335994209353337")
    raw = page.locator("a.op-raw-link")
    expect(raw).to_have_attribute("href", admin_path(backtest, "result", "raw"))

    # Equity beside buy-and-hold, and the drawdown, over the data's dates.
    equity, drawdown = page.locator("figure.op-chart").all()
    first_year, last_year = int(result["first_bar"][:4]), int(result["last_bar"][:4])
    chart = drawn(equity)
    assert chart["series"] == ["time", "strategy", "buy and hold"]
    assert len(chart["data"][0]) == len(result["equity_curve"]) and None not in chart["data"][2]
    assert chart["data"][1] == [value for _, value in result["equity_curve"]]
    assert chart["width"] > 600 and chart["painted"] > 5_000
    assert_date_ticks(chart["ticks"], first_year, last_year)
    under = drawn(drawdown)
    assert under["series"] == ["time", "drawdown"]
    assert min(under["data"][1]) == pytest.approx(-result["metrics"]["max_drawdown"]) and max(under["data"][1]) <= 0
    assert_date_ticks(under["ticks"], first_year, last_year)
    expect(page.locator(".op-charts-module h2")).to_contain_text(f"Equity curve ({result['first_bar'][:10]} 00:00 UTC")
    shot(page, "result-backtest")

    # Its trades, a hundred a page, sorted by a click on a heading.
    page.get_by_role("link", name="Trades", exact=True).click()
    expect(page).to_have_url(re.compile(r"/result/trades/$"))
    timing = navigation(page)
    print(f"trades page: server {timing['server']:.0f} ms, load event {timing['load']:.0f} ms, "
          f"{timing['body']:,} bytes")
    assert timing["load"] < LOAD_BUDGET_MS, timing
    rows = page.locator("#op-trades tbody tr")
    expect(rows).to_have_count(100)
    expect(page.locator(".op-trades-summary")).to_contain_text("Trades 1–100 of 100,000")
    page.locator("#op-trades thead").get_by_role("link", name="PnL").click()
    page.locator("#op-trades thead").get_by_role("link", name="PnL ▲").click()
    expect(page).to_have_url(re.compile(r"sort=-pnl"))
    expect(page.locator("#op-trades thead th.sorted.descending")).to_contain_text("PnL")
    best = max(trade["pnl"] for trade in result["trades"])
    expect(rows.first.locator("td").nth(7)).to_have_text(f"{best:,.2f}")
    page.locator(".op-pages").first.get_by_role("link", name="last »").click()
    expect(page.locator(".op-pages").first).to_contain_text("page 1000 of 1000")
    shot(page, "result-trades")

    # A page that does not exist is said so, in the admin's frame.
    page.goto(admin_path(backtest, "result", "trades") + "?page=1001", wait_until="load")
    expect(page.locator(".errornote")).to_contain_text("page: 1001 is past the last page, 1000")
    errors[:] = [error for error in errors if "?page=1001" not in error]  # the 400 asked for, and its console line

    # The raw result, behind its link: the stored JSON.
    answer = page.request.get(admin_path(backtest, "result", "raw"))
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert len(answer.body()) > 10_000_000
    assert errors == []


def test_the_list_a_training_and_a_failed_run_read_at_1400_px(make_run, make_run_page, admin_password):
    page = make_run_page
    errors = collect_errors(page, make_run.url)
    owner = admin_password
    training = OperationFactory(operation_type="training", status=S.COMPLETED, owner=owner, progress_percent=100.0,
                                result=training_result(epochs=40), params={"symbol": "SYN", "timeframe": "1h",
                                                                          "epochs": 40, "hidden_sizes": [256, 128]})
    failed = OperationFactory(operation_type="training", status=S.FAILED, owner=owner, progress_percent=12.5,
                              error_message=ERROR, params={"symbol": "SYN", "timeframe": "1h"})
    began = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    for seconds, (before, after, reason) in enumerate([("", S.PENDING, "Created"),
                                                       (S.PENDING, S.RUNNING, "Claimed by worker vm:resilient:1"),
                                                       (S.RUNNING, S.FAILED, "Error: ValueError")]):
        OperationEvent.objects.create(operation=failed, from_status=before, to_status=after, reason=reason,
                                      actor="worker:vm:resilient:1", at=began + timedelta(seconds=seconds))
    worker = WorkerFactory(worker_id="gpu-host-07.research.example.com:resilient:48213")
    cancelled = OperationFactory(operation_type="backtesting", status=S.CANCELLED, owner=owner, worker=worker,
                                 progress_percent=37.5, last_heartbeat_at=timezone.now(), attempt=2)
    Checkpoint.objects.create(operation=cancelled, checkpoint_type=CheckpointType.CANCELLATION,
                              state={"bar_index": 150_000}, artifacts_path="op/attempt-2", state_size_bytes=3_400_000)
    OperationFactory(operation_type="backtesting", status=S.COMPLETED, owner=owner, progress_percent=100.0,
                     result=backtest_result(trades=20))
    log_in(page, owner)

    # The list: every column within a 1400 px window, the error's start in its column, all of it on hover.
    open_timed(page, "/admin/operations/operation/")
    table = page.locator("#changelist .results")
    width = table.evaluate("element => [element.scrollWidth, element.clientWidth]")
    assert width[0] <= width[1], f"the list is clipped: {width[0]} px of table in {width[1]} px"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400
    row = page.locator("#result_list tbody tr").filter(has_text="ValueError")
    error = row.locator(".op-error")
    expect(error).to_have_attribute("title", ERROR)
    expect(error).to_contain_text("ValueError: too little data to train")
    expect(row.locator("td.field-created_at")).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"))
    shot(page, "result-list")

    # A training: its loss per epoch with the best epoch marked where the chart puts that epoch.
    open_timed(page, admin_path(training, "change"))
    best = training.result["best_epoch"]
    expect(figure(page, "Best epoch").locator("dd")).to_have_text(str(best))
    loss = drawn(page.locator("figure.op-chart").first)
    assert loss["series"] == ["epoch", "train loss", "validation loss"]
    assert loss["data"][0] == list(range(1, 41))
    assert loss["ticks"] and all(tick.isdigit() and 1 <= int(tick) <= 40 for tick in loss["ticks"])
    (marker,) = loss["markers"]
    assert marker["text"] == f"best epoch {best}" and marker["visible"]
    assert marker["left"] == pytest.approx(marker["expected"], abs=2)
    shot(page, "result-training")

    # A failed run: its error on its page, and its events to the second (a second apart, three times).
    open_timed(page, admin_path(failed, "change"))
    expect(page.locator(".field-error_message")).to_contain_text("too little data to train")
    times = page.locator(".inline-related tbody td.field-at").all_inner_texts()
    assert [when[-8:] for when in times] == [(began + timedelta(seconds=s)).strftime("%H:%M:%S") for s in (2, 1, 0)]
    shot(page, "result-failed")
    assert errors == []
