"""What a worker takes from its broker: only tasks signed with the deployment's key, over a broker that asks
for a password and speaks TLS (docs/security.md).

Anyone who can write to the broker (the ORM queue table, or Redis) can put a message in it; django-q2 unpickles
a message only once its signature, made with DJANGO_SECRET_KEY, checks out. A real cluster is given a forged
message and a genuine one side by side: the genuine one runs, the forged one is dropped, unexecuted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.utils import timezone
from django_q import core_signing
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signing import PickleSerializer, SignedPackage

from tests.support.processes import ROOT, child_env, wait_for
from tests.support.redis import PASSWORD, ThrowawayRedis
from tests.training.cluster import REQUEST, wait_until_completed
from tests.training.conftest import folders  # noqa: F401  (the fixture: market data and folders of the test's own)

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

ANOTHER_KEY = "a-key-the-attacker-chose-" + "x9" * 20


def task(name: str, marker: Path) -> dict:
    """A django-q2 task message that writes a file: proof, if the file appears, that a worker ran it."""
    return {"id": name, "name": name, "func": "pathlib.Path.write_text", "args": (marker, "ran"), "kwargs": {},
            "started": timezone.now()}


def forged(message: dict) -> str:
    return core_signing.dumps(message, key=ANOTHER_KEY, salt=Conf.PREFIX, compress=Conf.COMPRESSED,
                              serializer=PickleSerializer)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    why = ThrowawayRedis.available()
    if why:
        pytest.skip(f"no Redis server to test with: {why}")
    server = ThrowawayRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def test_a_real_cluster_runs_only_the_tasks_signed_with_its_key_orm_broker(children, tmp_path):
    genuine, forgery = tmp_path / "genuine", tmp_path / "forged"
    broker = get_broker()  # the queue table the cluster reads
    broker.enqueue(forged(task("forged", forgery)))
    broker.enqueue(SignedPackage.dumps(task("genuine", genuine)))

    cluster = children.cluster(workers=1)

    wait_for(genuine.exists, timeout=60, what="the genuine task to run")
    wait_for(lambda: broker.queue_size() == 0, timeout=30, what="the forged message to leave the queue")
    assert not forgery.exists()
    assert "Failed to push task to queue" in cluster.output and "BadSignature" in cluster.output


def test_a_real_cluster_runs_only_the_tasks_signed_with_its_key_redis_broker(children, tls_redis, tmp_path):
    genuine, forgery = tmp_path / "genuine", tmp_path / "forged"
    client = tls_redis.client()
    queue = f"django_q:{Conf.CLUSTER_NAME}:q"
    client.rpush(queue, forged(task("forged", forgery)), SignedPackage.dumps(task("genuine", genuine)))

    cluster = children.cluster(workers=1, Q_BROKER="redis", REDIS_URL=tls_redis.url())

    wait_for(genuine.exists, timeout=60, what="the genuine task to run")
    assert client.llen(queue) == 0
    assert not forgery.exists()
    assert "BadSignature" in cluster.output


def test_an_operation_runs_through_redis_with_a_password_over_tls(children, tls_redis):
    cluster = children.cluster(workers=1, Q_BROKER="redis", REDIS_URL=tls_redis.url())
    arguments = [f"--{name.replace('_', '-')}={value}" for name, value in REQUEST.items() if name != "hidden_sizes"]
    started = subprocess.run(
        [sys.executable, "manage.py", "train", *arguments, "--hidden-sizes", "32,16"],
        cwd=ROOT, env=child_env(**children.env, Q_BROKER="redis", REDIS_URL=tls_redis.url()),
        capture_output=True, text=True, timeout=60,
    )
    assert started.returncode == 0, started.stderr
    operation_id = started.stdout.split()[-1]

    operation = wait_until_completed(operation_id)

    assert operation.result["epochs_completed"] == REQUEST["epochs"]
    assert tls_redis.url() not in cluster.output and PASSWORD not in cluster.output  # never logged


def test_redis_refuses_a_client_without_the_password_or_without_tls(tls_redis):
    with pytest.raises(redis.AuthenticationError):
        redis.from_url(tls_redis.url(password="wrong")).ping()
    with pytest.raises(redis.ConnectionError):  # plain text to the TLS port
        redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0", socket_timeout=2).ping()
