"""The data the API fuzz test runs against: users with tokens, operations of each kind in each status (some with
checkpoints, one of them corrupted), workers, an assessment and a market data series."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis.configuration import set_hypothesis_home_dir
from rest_framework.authtoken.models import Token

from agents.design import Verdict
from agents.models import Assessment
from agents.services import assessment_record
from checkpoints.models import Checkpoint
from checkpoints.services import checkpoint_save
from marketdata.series import generate_bars, write_series
from operations.models import Operation, OperationEvent, OperationType, Worker, WorkerStatus
from operations.models import OperationStatus as S
from operations.services.credentials import credential_create
from operations.services.lifecycle import operation_create
from tests.factories import OperationFactory, RunningOperationFactory, StaffFactory, UserFactory, WorkerFactory

# Without an example database (database=None) Hypothesis still writes caches, of Unicode tables and of the
# constants in the source code schemathesis has it read (when the test module is imported), under ./.hypothesis:
# to a temporary folder instead.
HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="hypothesis-"))
set_hypothesis_home_dir(HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, HYPOTHESIS_HOME, ignore_errors=True)

SYMBOL, TIMEFRAME = "SYN", "1h"
ARTIFACTS = {"model.pt": b"m" * 300, "optimizer.pt": b"o" * 100}
POSITIONS = {  # what a checkpoint of each kind records of how far it had come
    OperationType.TRAINING: {"epoch": 3, "history": {"train_loss": [0.9, 0.8, 0.7]}},
    OperationType.BACKTESTING: {"bar_index": 420, "cash": 99_500.25, "position": 0},
    OperationType.AGENT_RESEARCH: {"phase": "TRAINING", "configuration": {"fast": 10, "slow": 30}},
}


# What the API changes; users, tokens and files outside the checkpoint folder it leaves alone.
CHANGED_BY_THE_API = [Operation, OperationEvent, Worker, Checkpoint, Assessment]


class Snapshot:
    """The rows the API changes and the checkpoint folder, copied once and put back on demand: each API operation
    is fuzzed from the same data (a delete or cleanup fuzzed earlier would leave a resume nothing to resume)."""

    def __init__(self, checkpoint_dir: Path, copy_dir: Path) -> None:
        self.checkpoint_dir, self.copy_dir = checkpoint_dir, copy_dir
        self.tables = [model._meta.db_table for model in CHANGED_BY_THE_API]
        with connection.cursor() as cursor:  # temporary tables: this connection's own, dropped with it
            for table in self.tables:
                cursor.execute(f"CREATE TEMPORARY TABLE fuzz_{table} AS SELECT * FROM {table}")
        shutil.copytree(checkpoint_dir, copy_dir)

    def restore(self) -> None:
        # One transaction: the foreign keys are checked at its end (Django makes them deferrable), so the rows
        # go back in any order.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(self.tables)}")
            for table in self.tables:
                cursor.execute(f"INSERT INTO {table} SELECT * FROM fuzz_{table}")
        shutil.rmtree(self.checkpoint_dir)
        shutil.copytree(self.copy_dir, self.checkpoint_dir)


@dataclass
class FuzzData:
    authorization: dict[str, str]  # role → its Authorization header
    operation_ids: list[str] = field(default_factory=list)
    worker_ids: list[str] = field(default_factory=list)
    completed_training_id: str = ""
    snapshot: Snapshot | None = None
    fuzzing: str = ""  # the API operation whose cases run now
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # operation → codes

    def fresh_for(self, label: str) -> None:
        """Put the data back as it was made when the cases of another API operation begin."""
        if label != self.fuzzing:
            if self.fuzzing and self.snapshot is not None:
                self.snapshot.restore()
            self.fuzzing = label


def with_checkpoint(operation: Operation, checkpoint_type: str, *, age_days: float = 0) -> Operation:
    saved = checkpoint_save(operation_id=operation.pk, checkpoint_type=checkpoint_type,
                            state=dict(POSITIONS[operation.operation_type]), artifacts=ARTIFACTS)
    assert saved.saved, saved.error
    if age_days:
        old = timezone.now() - timedelta(days=age_days)
        Checkpoint.objects.filter(operation_id=operation.pk).update(created_at=old)
    return operation


def operations_of(owner, kind: str, models_dir: Path) -> list[Operation]:
    """One operation of `kind` in each status, a few of them twice; those with a checkpoint are the resumable
    ones (CANCELLED, FAILED), one RUNNING and one RESUMING."""
    now = timezone.now()
    made = [
        OperationFactory(owner=owner, operation_type=kind, status=S.PENDING),
        # Its checkpoint is about to be loaded: a delete is refused (409).
        with_checkpoint(OperationFactory(owner=owner, operation_type=kind, status=S.RESUMING,
                                         progress_percent=30.0), "cancellation"),
        with_checkpoint(RunningOperationFactory(owner=owner, operation_type=kind, progress_percent=50.0,
                                                progress_current=5, progress_total=10, progress_unit="epochs"),
                        "periodic"),
        RunningOperationFactory(owner=owner, operation_type=kind, cancel_requested_at=now),
        RunningOperationFactory(owner=owner, operation_type=kind, status=S.PENDING_RECONCILIATION),
        with_checkpoint(OperationFactory(owner=owner, operation_type=kind, status=S.CANCELLED,
                                         progress_percent=12.5, completed_at=now), "cancellation"),
        with_checkpoint(OperationFactory(owner=owner, operation_type=kind, status=S.FAILED, completed_at=now,
                                         error_message="boom"), "failure", age_days=40),
        OperationFactory(owner=owner, operation_type=kind, status=S.FAILED, presumed_orphan=True),
        OperationFactory(owner=owner, operation_type=kind, status=S.CANCELLED),  # before its first checkpoint
        OperationFactory(owner=owner, operation_type=kind, status=S.COMPLETED, progress_percent=100.0,
                         completed_at=now, result={"metrics": {"sharpe": 1.2}, "timings": {"engine_seconds": 0.5}}),
    ]
    if kind == OperationType.TRAINING:  # a finished model a backtest of the model strategy can use
        folder = models_dir / made[-1].pk
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"not really a model")
        (folder / "feature_spec.json").write_text("{}")
        Operation.objects.filter(pk=made[-1].pk).update(result={
            "model_path": str(folder / "model.pt"), "feature_spec_path": str(folder / "feature_spec.json"),
            "epochs_completed": 3, "best_val_loss": 0.69, "history": {}, "timings": {"train_seconds": 1.0},
        })
    return made


@pytest.fixture
def fuzz_data(transactional_db, settings, checkpoint_dir, tmp_path) -> FuzzData:
    """Everything the fuzzed API reads and acts on, committed (the live server's thread has its own connection)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.MODELS_DIR = tmp_path / "models"
    write_series(generate_bars(bars=300, timeframe=TIMEFRAME, seed=7), SYMBOL, TIMEFRAME)

    user, other, staff = UserFactory(username="fuzz-user"), UserFactory(username="fuzz-other"), StaffFactory()
    data = FuzzData(authorization={role: f"Token {Token.objects.create(user=account).key}"
                                   for role, account in (("user", user), ("staff", staff))})
    for owner in (user, other):
        for kind in OperationType.values:
            data.operation_ids += [operation.pk for operation in operations_of(owner, kind, settings.MODELS_DIR)]
    data.completed_training_id = Operation.objects.get(
        owner=user, operation_type=OperationType.TRAINING, status=S.COMPLETED).pk

    # A checkpoint whose artifact is gone (resume: 422), and a command-line operation with no owner.
    corrupted = with_checkpoint(OperationFactory(owner=user, status=S.CANCELLED), "cancellation")
    (checkpoint_dir / Checkpoint.objects.get(pk=corrupted.pk).artifacts_path / "model.pt").unlink()
    data.operation_ids.append(corrupted.pk)
    data.operation_ids.append(with_checkpoint(OperationFactory(owner=None, status=S.FAILED), "failure").pk)

    # An agent session with its children and its assessment.
    session = Operation.objects.filter(owner=user, operation_type=OperationType.AGENT_RESEARCH,
                                       status=S.COMPLETED).get()
    Operation.objects.filter(owner=user, status=S.COMPLETED).exclude(pk=session.pk).update(parent=session)
    assessment_record(session=session, configuration={"fast": 10, "slow": 30}, metrics={"sharpe": 1.2},
                      verdict=Verdict(accepted=True, score=0.1, reasons=["passed: Sharpe 1.20 ≥ 0.5"]))
    data.operation_ids.append(operation_create(operation_type=OperationType.TRAINING, owner=user, actor="fuzz",
                                               params={"symbol": SYMBOL, "timeframe": TIMEFRAME}).pk)

    machine = WorkerFactory(status=WorkerStatus.IDLE, capabilities={"device": "cpu", "cpu_count": 4})
    WorkerFactory(status=WorkerStatus.UNAVAILABLE)  # of another host: its credential is refused for it
    data.authorization["worker"] = f"Worker {credential_create(host=machine.host, actor='fuzz')[1]}"
    data.worker_ids = list(Worker.objects.order_by("worker_id").values_list("worker_id", flat=True))
    data.snapshot = Snapshot(checkpoint_dir, tmp_path / "checkpoints-as-made")
    return data


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request) -> None:
    """schemathesis (4.32.5) reads and renames `item._nodeid` to label each operation's subtest; pytest 9.2 keeps
    the id in `_id` and has no `_nodeid`. A plain attribute of this item satisfies it; subtests keep their labels."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
