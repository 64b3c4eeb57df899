"""Queueing an operation's task: on Redis, one broker (and its connection pool) per process, not one per task."""

from __future__ import annotations

import pytest
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf

from operations import registry


@pytest.fixture
def redis_configured(monkeypatch):
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:6379/15")  # made lazily: nothing connects here
    monkeypatch.setattr(registry, "_redis_broker", None)


def test_the_redis_broker_is_made_once_per_process(redis_configured):
    first = registry._broker()
    assert isinstance(first, Redis)
    assert registry._broker() is first


def test_another_cluster_name_gets_its_own_queue(redis_configured, monkeypatch):
    first = registry._broker()
    monkeypatch.setattr(Conf, "CLUSTER_NAME", "another")
    assert registry._broker().list_key == "django_q:another:q" != first.list_key


def test_the_orm_broker_is_left_to_django_q2(monkeypatch):
    monkeypatch.setattr(Conf, "ORM", "default")
    assert registry._broker() is None
