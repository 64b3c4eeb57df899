"""The growing logs of a backtest (fills, trades), kept on disk beside its checkpoints.

A checkpoint must not cost more as the run goes on, so it does not carry the
trades or the equity curve: each checkpoint appends what is new since the
previous one to the run's spool (two flat float64 files, a few numbers per
fill and per trade) and records only their counts. The equity curve, a number
per bar, is not written at all: a resume rebuilds it exactly from the fills
(engine.equity_from_fills).

The spool belongs to one run (`RESULTS_DIR/<operation_id>/run-<attempt>/`),
so a worker presumed dead that still writes can never mix its logs into the
run that replaced it. A resumed run copies the prefix its checkpoint names
into its own spool; whatever an earlier run wrote past its last committed
checkpoint is ignored.

A periodic checkpoint's new entries travel with the save as appends
(checkpoints.services.Append): whoever commits the checkpoint writes them
first, so the loop only copies them. Like the checkpoint store's artifacts,
nothing is fsynced: a killed process loses nothing, and after a crash of the
machine itself a resume that finds a log shorter or different than its
checkpoint says fails: each checkpoint records a running CRC-32 of both logs,
checked when a resume reads them. A file may be longer than what a checkpoint
names (a save whose commit failed wrote past it); only the named prefix is
ever read.
"""

from __future__ import annotations

import os
import shutil
import zlib
from array import array
from pathlib import Path
from typing import Any

from django.conf import settings

from backtesting.engine import FILL_FIELDS, TRADE_FIELDS, Engine
from checkpoints.services import Append, write_appends

FILLS = "fills.f64"  # float64, native byte order: len(FILL_FIELDS) numbers per fill
TRADES = "trades.f64"  # float64: len(TRADE_FIELDS) numbers per closed trade
CRC_FIELDS = {FILLS: "fills_crc32", TRADES: "trades_crc32"}  # where a checkpoint's state records them


class SpoolIncomplete(ValueError):
    pass


def results_dir(operation_id: str) -> Path:
    return Path(settings.RESULTS_DIR) / operation_id


class Spool:
    """One run's log files, and how much of each is known to be written (with its running CRC-32)."""

    def __init__(self, operation_id: str, attempt: int) -> None:
        self.attempt = attempt
        self.name = f"run-{attempt}"
        self.folder = results_dir(operation_id) / self.name
        self.written = {FILLS: 0, TRADES: 0}  # numbers of each log known to be in its file
        self.crc = {FILLS: 0, TRADES: 0}  # running CRC-32 of those numbers
        self._sent: dict[str, int] | None = None  # what a save in flight will have written
        self._paths = {name: str(self.folder / name) for name in (FILLS, TRADES)}

    def start(self, engine: Engine) -> None:
        """Begin this run's spool with the series it resumes from (or nothing)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a delivery of this same run that got no further
        self.folder.mkdir(parents=True)
        for name in (FILLS, TRADES):
            (self.folder / name).touch()  # an empty log is a file too
        self.write_new(engine)

    def appends(self, engine: Engine) -> tuple[list[Append], tuple]:
        """The appends that bring the files to the logs' ends (views of the entries not yet known to be
        written, which pin the logs: `release` them once the saver has copied them), and the values a
        checkpoint records of the spool (`record`; the saver fills in the CRC-32s). `confirm` the save."""
        appends = []
        for name, log in ((FILLS, engine.fill_log), (TRADES, engine.trade_log)):
            start = self.written[name]
            if len(log) > start:
                appends.append(Append(self._paths[name], start * 8, memoryview(log)[start:], self.crc[name],
                                      CRC_FIELDS[name]))
        self._sent = {FILLS: len(engine.fill_log), TRADES: len(engine.trade_log)}
        return appends, (self.name, self._sent[FILLS], self._sent[TRADES], self.crc[FILLS], self.crc[TRADES])

    @staticmethod
    def release(appends: list[Append]) -> None:
        for append in appends:
            append.data.release()

    @staticmethod
    def record(name: str, fills: int, trades: int, fills_crc: int, trades_crc: int) -> dict[str, Any]:
        """What a checkpoint's state says of the spool: which one, how many entries, their CRC-32s."""
        return {"spool": name, "fills_count": fills // len(FILL_FIELDS), "trades_count": trades // len(TRADE_FIELDS),
                CRC_FIELDS[FILLS]: fills_crc, CRC_FIELDS[TRADES]: trades_crc}

    def confirm(self, appended: dict[str, int] | None) -> None:
        """Take note of what the save that carried the last appends did: wrote them (the CRC-32s it
        computed, SaveResult.appended), or not (None: they are sent again with the next checkpoint, the
        same bytes at the same offsets)."""
        sent, self._sent = self._sent, None
        if sent is None or appended is None:
            return
        for name in (FILLS, TRADES):
            self.written[name] = sent[name]
            self.crc[name] = appended.get(CRC_FIELDS[name], self.crc[name])

    def write_new(self, engine: Engine) -> tuple:
        """Write what the logs gained now (a stop checkpoint, the start); return what a checkpoint records."""
        appends, _ = self.appends(engine)
        try:
            self.confirm(write_appends(appends))
        finally:
            self.release(appends)
        return self.name, self.written[FILLS], self.written[TRADES], self.crc[FILLS], self.crc[TRADES]

    def close(self) -> None:
        """Cut the files to what is known to be written (a failed save may have written further)."""
        for name, count in self.written.items():
            path = self.folder / name
            if path.exists():
                os.truncate(path, count * 8)

    @staticmethod
    def read(operation_id: str, saved: dict[str, Any]) -> tuple[array, array]:
        """The fill log and trade log a checkpoint names (its counts), from the spool that holds them."""
        folder = results_dir(operation_id) / saved["spool"]
        logs = []
        for name, fields, count, crc in ((FILLS, FILL_FIELDS, saved["fills_count"], saved["fills_crc32"]),
                                          (TRADES, TRADE_FIELDS, saved["trades_count"], saved["trades_crc32"])):
            size = count * len(fields) * 8
            try:
                with open(folder / name, "rb") as handle:
                    raw = handle.read(size)
            except OSError as exc:
                raise SpoolIncomplete(f"the saved series of {operation_id} cannot be read: {exc}") from None
            if len(raw) != size:
                raise SpoolIncomplete(f"the saved {name} of {operation_id} ({folder}) is shorter than its checkpoint "
                                      f"says ({count} entries)")
            if zlib.crc32(raw) != crc:
                raise SpoolIncomplete(f"the saved {name} of {operation_id} ({folder}) differs from what its "
                                      "checkpoint recorded (CRC-32 mismatch)")
            log = array("d")
            log.frombytes(raw)
            logs.append(log)
        return logs[0], logs[1]

    def remove_earlier_runs(self, operation_id: str) -> None:
        """This run's and earlier runs' spools (a later run, if any, is not ours to touch)."""
        self.close()
        for folder in results_dir(operation_id).glob("run-*"):
            number = folder.name.split("-", 1)[1]
            if number.isdigit() and int(number) <= self.attempt:
                shutil.rmtree(folder, ignore_errors=True)
