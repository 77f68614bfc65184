"""Alert rules run on the real engine on the demo day; the policy tree routes as the site does."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import polars as pl
import pytest

from app.simulate import district_of
from crowdwatch.risk.engine import alert_rows
from crowdwatch.site import BUILTIN_ROLES, Contact, Level, Role, Routing, Site, load_site
from crowdwatch.warehouse.client import Warehouse
from crowdwatch.warehouse.sitesync import sync_site
from dashboards.alerting import (
    OPERATIONS,
    PLACEHOLDER_WEBHOOK,
    contact_point_uid,
    contact_points,
    notification_policy,
    policy_json,
    role_of,
    route,
    routed_levels,
    rule_groups,
    rule_specs,
    to_json,
)
from dashboards.macros import expand
from forecasts.early_warning import early_warnings
from tests.conftest import EXAMPLE_SITE
from tests.demo_day import ZONE, DemoWarehouse

LEVELS: tuple[Level, ...] = get_args(Level)

# The columns each rule's query returns: labels first, the value last.
EXPECTED = {
    "crowdwatch-big-crowd-yellow": ["zone_id", "station_id", "at_level"],
    "crowdwatch-big-crowd-orange": ["zone_id", "station_id", "at_level"],
    "crowdwatch-big-crowd-red": ["zone_id", "station_id", "at_level"],
    "crowdwatch-predicted-big-crowd": ["zone_id", "station_id", "level", "predicted"],
    "crowdwatch-call-burst": ["key", "scope", "zone_id", "station_id", "burst"],
    "crowdwatch-cameras-online": ["online_rate"],
    "crowdwatch-cameras-working": ["working_rate"],
    "crowdwatch-pipeline-stalled": ["seconds_since_newest"],
    "crowdwatch-alerts-undelivered": ["undelivered"],
}


@pytest.fixture
def site() -> Site:
    return load_site(EXAMPLE_SITE)


@pytest.fixture(scope="module")
def surge(demo_day: DemoWarehouse) -> tuple[Warehouse, datetime]:
    """The demo day (shared, read-only) and the moment a minute after the stadium turns red."""
    return demo_day.warehouse, demo_day.red_at + timedelta(minutes=1)


def queries(site: Site) -> dict[str, tuple[str, int]]:
    """Each rule's ClickHouse SQL and time range (s), from the rule groups as pushed."""
    out = {}
    for group in rule_groups(site):
        for rule in to_json(group)["rules"]:
            (query,) = [q for q in rule["data"] if q["refId"] == "A"]
            out[rule["uid"]] = (query["model"]["rawSql"], query["relativeTimeRange"]["from"])
    return out


def run_rule(warehouse: Warehouse, site: Site, uid: str, now: datetime) -> pl.DataFrame:
    """Run a rule's query as Grafana would at ``now``: its relative range ending at ``now``."""
    sql, range_s = queries(site)[uid]
    return warehouse.query(expand(sql, start=now - timedelta(seconds=range_s), end=now))


