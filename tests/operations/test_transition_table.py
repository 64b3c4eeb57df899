"""The transition table (operations/transitions.py): walked against the state machine the product promises,
each row made on a real row of PostgreSQL by its kind of actor and refused to the others, every change it lacks
refused before anything is written, its guards held, its page in docs/ equal to it, and no status written
around it."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from django.utils import timezone

from operations.ids import new_operation_id
from operations.models import Operation, OperationEvent
from operations.transitions import (
    CONTROL_LOOP,
    PRESUMED_ORPHAN,
    RESTART_PLANNED,
    TRANSITIONS,
    By,
    TransitionNotAllowed,
    actor_kind,
    allowed,
    worker_actor,
)
from operations.transitions import (
    OperationStatus as S,
)
from tests.factories import OperationFactory, WorkerFactory

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = (S.COMPLETED, S.FAILED, S.CANCELLED)

# The state machine the product promises its users, written out apart from operations/transitions.py: the rules of
# cancel and resume (docs/cancel-and-resume.md), of the sweep, startup reconciliation and worker registration
# (docs/restarts-and-crashes.md). (from, to, who) → the rule that promises it.
PROMISED: dict[tuple[str | None, str, By], str] = {
    (None, S.PENDING, By.USER): "POST training/ (backtests/, agents/sessions/), train, backtest, agent start: "
                                "a new operation, PENDING",
    (S.PENDING, S.RUNNING, By.WORKER): "PENDING --claim--> RUNNING",
    (S.RESUMING, S.RUNNING, By.WORKER): "RESUMING --claim--> RUNNING",
    (S.RUNNING, S.COMPLETED, By.WORKER): "RUNNING --complete--> COMPLETED",
    (S.PENDING, S.CANCELLED, By.USER): "PENDING --cancel--> CANCELLED",
    (S.PENDING_RECONCILIATION, S.CANCELLED, By.USER): "a cancel while its worker is unreachable cancels it at once "
                                                      "(nothing is known to execute it)",
    (S.RESUMING, S.CANCELLED, By.USER): "Cancel of a PENDING or RESUMING operation cancels it at once; and if "
                                        "enqueueing (a resume) fails the status is put back",
    (S.RESUMING, S.FAILED, By.USER): "if enqueueing (a resume) fails the status is put back",
    (S.RUNNING, S.RUNNING, By.USER): "Cancel of a RUNNING operation records cancel_requested_at",
    (S.RUNNING, S.CANCELLED, By.WORKER): "RUNNING --cancel acknowledged--> CANCELLED; RUNNING --SIGTERM--> CANCELLED",
    (S.RUNNING, S.FAILED, By.WORKER): "RUNNING --error--> FAILED",
    (S.RUNNING, S.PENDING_RECONCILIATION, By.CONTROL_LOOP): "RUNNING --heartbeat stale--> PENDING_RECONCILIATION; "
                                                            "RUNNING (control loop restarted) --startup "
                                                            "reconciliation--> PENDING_RECONCILIATION",
    (S.RUNNING, S.FAILED, By.CONTROL_LOOP): "startup reconciliation: RUNNING backend-local operations become FAILED",
    (S.PENDING_RECONCILIATION, S.RUNNING, By.WORKER): "PENDING_RECONCILIATION --heartbeat back--> RUNNING",
    (S.PENDING_RECONCILIATION, S.FAILED, By.CONTROL_LOOP): "PENDING_RECONCILIATION --orphan timeout--> FAILED",
    (S.FAILED, S.RUNNING, By.WORKER): "FAILED (presumed orphan) --its own worker re-registers--> RUNNING",
    (S.CANCELLED, S.RESUMING, By.USER): "CANCELLED|FAILED --resume--> RESUMING",
    (S.FAILED, S.RESUMING, By.USER): "CANCELLED|FAILED --resume--> RESUMING",
    (S.PENDING, S.PENDING, By.CONTROL_LOOP): "a PENDING or RESUMING operation that no worker has claimed for "
                                             "REQUEUE_AFTER_SECONDS is enqueued again",
    (S.RESUMING, S.RESUMING, By.CONTROL_LOOP): "a PENDING or RESUMING operation that no worker has claimed for "
                                               "REQUEUE_AFTER_SECONDS is enqueued again",
    (None, S.RUNNING, By.WORKER): "registration, current operation: unknown → create its record as RUNNING on "
                                  "this worker",
    **{(S.PENDING_RECONCILIATION, status, By.WORKER): "registration, each completed report: if the operation is "
                                                      "not terminal, set the reported terminal status"
       for status in TERMINAL},
    **{(S.FAILED, status, By.WORKER): "registration, each completed report: ... or is FAILED only because it was "
                                      "presumed orphaned, set the reported terminal status"
       for status in TERMINAL},
    # the restart policy (docs/self-healing.md)
    (S.FAILED, S.RESUMING, By.CONTROL_LOOP): "a run whose worker was lost, or that failed with a transient error, "
                                             "is resumed automatically from its checkpoint",
    (S.CANCELLED, S.RESUMING, By.CONTROL_LOOP): "a run cancelled by a graceful shutdown is resumed automatically "
                                                "once a worker is available",
    (S.FAILED, S.PENDING, By.CONTROL_LOOP): "without a checkpoint, restarted from the beginning if its type allows",
    (S.CANCELLED, S.PENDING, By.CONTROL_LOOP): "without a checkpoint, restarted from the beginning if its type "
                                               "allows",
    (S.FAILED, S.FAILED, By.CONTROL_LOOP): "a crash loop stops with FAILED and a message saying so",
    (S.CANCELLED, S.CANCELLED, By.CONTROL_LOOP): "a planned resume whose checkpoint is unusable is given up",
    (S.FAILED, S.CANCELLED, By.USER): "a user's cancel calls off a planned automatic resume",
    (S.CANCELLED, S.CANCELLED, By.USER): "a user's cancel calls off a planned automatic resume",
}
# The guards of those rules: a worker's report or return wins over the sweep only if the sweep merely
# presumed it orphaned; a second cancel request changes nothing.
GUARDED = {
    (S.FAILED, S.RUNNING, By.WORKER), (S.FAILED, S.COMPLETED, By.WORKER), (S.FAILED, S.CANCELLED, By.WORKER),
    (S.FAILED, S.FAILED, By.WORKER), (S.RUNNING, S.RUNNING, By.USER),
    # the control loop and a user act on an ended operation only while an automatic resume is planned
    (S.FAILED, S.RESUMING, By.CONTROL_LOOP), (S.CANCELLED, S.RESUMING, By.CONTROL_LOOP),
    (S.FAILED, S.PENDING, By.CONTROL_LOOP), (S.CANCELLED, S.PENDING, By.CONTROL_LOOP),
    (S.FAILED, S.FAILED, By.CONTROL_LOOP), (S.CANCELLED, S.CANCELLED, By.CONTROL_LOOP),
    (S.FAILED, S.CANCELLED, By.USER), (S.CANCELLED, S.CANCELLED, By.USER),
}

ACTORS = {By.USER: "user:alice", By.WORKER: worker_actor("host1:cluster:1"), By.CONTROL_LOOP: CONTROL_LOOP}


def table() -> set[tuple[str | None, str, By]]:
    return {(row.from_status, row.to_status, row.by) for row in TRANSITIONS}


def test_the_table_is_the_promised_state_machine():
    assert len(table()) == len(TRANSITIONS)  # no row twice
    assert table() == set(PROMISED)


def test_the_guards_are_the_promised_ones():
    assert {(row.from_status, row.to_status, row.by) for row in TRANSITIONS if row.only_if} == GUARDED


def test_completed_is_final():
    assert not [row for row in TRANSITIONS if row.from_status == S.COMPLETED]


@pytest.mark.parametrize(
    ("actor", "kind"),
    [("user:alice", By.USER), ("admin:bob", By.USER), ("cli", By.USER), ("session:op_x", By.USER),
     ("worker:host:cluster:12", By.WORKER), ("control-loop", By.CONTROL_LOOP)],
)
def test_the_kind_of_an_actor(actor, kind):
    assert actor_kind(actor) is kind


def row_id(row) -> str:
    return f"{row.from_status or 'new'}-{row.to_status}-by-{row.by.name}"


def satisfying(row) -> dict:
    """Fields of a row the transition applies to: its status, and its guard met."""
    fields = {"status": row.from_status, "worker": WorkerFactory(), "attempt": 1}
    if row.only_if is PRESUMED_ORPHAN:
        fields["presumed_orphan"] = True
    if row.only_if is RESTART_PLANNED:
        fields["restart_due_at"] = timezone.now()
    return fields


@pytest.mark.django_db
@pytest.mark.parametrize("row", [row for row in TRANSITIONS if row.from_status is not None], ids=row_id)
def test_each_change_is_made_by_its_actor_and_refused_to_the_others(row):
    operation = OperationFactory(**satisfying(row))
    for kind in By:
        if kind is row.by or (row.from_status, row.to_status, kind) in table():
            continue
        with pytest.raises(TransitionNotAllowed):
            Operation.objects.transition(operation.pk, from_statuses=[row.from_status], to_status=row.to_status,
                                         actor=ACTORS[kind])
    assert not OperationEvent.objects.filter(operation=operation).exists()

    assert Operation.objects.transition(operation.pk, from_statuses=[row.from_status], to_status=row.to_status,
                                        actor=ACTORS[row.by], reason="walked")

    operation.refresh_from_db()
    assert (operation.status, operation.version) == (row.to_status, 1)
    event = OperationEvent.objects.get(operation=operation)
    assert (event.from_status, event.to_status, event.actor, event.reason) == (
        row.from_status, row.to_status, ACTORS[row.by], "walked")


@pytest.mark.django_db
@pytest.mark.parametrize("row", [row for row in TRANSITIONS if row.from_status is None], ids=row_id)
def test_each_creation_is_made_by_its_actor_and_refused_to_the_others(row):
    for kind in By:
        if kind is not row.by:
            with pytest.raises(TransitionNotAllowed):
                Operation.objects.enter(row.to_status, actor=ACTORS[kind], reason="walked",
                                        operation_id=new_operation_id("training"), operation_type="training")
    assert not Operation.objects.exists()

    operation = Operation.objects.enter(row.to_status, actor=ACTORS[row.by], reason="walked",
                                        operation_id=new_operation_id("training"), operation_type="training")

    event = OperationEvent.objects.get(operation=operation)
    assert (operation.status, event.from_status, event.to_status, event.actor) == (
        row.to_status, "", row.to_status, ACTORS[row.by])


@pytest.mark.django_db
def test_every_change_the_table_lacks_is_refused_before_anything_is_written():
    statuses = list(S)
    lacking = [(from_status, to_status, kind)
               for from_status, to_status, kind in itertools.product([None, *statuses], statuses, By)
               if (from_status, to_status, kind) not in table()]
    assert len(lacking) == 8 * 7 * 3 - len(TRANSITIONS)
    operations = {status: OperationFactory(status=status, presumed_orphan=True) for status in statuses}
    for from_status, to_status, kind in lacking:
        named = re.escape(f"{from_status or '(new)'} -> {to_status} by {kind.value}")
        with pytest.raises(TransitionNotAllowed, match=named):
            allowed(from_status, to_status, ACTORS[kind])
        if from_status is not None:
            with pytest.raises(TransitionNotAllowed):
                Operation.objects.transition(operations[from_status].pk, from_statuses=[from_status],
                                             to_status=to_status, actor=ACTORS[kind])
    assert [(o.status, o.version) for o in Operation.objects.order_by("status")] == sorted(
        (status, 0) for status in statuses)
    assert not OperationEvent.objects.exists()


@pytest.mark.django_db
def test_one_status_the_table_lacks_refuses_the_whole_change():
    """A caller listing several statuses to move from gets all of them checked: one refused, nothing moves."""
    operation = OperationFactory(status=S.PENDING)
    with pytest.raises(TransitionNotAllowed, match="RUNNING -> CANCELLED by user"):
        Operation.objects.transition(operation.pk, from_statuses=[S.PENDING, S.RUNNING], to_status=S.CANCELLED,
                                     actor="user:alice")
    operation.refresh_from_db()
    assert (operation.status, operation.version) == (S.PENDING, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("to_status", [S.RUNNING, *TERMINAL])
def test_a_failed_operation_the_sweep_did_not_presume_orphaned_stays_failed(to_status):
    worker = WorkerFactory()
    failed = OperationFactory(status=S.FAILED, presumed_orphan=False, worker=worker, attempt=1)
    assert not Operation.objects.transition(failed.pk, from_statuses=[S.FAILED], to_status=to_status,
                                            actor=worker_actor(worker.pk))
    failed.refresh_from_db()
    assert (failed.status, failed.version) == (S.FAILED, 0)


@pytest.mark.django_db
def test_a_second_cancel_request_changes_nothing():
    operation = OperationFactory(status=S.RUNNING, cancel_requested_at=timezone.now())
    assert not Operation.objects.transition(operation.pk, from_statuses=[S.RUNNING], to_status=S.RUNNING,
                                            actor="user:alice", cancel_requested_at=timezone.now())
    assert Operation.objects.get(pk=operation.pk).version == 0


def test_the_documented_table_is_the_one_in_the_code():
    def cell(status: str | None) -> str:
        return f"`{status}`" if status else "(new)"

    rows = [f"| {cell(row.from_status)} | {cell(row.to_status)} | {row.by.value} | {row.when} | "
            f"{row.only_if.description if row.only_if else ''} |" for row in TRANSITIONS]
    documented = [line.replace("|  |", "| |") for line in (ROOT / "docs" / "state-machine.md").read_text().splitlines()
                  if line.startswith("| `") or line.startswith("| (new)")]
    assert documented == [row.replace("|  |", "| |") for row in rows]


# --- no status written around the table

PRODUCT = ["agents", "backtesting", "training", "runtime", "checkpoints", "marketdata", "operations", "config",
           "scripts"]
# The one place that writes statuses and events: OperationQuerySet.transition and .enter.
ALLOWED = {ROOT / "operations" / "models.py"}


def receiver(node: ast.AST) -> str:
    """The name a call chain starts from: `Operation` for Operation.objects.filter(...).update(...)."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def status_writes(path: Path) -> list[str]:
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Assign, ast.AugAssign)):  # operation.status = ...; operation.save()
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(target, ast.Attribute) and target.attr in ("status", "previous_status", "version")
                   for target in targets):
                found.append(f"{name}:{node.lineno} sets a status on an object")
            continue
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method, root = node.func.attr, receiver(node.func.value)
        keywords = {keyword.arg for keyword in node.keywords}
        if root == "OperationEvent" and method in ("create", "bulk_create", "update", "get_or_create"):
            found.append(f"{name}:{node.lineno} writes an event")
        elif root == "Operation" and method in ("create", "bulk_create", "get_or_create", "update_or_create"):
            found.append(f"{name}:{node.lineno} creates an operation")
        elif root == "Operation" and method == "update" and keywords & {"status", "previous_status", "version"}:
            found.append(f"{name}:{node.lineno} writes a status")
    return found


def test_no_status_is_written_around_the_table():
    paths = [path for folder in PRODUCT for path in (ROOT / folder).rglob("*.py")
             if "migrations" not in path.parts and path not in ALLOWED]
    assert len(paths) > 50
    assert [write for path in paths for write in status_writes(path)] == []


def test_the_scan_finds_a_status_written_around_the_table(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("Operation.objects.filter(pk=1).update(status='FAILED')\n"
                   "OperationEvent.objects.create(operation_id=1, to_status='FAILED')\n"
                   "operation.status = 'FAILED'\n")
    assert sorted(status_writes(bad)) == ["bad.py:1 writes a status", "bad.py:2 writes an event",
                                          "bad.py:3 sets a status on an object"]
