"""The fleet: a cluster registers its worker processes and heart-beats for them, idle or busy
(docs/self-healing.md).

A worker process registers itself only when it runs an operation, and beats only while it does. So that
`manage.py workers`, `GET workers/` and the admin show every worker process, and so that the restart policy
knows a worker is there to take a resumed run, the `qcluster` main process runs a FleetWatch thread: every
HEARTBEAT_INTERVAL_SECONDS it reads its worker processes (each records its pid when django-q2 spawns it,
runtime/shutdown.py) and tells the control plane which are alive and which have exited. A worker process
that exited in the middle of a run (killed by the kernel for memory, kill -9) fails that run at once, as a
lost worker, instead of after the sweep's timeouts. On SIGTERM the cluster's workers are STOPPING (no new
work goes to them); once it has stopped, STOPPED.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from django.conf import settings
from django.db import connection

from operations.services.workers import cluster_beat, cluster_stopped
from runtime.shutdown import descendants, worker_pids_dir
from runtime.worker import DATABASE_UNREACHABLE, Backoff, capabilities, current_worker_id, database_lost

logger = logging.getLogger(__name__)

FIRST_BEAT_SECONDS = 1.0  # the worker processes are spawned a moment after the cluster starts


def running(pid: int) -> bool:
    """Neither gone nor a zombie (a killed worker its sentinel has not reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class FleetWatch(threading.Thread):
    """The cluster's heartbeat for its worker processes (in the `qcluster` main process)."""

    def __init__(self, cluster_pid: int) -> None:
        super().__init__(name="fleet-watch", daemon=True)
        self.cluster_pid = cluster_pid
        self.cluster_id = current_worker_id(cluster_pid)
        self.stopping = False
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.seen: set[str] = set()
        self.backoff = Backoff()
        self.capabilities = capabilities()  # the machine's: the same for each of its processes

    def run(self) -> None:
        try:
            wait = FIRST_BEAT_SECONDS
            while not self.stopped.is_set():
                self.wake.wait(wait)
                self.wake.clear()
                if self.stopped.is_set():
                    break
                wait = self.beat()
        finally:
            connection.close()  # this thread's own

    def processes(self) -> tuple[list[int], list[int]]:
        """The pids of this cluster's worker processes: (alive, exited)."""
        folder = worker_pids_dir(self.cluster_pid)
        recorded = [int(entry.name) for entry in folder.iterdir() if entry.name.isdigit()] if folder.exists() else []
        ours = set(descendants(self.cluster_pid))
        alive = [pid for pid in recorded if pid in ours and running(pid)]
        return alive, sorted(set(recorded) - set(alive))

    def beat(self, *, final: bool = False) -> float:
        """One beat; how long to wait before the next. `final`: the cluster is exiting, every worker process of
        it has exited or been killed (one just killed may not look gone yet)."""
        alive, exited = self.processes()
        if final:
            alive, exited = [], sorted({*alive, *exited})
        live = [current_worker_id(pid) for pid in alive]
        gone = [current_worker_id(pid) for pid in exited]
        try:
            failed = cluster_beat(cluster_id=self.cluster_id, live=live, gone=gone, stopping=self.stopping,
                                  capabilities=self.capabilities)
        except DATABASE_UNREACHABLE as exc:
            database_lost(f"Fleet heartbeat of cluster {self.cluster_pid}", exc, self.backoff.failed())
            return settings.HEARTBEAT_INTERVAL_SECONDS
        except Exception:  # the thread must outlive any error, or idle workers would look gone
            logger.exception("Fleet heartbeat of cluster %s failed", self.cluster_pid)
            connection.close()
            return settings.HEARTBEAT_INTERVAL_SECONDS
        self.backoff.succeeded()
        self.seen.update(live, gone)
        for pid in exited:  # reported: forget them
            (worker_pids_dir(self.cluster_pid) / str(pid)).unlink(missing_ok=True)
        for operation_id in failed:
            logger.warning("%s: its worker process exited mid-run; failed as a lost worker", operation_id)
        return settings.HEARTBEAT_INTERVAL_SECONDS

    def shutting_down(self) -> None:
        """SIGTERM: mark the workers STOPPING now (from this thread: a signal handler must not touch the
        database)."""
        self.stopping = True
        self.wake.set()

    def finish(self) -> None:
        """The cluster has stopped: a last beat reports the processes that exited (a run still on one was killed
        at the end of the shutdown budget: failed now as a lost worker), then its workers are STOPPED."""
        self.stopped.set()
        self.wake.set()
        if self.ident is not None:  # started (the cluster may have failed to start before it)
            self.join(timeout=5)
        self.beat(final=True)
        try:
            cluster_stopped(self.seen | {current_worker_id(pid) for pid in self.processes()[0]})
        except Exception as exc:  # the sweep marks them UNAVAILABLE after WORKER_STALE_SECONDS instead
            logger.warning("Could not mark the workers of cluster %s stopped: %s", self.cluster_pid, exc)
        finally:
            connection.close()
