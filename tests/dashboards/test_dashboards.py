"""Dashboards: the committed JSON is current, and every panel query runs on the real engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from crowdwatch.warehouse.client import Warehouse
from dashboards.build import FOLDER, dashboards, render
from dashboards.macros import expand
from tests.demo_day import ZONE, DemoWarehouse

VARIABLES = {"station": "STD", "zone": ZONE}
WALL_CLOCK = {"crowdwatch-pipeline"}
"""Dashboards whose time axis is when rows were written, not event time."""
DELIVERY_PANELS = {
    "Alert deliveries not made",
    "Alert events not delivered",
    "Alert delivery latency",
}
"""Panels of the pipeline dashboard that select alert events by their own (event) time."""

RESPONSE_TIMES = ["role", "station_id", "level", "n", "p50_s", "p90_s"]
RESPONSE = "crowdwatch-response"
"""Read from alert_actions, which the demo day's replay (log mode) does not fill: the response
loop's test (tests/app/test_response_demo.py) runs every panel of it on real actions."""

# The columns each target must return, by (dashboard uid, panel title, refId).
EXPECTED: dict[tuple[str, str, str], list[str]] = {
    ("crowdwatch-overview", "People in the network", "A"): ["people"],
    ("crowdwatch-overview", "Zones with a warning", "A"): ["zones"],
    ("crowdwatch-overview", "Alerts open", "A"): ["alerts"],
    ("crowdwatch-overview", "Open alerts", "A"): [
        "alert_id",
        "zone_id",
        "station_id",
        "kind",
        "level",
        "opened",
        "updated",
        "reason",
    ],
    ("crowdwatch-overview", "Cameras online", "A"): ["online_rate", "working_rate"],
    ("crowdwatch-overview", "Zones nearest to capacity", "A"): [
        "zone_id",
        "name",
        "station_id",
        "headcount",
        "capacity",
        "capacity_share",
        "level",
        "updated",
    ],
    ("crowdwatch-overview", "Level per station", "A"): ["time", "station_id", "level_rank"],
    ("crowdwatch-zone", "Headcount against capacity and forecast", "A"): [
        "time",
        "headcount",
        "capacity",
    ],
    ("crowdwatch-zone", "Headcount against capacity and forecast", "B"): [
        "time",
        "forecast",
        "forecast_lower",
        "forecast_upper",
    ],
    ("crowdwatch-zone", "Density", "A"): ["time", "density"],
    ("crowdwatch-zone", "Level of service and warning level", "A"): [
        "time",
        "level_of_service",
        "level",
    ],
    ("crowdwatch-zone", "Inflow and outflow", "A"): ["time", "inflow", "outflow"],
    ("crowdwatch-zone", "Anomaly scores", "A"): [
        "time",
        "anomaly_score",
        "surge_score",
        "burst_score",
    ],
    ("crowdwatch-zone", "Alerts", "A"): [
        "ts",
        "event",
        "level",
        "previous_level",
        "kind",
        "reason",
        "alert_id",
    ],
    ("crowdwatch-overview", "Zones on the map", "A"): [
        "zone_id",
        "name",
        "station_id",
        "lat",
        "lon",
        "headcount",
        "capacity_share",
        "level_rank",
    ],
    ("crowdwatch-overview", "Peak share of capacity per zone, hourly", "A"): [
        "time",
        "zone_id",
        "capacity_share",
    ],
    ("crowdwatch-zone", "110 calls nearby", "A"): [
        "received_at",
        "group",
        "category_text",
        "distance_m",
        "in_zone",
        "district",
    ],
    ("crowdwatch-zone", "annotation: Alerts", "Anno"): ["time", "text", "tags"],
    ("crowdwatch-calls", "Calls", "A"): ["calls", "crowd_relevant"],
    ("crowdwatch-calls", "Places with a burst", "A"): ["zones", "stations"],
    ("crowdwatch-calls", "Calls by group", "A"): ["time", "group", "calls"],
    ("crowdwatch-calls", "Calls by zone", "A"): ["time", "zone_id", "calls"],
    ("crowdwatch-calls", "Burst scores", "A"): ["time", "place", "score"],
    ("crowdwatch-calls", "Bursts", "A"): [
        "key",
        "level",
        "first",
        "last",
        "calls_15m",
        "expected_15m",
        "score",
    ],
    ("crowdwatch-calls", "Calls on the map", "A"): [
        "time",
        "lat",
        "lon",
        "group",
        "weight",
        "category_text",
        "district",
        "zones",
    ],
    ("crowdwatch-cameras", "Cameras online", "A"): ["online_rate"],
    ("crowdwatch-cameras", "Cameras working", "A"): ["working_rate"],
    ("crowdwatch-cameras", "Cameras now", "A"): [
        "camera_id",
        "station_id",
        "status",
        "since",
        "last_seen",
        "fps",
        "expected_fps",
    ],
    ("crowdwatch-cameras", "Online and working rates", "A"): [
        "time",
        "online_rate",
        "working_rate",
    ],
    ("crowdwatch-cameras", "Camera states", "A"): ["time", "camera_id", "state"],
    ("crowdwatch-cameras", "Offline and stuck cameras", "A"): [
        "camera_id",
        "station_id",
        "status",
        "since",
        "until",
        "minutes",
    ],
    ("crowdwatch-cameras", "Frame rate per camera", "A"): ["time", "camera_id", "fps"],
    ("crowdwatch-pipeline", "Rows written", "A"): ["rows"],
    ("crowdwatch-pipeline", "Records rejected", "A"): ["rejected"],
    ("crowdwatch-pipeline", "Newest event written", "A"): ["newest_event"],
    ("crowdwatch-pipeline", "Rows written per minute", "A"): ["time", "table", "rows"],
    ("crowdwatch-pipeline", "Lag behind real time", "A"): ["time", "table", "lag_s"],
    ("crowdwatch-pipeline", "Rejected records by reason", "A"): ["time", "reason", "rejected"],
    ("crowdwatch-pipeline", "Rejected records per source and reason", "A"): [
        "source",
        "reason",
        "rejected",
        "last",
    ],
    ("crowdwatch-pipeline", "Alert deliveries not made", "A"): [
        "not_delivered",
        "no_contact",
        "not_sent",
    ],
    ("crowdwatch-pipeline", "Alert events not delivered", "A"): [
        "ts",
        "zone_id",
        "event",
        "level",
        "role",
        "recipient",
        "status",
        "attempts",
        "last_error",
        "last_attempt",
    ],
    ("crowdwatch-pipeline", "Alert delivery latency", "A"): ["time", "p50_s", "max_s"],
    ("crowdwatch-response", "Unacknowledged now", "A"): ["unacknowledged"],
    ("crowdwatch-response", "Escalations", "A"): ["escalated", "missed_at_the_top"],
    ("crowdwatch-response", "Alerts signed off", "A"): ["signed_off", "raised"],
    ("crowdwatch-response", "Who has not acknowledged", "A"): [
        "alert_id",
        "zone_id",
        "station_id",
        "role",
        "level",
        "asked_at",
        "tier",
    ],
    ("crowdwatch-response", "Time to acknowledge", "A"): RESPONSE_TIMES,
    ("crowdwatch-response", "Time to sign off", "A"): RESPONSE_TIMES,
    ("crowdwatch-response", "Actions per hour", "A"): ["time", "action", "actions"],
    ("crowdwatch-response", "Drills (演练)", "A"): [
        "exercise",
        "zone_id",
        "role",
        "asked",
        "ack_s",
    ],
}
# Forecasts need weeks of history, which the demo's one day does not have: only they may come
# back empty here. tests/forecasts/test_service.py runs this target on real forecast rows.
# The demo's site has no contacts, so nothing is delivered: tests/pipelines/test_zone_risk.py
# runs the latency target on real deliveries.
MAY_BE_EMPTY = {
    ("crowdwatch-zone", "Headcount against capacity and forecast", "B"),
    ("crowdwatch-pipeline", "Alert delivery latency", "A"),
}


