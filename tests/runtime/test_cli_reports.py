"""The command line reports outcomes: `operations status` and the end of `--follow` print the result's figures
(a training's validation loss and accuracy, a backtest's return, Sharpe, drawdown and trades, a session's
verdict and reasons); a cancel that came too late says so; the resume command is printed wherever an operation
becomes resumable; `checkpoints show` prints a training's metrics so far; cleanup removes orphan folders."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.db import connections
from django.utils import timezone

from checkpoints.services import checkpoint_save
from operations.models import Operation, OperationStatus
from tests.factories import OperationFactory, RunningOperationFactory
from tests.support.commands import command_output as run

S = OperationStatus
pytestmark = pytest.mark.django_db

HISTORY = [{"epoch": 1, "train_loss": 0.70, "val_loss": 0.69, "val_accuracy": 0.51},
           {"epoch": 2, "train_loss": 0.66, "val_loss": 0.6731, "val_accuracy": 0.5521},
           {"epoch": 3, "train_loss": 0.64, "val_loss": 0.6802, "val_accuracy": 0.546}]
TRAINING = {"epochs_completed": 3, "best_epoch": 2, "best_val_loss": 0.6731, "best_val_accuracy": 0.5521,
            "final_val_loss": 0.6802, "final_val_accuracy": 0.546, "history": HISTORY,
            "timings": {"train_seconds": 83.2}}
BACKTEST = {"bars": 5976, "first_bar": "2017-09-28T00:00:00Z", "last_bar": "2018-06-03T23:00:00Z", "trades": [],
            "metrics": {"total_return": 0.5436, "buy_and_hold_return": 0.3353, "annualised_return": 0.82,
                        "sharpe": 1.7213, "max_drawdown": 0.3722, "number_of_trades": 1664, "win_rate": 0.51,
                        "exposure": 0.97, "final_equity": 154_360.0, "initial_cash": 100_000.0}}
SESSION = {"verdict": "rejected", "score": -0.021,
           "reasons": ["passed: Sharpe 1.20 ≥ 0.5", "failed: 3 trades < 10"],
           "metrics": {"total_return": 0.01, "sharpe": 1.2, "max_drawdown": 0.1, "number_of_trades": 3}}


def block(output: str, title: str) -> list[str]:
    """The lines of a block (`Result:`), up to the next line that is not indented."""
    lines = output.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize(("operation_type", "result", "params", "expected"), [
    ("training", TRAINING, {"epochs": 3}, [
        "  Epochs:                                3 of 3",
        "  Best epoch:                            2",
        "  Best validation loss:                  0.6731",
        "  Validation accuracy at the best epoch: 55.21 %",
        "  Final validation loss:                 0.6802",
        "  Final validation accuracy:             54.60 %",
        "  Training time:                         1 min 23 s",
    ]),
    ("backtesting", BACKTEST, {}, [
        "  Total return:        +54.36 %",
        "  Buy-and-hold return: +33.53 %",
        "  Annualised return:   +82.00 %",
        "  Sharpe ratio:        1.72 (annualised)",
        "  Maximum drawdown:    37.22 %",
        "  Trades:              1,664",
        "  Win rate:            51.00 %",
        "  Exposure:            97.00 % of the bars in a position",
        "  Final equity:        154,360.00 from 100,000.00",
        "  Bars:                5,976 (2017-09-28 00:00 to 2018-06-03 23:00 UTC)",
    ]),
    ("agent_research", SESSION, {}, [
        "  Verdict:          rejected",
        "  Reasons:",
        "    passed: Sharpe 1.20 ≥ 0.5",
        "    failed: 3 trades < 10",
        "  Score:            -2.10 % (return in excess of buy-and-hold)",
        "  Total return:     +1.00 %",
        "  Sharpe ratio:     1.20",
        "  Maximum drawdown: 10.00 %",
        "  Trades:           3",
    ]),
])
def test_status_prints_the_results_figures(operation_type, result, params, expected):
    operation = OperationFactory(operation_type=operation_type, status=S.COMPLETED, result=result, params=params,
                                 progress_current=3, progress_total=3, progress_unit="epochs", progress_percent=100)
    output = run("operations", "status", operation.pk)
    assert block(output, "Result:") == expected
    assert "(0/?" not in output


def test_status_without_a_total_shows_no_empty_count():
    operation = OperationFactory(status=S.PENDING, progress_total=None)
    progress = next(line for line in run("operations", "status", operation.pk).splitlines()
                    if line.startswith("Progress:"))
    assert progress == "Progress:   0.0%"


def test_a_cancel_after_completion_says_the_operation_had_already_completed():
    operation = OperationFactory(operation_type="backtesting", status=S.COMPLETED, result=BACKTEST,
                                 completed_at=timezone.now())
    with pytest.raises(CommandError) as refused:
        run("operations", "cancel", operation.pk)
    assert str(refused.value).startswith(f"OPERATION_NOT_CANCELLABLE: {operation.pk} had already completed (at ")
    assert str(refused.value).endswith("before the cancel arrived.")


def test_a_cancel_that_its_run_outran_is_said_by_status_and_by_cancel_follow(transactional_db):
    operation = RunningOperationFactory(operation_type="backtesting")
    assert "Cancel requested for" in run("operations", "cancel", operation.pk)
    # Its worker completes before it acts on the request.
    Operation.objects.filter(pk=operation.pk).update(status=S.COMPLETED, result=BACKTEST, completed_at=timezone.now())
    output = run("operations", "status", operation.pk)
    assert "(it completed before its worker acted on it)" in next(
        line for line in output.splitlines() if line.startswith("Cancel requested:"))
    assert block(output, "Result:")[0] == "  Total return:        +54.36 %"

    again = RunningOperationFactory(operation_type="backtesting")

    def completes_first() -> None:
        try:
            time.sleep(0.8)
            Operation.objects.filter(pk=again.pk).update(status=S.COMPLETED, result=BACKTEST,
                                                         completed_at=timezone.now())
        finally:
            connections.close_all()

    worker = threading.Thread(target=completes_first)
    worker.start()
    try:
        lines = run("operations", "cancel", again.pk, "--follow").splitlines()
    finally:
        worker.join(timeout=10)
    assert lines[0].startswith(f"Cancel requested for {again.pk}")
    assert lines[1:4] == [f"{again.pk}: RUNNING", f"{again.pk} COMPLETED (it completed before its worker acted on "
                                                  "the cancel)", "Result:"]


def stopped(checkpoint_dir, operation_type="training", status=S.CANCELLED, state=None, **fields) -> Operation:
    operation = OperationFactory(operation_type=operation_type, status=status, **fields)
    saved = checkpoint_save(operation_id=operation.pk, checkpoint_type="cancellation",
                            state=state or {"epoch": 3}, artifacts={"model.pt": b"weights"})
    assert saved.saved, saved.error
    return operation


def test_a_cancel_that_ends_an_operation_resumable_prints_its_resume_command(checkpoint_dir):
    operation = stopped(checkpoint_dir, status=S.RESUMING)  # a resume waiting for a worker, called off
    lines = run("operations", "cancel", operation.pk).splitlines()
    assert lines == [f"Operation {operation.pk} cancelled.",
                     f"Resume with: python manage.py operations resume {operation.pk}"]


def test_a_cancel_requested_says_where_to_see_its_outcome():
    operation = RunningOperationFactory()
    lines = run("operations", "cancel", operation.pk).splitlines()
    assert lines[0].startswith(f"Cancel requested for {operation.pk}; its worker will checkpoint and stop within a "
                               "heartbeat (")
    assert lines[1] == f"Its outcome: python manage.py operations status {operation.pk} (--follow waits for it)."


def test_checkpoints_show_prints_a_trainings_metrics_so_far_and_its_resume_command(checkpoint_dir):
    state = {"epoch": 3, "epochs": 30, "history": HISTORY, "best_val_loss": 0.6731, "best_epoch": 2,
             "train_seconds": 41.0}
    operation = stopped(checkpoint_dir, state=state, params={"epochs": 30})
    output = run("checkpoints", "show", operation.pk)
    assert block(output, "Metrics so far:") == [
        "  Epochs:                                3 of 30",
        "  Best epoch:                            2",
        "  Best validation loss:                  0.6731",
        "  Validation accuracy at the best epoch: 55.21 %",
        "  Last validation loss:                  0.6802",
        "  Last validation accuracy:              54.60 %",
        "  Training time:                         41.0 s",
    ]
    assert output.splitlines()[-1] == f"Resume with: python manage.py operations resume {operation.pk}"


def test_checkpoints_show_of_a_backtest_has_no_training_metrics(checkpoint_dir):
    operation = stopped(checkpoint_dir, operation_type="backtesting", state={"bar_index": 120})
    output = run("checkpoints", "show", operation.pk)
    assert "Metrics so far:" not in output and output.splitlines()[-1].startswith("Resume with: ")


def test_manual_cleanup_removes_orphan_folders_and_says_how_many(checkpoint_dir, settings):
    settings.CHECKPOINT_ORPHAN_GRACE_SECONDS = 60
    kept = stopped(checkpoint_dir)
    orphan = checkpoint_dir / "op_training_20240101_120000_0123abcd" / "save-1"
    orphan.mkdir(parents=True)
    (orphan / "model.pt").write_bytes(b"left behind by a crash")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    young = checkpoint_dir / "op_training_20240101_120000_0123abce" / "save-1"  # a save in progress, perhaps
    young.mkdir(parents=True)

    dry = run("checkpoints", "cleanup", "--dry-run").splitlines()
    assert dry == ["Would delete the orphan folder op_training_20240101_120000_0123abcd/save-1 (no checkpoint points "
                   "at it)", "Would delete 0 checkpoints and 1 orphan folder."]
    assert orphan.exists()
    body = json.loads(run("checkpoints", "cleanup", "--json"))
    assert body == {"dry_run": False, "deleted": [], "count": 0,
                    "orphan_folders": ["op_training_20240101_120000_0123abcd/save-1"]}
    assert not orphan.exists() and young.exists()
    assert Path(checkpoint_dir / kept.checkpoint.artifacts_path).exists()


def test_checkpoints_delete_prints_json_only_with_force(checkpoint_dir):
    operation = stopped(checkpoint_dir)
    with pytest.raises(CommandError, match="--json asks no question: give --force too."):
        run("checkpoints", "delete", operation.pk, "--json")
    body = json.loads(run("checkpoints", "delete", operation.pk, "--force", "--json"))
    assert body["deleted"]["operation_id"] == operation.pk
    assert not Operation.objects.get(pk=operation.pk).resumable


def test_sweep_and_reconcile_print_json():
    assert json.loads(run("sweep_orphans", "--json")) == {
        "pending_reconciliation": [], "failed": [], "requeued": [], "workers_unavailable": []}
    assert set(json.loads(run("reconcile", "--json"))) == {"failed_backend_local", "pending_reconciliation"}


def test_a_followed_run_that_ends_failed_with_a_checkpoint_says_how_to_resume_it(checkpoint_dir):
    from operations.management.results import outcome_lines

    operation = stopped(checkpoint_dir, status=S.FAILED, error_message="RuntimeError: out of disk")
    operation = Operation.objects.select_related("checkpoint").get(pk=operation.pk)
    assert outcome_lines(operation) == [
        f"{operation.pk} FAILED at epoch 3: RuntimeError: out of disk",
        f"Resume with: python manage.py operations resume {operation.pk}",
    ]


def test_train_takes_a_symbol_in_any_case(settings, tmp_path):
    from marketdata.series import generate_bars, write_series

    settings.DATA_DIR = tmp_path / "data"
    write_series(generate_bars(bars=300, timeframe="1h", seed=5), "SYN", "1h")
    operation_id = run("train", "--symbol", "syn", "--timeframe", "1h").strip()
    assert Operation.objects.get(pk=operation_id).params["symbol"] == "SYN"
