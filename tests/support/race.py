"""Races, for tests that assert exactly one winner: many threads calling at once, or many users pressing one
button at once over real HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from django.db import connection


def race(call: Callable[[int], Any], threads: int) -> list[Any]:
    """Run `call(i)` in `threads` threads released at once (a barrier), each with its own connection; their
    results, in order. A thread that raised leaves its exception as its result, for the test to assert on."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = call(index)
        except Exception as exc:  # kept to assert on, not hidden
            results[index] = exc
        finally:
            connection.close()

    pool = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    return results


def post(url: str, token: str, barrier: threading.Barrier) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=b"", headers={"Authorization": f"Token {token}"}, method="POST")
    barrier.wait()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def race_posts(url: str, token: str, count: int) -> list[tuple[int, dict]]:
    """`count` threads POST to `url` at the same moment (a barrier releases them together); their replies.
    A thread that raised fails the race with what it raised, rather than hiding it."""
    barrier = threading.Barrier(count)
    replies: list = [None] * count

    def press(index: int) -> None:
        try:
            replies[index] = post(url, token, barrier)
        except BaseException as exc:  # kept to fail the test with, not to hide
            replies[index] = exc

    threads = [threading.Thread(target=press, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    errors = [reply for reply in replies if not isinstance(reply, tuple)]
    assert errors == [], errors
    return replies