def built() -> dict[str, dict[str, Any]]:
    return {uid: json.loads(render(b)) for uid, b in dashboards().items()}


def targets() -> list[tuple[tuple[str, str, str], str]]:
    """Every panel target and annotation query: (uid, panel title, refId) and the SQL."""
    panels = [
        ((uid, panel["title"], target["refId"]), target["rawSql"])
        for uid, board in built().items()
        for panel in board["panels"]
        for target in panel.get("targets") or []
    ]
    annotations = [
        ((uid, f"annotation: {a['name']}", a["target"]["refId"]), a["target"]["rawSql"])
        for uid, board in built().items()
        for a in board["annotations"].get("list") or []
        if "rawSql" in a.get("target", {})
    ]
    return panels + annotations


def sql_of(uid: str, title: str, ref_id: str = "A") -> str:
    return dict(targets())[(uid, title, ref_id)]


def test_committed_json_is_current() -> None:
    for uid, builder in dashboards().items():
        path = FOLDER / f"{uid}.json"
        assert path.exists(), f"{path} is missing: run `python -m dashboards.build`"
        assert path.read_text(encoding="utf-8") == render(builder), (
            f"{path} is stale: run `python -m dashboards.build` and commit the result"
        )
    extra = {p.stem for p in FOLDER.glob("*.json")} - set(dashboards())
    assert not extra, f"no dashboard builds {sorted(extra)}: delete them or add their builder"


