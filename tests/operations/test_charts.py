"""The admin's charts as data (operations/charts.py): what the page hands to charts.js, and how it carries them."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from operations.charts import number_chart, readable_time, time_chart
from operations.models import OperationStatus as S
from tests.support.pages import chart_data

pytestmark = pytest.mark.django_db


def test_a_time_chart_puts_its_curves_on_one_time_axis_in_seconds():
    chart = time_chart("Equity", {
        "strategy": [["2015-01-01T00:00:00Z", 100.0], ["2015-01-01T02:00:00Z", 102.0], ["2015-01-01T01:00:00Z", 101.0]],
        "buy and hold": [["2015-01-01T00:00:00Z", 100.0], ["2015-01-01T02:00:00Z", float("nan")]],
    }, unit="money")

    start = 1420070400  # 2015-01-01T00:00:00Z
    assert chart["x"]["kind"] == "time"
    assert chart["data"] == [[start, start + 3600, start + 7200], [100.0, 101.0, 102.0], [100.0, None, None]]
    assert [series["label"] for series in chart["series"]] == ["strategy", "buy and hold"]


def test_points_without_a_readable_time_are_left_out_and_a_curve_without_points_is_not_drawn():
    chart = time_chart("Equity", {
        "strategy": [["2015-01-01T00:00:00Z", 1.0], ["yesterday", 2.0], [None, 3.0], "a point", [1, 2, 3]],
        "buy and hold": None,
        "drawdown": [["2015-01-01T00:00:00Z", "deep"]],
    }, unit="money")

    assert chart["data"] == [[1420070400], [1.0]]
    assert [series["label"] for series in chart["series"]] == ["strategy"]


def test_a_number_chart_orders_its_rows_by_x_and_keeps_only_numbered_rows_and_markers():
    chart = number_chart("Loss", [2, 1, "three", 3], {"loss": [0.5, 0.7, 0.1, True]}, x_label="epoch", unit="loss",
                         markers=[{"x": 2, "label": "best epoch 2"}, {"x": "two", "label": "no"}])

    assert chart["data"] == [[1.0, 2.0, 3.0], [0.7, 0.5, None]]
    assert chart["markers"] == [{"x": 2, "label": "best epoch 2"}]
    assert chart["x"] == {"kind": "number", "label": "epoch"}


def test_nothing_to_draw_is_no_chart():
    assert time_chart("Equity", {"strategy": []}, unit="money") is None
    assert number_chart("Loss", [1, 2], {"loss": [None, "x"]}, x_label="epoch", unit="loss") is None


def test_a_time_reads_as_people_read_it():
    assert readable_time("2015-01-01T05:30:00Z") == "2015-01-01 05:30 UTC"
    assert readable_time("2023-06-01T00:00:00+02:00") == "2023-05-31 22:00 UTC"
    assert readable_time("soon") == "soon"


def test_a_training_page_carries_its_curves_and_the_best_epoch_and_loads_the_charting_library(
        admin_client, operation_factory):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e + (0.1 * e if e > 3 else 0),
                "train_accuracy": 0.5, "val_accuracy": 0.5 + e / 100, "learning_rate": 0.001} for e in range(1, 6)]
    result = {"history": history, "best_epoch": 3, "validation_start": "2023-06-01T00:00:00Z"}
    operation = operation_factory(operation_type="training", status=S.COMPLETED, result=result)

    body = admin_client.get(reverse("admin:operations_operation_change", args=[quote(operation.pk)])).content.decode()

    loss, accuracy, rate = chart_data(body)
    assert loss["title"] == "Loss per epoch" and loss["data"][0] == [1, 2, 3, 4, 5]
    assert [series["label"] for series in loss["series"]] == ["train loss", "validation loss"]
    assert loss["data"][2] == [row["val_loss"] for row in history]
    assert loss["markers"] == [{"x": 3, "label": "best epoch 3"}] == accuracy["markers"]
    assert rate["series"][0]["label"] == "learning rate"
    assert "Validated on the bars from 2023-06-01 00:00 UTC on." in body
    assert re.search(r'<script src="/static/operations/uplot/uPlot\.iife(\.[0-9a-f]{12})?\.min\.js" defer>', body)
    assert re.search(r'<script src="/static/operations/charts(\.[0-9a-f]{12})?\.js" defer>', body)
    assert "cdn" not in body.lower()


def test_a_page_without_a_chart_loads_no_charting_library(admin_client, operation_factory):
    operation = operation_factory(status=S.PENDING)

    body = admin_client.get(reverse("admin:operations_operation_change", args=[quote(operation.pk)])).content.decode()

    assert chart_data(body) == [] and "uPlot" not in body
