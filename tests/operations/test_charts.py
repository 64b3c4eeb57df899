from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.urls import reverse

from operations.charts import line_chart
from operations.models import OperationStatus as S

pytestmark = pytest.mark.django_db


def test_line_chart_draws_one_polyline_per_series():
    svg = str(line_chart({"a": [3.0, 2.0, 1.0], "b": [1.0, float("nan"), 2.0]}, title="t", x_label="epochs"))
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert "epochs (3)" in svg


def test_nothing_to_draw_gives_nothing():
    assert str(line_chart({"a": []}, title="t", x_label="x")) == ""


def test_training_page_shows_its_loss_curves(client, operation_factory, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in range(1, 6)]
    operation = operation_factory(status=S.COMPLETED, result={"history": history})
    page = client.get(reverse("admin:operations_operation_change", args=[quote(operation.pk)]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "Loss curves" in body and body.count("<polyline") == 2
    assert "validation loss" in body


def test_operation_without_history_has_no_chart(client, operation_factory, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    operation = operation_factory(status=S.PENDING)
    page = client.get(reverse("admin:operations_operation_change", args=[quote(operation.pk)]))
    assert page.status_code == 200 and "<polyline" not in page.content.decode()
