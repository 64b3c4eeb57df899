"""Many users pressing one button at once over real HTTP: a race, for tests that assert exactly one winner."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request


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
