"""The demo's replay: three signals in event-time order, as batches that keep file positions."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import polars as pl
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main
from rich.console import Console

from app.demo import (
    ALERTS_SQL,
    DELIVERIES_SQL,
    BatchSource,
    Signal,
    claim_for_demo,
    replay_settings,
    run_demo,
    time_slices,
    who_was_told,
)
from crowdwatch.isotime import epoch_ms
from crowdwatch.risk.outbox import DELIVERY_SCHEMA
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.warehouse.client import Warehouse, WarehouseError
from tests.demo_day import DemoWarehouse

TZ = "Asia/Shanghai"


def signal(name: str, kind: str, times: list[str | None]) -> Signal:
    frame = pl.DataFrame(
        {"ts": times, "n": range(len(times))}, schema={"ts": pl.String, "n": pl.Int64}
    )
    return Signal(Path(name), kind, frame, frame["ts"])  # type: ignore[arg-type]


def test_batches_follow_event_time_across_signals_and_keep_positions() -> None:
    gates = signal(
        "gates.csv",
        "passage",
        [
            "2026-11-20T08:00:10+08:00",
            "2026-11-20T08:00:50+08:00",
            "2026-11-20T08:02:00+08:00",
            "not a time",
            None,
        ],
    )
    video = signal(
        "video.jsonl", "video", ["2026-11-20T08:00:30+08:00", "2026-11-20T08:01:30+08:00"]
    )
    batches = time_slices([gates, video], TZ, slice_s=60)
    order = [(b.source, b.first_row, b.frame["n"].to_list()) for b in batches]
    assert order == [
        ("file:gates.csv", 0, [0, 1]),  # 08:00 slice: gates first, then video
        ("file:video.jsonl", 0, [0, 1]),  # 08:00 and 08:01: nothing of another file between
        ("file:gates.csv", 2, [2, 3, 4]),  # 08:02, with the records whose time is broken
    ]
    # no record is lost or repeated, and every batch is one kind
    assert sum(b.frame.height for b in batches) == 7
    assert {b.kind for b in batches if b.source == "file:video.jsonl"} == {"video"}
    # the same input gives the same batches (so a second run stores a rejected row once)
    again = time_slices([gates, video], TZ, slice_s=60)
    assert [(b.source, b.first_row, b.frame.height) for b in again] == [
        (b.source, b.first_row, b.frame.height) for b in batches
    ]
    starts = [int(epoch_ms(b.frame["ts"], TZ).drop_nulls().min() or 0) // 60_000 for b in batches]
    assert starts == sorted(starts)


def test_batch_source_emits_the_batches_in_order() -> None:
    gates = signal("g.csv", "passage", [f"2026-11-20T08:0{i}:00+08:00" for i in (0, 2, 4)])
    video = signal("v.jsonl", "video", [f"2026-11-20T08:0{i}:00+08:00" for i in (1, 3)])
    batches = time_slices([gates, video], TZ, slice_s=60)
    flow = Dataflow("batches")
    out: list[tuple[str, int | None]] = []
    stream = op.input("in", flow, BatchSource(batches))
    op.output("out", op.map("first", stream, lambda b: (b.kind, b.first_row)), TestingSink(out))
    run_main(flow)
    assert out == [("passage", 0), ("video", 0), ("passage", 1), ("video", 1), ("passage", 2)]


def test_the_timeline_says_who_was_reached_and_the_example_site_reaches_nobody(
    demo_day: DemoWarehouse,
) -> None:
    start, end = demo_day.site.day_bounds(demo_day.demo.day)
    alerts = demo_day.warehouse.query(ALERTS_SQL, {"start": start, "end": end})
    told = who_was_told(demo_day.warehouse.query(DELIVERIES_SQL, {"start": start, "end": end}))
    red = alerts.filter(pl.col("level") == "red").row(0, named=True)
    assert told[(red["alert_id"], red["event"], red["ts"])] == (
        "no contact: local police, station master, street office, transit police"
    )
    # every event routed to someone has its line; blue calls no one and has none
    routed = alerts.filter(pl.col("level") != "blue")
    assert {(r["alert_id"], r["event"], r["ts"]) for r in routed.iter_rows(named=True)} <= set(told)
    assert all(text.startswith("no contact: ") for text in told.values())


def test_who_was_told_puts_the_reached_first_and_groups_the_rest_by_why() -> None:
    at = datetime(2026, 11, 20, 13, 45, tzinfo=UTC)
    rows = pl.DataFrame(
        {
            "alert_id": ["a"] * 5,
            "event": ["escalated"] * 5,
            "ts": [at] * 5,
            # the transit police reached on two channels: named once
            "role": [
                "local_police",
                "station_master",
                "street_office",
                "transit_police",
                "transit_police",
            ],
            "status": ["no_contact", "retry", "no_contact", "delivered", "delivered"],
        }
    )
    assert who_was_told(rows) == {
        ("a", "escalated", at): (
            "reached: transit police; no contact: local police, street office; "
            "still trying: station master"
        )
    }


def test_the_timeline_shows_the_replays_decisions_not_a_response_loops_deliveries(
    warehouse: Warehouse,
) -> None:
    # a second demo run: the replay's decision (no contact) and, for the same alert event,
    # the first run's response loop delivering to its simulated station master
    at = datetime(2026, 11, 20, 13, 45, tzinfo=UTC)
    event = {
        **dict.fromkeys(DELIVERY_SCHEMA),
        **{"alert_id": "a", "event": "escalated", "kind": "big_crowd", "level": "red"},
        **{"event_ts": at, "attempted_at": at, "role": "station_master", "channel": "webhook"},
        **{"idempotency_key": "k", "queued_ms": 0, "error": ""},
    }
    rows = [
        {**event, "recipient": "", "attempt": 0, "status": "no_contact"},
        {**event, "recipient": "王站长", "attempt": 1, "status": "delivered"},
    ]
    warehouse.insert("alert_deliveries", pl.DataFrame(rows, schema=DELIVERY_SCHEMA))
    window = {"start": at - timedelta(hours=1), "end": at + timedelta(hours=1)}
    told = who_was_told(warehouse.query(DELIVERIES_SQL, window))
    assert list(told.values()) == ["no contact: station master"]


def test_a_simulated_day_pages_nobody_whatever_the_notify_setting(settings: Settings) -> None:
    live = settings.model_copy(update={"notify": "on"})
    assert live.notify_mode == "on"
    assert replay_settings(live).notify_mode == "log"


def test_the_demo_refuses_a_database_with_data_no_demo_wrote(
    settings: Settings, warehouse: Warehouse
) -> None:
    # a deployment's database: a zone's metrics, and no day of a demo
    warehouse.command("INSERT INTO zone_metrics (zone_id, ts) VALUES ('CTR-concourse', now64(3))")
    with pytest.raises(WarehouseError, match=r"alerts that no demo wrote \(rows: 1\)"):
        run_demo(settings, Console(file=io.StringIO()), day=date(2026, 11, 20))
    assert warehouse.query("SELECT count() AS n FROM alerts")["n"][0] == 0
    assert warehouse.query("SELECT count() AS n FROM demo_days")["n"][0] == 0
    # a database the demo wrote before takes it again
    site = load_site(settings.site_file)
    warehouse.command("TRUNCATE TABLE zone_metrics")
    claim_for_demo(warehouse, settings, site, date(2026, 11, 20))
    warehouse.command("INSERT INTO zone_metrics (zone_id, ts) VALUES ('CTR-concourse', now64(3))")
    claim_for_demo(warehouse, settings, site, date(2026, 11, 21))
    days = warehouse.query("SELECT day FROM demo_days FINAL ORDER BY day")["day"].to_list()
    assert days == [date(2026, 11, 20), date(2026, 11, 21)]
    # and so does one a demo wrote before demo_days: its gate file's rejected records say so
    warehouse.command("TRUNCATE TABLE demo_days")
    with pytest.raises(WarehouseError):
        claim_for_demo(warehouse, settings, site, date(2026, 11, 22))
    warehouse.command(
        "INSERT INTO rejected_events (received_at, source, position, reason, payload) "
        "VALUES (now64(3), 'file:gate_passages_2026-11-13.csv', 'row 7', 'ts missing', '')"
    )
    claim_for_demo(warehouse, settings, site, date(2026, 11, 22))
