"""The sink's outage buffer: rows kept on disk while the warehouse fails, sent when it returns.

Failures are real: a table of the embedded engine renamed away (inserts fail with ClickHouse's
own "table does not exist"), and a server DSN pointing at a closed localhost port.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main

from app.simulate import simulate_day, write_records
from crowdwatch.batches import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.sources.files import read_records
from crowdwatch.warehouse.buffer import Backoff, BufferInUseError, DiskBuffer, OutageBuffer
from crowdwatch.warehouse.client import TableRows, Warehouse, WarehouseError, WarehouseSink
from pipelines.gate_flow import build

ROWS = 300


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No hold: these tests follow the sink's writes batch by batch."""
    return settings.model_copy(update={"sink_hold_s": 0})


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> list[RawBatch]:
    """A simulated morning at the example site with bad rows, as file batches of ``ROWS``."""
    from tests.conftest import EXAMPLE_SITE

    folder = tmp_path_factory.mktemp("feed")
    frame = simulate_day(load_site(EXAMPLE_SITE), date(2026, 11, 18), seed=5, scale=0.03)
    path = folder / "feed.csv"
    write_records(frame, path)
    kind, records = read_records(path)
    records = records.with_columns(
        pl.when(pl.int_range(pl.len()) % 997 == 5)
        .then(pl.lit("sideways"))
        .otherwise("direction")
        .alias("direction")
    )
    return [
        RawBatch("file:feed.csv", kind, records.slice(start, ROWS), start)
        for start in range(0, records.height, ROWS)
    ]


def expected_totals(settings: Settings, batches: list[RawBatch]) -> tuple[pl.DataFrame, int]:
    """Per-zone totals and the number of rejects of an in-memory run (no warehouse)."""
    out: list[TableRows] = []
    run_main(build(settings, source=TestingSource(batches), sink=TestingSink(out)))
    metrics = pl.concat([f for t, f in out if t == "zone_metrics"])
    newest = metrics.sort("version").unique(["zone_id", "ts"], keep="last")
    totals = (
        newest.group_by("zone_id")
        .agg(pl.sum("entries").cast(pl.Int64), pl.sum("exits").cast(pl.Int64), pl.len())
        .sort("zone_id")
    )
    rejects = pl.concat([f for t, f in out if t == "rejected_events"])
    return totals, rejects.select("source", "position").unique().height


def warehouse_totals(warehouse: Warehouse) -> tuple[pl.DataFrame, int]:
    totals = warehouse.query(
        "SELECT zone_id, toInt64(sum(entries)) AS entries, toInt64(sum(exits)) AS exits, "
        "toUInt32(count()) AS len FROM zone_metrics FINAL GROUP BY zone_id ORDER BY zone_id"
    )
    rejects = warehouse.query("SELECT count() AS n FROM rejected_events FINAL")["n"].item()
    return totals, int(rejects)


class _GatedPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, items: list[RawBatch], gate_at: int, opened: threading.Event) -> None:
        self.items, self.gate_at, self.opened, self.next = items, gate_at, opened, 0

    def next_batch(self) -> list[RawBatch]:
        if self.next >= len(self.items):
            raise StopIteration
        if self.next >= self.gate_at and not self.opened.is_set():
            return []  # hold here; the rest of the dataflow (the sink) keeps running
        self.next += 1
        return [self.items[self.next - 1]]

    def next_awake(self) -> datetime | None:
        waiting = self.next >= self.gate_at and not self.opened.is_set()
        return datetime.now(UTC) + timedelta(milliseconds=5) if waiting else None

    def snapshot(self) -> int:
        return self.next