def test_every_target_is_listed_and_every_panel_reads_clickhouse() -> None:
    assert sorted(key for key, _ in targets()) == sorted(EXPECTED)
    clickhouse = {"type": "grafana-clickhouse-datasource", "uid": "crowdwatch-clickhouse"}
    for board in built().values():
        for panel in board["panels"]:
            assert panel["datasource"] == clickhouse
        for item in board["annotations"].get("list") or []:
            assert item["datasource"] == clickhouse


@dataclass(frozen=True)
class Day:
    """The simulated demo day in a warehouse, and the ranges to view it with."""

    warehouse: Warehouse
    start: datetime
    end: datetime
    written_from: datetime
    written_to: datetime

    def range_of(self, uid: str, title: str = "") -> tuple[datetime, datetime]:
        if uid in WALL_CLOCK and title not in DELIVERY_PANELS:
            return self.written_from, self.written_to
        return self.start, self.end

    def run(self, uid: str, title: str, ref_id: str = "A") -> pl.DataFrame:
        start, end = self.range_of(uid, title)
        raw = sql_of(uid, title, ref_id)
        return self.warehouse.query(expand(raw, start=start, end=end, variables=VARIABLES))


@pytest.fixture(scope="module")
def surge_day(demo_day: DemoWarehouse) -> Day:
    """The demo day (the shared, read-only one) with the ranges to view it with.

    Event-time ranges end a minute after the red alert at the stadium concourse, wall-clock
    ranges cover the replay.
    """
    end = demo_day.red_at + timedelta(minutes=1)
    return Day(
        demo_day.warehouse,
        end - timedelta(days=1),
        end,
        demo_day.written_from,
        demo_day.written_to,
    )


def test_every_panel_query_runs_on_the_warehouse(surge_day: Day) -> None:
    for (uid, title, ref_id), _ in targets():
        frame = surge_day.run(uid, title, ref_id)
        key = (uid, title, ref_id)
        assert frame.columns == EXPECTED[key], key
        if key not in MAY_BE_EMPTY and uid != RESPONSE:
            assert frame.height > 0, f"{key} returned no rows"
            # a row of nothing but nulls or zeros is no data either (an aggregate of nothing)
            assert any(v not in (None, 0, 0.0, "") for v in frame.row(0)), (
                f"{key} returned only empty values"
            )


