"""Dashboards: the committed JSON is current, and every panel query runs on the real engine."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from crowdwatch.events import RawBatch
from crowdwatch.settings import Settings
from crowdwatch.simulate import default_surge, simulate_day
from crowdwatch.site import load_site
from crowdwatch.sitesync import sync_site
from crowdwatch.warehouse import Warehouse
from dashboards.build import FOLDER, dashboards, render
from dashboards.macros import expand
from pipelines.zone_risk import build
from tests.conftest import EXAMPLE_SITE

DAY = date(2026, 11, 20)
VARIABLES = {"station": "STD", "zone": "STD-concourse"}

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
}
# The simulated day has no cameras and no forecasts: only these may come back empty.
MAY_BE_EMPTY = {
    ("crowdwatch-zone", "Headcount against capacity and forecast", "B"),
}


def built() -> dict[str, dict[str, Any]]:
    return {uid: json.loads(render(b)) for uid, b in dashboards().items()}


def targets() -> list[tuple[tuple[str, str, str], str]]:
    return [
        ((uid, panel["title"], target["refId"]), target["rawSql"])
        for uid, board in built().items()
        for panel in board["panels"]
        for target in panel.get("targets") or []
    ]


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
    for board in built().values():
        for panel in board["panels"]:
            assert panel["datasource"] == {
                "type": "grafana-clickhouse-datasource",
                "uid": "crowdwatch-clickhouse",
            }


@pytest.fixture
def surge_day(settings: Settings, warehouse: Warehouse) -> tuple[datetime, datetime]:
    """The simulated surge day run through zone_risk; the range up to the red alert."""
    site = load_site(EXAMPLE_SITE)
    sync_site(warehouse, site)
    records = simulate_day(site, DAY, seed=0, surge=default_surge())
    batches = [
        RawBatch("sim", "passage", records.slice(i, 20_000), i)
        for i in range(0, records.height, 20_000)
    ]
    run_main(build(settings, source=TestingSource(batches), alert_sink=TestingSink([])))
    red = warehouse.query(
        "SELECT min(ts) AS ts FROM alerts FINAL WHERE level = 'red' AND zone_id = {z:String}",
        {"z": VARIABLES["zone"]},
    )["ts"][0]
    # the end of the range falls while the red alert is open
    end = red.replace(tzinfo=UTC) + timedelta(minutes=1)
    return end - timedelta(days=1), end


def test_every_panel_query_runs_on_the_warehouse(
    warehouse: Warehouse, surge_day: tuple[datetime, datetime]
) -> None:
    start, end = surge_day
    for key, raw in targets():
        frame = warehouse.query(expand(raw, start=start, end=end, variables=VARIABLES))
        assert frame.columns == EXPECTED[key], key
        if key not in MAY_BE_EMPTY:
            assert frame.height > 0, f"{key} returned no rows"
    people = warehouse.query(
        expand(
            dict(targets())[("crowdwatch-overview", "People in the network", "A")],
            start=start,
            end=end,
        )
    )["people"][0]
    assert people > 0
    open_alerts = warehouse.query(
        expand(dict(targets())[("crowdwatch-overview", "Open alerts", "A")], start=start, end=end)
    )
    assert "STD-concourse" in open_alerts["zone_id"].to_list()
    nearest = warehouse.query(
        expand(
            dict(targets())[("crowdwatch-overview", "Zones nearest to capacity", "A")],
            start=start,
            end=end,
        )
    )
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


def test_variable_queries_list_the_site(
    warehouse: Warehouse, surge_day: tuple[datetime, datetime]
) -> None:
    start, end = surge_day
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
