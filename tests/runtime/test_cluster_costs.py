"""What a qcluster's processes spend per task beside the operation: django-q2's task results pruned in one
statement now and then, and database connections kept between tasks."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Failure, Success, Task
from django_q.signals import post_execute

from runtime import results
from runtime.management.commands.qcluster import keep_connections


def save_result(*, success: bool = True, minutes_ago: int = 0) -> Task:
    moment = timezone.now() - timedelta(minutes=minutes_ago)
    return Task.objects.create(id=uuid.uuid4().hex, name=uuid.uuid4().hex[:20], func="runtime.tasks.run_operation",
                               args=("op",), kwargs={}, started=moment, stopped=moment, result="completed",
                               success=success)


@pytest.mark.django_db
def test_prune_keeps_the_latest_successes_and_every_failure():
    oldest = [save_result(minutes_ago=10 + i) for i in range(3)]
    latest = [save_result(minutes_ago=i) for i in range(4)]
    failure = save_result(success=False, minutes_ago=60)

    with CaptureQueriesContext(connection) as queries:
        assert results.prune_task_results(4) == 3
    assert [q["sql"].split()[0] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))] == [
        "DELETE"]

    assert set(Success.objects.values_list("pk", flat=True)) == {task.pk for task in latest}
    assert list(Failure.objects.values_list("pk", flat=True)) == [failure.pk]
    assert not Task.objects.filter(pk__in=[task.pk for task in oldest]).exists()


@pytest.mark.django_db
def test_the_monitor_prunes_every_hundred_results(settings, monkeypatch):
    settings.Q_RESULTS_KEPT = 2
    monkeypatch.setattr(results, "_saved", iter(range(1, 1000)))
    for minutes_ago in range(5):
        save_result(minutes_ago=minutes_ago)

    for _ in range(results.PRUNE_EVERY - 1):
        post_execute.send(sender="django_q", task={})
    assert Success.objects.count() == 5  # not yet
    post_execute.send(sender="django_q", task={})  # the hundredth
    assert Success.objects.count() == 2


@pytest.mark.django_db
def test_a_failed_prune_leaves_the_monitor_running(settings, monkeypatch, caplog):
    monkeypatch.setattr(results, "_saved", iter([results.PRUNE_EVERY]))
    monkeypatch.setattr(results, "prune_task_results", lambda kept: 1 / 0)
    results.on_result_saved()
    assert "Could not remove the older task results" in caplog.text


def test_django_q2_itself_never_prunes():
    assert django_settings.Q_CLUSTER["save_limit"] == 0  # its pruning reads every kept result at each task


@pytest.mark.parametrize(("configured", "kept"), [(0, 300), (60, 300), (600, 600), (None, None)])
def test_the_cluster_keeps_its_connections(settings, monkeypatch, configured, kept):
    settings.Q_DATABASE_CONN_MAX_AGE = 300
    database = django_settings.DATABASES["default"]  # the dict every connection reads its settings from
    monkeypatch.setitem(database, "CONN_MAX_AGE", configured)
    keep_connections()
    assert database["CONN_MAX_AGE"] == kept
    assert connection.settings_dict["CONN_MAX_AGE"] == kept
