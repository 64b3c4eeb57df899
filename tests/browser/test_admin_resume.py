"""The operations admin in a real browser: log in, filter the resumable operations, resume one with the
admin action, and watch it finish on its page (progress bar and loss chart as Chromium draws them)."""

from __future__ import annotations

import re

import pytest
import torch
from django_q.models import OrmQ
from playwright.sync_api import Locator, Page, expect

from checkpoints.models import Checkpoint
from marketdata.series import generate_bars, write_series
from operations.models import Operation
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_create
from runtime.tasks import RUN_OPERATION_TASK
from tests.browser.charts import drawn
from tests.conftest import queued_operation_ids
from tests.factories import OperationFactory
from tests.support.processes import run_and_cancel_at, run_operation_in_thread

# Chromium is a real child process; the worker that runs the resumed operation is a thread of this one.
# The live server answers from a thread and connection of its own: what the test writes must be committed.
pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

EPOCHS = 30
CANCEL_AT = 3  # epochs: the cancel lands long before the run would end (about 0.1 s an epoch)
PARAMS = {
    "symbol": "SYN",
    "timeframe": "1h",
    "start": None,
    "end": None,
    "epochs": EPOCHS,
    "batch_size": 16,
    "hidden_sizes": [32, 16],
    "learning_rate": 0.003,
    "seed": 11,
    "validation_split": 0.2,
    "checkpoint_every": 3,
    "checkpoint_seconds": None,
    "checkpoints_enabled": True,
}
RUN_TIMEOUT = 60


@pytest.fixture
def one_torch_thread():
    """One torch thread, as the cluster tests' workers have (OMP_NUM_THREADS=1): on a small, busy machine
    torch's threads fight the live server and Chromium for the cores, and an epoch takes ten times longer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def market(settings, tmp_path, checkpoint_dir, one_torch_thread):
    settings.DATA_DIR = tmp_path / "data"
    settings.MODELS_DIR = tmp_path / "models"
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    write_series(generate_bars(bars=3000, timeframe="1h", seed=5), "SYN", "1h")


@pytest.fixture
def cancelled_training(market) -> Operation:
    """A real training run cancelled after a few epochs: CANCELLED, with its cancellation checkpoint."""
    operation = operation_create(operation_type="training", params=PARAMS, actor="test", enqueue=False)
    assert run_and_cancel_at(operation.pk, CANCEL_AT, timeout=RUN_TIMEOUT) == "cancelled"
    operation.refresh_from_db()
    assert operation.status == S.CANCELLED and Checkpoint.objects.filter(pk=operation.pk).exists()
    return operation


def box(locator: Locator) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not rendered"
    return found


def assert_progress_bar(progress: Locator, percent: float, status: str) -> None:
    """The bar as drawn: its filled width is `percent` of its frame, its label says so, its colour is its status'."""
    bar = progress.locator(".op-progress-bar")
    expect(bar).to_have_class(re.compile(rf"\bop-status-{status}\b"))
    frame, filled = box(progress), box(bar)
    assert frame["width"] > 50 and frame["height"] > 5  # operations/admin.css loaded: an empty div has no height
    inner = progress.evaluate("element => element.clientWidth")  # the frame less its border
    assert filled["width"] == pytest.approx(inner * percent / 100, abs=1.5)
    assert filled["height"] > 5
    assert bar.evaluate("element => getComputedStyle(element).backgroundColor") not in ("", "rgba(0, 0, 0, 0)")
    expect(progress.locator(".op-progress-label")).to_have_text(f"{percent:.0f}%")


def test_resume_a_cancelled_training_from_the_admin(page: Page, console_errors, admin_user, cancelled_training):
    operation = cancelled_training
    OperationFactory(status=S.PENDING)  # neither of these may be offered for resuming
    OperationFactory(status=S.FAILED)   # failed, but without a checkpoint

    # Log in through the admin's login page.
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.get_by_label("Username").fill(admin_user.username)
    page.get_by_label("Password").fill("secret-pass")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#site-name")).to_be_visible()

    # Open the operations list, then filter it to the resumable ones from the sidebar.
    page.locator("tr.model-operation").get_by_role("link", name="Operations").click()
    expect(page).to_have_url(re.compile(r"/admin/operations/operation/$"))
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    page.locator('#changelist-filter details[data-filter-title="resumable"]').get_by_role("link", name="Yes").click()
    expect(page).to_have_url(re.compile(r"[?&]resumable=yes"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text(operation.pk)
    expect(row).to_contain_text("resumable")
    # The bar shows how far the run got before it was cancelled.
    assert 0 < operation.progress_percent < 100
    assert_progress_bar(row.locator(".op-progress"), operation.progress_percent, "cancelled")

    # Resume it with the admin action: tick it, choose the action, Go.
    row.locator("input.action-select").check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    page.locator('select[name="action"]').select_option("resume_operations")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("ul.messagelist li.success")).to_have_text(f"1 resuming: {operation.pk}.")
    assert Operation.objects.get(pk=operation.pk).status == S.RESUMING
    assert queued_operation_ids() == [operation.pk]
    expect(page.locator("#result_list tbody tr")).to_have_count(0)  # no longer resumable

    # A worker takes it from the queue: the runtime's task, in a thread beside the live server.
    assert OrmQ.objects.get().task["func"] == RUN_OPERATION_TASK
    thread, outcome = run_operation_in_thread(operation.pk)
    thread.join(timeout=RUN_TIMEOUT)
    assert outcome == ["completed"], outcome or "still running"
    operation.refresh_from_db()
    assert operation.status == S.COMPLETED and operation.progress_percent == 100

    # Its page: the full progress bar and the loss curves of all its epochs, as drawn.
    page.locator("#changelist-filter").get_by_role("link", name="Clear all filters").click()
    page.get_by_role("link", name=operation.pk).click()
    expect(page.locator("h1")).to_contain_text("View operation")
    expect(page.locator("#content")).to_contain_text("Resume from the cancellation checkpoint")
    assert_progress_bar(page.locator(".op-progress"), 100, "completed")
    expect(page.locator("h2", has_text="Training curves")).to_be_visible()

    # The loss per epoch as uPlot drew it: both curves over every epoch, the best one marked where it is.
    history = operation.result["history"]
    assert len(history) == EPOCHS
    loss = drawn(page.locator("figure.op-chart").first)
    assert loss["series"] == ["epoch", "train loss", "validation loss"]
    assert loss["data"][0] == list(range(1, EPOCHS + 1))
    assert loss["data"][1] == [row["train_loss"] for row in history]
    assert loss["data"][2] == [row["val_loss"] for row in history]
    assert loss["width"] > 300 and loss["painted"] > 1_000
    (marker,) = loss["markers"]
    assert marker["text"] == f"best epoch {operation.result['best_epoch']}" and marker["visible"]
    assert marker["left"] == pytest.approx(marker["expected"], abs=2)

    assert console_errors == []
