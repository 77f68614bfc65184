"""Recorded files as streams: formats, the Hangzhou layout, pacing and resuming."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crowdwatch.sources.files import (
    FileSource,
    ReplayError,
    ReplayFile,
    batch_bounds,
    merge_runs,
    read_records,
)

ROWS = [
    {"ts": "2026-05-04T08:00:00.000+08:00", "gate_id": "RVS-G01", "direction": "in"},
    {"ts": "2026-05-04T08:00:01.000+08:00", "gate_id": "RVS-G02", "direction": "out"},
    {"ts": "2026-05-04T08:00:09.000+08:00", "gate_id": "RVS-G01", "direction": "in"},
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_reads_as_passages(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"feed{suffix}"
    frame = pl.DataFrame(ROWS)
    if suffix == ".csv":
        frame.write_csv(path)
    elif suffix == ".parquet":
        frame.write_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    kind, records = read_records(path)
    assert kind == "passage"
    if suffix == ".jsonl":
        assert records["payload"].to_list() == [json.dumps(r) for r in ROWS]
    else:
        assert records.to_dicts() == ROWS


def test_unknown_layouts_and_files_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    pl.DataFrame({"when": ["x"], "who": ["y"]}).write_csv(path)
    with pytest.raises(ReplayError, match="cannot tell the record kind"):
        read_records(path)
    with pytest.raises(ReplayError, match="no such file"):
        read_records(tmp_path / "missing.csv")
    (tmp_path / "feed.xlsx").write_text("", encoding="utf-8")
    with pytest.raises(ReplayError, match="unsupported file type"):
        read_records(tmp_path / "feed.xlsx")


def test_hangzhou_flows_become_station_counts(hangzhou: Path) -> None:
    kind, records = read_records(hangzhou)
    assert kind == "count"
    assert records.height == 288_000
    first = records.row(0, named=True)
    assert first == {
        "start": "2019-01-01 00:00:00",
        "end": "2019-01-01 00:10:00",
        "gate_id": None,
        "station_id": "HZ00",
        "entries": "0",
        "exits": "0",
    }
    assert records["station_id"].n_unique() == 80


def test_paced_batches_follow_event_time() -> None:
    times = np.array([0, 100, 2_000, 2_100, 9_000], dtype=np.int64)
    assert batch_bounds(times, 1000, None) == [0]
    # at 4x, a tick of 0.25 s wall time is 1 s of event time
    assert batch_bounds(times, 1000, 4.0) == [0, 2, 4]
    assert batch_bounds(times, 2, 4.0) == [0, 2, 4]


def test_a_resumed_partition_continues_after_the_last_batch(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    pl.DataFrame(ROWS * 5).write_csv(path)
    source = FileSource([ReplayFile(path, "Asia/Shanghai", batch_rows=4)])
    part = source.build_part("in", "feed.csv", None)
    first = part.next_batch()[0]
    assert (first.first_row, first.frame.height, part.snapshot()) == (0, 4, 4)
    resumed = source.build_part("in", "feed.csv", part.snapshot())
    rows = []
    while True:
        try:
            rows.extend(b.first_row for b in resumed.next_batch())
        except StopIteration:
            break
    assert rows == [4, 8, 12]


def test_paced_replay_waits_for_the_next_batchs_time(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    pl.DataFrame(ROWS).write_csv(path)
    part = FileSource([ReplayFile(path, "Asia/Shanghai", 100, speed=1.0)]).build_part(
        "in", "feed.csv", None
    )
    assert part.next_awake() is None  # the first batch is due at once
    assert part.next_batch()[0].frame.height == 1
    # the next record is 1 s of event time later, the one after it 9 s: at 1x we wait that long
    waits = []
    for _ in range(2):
        wake = part.next_awake()
        assert wake is not None
        waits.append((wake - datetime.now(UTC)).total_seconds())
        part.next_batch()
    assert 0 < waits[0] <= 1 and 7 < waits[1] <= 9


def test_files_need_distinct_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    spec = ReplayFile(tmp_path / "feed.csv", "UTC")
    with pytest.raises(ReplayError, match="distinct names"):
        FileSource([spec, ReplayFile(tmp_path / "a" / "feed.csv", "UTC")])


@given(
    st.lists(st.lists(st.integers(0, 3_600_000), max_size=60), min_size=1, max_size=4),
    st.integers(1, 25),
)
def test_merged_runs_cover_every_row_once_in_event_time_order(
    files: list[list[int]], batch_rows: int
) -> None:
    times = [np.array(f, dtype=np.int64) for f in files]
    runs = merge_runs(times, list(range(len(files))), batch_rows, slice_s=300)
    # every row of every file exactly once, each file read in its own order
    for index, f in enumerate(files):
        rows = [r for i, first, n in runs if i == index for r in range(first, first + n)]
        assert rows == list(range(len(f)))
    assert all(0 < n <= batch_rows for _, _, n in runs)
    # across files, batches follow the newest slice each file has reached
    reached = [int(np.maximum.accumulate(times[i] // 300_000)[first]) for i, first, _ in runs]
    assert reached == sorted(reached)


def test_several_files_replay_as_one_stream_in_event_time_order(tmp_path: Path) -> None:
    gates = tmp_path / "gates.csv"
    calls = tmp_path / "calls.csv"
    pl.DataFrame(
        {
            "ts": [f"2026-11-20T08:{m:02d}:00+08:00" for m in (0, 1, 11, 12)],
            "gate_id": "G1",
            "direction": "in",
        }
    ).write_csv(gates)
    pl.DataFrame(
        {"call_id": ["c1", "c2"], "received_at": ["2026-11-20T08:06:00+08:00"] * 2}
    ).write_csv(calls)
    source = FileSource([ReplayFile(p, "Asia/Shanghai", 100) for p in (calls, gates)])
    assert source.list_parts() == ["merged:calls.csv,gates.csv"]
    part = source.build_part("in", source.list_parts()[0], None)
    order = []
    while True:
        try:
            (batch,) = part.next_batch()
        except StopIteration:
            break
        order.append((batch.source, batch.first_row, batch.frame.height, batch.span_ms is not None))
    assert order == [
        ("file:gates.csv", 0, 2, True),  # 08:00-08:05
        ("file:calls.csv", 0, 2, True),  # 08:05-08:10
        ("file:gates.csv", 2, 2, True),  # 08:10-08:15
    ]
    # resumes after the last batch emitted
    (resumed,) = source.build_part("in", source.list_parts()[0], 2).next_batch()
    assert resumed.first_row == 2
