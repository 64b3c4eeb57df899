"""OHLCV bars as CSV files under DATA_DIR: generate, import (validated), list, load.

A series is one file, `<SYMBOL>_<TIMEFRAME>.csv`, with the columns
timestamp, open, high, low, close, volume. Files are written to a temporary
name and renamed, so a reader never sees half a file.

Beside each file, `.<SYMBOL>_<TIMEFRAME>.times.npz` holds its bars' times (8 bytes a bar) and the size and
modification time of the file they were read from: how many bars a date range holds is known at once when a
request is made (the API refuses an empty range, or one too short for the request, before anything runs), and
`marketdata list` reads no CSV. A file changed by other means is read again.
"""

from __future__ import annotations

import csv
import filecmp
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
import pandas as pd
from django.conf import settings

COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}\Z")
TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}


# The most bars a series may hold (generated or imported), so the most any request reads: a backtest's arrays
# and a training's samples stay within a worker's memory (about 80 bytes a bar in a backtest).
MAX_BARS = 50_000_000


# A generated series' lag-one autocorrelation is at most this far from 0. Real markets' returns show a few hundredths
# at most; half of each shock carried into the next bar is already far beyond, and far from 1, where the series
# would stop being stationary.
MAX_AUTOCORRELATION = 0.5
_AUTOCORRELATION_CHUNK_BARS = 1_000_000  # bars turned into a Python list at a time (_autocorrelated)


class MarketDataError(ValueError):
    """Bad market data or a bad request for it; the message names the line, field or value."""


@dataclass(frozen=True)
class SeriesInfo:
    symbol: str
    timeframe: str
    path: Path
    bars: int
    start: str
    end: str
    size_bytes: int


def validate_symbol(symbol: str) -> str:
    if not SYMBOL_RE.match(symbol or ""):
        raise MarketDataError(f"symbol {symbol!r} is invalid: use 1-32 of A-Z, 0-9, '.', '_', '-'")
    return symbol


def symbol_of(text: str) -> str:
    """A symbol as a user may type it: in any case (`syn` is the series SYN)."""
    if not SYMBOL_RE.match((text or "").upper()):
        raise MarketDataError(f"symbol {text!r} is invalid: use 1-32 of A-Z, 0-9, '.', '_', '-' (in any case)")
    return text.upper()


def validate_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAMES:
        raise MarketDataError(f"timeframe {timeframe!r} is invalid: use one of {', '.join(TIMEFRAMES)}")
    return timeframe


def series_path(symbol: str, timeframe: str) -> Path:
    return Path(settings.DATA_DIR) / f"{validate_symbol(symbol)}_{validate_timeframe(timeframe)}.csv"


def times_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.times.npz")


def _write_times(path: Path, times: np.ndarray) -> None:
    """The bar times of the series file at `path` (int64 seconds since the epoch), for as long as it is unchanged;
    written atomically beside it. A folder this process may not write to only costs the next reader a CSV read."""
    stat = path.stat()
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        os.chmod(temporary, 0o644)
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, times=times, csv_size=stat.st_size, csv_mtime_ns=stat.st_mtime_ns)
        os.replace(temporary, times_path(path))
    except OSError:
        Path(temporary).unlink(missing_ok=True)


def _epoch_seconds(timestamps: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True)).as_unit("s").asi8.astype(np.int64)


def bar_times(path: Path) -> np.ndarray:
    """The times of a series file's bars, oldest first, as int64 seconds since the epoch (UTC)."""
    stat = path.stat()
    try:
        with np.load(times_path(path)) as saved:
            if int(saved["csv_size"]) == stat.st_size and int(saved["csv_mtime_ns"]) == stat.st_mtime_ns:
                return saved["times"]
    except (OSError, ValueError, KeyError, EOFError):
        pass  # none yet, or unreadable: read the file itself
    times = _epoch_seconds(pd.read_csv(path, usecols=["timestamp"])["timestamp"])
    _write_times(path, times)
    return times


