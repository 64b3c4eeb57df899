#!/usr/bin/env python
"""The load generator of `make bench` part three: simulated HTTP workers, in a process of its own.

Reads one JSON job on stdin, writes one JSON report on stdout. Standard library only (asyncio streams, one
keep-alive connection per simulated worker, as a worker process holds its own), and no Django: it is a client.

- `register`: POST /api/v1/workers/register/ for each worker, a few at a time.
- `heartbeat`: each worker POSTs /api/v1/workers/<id>/heartbeat/ with its operation's progress every `interval`
  seconds on a fixed schedule (worker i of n offset by i/n of an interval, so the load is even), for
  `warmup + window` seconds; requests scheduled in the warm-up are not reported.

What a request's latency is: from just before its bytes are written to the end of its response (a new
connection's connect included, when the server closed the last one). The generator's own lag is how late a
heartbeat left against its schedule when its worker was idle at that moment (a worker still waiting for the
previous reply is late because of the server, and counted apart), and how late a 10 ms ticker of the event
loop wakes up.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

REPLY_TIMEOUT = 10.0


class Connection:
    """One HTTP/1.1 keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.connects += 1
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def post(path: str, authorization: str, body: dict) -> bytes:
    """A request with its Authorization header (a worker machine's `Worker <key>`)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


async def register(job: dict) -> dict:
    """Register every worker (no current operation yet), `concurrency` at a time."""
    gate = asyncio.Semaphore(job.get("concurrency", 8))
    failures: list[str] = []

    async def one(worker_id: str, authorization: str) -> None:
        async with gate:
            connection = Connection(job["host"], job["port"])
            try:
                status, body = await asyncio.wait_for(
                    connection.request(post("/api/v1/workers/register/", authorization,
                                            {"worker_id": worker_id, "worker_type": "api",
                                             "capabilities": {"device": "cpu", "cpu_count": 2}})),
                    REPLY_TIMEOUT)
                if status != 200:
                    failures.append(f"{worker_id}: HTTP {status} {body[:200]!r}")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                failures.append(f"{worker_id}: {exc!r}")
            finally:
                connection.close()

    await asyncio.gather(*(one(worker["worker_id"], worker["authorization"]) for worker in job["workers"]))
    return {"registered": len(job["workers"]) - len(failures), "failures": failures[:10]}


async def heartbeat(job: dict) -> dict:
    loop = asyncio.get_running_loop()
    interval, warmup, window = job["interval"], job["warmup"], job["window"]
    start = loop.time() + (job["start_at"] - time.time())  # one schedule for all the generator processes
    measured_from, end = start + warmup, start + warmup + window
    samples: list[tuple[float, float, float]] = []  # (scheduled, latency, idle lag or -1) of measured requests
    errors: dict[str, int] = {}
    late_behind_reply = 0
    connections: list[Connection] = []

    async def simulated_worker(worker: dict) -> None:
        nonlocal late_behind_reply
        connection = Connection(job["host"], job["port"])
        connections.append(connection)
        path = f"/api/v1/workers/{worker['worker_id']}/heartbeat/"
        scheduled = start + interval * worker["phase"]
        beat = last_ok = 0
        while scheduled < end:
            now = loop.time()
            idle = now <= scheduled
            if idle:
                await asyncio.sleep(scheduled - now)
            beat += 1
            payload = post(path, worker["authorization"], {
                "operation_id": worker["operation_id"], "attempt": worker["attempt"],
                "progress": {"current": beat, "total": 100_000, "unit": "epochs", "percent": min(100.0, beat / 1000),
                             "message": f"epoch {beat}"},
            })
            sent = loop.time()
            error = None
            try:
                status, body = await asyncio.wait_for(connection.request(payload), REPLY_TIMEOUT)
                if status != 200:
                    error = f"HTTP {status}"
                elif b'"action":"continue"' not in body:
                    error = "told to stop"
            except asyncio.TimeoutError:
                error = "timeout"
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                error = type(exc).__name__
            if error is None:
                last_ok = beat
            else:
                connection.close()
            done = loop.time()
            if scheduled >= measured_from:
                samples.append((scheduled - start, done - sent, (sent - scheduled) if idle else -1.0))
                if not idle:
                    late_behind_reply += 1
                if error is not None:
                    errors[error] = errors.get(error, 0) + 1
            scheduled += interval
        worker["last_beat"] = last_ok
        connection.close()

    ticks: list[float] = []

    async def ticker() -> None:
        """The event loop's own lateness: a 10 ms sleep that wakes up late means a busy generator."""
        while loop.time() < end:
            before = loop.time()
            await asyncio.sleep(0.01)
            if before >= measured_from:
                ticks.append(loop.time() - before - 0.01)

    cpu_before, started = resource.getrusage(resource.RUSAGE_SELF), loop.time()
    await asyncio.gather(ticker(), *(simulated_worker(worker) for worker in job["workers"]))
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "samples": [[round(a, 4), round(b, 6), round(c, 6)] for a, b, c in samples],
        "errors": errors,
        "late_behind_reply": late_behind_reply,
        "ticks": [round(t, 6) for t in ticks],
        "cpu_seconds": cpu,
        "wall_seconds": loop.time() - started,
        "connects": sum(connection.connects for connection in connections),
        "last_beats": {worker["operation_id"]: worker.get("last_beat", 0) for worker in job["workers"]},
    }


def main() -> None:
    job = json.load(sys.stdin)
    report = asyncio.run(register(job) if job["mode"] == "register" else heartbeat(job))
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