def test_overview_shows_the_surge(surge_day: Day) -> None:
    people = surge_day.run("crowdwatch-overview", "People in the network")["people"][0]
    assert people > 0
    open_alerts = surge_day.run("crowdwatch-overview", "Open alerts")
    assert "STD-concourse" in open_alerts["zone_id"].to_list()
    nearest = surge_day.run("crowdwatch-overview", "Zones nearest to capacity")
    # the surge fills the stadium concourse past capacity: first, red, with its site name
    assert nearest.row(0, named=True) | {"headcount": 0, "updated": 0, "capacity_share": 0} == {
        "zone_id": "STD-concourse",
        "name": "Stadium paid concourse",
        "station_id": "STD",
        "headcount": 0,
        "capacity": 1750,
        "capacity_share": 0,
        "level": "red",
        "updated": 0,
    }
    assert nearest["capacity_share"][0] >= 1.0
    zones = surge_day.run("crowdwatch-overview", "Zones on the map")
    rank = dict(zip(zones["zone_id"], zones["level_rank"], strict=True))
    assert rank["STD-concourse"] == 4  # red
    assert rank["NPK-concourse"] == 0  # no warning
    assert zones.height == 9 and zones["lat"].null_count() == 0  # every zone of the site
    hourly = surge_day.run("crowdwatch-overview", "Peak share of capacity per zone, hourly")
    stadium = hourly.filter(pl.col("zone_id") == "STD-concourse")
    assert stadium["capacity_share"].max() >= 1.0  # type: ignore[operator]


def test_hourly_rollup_matches_the_zone_states(surge_day: Day) -> None:
    rollup = surge_day.warehouse.query(
        "SELECT zone_id, hour, max(headcount_max) AS headcount, "
        "max(capacity_share_max) AS share, max(level_rank_max) AS rank "
        "FROM zone_hourly GROUP BY zone_id, hour ORDER BY zone_id, hour"
    )
    raw = surge_day.warehouse.query(
        "SELECT zone_id, toDateTime64(toStartOfHour(ts), 3, 'UTC') AS hour, "
        "max(headcount) AS headcount, max(capacity_share) AS share, "
        "max(toUInt8(multiIf(level = 'red', 4, level = 'orange', 3, level = 'yellow', 2, "
        "level = 'blue', 1, 0))) AS rank "
        "FROM zone_state FINAL GROUP BY zone_id, hour ORDER BY zone_id, hour"
    )
    assert rollup.height == raw.height > 24
    assert rollup.equals(raw)


def test_call_panels_show_the_burst_at_the_stadium(surge_day: Day) -> None:
    bursts = surge_day.run("crowdwatch-calls", "Bursts")
    zone = bursts.filter((pl.col("key") == "STD-plaza") & (pl.col("level") == "zone"))
    assert zone.height == 1
    first = zone["first"][0].replace(tzinfo=UTC)
    surge = datetime(2026, 11, 20, 13, 30, tzinfo=UTC)  # 21:30 local
    assert surge <= first <= surge + timedelta(minutes=45)
    assert zone["calls_15m"][0] >= 3
    by_zone = surge_day.run("crowdwatch-calls", "Calls by zone")
    assert "STD-plaza" in by_zone["zone_id"].to_list()
    calls = surge_day.run("crowdwatch-calls", "Calls")
    assert calls["calls"][0] > calls["crowd_relevant"][0] > 0
    nearby = surge_day.run("crowdwatch-zone", "110 calls nearby")
    assert (nearby["distance_m"] <= 500).all()
    assert nearby.filter(pl.col("group") == "crowding").height >= 3


def test_camera_panels_show_the_faults(surge_day: Day) -> None:
    faults = surge_day.run("crowdwatch-cameras", "Offline and stuck cameras")
    episodes = {(c, s) for c, s in zip(faults["camera_id"], faults["status"], strict=True)}
    assert {("CTR-CAM03", "offline"), ("CTR-CAM02", "stuck")} <= episodes
    offline = faults.filter(pl.col("camera_id") == "CTR-CAM03")
    assert 25 <= offline["minutes"][0] <= 35  # the 30 minutes it was silent
    rates = surge_day.run("crowdwatch-cameras", "Online and working rates")
    # one camera of five offline, then one stuck: 80 % online, then 80 % working
    assert rates["online_rate"].min() == pytest.approx(0.8)
    assert rates["working_rate"].min() == pytest.approx(0.8)
    assert rates["online_rate"].max() == rates["working_rate"].max() == 1.0


