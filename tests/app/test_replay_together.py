"""The demo's three files replayed together, and the demo's burst: event time across sources."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import polars as pl
from bytewax.testing import TestingSink, run_main

from crowdwatch.risk.notify import AlertEvent
from crowdwatch.settings import Settings
from crowdwatch.sources.files import FileSource, ReplayFile
from pipelines.zone_risk import build
from tests.commands import crowdwatch, user_env
from tests.conftest import EXAMPLE_SITE
from tests.demo_day import ZONE, DemoWarehouse

STD_ALERTS = """
SELECT event, level, toUnixTimestamp64Milli(ts) AS ts_ms
FROM alerts FINAL WHERE zone_id = 'STD-concourse' ORDER BY ts, event
"""


def demo_alerts(day: DemoWarehouse) -> list[tuple[str, str, int]]:
    alerts = day.warehouse.query(STD_ALERTS)
    assert alerts.height >= 8, "the demo's surge raises STD-concourse from blue to red and back"
    return [(e, lv, int(ts)) for e, lv, ts in alerts.iter_rows()]


def test_the_three_files_in_one_command_raise_the_demos_alerts(
    demo_day: DemoWarehouse, tmp_path: Path
) -> None:
    gates, cameras, calls = (s.path for s in demo_day.demo.signals)
    env = user_env(tmp_path, CROWDWATCH_SITE_FILE=str(EXAMPLE_SITE))
    crowdwatch("db", "migrate", env=env)
    # the files in another order than the demo's, in batches of 7,000 rows
    crowdwatch(
        "replay",
        str(calls),
        str(cameras),
        str(gates),
        "--pipeline",
        "zone_risk",
        "--batch-rows",
        "7000",
        env=env,
    )
    out = crowdwatch("query", STD_ALERTS, "--format", "csv", env=env).stdout
    replayed = pl.read_csv(io.StringIO(out))
    assert [tuple(r) for r in replayed.iter_rows()] == demo_alerts(demo_day)


def test_any_order_and_batch_size_gives_the_same_alerts(demo_day: DemoWarehouse) -> None:
    gates, cameras, calls = (s.path for s in demo_day.demo.signals)
    tz = demo_day.site.site.timezone
    alerts: list[AlertEvent] = []
    source = FileSource([ReplayFile(p, tz, 50_000) for p in (cameras, gates, calls)])
    settings = Settings(site_file=EXAMPLE_SITE)
    run_main(build(settings, source=source, sink=TestingSink([]), alert_sink=TestingSink(alerts)))
    got = [(e.event, e.level, e.ts_ms) for e in alerts if e.zone_id == ZONE]
    assert sorted(got, key=lambda e: (e[2], e[0])) == demo_alerts(demo_day)


def test_the_demos_burst_alert_resolves_within_15_minutes_of_the_last_call(
    demo_day: DemoWarehouse,
) -> None:
    warehouse = demo_day.warehouse
    last_call = warehouse.query(
        "SELECT max(received_at) AS at FROM calls FINAL "
        "WHERE has(zones, 'STD-plaza') AND weight >= 0.5"
    )["at"][0]
    plaza = warehouse.query(
        "SELECT event, ts FROM alerts FINAL WHERE zone_id = 'STD-plaza' ORDER BY ts"
    )
    assert plaza["event"].to_list() == ["opened", "resolved"]
    resolved = plaza["ts"][1]
    # a burst ends 10 quiet minutes after its last call, although the 60-minute window still
    # finds the hour unusual; the zone's level follows a minute (the row's end) and a 2-minute
    # calm later
    assert last_call + timedelta(minutes=10) < resolved <= last_call + timedelta(minutes=15)
    # the score is the exact Poisson tail: 9 calls in 15 minutes against a background of 0.05
    # (17.29), less log10(2) for looking at two windows
    peak = warehouse.query(
        "SELECT max(score) AS peak, argMax(observed_15m, score) AS calls, "
        "argMax(expected_15m, score) AS expected "
        "FROM call_bursts FINAL WHERE key = 'STD-plaza' AND level = 'zone'"
    ).row(0, named=True)
    assert (peak["calls"], round(peak["expected"], 3)) == (9, 0.05)
    assert 16.9 < peak["peak"] < 17.1
