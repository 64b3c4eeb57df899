"""`manage.py qcluster`: django-q2's cluster, with graceful shutdown of the running operations.

SIGTERM or SIGINT (docker stop, Kubernetes, Ctrl+C): each worker process is
told to checkpoint and stop its operation (runtime/shutdown.py),
then django-q2 stops as usual. Whatever is still running after
SHUTDOWN_TIMEOUT_SECONDS is killed, so the process always exits in time.
Meanwhile its FleetWatch thread heart-beats for its worker processes, idle or busy (runtime/fleet.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from django.conf import settings
from django.db import connections
from django_q import cluster as django_q_cluster
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQCommand

from runtime import shutdown
from runtime.fleet import FleetWatch
from runtime.worker import DATABASE_UNREACHABLE, outbox_report

logger = logging.getLogger("runtime.qcluster")


def keep_connections() -> None:
    """The cluster's processes keep a database connection Q_DATABASE_CONN_MAX_AGE seconds between tasks.

    django-q2 closes a process's old connections before each task a worker runs and each result the monitor
    saves: with DATABASE_CONN_MAX_AGE 0 (the web's default) every operation started two PostgreSQL backends.
    Set before the processes are forked; every connection of theirs reads these settings, and the health
    check still replaces a broken one.
    """
    for database in settings.DATABASES.values():
        age = database.get("CONN_MAX_AGE", 0)
        if age is not None and age < settings.Q_DATABASE_CONN_MAX_AGE:
            database["CONN_MAX_AGE"] = settings.Q_DATABASE_CONN_MAX_AGE


class Sentinel(django_q_cluster.Sentinel):
    """django-q2's sentinel, deaf to SIGTERM as it is to SIGINT: a SIGTERM sent to the cluster's whole
    process group is for the main process to handle (checkpoint and stop), not the sentinel's death, which
    would leave its worker processes without a parent while they save."""

    def start(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # before the workers, pusher and monitor are forked
        super().start()


class Command(DjangoQCommand):
    help = (
        "Start a django-q2 worker cluster. SIGTERM or SIGINT checkpoints and cancels the running operations "
        "(CANCELLED, 'Graceful shutdown - checkpoint saved') and exits within SHUTDOWN_TIMEOUT_SECONDS."
    )

    def handle(self, *args, **options):
        settings.SECRET_KEY  # django-q2 signs tasks with it
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        self.cluster_pid = os.getpid()
        os.environ[shutdown.CLUSTER_PID_VARIABLE] = str(self.cluster_pid)  # inherited by the worker processes
        self.stopping = False
        self.report_outbox()
        keep_connections()
        django_q_cluster.Sentinel = Sentinel  # Cluster.start looks it up in its module when it forks it
        self.cluster = Cluster()
        self.fleet = FleetWatch(self.cluster_pid)
        signal.signal(signal.SIGTERM, self.on_stop_signal)
        signal.signal(signal.SIGINT, self.on_stop_signal)
        try:
            self.cluster.start()
            self.fleet.start()
            if options.get("run_once", False):
                self.cluster.stop()
            else:
                # django-q2's command returns here and the interpreter waits for the cluster at exit;
                # waiting explicitly keeps our signal handler in charge until the cluster has stopped.
                while self.cluster.sentinel.is_alive():
                    self.cluster.sentinel.join(timeout=1)
        finally:
            self.fleet.finish()
            shutdown.forget_cluster(self.cluster_pid)

    def report_outbox(self) -> None:
        """Outcomes this machine's earlier worker processes could not report (the database was down).

        One try, before the worker processes are forked: if the database is
        still away, the first registration of a worker process reports them.
        """
        try:
            applied = outbox_report()
        except DATABASE_UNREACHABLE as exc:
            logger.warning("The outbox will be reported by the first worker: the database is unreachable (%s)", exc)
        else:
            if applied:
                self.stdout.write(f"Reported {len(applied)} outcome(s) from the outbox.")
        finally:
            connections.close_all()

    def on_stop_signal(self, signum, frame) -> None:
        if self.stopping:
            return
        self.stopping = True
        budget = settings.SHUTDOWN_TIMEOUT_SECONDS
        workers = shutdown.signal_workers(self.cluster_pid)
        logger.warning(
            "%s: checkpointing and stopping the operations of %d worker process(es); %gs at most",
            signal.Signals(signum).name, len(workers), budget,
        )
        self.fleet.shutting_down()
        threading.Thread(target=self.deadline, args=(budget,), daemon=True).start()
        self.cluster.stop()

    def deadline(self, budget: float) -> None:
        threading.Event().wait(budget)
        logger.error("Shutdown took longer than %gs: killing the worker processes", budget)
        shutdown.kill_cluster_processes(self.cluster_pid)
        self.fleet.finish()
        shutdown.forget_cluster(self.cluster_pid)
        os._exit(1)