def range_bounds(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """A request's date range in seconds since the epoch: from `start` at 00:00 UTC, to before the day after
    `end` (both inclusive, as load_bars reads them)."""
    first = int(_date(start, "start").timestamp()) if start else None
    after = int((_date(end, "end") + timedelta(days=1)).timestamp()) if end else None
    return first, after


@dataclass(frozen=True)
class RangeCount:
    """How many bars of a series a date range holds, and the series' own extent (to say what it covers)."""

    bars: int
    series_bars: int
    series_start: str
    series_end: str


def bars_between(symbol: str, timeframe: str, start: str | None = None, end: str | None = None) -> RangeCount:
    """How many bars of the series `load_bars` would read for this range."""
    times = bar_times(series_path(symbol, timeframe))
    first, after = range_bounds(start, end)
    low = int(np.searchsorted(times, first, side="left")) if first is not None else 0
    high = int(np.searchsorted(times, after, side="left")) if after is not None else len(times)
    return RangeCount(bars=max(0, high - low), series_bars=len(times),
                      series_start=_iso(times[0]) if len(times) else "", series_end=_iso(times[-1]) if len(times) else "")


def generate_bars(
    *, bars: int, timeframe: str, seed: int = 42, start: datetime | None = None, autocorrelation: float = 0.0
) -> pd.DataFrame:
    """A reproducible synthetic series: log-returns with a slow drift and volatility that changes by regime.

    Without `autocorrelation` no bar's direction can be told from the bars before it (beyond the slow drift). With
    it, each bar's random shock carries that fraction of the previous bar's (`_autocorrelated`): within a volatility
    regime the returns' lag-one autocorrelation is that number, positive for short-term momentum, negative for
    short-term reversal, at the same volatility; structure a model can learn from the bars it sees. The seed gives
    the same shocks either way, and 0 gives exactly the series without it.

    The same arguments always give the same bars (numpy's seeded Generator).
    """
    if bars < 2:
        raise MarketDataError("bars must be at least 2")
    if not -MAX_AUTOCORRELATION <= autocorrelation <= MAX_AUTOCORRELATION:  # NaN fails both comparisons
        raise MarketDataError(f"autocorrelation {autocorrelation!r} is invalid: use a number from "
                              f"-{MAX_AUTOCORRELATION} to {MAX_AUTOCORRELATION} (0: none)")
    step = TIMEFRAMES[validate_timeframe(timeframe)]
    rng = np.random.default_rng(seed)
    # Volatility regimes of random length (calm, normal, stormy), per bar.
    regime_vols = np.array([0.004, 0.008, 0.018]) * math.sqrt(step / 3600)
    vol = np.empty(bars)
    i = 0
    while i < bars:
        length = int(rng.integers(200, 2000))
        vol[i : i + length] = regime_vols[rng.integers(0, 3)]
        i += length
    drift = 0.00002 * math.sqrt(step / 3600) + 0.00005 * np.sin(np.arange(bars) / 5000.0)
    shocks = rng.standard_normal(bars)
    if autocorrelation:
        shocks = _autocorrelated(shocks, autocorrelation)
    returns = drift + vol * shocks
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(vol * 0.1 * rng.standard_normal(bars))
    spread = np.abs(vol * rng.standard_normal(bars)) * close
    high = np.maximum(open_, close) + spread
    low = np.maximum(np.minimum(open_, close) - spread, 1e-6)
    volume = np.round(rng.lognormal(mean=10.0, sigma=0.5, size=bars) * (1 + 50 * vol), 2)
    begin = start or datetime(2015, 1, 1, tzinfo=timezone.utc)
    timestamps = pd.date_range(begin, periods=bars, freq=pd.Timedelta(seconds=step), tz="UTC")
    return pd.DataFrame(
        {
            "timestamp": timestamps,
            "open": np.round(open_, 6),
            "high": np.round(high, 6),
            "low": np.round(low, 6),
            "close": np.round(close, 6),
            "volume": volume,
        }
    )


def _autocorrelated(shocks: np.ndarray, autocorrelation: float) -> np.ndarray:
    """The shocks made an AR(1) of unit variance: z[0] = shocks[0], z[t] = a * z[t-1] + sqrt(1 - a²) * shocks[t].

    z[0] has the variance of every later z already, so the series is stationary from its first bar. Each value
    depends on the one before, so this is a loop; over chunks, so that a long series never becomes one Python list
    (a million bars take a few tenths of a second).
    """
    scale = math.sqrt(1.0 - autocorrelation * autocorrelation)
    correlated = np.empty_like(shocks)
    previous = correlated[0] = float(shocks[0])
    for begin in range(1, len(shocks), _AUTOCORRELATION_CHUNK_BARS):
        chunk = shocks[begin : begin + _AUTOCORRELATION_CHUNK_BARS].tolist()
        for index, shock in enumerate(chunk):
            previous = autocorrelation * previous + scale * shock
            chunk[index] = previous
        correlated[begin : begin + len(chunk)] = chunk
    return correlated


def write_series(frame: pd.DataFrame, symbol: str, timeframe: str,
                 before_replacing: Callable[[], None] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename.

    Over an existing series, `before_replacing` is called once the new file is written and differs from it (it
    may refuse by raising: the series stays as it was); a new file equal to the existing one replaces nothing.
    """
    path = series_path(symbol, timeframe)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the series from workers running as another user
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            out.to_csv(stream, index=False, columns=COLUMNS, float_format="%.6f")
        if path.exists() and filecmp.cmp(temporary, path, shallow=False):
            Path(temporary).unlink()  # the same bars: the file (and what read it) stays as it is
            return path
        if path.exists() and before_replacing is not None:
            before_replacing()
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _write_times(path, _epoch_seconds(frame["timestamp"]))
    return path


def parse_csv(source: Path) -> pd.DataFrame:
    """Read and validate a CSV of bars; the first bad line is reported by its number."""
    try:
        stream = open(source, "rb")
    except OSError as exc:
        raise MarketDataError(f"{source}: cannot be read ({exc.strerror})") from None
    rows: list[tuple] = []
    previous: datetime | None = None
    with stream:
        lines = _numbered_rows(stream, source)
        first = next(lines, None)
        if first is None:
            raise MarketDataError(f"{source}: the file is empty")
        header = first[1]
        if [name.strip().lower() for name in header] != COLUMNS:
            raise MarketDataError(f"{source}, line 1: expected the header {','.join(COLUMNS)}, got {','.join(header)}")
        for line_number, row in lines:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(COLUMNS):
                raise MarketDataError(f"{source}, line {line_number}: expected {len(COLUMNS)} fields, got {len(row)}")
            when = _parse_timestamp(row[0], source, line_number)
            values = [_parse_number(cell, name, source, line_number) for name, cell in zip(COLUMNS[1:], row[1:])]
            open_, high, low, close, volume = values
            for name, value, cell in zip(COLUMNS[1:5], values, row[1:5]):
                if value <= 0:
                    raise MarketDataError(f"{source}, line {line_number}: {name} {cell.strip()} is not positive")
            if volume < 0:
                raise MarketDataError(f"{source}, line {line_number}: volume must not be negative")
            if high < max(open_, close, low) or low > min(open_, close, high):
                raise MarketDataError(f"{source}, line {line_number}: high/low do not contain open and close")
            if previous is not None and when <= previous:
                raise MarketDataError(f"{source}, line {line_number}: timestamp {row[0]} is not after the previous one")
            previous = when
            rows.append((when, *values))
            if len(rows) > MAX_BARS:
                raise MarketDataError(f"{source}, line {line_number}: more than {MAX_BARS:,} bars, the most a series "
                                      "may hold; import a shorter period")
    if len(rows) < 2:
        raise MarketDataError(f"{source}: at least 2 bars are needed, found {len(rows)}")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def _text_lines(stream: BinaryIO, source: Path) -> Iterator[str]:
    for number, raw in enumerate(stream, start=1):
        try:
            # utf-8-sig on the first line: a byte-order mark (spreadsheets save one) is not part of the header.
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise MarketDataError(f"{source}, line {number}: not UTF-8 text") from None


def _numbered_rows(stream: BinaryIO, source: Path) -> Iterator[tuple[int, list[str]]]:
    """The CSV rows with their line numbers; a line that is not UTF-8 or not CSV is named by its number.

    Decoded line by line, not by a buffered text stream, which decodes ahead and
    would report a bad byte lines before the one it is on.
    """
    reader = csv.reader(_text_lines(stream, source))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise MarketDataError(f"{source}, line {reader.line_num}: {exc}") from None
        yield reader.line_num, row


def _parse_timestamp(text: str, source: Path, line: int) -> datetime:
    value = text.strip()
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value), tz=timezone.utc)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise MarketDataError(f"{source}, line {line}: timestamp {text!r} is not ISO 8601 or epoch seconds") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _parse_number(text: str, name: str, source: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MarketDataError(f"{source}, line {line}: {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise MarketDataError(f"{source}, line {line}: {name} {text!r} is not a finite number")
    return value


def load_bars(symbol: str, timeframe: str, *, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """The bars of a series, optionally between two dates (inclusive), oldest first."""
    path = series_path(symbol, timeframe)
    if not path.exists():
        raise MarketDataError(
            f"no market data for {symbol} {timeframe}: generate it with "
            f"`python manage.py marketdata generate --symbol {symbol} --timeframe {timeframe} --bars N`"
        )
    frame = pd.read_csv(path)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    if start:
        frame = frame[frame["timestamp"] >= _date(start, "start")]
    if end:
        frame = frame[frame["timestamp"] < _date(end, "end") + timedelta(days=1)]
    return frame.reset_index(drop=True)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(text: str, name: str) -> pd.Timestamp:
    try:
        moment = pd.Timestamp(datetime.fromisoformat(text))
    except ValueError:
        raise MarketDataError(f"{name} {text!r} is not a date (YYYY-MM-DD)") from None
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def list_series() -> list[SeriesInfo]:
    folder = Path(settings.DATA_DIR)
    found = []
    for path in sorted(folder.glob("*_*.csv")) if folder.exists() else []:
        symbol, _, timeframe = path.stem.rpartition("_")
        if not SYMBOL_RE.match(symbol) or timeframe not in TIMEFRAMES:
            continue
        try:
            times = bar_times(path)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OverflowError):
            continue  # not a series this project wrote or imported; `marketdata import` validates files
        found.append(
            SeriesInfo(
                symbol=symbol,
                timeframe=timeframe,
                path=path,
                bars=len(times),
                start=_iso(times[0]) if len(times) else "",
                end=_iso(times[-1]) if len(times) else "",
                size_bytes=path.stat().st_size,
            )
        )
    return found
