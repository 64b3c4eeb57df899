"""The orphan sweep at scale (docs/restarts-and-crashes.md): a pass makes as many statements for 200 operations as
for 10, whatever it does to them; raced on PostgreSQL, each operation moves once, and one a heartbeat refreshed
meanwhile stays; every statement finds its rows by an index."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from operations.ids import new_operation_id
from operations.models import ControlLoop, Operation, OperationEvent, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.reconciliation import SweepReport, sweep_orphans
from operations.services.workers import CurrentOperation, worker_heartbeat
from tests.conftest import queued_operation_ids
from tests.support.processes import ROOT
from tests.support.race import race

# The statements of a pass that finds nothing: the database's clock; the control loop's watch; one UPDATE each for
# the stale RUNNING, the expired reconciliations, the unclaimed PENDING and RESUMING, and the silent workers; the
# unclaimed of a type without an executor (a warning each); the control loop's record.
EMPTY_PASS = 8
# A step that moves operations adds one statement, whatever their number: their events' INSERT.
STEP_WITH_EVENTS = 1
# A re-enqueue adds one more: the DELETE of the earlier re-enqueue events of the operations it re-enqueued.
REQUEUE_COMPACTION = 1


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def stale_running(count: int, *, silent: float = 4) -> list[str]:
    """`count` RUNNING operations, each on a worker of its own, both silent for `silent` seconds."""
    batch, seen = secrets.token_hex(3), ago(silent)
    workers = Worker.objects.bulk_create(
        Worker(worker_id=f"mass-{batch}:resilient:{index}", host=f"mass-{batch}", pid=index,
               status=WorkerStatus.BUSY, last_seen_at=seen)
        for index in range(count)
    )
    return [operation.pk for operation in Operation.objects.bulk_create(
        Operation(operation_id=new_operation_id("training"), operation_type="training", status=S.RUNNING,
                  worker_id=worker.pk, attempt=1, started_at=seen, last_heartbeat_at=seen)
        for worker in workers
    )]


def expired_reconciliations(count: int) -> list[str]:
    """`count` operations PENDING_RECONCILIATION past the orphan timeout: with and without a worker recorded, with
    and without restarts left."""
    silent = ago(7)
    return [operation.pk for operation in Operation.objects.bulk_create(
        Operation(operation_id=new_operation_id("training"), operation_type="training",
                  status=S.PENDING_RECONCILIATION, previous_status=S.RUNNING, version=1, attempt=1,
                  started_at=silent, last_heartbeat_at=silent, orphan_clock_from=silent,
                  max_restarts=index % 3, restarts=index % 2)
        for index in range(count)
    )]


def unclaimed(count: int) -> list[str]:
    """`count` operations PENDING, enqueued longer ago than REQUEUE_AFTER_SECONDS."""
    return [operation.pk for operation in Operation.objects.bulk_create(
        Operation(operation_id=new_operation_id("training"), operation_type="training", status=S.PENDING,
                  queued_at=ago(11))
        for _ in range(count)
    )]


def statements_of_a_pass() -> tuple[SweepReport, list[str]]:
    """A pass, and the statements it sent but the savepoints of the test's own transaction: the control loop runs
    the sweep outside any, where its transactions begin and commit without a statement through Django's cursor."""
    with CaptureQueriesContext(connection) as captured:
        report = sweep_orphans()
    return report, [query["sql"] for query in captured
                    if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


# --- statements: as many for 200 operations as for 10

@pytest.mark.django_db
class TestStatements:
    @pytest.fixture(autouse=True)
    def control_loop(self):
        """The control loop's row, there from the first time a control loop took the lease."""
        ControlLoop.objects.create(pk=1)

    def test_a_pass_that_finds_nothing(self, short_intervals, training_executor):
        Worker.objects.create(worker_id="alive:resilient:1", host="alive", pid=1)
        _report, statements = statements_of_a_pass()
        assert len(statements) == EMPTY_PASS, "\n".join(statements)

    @pytest.mark.parametrize("count", [10, 200])
    def test_stale_running_and_their_workers(self, count, short_intervals, training_executor):
        operations = stale_running(count)
        report, statements = statements_of_a_pass()
        assert sorted(report.pending_reconciliation) == sorted(operations)
        assert len(report.workers_unavailable) == count
        assert Worker.objects.filter(status=WorkerStatus.UNAVAILABLE).count() == count
        assert OperationEvent.objects.filter(to_status=S.PENDING_RECONCILIATION).count() == count
        assert len(statements) == EMPTY_PASS + STEP_WITH_EVENTS, "\n".join(statements)

    @pytest.mark.parametrize("count", [10, 200])
    def test_every_step_acting_at_once(self, count, short_intervals, training_executor,
                                       django_capture_on_commit_callbacks):
        """Stale RUNNING, expired reconciliations and unclaimed PENDING, `count` of each: one INSERT of events more
        per step. The broker is then called once per re-enqueued operation, after the commit: the one part of a
        pass that grows with the operations it acts on, and none of the statements counted here."""
        stale, expired, waiting = stale_running(count), expired_reconciliations(count), unclaimed(count)
        with django_capture_on_commit_callbacks(execute=True):
            report, statements = statements_of_a_pass()
        assert sorted(report.pending_reconciliation) == sorted(stale)
        assert sorted(report.failed) == sorted(expired)
        assert sorted(report.requeued) == sorted(waiting)
        assert sorted(queued_operation_ids()) == sorted(waiting)
        assert OperationEvent.objects.count() == 3 * count
        assert len(statements) == EMPTY_PASS + 3 * STEP_WITH_EVENTS + REQUEUE_COMPACTION, "\n".join(statements)


# --- what each row gets, from one statement

@pytest.mark.django_db
class TestEachRowItsOwn:
    def test_the_reason_quotes_each_operations_silence_and_worker(self, short_intervals):
        four, five = stale_running(1, silent=4), stale_running(1, silent=5.2)
        orphan = Operation.objects.create(operation_id=new_operation_id("training"), operation_type="training",
                                          status=S.RUNNING, started_at=ago(6))
        now = timezone.now()
        sweep_orphans(now=now)
        reasons = dict(OperationEvent.objects.values_list("operation_id", "reason"))
        for pk, silence in ((four[0], 4), (five[0], 5.2)):
            operation = Operation.objects.get(pk=pk)
            assert operation.orphan_clock_from == operation.last_heartbeat_at
            age = (now - operation.last_heartbeat_at).total_seconds()
            assert round(age) == round(silence)
            assert reasons[pk] == f"No heartbeat from worker {operation.worker_id} for {age:.0f}s"
        assert reasons[orphan.pk] == "No heartbeat from worker (none) for 6s"

    def test_the_restart_policy_plans_each_from_its_own_counts(self, short_intervals, settings):
        """Restarts left, none left, off, and a cancel requested: what planned() says of each row."""
        settings.RESTART_BACKOFF_SECONDS, settings.RESTART_BACKOFF_MAX_SECONDS = 10, 600
        cases = {"left": (1, 3, None), "used up": (3, 3, None), "off": (0, 0, None), "cancel": (0, 3, ago(9))}
        silent = ago(7)
        ids = {}
        for name, (restarts, max_restarts, cancel) in cases.items():
            ids[name] = Operation.objects.create(
                operation_id=new_operation_id("training"), operation_type="training",
                status=S.PENDING_RECONCILIATION, started_at=silent, orphan_clock_from=silent,
                restarts=restarts, max_restarts=max_restarts, cancel_requested_at=cancel,
            ).pk
        now = timezone.now()
        assert sorted(sweep_orphans(now=now).failed) == sorted(ids.values())
        planned = {name: Operation.objects.values_list("end_cause", "restart_due_at").get(pk=pk)
                   for name, pk in ids.items()}
        assert planned == {
            "left": ("worker_lost", now + timedelta(seconds=20)),  # the second restart: 10 s doubled once
            "used up": ("worker_lost", None),
            "off": ("worker_lost", None),
            "cancel": ("cancelled", None),
        }


# --- races: two sweeps, a sweep and a heartbeat

def locks_awaited() -> int:
    """Backends of this test's database waiting for a row lock now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
class TestRaces:
    def test_sweeps_at_once_move_each_operation_once(self, short_intervals):
        """Four passes at once over the same 200 stale operations and their workers (one control loop holds the
        lease, but `supervise --once --force` beside it may not): each operation moves once, with one event, and
        each worker is reported once."""
        operations = stale_running(200)
        reports = race(lambda index: sweep_orphans(), 4)
        assert not [report for report in reports if isinstance(report, Exception)], reports
        moved = Counter(pk for report in reports for pk in report.pending_reconciliation)
        assert moved == Counter(operations)
        marked = Counter(pk for report in reports for pk in report.workers_unavailable)
        assert sorted(marked) == sorted(Worker.objects.values_list("pk", flat=True)) and set(marked.values()) == {1}
        events = Counter(OperationEvent.objects.values_list("operation_id", flat=True))
        assert events == Counter(operations)
        assert set(Operation.objects.values_list("status", "version")) == {(S.PENDING_RECONCILIATION, 1)}

    def test_a_heartbeat_the_sweep_waited_for_keeps_its_operation_running(self, short_intervals):
        """A heartbeat holds its operation's row, uncommitted, when the sweep's UPDATE reaches it: the UPDATE
        waits, checks the row again once the heartbeat commits, finds it fresh and leaves it (and its worker);
        the others it moves."""
        operations = stale_running(200)
        beating = Operation.objects.get(pk=operations[57])
        holding, release, swept = threading.Event(), threading.Event(), []

        def heartbeat() -> None:
            try:
                with transaction.atomic():
                    worker_heartbeat(worker_id=beating.worker_id, current_operation=CurrentOperation(beating.pk, 1))
                    holding.set()
                    release.wait(30)
            finally:
                connection.close()

        def sweep() -> None:
            try:
                swept.append(sweep_orphans())
            finally:
                connection.close()

        threads = [threading.Thread(target=heartbeat)]
        threads[0].start()
        assert holding.wait(30)
        threads.append(threading.Thread(target=sweep))
        threads[1].start()
        deadline = time.monotonic() + 30
        while not locks_awaited() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert locks_awaited(), "the sweep never waited for the heartbeat's row"
        release.set()
        for thread in threads:
            thread.join(30)

        [report] = swept
        assert beating.pk not in report.pending_reconciliation
        assert sorted(report.pending_reconciliation) == sorted(set(operations) - {beating.pk})
        beating.refresh_from_db()
        assert (beating.status, beating.version) == (S.RUNNING, 0)
        assert not OperationEvent.objects.filter(operation=beating).exists()
        assert Worker.objects.get(pk=beating.worker_id).status == WorkerStatus.BUSY
        assert beating.worker_id not in report.workers_unavailable and len(report.workers_unavailable) == 199


# --- indexes: nothing the sweep needs lost its index

SWEPT_TABLES = ("operations_operation", "operations_worker", "operations_controlloop")


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


@pytest.mark.django_db
def test_every_statement_of_the_sweep_reads_by_an_index(short_intervals, training_executor,
                                                          django_capture_on_commit_callbacks):
    """EXPLAIN of each statement of a pass acting on every step, with sequential scans off (a test's tables are
    too small for the planner to want an index): each scan of the operations, the workers and the control loop's
    row is an index's, searched on its leading column or a partial index's. An index dropped, or a condition no
    index serves, shows up as a sequential scan or a whole index read through."""
    stale_running(3), expired_reconciliations(3), unclaimed(3)
    Operation.objects.create(operation_id=new_operation_id("training"), operation_type="training",
                             status=S.RESUMING, queued_at=ago(11))
    statements: list[tuple[str, tuple]] = []

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record), django_capture_on_commit_callbacks():
        report = sweep_orphans()
    assert report.pending_reconciliation and report.failed and report.requeued and report.workers_unavailable
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname, pg_get_indexdef(i.indexrelid, 1, true), i.indpred IS NOT NULL "
                       "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                       "WHERE i.indrelid::regclass::text = ANY(%s)", [list(SWEPT_TABLES)])
        indexes = {name: (leading, partial) for name, leading, partial in cursor.fetchall()}
    used, unindexed = set(), []
    for sql, params in statements:
        if not sql.startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            transaction.set_rollback(True)  # the setting with it
        for node in plan_nodes(plan[0]["Plan"]):
            kind = node["Node Type"]
            if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") and node["Index Name"] in indexes:
                leading, partial = indexes[node["Index Name"]]
                if not partial and leading not in node.get("Index Cond", ""):
                    unindexed.append(f"{node['Index Name']} read through (no condition on {leading}): {sql}")
                used.add(node["Index Name"])
            elif kind == "Seq Scan" and node["Relation Name"] in SWEPT_TABLES:
                unindexed.append(f"sequential scan of {node['Relation Name']}: {sql}")
    assert unindexed == [], "\n".join(unindexed)
    assert {"op_unclaimed_idx", "op_live_status_idx", "worker_status_idx"} <= used, used


# --- SQLite, make run's default: the same pass, correct if slower

SWEEP_ON_SQLITE = """
import django, json
django.setup()
from django.utils import timezone
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django_q.models import OrmQ
from operations.models import Operation, OperationEvent
from operations.restarts import EndCause, planned
from operations.services.reconciliation import NO_WORKER_MESSAGE, sweep_orphans
from tests.operations.test_sweep_at_scale import expired_reconciliations, stale_running, unclaimed

stale, expired, waiting = stale_running(300), expired_reconciliations(300), unclaimed(300)
policy = {pk: row for pk, *row in Operation.objects.filter(pk__in=expired).values_list(
    "pk", "restarts", "max_restarts")}
now = timezone.now()
report = sweep_orphans(now=now)
again = sweep_orphans(now=now)  # at the same moment: a slow machine must not make the first pass's moves due
reasons = dict(OperationEvent.objects.filter(operation_id__in=stale).values_list("operation_id", "reason"))
stale_rows = Operation.objects.filter(pk__in=stale)
failed = {pk: (status, message, cause, due) for pk, status, message, cause, due in Operation.objects.filter(
    pk__in=expired).values_list("pk", "status", "error_message", "end_cause", "restart_due_at")}
print(json.dumps({
    "moved": [sorted(report.pending_reconciliation) == sorted(stale), sorted(report.failed) == sorted(expired),
              sorted(report.requeued) == sorted(waiting), len(report.workers_unavailable)],
    "again": again.changed,
    "events": OperationEvent.objects.count(),
    "reasons": all(reasons[row.pk] == f"No heartbeat from worker {row.worker_id} for "
                   f"{(now - row.orphan_clock_from).total_seconds():.0f}s"
                   and row.orphan_clock_from == row.last_heartbeat_at for row in stale_rows),
    "failed": all(failed[pk] == ("FAILED", NO_WORKER_MESSAGE, *planned(
        EndCause.WORKER_LOST, restarts=restarts, max_restarts=max_restarts, now=now).values())
        for pk, (restarts, max_restarts) in policy.items()),
    "planned": sum(1 for *_, due in failed.values() if due is not None),
    "queued": OrmQ.objects.count(),
}))
"""


@pytest.mark.process
def test_on_sqlite_a_pass_acts_on_every_step_as_on_postgresql(tmp_path):
    """`make run`'s default database, in a process of its own: 300 of each kind in one pass, each row with its
    reason, message and plan, the broker called for each re-enqueue, and a second pass that changes nothing."""
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_ON_SQLITE)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.base", "VAR_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PYTHONPATH": str(ROOT), "Q_BROKER": "orm",
           "HEARTBEAT_INTERVAL_SECONDS": "1", "WORKER_STALE_SECONDS": "3", "ORPHAN_TIMEOUT_SECONDS": "6",
           "REQUEUE_AFTER_SECONDS": "10", "ORPHAN_CHECK_INTERVAL_SECONDS": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["moved"] == [True, True, True, 300]
    assert outcome["again"] is False
    assert outcome["events"] == 900
    assert outcome["reasons"] and outcome["failed"]
    assert outcome["planned"] > 0  # some had restarts left: planned from their own counts
    assert outcome["queued"] == 300
