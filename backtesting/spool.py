"""The growing log of a backtest (its fills), kept on disk beside its checkpoints.

A checkpoint must not cost more as the run goes on, so it does not carry the
trades or the equity curve: each checkpoint appends the fills made since the
previous one to the run's spool (a flat float64 file, three numbers per
fill: bar, cash, position) and records only their count. The rest is rebuilt
exactly from the fills on resume: the trades by filling again
(Engine.replay, which checks each fill's cash and position on the way), the
equity curve as cash + position × close (engine.equity_from_fills).

The spool belongs to one run (`RESULTS_DIR/<operation_id>/run-<attempt>/`),
so a worker presumed dead that still writes can never mix its fills into the
run that replaced it. A resumed run copies the prefix its checkpoint names
into its own spool; whatever an earlier run wrote past its last committed
checkpoint is ignored.

A periodic checkpoint's new fills travel with the save as an append
(checkpoints.services.Append): whoever commits the checkpoint writes them
first, so the loop only copies them. Like the checkpoint store's artifacts,
nothing is fsynced: a killed process loses nothing, and after a crash of the
machine itself a resume that finds a spool shorter or different than its
checkpoint says fails: each checkpoint records a running CRC-32 of the
fills, checked when a resume reads them. A file may be longer than what a
checkpoint names (a save whose commit failed wrote past it); only the named
prefix is ever read.
"""

from __future__ import annotations

import os
import re
import shutil
import zlib
from array import array
from pathlib import Path
from typing import Any

from django.conf import settings

from backtesting.engine import FILL_FIELDS, TRADE_FIELDS, Engine
from checkpoints.services import Append, write_appends
from operations.artifacts import artifact_file, artifact_folder

FILLS = "fills.f64"  # float64, native byte order: len(FILL_FIELDS) numbers per fill
CRC_FIELD = "fills_crc32"
SPOOL_NAME = re.compile(r"run-[0-9]{1,10}\Z")  # a run's spool folder: run-<attempt>  # where a checkpoint's state records the CRC-32 of the fills it names


class SpoolIncomplete(ValueError):
    pass


def results_dir(operation_id: str) -> Path:
    """A backtest's folder, found from its id (never from its result): its equity curve and run spools."""
    return artifact_folder(settings.RESULTS_DIR, operation_id)


def equity_curve_file(operation_id: str) -> Path:
    return artifact_file(settings.RESULTS_DIR, operation_id, "equity.npy")


class Spool:
    """One run's fill file, and how much of it is known to be written (with its running CRC-32)."""

    def __init__(self, operation_id: str, attempt: int) -> None:
        self.attempt = attempt
        self.name = f"run-{attempt}"
        self.folder = results_dir(operation_id) / self.name
        self.path = str(self.folder / FILLS)
        self.written = 0  # numbers of the fill log known to be in the file
        self.crc = 0  # running CRC-32 of those numbers
        self._sent: int | None = None  # what a save in flight will have written

    def start(self, engine: Engine) -> None:
        """Begin this run's spool with the fills it resumes from (or none)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a delivery of this same run that got no further
        self.folder.mkdir(parents=True)
        Path(self.path).touch()  # no fill yet is a file too
        self.write_new(engine)

    def appends(self, engine: Engine) -> tuple[list[Append], tuple]:
        """The append that brings the file to the fill log's end (a view of the fills not yet known to be
        written, which pins the log: `release` it once the saver has copied it), and the values a
        checkpoint records of the spool (`record`'s arguments; the saver fills in the CRC-32). `confirm`
        the save."""
        log, start = engine.fill_log, self.written
        appends = []
        if len(log) > start:
            appends.append(Append(self.path, start * 8, memoryview(log)[start:], self.crc, CRC_FIELD))
        self._sent = len(log)
        return appends, (self.name, self._sent, len(engine.trade_log), self.crc)

    @staticmethod
    def release(appends: list[Append]) -> None:
        for append in appends:
            append.data.release()

    @staticmethod
    def record(name: str, fills: int, trades: int, crc: int) -> dict[str, Any]:
        """What a checkpoint's state says of the spool: which one, how many fills (and their CRC-32), and how
        many trades they make (for whoever looks at the checkpoint; a resume replays them)."""
        return {"spool": name, "fills_count": fills // len(FILL_FIELDS), CRC_FIELD: crc,
                "trades_count": trades // len(TRADE_FIELDS)}

    def confirm(self, appended: dict[str, int] | None) -> None:
        """Take note of what the save that carried the last append did: wrote it (the CRC-32 it computed,
        SaveResult.appended), or not (None: the fills are sent again with the next checkpoint, the same
        bytes at the same offset)."""
        sent, self._sent = self._sent, None
        if sent is None or appended is None:
            return
        self.written = sent
        self.crc = appended.get(CRC_FIELD, self.crc)

    def write_new(self, engine: Engine) -> tuple:
        """Write the fills made since the last save now (a stop checkpoint, the start); return what a
        checkpoint records."""
        appends, spooled = self.appends(engine)
        try:
            self.confirm(write_appends(appends))
        finally:
            self.release(appends)
        return self.name, self.written, spooled[2], self.crc

    def close(self) -> None:
        """Cut the file to what is known to be written (a failed save may have written further)."""
        if os.path.exists(self.path):
            os.truncate(self.path, self.written * 8)

    @staticmethod
    def read(operation_id: str, saved: dict[str, Any]) -> array:
        """The fill log a checkpoint names (its count), from the spool that holds it, checked (CRC-32)."""
        if not SPOOL_NAME.match(str(saved["spool"])):
            raise SpoolIncomplete(f"the checkpoint of {operation_id} names no spool of its runs ({saved['spool']!r})")
        folder = results_dir(operation_id) / saved["spool"]
        count = saved["fills_count"]
        size = count * len(FILL_FIELDS) * 8
        try:
            with open(folder / FILLS, "rb") as handle:
                raw = handle.read(size)
        except OSError as exc:
            raise SpoolIncomplete(f"the saved fills of {operation_id} cannot be read: {exc}") from None
        if len(raw) != size:
            raise SpoolIncomplete(f"the saved fills of {operation_id} ({folder}) are fewer than its checkpoint says "
                                  f"({count})")
        if zlib.crc32(raw) != saved[CRC_FIELD]:
            raise SpoolIncomplete(f"the saved fills of {operation_id} ({folder}) differ from what its checkpoint "
                                  "recorded (CRC-32 mismatch)")
        log = array("d")
        log.frombytes(raw)
        return log

    def remove_earlier_runs(self, operation_id: str) -> None:
        """This run's and earlier runs' spools (a later run, if any, is not ours to touch)."""
        self.close()
        for folder in results_dir(operation_id).glob("run-*"):
            number = folder.name.split("-", 1)[1]
            if number.isdigit() and int(number) <= self.attempt:
                shutil.rmtree(folder, ignore_errors=True)


def results_remove(operation_ids: list[str]) -> None:
    """The folders of backtests being purged (operations/services/retention.py): equity curve and spools."""
    for operation_id in operation_ids:
        shutil.rmtree(results_dir(operation_id), ignore_errors=True)