def firing(rule_uid: str, site: Site, frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows whose value passes the rule's threshold expression (C), as Grafana decides."""
    (rule,) = [r for g in rule_groups(site) for r in to_json(g)["rules"] if r["uid"] == rule_uid]
    (threshold,) = [q["model"] for q in rule["data"] if q["refId"] == rule["condition"]]
    (condition,) = threshold["conditions"]
    op, (limit,) = condition["evaluator"]["type"], condition["evaluator"]["params"]
    value = frame.columns[-1]
    passes = pl.col(value) > limit if op == "gt" else pl.col(value) < limit
    return frame.filter(passes).to_dicts()


def test_every_rule_query_runs_on_the_warehouse(
    surge: tuple[Warehouse, datetime], site: Site
) -> None:
    warehouse, surge_day = surge
    assert set(queries(site)) == set(EXPECTED)
    for uid, columns in EXPECTED.items():
        frame = run_rule(warehouse, site, uid, surge_day)
        assert frame.columns == columns, uid
        assert frame.height > 0, f"{uid} returned no rows on the demo day"
        value = frame.columns[-1]
        assert frame[value].dtype.is_numeric(), uid
        assert all(frame[c].dtype == pl.String for c in frame.columns[:-1]), uid


def test_big_crowd_rules_fire_red_at_the_stadium_concourse(
    surge: tuple[Warehouse, datetime], site: Site
) -> None:
    warehouse, surge_day = surge
    fired = {
        level: {
            row["zone_id"]
            for row in firing(
                f"crowdwatch-big-crowd-{level}",
                site,
                run_rule(warehouse, site, f"crowdwatch-big-crowd-{level}", surge_day),
            )
        }
        for level in ("yellow", "orange", "red")
    }
    assert ZONE in fired["red"]
    # a zone is at one level at a time: the rules never fire together for it
    assert not (fired["red"] & fired["orange"]) and not (fired["red"] & fired["yellow"])
    newest = warehouse.query(
        "SELECT zone_id, argMax(tuple(level), ts).1 AS level FROM zone_state FINAL"
        " WHERE ts <= {now:DateTime64(3, 'UTC')} GROUP BY zone_id",
        {"now": surge_day},
    )
    for level, zones in fired.items():
        assert zones == set(newest.filter(pl.col("level") == level)["zone_id"]), level
    rows = run_rule(warehouse, site, "crowdwatch-big-crowd-red", surge_day)
    station = rows.filter(pl.col("zone_id") == ZONE)["station_id"].to_list()
    assert station == ["STD"]


def test_predicted_and_call_burst_rules_on_the_demo_day(
    surge: tuple[Warehouse, datetime], site: Site
) -> None:
    warehouse, surge_day = surge
    # no forecasts on the demo day (one day of history is too short to train on): every zone of
    # the site reads 0 with no level, a series per zone instead of NoData
    predicted = run_rule(warehouse, site, "crowdwatch-predicted-big-crowd", surge_day)
    assert predicted.to_dicts() == [
        {"zone_id": z.id, "station_id": z.station, "level": "", "predicted": 0}
        for z in sorted(site.zones, key=lambda z: z.id)
    ]
    assert firing("crowdwatch-predicted-big-crowd", site, predicted) == []
    # the demo's cluster of crowd calls at the stadium forecourt: a burst at the zone, its
    # station, its district and site-wide (a quiet day's calls), nowhere else
    bursts = run_rule(warehouse, site, "crowdwatch-call-burst", surge_day)
    plaza = warehouse.query(
        "SELECT lat, lon FROM site_zones FINAL WHERE zone_id = 'STD-plaza'"
    ).row(0)
    fired = {
        (row["scope"], row["key"], row["zone_id"], row["station_id"])
        for row in firing("crowdwatch-call-burst", site, bursts)
    }
    assert fired == {
        ("zone", "STD-plaza", "STD-plaza", "STD"),
        ("station", "STD", "", "STD"),
        ("district", district_of(*plaza), "", ""),
        ("site", "site", "", ""),
    }
    assert bursts.height > len(fired)  # calls elsewhere in the range, no burst there
    # an hour before the cluster began nothing bursts at the stadium
    before = run_rule(warehouse, site, "crowdwatch-call-burst", surge_day - timedelta(hours=1))
    assert not {"STD-plaza", "STD"} & {
        row["key"] for row in firing("crowdwatch-call-burst", site, before)
    }


def test_health_rules_on_the_demo_day(surge: tuple[Warehouse, datetime], site: Site) -> None:
    warehouse, surge_day = surge
    # the camera rules read the cameras' current state: after the replay all five site cameras
    # are reporting again (the offline and the stuck one recovered), so neither fires
    assert (
        warehouse.query("SELECT cameras FROM camera_network")["cameras"].to_list()
        == [len(site.cameras)]
        == [5]
    )
    for uid in ("crowdwatch-cameras-online", "crowdwatch-cameras-working"):
        frame = run_rule(warehouse, site, uid, surge_day)
        assert frame.to_series().to_list() == [1.0], uid
        assert firing(uid, site, frame) == [], uid
    # the pipeline wrote zone state within the last minute: not stalled
    stalled = run_rule(warehouse, site, "crowdwatch-pipeline-stalled", surge_day)
    assert stalled["seconds_since_newest"][0] < 120
    assert firing("crowdwatch-pipeline-stalled", site, stalled) == []
    # ten minutes after the pipeline's newest row, nothing new has come: stalled
    newest = warehouse.query("SELECT max(ts) AS ts FROM zone_state")["ts"][0].replace(tzinfo=UTC)
    later = run_rule(warehouse, site, "crowdwatch-pipeline-stalled", newest + timedelta(minutes=10))
    assert later.to_series().to_list() == [600.0]
    assert len(firing("crowdwatch-pipeline-stalled", site, later)) == 1
    # a day later there is no zone state in the range at all: no data, which alerts
    silent = run_rule(warehouse, site, "crowdwatch-pipeline-stalled", newest + timedelta(days=1))
    assert silent.height == 0
    (stall,) = [s for s in rule_specs(site) if s.uid == "crowdwatch-pipeline-stalled"]
    assert (stall.no_data, stall.exec_err) == ("Alerting", "Alerting")


def test_camera_rules_fire_on_silent_and_stuck_cameras(warehouse: Warehouse, site: Site) -> None:
    sync_site(warehouse, site)
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    # site cameras are known but none has reported: all offline, both rates 0, both fire
    for uid in ("crowdwatch-cameras-online", "crowdwatch-cameras-working"):
        frame = run_rule(warehouse, site, uid, now)
        assert frame.to_series().to_list() == [0.0], uid
        assert len(firing(uid, site, frame)) == 1, uid
    # all report, one frozen: all online (no alert), four of five working (below 95 %: alert)
    cameras = sorted(c.id for c in site.cameras)
    statuses = ["stuck" if c == cameras[0] else "online" for c in cameras]
    warehouse.command(
        "INSERT INTO camera_status (camera_id, station_id, status, since, last_seen, fps,"
        " expected_fps, version) SELECT c, 'X', s, {ts:DateTime64(3, 'UTC')},"
        " {ts:DateTime64(3, 'UTC')}, 25, 25, 1 FROM (SELECT arrayJoin(arrayZip({c:Array(String)},"
        " {s:Array(String)})) AS p, p.1 AS c, p.2 AS s)",
        {"ts": now, "c": cameras, "s": statuses},
    )
    online = run_rule(warehouse, site, "crowdwatch-cameras-online", now)
    assert online.to_series().to_list() == [1.0]
    assert firing("crowdwatch-cameras-online", site, online) == []
    working = run_rule(warehouse, site, "crowdwatch-cameras-working", now)
    assert working.to_series().to_list() == [pytest.approx(0.8)]
    assert len(firing("crowdwatch-cameras-working", site, working)) == 1


def test_forecast_and_call_burst_rules_read_their_signals(warehouse: Warehouse, site: Site) -> None:
    sync_site(warehouse, site)
    surge_day = datetime(2026, 11, 20, 13, 46, tzinfo=UTC)
    now_ms = int(surge_day.timestamp() * 1000)
    forecast = pl.DataFrame(
        {
            "zone_id": ["CTR-concourse"],
            "ts": [surge_day + timedelta(minutes=40)],
            "yhat": [3200.0],  # no event window: the forecast itself decides the level
            "yhat_upper": [3900.0],
        }
    )
    warnings = early_warnings(forecast, site, now_ms)
    assert [(w.zone_id, w.level) for w in warnings] == [("CTR-concourse", "red")]
    warehouse.insert("alerts", alert_rows(warnings))
    predicted = run_rule(warehouse, site, "crowdwatch-predicted-big-crowd", surge_day)
    assert firing("crowdwatch-predicted-big-crowd", site, predicted) == [
        {"zone_id": "CTR-concourse", "station_id": "CTR", "level": "red", "predicted": 1}
    ]
    # every other zone of the site is there too, at 0 with no level
    others = predicted.filter(pl.col("zone_id") != "CTR-concourse")
    assert sorted(others["zone_id"]) == sorted(z.id for z in site.zones if z.id != "CTR-concourse")
    assert set(others["level"]) == {""} and set(others["predicted"]) == {0}
    # three hours later the warning has left the rule's two-hour range: back to 0
    later = run_rule(
        warehouse, site, "crowdwatch-predicted-big-crowd", surge_day + timedelta(hours=3)
    )
    assert later.height == len(site.zones) and set(later["predicted"]) == {0}
    warehouse.command(
        "INSERT INTO call_bursts (key, level, ts, observed_15m, expected_15m, score, alert,"
        " version) VALUES ('NPK-concourse', 'zone', {ts:DateTime64(3, 'UTC')}, 14, 1.5, 7.2,"
        " 1, 1), ('RVS', 'station', {ts:DateTime64(3, 'UTC')}, 2, 1.5, 0.3, 0, 1)",
        {"ts": surge_day - timedelta(minutes=2)},
    )
    bursts = run_rule(warehouse, site, "crowdwatch-call-burst", surge_day)
    assert bursts.height == 2
    assert firing("crowdwatch-call-burst", site, bursts) == [
        {
            "key": "NPK-concourse",
            "scope": "zone",
            "zone_id": "NPK-concourse",
            "station_id": "NPK",
            "burst": 1,
        }
    ]


def test_rules_are_well_formed(site: Site) -> None:
    specs = rule_specs(site)
    assert len({s.uid for s in specs}) == len(specs)
    assert all(len(s.uid) <= 40 for s in specs)
    assert len({s.title for s in specs}) == len(specs)
    for group in rule_groups(site):
        for rule in to_json(group)["rules"]:
            refs = [q["refId"] for q in rule["data"]]
            assert refs == ["A", "B", "C"] and rule["condition"] == "C"
            a, b, c = rule["data"]
            assert a["datasourceUid"] == "crowdwatch-clickhouse"
            assert a["model"]["format"] == 1  # table: string columns become labels
            assert (b["model"]["type"], b["model"]["expression"]) == ("reduce", "A")
            assert (c["model"]["type"], c["model"]["expression"]) == ("threshold", "B")
            assert {b["datasourceUid"], c["datasourceUid"]} == {"__expr__"}
    levels = {s.labels.get("level") for s in specs if s.labels["kind"] == "big_crowd"}
    assert levels == {"yellow", "orange", "red"} == set(routed_levels(site))


def routed_roles(site: Site, labels: dict[str, str]) -> set[Role | None]:
    tree = policy_json(notification_policy(site))
    return {role_of(site, receiver) for receiver in route(tree, labels)}


def check_policy_mirrors_routes(site: Site) -> None:
    for station in site.stations:
        for level in LEVELS:
            labels = {"level": level, "station_id": station.id, "zone_id": "any", "kind": "x"}
            expected: set[Role | None] = {role for role, _ in site.routes(station.id, level)}
            assert routed_roles(site, labels) == (expected or {None}), (station.id, level)


def test_policy_tree_routes_each_level_to_the_site_roles(site: Site) -> None:
    check_policy_mirrors_routes(site)
    tree = policy_json(notification_policy(site))
    # blue is routed to nobody in the example site: it goes to the operators only
    assert route(tree, {"level": "blue", "station_id": "STD"}) == [OPERATIONS]
    assert route(tree, {"level": "red", "station_id": "STD"}) == [
        "crowdwatch-station_master",
        "crowdwatch-transit_police",
        "crowdwatch-local_police",
        "crowdwatch-street_office",
    ]
    # health alerts carry no level: the operators
    assert route(tree, {"kind": "pipeline_stalled"}) == [OPERATIONS]
    names = {p["name"] for p in map(to_json, contact_points(site))}
    assert names == {OPERATIONS} | {f"crowdwatch-{r}" for r in BUILTIN_ROLES}


def test_station_routing_and_webhooks_get_routes_of_their_own(site: Site) -> None:
    stations = []
    for station in site.stations:
        if station.id == "STD":
            station = station.model_copy(
                update={
                    "routing": Routing(yellow=[], orange=["station_master"]),
                    "contacts": {
                        "station_master": Contact(name="STD duty", webhook="https://std.example/sm")
                    },
                }
            )
        elif station.id == "CTR":
            station = station.model_copy(
                update={
                    "contacts": {
                        "transit_police": Contact(
                            name="CTR police", webhook="https://ctr.example/tp"
                        )
                    }
                }
            )
        stations.append(station)
    custom = site.model_copy(update={"stations": stations})
    check_policy_mirrors_routes(custom)
    tree = policy_json(notification_policy(custom))
    assert route(tree, {"level": "orange", "station_id": "STD"}) == [
        "crowdwatch-STD-station_master"
    ]
    assert route(tree, {"level": "yellow", "station_id": "STD"}) == [OPERATIONS]
    assert route(tree, {"level": "orange", "station_id": "CTR"}) == [
        "crowdwatch-station_master",
        "crowdwatch-CTR-transit_police",
    ]
    assert route(tree, {"level": "orange", "station_id": "RVS"}) == [
        "crowdwatch-station_master",
        "crowdwatch-transit_police",
    ]
    urls = {p["name"]: p["settings"]["url"] for p in map(to_json, contact_points(custom))}
    assert urls["crowdwatch-STD-station_master"] == "https://std.example/sm"
    assert urls["crowdwatch-CTR-transit_police"] == "https://ctr.example/tp"
    assert urls["crowdwatch-local_police"] == PLACEHOLDER_WEBHOOK.format(
        name="crowdwatch-local_police"
    )


def test_dingtalk_wecom_and_email_contacts_become_grafana_integrations(site: Site) -> None:
    contact = Contact.model_validate(
        {
            "name": "王站长",
            "webhook": "https://hooks.example/sm",
            "channels": [
                {
                    "type": "dingtalk",
                    "url": "https://oapi.dingtalk.com/robot/send?access_token=t",
                    "secret": "SECx",
                },
                {"type": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"},
                {"type": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/h"},
                {"type": "email", "to": ["a@example.test", "b@example.test"]},
                {"type": "sms", "to": ["13800000000"]},
            ],
        }
    )
    lonely = Contact.model_validate(
        {"name": "轨道公安", "channels": [{"type": "sms", "to": ["13900000000"]}]}
    )
    stations = [
        s.model_copy(update={"contacts": {"station_master": contact, "transit_police": lonely}})
        if s.id == "CTR"
        else s
        for s in site.stations
    ]
    custom = Site.model_validate(site.model_copy(update={"stations": stations}).model_dump())
    check_policy_mirrors_routes(custom)
    points = [to_json(p) for p in contact_points(custom)]
    mine = [
        (p["uid"], p["type"], p["settings"])
        for p in points
        if p["name"] == "crowdwatch-CTR-station_master"
    ]

    assert mine == [
        (
            "crowdwatch-CTR-station_master",
            "webhook",
            {"url": "https://hooks.example/sm", "httpMethod": "POST"},
        ),
        (
            "crowdwatch-CTR-station_master-dingtalk",
            "dingding",
            {"url": "https://oapi.dingtalk.com/robot/send?access_token=t", "msgType": "link"},
        ),
        (
            "crowdwatch-CTR-station_master-wecom",
            "wecom",
            {"url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"},
        ),
        (
            "crowdwatch-CTR-station_master-email",
            "email",
            {"addresses": "a@example.test;b@example.test", "singleEmail": False},
        ),
    ]
    # SMS only: nothing Grafana can call, so the role's shared placeholder contact point
    assert "crowdwatch-CTR-transit_police" not in {p["name"] for p in points}
    assert route(policy_json(notification_policy(custom)), {"level": "red", "station_id": "CTR"})[
        :2
    ] == [
        "crowdwatch-CTR-station_master",
        "crowdwatch-transit_police",
    ]
    assert len({p["uid"] for p in points}) == len(points)


def test_route_follows_grafana_matching() -> None:
    tree = {
        "receiver": "root",
        "routes": [
            {"object_matchers": [["a", "=", "1"]], "receiver": "first"},
            {"object_matchers": [["a", "=", "1"]], "receiver": "second"},
            {"object_matchers": [["b", "=", "2"]], "receiver": "b", "continue": True},
            {
                "object_matchers": [["b", "=", "2"]],
                "routes": [{"object_matchers": [["c", "=", "3"]], "receiver": "c"}],
            },
        ],
    }
    assert route(tree, {"a": "1"}) == ["first"]
    assert route(tree, {"x": "1"}) == ["root"]
    assert route(tree, {"b": "2"}) == ["b", "root"]
    assert route(tree, {"b": "2", "c": "3"}) == ["b", "c"]


def test_contact_point_uids_fit_grafana() -> None:
    assert contact_point_uid("crowdwatch-station_master") == "crowdwatch-station_master"
    long = contact_point_uid("crowdwatch-Stadium.North.Exit-transit_police")
    other = contact_point_uid("crowdwatch-Stadium.North.Exit-street_office")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", long) and long != other


def test_the_undelivered_rule_fires_while_a_delivery_is_not_made(
    warehouse: Warehouse, site: Site
) -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

    def attempts(*rows: tuple[str, int, str]) -> None:
        frame = pl.DataFrame(
            {
                "idempotency_key": [k for k, _, _ in rows],
                "attempt": [n for _, n, _ in rows],
                "status": [s for _, _, s in rows],
            }
        ).with_columns(
            pl.lit(now - timedelta(minutes=5)).alias("event_ts"),
            pl.lit(now).alias("attempted_at"),
            pl.lit("webhook").alias("channel"),
        )
        warehouse.insert(
            "alert_deliveries",
            frame.select(
                pl.lit("a").alias("alert_id"),
                pl.lit("escalated").alias("event"),
                pl.lit("big_crowd").alias("kind"),
                pl.lit("STD-concourse").alias("zone_id"),
                pl.lit("STD").alias("station_id"),
                pl.lit("red").alias("level"),
                "event_ts",
                pl.lit("station_master").alias("role"),
                "channel",
                pl.lit("").alias("recipient"),
                "idempotency_key",
                pl.col("attempt").cast(pl.UInt32),
                "status",
                pl.lit(None, pl.UInt16).alias("http_status"),
                pl.lit(None, pl.Float32).alias("latency_ms"),
                pl.lit(0).alias("queued_ms"),
                pl.lit("").alias("error"),
                "attempted_at",
            ),
        )

    # one delivered after a retry, one still retrying, one role without a contact
    attempts(
        ("k1", 1, "retry"), ("k1", 2, "delivered"), ("k2", 1, "retry"), ("k3", 0, "no_contact")
    )
    frame = run_rule(warehouse, site, "crowdwatch-alerts-undelivered", now)
    assert frame.to_series().to_list() == [1.0]
    assert len(firing("crowdwatch-alerts-undelivered", site, frame)) == 1
    attempts(("k2", 2, "delivered"))
    frame = run_rule(warehouse, site, "crowdwatch-alerts-undelivered", now)
    assert firing("crowdwatch-alerts-undelivered", site, frame) == []
