"""Save, load, validate, delete and clean up checkpoints (docs/checkpoints.md).

A save is crash-safe because the database row is its commit point:
1. the artifacts are written into a folder no row points at yet;
2. one transaction moves the row to that folder (fenced: the operation must
   still be this worker's run);
3. only after that commit is the previous folder removed.
A SIGKILL at any moment leaves the row pointing at a complete folder; the
leftovers (a partial new folder, or an old one not yet removed) have no row
and are removed by the orphan sweep.

A save may also carry appends: bytes a run keeps in files of its own beside
its checkpoints (a backtest's logs), written at their offsets before step 2,
so that whoever saves (the run's loop, a thread, a committer process) writes
them and the loop that made them only copies them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from checkpoints.exceptions import CheckpointCorrupted, CheckpointInUse, CheckpointNotFound
from checkpoints.models import Checkpoint, CheckpointType
from checkpoints.storage import ARTIFACT_NAME_RE, checkpoint_storage, delete_tree
from operations.ids import is_operation_id
from operations.models import Operation, OperationStatus

logger = logging.getLogger(__name__)

S = OperationStatus
# Operations whose checkpoint cleanup by age must not touch: they are being executed or resumed.
ACTIVE_STATUSES = (S.PENDING, S.RUNNING, S.RESUMING, S.PENDING_RECONCILIATION)


@dataclass(frozen=True)
class Fence:
    """The run a worker executes; its checkpoint writes apply only while the operation is still that run."""

    worker_id: str
    attempt: int


@dataclass
class SaveResult:
    saved: bool
    checkpoint: Checkpoint | None = None
    error: str = ""
    seconds: float = 0.0
    # The connection broke while committing: the row may point at this folder or still at the
    # previous one. Both are kept; once the row has moved on (the next save, the deletion),
    # checkpoint_forget_folder removes whichever it does not point at.
    uncertain_folder: str = ""
    previous_folder: str = ""
    # The running CRC-32 of each append's file once it was written (None: the appends were not written).
    appended: dict[str, int] | None = None


class Append(NamedTuple):  # a tuple: made at every checkpoint of a fast loop
    """Bytes to write into `path` at `offset` before the checkpoint commits. `crc` is the CRC-32 of the
    file's first `offset` bytes; the state records the CRC-32 of its first offset + len(data) bytes under
    `crc_field`, so that a reader can check the file holds what the checkpoint says."""

    path: str
    offset: int
    data: bytes | memoryview
    crc: int
    crc_field: str


def write_appends(appends: Sequence[Append]) -> dict[str, int]:
    """Write each append at its offset (not fsynced, like artifacts); return the CRC-32 of each file's
    prefix so far, by `crc_field`. Writing the same append again writes the same bytes."""
    crcs = {}
    for append in appends:
        descriptor = os.open(append.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with memoryview(append.data) as view:
                data, offset = view.cast("B"), append.offset
                while data:
                    written = os.pwrite(descriptor, data, offset)
                    data, offset = data[written:], offset + written
                crcs[append.crc_field] = zlib.crc32(view, append.crc)
        finally:
            os.close(descriptor)
    return crcs


class _Fenced(Exception):
    pass


def checkpoint_save(
    *,
    operation_id: str,
    checkpoint_type: str,
    state: dict[str, Any],
    artifacts: Mapping[str, bytes],
    fence: Fence | None = None,
    appends: Sequence[Append] = (),
) -> SaveResult:
    """Save the latest checkpoint of an operation; never raises (a failed save is logged and reported).

    `appends` are written first; their CRC-32s go into `state` (which is changed) and into the result.
    """
    started = time.monotonic()
    storage = checkpoint_storage()
    folder = previous_folder = ""
    committing = False
    appended = None
    try:
        if not is_operation_id(operation_id):  # it becomes a file path
            raise ValueError(f"{operation_id!r} is not an operation id")
        if checkpoint_type not in CheckpointType.values:
            raise ValueError(f"unknown checkpoint type {checkpoint_type!r}")
        if appends:
            appended = write_appends(appends)
            state.update(appended)
        state_size = len(json.dumps(state, allow_nan=False).encode())
        folder = f"{operation_id}/{timezone.now():%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
        manifest = _write_artifacts(storage, folder, artifacts)
        with transaction.atomic():
            checkpoint, previous_folder = _commit(
                operation_id, checkpoint_type, state, state_size, folder, manifest, fence
            )
            committing = True  # an error from here on may come after the commit reached the database
    except Exception as exc:  # a checkpoint failure never kills the operation
        if committing and isinstance(exc, (OperationalError, InterfaceError)):  # no answer, not a refusal
            logger.warning("Checkpoint of %s: the commit's outcome is unknown (%s); keeping %s", operation_id, exc,
                           folder)
            return SaveResult(saved=False, error=f"commit outcome unknown: {exc}", uncertain_folder=folder,
                              previous_folder=previous_folder or "", seconds=time.monotonic() - started,
                              appended=appended)
        if folder:
            try:
                delete_tree(storage, folder)
                _remove_empty_operation_folder(operation_id)
            except Exception:  # the orphan sweep will remove it
                logger.exception("Could not remove the files of a failed save of %s", operation_id)
        reason = "fenced: the operation is no longer this worker's run" if isinstance(exc, _Fenced) else str(exc)
        logger.warning("Checkpoint of %s not saved: %s", operation_id, reason)
        return SaveResult(saved=False, error=reason or type(exc).__name__, seconds=time.monotonic() - started,
                          appended=appended)
    # Committed: the row points at the new folder, so a failure from here on must not remove it.
    if previous_folder and previous_folder != folder:
        try:
            delete_tree(storage, previous_folder)
        except Exception:  # the orphan sweep will remove it
            logger.exception("Could not remove the previous checkpoint folder %s", previous_folder)
    return SaveResult(saved=True, checkpoint=checkpoint, seconds=time.monotonic() - started, appended=appended)


def _write_artifacts(storage, folder: str, artifacts: Mapping[str, bytes]) -> list[dict[str, Any]]:
    """Write each artifact; its sha256 is computed beside the writes (hashlib and file I/O release the GIL)."""
    for name in artifacts:
        if not ARTIFACT_NAME_RE.match(name):
            raise ValueError(f"invalid artifact name {name!r}")
    if not artifacts:
        return []
    digests: dict[str, str] = {}
    hasher = threading.Thread(
        target=lambda: digests.update({name: hashlib.sha256(data).hexdigest() for name, data in artifacts.items()}),
        name="checkpoint-sha256",
    )
    hasher.start()
    try:
        for name, data in artifacts.items():
            stored = storage.save(f"{folder}/{name}", ContentFile(data))
            if stored != f"{folder}/{name}":
                raise OSError(f"storage renamed artifact {name!r} to {stored!r}")
    finally:
        hasher.join()
    return [{"name": name, "size": len(data), "sha256": digests[name]} for name, data in artifacts.items()]


def _commit(operation_id, checkpoint_type, state, state_size, folder, manifest, fence):
    """Move the row to the new folder; return it and the folder it pointed at before.

    Three statements of plain SQL (the operation's row locked and fenced, the previous folder read, the row
    moved): building them with the ORM took most of a save's time, and a fast loop saves many times a second.
    """
    values = {
        "checkpoint_type": str(checkpoint_type),
        "created_at": timezone.now(),
        "state": state,
        "artifacts_path": folder,
        "manifest": manifest,
        "state_size_bytes": state_size,
        "artifacts_size_bytes": sum(artifact["size"] for artifact in manifest),
    }
    statements = _commit_statements(connection.vendor)
    with connection.cursor() as cursor:
        if fence is None:
            cursor.execute(statements.lock, [operation_id])
        else:
            cursor.execute(statements.lock_fenced, [operation_id, fence.worker_id, fence.attempt, *FENCED_STATUSES])
        if cursor.fetchone() is None:  # also locks the row against a concurrent transition
            raise _Fenced() if fence is not None else CheckpointNotFound(operation_id)
        cursor.execute(statements.previous, [operation_id])
        previous = cursor.fetchone()
        if previous is None:
            return Checkpoint.objects.create(operation_id=operation_id, version=1, **values), None
        previous_folder, version = previous
        cursor.execute(statements.update, [
            *(_FIELDS[name].get_db_prep_save(values[name], connection) for name in _UPDATED), version + 1,
            operation_id, version,
        ])
    # The row as it now is, without reading it back.
    checkpoint = Checkpoint(operation_id=operation_id, version=version + 1, **values)
    checkpoint._state.adding = False
    return checkpoint, previous_folder


FENCED_STATUSES = (S.RUNNING.value, S.PENDING_RECONCILIATION.value)  # where a run's checkpoint writes still apply
_FIELDS = {field.name: field for field in Checkpoint._meta.concrete_fields}
_UPDATED = ("checkpoint_type", "created_at", "state", "artifacts_path", "manifest", "state_size_bytes",
            "artifacts_size_bytes")


class _CommitStatements(NamedTuple):
    lock: str
    lock_fenced: str
    previous: str
    update: str


@functools.cache
def _commit_statements(vendor: str) -> _CommitStatements:
    """The save's statements for this database, made once from the models' tables and columns."""
    quote = connection.ops.quote_name
    operations, checkpoints = quote(Operation._meta.db_table), quote(Checkpoint._meta.db_table)
    column = {name: quote(field.column) for name, field in _FIELDS.items()}
    operation_column = {name: quote(Operation._meta.get_field(name).column) for name in ("worker_id", "attempt", "status")}
    operation_column["pk"] = quote(Operation._meta.pk.column)
    for_update = " FOR UPDATE" if connection.features.has_select_for_update else ""  # SQLite: one writer anyway
    lock = f"SELECT 1 FROM {operations} WHERE {operation_column['pk']} = %s"
    fenced = (f"{lock} AND {operation_column['worker_id']} = %s AND {operation_column['attempt']} = %s "
              f"AND {operation_column['status']} IN ({', '.join(['%s'] * len(FENCED_STATUSES))})")
    return _CommitStatements(
        lock=lock + for_update,
        lock_fenced=fenced + for_update,
        previous=f"SELECT {column['artifacts_path']}, {column['version']} FROM {checkpoints} "
                 f"WHERE {column['operation']} = %s",
        update=f"UPDATE {checkpoints} SET {', '.join(f'{column[name]} = %s' for name in _UPDATED)}, "
               f"{column['version']} = %s WHERE {column['operation']} = %s AND {column['version']} = %s",
    )


# --- reading

@dataclass
class LoadedCheckpoint:
    checkpoint: Checkpoint
    artifacts: dict[str, bytes] = field(default_factory=dict)

    @property
    def state(self) -> dict[str, Any]:
        return self.checkpoint.state


def checkpoint_get(operation_id: str) -> Checkpoint:
    """The checkpoint row (state included); reads no artifact."""
    checkpoint = Checkpoint.objects.select_related("operation").filter(operation_id=operation_id).first()
    if checkpoint is None:
        raise CheckpointNotFound(operation_id)
    return checkpoint


def checkpoint_load(operation_id: str) -> LoadedCheckpoint:
    """The checkpoint with its artifacts, each checked against the manifest."""
    checkpoint = checkpoint_get(operation_id)
    return LoadedCheckpoint(checkpoint=checkpoint, artifacts=_read_verified(checkpoint))


def checkpoint_validate(checkpoint: Checkpoint) -> None:
    """Raise CheckpointCorrupted naming every artifact that is missing, of the wrong size or checksum."""
    _read_verified(checkpoint)


def _read_verified(checkpoint: Checkpoint) -> dict[str, bytes]:
    storage = checkpoint_storage()
    artifacts: dict[str, bytes] = {}
    problems: list[dict[str, Any]] = []
    for entry in checkpoint.manifest:
        path = f"{checkpoint.artifacts_path}/{entry['name']}"
        try:
            with storage.open(path, "rb") as handle:
                data = handle.read()
        except (FileNotFoundError, OSError):
            problems.append({"name": entry["name"], "problem": "missing"})
            continue
        if len(data) != entry["size"]:
            problems.append(
                {"name": entry["name"], "problem": f"size {len(data)} bytes, expected {entry['size']}"}
            )
        elif hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append({"name": entry["name"], "problem": "sha256 mismatch"})
        else:
            artifacts[entry["name"]] = data
    if problems:
        raise CheckpointCorrupted(checkpoint.operation_id, problems)
    return artifacts


# --- deleting and cleaning up

def checkpoint_delete(operation_id: str, *, only_if: Q | None = None) -> bool:
    """Delete the row, then its folder; return whether there was a checkpoint.

    `only_if` is checked again under the operation's row lock (cleanup: still
    expired, and the operation still not being executed or resumed).
    """
    with transaction.atomic():
        Operation.objects.select_for_update().filter(pk=operation_id).exists()
        rows = Checkpoint.objects.filter(operation_id=operation_id)
        if only_if is not None:
            rows = rows.filter(only_if)
        row = rows.values("artifacts_path").first()
        if row is None:
            return False
        Checkpoint.objects.filter(operation_id=operation_id).delete()
    delete_tree(checkpoint_storage(), row["artifacts_path"])
    _remove_empty_operation_folder(operation_id)
    return True


def checkpoint_forget_folder(operation_id: str, folder: str) -> bool:
    """Remove a folder a save left behind when its commit's outcome was unknown, unless the row points at it."""
    if Checkpoint.objects.filter(operation_id=operation_id, artifacts_path=folder).exists():
        return False
    delete_tree(checkpoint_storage(), folder)
    _remove_empty_operation_folder(operation_id)
    return True


