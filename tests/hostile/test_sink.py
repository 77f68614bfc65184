"""Hostile input at the warehouse: a poison row never stalls a table (issue 15, case 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from crowdwatch.gates.occupancy import METRIC_SCHEMA
from crowdwatch.settings import Settings
from crowdwatch.warehouse.client import Warehouse, WarehouseSink


def metric_rows(days: int, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> pl.DataFrame:
    """One zone_metrics row per day for ``days`` days: as many daily partitions."""
    return pl.DataFrame(
        {
            "zone_id": "RVS-concourse",
            "station_id": "RVS",
            "scope": "zone",
            "ts": [start + timedelta(days=d) for d in range(days)],
            "window_s": 60,
            "entries": 1,
            "exits": 0,
            "inflow_per_min": 1.0,
            "outflow_per_min": 0.0,
            "occupancy": 1,
            "capacity": 100,
            "capacity_use": 0.01,
            "density": 0.01,
            "version": 1,
        }
    ).cast(METRIC_SCHEMA)


def sink_partition(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    sink = WarehouseSink(
        settings.dsn(), settings.clickhouse_database, buffer_dir=tmp_path / "buffer"
    )
    return sink.build("warehouse", 0, 1)


def test_case_2_a_batch_over_too_many_partitions_is_written_in_parts(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    part = sink_partition(settings, tmp_path)
    part.write_batch([("zone_metrics", metric_rows(400))])  # ClickHouse takes 100 per insert
    part.write_batch([("zone_metrics", metric_rows(1, datetime(2027, 6, 1, tzinfo=UTC)))])
    assert part.outage.held() == 0  # nothing waits on disk
    stored = warehouse.query("SELECT count() AS n FROM zone_metrics FINAL")["n"][0]
    assert stored == 401
    assert warehouse.query("SELECT count() AS n FROM rejected_events")["n"][0] == 0
    part.close()


def test_case_2_a_poison_row_goes_to_rejected_events_and_the_rest_is_written(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    rows = metric_rows(6).cast({"entries": pl.String})
    poison = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("call 138 1234 5678"))
        .otherwise(pl.col("entries"))
        .alias("entries")
    )
    part = sink_partition(settings, tmp_path)
    part.write_batch([("zone_metrics", poison)])
    part.write_batch([("zone_metrics", metric_rows(2, datetime(2026, 3, 1, tzinfo=UTC)))])
    assert part.outage.held() == 0
    days = warehouse.query("SELECT toDate(ts) AS day FROM zone_metrics FINAL ORDER BY ts")["day"]
    assert [d.isoformat() for d in days] == [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
        "2026-01-05",
        "2026-01-06",
        "2026-03-01",
        "2026-03-02",
    ]
    refused = warehouse.query("SELECT source, reason, payload FROM rejected_events FINAL")
    assert refused["source"].to_list() == ["warehouse:zone_metrics"]
    assert refused["reason"].to_list() == ["the warehouse refused the row (ClickHouse error 6)"]
    assert '"entries":"call [phone]"' in refused["payload"][0]  # scrubbed like every reject
    part.close()


def test_an_outage_is_still_buffered_and_sent_later(
    settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    warehouse.command("RENAME TABLE zone_metrics TO zone_metrics_away")
    part = sink_partition(settings, tmp_path)
    part.write_batch([("zone_metrics", metric_rows(3))])
    assert part.outage.held() == 1  # a missing table is an outage, not a poison row
    warehouse.command("RENAME TABLE zone_metrics_away TO zone_metrics")
    part.outage.flush(force=True)
    assert part.outage.held() == 0
    assert warehouse.query("SELECT count() AS n FROM zone_metrics FINAL")["n"][0] == 3
    part.close()
