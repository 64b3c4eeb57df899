"""Starting a training run: POST /api/v1/training/ and `manage.py train`, and `train --follow`."""

from __future__ import annotations

import json
import sys
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from marketdata.series import generate_bars, write_series
from operations.models import Operation, OperationEvent, OperationStatus as S
from operations.services.lifecycle import operation_claim, operation_finish
from operations.services.workers import CurrentOperation, Progress, worker_heartbeat
from tests.support.commands import assert_refused_by_name
from tests.conftest import queued_operation_ids
from tests.factories import WorkerFactory
from tests.support.processes import wait_for

URL = "/api/v1/training/"
DEFAULT_PARAMS = {
    "symbol": "SYN",
    "timeframe": "1h",
    "start": None,
    "end": None,
    "epochs": 30,
    "batch_size": 256,
    "hidden_sizes": [256, 128],
    "learning_rate": 0.001,
    "seed": 42,
    "validation_split": 0.2,
    "checkpoint_every": None,
    "checkpoint_seconds": None,
    "checkpoints_enabled": True,
    "features": {"return_windows": [1, 5, 20], "sma_windows": [10, 30], "rsi_window": 14,
                 "volatility_windows": [10, 30], "volume_window": 20},
}


@pytest.fixture
def market(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    write_series(generate_bars(bars=300, timeframe="1h", seed=5), "SYN", "1h")


def train(*args: str) -> str:
    out = StringIO()
    call_command("train", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def assert_nothing_created() -> None:
    assert Operation.objects.count() == 0
    assert OperationEvent.objects.count() == 0
    assert queued_operation_ids() == []


# --- POST /api/v1/training/


@pytest.mark.django_db
def test_post_creates_a_pending_operation_with_defaults_owned_by_the_user(
    market, user, user_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(URL, {"symbol": "SYN", "timeframe": "1h"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["operation_type"] == "training"
    assert body["owner"] == user.username
    assert body["params"] == DEFAULT_PARAMS
    assert body["checkpoint"] is None and body["resumable"] is False
    operation = Operation.objects.get(pk=body["operation_id"])
    assert operation.status == S.PENDING
    assert operation.owner == user
    assert operation.params == DEFAULT_PARAMS
    assert queued_operation_ids() == [operation.pk]
    assert user_client.get(f"/api/v1/operations/{operation.pk}/").json()["params"] == DEFAULT_PARAMS


@pytest.mark.django_db
def test_post_stores_the_values_given(market, user_client, django_capture_on_commit_callbacks):
    request = {
        "symbol": "SYN",
        "timeframe": "1h",
        "start": "2015-01-03",
        "end": "2015-01-12",  # 240 bars: enough for the 200-bar window below
        "epochs": 5,
        "batch_size": 32,
        "hidden_sizes": [64, 32, 16],
        "learning_rate": 0.01,
        "seed": 7,
        "checkpoint_every": 0,
        "features": {"return_windows": [1, 3], "sma_windows": [5, 50, 200], "rsi_window": 7,
                     "volatility_windows": [20], "volume_window": 5},
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(URL, request, format="json")
    assert response.status_code == 201, response.content
    params = Operation.objects.get(pk=response.json()["operation_id"]).params
    assert params == {**DEFAULT_PARAMS, **request}
    assert queued_operation_ids() == [response.json()["operation_id"]]


BAD_BODIES = [
    ({"epochs": 0}, "epochs"),
    ({"epochs": "x"}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"hidden_sizes": []}, "hidden_sizes"),
    ({"hidden_sizes": [0]}, "hidden_sizes[0]"),
    ({"hidden_sizes": [64, "big"]}, "hidden_sizes[1]"),
    ({"hidden_sizes": 64}, "hidden_sizes"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"seed": -1}, "seed"),
    ({"timeframe": "7h"}, "timeframe"),
    ({"symbol": "bad symbol"}, "symbol"),
    ({"symbol": ""}, "symbol"),
    ({"symbol": None}, "symbol"),
    ({"start": "2015-02-01", "end": "2015-01-01"}, "end"),
    ({"start": "yesterday"}, "start"),
    ({"symbol": "NODATA"}, "symbol"),  # a valid name, but no series was generated for it
    ({"timeframe": "1d"}, "symbol"),  # SYN exists in 1h only
    ({"features": {"sma_windows": [10, 10]}}, "features.sma_windows"),
    ({"features": {"sma_windows": [1]}}, "features.sma_windows[0]"),
    ({"features": {"return_windows": []}}, "features.return_windows"),
    ({"features": {"rsi_window": 1}}, "features.rsi_window"),
    ({"features": {"volume_window": "long"}}, "features.volume_window"),
    ({"features": [10, 30]}, "features"),
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
    assert field.split("[")[0].split(".")[0] in body["details"]
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
    assert "marketdata generate --symbol NODATA --timeframe 4h" in response.json()["detail"]


@pytest.mark.django_db
def test_anonymous_is_refused(market, anonymous_client):
    response = anonymous_client.post(URL, {"symbol": "SYN", "timeframe": "1h"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "NOT_AUTHENTICATED"
    assert_nothing_created()


# --- manage.py train


@pytest.mark.django_db
def test_train_prints_just_the_new_id(market, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = train("--symbol", "SYN", "--timeframe", "1h", "--epochs", "3", "--hidden-sizes", "64, 32",
                       "--learning-rate", "0.01", "--checkpoint-every", "0", "--start", "2015-01-02")
    operation = Operation.objects.get()
    assert output == f"{operation.pk}\n"
    assert operation.status == S.PENDING
    assert operation.owner is None
    assert operation.params == {
        **DEFAULT_PARAMS, "epochs": 3, "hidden_sizes": [64, 32], "learning_rate": 0.01, "checkpoint_every": 0,
        "start": "2015-01-02",
    }
    assert queued_operation_ids() == [operation.pk]


@pytest.mark.django_db
def test_train_json_prints_the_api_body(market, staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        output = train("--symbol", "SYN", "--timeframe", "1h", "--json")
    body = json.loads(output)
    operation = Operation.objects.get()
    assert body["operation_id"] == operation.pk
    assert body["status"] == "PENDING"
    assert body["params"] == DEFAULT_PARAMS
    assert body == staff_client.get(f"/api/v1/operations/{operation.pk}/").json()
    assert queued_operation_ids() == [operation.pk]


BAD_OPTIONS = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "x"], "--epochs"),
    (["--hidden-sizes", "64,x"], "--hidden-sizes"),
    (["--hidden-sizes", "0"], "--hidden-sizes"),
    (["--hidden-sizes", ""], "--hidden-sizes"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--timeframe", "7h"], "--timeframe"),
    (["--symbol", "bad symbol"], "--symbol"),
    (["--start", "2015-02-01", "--end", "2015-01-01"], "--end"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("options", "named"), BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_train_refuses_bad_options_by_name(market, options, named):
    assert_refused_by_name(lambda: train("--symbol", "SYN", "--timeframe", "1h", *options), named)
    assert_nothing_created()


@pytest.mark.django_db
def test_train_without_data_names_the_symbol_and_how_to_generate_it(market):
    with pytest.raises(CommandError) as refused:
        train("--symbol", "NODATA", "--timeframe", "1h")
    message = str(refused.value)
    assert message.startswith("--symbol: ")
    assert "NODATA" in message
    assert "python manage.py marketdata generate --symbol NODATA --timeframe 1h" in message
    assert_nothing_created()


# --- manage.py train --follow


class FakeWorker(threading.Thread):
    """Plays the worker of the operation the command creates: claim, one progress report, the outcome."""

    def __init__(self, out: StringIO, worker_id: str, outcome: str, error_message: str, quiet: bool) -> None:
        super().__init__(daemon=True)
        self.out, self.worker_id, self.outcome, self.error_message = out, worker_id, outcome, error_message
        self.quiet = quiet
        self.failure: BaseException | None = None

    def wait_shown(self, text: str) -> None:
        """Each state is shown before the next starts, so every step must appear in the output."""
        if not self.quiet:
            wait_for(lambda: text in self.out.getvalue(), timeout=20, what=f"{text!r} shown")

    def run(self) -> None:
        try:
            operation_id = wait_for(
                lambda: Operation.objects.values_list("pk", flat=True).first(), timeout=20, what="the new operation"
            )
            self.wait_shown("PENDING 0.0%")
            attempt = operation_claim(operation_id=operation_id, worker_id=self.worker_id)
            self.wait_shown("RUNNING 0.0%")
            worker_heartbeat(
                worker_id=self.worker_id,
                current_operation=CurrentOperation(operation_id=operation_id, attempt=attempt),
                progress=Progress(current=1, total=2, unit="epochs", percent=50.0, message="Epoch 1/2"),
            )
            self.wait_shown("RUNNING 50.0% Epoch 1/2")
            assert operation_finish(
                operation_id=operation_id,
                worker_id=self.worker_id,
                attempt=attempt,
                status=self.outcome,
                result={"epochs_completed": 2} if self.outcome == S.COMPLETED else None,
                error_message=self.error_message,
            )
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc
        finally:
            connection.close()


def follow_with_worker(monkeypatch, *options: str, outcome: str = S.COMPLETED, error_message: str = "") -> str:
    # Not a terminal: progress is printed as lines, not drawn as a bar.
    monkeypatch.setattr(sys, "stderr", StringIO())
    out = StringIO()
    worker = FakeWorker(out, WorkerFactory().worker_id, outcome, error_message, quiet="--json" in options)
    worker.start()
    try:
        call_command("train", "--symbol", "SYN", "--timeframe", "1h", "--follow", *options, stdout=out,
                     stderr=StringIO())
    finally:
        worker.join(timeout=30)
    assert worker.failure is None, worker.failure
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_follow_shows_progress_and_returns_when_the_operation_completes(market, monkeypatch):
    lines = follow_with_worker(monkeypatch).splitlines()
    operation = Operation.objects.get()
    assert operation.status == S.COMPLETED
    assert lines == [
        f"Training {operation.pk}",
        "PENDING 0.0%",
        "RUNNING 0.0%",
        "RUNNING 50.0% Epoch 1/2",
        "COMPLETED 100.0% Completed",
        f"{operation.pk} COMPLETED",
        "Result:",
        "  Epochs:                                2 of 30",  # its fake worker ran 2 of the 30 asked
        "  Best epoch:                            -",
        "  Best validation loss:                  -",
        "  Validation accuracy at the best epoch: -",
        "  Final validation loss:                 -",
        "  Final validation accuracy:             -",
        "  Training time:                         -",
    ]


@pytest.mark.django_db(transaction=True)
def test_follow_ends_with_the_error_of_a_failed_operation(market, monkeypatch):
    lines = follow_with_worker(monkeypatch, outcome=S.FAILED, error_message="RuntimeError: boom").splitlines()
    operation = Operation.objects.get()
    assert lines[-1] == f"{operation.pk} FAILED: RuntimeError: boom"
    assert lines[-2].startswith("FAILED ")


@pytest.mark.django_db(transaction=True)
def test_follow_json_prints_only_the_final_body(market, monkeypatch):
    output = follow_with_worker(monkeypatch, "--json")
    body = json.loads(output)
    assert body["status"] == "COMPLETED"
    assert body["result"] == {"epochs_completed": 2}
    assert body["progress_percent"] == 100.0