def checkpoint_discard(operation_id: str) -> None:
    """A user's delete: refused while a resume waits to load the checkpoint (it would start over)."""
    if checkpoint_delete(operation_id, only_if=~Q(operation__status=S.RESUMING)):
        return
    if Checkpoint.objects.filter(operation_id=operation_id).exists():
        raise CheckpointInUse(operation_id)
    raise CheckpointNotFound(operation_id)


# An age in days, bounded: a cutoff further back than year 1 cannot be computed (an OverflowError), and a
# century is older than any checkpoint. The API's fields and the command's options refuse more.
MAX_AGE_DAYS = 36_500


def _expired(max_age_days: float, now: datetime | None = None) -> Q:
    cutoff = (now or timezone.now()) - timedelta(days=max_age_days)
    return Q(created_at__lt=cutoff) & ~Q(operation__status__in=ACTIVE_STATUSES)


def checkpoints_expired(max_age_days: float, *, now: datetime | None = None):
    """Checkpoints older than `max_age_days`, except those of operations being executed or resumed."""
    return Checkpoint.objects.filter(_expired(max_age_days, now))


def checkpoint_cleanup(*, max_age_days: float | None = None, dry_run: bool = False) -> list[str]:
    """Delete checkpoints older than max_age_days (default CHECKPOINT_MAX_AGE_DAYS); return their operations."""
    max_age = settings.CHECKPOINT_MAX_AGE_DAYS if max_age_days is None else max_age_days
    now = timezone.now()
    expired = list(checkpoints_expired(max_age, now=now).order_by("created_at").values_list("operation_id", flat=True))
    if dry_run:
        return expired
    still_expired = _expired(max_age, now)  # a resume may have started since the list was read
    return [operation_id for operation_id in expired if checkpoint_delete(operation_id, only_if=still_expired)]


