"""The spool of a backtest (backtesting/spool.py) with a real engine: which fills each checkpoint sends as an
append, what a save that did or did not write them changes, how the view pins the engine's fill log, and
that a checkpoint's record reads back only when the file holds exactly what it says."""

from __future__ import annotations

import json
import zlib
from array import array

import numpy as np
import pytest

from backtesting.engine import FILL_FIELDS, LONG, SHORT, TRADE_FIELDS, Costs, Engine, EngineState
from backtesting.spool import CRC_FIELD, FILLS, Spool, SpoolIncomplete
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


def resumed_from(operation_id: str, engine: Engine, record: dict) -> Engine:
    """A new engine as a resumed run builds it: the JSON of the checkpoint's state, and the trades replayed
    from the fills the spool holds."""
    resumed = walk()
    resumed.state = EngineState.from_dict(json.loads(json.dumps(engine.state.as_dict())))
    resumed.replay(Spool.read(operation_id, record))
    return resumed


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
    started.start(engine)  # at bar 0: an empty file
    return started


def sent(appends) -> list[tuple[int, bytes, int, str]]:
    """Each append as (offset, bytes, crc of what precedes it, crc field)."""
    return [(append.offset, bytes(append.data), append.crc, append.crc_field) for append in appends]


def file_bytes(spool: Spool) -> bytes:
    return (spool.folder / FILLS).read_bytes()


def save_writes(spool: Spool, engine: Engine) -> dict[str, int]:
    """A checkpoint whose save wrote its append (as checkpoint_save does first), confirmed."""
    appends, _ = spool.appends(engine)
    try:
        appended = write_appends(appends)
    finally:
        spool.release(appends)
    spool.confirm(appended)
    return appended


# --- starting


def test_start_makes_an_empty_fill_file_and_nothing_else(operation_id, engine):
    stale = Spool(operation_id, attempt=1).folder
    stale.mkdir(parents=True)
    (stale / "trades.f64").write_bytes(b"\x00" * 72)  # an earlier delivery of the same run, of the two-log kind
    (stale / FILLS).write_bytes(b"\x01" * 24)

    spool = Spool(operation_id, attempt=1)
    spool.start(engine)

    assert sorted(path.name for path in spool.folder.iterdir()) == [FILLS]
    assert spool.path == str(spool.folder / FILLS)
    assert file_bytes(spool) == b"" and (spool.written, spool.crc) == (0, 0)


# --- what each checkpoint sends


def test_the_first_append_brings_the_empty_file_to_the_end_of_the_log(spool, engine):
    engine.run(10)

    appends, spooled = spool.appends(engine)
    try:
        assert sent(appends) == [(0, engine.fill_log.tobytes(), 0, CRC_FIELD)]
        assert appends[0].path == spool.path
    finally:
        spool.release(appends)
    assert spooled == ("run-1", len(engine.fill_log), len(engine.trade_log), 0)
    record = Spool.record(*spooled)
    assert (record["spool"], record["fills_count"], record[CRC_FIELD], record["trades_count"]) == ("run-1", 9, 0, 8)


def test_the_record_counts_the_trades_closed_so_far(spool, engine):
    counts = []
    for stop in (1, 2, 3, 10, BARS):
        engine.run(stop)
        counts.append((Spool.record(*spool.write_new(engine))["trades_count"], len(engine.trades)))
    engine.close_at_end()  # the reversal open at the end becomes one more trade
    counts.append((Spool.record(*spool.write_new(engine))["trades_count"], len(engine.trades)))

    assert counts == [(0, 0), (0, 0), (1, 1), (8, 8), (BARS - 2, BARS - 2), (BARS - 1, BARS - 1)]
    assert len(engine.trade_log) == (BARS - 1) * len(TRADE_FIELDS)


def test_fills_a_save_did_not_write_are_sent_again_from_the_same_offset(spool, engine):
    engine.run(10)
    appends, first_spooled = spool.appends(engine)
    (first,) = sent(appends)
    spool.release(appends)
    spool.confirm(None)  # the save raised before writing them

    engine.run(20)
    appends, spooled = spool.appends(engine)
    (again,) = sent(appends)
    spool.release(appends)

    offset, data, crc, _ = again
    assert (offset, crc) == (0, 0) and data.startswith(first[1]) and len(data) > len(first[1])  # the same, and more
    assert data == engine.fill_log.tobytes()
    assert (spool.written, spool.crc) == (0, 0)
    assert spooled[3] == first_spooled[3] == 0
    assert file_bytes(spool) == b""


