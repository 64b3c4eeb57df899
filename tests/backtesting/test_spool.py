"""The spool of a backtest (backtesting/spool.py) with a real engine: which entries each checkpoint sends as
appends, what a save that did or did not write them changes, how the views pin the engine's logs, and
that a checkpoint's record reads back only when the files hold exactly what it says."""

from __future__ import annotations

import zlib
from array import array

import numpy as np
import pytest

from backtesting.engine import FILL_FIELDS, LONG, SHORT, TRADE_FIELDS, Costs, Engine
from backtesting.spool import CRC_FIELDS, FILLS, TRADES, Spool, SpoolIncomplete
from checkpoints.services import write_appends
from operations.ids import new_operation_id

BARS = 40


def walk() -> Engine:
    """An engine that reverses at every bar: a fill at every bar from bar 1, a closed trade from bar 2."""
    closes = [100.0 + (i % 7) - 0.5 * (i % 3) for i in range(BARS)]
    opens = [close - 0.25 for close in closes]
    start = np.datetime64("2021-01-01T00:00:00", "ns")
    times = np.array([start + np.timedelta64(i, "h") for i in range(BARS)])
    targets = [LONG if i % 2 == 0 else SHORT for i in range(BARS)]
    return Engine(opens=opens, closes=closes, times=times, targets=targets, costs=Costs(), initial_cash=10_000.0)


@pytest.fixture
def operation_id(settings, tmp_path) -> str:
    settings.RESULTS_DIR = tmp_path / "results"
    return new_operation_id("backtesting")


@pytest.fixture
def engine() -> Engine:
    return walk()


@pytest.fixture
def spool(operation_id, engine) -> Spool:
    started = Spool(operation_id, attempt=1)
    started.start(engine)  # at bar 0: empty files
    return started


def sent(appends) -> dict[str, tuple[int, bytes, int]]:
    """Each append as (offset, bytes, crc of what precedes it), by file name."""
    return {append.path.rsplit("/", 1)[1]: (append.offset, bytes(append.data), append.crc) for append in appends}


def file_bytes(spool: Spool, name: str) -> bytes:
    return (spool.folder / name).read_bytes()


def save_writes(spool: Spool, engine: Engine) -> dict[str, int]:
    """A checkpoint whose save wrote its appends (as checkpoint_save does first), confirmed."""
    appends, _ = spool.appends(engine)
    try:
        appended = write_appends(appends)
    finally:
        spool.release(appends)
    spool.confirm(appended)
    return appended


# --- what each checkpoint sends


def test_the_first_appends_bring_the_empty_files_to_the_ends_of_the_logs(spool, engine):
    engine.run(10)

    appends, spooled = spool.appends(engine)
    try:
        assert sent(appends) == {FILLS: (0, engine.fill_log.tobytes(), 0), TRADES: (0, engine.trade_log.tobytes(), 0)}
        assert {append.crc_field for append in appends} == set(CRC_FIELDS.values())
    finally:
        spool.release(appends)
    assert spooled == ("run-1", len(engine.fill_log), len(engine.trade_log), 0, 0)
    assert Spool.record(*spooled)["fills_count"] == 9 and Spool.record(*spooled)["trades_count"] == 8


def test_entries_a_save_did_not_write_are_sent_again_from_the_same_offsets(spool, engine):
    engine.run(10)
    appends, first_spooled = spool.appends(engine)
    first = sent(appends)
    spool.release(appends)
    spool.confirm(None)  # the save raised before writing them

    engine.run(20)
    appends, spooled = spool.appends(engine)
    again = sent(appends)
    spool.release(appends)

    for name in (FILLS, TRADES):
        offset, data, crc = again[name]
        assert (offset, crc) == (0, 0) and data.startswith(first[name][1])  # the same bytes, and the new ones
    assert spool.written == {FILLS: 0, TRADES: 0}
    assert spooled[3:] == first_spooled[3:] == (0, 0)


def test_entries_a_save_wrote_are_not_sent_again_and_the_crcs_carry_on(spool, engine):
    engine.run(10)
    appended = save_writes(spool, engine)
    fills, trades = len(engine.fill_log), len(engine.trade_log)

    assert spool.written == {FILLS: fills, TRADES: trades}
    assert spool.crc == {FILLS: appended["fills_crc32"], TRADES: appended["trades_crc32"]}
    engine.run(20)
    appends, spooled = spool.appends(engine)
    try:
        assert sent(appends) == {
            FILLS: (fills * 8, engine.fill_log[fills:].tobytes(), appended["fills_crc32"]),
            TRADES: (trades * 8, engine.trade_log[trades:].tobytes(), appended["trades_crc32"]),
        }
    finally:
        spool.release(appends)
    assert spooled[3:] == (appended["fills_crc32"], appended["trades_crc32"])


def test_a_log_with_nothing_new_sends_no_append_and_keeps_its_crc(spool, engine):
    engine.run(10)
    save_writes(spool, engine)
    crc_before = dict(spool.crc)
    engine.fill_log.extend((10, 1.0, 0.0))  # a fill without a closed trade (as an entry from flat)

    appended = save_writes(spool, engine)

    assert list(appended) == ["fills_crc32"]
    assert spool.crc == {FILLS: zlib.crc32(file_bytes(spool, FILLS)), TRADES: crc_before[TRADES]}
    appends, _ = spool.appends(engine)
    assert appends == []