def checkpoint_sweep_orphans(*, grace_seconds: float | None = None, dry_run: bool = False) -> list[str]:
    """Remove artifact folders that no committed row points at; return them.

    A folder younger than the grace period may be a save in progress (its row
    is not committed yet) and is left alone. Names that are not operation ids
    are never touched.
    """
    grace = settings.CHECKPOINT_ORPHAN_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = timezone.now() - timedelta(seconds=grace)
    storage = checkpoint_storage()
    if not storage.exists(""):
        return []
    committed = dict(Checkpoint.objects.values_list("operation_id", "artifacts_path"))
    removed: list[str] = []
    operation_folders, _files = storage.listdir("")
    for operation_id in sorted(operation_folders):
        if not is_operation_id(operation_id):
            continue
        save_folders, loose_files = storage.listdir(operation_id)
        for name in [*save_folders, *loose_files]:
            path = f"{operation_id}/{name}"
            if committed.get(operation_id) == path or storage.get_modified_time(path) > cutoff:
                continue
            removed.append(path)
            if not dry_run:
                if name in save_folders:
                    delete_tree(storage, path)
                else:
                    storage.delete(path)
        if not dry_run:
            _remove_empty_operation_folder(operation_id)
    if removed:
        logger.info("Checkpoint orphan sweep removed %s", removed)
    return removed


