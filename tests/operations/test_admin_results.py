"""A result that does not have its type's shape (forged through the worker API, or written by an older version)
never makes an operation's admin page fail: it shows a note and links to the raw result; its trades page and
the raw result answer too."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from operations.models import OperationStatus as S
from operations.models import OperationType
from tests.factories import OperationFactory

pytestmark = pytest.mark.django_db

MALFORMED = [
    ["a", "list"],
    "a string",
    42,
    {"history": {"not": "rows"}},
    {"history": ["row", None, 3]},
    {"history": [{"train_loss": "low", "val_loss": None}, {"train_loss": [1], "val_loss": True}]},
    {"equity_curve": 5},
    {"equity_curve": [1.0, 2.0, 3.0]},
    {"equity_curve": [["2024-01-01", "lots"]], "trades": "many", "metrics": ["x"]},
    {"equity_curve": [[]], "trades": [None], "metrics": {"sharpe": {"deep": [1]}}},
    {"model_path": "/etc/passwd", "history": []},
]


@pytest.mark.parametrize("operation_type", OperationType.values)
@pytest.mark.parametrize("result", MALFORMED, ids=[f"shape-{index}" for index in range(len(MALFORMED))])
def test_the_admin_page_of_an_operation_with_a_malformed_result_answers(admin_client, operation_type, result):
    operation = OperationFactory(operation_type=operation_type, status=S.COMPLETED, result=result)

    page = admin_client.get(reverse("admin:operations_operation_change", args=[quote(operation.pk)]))
    listing = admin_client.get(reverse("admin:operations_operation_changelist"))

    assert page.status_code == 200 and listing.status_code == 200


def test_a_malformed_result_is_said_so_on_the_page(admin_client):
    operation = OperationFactory(operation_type=OperationType.TRAINING, status=S.COMPLETED,
                                 result={"history": ["row", None]})

    page = admin_client.get(reverse("admin:operations_operation_change", args=[quote(operation.pk)]))

    assert "does not have the shape this version writes" in page.content.decode()


@pytest.mark.parametrize("result", MALFORMED, ids=[f"shape-{index}" for index in range(len(MALFORMED))])
def test_the_trades_and_the_raw_result_of_a_malformed_backtest_answer(admin_client, result):
    operation = OperationFactory(operation_type=OperationType.BACKTESTING, status=S.COMPLETED, result=result)

    trades = admin_client.get(reverse("admin:operations_operation_result_page", args=[quote(operation.pk), "trades"]))
    raw = admin_client.get(reverse("admin:operations_operation_raw_result", args=[quote(operation.pk)]))

    assert trades.status_code == 200
    assert raw.status_code == 200 and raw.json() == result
