"""The growing logs of a backtest (fills, trades), kept on disk beside its checkpoints.

A checkpoint must not cost more as the run goes on, so it does not carry the
trades or the equity curve: at each checkpoint the run appends what is new
since the previous one to its spool (two flat float64 files, a few numbers
per fill and per trade) and the checkpoint records only their counts. The
equity curve, a number per bar, is not written at all: a resume rebuilds it
exactly from the fills (engine.equity_from_fills).

The spool belongs to one run (`RESULTS_DIR/<operation_id>/run-<attempt>/`),
so a worker presumed dead that still writes can never mix its logs into the
run that replaced it. A resumed run copies the prefix its checkpoint names
into its own spool; whatever an earlier run wrote past its last committed
checkpoint is ignored.

Every copy lands at the offset the counts name, into a memory mapping (a
memcpy; the kernel writes the pages out). Like the checkpoint store's
artifacts, nothing is fsynced: a killed process loses nothing, and after a
crash of the machine itself a resume that finds a log shorter or different
than its checkpoint says fails: each checkpoint records a running CRC-32 of
both logs, checked when a resume reads them. The files may be longer than
what a checkpoint names (they grow by doubling); only the named
prefix is ever read.
"""

from __future__ import annotations

import mmap
import os
import shutil
import zlib
from array import array
from pathlib import Path
from typing import Any

from django.conf import settings

from backtesting.engine import FILL_FIELDS, TRADE_FIELDS, Engine

FILLS = "fills.f64"  # float64, native byte order: len(FILL_FIELDS) numbers per fill
TRADES = "trades.f64"  # float64: len(TRADE_FIELDS) numbers per closed trade


class SpoolIncomplete(ValueError):
    pass


def results_dir(operation_id: str) -> Path:
    return Path(settings.RESULTS_DIR) / operation_id


class Spool:
    """One run's series files, memory-mapped: a checkpoint copies the new points into the mapping (a
    memcpy; the kernel writes the pages out), so it costs the loop microseconds, not system calls."""

    GROWTH = 1 << 20  # a file's first size; it doubles when its mapping is full

    def __init__(self, operation_id: str, attempt: int) -> None:
        self.attempt = attempt
        self.name = f"run-{attempt}"
        self.folder = results_dir(operation_id) / self.name
        self.written = {FILLS: 0, TRADES: 0}  # numbers of each log written
        self.crc = {FILLS: 0, TRADES: 0}  # running CRC-32 of what was written
        self._maps: dict[str, tuple[mmap.mmap, int]] = {}

    def start(self, engine: Engine) -> None:
        """Begin this run's spool with the series it resumes from (or nothing)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a delivery of this same run that got no further
        self.folder.mkdir(parents=True)
        for name in (FILLS, TRADES):
            (self.folder / name).touch()  # an empty log is a file too
        self.write_new(engine)

    def write_new(self, engine: Engine) -> dict[str, Any]:
        """Copy what the engine's logs gained since the last call; return what a checkpoint records."""
        for name, log in ((FILLS, engine.fill_log), (TRADES, engine.trade_log)):
            self._copy(name, log, self.written[name])
            self.written[name] = len(log)
        return {"spool": self.name, "fills_count": self.written[FILLS] // len(FILL_FIELDS),
                "trades_count": self.written[TRADES] // len(TRADE_FIELDS),
                "fills_crc32": self.crc[FILLS], "trades_crc32": self.crc[TRADES]}

    def close(self) -> None:
        """Unmap the files and cut them to what was written."""
        for name, (mapping, _size) in self._maps.items():
            mapping.close()
            os.truncate(self.folder / name, self.written[name] * 8)
        self._maps.clear()

    def _copy(self, name: str, numbers: array, start: int) -> None:
        end = len(numbers)
        if end == start:
            return
        mapping, size = self._maps.get(name, (None, 0))
        if end * 8 > size:
            if mapping is not None:
                mapping.close()
            size = max(end * 8, 2 * size, self.GROWTH)  # doubling: a few growths in a whole run
            path = self.folder / name
            with open(path, "a+b") as handle:
                # Blocks allocated and pages mapped now, once a megabyte: the copies then fault on nothing.
                os.posix_fallocate(handle.fileno(), 0, size)
                mapping = mmap.mmap(handle.fileno(), size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
            self._maps[name] = (mapping, size)
        with memoryview(numbers) as view:
            segment = view[start:end].cast("B")
            mapping[start * 8:end * 8] = segment
            self.crc[name] = zlib.crc32(segment, self.crc[name])

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
