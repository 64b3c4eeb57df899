"""Writing a series that operations may have read: the bars a resume reads again must be the bars its run began
on, so a series that operations used is overwritten only when asked to (`--force`), and the user is told."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from marketdata.series import MarketDataError, write_series
from operations import selectors
from operations.models import TERMINAL_STATUSES, Operation


@dataclass(frozen=True)
class SeriesUse:
    """The operations whose request names a series."""

    operations: int
    unfinished: int  # not ended yet (running, queued, or awaiting reconciliation)
    resumable: int

    def __str__(self) -> str:
        return (f"{self.operations} operation{'s' if self.operations != 1 else ''} ({self.unfinished} not ended, "
                f"{self.resumable} resumable)")


class SeriesInUse(MarketDataError):
    pass


def series_use(symbol: str, timeframe: str) -> SeriesUse:
    operations = Operation.objects.filter(params__symbol=symbol, params__timeframe=timeframe)
    return SeriesUse(
        operations=operations.count(),
        unfinished=operations.exclude(status__in=TERMINAL_STATUSES).count(),
        resumable=selectors.resumable_count(operations),
    )


@dataclass(frozen=True)
class SavedSeries:
    path: Path
    overwritten_use: SeriesUse | None  # the operations that had used the series it replaced (with force)


def series_save(frame: pd.DataFrame, symbol: str, timeframe: str, *, force: bool = False) -> SavedSeries:
    """Write the series. Over a different one that operations used, only with `force` (SeriesInUse otherwise,
    and nothing is written): their resumes would read other bars than their runs began on."""
    overwritten: list[SeriesUse] = []

    def before_replacing() -> None:
        use = series_use(symbol, timeframe)
        if use.operations and not force:
            raise SeriesInUse(
                f"{symbol} {timeframe} is used by {use}: their resumes read the series again, and would run over "
                "other bars than they began on. Nothing was written; --force overwrites it anyway."
            )
        if use.operations:
            overwritten.append(use)

    path = write_series(frame, symbol, timeframe, before_replacing=before_replacing)
    return SavedSeries(path=path, overwritten_use=overwritten[0] if overwritten else None)