def checkpoints_remove(operation_ids: list[str]) -> None:
    """The checkpoints of operations being purged: rows and folders (the operation folder too)."""
    for operation_id in Checkpoint.objects.filter(operation_id__in=operation_ids).values_list("operation_id",
                                                                                                flat=True):
        checkpoint_delete(operation_id)
    storage = checkpoint_storage()
    for operation_id in operation_ids:
        delete_tree(storage, operation_id)  # save folders a crash left, with no row


def checkpoint_maintenance(*, max_age_days: float | None = None, dry_run: bool = False) -> dict[str, list[str]]:
    """Cleanup by age, then the artifact folders no checkpoint points at (older than the orphan grace period):
    what the control loop runs every CHECKPOINT_CLEANUP_INTERVAL_HOURS, and a cleanup asked for by hand."""
    return {"expired": checkpoint_cleanup(max_age_days=max_age_days, dry_run=dry_run),
            "orphan_folders": checkpoint_sweep_orphans(dry_run=dry_run)}


def _remove_empty_operation_folder(operation_id: str) -> None:
    storage = checkpoint_storage()
    try:
        folders, files = storage.listdir(operation_id)
        if not folders and not files:
            storage.delete(operation_id)
    except OSError:
        pass


def checkpoint_stats(checkpoints=None) -> dict[str, Any]:
    checkpoints = Checkpoint.objects.all() if checkpoints is None else checkpoints
    totals = checkpoints.aggregate(
        total=Count("pk"),
        size=Coalesce(Sum("state_size_bytes"), 0) + Coalesce(Sum("artifacts_size_bytes"), 0),
        oldest=Min("created_at"),
    )
    by_type = dict(checkpoints.order_by().values_list("checkpoint_type").annotate(count=Count("pk")))
    return {
        "total_checkpoints": totals["total"],
        "total_size_bytes": totals["size"],
        "oldest_checkpoint": totals["oldest"],
        "by_type": {kind: by_type.get(kind, 0) for kind in CheckpointType.values},
    }


def operation_has_checkpoint(operation_id: str) -> bool:
    try:
        return Checkpoint.objects.filter(operation_id=operation_id).exists()
    except DatabaseError:
        return False