def test_pipeline_panels_count_the_rows_written(surge_day: Day) -> None:
    written = surge_day.run("crowdwatch-pipeline", "Rows written per minute")
    per_table = written.group_by("table").agg(pl.col("rows").sum())
    rows = dict(zip(per_table["table"], per_table["rows"], strict=True))
    stored = surge_day.warehouse.query(
        "SELECT (SELECT count() FROM zone_metrics) AS zone_metrics, "
        "(SELECT count() FROM camera_health) AS camera_health"
    )
    # every row inserted is counted (no merge has folded versions in a fresh database)
    assert rows["zone_metrics"] == stored["zone_metrics"][0] > 0
    assert rows["camera_health"] == stored["camera_health"][0] > 0
    lag = surge_day.run("crowdwatch-pipeline", "Lag behind real time")
    # a replay of 2026-11-20 written now is at least as far behind as the clock is past it
    behind = (surge_day.written_from - datetime(2026, 11, 21, tzinfo=UTC)).total_seconds()
    assert lag["lag_s"].min() >= behind  # type: ignore[operator]
    reasons = surge_day.run("crowdwatch-pipeline", "Rejected records per source and reason")
    assert reasons["rejected"].sum() == 252  # the injected malformed records


def test_delivery_panels_show_every_role_without_a_contact(surge_day: Day) -> None:
    # the example site has no contacts: nobody was told, and the panels say so role by role
    missing = surge_day.run("crowdwatch-pipeline", "Alert events not delivered")
    at_red = missing.filter((pl.col("zone_id") == "STD-concourse") & (pl.col("level") == "red"))
    assert sorted(at_red["role"]) == [
        "local_police",
        "station_master",
        "street_office",
        "transit_police",
    ]
    assert set(missing["status"]) == {"no_contact"} and set(missing["attempts"]) == {0}
    [counts] = surge_day.run("crowdwatch-pipeline", "Alert deliveries not made").rows()
    assert counts == (0, missing.height, 0)


def test_alert_annotations_mark_the_alert_history(surge_day: Day) -> None:
    notes = surge_day.run("crowdwatch-zone", "annotation: Alerts", "Anno")
    assert notes["text"][0].startswith("opened BLUE")
    assert any(t.startswith("escalated RED") for t in notes["text"])
    assert all(t.startswith("alert,") for t in notes["tags"])


def test_variable_queries_list_the_site(surge_day: Day) -> None:
    start, end = surge_day.start, surge_day.end
    warehouse = surge_day.warehouse
    variables = {v["name"]: v["query"] for v in built()["crowdwatch-zone"]["templating"]["list"]}
    stations = warehouse.query(expand(variables["station"], start=start, end=end))
    assert VARIABLES["station"] in stations.to_series().to_list()
    zones = warehouse.query(expand(variables["zone"], start=start, end=end, variables=VARIABLES))
    listed = zones.to_series().to_list()
    assert VARIABLES["zone"] in listed
    assert all(z.startswith("STD-") for z in listed)


def test_macros_expand_as_the_plugin_documents() -> None:
    start = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    end = start + timedelta(hours=1)
    lo, hi = int(start.timestamp()), int(end.timestamp())
    sql = (
        "SELECT $__timeInterval(ts) FROM t WHERE $__timeFilter(ts) AND a > $__fromTime"
        " AND b < $__toTime AND z = ${zone:singlequote} AND s IN (${stations}) AND r = $raw"
    )
    assert expand(
        sql, start=start, end=end, variables={"zone": "o'k", "stations": ["A", "B"], "raw": "1"}
    ) == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 3 second) FROM t"
        f" WHERE ts >= toDateTime({lo}) AND ts <= toDateTime({hi}) AND a > toDateTime({lo})"
        f" AND b < toDateTime({hi}) AND z = 'o\\'k' AND s IN ('A','B') AND r = 1"
    )
    with pytest.raises(KeyError, match="zone"):
        expand("z = ${zone}", start=start, end=end)


def test_camera_status_reports_the_cameras_frame_rate(demo_day: DemoWarehouse) -> None:
    # the simulated cameras send one message every few seconds, their frame numbers advance at
    # the camera's own rate: the status must show the frame rate, not the message rate
    status = demo_day.warehouse.query(
        "SELECT camera_id, fps, expected_fps FROM camera_status FINAL WHERE status = 'online'"
    )
    assert status.height >= 3
    for camera, fps, expected in status.iter_rows():
        assert abs(fps - expected) <= 0.05 * expected, (camera, fps, expected)