def test_fills_a_save_wrote_are_not_sent_again_and_the_crc_carries_on(spool, engine):
    engine.run(10)
    appended = save_writes(spool, engine)
    fills = len(engine.fill_log)

    assert list(appended) == [CRC_FIELD]
    assert spool.written == fills and spool.crc == appended[CRC_FIELD] == zlib.crc32(file_bytes(spool))
    engine.run(20)
    appends, spooled = spool.appends(engine)
    try:
        assert sent(appends) == [(fills * 8, engine.fill_log[fills:].tobytes(), appended[CRC_FIELD], CRC_FIELD)]
    finally:
        spool.release(appends)
    assert spooled == ("run-1", len(engine.fill_log), len(engine.trade_log), appended[CRC_FIELD])

    save_writes(spool, engine)  # the running CRC-32 over both appends is the CRC-32 of the whole file
    assert file_bytes(spool) == engine.fill_log.tobytes()
    assert spool.crc == zlib.crc32(engine.fill_log.tobytes()) and spool.written == len(engine.fill_log)


def test_a_log_with_nothing_new_sends_no_append_and_keeps_its_crc(spool, engine):
    engine.run(10)
    save_writes(spool, engine)
    before = (spool.written, spool.crc, file_bytes(spool))

    appends, spooled = spool.appends(engine)
    assert appends == []
    assert spooled == ("run-1", before[0], len(engine.trade_log), before[1])
    spool.confirm(write_appends(appends))  # the save wrote nothing, and reports no CRC-32

    assert (spool.written, spool.crc, file_bytes(spool)) == before


def test_a_confirmation_with_no_save_in_flight_changes_nothing(spool, engine):
    engine.run(10)
    save_writes(spool, engine)
    before = (spool.written, spool.crc)
    engine.run(20)  # new fills, never sent

    spool.confirm({CRC_FIELD: 1})  # the same save's result taken a second time

    assert (spool.written, spool.crc) == before


# --- the view pins the log


def test_the_log_cannot_grow_while_its_view_is_out_and_can_once_released(spool, engine):
    engine.run(10)
    appends, _ = spool.appends(engine)
    state = engine.state.as_dict()

    with pytest.raises(BufferError):
        engine.run(20)  # the view would point into freed memory if the array could move
    assert engine.state.as_dict() == state  # all or nothing: the chunk is not half done
    assert len(engine.fill_log) == 9 * len(FILL_FIELDS) and len(engine.equity) == 10

    spool.release(appends)
    engine.run(20)
    straight = walk()
    straight.run(20)
    assert engine.fill_log == straight.fill_log and engine.equity == straight.equity
    assert engine.state == straight.state


def test_a_chunk_refused_by_a_pinned_log_leaves_no_trade_behind(spool, engine):
    engine.run(10)
    trades = engine.trade_log.tobytes()
    appends, _ = spool.appends(engine)

    with pytest.raises(BufferError):
        engine.run(20)  # bar 10's fill closes bar 9's trade before it fails to log the fill
    spool.release(appends)

    assert engine.trade_log.tobytes() == trades
    engine.run(20)
    straight = walk()
    straight.run(20)
    assert engine.trades == straight.trades


def test_a_released_view_can_no_longer_be_read(spool, engine):
    engine.run(10)
    appends, _ = spool.appends(engine)

    spool.release(appends)

    with pytest.raises(ValueError):
        bytes(appends[0].data)


# --- closing


def test_close_cuts_what_a_failed_save_wrote_past_the_known_end(spool, engine):
    engine.run(10)
    save_writes(spool, engine)
    known = file_bytes(spool)
    engine.run(20)
    appends, _ = spool.appends(engine)
    write_appends(appends)  # written, but its commit was refused: the save reports nothing appended
    spool.release(appends)
    spool.confirm(None)
    assert len(file_bytes(spool)) > len(known)

    spool.close()

    assert file_bytes(spool) == known == engine.fill_log[:spool.written].tobytes()


# --- reading back what a checkpoint records