class GatedSource(FixedPartitionedSource[RawBatch, int]):
    """Emits batches up to ``gate_at``, then waits until ``opened`` is set."""

    def __init__(self, items: list[RawBatch], gate_at: int, opened: threading.Event) -> None:
        self.items, self.gate_at, self.opened = items, gate_at, opened

    def list_parts(self) -> list[str]:
        return ["one"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _GatedPartition:
        return _GatedPartition(self.items, self.gate_at, self.opened)


def buffered_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.arrow"))


def wait_for(condition: Callable[[], object], what: str, limit_s: float = 120.0) -> None:
    """Wait for a condition of the system under test; fail (not hang) if it never comes."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen")
        time.sleep(0.01)


def test_an_outage_mid_run_loses_and_doubles_nothing(
    settings: Settings,
    warehouse: Warehouse,
    batches: list[RawBatch],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected, rejects = expected_totals(settings, batches)
    assert len(batches) > 20 and rejects > 0
    warehouse.command("RENAME TABLE zone_metrics TO zone_metrics_away")
    buffer_dir = tmp_path / "buffer"
    sink = WarehouseSink(settings.dsn(), settings.clickhouse_database, buffer_dir=buffer_dir)
    opened = threading.Event()
    flow = build(settings, source=GatedSource(batches, len(batches) // 2, opened), sink=sink)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_main(flow)
        except BaseException as exc:  # the test thread reports it
            failure.append(exc)

    caplog.set_level(logging.WARNING, logger="crowdwatch.warehouse.buffer")
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    # the first half of the stream went through the sink while zone_metrics was away
    wait_for(lambda: len(buffered_files(buffer_dir)) >= 5 or failure, "buffering")
    held = buffered_files(buffer_dir)
    assert any(p.name.endswith(".zone_metrics.arrow") for p in held)
    assert warehouse.query("SELECT count() AS n FROM zone_metrics_away")["n"].item() == 0
    warehouse.command("RENAME TABLE zone_metrics_away TO zone_metrics")
    opened.set()
    runner.join()
    assert not failure, failure

    assert buffered_files(buffer_dir) == []
    got, got_rejects = warehouse_totals(warehouse)
    assert got.equals(expected.select(got.columns).cast(got.schema))
    assert got_rejects == rejects
    messages = [r.getMessage() for r in caplog.records]
    assert any("takes no rows" in m and "zone_metrics" in m for m in messages)
    assert any("takes rows again" in m for m in messages)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rows_held_while_the_server_is_unreachable_are_sent_after_a_restart(
    settings: Settings, warehouse: Warehouse, batches: list[RawBatch], tmp_path: Path
) -> None:
    expected, rejects = expected_totals(settings, batches)
    buffer_dir = tmp_path / "buffer"
    unreachable = f"http://default:secret@127.0.0.1:{closed_port()}/crowdwatch"
    with pytest.raises(WarehouseError):
        Warehouse.connect(unreachable, "crowdwatch")  # nothing listens there
    down = WarehouseSink(unreachable, "crowdwatch", buffer_dir=buffer_dir)
    run_main(build(settings, source=TestingSource(batches), sink=down))
    # the run ended with everything on disk, in order, nothing in the warehouse
    held = buffered_files(buffer_dir)
    assert len(held) >= len(batches)
    assert warehouse.query("SELECT count() AS n FROM zone_metrics")["n"].item() == 0

    # the next run (another pipeline run, here with no input at all) sends them first
    up = WarehouseSink(settings.dsn(), settings.clickhouse_database, buffer_dir=buffer_dir)
    run_main(build(settings, source=TestingSource([]), sink=up))
    assert buffered_files(buffer_dir) == []
    got, got_rejects = warehouse_totals(warehouse)
    assert got.equals(expected.select(got.columns).cast(got.schema))
    assert got_rejects == rejects


def test_a_full_buffer_holds_the_writer_and_never_exceeds_its_cap(
    warehouse: Warehouse, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = [
        pl.DataFrame(
            {
                "received_at": [datetime(2026, 11, 18, tzinfo=UTC)] * 200,
                "source": "file:cap.csv",
                "position": [f"row {i * 200 + j}" for j in range(200)],
                "reason": "test",
                "payload": [f"payload {i} {j} " * 8 for j in range(200)],
            }
        ).with_columns(pl.col("received_at").cast(pl.Datetime("ms", "UTC")))
        for i in range(12)
    ]
    probe = DiskBuffer(tmp_path / "probe", 1 << 30)
    probe.append("rejected_events", frames[0])
    one = probe.size_bytes
    cap = int(one * 3.5)  # room for three batches
    buffer = DiskBuffer(tmp_path / "buffer", cap)
    sizes_when_full: list[int] = []

    class RestoreWhenFull(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is full" in record.getMessage():
                sizes_when_full.append(buffer.size_bytes)
                warehouse.command("RENAME TABLE rejected_events_away TO rejected_events")

    handler = RestoreWhenFull()
    logging.getLogger("crowdwatch.warehouse.buffer").addHandler(handler)
    try:
        warehouse.command("RENAME TABLE rejected_events TO rejected_events_away")
        writer = OutageBuffer(
            lambda table, frame: warehouse.insert(table, frame),
            buffer,
            outage=(Exception,),
            where="test",
            backoff=Backoff(initial_s=0.001, max_s=0.01),
        )
        for frame in frames:
            writer.write({"rejected_events": frame})
        writer.close()
    finally:
        logging.getLogger("crowdwatch.warehouse.buffer").removeHandler(handler)
    # the fourth batch found the buffer full: the writer held it until the table was back
    assert sizes_when_full and max(sizes_when_full) <= cap
    assert len(buffer) == 0 and not list((tmp_path / "buffer").iterdir())
    stored = warehouse.query("SELECT count() AS n FROM rejected_events FINAL")["n"].item()
    assert stored == 12 * 200


def test_the_disk_buffer_keeps_order_across_reopening_and_refuses_what_does_not_fit(
    tmp_path: Path,
) -> None:
    frames = [pl.DataFrame({"n": [i] * 100}) for i in range(4)]
    buffer = DiskBuffer(tmp_path, 1 << 20)
    for i, frame in enumerate(frames):
        assert buffer.append("zone_metrics" if i % 2 else "rejected_events", frame)
    (tmp_path / "000000000009.zone_metrics.arrow.tmp").write_bytes(b"cut short")
    with pytest.raises(BufferInUseError, match="CROWDWATCH_DATA_DIR"):
        DiskBuffer(tmp_path, 1 << 20)  # one writer at a time
    buffer.close()
    again = DiskBuffer(tmp_path, 1 << 20)
    assert [again.read(e)["n"][0] for e in again.pending()] == [0, 1, 2, 3]
    assert [again.read(e)["n"][0] for e in again.pending("zone_metrics")] == [1, 3]
    assert not list(tmp_path.glob("*.tmp"))  # the torn write is gone
    again.remove(again.pending()[0])
    assert again.append("calls", frames[0])
    assert [e.seq for e in again.pending()] == [1, 2, 3, 4]
    small = DiskBuffer(tmp_path / "small", again.size_bytes // 4)
    assert small.append("calls", frames[0])
    assert not small.append("calls", frames[1])  # the cap holds; nothing half-written
    assert len(small) == 1 and len(list((tmp_path / "small").iterdir())) == 1
    with pytest.raises(ValueError, match="table name"):
        small.append("calls; DROP", frames[0])
