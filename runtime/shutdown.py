"""The bridge from a SIGTERM to the cluster to the operations its workers are running.

django-q2 does not tell a running task about SIGTERM: its cluster stops
pulling tasks and waits for the running ones without limit. Our `qcluster`
command (runtime/management/commands/qcluster.py) therefore, on SIGTERM or
SIGINT, sends SIGUSR1 to each of its worker processes before letting
django-q2 stop. A worker process records its pid when it is spawned and turns
SIGUSR1 into a flag that the running operation sees at its next batch or bar:
it saves a `shutdown` checkpoint and becomes CANCELLED.

A stop signal sent to the cluster's whole process group (Ctrl+C in a terminal,
systemd's default KillMode, `kill -TERM -<pgid>`) reaches every process of it
at once. The sentinel and the workers ignore SIGINT (django-q2), the sentinel
of our command ignores SIGTERM too (`qcluster.Sentinel`), and a worker process
takes SIGTERM as the shutdown signal: the cluster stops as if only its main
process had been signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

CLUSTER_PID_VARIABLE = "RESILIENT_CLUSTER_PID"
SHUTDOWN_SIGNAL = signal.SIGUSR1
GRACEFUL_SHUTDOWN_MESSAGE = "Graceful shutdown - checkpoint saved"
GRACEFUL_SHUTDOWN_NO_CHECKPOINT = "Graceful shutdown - no checkpoint available"

shutdown_requested = threading.Event()  # in a worker process: its cluster is shutting down


def worker_pids_dir(cluster_pid: int) -> Path:
    return Path(settings.WORKER_STATE_DIR) / "clusters" / str(cluster_pid)


def on_worker_spawned(**_kwargs) -> None:
    """django-q2's post_spawn, in each new worker process of one of our clusters."""
    cluster_pid = os.environ.get(CLUSTER_PID_VARIABLE)
    if not cluster_pid:
        return  # a cluster started by django-q2's own command: no bridge
    # SIGTERM too: sent to the whole process group (systemd's default KillMode, `kill -TERM -<pgid>`) it
    # reaches the workers beside their cluster, and must stop the run as the cluster's own signal does.
    for signum in (SHUTDOWN_SIGNAL, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: shutdown_requested.set())
    folder = worker_pids_dir(int(cluster_pid))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()


def signal_workers(cluster_pid: int) -> list[int]:
    """Send the shutdown signal to every live worker process of this cluster; return their pids."""
    signalled = []
    folder = worker_pids_dir(cluster_pid)
    for entry in folder.iterdir() if folder.exists() else []:
        try:
            pid = int(entry.name)
            os.kill(pid, SHUTDOWN_SIGNAL)
            signalled.append(pid)
        except (ValueError, ProcessLookupError):
            entry.unlink(missing_ok=True)
        except PermissionError:
            logger.warning("Cannot signal worker process %s", entry.name)
    return signalled


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc): the sentinel, its workers, pusher and monitor."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def kill_cluster_processes(cluster_pid: int) -> None:
    for pid in descendants(cluster_pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def forget_cluster(cluster_pid: int) -> None:
    folder = worker_pids_dir(cluster_pid)
    for entry in folder.iterdir() if folder.exists() else []:
        entry.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