def test_a_confirmation_with_no_save_in_flight_changes_nothing(spool, engine):
    engine.run(10)
    save_writes(spool, engine)
    before = (dict(spool.written), dict(spool.crc))

    spool.confirm({"fills_crc32": 1, "trades_crc32": 2})  # the same save's result taken a second time

    assert (spool.written, spool.crc) == before


# --- the views pin the logs


def test_the_logs_cannot_grow_while_their_views_are_out_and_can_once_released(spool, engine):
    engine.run(10)
    appends, _ = spool.appends(engine)

    with pytest.raises(BufferError):
        engine.run(20)  # the view would point into freed memory if the array could move
    assert engine.state.next_bar == 10  # all or nothing: the chunk is not half done

    spool.release(appends)
    engine.run(20)
    straight = walk()
    straight.run(20)
    assert engine.fill_log == straight.fill_log and engine.trade_log == straight.trade_log


def test_released_views_can_no_longer_be_read(spool, engine):
    engine.run(10)
    appends, _ = spool.appends(engine)

    spool.release(appends)

    with pytest.raises(ValueError):
        bytes(appends[0].data)


# --- closing


def test_close_cuts_what_a_failed_save_wrote_past_the_known_end(spool, engine):
    engine.run(10)
    save_writes(spool, engine)
    known = {name: file_bytes(spool, name) for name in (FILLS, TRADES)}
    engine.run(20)
    appends, _ = spool.appends(engine)
    write_appends(appends)  # written, but its commit was refused: the save reports nothing appended
    spool.release(appends)
    spool.confirm(None)
    assert len(file_bytes(spool, FILLS)) > len(known[FILLS])

    spool.close()

    assert {name: file_bytes(spool, name) for name in (FILLS, TRADES)} == known


# --- reading back what a checkpoint records


def test_read_returns_the_logs_write_new_wrote(operation_id, spool, engine):
    engine.run(15)
    save_writes(spool, engine)  # a periodic checkpoint, then a stop checkpoint
    engine.run(BARS)
    engine.close_at_end()

    record = Spool.record(*spool.write_new(engine))
    fills, trades = Spool.read(operation_id, record)

    assert fills == engine.fill_log and trades == engine.trade_log
    assert record["fills_count"] == len(engine.fill_log) // len(FILL_FIELDS)
    assert record["trades_count"] == len(engine.trade_log) // len(TRADE_FIELDS)


def test_a_resumed_run_starts_its_spool_with_the_logs_it_resumes_from(operation_id, spool, engine):
    engine.run(15)
    record = Spool.record(*spool.write_new(engine))
    fills, trades = Spool.read(operation_id, record)
    resumed = walk()
    resumed.fill_log, resumed.trade_log = fills, trades

    second = Spool(operation_id, attempt=2)
    second.start(resumed)

    assert Spool.read(operation_id, Spool.record(*second.write_new(resumed))) == (engine.fill_log, engine.trade_log)
    assert (second.folder / FILLS).read_bytes() == engine.fill_log.tobytes()


def test_read_names_only_the_prefix_a_checkpoint_recorded(operation_id, spool, engine):
    engine.run(10)
    record = Spool.record(*spool.write_new(engine))
    engine.run(20)
    spool.write_new(engine)  # a later checkpoint, never committed

    fills, trades = Spool.read(operation_id, record)

    assert len(fills) == record["fills_count"] * len(FILL_FIELDS)
    assert fills == engine.fill_log[:len(fills)] and trades == engine.trade_log[:len(trades)]


def flip_a_byte(spool: Spool, record: dict) -> dict:
    path = spool.folder / FILLS
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    return record


def shorten(spool: Spool, record: dict) -> dict:
    with open(spool.folder / TRADES, "r+b") as handle:
        handle.truncate(8)
    return record


def claim_another_crc(spool: Spool, record: dict) -> dict:
    return {**record, "trades_crc32": record["trades_crc32"] ^ 1}


def lose_the_spool(spool: Spool, record: dict) -> dict:
    (spool.folder / FILLS).unlink()
    return record


@pytest.mark.parametrize("damage, message", [
    (flip_a_byte, "CRC-32 mismatch"),
    (claim_another_crc, "CRC-32 mismatch"),
    (shorten, "shorter than its checkpoint says"),
    (lose_the_spool, "cannot be read"),
])
def test_a_log_that_is_not_what_its_checkpoint_recorded_raises_spool_incomplete(operation_id, spool, engine, damage,
                                                                                message):
    engine.run(10)
    record = damage(spool, Spool.record(*spool.write_new(engine)))

    with pytest.raises(SpoolIncomplete, match=message):
        Spool.read(operation_id, record)


def test_an_empty_spool_reads_back_as_empty_logs(operation_id, spool, engine):
    fills, trades = Spool.read(operation_id, Spool.record(*spool.write_new(engine)))

    assert fills == array("d") and trades == array("d")
