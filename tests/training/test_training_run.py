"""Training runs through the runtime in-process: result keys, and exact resume after a cancel or a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from checkpoints.models import Checkpoint
from marketdata.series import generate_bars, write_series
from operations.models import Operation
from operations.models import OperationStatus as S
from operations.services.lifecycle import operation_create
from runtime.resume import operation_resume
from runtime.tasks import run_operation
from tests.support.processes import run_and_cancel_at

pytestmark = pytest.mark.django_db(transaction=True)

PARAMS = {
    "symbol": "SYN",
    "timeframe": "1h",
    "start": None,
    "end": None,
    "epochs": 8,
    "batch_size": 64,
    "hidden_sizes": [32, 16],
    "learning_rate": 0.003,
    "seed": 11,
    "validation_split": 0.2,
    "checkpoint_every": 3,
    "checkpoint_seconds": None,
    "checkpoints_enabled": True,
}


@pytest.fixture
def market(settings, tmp_path, checkpoint_dir):
    settings.DATA_DIR = tmp_path / "data"
    settings.MODELS_DIR = tmp_path / "models"
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    write_series(generate_bars(bars=3000, timeframe="1h", seed=5), "SYN", "1h")


def train(**overrides) -> str:
    operation = operation_create(operation_type="training", params={**PARAMS, **overrides}, actor="test", enqueue=False)
    return operation.pk


def final_weights(operation_id: str) -> dict[str, torch.Tensor]:
    result = Operation.objects.get(pk=operation_id).result
    return torch.load(result["model_path"], weights_only=True)


def assert_identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_result_has_the_spec_keys(market):
    operation_id = train(epochs=3)
    assert run_operation(operation_id) == "completed"
    operation = Operation.objects.get(pk=operation_id)
    result = operation.result
    assert operation.status == S.COMPLETED
    assert result["epochs_completed"] == 3 and len(result["history"]) == 3
    assert set(result["history"][0]) >= {"epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy"}
    assert result["best_val_loss"] == min(h["val_loss"] for h in result["history"])
    assert set(result["timings"]) == {"train_seconds", "checkpoint_seconds"}
    assert isinstance(torch.load(result["model_path"], weights_only=True), dict)
    assert not Checkpoint.objects.filter(pk=operation_id).exists()


def test_failure_mid_epoch_resumes_to_identical_weights(market):
    straight = train()
    assert run_operation(straight) == "completed"

    interrupted = train()
    # Break the data between two epochs for real: the next epoch fails inside its first batch.
    from training import runner as runner_module

    original = runner_module.TrainingRunner._evaluate
    calls = {"n": 0}

    def failing_evaluate(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise FloatingPointError("loss is NaN")
        return original(self)

    runner_module.TrainingRunner._evaluate = failing_evaluate
    try:
        assert run_operation(interrupted) == "failed"
    finally:
        runner_module.TrainingRunner._evaluate = original
    operation = Operation.objects.get(pk=interrupted)
    assert (operation.status, operation.error_message) == (S.FAILED, "FloatingPointError: loss is NaN")
    checkpoint = Checkpoint.objects.get(pk=interrupted)
    assert (checkpoint.checkpoint_type, checkpoint.state["epoch"]) == ("failure", 4)

    operation_resume(operation_id=interrupted, actor="test")
    assert run_operation(interrupted) == "completed"
    assert_identical(final_weights(straight), final_weights(interrupted))
    assert Operation.objects.get(pk=interrupted).result["history"] == Operation.objects.get(pk=straight).result["history"]


def test_cancel_mid_run_resumes_to_identical_weights(market):
    straight = train(epochs=12, batch_size=16)
    assert run_operation(straight) == "completed"

    interrupted = train(epochs=12, batch_size=16)
    assert run_and_cancel_at(interrupted, 4, timeout=60) == "cancelled"
    checkpoint = Checkpoint.objects.get(pk=interrupted)
    assert checkpoint.checkpoint_type == "cancellation" and 4 <= checkpoint.state["epoch"] < 12

    operation_resume(operation_id=interrupted, actor="test")
    assert run_operation(interrupted) == "completed"
    assert_identical(final_weights(straight), final_weights(interrupted))


def test_background_saves_are_flushed_before_the_outcome(market, checkpoint_dir):
    """A checkpoint every epoch, saved beside the run: none may commit after completion deleted the checkpoint."""
    operation_id = train(epochs=6, checkpoint_every=1)
    assert run_operation(operation_id) == "completed"
    operation = Operation.objects.get(pk=operation_id)
    assert operation.result["timings"]["checkpoint_seconds"] >= 0
    assert not Checkpoint.objects.filter(pk=operation_id).exists()
    assert not (checkpoint_dir / operation_id).exists()


def test_the_feature_windows_asked_for_are_what_the_model_sees(market):
    windows = {"return_windows": [1, 3], "sma_windows": [5, 50, 200], "rsi_window": 7, "volatility_windows": [20],
               "volume_window": 5}
    operation_id = train(epochs=2, features=windows)

    assert run_operation(operation_id) == "completed"

    result = Operation.objects.get(pk=operation_id).result
    saved = json.loads(Path(result["feature_spec_path"]).read_text())
    assert {name: saved["feature_spec"][name] for name in windows} == windows
    assert saved["inputs"] == 2 + 3 + 1 + 1 + 1  # returns, SMA ratios, RSI, volatility, volume
    default = train(epochs=2)  # a request made before the windows could be chosen: the usual ones
    assert run_operation(default) == "completed"
    spec = json.loads(Path(Operation.objects.get(pk=default).result["feature_spec_path"]).read_text())["feature_spec"]
    assert (spec["sma_windows"], spec["rsi_window"]) == ([10, 30], 14)