def test_read_returns_the_fills_write_new_wrote(operation_id, spool, engine):
    engine.run(15)
    save_writes(spool, engine)  # a periodic checkpoint, then a stop checkpoint
    engine.run(BARS)
    engine.close_at_end()

    record = Spool.record(*spool.write_new(engine))
    fills = Spool.read(operation_id, record)

    assert fills.typecode == "d" and fills.tobytes() == engine.fill_log.tobytes()
    assert record["fills_count"] == len(engine.fill_log) // len(FILL_FIELDS) == BARS  # bars 1..39, and the close
    assert record["trades_count"] == len(engine.trade_log) // len(TRADE_FIELDS) == len(engine.trades)
    assert record[CRC_FIELD] == zlib.crc32(engine.fill_log.tobytes())


def test_a_resumed_run_starts_its_spool_with_the_fills_it_resumes_from(operation_id, spool, engine):
    engine.run(15)
    record = Spool.record(*spool.write_new(engine))
    resumed = resumed_from(operation_id, engine, record)
    assert resumed.trade_log.tobytes() == engine.trade_log.tobytes() and resumed.trades == engine.trades
    assert resumed.state == engine.state

    second = Spool(operation_id, attempt=2)
    second.start(resumed)

    assert second.folder != spool.folder and second.written == len(engine.fill_log)
    assert (second.folder / FILLS).read_bytes() == engine.fill_log.tobytes()
    again = Spool.record(*second.write_new(resumed))  # nothing new since the start
    assert again == {**record, "spool": "run-2"}
    assert Spool.read(operation_id, again).tobytes() == engine.fill_log.tobytes()

    resumed.run(BARS)  # and the resumed run's spool carries on where the first one stopped
    engine.run(BARS)
    assert Spool.read(operation_id, Spool.record(*second.write_new(resumed))).tobytes() == engine.fill_log.tobytes()


def test_read_names_only_the_prefix_a_checkpoint_recorded(operation_id, spool, engine):
    engine.run(10)
    record = Spool.record(*spool.write_new(engine))
    engine.run(20)
    spool.write_new(engine)  # a later checkpoint, never committed
    assert len(file_bytes(spool)) == len(engine.fill_log) * 8

    fills = Spool.read(operation_id, record)

    assert len(fills) == record["fills_count"] * len(FILL_FIELDS) == 9 * len(FILL_FIELDS)
    assert fills == engine.fill_log[:len(fills)]


def flip_a_byte(spool: Spool, record: dict) -> dict:
    path = spool.folder / FILLS
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    return record


def shorten(spool: Spool, record: dict) -> dict:
    with open(spool.folder / FILLS, "r+b") as handle:
        handle.truncate(8 * len(FILL_FIELDS) * record["fills_count"] - 8)
    return record


def claim_another_crc(spool: Spool, record: dict) -> dict:
    return {**record, CRC_FIELD: record[CRC_FIELD] ^ 1}


def claim_more_fills(spool: Spool, record: dict) -> dict:
    return {**record, "fills_count": record["fills_count"] + 1}


def lose_the_spool(spool: Spool, record: dict) -> dict:
    (spool.folder / FILLS).unlink()
    return record


@pytest.mark.parametrize("damage, message", [
    (flip_a_byte, "CRC-32 mismatch"),
    (claim_another_crc, "CRC-32 mismatch"),
    (shorten, "fewer than its checkpoint says"),
    (claim_more_fills, "fewer than its checkpoint says"),
    (lose_the_spool, "cannot be read"),
])
def test_a_file_that_is_not_what_its_checkpoint_recorded_raises_spool_incomplete(operation_id, spool, engine, damage,
                                                                                 message):
    engine.run(10)
    record = Spool.record(*spool.write_new(engine))
    assert Spool.read(operation_id, record) == engine.fill_log  # intact, it reads back
    record = damage(spool, record)

    with pytest.raises(SpoolIncomplete, match=message):
        Spool.read(operation_id, record)


def test_an_empty_spool_reads_back_as_an_empty_log(operation_id, spool, engine):
    record = Spool.record(*spool.write_new(engine))

    assert record == {"spool": "run-1", "fills_count": 0, CRC_FIELD: 0, "trades_count": 0}
    assert Spool.read(operation_id, record) == array("d")
