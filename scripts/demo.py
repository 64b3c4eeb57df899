#!/usr/bin/env python
"""`make demo`: the product on a bare machine (SQLite, django-q2's ORM broker, no services).

Generates market data, starts a worker cluster and the control loop, trains a
model straight through, trains the same model again but cancels it midway and
resumes it; then backtests a strategy over a million bars straight through,
and again cancelled midway and resumed; and prints a summary that says whether
the resumed model equals the straight one tensor for tensor and the resumed
backtest the straight one trade for trade and point for point. Everything it
starts, it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "var" / "demo"
EPOCHS = 30
CANCEL_AT_EPOCH = 12
BACKTEST_BARS = 1_000_000
CANCEL_AT_PERCENT = 20
BACKTEST_ARGS = [
    "--symbol", "DEMO", "--timeframe", "1m", "--strategy", "sma_cross", "--param", "fast=20", "--param", "slow=120",
    "--param", "allow_short=true", "--checkpoint-every", "100000",
]
TRAIN_ARGS = [
    "--symbol", "DEMO", "--timeframe", "1h", "--epochs", str(EPOCHS), "--checkpoint-every", "5",
    "--hidden-sizes", "256,256", "--batch-size", "64", "--learning-rate", "0.002", "--seed", "7",
]

os.environ.pop("DATABASE_URL", None)  # the embedded default: a SQLite file under VAR_DIR
os.environ.update(
    {
        "VAR_DIR": str(DEMO_DIR),
        "Q_BROKER": "orm",
        "Q_WORKERS": "1",
        "HEARTBEAT_INTERVAL_SECONDS": "0.1",  # short, so that a cancel lands in a backtest of a second or two
        "WORKER_STALE_SECONDS": "10",
        "ORPHAN_TIMEOUT_SECONDS": "20",
        "ORPHAN_CHECK_INTERVAL_SECONDS": "2",
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "LOG_LEVEL": "warning",
    }
)
sys.path.insert(0, str(ROOT))


def manage(*args: str, quiet: bool = False) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    if not quiet and done.stdout.strip():
        print("  " + done.stdout.strip().replace("\n", "\n  "))
    return done.stdout.strip()


def start(name: str, *args: str) -> subprocess.Popen:
    log = open(DEMO_DIR / f"{name}.log", "w")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "scripts"),
                                                                          os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait(operation_id: str, condition, what: str, timeout: float = 600):
    from operations.models import Operation

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        operation = Operation.objects.select_related("checkpoint").get(pk=operation_id)
        key = (operation.status, int(operation.progress_percent // 10))  # a line per status and per 10%
        if key != last:
            print(f"  {operation.status:<10} {operation.progress_message or ''}".rstrip(), flush=True)
            last = key
        if condition(operation):
            return operation
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what} of {operation_id}")


def main() -> None:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    print(f"Demo folder: {DEMO_DIR} (SQLite database, ORM broker, checkpoints, models)")
    manage("migrate", "--noinput", quiet=True)
    print("1. Market data")
    manage("marketdata", "generate", "--symbol", "DEMO", "--timeframe", "1h", "--bars", "20000", "--seed", "7")
    manage("marketdata", "generate", "--symbol", "DEMO", "--timeframe", "1m", "--bars", str(BACKTEST_BARS),
           "--seed", "7")

    import django

    django.setup()
    import torch

    from checkpoints.models import Checkpoint
    from operations.models import TERMINAL_STATUSES, Operation
    from operations.services.lifecycle import operation_cancel
    from backtesting.spool import equity_curve_file
    from runtime.resume import operation_resume
    from training.artifacts import model_files

    # The workers run scripts/demo_settings.py: the engine slowed so that a cancel lands midway.
    cluster = start("qcluster", "qcluster", "--settings", "demo_settings")
    control_loop = start("supervise", "supervise")
    try:
        print("2. A worker cluster and the control loop are running; training straight through")
        straight_id = manage("train", *TRAIN_ARGS, quiet=True)
        print(f"  {straight_id}")
        straight = wait(straight_id, lambda op: op.status in TERMINAL_STATUSES, "the straight run")

        print(f"3. The same training, cancelled near epoch {CANCEL_AT_EPOCH}")
        resumed_id = manage("train", *TRAIN_ARGS, quiet=True)
        print(f"  {resumed_id}")
        wait(resumed_id, lambda op: op.progress_current >= CANCEL_AT_EPOCH, f"epoch {CANCEL_AT_EPOCH}")
        operation_cancel(operation_id=resumed_id, actor="demo")
        cancelled = wait(resumed_id, lambda op: op.status in TERMINAL_STATUSES, "the cancel")
        checkpoint = Checkpoint.objects.get(pk=resumed_id)
        print(
            f"  {cancelled.status}: {checkpoint.checkpoint_type} checkpoint at epoch {checkpoint.state['epoch']}, "
            f"{checkpoint.total_size_bytes / 1024:.0f} KB in {len(checkpoint.manifest)} artifacts"
        )
        cancelled_epoch, checkpoint_kb = checkpoint.state["epoch"], checkpoint.total_size_bytes / 1024

        print("4. Resumed from its checkpoint")
        operation_resume(operation_id=resumed_id, actor="demo")
        resumed = wait(resumed_id, lambda op: op.status in TERMINAL_STATUSES, "the resumed run")

        print(f"5. A backtest over {BACKTEST_BARS:,} one-minute bars, straight through (the demo's workers slow "
              "the engine to about 200,000 bars/s so that a cancel can land midway; `make bench` measures its "
              "real speed)")
        straight_bt_id = manage("backtest", *BACKTEST_ARGS, quiet=True)
        straight_bt = wait(straight_bt_id, lambda op: op.status in TERMINAL_STATUSES, "the straight backtest")
        print(f"6. The same backtest, cancelled near {CANCEL_AT_PERCENT}%")
        resumed_bt_id = manage("backtest", *BACKTEST_ARGS, quiet=True)
        wait(resumed_bt_id, lambda op: op.status in TERMINAL_STATUSES or op.progress_percent >= CANCEL_AT_PERCENT,
             f"{CANCEL_AT_PERCENT}% of the backtest")
        operation_cancel(operation_id=resumed_bt_id, actor="demo")
        cancelled_bt = wait(resumed_bt_id, lambda op: op.status in TERMINAL_STATUSES, "the cancel")
        if cancelled_bt.status != "CANCELLED":
            sys.exit(f"the backtest ended {cancelled_bt.status} before the cancel landed; run the demo again")
        cancelled_bar = Checkpoint.objects.get(pk=resumed_bt_id).state["bar_index"]
        print(f"  CANCELLED: cancellation checkpoint at bar {cancelled_bar:,}")
        print("7. Resumed from its checkpoint")
        operation_resume(operation_id=resumed_bt_id, actor="demo")
        resumed_bt = wait(resumed_bt_id, lambda op: op.status in TERMINAL_STATUSES, "the resumed backtest")

        print("8. A backtest of the trained model's signals (the model strategy) over the bars it was not "
              "trained on (the validation period, from 2016-11-01)")
        model_bt_id = manage("backtest", "--symbol", "DEMO", "--timeframe", "1h", "--start", "2016-11-01",
                             "--strategy", "model", "--model", straight_id, "--param", "threshold=0.52", quiet=True)
        model_bt = wait(model_bt_id, lambda op: op.status in TERMINAL_STATUSES, "the model backtest")
    finally:
        stop(cluster)
        stop(control_loop)

    if straight.status != "COMPLETED" or resumed.status != "COMPLETED":
        sys.exit(f"a run did not complete: {straight.status} / {resumed.status}; see {DEMO_DIR}/*.log")
    first = torch.load(model_files(straight_id).model, weights_only=True)
    second = torch.load(model_files(resumed_id).model, weights_only=True)
    identical = first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    checkpoint_left = Checkpoint.objects.filter(pk=resumed_id).exists()

    print("\nSummary")
    print(f"  straight run  {straight_id}: {straight.result['epochs_completed']} epochs, "
          f"best val loss {straight.result['best_val_loss']:.4f}, final val accuracy "
          f"{straight.result['final_val_accuracy']:.3f}, {straight.result['timings']['train_seconds']:.1f}s")
    print(f"  resumed run   {resumed_id}: cancelled at epoch {cancelled_epoch} "
          f"(checkpoint {checkpoint_kb:.0f} KB), resumed to {resumed.result['epochs_completed']} epochs, "
          f"best val loss {resumed.result['best_val_loss']:.4f}, attempt {Operation.objects.get(pk=resumed_id).attempt}")
    print(f"  checkpoint deleted on completion: {'yes' if not checkpoint_left else 'NO'}")
    print(f"  resumed model identical to the straight one, tensor for tensor: {'YES' if identical else 'NO'}")
    for run in (straight_bt, resumed_bt, model_bt):
        if run.status != "COMPLETED":
            sys.exit(f"a backtest did not complete: {run.pk} {run.status} {run.error_message}; see {DEMO_DIR}/*.log")
    import numpy as np

    same_backtest = (
        straight_bt.result["trades"] == resumed_bt.result["trades"]
        and straight_bt.result["metrics"] == resumed_bt.result["metrics"]
        and np.array_equal(np.load(equity_curve_file(straight_bt_id)),
                           np.load(equity_curve_file(resumed_bt_id)))
    )
    metrics, timings = straight_bt.result["metrics"], straight_bt.result["timings"]
    print(f"  straight backtest {straight_bt_id}: {metrics['number_of_trades']:,} trades, total return "
          f"{metrics['total_return']:+.2%} (buy and hold {metrics['buy_and_hold_return']:+.2%}), "
          f"{timings['bars_per_second']:,} bars/s in the (slowed) engine loop")
    print(f"  resumed backtest  {resumed_bt_id}: cancelled at bar {cancelled_bar:,}, resumed to bar "
          f"{resumed_bt.result['bars']:,} ({resumed_bt.result['timings']['bars_processed']:,} bars processed)")
    model_metrics = model_bt.result["metrics"]
    print(f"  model backtest    {model_bt_id} (out of sample): {model_metrics['number_of_trades']} trades, "
          f"total return "
          f"{model_metrics['total_return']:+.2%}, win rate {model_metrics['win_rate'] or 0:.1%}")
    print(f"  resumed backtest identical to the straight one (trades, metrics, equity curve): "
          f"{'YES' if same_backtest else 'NO'}")
    if not identical or not same_backtest:
        sys.exit(1)


if __name__ == "__main__":
    main()
