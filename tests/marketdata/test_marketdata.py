"""`marketdata generate|import|list`: reproducible series, validated imports that never half-write."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from marketdata import series
from marketdata.series import COLUMNS, MarketDataError, load_bars, write_series
from tests.support.processes import ROOT

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROWS = [
    "2024-01-01T00:00:00Z,100,101,99,100.5,1000\n",
    "2024-01-01T01:00:00Z,100.5,102,100,101.5,1200\n",
    "2024-01-01T02:00:00Z,101.5,101.6,98.5,99,900.5\n",
]

# A series that operations used is overwritten only with --force: writing one over another reads the operations.
pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    folder = tmp_path / "data"
    settings.DATA_DIR = folder
    return folder


def marketdata(*args: str) -> str:
    out = StringIO()
    call_command("marketdata", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def generate(symbol: str = "SYN", timeframe: str = "1h", bars: int = 500, *extra: str) -> str:
    return marketdata("generate", "--symbol", symbol, "--timeframe", timeframe, "--bars", str(bars), *extra)


def import_file(path: Path, symbol: str = "SYN", timeframe: str = "1h") -> str:
    return marketdata("import", str(path), "--symbol", symbol, "--timeframe", timeframe)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- generate


def test_generate_is_reproducible_from_its_seed(data_dir):
    path = data_dir / "SYN_1h.csv"
    generate("SYN", "1h", 2000, "--seed", "7")
    first = path.read_bytes()
    generate("SYN", "1h", 2000, "--seed", "7")
    assert path.read_bytes() == first
    generate("SYN", "1h", 2000, "--seed", "8")
    assert path.read_bytes() != first
    # No temporary file left behind: the series and its bars' times.
    assert sorted(p.name for p in data_dir.iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]


def test_generated_bars_are_well_formed(data_dir):
    output = generate("BTC-USD", "15m", 3000, "--seed", "3", "--start", "2020-03-01")
    path = data_dir / "BTC-USD_15m.csv"
    assert str(path) in output
    with open(path, newline="") as stream:
        assert next(csv.reader(stream)) == COLUMNS
    rows = read_rows(path)
    assert len(rows) == 3000
    times = [utc(row["timestamp"]) for row in rows]
    assert times[0] == datetime(2020, 3, 1, tzinfo=timezone.utc)
    assert all(later - earlier == timedelta(minutes=15) for earlier, later in zip(times, times[1:]))
    for row in rows:
        open_, high, low, close, volume = (float(row[name]) for name in COLUMNS[1:])
        assert high >= max(open_, close), row
        assert 0 < low <= min(open_, close), row
        assert volume >= 0, row


def test_generate_start_with_an_offset_is_converted_to_utc(data_dir):
    generate("SYN", "1h", 10, "--start", "2020-01-01T05:00:00+05:00")
    assert read_rows(data_dir / "SYN_1h.csv")[0]["timestamp"] == "2020-01-01T00:00:00Z"


# The plain series' bytes as generated before `--autocorrelation` existed, and since: tests elsewhere (and the
# strategies' and engine's expected trades) depend on them.
PLAIN_SERIES_SHA256 = [
    ("1h", 1000, 42, "c98bdad84ef4b1f78828287dd4fe1ef85636f0887546fb2dd868cc933d9a37dd"),
    ("1m", 3000, 7, "035fa2f062c31af1840c0f258454980194ac08662587a9ede253c1b391ba5126"),
]


@pytest.mark.parametrize(("timeframe", "bars", "seed", "sha256"), PLAIN_SERIES_SHA256)
def test_the_plain_series_is_unchanged_byte_for_byte(data_dir, timeframe, bars, seed, sha256):
    path = data_dir / f"SYN_{timeframe}.csv"
    generate("SYN", timeframe, bars, "--seed", str(seed))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    generate("SYN", timeframe, bars, "--seed", str(seed), "--autocorrelation", "0")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def test_an_autocorrelated_series_is_reproducible_from_its_seed(data_dir):
    path = data_dir / "SYN_1h.csv"
    output = generate("SYN", "1h", 2000, "--seed", "7", "--autocorrelation", "0.15")
    assert "(seed 7, autocorrelation 0.15)" in output
    first = path.read_bytes()
    generate("SYN", "1h", 2000, "--seed", "7", "--autocorrelation", "0.15")
    assert path.read_bytes() == first
    for other in (["--seed", "8", "--autocorrelation", "0.15"], ["--seed", "7", "--autocorrelation", "0.1"],
                  ["--seed", "7"]):
        generate("SYN", "1h", 2000, *other)
        assert path.read_bytes() != first, other
    assert sorted(p.name for p in data_dir.iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]


def log_returns(frame: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(frame["close"].to_numpy()))


def lag_one(values: np.ndarray) -> float:
    return float(np.corrcoef(values[1:], values[:-1])[0, 1])


@pytest.mark.parametrize("autocorrelation", [0.15, -0.15])
def test_the_autocorrelation_is_in_the_returns_at_the_same_volatility(autocorrelation):
    # 100,000 bars measure a lag-one autocorrelation within about 0.005 (more than 1/sqrt(bars): the stormy regimes
    # weigh most in it).
    plain = series.generate_bars(bars=100_000, timeframe="1h", seed=11)
    structured = series.generate_bars(bars=100_000, timeframe="1h", seed=11, autocorrelation=autocorrelation)
    assert abs(lag_one(log_returns(plain))) < 0.02
    assert lag_one(log_returns(structured)) == pytest.approx(autocorrelation, abs=0.02)
    assert log_returns(structured).std() == pytest.approx(log_returns(plain).std(), rel=0.02)
    # The seed's other draws are the same: the shocks are correlated, nothing else moved.
    assert structured["volume"].equals(plain["volume"])
    assert structured["timestamp"].equals(plain["timestamp"])


def test_with_momentum_the_last_bar_tells_the_next_ones_direction():
    """The simplest predictor, "the next bar moves the way the last one did", is right half the time on the plain
    series, and well above half with momentum (0.5 + arcsin(0.15) / pi = 54.8 % for a Gaussian AR(1))."""

    def hit_rate(frame: pd.DataFrame) -> float:
        returns = log_returns(frame)
        return float(np.mean(np.sign(returns[1:]) == np.sign(returns[:-1])))

    plain = series.generate_bars(bars=100_000, timeframe="1h", seed=12)
    momentum = series.generate_bars(bars=100_000, timeframe="1h", seed=12, autocorrelation=0.15)
    assert hit_rate(plain) == pytest.approx(0.5, abs=0.01)
    assert hit_rate(momentum) > 0.535


@pytest.mark.parametrize("autocorrelation", [0.5000001, -0.6, 1.0, float("nan"), float("inf")])
def test_generate_bars_refuses_an_autocorrelation_out_of_range(autocorrelation):
    with pytest.raises(MarketDataError, match="autocorrelation .* is invalid: use a number from -0.5 to 0.5"):
        series.generate_bars(bars=100, timeframe="1h", autocorrelation=autocorrelation)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--symbol", "bad symbol", "--timeframe", "1h", "--bars", "100"], "symbol 'bad symbol'"),
        (["--symbol", "../escape", "--timeframe", "1h", "--bars", "100"], "symbol '../escape'"),
        (["--symbol", "SYN", "--timeframe", "7h", "--bars", "100"], "timeframe '7h'"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "1"], "--bars"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "100", "--seed", "-1"], "--seed"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "100", "--start", "yesterday"], "--start 'yesterday'"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "100", "--autocorrelation", "0.6"],
         "--autocorrelation 0.6 is invalid: use a number from -0.5 to 0.5"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "100", "--autocorrelation", "-0.51"],
         "--autocorrelation -0.51 is invalid"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "100", "--autocorrelation", "nan"],
         "--autocorrelation nan is invalid"),
        (["--symbol", "SYN", "--timeframe", "1h", "--bars", "100", "--autocorrelation", "strong"],
         "--autocorrelation: invalid float value: 'strong'"),
    ],
)
def test_generate_refuses_bad_options_by_name(data_dir, tmp_path, args, named):
    with pytest.raises(CommandError) as refused:
        marketdata("generate", *args)
    assert named in str(refused.value)
    assert not data_dir.exists() or list(data_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["data"])  # nothing written beside DATA_DIR either


# --- list


def test_list_shows_each_series_with_its_bar_count(data_dir):
    generate("SYN", "1h", 1234)
    generate("ETH.X", "1d", 50, "--start", "2021-06-01")
    output = marketdata("list").splitlines()
    syn = next(line for line in output if line.startswith("SYN "))
    eth = next(line for line in output if line.startswith("ETH.X "))
    assert syn.split()[:3] == ["SYN", "1h", "1,234"]
    assert eth.split()[:3] == ["ETH.X", "1d", "50"]
    assert "2021-06-01T00:00:00Z" in eth and "2021-07-20T00:00:00Z" in eth
    assert output[-1] == "Total: 2 series"


def test_list_with_no_data(data_dir):
    assert marketdata("list").splitlines()[-1] == "Total: 0 series"


# --- import


def test_import_of_iso_and_epoch_timestamps_writes_the_series(data_dir, tmp_path):
    source = tmp_path / "bars.csv"
    source.write_text(
        "Timestamp, Open, High, Low, Close, Volume\r\n"  # header case and spaces are tolerated
        "2024-01-01T00:00:00Z,100,101,99,100.5,1000\r\n"
        "2024-01-01 01:00:00,100.5,102,100,101.5,1200\r\n"  # naive: UTC
        "2024-01-01T04:00:00+02:00,101.5,101.6,98.5,99,900.5\r\n"  # = 02:00 UTC
        "\r\n"
        "1704078000,99,99.5,98,99.25,0\r\n"  # epoch seconds: 03:00 UTC
    )
    output = import_file(source, "SYN", "1h")
    target = data_dir / "SYN_1h.csv"
    assert output.strip() == f"Imported 4 bars of SYN 1h into {target}"
    rows = read_rows(target)
    assert [row["timestamp"] for row in rows] == [
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00Z",
        "2024-01-01T02:00:00Z",
        "2024-01-01T03:00:00Z",
    ]
    assert [float(row["close"]) for row in rows] == [100.5, 101.5, 99.0, 99.25]
    assert [float(row["volume"]) for row in rows] == [1000.0, 1200.0, 900.5, 0.0]
    bars = load_bars("SYN", "1h")
    assert len(bars) == 4 and bars["timestamp"].iloc[-1] == pd.Timestamp("2024-01-01T03:00:00Z")
    assert sorted(p.name for p in data_dir.iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]


def test_import_replaces_an_existing_series(data_dir, tmp_path):
    generate("SYN", "1h", 500)
    source = tmp_path / "bars.csv"
    source.write_text(HEADER + "".join(GOOD_ROWS))
    import_file(source)
    assert len(read_rows(data_dir / "SYN_1h.csv")) == 3
    assert "SYN" in marketdata("list") and " 3 " in marketdata("list")


def with_row(number: int, row: str) -> str:
    """The good file with its data row `number` (2 = the first line after the header) replaced."""
    rows = list(GOOD_ROWS)
    rows[number - 2] = row
    return HEADER + "".join(rows)


BAD_FILES = [
    # (id, file content or None for a missing file, fragments the error must contain)
    ("bad-header", "time,open,high,low,close,volume\n" + "".join(GOOD_ROWS), ["line 1", "header"]),
    ("missing-column", "timestamp,open,high,low,close\n" + "".join(GOOD_ROWS), ["line 1", "header"]),
    ("too-few-fields", with_row(3, "2024-01-01T01:00:00Z,100.5,102,100,101.5\n"), ["line 3", "6 fields, got 5"]),
    ("too-many-fields", with_row(4, "2024-01-01T02:00:00Z,101.5,101.6,98.5,99,900,1\n"), ["line 4", "got 7"]),
    ("not-a-number", with_row(2, "2024-01-01T00:00:00Z,100,101,99,abc,1000\n"), ["line 2", "close 'abc'", "number"]),
    ("empty-field", with_row(3, "2024-01-01T01:00:00Z,,102,100,101.5,1200\n"), ["line 3", "open ''"]),
    ("nan", with_row(3, "2024-01-01T01:00:00Z,100.5,102,100,101.5,nan\n"), ["line 3", "volume 'nan'", "finite"]),
    ("inf", with_row(2, "2024-01-01T00:00:00Z,100,inf,99,100.5,1000\n"), ["line 2", "high 'inf'", "finite"]),
    ("zero-price", with_row(2, "2024-01-01T00:00:00Z,0,101,99,100.5,1000\n"), ["line 2", "open 0", "positive"]),
    ("negative-price", with_row(4, "2024-01-01T02:00:00Z,101.5,101.6,-1,99,900\n"), ["line 4", "low -1", "positive"]),
    ("negative-volume", with_row(3, "2024-01-01T01:00:00Z,100.5,102,100,101.5,-5\n"), ["line 3", "volume"]),
    ("high-below-close", with_row(3, "2024-01-01T01:00:00Z,100.5,101,100,101.5,1200\n"), ["line 3", "high"]),
    ("low-above-open", with_row(2, "2024-01-01T00:00:00Z,100,101,100.2,100.5,1000\n"), ["line 2", "low"]),
    ("bad-timestamp", with_row(3, "yesterday,100.5,102,100,101.5,1200\n"), ["line 3", "timestamp 'yesterday'"]),
    ("out-of-order", with_row(4, "2024-01-01T00:30:00Z,101.5,101.6,98.5,99,900\n"), ["line 4", "timestamp"]),
    ("duplicate", with_row(3, "2024-01-01T00:00:00Z,100.5,102,100,101.5,1200\n"), ["line 3", "timestamp"]),
    ("not-utf8", with_row(3, "2024-01-01T01:00:00Z,100.5,102,100,101.5,1200\xff\n"), ["line 3", "UTF-8"]),
    ("unclosed-quote", with_row(3, '"2024-01-01T01:00:00Z,100.5,102,100,101.5,1200\n'), ["line 4"]),
    ("empty-file", "", ["empty"]),
    ("header-only", HEADER, ["at least 2 bars", "found 0"]),
    ("missing-file", None, ["cannot be read"]),
]


def write_source(path: Path, content: str | None) -> None:
    if content is not None:
        # latin-1 keeps \xff a single raw byte: the "not UTF-8" case
        path.write_bytes(content.encode("latin-1"))


@pytest.mark.parametrize(("content", "fragments"), [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_bad_import_names_the_line_and_writes_nothing(data_dir, tmp_path, content, fragments, existing):
    target = data_dir / "SYN_1h.csv"
    if existing:
        generate("SYN", "1h", 300)
        before = target.read_bytes()
    source = tmp_path / "bad.csv"
    write_source(source, content)

    with pytest.raises(CommandError) as refused:
        import_file(source)

    message = str(refused.value)
    assert str(source) in message
    for fragment in fragments:
        assert fragment in message, message
    if existing:
        assert target.read_bytes() == before
        assert sorted(p.name for p in data_dir.iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]
    else:
        assert not data_dir.exists() or list(data_dir.iterdir()) == []


def test_a_field_larger_than_the_csv_limit_is_a_line_error_not_a_crash(data_dir, tmp_path):
    source = tmp_path / "huge.csv"
    source.write_text(HEADER + GOOD_ROWS[0] + '"' + "x" * 200_000 + '",1,2,0.5,1.5,10\n')
    with pytest.raises(CommandError) as refused:
        import_file(source)
    assert "line 3" in str(refused.value)
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("symbol", "timeframe", "named"),
    [("bad symbol", "1h", "symbol 'bad symbol'"), ("../SYN", "1h", "symbol '../SYN'"),
     ("SYN", "7h", "timeframe '7h'"), ("SYN", "1H", "timeframe '1H'")],
)
def test_import_refuses_a_bad_symbol_or_timeframe_by_name(data_dir, tmp_path, symbol, timeframe, named):
    source = tmp_path / "bars.csv"
    source.write_text(HEADER + "".join(GOOD_ROWS))
    with pytest.raises(CommandError) as refused:
        import_file(source, symbol, timeframe)
    assert named in str(refused.value)
    assert not data_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv"]


def test_a_write_that_fails_halfway_leaves_the_previous_series_and_no_temporary(data_dir, monkeypatch):
    generate("SYN", "1h", 300)
    target = data_dir / "SYN_1h.csv"
    before = target.read_bytes()

    def disk_full(frame, stream, **kwargs):
        stream.write("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError):
        write_series(series.generate_bars(bars=50, timeframe="1h"), "SYN", "1h")
    assert target.read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]


def test_a_series_longer_than_the_bound_is_refused_naming_the_line(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(series, "MAX_BARS", 2)
    source = tmp_path / "bars.csv"
    source.write_text(HEADER + "".join(GOOD_ROWS))  # 3 bars: line 4 is one too many

    with pytest.raises(CommandError, match="line 4: more than 2 bars, the most a series may hold"):
        import_file(source)
    assert not data_dir.exists() or list(data_dir.iterdir()) == []


def test_parse_errors_are_market_data_errors(tmp_path):
    """What the training service and the command catch: no other exception escapes a bad file."""
    source = tmp_path / "bad.csv"
    source.write_bytes(b"\x00\x01\x02garbage\xfe\n\xff")
    with pytest.raises(MarketDataError):
        series.parse_csv(source)


# --- the real command line: exit status 1, the message on stderr, no traceback


def run_manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_errors_exit_1_with_the_message_on_stderr(tmp_path):
    existing = run_manage(tmp_path, "marketdata", "generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "200")
    assert existing.returncode == 0, existing.stderr
    target = tmp_path / "data" / "SYN_1h.csv"
    before = target.read_bytes()

    bad = tmp_path / "bad.csv"
    bad.write_text(with_row(3, "2024-01-01T01:00:00Z,100.5,102,100,abc,1200\n"))
    refused = run_manage(tmp_path, "marketdata", "import", str(bad), "--symbol", "SYN", "--timeframe", "1h")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert f"{bad}, line 3: close 'abc' is not a number" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_bytes() == before

    timeframe = run_manage(tmp_path, "marketdata", "generate", "--symbol", "SYN", "--timeframe", "7h", "--bars", "10")
    assert timeframe.returncode == 1
    assert "timeframe '7h' is invalid" in timeframe.stderr and "Traceback" not in timeframe.stderr

    missing = run_manage(tmp_path, "marketdata", "import", str(tmp_path / "nope.csv"), "--symbol", "SYN",
                         "--timeframe", "1h")
    assert missing.returncode == 1
    assert "nope.csv: cannot be read" in missing.stderr and "Traceback" not in missing.stderr

    listing = run_manage(tmp_path, "marketdata", "list")
    assert listing.returncode == 0 and "Total: 1 series" in listing.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]
    # The market data commands touch no table: the database was never even opened.
    assert not (tmp_path / "db.sqlite3").exists()


# --- a symbol in any case, JSON, and a series that operations used


def test_a_symbol_is_case_insensitive(data_dir, tmp_path):
    source = tmp_path / "bars.csv"
    source.write_text(HEADER + "".join(GOOD_ROWS))
    assert "Imported 3 bars of SYN 1h" in marketdata("import", str(source), "--symbol", "syn", "--timeframe", "1h")
    assert (data_dir / "SYN_1h.csv").exists() and not (data_dir / "syn_1h.csv").exists()


def test_every_action_prints_json(data_dir, tmp_path):
    generated = json.loads(marketdata("generate", "--symbol", "SYN", "--timeframe", "1h", "--bars", "500", "--json"))
    assert (generated["symbol"], generated["timeframe"], generated["bars"]) == ("SYN", "1h", 500)
    assert generated["start"] == "2015-01-01T00:00:00Z" and generated["path"] == str(data_dir / "SYN_1h.csv")
    source = tmp_path / "bars.csv"
    source.write_text(HEADER + "".join(GOOD_ROWS))
    imported = json.loads(marketdata("import", str(source), "--symbol", "OTHER", "--timeframe", "1h", "--json"))
    assert imported["bars"] == 3 and imported["end"] == "2024-01-01T02:00:00Z"
    listed = json.loads(marketdata("list", "--json"))
    assert listed["count"] == 2 and [info["symbol"] for info in listed["results"]] == ["OTHER", "SYN"]


def used_by_operations(symbol: str = "SYN", timeframe: str = "1h"):
    from checkpoints.models import Checkpoint
    from tests.factories import OperationFactory

    params = {"symbol": symbol, "timeframe": timeframe}
    OperationFactory(status="RUNNING", params=params)
    resumable = OperationFactory(status="CANCELLED", params=params)
    Checkpoint.objects.create(operation=resumable, checkpoint_type="cancellation", state={}, artifacts_path="",
                              manifest=[])
    OperationFactory(status="COMPLETED", params={"symbol": "OTHER", "timeframe": timeframe})


def test_overwriting_a_series_operations_used_needs_force_and_warns(data_dir, tmp_path):
    generate("SYN", "1h", 500)
    before = (data_dir / "SYN_1h.csv").read_bytes()
    used_by_operations()
    source = tmp_path / "bars.csv"
    source.write_text(HEADER + "".join(GOOD_ROWS))

    with pytest.raises(CommandError) as refused:
        import_file(source)
    assert str(refused.value) == (
        "SYN 1h is used by 2 operations (1 not ended, 1 resumable): their resumes read the series again, and would "
        "run over other bars than they began on. Nothing was written; --force overwrites it anyway.")
    with pytest.raises(CommandError):
        generate("SYN", "1h", 400)
    assert (data_dir / "SYN_1h.csv").read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == [".SYN_1h.times.npz", "SYN_1h.csv"]

    # The same bars again change nothing and need nothing; --force overwrites, and says what it did.
    assert "Generated 500" in generate("SYN", "1h", 500)
    err = StringIO()
    call_command("marketdata", "import", str(source), "--symbol", "SYN", "--timeframe", "1h", "--force",
                 stdout=StringIO(), stderr=err)
    assert "Overwrote SYN 1h, used by 2 operations (1 not ended, 1 resumable) (--force)" in err.getvalue()
    assert len(read_rows(data_dir / "SYN_1h.csv")) == 3


def test_a_series_nobody_used_is_overwritten_without_force(data_dir, tmp_path):
    generate("SYN", "1h", 500)
    used_by_operations(symbol="SYN", timeframe="4h")  # another series
    generate("SYN", "1h", 400)
    assert len(read_rows(data_dir / "SYN_1h.csv")) == 400
