"""The spool between MQTT/AMQP and the pipeline: fsynced records, torn tails, trimming, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from crowdwatch.sources import spool as spool_module
from crowdwatch.sources.spool import Spool, SpoolCursor, count


def records(start: int, n: int, size: int = 10) -> list[tuple[bytes, bytes]]:
    return [(b"k%d" % i, (b"%d:" % i).ljust(size, b"x")) for i in range(start, start + n)]


def test_records_are_read_back_in_order_from_any_cursor(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.append(records(0, 5)) == 5
    got, cursor = spool.read(spool.start, 3)
    assert got == [v for _, v in records(0, 3)] and cursor.ordinal == 3
    spool.append(records(5, 2))
    rest, end = spool.read(cursor, 100)
    assert rest == [v for _, v in records(3, 4)] and end.ordinal == 7
    assert spool.read(end, 100) == ([], end)
    assert count(tmp_path) == 7
    spool.close()


def test_a_torn_record_is_cut_off_and_the_spool_reopens_where_it_was(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(records(0, 3))
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    with segment.open("ab") as f:  # a crash in the middle of a write
        f.write(b"\x00\x00\x00\x02\x00\x00\x01\x00k9partial")
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.end == 3 and again.seen(b"k2") and not again.seen(b"k9")
    again.append(records(3, 1))
    got, _ = again.read(again.start, 10)
    assert got == [v for _, v in records(0, 4)]
    again.close()


def test_segments_go_once_three_snapshots_are_past_them_and_the_bound_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    spool = Spool(tmp_path, max_bytes=1500)
    for start in range(0, 60, 10):
        spool.append(records(start, 10, size=20))  # 10 records of 30 bytes: a segment each
    assert len(list(tmp_path.glob("*.spool"))) == 6 and spool.full
    # read across segments
    got, cursor = spool.read(spool.start, 25)
    assert got == [v for _, v in records(0, 25, size=20)] and cursor.ordinal == 25
    spool.trim(25)
    spool.trim(40)
    assert len(list(tmp_path.glob("*.spool"))) == 6  # the newest snapshots may not be committed
    spool.trim(55)
    # segments wholly before ordinal 25 (the third newest snapshot) are gone: 0-9 and 10-19
    assert sorted(p.name for p in tmp_path.glob("*.spool"))[0].startswith(f"{20:020d}")
    assert spool.start == SpoolCursor(20, 20, 0) and not spool.full
    rest, end = spool.read(cursor, 100)
    assert rest == [v for _, v in records(25, 35, size=20)] and end.ordinal == 60
    spool.close()


def test_a_record_larger_than_a_read_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 64)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    big = b"y" * 500
    spool.append([(b"a", big), (b"b", b"small")])
    got, cursor = spool.read(spool.start, 10)
    assert got == [big, b"small"] and cursor.ordinal == 2
    spool.close()
