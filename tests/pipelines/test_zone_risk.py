"""The risk engine end to end: a simulated surge, its levels, and alerts over real HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import yaml
from bytewax.testing import TestingSink, TestingSource, run_main

from app.simulate import default_surge, simulate_day
from crowdwatch.batches import RawBatch
from crowdwatch.risk.engine import StationRisk
from crowdwatch.risk.notify import AlertEvent, AlertReceiver
from crowdwatch.settings import Settings
from crowdwatch.site import load_site
from crowdwatch.sources.files import event_span
from crowdwatch.warehouse.client import TableRows, Warehouse
from dashboards.macros import expand
from pipelines.zone_risk import Reading, RiskState, build
from tests.conftest import EXAMPLE_SITE
from tests.dashboards.test_dashboards import sql_of

ROLES = ("station_master", "transit_police", "local_police", "street_office")


def surge_day(day: date = date(2026, 11, 20)) -> list[RawBatch]:
    records = simulate_day(load_site(EXAMPLE_SITE), day, seed=0, surge=default_surge())
    span = event_span("passage", records, "Asia/Shanghai")  # a replay of a recorded day
    return [
        RawBatch("sim", "passage", records.slice(i, 20_000), i, span_ms=span)
        for i in range(0, records.height, 20_000)
    ]


def site_with_contacts(tmp_path: Path, receiver: AlertReceiver) -> Path:
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    std = next(s for s in data["stations"] if s["id"] == "STD")
    std["contacts"] = {
        role: {"name": role, "webhook": receiver.url(f"/std/{role}")} for role in ROLES
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_surge_gives_exactly_the_expected_levels_and_alerts(
    tmp_path: Path, engine_dir: Path
) -> None:
    rows: list[TableRows] = []
    alerts: list[AlertEvent] = []
    settings = Settings(data_dir=engine_dir)
    run_main(
        build(
            settings,
            source=TestingSource(surge_day()),
            sink=TestingSink(rows),
            alert_sink=TestingSink(alerts),
        )
    )
    std = [(e.event, e.level, e.previous_level) for e in alerts if e.zone_id == "STD-concourse"]
    assert std == [
        ("opened", "blue", None),
        ("escalated", "yellow", "blue"),
        ("escalated", "orange", "yellow"),
        ("escalated", "red", "orange"),
        ("de-escalated", "orange", "red"),
        ("de-escalated", "yellow", "orange"),
        ("de-escalated", "blue", "yellow"),
        ("resolved", "blue", "blue"),
    ]
    assert len({e.alert_id for e in alerts if e.zone_id == "STD-concourse"}) == 1
    # the scenic spot peaks at 65 %: blue, then calm; no other zone reaches 60 %
    assert [(e.zone_id, e.event) for e in alerts if e.zone_id != "STD-concourse"] == [
        ("WLK-lakeside", "opened"),
        ("WLK-lakeside", "resolved"),
    ]
    red = next(e for e in alerts if e.level == "red" and e.event == "escalated")
    local = (
        pl.Series([red.ts_ms]).cast(pl.Datetime("ms", "UTC")).dt.convert_time_zone("Asia/Shanghai")
    )
    assert local.dt.strftime("%H:%M")[0] >= "21:30"  # the concert lets out at 21:30
    states = pl.concat([f for t, f in rows if t == "zone_state"])
    at_red = states.filter((pl.col("zone_id") == "STD-concourse") & (pl.col("level") == "red"))
    assert at_red["capacity_share"].max() > 1.3 and set(at_red["level_of_service"]) <= {
        "D",
        "E",
        "F",
    }


def test_alerts_reach_the_right_roles_once_each_over_http(tmp_path: Path, engine_dir: Path) -> None:
    with AlertReceiver() as receiver:
        for role in ROLES:
            receiver.fail(f"/std/{role}", times=1)  # every receiver fails its first request
        settings = Settings(
            data_dir=engine_dir,
            site_file=site_with_contacts(tmp_path, receiver),
            clickhouse_database="risk_http",
            notify="on",  # a replay of a past day: sent only when told to, and however old
            notify_max_age_s=1e9,
        )
        with Warehouse.connect(settings.dsn(), settings.clickhouse_database) as warehouse:
            warehouse.migrate()
            run_main(build(settings, source=TestingSource(surge_day())))
            stored = warehouse.query(
                "SELECT event, level FROM alerts FINAL WHERE zone_id = 'STD-concourse' ORDER BY ts"
            )
            station = warehouse.query(
                "SELECT level, count() AS ticks FROM station_state WHERE station_id = 'STD' "
                "GROUP BY level ORDER BY level"
            )
            zone = warehouse.query(
                "SELECT ifNull(level, 'none') AS level, count() AS ticks FROM zone_state FINAL "
                "WHERE zone_id = 'STD-concourse' GROUP BY level ORDER BY level"
            )
            log = warehouse.query(
                "SELECT attempt, status, http_status FROM alert_deliveries FINAL "
                "WHERE role = 'local_police' ORDER BY event_ts, attempt"
            )
            latency = warehouse.query(
                expand(
                    sql_of("crowdwatch-pipeline", "Alert delivery latency"),
                    start=datetime(2026, 11, 20, tzinfo=UTC),
                    end=datetime(2026, 11, 21, tzinfo=UTC),
                    variables={},
                )
            )
        got = {
            role: [(e["event"], e["level"]) for e in receiver.received(f"/std/{role}")]
            for role in ROLES
        }
    assert stored.height == 8
    # every attempt is in the delivery log: the first to each role failed, the retry went out
    assert log.rows() == [(1, "retry", 503), (2, "delivered", 200), (1, "delivered", 200)]
    # the dashboard's latency panel: a retry after a backoff of at least 0.1 s is the slowest
    assert latency.height > 0 and latency["max_s"].max() >= 0.1  # type: ignore[operator]
    # the station is as bad as its worst zone: the concourse (its plaza has no video here)
    assert station.rows() == zone.rows()
    assert got["station_master"] == [
        ("escalated", "yellow"),
        ("escalated", "orange"),
        ("escalated", "red"),
        ("de-escalated", "orange"),
        ("de-escalated", "yellow"),
        ("de-escalated", "blue"),
    ]
    assert got["transit_police"] == [
        ("escalated", "orange"),
        ("escalated", "red"),
        ("de-escalated", "orange"),
        ("de-escalated", "yellow"),
    ]
    assert (
        got["local_police"]
        == got["street_office"]
        == [("escalated", "red"), ("de-escalated", "orange")]
    )


def test_an_escalation_is_decided_on_the_reading_not_at_the_next_tick() -> None:
    state = RiskState(StationRisk("STD", load_site(EXAMPLE_SITE)), tick_ms=10_000)
    states, events = state.advance([Reading("STD-concourse", 1_000, {"gate_occupancy": 100.0})])
    assert events == []
    states, events = state.advance([Reading("STD-concourse", 12_345, {"gate_occupancy": 1800.0})])
    assert [(e.event, e.level, e.ts_ms) for e in events] == [("opened", "red", 12_345)]
    assert [s.ts_ms for s in states if s.zone_id == "STD-concourse"] == [10_000]  # rows per tick


def std_state(**options: Any) -> RiskState:
    return RiskState(StationRisk("STD", load_site(EXAMPLE_SITE)), tick_ms=10_000, **options)


def gates(at_s: float, occupancy: float) -> Reading:
    return Reading("STD-concourse", int(at_s * 1000), {"gate_occupancy": occupancy}, "gates")


def video(at_s: float) -> Reading:
    return Reading("STD-plaza", int(at_s * 1000), {"video_headcount": 10.0}, "video")


def test_a_faster_source_is_held_until_the_slowest_passes_its_time() -> None:
    state = std_state()
    assert state.receive([video(60), gates(60, 100.0)], now_ms=0) != ([], [])
    # the gates cross at 120 s while the cameras are at 90 s: nothing is decided past 90 s
    assert state.receive([gates(120, 1800.0)], now_ms=0) == ([], [])
    states, events = state.receive([video(90)], now_ms=0)
    assert events == [] and max(s.ts_ms for s in states) == 90_000
    assert state.watermark(0) == 90_000
    # the cameras pass 120 s: the crossing is decided at its own time, the ticks before it saw
    # the old occupancy
    states, events = state.receive([video(125)], now_ms=0)
    assert [(e.event, e.level, e.ts_ms) for e in events] == [("opened", "red", 120_000)]
    concourse = {s.ts_ms: s.capacity_share for s in states if s.zone_id == "STD-concourse"}
    assert concourse[110_000] == 100 / 1750 and concourse[120_000] == 1800 / 1750


def test_in_a_replay_a_source_far_behind_the_others_is_stale_and_holds_nothing() -> None:
    state = std_state(replay_idle_ms=900_000)
    state.receive([video(0), gates(0, 100.0)], now_ms=0)
    # the cameras' input ended at 0 s; the gates go on: held while within 900 s of event time
    assert state.receive([gates(900, 1800.0)], now_ms=0)[1] == []
    assert state.stale(0) == []
    _, events = state.receive([gates(910, 1800.0)], now_ms=0)
    assert state.stale(0) == ["video"]
    assert [(e.event, e.ts_ms) for e in events] == [("opened", 900_000)]


def test_live_a_source_quiet_on_the_wall_clock_is_stale_and_held_readings_go() -> None:
    state = std_state(live=True, idle_ms=60_000)
    state.receive([video(0), gates(0, 100.0)], now_ms=1_000)
    assert state.receive([gates(30, 1800.0)], now_ms=20_000)[1] == []
    # the bound on waiting: the cameras' last reading was heard at 1 s
    assert state.next_idle_ms() == 61_001
    assert state.release(now_ms=60_000)[1] == []  # not idle yet
    _, events = state.release(now_ms=61_001)
    assert [(e.event, e.ts_ms) for e in events] == [("opened", 30_000)]
    assert state.stale(61_001) == ["video"]
    # the cameras come back: active again, and a reading behind the watermark is applied
    state.receive([video(20)], now_ms=62_000)
    assert state.stale(62_000) == []


def test_at_the_end_of_the_input_everything_held_is_decided() -> None:
    state = std_state()
    state.receive([video(0), gates(0, 100.0)], now_ms=0)
    assert state.receive([gates(60, 1800.0)], now_ms=0)[1] == []
    _, events = state.release(0, everything=True)
    assert [(e.event, e.ts_ms) for e in events] == [("opened", 60_000)]
    assert state.held == []


def test_a_day_after_today_replays_with_its_alerts() -> None:
    """Nothing caps event time at the wall clock: a future day's surge alerts as any day's."""
    future = datetime.now(UTC).date() + timedelta(days=400)
    alerts: list[AlertEvent] = []
    run_main(
        build(
            Settings(),
            source=TestingSource(surge_day(future)),
            sink=TestingSink([]),
            alert_sink=TestingSink(alerts),
        )
    )
    std = [(e.event, e.level) for e in alerts if e.zone_id == "STD-concourse"]
    assert ("escalated", "red") in std and std[-1] == ("resolved", "blue")
    red = next(e for e in alerts if e.level == "red")
    local = datetime.fromtimestamp(red.ts_ms / 1000, UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    assert local.date() == future and local.time() >= time(21, 30)


def plaza(at_s: float, headcount: float) -> Reading:
    return Reading("STD-plaza", int(at_s * 1000), {"video_headcount": headcount}, "video")


def camera_back_late(redecide_ms: int) -> tuple[RiskState, list[Any], list[AlertEvent]]:
    """The cameras stop at 0 s, the gates go on to 200 s, then the cameras' 150–190 s arrive.

    The plaza was full (12,600 of 12,000) at 150 s and nearly empty again by 190 s.
    """
    state = std_state(replay_idle_ms=30_000, redecide_ms=redecide_ms)
    state.receive([plaza(0, 10.0), gates(0, 100.0)], now_ms=0)
    for at_s in range(10, 201, 10):
        state.receive([gates(at_s, 100.0)], now_ms=0)
    assert state.stale(0) == ["video"] and state.last_tick_ms == 200_000
    states, events = state.receive([plaza(150, 12_600.0), plaza(190, 10.0)], now_ms=0)
    return state, states, events


def test_a_late_reading_re_decides_the_ticks_it_belongs_to() -> None:
    state, states, events = camera_back_late(redecide_ms=60_000)
    # the peak the cameras saw at 150 s is raised at its own time, though it is over by now
    assert [(e.event, e.zone_id, e.level, e.ts_ms) for e in events] == [
        ("opened", "STD-plaza", "red", 150_000)
    ]
    assert "late readings" in events[0].reason
    # the ticks from 150 s on are decided again with the cameras' readings
    plaza_rows = {s.ts_ms: s.headcount for s in states if s.zone_id == "STD-plaza"}
    assert plaza_rows == {
        150_000: 12_600.0,
        160_000: 12_600.0,
        170_000: 12_600.0,
        180_000: 12_600.0,
        190_000: 10.0,
        200_000: 10.0,
    }
    # the zone keeps the newest reading, and the red alert stays open until a calm hold
    assert state.risk.headcount_of("STD-plaza") == (10.0, "video")
    assert state.risk.levels["STD-plaza"].level == "red"


def test_a_reading_later_than_the_re_decide_window_is_applied_at_the_last_tick_only() -> None:
    _, states, events = camera_back_late(redecide_ms=20_000)
    # 50 s behind, older than every checkpoint: decided at 200 s, where the plaza is calm
    assert states == [] and events == []


def test_re_decide_state_stays_bounded_over_a_long_run() -> None:
    state = std_state(redecide_ms=60_000)
    for at_s in range(0, 3_600, 10):
        state.receive([plaza(at_s, 10.0), gates(at_s, 100.0)], now_ms=0)
    assert len(state.checkpoints) <= 3
    assert min(state.scores) > state.last_tick_ms - 2 * 60_000
    assert min(r.ts_ms for r in state.applied) > state.last_tick_ms - 2 * 60_000
