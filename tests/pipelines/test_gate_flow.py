"""The gate pipeline end to end: Bytewax run_main (and a 2-worker run) into the embedded engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from bytewax.run import cli_main
from bytewax.testing import TestingSink, TestingSource, run_main

from crowdwatch.batches import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.sources.files import FileSource, ReplayFile
from crowdwatch.warehouse.client import TableRows, Warehouse
from pipelines.gate_flow import build
from tests.conftest import HANGZHOU_SITE

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def passages(
    n: int, start: datetime = T0, gate: str = "RVS-G01", step_s: float = 0.5
) -> pl.DataFrame:
    """``n`` alternating in/out passages at one gate, ``step_s`` apart."""
    return pl.DataFrame(
        {
            "ts": [(start + timedelta(seconds=i * step_s)).isoformat() for i in range(n)],
            "gate_id": [gate] * n,
            "direction": ["in" if i % 3 else "out" for i in range(n)],
        }
    )


def batch(frame: pl.DataFrame, source: str = "test") -> RawBatch:
    return RawBatch(source, "passage", frame)


def run_into(warehouse_settings: Settings, batches: list[RawBatch]) -> None:
    run_main(build(warehouse_settings, source=TestingSource(batches)))


def totals(warehouse: Warehouse, scope: str = "zone") -> pl.DataFrame:
    return warehouse.query(
        "SELECT zone_id, sum(entries) AS entries, sum(exits) AS exits FROM zone_metrics FINAL "
        "WHERE scope = {scope:String} GROUP BY zone_id ORDER BY zone_id",
        {"scope": scope},
    )


def test_rows_reach_the_sink_with_counts_and_occupancy(settings: Settings) -> None:
    out: list[TableRows] = []
    frame = passages(240)  # two minutes at RVS, 160 in and 80 out
    run_main(build(settings, source=TestingSource([batch(frame)]), sink=TestingSink(out)))
    metrics = pl.concat([f for table, f in out if table == "zone_metrics"])
    zone = metrics.filter(pl.col("scope") == "zone").sort("ts")
    assert zone["zone_id"].unique().to_list() == ["RVS-concourse"]
    assert zone["entries"].sum() == 160 and zone["exits"].sum() == 80
    # dwell model 8 min entries + 3 min exits: after two minutes everyone is still "inside"
    assert zone["occupancy"].to_list()[-1] == 240
    assert zone["capacity_use"].to_list()[-1] == pytest.approx(240 / 1375)
    station = metrics.filter(pl.col("scope") == "station")
    assert station["zone_id"].unique().to_list() == ["RVS"]
    assert not [t for t, _ in out if t == "rejected_events"]


def test_malformed_records_are_rejected_and_every_good_one_counted(
    settings: Settings, warehouse: Warehouse
) -> None:
    good = passages(100_000, step_s=0.05)
    bad = pl.DataFrame(
        {
            "ts": ["not a time", "2026-05-04T08:00:00Z", "2026-05-04T08:00:00Z", None] * 250,
            "gate_id": ["RVS-G01", "NO-SUCH-GATE", "RVS-G01", "RVS-G01"] * 250,
            "direction": ["in", "in", "upwards", "out"] * 250,
        }
    )
    # make each bad record distinct, as a real feed's would be
    bad = (
        bad.with_row_index("i")
        .with_columns(
            pl.col("gate_id")
            + pl.when(pl.col("i") % 4 == 1).then(pl.col("i").cast(pl.String)).otherwise(pl.lit("")),
            pl.when(pl.col("i") % 4 == 2)
            .then(pl.lit("up") + pl.col("i").cast(pl.String))
            .otherwise("direction")
            .alias("direction"),
            pl.when(pl.col("i") % 4 == 0)
            .then(pl.lit("bad ") + pl.col("i").cast(pl.String))
            .otherwise("ts")
            .alias("ts"),
        )
        .drop("i")
    )
    mixed = pl.concat([good, bad]).sample(fraction=1.0, shuffle=True, seed=7)
    batches = [batch(mixed.slice(i, 10_000)) for i in range(0, mixed.height, 10_000)]
    run_into(settings, batches)

    expected_in = int((good["direction"] == "in").sum())
    got = totals(warehouse)
    assert got.to_dicts() == [
        {"zone_id": "RVS-concourse", "entries": expected_in, "exits": 100_000 - expected_in}
    ]
    rejected = warehouse.query(
        "SELECT reason, count() AS n FROM rejected_events FINAL GROUP BY reason ORDER BY reason"
    )
    assert rejected["n"].sum() == 1000
    reasons = rejected["reason"].to_list()
    assert any(r.startswith("unknown gate 'NO-SUCH-GATE") for r in reasons)
    assert any(r.startswith("ts 'bad ") for r in reasons)
    assert any(r.startswith("direction 'up") for r in reasons)
    assert "ts missing" in reasons


def test_a_late_record_corrects_its_window(settings: Settings, warehouse: Warehouse) -> None:
    on_time = passages(450, step_s=2.0)  # 08:00 to 08:15
    late = passages(7, start=T0 + timedelta(minutes=5, seconds=10), step_s=1.0)  # 08:05 window
    run_into(settings, [batch(on_time), batch(late)])  # arrives at 08:15: 10 minutes late
    window = warehouse.query(
        "SELECT entries, exits, occupancy FROM zone_metrics FINAL "
        "WHERE zone_id = 'RVS-concourse' AND ts = {ts:DateTime64(3)}",
        {"ts": T0 + timedelta(minutes=5)},
    ).to_dicts()
    both = pl.concat([on_time, late])
    in_window = both.filter(pl.col("ts").str.slice(0, 16) == "2026-05-04T08:05")
    expected_in = int((in_window["direction"] == "in").sum())
    assert window == [
        {
            "entries": expected_in,
            "exits": in_window.height - expected_in,
            "occupancy": window[0]["occupancy"],
        }
    ]
    assert in_window.height == 30 + 7
    # and the later windows' occupancy moved with it: 08:12 counts entries since 08:05
    later = warehouse.query(
        "SELECT occupancy FROM zone_metrics FINAL WHERE zone_id = 'RVS-concourse' "
        "AND ts = {ts:DateTime64(3)}",
        {"ts": T0 + timedelta(minutes=12)},
    )["occupancy"][0]
    run_alone = Settings(
        **{**settings.model_dump(), "clickhouse_database": settings.clickhouse_database + "_b"}
    )
    with Warehouse.connect(run_alone.dsn(), run_alone.clickhouse_database) as other:
        other.migrate()
        run_into(run_alone, [batch(on_time)])
        before = other.query(
            "SELECT occupancy FROM zone_metrics FINAL WHERE zone_id = 'RVS-concourse' "
            "AND ts = {ts:DateTime64(3)}",
            {"ts": T0 + timedelta(minutes=12)},
        )["occupancy"][0]
    late_entries = int((late["direction"] == "in").sum())
    assert later == before + late_entries


def test_records_beyond_the_late_horizon_are_rejected_not_dropped(engine_dir: Path) -> None:
    settings = Settings(data_dir=engine_dir, clickhouse_database="late_horizon", late_horizon_s=600)
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_into(
            settings, [batch(passages(100, start=T0 + timedelta(hours=1))), batch(passages(3))]
        )
        rejected = warehouse.query("SELECT reason, payload FROM rejected_events FINAL")
        assert rejected.height == 1
        assert "late horizon of 600 s" in rejected["reason"][0]
        assert '"entries":2' in rejected["payload"][0] and '"exits":1' in rejected["payload"][0]


def test_balance_zone_occupancy_and_gate_direction(settings: Settings) -> None:
    out: list[TableRows] = []
    ins = passages(50, gate="WLK-G01", step_s=1.0).with_columns(direction=pl.lit("in"))
    outs = passages(80, start=T0 + timedelta(minutes=2), gate="WLK-G03", step_s=1.0).with_columns(
        direction=pl.lit("out")
    )
    run_main(
        build(settings, source=TestingSource([batch(ins), batch(outs)]), sink=TestingSink(out))
    )
    rows = pl.concat([f for t, f in out if t == "zone_metrics"])
    latest = (
        rows.filter(pl.col("zone_id") == "WLK-lakeside")
        .sort("version")
        .unique("ts", keep="last")
        .sort("ts")
    )
    # 50 in, then 80 out: the balance never goes below zero
    assert latest["occupancy"].to_list()[0] == 50
    assert latest["occupancy"].to_list()[-1] == 0


def test_hangzhou_daily_totals_equal_the_csv_and_replay_twice_changes_nothing(
    hangzhou: Path, engine_dir: Path
) -> None:
    settings = Settings(
        data_dir=engine_dir, site_file=HANGZHOU_SITE, clickhouse_database="hangzhou", window_s=600
    )
    source = lambda: FileSource([ReplayFile(hangzhou, "Asia/Shanghai", 50_000)])  # noqa: E731
    expected = (
        pl.read_csv(hangzhou)
        .with_columns(
            ("HZ" + pl.col("station_idx").cast(pl.String).str.zfill(2)).alias("station_id"),
            pl.col("timestamp").str.slice(0, 10).alias("day"),
        )
        .group_by("station_id", "day")
        .agg(pl.col("inflow").sum().alias("entries"), pl.col("outflow").sum().alias("exits"))
        .sort("station_id", "day")
    )
    daily_sql = (
        "SELECT zone_id AS station_id, toString(toDate(ts, 'Asia/Shanghai')) AS day, "
        "toInt64(sum(entries)) AS entries, toInt64(sum(exits)) AS exits "
        "FROM zone_metrics FINAL WHERE scope = 'station' GROUP BY station_id, day "
        "ORDER BY station_id, day"
    )
    with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
        warehouse.migrate()
        run_main(build(settings, source=source()))
        first = warehouse.query(daily_sql)
        assert first.to_dicts() == expected.to_dicts()
        run_main(build(settings, source=source()))
        assert warehouse.query(daily_sql).to_dicts() == expected.to_dicts()
        assert warehouse.query("SELECT count() AS n FROM rejected_events")["n"][0] == 0


def test_two_workers_give_the_same_result_as_one(engine_dir: Path, tmp_path: Path) -> None:
    frames = [
        passages(3_000, gate=g, step_s=0.7) for g in ("RVS-G01", "NPK-G02", "CTR-G03", "WLK-G01")
    ]
    feed = pl.concat(frames).with_columns(
        pl.when(pl.col("gate_id") == "WLK-G01")
        .then(pl.lit("in"))
        .otherwise("direction")
        .alias("direction")
    )
    files = []
    for i in range(2):
        path = tmp_path / f"part{i}.csv"
        feed.slice(i * feed.height // 2, feed.height // 2).write_csv(path)
        files.append(path)
    results = []
    for workers in (1, 2):
        settings = Settings(data_dir=engine_dir, clickhouse_database=f"workers_{workers}")
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            source = FileSource([ReplayFile(p, "Asia/Shanghai", 1_000) for p in files])
            cli_main(build(settings, source=source), workers_per_process=workers)
            results.append(
                warehouse.query(
                    "SELECT zone_id, ts, entries, exits, occupancy FROM zone_metrics FINAL "
                    "ORDER BY zone_id, ts"
                )
            )
    assert results[0].height > 0
    assert results[0].equals(results[1])
